//! Integration: the HTTP gateway on 127.0.0.1:0 in front of in-process upstreams.
//! Table-driven transparency (what the client sends, what the upstream receives, what the
//! client gets back) over HTTP/1.1 and h2c, trace enforcement, errors, streaming and drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use support::{Answer, Upstream, closed_port, send, traceparent};
use tracebridge::app::{self, RunningGateway};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn config(upstream: SocketAddr, upstream_protocol: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[telemetry]
sampler = {{ kind = "parent_ratio", ratio = 1.0 }}
[propagation]
extract = ["w3c", "jaeger", "b3", "grpc-trace-bin"]
inject = ["w3c"]
on_missing = "start"
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
{extra}
[[routes]]
name = "strict"
listener = "edge"
match = {{ path_prefix = "/strict" }}
upstream = "svc"
on_missing = "reject"
[[routes]]
name = "pass"
listener = "edge"
match = {{ path_prefix = "/pass" }}
upstream = "svc"
on_missing = "pass"
[[routes]]
name = "slow"
listener = "edge"
match = {{ path_prefix = "/slow" }}
upstream = "svc"
timeout = "200ms"
[[routes]]
name = "main"
listener = "edge"
match = {{ path_prefix = "/api" }}
upstream = "svc"
[[upstreams]]
name = "svc"
protocol = "{upstream_protocol}"
endpoints = ["{upstream}"]
connect_timeout = "1s"
"#
    )
}

async fn gateway(text: &str) -> (RunningGateway, SocketAddr) {
    let cfg = tracebridge::config::parse(text).unwrap_or_else(|e| panic!("config: {e}"));
    let gw = app::start(cfg).await.unwrap();
    let edge = gw.address("edge").unwrap();
    (gw, edge)
}

struct Case {
    name: &'static str,
    path: &'static str,
    send: &'static [(&'static str, &'static str)],
    /// Expected trace id at the upstream: Some(id) = exactly this, None = a fresh one.
    trace_id: Option<&'static str>,
    /// Expected tracestate at the upstream.
    tracestate: Option<&'static str>,
    /// Expected flags at the upstream.
    flags: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "w3c continues with tracestate",
        path: "/api/users?id=7",
        send: &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ],
        trace_id: Some(CALLER_TRACE),
        tracestate: Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        flags: "01",
    },
    Case {
        name: "w3c unsampled stays unsampled",
        path: "/api/x",
        send: &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
        trace_id: Some(CALLER_TRACE),
        tracestate: None,
        flags: "00",
    },
    Case {
        name: "jaeger in, w3c out",
        path: "/api/x",
        send: &[(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        )],
        trace_id: Some(CALLER_TRACE),
        tracestate: None,
        flags: "01",
    },
    Case {
        name: "jaeger 64-bit id without leading zeros",
        path: "/api/x",
        send: &[("uber-trace-id", "a3ce929d0e0e4736:f067aa0ba902b7:0:1")],
        trace_id: Some("0000000000000000a3ce929d0e0e4736"),
        tracestate: None,
        flags: "01",
    },
    Case {
        name: "b3 single in",
        path: "/api/x",
        send: &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")],
        trace_id: Some(CALLER_TRACE),
        tracestate: None,
        flags: "01",
    },
    Case {
        name: "b3 multi in",
        path: "/api/x",
        send: &[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ],
        trace_id: Some(CALLER_TRACE),
        tracestate: None,
        flags: "01",
    },
    // Level 2: a root the gateway starts has a random trace id, so sampled + random.
    Case {
        name: "no context starts a sampled random root",
        path: "/api/x",
        send: &[],
        trace_id: None,
        tracestate: None,
        flags: "03",
    },
    Case {
        name: "invalid traceparent restarts and drops tracestate",
        path: "/api/x",
        send: &[
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        trace_id: None,
        tracestate: None,
        flags: "03",
    },
    Case {
        name: "repeated traceparent restarts and drops tracestate",
        path: "/api/x",
        send: &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        trace_id: None,
        tracestate: None,
        flags: "03",
    },
    Case {
        name: "repeated tracestate fields combine, first duplicate kept, OWS normalised",
        path: "/api/x",
        send: &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE , rojo=1"),
            ("tracestate", "congo=dup,Bad=x,t@sys=2"),
        ],
        trace_id: Some(CALLER_TRACE),
        tracestate: Some("congo=t61rcWkgMzE,rojo=1,t@sys=2"),
        flags: "01",
    },
    Case {
        name: "w3c random flag passes as received",
        path: "/api/x",
        send: &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        )],
        trace_id: Some(CALLER_TRACE),
        tracestate: None,
        flags: "03",
    },
];

async fn run_cases(http2_client: bool, upstream_protocol: &str) {
    let up = Upstream::start(Answer {
        headers: vec![
            ("x-upstream", "yes"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ],
        ..Answer::default()
    })
    .await;
    let (gw, edge) = gateway(&config(up.address, upstream_protocol, "")).await;
    for case in CASES {
        let mut headers: Vec<(&str, &str)> = case.send.to_vec();
        if !http2_client {
            headers.push(("connection", "x-private"));
            headers.push(("x-private", "hop"));
        }
        headers.push(("x-end-to-end", "kept"));
        let (status, resp_headers, body) =
            send(http2_client, edge, "POST", case.path, &headers, "payload").await;
        let what = format!(
            "{} (h2 client: {http2_client}, upstream: {upstream_protocol})",
            case.name
        );
        assert_eq!(status, StatusCode::OK, "{what}");
        assert_eq!(body, Bytes::from_static(b"hello from upstream"), "{what}");
        assert_eq!(resp_headers.get("x-upstream").unwrap(), "yes", "{what}");
        assert!(
            resp_headers.get("x-secret").is_none(),
            "{what}: response hop-by-hop header leaked"
        );

        let seen = up.last();
        assert_eq!(seen.path_and_query, case.path, "{what}");
        assert_eq!(seen.body, Bytes::from_static(b"payload"), "{what}");
        assert_eq!(seen.headers.get("x-end-to-end").unwrap(), "kept", "{what}");
        assert!(
            seen.headers.get("x-private").is_none(),
            "{what}: hop-by-hop header leaked"
        );
        assert!(
            seen.headers.get("connection").is_none() || upstream_protocol == "http",
            "{what}"
        );
        let via = seen.headers.get("via").unwrap().to_str().unwrap();
        assert_eq!(
            via,
            if http2_client {
                "2 tracebridge"
            } else {
                "1.1 tracebridge"
            },
            "{what}"
        );
        assert_eq!(
            seen.headers.get("x-forwarded-for").unwrap(),
            "127.0.0.1",
            "{what}"
        );
        for stale in [
            "uber-trace-id",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-sampled",
        ] {
            assert!(
                seen.headers.get(stale).is_none(),
                "{what}: stale {stale} forwarded"
            );
        }
        let (trace_id, parent, flags) = traceparent(&seen.headers);
        match case.trace_id {
            Some(expected) => assert_eq!(trace_id, expected, "{what}"),
            None => {
                assert_ne!(trace_id, CALLER_TRACE, "{what}: must be a fresh trace");
                assert_ne!(trace_id, "00000000000000000000000000000000", "{what}");
            }
        }
        assert_ne!(
            parent, CALLER_SPAN,
            "{what}: the gateway's span must be the new parent"
        );
        assert_ne!(parent, "0000000000000000", "{what}");
        assert_eq!(flags, case.flags, "{what}");
        assert_eq!(
            seen.headers
                .get("tracestate")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            case.tracestate,
            "{what}"
        );
        let expected_version = if upstream_protocol == "http" {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_2
        };
        assert_eq!(seen.version, expected_version, "{what}");
    }
    assert_eq!(up.count(), CASES.len());
    gw.shutdown().await;
}

#[tokio::test]
async fn transparency_http1_to_http1() {
    run_cases(false, "http").await;
}

#[tokio::test]
async fn transparency_h2c_to_http1() {
    run_cases(true, "http").await;
}

#[tokio::test]
async fn transparency_http1_to_h2c() {
    run_cases(false, "h2c").await;
}

#[tokio::test]
async fn transparency_h2c_to_h2c() {
    run_cases(true, "h2c").await;
}

#[tokio::test]
async fn each_request_gets_its_own_gateway_span() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let tp = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    send(false, edge, "GET", "/api/a", &tp, "").await;
    let first = traceparent(&up.last().headers);
    send(false, edge, "GET", "/api/a", &tp, "").await;
    let second = traceparent(&up.last().headers);
    assert_eq!(first.0, second.0);
    assert_ne!(first.1, second.1);
    gw.shutdown().await;
}

#[tokio::test]
async fn reject_route_answers_400_naming_the_headers() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let (status, headers, body) = send(false, edge, "GET", "/strict/1", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["kind"], "missing_trace_context");
    let looked_for: Vec<&str> = json["looked_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for h in [
        "traceparent",
        "uber-trace-id",
        "b3",
        "x-b3-traceid",
        "grpc-trace-bin",
    ] {
        assert!(looked_for.contains(&h), "{h} missing from {looked_for:?}");
    }
    assert_eq!(
        up.count(),
        0,
        "a rejected request must not reach the upstream"
    );

    // With context, the same route forwards.
    let tp = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let (status, _, _) = send(false, edge, "GET", "/strict/1", &tp, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(traceparent(&up.last().headers).0, CALLER_TRACE);
    gw.shutdown().await;
}

#[tokio::test]
async fn reject_route_counts_an_invalid_traceparent_as_missing() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let bad = [(
        "traceparent",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let (status, _, body) = send(false, edge, "GET", "/strict/1", &bad, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["invalid"].as_str().unwrap().contains("traceparent"),
        "{json}"
    );
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn pass_route_forwards_without_trace_headers() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let (status, _, _) = send(false, edge, "GET", "/pass/1", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(up.last().headers.get("traceparent").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn no_route_is_404_json() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let (status, _, body) = send(true, edge, "GET", "/nowhere", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["kind"], "no_route");
    assert!(json["error"].as_str().unwrap().contains("/nowhere"));
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_down_is_502_naming_the_trace_id() {
    let dead = closed_port().await;
    let (gw, edge) = gateway(&config(dead, "http", "")).await;
    let tp = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let (status, _, body) = send(false, edge, "GET", "/api/x", &tp, "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["kind"], "upstream_connect");
    assert_eq!(json["side"], "upstream");
    assert_eq!(json["trace_id"], CALLER_TRACE);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_to_itself_is_stopped_as_a_loop() {
    // The upstream is the gateway's own listener: pick its port first, then point at it.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = probe.local_addr().unwrap();
    drop(probe);
    let text = config(own, "http", "").replace(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"{own}\"\n"),
    );
    let (gw, edge) = gateway(&text).await;
    assert_eq!(edge, own);
    let (status, _, body) = send(false, edge, "GET", "/api/x", &[], "").await;
    assert_eq!(status.as_u16(), 508);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["kind"], "loop_detected");
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_route_timeout() {
    let up = Upstream::start(Answer {
        delay: Duration::from_secs(3),
        ..Answer::default()
    })
    .await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let (status, _, body) = send(false, edge, "GET", "/slow/x", &[], "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["kind"], "upstream_timeout");
    assert_eq!(json["trace_id"].as_str().unwrap().len(), 32);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_upgrade_offer_is_served_over_http1() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let headers = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ];
    let (status, _, body) = send(false, edge, "GET", "/api/x", &headers, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Bytes::from_static(b"hello from upstream"));
    let seen = up.last();
    assert!(seen.headers.get("upgrade").is_none());
    assert!(seen.headers.get("http2-settings").is_none());
    gw.shutdown().await;
}

/// A streaming echo upstream: proves bodies are not buffered whole in either direction.
#[tokio::test]
async fn bodies_stream_in_both_directions() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::mpsc;

    // Upstream: echoes each request chunk back as it arrives.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
            });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let (gw, edge) = gateway(&config(up_addr, "h2c", "")).await;

    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(1);
    let body = StreamBody::new(tokio_stream_from(rx));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(format!("http://{edge}/api/echo"))
        .body(body)
        .unwrap();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"first;"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let mut body = resp.into_body();
    // The first chunk comes back while the request body is still open.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first;"));
    tx.send(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 1 << 20]))))
        .await
        .unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest.len(), 1 << 20);
    gw.shutdown().await;
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let up = Upstream::start(Answer {
        delay: Duration::from_millis(700),
        ..Answer::default()
    })
    .await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    let in_flight =
        tokio::spawn(async move { send(false, edge, "GET", "/api/slowish", &[], "").await });
    // Wait (bounded) until the upstream has the request, then shut down while it is in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shutdown = tokio::spawn(gw.shutdown());
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Bytes::from_static(b"hello from upstream"));
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
    // After shutdown nothing listens any more.
    assert!(tokio::net::TcpStream::connect(edge).await.is_err());
}

#[tokio::test]
async fn admin_reports_request_metrics() {
    let up = Upstream::start(Answer::default()).await;
    let (gw, edge) = gateway(&config(up.address, "http", "")).await;
    send(
        false,
        edge,
        "GET",
        "/api/x",
        &[(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        )],
        "",
    )
    .await;
    send(false, edge, "GET", "/strict/x", &[], "").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trimmed = [("traceparent", tp), ("tracestate", "a=1,a=2,Bad=3")];
    send(false, edge, "GET", "/api/x", &trimmed, "").await;
    let repeated = [("traceparent", tp), ("traceparent", tp)];
    send(false, edge, "GET", "/api/x", &repeated, "").await;
    let admin = gw.address("admin").unwrap();
    let (status, _, body) = send(false, admin, "GET", "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let has = |needle: &str| {
        text.lines().any(|l| {
            l.starts_with("tracebridge_") && needle.split('|').all(|part| l.contains(part))
        })
    };
    assert!(
        // jaeger, trimmed tracestate, repeated traceparent: three answered on the main route.
        has("tracebridge_requests_total|listener=\"edge\"|route=\"main\"|code=\"200\"| 3"),
        "{text}"
    );
    assert!(
        has("tracebridge_requests_total|route=\"strict\"|code=\"400\"| 1"),
        "{text}"
    );
    assert!(
        has("tracebridge_trace_extract_total|format=\"jaeger\"|result=\"ok\"| 1"),
        "{text}"
    );
    assert!(
        has("tracebridge_trace_rejected_total|listener=\"edge\"| 1"),
        "{text}"
    );
    assert!(
        has("tracebridge_trace_extract_total|format=\"w3c\"|result=\"invalid\"| 1"),
        "{text}"
    );
    for reason in ["invalid", "duplicate"] {
        assert!(
            has(&format!(
                "tracebridge_tracestate_trimmed_total|listener=\"edge\"|reason=\"{reason}\"| 1"
            )),
            "{reason}: {text}"
        );
    }
    let (status, _, body) = send(false, admin, "GET", "/healthz", &[], "").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from_static(b"ok\n"))
    );
    let (status, _, body) = send(false, admin, "GET", "/readyz", &[], "").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from_static(b"ready\n"))
    );
    let (status, _, _) = send(false, admin, "GET", "/nope", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gw.shutdown().await;
}
