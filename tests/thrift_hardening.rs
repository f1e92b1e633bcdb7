//! Integration: the Thrift listener and upstream pool against hostile peers, the gateway on
//! 127.0.0.1:0 in this process.
//!
//! - Downstream: nested and repeated zlib transforms are refused with INVALID_TRANSFORM before
//!   anything is inflated, the process's memory stays bounded, and the connection serves on.
//! - Upstream: a connection whose reply reader fails (garbage, a frame over the limit, the
//!   upstream going away) is retired at once: its call fails with INTERNAL_ERROR naming the
//!   cause, and the next call dials a fresh connection instead of waiting on a dead one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, FramedRead};
use tracebridge::app::{self, RunningGateway};
use tracebridge::codec::thrift::Dialect as WireDialect;
use tracebridge::codec::thrift::encode_message_header;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{HeaderHead, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};

/// `TApplicationException` types (Apache `TApplicationException`).
const INTERNAL_ERROR: i32 = 6;
const INVALID_TRANSFORM: i32 = 8;

/// How the fake upstream treats one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// Answer every call with a REPLY echoing its args (THeader, binary).
    Echo,
    /// Answer a call with 20 bytes that are no THeader frame, then read on until EOF.
    Garbage,
    /// Answer a call with a LENGTH one byte over the default max_frame_size, then read on
    /// until EOF.
    Oversized,
    /// Read a call, report it on `received`, then hold the socket until the task is aborted.
    Hold,
}

/// A THeader binary Thrift server on 127.0.0.1:0; see [`serve_upstream`].
async fn start_upstream(first: Behaviour) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (received, _) = oneshot::channel();
    serve_upstream(listener, first, accepted.clone(), received);
    (addr, accepted)
}

/// Serves `listener`'s connections one after another: the first with `first`, every later one
/// with [`Behaviour::Echo`]; `accepted` counts them. Serving them in turn also proves that the
/// gateway closes a connection it retired: the next one is accepted only after that EOF.
/// Aborting the task closes the listener and the connection being served.
fn serve_upstream(
    listener: TcpListener,
    first: Behaviour,
    accepted: Arc<AtomicUsize>,
    received: oneshot::Sender<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut received = Some(received);
        while let Ok((stream, _)) = listener.accept().await {
            let n = accepted.fetch_add(1, Ordering::SeqCst);
            let behaviour = if n == 0 { first } else { Behaviour::Echo };
            serve_upstream_connection(stream, behaviour, &mut received).await;
        }
    })
}

async fn serve_upstream_connection(
    stream: TcpStream,
    behaviour: Behaviour,
    received: &mut Option<oneshot::Sender<()>>,
) {
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, ThriftDecoder::new(1 << 24));
    while let Some(Ok(frame)) = frames.next().await {
        let Frame::Header(h) = frame else {
            panic!("upstream got {frame:?}")
        };
        let out = match behaviour {
            Behaviour::Echo => echo_reply(h.seq_id, &h.payload),
            Behaviour::Garbage => b"\x00\x00\x00\x10GARBAGEGARBAGEGA".to_vec(),
            Behaviour::Oversized => {
                let mut o = 16_384_001u32.to_be_bytes().to_vec();
                o.extend_from_slice(&[0x0F, 0xFF, 0, 0, 0, 0, 0, 1]);
                o
            }
            Behaviour::Hold => {
                if let Some(tx) = received.take() {
                    let _ = tx.send(());
                }
                std::future::pending::<()>().await;
                return;
            }
        };
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A THeader binary REPLY to the binary call in `payload`, echoing its args as the result.
fn echo_reply(header_seq: u32, payload: &[u8]) -> Vec<u8> {
    let h = peek_message(payload, ProtocolId::Binary).unwrap().unwrap();
    let mut msg = BytesMut::new();
    encode_message_header(
        &mut msg,
        ProtocolId::Binary,
        h.name,
        MessageType::Reply,
        h.seq_id,
    );
    msg.extend_from_slice(&payload[h.body_offset..]);
    let head = HeaderHead {
        flags: 0,
        seq_id: header_seq,
        protocol: ProtocolId::Binary,
        transforms: &[],
        info: &[],
        persistent: &[],
    };
    let mut out = BytesMut::new();
    encode_head(&head, msg.len(), &mut out).unwrap();
    out.extend_from_slice(&msg);
    out.to_vec()
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
name = "main"
listener = "rpc"
match = {{ thrift_method = "add" }}
upstream = "legacy"
timeout = "3s"
[[upstreams]]
name = "legacy"
protocol = "thrift"
transport = "header"
thrift_protocol = "binary"
endpoints = ["{upstream}"]
connect_timeout = "1s"
"#
    )
}

async fn gateway(upstream: SocketAddr) -> (RunningGateway, SocketAddr) {
    let cfg = tracebridge::config::parse(&config(upstream)).unwrap_or_else(|e| panic!("{e}"));
    let gw = app::start(cfg).await.unwrap();
    let rpc = gw.address("rpc").unwrap();
    (gw, rpc)
}

/// The args struct `{ 1: i32 n }` in binary.
fn args(n: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(8);
    b.put_i16(1);
    b.put_i32(n);
    b.put_u8(0);
    b.freeze()
}

/// A THeader binary CALL `add(n)` with message seqid `n`.
fn add_call(n: i32) -> Vec<u8> {
    let mut msg = BytesMut::new();
    encode_message_header(&mut msg, ProtocolId::Binary, "add", MessageType::Call, n);
    msg.extend_from_slice(&args(n));
    let head = HeaderHead {
        flags: 0,
        seq_id: n as u32,
        protocol: ProtocolId::Binary,
        transforms: &[],
        info: &[],
        persistent: &[],
    };
    let mut out = BytesMut::new();
    encode_head(&head, msg.len(), &mut out).unwrap();
    out.extend_from_slice(&msg);
    out.to_vec()
}

/// A raw THeader frame: binary protocol, the given transform ids, `payload` as is.
fn theader(seq_id: u32, transform_ids: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut area = vec![0, transform_ids.len() as u8];
    area.extend_from_slice(transform_ids);
    area.resize(area.len().div_ceil(4) * 4, 0);
    let mut f = Vec::with_capacity(14 + area.len() + payload.len());
    f.extend_from_slice(&((10 + area.len() + payload.len()) as u32).to_be_bytes());
    f.extend_from_slice(&[0x0F, 0xFF, 0, 0]);
    f.extend_from_slice(&seq_id.to_be_bytes());
    f.extend_from_slice(&((area.len() / 4) as u16).to_be_bytes());
    f.extend_from_slice(&area);
    f.extend_from_slice(payload);
    f
}

/// zlib of `n` zero bytes, streamed so the zeros never sit in memory at once.
fn zlib_of_zeros(n: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        z.write_all(&chunk[..k]).unwrap();
        left -= k;
    }
    z.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A raw client connection reading THeader replies.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: ThriftDecoder,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: ThriftDecoder::for_dialect(WireDialect::HEADER, 1 << 24),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next reply frame; panics if none arrives within 10 s or the gateway closes.
    async fn reply(&mut self) -> (u32, String, MessageType, i32, Bytes) {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                return open(frame);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("no reply within 10 s")
                    .unwrap();
            assert_ne!(n, 0, "the gateway closed the connection");
        }
    }

    /// Sends `add(n)` and asserts the upstream's echo comes back: REPLY, seqid n, args n.
    async fn assert_served(&mut self, n: i32, what: &str) {
        self.send(&add_call(n)).await;
        let (header_seq, name, kind, seq, body) = self.reply().await;
        assert_eq!(
            (header_seq, name.as_str(), kind, seq, body),
            (n as u32, "add", MessageType::Reply, n, args(n)),
            "{what}"
        );
    }

    /// Reads a reply and returns the `TApplicationException` it carries, checking it answers
    /// the call `name` with header seq id and message seqid `seq`.
    async fn exception(&mut self, name: &str, seq: i32) -> (String, i32) {
        let (header_seq, got_name, kind, got_seq, body) = self.reply().await;
        assert_eq!(
            (header_seq, got_name.as_str(), kind, got_seq),
            (seq as u32, name, MessageType::Exception, seq)
        );
        app_exception(&body)
    }
}

/// Header seq id and the message's name, type, seqid and body.
fn open(frame: Frame) -> (u32, String, MessageType, i32, Bytes) {
    let Frame::Header(h) = frame else {
        panic!("not a THeader reply: {frame:?}")
    };
    assert_eq!(h.protocol, ProtocolId::Binary);
    let m = peek_message(&h.payload, h.protocol).unwrap().unwrap();
    (
        h.seq_id,
        m.name.to_owned(),
        m.kind,
        m.seq_id,
        h.payload.slice(m.body_offset..),
    )
}

/// `TApplicationException { 1: string message, 2: i32 type }` (binary), exactly those fields.
fn app_exception(body: &[u8]) -> (String, i32) {
    assert_eq!(&body[..3], &[11, 0, 1], "field 1 is the message");
    let len = i32::from_be_bytes(body[3..7].try_into().unwrap()) as usize;
    let message = String::from_utf8(body[7..7 + len].to_vec()).unwrap();
    let rest = &body[7 + len..];
    assert_eq!(&rest[..3], &[8, 0, 2], "field 2 is the type");
    let kind = i32::from_be_bytes(rest[3..7].try_into().unwrap());
    assert_eq!(&rest[7..], &[0], "then the struct ends");
    (message, kind)
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM). The gateway runs in this process.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn metrics(gw: &RunningGateway) -> String {
    let admin = gw.address("admin").unwrap();
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("metrics within 5 s")
        .unwrap();
    out
}

/// Frames per connection in the nested-zlib test.
const NESTED_PER_CONNECTION: u32 = 32;

/// Sends `NESTED_PER_CONNECTION` copies of `bomb` (header seq ids `first..`) in one write and
/// checks each is answered with INVALID_TRANSFORM naming the three transforms.
async fn refuse_nested(client: &mut Client, bomb: &[u8], first: u32) {
    let mut burst = Vec::new();
    for seq in first..first + NESTED_PER_CONNECTION {
        let mut f = bomb.to_vec();
        f[8..12].copy_from_slice(&seq.to_be_bytes());
        burst.extend_from_slice(&f);
    }
    client.send(&burst).await;
    for seq in first..first + NESTED_PER_CONNECTION {
        let (message, kind) = client.exception("", seq as i32).await;
        assert_eq!(
            (kind, message.as_str()),
            (
                INVALID_TRANSFORM,
                "THeader frame lists 3 transforms; at most one (zlib) is accepted"
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_and_repeated_zlib_are_refused_in_bounded_memory() {
    let (up, _) = start_upstream(Behaviour::Echo).await;
    let (gw, rpc) = gateway(up).await;

    // 16,000,000 zeros (under max_frame_size, so a reader that inflated each layer in turn
    // would get there) wrapped in zlib three times: a frame of ~160 bytes.
    let inner = zlib_of_zeros(16_000_000);
    let twice = zlib(&inner);
    let nested = theader(0, &[1, 1, 1], &zlib(&twice));
    let repeated = theader(7, &[1, 1], &twice);
    assert!(nested.len() < 200, "nested frame is {} bytes", nested.len());
    drop(inner);

    let mut a = Client::connect(rpc).await;
    let mut b = Client::connect(rpc).await;
    a.assert_served(1, "warm-up a").await;
    b.assert_served(2, "warm-up b").await;
    let rss_before = status_kib("VmRSS:");

    tokio::join!(
        refuse_nested(&mut a, &nested, 1000),
        refuse_nested(&mut b, &nested, 2000),
    );
    a.send(&repeated).await;
    assert_eq!(
        a.exception("", 7).await,
        (
            "THeader frame lists 2 transforms; at most one (zlib) is accepted".to_owned(),
            INVALID_TRANSFORM
        )
    );

    let rss_after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!("VmRSS before {rss_before} KiB, after {rss_after} KiB; VmHWM {peak} KiB");
    // One inflated layer alone would be 16,000,000 bytes (15,625 KiB).
    assert!(
        rss_after.saturating_sub(rss_before) < 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(rss_after < 100 * 1024, "RSS {rss_after} KiB");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");

    // Both connections serve on.
    a.assert_served(3, "a after the refused frames").await;
    b.assert_served(4, "b after the refused frames").await;
    let text = metrics(&gw).await;
    let line =
        "tracebridge_decode_errors_total{protocol=\"thrift\",reason=\"repeated_transform\"} 65";
    assert!(text.contains(line), "missing {line} in\n{text}");
    gw.shutdown().await;
}

/// The first call gets INTERNAL_ERROR with `cause`; the next one is served by a second,
/// freshly dialled connection, well within the route's 3 s timeout (a call written to the dead
/// connection would time out instead and say so).
async fn retired_then_served_afresh(first: Behaviour, cause: &str) {
    let (up, accepted) = start_upstream(first).await;
    let (gw, rpc) = gateway(up).await;
    let mut c = Client::connect(rpc).await;
    c.send(&add_call(1)).await;
    assert_eq!(
        c.exception("add", 1).await,
        (format!("upstream legacy: {cause}"), INTERNAL_ERROR)
    );
    c.assert_served(2, "the next call, on a fresh connection")
        .await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "upstream connections");
    gw.shutdown().await;
}

#[tokio::test]
async fn garbage_reply_retires_the_upstream_connection() {
    retired_then_served_afresh(
        Behaviour::Garbage,
        "bad reply frame: THeader frame is malformed: no 0x0FFF magic",
    )
    .await;
}

#[tokio::test]
async fn oversized_reply_retires_the_upstream_connection() {
    retired_then_served_afresh(
        Behaviour::Oversized,
        "bad reply: Thrift frame of 16384001 bytes exceeds max_frame_size 16384000",
    )
    .await;
}

#[tokio::test]
async fn upstream_gone_in_flight_fails_the_call_and_a_restart_serves_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (received, held) = oneshot::channel();
    let upstream = serve_upstream(listener, Behaviour::Hold, accepted.clone(), received);
    let (gw, rpc) = gateway(up).await;
    let mut c = Client::connect(rpc).await;
    c.send(&add_call(1)).await;
    tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the upstream got the call within 5 s")
        .unwrap();

    // The upstream goes away with the call in flight: its listener and socket are closed.
    upstream.abort();
    assert!(upstream.await.unwrap_err().is_cancelled());
    assert_eq!(
        c.exception("add", 1).await,
        (
            "upstream legacy: connection closed by the upstream".to_owned(),
            INTERNAL_ERROR
        )
    );

    // Back on the same port: the first call dials it and is served.
    let listener = TcpListener::bind(up).await.unwrap();
    let (received, _) = oneshot::channel();
    let _upstream = serve_upstream(listener, Behaviour::Echo, accepted.clone(), received);
    c.assert_served(2, "the first call after the restart").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "upstream connections");
    gw.shutdown().await;
}
