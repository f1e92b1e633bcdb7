//! Apache Thrift on the wire, pure and I/O-free: transport detection, the THeader frame
//! (`header`), framed/unframed transports, and the message-header peek (`message`) that reads
//! a call's name, type and seqid without decoding its arguments.
//!
//! Wire facts are from Apache Thrift's HeaderFormat spec and its Python, Go and C++ libraries
//! (summarised in the project's `theader.md`); the tests here prove each one the code relies on.

pub mod detect;
pub mod dialect;
pub mod exception;
pub mod frame;
pub mod header;
pub mod message;
pub mod varint;
pub mod walk;

pub use detect::detect;
pub use dialect::{Dialect, HeaderFields, Transport};
pub use header::{HeaderFrame, InfoHeaders, Transform};
pub use message::{MessageHeader, MessageType, ProtocolId, encode_message_header, peek_message};
pub use walk::transcode_struct;

/// Why Thrift bytes could not be decoded. "Need more bytes" is `Ok(None)`, never an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThriftError {
    /// The first bytes match no transport an Apache server accepts.
    #[error("could not detect the Thrift transport: first word {0:#010x}")]
    UnknownTransport(u32),
    /// A frame larger than the configured limit.
    #[error("Thrift frame of {size} bytes exceeds max_frame_size {max}")]
    FrameTooLarge {
        /// The announced (or inflated) size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A THeader frame shorter than its fixed part or with a header area past the frame.
    #[error("THeader frame is malformed: {0}")]
    BadHeader(&'static str),
    /// A varint longer than 5 bytes or running past its area.
    #[error("bad varint in {0}")]
    BadVarint(&'static str),
    /// A transform this gateway does not implement (the client gets INVALID_TRANSFORM).
    #[error("unknown THeader transform id {0}")]
    UnknownTransform(u32),
    /// More than one transform in one frame. A frame may carry at most one zlib transform, so
    /// nested zlib cannot multiply what one frame inflates to (the client gets INVALID_TRANSFORM).
    #[error("THeader frame lists {0} transforms; at most one (zlib) is accepted")]
    RepeatedTransform(u32),
    /// A protocol id other than binary (0) or compact (2).
    #[error("unsupported THeader protocol id {0}")]
    UnknownProtocol(u32),
    /// zlib data that does not inflate.
    #[error("zlib transform: {0}")]
    Inflate(String),
    /// A message header that is not binary or compact Thrift.
    #[error("bad Thrift message header: {0}")]
    BadMessage(&'static str),
}

impl ThriftError {
    /// A stable short name for the `reason` label of `tracebridge_decode_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ThriftError::UnknownTransport(_) => "unknown_transport",
            ThriftError::FrameTooLarge { .. } => "frame_too_large",
            ThriftError::BadHeader(_) => "bad_header",
            ThriftError::BadVarint(_) => "bad_varint",
            ThriftError::UnknownTransform(_) => "unknown_transform",
            ThriftError::RepeatedTransform(_) => "repeated_transform",
            ThriftError::UnknownProtocol(_) => "unknown_protocol",
            ThriftError::Inflate(_) => "inflate",
            ThriftError::BadMessage(_) => "bad_message",
        }
    }
}

/// Default max frame size (Apache's `DEFAULT_MAX_FRAME_SIZE`), also applied after inflate.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384_000;
