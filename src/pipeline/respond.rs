//! `respond`: the one place a gateway-made error becomes an answer, in the caller's protocol,
//! through the `error.rs` table:
//!
//! - HTTP: the kind's status and `{"error", "kind", "side", "trace_id"}` (plus
//!   `looked_for` / `invalid` for a missing trace context). `trace_id` is always set.
//! - gRPC and gRPC-Web: a trailers-only answer (HTTP 200, no body) with the kind's
//!   `grpc-status`, the message in `grpc-message` and the trace id in `tracebridge-trace-id`.
//! - Thrift: a `TApplicationException` of the kind's type, in the client's protocol, with the
//!   call's name and seqid (the listener frames it in the client's transport).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::call::{Call, Code};
use crate::codec::grpc;
use crate::codec::thrift::ProtocolId;
use crate::codec::thrift::exception::encode_exception;
use crate::error::{ErrorDetail, GatewayError};
use crate::trace::TraceId;
use crate::upstream::http::BoxError;

/// The body the HTTP listener answers with: the upstream's streamed body or a small one.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An HTTP error answer; sets the call's outcome.
pub fn http(call: &mut Call, err: &GatewayError) -> Response<ResponseBody> {
    let trace_id = call.trace_id();
    let response = http_error(err, &trace_id);
    call.failed(err, Code::Http(response.status().as_u16()));
    response
}

/// A gRPC (or, with the caller's `content_type`, gRPC-Web) error answer; sets the call's
/// outcome.
pub fn grpc(
    call: &mut Call,
    err: &GatewayError,
    content_type: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let trace_id = call.trace_id();
    let mut response = grpc_error(err, &trace_id);
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, ct.clone());
    }
    call.failed(err, Code::Grpc(err.kind.grpc_code()));
    response
}

/// A Thrift `TApplicationException` message (unframed) for the call `name`/`seq_id`; sets the
/// call's outcome.
pub fn thrift(
    call: &mut Call,
    err: &GatewayError,
    protocol: ProtocolId,
    name: &str,
    seq_id: i32,
) -> Bytes {
    call.failed(err, Code::ThriftException);
    encode_exception(
        protocol,
        name,
        seq_id,
        err.kind.thrift_exception(),
        &err.message,
    )
}

/// A gateway-made error as HTTP JSON.
pub fn http_error(err: &GatewayError, trace_id: &TraceId) -> Response<ResponseBody> {
    let mut body = serde_json::json!({
        "error": err.to_string(),
        "kind": err.kind.as_str(),
        "side": err.side.as_str(),
        "trace_id": trace_id.to_hex(),
    });
    if let Some(ErrorDetail::MissingTraceContext {
        looked_for,
        invalid,
    }) = err.detail.as_deref()
    {
        body["looked_for"] = serde_json::json!(looked_for);
        body["invalid"] = serde_json::json!(invalid);
    }
    json_response(
        StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
        &body,
    )
}

/// A gateway-made error as a gRPC trailers-only answer.
pub fn grpc_error(err: &GatewayError, trace_id: &TraceId) -> Response<ResponseBody> {
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(err.kind.grpc_code()));
    let hex = trace_id.to_hex();
    let message = format!("{err} (trace id {hex})");
    if let Ok(v) = HeaderValue::from_str(&hex) {
        headers.insert("tracebridge-trace-id", v);
    }
    headers.insert("grpc-message", grpc::encode_message(&message));
    response
}

/// A JSON answer with `status`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A whole body.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ResponseBody {
    full(Bytes::new())
}
