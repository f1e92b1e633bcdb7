//! The Thrift message header, read without decoding the arguments: name, type, seqid.
//!
//! ```text
//! binary strict:     u32 0x8001_00TT (version 1, TT = type) | i32 name len | name | i32 seqid | args
//! binary non-strict: i32 name len (> 0) | name | u8 type | i32 seqid | args
//! compact:           u8 0x82 | u8 (type << 5) | 0x01 | varint seqid (u32 bits, no zigzag)
//!                    | varint name len | name | args
//! ```
//! Types: 1 CALL, 2 REPLY, 3 EXCEPTION, 4 ONEWAY (no reply is ever sent for ONEWAY).

use bytes::{BufMut, BytesMut};

use super::{ThriftError, varint};

/// The payload protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    /// TBinaryProtocol (THeader id 0).
    Binary,
    /// TCompactProtocol (THeader id 2).
    Compact,
}

impl ProtocolId {
    /// The THeader protocol id.
    pub fn id(self) -> u32 {
        match self {
            ProtocolId::Binary => 0,
            ProtocolId::Compact => 2,
        }
    }
}

/// Thrift message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 1: a call that expects a reply.
    Call,
    /// 2: a reply.
    Reply,
    /// 3: an exception reply.
    Exception,
    /// 4: a call that gets no reply.
    Oneway,
}

impl MessageType {
    fn from_u8(v: u8) -> Result<Self, ThriftError> {
        match v {
            1 => Ok(MessageType::Call),
            2 => Ok(MessageType::Reply),
            3 => Ok(MessageType::Exception),
            4 => Ok(MessageType::Oneway),
            _ => Err(ThriftError::BadMessage("unknown message type")),
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            MessageType::Call => 1,
            MessageType::Reply => 2,
            MessageType::Exception => 3,
            MessageType::Oneway => 4,
        }
    }
}

/// What the peek found, plus where things are, so the seqid can be rewritten in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader<'a> {
    /// Method name (`Service:method` under TMultiplexedProtocol).
    pub name: &'a str,
    /// Message type.
    pub kind: MessageType,
    /// Sequence id.
    pub seq_id: i32,
    /// Byte offset of the arguments (end of the message header).
    pub body_offset: usize,
    /// Whether binary was written strictly (ignored for compact).
    pub strict: bool,
}

/// Longest method name accepted (a sanity bound; real names are short).
const MAX_NAME: usize = 64 * 1024;

/// Peeks the message header of `buf` written in `protocol`. `Ok(None)`: need more bytes.
pub fn peek_message(
    buf: &[u8],
    protocol: ProtocolId,
) -> Result<Option<MessageHeader<'_>>, ThriftError> {
    match protocol {
        ProtocolId::Binary => peek_binary(buf),
        ProtocolId::Compact => peek_compact(buf),
    }
}

fn be_i32(buf: &[u8], at: usize) -> Option<i32> {
    buf.get(at..at + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn name_at(buf: &[u8], at: usize, len: usize) -> Result<Option<&str>, ThriftError> {
    if len > MAX_NAME {
        return Err(ThriftError::BadMessage("method name longer than 64 KiB"));
    }
    match buf.get(at..at + len) {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ThriftError::BadMessage("method name is not UTF-8")),
    }
}

fn peek_binary(buf: &[u8]) -> Result<Option<MessageHeader<'_>>, ThriftError> {
    let Some(first) = be_i32(buf, 0) else {
        return Ok(None);
    };
    if first < 0 {
        // Strict: version 1 in the top 16 bits.
        if (first as u32) & 0xFFFF_0000 != 0x8001_0000 {
            return Err(ThriftError::BadMessage("bad binary protocol version"));
        }
        let kind = MessageType::from_u8((first & 0xFF) as u8)?;
        let Some(len) = be_i32(buf, 4) else {
            return Ok(None);
        };
        let len =
            usize::try_from(len).map_err(|_| ThriftError::BadMessage("negative name length"))?;
        let Some(name) = name_at(buf, 8, len)? else {
            return Ok(None);
        };
        let Some(seq_id) = be_i32(buf, 8 + len) else {
            return Ok(None);
        };
        return Ok(Some(MessageHeader {
            name,
            kind,
            seq_id,
            body_offset: 12 + len,
            strict: true,
        }));
    }
    let len = first as usize;
    let Some(name) = name_at(buf, 4, len)? else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(4 + len) else {
        return Ok(None);
    };
    let kind = MessageType::from_u8(kind)?;
    let Some(seq_id) = be_i32(buf, 5 + len) else {
        return Ok(None);
    };
    Ok(Some(MessageHeader {
        name,
        kind,
        seq_id,
        body_offset: 9 + len,
        strict: false,
    }))
}

fn peek_compact(buf: &[u8]) -> Result<Option<MessageHeader<'_>>, ThriftError> {
    let (Some(&id), Some(&vt)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if id != 0x82 {
        return Err(ThriftError::BadMessage("compact protocol id is not 0x82"));
    }
    if vt & 0x1F != 0x01 {
        return Err(ThriftError::BadMessage("bad compact protocol version"));
    }
    let kind = MessageType::from_u8((vt >> 5) & 0x07)?;
    let mut pos = 2;
    let seq_id = match varint::read_u32(buf, &mut pos, "compact seqid") {
        Ok(v) => v as i32,
        Err(_) if buf.len() < 7 => return Ok(None),
        Err(e) => return Err(e),
    };
    let name_len_at = pos;
    let len = match varint::read_u32(buf, &mut pos, "compact name length") {
        Ok(v) => v as usize,
        Err(_) if buf.len() < name_len_at + 5 => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(name) = name_at(buf, pos, len)? else {
        return Ok(None);
    };
    Ok(Some(MessageHeader {
        name,
        kind,
        seq_id,
        body_offset: pos + len,
        strict: true,
    }))
}

/// Writes a message header (name, type, seqid) in `protocol`: the encoder of what
/// [`peek_message`] reads.
pub fn encode_message_header(
    out: &mut BytesMut,
    protocol: ProtocolId,
    name: &str,
    kind: MessageType,
    seq_id: i32,
) {
    match protocol {
        ProtocolId::Binary => {
            out.put_u32(0x8001_0000 | u32::from(kind.as_u8()));
            out.put_i32(name.len() as i32);
            out.put_slice(name.as_bytes());
            out.put_i32(seq_id);
        }
        ProtocolId::Compact => {
            out.put_u8(0x82);
            out.put_u8((kind.as_u8() << 5) | 0x01);
            varint::write_u32(out, seq_id as u32);
            varint::write_u32(out, name.len() as u32);
            out.put_slice(name.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_strict() {
        // 80 01 00 01 | 00 00 00 04 "echo" | 00 00 30 39 (12345)
        let buf = [
            0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4, b'e', b'c', b'h', b'o', 0, 0, 0x30, 0x39, 0x0C,
        ];
        let h = peek_message(&buf, ProtocolId::Binary).unwrap().unwrap();
        assert_eq!(
            (h.name, h.kind, h.seq_id, h.body_offset, h.strict),
            ("echo", MessageType::Call, 12345, 16, true)
        );
        for cut in 0..16 {
            assert_eq!(
                peek_message(&buf[..cut], ProtocolId::Binary),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn binary_non_strict_and_oneway() {
        let buf = [0, 0, 0, 3, b'p', b'i', b'n', 4, 0xFF, 0xFF, 0xFF, 0xFF];
        let h = peek_message(&buf, ProtocolId::Binary).unwrap().unwrap();
        assert_eq!(
            (h.name, h.kind, h.seq_id, h.strict),
            ("pin", MessageType::Oneway, -1, false)
        );
    }

    #[test]
    fn compact_with_negative_seqid() {
        // 82 | 21 (CALL<<5 | 1) | seqid -1 as u32 varint: ff ff ff ff 0f | len 4 | "echo"
        let buf = [
            0x82, 0x21, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 4, b'e', b'c', b'h', b'o',
        ];
        let h = peek_message(&buf, ProtocolId::Compact).unwrap().unwrap();
        assert_eq!(
            (h.name, h.kind, h.seq_id, h.body_offset),
            ("echo", MessageType::Call, -1, 12)
        );
        let small = [0x82, 0x41, 0x05, 0x01, b'x'];
        let h = peek_message(&small, ProtocolId::Compact).unwrap().unwrap();
        assert_eq!((h.name, h.kind, h.seq_id), ("x", MessageType::Reply, 5));
        assert_eq!(peek_message(&small[..4], ProtocolId::Compact), Ok(None));
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], ProtocolId, ThriftError)] = &[
            (
                &[0x80, 0x02, 0, 1, 0, 0, 0, 0],
                ProtocolId::Binary,
                ThriftError::BadMessage("bad binary protocol version"),
            ),
            (
                &[0x80, 0x01, 0, 9, 0, 0, 0, 0],
                ProtocolId::Binary,
                ThriftError::BadMessage("unknown message type"),
            ),
            (
                &[0x80, 0x01, 0, 1, 0xFF, 0, 0, 0],
                ProtocolId::Binary,
                ThriftError::BadMessage("negative name length"),
            ),
            (
                &[0x80, 0x01, 0, 1, 0, 0, 0, 1, 0xFF, 0, 0, 0, 0],
                ProtocolId::Binary,
                ThriftError::BadMessage("method name is not UTF-8"),
            ),
            (
                &[0x83, 0x21, 0, 0],
                ProtocolId::Compact,
                ThriftError::BadMessage("compact protocol id is not 0x82"),
            ),
            (
                &[0x82, 0x22, 0, 0],
                ProtocolId::Compact,
                ThriftError::BadMessage("bad compact protocol version"),
            ),
            (
                &[0x82, 0x21, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                ProtocolId::Compact,
                ThriftError::BadVarint("compact seqid"),
            ),
            (
                &[0, 1, 0, 1, 0],
                ProtocolId::Binary,
                ThriftError::BadMessage("method name longer than 64 KiB"),
            ),
        ];
        for (buf, proto, want) in cases {
            assert_eq!(peek_message(buf, *proto).unwrap_err(), *want, "{buf:02x?}");
        }
    }
}
