//! The Thrift listener: the client's transport is detected from its first bytes (THeader,
//! framed or unframed, binary or compact), then every call runs the phases
//! peek → route → extract → enforce → sample → inject → dispatch → reply → record,
//! and the reply goes back in the client's own dialect.
//!
//! Calls on one connection may be pipelined: up to [`MAX_PIPELINE`] run at once and their
//! replies are written in the order the calls arrived (what every Thrift client expects; a
//! THeader reply also carries the request's header seq id, which fbthrift's out-of-order
//! clients match on). Oneway calls are forwarded and never answered.
//!
//! The payload is never re-encoded unless the client's and the upstream's protocols differ:
//! the arguments travel as the same `Bytes` behind a freshly written head.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::CallTrace;
use super::http::Limits;
use crate::codec::thrift::exception::{INVALID_TRANSFORM, PROTOCOL_ERROR, encode_exception};
use crate::codec::thrift::frame::{DecodeError, Frame, ThriftDecoder};
use crate::codec::thrift::header::{HeaderHead, InfoHeaders, encode_head};
use crate::codec::thrift::{MessageType, ProtocolId, ThriftError, peek_message};
use crate::config::{OnMissing, ThriftTransport};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::policy::{Decision, Router, Sampler, enforce};
use crate::telemetry::{AttrValue, Metrics, SpanKind, SpanRecord, SpanSink, SpanStatus};
use crate::trace::{Propagator, TraceContext, TraceId, pool};
use crate::upstream::thrift::{
    ThriftCall, ThriftReply, ThriftUpstream, encode_message_header, transcode_struct,
    write_all_vectored,
};

/// Calls of one connection in flight at once; further frames wait in the socket.
pub const MAX_PIPELINE: usize = 64;

/// A route of a Thrift listener, resolved to its upstream.
#[derive(Debug)]
pub struct ThriftRoute {
    /// Route name (metrics, spans).
    pub name: Arc<str>,
    /// Where matching calls go.
    pub upstream: Arc<ThriftUpstream>,
    /// Time allowed from dispatch to the upstream's reply.
    pub timeout: Duration,
    /// What to do without trace context.
    pub on_missing: OnMissing,
}

/// Everything a Thrift listener's calls need, shared by its connections.
#[derive(Debug)]
pub struct ThriftStage {
    /// Listener name (metrics, logs).
    pub listener: Arc<str>,
    /// Routes of this listener, matched on the method name.
    pub router: Router<Arc<ThriftRoute>>,
    /// Extract order and inject set (applied to THeader info headers).
    pub propagator: Arc<Propagator>,
    /// Sampler for the gateway's spans.
    pub sampler: Sampler,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where finished spans go.
    pub spans: SpanSink,
    /// Largest frame accepted, also after inflating.
    pub max_frame: u32,
}

/// Accepts connections until `shutdown` fires, then lets calls in flight finish for up to
/// `limits.drain_timeout` (connections stop reading new calls at once).
pub async fn serve_thrift(
    listener: TcpListener,
    stage: Arc<ThriftStage>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    while let Some((permit, stream, remote)) =
        super::accept_next(&listener, &permits, &shutdown, &stage.listener).await
    {
        let stage = stage.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            stage.metrics.connection_opened(&stage.listener);
            if let Err(e) = serve_connection(&stage, stream, remote, token).await {
                tracing::debug!(listener = %stage.listener, client = %remote, error = %e, "thrift connection ended with error");
            }
            stage.metrics.connection_closed(&stage.listener);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(listener = %stage.listener, "drain timeout passed with Thrift calls still in flight");
    }
}

/// One downstream connection: read frames, run calls (pipelined, bounded), write replies in
/// arrival order. Returns when the client closes, the framing is lost, or shutdown drained it.
async fn serve_connection(
    stage: &Arc<ThriftStage>,
    stream: TcpStream,
    client: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), DecodeError> {
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, ThriftDecoder::new(stage.max_frame));
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let mut result = Ok(());
    loop {
        tokio::select! {
            // Replies first: a finished call frees a pipeline slot.
            biased;
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                let reply: Option<Vec<Bytes>> = reply;
                if let Some(mut parts) = reply
                    && let Err(e) = write_all_vectored(&mut write, &mut parts).await
                {
                    return Err(e.into());
                }
            }
            _ = shutdown.cancelled(), if reading => reading = false,
            frame = frames.next(), if reading && in_flight.len() < MAX_PIPELINE => match frame {
                Some(Ok(frame)) => {
                    let call = handle_frame(stage.clone(), client, frame);
                    in_flight.push_back(call);
                }
                Some(Err(e)) => {
                    if let DecodeError::Thrift(t) = &e {
                        stage.metrics.decode_error("thrift", t.reason());
                        tracing::info!(listener = %stage.listener, client = %client, error = %t, "closing Thrift connection: framing lost");
                    }
                    reading = false;
                    result = Err(e);
                }
                None => reading = false,
            },
            else => break,
        }
        if !reading && in_flight.is_empty() {
            break;
        }
    }
    result
}

/// How the client framed its call; the reply is framed the same way.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    Header {
        flags: u16,
        seq_id: u32,
        protocol: ProtocolId,
    },
    Framed(ProtocolId),
    Unframed(ProtocolId),
}

impl Dialect {
    fn protocol(self) -> ProtocolId {
        match self {
            Dialect::Header { protocol, .. }
            | Dialect::Framed(protocol)
            | Dialect::Unframed(protocol) => protocol,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Dialect::Header { .. } => "header",
            Dialect::Framed(ProtocolId::Binary) => "framed_binary",
            Dialect::Framed(ProtocolId::Compact) => "framed_compact",
            Dialect::Unframed(ProtocolId::Binary) => "unframed_binary",
            Dialect::Unframed(ProtocolId::Compact) => "unframed_compact",
        }
    }

    /// The parts of one reply message: frame head (if any), message head, body.
    fn wrap(self, info: &[(Bytes, Bytes)], message: [Bytes; 2]) -> Vec<Bytes> {
        let payload_len = message[0].len() + message[1].len();
        let mut parts = Vec::with_capacity(3);
        match self {
            Dialect::Header {
                flags,
                seq_id,
                protocol,
            } => {
                let mut head = BytesMut::with_capacity(64);
                let h = HeaderHead {
                    flags,
                    seq_id,
                    protocol,
                    transforms: &[],
                    info,
                    persistent: &[],
                };
                if encode_head(&h, payload_len, &mut head).is_err() {
                    // The upstream's info headers do not fit a THeader head: drop them rather
                    // than the reply.
                    head.clear();
                    let bare = HeaderHead { info: &[], ..h };
                    if encode_head(&bare, payload_len, &mut head).is_err() {
                        return Vec::new();
                    }
                }
                parts.push(head.freeze());
            }
            Dialect::Framed(_) => {
                parts.push(Bytes::copy_from_slice(&(payload_len as u32).to_be_bytes()));
            }
            Dialect::Unframed(_) => {}
        }
        parts.extend(message);
        parts
    }

    /// A `TApplicationException` reply to the call `name`/`seq_id`.
    fn exception(self, name: &str, seq_id: i32, kind: i32, message: &str) -> Vec<Bytes> {
        let body = encode_exception(self.protocol(), name, seq_id, kind, message);
        self.wrap(&[], [Bytes::new(), body])
    }
}

/// The parts of a call the listener works with once the frame is unpacked.
struct Unpacked {
    dialect: Dialect,
    payload: Bytes,
    info: InfoHeaders,
    persistent: InfoHeaders,
}

/// One frame through every phase. `None`: nothing to write back (a oneway call).
async fn handle_frame(
    stage: Arc<ThriftStage>,
    client: SocketAddr,
    frame: Frame,
) -> Option<Vec<Bytes>> {
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let unpacked = match frame {
        Frame::Header(h) => Unpacked {
            dialect: Dialect::Header {
                flags: h.flags,
                seq_id: h.seq_id,
                protocol: h.protocol,
            },
            payload: h.payload,
            info: h.info,
            persistent: h.persistent,
        },
        Frame::Framed { protocol, message } => Unpacked {
            dialect: Dialect::Framed(protocol),
            payload: message,
            info: Vec::new(),
            persistent: Vec::new(),
        },
        Frame::Unframed { protocol, message } => Unpacked {
            dialect: Dialect::Unframed(protocol),
            payload: message,
            info: Vec::new(),
            persistent: Vec::new(),
        },
        Frame::Invalid {
            flags,
            seq_id,
            protocol,
            error,
        } => {
            // The frame was whole but undecodable: answer it, keep the connection.
            stage.metrics.decode_error("thrift", error.reason());
            let kind = match error {
                ThriftError::UnknownTransform(_) | ThriftError::RepeatedTransform(_) => {
                    INVALID_TRANSFORM
                }
                _ => PROTOCOL_ERROR,
            };
            let dialect = Dialect::Header {
                flags,
                seq_id,
                protocol,
            };
            stage.metrics.request(
                &stage.listener,
                "-",
                "thrift",
                error.reason(),
                started.elapsed(),
            );
            return Some(dialect.exception("", seq_id as i32, kind, &error.to_string()));
        }
    };
    let dialect = unpacked.dialect;
    let protocol = dialect.protocol();

    // peek
    let header = match peek_message(&unpacked.payload, protocol) {
        Ok(Some(h)) if matches!(h.kind, MessageType::Call | MessageType::Oneway) => h,
        other => {
            let (reason, why) = match other {
                Ok(Some(h)) => (
                    "bad_message_type",
                    format!("expected a CALL or ONEWAY message, got {:?}", h.kind),
                ),
                Ok(None) => ("truncated", "the Thrift message is truncated".to_owned()),
                Err(e) => (e.reason(), e.to_string()),
            };
            stage.metrics.decode_error("thrift", reason);
            stage
                .metrics
                .request(&stage.listener, "-", "thrift", reason, started.elapsed());
            return Some(dialect.exception("", 0, PROTOCOL_ERROR, &why));
        }
    };
    let name = header.name.to_owned();
    let (seq_id, kind, body_offset) = (header.seq_id, header.kind, header.body_offset);
    let oneway = kind == MessageType::Oneway;
    let name_bytes = Bytes::copy_from_slice(name.as_bytes());
    let fail = |err: &GatewayError, route: &str| {
        stage
            .metrics
            .error(&stage.listener, err.kind.as_str(), err.side.as_str());
        stage.metrics.request(
            &stage.listener,
            route,
            "thrift",
            err.kind.as_str(),
            started.elapsed(),
        );
        (!oneway)
            .then(|| dialect.exception(&name, seq_id, err.kind.thrift_exception(), &err.message))
    };

    // route
    let Some(route) = stage.router.match_thrift(name.as_bytes()).cloned() else {
        let err = GatewayError::new(
            ErrorKind::NoRoute,
            Side::Downstream,
            format!("no route for Thrift method {name:?}"),
        );
        return fail(&err, "-");
    };

    // extract (only THeader clients can carry context)
    let extracted = stage.propagator.extract(&unpacked.info);
    let (format, result) = match (&extracted.format, &extracted.invalid) {
        (Some(f), _) => (f.as_str(), "ok"),
        (None, Some((f, _))) => (f.as_str(), "invalid"),
        (None, None) => ("none", "missing"),
    };
    stage.metrics.trace_extract(&stage.listener, format, result);

    // enforce
    let decision = enforce(&extracted, route.on_missing);
    if decision == Decision::Reject {
        stage.metrics.trace_rejected(&stage.listener);
        let mut message = format!(
            "missing trace context: this route requires one of the THeader headers {}",
            stage.propagator.extract_header_names().join(", ")
        );
        if !matches!(dialect, Dialect::Header { .. }) {
            message.push_str(&format!(
                " (this client speaks {}, which cannot carry headers; THeader can)",
                dialect.as_str()
            ));
        }
        if let Some((_, e)) = &extracted.invalid {
            message.push_str(&format!("; invalid: {e}"));
        }
        let err = GatewayError::new(ErrorKind::MissingTraceContext, Side::Downstream, message);
        return fail(&err, &route.name);
    }

    // sample + the gateway's two spans
    let call_trace = match decision {
        Decision::Continue { parent } => {
            let sampled = stage.sampler.sample(Some(&parent), &parent.trace_id);
            Some(CallTrace::new(
                parent.trace_id,
                Some(parent.span_id),
                sampled,
                parent,
            ))
        }
        Decision::Start => {
            let trace_id = TraceId::random();
            let sampled = stage.sampler.sample(None, &trace_id);
            Some(CallTrace::new(
                trace_id,
                None,
                sampled,
                TraceContext::default(),
            ))
        }
        Decision::Pass | Decision::Reject => None,
    };

    // inject: THeader upstreams get the context in info headers; others cannot carry it.
    let upstream = &route.upstream;
    let mut info = unpacked.info;
    let mut persistent = unpacked.persistent;
    if upstream.transport() == ThriftTransport::Header {
        if let Some(t) = &call_trace {
            pool::with_writer(|w| stage.propagator.inject(&t.upstream_context, &mut info, w));
        }
    } else {
        if call_trace.is_some() || !info.is_empty() {
            stage.metrics.trace_carrier_missing(upstream.name());
        }
        info.clear();
        persistent.clear();
    }

    // dispatch
    let flags = match dialect {
        Dialect::Header { flags, .. } => flags,
        _ => 0,
    };
    let call = ThriftCall {
        name: name_bytes,
        kind,
        protocol,
        args: unpacked.payload.slice(body_offset..),
        info,
        persistent,
        flags,
    };
    let upstream_started = SystemTime::now();
    let outcome = match tokio::time::timeout(route.timeout, upstream.call(call)).await {
        Ok(r) => r,
        Err(_) => Err(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            Side::Upstream,
            format!(
                "upstream {} did not answer within {:?}",
                upstream.name(),
                route.timeout
            ),
        )),
    };

    // reply
    let (parts, code, error) = match outcome {
        Ok(None) => (None, "ok", None),
        Ok(Some(reply)) => match reply_parts(dialect, &name, seq_id, reply) {
            Ok((parts, code)) => (Some(parts), code, None),
            Err(err) => {
                let parts = fail(&err, &route.name);
                (parts, err.kind.as_str(), Some(err.to_string()))
            }
        },
        Err(err) => {
            let parts = fail(&err, &route.name);
            (parts, err.kind.as_str(), Some(err.to_string()))
        }
    };
    if error.is_none() {
        stage.metrics.request(
            &stage.listener,
            &route.name,
            "thrift",
            code,
            started.elapsed(),
        );
    }
    stage.metrics.upstream_request(
        upstream.name(),
        if error.is_some() { "error" } else { code },
        started.elapsed(),
    );
    if let Some(t) = call_trace.filter(|t| t.sampled) {
        record_spans(
            &stage,
            &route,
            SpanFacts {
                trace: t,
                name: &name,
                dialect,
                client,
                started: started_wall,
                upstream_started,
                code,
                error,
            },
        );
    }
    if oneway { None } else { parts }
}

/// The client's reply: its seqid, its protocol (re-encoded only if the upstream's differs).
fn reply_parts(
    dialect: Dialect,
    name: &str,
    seq_id: i32,
    reply: ThriftReply,
) -> Result<(Vec<Bytes>, &'static str), GatewayError> {
    let protocol = dialect.protocol();
    let body = if reply.protocol == protocol {
        reply.args
    } else {
        transcode_struct(&reply.args, reply.protocol, protocol).map_err(|e| {
            GatewayError::new(
                ErrorKind::UpstreamProtocol,
                Side::Upstream,
                format!("upstream reply could not be re-encoded: {}", e.message),
            )
        })?
    };
    let mut head = BytesMut::with_capacity(16 + name.len());
    encode_message_header(&mut head, protocol, name, reply.kind, seq_id);
    let code = if reply.kind == MessageType::Exception {
        "exception"
    } else {
        "ok"
    };
    Ok((dialect.wrap(&reply.info, [head.freeze(), body]), code))
}

struct SpanFacts<'a> {
    trace: CallTrace,
    name: &'a str,
    dialect: Dialect,
    client: SocketAddr,
    started: SystemTime,
    upstream_started: SystemTime,
    code: &'static str,
    error: Option<String>,
}

/// Server and client spans with the RPC semantic conventions (`rpc.system = apache_thrift`).
/// `rpc.service` is the `Service:` prefix of a multiplexed name, else the upstream's name.
fn record_spans(stage: &ThriftStage, route: &ThriftRoute, f: SpanFacts<'_>) {
    let end = SystemTime::now();
    let (service, method) = match f.name.split_once(':') {
        Some((s, m)) => (s.to_owned(), m.to_owned()),
        None => (route.upstream.name().to_owned(), f.name.to_owned()),
    };
    let span_name = format!("{service}/{method}");
    let status = match (&f.error, f.code) {
        (Some(e), _) => SpanStatus::Error(e.clone().into()),
        (None, "exception") => {
            SpanStatus::Error("upstream answered a TApplicationException".into())
        }
        _ => SpanStatus::Unset,
    };
    let common = [
        ("rpc.system", AttrValue::Str("apache_thrift".into())),
        ("rpc.service", AttrValue::Str(service.into())),
        ("rpc.method", AttrValue::Str(method.into())),
    ];
    let mut server_attrs = common.to_vec();
    server_attrs.extend([
        ("network.transport", AttrValue::Str("tcp".into())),
        (
            "client.address",
            AttrValue::Str(f.client.ip().to_string().into()),
        ),
        (
            "tracebridge.thrift.client_type",
            AttrValue::Str(f.dialect.as_str().into()),
        ),
        (
            "tracebridge.route",
            AttrValue::Str(route.name.to_string().into()),
        ),
        (
            "tracebridge.listener",
            AttrValue::Str(stage.listener.to_string().into()),
        ),
    ]);
    let mut client_attrs = common.to_vec();
    client_attrs.extend([
        (
            "tracebridge.upstream",
            AttrValue::Str(route.upstream.name().to_owned().into()),
        ),
        (
            "tracebridge.thrift.upstream_transport",
            AttrValue::Str(
                match route.upstream.transport() {
                    ThriftTransport::Header => "header",
                    ThriftTransport::Framed => "framed",
                    ThriftTransport::Unframed => "unframed",
                }
                .into(),
            ),
        ),
    ]);
    let ctx = &f.trace.upstream_context;
    stage.spans.record(SpanRecord {
        trace_id: ctx.trace_id,
        span_id: f.trace.server_span,
        parent_span_id: f.trace.parent_span,
        flags: ctx.flags,
        name: span_name.clone().into(),
        kind: SpanKind::Server,
        start: f.started,
        end,
        status: status.clone(),
        attributes: server_attrs,
    });
    stage.spans.record(SpanRecord {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        parent_span_id: Some(f.trace.server_span),
        flags: ctx.flags,
        name: span_name.into(),
        kind: SpanKind::Client,
        start: f.upstream_started,
        end,
        status,
        attributes: client_attrs,
    });
}
