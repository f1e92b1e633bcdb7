//! `record`: the one place a call's metrics, spans and access-log line are written, from its
//! [`Call`] and [`Outcome`]. A [`Recorded`] call records itself when dropped: at the end of a
//! streamed response body, when the downstream goes away mid-call, or right after an answer
//! that has no body to wait for.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry_semantic_conventions::attribute as semconv;

use crate::call::{Call, Code, Extraction, Outcome, Protocol, Request};
use crate::codec::grpc;
use crate::error::ErrorKind;
use crate::telemetry::access::{AccessLine, AccessLog};
use crate::telemetry::metrics::{ListenerMetrics, RouteMetrics};
use crate::telemetry::{AttrValue, Metrics, SpanKind, SpanRecord, SpanSink, SpanStatus};

// The RPC attributes most trace back ends still key on (the 0.33 conventions deprecate them
// in favour of `rpc.system.name` and `rpc.response.status_code`, which few UIs read yet).
const RPC_SYSTEM: &str = "rpc.system";
const RPC_SERVICE: &str = "rpc.service";
const RPC_METHOD: &str = "rpc.method";
const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";

/// Where a listener's calls are recorded: its metric handles, the span sink and the access
/// log. Made once per listener.
#[derive(Debug)]
pub struct Recorder {
    /// The listener's metric handles.
    pub listener: ListenerMetrics,
    /// Handles for calls that matched no route (`route="-"`).
    pub no_route: RouteMetrics,
    /// The whole registry (for rare, label-building counters such as decode errors).
    pub metrics: Arc<Metrics>,
    /// Where finished spans go.
    pub spans: SpanSink,
    /// The access log, when `[log] access = "json"`.
    pub access: Option<AccessLog>,
}

impl Recorder {
    /// A recorder for listener `name`.
    pub fn new(
        name: &str,
        metrics: &Arc<Metrics>,
        spans: SpanSink,
        access: Option<AccessLog>,
    ) -> Self {
        Recorder {
            listener: metrics.listener(name),
            no_route: metrics.route(name, "-"),
            metrics: metrics.clone(),
            spans,
            access,
        }
    }

    /// Writes everything about one finished call.
    pub fn record(&self, call: &Call) {
        let duration = call.timings.started.elapsed();
        let outcome = call.outcome.label();
        let route_metrics = call.route.as_ref().map_or(&self.no_route, |r| &r.metrics);
        route_metrics.request(call.protocol, call.outcome.code(), outcome, duration);
        if call.extraction != Extraction::NotRun {
            self.listener.extract(call.extraction);
        }
        if call.tracestate.trimmed() {
            self.listener.tracestate(call.tracestate);
        }
        if let Outcome::Failed { kind, side, .. } = &call.outcome {
            self.listener.error(*kind, *side);
            if *kind == ErrorKind::MissingTraceContext {
                self.listener.rejected();
            }
        }
        if let (Some(route), Some(dispatched)) = (&call.route, call.timings.dispatched) {
            route
                .upstream_metrics
                .request(outcome, dispatched.elapsed());
        }
        if call.trace.as_ref().is_some_and(|t| t.sampled) {
            self.record_spans(call);
        }
        if let Some(access) = &self.access {
            access.log(&AccessLine::of(call, duration));
        }
    }

    fn record_spans(&self, call: &Call) {
        let Some(trace) = &call.trace else { return };
        let end = SystemTime::now();
        let status = match call.outcome.error_message() {
            Some(m) => SpanStatus::Error(m),
            None => SpanStatus::Unset,
        };
        let facts = SpanFacts::of(call);
        let ctx = &trace.upstream;
        self.spans.record(SpanRecord {
            trace_id: ctx.trace_id,
            span_id: trace.server_span,
            parent_span_id: trace.parent_span,
            flags: ctx.flags,
            name: facts.name.clone(),
            kind: SpanKind::Server,
            start: call.timings.started_wall,
            end,
            status: status.clone(),
            attributes: facts.server,
        });
        if let Some(start) = call.timings.dispatched_wall {
            self.spans.record(SpanRecord {
                trace_id: ctx.trace_id,
                span_id: ctx.span_id,
                parent_span_id: Some(trace.server_span),
                flags: ctx.flags,
                name: facts.name,
                kind: SpanKind::Client,
                start,
                end,
                status,
                attributes: facts.client,
            });
        }
    }
}

type Attrs = Vec<(&'static str, AttrValue)>;

/// A span's name and the attributes of the server and client spans, per protocol.
struct SpanFacts {
    name: Cow<'static, str>,
    server: Attrs,
    client: Attrs,
}

impl SpanFacts {
    fn of(call: &Call) -> Self {
        let mut facts = match &call.request {
            Request::Thrift { name, dialect } => thrift_facts(call, name, dialect),
            Request::Http {
                method,
                target,
                version,
            } => http_facts(call, method, target.as_ref(), *version),
        };
        let route = call.route.as_ref();
        facts.server.extend([
            (
                semconv::CLIENT_ADDRESS,
                str_attr(call.client.ip().to_string()),
            ),
            ("tracebridge.listener", str_attr(call.listener.to_string())),
            (
                "tracebridge.protocol",
                AttrValue::Str(call.protocol.as_str().into()),
            ),
        ]);
        if let Some(r) = route {
            facts
                .server
                .push(("tracebridge.route", str_attr(r.name.to_string())));
            facts
                .client
                .push(("tracebridge.upstream", str_attr(r.upstream.to_string())));
        }
        if let Some(endpoint) = &call.endpoint {
            facts
                .client
                .push((semconv::SERVER_ADDRESS, str_attr(endpoint.to_string())));
        }
        facts
    }
}

fn str_attr(s: String) -> AttrValue {
    AttrValue::Str(s.into())
}

/// A method as an attribute: the standard ones without a copy.
fn method_attr(method: &http::Method) -> AttrValue {
    let known = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::HEAD,
        http::Method::OPTIONS,
        http::Method::PATCH,
        http::Method::CONNECT,
        http::Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match known.iter().position(|m| m == method) {
        Some(i) => AttrValue::Str(Cow::Borrowed(NAMES[i])),
        None => str_attr(method.to_string()),
    }
}

/// HTTP, gRPC, gRPC-Web and bridged JSON calls: HTTP conventions, plus the RPC conventions
/// once the call is gRPC on the upstream side.
fn http_facts(
    call: &Call,
    method: &http::Method,
    target: Option<&http::uri::PathAndQuery>,
    version: http::Version,
) -> SpanFacts {
    let path = target.map_or("/", |t| t.path());
    let upstream_path = call.upstream_target.as_deref().unwrap_or(path);
    let prefix = call.route.as_ref().and_then(|r| r.path_prefix.clone());
    let mut name: Cow<'static, str> = match &prefix {
        Some(p) => format!("{method} {p}").into(),
        None => method.to_string().into(),
    };
    let mut server = vec![
        (semconv::HTTP_REQUEST_METHOD, method_attr(method)),
        (semconv::URL_PATH, str_attr(path.to_owned())),
        (semconv::URL_SCHEME, AttrValue::Str("http".into())),
        (
            semconv::NETWORK_PROTOCOL_VERSION,
            AttrValue::Str(version_str(version).into()),
        ),
    ];
    if let Some(p) = prefix {
        server.push((semconv::HTTP_ROUTE, str_attr(p.to_string())));
    }
    let upstream_method = if call.upstream_target.is_some() {
        AttrValue::Str("POST".into())
    } else {
        method_attr(method)
    };
    let mut client = vec![
        (semconv::HTTP_REQUEST_METHOD, upstream_method),
        (semconv::URL_PATH, str_attr(upstream_path.to_owned())),
    ];
    let caller_status = match call.outcome.code() {
        Code::Http(s) => Some(s),
        Code::Grpc(_) => Some(200),
        _ => None,
    };
    if let Some(s) = caller_status {
        server.push((semconv::HTTP_RESPONSE_STATUS_CODE, AttrValue::Int(s.into())));
    }
    // What the upstream answered: the caller's status, except behind a bridge (gRPC on h2).
    if let (Outcome::Answered { .. }, Some(s)) = (&call.outcome, caller_status) {
        let upstream = if call.upstream_target.is_some() {
            200
        } else {
            s
        };
        client.push((
            semconv::HTTP_RESPONSE_STATUS_CODE,
            AttrValue::Int(upstream.into()),
        ));
    }
    if let Some((rpc_name, rpc)) = grpc_facts(call, upstream_path) {
        name = rpc_name;
        server.extend(rpc.iter().cloned());
        client.extend(rpc);
    }
    SpanFacts {
        name,
        server,
        client,
    }
}

/// gRPC, gRPC-Web and bridged calls: the span name `package.Service/Method` and the RPC
/// attributes, with the gRPC status the upstream answered.
fn grpc_facts(call: &Call, upstream_path: &str) -> Option<(Cow<'static, str>, Attrs)> {
    let grpc_family = matches!(
        call.protocol,
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::JsonGrpc
    );
    let (service, method) = grpc_family
        .then(|| grpc::service_and_method(upstream_path))
        .flatten()?;
    let mut rpc = vec![
        (RPC_SYSTEM, AttrValue::Str("grpc".into())),
        (RPC_SERVICE, str_attr(service.to_owned())),
        (RPC_METHOD, str_attr(method.to_owned())),
    ];
    let status = match (call.upstream_code, call.outcome.code()) {
        (Some(Code::Grpc(c)), _) | (_, Code::Grpc(c)) => Some(c),
        _ => None,
    };
    if let Some(c) = status {
        rpc.push((RPC_GRPC_STATUS_CODE, AttrValue::Int(c.into())));
    }
    Some((format!("{service}/{method}").into(), rpc))
}

/// Thrift calls: the RPC conventions with `rpc.system = apache_thrift`; `rpc.service` is the
/// `Service:` prefix of a multiplexed name, else the upstream's name.
fn thrift_facts(call: &Call, name: &[u8], dialect: &'static str) -> SpanFacts {
    let name = String::from_utf8_lossy(name);
    let upstream = call.route.as_ref().map_or("-", |r| &*r.upstream);
    let (service, method) = match name.split_once(':') {
        Some((s, m)) => (s.to_owned(), m.to_owned()),
        None => (upstream.to_owned(), name.clone().into_owned()),
    };
    let common = [
        (RPC_SYSTEM, AttrValue::Str("apache_thrift".into())),
        (RPC_SERVICE, str_attr(service.clone())),
        (RPC_METHOD, str_attr(method.clone())),
    ];
    let mut server = common.to_vec();
    server.extend([
        (semconv::NETWORK_TRANSPORT, AttrValue::Str("tcp".into())),
        (
            "tracebridge.thrift.client_type",
            AttrValue::Str(dialect.into()),
        ),
    ]);
    SpanFacts {
        name: format!("{service}/{method}").into(),
        server,
        client: common.to_vec(),
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A call that records itself when dropped. Derefs to its [`Call`].
#[derive(Debug)]
pub struct Recorded {
    call: Call,
    recorder: Arc<Recorder>,
}

impl Recorded {
    /// Takes charge of recording `call`.
    pub fn new(call: Call, recorder: Arc<Recorder>) -> Self {
        Recorded { call, recorder }
    }

    /// The recorder (for rare counters such as decode errors).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

impl Deref for Recorded {
    type Target = Call;

    fn deref(&self) -> &Call {
        &self.call
    }
}

impl DerefMut for Recorded {
    fn deref_mut(&mut self) -> &mut Call {
        &mut self.call
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.recorder.record(&self.call);
    }
}
