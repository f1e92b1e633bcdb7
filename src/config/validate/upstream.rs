//! `[[upstreams]]`: protocol, endpoints, Thrift options, and the JSON → gRPC bridge built
//! from a gRPC upstream's descriptor set.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE, Errors, THRIFT_PROTOCOLS, THRIFT_TRANSPORTS,
    UPSTREAM_PROTOCOLS, choice, count, duration, q,
};
use crate::bridge::BuildError;
use crate::config::raw::RawUpstream;
use crate::config::{
    SharedJsonGrpcBridge, ThriftProtocol, ThriftTransport, UpstreamConfig, UpstreamProtocol,
};

/// `bridged`: indices of the upstreams a `bridge` route targets.
pub(super) fn upstreams(
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
    match SharedJsonGrpcBridge::load(options.descriptor_set.as_deref(), &options.services) {
        Ok(bridge) => options.json_grpc = Some(bridge),
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
pub(super) fn is_host_port(text: &str) -> bool {
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
