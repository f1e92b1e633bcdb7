//! Raw → typed, collecting every error with its key path and the bad value.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Table;

use super::raw::{RawConfig, Reader, join};
use super::*;

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
const DEFAULT_EXTRACT: [Format; 5] = [
    Format::W3c,
    Format::Jaeger,
    Format::B3,
    Format::GrpcTraceBin,
    Format::XTraceRaw,
];

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let doc = raw.0;
    let mut r = Reader::default();
    r.known_keys(
        &doc,
        "",
        &[
            "admin",
            "telemetry",
            "propagation",
            "shutdown",
            "listeners",
            "routes",
            "upstreams",
        ],
    );
    let empty = Table::new();
    let sections: Vec<&Table> = ["admin", "telemetry", "propagation", "shutdown"]
        .iter()
        .map(|key| r.table(&doc, "", key).unwrap_or(&empty))
        .collect();
    let admin = admin(&mut r, sections[0]);
    let telemetry = telemetry(&mut r, sections[1]);
    let propagation = propagation(&mut r, sections[2]);
    let shutdown = shutdown(&mut r, sections[3]);
    let listeners = listeners(&mut r, &doc);
    let upstreams = upstreams(&mut r, &doc);
    let routes = routes(&mut r, &doc, &listeners, &upstreams);
    if r.errors.is_empty() {
        Ok(Config {
            admin,
            telemetry,
            propagation,
            shutdown,
            listeners,
            routes,
            upstreams,
        })
    } else {
        Err(ConfigErrors { errors: r.errors })
    }
}

fn socket_addr(r: &mut Reader, path: String, text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(
                path,
                format!("{text:?} is not a socket address (ip:port, e.g. \"127.0.0.1:8080\")"),
            );
            None
        }
    }
}

fn duration(r: &mut Reader, t: &Table, path: &str, key: &str, default: Duration) -> Duration {
    match r.str(t, path, key) {
        None => default,
        Some(text) => parse_duration(text).unwrap_or_else(|e| {
            r.error(join(path, key), e);
            default
        }),
    }
}

fn positive(r: &mut Reader, t: &Table, path: &str, key: &str, default: usize, min: i64) -> usize {
    match r.int(t, path, key) {
        None => default,
        Some(n) if n >= min && n <= i64::from(u32::MAX) => n as usize,
        Some(n) => {
            r.error(
                join(path, key),
                format!("{n} is outside {min}..={}", u32::MAX),
            );
            default
        }
    }
}

fn one_of<T: Copy>(
    r: &mut Reader,
    t: &Table,
    path: &str,
    key: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let text = r.str(t, path, key)?;
    let found = choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, v)| *v);
    if found.is_none() {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        r.error(
            join(path, key),
            format!("{text:?} is not one of {}", names.join(", ")),
        );
    }
    found
}

fn admin(r: &mut Reader, t: &Table) -> AdminConfig {
    r.known_keys(t, "admin", &["listen"]);
    let listen = match r.str(t, "admin", "listen") {
        Some("") => None,
        Some(text) => socket_addr(r, "admin.listen".into(), text),
        None => DEFAULT_ADMIN.parse().ok(),
    };
    AdminConfig { listen }
}

fn telemetry(r: &mut Reader, t: &Table) -> TelemetryConfig {
    let p = "telemetry";
    r.known_keys(
        t,
        p,
        &[
            "service_name",
            "otlp_endpoint",
            "otlp_protocol",
            "sampler",
            "span_queue",
            "log_spans",
        ],
    );
    let service_name = match r.str(t, p, "service_name") {
        Some("") => {
            r.error("telemetry.service_name", "must not be empty");
            "tracebridge".to_owned()
        }
        Some(s) => s.to_owned(),
        None => "tracebridge".to_owned(),
    };
    let otlp_endpoint = r.str(t, p, "otlp_endpoint").and_then(|e| {
        if e.starts_with("http://") || e.starts_with("https://") {
            Some(e.to_owned())
        } else {
            r.error(
                "telemetry.otlp_endpoint",
                format!("{e:?} must start with http:// or https://"),
            );
            None
        }
    });
    let otlp_protocol = one_of(
        r,
        t,
        p,
        "otlp_protocol",
        &[
            ("grpc", OtlpProtocol::Grpc),
            ("http/protobuf", OtlpProtocol::HttpProtobuf),
        ],
    )
    .unwrap_or(OtlpProtocol::Grpc);
    let mut ratio = 1.0;
    if let Some(s) = r.table(t, p, "sampler") {
        let sp = "telemetry.sampler";
        r.known_keys(s, sp, &["kind", "ratio"]);
        one_of(r, s, sp, "kind", &[("parent_ratio", ())]);
        if let Some(v) = r.float(s, sp, "ratio") {
            if (0.0..=1.0).contains(&v) {
                ratio = v;
            } else {
                r.error(
                    "telemetry.sampler.ratio",
                    format!("{v} is outside 0.0..=1.0"),
                );
            }
        }
    }
    TelemetryConfig {
        service_name,
        otlp_endpoint,
        otlp_protocol,
        sampler: SamplerConfig::ParentRatio { ratio },
        span_queue: positive(r, t, p, "span_queue", 4096, 1),
        log_spans: r.bool(t, p, "log_spans").unwrap_or(false),
    }
}

fn formats(r: &mut Reader, t: &Table, key: &str, default: &[Format]) -> Vec<Format> {
    let Some(items) = r.strings(t, "propagation", key) else {
        return default.to_vec();
    };
    let mut out = Vec::new();
    for (path, name) in items {
        match Format::from_name(name) {
            Some(f) if out.contains(&f) => r.error(path, format!("{name:?} is listed twice")),
            Some(f) => out.push(f),
            None => {
                let known: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
                r.error(
                    path,
                    format!(
                        "{name:?} is not a known format (known: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    out
}

const ON_MISSING: [(&str, OnMissing); 3] = [
    ("start", OnMissing::Start),
    ("reject", OnMissing::Reject),
    ("pass", OnMissing::Pass),
];

fn propagation(r: &mut Reader, t: &Table) -> PropagationConfig {
    r.known_keys(t, "propagation", &["extract", "inject", "on_missing"]);
    PropagationConfig {
        extract: formats(r, t, "extract", &DEFAULT_EXTRACT),
        inject: formats(r, t, "inject", &[Format::W3c]),
        on_missing: one_of(r, t, "propagation", "on_missing", &ON_MISSING)
            .unwrap_or(OnMissing::Start),
    }
}

fn shutdown(r: &mut Reader, t: &Table) -> ShutdownConfig {
    r.known_keys(t, "shutdown", &["drain_timeout"]);
    ShutdownConfig {
        drain_timeout: duration(r, t, "shutdown", "drain_timeout", Duration::from_secs(30)),
    }
}

fn required_name(r: &mut Reader, t: &Table, path: &str, seen: &mut Vec<String>) -> Option<String> {
    match r.str(t, path, "name") {
        None if !t.contains_key("name") => {
            r.error(join(path, "name"), "missing");
            None
        }
        None => None,
        Some("") => {
            r.error(join(path, "name"), "must not be empty");
            None
        }
        Some(n) if seen.iter().any(|s| s == n) => {
            r.error(join(path, "name"), format!("{n:?} is used twice"));
            None
        }
        Some(n) => {
            seen.push(n.to_owned());
            Some(n.to_owned())
        }
    }
}

fn listeners(r: &mut Reader, doc: &Table) -> Vec<ListenerConfig> {
    let items = r.tables(doc, "listeners");
    if items.is_empty() && !r.errors.iter().any(|e| e.path.starts_with("listeners")) {
        r.error("listeners", "at least one [[listeners]] is required");
    }
    let mut names = Vec::new();
    let mut out: Vec<ListenerConfig> = Vec::new();
    for (p, t) in items {
        r.known_keys(
            t,
            &p,
            &[
                "name",
                "protocol",
                "address",
                "max_connections",
                "header_timeout",
            ],
        );
        let name = required_name(r, t, &p, &mut names);
        let protocol = one_of(
            r,
            t,
            &p,
            "protocol",
            &[
                ("http", ListenerProtocol::Http),
                ("thrift", ListenerProtocol::Thrift),
            ],
        );
        if !t.contains_key("protocol") {
            r.error(join(&p, "protocol"), "missing (http or thrift)");
        }
        let address = match r.str(t, &p, "address") {
            Some(a) => socket_addr(r, join(&p, "address"), a),
            None => {
                if !t.contains_key("address") {
                    r.error(join(&p, "address"), "missing");
                }
                None
            }
        };
        if let Some(a) = address.filter(|a| a.port() != 0) {
            if out.iter().any(|l| l.address == a) {
                r.error(
                    join(&p, "address"),
                    format!("\"{a}\" is already used by another listener"),
                );
            }
        }
        let max_connections = positive(r, t, &p, "max_connections", 10_000, 1);
        let header_timeout = duration(r, t, &p, "header_timeout", Duration::from_secs(30));
        if let (Some(name), Some(protocol), Some(address)) = (name, protocol, address) {
            out.push(ListenerConfig {
                name,
                protocol,
                address,
                max_connections,
                header_timeout,
            });
        }
    }
    out
}

fn upstreams(r: &mut Reader, doc: &Table) -> Vec<UpstreamConfig> {
    let mut names = Vec::new();
    let mut out = Vec::new();
    for (p, t) in r.tables(doc, "upstreams") {
        r.known_keys(
            t,
            &p,
            &[
                "name",
                "protocol",
                "transport",
                "thrift_protocol",
                "endpoints",
                "connect_timeout",
                "pool_idle_per_endpoint",
            ],
        );
        let name = required_name(r, t, &p, &mut names);
        let protocol = one_of(
            r,
            t,
            &p,
            "protocol",
            &[
                ("http", UpstreamProtocol::Http),
                ("h2c", UpstreamProtocol::H2c),
                ("grpc", UpstreamProtocol::Grpc),
                ("thrift", UpstreamProtocol::Thrift),
            ],
        );
        if !t.contains_key("protocol") {
            r.error(join(&p, "protocol"), "missing (http, h2c, grpc or thrift)");
        }
        let transport = one_of(
            r,
            t,
            &p,
            "transport",
            &[
                ("header", ThriftTransport::Header),
                ("framed", ThriftTransport::Framed),
                ("unframed", ThriftTransport::Unframed),
            ],
        );
        let thrift_protocol = one_of(
            r,
            t,
            &p,
            "thrift_protocol",
            &[
                ("binary", ThriftProtocol::Binary),
                ("compact", ThriftProtocol::Compact),
            ],
        );
        let is_thrift = protocol == Some(UpstreamProtocol::Thrift);
        for key in ["transport", "thrift_protocol"] {
            if t.contains_key(key) && protocol.is_some() && !is_thrift {
                r.error(join(&p, key), "only applies to thrift upstreams");
            }
        }
        let mut endpoints = Vec::new();
        match r.strings(t, &p, "endpoints") {
            None if !t.contains_key("endpoints") => r.error(join(&p, "endpoints"), "missing"),
            None => {}
            Some(items) if items.is_empty() => {
                r.error(join(&p, "endpoints"), "empty: list at least one host:port")
            }
            Some(items) => {
                for (ep, e) in items {
                    let ok = e.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if ok {
                        endpoints.push(e.to_owned());
                    } else {
                        r.error(ep, format!("{e:?} is not host:port"));
                    }
                }
            }
        }
        let connect_timeout = duration(r, t, &p, "connect_timeout", Duration::from_secs(5));
        let pool_idle_per_endpoint = positive(r, t, &p, "pool_idle_per_endpoint", 64, 0);
        if let (Some(name), Some(protocol)) = (name, protocol) {
            out.push(UpstreamConfig {
                name,
                protocol,
                transport: if is_thrift {
                    Some(transport.unwrap_or(ThriftTransport::Header))
                } else {
                    None
                },
                thrift_protocol: if is_thrift {
                    Some(thrift_protocol.unwrap_or(ThriftProtocol::Binary))
                } else {
                    None
                },
                endpoints,
                connect_timeout,
                pool_idle_per_endpoint,
            });
        }
    }
    out
}

fn routes(
    r: &mut Reader,
    doc: &Table,
    listeners: &[ListenerConfig],
    upstreams: &[UpstreamConfig],
) -> Vec<RouteConfig> {
    let mut names = Vec::new();
    let mut out = Vec::new();
    for (index, (p, t)) in r.tables(doc, "routes").into_iter().enumerate() {
        r.known_keys(
            t,
            &p,
            &[
                "name",
                "listener",
                "match",
                "upstream",
                "timeout",
                "on_missing",
            ],
        );
        let listener = r.str(t, &p, "listener").map(str::to_owned);
        let name = if t.contains_key("name") {
            required_name(r, t, &p, &mut names)
        } else {
            Some(format!(
                "{}#{index}",
                listener.as_deref().unwrap_or("route")
            ))
        };
        let listener_cfg = match &listener {
            None => {
                if !t.contains_key("listener") {
                    r.error(join(&p, "listener"), "missing");
                }
                None
            }
            Some(l) => {
                let found = listeners.iter().find(|x| &x.name == l);
                if found.is_none() {
                    let defined: Vec<String> =
                        listeners.iter().map(|x| format!("{:?}", x.name)).collect();
                    r.error(
                        join(&p, "listener"),
                        format!(
                            "{l:?} is not a defined listener (defined: {})",
                            defined.join(", ")
                        ),
                    );
                }
                found
            }
        };
        let upstream = match r.str(t, &p, "upstream") {
            None => {
                if !t.contains_key("upstream") {
                    r.error(join(&p, "upstream"), "missing");
                }
                None
            }
            Some(u) => {
                let found = upstreams.iter().position(|x| x.name == u);
                if found.is_none() {
                    let defined: Vec<String> =
                        upstreams.iter().map(|x| format!("{:?}", x.name)).collect();
                    r.error(
                        join(&p, "upstream"),
                        format!(
                            "{u:?} is not a defined upstream (defined: {})",
                            defined.join(", ")
                        ),
                    );
                }
                found
            }
        };
        let matcher = route_match(r, t, &p, listener_cfg.map(|l| l.protocol));
        let timeout = duration(r, t, &p, "timeout", Duration::from_secs(30));
        let on_missing = one_of(r, t, &p, "on_missing", &ON_MISSING);
        if let (Some(name), Some(listener), Some(upstream)) = (name, listener, upstream) {
            out.push(RouteConfig {
                name,
                listener,
                matcher,
                upstream,
                timeout,
                on_missing,
            });
        }
    }
    out
}

fn route_match(
    r: &mut Reader,
    t: &Table,
    p: &str,
    protocol: Option<ListenerProtocol>,
) -> RouteMatch {
    let Some(m) = r.table(t, p, "match") else {
        return RouteMatch::default();
    };
    let mp = join(p, "match");
    r.known_keys(
        m,
        &mp,
        &[
            "host",
            "path_prefix",
            "headers",
            "query",
            "grpc_service",
            "thrift_method",
        ],
    );
    let path_prefix = r.str(m, &mp, "path_prefix").and_then(|s| {
        if s.starts_with('/') {
            Some(s.to_owned())
        } else {
            r.error(
                join(&mp, "path_prefix"),
                format!("{s:?} must start with \"/\""),
            );
            None
        }
    });
    let headers = r
        .string_map(m, &mp, "headers")
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let matcher = RouteMatch {
        host: r.str(m, &mp, "host").map(str::to_owned),
        path_prefix,
        headers,
        query: r.string_map(m, &mp, "query"),
        grpc_service: r.str(m, &mp, "grpc_service").map(str::to_owned),
        thrift_method: r.str(m, &mp, "thrift_method").map(str::to_owned),
    };
    match protocol {
        Some(ListenerProtocol::Http) if m.contains_key("thrift_method") => {
            r.error(
                join(&mp, "thrift_method"),
                "only applies to routes of thrift listeners",
            );
        }
        Some(ListenerProtocol::Thrift) => {
            for key in ["host", "path_prefix", "headers", "query", "grpc_service"] {
                if m.contains_key(key) {
                    r.error(join(&mp, key), "only applies to routes of http listeners");
                }
            }
        }
        _ => {}
    }
    matcher
}
