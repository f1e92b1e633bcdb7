//! `telemetry`: to the side of the data path.
//!
//! - [`spans`]: the data path hands finished [`SpanRecord`]s to a [`SpanSink`] (bounded
//!   channel, `try_send`, a full queue drops and counts); one task turns them into
//!   OpenTelemetry SDK spans (explicit ids and times) exported in batches over OTLP.
//! - [`metrics`]: the Prometheus registry and the gateway's counters and histograms.
//! - [`admin`]: the admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

pub mod access;
pub mod admin;
pub mod metrics;
pub mod spans;

pub use metrics::Metrics;
pub use spans::{AttrValue, SpanKind, SpanRecord, SpanSink, SpanStatus, Telemetry};
