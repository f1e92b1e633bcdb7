//! The Thrift upstream pool against an in-process Thrift server that answers out of order:
//! calls from many tasks share one connection and each gets its own reply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tracebridge::codec::thrift::encode_message_header;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{HeaderHead, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use tracebridge::config::{ThriftProtocol, ThriftTransport, UpstreamConfig, UpstreamProtocol};
use tracebridge::upstream::thrift::{ThriftCall, ThriftUpstream};

/// A THeader/framed server that collects `batch` calls, then answers them in reverse order,
/// echoing each call's args as the reply and each call's info headers back.
async fn reversing_server(transport: ThriftTransport, batch: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut frames = tokio_util::codec::FramedRead::new(read, ThriftDecoder::new(1 << 20));
        let mut pending = Vec::new();
        while let Some(Ok(frame)) = frames.next().await {
            let (protocol, message, info) = match frame {
                Frame::Header(h) => (h.protocol, h.payload, h.info),
                Frame::Framed { protocol, message } => (protocol, message, vec![]),
                other => panic!("unexpected {other:?}"),
            };
            let h = peek_message(&message, protocol).unwrap().unwrap();
            let (name, seq, body) = (h.name.to_owned(), h.seq_id, h.body_offset);
            pending.push((protocol, name, seq, message.slice(body..), info));
            if pending.len() < batch {
                continue;
            }
            for (protocol, name, seq, args, info) in pending.drain(..).rev() {
                let mut msg = BytesMut::new();
                encode_message_header(&mut msg, protocol, &name, MessageType::Reply, seq);
                msg.extend_from_slice(&args);
                let mut out = BytesMut::new();
                match transport {
                    ThriftTransport::Header => {
                        let head = HeaderHead {
                            flags: 0,
                            seq_id: seq as u32,
                            protocol,
                            transforms: &[],
                            info: &info,
                            persistent: &[],
                        };
                        encode_head(&head, msg.len(), &mut out).unwrap();
                    }
                    _ => out.extend_from_slice(&(msg.len() as u32).to_be_bytes()),
                }
                out.extend_from_slice(&msg);
                write.write_all(&out).await.unwrap();
            }
        }
    });
    addr
}

fn upstream(
    addr: std::net::SocketAddr,
    transport: ThriftTransport,
    protocol: ThriftProtocol,
) -> ThriftUpstream {
    ThriftUpstream::new(&UpstreamConfig {
        name: "legacy".into(),
        protocol: UpstreamProtocol::Thrift,
        transport: Some(transport),
        thrift_protocol: Some(protocol),
        endpoints: vec![addr.to_string()],
        connect_timeout: Duration::from_secs(1),
        pool_idle_per_endpoint: 1,
        descriptor_set: None,
        services: Vec::new(),
        json_grpc: None,
    })
}

/// Args struct { 1: i32 n } in binary.
fn args(n: i32) -> Bytes {
    let mut b = vec![8u8, 0, 1];
    b.extend_from_slice(&n.to_be_bytes());
    b.push(0);
    Bytes::from(b)
}

async fn many_calls(transport: ThriftTransport, protocol: ThriftProtocol) {
    let addr = reversing_server(transport, 8).await;
    let up = std::sync::Arc::new(upstream(addr, transport, protocol));
    let mut tasks = Vec::new();
    for n in 0..8 {
        let up = up.clone();
        tasks.push(tokio::spawn(async move {
            let call = ThriftCall {
                name: Bytes::from_static(b"add"),
                kind: MessageType::Call,
                protocol: ProtocolId::Binary,
                args: args(n),
                info: vec![(Bytes::from_static(b"call"), Bytes::from(n.to_string()))],
                persistent: vec![],
                flags: 0,
            };
            (n, up.call(call).await.unwrap().unwrap())
        }));
    }
    for t in tasks {
        let (n, reply) = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.kind, MessageType::Reply);
        // The reply comes back in the upstream's protocol; compare in binary.
        let got = if reply.protocol == ProtocolId::Binary {
            reply.args.clone()
        } else {
            tracebridge::codec::thrift::transcode_struct(
                &reply.args,
                reply.protocol,
                ProtocolId::Binary,
            )
            .unwrap()
        };
        assert_eq!(got, args(n), "call {n} got another call's reply");
        if transport == ThriftTransport::Header {
            assert_eq!(
                reply.info,
                vec![(Bytes::from_static(b"call"), Bytes::from(n.to_string()))]
            );
        }
    }
}

#[tokio::test]
async fn header_binary_replies_out_of_order_reach_their_callers() {
    many_calls(ThriftTransport::Header, ThriftProtocol::Binary).await;
}

#[tokio::test]
async fn framed_compact_upstream_gets_transcoded_calls() {
    many_calls(ThriftTransport::Framed, ThriftProtocol::Compact).await;
}

#[tokio::test]
async fn connection_refused_is_upstream_connect() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let up = upstream(addr, ThriftTransport::Header, ThriftProtocol::Binary);
    let call = ThriftCall {
        name: Bytes::from_static(b"add"),
        kind: MessageType::Call,
        protocol: ProtocolId::Binary,
        args: args(1),
        info: vec![],
        persistent: vec![],
        flags: 0,
    };
    let err = up.call(call).await.unwrap_err();
    assert_eq!(err.kind, tracebridge::error::ErrorKind::UpstreamConnect);
}
