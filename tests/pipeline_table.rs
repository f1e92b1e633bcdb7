//! Integration: one table of scenarios (ok, no route, reject, upstream down, timeout, bad
//! input) sent through every protocol the gateway speaks — HTTP/1.1, h2c, gRPC, gRPC-Web
//! (binary and text), HTTP/JSON → gRPC, and Thrift in all six dialects — on one gateway.
//!
//! For each (scenario, caller) the caller's answer must have its protocol's exact error shape,
//! and the admin `/metrics` counters must move by exactly the expected deltas: one scenario
//! has one `outcome` label (and error kind/side) on every protocol; only `code` is the
//! caller's own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use support::Reply;
use support::thrift::{self as th, Dialect};
use tracebridge::codec::thrift::Dialect as WireDialect;
use tracebridge::codec::thrift::frame::Frame;
use tracebridge::codec::thrift::message::MessageType;

/// What is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Ok,
    NoRoute,
    Reject,
    UpstreamDown,
    Timeout,
    BadInput,
}

impl Scenario {
    /// The route (path prefix, gRPC service, JSON `x-scenario`, Thrift method) it is sent to.
    fn slug(self) -> &'static str {
        match self {
            Scenario::Ok | Scenario::BadInput => "ok",
            Scenario::NoRoute => "nosuch",
            Scenario::Reject => "reject",
            Scenario::UpstreamDown => "down",
            Scenario::Timeout => "slow",
        }
    }
}

/// What a scenario must look like, whatever the protocol.
struct Expect {
    scenario: Scenario,
    /// The `outcome` label.
    outcome: &'static str,
    /// The gateway-made error, as `errors_total{kind, side}`; `None` when the upstream
    /// answered.
    error: Option<(&'static str, &'static str)>,
    /// Whether the call reached dispatch (`upstream_requests_total`).
    reaches_upstream: bool,
    /// Whether it counts in `trace_rejected_total`.
    rejected: bool,
}

const TABLE: [Expect; 6] = [
    Expect {
        scenario: Scenario::Ok,
        outcome: "ok",
        error: None,
        reaches_upstream: true,
        rejected: false,
    },
    Expect {
        scenario: Scenario::NoRoute,
        outcome: "no_route",
        error: Some(("no_route", "downstream")),
        reaches_upstream: false,
        rejected: false,
    },
    Expect {
        scenario: Scenario::Reject,
        outcome: "missing_trace_context",
        error: Some(("missing_trace_context", "downstream")),
        reaches_upstream: false,
        rejected: true,
    },
    Expect {
        scenario: Scenario::UpstreamDown,
        outcome: "upstream_connect",
        error: Some(("upstream_connect", "upstream")),
        reaches_upstream: true,
        rejected: false,
    },
    Expect {
        scenario: Scenario::Timeout,
        outcome: "upstream_timeout",
        error: Some(("upstream_timeout", "upstream")),
        reaches_upstream: true,
        rejected: false,
    },
    Expect {
        scenario: Scenario::BadInput,
        outcome: "bad_request",
        error: Some(("bad_request", "downstream")),
        reaches_upstream: false,
        rejected: false,
    },
];

/// Who calls, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Http1,
    H2c,
    Grpc,
    GrpcWeb,
    GrpcWebText,
    JsonGrpc,
    Thrift(Dialect),
}

const HTTP_CALLERS: [Caller; 6] = [
    Caller::Http1,
    Caller::H2c,
    Caller::Grpc,
    Caller::GrpcWeb,
    Caller::GrpcWebText,
    Caller::JsonGrpc,
];

impl Caller {
    /// The `protocol` label.
    fn protocol(self) -> &'static str {
        match self {
            Caller::Http1 | Caller::H2c => "http",
            Caller::Grpc => "grpc",
            Caller::GrpcWeb | Caller::GrpcWebText => "grpc-web",
            Caller::JsonGrpc => "json-grpc",
            Caller::Thrift(_) => "thrift",
        }
    }

    fn listener(self) -> &'static str {
        match self {
            Caller::Thrift(_) => "rpc",
            _ => "edge",
        }
    }

    /// Prefix of its routes' names (`<family>-<slug>`).
    fn family(self) -> &'static str {
        match self {
            Caller::Http1 | Caller::H2c => "http",
            Caller::Grpc | Caller::GrpcWeb | Caller::GrpcWebText => "grpc",
            Caller::JsonGrpc => "json",
            Caller::Thrift(_) => "thrift",
        }
    }

    /// Suffix of its upstreams' names (`<slug>-<side>`): bridged JSON calls gRPC upstreams.
    fn upstream_family(self) -> &'static str {
        match self {
            Caller::Http1 | Caller::H2c => "http",
            Caller::Grpc | Caller::GrpcWeb | Caller::GrpcWebText | Caller::JsonGrpc => "grpc",
            Caller::Thrift(_) => "thrift",
        }
    }

    /// Whether the scenario can be sent by this caller. Only what the gateway decodes can be
    /// bad input: a bridged JSON body, a gRPC-Web-text body, a Thrift message. Plain HTTP,
    /// gRPC and binary gRPC-Web bodies pass through undecoded.
    fn can_send(self, scenario: Scenario) -> bool {
        scenario != Scenario::BadInput
            || matches!(
                self,
                Caller::GrpcWebText | Caller::JsonGrpc | Caller::Thrift(_)
            )
    }
}

/// The `code` label: the status the caller got, in its own protocol's terms.
fn expected_code(caller: Caller, scenario: Scenario) -> &'static str {
    match caller {
        Caller::Http1 | Caller::H2c | Caller::JsonGrpc => match scenario {
            Scenario::Ok => "200",
            Scenario::NoRoute => "404",
            Scenario::Reject | Scenario::BadInput => "400",
            Scenario::UpstreamDown => "502",
            Scenario::Timeout => "504",
        },
        Caller::Grpc | Caller::GrpcWeb | Caller::GrpcWebText => match scenario {
            Scenario::Ok => "0",
            Scenario::NoRoute => "12",
            Scenario::Reject | Scenario::BadInput => "3",
            Scenario::UpstreamDown => "14",
            Scenario::Timeout => "4",
        },
        Caller::Thrift(_) => match scenario {
            Scenario::Ok => "reply",
            _ => "exception",
        },
    }
}

/// The `TApplicationException` type of a gateway error kind.
fn thrift_exception_type(kind: &str) -> i32 {
    match kind {
        "no_route" => 1,                              // UNKNOWN_METHOD
        "missing_trace_context" | "bad_request" => 7, // PROTOCOL_ERROR
        "upstream_connect" | "upstream_timeout" => 6, // INTERNAL_ERROR
        other => panic!("no Thrift type expected for {other}"),
    }
}

/// The `route` label: `-` when the call was answered before it was routed.
fn expected_route(caller: Caller, scenario: Scenario) -> String {
    match (caller, scenario) {
        // A bridged call that matched its route but no gRPC method binding.
        (Caller::JsonGrpc, Scenario::NoRoute) => "json-ok".to_owned(),
        (_, Scenario::NoRoute) | (Caller::Thrift(_), Scenario::BadInput) => "-".to_owned(),
        _ => format!("{}-{}", caller.family(), scenario.slug()),
    }
}

/// Whether the call reached dispatch. The table's answer, except that a gRPC-Web-text body is
/// decoded while it streams to the upstream: the call was dispatched before its bad base64
/// was read, so it is counted for the upstream (with outcome `bad_request`).
fn reaches_upstream(caller: Caller, expect: &Expect) -> bool {
    expect.reaches_upstream
        || (caller == Caller::GrpcWebText && expect.scenario == Scenario::BadInput)
}

/// `decode_errors_total{protocol, reason}` a bad input adds.
fn expected_decode_error(
    caller: Caller,
    scenario: Scenario,
) -> Option<(&'static str, &'static str)> {
    match (caller, scenario) {
        (Caller::GrpcWebText, Scenario::BadInput) => Some(("grpc-web", "bad_base64")),
        (Caller::Thrift(Dialect::Header(_)), Scenario::BadInput) => Some(("thrift", "bad_message")),
        (Caller::Thrift(_), Scenario::BadInput) => Some(("thrift", "bad_message_type")),
        _ => None,
    }
}

const COUNTERS: [&str; 5] = [
    "tracebridge_requests_total",
    "tracebridge_errors_total",
    "tracebridge_upstream_requests_total",
    "tracebridge_trace_rejected_total",
    "tracebridge_decode_errors_total",
];

/// Exactly the counter samples one call must add 1 to.
fn expected_deltas(caller: Caller, expect: &Expect) -> BTreeMap<String, u64> {
    let (listener, scenario) = (caller.listener(), expect.scenario);
    let mut want = BTreeMap::new();
    want.insert(
        format!(
            "tracebridge_requests_total{{listener=\"{listener}\",route=\"{}\",protocol=\"{}\",code=\"{}\",outcome=\"{}\"}}",
            expected_route(caller, scenario),
            caller.protocol(),
            expected_code(caller, scenario),
            expect.outcome,
        ),
        1,
    );
    if let Some((kind, side)) = expect.error {
        want.insert(
            format!(
                "tracebridge_errors_total{{listener=\"{listener}\",kind=\"{kind}\",side=\"{side}\"}}"
            ),
            1,
        );
    }
    if reaches_upstream(caller, expect) {
        want.insert(
            format!(
                "tracebridge_upstream_requests_total{{upstream=\"{}-{}\",outcome=\"{}\"}}",
                scenario.slug(),
                caller.upstream_family(),
                expect.outcome
            ),
            1,
        );
    }
    if expect.rejected {
        want.insert(
            format!("tracebridge_trace_rejected_total{{listener=\"{listener}\"}}"),
            1,
        );
    }
    if let Some((protocol, reason)) = expected_decode_error(caller, scenario) {
        want.insert(
            format!(
                "tracebridge_decode_errors_total{{protocol=\"{protocol}\",reason=\"{reason}\"}}"
            ),
            1,
        );
    }
    want
}

/// An empty protobuf message, gRPC-framed: what gRPC callers send and the upstream answers.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

/// The HTTP and gRPC upstream: gRPC calls get an empty message and `grpc-status: 0`, other
/// requests `200 ok`.
async fn ok_http_upstream() -> SocketAddr {
    support::serve_h2c(|req: Request<Incoming>| async move {
        let grpc = is_grpc(req.headers());
        // Read the whole request first (a gRPC-Web-text body the gateway cannot decode ends
        // in a reset here).
        let _ = req.into_body().collect().await;
        type Chunk = Result<BodyFrame<Bytes>, std::convert::Infallible>;
        let frames: Vec<Chunk> = if grpc {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            vec![
                Ok(BodyFrame::data(Bytes::from_static(EMPTY_MESSAGE))),
                Ok(BodyFrame::trailers(trailers)),
            ]
        } else {
            vec![Ok(BodyFrame::data(Bytes::from_static(b"ok")))]
        };
        let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        if grpc {
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
        }
        resp
    })
    .await
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// An h2c upstream that accepts every request and never answers.
async fn holding_http_upstream() -> SocketAddr {
    support::serve_h2c(|_req: Request<Incoming>| async move {
        std::future::pending::<Response<Full<Bytes>>>().await
    })
    .await
}

struct Addresses {
    edge: SocketAddr,
    rpc: SocketAddr,
    admin: SocketAddr,
}

async fn gateway() -> (tracebridge::app::RunningGateway, Addresses) {
    let ok_http = ok_http_upstream().await;
    let slow_http = holding_http_upstream().await;
    let ok_thrift = th::echo_upstream().await;
    let slow_thrift = th::silent_upstream().await;
    let closed = support::closed_port().await;
    let mut text = String::from(
        r#"
[admin]
listen = "127.0.0.1:0"
[propagation]
extract = ["w3c", "x-trace-raw"]
inject = ["w3c", "x-trace-raw"]
on_missing = "start"
[shutdown]
drain_timeout = "2s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
"#,
    );
    // One route per (family, scenario): gRPC by service, JSON by a header on the bridged
    // default binding, plain HTTP by path prefix, Thrift by method.
    for slug in ["ok", "reject", "down", "slow"] {
        let upstream = if slug == "reject" { "ok" } else { slug };
        let policy = match slug {
            "reject" => "on_missing = \"reject\"\n",
            "slow" => "timeout = \"200ms\"\n",
            _ => "",
        };
        let routes = [
            (
                "grpc",
                format!("grpc_service = \"{slug}.Svc\""),
                "grpc",
                "edge",
                "",
            ),
            (
                "json",
                format!(
                    "path_prefix = \"/tracebridge.demo.v1.Greeter\", headers = {{ \"x-scenario\" = \"{slug}\" }}"
                ),
                "grpc",
                "edge",
                "bridge = \"json-grpc\"\n",
            ),
            (
                "http",
                format!("path_prefix = \"/{slug}\""),
                "http",
                "edge",
                "",
            ),
            (
                "thrift",
                format!("thrift_method = \"{slug}\""),
                "thrift",
                "rpc",
                "",
            ),
        ];
        for (family, matcher, up_family, listener, bridge) in routes {
            text.push_str(&format!(
                "[[routes]]\nname = \"{family}-{slug}\"\nlistener = \"{listener}\"\nmatch = {{ {matcher} }}\nupstream = \"{upstream}-{up_family}\"\n{policy}{bridge}"
            ));
        }
    }
    for (name, protocol, endpoint) in [
        ("ok-http", "h2c", ok_http),
        ("ok-grpc", "grpc", ok_http),
        ("ok-thrift", "thrift", ok_thrift),
        ("down-http", "h2c", closed),
        ("down-grpc", "grpc", closed),
        ("down-thrift", "thrift", closed),
        ("slow-http", "h2c", slow_http),
        ("slow-grpc", "grpc", slow_http),
        ("slow-thrift", "thrift", slow_thrift),
    ] {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nendpoints = [\"{endpoint}\"]\nconnect_timeout = \"1s\"\n"
        ));
    }
    let cfg = tracebridge::config::parse(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let gw = tracebridge::app::start(cfg).await.unwrap();
    let addresses = Addresses {
        edge: gw.address("edge").unwrap(),
        rpc: gw.address("rpc").unwrap(),
        admin: gw.address("admin").unwrap(),
    };
    (gw, addresses)
}

/// What a Thrift caller sent: the message's name and seqid, and the THeader seq id.
struct ThriftSent {
    name: &'static str,
    seq: i32,
    header_seq: u32,
}

async fn send_http(caller: Caller, scenario: Scenario, edge: SocketAddr) -> Reply {
    let slug = scenario.slug();
    let bad = scenario == Scenario::BadInput;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (http2, req) = match caller {
        Caller::Http1 | Caller::H2c => (
            caller == Caller::H2c,
            Request::post(format!("http://{edge}/{slug}/x"))
                .body(Full::new(Bytes::from_static(b"ping"))),
        ),
        Caller::Grpc => (
            true,
            Request::post(format!("http://{edge}/{slug}.Svc/Call"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(EMPTY_MESSAGE))),
        ),
        Caller::GrpcWeb => (
            false,
            Request::post(format!("http://{edge}/{slug}.Svc/Call"))
                .header("content-type", "application/grpc-web+proto")
                .header("x-grpc-web", "1")
                .body(Full::new(Bytes::from_static(EMPTY_MESSAGE))),
        ),
        Caller::GrpcWebText => {
            let body = if bad {
                Bytes::from_static(b"!!!!")
            } else {
                Bytes::from(b64.encode(EMPTY_MESSAGE))
            };
            (
                false,
                Request::post(format!("http://{edge}/{slug}.Svc/Call"))
                    .header("content-type", "application/grpc-web-text")
                    .header("x-grpc-web", "1")
                    .body(Full::new(body)),
            )
        }
        Caller::JsonGrpc => {
            // Every bridged route is on the default binding; no route = a method the
            // descriptors do not have.
            let (route, method) = match scenario {
                Scenario::NoRoute => ("ok", "NoSuchMethod"),
                _ => (slug, "SayHello"),
            };
            let body: &'static [u8] = if bad { b"{\"name\":" } else { b"{}" };
            (
                false,
                Request::post(format!(
                    "http://{edge}/tracebridge.demo.v1.Greeter/{method}"
                ))
                .header("content-type", "application/json")
                .header("x-scenario", route)
                .body(Full::new(Bytes::from_static(body))),
            )
        }
        Caller::Thrift(_) => unreachable!("not an HTTP caller"),
    };
    support::exchange(http2, req.unwrap()).await
}

async fn send_thrift(
    dialect: Dialect,
    scenario: Scenario,
    rpc: SocketAddr,
    cell: usize,
) -> (ThriftSent, WireDialect, Frame) {
    let protocol = dialect.protocol();
    let sent = ThriftSent {
        name: scenario.slug(),
        seq: 100 + cell as i32,
        header_seq: 7000 + cell as u32,
    };
    // An empty args struct: the stop byte, the same in both protocols.
    let args = [0u8];
    let payload = match (scenario, dialect) {
        // THeader: a frame whose payload is not a Thrift message at all.
        (Scenario::BadInput, Dialect::Header(_)) => {
            Bytes::from_static(b"this is not a thrift message")
        }
        // Framed and unframed: a whole message, but a REPLY where a server needs a CALL.
        (Scenario::BadInput, _) => {
            th::message(protocol, sent.name, MessageType::Reply, sent.seq, &args)
        }
        _ => th::message(protocol, sent.name, MessageType::Call, sent.seq, &args),
    };
    let mut client = th::Client::connect(rpc).await;
    client
        .send(&th::frame(dialect, sent.header_seq, &[], &payload))
        .await;
    let (transport, frame) = client.reply().await.expect("an answer");
    (sent, transport, frame)
}

/// A plain HTTP or bridged JSON caller's answer.
fn check_http_json(what: &str, caller: Caller, expect: &Expect, r: &Reply) {
    let code = expected_code(caller, expect.scenario);
    assert_eq!(r.status.as_str(), code, "{what}: status");
    let Some((kind, side)) = expect.error else {
        let want: &[u8] = if caller == Caller::JsonGrpc {
            b"{}"
        } else {
            b"ok"
        };
        assert_eq!(&r.body[..], want, "{what}: body");
        return;
    };
    assert_eq!(r.headers["content-type"], "application/json", "{what}");
    let body: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body {:?} is not JSON: {e}", r.body));
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    let mut want_keys = vec!["error", "kind", "side", "trace_id"];
    if expect.scenario == Scenario::Reject {
        want_keys.extend(["invalid", "looked_for"]);
        want_keys.sort_unstable();
        assert_eq!(
            body["looked_for"],
            serde_json::json!(["traceparent", "x-trace-raw"]),
            "{what}"
        );
    }
    assert_eq!(keys, want_keys, "{what}: {body}");
    assert_eq!(body["kind"], kind, "{what}: {body}");
    assert_eq!(body["side"], side, "{what}: {body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{kind} ({side} side): ")),
        "{what}: {error}"
    );
    let trace_id = body["trace_id"].as_str().unwrap();
    assert!(
        support::is_trace_id(trace_id),
        "{what}: trace_id {trace_id:?}"
    );
}

/// A gRPC or gRPC-Web caller's answer.
fn check_grpc(what: &str, caller: Caller, expect: &Expect, r: &Reply) {
    let code = expected_code(caller, expect.scenario);
    // A gRPC caller always gets HTTP 200, in its own content type.
    assert_eq!(r.status, StatusCode::OK, "{what}: status");
    let content_type = match caller {
        Caller::Grpc => "application/grpc",
        Caller::GrpcWeb => "application/grpc-web+proto",
        _ => "application/grpc-web-text",
    };
    assert_eq!(r.headers["content-type"], content_type, "{what}");
    if expect.error.is_none() {
        assert!(
            r.headers.get("grpc-status").is_none(),
            "{what}: not trailers-only"
        );
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        let body = match caller {
            Caller::Grpc => {
                assert_eq!(r.trailers.as_ref(), Some(&trailers), "{what}: trailers");
                r.body.clone()
            }
            Caller::GrpcWeb => r.body.clone(),
            _ => {
                let mut decoder = tracebridge::codec::grpc_web::Base64Decoder::default();
                decoder.push(&r.body).unwrap()
            }
        };
        let mut want = EMPTY_MESSAGE.to_vec();
        if caller != Caller::Grpc {
            want.extend_from_slice(&tracebridge::codec::grpc_web::trailer_frame(&trailers));
        }
        assert_eq!(&body[..], &want[..], "{what}: body");
        return;
    }
    // Trailers-only: the status in the headers, no body, no trailers.
    assert_eq!(r.headers["grpc-status"], code, "{what}: {:?}", r.headers);
    assert!(
        r.body.is_empty() && r.trailers.is_none(),
        "{what}: trailers-only"
    );
    let trace_id = r.headers["tracebridge-trace-id"].to_str().unwrap();
    assert!(
        support::is_trace_id(trace_id),
        "{what}: trace id {trace_id:?}"
    );
    let message = tracebridge::codec::grpc::decode_message(r.headers["grpc-message"].as_bytes());
    assert!(
        message.ends_with(&format!("(trace id {trace_id})")),
        "{what}: grpc-message {message:?}"
    );
}

/// A Thrift caller's answer: in its own transport and protocol, its seqids, the exception type.
fn check_thrift(
    what: &str,
    dialect: Dialect,
    expect: &Expect,
    sent: &ThriftSent,
    transport: WireDialect,
    frame: &Frame,
) {
    assert_eq!(transport, dialect.client_type(), "{what}: reply transport");
    if let Frame::Header(h) = frame {
        assert_eq!(
            (h.flags, h.seq_id),
            (th::FLAGS, sent.header_seq),
            "{what}: THeader"
        );
    }
    let (protocol, name, kind, seq, body) = th::open(frame);
    assert_eq!(protocol, dialect.protocol(), "{what}: reply protocol");
    let Some((error_kind, _)) = expect.error else {
        assert_eq!(
            (name.as_str(), kind, seq),
            (sent.name, MessageType::Reply, sent.seq),
            "{what}"
        );
        assert_eq!(&body[..], &[0], "{what}: the echoed args");
        return;
    };
    // A payload that is not a Thrift message has no name or seqid to echo.
    let (want_name, want_seq) = match (expect.scenario, dialect) {
        (Scenario::BadInput, Dialect::Header(_)) => ("", 0),
        _ => (sent.name, sent.seq),
    };
    assert_eq!(
        (name.as_str(), kind, seq),
        (want_name, MessageType::Exception, want_seq),
        "{what}"
    );
    let (message, got_type) = th::app_exception(protocol, &body);
    assert_eq!(
        got_type,
        thrift_exception_type(error_kind),
        "{what}: {message}"
    );
    assert!(!message.is_empty(), "{what}");
}

/// The deltas of the tracked counters since `before`, once they equal `want` (or after 5 s).
async fn settled_deltas(
    admin: SocketAddr,
    before: &BTreeMap<String, u64>,
    want: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    // A streamed answer is recorded when its body ends, which may be just after the caller
    // read the last byte: wait for the counters, with a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = support::counters(&support::scrape(admin).await, &COUNTERS);
        let deltas: BTreeMap<String, u64> = now
            .into_iter()
            .filter_map(|(k, v)| {
                let d = v - before.get(&k).copied().unwrap_or(0);
                (d != 0).then_some((k, d))
            })
            .collect();
        if &deltas == want || tokio::time::Instant::now() >= deadline {
            return deltas;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One (scenario, caller) cell: send, let the counters settle, check the answer and the
/// counter deltas.
async fn run_cell(at: &Addresses, cell: usize, caller: Caller, expect: &Expect) {
    let what = format!("{:?} via {caller:?}", expect.scenario);
    let want = expected_deltas(caller, expect);
    let before = support::counters(&support::scrape(at.admin).await, &COUNTERS);
    match caller {
        Caller::Thrift(d) => {
            let (sent, transport, frame) = send_thrift(d, expect.scenario, at.rpc, cell).await;
            let got = settled_deltas(at.admin, &before, &want).await;
            check_thrift(&what, d, expect, &sent, transport, &frame);
            assert_eq!(got, want, "{what}: counter deltas");
        }
        _ => {
            let reply = send_http(caller, expect.scenario, at.edge).await;
            let got = settled_deltas(at.admin, &before, &want).await;
            match caller {
                Caller::Grpc | Caller::GrpcWeb | Caller::GrpcWebText => {
                    check_grpc(&what, caller, expect, &reply)
                }
                _ => check_http_json(&what, caller, expect, &reply),
            }
            assert_eq!(got, want, "{what}: counter deltas");
        }
    }
}

#[tokio::test]
async fn one_scenario_one_outcome_on_every_protocol() {
    let (gw, at) = gateway().await;
    let callers = HTTP_CALLERS
        .into_iter()
        .chain(Dialect::ALL.map(Caller::Thrift));
    let cells: Vec<(Caller, &Expect)> = callers
        .flat_map(|c| TABLE.iter().map(move |e| (c, e)))
        .filter(|(c, e)| c.can_send(e.scenario))
        .collect();
    // 12 callers x 5 scenarios, plus bad input on gRPC-Web-text, JSON and the 6 Thrift dialects.
    assert_eq!(cells.len(), 12 * 5 + 8);

    // Every cell runs; the failing ones are listed at the end.
    let mut failed = Vec::new();
    for (cell, (caller, expect)) in cells.into_iter().enumerate() {
        let run = AssertUnwindSafe(run_cell(&at, cell, caller, expect));
        if run.catch_unwind().await.is_err() {
            failed.push(format!("{:?} via {caller:?}", expect.scenario));
        }
    }
    assert!(failed.is_empty(), "failing cells:\n{}", failed.join("\n"));
    gw.shutdown().await;
}
