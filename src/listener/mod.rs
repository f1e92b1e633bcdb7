//! `listener`: accept loops per protocol, connection limits, timeouts, drain.
//!
//! - [`http`]: HTTP/1.1 and h2c (prior knowledge) on one port; the request handler runs the
//!   phases route → extract → enforce → sample → inject → dispatch → respond → record.

//! - [`thrift`]: Apache Thrift, the transport detected per connection, replies in the client's
//!   own dialect; the same phases per call.

pub mod http;
pub mod thrift;

pub use self::http::{HttpRoute, HttpStage, serve_http};
pub use self::thrift::{ThriftRoute, ThriftStage, serve_thrift};

use crate::trace::{SpanId, TraceContext, TraceFlags, TraceId};

/// The trace of one call as the gateway sees it.
#[derive(Debug)]
pub(crate) struct CallTrace {
    /// The gateway's server span (child of the caller's span).
    pub(crate) server_span: SpanId,
    /// The caller's span, `None` when the gateway started the trace.
    pub(crate) parent_span: Option<SpanId>,
    /// Whether the gateway records its spans.
    pub(crate) sampled: bool,
    /// What the upstream receives: same trace, the client span as parent.
    pub(crate) upstream_context: TraceContext,
}

impl CallTrace {
    /// Starts the gateway's part of a trace: a server span id and the context the upstream
    /// receives (a fresh client span id, flags with the sampling decision).
    pub(crate) fn new(
        trace_id: TraceId,
        parent_span: Option<SpanId>,
        sampled: bool,
        inherited: TraceContext,
    ) -> Self {
        let flags = TraceFlags(inherited.flags.0).with_sampled(sampled);
        CallTrace {
            server_span: SpanId::random(),
            parent_span,
            sampled,
            upstream_context: TraceContext {
                trace_id,
                span_id: SpanId::random(),
                flags,
                tracestate: inherited.tracestate,
                baggage: inherited.baggage,
            },
        }
    }
}
