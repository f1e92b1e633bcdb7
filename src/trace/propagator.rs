//! [`Propagator`]: the configured extract order and inject set over every format.

use super::{Carrier, Format, IdWriter, ParseError, TraceContext};

/// What extraction found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The first valid context in extract order, if any.
    pub context: Option<TraceContext>,
    /// The format it came from.
    pub format: Option<Format>,
    /// The first invalid header seen (counted in metrics; the trace restarts).
    pub invalid: Option<(Format, ParseError)>,
}

/// Extracts in the configured order and injects the configured set.
#[derive(Debug, Clone)]
pub struct Propagator {
    extract: Vec<Format>,
    inject: Vec<Format>,
}

impl Propagator {
    /// A propagator with this extract order and inject set.
    pub fn new(extract: Vec<Format>, inject: Vec<Format>) -> Self {
        Propagator { extract, inject }
    }

    /// The header names looked for on extract (for `on_missing = reject` messages).
    pub fn extract_header_names(&self) -> Vec<&'static str> {
        todo!("trace helper")
    }

    /// Extracts the first valid context in extract order.
    pub fn extract<C: Carrier + ?Sized>(&self, carrier: &C) -> Extracted {
        let _ = (carrier, &self.extract);
        todo!("trace helper")
    }

    /// Removes every header of every known format from `carrier` (so no stale context is
    /// forwarded), then writes `ctx` in each inject format.
    pub fn inject<C: Carrier + ?Sized>(
        &self,
        ctx: &TraceContext,
        carrier: &mut C,
        writer: &mut IdWriter,
    ) {
        let _ = (ctx, carrier, writer, &self.inject);
        todo!("trace helper")
    }
}
