//! Integration: the Thrift listener on 127.0.0.1:0 in front of an in-process recording Thrift
//! server. Raw bytes in, raw bytes out: every dialect a client may speak, what the upstream
//! receives (transport, protocol, info headers, trace ids), what the client gets back, and
//! every error answered as a `TApplicationException` without losing the connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracebridge::app::{self, RunningGateway};
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{self, HeaderHead, Transform, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use tracebridge::codec::thrift::{encode_message_header, transcode_struct};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What the recording upstream saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    transport: &'static str,
    protocol: ProtocolId,
    name: String,
    kind: MessageType,
    args: Bytes,
    info: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, key: &str) -> Option<&str> {
        self.info
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A Thrift server speaking `transport` (`header`, `framed`, `unframed`) that records every
/// call and answers CALLs by echoing the args as the REPLY's result, with an info header
/// `answered-by: upstream` on THeader.
async fn recording_upstream() -> (SocketAddr, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = server_log.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut frames =
                    tokio_util::codec::FramedRead::new(read, ThriftDecoder::new(1 << 24));
                while let Some(Ok(frame)) = frames.next().await {
                    let (transport, protocol, message, info, seq_hdr) = match frame {
                        Frame::Header(h) => ("header", h.protocol, h.payload, h.info, h.seq_id),
                        Frame::Framed { protocol, message } => {
                            ("framed", protocol, message, vec![], 0)
                        }
                        Frame::Unframed { protocol, message } => {
                            ("unframed", protocol, message, vec![], 0)
                        }
                        other => panic!("upstream got {other:?}"),
                    };
                    let h = peek_message(&message, protocol).unwrap().unwrap();
                    let (name, seq, kind) = (h.name.to_owned(), h.seq_id, h.kind);
                    let args = message.slice(h.body_offset..);
                    log.lock().unwrap().push(Seen {
                        transport,
                        protocol,
                        name: name.clone(),
                        kind,
                        args: args.clone(),
                        info: info
                            .iter()
                            .map(|(k, v)| {
                                (
                                    String::from_utf8_lossy(k).into_owned(),
                                    String::from_utf8_lossy(v).into_owned(),
                                )
                            })
                            .collect(),
                    });
                    if kind == MessageType::Oneway {
                        continue;
                    }
                    if name == "slow" {
                        tokio::time::sleep(Duration::from_millis(600)).await;
                    }
                    let mut msg = BytesMut::new();
                    encode_message_header(&mut msg, protocol, &name, MessageType::Reply, seq);
                    msg.extend_from_slice(&args);
                    let mut out = BytesMut::new();
                    match transport {
                        "header" => {
                            let info = [(
                                Bytes::from_static(b"answered-by"),
                                Bytes::from_static(b"upstream"),
                            )];
                            let head = HeaderHead {
                                flags: 0,
                                seq_id: seq_hdr,
                                protocol,
                                transforms: &[],
                                info: &info,
                                persistent: &[],
                            };
                            encode_head(&head, msg.len(), &mut out).unwrap();
                        }
                        "framed" => out.put_u32(msg.len() as u32),
                        _ => {}
                    }
                    out.extend_from_slice(&msg);
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

fn config(upstream: SocketAddr, closed: SocketAddr, transport: &str, protocol: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[telemetry]
sampler = {{ kind = "parent_ratio", ratio = 1.0 }}
[propagation]
extract = ["w3c", "jaeger", "b3", "x-trace-raw"]
inject = ["w3c", "x-trace-raw"]
on_missing = "start"
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
name = "strict"
listener = "rpc"
match = {{ thrift_method = "Strict:" }}
upstream = "legacy"
on_missing = "reject"
[[routes]]
name = "pass"
listener = "rpc"
match = {{ thrift_method = "passThrough" }}
upstream = "legacy"
on_missing = "pass"
[[routes]]
name = "slow"
listener = "rpc"
match = {{ thrift_method = "slow" }}
upstream = "legacy"
timeout = "200ms"
[[routes]]
name = "down"
listener = "rpc"
match = {{ thrift_method = "down" }}
upstream = "nowhere"
[[routes]]
name = "main"
listener = "rpc"
match = {{ thrift_method = "Calc:" }}
upstream = "legacy"
[[routes]]
name = "plain"
listener = "rpc"
match = {{ thrift_method = "add" }}
upstream = "legacy"
[[upstreams]]
name = "legacy"
protocol = "thrift"
transport = "{transport}"
thrift_protocol = "{protocol}"
endpoints = ["{upstream}"]
connect_timeout = "1s"
[[upstreams]]
name = "nowhere"
protocol = "thrift"
endpoints = ["{closed}"]
connect_timeout = "1s"
"#
    )
}

async fn gateway(transport: &str, protocol: &str) -> (RunningGateway, SocketAddr, Log) {
    let (up, log) = recording_upstream().await;
    let cfg = tracebridge::config::parse(&config(
        up,
        support::closed_port().await,
        transport,
        protocol,
    ))
    .unwrap_or_else(|e| panic!("config: {e}"));
    let gw = app::start(cfg).await.unwrap();
    let rpc = gw.address("rpc").unwrap();
    (gw, rpc, log)
}

/// The args struct of the test calls: `{ 1: i32 n, 2: string s, 3: list<i64> l }` in binary.
fn args_binary(n: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(8);
    b.put_i16(1);
    b.put_i32(n);
    b.put_u8(11);
    b.put_i16(2);
    b.put_i32(5);
    b.put_slice(b"hello");
    b.put_u8(15);
    b.put_i16(3);
    b.put_u8(10);
    b.put_i32(2);
    b.put_i64(-1);
    b.put_i64(1 << 40);
    b.put_u8(0);
    b.freeze()
}

fn args_in(protocol: ProtocolId, n: i32) -> Bytes {
    match protocol {
        ProtocolId::Binary => args_binary(n),
        ProtocolId::Compact => {
            transcode_struct(&args_binary(n), ProtocolId::Binary, ProtocolId::Compact).unwrap()
        }
    }
}

fn message(protocol: ProtocolId, name: &str, kind: MessageType, seq: i32, args: &[u8]) -> Bytes {
    let mut m = BytesMut::new();
    encode_message_header(&mut m, protocol, name, kind, seq);
    m.extend_from_slice(args);
    m.freeze()
}

/// A client dialect: how a call is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialect {
    Header(ProtocolId),
    Framed(ProtocolId),
    Unframed(ProtocolId),
}

impl Dialect {
    fn protocol(self) -> ProtocolId {
        match self {
            Dialect::Header(p) | Dialect::Framed(p) | Dialect::Unframed(p) => p,
        }
    }
}

const FLAGS: u16 = 0x0001;
const HEADER_SEQ: u32 = 777;

fn frame(
    dialect: Dialect,
    info: &[(&str, &str)],
    transforms: &[Transform],
    message: &[u8],
) -> Bytes {
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
            let payload = if transforms.contains(&Transform::Zlib) {
                header::deflate(message)
            } else {
                Bytes::copy_from_slice(message)
            };
            let head = HeaderHead {
                flags: FLAGS,
                seq_id: HEADER_SEQ,
                protocol,
                transforms,
                info: &info,
                persistent: &[],
            };
            encode_head(&head, payload.len(), &mut out).unwrap();
            out.extend_from_slice(&payload);
        }
        Dialect::Framed(_) => {
            out.put_u32(message.len() as u32);
            out.extend_from_slice(message);
        }
        Dialect::Unframed(_) => out.extend_from_slice(message),
    }
    out.freeze()
}

/// A raw client connection: writes bytes, reads replies in the dialect it speaks.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: ThriftDecoder,
}

impl Client {
    async fn connect(addr: SocketAddr, dialect: Dialect) -> Client {
        use tracebridge::codec::thrift::Dialect as WireDialect;
        let ct = match dialect {
            Dialect::Header(_) => WireDialect::HEADER,
            Dialect::Framed(ProtocolId::Binary) => WireDialect::FRAMED_BINARY,
            Dialect::Framed(ProtocolId::Compact) => WireDialect::FRAMED_COMPACT,
            Dialect::Unframed(ProtocolId::Binary) => WireDialect::UNFRAMED_BINARY,
            Dialect::Unframed(ProtocolId::Compact) => WireDialect::UNFRAMED_COMPACT,
        };
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: ThriftDecoder::for_dialect(ct, 1 << 24),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next reply frame, or `None` when the gateway closed the connection.
    async fn reply(&mut self) -> Option<Frame> {
        use tokio_util::codec::Decoder;
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(f);
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

/// Sends binary `add` call `seq` on `client` and asserts it is answered with a REPLY of the
/// same seqid.
async fn assert_served(client: &mut Client, dialect: Dialect, seq: i32, what: &str) {
    let call = message(
        ProtocolId::Binary,
        "add",
        MessageType::Call,
        seq,
        &args_binary(seq),
    );
    client.send(&frame(dialect, &[], &[], &call)).await;
    let (_, _, kind, got, _) = open(&client.reply().await.expect("a reply"));
    assert_eq!((kind, got), (MessageType::Reply, seq), "{what}");
}

/// A reply's message: protocol, message header facts, body.
fn open(frame: &Frame) -> (ProtocolId, String, MessageType, i32, Bytes) {
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
fn app_exception(protocol: ProtocolId, body: &[u8]) -> (String, i32) {
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
    (message, kind)
}

fn tp(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// (trace id, parent id) of a traceparent value.
fn parse_tp(v: &str) -> (String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    (parts[1].to_owned(), parts[2].to_owned())
}

async fn metrics(gw: &RunningGateway) -> String {
    let admin = gw.address("admin").unwrap();
    let (_, _, body) = support::send(false, admin, "GET", "/metrics", &[], "").await;
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn theader_trace_continues_and_reaches_a_theader_upstream() {
    for client_protocol in [ProtocolId::Binary, ProtocolId::Compact] {
        for transforms in [&[][..], &[Transform::Zlib][..]] {
            let (gw, rpc, log) = gateway("header", "binary").await;
            let dialect = Dialect::Header(client_protocol);
            let mut c = Client::connect(rpc, dialect).await;
            let args = args_in(client_protocol, 7);
            let msg = message(client_protocol, "Calc:add", MessageType::Call, 4242, &args);
            let tp_in = tp(CALLER_TRACE, CALLER_SPAN);
            let info = [
                ("traceparent", tp_in.as_str()),
                ("tracestate", "k=v"),
                ("x-app", "1"),
            ];
            c.send(&frame(dialect, &info, transforms, &msg)).await;
            let reply = c.reply().await.unwrap();

            // The client gets its own dialect back: THeader, its flags and header seq id, its
            // protocol, its message seqid, and the result bytes the upstream wrote.
            let Frame::Header(h) = &reply else {
                panic!("{reply:?}")
            };
            assert_eq!(
                (h.flags, h.seq_id, h.protocol),
                (FLAGS, HEADER_SEQ, client_protocol)
            );
            assert_eq!(
                h.info,
                vec![(
                    Bytes::from_static(b"answered-by"),
                    Bytes::from_static(b"upstream")
                )]
            );
            let (_, name, kind, seq, body) = open(&reply);
            assert_eq!(
                (name.as_str(), kind, seq),
                ("Calc:add", MessageType::Reply, 4242)
            );
            assert_eq!(body, args, "{client_protocol:?} {transforms:?}");

            // The upstream (THeader binary) got the same trace with the gateway as parent.
            let seen = log.lock().unwrap()[0].clone();
            assert_eq!(
                (seen.transport, seen.protocol),
                ("header", ProtocolId::Binary)
            );
            assert_eq!(
                seen.args,
                args_binary(7),
                "args re-encoded only across protocols"
            );
            let (trace, parent) = parse_tp(seen.header("traceparent").unwrap());
            assert_eq!(trace, CALLER_TRACE);
            assert_ne!(
                parent, CALLER_SPAN,
                "the gateway's client span is the new parent"
            );
            assert_eq!(seen.header("tracestate"), Some("k=v"));
            assert_eq!(
                seen.header("x-app"),
                Some("1"),
                "other info headers pass through"
            );
            let raw = base64::engine::general_purpose::STANDARD
                .decode(seen.header("x-trace-raw").unwrap())
                .unwrap();
            assert_eq!(raw.len(), 29);
            assert_eq!(&raw[..2], &[0, 0]);
            assert_eq!(hex(&raw[2..18]), CALLER_TRACE);
            assert_eq!(raw[18], 1);
            assert_eq!(hex(&raw[19..27]), parent);
            assert_eq!(&raw[27..], &[2, 1]);
            gw.shutdown().await;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn every_client_dialect_is_answered_in_its_own() {
    let dialects = [
        Dialect::Header(ProtocolId::Binary),
        Dialect::Header(ProtocolId::Compact),
        Dialect::Framed(ProtocolId::Binary),
        Dialect::Framed(ProtocolId::Compact),
        Dialect::Unframed(ProtocolId::Binary),
        Dialect::Unframed(ProtocolId::Compact),
    ];
    for (transport, up_protocol) in [
        ("header", ProtocolId::Binary),
        ("header", ProtocolId::Compact),
        ("framed", ProtocolId::Binary),
        ("unframed", ProtocolId::Compact),
    ] {
        let proto_name = if up_protocol == ProtocolId::Binary {
            "binary"
        } else {
            "compact"
        };
        let (gw, rpc, log) = gateway(transport, proto_name).await;
        for (i, dialect) in dialects.iter().enumerate() {
            let p = dialect.protocol();
            let mut c = Client::connect(rpc, *dialect).await;
            let args = args_in(p, i as i32);
            c.send(&frame(
                *dialect,
                &[],
                &[],
                &message(p, "add", MessageType::Call, 9, &args),
            ))
            .await;
            let reply = c.reply().await.unwrap();
            let (rp, name, kind, seq, body) = open(&reply);
            let case = format!("{dialect:?} -> {transport} {proto_name}");
            assert_eq!(rp, p, "{case}");
            assert_eq!(
                (name.as_str(), kind, seq),
                ("add", MessageType::Reply, 9),
                "{case}"
            );
            assert_eq!(body, args, "{case}");
            match (dialect, &reply) {
                (Dialect::Header(_), Frame::Header(_))
                | (Dialect::Framed(_), Frame::Framed { .. })
                | (Dialect::Unframed(_), Frame::Unframed { .. }) => {}
                other => panic!("{case}: reply in the wrong dialect {other:?}"),
            }
            let seen = log.lock().unwrap().last().cloned().unwrap();
            assert_eq!(
                (seen.transport, seen.protocol),
                (transport, up_protocol),
                "{case}"
            );
            assert_eq!(seen.args, args_in(up_protocol, i as i32), "{case}");
            if transport == "header" {
                // No context arrived: a new root trace, named to the upstream.
                let (trace, parent) = parse_tp(seen.header("traceparent").unwrap());
                assert_ne!(trace, "0".repeat(32), "{case}");
                assert_eq!(parent.len(), 16, "{case}");
            } else {
                assert!(seen.info.is_empty(), "{case}");
            }
        }
        if transport != "header" {
            let text = metrics(&gw).await;
            assert!(
                text.contains("tracebridge_trace_carrier_missing_total{upstream=\"legacy\"} 6"),
                "{text}"
            );
        }
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn errors_are_application_exceptions_and_the_connection_lives_on() {
    let (gw, rpc, log) = gateway("header", "binary").await;
    let dialect = Dialect::Header(ProtocolId::Binary);
    let mut c = Client::connect(rpc, dialect).await;
    let args = args_binary(1);
    let call =
        |name: &str, seq: i32| message(ProtocolId::Binary, name, MessageType::Call, seq, &args);

    // (method, expected type, text the message must contain)
    let cases: &[(&str, i32, &str)] = &[
        ("nosuch", 1, "no route for Thrift method \"nosuch\""),
        ("Strict:get", 7, "missing trace context"),
        ("down", 6, "cannot connect to upstream nowhere"),
        ("slow", 6, "did not answer within 200ms"),
    ];
    for (i, (name, kind, text)) in cases.iter().enumerate() {
        c.send(&frame(dialect, &[], &[], &call(name, 100 + i as i32)))
            .await;
        let reply = c.reply().await.unwrap();
        let (p, rname, rkind, seq, body) = open(&reply);
        assert_eq!(
            (rname.as_str(), rkind, seq),
            (*name, MessageType::Exception, 100 + i as i32)
        );
        let (message, got_kind) = app_exception(p, &body);
        assert_eq!(got_kind, *kind, "{name}: {message}");
        assert!(message.contains(text), "{name}: {message}");
        if *name == "Strict:get" {
            assert!(
                message.contains("traceparent") && message.contains("x-trace-raw"),
                "{message}"
            );
        }
    }
    // Unknown transform (snappy): INVALID_TRANSFORM, with the header seq id echoed.
    let mut bad = frame(dialect, &[], &[Transform::Zlib], &call("add", 5)).to_vec();
    // The transform id is the byte after the protocol id and the count: 14 + 2.
    assert_eq!(bad[16], 1);
    bad[16] = 3;
    c.send(&bad).await;
    let reply = c.reply().await.unwrap();
    let Frame::Header(h) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(h.seq_id, HEADER_SEQ);
    let (p, _, rkind, _, body) = open(&reply);
    assert_eq!(rkind, MessageType::Exception);
    let (message, kind) = app_exception(p, &body);
    assert_eq!(kind, 8, "INVALID_TRANSFORM: {message}");

    // The connection still works, and the strict route passes with context.
    let tp_in = tp(CALLER_TRACE, CALLER_SPAN);
    c.send(&frame(
        dialect,
        &[("traceparent", &tp_in)],
        &[],
        &call("Strict:get", 9),
    ))
    .await;
    let (_, _, kind, seq, body) = open(&c.reply().await.unwrap());
    assert_eq!((kind, seq, body), (MessageType::Reply, 9, args.clone()));

    // Nothing but the good calls reached the upstream ("slow" was sent and abandoned).
    let names: Vec<String> = log.lock().unwrap().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["slow", "Strict:get"]);

    let text = metrics(&gw).await;
    for line in [
        "tracebridge_decode_errors_total{protocol=\"thrift\",reason=\"unknown_transform\"} 1",
        "tracebridge_trace_rejected_total{listener=\"rpc\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn oneway_is_forwarded_and_never_answered_pipelined_replies_keep_order() {
    let (gw, rpc, log) = gateway("header", "binary").await;
    let dialect = Dialect::Framed(ProtocolId::Binary);
    let mut c = Client::connect(rpc, dialect).await;
    let mut burst = BytesMut::new();
    burst.extend_from_slice(&frame(
        dialect,
        &[],
        &[],
        &message(
            ProtocolId::Binary,
            "add",
            MessageType::Oneway,
            1,
            &args_binary(1),
        ),
    ));
    for seq in 2..=6 {
        burst.extend_from_slice(&frame(
            dialect,
            &[],
            &[],
            &message(
                ProtocolId::Binary,
                "add",
                MessageType::Call,
                seq,
                &args_binary(seq),
            ),
        ));
    }
    c.send(&burst).await;
    for seq in 2..=6 {
        let (_, _, kind, got, body) = open(&c.reply().await.unwrap());
        assert_eq!(
            (kind, got, body),
            (MessageType::Reply, seq, args_binary(seq))
        );
    }
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    assert_eq!(
        seen.iter()
            .filter(|s| s.kind == MessageType::Oneway)
            .count(),
        1
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn pass_route_forwards_info_headers_untouched() {
    let (gw, rpc, log) = gateway("header", "binary").await;
    let dialect = Dialect::Header(ProtocolId::Binary);
    let mut c = Client::connect(rpc, dialect).await;
    let msg = message(
        ProtocolId::Binary,
        "passThrough",
        MessageType::Call,
        1,
        &args_binary(1),
    );
    c.send(&frame(
        dialect,
        &[("b3", "garbage"), ("x-app", "1")],
        &[],
        &msg,
    ))
    .await;
    let (_, _, kind, _, _) = open(&c.reply().await.unwrap());
    assert_eq!(kind, MessageType::Reply);
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(
        seen.info,
        vec![
            ("b3".to_owned(), "garbage".to_owned()),
            ("x-app".to_owned(), "1".to_owned())
        ]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_are_answered_or_close_only_their_connection() {
    let (gw, rpc, _log) = gateway("header", "binary").await;
    let dialect = Dialect::Framed(ProtocolId::Binary);
    let mut good = Client::connect(rpc, dialect).await;

    let mut big = Client::connect(rpc, dialect).await;
    big.send(&16_384_001u32.to_be_bytes()).await;
    // A framed-binary message start, announcing one byte over the default max_frame_size.
    big.send(&[0x80, 0x01, 0x00, 0x01]).await;
    big.send(&[0u8; 64]).await;
    assert!(
        big.reply().await.is_none(),
        "an oversized frame closes its connection"
    );

    let mut junk = Client::connect(rpc, dialect).await;
    junk.send(b"\x00\x00\x00\x10GARBAGEGARBAGEGA").await;
    assert!(
        junk.reply().await.is_none(),
        "unknown framing closes its connection"
    );

    assert_served(&mut good, dialect, 3, "a good connection beside them").await;

    // THeader frames broken inside: a header varint longer than 5 bytes, a header area past
    // the end of the frame, and a zlib payload inflating past max_frame_size.
    let theader = |header_words: u16, header: &[u8], payload: &[u8]| {
        let mut f = Vec::new();
        let len = 10 + header.len() + payload.len();
        f.extend_from_slice(&(len as u32).to_be_bytes());
        f.extend_from_slice(&[0x0f, 0xff, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&header_words.to_be_bytes());
        f.extend_from_slice(header);
        f.extend_from_slice(payload);
        f
    };
    let bomb = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 17_000_000]).unwrap();
        z.finish().unwrap()
    };
    // Each frame is whole, so each is answered with a PROTOCOL_ERROR naming what is wrong, and
    // the connection goes on: the next call on it is served.
    let mut bad = Client::connect(rpc, Dialect::Header(ProtocolId::Binary)).await;
    for (bytes, says) in [
        (theader(2, &[0xff; 8], &[]), "bad varint in"),
        (
            theader(100, &[0, 0, 0, 0], &[]),
            "THeader frame is malformed",
        ),
        (
            theader(1, &[0, 1, 1, 0], &bomb),
            "exceeds max_frame_size 16384000",
        ),
    ] {
        bad.send(&bytes).await;
        let (protocol, _, kind, _, body) = open(&bad.reply().await.expect("an answer"));
        assert_eq!(kind, MessageType::Exception);
        let (message, code) = app_exception(protocol, &body);
        assert_eq!(code, 7, "PROTOCOL_ERROR: {message}");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let header_binary = Dialect::Header(ProtocolId::Binary);
    assert_served(&mut bad, header_binary, 5, "the same connection serves on").await;
    assert_served(&mut good, dialect, 4, "the good connection lives on").await;

    let text = metrics(&gw).await;
    for line in [
        "tracebridge_decode_errors_total{protocol=\"thrift\",reason=\"frame_too_large\"} 2",
        "tracebridge_decode_errors_total{protocol=\"thrift\",reason=\"unknown_transport\"} 1",
        "tracebridge_decode_errors_total{protocol=\"thrift\",reason=\"bad_varint\"} 1",
        "tracebridge_decode_errors_total{protocol=\"thrift\",reason=\"bad_header\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    gw.shutdown().await;
}
