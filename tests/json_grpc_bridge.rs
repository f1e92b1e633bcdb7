//! Integration: HTTP/JSON → gRPC through a route with `bridge = "json-grpc"`. A plain
//! HTTP/1.1 client posts JSON with a `traceparent`; an in-test h2c gRPC upstream implements
//! the demo Greeter with prost-reflect and records what it received. The upstream must see
//! a real gRPC call (content type, framing, the exact protobuf message) carrying the same
//! trace; the caller gets proto3 JSON back, NDJSON for server streaming, and gRPC statuses
//! as HTTP statuses with a JSON error body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioExecutor;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use tokio::sync::{Notify, mpsc};
use tracebridge::app::{self, RunningGateway};
use tracebridge::bridge::descriptors::builtin;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What the upstream received: path, metadata, body bytes.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

fn message(name: &str) -> MessageDescriptor {
    builtin()
        .unwrap()
        .get_message_by_name(&format!("tracebridge.demo.v1.{name}"))
        .unwrap()
}

fn frame(msg: &DynamicMessage) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

fn trailers(code: u32, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.into());
    if !message.is_empty() {
        t.insert("grpc-message", message.parse().unwrap());
    }
    t
}

fn hello_reply(req: &DynamicMessage, text: String) -> DynamicMessage {
    let mut reply = DynamicMessage::new(message("HelloReply"));
    let mut words = DynamicMessage::new(message("HelloMessage"));
    words.set_field_by_name("text", Value::String(text));
    words.set_field_by_name("words", Value::U32(2));
    reply.set_field_by_name("message", Value::Message(words));
    for field in ["visitor_id", "mood", "tags"] {
        let v = req.get_field_by_name(field).unwrap().into_owned();
        reply.set_field_by_name(field, v);
    }
    let greeted_at = builtin()
        .unwrap()
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    let mut ts = DynamicMessage::new(greeted_at);
    ts.set_field_by_name("seconds", Value::I64(1_704_067_200)); // 2024-01-01T00:00:00Z
    reply.set_field_by_name("greeted_at", Value::Message(ts));
    reply
}

fn text_of(msg: &DynamicMessage, field: &str) -> String {
    msg.get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

type Chunk = Result<Frame<Bytes>, Infallible>;

/// The Greeter, answering from a channel so that replies can be spaced out.
async fn greet(path: &str, body: Bytes, tx: mpsc::Sender<Chunk>, gate: Arc<Notify>) {
    let send = |f: Frame<Bytes>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Ok(f)).await;
        }
    };
    let payload = body.slice(5..);
    match path {
        "/tracebridge.demo.v1.Greeter/SayHello" => {
            let req = DynamicMessage::decode(message("HelloRequest"), payload).unwrap();
            let name = text_of(&req, "name");
            if name == "nobody" {
                send(Frame::trailers(trailers(5, "no such person: nobody"))).await;
                return;
            }
            let greeting = match text_of(&req, "greeting") {
                g if g.is_empty() => "hello".to_owned(),
                g => g,
            };
            let reply = hello_reply(&req, format!("{greeting}, {name}!"));
            send(Frame::data(frame(&reply))).await;
            send(Frame::trailers(trailers(0, ""))).await;
        }
        "/tracebridge.demo.v1.Greeter/Shout" => {
            let req = DynamicMessage::decode(message("ShoutRequest"), payload).unwrap();
            let lang = req
                .get_field_by_name("locale")
                .and_then(|l| l.as_message().map(|m| text_of(m, "language")))
                .unwrap_or_default();
            let hello = DynamicMessage::new(message("HelloRequest"));
            let text = format!("{} ({lang})", text_of(&req, "name").to_uppercase());
            send(Frame::data(frame(&hello_reply(&hello, text)))).await;
            send(Frame::trailers(trailers(0, ""))).await;
        }
        "/tracebridge.demo.v1.Greeter/Countdown" => {
            let req = DynamicMessage::decode(message("CountdownRequest"), payload).unwrap();
            let from = req.get_field_by_name("from").unwrap().as_i32().unwrap();
            let fail = req
                .get_field_by_name("fail_with")
                .unwrap()
                .as_i32()
                .unwrap();
            for n in (1..=from).rev() {
                let mut reply = DynamicMessage::new(message("CountdownReply"));
                reply.set_field_by_name("n", Value::I32(n));
                send(Frame::data(frame(&reply))).await;
                if from == 42 && n == 42 {
                    // The caller must see 42 before the upstream sends any more.
                    gate.notified().await;
                    break;
                }
            }
            let status = if fail != 0 {
                trailers(fail as u32, "countdown aborted")
            } else {
                trailers(0, "")
            };
            send(Frame::trailers(status)).await;
        }
        _ => send(Frame::trailers(trailers(12, "unknown method"))).await,
    }
}

async fn upstream(gate: Arc<Notify>) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let address = support::serve_h2c(move |req: Request<Incoming>| {
        let record = record.clone();
        let gate = gate.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_owned();
            record
                .lock()
                .unwrap()
                .push((path.clone(), parts.headers, body.clone()));
            let (tx, rx) = mpsc::channel::<Chunk>(4);
            tokio::spawn(async move { greet(&path, body, tx, gate).await });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (c, rx))
            });
            let mut resp = Response::new(StreamBody::new(stream));
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            resp.headers_mut()
                .insert("x-greeter", "v1".parse().unwrap());
            resp
        }
    })
    .await;
    (address, seen)
}

async fn gateway(up: SocketAddr) -> (RunningGateway, SocketAddr) {
    let text = format!(
        r#"
[admin]
listen = ""
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
name = "greeter-rules"
listener = "edge"
match = {{ path_prefix = "/v1" }}
upstream = "greeter"
bridge = "json-grpc"
[[routes]]
name = "greeter-default"
listener = "edge"
match = {{ path_prefix = "/tracebridge.demo.v1.Greeter" }}
upstream = "greeter"
bridge = "json-grpc"
[[upstreams]]
name = "greeter"
protocol = "grpc"
endpoints = ["{up}"]
services = ["tracebridge.demo.v1.Greeter"]
"#
    );
    let gw = app::start(tracebridge::config::parse(&text).unwrap())
        .await
        .unwrap();
    let edge = gw.address("edge").unwrap();
    (gw, edge)
}

/// An HTTP/1.1 call, as curl would make it: (status, headers, body).
async fn call(
    edge: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, HeaderMap, Response<Incoming>) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{edge}{path}"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    (resp.status(), resp.headers().clone(), resp)
}

async fn text(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn setup() -> (RunningGateway, SocketAddr, Seen, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    let (up, seen) = upstream(gate.clone()).await;
    let (gw, edge) = gateway(up).await;
    (gw, edge, seen, gate)
}

#[tokio::test]
async fn post_json_becomes_a_grpc_call_with_the_same_trace() {
    let (gw, edge, seen, _) = setup().await;
    let (status, headers, resp) = call(
        edge,
        Method::POST,
        "/v1/greeter/world",
        r#"{"greeting":"hi","visitorId":"9007199254740993","mood":"MOOD_HAPPY","tags":["a"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-greeter"], "v1");
    assert!(headers.get("grpc-status").is_none());
    assert_eq!(
        text(resp).await,
        r#"{"message":{"text":"hi, world!","words":2},"visitorId":"9007199254740993","mood":"MOOD_HAPPY","greetedAt":"2024-01-01T00:00:00Z","tags":["a"]}"#
    );

    let (path, md, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/tracebridge.demo.v1.Greeter/SayHello");
    assert_eq!(md["content-type"], "application/grpc");
    assert_eq!(md["te"], "trailers");
    assert_eq!(md["grpc-timeout"], "30000000u");
    // name=1 "world", greeting=2 "hi", visitor_id=4 2^53+1, mood=5 1, tags=6 ["a"].
    let want: &[u8] =
        b"\x0a\x05world\x12\x02hi\x20\x81\x80\x80\x80\x80\x80\x80\x10\x28\x01\x32\x01a";
    assert_eq!(&body[..5], &[0, 0, 0, 0, want.len() as u8]);
    assert_eq!(&body[5..], want);
    let req = DynamicMessage::decode(message("HelloRequest"), &body[5..]).unwrap();
    assert_eq!(
        req.get_field_by_name("visitor_id").unwrap().as_i64(),
        Some(9_007_199_254_740_993)
    );
    let (trace, parent, flags) = support::traceparent(&md);
    assert_eq!(trace, CALLER_TRACE);
    assert_ne!(parent, CALLER_SPAN);
    assert_eq!(parent.len(), 16);
    assert_eq!(flags, "01");
    gw.shutdown().await;
}

#[tokio::test]
async fn get_binding_takes_path_and_query_parameters() {
    let (gw, edge, seen, _) = setup().await;
    let (status, _, resp) = call(
        edge,
        Method::GET,
        "/v1/greeter/ann%20lee?greeting=yo&tags=x&tags=y&locale.language=en&mood=MOOD_GRUMPY",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(resp).await,
        r#"{"message":{"text":"yo, ann lee!","words":2},"mood":"MOOD_GRUMPY","greetedAt":"2024-01-01T00:00:00Z","tags":["x","y"]}"#
    );
    let (_, _, body) = seen.lock().unwrap()[0].clone();
    let req = DynamicMessage::decode(message("HelloRequest"), &body[5..]).unwrap();
    let locale = req.get_field_by_name("locale").unwrap();
    assert_eq!(text_of(locale.as_message().unwrap(), "language"), "en");

    // Nested path variable, a multi-segment capture and a verb.
    let (status, _, resp) = call(
        edge,
        Method::GET,
        "/v1/lang/fr/greeter/people/bob:greet",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(resp).await.contains(r#""text":"hello, people/bob!""#));
    let (_, _, body) = seen.lock().unwrap()[1].clone();
    let req = DynamicMessage::decode(message("HelloRequest"), &body[5..]).unwrap();
    assert_eq!(text_of(&req, "name"), "people/bob");

    // body: "locale" and response_body: "message".
    let (status, _, resp) = call(edge, Method::PUT, "/v1/shout/ann", r#"{"language":"fr"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(resp).await, r#"{"text":"ANN (fr)","words":2}"#);

    // The default binding: POST /package.Service/Method with the whole message as JSON.
    let (status, _, resp) = call(
        edge,
        Method::POST,
        "/tracebridge.demo.v1.Greeter/SayHello",
        r#"{"name":"zoe","sent_at":"2024-05-01T12:00:00Z"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(resp).await,
        r#"{"message":{"text":"hello, zoe!","words":2},"greetedAt":"2024-01-01T00:00:00Z"}"#
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn server_streaming_is_ndjson_line_by_line() {
    let (gw, edge, _, gate) = setup().await;
    let (status, headers, resp) = call(edge, Method::GET, "/v1/countdown/3", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(text(resp).await, "{\"n\":3}\n{\"n\":2}\n{\"n\":1}\n");

    // A failure after messages: a last error line.
    let (status, _, resp) = call(edge, Method::GET, "/v1/countdown/2?failWith=9", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text(resp).await,
        format!(
            "{{\"n\":2}}\n{{\"n\":1}}\n{{\"error\":{{\"code\":9,\"error\":\"countdown aborted\",\"status\":\"FAILED_PRECONDITION\",\"trace_id\":\"{CALLER_TRACE}\"}}}}\n"
        )
    );

    // Streamed, not buffered: the first line arrives while the upstream still holds the rest.
    let (status, _, resp) = call(edge, Method::GET, "/v1/countdown/42", "").await;
    assert_eq!(status, StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("first line before the upstream is released")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first.chunk(), b"{\"n\":42}\n");
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_status_becomes_http_status_with_json_error() {
    let (gw, edge, _, _) = setup().await;
    let (status, headers, resp) = call(edge, Method::POST, "/v1/greeter/nobody", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-greeter"], "v1");
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "no such person: nobody",
            "code": 5,
            "status": "NOT_FOUND",
            "trace_id": CALLER_TRACE,
        })
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_requests_never_reach_the_upstream() {
    let (gw, edge, seen, _) = setup().await;
    let (status, _, resp) = call(edge, Method::POST, "/v1/greeter/x", r#"{"count":"many"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(body["kind"], "bad_request");
    assert_eq!(body["trace_id"], CALLER_TRACE);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "bad_request (downstream side): invalid JSON for tracebridge.demo.v1.HelloRequest: field `count`: "
        ),
        "{error}"
    );

    let (status, _, resp) = call(edge, Method::POST, "/v1/greeter/x", r#"{"name":"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(
        body["error"],
        "bad_request (downstream side): invalid JSON for tracebridge.demo.v1.HelloRequest: EOF while parsing a value at line 1 column 8"
    );

    let (status, _, resp) = call(edge, Method::GET, "/v1/greeter/x?count=lots", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(
        body["error"],
        "bad_request (downstream side): invalid request for tracebridge.demo.v1.HelloRequest: query parameter `count`: \"lots\" is not a 32-bit integer"
    );

    let (status, _, resp) = call(edge, Method::GET, "/v1/nothing/here", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "no_route (downstream side): no gRPC method is bound to GET /v1/nothing/here (bridged services: tracebridge.demo.v1.Greeter)",
            "kind": "no_route",
            "side": "downstream",
            "trace_id": CALLER_TRACE,
        })
    );

    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let (status, _, resp) = call(edge, Method::POST, "/v1/greeter/x", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(
        body["error"],
        "too_large (downstream side): request body exceeds the bridge's limit of 4194304 bytes"
    );

    assert_eq!(seen.lock().unwrap().len(), 0);
    gw.shutdown().await;
}
