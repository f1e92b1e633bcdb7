//! Integration: "host and path, one truth". Raw HTTP/1.1 over a `TcpStream` (hand-written
//! bytes: Host, absolute-form and chunking exactly as written) and h2c where the rule is about
//! `:authority`. Each rule asserts the status, the error `kind` and `side`, and what the
//! recording upstream saw (Host, path, `X-Forwarded-*`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use support::{Answer, Seen, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracebridge::app::{self, RunningGateway};

/// The gateway and its three recording upstreams.
struct Setup {
    gw: RunningGateway,
    /// Catch-all (`/`) on every listener.
    svc: Upstream,
    /// `/admin` on `edge` and `loose`.
    admin: Upstream,
    /// Host `admin.test` and `rewrite.test` (with `host_rewrite`) on `edge`.
    hosted: Upstream,
}

impl Setup {
    async fn start() -> Setup {
        let svc = Upstream::start(Answer::default()).await;
        let admin = Upstream::start(Answer::default()).await;
        let hosted = Upstream::start(Answer::default()).await;
        let text = format!(
            r#"
[admin]
listen = ""
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[listeners]]
name = "loose"
protocol = "http"
address = "127.0.0.1:0"
path_normalization = "decode_dots"
[[listeners]]
name = "raw"
protocol = "http"
address = "127.0.0.1:0"
path_normalization = "off"
[[listeners]]
name = "behind_lb"
protocol = "http"
address = "127.0.0.1:0"
trusted_proxies = ["10.0.0.0/8", "127.0.0.0/8"]
[[routes]]
listener = "edge"
match = {{ host = "admin.test" }}
upstream = "hosted"
[[routes]]
listener = "edge"
match = {{ host = "rewrite.test" }}
upstream = "hosted"
host_rewrite = "internal.svc:8080"
[[routes]]
listener = "edge"
match = {{ path_prefix = "/admin" }}
upstream = "admin"
[[routes]]
listener = "edge"
match = {{ path_prefix = "/" }}
upstream = "svc"
[[routes]]
listener = "loose"
match = {{ path_prefix = "/admin" }}
upstream = "admin"
[[routes]]
listener = "loose"
upstream = "svc"
[[routes]]
listener = "raw"
upstream = "svc"
[[routes]]
listener = "behind_lb"
upstream = "svc"
[[upstreams]]
name = "svc"
protocol = "http"
endpoints = ["{}"]
[[upstreams]]
name = "admin"
protocol = "http"
endpoints = ["{}"]
[[upstreams]]
name = "hosted"
protocol = "http"
endpoints = ["{}"]
"#,
            svc.address, admin.address, hosted.address
        );
        let cfg = tracebridge::config::parse(&text).unwrap_or_else(|e| panic!("config: {e}"));
        let gw = app::start(cfg).await.unwrap();
        Setup {
            gw,
            svc,
            admin,
            hosted,
        }
    }

    fn at(&self, listener: &str) -> SocketAddr {
        self.gw.address(listener).unwrap()
    }

    fn seen_by_none(&self) -> usize {
        self.svc.count() + self.admin.count() + self.hosted.count()
    }
}

/// A response read off the wire: status, and the body (the gateway's answers carry a
/// Content-Length; every request here says `Connection: close`).
#[derive(Debug)]
struct Raw {
    status: u16,
    body: String,
}

impl Raw {
    /// The `kind` and `side` of a gateway error body.
    fn error(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an error body ({e}): {:?}", self.body));
        (
            v["kind"].as_str().unwrap().to_owned(),
            v["side"].as_str().unwrap().to_owned(),
        )
    }
}

/// Writes `request` as is and reads the answer until the gateway closes the connection.
async fn raw(address: SocketAddr, request: &str) -> Raw {
    let exchange = async {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        // A reset after the answer (the gateway closing with unread input) ends the read too.
        let _ = tcp.read_to_end(&mut bytes).await;
        bytes
    };
    let bytes = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("no answer within 5 s");
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Raw {
        status,
        body: body.to_owned(),
    }
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Asserts a downstream 4xx of `kind`, and that no upstream saw the request.
async fn refused(setup: &Setup, listener: &str, request: &str, status: u16, kind: &str) {
    let before = setup.seen_by_none();
    let got = raw(setup.at(listener), request).await;
    assert_eq!(got.status, status, "{request:?} → {got:?}");
    assert_eq!(
        got.error(),
        (kind.to_owned(), "downstream".to_owned()),
        "{request:?}"
    );
    assert_eq!(
        setup.seen_by_none(),
        before,
        "{request:?} reached an upstream"
    );
}

#[tokio::test]
async fn absolute_form_wins_and_becomes_the_host() {
    let s = Setup::start().await;
    // No Host at all: the absolute-form authority is the Host, routed by and forwarded.
    let got = raw(
        s.at("edge"),
        "GET http://admin.test/x?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    let seen = s.hosted.last();
    assert_eq!(header(&seen, "host"), Some("admin.test"));
    assert_eq!(seen.path_and_query, "/x?q=1");
    assert_eq!(header(&seen, "x-forwarded-host"), Some("admin.test"));
    // A Host that names the same authority (case aside) is accepted.
    let got = raw(
        s.at("edge"),
        "GET http://admin.test/y HTTP/1.1\r\nHost: ADMIN.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(s.hosted.last().path_and_query, "/y");
    assert_eq!(s.hosted.count(), 2);
}

#[tokio::test]
async fn host_disagreements_are_refused() {
    let s = Setup::start().await;
    let cases = [
        (
            "absolute-form and Host disagree",
            "GET http://admin.test/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "two Host headers",
            "GET /x HTTP/1.1\r\nHost: admin.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "no Host on HTTP/1.1",
            "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "Host with userinfo",
            "GET /x HTTP/1.1\r\nHost: user@admin.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute-form with userinfo",
            "GET http://user@admin.test/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        eprintln!("case: {what}");
        refused(&s, "edge", request, 400, "bad_request").await;
    }
    // HTTP/1.0 may omit Host: routed by path alone.
    let got = raw(s.at("edge"), "GET /plain HTTP/1.0\r\n\r\n").await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(s.svc.last().path_and_query, "/plain");
}

/// An h2c client connection to `address`.
async fn h2(address: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

/// Sends `req` (no body) over h2c and collects the status and body.
async fn h2_send(address: SocketAddr, req: Request<()>) -> (u16, String) {
    let mut client = h2(address).await;
    let exchange = async {
        let (response, _) = client.send_request(req, true).unwrap();
        let (parts, mut body) = response.await.unwrap().into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            bytes.extend_from_slice(&chunk);
        }
        (parts.status.as_u16(), String::from_utf8(bytes).unwrap())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("no answer within 5 s")
}

async fn h2_get(address: SocketAddr, uri: &str) -> u16 {
    h2_send(address, Request::get(uri).body(()).unwrap())
        .await
        .0
}

#[tokio::test]
async fn h2_authority_is_the_host_an_http1_upstream_sees_unless_rewritten() {
    let s = Setup::start().await;
    assert_eq!(h2_get(s.at("edge"), "http://admin.test/from-h2").await, 200);
    let seen = s.hosted.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(header(&seen, "host"), Some("admin.test"));
    assert_eq!(seen.path_and_query, "/from-h2");
    assert_eq!(header(&seen, "x-forwarded-host"), Some("admin.test"));

    // host_rewrite: the upstream sees the configured name; X-Forwarded-Host keeps the caller's.
    assert_eq!(h2_get(s.at("edge"), "http://rewrite.test/r").await, 200);
    let seen = s.hosted.last();
    assert_eq!(header(&seen, "host"), Some("internal.svc:8080"));
    assert_eq!(header(&seen, "x-forwarded-host"), Some("rewrite.test"));
    let got = raw(
        s.at("edge"),
        "GET /r1 HTTP/1.1\r\nHost: rewrite.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(header(&s.hosted.last(), "host"), Some("internal.svc:8080"));
    assert_eq!(s.hosted.count(), 3);

    // A Host beside an :authority that names another authority is refused (RFC 9113 §8.3.1).
    let req = Request::get("http://admin.test/x")
        .header("host", "evil.test")
        .body(())
        .unwrap();
    let (status, body) = h2_send(s.at("edge"), req).await;
    assert_eq!(status, 400, "{body}");
    let got = Raw { status, body };
    assert_eq!(got.error(), ("bad_request".into(), "downstream".into()));
    assert_eq!(s.hosted.count(), 3);
}

#[tokio::test]
async fn dot_segments_are_removed_before_routing_and_forwarding() {
    let s = Setup::start().await;
    // (listener, target, which upstream, path it must see)
    let cases = [
        ("edge", "/api/../admin/x", "admin", "/admin/x"),
        ("edge", "/a/./b/../c?q=/../x", "svc", "/a/c?q=/../x"),
        ("edge", "/../../admin", "admin", "/admin"),
        ("edge", "/admin/..", "svc", "/"),
        ("loose", "/api/%2e%2E/admin/x", "admin", "/admin/x"),
        ("loose", "/file%2ejson", "svc", "/file.json"),
        ("raw", "/api/../admin", "svc", "/api/../admin"),
        ("raw", "/a%2fb/%2e%2e", "svc", "/a%2fb/%2e%2e"),
    ];
    for (listener, target, upstream, want) in cases {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n");
        let got = raw(s.at(listener), &request).await;
        assert_eq!(got.status, 200, "{listener} {target}: {got:?}");
        let seen = match upstream {
            "admin" => s.admin.last(),
            _ => s.svc.last(),
        };
        assert_eq!(seen.path_and_query, want, "{listener} {target}");
    }
}

#[tokio::test]
async fn encoded_dots_and_slashes_are_refused_unless_configured() {
    let s = Setup::start().await;
    for (listener, target) in [
        ("edge", "/api/%2e%2e/admin"),
        ("edge", "/api/%2E./admin"),
        ("edge", "/admin%2fx"),
        ("edge", "/admin%2Fx"),
        ("loose", "/admin%2fx"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n");
        refused(&s, listener, &request, 400, "bad_request").await;
    }
}

#[tokio::test]
async fn forwarding_headers_are_overwritten_unless_the_peer_is_trusted() {
    let s = Setup::start().await;
    let request = "GET /f HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: 203.0.113.9\r\n\
                   X-Forwarded-Proto: https\r\nX-Forwarded-Host: forged.test\r\n\
                   Connection: close\r\n\r\n";
    // (listener, X-Forwarded-For, -Proto, -Host the upstream must see)
    let cases = [
        ("edge", "127.0.0.1", "http", "api.test"),
        (
            "behind_lb",
            "203.0.113.9, 127.0.0.1",
            "https",
            "forged.test",
        ),
    ];
    for (listener, xff, xfp, xfh) in cases {
        let got = raw(s.at(listener), request).await;
        assert_eq!(got.status, 200, "{listener}: {got:?}");
        let seen = s.svc.last();
        assert_eq!(header(&seen, "x-forwarded-for"), Some(xff), "{listener}");
        assert_eq!(header(&seen, "x-forwarded-proto"), Some(xfp), "{listener}");
        assert_eq!(header(&seen, "x-forwarded-host"), Some(xfh), "{listener}");
        assert_eq!(header(&seen, "host"), Some("api.test"), "{listener}");
    }
    // From a trusted proxy that sent none, this hop's view is filled in.
    let got = raw(
        s.at("behind_lb"),
        "GET /g HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    let seen = s.svc.last();
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&seen, "x-forwarded-host"), Some("api.test"));
}

#[tokio::test]
async fn connect_is_method_not_allowed() {
    let s = Setup::start().await;
    refused(
        &s,
        "edge",
        "CONNECT admin.test:443 HTTP/1.1\r\nHost: admin.test:443\r\nConnection: close\r\n\r\n",
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_downstreams_400() {
    let s = Setup::start().await;
    // The second chunk size is not hex: the body fails after the upstream got the head.
    let request = "POST /upload HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n";
    let got = raw(s.at("edge"), request).await;
    assert_eq!(got.status, 400, "{got:?}");
    assert_eq!(
        got.error(),
        ("bad_request".to_owned(), "downstream".to_owned())
    );
    assert!(
        got.body
            .contains("request body could not be read from the downstream"),
        "{}",
        got.body
    );
}

#[test]
fn config_keys_are_validated_with_their_paths() {
    let text = r#"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
path_normalization = "lax"
trusted_proxies = ["10.0.0.0/8", "10.0.0.0/33", "10.1.0.0/8", "proxy.local"]
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
path_normalization = "strict"
[[routes]]
listener = "edge"
upstream = "svc"
host_rewrite = "a b"
[[routes]]
listener = "edge"
upstream = "grpc"
host_rewrite = "internal.svc"
[[upstreams]]
name = "svc"
protocol = "http"
endpoints = ["127.0.0.1:1"]
[[upstreams]]
name = "grpc"
protocol = "grpc"
endpoints = ["127.0.0.1:1"]
"#;
    let errors: Vec<String> = match tracebridge::config::parse(text) {
        Ok(c) => panic!("expected errors, parsed {c:#?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors,
        vec![
            r#"listeners[0].path_normalization: "lax" is not a known path_normalization (known: strict, decode_dots, off)"#,
            r#"listeners[0].trusted_proxies[1]: "10.0.0.0/33" is not an address or CIDR block: prefix "33" is not a number from 0 to 32"#,
            r#"listeners[0].trusted_proxies[2]: "10.1.0.0/8" is not an address or CIDR block: "10.1.0.0/8" has host bits set beyond /8"#,
            r#"listeners[0].trusted_proxies[3]: "proxy.local" is not an address or CIDR block: "proxy.local" is not an IP address"#,
            r#"listeners[1].path_normalization: applies to http listeners only (this one is thrift)"#,
            r#"routes[0].host_rewrite: "a b" is not a host or host:port"#,
            r#"routes[1].host_rewrite: needs an http upstream ("grpc" has protocol "grpc", whose :authority is its endpoint)"#,
        ]
    );
}
