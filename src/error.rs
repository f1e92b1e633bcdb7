//! The one gateway error type and the table that turns an error kind into each protocol's own
//! error: an HTTP status, a gRPC status code and a Thrift `TApplicationException` type.
//!
//! Every stage returns [`GatewayError`]; the `respond` phase of each listener maps it with
//! [`ErrorKind::http_status`], [`ErrorKind::grpc_code`] or [`ErrorKind::thrift_exception`].

use std::borrow::Cow;
use std::fmt;

/// A boxed error, as body streams carry them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which side of the gateway is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something we cannot serve.
    Downstream,
    /// The backend failed, timed out or could not be reached.
    Upstream,
    /// The gateway itself failed.
    Internal,
}

impl Side {
    /// Stable lower-case name, used in metric labels and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// What failed. One row of the error table per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched the request.
    NoRoute,
    /// The route demands trace context and none (or only an invalid one) arrived.
    MissingTraceContext,
    /// The request is malformed (bad frame, bad header, bad body).
    BadRequest,
    /// The request or a frame is larger than the configured limit.
    TooLarge,
    /// The upstream could not be connected to, or refused the connection.
    UpstreamConnect,
    /// The upstream did not answer within the route's timeout.
    UpstreamTimeout,
    /// The upstream answered with something we could not understand or it reset the stream.
    UpstreamProtocol,
    /// The gateway refuses the call to protect itself or the upstream (limits, draining).
    Unavailable,
    /// The call names a method or service the gateway does not know.
    Unimplemented,
    /// The request method is not served here (`CONNECT`: the gateway does not tunnel).
    MethodNotAllowed,
    /// The request already crossed this gateway too many times (a routing loop).
    LoopDetected,
    /// A Thrift THeader frame asks for a transform the gateway does not apply (or repeats one).
    InvalidTransform,
    /// A bug or an unexpected internal failure.
    Internal,
}

impl ErrorKind {
    /// Stable snake-case name, used in metric labels and JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::MissingTraceContext => "missing_trace_context",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::LoopDetected => "loop_detected",
            ErrorKind::InvalidTransform => "invalid_transform",
            ErrorKind::Internal => "internal",
        }
    }

    /// HTTP status code for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NoRoute => 404,
            ErrorKind::MissingTraceContext | ErrorKind::BadRequest => 400,
            ErrorKind::TooLarge => 413,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamProtocol => 502,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::Unavailable => 503,
            ErrorKind::Unimplemented => 501,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::LoopDetected => 508,
            ErrorKind::InvalidTransform => 415,
            ErrorKind::Internal => 500,
        }
    }

    /// HTTP status code as a string, for metric labels.
    pub fn http_status_str(self) -> &'static str {
        match self.http_status() {
            400 => "400",
            404 => "404",
            405 => "405",
            413 => "413",
            415 => "415",
            500 => "500",
            501 => "501",
            502 => "502",
            503 => "503",
            504 => "504",
            508 => "508",
            _ => "500",
        }
    }

    /// gRPC status code (the numeric value of `google.rpc.Code`).
    pub fn grpc_code(self) -> u32 {
        match self {
            ErrorKind::NoRoute | ErrorKind::Unimplemented | ErrorKind::MethodNotAllowed => 12, // UNIMPLEMENTED
            ErrorKind::MissingTraceContext | ErrorKind::BadRequest => 3, // INVALID_ARGUMENT
            ErrorKind::TooLarge => 8,                                    // RESOURCE_EXHAUSTED
            ErrorKind::UpstreamConnect | ErrorKind::Unavailable => 14,   // UNAVAILABLE
            ErrorKind::UpstreamTimeout => 4,                             // DEADLINE_EXCEEDED
            ErrorKind::LoopDetected => 10,                               // ABORTED
            ErrorKind::InvalidTransform => 12,                           // UNIMPLEMENTED
            ErrorKind::UpstreamProtocol | ErrorKind::Internal => 13,     // INTERNAL
        }
    }

    /// Thrift `TApplicationException` type (values from Apache Thrift's `TApplicationException`).
    pub fn thrift_exception(self) -> i32 {
        match self {
            ErrorKind::NoRoute | ErrorKind::Unimplemented | ErrorKind::MethodNotAllowed => 1, // UNKNOWN_METHOD
            ErrorKind::MissingTraceContext | ErrorKind::BadRequest => 7, // PROTOCOL_ERROR
            ErrorKind::TooLarge => 7,                                    // PROTOCOL_ERROR
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol
            | ErrorKind::Unavailable => 6, // INTERNAL_ERROR: the call did not complete
            ErrorKind::LoopDetected | ErrorKind::Internal => 6,          // INTERNAL_ERROR
            ErrorKind::InvalidTransform => 8,                            // INVALID_TRANSFORM
        }
    }
}

/// The gateway's error: what failed, who is at fault, whether a retry is safe, and why.
#[derive(Debug)]
pub struct GatewayError {
    /// What failed.
    pub kind: ErrorKind,
    /// Which side is at fault.
    pub side: Side,
    /// Whether sending the same request again may succeed and is safe (nothing reached the upstream).
    pub retryable: bool,
    /// A sentence stating the fact, shown to the caller.
    pub message: Cow<'static, str>,
    /// The underlying error, if any.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Structured facts an answer can carry beside the message.
    pub detail: Option<Box<ErrorDetail>>,
}

/// Structured facts of an error, shown in HTTP JSON error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorDetail {
    /// A `missing_trace_context` rejection: the headers looked for and the first invalid one.
    MissingTraceContext {
        /// Header names the route accepts trace context in.
        looked_for: Vec<&'static str>,
        /// Why the context that arrived was invalid, if one did.
        invalid: Option<String>,
    },
}

impl GatewayError {
    /// A new error of `kind`, blamed on `side`, with a message.
    pub fn new(kind: ErrorKind, side: Side, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            kind,
            side,
            retryable: false,
            message: message.into(),
            source: None,
            detail: None,
        }
    }

    /// Attaches structured facts for the answer.
    pub fn with_detail(mut self, detail: ErrorDetail) -> Self {
        self.detail = Some(Box::new(detail));
        self
    }

    /// Marks the error as safe to retry.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Attaches the underlying error.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} side): {}",
            self.kind.as_str(),
            self.side.as_str(),
            self.message
        )?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_allowed_row() {
        let k = ErrorKind::MethodNotAllowed;
        assert_eq!(k.as_str(), "method_not_allowed");
        assert_eq!((k.http_status(), k.http_status_str()), (405, "405"));
        assert_eq!(k.grpc_code(), 12); // UNIMPLEMENTED
        assert_eq!(k.thrift_exception(), 1); // UNKNOWN_METHOD
    }
}
