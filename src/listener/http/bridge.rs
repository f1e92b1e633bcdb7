//! The `bridge` phase of the HTTP listener for routes with `bridge = "json-grpc"`: a plain
//! HTTP/JSON request becomes a gRPC call on the route's upstream, and the gRPC reply comes
//! back as JSON.
//!
//! Request: the verb and path pick a binding ([`JsonGrpcBridge::find`], 404 otherwise); the
//! body is read whole up to `max_request_body` (413 beyond); the message goes out as
//! `POST /package.Service/Method` with `content-type: application/grpc`, `te: trailers` and
//! `grpc-timeout` set from the route timeout. The caller's other headers, trace context
//! already injected, travel as metadata, as on any forwarded call.
//!
//! Reply: unary calls wait for the status and answer `application/json` (the message, or for
//! a non-OK status the mapped HTTP status with `{"error", "code", "status", "trace_id"}`).
//! Server-streaming calls answer `application/x-ndjson`, one line per message as it arrives;
//! a non-OK status after the first message becomes a last line `{"error": {...}}`. The
//! upstream's initial metadata is forwarded as response headers, gRPC's own headers dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{RecordedBody, ResponseBody};
use crate::bridge::reply::{GrpcStatus, ReplyDecoder, ReplyEvent};
use crate::bridge::{JsonGrpcBridge, status};
use crate::call::{Call, Code, Outcome};
use crate::codec::grpc;
use crate::error::{ErrorKind, GatewayError, Side};
use crate::pipeline::respond::{http_error, json_response};
use crate::upstream::http::{BoxError, UpstreamBody, box_body};

/// A bridged call in flight: which binding answers it.
pub(super) struct BridgedCall {
    bridge: Arc<JsonGrpcBridge>,
    binding: usize,
    streaming: bool,
}

/// Builds the gRPC request for a plain HTTP request on a bridged route.
pub(super) async fn request(
    bridge: &Arc<JsonGrpcBridge>,
    mut parts: http::request::Parts,
    body: Incoming,
    call: &mut Call,
    timeout: Duration,
) -> Result<(Request<UpstreamBody>, BridgedCall), GatewayError> {
    let matched = bridge.find(&parts.method, parts.uri.path())?;
    let binding = matched.binding;
    let method = bridge
        .binding(binding)
        .and_then(|b| bridge.method_of(b))
        .ok_or_else(|| GatewayError::new(ErrorKind::Internal, Side::Internal, "lost binding"))?;
    let (path, streaming) = (method.path.clone(), method.server_streaming);
    // From here on the upstream side is a gRPC call: spans name the RPC.
    call.upstream_target = Some(path.clone());
    let json = read_body(body, &parts.headers, bridge.max_request_body, timeout).await?;
    let frame = bridge.request_frame(matched, parts.uri.query(), &json)?;

    parts.method = Method::POST;
    parts.uri = Uri::try_from(&*path).map_err(|e| {
        GatewayError::new(ErrorKind::Internal, Side::Internal, "bad gRPC path").with_source(e)
    })?;
    let headers = &mut parts.headers;
    for name in [
        header::CONTENT_ENCODING,
        header::ACCEPT_ENCODING,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
    headers.insert("grpc-timeout", grpc::encode_timeout(timeout));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(frame.len()));
    let call = BridgedCall {
        bridge: bridge.clone(),
        binding,
        streaming,
    };
    Ok((Request::from_parts(parts, box_body(Full::new(frame))), call))
}

/// The JSON request body, whole, at most `max` bytes, within `timeout`.
async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::TooLarge,
            Side::Downstream,
            format!("request body exceeds the bridge's limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(GatewayError::new(
            ErrorKind::BadRequest,
            Side::Downstream,
            format!("request body did not arrive within {timeout:?}"),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(GatewayError::new(
            ErrorKind::BadRequest,
            Side::Downstream,
            "cannot read the request body",
        )
        .with_source(e)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Translates the gRPC reply into the HTTP caller's answer.
pub(super) async fn respond(
    call: BridgedCall,
    parts: http::response::Parts,
    mut body: RecordedBody,
) -> Response<ResponseBody> {
    let deadline = body
        .call_mut()
        .and_then(|c| c.deadline)
        .unwrap_or_else(Instant::now);
    let mut decoder = ReplyDecoder::new(body, &parts.headers, call.bridge.max_message);
    // A trailers-only reply carries its status in the headers.
    let head_status = GrpcStatus::of(&parts.headers);
    let mut metadata = HeaderMap::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let internal = n.starts_with("grpc-")
            || matches!(n, "content-type" | "content-length" | "te" | "trailer");
        if !internal {
            metadata.append(name.clone(), value.clone());
        }
    }
    if parts.status != StatusCode::OK {
        let err = GatewayError::new(
            ErrorKind::UpstreamProtocol,
            Side::Upstream,
            format!("upstream answered HTTP {}, not a gRPC reply", parts.status),
        );
        return gateway_error(&mut decoder, &err);
    }
    let mut message = None;
    loop {
        let next = std::future::poll_fn(|cx| decoder.poll_event(cx));
        let event = match tokio::time::timeout_at(deadline, next).await {
            Ok(Ok(event)) => event,
            Ok(Err(err)) => return gateway_error(&mut decoder, &err),
            Err(_) => {
                let err = GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    Side::Upstream,
                    "the upstream's gRPC reply did not complete within the route timeout",
                );
                return gateway_error(&mut decoder, &err);
            }
        };
        match event {
            ReplyEvent::Message(m) if call.streaming => {
                let first = match line(&call, &m) {
                    Ok(l) => l,
                    Err(err) => return gateway_error(&mut decoder, &err),
                };
                let trace = trace_hex(&mut decoder);
                set_status(&mut decoder, StatusCode::OK, None);
                let body = NdjsonBody {
                    decoder,
                    call,
                    first: Some(first),
                    trace,
                    done: false,
                };
                return answer(StatusCode::OK, NDJSON, metadata, body.boxed_unsync());
            }
            ReplyEvent::Message(m) if message.is_none() => message = Some(m),
            ReplyEvent::Message(_) => {
                let err = GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    Side::Upstream,
                    "unary gRPC reply carried more than one message",
                );
                return gateway_error(&mut decoder, &err);
            }
            ReplyEvent::End(status) => {
                let status = status.or(head_status);
                return finish(&mut decoder, &call, status, message, metadata);
            }
        }
    }
}

/// The answer once the reply ended: the message (or for streaming, nothing), or the
/// non-OK status as a JSON error.
fn finish(
    decoder: &mut ReplyDecoder<RecordedBody>,
    call: &BridgedCall,
    status: Option<GrpcStatus>,
    message: Option<Bytes>,
    metadata: HeaderMap,
) -> Response<ResponseBody> {
    let status = match status {
        Some(s) => s,
        None => {
            let err = GatewayError::new(
                ErrorKind::UpstreamProtocol,
                Side::Upstream,
                "upstream's gRPC reply ended without a grpc-status",
            );
            return gateway_error(decoder, &err);
        }
    };
    if status.code != 0 {
        let http_status = status::http_status(status.code);
        set_status(decoder, http_status, Some(status.code));
        let trace = trace_hex(decoder);
        let body = status::error_body(status.code, &status.message, trace.as_deref());
        let mut response = json_response(http_status, &body);
        merge(response.headers_mut(), metadata);
        return response;
    }
    let (content_type, body) = match (call.streaming, message) {
        (true, _) => (NDJSON, Bytes::new()),
        (false, Some(m)) => match call.bridge.reply_json(call.binding, &m) {
            Ok(json) => (JSON, Bytes::from(json)),
            Err(err) => return gateway_error(decoder, &err),
        },
        (false, None) => {
            let err = GatewayError::new(
                ErrorKind::UpstreamProtocol,
                Side::Upstream,
                "unary gRPC reply has status OK but no message",
            );
            return gateway_error(decoder, &err);
        }
    };
    set_status(decoder, StatusCode::OK, Some(0));
    let body = Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    answer(StatusCode::OK, content_type, metadata, body)
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

fn answer(
    status: StatusCode,
    content_type: &'static str,
    metadata: HeaderMap,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    merge(response.headers_mut(), metadata);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn merge(into: &mut HeaderMap, metadata: HeaderMap) {
    let mut last = None;
    for (name, value) in metadata {
        if let Some(n) = name {
            last = Some(n);
        }
        if let Some(n) = &last {
            into.append(n.clone(), value);
        }
    }
}

/// The call's outcome: the HTTP status the caller gets, and the gRPC status behind it.
fn set_status(decoder: &mut ReplyDecoder<RecordedBody>, status: StatusCode, grpc: Option<u32>) {
    if let Some(call) = decoder.inner_mut().call_mut() {
        call.outcome = Outcome::Answered {
            code: Code::Http(status.as_u16()),
        };
        call.upstream_code = grpc.map(Code::Grpc);
    }
}

/// The trace id the caller is shown.
fn trace_hex(decoder: &mut ReplyDecoder<RecordedBody>) -> Option<String> {
    decoder
        .inner_mut()
        .call_mut()
        .map(|c| c.trace_id().to_hex())
}

/// A gateway-made error after the upstream answered, as the caller's JSON answer.
fn gateway_error(
    decoder: &mut ReplyDecoder<RecordedBody>,
    err: &GatewayError,
) -> Response<ResponseBody> {
    match decoder.inner_mut().call_mut() {
        Some(call) => crate::pipeline::respond::http(call, err),
        None => http_error(err, &crate::trace::TraceId::random()),
    }
}

/// One NDJSON line: the message as JSON and `\n`.
fn line(call: &BridgedCall, message: &[u8]) -> Result<Bytes, GatewayError> {
    let mut json = call.bridge.reply_json(call.binding, message)?;
    json.push(b'\n');
    Ok(Bytes::from(json))
}

/// The last NDJSON line of a stream that failed: `{"error": {...}}`.
fn error_line(code: u32, message: &str, trace: Option<&str>) -> Bytes {
    let mut out = serde_json::json!({ "error": status::error_body(code, message, trace) })
        .to_string()
        .into_bytes();
    out.push(b'\n');
    Bytes::from(out)
}

/// A server-streaming reply as NDJSON, one line per message as it arrives.
struct NdjsonBody {
    decoder: ReplyDecoder<RecordedBody>,
    call: BridgedCall,
    first: Option<Bytes>,
    trace: Option<String>,
    done: bool,
}

impl Body for NdjsonBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let trace = this.trace.as_deref();
        let out = match this.decoder.poll_event(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(ReplyEvent::Message(m))) => match line(&this.call, &m) {
                Ok(l) => l,
                Err(err) => {
                    this.done = true;
                    error_line(err.kind.grpc_code(), &err.to_string(), trace)
                }
            },
            Poll::Ready(Ok(ReplyEvent::End(Some(s)))) if s.code == 0 => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Ok(ReplyEvent::End(Some(s)))) => {
                this.done = true;
                error_line(s.code, &s.message, trace)
            }
            Poll::Ready(Ok(ReplyEvent::End(None))) => {
                this.done = true;
                let err = "upstream's gRPC reply ended without a grpc-status";
                error_line(ErrorKind::UpstreamProtocol.grpc_code(), err, trace)
            }
            Poll::Ready(Err(err)) => {
                this.done = true;
                if let Some(call) = this.decoder.inner_mut().call_mut() {
                    call.outcome = Outcome::Broken {
                        code: Code::Http(200),
                        message: err.to_string().into(),
                    };
                }
                error_line(err.kind.grpc_code(), &err.to_string(), trace)
            }
        };
        Poll::Ready(Some(Ok(Frame::data(out))))
    }
}
