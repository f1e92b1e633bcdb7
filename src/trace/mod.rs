//! `trace`: one propagator for every trace format.
//!
//! Owns [`TraceContext`] and the [`Carrier`] abstraction over header maps (HTTP/1.1, h2, gRPC
//! metadata) and THeader key/value lists. Every format has an `extract_*` and an `inject_*` in
//! its own file; [`Propagator`] runs the configured extract order and inject set. Nothing
//! outside this module parses or writes a trace header.
//!
//! Sits after `codec(decode)` (extract) and before `codec(encode)` (inject) in the flow.

mod b3;
mod baggage;
mod binary;
mod carrier;
mod jaeger;
pub mod pool;
mod propagator;
mod tracestate;
mod w3c;

pub use carrier::Carrier;
pub use pool::IdWriter;
pub use propagator::{Extracted, Propagator};
pub use tracestate::{TraceState, TracestateOutcome};

use bytes::Bytes;

/// A 16-byte trace id. All-zero is invalid in every format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. All-zero is invalid in every format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

/// W3C trace flags; bit 0 is `sampled`, bit 1 (Level 2) is `random`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct TraceFlags(pub u8);

impl TraceFlags {
    /// The `sampled` bit.
    pub const SAMPLED: TraceFlags = TraceFlags(0x01);
    /// The `random` bit (W3C Trace Context Level 2): at least the right-most 7 bytes of the
    /// trace id were made at random.
    pub const RANDOM: TraceFlags = TraceFlags(0x02);
    /// Every bit the W3C spec defines; others are not propagated.
    pub const KNOWN: TraceFlags = TraceFlags(0x03);

    /// Whether the sampled bit is set.
    pub fn is_sampled(self) -> bool {
        self.0 & 0x01 != 0
    }

    /// Whether the random bit is set.
    pub fn is_random(self) -> bool {
        self.0 & Self::RANDOM.0 != 0
    }

    /// These flags with the random bit set to `random`.
    pub fn with_random(self, random: bool) -> TraceFlags {
        if random {
            TraceFlags(self.0 | Self::RANDOM.0)
        } else {
            TraceFlags(self.0 & !Self::RANDOM.0)
        }
    }

    /// These flags with the sampled bit set to `sampled`.
    pub fn with_sampled(self, sampled: bool) -> TraceFlags {
        if sampled {
            TraceFlags(self.0 | 0x01)
        } else {
            TraceFlags(self.0 & !0x01)
        }
    }
}

/// The trace context one hop hands to the next: trace id, the id of the span that is the
/// parent of whatever the receiver starts, flags, and the opaque `tracestate` and `baggage`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TraceContext {
    /// The trace this call belongs to.
    pub trace_id: TraceId,
    /// The sender's span: the parent of the receiver's span.
    pub span_id: SpanId,
    /// Trace flags (sampled).
    pub flags: TraceFlags,
    /// W3C `tracestate` (vendor list), validated on extract; empty when absent.
    pub tracestate: TraceState,
    /// W3C `baggage` header value, passed through untouched; `uberctx-*` items are merged in
    /// W3C form. `None` when absent.
    pub baggage: Option<Bytes>,
}

impl TraceContext {
    /// A child of this context: same trace, flags, `tracestate` and baggage, a fresh span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: SpanId::random(),
            ..self.clone()
        }
    }

    /// A new root: a fresh random trace id (so the `random` flag is set) and span id.
    pub fn new_root(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: TraceFlags::RANDOM.with_sampled(sampled),
            ..Default::default()
        }
    }
}

impl TraceId {
    /// Whether every byte is zero (invalid).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// A fresh random trace id (never zero).
    pub fn random() -> TraceId {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }

    /// Lower-case hex, 32 characters. Allocates: for logs and tests, not the data path.
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
}

impl SpanId {
    /// Whether every byte is zero (invalid).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// A fresh random span id (never zero).
    pub fn random() -> SpanId {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }

    /// Lower-case hex, 16 characters. Allocates: for logs and tests, not the data path.
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceId({})", self.to_hex())
    }
}

impl std::fmt::Debug for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpanId({})", self.to_hex())
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    pool::hex_encode(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A trace header format, as named in config (`[propagation] extract` / `inject`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Format {
    /// W3C `traceparent` + `tracestate` (+ `baggage`). Config name `w3c`.
    W3c,
    /// Jaeger `uber-trace-id` + `uberctx-*`. Config name `jaeger`.
    Jaeger,
    /// B3: on extract both single `b3` and multi `x-b3-*`; on inject single `b3`. Config name `b3`.
    B3,
    /// B3 multi-header form on inject (`x-b3-traceid`, ...). Config name `b3multi`.
    B3Multi,
    /// gRPC/OpenCensus binary `grpc-trace-bin`. Config name `grpc-trace-bin`.
    GrpcTraceBin,
    /// THeader `x-trace-raw`: padded standard base64 of the `grpc-trace-bin` bytes. Config name `x-trace-raw`.
    XTraceRaw,
}

impl Format {
    /// Every format, in the default extract order.
    pub const ALL: [Format; 6] = [
        Format::W3c,
        Format::Jaeger,
        Format::B3,
        Format::B3Multi,
        Format::GrpcTraceBin,
        Format::XTraceRaw,
    ];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::W3c => "w3c",
            Format::Jaeger => "jaeger",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::GrpcTraceBin => "grpc-trace-bin",
            Format::XTraceRaw => "x-trace-raw",
        }
    }

    /// Parses a config name.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// Why a trace header was rejected on extract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Wrong length for the format.
    #[error("{header}: wrong length")]
    Length {
        /// Header name.
        header: &'static str,
    },
    /// A character outside the format's alphabet (e.g. upper-case hex in W3C).
    #[error("{header}: invalid character")]
    Character {
        /// Header name.
        header: &'static str,
    },
    /// An all-zero trace or span id.
    #[error("{header}: all-zero id")]
    ZeroId {
        /// Header name.
        header: &'static str,
    },
    /// A version the format forbids (W3C `ff`) or does not know (binary format).
    #[error("{header}: invalid version")]
    Version {
        /// Header name.
        header: &'static str,
    },
    /// A header that must appear once came in several fields (W3C `traceparent`: combined
    /// per RFC 9110 §5.3 they would read "a, b", which is no valid value).
    #[error("{header}: repeated ({count} fields)")]
    Repeated {
        /// Header name.
        header: &'static str,
        /// How many fields carried it.
        count: usize,
    },
    /// Anything else malformed.
    #[error("{header}: malformed")]
    Malformed {
        /// Header name.
        header: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_flag_bits() {
        assert_eq!(TraceFlags::default().with_random(true), TraceFlags(0x02));
        assert!(TraceFlags(0x03).is_random() && TraceFlags(0x03).is_sampled());
        assert_eq!(TraceFlags(0x03).with_random(false), TraceFlags::SAMPLED);
        assert_eq!(TraceFlags::RANDOM.with_sampled(true), TraceFlags(0x03));
    }

    #[test]
    fn new_roots_are_random_and_children_keep_the_flags() {
        let root = TraceContext::new_root(false);
        assert_eq!(root.flags, TraceFlags::RANDOM);
        assert_eq!(TraceContext::new_root(true).flags, TraceFlags(0x03));
        let child = root.child();
        assert_eq!((child.trace_id, child.flags), (root.trace_id, root.flags));
        assert_ne!(child.span_id, root.span_id);
    }
}
