//! The Thrift listener: the client's transport is detected from its first bytes (THeader,
//! framed or unframed, binary or compact), each frame's message head is peeked, and every
//! call runs through the [`pipeline`](crate::pipeline) with the [`ThriftCall`] adapter; the
//! reply goes back in the client's own dialect.
//!
//! Calls on one connection may be pipelined: up to `max_inflight_per_connection` (default
//! [`MAX_PIPELINE`]) holding at most `max_inflight_bytes` of frames run at once — beyond
//! either the connection stops reading until calls finish — and their replies are written in
//! the order the calls arrived (what every Thrift client expects; a
//! THeader reply also carries the request's header seq id, which fbthrift's out-of-order
//! clients match on). Oneway calls are forwarded and never answered.
//!
//! A connection waiting on its client (nothing in flight) must deliver its next frame within
//! `header_timeout` of its last progress (connect, a frame read, a reply written), whole: a
//! silent socket or a frame announced and then stalled is closed. At `max_connections` the
//! oldest such connection is shed (see `listener::registry`).
//!
//! The payload is never re-encoded unless the client's and the upstream's protocols differ:
//! the arguments travel as the same `Bytes` behind a freshly written head.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::DRAIN_FIRST_REQUEST;
use super::http::Limits;
use super::registry::{Registry, Slot};
use crate::call::{Call, Code, Outcome, Protocol, Request as CallRequest};
use crate::codec::thrift::frame::{DecodeError, Frame, ThriftDecoder};
use crate::codec::thrift::header::{InfoHeaders, info_list};
use crate::codec::thrift::{
    Dialect, HeaderFields, MessageHeader, MessageType, ProtocolId, ThriftError, Transport,
    encode_message_header, peek_message, transcode_struct,
};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::io::write_all_vectored;
use crate::pipeline::{self, Adapter, Recorded, Recorder, RoutePolicy, Routed, Stage, respond};
use crate::trace::Carrier;
use crate::upstream::thrift::{ThriftCall as ThriftForward, ThriftReply, ThriftUpstream};

/// Default calls of one connection in flight at once (`max_inflight_per_connection`);
/// further frames wait in the socket.
pub const MAX_PIPELINE: usize = 64;

/// Default bytes of frames one connection may hold in flight (`max_inflight_bytes`).
pub const MAX_INFLIGHT_BYTES: usize = 64 << 20;

/// Per-connection bounds of a Thrift listener.
#[derive(Debug, Clone, Copy)]
pub struct ThriftBounds {
    /// Largest frame accepted (Apache's `max_frame_size`).
    pub max_frame: u32,
    /// Most calls in flight per connection.
    pub max_inflight: usize,
    /// Most bytes of frames held by calls in flight per connection: reading stops once they
    /// reach it (so at most one frame's worth beyond it is held), and a single frame larger
    /// than this is refused from its length prefix (the connection closed).
    pub max_inflight_bytes: usize,
}

impl Default for ThriftBounds {
    fn default() -> Self {
        ThriftBounds {
            max_frame: crate::codec::thrift::DEFAULT_MAX_FRAME_SIZE,
            max_inflight: MAX_PIPELINE,
            max_inflight_bytes: MAX_INFLIGHT_BYTES,
        }
    }
}

/// A route of a Thrift listener, resolved to its upstream.
#[derive(Debug)]
pub struct ThriftRoute {
    /// Name, trace policy, timeout and metric handles.
    pub policy: Arc<RoutePolicy>,
    /// Where matching calls go.
    pub upstream: Arc<ThriftUpstream>,
}

impl Routed for ThriftRoute {
    fn policy(&self) -> &Arc<RoutePolicy> {
        &self.policy
    }
}

/// Everything a Thrift listener's calls share.
pub type ThriftStage = Stage<ThriftRoute>;

/// Accepts connections until `shutdown` fires, then lets calls in flight finish for up to
/// `limits.drain_timeout` (connections stop reading new calls at once). Each call runs on the
/// stage current when it arrives (a reload swaps `stage`).
pub async fn serve_thrift(
    listener: TcpListener,
    stage: Arc<ArcSwap<ThriftStage>>,
    limits: Limits,
    bounds: ThriftBounds,
    shutdown: CancellationToken,
) {
    let name = stage.load().listener.clone();
    let recorder = stage.load().recorder.clone();
    let registry = Registry::new(limits.max_connections);
    let tracker = TaskTracker::new();
    // Fired once the listening socket is closed: a client that reconnects is refused rather
    // than queued on a socket about to close.
    let drain = CancellationToken::new();
    let serve = |slot: Slot, stream: TcpStream, remote: SocketAddr| {
        let (stage, recorder, name) = (stage.clone(), recorder.clone(), name.clone());
        let token = drain.clone();
        tracker.spawn(async move {
            recorder.listener.connection_opened();
            let conn = Connection {
                stage,
                recorder: recorder.clone(),
                client: remote,
                client_ip: remote.ip().to_string().into(),
                bounds,
                header_timeout: limits.header_timeout,
            };
            if let Err(e) = conn.serve(stream, &slot, token).await {
                tracing::debug!(listener = %name, client = %remote, error = %e, "thrift connection ended with error");
            }
            recorder.listener.connection_closed();
            drop(slot);
        });
    };
    while let Some((slot, stream, remote)) =
        super::accept_next(&listener, &registry, &shutdown, &name).await
    {
        serve(slot, stream, remote);
    }
    for (slot, stream, remote) in super::accept_queued(&listener, &registry) {
        serve(slot, stream, remote);
    }
    drop(listener);
    drain.cancel();
    tracker.close();
    if tokio::time::timeout(limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "drain timeout passed with Thrift calls still in flight");
    }
}

/// One downstream connection.
struct Connection {
    stage: Arc<ArcSwap<ThriftStage>>,
    recorder: Arc<Recorder>,
    client: SocketAddr,
    client_ip: Arc<str>,
    bounds: ThriftBounds,
    header_timeout: Duration,
}

impl Connection {
    /// Reads frames, runs calls (pipelined, bounded in count and bytes), writes replies in
    /// arrival order. Returns when the client closes, the framing is lost, the client kept
    /// the connection waiting past `header_timeout`, the registry shed it, or shutdown
    /// drained it.
    async fn serve(
        &self,
        stream: TcpStream,
        slot: &Slot,
        shutdown: CancellationToken,
    ) -> Result<(), DecodeError> {
        let (read, mut write) = stream.into_split();
        let budget = self.bounds.max_inflight_bytes;
        // A frame larger than the whole budget could never be admitted: the decoder refuses
        // it from its length prefix, before buffering it.
        let limit =
            u32::try_from(budget).map_or(self.bounds.max_frame, |b| b.min(self.bounds.max_frame));
        let mut frames = FramedRead::new(read, ThriftDecoder::new(limit));
        let mut in_flight = FuturesOrdered::new();
        let mut held = 0usize;
        let mut reading = true;
        let mut result = Ok(());
        // Draining before the first frame arrived: that one frame is still read and answered
        // (its client may have sent it already), if it comes by this instant.
        let mut first_by: Option<Instant> = None;
        let mut seen = false;
        let deadline = tokio::time::sleep(self.header_timeout);
        tokio::pin!(deadline);
        loop {
            slot.set_busy(in_flight.len());
            let room = in_flight.len() < self.bounds.max_inflight && held < budget;
            tokio::select! {
                // Replies first: a finished call frees a pipeline slot.
                biased;
                Some((size, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                    let (size, reply): (usize, Option<Vec<Bytes>>) = (size, reply);
                    held -= size;
                    if let Some(mut parts) = reply
                        && let Err(e) = write_all_vectored(&mut write, &mut parts).await
                    {
                        return Err(e.into());
                    }
                    deadline.as_mut().reset(Instant::now() + self.header_timeout);
                }
                _ = shutdown.cancelled(), if reading && first_by.is_none() => {
                    if seen {
                        reading = false;
                    } else {
                        let by = Instant::now() + DRAIN_FIRST_REQUEST.min(self.header_timeout);
                        first_by = Some(by);
                        deadline.as_mut().reset(by);
                    }
                }
                _ = slot.shed().cancelled(), if reading => {
                    tracing::debug!(client = %self.client, "shedding an idle Thrift connection at max_connections");
                    self.recorder.listener.connection_cut("shed");
                    reading = false;
                }
                // Waiting on the client (nothing in flight): the next frame is late.
                _ = deadline.as_mut(), if reading && in_flight.is_empty() => {
                    tracing::info!(client = %self.client, partial = frames.read_buffer().len(), "closing Thrift connection: no whole frame within header_timeout");
                    self.recorder.listener.connection_cut("timeout");
                    reading = false;
                    result = Err(DecodeError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no whole Thrift frame within header_timeout {:?}", self.header_timeout),
                    )));
                }
                frame = frames.next(), if reading && room => match frame {
                    Some(Ok(frame)) => {
                        let size = frame_size(&frame);
                        held += size;
                        deadline.as_mut().reset(Instant::now() + self.header_timeout);
                        let call = handle_frame(self.stage.load_full(), self.client, self.client_ip.clone(), frame);
                        in_flight.push_back(async move { (size, call.await) });
                        seen = true;
                        if first_by.is_some() {
                            reading = false;
                        }
                    }
                    Some(Err(e)) => {
                        if let DecodeError::Thrift(t) = &e {
                            self.recorder.metrics.decode_error("thrift", t.reason());
                            self.log_lost(t, limit);
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

    /// Why the framing was lost, naming the in-flight budget when it was the limit.
    fn log_lost(&self, error: &ThriftError, limit: u32) {
        match error {
            ThriftError::FrameTooLarge { size, .. }
                if limit < self.bounds.max_frame && *size <= u64::from(self.bounds.max_frame) =>
            {
                tracing::info!(
                    client = %self.client,
                    "closing Thrift connection: frame of {size} bytes exceeds max_inflight_bytes {}",
                    self.bounds.max_inflight_bytes
                );
            }
            t => {
                tracing::info!(client = %self.client, error = %t, "closing Thrift connection: framing lost");
            }
        }
    }
}

/// The bytes a call holds while in flight: its frame's payload and headers.
fn frame_size(frame: &Frame) -> usize {
    match frame {
        Frame::Header(h) => {
            let info = |i: &InfoHeaders| i.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            h.payload.len() + info(&h.info) + info(&h.persistent)
        }
        Frame::Framed { message, .. } | Frame::Unframed { message, .. } => message.len(),
        Frame::Invalid { .. } => 0,
    }
}

/// How the client framed its call; the reply is framed the same way (a THeader reply echoes
/// the request's flags and header seq id).
#[derive(Debug, Clone, Copy)]
struct Framing {
    dialect: Dialect,
    flags: u16,
    seq_id: u32,
}

impl Framing {
    fn of(dialect: Dialect) -> Self {
        Framing {
            dialect,
            flags: 0,
            seq_id: 0,
        }
    }

    fn protocol(self) -> ProtocolId {
        self.dialect.protocol
    }

    /// The parts of one reply message: frame head, message head, body.
    fn wrap(self, info: &[(Bytes, Bytes)], message: [Bytes; 2]) -> Vec<Bytes> {
        let payload_len = message[0].len() + message[1].len();
        let fields = HeaderFields {
            flags: self.flags,
            seq_id: self.seq_id,
            info,
            persistent: &[],
        };
        let mut head = BytesMut::with_capacity(64);
        if self
            .dialect
            .encode_frame_head(&fields, payload_len, &mut head)
            .is_err()
        {
            // The upstream's info headers do not fit a THeader head: drop them rather than
            // the reply.
            head.clear();
            let bare = HeaderFields {
                info: &[],
                ..fields
            };
            if self
                .dialect
                .encode_frame_head(&bare, payload_len, &mut head)
                .is_err()
            {
                return Vec::new();
            }
        }
        let [message_head, body] = message;
        vec![head.freeze(), message_head, body]
    }
}

/// A call as the listener decoded it, or why it could not be.
struct ThriftIn {
    decoded: Result<Decoded, GatewayError>,
}

/// A decoded call: its message head and the untouched payload.
struct Decoded {
    kind: MessageType,
    payload: Bytes,
    body_offset: usize,
    info: InfoHeaders,
    persistent: InfoHeaders,
}

/// One frame through the pipeline. `None`: nothing to write back (a oneway call).
async fn handle_frame(
    stage: Arc<ThriftStage>,
    client: SocketAddr,
    client_ip: Arc<str>,
    frame: Frame,
) -> Option<Vec<Bytes>> {
    let (adapter, req) = unpack(&stage, frame);
    let mut call = Call::new(
        stage.listener.clone(),
        Protocol::Thrift,
        client,
        CallRequest::Thrift {
            name: Bytes::copy_from_slice(adapter.name.as_bytes()),
            dialect: adapter.framing.dialect.as_str(),
        },
    );
    call.client_ip = Some(client_ip);
    pipeline::run(stage, adapter, call, req).await
}

/// Unpacks a frame into the adapter (how to answer) and the request (what to forward).
/// Frames that cannot be decoded are counted here and answered by the pipeline.
fn unpack(stage: &ThriftStage, frame: Frame) -> (ThriftCall, ThriftIn) {
    let (framing, payload, info, persistent) = match frame {
        Frame::Header(h) => (
            Framing {
                dialect: Dialect::new(Transport::Header, h.protocol),
                flags: h.flags,
                seq_id: h.seq_id,
            },
            h.payload,
            h.info,
            h.persistent,
        ),
        Frame::Framed { protocol, message } => (
            Framing::of(Dialect::new(Transport::Framed, protocol)),
            message,
            Vec::new(),
            Vec::new(),
        ),
        Frame::Unframed { protocol, message } => (
            Framing::of(Dialect::new(Transport::Unframed, protocol)),
            message,
            Vec::new(),
            Vec::new(),
        ),
        Frame::Invalid {
            flags,
            seq_id,
            protocol,
            error,
        } => {
            let framing = Framing {
                dialect: Dialect::new(Transport::Header, protocol),
                flags,
                seq_id,
            };
            return undecodable(stage, framing, &error);
        }
    };
    match peek_message(&payload, framing.protocol()) {
        Ok(Some(h)) if matches!(h.kind, MessageType::Call | MessageType::Oneway) => {
            let oneway = h.kind == MessageType::Oneway;
            let adapter = ThriftCall::new(framing, h.name.to_owned(), h.seq_id, oneway);
            let decoded = Decoded {
                kind: h.kind,
                body_offset: h.body_offset,
                payload: payload.clone(),
                info,
                persistent,
            };
            let req = ThriftIn {
                decoded: Ok(decoded),
            };
            (adapter, req)
        }
        other => not_a_call(stage, framing, other),
    }
}

/// A whole THeader frame that could not be decoded: answered (INVALID_TRANSFORM for a
/// transform it cannot apply, else PROTOCOL_ERROR), the connection kept.
fn undecodable(
    stage: &ThriftStage,
    framing: Framing,
    error: &ThriftError,
) -> (ThriftCall, ThriftIn) {
    stage
        .recorder
        .metrics
        .decode_error("thrift", error.reason());
    let kind = match error {
        ThriftError::UnknownTransform(_) | ThriftError::RepeatedTransform(_) => {
            ErrorKind::InvalidTransform
        }
        _ => ErrorKind::BadRequest,
    };
    let err = GatewayError::new(kind, Side::Downstream, error.to_string());
    let adapter = ThriftCall::new(framing, String::new(), framing.seq_id as i32, false);
    (adapter, ThriftIn { decoded: Err(err) })
}

/// A message that is not a CALL or ONEWAY, or cannot be read. A message head that was read
/// names the call the client will match the exception to; an unreadable one has no name or
/// seqid to echo.
fn not_a_call(
    stage: &ThriftStage,
    framing: Framing,
    peeked: Result<Option<MessageHeader<'_>>, ThriftError>,
) -> (ThriftCall, ThriftIn) {
    let (reason, why, name, seq_id) = match peeked {
        Ok(Some(h)) => (
            "bad_message_type",
            format!("expected a CALL or ONEWAY message, got {:?}", h.kind),
            h.name.to_owned(),
            h.seq_id,
        ),
        Ok(None) => (
            "truncated",
            "the Thrift message is truncated".to_owned(),
            String::new(),
            0,
        ),
        Err(e) => (e.reason(), e.to_string(), String::new(), 0),
    };
    stage.recorder.metrics.decode_error("thrift", reason);
    let err = GatewayError::new(ErrorKind::BadRequest, Side::Downstream, why);
    let adapter = ThriftCall::new(framing, name, seq_id, false);
    (adapter, ThriftIn { decoded: Err(err) })
}

/// The Thrift adapter's per-call state: how to answer the caller.
struct ThriftCall {
    framing: Framing,
    name: String,
    seq_id: i32,
    oneway: bool,
}

impl ThriftCall {
    fn new(framing: Framing, name: String, seq_id: i32, oneway: bool) -> Self {
        ThriftCall {
            framing,
            name,
            seq_id,
            oneway,
        }
    }
}

impl Adapter for ThriftCall {
    type Route = ThriftRoute;
    type Request = ThriftIn;
    type Outbound = UpstreamCall;
    type Reply = Option<ThriftReply>;
    type Response = Option<Vec<Bytes>>;

    fn route(
        &mut self,
        stage: &ThriftStage,
        call: &mut Call,
        req: &ThriftIn,
    ) -> Result<Arc<ThriftRoute>, GatewayError> {
        let decoded = req.decoded.as_ref().map_err(clone_error)?;
        call.bytes_in = decoded.payload.len() as u64;
        stage
            .router
            .match_thrift(self.name.as_bytes())
            .cloned()
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::NoRoute,
                    Side::Downstream,
                    format!("no route for Thrift method {:?}", self.name),
                )
            })
    }

    fn carrier<'a>(&self, req: &'a ThriftIn) -> &'a (dyn Carrier + Sync) {
        // Only THeader clients can carry context.
        match &req.decoded {
            Ok(d) => &d.info,
            Err(_) => &NO_HEADERS,
        }
    }

    fn reject_hint(&self) -> Option<String> {
        let dialect = self.framing.dialect;
        (!dialect.carries_headers()).then(|| {
            format!(
                "this client speaks {}, which cannot carry headers; THeader can",
                dialect.as_str()
            )
        })
    }

    async fn bridge(
        &mut self,
        _call: &mut Call,
        route: &ThriftRoute,
        req: ThriftIn,
    ) -> Result<UpstreamCall, GatewayError> {
        let mut d = req.decoded?;
        let header = route.upstream.dialect().carries_headers();
        let flags = self.framing.flags;
        let call = ThriftForward {
            name: Bytes::copy_from_slice(self.name.as_bytes()),
            kind: d.kind,
            protocol: self.framing.protocol(),
            args: d.payload.slice(d.body_offset..),
            // Non-THeader upstreams cannot carry info headers at all. The upstream's list is
            // the inject carrier: a reused one, as the decoded list may have no room left.
            info: if header {
                let mut info = info_list();
                info.append(&mut d.info);
                info
            } else {
                Vec::new()
            },
            persistent: if header { d.persistent } else { Vec::new() },
            flags,
        };
        Ok(UpstreamCall { call, header })
    }

    fn upstream_carrier<'a>(&self, out: &'a mut UpstreamCall) -> Option<&'a mut dyn Carrier> {
        out.carrier()
    }

    async fn dispatch(
        &mut self,
        call: &mut Call,
        route: &ThriftRoute,
        out: UpstreamCall,
    ) -> Result<Option<ThriftReply>, GatewayError> {
        let left = pipeline::time_left(call).unwrap_or(route.policy.timeout);
        match tokio::time::timeout(left, route.upstream.call(out.call)).await {
            Ok(r) => r,
            Err(_) => Err(pipeline::timeout_error(call, false)),
        }
    }

    async fn respond(self, mut call: Recorded, reply: Option<ThriftReply>) -> Option<Vec<Bytes>> {
        let Some(reply) = reply else {
            call.outcome = Outcome::Answered {
                code: Code::ThriftOneway,
            };
            return None;
        };
        match reply_parts(self.framing, &self.name, self.seq_id, reply) {
            Ok((parts, code)) => {
                call.bytes_out = parts.iter().map(|p| p.len() as u64).sum();
                call.outcome = Outcome::Answered { code };
                (!self.oneway).then_some(parts)
            }
            Err(err) => self.respond_error(call, err),
        }
    }

    fn respond_error(self, mut call: Recorded, err: GatewayError) -> Option<Vec<Bytes>> {
        let protocol = self.framing.protocol();
        let message = respond::thrift(&mut call, &err, protocol, &self.name, self.seq_id);
        (!self.oneway).then(|| self.framing.wrap(&[], [Bytes::new(), message]))
    }
}

/// The empty carrier of a call that could not be decoded.
static NO_HEADERS: InfoHeaders = Vec::new();

/// A decode error is answered once; the route phase hands the pipeline its own copy.
fn clone_error(e: &GatewayError) -> GatewayError {
    GatewayError::new(e.kind, e.side, e.message.clone())
}

/// The call as it leaves for the upstream; a THeader upstream's info list is its carrier.
struct UpstreamCall {
    call: ThriftForward,
    header: bool,
}

impl UpstreamCall {
    fn carrier(&mut self) -> Option<&mut dyn Carrier> {
        self.header
            .then_some(&mut self.call.info as &mut dyn Carrier)
    }
}

/// The client's reply: its seqid, its protocol (re-encoded only if the upstream's differs).
fn reply_parts(
    framing: Framing,
    name: &str,
    seq_id: i32,
    reply: ThriftReply,
) -> Result<(Vec<Bytes>, Code), GatewayError> {
    let protocol = framing.protocol();
    let body = if reply.protocol == protocol {
        reply.args
    } else {
        transcode_struct(&reply.args, reply.protocol, protocol).map_err(|e| {
            GatewayError::new(
                ErrorKind::UpstreamProtocol,
                Side::Upstream,
                format!("upstream reply could not be re-encoded: {e}"),
            )
        })?
    };
    let mut head = BytesMut::with_capacity(16 + name.len());
    encode_message_header(&mut head, protocol, name, reply.kind, seq_id);
    let code = if reply.kind == MessageType::Exception {
        Code::ThriftException
    } else {
        Code::ThriftReply
    };
    Ok((framing.wrap(&reply.info, [head.freeze(), body]), code))
}
