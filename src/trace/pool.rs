//! The pooled id writer: header values are written straight into a reused `BytesMut` slab and
//! handed out as `Bytes`, so injecting headers allocates nothing per request at steady state.
//!
//! `split_to(len).freeze()` hands out a view of the slab; once every such view is dropped the
//! slab is uniquely owned again and `BytesMut::reserve` reclaims the same buffer in place.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// Size of one slab: room for many requests' worth of header values.
const SLAB: usize = 4096;

/// Writes header values into a reused slab. One per thread (see [`with_writer`]).
#[derive(Debug, Default)]
pub struct IdWriter {
    slab: BytesMut,
}

impl IdWriter {
    /// Runs `write` on a zeroed slice of exactly `len` bytes of the slab and returns it frozen.
    pub fn write(&mut self, len: usize, write: impl FnOnce(&mut [u8])) -> Bytes {
        if self.slab.capacity() < len {
            // Reclaims the old buffer when no handed-out view is alive, else allocates anew.
            self.slab.reserve(SLAB.max(len));
        }
        self.slab.resize(len, 0);
        write(&mut self.slab[..len]);
        self.slab.split_to(len).freeze()
    }
}

thread_local! {
    static WRITER: RefCell<IdWriter> = RefCell::new(IdWriter::default());
}

/// Runs `f` with this thread's [`IdWriter`].
pub fn with_writer<R>(f: impl FnOnce(&mut IdWriter) -> R) -> R {
    WRITER.with(|w| match w.try_borrow_mut() {
        Ok(mut w) => f(&mut w),
        // Re-entered (cannot happen on the data path): use a fresh writer rather than panic.
        Err(_) => f(&mut IdWriter::default()),
    })
}

/// Lower-case hex of `src` into `dst` (`dst.len() == 2 * src.len()`).
pub fn hex_encode(src: &[u8], dst: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in src.iter().enumerate() {
        dst[2 * i] = HEX[(b >> 4) as usize];
        dst[2 * i + 1] = HEX[(b & 0x0f) as usize];
    }
}

/// Decodes lower-case hex (`strict`) or any-case hex into `dst`; `None` on a bad character or
/// length.
pub fn hex_decode(src: &[u8], dst: &mut [u8], strict: bool) -> Option<()> {
    if src.len() != dst.len() * 2 {
        return None;
    }
    for (i, pair) in src.chunks_exact(2).enumerate() {
        dst[i] = (nibble(pair[0], strict)? << 4) | nibble(pair[1], strict)?;
    }
    Some(())
}

fn nibble(c: u8, strict: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if !strict => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_is_reused_once_views_are_dropped() {
        let mut w = IdWriter::default();
        let first = w.write(4, |b| b.copy_from_slice(b"abcd"));
        let ptr = first.as_ptr();
        assert_eq!(&first[..], b"abcd");
        drop(first);
        // Use up the slab, then the next write must land on the same buffer again.
        for _ in 0..SLAB {
            drop(w.write(8, |b| b.fill(b'y')));
        }
        let again = w.write(4, |b| b.copy_from_slice(b"wxyz"));
        assert_eq!(&again[..], b"wxyz");
        assert!(again.as_ptr() >= ptr && again.as_ptr() < ptr.wrapping_add(SLAB));
    }

    #[test]
    fn hex_round_trip() {
        let mut out = [0u8; 4];
        hex_encode(&[0xde, 0xad], &mut out);
        assert_eq!(&out, b"dead");
        let mut back = [0u8; 2];
        assert_eq!(hex_decode(b"dead", &mut back, true), Some(()));
        assert_eq!(back, [0xde, 0xad]);
        assert_eq!(hex_decode(b"DEAD", &mut back, true), None);
        assert_eq!(hex_decode(b"DEAD", &mut back, false), Some(()));
        assert_eq!(hex_decode(b"dea", &mut back, false), None);
    }
}
