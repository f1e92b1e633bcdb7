//! `TApplicationException` replies, written in the client's own protocol.
//!
//! ```text
//! message EXCEPTION (type 3), the call's name and seqid
//! struct TApplicationException { 1: string message, 2: i32 type }
//! ```
//! Types used (Apache `TApplicationException`): 1 UNKNOWN_METHOD, 6 INTERNAL_ERROR,
//! 7 PROTOCOL_ERROR, 8 INVALID_TRANSFORM.

use bytes::{BufMut, Bytes, BytesMut};

use super::message::{MessageType, ProtocolId, encode_message_header};
use super::varint;

/// `TApplicationException` type INVALID_TRANSFORM.
pub const INVALID_TRANSFORM: i32 = 8;
/// `TApplicationException` type PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: i32 = 7;

/// Encodes an EXCEPTION message carrying a `TApplicationException`.
pub fn encode_exception(
    protocol: ProtocolId,
    name: &str,
    seq_id: i32,
    kind: i32,
    message: &str,
) -> Bytes {
    let mut o = BytesMut::with_capacity(32 + name.len() + message.len());
    encode_message_header(&mut o, protocol, name, MessageType::Exception, seq_id);
    match protocol {
        ProtocolId::Binary => {
            o.put_u8(11); // field 1: string
            o.put_i16(1);
            o.put_i32(message.len() as i32);
            o.put_slice(message.as_bytes());
            o.put_u8(8); // field 2: i32
            o.put_i16(2);
            o.put_i32(kind);
            o.put_u8(0);
        }
        ProtocolId::Compact => {
            o.put_u8(0x18); // field 1 (delta 1), binary
            varint::write_u32(&mut o, message.len() as u32);
            o.put_slice(message.as_bytes());
            o.put_u8(0x15); // field 2 (delta 1), i32
            varint::write_u32(&mut o, ((kind << 1) ^ (kind >> 31)) as u32);
            o.put_u8(0);
        }
    }
    o.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::thrift::message::peek_message;
    use crate::codec::thrift::walk::{message_len, transcode};

    #[test]
    fn binary_bytes_are_exact() {
        let b = encode_exception(ProtocolId::Binary, "ping", 9, INVALID_TRANSFORM, "bad");
        let expected: &[u8] = &[
            0x80, 0x01, 0x00, 0x03, 0, 0, 0, 4, b'p', b'i', b'n', b'g', 0, 0, 0, 9, //
            11, 0, 1, 0, 0, 0, 3, b'b', b'a', b'd', 8, 0, 2, 0, 0, 0, 8, 0,
        ];
        assert_eq!(&b[..], expected);
    }

    #[test]
    fn compact_is_the_transcoded_binary() {
        let bin = encode_exception(
            ProtocolId::Binary,
            "ping",
            -3,
            PROTOCOL_ERROR,
            "no trace context",
        );
        let compact = encode_exception(
            ProtocolId::Compact,
            "ping",
            -3,
            PROTOCOL_ERROR,
            "no trace context",
        );
        let mut transcoded = BytesMut::new();
        transcode(
            &bin,
            ProtocolId::Binary,
            ProtocolId::Compact,
            &mut transcoded,
        )
        .unwrap();
        assert_eq!(compact, transcoded.freeze());
        assert_eq!(
            message_len(&compact, ProtocolId::Compact),
            Ok(Some(compact.len()))
        );
        let h = peek_message(&compact, ProtocolId::Compact)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.name, h.kind, h.seq_id),
            ("ping", MessageType::Exception, -3)
        );
    }
}
