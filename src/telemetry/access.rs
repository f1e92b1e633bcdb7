//! The access log (`[log] access = "json"`): one JSON line per call, written by `record` into
//! a bounded queue and to standard output by one task, so a slow terminal or pipe never
//! slows a request. A full queue drops the line and counts it
//! (`tracebridge_access_log_dropped_total`).
//!
//! ```text
//! {"time":"2026-12-02T12:00:00.123Z","listener":"edge","protocol":"http","method":"GET",
//!  "target":"/users/1","route":"users","upstream":"users","endpoint":"127.0.0.1:9191",
//!  "code":"200","outcome":"ok","duration_ms":1.234,"bytes_in":0,"bytes_out":42,
//!  "trace_id":"…","span_id":"…"}
//! ```
//! `target` is the HTTP path and query, or the Thrift method name; `span_id` is the gateway's
//! server span; `bytes_*` count bodies (the request's `content-length` where it streams).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Metrics;
use crate::call::{Call, Request};

/// Lines queued before new ones are dropped.
const QUEUE: usize = 8192;

/// The sending side of the access log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer task on standard output (inside a tokio runtime).
    pub fn stdout(metrics: Arc<Metrics>) -> Self {
        AccessLog::start(tokio::io::stdout(), metrics)
    }

    /// Starts the writer task on `out`.
    pub fn start<W: AsyncWrite + Unpin + Send + 'static>(out: W, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(rx, out));
        AccessLog { tx, metrics }
    }

    /// Queues one line; never waits.
    pub fn log(&self, line: &AccessLine<'_>) {
        if self.tx.try_send(line.to_json()).is_err() {
            self.metrics.access_log_dropped();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut rx: mpsc::Receiver<String>, out: W) {
    let mut out = tokio::io::BufWriter::new(out);
    while let Some(line) = rx.recv().await {
        let mut ok = out.write_all(line.as_bytes()).await.is_ok();
        // Write what is already queued before flushing: one syscall for a burst.
        while ok && let Ok(more) = rx.try_recv() {
            ok = out.write_all(more.as_bytes()).await.is_ok();
        }
        if !ok || out.flush().await.is_err() {
            break;
        }
    }
}

/// One call as the access log shows it.
#[derive(Debug)]
pub struct AccessLine<'a> {
    call: &'a Call,
    duration: Duration,
}

impl<'a> AccessLine<'a> {
    /// The line of a finished call that took `duration`.
    pub fn of(call: &'a Call, duration: Duration) -> Self {
        AccessLine { call, duration }
    }

    /// The JSON line, newline-terminated.
    pub fn to_json(&self) -> String {
        let c = self.call;
        let (method, target) = match &c.request {
            Request::Http { method, target, .. } => (
                Some(method.as_str()),
                target
                    .as_ref()
                    .map_or("/".into(), |t| t.as_str().to_owned()),
            ),
            Request::Thrift { name, .. } => (None, String::from_utf8_lossy(name).into_owned()),
        };
        let route = c.route.as_ref();
        let trace = c.trace.as_ref();
        let mut line = serde_json::json!({
            "time": rfc3339(c.timings.started_wall),
            "listener": &*c.listener,
            "protocol": c.protocol.as_str(),
            "method": method,
            "target": target,
            "route": route.map(|r| &*r.name),
            "upstream": route.map(|r| &*r.upstream),
            "endpoint": c.endpoint.as_deref(),
            "code": c.outcome.code().label(),
            "outcome": c.outcome.label(),
            "duration_ms": (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            "bytes_in": c.bytes_in,
            "bytes_out": c.bytes_out,
            "trace_id": c.shown_trace_id().map(|t| t.to_hex()),
            "span_id": trace.map(|t| t.server_span.to_hex()),
        })
        .to_string();
        line.push('\n');
        line
    }
}

/// `time` as RFC 3339 UTC with milliseconds.
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (the era-based algorithm from Howard Hinnant's "chrono-compatible low-level date
/// algorithms").
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_424), (2025, 12, 2));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_millis(1_764_676_800_123);
        assert_eq!(rfc3339(t), "2025-12-02T12:00:00.123Z");
    }
}
