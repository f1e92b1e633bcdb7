//! Trace enforcement: what happens to a call that arrived without valid trace context.

use crate::config::OnMissing;
use crate::trace::{Extracted, TraceContext};

/// What the gateway does with a call's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Continue the caller's trace: the gateway's span is a child of `parent`.
    Continue {
        /// The caller's context.
        parent: TraceContext,
    },
    /// Start a new root trace (nothing valid arrived and the route allows it).
    Start,
    /// Forward the call untouched: no context added, no spans.
    Pass,
    /// Refuse the call: the route demands trace context.
    Reject,
}

/// Decides from what extraction found and the route's `on_missing`.
pub fn enforce(extracted: &Extracted, on_missing: OnMissing) -> Decision {
    match (&extracted.context, on_missing) {
        (Some(parent), _) => Decision::Continue {
            parent: parent.clone(),
        },
        (None, OnMissing::Start) => Decision::Start,
        (None, OnMissing::Pass) => Decision::Pass,
        (None, OnMissing::Reject) => Decision::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceId};

    #[test]
    fn table() {
        let ctx = TraceContext {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            ..Default::default()
        };
        let found = Extracted {
            context: Some(ctx.clone()),
            ..Default::default()
        };
        let none = Extracted::default();
        for mode in [OnMissing::Start, OnMissing::Reject, OnMissing::Pass] {
            assert_eq!(
                enforce(&found, mode),
                Decision::Continue {
                    parent: ctx.clone()
                }
            );
        }
        assert_eq!(enforce(&none, OnMissing::Start), Decision::Start);
        assert_eq!(enforce(&none, OnMissing::Pass), Decision::Pass);
        assert_eq!(enforce(&none, OnMissing::Reject), Decision::Reject);
    }
}
