//! The HTTP listener: HTTP/1.1 and h2c with prior knowledge on one port (hyper-util's auto
//! connection), each request run through the phases
//! route → extract → enforce → sample → inject → dispatch → respond → record.
//!
//! A route with `bridge = "json-grpc"` sends plain HTTP/JSON callers to a gRPC upstream
//! through the same phases, with `bridge` between inject and dispatch (see [`bridge`]).
//!
//! h2c via `Upgrade: h2c` is deprecated by RFC 9113 §3.1; a request that offers it is served
//! over HTTP/1.1 (RFC 9110 §7.8 lets a server ignore `Upgrade`) and the header is not forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod bridge;

use super::CallTrace;
use crate::bridge::JsonGrpcBridge;
use crate::codec::http::{add_forwarding_headers, own_hops, remove_hop_by_hop};
use crate::codec::{grpc, grpc_web};
use crate::config::OnMissing;
use crate::error::{ErrorKind, GatewayError, Side};
use crate::policy::{Decision, HttpRequestView, Router, Sampler, enforce};
use crate::telemetry::{AttrValue, Metrics, SpanKind, SpanRecord, SpanSink, SpanStatus};
use crate::trace::{Propagator, TraceContext, TraceId, pool};
use crate::upstream::http::{BoxError, HttpUpstream, box_body};

/// The body the gateway answers with: the upstream's streamed body or a small error body.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Own `Via` hops after which a request is refused as a routing loop.
const MAX_OWN_HOPS: usize = 8;

/// A route of an HTTP listener, resolved to its upstream.
#[derive(Debug)]
pub struct HttpRoute {
    /// Route name (metrics, spans).
    pub name: Arc<str>,
    /// Span name prefix target: the route's path prefix, if it has one.
    pub path_prefix: Option<Arc<str>>,
    /// Where matching requests go.
    pub upstream: Arc<HttpUpstream>,
    /// Time allowed from dispatch to the upstream's response head.
    pub timeout: Duration,
    /// What to do without trace context.
    pub on_missing: OnMissing,
    /// HTTP/JSON → gRPC transcoding for plain HTTP callers (`bridge = "json-grpc"`).
    pub bridge: Option<Arc<JsonGrpcBridge>>,
}

/// Everything an HTTP listener's requests need, shared by its connections.
#[derive(Debug)]
pub struct HttpStage {
    /// Listener name (metrics, logs).
    pub listener: Arc<str>,
    /// Routes of this listener.
    pub router: Router<Arc<HttpRoute>>,
    /// Extract order and inject set.
    pub propagator: Arc<Propagator>,
    /// Sampler for the gateway's spans.
    pub sampler: Sampler,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where finished spans go.
    pub spans: SpanSink,
}

/// Connection-level limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most concurrent connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Most time to read a request head on HTTP/1.1.
    pub header_timeout: Duration,
    /// How long in-flight requests may run once shutdown starts.
    pub drain_timeout: Duration,
}

/// Accepts connections until `shutdown` fires, then drains in-flight requests for up to
/// `limits.drain_timeout`.
pub async fn serve_http(
    listener: TcpListener,
    stage: Arc<HttpStage>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    while let Some((permit, stream, remote)) =
        super::accept_next(&listener, &permits, &shutdown, &stage.listener).await
    {
        let stage = stage.clone();
        stage.metrics.connection_opened(&stage.listener);
        let service_stage = stage.clone();
        let service = hyper::service::service_fn(move |req| {
            let stage = service_stage.clone();
            async move { Ok::<_, Infallible>(handle(stage, remote, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = %stage.listener, error = %e, "connection ended with error");
            }
            stage.metrics.connection_closed(&stage.listener);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %stage.listener, "drain timeout passed with requests still in flight");
    }
}

/// One request through every phase.
pub async fn handle(
    stage: Arc<HttpStage>,
    client: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let started_wall = SystemTime::now();
    // gRPC-Web calls are gRPC calls once translated: same statuses, deadlines and spans.
    let web = grpc_web::mode(req.headers());
    let grpc = grpc::is_grpc(req.headers()) || web.is_some();

    // route
    let Some(route) = stage.router.match_http(&HttpRequestView::of(&req)).cloned() else {
        let err = GatewayError::new(
            ErrorKind::NoRoute,
            Side::Downstream,
            format!("no route for {} {}", req.method(), req.uri().path()),
        );
        stage
            .metrics
            .error(&stage.listener, err.kind.as_str(), err.side.as_str());
        stage.metrics.request(
            &stage.listener,
            "-",
            "http",
            err.kind.http_status_str(),
            started.elapsed(),
        );
        return error_response_for(grpc, web.as_ref(), &err, None);
    };
    // gRPC and gRPC-Web callers of a bridged route are forwarded as they are.
    let bridge = route.bridge.as_ref().filter(|_| !grpc);

    // A request that already crossed this gateway MAX_OWN_HOPS times is looping.
    if own_hops(req.headers()) >= MAX_OWN_HOPS {
        let err = GatewayError::new(
            ErrorKind::LoopDetected,
            Side::Downstream,
            format!("request crossed this gateway {MAX_OWN_HOPS} times: routing loop"),
        );
        stage
            .metrics
            .error(&stage.listener, err.kind.as_str(), err.side.as_str());
        stage.metrics.request(
            &stage.listener,
            &route.name,
            "http",
            err.kind.http_status_str(),
            started.elapsed(),
        );
        return error_response_for(grpc, web.as_ref(), &err, None);
    }

    // extract
    let extracted = stage.propagator.extract(req.headers());
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
        stage.metrics.request(
            &stage.listener,
            &route.name,
            "http",
            "400",
            started.elapsed(),
        );
        let invalid = extracted.invalid.as_ref().map(|(_, e)| e.to_string());
        if grpc {
            let err = GatewayError::new(
                ErrorKind::MissingTraceContext,
                Side::Downstream,
                reject_message(&stage.propagator, invalid.as_deref()),
            );
            return error_response_for(true, web.as_ref(), &err, None);
        }
        return reject_response(&stage.propagator, invalid);
    }

    // sample + the gateway's two spans
    let call = match decision {
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

    // inject
    let version = req.version();
    let headers = req.headers_mut();
    remove_hop_by_hop(headers);
    add_forwarding_headers(headers, version, client.ip());
    if let Some(call) = &call {
        pool::with_writer(|w| stage.propagator.inject(&call.upstream_context, headers, w));
    }

    let mut record = CallRecord {
        stage: stage.clone(),
        route: route.clone(),
        started,
        started_wall,
        status: None,
        grpc,
        grpc_status: None,
        error: None,
        web_fault: None,
        span: call.filter(|c| c.sampled).map(|c| {
            Box::new(SpanInfo {
                trace: c,
                method: req.method().clone(),
                target: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                version,
                client,
                upstream_started: SystemTime::now(),
                rpc_path: None,
            })
        }),
    };
    let trace_id = record
        .span
        .as_ref()
        .map(|s| s.trace.upstream_context.trace_id);

    // gRPC deadline: the caller's grpc-timeout, less the time spent here, bounds the wait
    // and is forwarded.
    let deadline = if grpc {
        req.headers()
            .get("grpc-timeout")
            .and_then(|v| grpc::parse_timeout(v.as_bytes()))
            .map(|d| d.saturating_sub(started.elapsed()))
    } else {
        None
    };
    if let Some(left) = deadline {
        req.headers_mut()
            .insert("grpc-timeout", grpc::encode_timeout(left));
    }
    let timeout = deadline.map_or(route.timeout, |d| d.min(route.timeout));

    // dispatch (a gRPC-Web call leaves as gRPC)
    if let Some(w) = &web {
        grpc_web::request_headers(req.headers_mut(), w);
    }
    // Only a `-text` body is decoded here, so only it can be the caller's fault.
    let web_fault = web
        .as_ref()
        .filter(|w| w.text)
        .map(|_| grpc_web::Fault::default());
    record.web_fault = web_fault.clone();
    let (parts, body) = req.into_parts();
    let mut bridged = None;
    let upstream_req = if let Some(b) = bridge {
        // bridge: the JSON request becomes one gRPC message
        match bridge::request(b, parts, body, &mut record, timeout).await {
            Ok((upstream_req, call)) => {
                bridged = Some(call);
                upstream_req
            }
            Err(err) => return fail(record, err, false, None, trace_id.as_ref()),
        }
    } else {
        let body = match &web {
            Some(w) if w.text => {
                let fault = web_fault.clone().unwrap_or_default();
                box_body(grpc_web::DecodeText::new(body, fault))
            }
            _ => box_body(body),
        };
        Request::from_parts(parts, body)
    };
    let dispatched = Instant::now();
    let outcome = tokio::time::timeout(timeout, route.upstream.send(upstream_req)).await;
    let result = match outcome {
        Ok(result) => result,
        Err(_) if deadline.is_some_and(|d| d <= route.timeout) => Err(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            Side::Upstream,
            format!(
                "deadline exceeded: upstream {} did not answer within the caller's grpc-timeout",
                route.upstream.name()
            ),
        )),
        Err(_) => Err(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            Side::Upstream,
            format!(
                "upstream {} did not answer within {:?}",
                route.upstream.name(),
                route.timeout
            ),
        )),
    };

    // A request body the gateway could not decode is the caller's error, whatever the upstream
    // made of the reset it caused.
    let result = match (result, web_fault.as_ref().and_then(|f| f.get())) {
        (Err(_), Some(why)) => Err(GatewayError::new(
            ErrorKind::BadRequest,
            Side::Downstream,
            why.clone(),
        )),
        (result, _) => result,
    };

    // respond (record happens when the response body is finished or dropped)
    match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            record.status = Some(parts.status);
            if record.grpc {
                // A trailers-only response carries its status in the headers.
                record.grpc_status = grpc::status_of(&parts.headers);
            }
            let body = RecordedBody {
                inner: body,
                record: Some(record),
            };
            if let Some(call) = bridged {
                let deadline = dispatched + timeout;
                return bridge::respond(call, parts, body, trace_id.as_ref(), deadline).await;
            }
            match &web {
                Some(w) => {
                    grpc_web::response_headers(&mut parts.headers, w);
                    let fault = web_fault.unwrap_or_default();
                    let body = grpc_web::EncodeWeb::new(body, w.text, fault);
                    Response::from_parts(parts, body.boxed_unsync())
                }
                None => Response::from_parts(parts, body.boxed_unsync()),
            }
        }
        Err(err) => fail(record, err, grpc, web.as_ref(), trace_id.as_ref()),
    }
}

/// A gateway-made error after the call was set up: counted, answered in the caller's terms,
/// and recorded on the call's spans.
fn fail(
    mut record: CallRecord,
    err: GatewayError,
    grpc: bool,
    web: Option<&grpc_web::WebMode>,
    trace_id: Option<&TraceId>,
) -> Response<ResponseBody> {
    let stage = &record.stage;
    stage
        .metrics
        .error(&stage.listener, err.kind.as_str(), err.side.as_str());
    let response = error_response_for(grpc, web, &err, trace_id);
    record.status = Some(response.status());
    if grpc {
        record.grpc_status = Some(err.kind.grpc_code());
    }
    record.error = Some(err.to_string());
    drop(record);
    response
}

/// What the server and client spans need, kept only for sampled calls.
#[derive(Debug)]
struct SpanInfo {
    trace: CallTrace,
    method: http::Method,
    target: String,
    version: http::Version,
    client: SocketAddr,
    upstream_started: SystemTime,
    /// A bridged call's gRPC path (`/package.Service/Method`): names the RPC on the spans and
    /// is the client span's `url.path`.
    rpc_path: Option<Arc<str>>,
}

/// Records metrics and spans of one call when dropped: at the end of the response body, when
/// the downstream goes away mid-body, or right away for gateway-made errors.
struct CallRecord {
    stage: Arc<HttpStage>,
    route: Arc<HttpRoute>,
    started: Instant,
    started_wall: SystemTime,
    status: Option<StatusCode>,
    /// The call is gRPC: spans get the RPC conventions.
    grpc: bool,
    /// `grpc-status` from the response headers (trailers-only) or trailers.
    grpc_status: Option<u32>,
    error: Option<String>,
    span: Option<Box<SpanInfo>>,
    /// Set when a gRPC-Web-text request body was not base64: counted as malformed input.
    web_fault: Option<grpc_web::Fault>,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if self.web_fault.as_ref().is_some_and(|f| f.get().is_some()) {
            self.stage.metrics.decode_error("grpc-web", "bad_base64");
        }
        let code = self.status.as_ref().map_or("0", StatusCode::as_str);
        self.stage.metrics.request(
            &self.stage.listener,
            &self.route.name,
            "http",
            code,
            self.started.elapsed(),
        );
        let outcome = if self.error.is_some() { "error" } else { code };
        self.stage.metrics.upstream_request(
            self.route.upstream.name(),
            outcome,
            self.started.elapsed(),
        );
        if let Some(info) = self.span.take() {
            self.record_spans(*info);
        }
    }
}

impl CallRecord {
    fn record_spans(&mut self, info: SpanInfo) {
        let end = SystemTime::now();
        let ctx = &info.trace.upstream_context;
        let status_code = self.status.map_or(0, |s| s.as_u16());
        let mut status = match &self.error {
            Some(e) => SpanStatus::Error(e.clone().into()),
            None if status_code >= 500 => SpanStatus::Error(format!("HTTP {status_code}").into()),
            None => SpanStatus::Unset,
        };
        let method = info.method.as_str().to_owned();
        let target_path = info.target.split('?').next().unwrap_or("");
        // What the upstream was sent: a bridged call leaves as `POST /package.Service/Method`.
        let (upstream_method, upstream_path) = match &info.rpc_path {
            Some(path) => ("POST", &**path),
            None => (method.as_str(), target_path),
        };
        let rpc = self
            .grpc
            .then(|| grpc::service_and_method(upstream_path))
            .flatten();
        let mut name = match &self.route.path_prefix {
            Some(prefix) => format!("{method} {prefix}"),
            None => method.clone(),
        };
        let mut rpc_attrs = Vec::new();
        if let Some((service, rpc_method)) = rpc {
            // OpenTelemetry RPC conventions: `package.Service/Method`, status in the attribute;
            // any non-OK status marks the span as an error.
            name = format!("{service}/{rpc_method}");
            rpc_attrs.push(("rpc.system", AttrValue::Str("grpc".into())));
            rpc_attrs.push(("rpc.service", AttrValue::Str(service.to_owned().into())));
            rpc_attrs.push(("rpc.method", AttrValue::Str(rpc_method.to_owned().into())));
            if let Some(code) = self.grpc_status {
                rpc_attrs.push(("rpc.grpc.status_code", AttrValue::Int(code.into())));
                if code != 0 && matches!(status, SpanStatus::Unset) {
                    status = SpanStatus::Error(format!("gRPC status {code}").into());
                }
            }
        }
        let status_attr = (status_code != 0).then(|| {
            (
                "http.response.status_code",
                AttrValue::Int(status_code.into()),
            )
        });
        let mut server_attrs = vec![
            ("http.request.method", AttrValue::Str(method.clone().into())),
            ("url.path", AttrValue::Str(target_path.to_owned().into())),
            ("url.scheme", AttrValue::Str("http".into())),
            (
                "network.protocol.version",
                AttrValue::Str(version_str(info.version).into()),
            ),
            (
                "client.address",
                AttrValue::Str(info.client.ip().to_string().into()),
            ),
            (
                "tracebridge.route",
                AttrValue::Str(self.route.name.to_string().into()),
            ),
            (
                "tracebridge.listener",
                AttrValue::Str(self.stage.listener.to_string().into()),
            ),
        ];
        if let Some(prefix) = &self.route.path_prefix {
            server_attrs.push(("http.route", AttrValue::Str(prefix.to_string().into())));
        }
        server_attrs.extend(status_attr.clone());
        let mut client_attrs = vec![
            (
                "http.request.method",
                AttrValue::Str(upstream_method.to_owned().into()),
            ),
            ("url.path", AttrValue::Str(upstream_path.to_owned().into())),
            (
                "tracebridge.upstream",
                AttrValue::Str(self.route.upstream.name().to_owned().into()),
            ),
            (
                "network.protocol.version",
                AttrValue::Str(
                    if self.route.upstream.is_http2() {
                        "2"
                    } else {
                        "1.1"
                    }
                    .into(),
                ),
            ),
        ];
        client_attrs.extend(status_attr);
        server_attrs.extend(rpc_attrs.iter().cloned());
        client_attrs.extend(rpc_attrs);
        self.stage.spans.record(SpanRecord {
            trace_id: ctx.trace_id,
            span_id: info.trace.server_span,
            parent_span_id: info.trace.parent_span,
            flags: ctx.flags,
            name: name.clone().into(),
            kind: SpanKind::Server,
            start: self.started_wall,
            end,
            status: status.clone(),
            attributes: server_attrs,
        });
        self.stage.spans.record(SpanRecord {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: Some(info.trace.server_span),
            flags: ctx.flags,
            name: name.into(),
            kind: SpanKind::Client,
            start: info.upstream_started,
            end,
            status,
            attributes: client_attrs,
        });
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body, streamed through; the call is recorded when it ends.
    struct RecordedBody {
        #[pin]
        inner: Incoming,
        record: Option<CallRecord>,
    }
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                if let Some(record) = this.record.as_mut() {
                    record.error = Some(format!("upstream body failed: {e}"));
                }
                this.record.take();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.record.take();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(record), Some(trailers)) = (this.record.as_mut(), frame.trailers_ref())
                    && record.grpc
                {
                    record.grpc_status = grpc::status_of(trailers);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A gateway-made error as HTTP: the kind's status and `{"error", "kind", "side", "trace_id"}`.
pub fn error_response(err: &GatewayError, trace_id: Option<&TraceId>) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "error": err.to_string(),
        "kind": err.kind.as_str(),
        "side": err.side.as_str(),
        "trace_id": trace_id.map(|t| t.to_hex()),
    });
    json_response(
        StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
        &body,
    )
}

/// A gateway-made error in the caller's terms: a gRPC status for gRPC calls, JSON otherwise.
/// gRPC-Web callers get the status the same way, under their own content type.
pub fn error_response_for(
    grpc: bool,
    web: Option<&grpc_web::WebMode>,
    err: &GatewayError,
    trace_id: Option<&TraceId>,
) -> Response<ResponseBody> {
    if !grpc {
        return error_response(err, trace_id);
    }
    let mut response = grpc_status_response(err, trace_id);
    if let Some(w) = web {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, w.content_type.clone());
    }
    response
}

/// A gateway-made error for a gRPC caller: a trailers-only response (HTTP 200, no body) with
/// the kind's `grpc-status`, the message in `grpc-message`, and the trace id in
/// `tracebridge-trace-id`.
pub fn grpc_status_response(
    err: &GatewayError,
    trace_id: Option<&TraceId>,
) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(err.kind.grpc_code()));
    let mut message = err.to_string();
    if let Some(t) = trace_id {
        message.push_str(&format!(" (trace id {})", t.to_hex()));
        if let Ok(v) = HeaderValue::from_str(&t.to_hex()) {
            headers.insert("tracebridge-trace-id", v);
        }
    }
    headers.insert("grpc-message", grpc::encode_message(&message));
    response
}

fn reject_message(propagator: &Propagator, invalid: Option<&str>) -> String {
    let mut message = format!(
        "missing trace context: this route requires one of the headers {}",
        propagator.extract_header_names().join(", ")
    );
    if let Some(e) = invalid {
        message.push_str(&format!("; invalid: {e}"));
    }
    message
}

fn reject_response(propagator: &Propagator, invalid: Option<String>) -> Response<ResponseBody> {
    let looked_for = propagator.extract_header_names();
    let body = serde_json::json!({
        "error": format!(
            "missing trace context: this route requires one of the headers {}",
            looked_for.join(", ")
        ),
        "kind": ErrorKind::MissingTraceContext.as_str(),
        "side": Side::Downstream.as_str(),
        "looked_for": looked_for,
        "invalid": invalid,
        "trace_id": null,
    });
    json_response(StatusCode::BAD_REQUEST, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
