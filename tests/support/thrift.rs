//! Thrift test support: raw-byte clients in every dialect, reply parsing, and in-process
//! upstreams (an echo server, a server that never answers).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracebridge::codec::thrift::Dialect as WireDialect;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{HeaderHead, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use tracebridge::codec::thrift::{encode_message_header, transcode_struct};

/// A client dialect: how a call is framed on the wire, and in which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Header(ProtocolId),
    Framed(ProtocolId),
    Unframed(ProtocolId),
}

impl Dialect {
    /// Every dialect a client may speak.
    pub const ALL: [Dialect; 6] = [
        Dialect::Header(ProtocolId::Binary),
        Dialect::Header(ProtocolId::Compact),
        Dialect::Framed(ProtocolId::Binary),
        Dialect::Framed(ProtocolId::Compact),
        Dialect::Unframed(ProtocolId::Binary),
        Dialect::Unframed(ProtocolId::Compact),
    ];

    pub fn protocol(self) -> ProtocolId {
        match self {
            Dialect::Header(p) | Dialect::Framed(p) | Dialect::Unframed(p) => p,
        }
    }

    /// The client type a server detects for this dialect (THeader names its protocol inside
    /// each frame).
    pub fn client_type(self) -> WireDialect {
        match self {
            Dialect::Header(_) => WireDialect::HEADER,
            Dialect::Framed(ProtocolId::Binary) => WireDialect::FRAMED_BINARY,
            Dialect::Framed(ProtocolId::Compact) => WireDialect::FRAMED_COMPACT,
            Dialect::Unframed(ProtocolId::Binary) => WireDialect::UNFRAMED_BINARY,
            Dialect::Unframed(ProtocolId::Compact) => WireDialect::UNFRAMED_COMPACT,
        }
    }
}

/// THeader flags the clients send (and expect echoed).
pub const FLAGS: u16 = 0x0001;

/// A message: header (name, type, seqid) in `protocol`, then `args` as they are.
pub fn message(
    protocol: ProtocolId,
    name: &str,
    kind: MessageType,
    seq: i32,
    args: &[u8],
) -> Bytes {
    let mut m = BytesMut::new();
    encode_message_header(&mut m, protocol, name, kind, seq);
    m.extend_from_slice(args);
    m.freeze()
}

/// `payload` framed as `dialect` sends it; a THeader frame carries `header_seq`, [`FLAGS`],
/// `info` and no transforms.
pub fn frame(dialect: Dialect, header_seq: u32, info: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    match dialect {
        Dialect::Header(protocol) => {
            let info: Vec<(Bytes, Bytes)> = info
                .iter()
                .map(|(k, v)| {
                    (
                        Bytes::copy_from_slice(k.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect();
            let head = HeaderHead {
                flags: FLAGS,
                seq_id: header_seq,
                protocol,
                transforms: &[],
                info: &info,
                persistent: &[],
            };
            encode_head(&head, payload.len(), &mut out).unwrap();
        }
        Dialect::Framed(_) => out.put_u32(payload.len() as u32),
        Dialect::Unframed(_) => {}
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// A raw client connection. Replies are read with a decoder that detects their transport
/// from the first bytes, so a test can check the reply came back in the client's dialect.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: ThriftDecoder,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: ThriftDecoder::new(1 << 24),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next reply frame and the transport it came in; `None` when the gateway closed
    /// the connection. Panics after 5 s without one.
    pub async fn reply(&mut self) -> Option<(WireDialect, Frame)> {
        use tokio_util::codec::Decoder;
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some((self.decoder.dialect().unwrap(), f));
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("no reply within 5 s")
                    .unwrap();
            if n == 0 {
                return None;
            }
        }
    }
}

/// A reply's message: protocol, name, type, seqid, body.
pub fn open(frame: &Frame) -> (ProtocolId, String, MessageType, i32, Bytes) {
    let (protocol, message) = match frame {
        Frame::Header(h) => (h.protocol, h.payload.clone()),
        Frame::Framed { protocol, message } | Frame::Unframed { protocol, message } => {
            (*protocol, message.clone())
        }
        Frame::Invalid { error, .. } => panic!("invalid reply frame: {error}"),
    };
    let h = peek_message(&message, protocol).unwrap().unwrap();
    (
        protocol,
        h.name.to_owned(),
        h.kind,
        h.seq_id,
        message.slice(h.body_offset..),
    )
}

/// `TApplicationException { 1: string message, 2: i32 type }` from an EXCEPTION body.
pub fn app_exception(protocol: ProtocolId, body: &[u8]) -> (String, i32) {
    let body = match protocol {
        ProtocolId::Binary => Bytes::copy_from_slice(body),
        ProtocolId::Compact => {
            transcode_struct(body, ProtocolId::Compact, ProtocolId::Binary).unwrap()
        }
    };
    assert_eq!(&body[..3], &[11, 0, 1], "field 1 is the message");
    let len = i32::from_be_bytes(body[3..7].try_into().unwrap()) as usize;
    let message = String::from_utf8(body[7..7 + len].to_vec()).unwrap();
    let rest = &body[7 + len..];
    assert_eq!(&rest[..3], &[8, 0, 2], "field 2 is the type");
    let kind = i32::from_be_bytes(rest[3..7].try_into().unwrap());
    assert_eq!(&rest[7..], &[0], "nothing after field 2 but the stop");
    (message, kind)
}

/// A Thrift server (any transport) that answers every CALL with a REPLY echoing its args, in
/// the call's own transport and protocol.
pub async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut frames =
                    tokio_util::codec::FramedRead::new(read, ThriftDecoder::new(1 << 24));
                while let Some(Ok(frame)) = frames.next().await {
                    let (transport, protocol, message, header_seq) = match frame {
                        Frame::Header(h) => ("header", h.protocol, h.payload, h.seq_id),
                        Frame::Framed { protocol, message } => ("framed", protocol, message, 0),
                        Frame::Unframed { protocol, message } => ("unframed", protocol, message, 0),
                        other => panic!("upstream got {other:?}"),
                    };
                    let h = peek_message(&message, protocol).unwrap().unwrap();
                    if h.kind == MessageType::Oneway {
                        continue;
                    }
                    let reply = self::message(
                        protocol,
                        h.name,
                        MessageType::Reply,
                        h.seq_id,
                        &message[h.body_offset..],
                    );
                    let dialect = match transport {
                        "header" => Dialect::Header(protocol),
                        "framed" => Dialect::Framed(protocol),
                        _ => Dialect::Unframed(protocol),
                    };
                    let out = self::frame(dialect, header_seq, &[], &reply);
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TCP server that accepts, reads everything it is sent and never answers.
pub async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}
