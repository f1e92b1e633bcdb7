//! Span records, the bounded span queue and the OTLP export task.
//!
//! The data path builds a [`SpanRecord`] and calls [`SpanSink::record`]: a `try_send` on a
//! bounded channel that drops (and counts) when full, so a slow collector never slows a
//! request. One task turns records into OpenTelemetry SDK `SpanData` with the gateway's own
//! ids and times, and exports batches (512 spans or every second) through the OTLP exporter.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanKind as OtelKind, Status, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{OtlpProtocol, TelemetryConfig};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::trace::{SpanId, TraceFlags, TraceId};

use super::Metrics;

/// Server (downstream side) or client (upstream attempt) span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// One per downstream request.
    Server,
    /// One per upstream attempt.
    Client,
}

/// Span outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// Not set (success, per the semantic conventions).
    Unset,
    /// Failed, with a description.
    Error(Cow<'static, str>),
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// A shared string (a listener, route or upstream name): no copy per span.
    Shared(Arc<str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// A finished span, as the data path records it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// The parent span, `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// Flags of the trace (sampled).
    pub flags: TraceFlags,
    /// Span name (`GET /users`, `package.Service/Method`, ...).
    pub name: Cow<'static, str>,
    /// Server or client.
    pub kind: SpanKind,
    /// Start time.
    pub start: SystemTime,
    /// End time.
    pub end: SystemTime,
    /// Status.
    pub status: SpanStatus,
    /// Attributes with semantic-convention keys.
    pub attributes: Vec<(&'static str, AttrValue)>,
}

/// Where the data path sends finished spans. Cheap to clone; never blocks.
#[derive(Clone, Debug)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanRecord>,
    metrics: Arc<Metrics>,
}

impl SpanSink {
    /// Queues a span for export; a full or closed queue drops it and counts the drop.
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.metrics.span_dropped();
        }
    }
}

/// The running telemetry: metrics registry, span sink and the export task.
#[derive(Debug)]
pub struct Telemetry {
    /// Metrics shared by every stage.
    pub metrics: Arc<Metrics>,
    /// The span sink for the data path.
    pub spans: SpanSink,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The exporter behind the queue.
#[derive(Debug)]
enum Exporter {
    /// No endpoint configured.
    None,
    /// OTLP over gRPC or HTTP.
    Otlp(Box<opentelemetry_otlp::SpanExporter>),
}

const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Telemetry {
    /// Starts the export task with a fresh metrics registry (inside a tokio runtime).
    pub fn start(config: &TelemetryConfig) -> Result<Telemetry, GatewayError> {
        Telemetry::start_with(config, Arc::new(Metrics::new()))
    }

    /// Starts the export task reporting into `metrics`.
    pub fn start_with(
        config: &TelemetryConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Telemetry, GatewayError> {
        let exporter = build_exporter(config)?;
        let (tx, rx) = mpsc::channel(config.span_queue.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(export_loop(
            rx,
            stop_rx,
            exporter,
            config.log_spans,
            metrics.clone(),
        ));
        Ok(Telemetry {
            spans: SpanSink {
                tx,
                metrics: metrics.clone(),
            },
            metrics,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Exports what is queued, shuts the exporter down, bounded by `timeout`.
    pub async fn shutdown(mut self, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && tokio::time::timeout(timeout, task).await.is_err()
        {
            tracing::warn!(
                "span export did not finish within {timeout:?}; remaining spans are lost"
            );
        }
    }
}

fn build_exporter(config: &TelemetryConfig) -> Result<Exporter, GatewayError> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(Exporter::None);
    };
    let built = match config.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build(),
        OtlpProtocol::HttpProtobuf => {
            let url = if endpoint.ends_with("/v1/traces") {
                endpoint.clone()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(
                    opentelemetry_http::hyper::HyperClient::with_default_connector(
                        Duration::from_secs(10),
                        None,
                    ),
                )
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(Duration::from_secs(10))
                .build()
        }
    };
    let mut exporter = built.map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Side::Internal,
            format!("cannot build the OTLP exporter for {endpoint}"),
        )
        .with_source(e)
    })?;
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .build();
    exporter.set_resource(&resource);
    Ok(Exporter::Otlp(Box::new(exporter)))
}

async fn export_loop(
    mut rx: mpsc::Receiver<SpanRecord>,
    mut stop: oneshot::Receiver<()>,
    exporter: Exporter,
    log_spans: bool,
    metrics: Arc<Metrics>,
) {
    let scope = InstrumentationScope::builder("tracebridge")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            record = rx.recv() => match record {
                Some(record) => {
                    accept(record, &mut batch, &scope, log_spans, &exporter);
                    if batch.len() >= BATCH {
                        flush(&exporter, &mut batch, &metrics).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&exporter, &mut batch, &metrics).await,
            _ = &mut stop => {
                // Drain what is already queued, then stop.
                while let Ok(record) = rx.try_recv() {
                    accept(record, &mut batch, &scope, log_spans, &exporter);
                    if batch.len() >= BATCH {
                        flush(&exporter, &mut batch, &metrics).await;
                    }
                }
                break;
            }
        }
    }
    flush(&exporter, &mut batch, &metrics).await;
    if let Exporter::Otlp(e) = &exporter {
        let _ = e.shutdown();
    }
}

fn accept(
    record: SpanRecord,
    batch: &mut Vec<SpanData>,
    scope: &InstrumentationScope,
    log: bool,
    exporter: &Exporter,
) {
    if log {
        println!("{}", log_line(&record));
    }
    if matches!(exporter, Exporter::Otlp(_)) {
        batch.push(to_span_data(record, scope.clone()));
    }
}

async fn flush(exporter: &Exporter, batch: &mut Vec<SpanData>, metrics: &Metrics) {
    let Exporter::Otlp(e) = exporter else {
        batch.clear();
        return;
    };
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match e.export(std::mem::take(batch)).await {
        Ok(()) => metrics.spans_exported(n),
        Err(err) => {
            metrics.span_export_failed();
            tracing::warn!(error = %err, spans = n, "OTLP export failed");
        }
    }
}

/// One line per span, for `log_spans` (the demo prints these).
pub fn log_line(r: &SpanRecord) -> String {
    let duration = r.end.duration_since(r.start).unwrap_or_default();
    format!(
        "span trace_id={} span_id={} parent={} kind={} name=\"{}\" status={} duration_ms={:.3}",
        r.trace_id,
        r.span_id,
        r.parent_span_id
            .map_or_else(|| "-".to_owned(), |p| p.to_hex()),
        match r.kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
        },
        r.name,
        match r.status {
            SpanStatus::Unset => "ok",
            SpanStatus::Error(_) => "error",
        },
        duration.as_secs_f64() * 1000.0
    )
}

fn to_span_data(r: SpanRecord, scope: InstrumentationScope) -> SpanData {
    let span_context = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(r.trace_id.0),
        opentelemetry::trace::SpanId::from_bytes(r.span_id.0),
        opentelemetry::trace::TraceFlags::new(r.flags.0),
        false,
        TraceState::default(),
    );
    let attributes = r
        .attributes
        .into_iter()
        .map(|(k, v)| {
            let value = match v {
                AttrValue::Str(s) => Value::String(s.into()),
                AttrValue::Shared(s) => Value::String(s.into()),
                AttrValue::Int(i) => Value::I64(i),
                AttrValue::Bool(b) => Value::Bool(b),
            };
            KeyValue::new(k, value)
        })
        .collect();
    SpanData {
        span_context,
        parent_span_id: r
            .parent_span_id
            .map_or(opentelemetry::trace::SpanId::INVALID, |p| {
                opentelemetry::trace::SpanId::from_bytes(p.0)
            }),
        // A server span's parent lives in the caller's process.
        parent_span_is_remote: r.kind == SpanKind::Server && r.parent_span_id.is_some(),
        span_kind: match r.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: r.name,
        start_time: r.start,
        end_time: r.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match r.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error(d) => Status::error(d),
        },
        instrumentation_scope: scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queue: usize) -> TelemetryConfig {
        TelemetryConfig {
            service_name: "t".into(),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            sampler: crate::config::SamplerConfig::ParentRatio { ratio: 1.0 },
            span_queue: queue,
            log_spans: false,
        }
    }

    pub(crate) fn record(n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n; 8]),
            parent_span_id: None,
            flags: TraceFlags::SAMPLED,
            name: "GET /x".into(),
            kind: SpanKind::Server,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH + Duration::from_millis(2),
            status: SpanStatus::Unset,
            attributes: vec![],
        }
    }

    #[test]
    fn full_queue_drops_and_counts() {
        // A current-thread runtime that never runs the export task: the queue cannot drain.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let t = Telemetry::start(&config(2)).unwrap();
        for n in 1..=5 {
            t.spans.record(record(n));
        }
        assert!(
            t.metrics
                .render()
                .lines()
                .any(|l| l == "tracebridge_spans_dropped_total 3"),
            "{}",
            t.metrics.render()
        );
    }

    #[test]
    fn log_line_format() {
        let mut r = record(0xab);
        r.parent_span_id = Some(SpanId([1; 8]));
        assert_eq!(
            log_line(&r),
            "span trace_id=abababababababababababababababab span_id=abababababababab parent=0101010101010101 kind=server name=\"GET /x\" status=ok duration_ms=2.000"
        );
    }
}
