//! Sampling: whether the gateway records (and marks sampled) the spans of a call.

use crate::config::SamplerConfig;
use crate::trace::{TraceContext, TraceId};

/// Parent-based ratio sampler: a call with a parent follows the parent's sampled flag; a new
/// root is sampled when the trace id falls under the ratio (the same rule as OpenTelemetry's
/// `TraceIdRatioBased`, so every hop that uses it agrees on a given trace id).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Roots whose id value is below this bound are sampled.
    bound: u64,
}

impl Sampler {
    /// A sampler from config.
    pub fn new(config: SamplerConfig) -> Self {
        match config {
            SamplerConfig::ParentRatio { ratio } => Sampler::ratio(ratio),
        }
    }

    /// A parent-based sampler with `ratio` for roots (clamped to 0..=1).
    pub fn ratio(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        // Compare the low 63 bits of the trace id with ratio × 2^63.
        let bound = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * (1u64 << 63) as f64) as u64
        };
        Sampler { bound }
    }

    /// Whether a call is sampled: the parent's flag when there is a parent, else the ratio.
    pub fn sample(&self, parent: Option<&TraceContext>, trace_id: &TraceId) -> bool {
        match parent {
            Some(p) => p.flags.is_sampled(),
            None => self.sample_root(trace_id),
        }
    }

    fn sample_root(&self, trace_id: &TraceId) -> bool {
        if self.bound == u64::MAX {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id.0[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceFlags};

    fn id(low: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[0] = 1;
        b[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(b)
    }

    #[test]
    fn parent_flag_wins() {
        let s = Sampler::ratio(0.0);
        let parent = TraceContext {
            trace_id: id(5),
            span_id: SpanId([1; 8]),
            flags: TraceFlags::SAMPLED,
            ..Default::default()
        };
        assert!(s.sample(Some(&parent), &parent.trace_id));
        let unsampled = TraceContext {
            flags: TraceFlags(0),
            ..parent
        };
        assert!(!Sampler::ratio(1.0).sample(Some(&unsampled), &unsampled.trace_id));
    }

    #[test]
    fn ratio_bounds() {
        assert!(Sampler::ratio(1.0).sample(None, &id(u64::MAX)));
        assert!(!Sampler::ratio(0.0).sample(None, &id(0)));
        let half = Sampler::ratio(0.5);
        assert!(half.sample(None, &id(0)));
        assert!(half.sample(None, &id((1 << 62) * 2 - 2)));
        assert!(!half.sample(None, &id(1 << 63)));
    }

    #[test]
    fn ratio_is_close_over_many_ids() {
        let s = Sampler::ratio(0.25);
        let n = 20_000u64;
        let sampled = (0..n)
            .filter(|i| s.sample(None, &id(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
            .count();
        let share = sampled as f64 / n as f64;
        assert!((0.23..0.27).contains(&share), "share {share}");
    }
}
