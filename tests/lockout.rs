//! Integration: no listener can be locked out by silent or slow connections, and a Thrift
//! connection holds a bounded amount in flight. The gateway runs on 127.0.0.1:0 in this
//! process; the hostile clients are raw sockets on loopback.
//!
//! - HTTP: a silent socket (also during the HTTP/1.1-vs-h2 sniff) and a stalled request head
//!   are closed after `header_timeout`; 20 silent sockets on a listener capped at 20 do not
//!   keep a real request waiting: the oldest is shed at once.
//! - Thrift: a silent socket and a frame announced but stalled mid-way are closed after
//!   `header_timeout`; 2,000 stalled sockets on a listener capped at 1,000 do not keep a real
//!   call waiting.
//! - Admin: a silent socket is closed after its header timeout.
//! - Thrift bounds: `max_inflight_per_connection` and `max_inflight_bytes` stop reading (the
//!   calls beyond wait in the socket, then are all answered in order); a frame larger than
//!   `max_inflight_bytes` is refused by closing the connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracebridge::app::{self, RunningGateway};
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};

use support::thrift::{Client, Dialect, echo_upstream, frame, message, open};
use support::{Answer, Upstream, counters, scrape};

/// The `tracebridge_connections_cut_total` samples of a gateway, as `{labels}` → value.
async fn cuts(gw: &RunningGateway) -> std::collections::BTreeMap<String, u64> {
    let text = scrape(gw.address("admin").unwrap()).await;
    counters(&text, &["tracebridge_connections_cut_total"])
        .into_iter()
        .map(|(k, v)| {
            (
                k.trim_start_matches("tracebridge_connections_cut_total")
                    .to_owned(),
                v,
            )
        })
        .collect()
}

const GET: &[u8] = b"GET /api/x HTTP/1.1\r\nhost: gw\r\n\r\n";

async fn start(text: &str) -> RunningGateway {
    let cfg = tracebridge::config::parse(text).unwrap_or_else(|e| panic!("config: {e}"));
    app::start(cfg).await.unwrap()
}

fn http_config(upstream: SocketAddr, max_connections: usize, header_timeout: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[shutdown]
drain_timeout = "2s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
max_connections = {max_connections}
header_timeout = "{header_timeout}"
[[routes]]
name = "main"
listener = "edge"
match = {{ path_prefix = "/api" }}
upstream = "svc"
[[upstreams]]
name = "svc"
protocol = "http"
endpoints = ["{upstream}"]
connect_timeout = "1s"
"#
    )
}

/// A Thrift listener `rpc` with `extra` keys, routing `add` to a THeader binary upstream.
fn thrift_config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[shutdown]
drain_timeout = "2s"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
{extra}
[[routes]]
name = "main"
listener = "rpc"
match = {{ thrift_method = "add" }}
upstream = "legacy"
timeout = "10s"
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

/// How long until the peer closes `stream` (EOF or reset); panics after `bound`. Bytes the
/// gateway sends first (an error response) are read past.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(started + bound, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {bound:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the gateway still holds `stream` open (nothing to read, no EOF).
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The response head to `GET` on a fresh connection, within `bound`.
async fn get(edge: SocketAddr, bound: Duration) -> String {
    let mut s = TcpStream::connect(edge).await.unwrap();
    s.write_all(GET).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(bound, s.read(&mut buf))
            .await
            .expect("no response in time")
            .unwrap();
        assert!(n > 0, "closed without a response");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn twenty_silent_sockets_do_not_lock_out_an_http_listener_capped_at_twenty() {
    let up = Upstream::start(Answer::default()).await;
    let gw = start(&http_config(up.address, 20, "1s")).await;
    let edge = gw.address("edge").unwrap();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(edge).await.unwrap());
    }
    let started = Instant::now();
    let head = get(edge, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Shedding made room, not the timeout: the newest silent socket is still open.
    assert!(
        still_open(&silent[19]),
        "the newest silent socket was closed too (served after {took:?})"
    );
    closed_within(&mut silent[0], Duration::from_millis(500)).await;
    assert!(took < Duration::from_secs(1), "served after {took:?}");
    assert_eq!(up.count(), 1);
    let cut = cuts(&gw).await;
    assert_eq!(
        cut.get(r#"{listener="edge",reason="shed"}"#),
        Some(&1),
        "{cut:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_or_stalled_http_connection_is_closed_after_header_timeout() {
    let up = Upstream::start(Answer::default()).await;
    let gw = start(&http_config(up.address, 100, "1s")).await;
    let edge = gw.address("edge").unwrap();
    // Nothing at all: the auto builder is still sniffing HTTP/1.1 vs h2.
    let mut silent = TcpStream::connect(edge).await.unwrap();
    // Half a request head.
    let mut stalled = TcpStream::connect(edge).await.unwrap();
    stalled.write_all(b"GET /api/x HTTP/1.1\r\n").await.unwrap();
    // Half an h2 preface.
    let mut preface = TcpStream::connect(edge).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let opened = Instant::now();
    for (what, s) in [
        ("silent", &mut silent),
        ("stalled head", &mut stalled),
        ("stalled h2 preface", &mut preface),
    ] {
        closed_within(s, Duration::from_secs(5)).await;
        let after = opened.elapsed();
        assert!(
            after >= Duration::from_millis(800),
            "{what}: closed after {after:?}"
        );
    }
    // A real client is served the whole time.
    assert!(
        get(edge, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_admin_connection_is_closed_after_its_header_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(tracebridge::telemetry::admin::serve_with(
        listener,
        Arc::new(tracebridge::telemetry::Metrics::new()),
        Arc::new(AtomicBool::new(true)),
        stop.clone(),
        Duration::from_secs(1),
        2,
    ));
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut other = TcpStream::connect(addr).await.unwrap();
    // At the cap of 2: the oldest silent one is shed for a real probe.
    let mut probe = TcpStream::connect(addr).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), probe.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let shed = closed_within(&mut silent, Duration::from_millis(500)).await;
    assert!(shed < Duration::from_millis(500));
    let after = closed_within(&mut other, Duration::from_secs(5)).await;
    assert!(
        after >= Duration::from_millis(300),
        "closed after {after:?}"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// A THeader binary CALL `add` with seqid `seq` and `len` bytes of args.
fn add_call(seq: i32, len: usize) -> Vec<u8> {
    // { 1: string blob } of `len - 8` bytes (field head 3, length 4, stop 1).
    let mut args = vec![11u8, 0, 1];
    let blob = len.saturating_sub(8);
    args.extend_from_slice(&(blob as i32).to_be_bytes());
    args.resize(args.len() + blob, b'x');
    args.push(0);
    let m = message(ProtocolId::Binary, "add", MessageType::Call, seq, &args);
    frame(Dialect::Header(ProtocolId::Binary), seq as u32, &[], &m).to_vec()
}

/// The seqid of the next reply on `client`, which must be a REPLY to `add`.
async fn reply_seq(client: &mut Client) -> i32 {
    let (_, f) = client.reply().await.expect("closed without a reply");
    let (_, name, kind, seq, _) = open(&f);
    assert_eq!((name.as_str(), kind), ("add", MessageType::Reply));
    seq
}

#[tokio::test]
async fn a_silent_or_stalled_thrift_connection_is_closed_after_header_timeout() {
    let up = echo_upstream().await;
    let gw = start(&thrift_config(up, "header_timeout = \"1s\"")).await;
    let rpc = gw.address("rpc").unwrap();
    let mut silent = TcpStream::connect(rpc).await.unwrap();
    // A frame announced (its length and the start of its THeader head) and never finished.
    let call = add_call(1, 64);
    let mut stalled = TcpStream::connect(rpc).await.unwrap();
    stalled.write_all(&call[..20]).await.unwrap();
    // A connection that served a call, then went quiet.
    let mut used = Client::connect(rpc).await;
    used.send(&add_call(7, 64)).await;
    assert_eq!(reply_seq(&mut used).await, 7);
    let opened = Instant::now();
    for (what, s) in [("silent", &mut silent), ("stalled frame", &mut stalled)] {
        closed_within(s, Duration::from_secs(5)).await;
        let after = opened.elapsed();
        assert!(
            after >= Duration::from_millis(800),
            "{what}: closed after {after:?}"
        );
    }
    assert!(
        used.reply().await.is_none(),
        "the idle connection is closed too"
    );
    // The silent, the stalled and the idle one.
    let cut = cuts(&gw).await;
    assert_eq!(
        cut.get(r#"{listener="rpc",reason="timeout"}"#),
        Some(&3),
        "{cut:?}"
    );
    gw.shutdown().await;
}

/// Max open files of this process (soft limit), from /proc/self/limits.
fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test]
async fn two_thousand_stalled_thrift_sockets_do_not_lock_out_a_thrift_listener() {
    // Each stalled socket costs this process two descriptors (client end, gateway end) while
    // the gateway holds it: keep well below the limit.
    let limit = fd_limit();
    let count = 2_000.min(limit.saturating_sub(200) / 2);
    if count < 2_000 {
        eprintln!("note: fd limit {limit}: {count} stalled sockets instead of 2,000");
    }
    let up = echo_upstream().await;
    let cap = count / 2;
    let gw = start(&thrift_config(
        up,
        &format!("max_connections = {cap}\nheader_timeout = \"30s\""),
    ))
    .await;
    let rpc = gw.address("rpc").unwrap();
    let call = add_call(1, 64);
    let mut stalled = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let mut s = TcpStream::connect(rpc).await.unwrap();
        s.write_all(&call[..10]).await.unwrap();
        stalled.push(s);
    }
    let mut client = Client::connect(rpc).await;
    client.send(&add_call(42, 64)).await;
    assert_eq!(reply_seq(&mut client).await, 42);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Shed, not timed out (header_timeout is 30 s): the first is gone, the last is held.
    closed_within(&mut stalled[0], Duration::from_secs(5)).await;
    assert!(still_open(&stalled[count - 1]));
    drop(stalled);
    gw.shutdown().await;
}

/// A THeader binary upstream that counts the calls it received at once and answers each
/// (echoing its args, in order per connection) only when `release` gives a permit.
async fn held_upstream() -> (SocketAddr, Arc<AtomicUsize>, Arc<Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let (count, gate) = (received.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (read, mut write) = stream.into_split();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let count = count.clone();
            tokio::spawn(async move {
                let mut frames = FramedRead::new(read, ThriftDecoder::new(1 << 24));
                while let Some(Ok(Frame::Header(h))) = frames.next().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    if tx.send(h).is_err() {
                        return;
                    }
                }
            });
            let gate = gate.clone();
            tokio::spawn(async move {
                while let Some(h) = rx.recv().await {
                    gate.acquire().await.unwrap().forget();
                    let m = peek_message(&h.payload, h.protocol).unwrap().unwrap();
                    let reply = message(
                        ProtocolId::Binary,
                        m.name,
                        MessageType::Reply,
                        m.seq_id,
                        &h.payload[m.body_offset..],
                    );
                    let out = frame(Dialect::Header(ProtocolId::Binary), h.seq_id, &[], &reply);
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received, release)
}

/// Waits until `n` calls reached the upstream; false if not within `bound`.
async fn reached(received: &AtomicUsize, n: usize, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while received.load(Ordering::SeqCst) < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Sends five pipelined calls of `len` bytes, checks that exactly `admitted` reach the
/// upstream while it holds them, then releases them and checks all five answers in order.
async fn pipeline_stops_at(extra: &str, len: usize, admitted: usize) {
    let (up, received, release) = held_upstream().await;
    let gw = start(&thrift_config(up, extra)).await;
    let mut client = Client::connect(gw.address("rpc").unwrap()).await;
    let mut burst = Vec::new();
    for seq in 1..=5 {
        burst.extend_from_slice(&add_call(seq, len));
    }
    client.send(&burst).await;
    assert!(reached(&received, admitted, Duration::from_secs(5)).await);
    // The rest wait in the socket while the upstream holds the first ones.
    assert!(!reached(&received, admitted + 1, Duration::from_millis(300)).await);
    assert_eq!(received.load(Ordering::SeqCst), admitted);
    release.add_permits(5);
    for seq in 1..=5 {
        assert_eq!(reply_seq(&mut client).await, seq);
    }
    assert_eq!(received.load(Ordering::SeqCst), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_inflight_per_connection_stops_reading_until_calls_finish() {
    pipeline_stops_at("max_inflight_per_connection = 2", 64, 2).await;
}

#[tokio::test]
async fn max_inflight_bytes_stops_reading_until_calls_finish() {
    // Calls of ~1,000 bytes against a 2,500-byte budget: reading stops once 3 are held.
    pipeline_stops_at("max_inflight_bytes = 2500", 1_000, 3).await;
}

#[tokio::test]
async fn a_frame_larger_than_max_inflight_bytes_is_refused() {
    let up = echo_upstream().await;
    let gw = start(&thrift_config(
        up,
        "max_inflight_bytes = 2500\nheader_timeout = \"30s\"",
    ))
    .await;
    let rpc = gw.address("rpc").unwrap();
    let mut big = TcpStream::connect(rpc).await.unwrap();
    // Only the head is sent: the length prefix alone gets it refused.
    big.write_all(&add_call(1, 4_000)[..64]).await.unwrap();
    closed_within(&mut big, Duration::from_secs(5)).await;
    let mut client = Client::connect(rpc).await;
    client.send(&add_call(2, 2_000)).await;
    assert_eq!(reply_seq(&mut client).await, 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_rapid_reset_gets_goaway_within_a_second() {
    let up = Upstream::start(Answer::default()).await;
    let gw = start(&http_config(up.address, 100, "30s")).await;
    let edge = gw.address("edge").unwrap();
    let tcp = TcpStream::connect(edge).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let started = Instant::now();
    let mut refused_at = None;
    let mut reset = 0;
    // 10 HEADERS + RST_STREAM every 2 ms (the pace of the attack, not a wait) for 5 s.
    'attack: while started.elapsed() < Duration::from_secs(5) {
        for _ in 0..10 {
            let ready = tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await;
            let Ok(Ok(ready)) = ready else {
                refused_at = Some(started.elapsed());
                break 'attack;
            };
            client = ready;
            let req = http::Request::get(format!("http://{edge}/api/reset"))
                .body(())
                .unwrap();
            match client.send_request(req, false) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    reset += 1;
                }
                Err(_) => {
                    refused_at = Some(started.elapsed());
                    break 'attack;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let refused_at = refused_at.expect("the connection was never told to go away");
    assert!(
        refused_at < Duration::from_secs(1),
        "GOAWAY after {refused_at:?}"
    );
    // The connection ends: GOAWAY (NO_ERROR from a graceful close, or ENHANCE_YOUR_CALM from
    // h2's own pending-accept limit), then the close.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the connection did not end")
        .unwrap();
    if let Err(e) = &ended {
        assert!(
            e.is_go_away() || e.is_io(),
            "the connection ended with {e:?}"
        );
    }
    let upstream = up.count();
    eprintln!(
        "rapid reset: {reset} streams reset, refused after {refused_at:?}, {upstream} upstream requests, ended with {ended:?}"
    );
    assert!(upstream < 100, "{upstream} upstream requests");
    // Other clients are served.
    assert!(
        get(edge, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_streams_cancelled_after_dispatch_beyond_the_budget_get_goaway() {
    // Each stream reaches the upstream (which answers after 10 s) before the client resets
    // it: h2's pending-accept limit never sees these; the per-connection budget does.
    let up = Upstream::start(Answer {
        delay: Duration::from_secs(10),
        ..Answer::default()
    })
    .await;
    let gw = start(&http_config(up.address, 100, "30s")).await;
    let edge = gw.address("edge").unwrap();
    let tcp = TcpStream::connect(edge).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut cancelled = 0;
    let refused = loop {
        assert!(
            cancelled < 100,
            "still accepted after {cancelled} cancelled streams"
        );
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await
        else {
            break cancelled;
        };
        client = ready;
        let req = http::Request::get(format!("http://{edge}/api/cancel"))
            .body(())
            .unwrap();
        let Ok((_, mut stream)) = client.send_request(req, true) else {
            break cancelled;
        };
        // Wait (bounded) until the upstream has it, then cancel it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while up.count() <= cancelled && Instant::now() < deadline && !connection.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if up.count() <= cancelled {
            break cancelled;
        }
        stream.send_reset(h2::Reason::CANCEL);
        cancelled += 1;
    };
    // The burst is 32: the 33rd cancel overspends it.
    assert!(
        (32..=40).contains(&refused),
        "refused after {refused} cancels"
    );
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the connection did not end")
        .unwrap()
        .ok();
    let cut = cuts(&gw).await;
    assert_eq!(
        cut.get(r#"{listener="edge",reason="rapid_reset"}"#),
        Some(&1),
        "{cut:?}"
    );
    assert!(up.count() <= 41, "{} upstream requests", up.count());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_h2_connection_gets_goaway_after_header_timeout() {
    let up = Upstream::start(Answer::default()).await;
    let gw = start(&http_config(up.address, 100, "1s")).await;
    let edge = gw.address("edge").unwrap();
    let tcp = TcpStream::connect(edge).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let req = http::Request::get(format!("http://{edge}/api/h2"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let idle = Instant::now();
    // GOAWAY (NO_ERROR), then the close: the client's connection ends without an error.
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle h2 connection was kept")
        .unwrap()
        .unwrap();
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}"
    );
    let req = http::Request::get(format!("http://{edge}/api/h2"))
        .body(())
        .unwrap();
    assert!(
        client.send_request(req, true).is_err(),
        "no stream after GOAWAY"
    );
    gw.shutdown().await;
}
