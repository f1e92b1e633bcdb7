//! Integration: gRPC through the HTTP listener to an in-process h2c upstream that answers with
//! a message and trailers. Trailers and `-bin` metadata arrive intact, `grpc-timeout` is
//! forwarded less the time spent in the gateway, the trace continues in metadata, and every
//! gateway-made error is a gRPC status on HTTP 200 (trailers-only), never a bare HTTP error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioExecutor;
use tracebridge::app::{self, RunningGateway};
use tracebridge::codec::grpc::parse_timeout;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// A length-prefixed gRPC message: uncompressed, 3 bytes.
const MESSAGE: &[u8] = &[0, 0, 0, 0, 3, 0x08, 0x96, 0x01];

type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

/// An h2c gRPC-ish upstream: records path, metadata and body; answers one message and the
/// trailers `grpc-status: 0`, `x-trailer-bin`; `/slow.Svc/*` waits 1 s first.
async fn upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let address = support::serve_h2c(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_owned();
            record
                .lock()
                .unwrap()
                .push((path.clone(), parts.headers, body));
            if path.starts_with("/slow.Svc/") {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("x-trailer-bin", "AAEC".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(MESSAGE))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            resp.headers_mut()
                .insert("x-initial-bin", "AQID".parse().unwrap());
            resp
        }
    })
    .await;
    (address, seen)
}

async fn gateway(up: SocketAddr) -> (RunningGateway, SocketAddr) {
    let closed = support::closed_port().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[propagation]
extract = ["w3c", "grpc-trace-bin"]
inject = ["w3c", "grpc-trace-bin"]
on_missing = "start"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
listener = "edge"
match = {{ grpc_service = "strict.Svc" }}
upstream = "up"
on_missing = "reject"
[[routes]]
listener = "edge"
match = {{ grpc_service = "down.Svc" }}
upstream = "down"
[[routes]]
listener = "edge"
match = {{ grpc_service = "slow.Svc" }}
upstream = "up"
[[routes]]
listener = "edge"
match = {{ grpc_service = "demo.Echo" }}
upstream = "up"
[[upstreams]]
name = "up"
protocol = "grpc"
endpoints = ["{up}"]
[[upstreams]]
name = "down"
protocol = "grpc"
endpoints = ["{closed}"]
connect_timeout = "1s"
"#
    );
    let gw = app::start(tracebridge::config::parse(&text).unwrap())
        .await
        .unwrap();
    let edge = gw.address("edge").unwrap();
    (gw, edge)
}

/// One gRPC call over h2c: (HTTP status, headers, body, trailers).
async fn call(
    edge: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = Request::post(format!("http://{edge}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from_static(MESSAGE))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn unary_call_keeps_trailers_metadata_and_trace() {
    let (up, seen) = upstream().await;
    let (gw, edge) = gateway(up).await;
    let tp = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, headers, body, trailers) = call(
        edge,
        "/demo.Echo/Say",
        &[
            ("traceparent", &tp),
            ("grpc-timeout", "5S"),
            ("x-meta-bin", "AP8="),
            ("grpc-encoding", "identity"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-initial-bin"], "AQID");
    assert_eq!(&body[..], MESSAGE);
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer-bin"], "AAEC");

    let (path, md, got) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/demo.Echo/Say");
    assert_eq!(&got[..], MESSAGE);
    assert_eq!(md["te"], "trailers");
    assert_eq!(md["x-meta-bin"], "AP8=");
    assert_eq!(md["grpc-encoding"], "identity");
    let left = parse_timeout(md["grpc-timeout"].as_bytes()).unwrap();
    assert!(
        left <= Duration::from_secs(5) && left > Duration::from_secs(4),
        "forwarded grpc-timeout {left:?}"
    );
    let (trace, parent, _) = support::traceparent(&md);
    assert_eq!(trace, CALLER_TRACE);
    assert_ne!(parent, CALLER_SPAN);
    // grpc-trace-bin names the same trace and parent.
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(md["grpc-trace-bin"].to_str().unwrap().trim_end_matches('='))
        .unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!((hex(&raw[2..18]), hex(&raw[19..27])), (trace, parent));
    gw.shutdown().await;
}

#[tokio::test]
async fn gateway_errors_are_grpc_statuses_on_http_200() {
    let (up, seen) = upstream().await;
    let (gw, edge) = gateway(up).await;
    // (path, metadata, grpc-status, text in grpc-message)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        ("/nosuch.Svc/M", &[], "12", "no route"),
        ("/strict.Svc/M", &[], "3", "missing trace context"),
        ("/down.Svc/M", &[], "14", "cannot connect to upstream down"),
        (
            "/slow.Svc/M",
            &[("grpc-timeout", "100m")],
            "4",
            "deadline exceeded",
        ),
    ];
    for (path, md, code, text) in cases {
        let (status, headers, body, trailers) = call(edge, path, md).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], "application/grpc", "{path}");
        assert_eq!(headers["grpc-status"], *code, "{path}: {headers:?}");
        let message = headers["grpc-message"].to_str().unwrap();
        assert!(message.contains(text), "{path}: {message}");
        assert!(
            body.is_empty() && trailers.is_none(),
            "{path}: trailers-only"
        );
    }
    let paths: Vec<String> = seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    assert_eq!(
        paths,
        ["/slow.Svc/M"],
        "only the slow call reached the upstream"
    );
    gw.shutdown().await;
}

async fn metrics(gw: &RunningGateway) -> String {
    let admin = gw.address("admin").unwrap();
    let (_, _, body) = support::send(false, admin, "GET", "/metrics", &[], "").await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// One gRPC-Web call over HTTP/1.1: (HTTP status, headers, body).
async fn web_call(
    edge: SocketAddr,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{edge}{path}"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(Full::new(body))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn grpc_web_binary_and_text_become_grpc_with_in_body_trailers() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (up, seen) = upstream().await;
    let (gw, edge) = gateway(up).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("x-trailer-bin", "AAEC".parse().unwrap());
    let trailer_frame = tracebridge::codec::grpc_web::trailer_frame(&trailers);

    // Binary.
    let (status, headers, body) = web_call(
        edge,
        "/demo.Echo/Say",
        "application/grpc-web+proto",
        Bytes::from_static(MESSAGE),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc-web+proto");
    let mut want = MESSAGE.to_vec();
    want.extend_from_slice(&trailer_frame);
    assert_eq!(&body[..], &want[..]);
    let (_, md, got) = seen.lock().unwrap()[0].clone();
    assert_eq!(md["content-type"], "application/grpc+proto");
    assert_eq!(md["te"], "trailers");
    assert!(md.get("x-grpc-web").is_none());
    assert_eq!(&got[..], MESSAGE);
    assert!(
        md.get("traceparent").is_some(),
        "the trace reaches gRPC metadata"
    );

    // Text: the request in two separately padded base64 pieces.
    let text = format!("{}{}", b64.encode(&MESSAGE[..4]), b64.encode(&MESSAGE[4..]));
    let (status, headers, body) = web_call(
        edge,
        "/demo.Echo/Say",
        "application/grpc-web-text",
        Bytes::from(text),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc-web-text");
    let mut decoder = tracebridge::codec::grpc_web::Base64Decoder::default();
    assert_eq!(&decoder.push(&body).unwrap()[..], &want[..]);
    let (_, md, got) = seen.lock().unwrap()[1].clone();
    assert_eq!(md["content-type"], "application/grpc");
    assert_eq!(&got[..], MESSAGE);

    // A gateway-made error: trailers-only, under the caller's content type.
    let (status, headers, body) = web_call(
        edge,
        "/nosuch.Svc/M",
        "application/grpc-web",
        Bytes::from_static(MESSAGE),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc-web");
    assert_eq!(headers["grpc-status"], "12");
    assert!(body.is_empty());

    // Broken base64: the upstream sees its request stream reset, the caller INVALID_ARGUMENT
    // naming the fault — trailers-only, or as the in-body trailer frame when the upstream had
    // already answered its headers.
    for broken in [&b"!!!!"[..], &b"AAAAAAE"[..]] {
        let (status, headers, body) = web_call(
            edge,
            "/demo.Echo/Say",
            "application/grpc-web-text",
            Bytes::copy_from_slice(broken),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a gRPC-Web caller always gets HTTP 200"
        );
        let (code, message) = match headers.get("grpc-status") {
            Some(code) => (
                code.to_str().unwrap().to_owned(),
                headers["grpc-message"].to_str().unwrap().to_owned(),
            ),
            None => {
                let mut decoder = tracebridge::codec::grpc_web::Base64Decoder::default();
                let bytes = decoder.push(&body).unwrap();
                let at = bytes
                    .iter()
                    .position(|&b| b == 0x80)
                    .expect("a trailer frame");
                let block = String::from_utf8(bytes[at + 5..].to_vec()).unwrap();
                let field = |name: &str| {
                    block
                        .split("\r\n")
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap()
                        .to_owned()
                };
                (field("grpc-status: "), field("grpc-message: "))
            }
        };
        assert_eq!(code, "3", "INVALID_ARGUMENT for {broken:?}: {message}");
        assert!(message.contains("grpc-web-text body"), "{message}");
    }
    let text = metrics(&gw).await;
    let line = "tracebridge_decode_errors_total{protocol=\"grpc-web\",reason=\"bad_base64\"} 2";
    assert!(text.contains(line), "missing {line} in\n{text}");
    gw.shutdown().await;
}
