//! Client-type detection, exactly as Apache THeader servers do it, from the first 8 bytes.
//!
//! ```text
//! w1 = u32 BE of bytes 0..4
//! (w1 & 0xFFFF0000) == 0x80010000                 -> unframed binary (strict message begins)
//! byte0 == 0x82 && (byte1 & 0x1F) == 0x01         -> unframed compact
//! else w1 is a frame LENGTH; w2 = u32 BE of bytes 4..8:
//!   (w2 & 0xFFFF0000) == 0x0FFF0000               -> THeader
//!   (w2 & 0xFFFF0000) == 0x80010000               -> framed binary
//!   byte4 == 0x82 && (byte5 & 0x1F) == 0x01       -> framed compact
//!   else                                          -> error
//! ```
//! Non-strict binary (a message starting with a positive name length) is not detected as
//! unframed by any THeader server: its first word reads as a frame length.

use super::ThriftError;
use super::dialect::Dialect;

/// Detects the client's dialect from the start of a connection's bytes. `Ok(None)`: need more bytes.
pub fn detect(buf: &[u8]) -> Result<Option<Dialect>, ThriftError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let w1 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if w1 & 0xFFFF_0000 == 0x8001_0000 {
        return Ok(Some(Dialect::UNFRAMED_BINARY));
    }
    if buf[0] == 0x82 && buf[1] & 0x1F == 0x01 {
        return Ok(Some(Dialect::UNFRAMED_COMPACT));
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    let w2 = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if w2 & 0xFFFF_0000 == 0x0FFF_0000 {
        Ok(Some(Dialect::HEADER))
    } else if w2 & 0xFFFF_0000 == 0x8001_0000 {
        Ok(Some(Dialect::FRAMED_BINARY))
    } else if buf[4] == 0x82 && buf[5] & 0x1F == 0x01 {
        Ok(Some(Dialect::FRAMED_COMPACT))
    } else {
        Err(ThriftError::UnknownTransport(w1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        type Case<'a> = (&'a [u8], Result<Option<Dialect>, ThriftError>);
        let cases: &[Case<'_>] = &[
            (
                &[0x80, 0x01, 0x00, 0x01],
                Ok(Some(Dialect::UNFRAMED_BINARY)),
            ),
            (&[0x82, 0x21, 0x00], Ok(None)),
            (
                &[0x82, 0x21, 0x00, 0x04],
                Ok(Some(Dialect::UNFRAMED_COMPACT)),
            ),
            (&[0, 0, 0, 20, 0x0F, 0xFF, 0, 0], Ok(Some(Dialect::HEADER))),
            (&[0, 0, 0, 20, 0x0F, 0xFF, 0, 1], Ok(Some(Dialect::HEADER))),
            (
                &[0, 0, 0, 20, 0x80, 0x01, 0, 1],
                Ok(Some(Dialect::FRAMED_BINARY)),
            ),
            (
                &[0, 0, 0, 20, 0x82, 0x21, 0, 1],
                Ok(Some(Dialect::FRAMED_COMPACT)),
            ),
            (
                &[0, 0, 0, 20, 0x82, 0x22, 0, 1],
                Err(ThriftError::UnknownTransport(20)),
            ),
            // Non-strict binary: positive name length reads as a frame length.
            (
                &[0, 0, 0, 4, b'e', b'c', b'h', b'o'],
                Err(ThriftError::UnknownTransport(4)),
            ),
            // HTTP is not Thrift.
            (b"POST / H", Err(ThriftError::UnknownTransport(0x504F_5354))),
            (&[0, 0, 0], Ok(None)),
            (&[0, 0, 0, 20, 0x0F], Ok(None)),
        ];
        for (bytes, want) in cases {
            assert_eq!(&detect(bytes), want, "{bytes:02x?}");
        }
    }
}
