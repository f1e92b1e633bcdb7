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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::trace::{SpanId, TraceContext, TraceFlags, TraceId};

/// The next connection of an accept loop, with the permit that counts it against
/// `max_connections` (waited for before accepting) and `TCP_NODELAY` set; `None` once
/// `shutdown` fires. Accept errors (EMFILE and the like) are transient: logged, then retried
/// after a short back-off.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    name: &str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        permit = permits.clone().acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((permit, stream, remote));
                }
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

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
