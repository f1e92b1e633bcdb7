//! The Prometheus registry and the gateway's metrics. Names and labels are a contract:
//! dashboards and alerts use them.
//!
//! | metric | labels |
//! | --- | --- |
//! | `tracebridge_requests_total` | listener, route, protocol, code, outcome |
//! | `tracebridge_request_duration_seconds` | listener, route, protocol |
//! | `tracebridge_upstream_requests_total` | upstream, outcome |
//! | `tracebridge_upstream_duration_seconds` | upstream |
//! | `tracebridge_trace_extract_total` | listener, format, result (ok, invalid, missing) |
//! | `tracebridge_trace_rejected_total` | listener |
//! | `tracebridge_tracestate_trimmed_total` | listener, reason (invalid, duplicate, truncated) |
//! | `tracebridge_errors_total` | listener, kind, side |
//! | `tracebridge_decode_errors_total` | protocol, reason |
//! | `tracebridge_connections_active`, `tracebridge_connections_total` | listener |
//! | `tracebridge_connections_cut_total` | listener, reason (timeout, shed, rapid_reset) |
//! | `tracebridge_trace_carrier_missing_total` | upstream |
//! | `tracebridge_spans_dropped_total`, `tracebridge_spans_exported_total`, `tracebridge_span_export_failures_total` | |
//! | `tracebridge_config_reloads_total` | result (ok, invalid, restart_required) |
//! | `tracebridge_config_generation` | |
//! | `tracebridge_access_log_dropped_total` | |
//!
//! `code` is the status in the caller's protocol (HTTP status, gRPC status code, Thrift
//! `reply` / `exception` / `oneway`, or `cancelled`); `outcome` is protocol-neutral: `ok`,
//! `upstream_error`, `cancelled`, `broken`, or the gateway error kind (`no_route`,
//! `missing_trace_context`, `upstream_timeout`, ...), so one scenario has one outcome on
//! every protocol.
//!
//! The data path never builds a label: it holds handles ([`ListenerMetrics`],
//! [`RouteMetrics`], [`UpstreamMetrics`]) made once per listener, route and upstream, and each
//! handle creates the counter of a label value it has not seen yet once, on first use.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::call::{Code, Extraction, Protocol};
use crate::error::{ErrorKind, Side};
use crate::trace::TracestateOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    protocol: String,
    code: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: String,
    route: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOutcome {
    upstream: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExtractLabels {
    listener: String,
    format: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrimLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    listener: String,
    kind: String,
    side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecodeLabels {
    protocol: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Handles of one label dimension, made on first use of each key: a read lock and a short
/// scan on the warm path, no allocation.
#[derive(Debug)]
struct Lazy<K, M> {
    slots: RwLock<Vec<(K, M)>>,
}

impl<K, M> Default for Lazy<K, M> {
    fn default() -> Self {
        Lazy {
            slots: RwLock::new(Vec::new()),
        }
    }
}

impl<K: Copy + PartialEq, M: Clone> Lazy<K, M> {
    /// Runs `f` on the handle of `key`, making it with `make` the first time.
    fn with(&self, key: K, make: impl FnOnce() -> M, f: impl FnOnce(&M)) {
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, m)) = slots.iter().find(|(k, _)| *k == key) {
                f(m);
                return;
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = slots.iter().find(|(k, _)| *k == key) {
            f(m);
            return;
        }
        let m = make();
        f(&m);
        slots.push((key, m));
    }
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<RouteLabels>,
    upstream_requests: Family<UpstreamOutcome, Counter>,
    upstream_duration: Histograms<UpstreamLabels>,
    trace_extract: Family<ExtractLabels, Counter>,
    trace_rejected: Family<ListenerLabels, Counter>,
    tracestate_trimmed: Family<TrimLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    decode_errors: Family<DecodeLabels, Counter>,
    connections_active: Family<ListenerLabels, Gauge>,
    connections_total: Family<ListenerLabels, Counter>,
    connections_cut: Family<CutLabels, Counter>,
    carrier_missing: Family<UpstreamLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    config_generation: Gauge,
    spans_dropped: Counter,
    spans_exported: Counter,
    span_export_failures: Counter,
    access_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tracebridge");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            trace_extract: Family::default(),
            trace_rejected: Family::default(),
            tracestate_trimmed: Family::default(),
            errors: Family::default(),
            decode_errors: Family::default(),
            connections_active: Family::default(),
            connections_total: Family::default(),
            connections_cut: Family::default(),
            carrier_missing: Family::default(),
            config_reloads: Family::default(),
            config_generation: Gauge::default(),
            spans_dropped: Counter::default(),
            spans_exported: Counter::default(),
            span_export_failures: Counter::default(),
            access_log_dropped: Counter::default(),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters.
        let r = &mut registry;
        r.register(
            "requests",
            "Downstream requests answered",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Downstream request duration",
            m.request_duration.clone(),
        );
        r.register(
            "upstream_requests",
            "Upstream attempts by outcome",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Upstream attempt duration",
            m.upstream_duration.clone(),
        );
        r.register(
            "trace_extract",
            "Trace context extraction results",
            m.trace_extract.clone(),
        );
        r.register(
            "trace_rejected",
            "Calls rejected for missing trace context",
            m.trace_rejected.clone(),
        );
        r.register(
            "tracestate_trimmed",
            "Calls whose W3C tracestate lost members on extract, by reason (a call counts once per reason)",
            m.tracestate_trimmed.clone(),
        );
        r.register(
            "errors",
            "Gateway-made errors by kind and side",
            m.errors.clone(),
        );
        r.register(
            "decode_errors",
            "Malformed input by protocol and reason",
            m.decode_errors.clone(),
        );
        r.register(
            "connections_active",
            "Open downstream connections",
            m.connections_active.clone(),
        );
        r.register(
            "connections",
            "Accepted downstream connections",
            m.connections_total.clone(),
        );
        r.register(
            "connections_cut",
            "Downstream connections the gateway closed early: no request in time, shed at max_connections, too many cancelled calls",
            m.connections_cut.clone(),
        );
        r.register(
            "trace_carrier_missing",
            "Calls forwarded to upstreams that cannot carry trace context",
            m.carrier_missing.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads by result",
            m.config_reloads.clone(),
        );
        r.register(
            "config_generation",
            "Generation of the running config snapshot (1 at start, +1 per applied reload)",
            m.config_generation.clone(),
        );
        r.register(
            "spans_dropped",
            "Spans dropped because the export queue was full",
            m.spans_dropped.clone(),
        );
        r.register(
            "spans_exported",
            "Spans handed to the OTLP exporter successfully",
            m.spans_exported.clone(),
        );
        r.register(
            "span_export_failures",
            "Span batches the exporter failed to send",
            m.span_export_failures.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access log lines dropped because the log queue was full",
            m.access_log_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The handles of one listener.
    pub fn listener(self: &Arc<Self>, name: &str) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: name.to_owned(),
        };
        ListenerMetrics(Arc::new(ListenerInner {
            metrics: self.clone(),
            name: name.to_owned(),
            rejected: self.trace_rejected.get_or_create(&labels).clone(),
            connections_active: self.connections_active.get_or_create(&labels).clone(),
            connections_total: self.connections_total.get_or_create(&labels).clone(),
            extract: Lazy::default(),
            tracestate_trimmed: Lazy::default(),
            errors: Lazy::default(),
        }))
    }

    /// The handles of one route of `listener` (`-` for calls that matched no route).
    pub fn route(self: &Arc<Self>, listener: &str, route: &str) -> RouteMetrics {
        RouteMetrics(Arc::new(RouteInner {
            metrics: self.clone(),
            listener: listener.to_owned(),
            route: route.to_owned(),
            protocols: Default::default(),
        }))
    }

    /// The handles of one upstream.
    pub fn upstream(self: &Arc<Self>, name: &str) -> UpstreamMetrics {
        let labels = UpstreamLabels {
            upstream: name.to_owned(),
        };
        UpstreamMetrics(Arc::new(UpstreamInner {
            metrics: self.clone(),
            name: name.to_owned(),
            duration: self.upstream_duration.get_or_create(&labels).clone(),
            carrier_missing: OnceLock::new(),
            outcomes: Lazy::default(),
        }))
    }

    /// Malformed input (rare: labels are built here).
    pub fn decode_error(&self, protocol: &str, reason: &str) {
        self.decode_errors
            .get_or_create(&DecodeLabels {
                protocol: protocol.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A config reload attempt: `ok`, `invalid` or `restart_required`.
    pub fn config_reload(&self, result: &str) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The generation of the running config snapshot.
    pub fn set_config_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// A span dropped at the full queue.
    pub fn span_dropped(&self) {
        self.spans_dropped.inc();
    }

    /// Spans exported in one batch.
    pub fn spans_exported(&self, n: u64) {
        self.spans_exported.inc_by(n);
    }

    /// A batch the exporter failed to send.
    pub fn span_export_failed(&self) {
        self.span_export_failures.inc();
    }

    /// An access log line dropped at the full queue.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// Renders the registry in the OpenMetrics text format (which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Metric handles of one listener. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ListenerMetrics(Arc<ListenerInner>);

#[derive(Debug)]
struct ListenerInner {
    metrics: Arc<Metrics>,
    name: String,
    rejected: Counter,
    connections_active: Gauge,
    connections_total: Counter,
    extract: Lazy<Extraction, Counter>,
    tracestate_trimmed: Lazy<&'static str, Counter>,
    errors: Lazy<(ErrorKind, Side), Counter>,
}

impl ListenerMetrics {
    /// One extraction result.
    pub fn extract(&self, result: Extraction) {
        let i = &self.0;
        let make = || {
            let (format, result) = match result {
                Extraction::Found(f) => (f.as_str(), "ok"),
                Extraction::Invalid(f) => (f.as_str(), "invalid"),
                Extraction::Missing | Extraction::NotRun => ("none", "missing"),
            };
            i.metrics
                .trace_extract
                .get_or_create(&ExtractLabels {
                    listener: i.name.clone(),
                    format: format.into(),
                    result: result.into(),
                })
                .clone()
        };
        i.extract.with(result, make, |c| {
            c.inc();
        });
    }

    /// What extract dropped of a call's `tracestate`: one count per reason that applied.
    pub fn tracestate(&self, outcome: TracestateOutcome) {
        let i = &self.0;
        for (dropped, reason) in [
            (outcome.dropped_invalid, "invalid"),
            (outcome.dropped_duplicate, "duplicate"),
            (outcome.truncated, "truncated"),
        ] {
            if dropped == 0 {
                continue;
            }
            let make = || {
                i.metrics
                    .tracestate_trimmed
                    .get_or_create(&TrimLabels {
                        listener: i.name.clone(),
                        reason: reason.into(),
                    })
                    .clone()
            };
            i.tracestate_trimmed.with(reason, make, |c| {
                c.inc();
            });
        }
    }

    /// A call rejected for missing trace context.
    pub fn rejected(&self) {
        self.0.rejected.inc();
    }

    /// A gateway-made error.
    pub fn error(&self, kind: ErrorKind, side: Side) {
        let i = &self.0;
        let make = || {
            i.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    listener: i.name.clone(),
                    kind: kind.as_str().into(),
                    side: side.as_str().into(),
                })
                .clone()
        };
        i.errors.with((kind, side), make, |c| {
            c.inc();
        });
    }

    /// A downstream connection opened.
    pub fn connection_opened(&self) {
        self.0.connections_total.inc();
        self.0.connections_active.inc();
    }

    /// A downstream connection closed.
    pub fn connection_closed(&self) {
        self.0.connections_active.dec();
    }

    /// A downstream connection the gateway closed early, and why (`timeout`, `shed`,
    /// `rapid_reset`). Rare: the labels are made on the spot.
    pub fn connection_cut(&self, reason: &'static str) {
        let labels = CutLabels {
            listener: self.0.name.clone(),
            reason,
        };
        self.0.metrics.connections_cut.get_or_create(&labels).inc();
    }
}

/// Metric handles of one route. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RouteMetrics(Arc<RouteInner>);

#[derive(Debug)]
struct RouteInner {
    metrics: Arc<Metrics>,
    listener: String,
    route: String,
    protocols: [OnceLock<ProtocolHandles>; Protocol::ALL.len()],
}

#[derive(Debug)]
struct ProtocolHandles {
    duration: Histogram,
    requests: Lazy<(Code, &'static str), Counter>,
}

impl RouteMetrics {
    /// One downstream call answered with `code`, ending with `outcome` (the neutral label).
    pub fn request(
        &self,
        protocol: Protocol,
        code: Code,
        outcome: &'static str,
        duration: Duration,
    ) {
        let i = &self.0;
        let handles = i.protocols[protocol.index()].get_or_init(|| ProtocolHandles {
            duration: i
                .metrics
                .request_duration
                .get_or_create(&RouteLabels {
                    listener: i.listener.clone(),
                    route: i.route.clone(),
                    protocol: protocol.as_str().into(),
                })
                .clone(),
            requests: Lazy::default(),
        });
        let make = || {
            i.metrics
                .requests
                .get_or_create(&RequestLabels {
                    listener: i.listener.clone(),
                    route: i.route.clone(),
                    protocol: protocol.as_str().into(),
                    code: code.label().into_owned(),
                    outcome: outcome.into(),
                })
                .clone()
        };
        handles.requests.with((code, outcome), make, |c| {
            c.inc();
        });
        handles.duration.observe(duration.as_secs_f64());
    }
}

/// Metric handles of one upstream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics(Arc<UpstreamInner>);

#[derive(Debug)]
struct UpstreamInner {
    metrics: Arc<Metrics>,
    name: String,
    duration: Histogram,
    carrier_missing: OnceLock<Counter>,
    outcomes: Lazy<&'static str, Counter>,
}

impl UpstreamMetrics {
    /// One upstream attempt finished with `outcome` (the neutral label).
    pub fn request(&self, outcome: &'static str, duration: Duration) {
        let i = &self.0;
        let make = || {
            i.metrics
                .upstream_requests
                .get_or_create(&UpstreamOutcome {
                    upstream: i.name.clone(),
                    outcome: outcome.into(),
                })
                .clone()
        };
        i.outcomes.with(outcome, make, |c| {
            c.inc();
        });
        i.duration.observe(duration.as_secs_f64());
    }

    /// A call forwarded to this upstream although its transport cannot carry trace context.
    pub fn carrier_missing(&self) {
        let i = &self.0;
        i.carrier_missing
            .get_or_init(|| {
                i.metrics
                    .carrier_missing
                    .get_or_create(&UpstreamLabels {
                        upstream: i.name.clone(),
                    })
                    .clone()
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Format;

    #[test]
    fn renders_labels_and_values() {
        let m = Arc::new(Metrics::new());
        let route = m.route("edge", "users");
        route.request(
            Protocol::Http,
            Code::Http(200),
            "ok",
            Duration::from_millis(3),
        );
        route.request(
            Protocol::Http,
            Code::Http(200),
            "ok",
            Duration::from_millis(3),
        );
        route.request(
            Protocol::Thrift,
            Code::ThriftException,
            "no_route",
            Duration::from_millis(1),
        );
        let listener = m.listener("edge");
        listener.extract(Extraction::Found(Format::Jaeger));
        let trimmed = TracestateOutcome {
            kept: 2,
            dropped_invalid: 3,
            truncated: 1,
            ..Default::default()
        };
        listener.tracestate(trimmed);
        listener.tracestate(TracestateOutcome {
            truncated: 4,
            ..Default::default()
        });
        listener.tracestate(TracestateOutcome::default());
        listener.error(ErrorKind::NoRoute, Side::Downstream);
        listener.connection_opened();
        listener.connection_opened();
        listener.connection_closed();
        m.upstream("svc")
            .request("upstream_timeout", Duration::from_secs(1));
        m.span_dropped();
        let text = m.render();
        for line in [
            r#"tracebridge_requests_total{listener="edge",route="users",protocol="http",code="200",outcome="ok"} 2"#,
            r#"tracebridge_requests_total{listener="edge",route="users",protocol="thrift",code="exception",outcome="no_route"} 1"#,
            r#"tracebridge_trace_extract_total{listener="edge",format="jaeger",result="ok"} 1"#,
            r#"tracebridge_errors_total{listener="edge",kind="no_route",side="downstream"} 1"#,
            r#"tracebridge_tracestate_trimmed_total{listener="edge",reason="invalid"} 1"#,
            r#"tracebridge_tracestate_trimmed_total{listener="edge",reason="truncated"} 2"#,
            r#"tracebridge_upstream_requests_total{upstream="svc",outcome="upstream_timeout"} 1"#,
            r#"tracebridge_connections_active{listener="edge"} 1"#,
            r#"tracebridge_connections_total{listener="edge"} 2"#,
            "tracebridge_spans_dropped_total 1",
            r#"tracebridge_request_duration_seconds_count{listener="edge",route="users",protocol="http"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains(r#"reason="duplicate""#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
