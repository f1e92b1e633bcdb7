//! The Prometheus registry and the gateway's metrics. Names and labels are a contract:
//! dashboards and alerts use them.
//!
//! | metric | labels |
//! | --- | --- |
//! | `tracebridge_requests_total`, `tracebridge_request_duration_seconds` | listener, route, protocol, code (histogram: no code) |
//! | `tracebridge_upstream_requests_total`, `tracebridge_upstream_duration_seconds` | upstream, outcome (histogram: upstream) |
//! | `tracebridge_trace_extract_total` | listener, format, result (ok, invalid, missing) |
//! | `tracebridge_trace_rejected_total` | listener |
//! | `tracebridge_errors_total` | listener, kind, side |
//! | `tracebridge_decode_errors_total` | protocol, reason |
//! | `tracebridge_connections_active`, `tracebridge_connections_total` | listener |
//! | `tracebridge_trace_carrier_missing_total` | upstream |
//! | `tracebridge_spans_dropped_total`, `tracebridge_spans_exported_total`, `tracebridge_span_export_failures_total` | |

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    protocol: String,
    code: String,
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
struct ListenerLabels {
    listener: String,
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

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
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
    errors: Family<ErrorLabels, Counter>,
    decode_errors: Family<DecodeLabels, Counter>,
    connections_active: Family<ListenerLabels, Gauge>,
    connections_total: Family<ListenerLabels, Counter>,
    carrier_missing: Family<UpstreamLabels, Counter>,
    spans_dropped: Counter,
    spans_exported: Counter,
    span_export_failures: Counter,
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
            errors: Family::default(),
            decode_errors: Family::default(),
            connections_active: Family::default(),
            connections_total: Family::default(),
            carrier_missing: Family::default(),
            spans_dropped: Counter::default(),
            spans_exported: Counter::default(),
            span_export_failures: Counter::default(),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters.
        registry.register(
            "requests",
            "Downstream requests answered",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Downstream request duration",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Upstream attempts by outcome",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Upstream attempt duration",
            m.upstream_duration.clone(),
        );
        registry.register(
            "trace_extract",
            "Trace context extraction results",
            m.trace_extract.clone(),
        );
        registry.register(
            "trace_rejected",
            "Calls rejected for missing trace context",
            m.trace_rejected.clone(),
        );
        registry.register(
            "errors",
            "Gateway-made errors by kind and side",
            m.errors.clone(),
        );
        registry.register(
            "decode_errors",
            "Malformed input by protocol and reason",
            m.decode_errors.clone(),
        );
        registry.register(
            "connections_active",
            "Open downstream connections",
            m.connections_active.clone(),
        );
        registry.register(
            "connections",
            "Accepted downstream connections",
            m.connections_total.clone(),
        );
        registry.register(
            "trace_carrier_missing",
            "Calls forwarded to upstreams that cannot carry trace context",
            m.carrier_missing.clone(),
        );
        registry.register(
            "spans_dropped",
            "Spans dropped because the export queue was full",
            m.spans_dropped.clone(),
        );
        registry.register(
            "spans_exported",
            "Spans handed to the OTLP exporter successfully",
            m.spans_exported.clone(),
        );
        registry.register(
            "span_export_failures",
            "Span batches the exporter failed to send",
            m.span_export_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One downstream request answered.
    pub fn request(
        &self,
        listener: &str,
        route: &str,
        protocol: &str,
        code: &str,
        duration: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.into(),
                route: route.into(),
                protocol: protocol.into(),
                code: code.into(),
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                listener: listener.into(),
                route: route.into(),
                protocol: protocol.into(),
            })
            .observe(duration.as_secs_f64());
    }

    /// One upstream attempt finished.
    pub fn upstream_request(&self, upstream: &str, outcome: &str, duration: Duration) {
        self.upstream_requests
            .get_or_create(&UpstreamOutcome {
                upstream: upstream.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.upstream_duration
            .get_or_create(&UpstreamLabels {
                upstream: upstream.into(),
            })
            .observe(duration.as_secs_f64());
    }

    /// One extraction: `format` is the format name or `none`; `result` ok, invalid or missing.
    pub fn trace_extract(&self, listener: &str, format: &str, result: &str) {
        self.trace_extract
            .get_or_create(&ExtractLabels {
                listener: listener.into(),
                format: format.into(),
                result: result.into(),
            })
            .inc();
    }

    /// A call rejected for missing trace context.
    pub fn trace_rejected(&self, listener: &str) {
        self.trace_rejected
            .get_or_create(&ListenerLabels {
                listener: listener.into(),
            })
            .inc();
    }

    /// A gateway-made error.
    pub fn error(&self, listener: &str, kind: &str, side: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                listener: listener.into(),
                kind: kind.into(),
                side: side.into(),
            })
            .inc();
    }

    /// Malformed input.
    pub fn decode_error(&self, protocol: &str, reason: &str) {
        self.decode_errors
            .get_or_create(&DecodeLabels {
                protocol: protocol.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A downstream connection opened.
    pub fn connection_opened(&self, listener: &str) {
        let l = ListenerLabels {
            listener: listener.into(),
        };
        self.connections_total.get_or_create(&l).inc();
        self.connections_active.get_or_create(&l).inc();
    }

    /// A downstream connection closed.
    pub fn connection_closed(&self, listener: &str) {
        self.connections_active
            .get_or_create(&ListenerLabels {
                listener: listener.into(),
            })
            .dec();
    }

    /// A call forwarded to an upstream whose transport cannot carry trace context.
    pub fn trace_carrier_missing(&self, upstream: &str) {
        self.carrier_missing
            .get_or_create(&UpstreamLabels {
                upstream: upstream.into(),
            })
            .inc();
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

    /// Renders the registry in the OpenMetrics text format (which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_values() {
        let m = Metrics::new();
        m.request("edge", "users", "http", "200", Duration::from_millis(3));
        m.request("edge", "users", "http", "200", Duration::from_millis(3));
        m.trace_extract("edge", "jaeger", "ok");
        m.connection_opened("edge");
        m.connection_opened("edge");
        m.connection_closed("edge");
        m.span_dropped();
        let text = m.render();
        for line in [
            r#"tracebridge_requests_total{listener="edge",route="users",protocol="http",code="200"} 2"#,
            r#"tracebridge_trace_extract_total{listener="edge",format="jaeger",result="ok"} 1"#,
            r#"tracebridge_connections_active{listener="edge"} 1"#,
            r#"tracebridge_connections_total{listener="edge"} 2"#,
            "tracebridge_spans_dropped_total 1",
            r#"tracebridge_request_duration_seconds_count{listener="edge",route="users",protocol="http"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
