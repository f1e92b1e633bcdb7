//! [`Call`]: the protocol-neutral context of one downstream request, read and filled by the
//! phases of the [`pipeline`](crate::pipeline) (route → extract → enforce → sample → choose
//! backend → bridge → inject → dispatch → respond → record). Nothing else carries per-request
//! state.
//!
//! A `Call` does not hold the payload: that stays in its native form (an `http::Request`
//! body stream, a Thrift frame as `Bytes`) inside the protocol's adapter.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::{ErrorKind, GatewayError, Side};
use crate::pipeline::RoutePolicy;
use crate::trace::{Format, SpanId, TraceContext, TraceFlags, TraceId, TracestateOutcome};

/// What the downstream speaks, as the metrics' `protocol` label and the spans see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP/1.1 or h2c.
    Http,
    /// gRPC over h2c.
    Grpc,
    /// gRPC-Web (binary or text), forwarded as gRPC.
    GrpcWeb,
    /// Plain HTTP/JSON bridged to a gRPC upstream.
    JsonGrpc,
    /// Apache Thrift (any transport and protocol).
    Thrift,
}

impl Protocol {
    /// Every protocol, in label order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Http,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::JsonGrpc,
        Protocol::Thrift,
    ];

    /// The stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::JsonGrpc => "json-grpc",
            Protocol::Thrift => "thrift",
        }
    }

    /// Position in [`Protocol::ALL`] (index of per-protocol metric handles).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the caller expects gRPC statuses (trailers) rather than HTTP ones.
    pub fn speaks_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }
}

/// A status in the downstream protocol's own terms: the `code` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// An HTTP status.
    Http(u16),
    /// A gRPC status code.
    Grpc(u32),
    /// A Thrift REPLY.
    ThriftReply,
    /// A Thrift EXCEPTION message (`TApplicationException`), from the upstream or the gateway.
    ThriftException,
    /// A oneway Thrift call: nothing is answered.
    ThriftOneway,
    /// The caller went away before an answer was known.
    Cancelled,
}

impl Code {
    /// The metric label (allocates: called once per distinct code, when its handle is made).
    pub fn label(self) -> Cow<'static, str> {
        match self {
            Code::Http(s) => Cow::Owned(s.to_string()),
            Code::Grpc(c) => Cow::Owned(c.to_string()),
            Code::ThriftReply => Cow::Borrowed("reply"),
            Code::ThriftException => Cow::Borrowed("exception"),
            Code::ThriftOneway => Cow::Borrowed("oneway"),
            Code::Cancelled => Cow::Borrowed("cancelled"),
        }
    }

    /// Whether this answer from an upstream is a failure: HTTP 5xx, a gRPC status that
    /// signals a server-side fault, a Thrift `TApplicationException`.
    pub fn is_upstream_error(self) -> bool {
        match self {
            Code::Http(s) => s >= 500,
            // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNIMPLEMENTED,
            // INTERNAL, UNAVAILABLE, DATA_LOSS; client codes (INVALID_ARGUMENT, NOT_FOUND,
            // ALREADY_EXISTS, PERMISSION_DENIED, ...) are answers, not faults.
            Code::Grpc(c) => matches!(c, 2 | 4 | 8 | 10 | 12 | 13 | 14 | 15),
            Code::ThriftException => true,
            Code::ThriftReply | Code::ThriftOneway | Code::Cancelled => false,
        }
    }
}

/// How a call ended: the typed result every metric, span and access-log line is written from.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not ended yet; recorded as cancelled if the call is dropped like this.
    Pending,
    /// The upstream answered; `code` is what the caller got.
    Answered {
        /// The status the caller got.
        code: Code,
    },
    /// The gateway answered with an error of its own.
    Failed {
        /// What failed.
        kind: ErrorKind,
        /// Who is at fault.
        side: Side,
        /// The status the caller got.
        code: Code,
        /// The error, as the caller was told.
        message: Cow<'static, str>,
    },
    /// The answer started but broke off (the upstream body failed mid-stream).
    Broken {
        /// The status already sent.
        code: Code,
        /// Why it broke.
        message: Cow<'static, str>,
    },
}

impl Outcome {
    /// The protocol-neutral `outcome` label: `ok`, `upstream_error`, `cancelled`, `broken`
    /// or the gateway error kind (`no_route`, `missing_trace_context`, `upstream_timeout`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pending => "cancelled",
            Outcome::Answered { code } if code.is_upstream_error() => "upstream_error",
            Outcome::Answered { .. } => "ok",
            Outcome::Failed { kind, .. } => kind.as_str(),
            Outcome::Broken { .. } => "broken",
        }
    }

    /// The `code` the caller got.
    pub fn code(&self) -> Code {
        match self {
            Outcome::Pending => Code::Cancelled,
            Outcome::Answered { code }
            | Outcome::Failed { code, .. }
            | Outcome::Broken { code, .. } => *code,
        }
    }

    /// Whether the call failed (spans get an error status; errors are kept by sampling).
    pub fn is_error(&self) -> bool {
        !matches!(self.label(), "ok")
    }

    /// A description for the span status of a failed call.
    pub fn error_message(&self) -> Option<Cow<'static, str>> {
        match self {
            Outcome::Failed { message, .. } | Outcome::Broken { message, .. } => {
                Some(message.clone())
            }
            Outcome::Answered { code } if code.is_upstream_error() => Some(match code {
                Code::Http(s) => format!("HTTP {s}").into(),
                Code::Grpc(c) => format!("gRPC status {c}").into(),
                _ => "upstream answered a TApplicationException".into(),
            }),
            Outcome::Pending => Some("the caller went away before the answer".into()),
            Outcome::Answered { .. } => None,
        }
    }
}

/// What the extract phase found, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extraction {
    /// Not run (the call failed before extract).
    NotRun,
    /// A valid context in this format.
    Found(Format),
    /// Only an invalid context, first seen in this format.
    Invalid(Format),
    /// No trace header at all.
    Missing,
}

/// The gateway's part of a trace: its server span, and the context the upstream receives.
#[derive(Debug, Clone)]
pub struct CallTrace {
    /// The gateway's server span (child of the caller's span).
    pub server_span: SpanId,
    /// The caller's span, `None` when the gateway started the trace.
    pub parent_span: Option<SpanId>,
    /// Head sampling decision: whether the gateway records its spans.
    pub sampled: bool,
    /// What the upstream receives: same trace, the client span as parent.
    pub upstream: TraceContext,
}

impl CallTrace {
    /// Starts the gateway's part of a trace under `parent` (or a new root when `None`).
    ///
    /// Flags: under a parent, the parent's (W3C `random` as received) with `sampled` set to
    /// the head decision; a new root's `trace_id` comes from [`TraceId::random`], so it also
    /// carries the Level 2 `random` flag.
    pub fn new(trace_id: TraceId, parent: Option<TraceContext>, sampled: bool) -> Self {
        let parent_span = parent.as_ref().map(|p| p.span_id);
        let root = parent.is_none();
        let inherited = parent.unwrap_or_default();
        CallTrace {
            server_span: SpanId::random(),
            parent_span,
            sampled,
            upstream: TraceContext {
                trace_id,
                span_id: SpanId::random(),
                flags: TraceFlags(inherited.flags.0)
                    .with_random(root || inherited.flags.is_random())
                    .with_sampled(sampled),
                tracestate: inherited.tracestate,
                baggage: inherited.baggage,
            },
        }
    }
}

/// What the caller asked for, kept for spans and the access log (cheap clones, no copies).
#[derive(Debug, Clone)]
pub enum Request {
    /// An HTTP request (also gRPC, gRPC-Web and bridged JSON).
    Http {
        /// The method.
        method: http::Method,
        /// Path and query as received.
        target: Option<http::uri::PathAndQuery>,
        /// HTTP version on the downstream connection.
        version: http::Version,
    },
    /// A Thrift call.
    Thrift {
        /// Method name as sent (`Service:method` when multiplexed); empty when undecodable.
        name: Bytes,
        /// The client's transport and protocol, e.g. `header`, `framed_compact`.
        dialect: &'static str,
    },
}

/// One downstream call on its way through the pipeline.
#[derive(Debug)]
pub struct Call {
    /// The listener it arrived on.
    pub listener: Arc<str>,
    /// What the caller speaks (a plain HTTP caller becomes `JsonGrpc` once routed to a
    /// bridged route).
    pub protocol: Protocol,
    /// The caller's address.
    pub client: SocketAddr,
    /// The caller's IP as text, made once per connection (spans, access log).
    pub client_ip: Option<Arc<str>>,
    /// What the caller asked for.
    pub request: Request,
    /// The route taken, once routed.
    pub route: Option<Arc<RoutePolicy>>,
    /// What extract found.
    pub extraction: Extraction,
    /// What extract did to the W3C `tracestate` (members dropped or truncated), for metrics.
    pub tracestate: TracestateOutcome,
    /// The gateway's part of the trace (`None`: `on_missing = pass`, or not yet sampled).
    pub trace: Option<CallTrace>,
    /// A trace id handed out for an error answer of a call that has no trace (always set in
    /// error bodies: the caller can quote it).
    pub error_trace_id: Option<TraceId>,
    /// The traffic colour (set by canary routing; `None` today).
    pub colour: Option<Arc<str>>,
    /// The upstream endpoint dialled, when known.
    pub endpoint: Option<Arc<str>>,
    /// What the upstream is called as, when it differs from the request (a bridged gRPC path).
    pub upstream_target: Option<Arc<str>>,
    /// When the answer must be complete (route timeout or the caller's deadline).
    pub deadline: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
    /// What the upstream answered, where it differs from what the caller got (the gRPC
    /// status behind a bridged JSON answer).
    pub upstream_code: Option<Code>,
    /// Timings.
    pub timings: Timings,
    /// Bytes received from the caller and sent back (payloads, as far as the gateway counts them).
    pub bytes_in: u64,
    /// Bytes sent back to the caller.
    pub bytes_out: u64,
}

/// When a call's phases happened.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The call arrived (monotonic).
    pub started: Instant,
    /// The call arrived (wall clock, for spans).
    pub started_wall: SystemTime,
    /// Dispatch began (wall clock), once it did.
    pub dispatched_wall: Option<SystemTime>,
    /// Dispatch began (monotonic), once it did.
    pub dispatched: Option<Instant>,
}

impl Call {
    /// A new call that arrived now.
    pub fn new(
        listener: Arc<str>,
        protocol: Protocol,
        client: SocketAddr,
        request: Request,
    ) -> Self {
        Call {
            listener,
            protocol,
            client,
            client_ip: None,
            request,
            route: None,
            extraction: Extraction::NotRun,
            tracestate: TracestateOutcome::default(),
            trace: None,
            error_trace_id: None,
            colour: None,
            endpoint: None,
            upstream_target: None,
            deadline: None,
            outcome: Outcome::Pending,
            upstream_code: None,
            timings: Timings {
                started: Instant::now(),
                started_wall: SystemTime::now(),
                dispatched_wall: None,
                dispatched: None,
            },
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The trace id to show the caller: the call's trace, or (for a call that failed before
    /// it had one, or passes untraced) one handed out now and kept for the call.
    pub fn trace_id(&mut self) -> TraceId {
        if let Some(id) = self.shown_trace_id() {
            return id;
        }
        *self.error_trace_id.get_or_insert_with(TraceId::random)
    }

    /// The trace id the caller was shown, if any: the call's trace, or the one handed out for
    /// its error answer.
    pub fn shown_trace_id(&self) -> Option<TraceId> {
        self.trace
            .as_ref()
            .map(|t| t.upstream.trace_id)
            .or(self.error_trace_id)
    }

    /// Marks the start of dispatch.
    pub fn dispatching(&mut self) {
        self.timings.dispatched = Some(Instant::now());
        self.timings.dispatched_wall = Some(SystemTime::now());
    }

    /// Sets the outcome of a gateway-made error answered with `code`.
    pub fn failed(&mut self, err: &GatewayError, code: Code) {
        self.outcome = Outcome::Failed {
            kind: err.kind,
            side: err.side,
            code,
            message: err.to_string().into(),
        };
    }

    /// Whether an upstream was actually called (for `upstream_requests_total`).
    pub fn reached_upstream(&self) -> bool {
        self.timings.dispatched.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_protocol_neutral() {
        let ok = [
            Code::Http(200),
            Code::Http(404),
            Code::Grpc(0),
            Code::Grpc(5),
            Code::ThriftReply,
        ];
        for code in ok {
            assert_eq!(Outcome::Answered { code }.label(), "ok", "{code:?}");
        }
        for code in [Code::Http(503), Code::Grpc(14), Code::ThriftException] {
            assert_eq!(Outcome::Answered { code }.label(), "upstream_error");
        }
        let failed = Outcome::Failed {
            kind: ErrorKind::NoRoute,
            side: Side::Downstream,
            code: Code::Grpc(12),
            message: "x".into(),
        };
        assert_eq!(failed.label(), "no_route");
        assert_eq!(Outcome::Pending.label(), "cancelled");
        assert_eq!(Code::Http(200).label(), "200");
        assert_eq!(Code::Grpc(14).label(), "14");
        assert_eq!(Code::ThriftException.label(), "exception");
    }

    #[test]
    fn trace_id_is_always_there() {
        let mut call = Call::new(
            "edge".into(),
            Protocol::Http,
            "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()),
            Request::Http {
                method: http::Method::GET,
                target: None,
                version: http::Version::HTTP_11,
            },
        );
        let first = call.trace_id();
        assert!(!first.is_zero());
        assert_eq!(call.trace_id(), first);
        let t = CallTrace::new(TraceId([7; 16]), None, false);
        call.trace = Some(t);
        assert_eq!(call.trace_id(), TraceId([7; 16]));
    }

    #[test]
    fn random_flag_set_on_roots_propagated_under_a_parent() {
        let root = CallTrace::new(TraceId::random(), None, true);
        assert_eq!(root.upstream.flags, TraceFlags(0x03));
        assert!(
            CallTrace::new(TraceId::random(), None, false)
                .upstream
                .flags
                .is_random()
        );
        let parent = |flags| TraceContext {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            flags: TraceFlags(flags),
            ..Default::default()
        };
        // As received: a parent without the random bit does not gain it, one with it keeps it.
        let t = CallTrace::new(TraceId([1; 16]), Some(parent(0x01)), false);
        assert_eq!(t.upstream.flags, TraceFlags(0x00));
        let t = CallTrace::new(TraceId([1; 16]), Some(parent(0x02)), true);
        assert_eq!(t.upstream.flags, TraceFlags(0x03));
    }
}
