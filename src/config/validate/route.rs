//! `[[routes]]`: each route's own keys, and the rules that join it to its listener and its
//! upstream — which listener protocol can forward to which upstream protocol, where a
//! `match` condition or a `bridge` can apply.

use std::collections::{BTreeMap, HashMap};

use super::{
    BRIDGES, DEFAULT_ROUTE_TIMEOUT, Errors, LISTENER_PROTOCOLS, ON_MISSING, UPSTREAM_PROTOCOLS,
    choice, duration, q,
};
use crate::config::raw::{RawConfig, RawMatch};
use crate::config::{BridgeKind, ListenerProtocol, RouteConfig, RouteMatch, UpstreamProtocol};

pub(super) fn routes(errs: &mut Errors, raw: &RawConfig) -> Vec<RouteConfig> {
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
        let host_rewrite = host_rewrite(
            errs,
            &at,
            r.host_rewrite.as_deref(),
            listener,
            upstream,
            raw,
        );
        if let (Some(name), Some((listener, _)), Some(upstream)) = (name, listener, upstream) {
            out.push(RouteConfig {
                name,
                listener: listener.to_owned(),
                matcher,
                upstream,
                timeout,
                on_missing,
                bridge,
                host_rewrite,
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

/// `host_rewrite`: a `host[:port]`, on an http listener, towards an http (HTTP/1.1) upstream:
/// an h2c or gRPC upstream's `:authority` is its endpoint.
fn host_rewrite(
    errs: &mut Errors,
    at: &str,
    value: Option<&str>,
    listener: Option<(&str, Option<ListenerProtocol>)>,
    upstream: Option<usize>,
    raw: &RawConfig,
) -> Option<String> {
    let path = format!("{at}.host_rewrite");
    let value = errs.required(&path, Some(value?))?;
    let authority = value.parse::<http::uri::Authority>();
    if authority.is_err() || value.contains('@') {
        errs.push(&path, format!("{} is not a host or host:port", q(value)));
        return None;
    }
    if let Some((name, Some(ListenerProtocol::Thrift))) = listener {
        errs.push(
            &path,
            format!("needs an http listener ({} is thrift)", q(name)),
        );
    }
    if let Some(u) = upstream.and_then(|i| raw.upstreams.get(i))
        && let Some(protocol) = u.protocol.as_deref()
        && protocol != "http"
    {
        errs.push(
            &path,
            format!(
                "needs an http upstream ({} has protocol {}, whose :authority is its endpoint)",
                q(u.name.as_deref().unwrap_or_default()),
                q(protocol)
            ),
        );
    }
    Some(value.to_owned())
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
