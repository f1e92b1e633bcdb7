//! Raw → typed, collecting every error with its key path.
//!
//! Second stage of `config`: nothing here stops at the first problem. Each check pushes a
//! [`ConfigError`] (`routes[0].upstream: "userz" is not a defined upstream ...`) and goes on
//! with a stand-in value; the typed [`Config`] is returned only when no check failed.
//! Errors come in section order: admin, telemetry, propagation, shutdown, log, listeners,
//! routes, upstreams.
//!
//! - [`route`]: `[[routes]]`, and the rules joining a route to its listener and upstream.
//! - [`upstream`]: `[[upstreams]]`, and the JSON → gRPC bridge built from a descriptor set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::duration::parse_duration;
use super::raw::{RawAdmin, RawConfig, RawListener, RawPropagation, RawTelemetry};
use super::{
    AccessLogFormat, AdminConfig, BridgeKind, Config, ConfigError, ConfigErrors, ListenerConfig,
    ListenerProtocol, LogConfig, OnMissing, OtlpProtocol, PropagationConfig, SamplerConfig,
    ShutdownConfig, TelemetryConfig, ThriftProtocol, ThriftTransport, UpstreamProtocol,
};
use crate::listener::thrift::{MAX_INFLIGHT_BYTES, MAX_PIPELINE};
use crate::trace::Format;

mod hardening;
mod route;
mod upstream;

use route::routes;
use upstream::upstreams;

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
const DEFAULT_SERVICE_NAME: &str = "tracebridge";
const DEFAULT_SPAN_QUEUE: usize = 4096;
const DEFAULT_RATIO: f64 = 1.0;
const DEFAULT_EXTRACT: [Format; 5] = [
    Format::W3c,
    Format::Jaeger,
    Format::B3,
    Format::GrpcTraceBin,
    Format::XTraceRaw,
];
const DEFAULT_INJECT: [Format; 1] = [Format::W3c];
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_POOL_IDLE: usize = 64;

const OTLP_PROTOCOLS: &[(&str, OtlpProtocol)] = &[
    ("grpc", OtlpProtocol::Grpc),
    ("http/protobuf", OtlpProtocol::HttpProtobuf),
];
const SAMPLER_KINDS: &[(&str, ())] = &[("parent_ratio", ())];
const ON_MISSING: &[(&str, OnMissing)] = &[
    ("start", OnMissing::Start),
    ("reject", OnMissing::Reject),
    ("pass", OnMissing::Pass),
];
const ACCESS_LOGS: &[(&str, AccessLogFormat)] = &[
    ("off", AccessLogFormat::Off),
    ("json", AccessLogFormat::Json),
];
const BRIDGES: &[(&str, BridgeKind)] = &[("json-grpc", BridgeKind::JsonGrpc)];
const LISTENER_PROTOCOLS: &[(&str, ListenerProtocol)] = &[
    ("http", ListenerProtocol::Http),
    ("thrift", ListenerProtocol::Thrift),
];
const UPSTREAM_PROTOCOLS: &[(&str, UpstreamProtocol)] = &[
    ("http", UpstreamProtocol::Http),
    ("h2c", UpstreamProtocol::H2c),
    ("grpc", UpstreamProtocol::Grpc),
    ("thrift", UpstreamProtocol::Thrift),
];
const THRIFT_TRANSPORTS: &[(&str, ThriftTransport)] = &[
    ("header", ThriftTransport::Header),
    ("framed", ThriftTransport::Framed),
    ("unframed", ThriftTransport::Unframed),
];
const THRIFT_PROTOCOLS: &[(&str, ThriftProtocol)] = &[
    ("binary", ThriftProtocol::Binary),
    ("compact", ThriftProtocol::Compact),
];

/// Validates `raw`; relative file paths (`descriptor_set`) are resolved against `base`, the
/// config file's directory (`None`: the working directory).
pub(super) fn validate(raw: RawConfig, base: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();
    let admin = admin(&mut errs, &raw.admin);
    let telemetry = telemetry(&mut errs, &raw.telemetry);
    let propagation = propagation(&mut errs, &raw.propagation);
    let shutdown = ShutdownConfig {
        drain_timeout: duration(
            &mut errs,
            "shutdown.drain_timeout",
            raw.shutdown.drain_timeout.as_deref(),
            DEFAULT_DRAIN,
            false,
        ),
    };
    let log = LogConfig {
        access: raw
            .log
            .access
            .as_deref()
            .and_then(|v| choice(&mut errs, "log.access", v, "access log", ACCESS_LOGS))
            .unwrap_or_default(),
    };
    let listeners = listeners(&mut errs, &raw.listeners, admin.listen);
    let routes = routes(&mut errs, &raw);
    let bridged: Vec<usize> = routes
        .iter()
        .filter(|r| r.bridge.is_some())
        .map(|r| r.upstream)
        .collect();
    let upstreams = upstreams(&mut errs, &raw.upstreams, base, &bridged);
    if !errs.0.is_empty() {
        return Err(ConfigErrors { errors: errs.0 });
    }
    Ok(Config {
        admin,
        telemetry,
        propagation,
        shutdown,
        listeners,
        routes,
        upstreams,
        log,
    })
}

/// The errors found so far.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A required string: reports `missing (required)` or `empty`.
    fn required<'a>(&mut self, path: &str, value: Option<&'a str>) -> Option<&'a str> {
        match value {
            None => self.push(path, "missing (required)"),
            Some("") => self.push(path, "empty"),
            Some(v) => return Some(v),
        }
        None
    }
}

/// A value quoted as in TOML (escapes included).
fn q(value: &str) -> String {
    format!("{value:?}")
}

/// One of a fixed set of names; `None` (after reporting) when unknown.
fn choice<T: Copy>(
    errs: &mut Errors,
    path: &str,
    value: &str,
    what: &str,
    known: &[(&str, T)],
) -> Option<T> {
    let found = known
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v);
    if found.is_none() {
        let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
        errs.push(
            path,
            format!(
                "{} is not a known {what} (known: {})",
                q(value),
                names.join(", ")
            ),
        );
    }
    found
}

fn duration(
    errs: &mut Errors,
    path: &str,
    value: Option<&str>,
    default: Duration,
    non_zero: bool,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match parse_duration(text) {
        Ok(d) if non_zero && d.is_zero() => {
            errs.push(path, format!("{} must be greater than 0", q(text)));
            default
        }
        Ok(d) => d,
        Err(e) => {
            errs.push(path, format!("{} is not a duration: {e}", q(text)));
            default
        }
    }
}

fn count(errs: &mut Errors, path: &str, value: Option<i64>, default: usize, min: usize) -> usize {
    let Some(n) = value else {
        return default;
    };
    match usize::try_from(n) {
        Ok(n) if n >= min => n,
        _ => {
            errs.push(path, format!("{n} must be at least {min}"));
            default
        }
    }
}

fn socket_addr(errs: &mut Errors, path: &str, value: &str) -> Option<SocketAddr> {
    let addr = value.parse().ok();
    if addr.is_none() {
        errs.push(
            path,
            format!("{} is not a socket address (ip:port)", q(value)),
        );
    }
    addr
}

fn admin(errs: &mut Errors, raw: &RawAdmin) -> AdminConfig {
    let listen = match raw.listen.as_deref() {
        Some("") => None,
        Some(text) => socket_addr(errs, "admin.listen", text),
        None => DEFAULT_ADMIN_LISTEN.parse().ok(),
    };
    AdminConfig { listen }
}

fn telemetry(errs: &mut Errors, raw: &RawTelemetry) -> TelemetryConfig {
    let service_name = match raw.service_name.as_deref() {
        None => DEFAULT_SERVICE_NAME,
        Some(name) => errs
            .required("telemetry.service_name", Some(name))
            .unwrap_or(DEFAULT_SERVICE_NAME),
    };
    let otlp_protocol = raw
        .otlp_protocol
        .as_deref()
        .and_then(|p| {
            choice(
                errs,
                "telemetry.otlp_protocol",
                p,
                "otlp_protocol",
                OTLP_PROTOCOLS,
            )
        })
        .unwrap_or(OtlpProtocol::Grpc);
    if let Some(endpoint) = raw.otlp_endpoint.as_deref() {
        otlp_endpoint(errs, endpoint, otlp_protocol);
    }
    let mut ratio = DEFAULT_RATIO;
    if let Some(sampler) = &raw.sampler {
        if let Some(kind) = sampler.kind.as_deref() {
            choice(
                errs,
                "telemetry.sampler.kind",
                kind,
                "sampler kind",
                SAMPLER_KINDS,
            );
        }
        if let Some(r) = sampler.ratio {
            if (0.0..=1.0).contains(&r) {
                ratio = r;
            } else {
                errs.push(
                    "telemetry.sampler.ratio",
                    format!("{r:?} is outside 0.0..=1.0"),
                );
            }
        }
    }
    TelemetryConfig {
        service_name: service_name.to_owned(),
        otlp_endpoint: raw.otlp_endpoint.clone(),
        otlp_protocol,
        sampler: SamplerConfig::ParentRatio { ratio },
        span_queue: count(
            errs,
            "telemetry.span_queue",
            raw.span_queue,
            DEFAULT_SPAN_QUEUE,
            1,
        ),
        log_spans: raw.log_spans.unwrap_or(false),
    }
}

/// `otlp_endpoint`: what the OTLP exporter builder accepts at start-up (a URI; for
/// `http/protobuf` also with `/v1/traces` appended), with plain `http://`: this build has no
/// TLS (gRPC refuses `https://` at start-up, OTLP/HTTP would fail every export).
fn otlp_endpoint(errs: &mut Errors, endpoint: &str, protocol: OtlpProtocol) {
    const PATH: &str = "telemetry.otlp_endpoint";
    if endpoint.starts_with("https://") {
        errs.push(
            PATH,
            format!(
                "{} needs TLS, which is not in this build (use http://)",
                q(endpoint)
            ),
        );
        return;
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        errs.push(PATH, format!("{} does not start with http://", q(endpoint)));
        return;
    };
    if rest.is_empty() {
        errs.push(PATH, format!("{} has no host", q(endpoint)));
        return;
    }
    // The exporter parses exactly these (telemetry::spans::build_exporter).
    let mut uris = vec![endpoint.to_owned()];
    if protocol == OtlpProtocol::HttpProtobuf && !endpoint.ends_with("/v1/traces") {
        uris.push(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    for uri in uris {
        if let Err(e) = uri.parse::<http::Uri>() {
            errs.push(PATH, format!("{} is not a valid URI: {e}", q(&uri)));
            return;
        }
    }
}

fn propagation(errs: &mut Errors, raw: &RawPropagation) -> PropagationConfig {
    let on_missing = raw
        .on_missing
        .as_deref()
        .and_then(|v| choice(errs, "propagation.on_missing", v, "on_missing", ON_MISSING))
        .unwrap_or(OnMissing::Start);
    PropagationConfig {
        extract: formats(
            errs,
            "propagation.extract",
            raw.extract.as_deref(),
            &DEFAULT_EXTRACT,
        ),
        inject: formats(
            errs,
            "propagation.inject",
            raw.inject.as_deref(),
            &DEFAULT_INJECT,
        ),
        on_missing,
    }
}

/// A list of trace formats; an empty list is allowed (nothing extracted / injected).
fn formats(
    errs: &mut Errors,
    path: &str,
    names: Option<&[String]>,
    default: &[Format],
) -> Vec<Format> {
    let Some(names) = names else {
        return default.to_vec();
    };
    let known: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let item = format!("{path}[{i}]");
        match Format::from_name(name) {
            Some(f) if out.contains(&f) => errs.push(item, format!("{} is listed twice", q(name))),
            Some(f) => out.push(f),
            None => errs.push(
                item,
                format!(
                    "{} is not a known format (known: {})",
                    q(name),
                    known.join(", ")
                ),
            ),
        }
    }
    out
}

fn listeners(
    errs: &mut Errors,
    raw: &[RawListener],
    admin: Option<SocketAddr>,
) -> Vec<ListenerConfig> {
    if raw.is_empty() {
        errs.push("listeners", "empty; at least one [[listeners]] is required");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    if let Some(addr) = admin {
        addresses.insert(addr, "admin.listen".to_owned());
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        let at = format!("listeners[{i}]");
        let name = errs.required(&format!("{at}.name"), l.name.as_deref());
        if let Some(name) = name {
            if let Some(first) = names.get(name) {
                errs.push(
                    format!("{at}.name"),
                    format!("{} is already defined (listeners[{first}])", q(name)),
                );
            } else {
                names.insert(name, i);
            }
        }
        let protocol = errs
            .required(&format!("{at}.protocol"), l.protocol.as_deref())
            .and_then(|p| {
                choice(
                    errs,
                    &format!("{at}.protocol"),
                    p,
                    "listener protocol",
                    LISTENER_PROTOCOLS,
                )
            });
        let address = errs
            .required(&format!("{at}.address"), l.address.as_deref())
            .and_then(|a| socket_addr(errs, &format!("{at}.address"), a));
        if let Some(addr) = address.filter(|a| a.port() != 0) {
            if let Some(first) = addresses.get(&addr) {
                errs.push(
                    format!("{at}.address"),
                    format!("{} is already used by {first}", q(&addr.to_string())),
                );
            } else {
                addresses.insert(addr, at.clone());
            }
        }
        let max_connections = count(
            errs,
            &format!("{at}.max_connections"),
            l.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1,
        );
        let header_timeout = duration(
            errs,
            &format!("{at}.header_timeout"),
            l.header_timeout.as_deref(),
            DEFAULT_HEADER_TIMEOUT,
            true,
        );
        let path_normalization =
            hardening::path_normalization(errs, &at, l.path_normalization.as_deref(), protocol);
        let trusted_proxies =
            hardening::trusted_proxies(errs, &at, l.trusted_proxies.as_deref(), protocol);
        let max_inflight_per_connection = count(
            errs,
            &format!("{at}.max_inflight_per_connection"),
            l.max_inflight_per_connection,
            MAX_PIPELINE,
            1,
        );
        let max_inflight_bytes = count(
            errs,
            &format!("{at}.max_inflight_bytes"),
            l.max_inflight_bytes,
            MAX_INFLIGHT_BYTES,
            1,
        );
        if protocol == Some(ListenerProtocol::Http) {
            for (key, set) in [
                ("max_inflight_per_connection", l.max_inflight_per_connection),
                ("max_inflight_bytes", l.max_inflight_bytes),
            ] {
                if let Some(v) = set {
                    errs.push(
                        format!("{at}.{key}"),
                        format!(
                            "{v} is set on an http listener; it applies to thrift listeners only"
                        ),
                    );
                }
            }
        }
        if let (Some(name), Some(protocol), Some(address)) = (name, protocol, address) {
            out.push(ListenerConfig {
                name: name.to_owned(),
                protocol,
                address,
                max_connections,
                header_timeout,
                path_normalization,
                trusted_proxies,
                max_inflight_per_connection,
                max_inflight_bytes,
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::upstream::is_host_port;
    use super::*;
    use crate::config::RouteMatch;
    use crate::config::parse;

    const MINIMAL: &str = r#"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"

[[routes]]
listener = "edge"
upstream = "users"

[[upstreams]]
name = "users"
protocol = "http"
endpoints = ["127.0.0.1:9191"]
"#;

    fn errors_of(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(config) => panic!("expected errors, parsed {config:?}"),
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_fill_a_minimal_config() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.admin.listen, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(c.telemetry.service_name, "tracebridge");
        assert_eq!(c.telemetry.otlp_endpoint, None);
        assert_eq!(c.telemetry.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!(
            c.telemetry.sampler,
            SamplerConfig::ParentRatio { ratio: 1.0 }
        );
        assert_eq!(c.telemetry.span_queue, 4096);
        assert!(!c.telemetry.log_spans);
        assert_eq!(c.propagation.extract, DEFAULT_EXTRACT.to_vec());
        assert_eq!(c.propagation.inject, vec![Format::W3c]);
        assert_eq!(c.propagation.on_missing, OnMissing::Start);
        assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.log.access, AccessLogFormat::Off);
        assert_eq!(c.listeners[0].max_connections, 10_000);
        assert_eq!(c.listeners[0].header_timeout, Duration::from_secs(30));
        assert_eq!(c.listeners[0].max_inflight_per_connection, 64);
        assert_eq!(c.listeners[0].max_inflight_bytes, 64 << 20);
        let route = &c.routes[0];
        assert_eq!(route.name, "edge#0");
        assert_eq!(route.matcher, RouteMatch::default());
        assert_eq!(route.upstream, 0);
        assert_eq!(route.timeout, Duration::from_secs(30));
        assert_eq!(route.on_missing, None);
        let u = &c.upstreams[0];
        assert_eq!((u.transport, u.thrift_protocol), (None, None));
        assert_eq!(u.connect_timeout, Duration::from_secs(5));
        assert_eq!(u.pool_idle_per_endpoint, 64);
    }

    #[test]
    fn thrift_upstream_defaults_to_header_binary() {
        // Both sides thrift: an http listener cannot forward to a thrift upstream.
        let text = MINIMAL.replace("protocol = \"http\"", "protocol = \"thrift\"");
        let c = parse(&text).unwrap();
        assert_eq!(c.upstreams[0].protocol, UpstreamProtocol::Thrift);
        assert_eq!(c.upstreams[0].transport, Some(ThriftTransport::Header));
        assert_eq!(c.upstreams[0].thrift_protocol, Some(ThriftProtocol::Binary));
    }

    #[test]
    fn empty_admin_listen_disables_and_empty_lists_are_allowed() {
        let text =
            format!("[admin]\nlisten = \"\"\n[propagation]\nextract = []\ninject = []\n{MINIMAL}");
        let c = parse(&text).unwrap();
        assert_eq!(c.admin.listen, None);
        assert!(c.propagation.extract.is_empty());
        assert!(c.propagation.inject.is_empty());
    }

    #[test]
    fn headers_are_lower_cased() {
        let text = MINIMAL.replace(
            "upstream = \"users\"\n\n",
            "upstream = \"users\"\nmatch = { headers = { \"X-B\" = \"1\", \"x-a\" = \"2\" } }\n\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.routes[0].matcher.headers,
            vec![
                ("x-a".to_owned(), "2".to_owned()),
                ("x-b".to_owned(), "1".to_owned())
            ]
        );
    }

    #[test]
    fn header_checks() {
        let text = MINIMAL.replace(
            "upstream = \"users\"\n\n",
            "upstream = \"users\"\nmatch = { headers = { \"X-A\" = \"1\", \"x-a\" = \"2\", \"bad name\" = \"v\", \"x-v\" = \"a\\nb\" } }\n\n",
        );
        assert_eq!(
            errors_of(&text),
            vec![
                r#"routes[0].match.headers: "bad name" is not a valid header name"#,
                r#"routes[0].match.headers.x-a: "x-a" is given twice (header names are case-insensitive)"#,
                r#"routes[0].match.headers.x-v: "a\nb" is not a valid header value"#,
            ]
        );
    }

    #[test]
    fn inflight_bounds_are_thrift_only_and_positive() {
        let text = "[[listeners]]\nname = \"rpc\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
                    max_inflight_per_connection = 0\nmax_inflight_bytes = -1\n\
                    [[listeners]]\nname = \"edge\"\nprotocol = \"http\"\naddress = \"127.0.0.1:0\"\n\
                    max_inflight_per_connection = 8\n";
        assert_eq!(
            errors_of(text),
            vec![
                "listeners[0].max_inflight_per_connection: 0 must be at least 1",
                "listeners[0].max_inflight_bytes: -1 must be at least 1",
                "listeners[1].max_inflight_per_connection: 8 is set on an http listener; it applies to thrift listeners only",
            ]
        );
        let text = "[[listeners]]\nname = \"rpc\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
                    max_inflight_per_connection = 4\nmax_inflight_bytes = 1048576\n";
        let c = parse(text).unwrap();
        assert_eq!(c.listeners[0].max_inflight_per_connection, 4);
        assert_eq!(c.listeners[0].max_inflight_bytes, 1 << 20);
    }

    #[test]
    fn missing_required_keys_are_all_reported() {
        let text = "[[listeners]]\n[[routes]]\n[[upstreams]]\n";
        assert_eq!(
            errors_of(text),
            vec![
                "listeners[0].name: missing (required)",
                "listeners[0].protocol: missing (required)",
                "listeners[0].address: missing (required)",
                "routes[0].listener: missing (required)",
                "routes[0].upstream: missing (required)",
                "upstreams[0].name: missing (required)",
                "upstreams[0].protocol: missing (required)",
                "upstreams[0].endpoints: missing (required)",
            ]
        );
    }

    #[test]
    fn host_port_forms() {
        for ok in [
            "a:1",
            "users.svc.cluster.local:8080",
            "10.0.0.1:65535",
            "[::1]:80",
            "my_host:9",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            ":80",
            "a:",
            "a:0",
            "a:65536",
            "a:+80",
            "http://a:80",
            "a b:1",
            "[::1]80",
            "[zz]:80",
            "::1:80",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
