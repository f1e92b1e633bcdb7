//! Raw → typed, collecting every error with its key path.
//!
//! Second stage of `config`: nothing here stops at the first problem. Each check pushes a
//! [`ConfigError`] (`routes[0].upstream: "userz" is not a defined upstream ...`) and goes on
//! with a stand-in value; the typed [`Config`] is returned only when no check failed.
//! Errors come in section order: admin, telemetry, propagation, shutdown, log, listeners,
//! routes, upstreams.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::parse_duration;
use super::raw::{
    RawAdmin, RawConfig, RawListener, RawMatch, RawPropagation, RawTelemetry, RawUpstream,
};
use super::{
    AccessLog, AdminConfig, BridgeKind, Config, ConfigError, ConfigErrors, ListenerConfig,
    ListenerProtocol, LogConfig, OnMissing, OtlpProtocol, PropagationConfig, RouteConfig,
    RouteMatch, SamplerConfig, SharedJsonGrpcBridge, ShutdownConfig, TelemetryConfig,
    ThriftProtocol, ThriftTransport, UpstreamConfig, UpstreamProtocol,
};
use crate::bridge::{BuildError, JsonGrpcBridge};
use crate::trace::Format;

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
const ACCESS_LOGS: &[(&str, AccessLog)] = &[("off", AccessLog::Off), ("json", AccessLog::Json)];
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
        log,
        listeners,
        routes,
        upstreams,
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
        if let (Some(name), Some(protocol), Some(address)) = (name, protocol, address) {
            out.push(ListenerConfig {
                name: name.to_owned(),
                protocol,
                address,
                max_connections,
                header_timeout,
            });
        }
    }
    out
}

fn routes(errs: &mut Errors, raw: &RawConfig) -> Vec<RouteConfig> {
    // Listener name → protocol (`None` when its protocol is itself invalid); the first
    // definition wins, duplicates are reported with the listeners.
    let mut listeners: Vec<(&str, Option<ListenerProtocol>)> = Vec::new();
    for l in &raw.listeners {
        if let Some(name) = l.name.as_deref() {
            let protocol = l.protocol.as_deref().and_then(|p| {
                LISTENER_PROTOCOLS
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, v)| *v)
            });
            if !listeners.iter().any(|(n, _)| *n == name) {
                listeners.push((name, protocol));
            }
        }
    }
    let upstreams: Vec<Option<&str>> = raw.upstreams.iter().map(|u| u.name.as_deref()).collect();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        let listener = errs
            .required(&format!("{at}.listener"), r.listener.as_deref())
            .and_then(|name| {
                let found = listeners.iter().find(|(n, _)| *n == name);
                if found.is_none() {
                    errs.push(
                        format!("{at}.listener"),
                        format!("{} is not a defined listener", q(name)),
                    );
                }
                found.map(|(n, p)| (*n, *p))
            });
        let name = match r.name.as_deref() {
            Some(name) => errs
                .required(&format!("{at}.name"), Some(name))
                .map(str::to_owned),
            None => r.listener.as_deref().map(|l| format!("{l}#{i}")),
        };
        if let Some(name) = &name {
            if let Some(first) = names.get(name) {
                errs.push(
                    format!("{at}.name"),
                    format!("{} is already defined (routes[{first}])", q(name)),
                );
            } else {
                names.insert(name.clone(), i);
            }
        }
        let matcher = route_match(errs, &at, &r.matcher, listener);
        let upstream = errs
            .required(&format!("{at}.upstream"), r.upstream.as_deref())
            .and_then(|name| upstream_index(errs, &at, name, &upstreams));
        let timeout = duration(
            errs,
            &format!("{at}.timeout"),
            r.timeout.as_deref(),
            DEFAULT_ROUTE_TIMEOUT,
            true,
        );
        let on_missing = r.on_missing.as_deref().and_then(|v| {
            choice(
                errs,
                &format!("{at}.on_missing"),
                v,
                "on_missing",
                ON_MISSING,
            )
        });
        route_target(errs, &at, listener, upstream, raw);
        let bridge = route_bridge(errs, &at, r.bridge.as_deref(), listener, upstream, raw);
        if let (Some(name), Some((listener, _)), Some(upstream)) = (name, listener, upstream) {
            out.push(RouteConfig {
                name,
                listener: listener.to_owned(),
                matcher,
                upstream,
                timeout,
                on_missing,
                bridge,
            });
        }
    }
    out
}

/// `upstream`: a protocol the route's listener can forward to without a bridge this build
/// lacks: http listeners reach http, h2c and grpc upstreams; thrift listeners thrift ones.
fn route_target(
    errs: &mut Errors,
    at: &str,
    listener: Option<(&str, Option<ListenerProtocol>)>,
    upstream: Option<usize>,
    raw: &RawConfig,
) {
    let Some((listener, Some(from))) = listener else {
        return;
    };
    let Some(u) = upstream.and_then(|i| raw.upstreams.get(i)) else {
        return;
    };
    // An unknown protocol is reported with the upstream.
    let Some((given, to)) = u.protocol.as_deref().and_then(|p| {
        UPSTREAM_PROTOCOLS
            .iter()
            .find(|(n, _)| *n == p)
            .map(|(n, v)| (*n, *v))
    }) else {
        return;
    };
    let name = q(u.name.as_deref().unwrap_or_default());
    let why = match (from, to) {
        (ListenerProtocol::Http, UpstreamProtocol::Thrift) => format!(
            "HTTP listener {} cannot forward to thrift upstream {name} (HTTP → Thrift bridging is not in this build)",
            q(listener)
        ),
        (
            ListenerProtocol::Thrift,
            UpstreamProtocol::Http | UpstreamProtocol::H2c | UpstreamProtocol::Grpc,
        ) => format!(
            "Thrift listener {} cannot forward to {given} upstream {name} (Thrift → HTTP/gRPC bridging is not in this build)",
            q(listener)
        ),
        _ => return,
    };
    errs.push(format!("{at}.upstream"), why);
}

/// `bridge`: a known kind, on an http listener, towards a grpc upstream.
fn route_bridge(
    errs: &mut Errors,
    at: &str,
    value: Option<&str>,
    listener: Option<(&str, Option<ListenerProtocol>)>,
    upstream: Option<usize>,
    raw: &RawConfig,
) -> Option<BridgeKind> {
    let path = format!("{at}.bridge");
    let kind = choice(errs, &path, value?, "bridge", BRIDGES)?;
    if let Some((name, Some(ListenerProtocol::Thrift))) = listener {
        errs.push(
            &path,
            format!(
                "{} needs an http listener ({} is thrift)",
                q(value?),
                q(name)
            ),
        );
    }
    let target = upstream.and_then(|i| raw.upstreams.get(i));
    if let Some(u) = target
        && let Some(protocol) = u.protocol.as_deref()
        && protocol != "grpc"
    {
        errs.push(
            &path,
            format!(
                "{} needs a grpc upstream ({} has protocol {})",
                q(value?),
                q(u.name.as_deref().unwrap_or_default()),
                q(protocol)
            ),
        );
    }
    Some(kind)
}

fn upstream_index(
    errs: &mut Errors,
    at: &str,
    name: &str,
    upstreams: &[Option<&str>],
) -> Option<usize> {
    let found = upstreams.iter().position(|u| *u == Some(name));
    if found.is_none() {
        let mut defined: Vec<String> = Vec::new();
        for name in upstreams.iter().flatten().map(|u| q(u)) {
            if !defined.contains(&name) {
                defined.push(name);
            }
        }
        let defined = if defined.is_empty() {
            "none".to_owned()
        } else {
            defined.join(", ")
        };
        errs.push(
            format!("{at}.upstream"),
            format!("{} is not a defined upstream (defined: {defined})", q(name)),
        );
    }
    found
}

/// Checks a route's `match`; conditions that the route's listener protocol cannot see are
/// errors (a `thrift_method` on an http listener would never match).
fn route_match(
    errs: &mut Errors,
    at: &str,
    raw: &RawMatch,
    listener: Option<(&str, Option<ListenerProtocol>)>,
) -> RouteMatch {
    let at = format!("{at}.match");
    let protocol = listener.and_then(|(name, p)| p.map(|p| (name, p)));
    let http_only = [
        ("host", raw.host.as_deref()),
        ("path_prefix", raw.path_prefix.as_deref()),
        ("grpc_service", raw.grpc_service.as_deref()),
        ("query", raw.query.keys().next().map(String::as_str)),
    ];
    if let Some((name, ListenerProtocol::Thrift)) = protocol {
        for (key, value) in http_only {
            if let Some(value) = value {
                errs.push(
                    format!("{at}.{key}"),
                    format!(
                        "{} needs an http listener ({} is thrift)",
                        q(value),
                        q(name)
                    ),
                );
            }
        }
    }
    if let (Some((name, ListenerProtocol::Http)), Some(method)) = (protocol, &raw.thrift_method) {
        errs.push(
            format!("{at}.thrift_method"),
            format!(
                "{} needs a thrift listener ({} is http)",
                q(method),
                q(name)
            ),
        );
    }
    for (key, value) in [
        ("host", &raw.host),
        ("grpc_service", &raw.grpc_service),
        ("thrift_method", &raw.thrift_method),
    ] {
        if value.as_deref() == Some("") {
            errs.push(format!("{at}.{key}"), "empty");
        }
    }
    if let Some(prefix) = raw.path_prefix.as_deref()
        && !prefix.starts_with('/')
    {
        errs.push(
            format!("{at}.path_prefix"),
            format!("{} does not start with \"/\"", q(prefix)),
        );
    }
    RouteMatch {
        host: raw.host.clone(),
        path_prefix: raw.path_prefix.clone(),
        headers: headers(errs, &at, &raw.headers),
        query: raw.query.clone().into_iter().collect(),
        grpc_service: raw.grpc_service.clone(),
        thrift_method: raw.thrift_method.clone(),
    }
}

/// Header conditions with names lower-cased; names and values must be valid HTTP.
fn headers(errs: &mut Errors, at: &str, raw: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            errs.push(
                format!("{at}.headers"),
                format!("{} is not a valid header name", q(name)),
            );
            continue;
        }
        let path = format!("{at}.headers.{lower}");
        if http::HeaderValue::from_str(value).is_err() {
            errs.push(path, format!("{} is not a valid header value", q(value)));
        } else if out.iter().any(|(n, _)| *n == lower) {
            errs.push(
                path,
                format!(
                    "{} is given twice (header names are case-insensitive)",
                    q(name)
                ),
            );
        } else {
            out.push((lower, value.clone()));
        }
    }
    out.sort();
    out
}

/// `bridged`: indices of the upstreams a `bridge` route targets.
fn upstreams(
    errs: &mut Errors,
    raw: &[RawUpstream],
    base: Option<&Path>,
    bridged: &[usize],
) -> Vec<UpstreamConfig> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let at = format!("upstreams[{i}]");
        let name = errs.required(&format!("{at}.name"), u.name.as_deref());
        if let Some(name) = name {
            if let Some(first) = names.get(name) {
                errs.push(
                    format!("{at}.name"),
                    format!("{} is already defined (upstreams[{first}])", q(name)),
                );
            } else {
                names.insert(name, i);
            }
        }
        let protocol = errs
            .required(&format!("{at}.protocol"), u.protocol.as_deref())
            .and_then(|p| {
                choice(
                    errs,
                    &format!("{at}.protocol"),
                    p,
                    "upstream protocol",
                    UPSTREAM_PROTOCOLS,
                )
            });
        let (transport, thrift_protocol) = thrift_options(errs, &at, u, protocol);
        let bridge = bridge_options(errs, &at, u, protocol, base, bridged.contains(&i));
        let endpoints = endpoints(errs, &at, u.endpoints.as_deref());
        let connect_timeout = duration(
            errs,
            &format!("{at}.connect_timeout"),
            u.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            true,
        );
        let pool_idle_per_endpoint = count(
            errs,
            &format!("{at}.pool_idle_per_endpoint"),
            u.pool_idle_per_endpoint,
            DEFAULT_POOL_IDLE,
            0,
        );
        if let (Some(name), Some(protocol)) = (name, protocol) {
            out.push(UpstreamConfig {
                name: name.to_owned(),
                protocol,
                transport,
                thrift_protocol,
                endpoints,
                connect_timeout,
                pool_idle_per_endpoint,
                descriptor_set: bridge.descriptor_set,
                services: bridge.services,
                json_grpc: bridge.json_grpc,
            });
        }
    }
    out
}

/// `transport` and `thrift_protocol`: defaulted on thrift upstreams, errors elsewhere.
fn thrift_options(
    errs: &mut Errors,
    at: &str,
    u: &RawUpstream,
    protocol: Option<UpstreamProtocol>,
) -> (Option<ThriftTransport>, Option<ThriftProtocol>) {
    let transport_path = format!("{at}.transport");
    let protocol_path = format!("{at}.thrift_protocol");
    match protocol {
        Some(UpstreamProtocol::Thrift) => {
            let transport = match u.transport.as_deref() {
                Some(t) => choice(
                    errs,
                    &transport_path,
                    t,
                    "thrift transport",
                    THRIFT_TRANSPORTS,
                ),
                None => Some(ThriftTransport::Header),
            };
            let thrift_protocol = match u.thrift_protocol.as_deref() {
                Some(p) => choice(errs, &protocol_path, p, "thrift protocol", THRIFT_PROTOCOLS),
                None => Some(ThriftProtocol::Binary),
            };
            (transport, thrift_protocol)
        }
        Some(_) => {
            let given = u.protocol.as_deref().unwrap_or_default();
            for (path, value) in [
                (transport_path, &u.transport),
                (protocol_path, &u.thrift_protocol),
            ] {
                if let Some(value) = value {
                    errs.push(
                        path,
                        format!(
                            "{} is only for thrift upstreams (protocol is {})",
                            q(value),
                            q(given)
                        ),
                    );
                }
            }
            (None, None)
        }
        // The protocol is already reported; checking these against it would only add noise.
        None => (None, None),
    }
}

/// An upstream's bridge keys, and the bridge built from them.
#[derive(Default)]
struct BridgeOptions {
    descriptor_set: Option<PathBuf>,
    services: Vec<String>,
    json_grpc: Option<SharedJsonGrpcBridge>,
}

/// `descriptor_set` and `services`: gRPC upstreams only. When either is given, or a bridged
/// route targets the upstream (`bridged`), the bridge is built here — the set must load,
/// name the services and carry valid `google.api.http` rules — and kept for start-up, so
/// `tracebridge check` finds what start-up would and the set is loaded once.
fn bridge_options(
    errs: &mut Errors,
    at: &str,
    u: &RawUpstream,
    protocol: Option<UpstreamProtocol>,
    base: Option<&Path>,
    bridged: bool,
) -> BridgeOptions {
    let set_path = format!("{at}.descriptor_set");
    let services_path = format!("{at}.services");
    let services = u.services.clone().unwrap_or_default();
    match protocol {
        Some(UpstreamProtocol::Grpc) => {}
        Some(_) => {
            let given = q(u.protocol.as_deref().unwrap_or_default());
            if let Some(set) = &u.descriptor_set {
                errs.push(
                    set_path,
                    format!(
                        "{} is only for grpc upstreams (protocol is {given})",
                        q(set)
                    ),
                );
            }
            if u.services.is_some() {
                errs.push(
                    services_path,
                    format!("only for grpc upstreams (protocol is {given})"),
                );
            }
            return BridgeOptions::default();
        }
        None => return BridgeOptions::default(),
    }
    let descriptor_set = match u.descriptor_set.as_deref() {
        Some("") => {
            errs.push(&set_path, "empty");
            return BridgeOptions {
                services,
                ..BridgeOptions::default()
            };
        }
        Some(p) => Some(match base {
            Some(dir) if Path::new(p).is_relative() => dir.join(p),
            _ => PathBuf::from(p),
        }),
        None => None,
    };
    let mut options = BridgeOptions {
        descriptor_set,
        services,
        json_grpc: None,
    };
    if !bridged && options.descriptor_set.is_none() && u.services.is_none() {
        return options;
    }
    if let Some(i) = options.services.iter().position(String::is_empty) {
        errs.push(format!("{services_path}[{i}]"), "empty");
        return options;
    }
    match JsonGrpcBridge::load(options.descriptor_set.as_deref(), &options.services) {
        Ok(bridge) => options.json_grpc = Some(SharedJsonGrpcBridge::new(bridge)),
        Err(BuildError::DescriptorSet(e)) | Err(BuildError::Rule(e)) => errs.push(set_path, e),
        Err(BuildError::Service { index, message }) => {
            errs.push(format!("{services_path}[{index}]"), message)
        }
    }
    options
}

fn endpoints(errs: &mut Errors, at: &str, raw: Option<&[String]>) -> Vec<String> {
    let path = format!("{at}.endpoints");
    match raw {
        None => errs.push(path, "missing (required)"),
        Some([]) => errs.push(path, "empty"),
        Some(list) => {
            for (i, endpoint) in list.iter().enumerate() {
                if !is_host_port(endpoint) {
                    errs.push(
                        format!("{path}[{i}]"),
                        format!("{} is not host:port", q(endpoint)),
                    );
                }
            }
            return list.to_vec();
        }
    }
    Vec::new()
}

/// `host:port` with a DNS name or IPv4 host, or `[ipv6]:port`; port 1..=65535. Also what the
/// HTTP upstream pool parses an endpoint as (`http::uri::Authority`), so start-up cannot
/// refuse an endpoint that passed here.
fn is_host_port(text: &str) -> bool {
    is_plain_host_port(text) && text.parse::<http::uri::Authority>().is_ok()
}

fn is_plain_host_port(text: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((host, port)) => (host.parse::<Ipv6Addr>().is_ok(), port),
            None => return false,
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')),
                port,
            ),
            None => return false,
        }
    };
    host_ok
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
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
        assert_eq!(c.log.access, AccessLog::Off);
        assert_eq!(c.listeners[0].max_connections, 10_000);
        assert_eq!(c.listeners[0].header_timeout, Duration::from_secs(30));
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
