//! [`Dialect`]: a Thrift transport × protocol, the one type that names how a peer speaks —
//! detected from a client's first bytes, configured for an upstream — and the frame head
//! each transport writes before a message.
//!
//! ```text
//! header    THeader frame head (LENGTH, 0x0FFF, flags, seq id, header area), then the message
//! framed    u32 BE LENGTH of the message, then the message
//! unframed  the message alone
//! ```

use bytes::{Bytes, BytesMut};

use super::ThriftError;
use super::header::{HeaderHead, encode_head};
use super::message::ProtocolId;

/// A Thrift transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// THeader frames (the protocol is named inside each frame).
    Header,
    /// Framed: a 4-byte length before each message.
    Framed,
    /// Unframed (buffered): messages back to back.
    Unframed,
}

/// A transport and a protocol. For THeader the protocol is the one of the frame at hand
/// (each frame names its own); detection reports binary until a frame is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dialect {
    /// How messages are framed.
    pub transport: Transport,
    /// How they are encoded.
    pub protocol: ProtocolId,
}

/// THeader fields of one frame: echoed on a reply, set on a call.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderFields<'a> {
    /// FLAGS.
    pub flags: u16,
    /// SEQUENCE ID.
    pub seq_id: u32,
    /// KEYVALUE info headers (trace context travels here).
    pub info: &'a [(Bytes, Bytes)],
    /// fbthrift PKEYVALUE headers.
    pub persistent: &'a [(Bytes, Bytes)],
}

impl Dialect {
    /// THeader (binary until a frame says otherwise).
    pub const HEADER: Dialect = Dialect::new(Transport::Header, ProtocolId::Binary);
    /// Framed binary.
    pub const FRAMED_BINARY: Dialect = Dialect::new(Transport::Framed, ProtocolId::Binary);
    /// Framed compact.
    pub const FRAMED_COMPACT: Dialect = Dialect::new(Transport::Framed, ProtocolId::Compact);
    /// Unframed strict binary.
    pub const UNFRAMED_BINARY: Dialect = Dialect::new(Transport::Unframed, ProtocolId::Binary);
    /// Unframed compact.
    pub const UNFRAMED_COMPACT: Dialect = Dialect::new(Transport::Unframed, ProtocolId::Compact);

    /// A dialect.
    pub const fn new(transport: Transport, protocol: ProtocolId) -> Self {
        Dialect {
            transport,
            protocol,
        }
    }

    /// A stable name for logs, spans and metrics: `header`, `framed_binary`, ...
    pub fn as_str(self) -> &'static str {
        match (self.transport, self.protocol) {
            (Transport::Header, _) => "header",
            (Transport::Framed, ProtocolId::Binary) => "framed_binary",
            (Transport::Framed, ProtocolId::Compact) => "framed_compact",
            (Transport::Unframed, ProtocolId::Binary) => "unframed_binary",
            (Transport::Unframed, ProtocolId::Compact) => "unframed_compact",
        }
    }

    /// Whether this transport carries info headers (trace context).
    pub fn carries_headers(self) -> bool {
        self.transport == Transport::Header
    }

    /// Writes the frame head for a message of `payload_len` bytes (written after it,
    /// untouched): a THeader head with `fields`, a 4-byte length, or nothing.
    pub fn encode_frame_head(
        self,
        fields: &HeaderFields<'_>,
        payload_len: usize,
        out: &mut BytesMut,
    ) -> Result<(), ThriftError> {
        match self.transport {
            Transport::Header => {
                let head = HeaderHead {
                    flags: fields.flags,
                    seq_id: fields.seq_id,
                    protocol: self.protocol,
                    transforms: &[],
                    info: fields.info,
                    persistent: fields.persistent,
                };
                encode_head(&head, payload_len, out)
            }
            Transport::Framed => {
                let len = u32::try_from(payload_len)
                    .ok()
                    .filter(|l| l & 0x8000_0000 == 0)
                    .ok_or(ThriftError::FrameTooLarge {
                        size: payload_len as u64,
                        max: u64::from(u32::MAX >> 1),
                    })?;
                out.extend_from_slice(&len.to_be_bytes());
                Ok(())
            }
            Transport::Unframed => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_heads() {
        let mut out = BytesMut::new();
        Dialect::FRAMED_COMPACT
            .encode_frame_head(&HeaderFields::default(), 9, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&out[..], &[0, 0, 0, 9]);
        out.clear();
        Dialect::UNFRAMED_BINARY
            .encode_frame_head(&HeaderFields::default(), 9, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.is_empty());
        let fields = HeaderFields {
            flags: 1,
            seq_id: 7,
            ..Default::default()
        };
        Dialect::new(Transport::Header, ProtocolId::Compact)
            .encode_frame_head(&fields, 3, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        // LENGTH 10 + 4 (area: compact id 2, no transforms, 2 padding) + 3
        assert_eq!(
            &out[..],
            &[0, 0, 0, 17, 0x0F, 0xFF, 0, 1, 0, 0, 0, 7, 0, 1, 2, 0, 0, 0]
        );
        assert_eq!(Dialect::HEADER.as_str(), "header");
        assert_eq!(Dialect::UNFRAMED_COMPACT.as_str(), "unframed_compact");
    }
}
