//! The pooled id writer: header values are written straight into reused `BytesMut` slabs and
//! handed out as `Bytes`, so injecting headers allocates nothing per request at steady state.
//!
//! `split_to(len).freeze()` hands out a view of the current slab. A slab can be reused only
//! once every view of it is dropped, and the last few requests' headers are always still
//! alive, so an exhausted slab is retired to a small ring; when the current one runs out, the
//! oldest retired slab whose views are all gone is reclaimed in place (`try_reclaim`). A new
//! slab is allocated only when every retired one is still in use (more requests in flight on
//! this thread than the ring covers).

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Size of one slab: room for ~35 requests' worth of W3C + Jaeger header values.
const SLAB: usize = 4096;
/// Retired slabs kept for reuse per thread (32 KiB in all with the current one).
const RING: usize = 8;

/// Writes header values into reused slabs. One per thread (see [`with_writer`]).
#[derive(Debug)]
pub struct IdWriter {
    current: BytesMut,
    retired: VecDeque<BytesMut>,
}

impl Default for IdWriter {
    fn default() -> Self {
        IdWriter {
            current: BytesMut::new(),
            retired: VecDeque::with_capacity(RING),
        }
    }
}

impl IdWriter {
    /// Runs `write` on a zeroed slice of exactly `len` bytes and returns it frozen.
    pub fn write(&mut self, len: usize, write: impl FnOnce(&mut [u8])) -> Bytes {
        if self.current.capacity() - self.current.len() < len {
            self.next_slab(len);
        }
        self.current.resize(len, 0);
        write(&mut self.current[..len]);
        self.current.split_to(len).freeze()
    }

    fn next_slab(&mut self, len: usize) {
        let want = SLAB.max(len);
        let old = std::mem::take(&mut self.current);
        if old.capacity() > 0 {
            if self.retired.len() == RING {
                // Every slot is taken: forget the oldest (its memory lives on in its views).
                self.retired.pop_front();
            }
            self.retired.push_back(old);
        }
        for _ in 0..self.retired.len() {
            if let Some(mut slab) = self.retired.pop_front() {
                if slab.try_reclaim(want) {
                    self.current = slab;
                    return;
                }
                self.retired.push_back(slab);
            }
        }
        self.current = BytesMut::with_capacity(want);
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
    fn slabs_are_reused_while_recent_values_are_alive() {
        let mut w = IdWriter::default();
        let first = w.write(4, |b| b.copy_from_slice(b"abcd"));
        let base = first.as_ptr() as usize;
        assert_eq!(&first[..], b"abcd");
        drop(first);
        // Keep the last value alive, as a request's headers are: after the first two slabs,
        // writes keep landing in them and no third slab is ever made.
        let mut live = w.write(8, |b| b.fill(b'x'));
        let mut addresses = vec![base];
        for _ in 0..10 * SLAB {
            live = w.write(8, |b| b.fill(b'y'));
            addresses.push(live.as_ptr() as usize);
        }
        assert_eq!(&live[..], b"yyyyyyyy");
        // Distinct slabs = clusters of addresses more than a slab apart.
        addresses.sort_unstable();
        addresses.dedup();
        let slabs = 1 + addresses.windows(2).filter(|w| w[1] - w[0] >= SLAB).count();
        assert!(slabs <= 2, "{slabs} slabs used");
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
