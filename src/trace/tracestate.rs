//! W3C `tracestate`.

use bytes::Bytes;

/// A validated W3C `tracestate` value, kept as the header bytes (empty = absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState(pub Bytes);
