//! The HTTP listener: HTTP/1.1 and h2c with prior knowledge on one port (hyper-util's auto
//! connection). Each request runs through the [`pipeline`](crate::pipeline) with the
//! [`HttpCall`] adapter: plain HTTP, gRPC, gRPC-Web (leaving as gRPC) and, on routes with
//! `bridge = "json-grpc"`, plain HTTP/JSON bridged to a gRPC upstream (see [`bridge`]).
//!
//! Before routing, the request target is settled (see [`target`](crate::codec::http::target)): one authority, which
//! becomes the `Host` an HTTP/1.1 upstream sees, and a normalised path; `CONNECT` is refused.
//! `X-Forwarded-*` from a peer outside the listener's `trusted_proxies` are overwritten.
//!
//! h2c via `Upgrade: h2c` is deprecated by RFC 9113 §3.1; a request that offers it is served
//! over HTTP/1.1 (RFC 9110 §7.8 lets a server ignore `Upgrade`) and the header is not forwarded.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod bridge;
mod downstream;
mod recorded;

use super::guard;
use super::linger::Lingering;
use super::registry::{Registry, Slot};

use crate::bridge::JsonGrpcBridge;
use crate::call::{Call, Code, Outcome, Protocol, Request as CallRequest};
use crate::codec::http::target::{TargetError, decode_target};
use crate::codec::http::{
    Forwarded, add_forwarding_headers, client_value, own_hops, remove_hop_by_hop,
};
use crate::codec::{grpc, grpc_web};
use crate::config::PathNormalization;
use crate::error::{ErrorKind, GatewayError, Side};
use crate::pipeline::{self, Adapter, Recorded, RoutePolicy, Routed, Stage, respond};
use crate::policy::trust::is_trusted;
use crate::policy::{Cidr, HttpRequestView};
use crate::trace::Carrier;
use crate::upstream::http::{HttpUpstream, UpstreamBody, box_body};
use downstream::DownstreamBody;
pub(crate) use recorded::RecordedBody;

pub use crate::pipeline::respond::ResponseBody;

/// h2: most streams reset by the client before the server accepted them (h2's default).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// h2: most streams the server reset for the client's protocol errors (hyper's default).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Own `Via` hops after which a request is refused as a routing loop.
const MAX_OWN_HOPS: usize = 8;

/// A route of an HTTP listener, resolved to its upstream.
#[derive(Debug)]
pub struct HttpRoute {
    /// Name, trace policy, timeout and metric handles.
    pub policy: Arc<RoutePolicy>,
    /// Where matching requests go.
    pub upstream: Arc<HttpUpstream>,
    /// HTTP/JSON → gRPC transcoding for plain HTTP callers (`bridge = "json-grpc"`).
    pub bridge: Option<Arc<JsonGrpcBridge>>,
    /// The `Host` sent upstream instead of the caller's authority (`host_rewrite`).
    pub host_rewrite: Option<HeaderValue>,
}

impl Routed for HttpRoute {
    fn policy(&self) -> &Arc<RoutePolicy> {
        &self.policy
    }
}

/// Everything an HTTP listener's requests share.
pub type HttpStage = Stage<HttpRoute>;

/// Connection-level limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most concurrent connections; at the cap the oldest idle one is shed, and only when
    /// all are busy do further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Most time a connection may go without a request in flight (the first byte, a request
    /// head on HTTP/1.1, the next frame on Thrift, an idle h2 connection).
    pub header_timeout: Duration,
    /// How long in-flight requests may run once shutdown starts.
    pub drain_timeout: Duration,
}

/// What a listener does with hostile request targets and forwarding headers.
#[derive(Debug, Clone, Default)]
pub struct Hardening {
    /// What happens to request paths before routing.
    pub path_normalization: PathNormalization,
    /// Peers whose `X-Forwarded-*` headers are kept.
    pub trusted_proxies: Arc<[Cidr]>,
}

/// Accepts connections until `shutdown` fires, then drains in-flight requests for up to
/// `limits.drain_timeout`. Each request runs on the stage current when it arrives (a
/// reload swaps `stage`; requests in flight finish on the one they started with). Each
/// connection runs under [`guard::drive`](super::guard::drive): first-byte and idle timeouts,
/// shedding at `max_connections`, graceful close on drain.
pub async fn serve_http(
    listener: TcpListener,
    stage: Arc<ArcSwap<HttpStage>>,
    limits: Limits,
    hardening: Hardening,
    shutdown: CancellationToken,
) {
    let name = stage.load().listener.clone();
    let recorder = stage.load().recorder.clone();
    let registry = Registry::new(limits.max_connections);
    let tracker = TaskTracker::new();
    let builder = connection_builder(limits.header_timeout);
    // Fired once the listening socket is closed (see `guard`).
    let drain = CancellationToken::new();
    let serve = |slot: Slot, stream: TcpStream, remote: SocketAddr| {
        recorder.listener.connection_opened();
        let slot = Arc::new(slot);
        let service_stage = stage.clone();
        let service_slot = slot.clone();
        let peer = Peer::new(remote, &hardening);
        let service = hyper::service::service_fn(move |req| {
            let busy = service_slot.busy();
            let call = handle(service_stage.load_full(), &peer, req);
            async move {
                let response = call.await;
                busy.finish();
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder
            .serve_connection(
                TokioIo::new(Lingering::new(stream, tracker.clone())),
                service,
            )
            .into_owned();
        let (recorder, name, drain) = (recorder.clone(), name.clone(), drain.clone());
        tracker.spawn(async move {
            let closed = guard::drive(
                conn,
                |c| c.graceful_shutdown(),
                &slot,
                limits.header_timeout,
                &drain,
                &name,
            )
            .await;
            if let Some(reason) = closed.cut_reason() {
                recorder.listener.connection_cut(reason);
            }
            recorder.listener.connection_closed();
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
        tracing::warn!(listener = %name, "drain timeout passed with requests still in flight");
    }
}

/// The auto (HTTP/1.1 + h2c) connection builder: request heads bounded by `header_timeout`
/// on HTTP/1.1; on h2, keep-alive pings every `header_timeout`, the connection closed when
/// one is not acknowledged within `header_timeout` (a peer gone silent).
pub(crate) fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout)
        // Rapid reset: streams reset before they were accepted (h2's own count, GOAWAY
        // ENHANCE_YOUR_CALM beyond it), and streams the gateway reset for the client's errors.
        // Streams the client resets after they were accepted are budgeted per connection by
        // the registry (see `registry::RESET_BURST`).
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
    builder
}

/// One request through the pipeline. The future is the pipeline's own (no wrapper layer:
/// hyper moves it into place once per request, so its size is a per-request cost).
pub fn handle(
    stage: Arc<HttpStage>,
    peer: &Peer,
    mut req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> + Send + use<> {
    // decode: a refused target is answered by the route phase (with the call's trace id).
    let refused = decode_target(&mut req, peer.path_normalization).err();
    // gRPC-Web calls are gRPC calls once translated: same statuses, deadlines and spans.
    let web = grpc_web::mode(req.headers());
    let protocol = match (&web, grpc::is_grpc(req.headers())) {
        (Some(_), _) => Protocol::GrpcWeb,
        (None, true) => Protocol::Grpc,
        (None, false) => Protocol::Http,
    };
    let mut call = Call::new(
        stage.listener.clone(),
        protocol,
        peer.addr,
        CallRequest::Http {
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            version: req.version(),
        },
    );
    call.client_ip = Some(peer.ip.clone());
    let adapter = HttpCall {
        web,
        fault: None,
        bridged: None,
        caller_deadline: false,
        forwarded_for: peer.forwarded_for.clone(),
        trusted: peer.trusted,
        refused,
    };
    pipeline::run(stage, adapter, call, req)
}

/// The downstream end of a connection, as text made once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The caller's address.
    pub addr: SocketAddr,
    /// Its IP as text (spans, access log).
    pub ip: Arc<str>,
    /// Its IP as an `X-Forwarded-For` element.
    pub forwarded_for: HeaderValue,
    /// It is one of the listener's `trusted_proxies`: its `X-Forwarded-*` are kept.
    pub trusted: bool,
    /// The listener's `path_normalization`.
    pub path_normalization: PathNormalization,
}

impl Peer {
    /// The peer at `addr`, on a listener with `hardening`.
    pub fn new(addr: SocketAddr, hardening: &Hardening) -> Self {
        Peer {
            addr,
            ip: addr.ip().to_string().into(),
            forwarded_for: client_value(addr.ip()),
            trusted: is_trusted(&hardening.trusted_proxies, addr.ip()),
            path_normalization: hardening.path_normalization,
        }
    }
}

/// The HTTP adapter's per-call state.
struct HttpCall {
    /// The caller's address as an `X-Forwarded-For` element.
    forwarded_for: HeaderValue,
    /// The caller's gRPC-Web flavour, if it speaks gRPC-Web.
    web: Option<grpc_web::WebMode>,
    /// Set when a gRPC-Web-text request body is not base64 (only `-text` bodies are decoded
    /// here, so only they can be the caller's fault).
    fault: Option<grpc_web::Fault>,
    /// The bridge binding, on a bridged call.
    bridged: Option<bridge::BridgedCall>,
    /// The deadline is the caller's `grpc-timeout`, not the route timeout.
    caller_deadline: bool,
    /// The caller is a trusted proxy: its `X-Forwarded-*` are kept.
    trusted: bool,
    /// Why the request target was refused at decode, if it was.
    refused: Option<TargetError>,
}

impl Adapter for HttpCall {
    type Route = HttpRoute;
    type Request = Request<Incoming>;
    type Outbound = Request<UpstreamBody>;
    type Reply = Response<Incoming>;
    type Response = Response<ResponseBody>;

    fn route(
        &mut self,
        stage: &HttpStage,
        call: &mut Call,
        req: &Request<Incoming>,
    ) -> Result<Arc<HttpRoute>, GatewayError> {
        if let Some(why) = self.refused.take() {
            return Err(refused(why));
        }
        let Some(route) = stage.router.match_http(&HttpRequestView::of(req)) else {
            return Err(GatewayError::new(
                ErrorKind::NoRoute,
                Side::Downstream,
                format!("no route for {} {}", req.method(), req.uri().path()),
            ));
        };
        // A plain HTTP caller on a bridged route is a JSON → gRPC call from here on, also when
        // it fails before the bridge phase (a rejection): one protocol label per route.
        if route.bridge.is_some() && call.protocol == Protocol::Http {
            call.protocol = Protocol::JsonGrpc;
        }
        // A request that already crossed this gateway MAX_OWN_HOPS times is looping.
        if own_hops(req.headers()) >= MAX_OWN_HOPS {
            return Err(GatewayError::new(
                ErrorKind::LoopDetected,
                Side::Downstream,
                format!("request crossed this gateway {MAX_OWN_HOPS} times: routing loop"),
            ));
        }
        Ok(route.clone())
    }

    fn carrier<'a>(&self, req: &'a Request<Incoming>) -> &'a (dyn Carrier + Sync) {
        req.headers()
    }

    async fn bridge(
        &mut self,
        call: &mut Call,
        route: &HttpRoute,
        mut req: Request<Incoming>,
    ) -> Result<Request<UpstreamBody>, GatewayError> {
        call.bytes_in = content_length(req.headers());
        let version = req.version();
        remove_hop_by_hop(req.headers_mut());
        let headers = req.headers_mut();
        let host = headers.get(http::header::HOST).cloned();
        let forwarded = Forwarded {
            version,
            client: &self.forwarded_for,
            host: host.as_ref(),
            trusted: self.trusted,
        };
        add_forwarding_headers(headers, &forwarded);
        if let Some(name) = &route.host_rewrite {
            headers.insert(http::header::HOST, name.clone());
        }
        if call.protocol.speaks_grpc() {
            // The caller's grpc-timeout, if sooner than the route's, bounds the call.
            let caller = req
                .headers()
                .get("grpc-timeout")
                .and_then(|v| grpc::parse_timeout(v.as_bytes()))
                .map(|d| call.timings.started + d);
            if let (Some(c), Some(d)) = (caller, call.deadline)
                && c <= d
            {
                call.deadline = Some(c);
                self.caller_deadline = true;
            }
        }
        // gRPC and gRPC-Web callers of a bridged route are forwarded as they are.
        if let Some(b) = route
            .bridge
            .as_ref()
            .filter(|_| call.protocol == Protocol::JsonGrpc)
        {
            let (parts, body) = req.into_parts();
            // Plain HTTP callers have no deadline of their own: the route's timeout travels.
            let timeout = route.policy.timeout;
            // Boxed: the bridge's state would otherwise enlarge every request's future.
            let (out, bridged) = Box::pin(bridge::request(b, parts, body, call, timeout)).await?;
            self.bridged = Some(bridged);
            return Ok(out);
        }
        let (mut parts, body) = req.into_parts();
        let body = match &self.web {
            Some(w) => {
                grpc_web::request_headers(&mut parts.headers, w);
                if w.text {
                    let fault = grpc_web::Fault::default();
                    self.fault = Some(fault.clone());
                    box_body(grpc_web::DecodeText::new(DownstreamBody::new(body), fault))
                } else {
                    box_body(DownstreamBody::new(body))
                }
            }
            None => box_body(DownstreamBody::new(body)),
        };
        Ok(Request::from_parts(parts, body))
    }

    fn upstream_carrier<'a>(
        &self,
        out: &'a mut Request<UpstreamBody>,
    ) -> Option<&'a mut dyn Carrier> {
        Some(out.headers_mut())
    }

    async fn dispatch(
        &mut self,
        call: &mut Call,
        route: &HttpRoute,
        mut out: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let left = pipeline::time_left(call).unwrap_or(route.policy.timeout);
        if call.protocol.speaks_grpc() && self.caller_deadline {
            // What is left of the caller's deadline travels on.
            out.headers_mut()
                .insert("grpc-timeout", grpc::encode_timeout(left));
        }
        let (endpoint, sent) = route.upstream.send_next(out);
        call.endpoint = Some(endpoint);
        let result = match tokio::time::timeout(left, sent).await {
            Ok(result) => result,
            Err(_) => Err(pipeline::timeout_error(call, self.caller_deadline)),
        };
        // A request body the gateway could not decode is the caller's error, whatever the
        // upstream made of the reset it caused.
        match (result, self.fault.as_ref().and_then(|f| f.get())) {
            (Err(_), Some(why)) => Err(GatewayError::new(
                ErrorKind::BadRequest,
                Side::Downstream,
                why.clone(),
            )),
            // The caller's body broke off or was malformed (e.g. bad chunked framing): the
            // upstream client reports it as a send error, but the fault is the caller's.
            (Err(e), None) if downstream::body_failure(&e).is_some() => Err(GatewayError::new(
                ErrorKind::BadRequest,
                Side::Downstream,
                "request body could not be read from the downstream",
            )
            .with_source(e)),
            (result, _) => result,
        }
    }

    async fn respond(
        self,
        mut call: Recorded,
        response: Response<Incoming>,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        call.outcome = match call.protocol {
            // A trailers-only answer carries its status in the headers; otherwise the
            // trailers will (RecordedBody).
            Protocol::Grpc | Protocol::GrpcWeb => match grpc::status_of(&parts.headers) {
                Some(s) => Outcome::Answered {
                    code: Code::Grpc(s),
                },
                None => Outcome::Pending,
            },
            _ => Outcome::Answered {
                code: Code::Http(parts.status.as_u16()),
            },
        };
        // A bridged answer is known only once the bridge has read the reply: the bridge's
        // body ends the call.
        let hold = self.bridged.is_some();
        let body = RecordedBody::new(body, call, self.fault.clone(), hold);
        if let Some(bridged) = self.bridged {
            return Box::pin(bridge::respond(bridged, parts, body)).await;
        }
        match &self.web {
            Some(w) => {
                grpc_web::response_headers(&mut parts.headers, w);
                let fault = self.fault.unwrap_or_default();
                let body = grpc_web::EncodeWeb::new(body, w.text, fault);
                Response::from_parts(parts, body.boxed_unsync())
            }
            None => Response::from_parts(parts, body.boxed_unsync()),
        }
    }

    fn respond_error(self, mut call: Recorded, err: GatewayError) -> Response<ResponseBody> {
        if self.fault.as_ref().is_some_and(|f| f.get().is_some()) {
            call.recorder()
                .metrics
                .decode_error("grpc-web", "bad_base64");
        }
        match call.protocol {
            Protocol::Grpc | Protocol::GrpcWeb => {
                let ct = self.web.as_ref().map(|w| &w.content_type);
                respond::grpc(&mut call, &err, ct)
            }
            Protocol::Http | Protocol::JsonGrpc | Protocol::Thrift => {
                respond::http(&mut call, &err)
            }
        }
    }
}

/// A request target refused at decode, as the gateway's error.
fn refused(why: TargetError) -> GatewayError {
    let kind = match why {
        TargetError::Connect => ErrorKind::MethodNotAllowed,
        _ => ErrorKind::BadRequest,
    };
    GatewayError::new(kind, Side::Downstream, why.to_string())
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
