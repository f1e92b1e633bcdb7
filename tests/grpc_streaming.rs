//! Integration: gRPC streams through the gateway at the HTTP/2 frame level, with the `h2`
//! crate on both sides so the test decides every frame. A 5 MiB message is streamed both ways
//! (the reply starts before the request has been sent whole, so nothing buffers the message),
//! compressed-message flags, `grpc-encoding` and `-bin` metadata pass untouched, and a caller's
//! RST_STREAM reaches the upstream as a reset — never as a clean END_STREAM, which would let
//! the upstream take a cancelled call for a finished request stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tracebridge::app::{self, RunningGateway};

const WAIT: Duration = Duration::from_secs(10);
const BIG: usize = 5 * 1024 * 1024;

/// How the upstream saw one request stream end.
#[derive(Debug, Clone, PartialEq)]
enum Ended {
    /// END_STREAM: the caller half-closed.
    Clean,
    /// RST_STREAM (or the connection failing) with this reason.
    Reset(Option<Reason>),
}

#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HeaderMap,
    received: usize,
    ended: Option<Ended>,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// An h2c upstream at the frame level. `/echo.Svc/*` answers headers on the first DATA and
/// sends every DATA chunk straight back, then trailers at END_STREAM. `/hold.Svc/*` answers
/// headers and one small message on the first DATA, then only reads. `/mute.Svc/*` never
/// answers. Every call's end (clean or reset) is recorded.
async fn upstream() -> (SocketAddr, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let calls: Calls = Arc::default();
    let record = calls.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(serve(req, respond, record.clone()));
                }
            });
        }
    });
    (address, calls)
}

async fn serve(
    req: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    calls: Calls,
) {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let index = {
        let mut calls = calls.lock().unwrap();
        calls.push(Call {
            path: path.clone(),
            headers: parts.headers,
            received: 0,
            ended: None,
        });
        calls.len() - 1
    };
    let mut send = None;
    loop {
        let chunk = body.data().await;
        let ended = match chunk {
            None => Ended::Clean,
            Some(Err(e)) => Ended::Reset(e.reason()),
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                calls.lock().unwrap()[index].received += data.len();
                if send.is_none() && !path.starts_with("/mute.Svc/") {
                    let response = Response::builder()
                        .header("content-type", "application/grpc")
                        .header("x-initial-bin", "AQID")
                        .body(())
                        .unwrap();
                    let mut stream = respond.send_response(response, false).unwrap();
                    if path.starts_with("/hold.Svc/") {
                        stream
                            .send_data(Bytes::from_static(&[0, 0, 0, 0, 1, 7]), false)
                            .unwrap();
                    }
                    send = Some(stream);
                }
                if path.starts_with("/echo.Svc/")
                    && let Some(stream) = send.as_mut()
                {
                    stream.send_data(data, false).unwrap();
                }
                continue;
            }
        };
        if ended == Ended::Clean
            && let Some(stream) = send.as_mut()
        {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("x-trailer-bin", "AAEC".parse().unwrap());
            let _ = stream.send_trailers(trailers);
        }
        calls.lock().unwrap()[index].ended = Some(ended);
        return;
    }
}

async fn gateway(up: SocketAddr) -> (RunningGateway, SocketAddr) {
    let text = format!(
        r#"
[admin]
listen = ""
[propagation]
extract = ["w3c"]
inject = ["w3c"]
on_missing = "start"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
listener = "edge"
upstream = "up"
[[upstreams]]
name = "up"
protocol = "grpc"
endpoints = ["{up}"]
"#
    );
    let gw = app::start(tracebridge::config::parse(&text).unwrap())
        .await
        .unwrap();
    let edge = gw.address("edge").unwrap();
    (gw, edge)
}

/// An h2c client connection to `edge`.
async fn client(edge: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(edge).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

fn grpc_request(path: &str, extra: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::post(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.body(()).unwrap()
}

/// Reads a response body to its end, releasing flow control as it goes; reports the first
/// chunk's arrival on `first`. Returns (bytes, trailers).
async fn read_all(
    mut body: RecvStream,
    first: oneshot::Sender<()>,
) -> (Vec<u8>, Option<HeaderMap>) {
    let mut first = Some(first);
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
    }
    (out, body.trailers().await.unwrap())
}

/// Waits until the upstream has recorded how `path`'s call ended.
async fn ended(calls: &Calls, path: &str) -> Ended {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(call) = calls.lock().unwrap().iter().find(|c| c.path == path)
            && let Some(ended) = &call.ended
        {
            return ended.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream call {path} did not end within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_5_mib_message_streams_both_ways_with_flags_and_metadata_untouched() {
    let (up, calls) = upstream().await;
    let (gw, edge) = gateway(up).await;
    let mut h2 = client(edge).await;

    // One message with the compressed flag set (the gateway must not look inside), 5 MiB.
    let mut message = Vec::with_capacity(BIG + 5);
    message.push(1);
    message.extend_from_slice(&(BIG as u32).to_be_bytes());
    message.extend((0..BIG).map(|i| (i % 251) as u8));
    let message = Bytes::from(message);
    let (head, tail) = (message.slice(..1024 * 1024), message.slice(1024 * 1024..));

    let req = grpc_request(
        "/echo.Svc/Stream",
        &[("grpc-encoding", "gzip"), ("x-meta-bin", "AAECAw==")],
    );
    let (response, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(head, false).unwrap();
    let response = timeout(WAIT, response)
        .await
        .expect("no response headers")
        .unwrap();
    assert_eq!(response.headers()["x-initial-bin"], "AQID");
    let (first_tx, first_rx) = oneshot::channel();
    let reader = tokio::spawn(read_all(response.into_body(), first_tx));
    // The echo of the first MiB comes back while the other 4 MiB are still unsent: neither
    // direction waits for the whole message.
    timeout(WAIT, first_rx)
        .await
        .expect("nothing came back before the request was complete: the message was buffered")
        .unwrap();
    send.send_data(tail, true).unwrap();
    let (echoed, trailers) = timeout(WAIT, reader).await.unwrap().unwrap();

    assert_eq!(echoed.len(), message.len());
    assert!(
        echoed == message[..],
        "the echoed bytes differ from the sent message"
    );
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer-bin"], "AAEC");

    assert_eq!(ended(&calls, "/echo.Svc/Stream").await, Ended::Clean);
    let call = calls.lock().unwrap()[0].clone();
    assert_eq!(call.received, BIG + 5);
    assert_eq!(call.headers["grpc-encoding"], "gzip");
    assert_eq!(call.headers["x-meta-bin"], "AAECAw==");
    assert_eq!(call.headers["te"], "trailers");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reset_after_the_first_reply_reaches_the_upstream_as_a_reset() {
    let (up, calls) = upstream().await;
    let (gw, edge) = gateway(up).await;
    let mut h2 = client(edge).await;

    let (response, mut send) = h2
        .send_request(grpc_request("/hold.Svc/Bidi", &[]), false)
        .unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 1, 9]), false)
        .unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    let mut body = response.into_body();
    let first = timeout(WAIT, body.data()).await.unwrap().unwrap().unwrap();
    assert_eq!(&first[..], &[0, 0, 0, 0, 1, 7]);
    send.send_reset(Reason::CANCEL);

    let end = ended(&calls, "/hold.Svc/Bidi").await;
    assert!(
        matches!(end, Ended::Reset(_)),
        "the upstream saw {end:?} instead of a reset"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reset_before_any_reply_reaches_the_upstream_as_a_reset() {
    let (up, calls) = upstream().await;
    let (gw, edge) = gateway(up).await;
    let mut h2 = client(edge).await;

    let (_response, mut send) = h2
        .send_request(grpc_request("/mute.Svc/Bidi", &[]), false)
        .unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 1, 9]), false)
        .unwrap();
    // Once the upstream has the message, the caller gives up.
    let deadline = tokio::time::Instant::now() + WAIT;
    while calls.lock().unwrap().first().is_none_or(|c| c.received < 6) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    send.send_reset(Reason::CANCEL);

    let end = ended(&calls, "/mute.Svc/Bidi").await;
    assert!(
        matches!(end, Ended::Reset(_)),
        "the upstream saw {end:?} instead of a reset"
    );
    gw.shutdown().await;
}

/// Many cancelled calls on one connection leave it and the gateway serving.
#[tokio::test]
async fn cancelled_calls_leave_the_connection_serving() {
    let (up, calls) = upstream().await;
    let (gw, edge) = gateway(up).await;
    let mut h2 = client(edge).await;
    let (done_tx, mut done_rx) = mpsc::channel(64);
    for i in 0..32 {
        let path = format!("/hold.Svc/Call{i}");
        let (response, mut send) = h2.send_request(grpc_request(&path, &[]), false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 1, 9]), false)
            .unwrap();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let response = response.await.unwrap();
            let mut body = response.into_body();
            let _ = body.data().await;
            send.send_reset(Reason::CANCEL);
            done.send(()).await.unwrap();
        });
    }
    for _ in 0..32 {
        timeout(WAIT, done_rx.recv()).await.unwrap().unwrap();
    }
    for i in 0..32 {
        let end = ended(&calls, &format!("/hold.Svc/Call{i}")).await;
        assert!(matches!(end, Ended::Reset(_)), "call {i}: {end:?}");
    }
    // The same connection still carries a whole call.
    let (response, mut send) = h2
        .send_request(grpc_request("/echo.Svc/After", &[]), false)
        .unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 1, 5]), true)
        .unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    let (tx, _rx) = oneshot::channel();
    let (echoed, trailers) = timeout(WAIT, read_all(response.into_body(), tx))
        .await
        .unwrap();
    assert_eq!(echoed, [0, 0, 0, 0, 1, 5]);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    gw.shutdown().await;
}
