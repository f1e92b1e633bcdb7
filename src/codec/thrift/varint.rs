//! Unsigned LEB128 varints, as THeader and TCompactProtocol write them (no zigzag).

use super::ThriftError;

/// Reads a varint32 from `buf` at `*pos`, advancing `pos`. At most 5 bytes; the 5th may carry
/// only the top 4 bits. `what` names the field for the error.
pub fn read_u32(buf: &[u8], pos: &mut usize, what: &'static str) -> Result<u32, ThriftError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some(&byte) = buf.get(*pos) else {
            return Err(ThriftError::BadVarint(what));
        };
        *pos += 1;
        if i == 4 && byte & 0xF0 != 0 {
            return Err(ThriftError::BadVarint(what));
        }
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ThriftError::BadVarint(what))
}

/// Appends `value` as a varint32.
pub fn write_u32(out: &mut impl bytes::BufMut, mut value: u32) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut out = Vec::new();
            write_u32(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_u32(&out, &mut pos, "t").unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        write_u32(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        out.clear();
        write_u32(&mut out, u32::MAX);
        assert_eq!(out, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        let mut pos = 0;
        assert_eq!(
            read_u32(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F], &mut pos, "x"),
            Err(ThriftError::BadVarint("x"))
        );
        let mut pos = 0;
        assert_eq!(
            read_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut pos, "x"),
            Err(ThriftError::BadVarint("x"))
        );
        let mut pos = 0;
        assert_eq!(
            read_u32(&[0x80], &mut pos, "x"),
            Err(ThriftError::BadVarint("x"))
        );
    }
}
