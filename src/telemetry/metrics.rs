//! The Prometheus registry and the gateway's metrics.

/// Every metric the gateway exports.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        todo!("telemetry helper")
    }
}
