//! Integration: SIGTERM drains the real binary (`tracebridge run`, ports read from its
//! `listening ...` lines) without losing a request.
//!
//! - Under bounded keep-alive load (HTTP/1.1, raw sockets), every request either gets its
//!   response or meets a clean close before it was written. A close on a reused connection
//!   is retried once on a fresh connection, as real clients do; a fresh connection refused
//!   means the request was never written. A request fully written on a fresh connection and
//!   then closed without an answer is a loss, and there must be none. Repeated for up to 20
//!   rounds within ~30 s.
//! - h2: a request in flight when SIGTERM arrives is answered, and the connection then ends
//!   with GOAWAY (the h2 client's connection future completes cleanly).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::Instant;

use support::{Answer, Upstream};

/// Bound on every single wait of these tests.
const WAIT: Duration = Duration::from_secs(10);
/// Concurrent keep-alive clients per round.
const CLIENTS: usize = 6;
/// Answered requests before SIGTERM, per client (so every client has a reused connection).
const WARM: usize = 10;

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = ""
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
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

/// The binary on `path`, once it printed `ready`, and its edge address.
async fn start(path: &Path) -> (Child, SocketAddr) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracebridge"))
        .arg("run")
        .arg("--config")
        .arg(path)
        .env_remove("TRACEBRIDGE_CONFIG_WATCH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut edge = None;
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("no `ready` in time")
            .unwrap()
            .expect("stdout ended before `ready`");
        if line == "ready" {
            break;
        }
        if let Some(rest) = line.strip_prefix("listening name=edge protocol=http address=") {
            edge = Some(rest.parse().unwrap());
        }
    }
    // Keep reading stdout (`stopped`) so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, edge.expect("no listening line for edge"))
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("child already reaped");
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A whole response; `close`: it said `Connection: close`.
    Answered { close: bool },
    /// The connection was closed (EOF or reset) before any byte of a response.
    ClosedUnanswered,
    /// A response began and was cut off.
    CutOff,
}

const REQUEST: &[u8] = b"GET /api/drain HTTP/1.1\r\nhost: gw\r\n\r\n";

/// Writes one request on `s` and reads its response.
async fn exchange(s: &mut TcpStream) -> Fate {
    if s.write_all(REQUEST).await.is_err() {
        return Fate::ClosedUnanswered;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Err(_) => panic!("no response and no close within {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) if got.is_empty() => return Fate::ClosedUnanswered,
            Ok(Ok(0)) | Ok(Err(_)) => return Fate::CutOff,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    let close = head.lines().any(|l| l.trim() == "connection: close");
    while got.len() < head_end + length {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Err(_) => panic!("body stalled"),
            Ok(Ok(0)) | Ok(Err(_)) => return Fate::CutOff,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    Fate::Answered { close }
}

/// Tallies of one round.
#[derive(Debug, Default)]
struct Tally {
    answered: AtomicUsize,
    /// Answered with `Connection: close` (in flight when the drain began).
    answered_close: AtomicUsize,
    retried: AtomicUsize,
    refused: AtomicUsize,
    lost: AtomicUsize,
}

/// One keep-alive client: requests until the gateway refuses a fresh connection (it stopped
/// listening), reconnecting after a `Connection: close` answer and retrying once on a fresh
/// connection after a close on a reused one.
async fn client(edge: SocketAddr, tally: Arc<Tally>, warm: Arc<AtomicUsize>) {
    let mut conn: Option<(TcpStream, usize)> = None;
    let mut own = 0;
    loop {
        let (mut s, used) = match conn.take() {
            Some(c) => c,
            None => match TcpStream::connect(edge).await {
                Ok(s) => (s, 0),
                Err(_) => {
                    // Never written: the listener is gone.
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            },
        };
        match exchange(&mut s).await {
            Fate::Answered { close } => {
                tally.answered.fetch_add(1, Ordering::SeqCst);
                tally
                    .answered_close
                    .fetch_add(usize::from(close), Ordering::SeqCst);
                own += 1;
                if own == WARM {
                    warm.fetch_add(1, Ordering::SeqCst);
                }
                if !close {
                    conn = Some((s, used + 1));
                }
            }
            Fate::ClosedUnanswered if used > 0 => {
                // The close raced the request on a reused connection: retry once, fresh.
                tally.retried.fetch_add(1, Ordering::SeqCst);
                let Ok(mut fresh) = TcpStream::connect(edge).await else {
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                match exchange(&mut fresh).await {
                    Fate::Answered { close } => {
                        tally.answered.fetch_add(1, Ordering::SeqCst);
                        if !close {
                            conn = Some((fresh, 1));
                        }
                    }
                    _ => {
                        tally.lost.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
            Fate::ClosedUnanswered | Fate::CutOff => {
                tally.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// One round: load, SIGTERM, exit; the tally.
async fn round(path: &Path) -> Tally {
    let (mut child, edge) = start(path).await;
    let tally = Arc::new(Tally::default());
    let warm = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(edge, tally.clone(), warm.clone())))
        .collect();
    let deadline = Instant::now() + WAIT;
    while warm.load(Ordering::SeqCst) < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "clients not warm within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sigterm(&child);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("no exit within the bound after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    for c in clients {
        tokio::time::timeout(WAIT, c).await.unwrap().unwrap();
    }
    Arc::into_inner(tally).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_keep_alive_load_loses_no_request() {
    let up = Upstream::start(Answer {
        delay: Duration::from_millis(2),
        ..Answer::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(up.address)).unwrap();
    let started = Instant::now();
    let mut rounds = 0;
    let (mut answered, mut retried, mut with_close) = (0, 0, 0);
    while rounds < 20 && started.elapsed() < Duration::from_secs(30) {
        let t = round(&path).await;
        rounds += 1;
        let lost = t.lost.load(Ordering::SeqCst);
        assert_eq!(lost, 0, "round {rounds}: {t:?}");
        assert_eq!(
            t.refused.load(Ordering::SeqCst),
            CLIENTS,
            "round {rounds}: {t:?}"
        );
        answered += t.answered.load(Ordering::SeqCst);
        retried += t.retried.load(Ordering::SeqCst);
        with_close += t.answered_close.load(Ordering::SeqCst);
    }
    eprintln!(
        "drain: {rounds} rounds in {:?}, {answered} answered ({with_close} of them with `Connection: close`), {retried} retried after a close on a reused connection, 0 lost",
        started.elapsed()
    );
    assert!(rounds >= 5, "only {rounds} rounds fit");
    assert_eq!(
        up.count(),
        answered,
        "every request the upstream saw was answered"
    );
}

#[tokio::test]
async fn sigterm_answers_an_h2_request_in_flight_then_sends_goaway() {
    let up = Upstream::start(Answer {
        delay: Duration::from_millis(300),
        ..Answer::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(up.address)).unwrap();
    let (mut child, edge) = start(&path).await;
    let tcp = TcpStream::connect(edge).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let req = http::Request::get(format!("http://{edge}/api/h2"))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(req, true).unwrap();
    // Wait until the request reached the upstream: it is in flight.
    let deadline = Instant::now() + WAIT;
    while up.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let term = Instant::now();
    sigterm(&child);
    let response = tokio::time::timeout(WAIT, response).await.unwrap();
    let response = response.unwrap_or_else(|e| {
        panic!(
            "{e} {:?} after SIGTERM; exited: {:?}",
            term.elapsed(),
            child.try_wait()
        )
    });
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.data()).await.unwrap() {
        let chunk: Bytes = chunk.unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"hello from upstream");
    // GOAWAY, then the gateway closes: the client connection ends without an error.
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the h2 connection did not end after SIGTERM")
        .unwrap()
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
