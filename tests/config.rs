//! Config: the example parses to the expected values; every error is reported with its key
//! path and bad value, all of them in one pass.

use std::time::Duration;

use tracebridge::config::*;
use tracebridge::trace::Format;

fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be invalid")
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const MINIMAL: &str = r#"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
"#;

#[test]
fn example_file_parses_to_expected_values() {
    let cfg = load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/gateway.toml"
    )))
    .unwrap();
    assert_eq!(cfg.admin.listen, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(
        cfg.telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert_eq!(
        cfg.telemetry.sampler,
        SamplerConfig::ParentRatio { ratio: 0.25 }
    );
    assert_eq!(cfg.propagation.inject, vec![Format::W3c, Format::Jaeger]);
    assert_eq!(cfg.listeners[0].address, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(cfg.routes.len(), 3);
    assert_eq!(
        cfg.routes[0].matcher.headers,
        vec![("x-colour".to_owned(), "blue".to_owned())]
    );
    assert_eq!(cfg.routes[0].upstream, 1);
    assert_eq!(
        cfg.routes[1].matcher.host.as_deref(),
        Some("api.example.com")
    );
    assert_eq!(
        cfg.routes[1].matcher.query,
        vec![("version".to_owned(), "2".to_owned())]
    );
    assert_eq!(cfg.routes[1].on_missing, Some(OnMissing::Reject));
    assert_eq!(cfg.routes[1].timeout, Duration::from_secs(5));
    assert_eq!(
        cfg.upstreams[0].endpoints,
        vec!["127.0.0.1:9191", "127.0.0.1:9192"]
    );
    assert_eq!(cfg.upstreams[1].protocol, UpstreamProtocol::H2c);
}

#[test]
fn defaults_apply() {
    let cfg = parse(MINIMAL).unwrap();
    assert_eq!(cfg.admin.listen, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(cfg.telemetry.service_name, "tracebridge");
    assert_eq!(cfg.telemetry.otlp_endpoint, None);
    assert_eq!(cfg.telemetry.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(cfg.telemetry.span_queue, 4096);
    assert_eq!(
        cfg.propagation.extract,
        vec![
            Format::W3c,
            Format::Jaeger,
            Format::B3,
            Format::GrpcTraceBin,
            Format::XTraceRaw
        ]
    );
    assert_eq!(cfg.propagation.inject, vec![Format::W3c]);
    assert_eq!(cfg.propagation.on_missing, OnMissing::Start);
    assert_eq!(cfg.shutdown.drain_timeout, Duration::from_secs(30));
    assert_eq!(cfg.listeners[0].max_connections, 10_000);
    let off = parse(&format!("[admin]\nlisten = \"\"\n{MINIMAL}")).unwrap();
    assert_eq!(off.admin.listen, None);
}

#[test]
fn thrift_upstream_defaults() {
    let cfg = parse(&format!(
        "{MINIMAL}\n[[upstreams]]\nname = \"t\"\nprotocol = \"thrift\"\nendpoints = [\"127.0.0.1:9090\"]\n"
    ))
    .unwrap();
    assert_eq!(cfg.upstreams[0].transport, Some(ThriftTransport::Header));
    assert_eq!(
        cfg.upstreams[0].thrift_protocol,
        Some(ThriftProtocol::Binary)
    );
}

#[test]
fn every_error_is_reported_with_its_path() {
    let text = r#"
[admin]
listen = "localhost:99999"
[telemetry]
otlp_endpoint = "127.0.0.1:4317"
sampler = { kind = "always", ratio = 1.5 }
span_queue = 0
colour = "red"
[propagation]
extract = ["w3c", "zipkin", 7]
on_missing = "maybe"
[shutdown]
drain_timeout = "1.5s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:8080"
[[listeners]]
name = "edge"
protocol = "ftp"
address = "127.0.0.1:8080"
[[routes]]
listener = "edgee"
upstream = "userz"
match = { path_prefix = "users", thrift_method = "x" }
[[routes]]
listener = "edge"
upstream = "users"
match = { thrift_method = "getUser" }
[[upstreams]]
name = "users"
protocol = "http"
transport = "framed"
endpoints = []
[[upstreams]]
name = "legacy"
protocol = "thrift"
endpoints = ["127.0.0.1", "host:0"]
connect_timeout = 5
"#;
    let got = errors(text);
    let want = [
        r#"admin.listen: "localhost:99999" is not a socket address (ip:port, e.g. "127.0.0.1:8080")"#,
        "telemetry.colour: unknown key (allowed here: service_name, otlp_endpoint, otlp_protocol, sampler, span_queue, log_spans)",
        r#"telemetry.otlp_endpoint: "127.0.0.1:4317" must start with http:// or https://"#,
        r#"telemetry.sampler.kind: "always" is not one of parent_ratio"#,
        "telemetry.sampler.ratio: 1.5 is outside 0.0..=1.0",
        "telemetry.span_queue: 0 is outside 1..=4294967295",
        r#"propagation.extract[1]: "zipkin" is not a known format (known: w3c, jaeger, b3, b3multi, grpc-trace-bin, x-trace-raw)"#,
        "propagation.extract[2]: expected a string, found an integer (7)",
        r#"propagation.on_missing: "maybe" is not one of start, reject, pass"#,
        r#"shutdown.drain_timeout: "1.5s": fractions are not supported, use a smaller unit (e.g. "1500ms")"#,
        r#"listeners[1].name: "edge" is used twice"#,
        r#"listeners[1].protocol: "ftp" is not one of http, thrift"#,
        r#"listeners[1].address: "127.0.0.1:8080" is already used by another listener"#,
        r#"upstreams[0].transport: only applies to thrift upstreams"#,
        "upstreams[0].endpoints: empty: list at least one host:port",
        r#"upstreams[1].endpoints[0]: "127.0.0.1" is not host:port"#,
        r#"upstreams[1].endpoints[1]: "host:0" is not host:port"#,
        "upstreams[1].connect_timeout: expected a string, found an integer (5)",
        r#"routes[0].listener: "edgee" is not a defined listener (defined: "edge")"#,
        r#"routes[0].upstream: "userz" is not a defined upstream (defined: "users", "legacy")"#,
        r#"routes[0].match.path_prefix: "users" must start with "/""#,
        "routes[1].match.thrift_method: only applies to routes of thrift listeners",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g == w),
            "missing error:\n  {w}\ngot:\n  {}",
            got.join("\n  ")
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "unexpected extra errors:\n  {}",
        got.join("\n  ")
    );
}

#[test]
fn unknown_top_level_key_and_missing_fields() {
    let got = errors(
        "[[listeners]]\nprotocol = \"http\"\n[[routes]]\nlistener = \"x\"\n[nonsense]\na = 1\n",
    );
    assert_eq!(
        got,
        vec![
            "nonsense: unknown key (allowed here: admin, telemetry, propagation, shutdown, listeners, routes, upstreams)",
            "listeners[0].name: missing",
            "listeners[0].address: missing",
            "routes[0].listener: \"x\" is not a defined listener (defined: )",
            "routes[0].upstream: missing",
        ]
    );
}

#[test]
fn no_listener_is_an_error() {
    assert_eq!(
        errors("[admin]\nlisten = \"127.0.0.1:0\"\n"),
        vec!["listeners: at least one [[listeners]] is required"]
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    let got = errors("[admin]\nlisten = \n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("line 2, column 10: TOML syntax:"),
        "{}",
        got[0]
    );
}

#[test]
fn thrift_listener_routes_reject_http_matchers() {
    let got = errors(
        r#"
[[listeners]]
name = "legacy"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
listener = "legacy"
upstream = "t"
match = { path_prefix = "/x", thrift_method = "ping" }
[[upstreams]]
name = "t"
protocol = "thrift"
endpoints = ["127.0.0.1:9090"]
"#,
    );
    assert_eq!(
        got,
        vec!["routes[0].match.path_prefix: only applies to routes of http listeners"]
    );
}
