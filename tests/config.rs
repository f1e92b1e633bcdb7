//! Integration: `config::parse` / `config::load` through the public API. The shipped
//! example loads to the expected typed values; every error case yields exactly the expected
//! key path and message; several errors are reported together; defaults fill the gaps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tracebridge::app;
use tracebridge::config::{
    self, AccessLogFormat, BridgeKind, Config, ListenerProtocol, OnMissing, OtlpProtocol,
    PathNormalization, RouteMatch, SamplerConfig, ThriftProtocol, ThriftTransport,
    UpstreamProtocol,
};
use tracebridge::trace::Format;

/// A valid config; each error case edits one line of it.
const BASE: &str = r#"
[admin]
listen = "127.0.0.1:9901"

[telemetry]
service_name = "gw"
otlp_endpoint = "http://127.0.0.1:4317"
sampler = { kind = "parent_ratio", ratio = 0.5 }
span_queue = 16

[propagation]
extract = ["w3c", "b3"]
inject = ["w3c"]
on_missing = "start"

[shutdown]
drain_timeout = "10s"

[log]
access = "off"

[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:8080"

[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:9090"

[[routes]]
name = "users"
listener = "edge"
match = { path_prefix = "/users" }
upstream = "users"

[[routes]]
name = "legacy"
listener = "rpc"
upstream = "legacy"

[[upstreams]]
name = "users"
protocol = "http"
endpoints = ["127.0.0.1:9191"]

[[upstreams]]
name = "legacy"
protocol = "thrift"
endpoints = ["127.0.0.1:9292"]
"#;

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// `BASE` with the first `from` replaced by `to` (which must be present: a case that edits
/// nothing would test nothing).
fn edited(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

fn errors(text: &str) -> Vec<String> {
    match config::parse(text) {
        Ok(c) => panic!("expected errors, parsed {c:#?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn base_is_valid() {
    let c = config::parse(BASE).unwrap();
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.routes[1].upstream, 1);
}

#[test]
fn example_loads_with_every_value() {
    let c: Config = config::load(&example_path()).unwrap();

    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9901")));

    let t = &c.telemetry;
    assert_eq!(t.service_name, "tracebridge");
    assert_eq!(t.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    assert_eq!(t.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(t.sampler, SamplerConfig::ParentRatio { ratio: 0.25 });
    assert_eq!(t.span_queue, 4096);
    assert!(!t.log_spans);

    let p = &c.propagation;
    assert_eq!(
        p.extract,
        [
            Format::W3c,
            Format::Jaeger,
            Format::B3,
            Format::GrpcTraceBin,
            Format::XTraceRaw
        ]
    );
    assert_eq!(p.inject, [Format::W3c, Format::B3Multi]);
    assert_eq!(p.on_missing, OnMissing::Start);
    assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.log.access, AccessLogFormat::Json);

    let l: Vec<_> = c
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.protocol,
                l.address,
                l.max_connections,
                l.header_timeout,
            )
        })
        .collect();
    assert_eq!(
        l,
        [
            (
                "edge",
                ListenerProtocol::Http,
                addr("127.0.0.1:8080"),
                10_000,
                Duration::from_secs(30)
            ),
            (
                "rpc",
                ListenerProtocol::Thrift,
                addr("127.0.0.1:9090"),
                2000,
                Duration::from_secs(10)
            ),
        ]
    );

    assert_eq!(c.listeners[0].path_normalization, PathNormalization::Strict);
    let trusted: Vec<String> = c.listeners[0]
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(trusted, ["10.0.0.0/8", "127.0.0.1/32"]);
    assert!(c.listeners[1].trusted_proxies.is_empty());

    let r: Vec<_> = c
        .routes
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.listener.as_str(),
                r.upstream,
                r.timeout,
                r.on_missing,
            )
        })
        .collect();
    assert_eq!(
        r,
        [
            (
                "users",
                "edge",
                0,
                Duration::from_secs(30),
                Some(OnMissing::Reject)
            ),
            ("orders-grpc", "edge", 1, Duration::from_secs(5), None),
            (
                "search",
                "edge",
                2,
                Duration::from_secs(2),
                Some(OnMissing::Pass)
            ),
            (
                "legacy-get-user",
                "rpc",
                3,
                Duration::from_millis(1500),
                None
            ),
            ("rpc#4", "rpc", 3, Duration::from_secs(30), None),
            ("greeter-json", "edge", 4, Duration::from_secs(30), None),
        ]
    );
    let bridges: Vec<_> = c.routes.iter().map(|r| r.bridge).collect();
    assert_eq!(
        bridges,
        [None, None, None, None, None, Some(BridgeKind::JsonGrpc)]
    );
    assert_eq!(
        c.routes[0].matcher,
        RouteMatch {
            host: Some("api.example.com".into()),
            path_prefix: Some("/users".into()),
            headers: vec![("x-colour".into(), "blue".into())],
            query: vec![("colour".into(), "blue".into())],
            grpc_service: None,
            thrift_method: None,
        }
    );
    assert_eq!(
        c.routes[1].matcher.grpc_service.as_deref(),
        Some("shop.v1.Orders")
    );
    assert_eq!(
        c.routes[3].matcher.thrift_method.as_deref(),
        Some("getUser")
    );
    assert_eq!(c.routes[4].matcher, RouteMatch::default());
    let rewrites: Vec<_> = c.routes.iter().map(|r| r.host_rewrite.as_deref()).collect();
    assert_eq!(
        rewrites,
        [Some("users.internal:9191"), None, None, None, None, None]
    );

    let u: Vec<_> = c
        .upstreams
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                u.protocol,
                u.transport,
                u.thrift_protocol,
                u.endpoints.join(","),
                u.connect_timeout,
                u.pool_idle_per_endpoint,
            )
        })
        .collect();
    let secs = Duration::from_secs;
    assert_eq!(
        u,
        [
            (
                "users",
                UpstreamProtocol::Http,
                None,
                None,
                "127.0.0.1:9191,127.0.0.1:9192".to_owned(),
                secs(5),
                64
            ),
            (
                "orders",
                UpstreamProtocol::Grpc,
                None,
                None,
                "orders.internal:50051".to_owned(),
                secs(2),
                16
            ),
            (
                "search",
                UpstreamProtocol::H2c,
                None,
                None,
                "[::1]:8443".to_owned(),
                secs(5),
                64
            ),
            (
                "legacy",
                UpstreamProtocol::Thrift,
                Some(ThriftTransport::Framed),
                Some(ThriftProtocol::Compact),
                "127.0.0.1:9292".to_owned(),
                secs(1),
                8
            ),
            (
                "greeter",
                UpstreamProtocol::Grpc,
                None,
                None,
                "127.0.0.1:50051".to_owned(),
                secs(5),
                64
            ),
        ]
    );
    let greeter = &c.upstreams[4];
    assert_eq!(
        greeter.descriptor_set.as_deref(),
        Some(
            example_path()
                .parent()
                .unwrap()
                .join("greeter.binpb")
                .as_path()
        )
    );
    assert_eq!(greeter.services, ["tracebridge.demo.v1.Greeter"]);
    assert_eq!(c.upstreams[1].descriptor_set, None);
    assert!(c.upstreams[1].services.is_empty());
}

#[test]
fn example_uses_every_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let keys = [
        "[admin]",
        "listen =",
        "[telemetry]",
        "service_name =",
        "otlp_endpoint =",
        "otlp_protocol =",
        "sampler = { kind =",
        "ratio =",
        "span_queue =",
        "log_spans =",
        "[propagation]",
        "extract =",
        "inject =",
        "on_missing =",
        "[shutdown]",
        "drain_timeout =",
        "[log]",
        "access =",
        "[[listeners]]",
        "name =",
        "protocol =",
        "address =",
        "max_connections =",
        "header_timeout =",
        "[[routes]]",
        "listener =",
        "match = { host =",
        "path_prefix =",
        "headers =",
        "query =",
        "grpc_service =",
        "thrift_method =",
        "upstream =",
        "timeout =",
        "[[upstreams]]",
        "transport =",
        "thrift_protocol =",
        "endpoints =",
        "connect_timeout =",
        "pool_idle_per_endpoint =",
        "path_normalization =",
        "trusted_proxies =",
        "host_rewrite =",
        "bridge =",
        "descriptor_set =",
        "services =",
    ];
    for key in keys {
        assert!(text.contains(key), "example lacks {key:?}");
    }
}

#[test]
fn defaults_are_applied() {
    let c = config::parse(
        r#"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"

[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"

[[routes]]
listener = "rpc"
upstream = "t"

[[upstreams]]
name = "t"
protocol = "thrift"
endpoints = ["t.internal:9090"]
"#,
    )
    .unwrap();
    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9901")));
    assert_eq!(c.telemetry.service_name, "tracebridge");
    assert_eq!(c.telemetry.otlp_endpoint, None);
    assert_eq!(c.telemetry.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(
        c.telemetry.sampler,
        SamplerConfig::ParentRatio { ratio: 1.0 }
    );
    assert_eq!(c.telemetry.span_queue, 4096);
    assert!(!c.telemetry.log_spans);
    assert_eq!(
        c.propagation.extract,
        [
            Format::W3c,
            Format::Jaeger,
            Format::B3,
            Format::GrpcTraceBin,
            Format::XTraceRaw
        ]
    );
    assert_eq!(c.propagation.inject, [Format::W3c]);
    assert_eq!(c.propagation.on_missing, OnMissing::Start);
    assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.log.access, AccessLogFormat::Off);
    assert_eq!(c.listeners[0].max_connections, 10_000);
    assert_eq!(c.listeners[0].header_timeout, Duration::from_secs(30));
    assert_eq!(c.routes[0].name, "rpc#0");
    assert_eq!(c.routes[0].matcher, RouteMatch::default());
    assert_eq!(c.routes[0].timeout, Duration::from_secs(30));
    assert_eq!(c.routes[0].on_missing, None);
    let u = &c.upstreams[0];
    assert_eq!(u.transport, Some(ThriftTransport::Header));
    assert_eq!(u.thrift_protocol, Some(ThriftProtocol::Binary));
    assert_eq!(u.connect_timeout, Duration::from_secs(5));
    assert_eq!(u.pool_idle_per_endpoint, 64);
}

#[test]
fn each_error_has_its_path_and_message() {
    let known = "(known: w3c, jaeger, b3, b3multi, grpc-trace-bin, x-trace-raw)";
    let cases: Vec<(String, String)> = vec![
        (
            edited(r#"address = "127.0.0.1:9090""#, r#"address = "localhost:99999""#),
            r#"listeners[1].address: "localhost:99999" is not a socket address (ip:port)"#.into(),
        ),
        (
            edited(r#"upstream = "users""#, r#"upstream = "userz""#),
            r#"routes[0].upstream: "userz" is not a defined upstream (defined: "users", "legacy")"#
                .into(),
        ),
        (
            edited(r#"listener = "edge""#, r#"listener = "edgee""#),
            r#"routes[0].listener: "edgee" is not a defined listener"#.into(),
        ),
        (
            edited(r#"extract = ["w3c", "b3"]"#, r#"extract = ["w3c", "b3", "zipkin"]"#),
            format!(r#"propagation.extract[2]: "zipkin" is not a known format {known}"#),
        ),
        (
            edited(r#"inject = ["w3c"]"#, r#"inject = ["w3c", "w3c"]"#),
            r#"propagation.inject[1]: "w3c" is listed twice"#.into(),
        ),
        (
            edited(
                "\n[[routes]]\nname = \"users\"",
                "\n[[listeners]]\nname = \"edge\"\nprotocol = \"http\"\naddress = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"users\"",
            ),
            r#"listeners[2].name: "edge" is already defined (listeners[0])"#.into(),
        ),
        (
            edited(
                "\n[[upstreams]]\nname = \"legacy\"",
                "\n[[upstreams]]\nname = \"users\"\nprotocol = \"http\"\nendpoints = [\"a:1\"]\n\n[[upstreams]]\nname = \"legacy\"",
            ),
            r#"upstreams[1].name: "users" is already defined (upstreams[0])"#.into(),
        ),
        (
            edited(r#"name = "legacy"
listener"#, r#"name = "users"
listener"#),
            r#"routes[1].name: "users" is already defined (routes[0])"#.into(),
        ),
        (
            edited(r#"address = "127.0.0.1:9090""#, r#"address = "127.0.0.1:8080""#),
            r#"listeners[1].address: "127.0.0.1:8080" is already used by listeners[0]"#.into(),
        ),
        (
            edited(r#"address = "127.0.0.1:8080""#, r#"address = "127.0.0.1:9901""#),
            r#"listeners[0].address: "127.0.0.1:9901" is already used by admin.listen"#.into(),
        ),
        (
            edited("ratio = 0.5", "ratio = 1.5"),
            "telemetry.sampler.ratio: 1.5 is outside 0.0..=1.0".into(),
        ),
        (
            edited("ratio = 0.5", "ratio = -0.1"),
            "telemetry.sampler.ratio: -0.1 is outside 0.0..=1.0".into(),
        ),
        (
            edited(r#"kind = "parent_ratio""#, r#"kind = "always_on""#),
            r#"telemetry.sampler.kind: "always_on" is not a known sampler kind (known: parent_ratio)"#
                .into(),
        ),
        (
            edited(r#"endpoints = ["127.0.0.1:9191"]"#, "endpoints = []"),
            "upstreams[0].endpoints: empty".into(),
        ),
        (
            edited(r#"endpoints = ["127.0.0.1:9191"]"#, r#"endpoints = ["a:1", "localhost"]"#),
            r#"upstreams[0].endpoints[1]: "localhost" is not host:port"#.into(),
        ),
        (
            edited(r#"endpoints = ["127.0.0.1:9191"]"#, r#"endpoints = ["http://a:80"]"#),
            r#"upstreams[0].endpoints[0]: "http://a:80" is not host:port"#.into(),
        ),
        (
            edited(r#"protocol = "http"
endpoints"#, r#"protocol = "http"
transport = "framed"
endpoints"#),
            r#"upstreams[0].transport: "framed" is only for thrift upstreams (protocol is "http")"#
                .into(),
        ),
        (
            edited(r#"protocol = "http"
endpoints"#, r#"protocol = "grpc"
thrift_protocol = "compact"
endpoints"#),
            r#"upstreams[0].thrift_protocol: "compact" is only for thrift upstreams (protocol is "grpc")"#
                .into(),
        ),
        (
            edited(r#"protocol = "thrift"
endpoints"#, r#"protocol = "thrift"
transport = "http"
endpoints"#),
            r#"upstreams[1].transport: "http" is not a known thrift transport (known: header, framed, unframed)"#
                .into(),
        ),
        (
            edited(r#"protocol = "thrift"
endpoints"#, r#"protocol = "thrift"
thrift_protocol = "json"
endpoints"#),
            r#"upstreams[1].thrift_protocol: "json" is not a known thrift protocol (known: binary, compact)"#
                .into(),
        ),
        (
            edited("span_queue = 16", "span_queue = 0"),
            "telemetry.span_queue: 0 must be at least 1".into(),
        ),
        (
            edited(r#"drain_timeout = "10s""#, r#"drain_timeout = "10""#),
            r#"shutdown.drain_timeout: "10" is not a duration: missing unit (ms, s, m or h)"#.into(),
        ),
        (
            edited(r#"drain_timeout = "10s""#, r#"drain_timeout = "1.5s""#),
            r#"shutdown.drain_timeout: "1.5s" is not a duration: fractions are not supported; use a smaller unit (ms, s, m or h), e.g. "1500ms""#.into(),
        ),
        (
            edited(r#"drain_timeout = "10s""#, r#"drain_timeout = "10d""#),
            r#"shutdown.drain_timeout: "10d" is not a duration: unknown unit "d" (ms, s, m or h)"#
                .into(),
        ),
        (
            edited(r#"drain_timeout = "10s""#, r#"drain_timeout = """#),
            r#"shutdown.drain_timeout: "" is not a duration: empty"#.into(),
        ),
        (
            edited(r#"upstream = "users""#, "upstream = \"users\"\ntimeout = \"0s\""),
            r#"routes[0].timeout: "0s" must be greater than 0"#.into(),
        ),
        (
            edited(
                r#"otlp_endpoint = "http://127.0.0.1:4317""#,
                r#"otlp_endpoint = "127.0.0.1:4317""#,
            ),
            r#"telemetry.otlp_endpoint: "127.0.0.1:4317" does not start with http://"#
                .into(),
        ),
        (
            edited(r#"service_name = "gw""#, r#"otlp_protocol = "json""#),
            r#"telemetry.otlp_protocol: "json" is not a known otlp_protocol (known: grpc, http/protobuf)"#
                .into(),
        ),
        (
            edited(r#"on_missing = "start""#, r#"on_missing = "drop""#),
            r#"propagation.on_missing: "drop" is not a known on_missing (known: start, reject, pass)"#
                .into(),
        ),
        (
            edited(r#"upstream = "users""#, "upstream = \"users\"\non_missing = \"never\""),
            r#"routes[0].on_missing: "never" is not a known on_missing (known: start, reject, pass)"#
                .into(),
        ),
        (
            edited(r#"protocol = "thrift"
address"#, r#"protocol = "grpc"
address"#),
            r#"listeners[1].protocol: "grpc" is not a known listener protocol (known: http, thrift)"#
                .into(),
        ),
        (
            edited(r#"protocol = "http"
endpoints"#, r#"protocol = "http2"
endpoints"#),
            r#"upstreams[0].protocol: "http2" is not a known upstream protocol (known: http, h2c, grpc, thrift)"#
                .into(),
        ),
        (
            edited(r#"listen = "127.0.0.1:9901""#, r#"listen = "9901""#),
            r#"admin.listen: "9901" is not a socket address (ip:port)"#.into(),
        ),
        (
            edited(r#"match = { path_prefix = "/users" }"#, r#"match = { thrift_method = "getUser" }"#),
            r#"routes[0].match.thrift_method: "getUser" needs a thrift listener ("edge" is http)"#
                .into(),
        ),
        (
            edited(
                r#"listener = "rpc""#,
                "listener = \"rpc\"\nmatch = { grpc_service = \"pkg.Svc\" }",
            ),
            r#"routes[1].match.grpc_service: "pkg.Svc" needs an http listener ("rpc" is thrift)"#
                .into(),
        ),
        (
            edited(r#"match = { path_prefix = "/users" }"#, r#"match = { path_prefix = "users" }"#),
            r#"routes[0].match.path_prefix: "users" does not start with "/""#.into(),
        ),
        (
            edited(r#"access = "off""#, r#"access = "text""#),
            r#"log.access: "text" is not a known access log (known: off, json)"#.into(),
        ),
        (
            edited(r#"access = "off""#, "access = \"off\"\nerror = \"json\""),
            "log.error: unknown field `error`, expected `access`".into(),
        ),
    ];
    let mut failed = Vec::new();
    for (text, want) in &cases {
        let got = errors(text);
        if got != [want.clone()] {
            failed.push(format!("want [{want}]\n got {got:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(cases.len(), 38);
}

#[test]
fn at_least_one_listener_is_required() {
    assert_eq!(
        errors(""),
        ["listeners: empty; at least one [[listeners]] is required"]
    );
}

#[test]
fn port_zero_may_repeat() {
    let text = edited(
        r#"address = "127.0.0.1:8080""#,
        r#"address = "127.0.0.1:0""#,
    )
    .replacen(
        r#"address = "127.0.0.1:9090""#,
        r#"address = "127.0.0.1:0""#,
        1,
    );
    let c = config::parse(&text).unwrap();
    assert_eq!(c.listeners[0].address, c.listeners[1].address);
}

#[test]
fn every_error_is_reported_in_one_pass() {
    let text = r#"
[admin]
listen = "nowhere"

[telemetry]
otlp_endpoint = "grpc://collector:4317"
sampler = { kind = "parent_ratio", ratio = 2.0 }

[propagation]
extract = ["zipkin", "w3c"]
on_missing = "maybe"

[[listeners]]
name = "edge"
protocol = "http"
address = "localhost:99999"
max_connections = -1

[[listeners]]
name = "edge"
protocol = "thrift"
address = "127.0.0.1:9090"
header_timeout = "soon"

[[routes]]
listener = "edgee"
upstream = "userz"

[[routes]]
listener = "edge"
upstream = "users"
match = { thrift_method = "getUser" }
timeout = "5"

[[upstreams]]
name = "users"
protocol = "http"
transport = "header"
endpoints = []
connect_timeout = "1.5s"
"#;
    assert_eq!(
        errors(text),
        [
            r#"admin.listen: "nowhere" is not a socket address (ip:port)"#,
            r#"telemetry.otlp_endpoint: "grpc://collector:4317" does not start with http://"#,
            "telemetry.sampler.ratio: 2.0 is outside 0.0..=1.0",
            r#"propagation.on_missing: "maybe" is not a known on_missing (known: start, reject, pass)"#,
            r#"propagation.extract[0]: "zipkin" is not a known format (known: w3c, jaeger, b3, b3multi, grpc-trace-bin, x-trace-raw)"#,
            r#"listeners[0].address: "localhost:99999" is not a socket address (ip:port)"#,
            "listeners[0].max_connections: -1 must be at least 1",
            r#"listeners[1].name: "edge" is already defined (listeners[0])"#,
            r#"listeners[1].header_timeout: "soon" is not a duration: missing number before the unit (ms, s, m or h)"#,
            r#"routes[0].listener: "edgee" is not a defined listener"#,
            r#"routes[0].upstream: "userz" is not a defined upstream (defined: "users")"#,
            r#"routes[1].match.thrift_method: "getUser" needs a thrift listener ("edge" is http)"#,
            r#"routes[1].timeout: "5" is not a duration: missing unit (ms, s, m or h)"#,
            r#"upstreams[0].transport: "header" is only for thrift upstreams (protocol is "http")"#,
            "upstreams[0].endpoints: empty",
            r#"upstreams[0].connect_timeout: "1.5s" is not a duration: fractions are not supported; use a smaller unit (ms, s, m or h), e.g. "1500ms""#,
        ]
    );
}

#[test]
fn unknown_field_is_reported_with_its_path() {
    let text = edited("span_queue = 16", "span_queue = 16\nspan_queu = 1");
    assert_eq!(
        errors(&text),
        [
            "telemetry.span_queu: unknown field `span_queu`, expected one of `service_name`, `otlp_endpoint`, `otlp_protocol`, `sampler`, `span_queue`, `log_spans`"
        ]
    );
    let text = edited(
        r#"endpoints = ["127.0.0.1:9292"]"#,
        "endpoints = [\"127.0.0.1:9292\"]\nretries = 3",
    );
    assert_eq!(
        errors(&text),
        [
            "upstreams[1].retries: unknown field `retries`, expected one of `name`, `protocol`, `transport`, `thrift_protocol`, `endpoints`, `connect_timeout`, `pool_idle_per_endpoint`, `descriptor_set`, `services`"
        ]
    );
    let text = edited(
        r#"match = { path_prefix = "/users" }"#,
        r#"match = { path_prefix = "/users", method = "GET" }"#,
    );
    assert_eq!(
        errors(&text),
        [
            "routes[0].match.method: unknown field `method`, expected one of `host`, `path_prefix`, `headers`, `query`, `grpc_service`, `thrift_method`"
        ]
    );
}

#[test]
fn syntax_error_is_one_error_at_line_and_column() {
    let text = edited("span_queue = 16", "span_queue = ");
    let e = config::parse(&text).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].path, "9:14");
    assert_eq!(
        e.errors[0].message,
        "string values must be quoted, expected literal string"
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let e = config::load(&path).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].path, "");
    assert!(
        e.errors[0]
            .message
            .starts_with(&format!("cannot read {}: ", path.display())),
        "{}",
        e.errors[0].message
    );
}

/// `BASE` plus a bridged route to a gRPC upstream with the given extra upstream lines.
fn bridged(route_extra: &str, upstream_lines: &str) -> String {
    format!(
        "{BASE}\n[[routes]]\nlistener = \"edge\"\nmatch = {{ path_prefix = \"/v1\" }}\nupstream = \"greeter\"\n{route_extra}\n\n[[upstreams]]\nname = \"greeter\"\nprotocol = \"grpc\"\nendpoints = [\"127.0.0.1:50051\"]\n{upstream_lines}\n"
    )
}

#[test]
fn bridge_keys_are_validated_with_their_paths() {
    // The built-in set: valid with and without a service list.
    let c = config::parse(&bridged("bridge = \"json-grpc\"", "")).unwrap();
    assert_eq!(c.routes[2].bridge, Some(BridgeKind::JsonGrpc));
    assert_eq!(c.upstreams[2].descriptor_set, None);
    let c = config::parse(&bridged(
        "bridge = \"json-grpc\"",
        "services = [\"tracebridge.demo.v1.Greeter\"]",
    ))
    .unwrap();
    assert_eq!(c.upstreams[2].services, ["tracebridge.demo.v1.Greeter"]);

    assert_eq!(
        errors(&bridged("bridge = \"grpc-json\"", "")),
        [r#"routes[2].bridge: "grpc-json" is not a known bridge (known: json-grpc)"#]
    );
    // A bridge towards an http upstream; bridge keys on an http upstream.
    assert_eq!(
        errors(&edited(
            "upstream = \"users\"\n",
            "upstream = \"users\"\nbridge = \"json-grpc\"\n"
        )),
        [r#"routes[0].bridge: "json-grpc" needs a grpc upstream ("users" has protocol "http")"#]
    );
    assert_eq!(
        errors(&edited(
            "endpoints = [\"127.0.0.1:9191\"]\n",
            "endpoints = [\"127.0.0.1:9191\"]\ndescriptor_set = \"x.binpb\"\nservices = []\n"
        )),
        [
            r#"upstreams[0].descriptor_set: "x.binpb" is only for grpc upstreams (protocol is "http")"#,
            r#"upstreams[0].services: only for grpc upstreams (protocol is "http")"#,
        ]
    );
    assert_eq!(
        errors(&bridged(
            "bridge = \"json-grpc\"",
            "services = [\"tracebridge.demo.v1.Greeter\", \"shop.v1.Orders\"]"
        )),
        [
            r#"upstreams[2].services[1]: "shop.v1.Orders" is not a service of the descriptor set (services: tracebridge.demo.v1.Greeter)"#
        ]
    );
}

#[test]
fn descriptor_set_files_must_load() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.binpb");
    std::fs::write(&good, tracebridge::bridge::descriptors::BUILTIN).unwrap();
    let garbage = dir.path().join("garbage.binpb");
    std::fs::write(&garbage, b"\xff\xffnot a descriptor set").unwrap();
    let missing = dir.path().join("missing.binpb");

    let line = |p: &Path| format!("descriptor_set = {:?}", p.display().to_string());
    let c = config::parse(&bridged("bridge = \"json-grpc\"", &line(&good))).unwrap();
    assert_eq!(
        c.upstreams[2].descriptor_set.as_deref(),
        Some(good.as_path())
    );

    let e = errors(&bridged("bridge = \"json-grpc\"", &line(&garbage)));
    assert_eq!(e.len(), 1);
    let want = format!(
        "upstreams[2].descriptor_set: {}: not a valid serialized google.protobuf.FileDescriptorSet: ",
        garbage.display()
    );
    assert!(e[0].starts_with(&want), "{}", e[0]);

    let e = errors(&bridged("bridge = \"json-grpc\"", &line(&missing)));
    assert_eq!(e.len(), 1);
    let want = format!(
        "upstreams[2].descriptor_set: cannot read {}: No such file or directory",
        missing.display()
    );
    assert!(e[0].starts_with(&want), "{}", e[0]);

    // Relative paths are taken from the config file's directory.
    let file = dir.path().join("gw.toml");
    std::fs::write(
        &file,
        bridged("bridge = \"json-grpc\"", "descriptor_set = \"good.binpb\""),
    )
    .unwrap();
    let c = config::load(&file).unwrap();
    assert_eq!(
        c.upstreams[2].descriptor_set.as_deref(),
        Some(good.as_path())
    );
}

/// A config `app::start` accepts: every listener → upstream pairing this build forwards
/// (http → http, http → grpc bridged, thrift → thrift), ports 0, admin off. The endpoints are
/// never dialled: start-up opens no upstream connection.
const STARTABLE: &str = r#"
[admin]
listen = ""

[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"

[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"

[[routes]]
listener = "edge"
match = { path_prefix = "/users" }
upstream = "users"

[[routes]]
listener = "edge"
match = { path_prefix = "/v1" }
upstream = "greeter"
bridge = "json-grpc"

[[routes]]
listener = "rpc"
upstream = "legacy"

[[upstreams]]
name = "users"
protocol = "http"
endpoints = ["127.0.0.1:9"]

[[upstreams]]
name = "greeter"
protocol = "grpc"
endpoints = ["127.0.0.1:9"]

[[upstreams]]
name = "legacy"
protocol = "thrift"
endpoints = ["127.0.0.1:9"]
"#;

/// One way `app::start` refuses a config: the TOML that says it (`check` must report
/// exactly `check`), and the same fault put straight into a validated `Config`, bypassing
/// validation, which `start` must refuse with a message containing `start`.
struct Refusal {
    what: &'static str,
    from: &'static str,
    to: &'static str,
    check: &'static str,
    inject: fn(&mut Config),
    start: &'static str,
}

/// Every refusal `app::start` (and what it calls: `Telemetry::start`, `HttpUpstream::new`,
/// `ThriftUpstream::new`, the routers, the bridges) can produce from a config, except binding
/// a socket.
fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            what: "http listener → thrift upstream",
            from: "upstream = \"users\"",
            to: "upstream = \"legacy\"",
            check: r#"routes[0].upstream: HTTP listener "edge" cannot forward to thrift upstream "legacy" (HTTP → Thrift bridging is not in this build)"#,
            inject: |c| c.routes[0].upstream = 2,
            start: "cannot forward to thrift upstream",
        },
        Refusal {
            what: "thrift listener → http upstream",
            from: "listener = \"rpc\"\nupstream = \"legacy\"",
            to: "listener = \"rpc\"\nupstream = \"users\"",
            check: r#"routes[2].upstream: Thrift listener "rpc" cannot forward to http upstream "users" (Thrift → HTTP/gRPC bridging is not in this build)"#,
            inject: |c| c.routes[2].upstream = 0,
            start: "cannot forward to non-Thrift upstream",
        },
        Refusal {
            what: "thrift listener → grpc upstream",
            from: "listener = \"rpc\"\nupstream = \"legacy\"",
            to: "listener = \"rpc\"\nupstream = \"greeter\"",
            check: r#"routes[2].upstream: Thrift listener "rpc" cannot forward to grpc upstream "greeter" (Thrift → HTTP/gRPC bridging is not in this build)"#,
            inject: |c| c.routes[2].upstream = 1,
            start: "cannot forward to non-Thrift upstream",
        },
        Refusal {
            what: "route to an undefined upstream",
            from: "upstream = \"users\"",
            to: "upstream = \"nobody\"",
            check: r#"routes[0].upstream: "nobody" is not a defined upstream (defined: "users", "greeter", "legacy")"#,
            inject: |c| c.routes[0].upstream = 99,
            start: "cannot forward",
        },
        Refusal {
            what: "json-grpc bridge towards an http upstream",
            from: "upstream = \"greeter\"",
            to: "upstream = \"users\"",
            check: r#"routes[1].bridge: "json-grpc" needs a grpc upstream ("users" has protocol "http")"#,
            inject: |c| c.routes[1].upstream = 0,
            start: r#"upstream "users" carries no json-grpc bridge"#,
        },
        Refusal {
            what: "descriptor set that cannot be read",
            from: "protocol = \"grpc\"\n",
            to: "protocol = \"grpc\"\ndescriptor_set = \"/nonexistent/greeter.binpb\"\n",
            check: "upstreams[1].descriptor_set: cannot read /nonexistent/greeter.binpb: No such file or directory (os error 2)",
            inject: |c| c.upstreams[1].json_grpc = None,
            start: r#"upstream "greeter" carries no json-grpc bridge"#,
        },
        Refusal {
            what: "service the descriptor set lacks",
            from: "protocol = \"grpc\"\n",
            to: "protocol = \"grpc\"\nservices = [\"shop.v1.Orders\"]\n",
            check: r#"upstreams[1].services[0]: "shop.v1.Orders" is not a service of the descriptor set (services: tracebridge.demo.v1.Greeter)"#,
            inject: |c| c.upstreams[1].json_grpc = None,
            start: r#"upstream "greeter" carries no json-grpc bridge"#,
        },
        Refusal {
            what: "http endpoint that is not host:port",
            from: "endpoints = [\"127.0.0.1:9\"]",
            to: "endpoints = [\"users internal:80\"]",
            check: r#"upstreams[0].endpoints[0]: "users internal:80" is not host:port"#,
            inject: |c| c.upstreams[0].endpoints = vec!["users internal:80".into()],
            start: r#"upstream users: endpoint "users internal:80" is not host:port"#,
        },
        Refusal {
            what: "upstream without endpoints",
            from: "endpoints = [\"127.0.0.1:9\"]",
            to: "endpoints = []",
            check: "upstreams[0].endpoints: empty",
            inject: |c| c.upstreams[0].endpoints.clear(),
            start: "upstream users has no endpoints",
        },
        Refusal {
            what: "OTLP endpoint that is not a URI",
            from: "listen = \"\"\n",
            to: "listen = \"\"\n[telemetry]\notlp_endpoint = \"http://collector 1:4317\"\n",
            check: r#"telemetry.otlp_endpoint: "http://collector 1:4317" is not a valid URI: invalid uri character"#,
            inject: |c| c.telemetry.otlp_endpoint = Some("http://collector 1:4317".into()),
            start: "cannot build the OTLP exporter for http://collector 1:4317",
        },
        Refusal {
            what: "OTLP/gRPC over TLS",
            from: "listen = \"\"\n",
            to: "listen = \"\"\n[telemetry]\notlp_endpoint = \"https://collector:4317\"\n",
            check: r#"telemetry.otlp_endpoint: "https://collector:4317" needs TLS, which is not in this build (use http://)"#,
            inject: |c| c.telemetry.otlp_endpoint = Some("https://collector:4317".into()),
            start: "cannot build the OTLP exporter for https://collector:4317",
        },
        Refusal {
            what: "OTLP/HTTP endpoint that is not a URI",
            from: "listen = \"\"\n",
            to: "listen = \"\"\n[telemetry]\notlp_protocol = \"http/protobuf\"\notlp_endpoint = \"http://collector:4318/a b\"\n",
            check: r#"telemetry.otlp_endpoint: "http://collector:4318/a b" is not a valid URI: invalid uri character"#,
            inject: |c| {
                c.telemetry.otlp_protocol = OtlpProtocol::HttpProtobuf;
                c.telemetry.otlp_endpoint = Some("http://collector:4318/a b".into());
            },
            start: "cannot build the OTLP exporter for http://collector:4318/a b",
        },
    ]
}

/// `check` rejects everything `start` rejects: each refusal is reported by `parse` with its
/// key path (and nothing else), and `start` really does refuse the same fault.
#[tokio::test]
async fn every_start_refusal_is_a_check_error() {
    let valid = config::parse(STARTABLE).unwrap();
    let mut failed = Vec::new();
    for r in refusals() {
        assert!(
            STARTABLE.contains(r.from),
            "{}: STARTABLE has no {:?}",
            r.what,
            r.from
        );
        let text = STARTABLE.replacen(r.from, r.to, 1);
        match config::parse(&text) {
            Ok(_) => failed.push(format!("{}: check accepts it", r.what)),
            Err(e) => {
                let got: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
                if got != [r.check] {
                    failed.push(format!(
                        "{}: check says {got:?}, want [{:?}]",
                        r.what, r.check
                    ));
                }
            }
        }
        let mut bad = valid.clone();
        (r.inject)(&mut bad);
        match app::start(bad).await {
            Ok(gw) => {
                gw.shutdown().await;
                failed.push(format!("{}: start accepts it", r.what));
            }
            Err(e) if !e.to_string().contains(r.start) => {
                failed.push(format!("{}: start says {e}, want …{}…", r.what, r.start));
            }
            Err(_) => {}
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// What is left for `start` to refuse in a validated config is binding a socket: the config
/// that `check` accepts starts (OTLP on for both protocols too), and the same config with a
/// listener on a taken port fails only at `bind`.
#[tokio::test]
async fn a_validated_config_starts_unless_a_socket_cannot_be_bound() {
    for telemetry in [
        "",
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:9\"\n",
        "[telemetry]\notlp_protocol = \"http/protobuf\"\notlp_endpoint = \"http://127.0.0.1:9/\"\n",
    ] {
        let text = format!("{telemetry}{STARTABLE}");
        let gw = app::start(config::parse(&text).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{telemetry:?}: {e}"));
        assert!(gw.address("edge").is_some_and(|a| a.port() != 0));
        assert!(gw.address("rpc").is_some_and(|a| a.port() != 0));
        gw.shutdown().await;
    }

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = STARTABLE.replacen(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"127.0.0.1:{port}\""),
        1,
    );
    let cfg = config::parse(&text).unwrap();
    let e = app::start(cfg).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("listener edge: cannot bind 127.0.0.1:{port}")),
        "{e}"
    );
}

/// The JSON → gRPC bridge is built while validating and carried in the config: for a grpc
/// upstream that a bridged route targets (built-in set by default) or that names a
/// descriptor set or services; `start` uses the carried one and reads no file again.
#[tokio::test]
async fn bridges_are_built_once_and_carried_in_the_config() {
    let c = config::parse(STARTABLE).unwrap();
    let carried: Vec<_> = c.upstreams.iter().map(|u| u.json_grpc.is_some()).collect();
    assert_eq!(
        carried,
        [false, true, false],
        "users, greeter (bridged), legacy"
    );
    let greeter = c.upstreams[1].json_grpc.as_ref().unwrap();
    assert!(
        greeter
            .bridge()
            .services()
            .contains(&"tracebridge.demo.v1.Greeter".to_owned()),
        "{greeter:?}"
    );
    // Equal when built from the same inputs: a clone shares the bridge, a second load of the
    // same text builds its own from the same (built-in) set.
    assert_eq!(c.clone(), c);
    assert_eq!(config::parse(STARTABLE).unwrap(), c);

    // Not bridged, no keys: nothing built. Not bridged, with a services list: built (and checked).
    let unbridged = STARTABLE.replacen("bridge = \"json-grpc\"\n", "", 1);
    assert_eq!(
        config::parse(&unbridged).unwrap().upstreams[1].json_grpc,
        None
    );
    let listed = unbridged.replacen(
        "protocol = \"grpc\"\n",
        "protocol = \"grpc\"\nservices = [\"tracebridge.demo.v1.Greeter\"]\n",
        1,
    );
    let c = config::parse(&listed).unwrap();
    let built = c.upstreams[1].json_grpc.as_ref().unwrap();
    assert_eq!(built.bridge().services(), ["tracebridge.demo.v1.Greeter"]);

    // A descriptor set file is read by load, not by start: start succeeds after it is gone.
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("greeter.binpb");
    std::fs::write(&set, tracebridge::bridge::descriptors::BUILTIN).unwrap();
    let file = dir.path().join("gw.toml");
    let text = STARTABLE.replacen(
        "protocol = \"grpc\"\n",
        "protocol = \"grpc\"\ndescriptor_set = \"greeter.binpb\"\n",
        1,
    );
    std::fs::write(&file, text).unwrap();
    let c = config::load(&file).unwrap();
    assert!(c.upstreams[1].json_grpc.is_some());
    assert_eq!(config::load(&file).unwrap(), c, "same file, same set");
    // The same path with other bytes (still a valid set: an unknown field 2 = 1 appended to
    // the FileDescriptorSet): not the same bridge.
    let mut other = tracebridge::bridge::descriptors::BUILTIN.to_vec();
    other.extend_from_slice(&[0x10, 0x01]);
    std::fs::write(&set, other).unwrap();
    assert_ne!(config::load(&file).unwrap(), c, "the set changed");
    std::fs::remove_file(&set).unwrap();
    assert!(config::load(&file).is_err(), "the set is really gone");
    let gw = app::start(c).await.unwrap();
    gw.shutdown().await;
}
