//! The THeader frame: decode and encode.
//!
//! ```text
//! offset  size  field
//! 0       4     LENGTH        u32 BE; bytes after this field (frame = LENGTH + 4)
//! 4       2     MAGIC         0x0FFF
//! 6       2     FLAGS         u16 BE
//! 8       4     SEQUENCE ID   u32 BE
//! 12      2     HEADER SIZE   u16 BE, in 4-byte words, covering only the variable area
//! 14      4*HS  VARIABLE AREA varint protocol id (0 binary, 2 compact)
//!                             varint transform count, varint transform id × count
//!                             info blocks until the area ends or info id 0 (padding):
//!                               varint info id (1 KEYVALUE, 2 PKEYVALUE from fbthrift)
//!                               varint count, count × (varint len, key, varint len, value)
//!                             0x00 padding (Python/Go write 0..3 bytes, C++/fbthrift 1..4)
//! 14+4*HS ...   PAYLOAD       transformed (zlib) message bytes, up to the frame's end
//! ```
//! Readers stop at the first info id they do not know; Apache readers therefore drop KEYVALUE
//! blocks written after fbthrift's PKEYVALUE. This encoder writes KEYVALUE first.

use std::cell::RefCell;
use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use super::message::ProtocolId;
use super::{ThriftError, varint};

/// THeader magic in bytes 4..6.
pub const MAGIC: u16 = 0x0FFF;
/// Fixed bytes after LENGTH: magic, flags, seq id, header size.
const FIXED: usize = 10;
/// Apache C++ rejects header areas of 16384 words or more.
const MAX_HEADER_WORDS: usize = 16_383;
/// Info block ids.
const INFO_KEYVALUE: u32 = 1;
const INFO_PKEYVALUE: u32 = 2;

/// Info headers: keys and values are opaque bytes, case-sensitive, in wire order.
pub type InfoHeaders = Vec<(Bytes, Bytes)>;

/// Spare info lists kept per thread for [`info_list`].
const SPARE_LISTS: usize = 32;
/// A list with room for more pairs than this is freed, not kept (one hostile frame's huge
/// list does not stay around).
const SPARE_LIST_PAIRS: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<InfoHeaders>> = const { RefCell::new(Vec::new()) };
}

/// An empty info list for a call's upstream headers: one that a forwarded call gave back
/// ([`recycle_info`]) on this thread, else a new one. Trace context is injected into this
/// list; a reused one has room for it, so injecting allocates nothing at steady state, also
/// for a client whose decoded list is empty (no info headers sent) or full.
pub fn info_list() -> InfoHeaders {
    SPARE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives a list back to this thread's spares once its headers are encoded (emptied; kept
/// only while the thread holds few spares and the list is small).
pub fn recycle_info(mut list: InfoHeaders) {
    if list.capacity() == 0 || list.capacity() > SPARE_LIST_PAIRS {
        return;
    }
    list.clear();
    let _ = SPARE.try_with(|s| {
        if let Ok(mut spare) = s.try_borrow_mut()
            && spare.len() < SPARE_LISTS
        {
            spare.push(list);
        }
    });
}

/// A payload transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Id 1: a complete zlib stream (RFC 1950).
    Zlib,
}

impl Transform {
    /// The wire id.
    pub fn id(self) -> u32 {
        match self {
            Transform::Zlib => 1,
        }
    }
}

/// A decoded THeader frame. `payload` is the message after inverse transforms; when the
/// frame had no transform it is a slice of the received frame (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFrame {
    /// FLAGS, kept and echoed.
    pub flags: u16,
    /// SEQUENCE ID (Apache writers copy the message seqid here).
    pub seq_id: u32,
    /// The protocol of the payload.
    pub protocol: ProtocolId,
    /// Transforms, in the order the writer applied them.
    pub transforms: Vec<Transform>,
    /// KEYVALUE info headers (trace context travels here).
    pub info: InfoHeaders,
    /// fbthrift PKEYVALUE (persistent) info headers, kept and forwarded.
    pub persistent: InfoHeaders,
    /// The message bytes (inflated).
    pub payload: Bytes,
}

/// The fixed fields of a frame, readable even when the rest is invalid (to answer with the
/// right seq id). Needs the first 14 bytes.
pub fn peek_fixed(frame: &[u8]) -> Option<(u16, u32)> {
    if frame.len() < 14 {
        return None;
    }
    let flags = u16::from_be_bytes([frame[6], frame[7]]);
    let seq_id = u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
    Some((flags, seq_id))
}

/// How many bytes the frame at the start of `buf` takes, LENGTH field included.
/// `Ok(None)`: fewer than 4 bytes buffered. Errors when LENGTH exceeds `max_frame` or the top
/// bit is set.
pub fn frame_len(buf: &[u8], max_frame: u32) -> Result<Option<usize>, ThriftError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if length > max_frame || length & 0x8000_0000 != 0 {
        return Err(ThriftError::FrameTooLarge {
            size: u64::from(length),
            max: u64::from(max_frame),
        });
    }
    Ok(Some(length as usize + 4))
}

/// Decodes one whole frame (LENGTH included), inflating the payload up to `max_frame` bytes.
pub fn decode(frame: Bytes, max_frame: u32) -> Result<HeaderFrame, ThriftError> {
    let Some(total) = frame_len(&frame, max_frame)? else {
        return Err(ThriftError::BadHeader("shorter than its LENGTH field"));
    };
    if total != frame.len() || frame.len() < 4 + FIXED {
        return Err(ThriftError::BadHeader("LENGTH does not match the frame"));
    }
    if u16::from_be_bytes([frame[4], frame[5]]) != MAGIC {
        return Err(ThriftError::BadHeader("no 0x0FFF magic"));
    }
    let (flags, seq_id) =
        peek_fixed(&frame).ok_or(ThriftError::BadHeader("truncated fixed header"))?;
    let words = usize::from(u16::from_be_bytes([frame[12], frame[13]]));
    let area_end = 14 + 4 * words;
    if words > MAX_HEADER_WORDS || area_end > frame.len() {
        return Err(ThriftError::BadHeader("header size runs past the frame"));
    }
    let area = &frame[14..area_end];
    let mut pos = 0;
    let protocol = match varint::read_u32(area, &mut pos, "protocol id")? {
        0 => ProtocolId::Binary,
        2 => ProtocolId::Compact,
        other => return Err(ThriftError::UnknownProtocol(other)),
    };
    let transforms = read_transforms(area, &mut pos)?;
    let mut info = Vec::new();
    let mut persistent = Vec::new();
    while pos < area.len() {
        let list = match varint::read_u32(area, &mut pos, "info id")? {
            INFO_KEYVALUE => &mut info,
            INFO_PKEYVALUE => &mut persistent,
            // 0 is padding; anything else unknown: stop, as every Apache reader does.
            _ => break,
        };
        read_info_block(&frame, 14, area, &mut pos, list)?;
    }
    let mut payload = frame.slice(area_end..);
    for t in transforms.iter().rev() {
        payload = match t {
            Transform::Zlib => inflate(&payload, max_frame)?,
        };
    }
    Ok(HeaderFrame {
        flags,
        seq_id,
        protocol,
        transforms,
        info,
        persistent,
        payload,
    })
}

/// Reads the transform list: a count, then that many ids. A frame may carry at most one
/// transform (zlib): zlib inside zlib would let a frame of a few hundred bytes inflate layer
/// after layer, each layer up to `max_frame`, so a repeat is refused before anything inflates.
/// Unknown ids are reported first, being the more specific fault.
fn read_transforms(area: &[u8], pos: &mut usize) -> Result<Vec<Transform>, ThriftError> {
    let count = varint::read_u32(area, pos, "transform count")?;
    if count as usize > area.len() {
        return Err(ThriftError::BadHeader(
            "transform count larger than the header area",
        ));
    }
    let mut transforms = Vec::new();
    for _ in 0..count {
        match varint::read_u32(area, pos, "transform id")? {
            1 => transforms.push(Transform::Zlib),
            other => return Err(ThriftError::UnknownTransform(other)),
        }
    }
    if count > 1 {
        return Err(ThriftError::RepeatedTransform(count));
    }
    Ok(transforms)
}

/// Reads one info block's pairs as slices of `frame` (no copies).
fn read_info_block(
    frame: &Bytes,
    area_start: usize,
    area: &[u8],
    pos: &mut usize,
    out: &mut InfoHeaders,
) -> Result<(), ThriftError> {
    let count = varint::read_u32(area, pos, "info header count")?;
    if count as usize > area.len() {
        return Err(ThriftError::BadHeader(
            "info header count larger than the header area",
        ));
    }
    for _ in 0..count {
        let key = read_string(frame, area_start, area, pos, "info header key")?;
        let value = read_string(frame, area_start, area, pos, "info header value")?;
        out.push((key, value));
    }
    Ok(())
}

fn read_string(
    frame: &Bytes,
    area_start: usize,
    area: &[u8],
    pos: &mut usize,
    what: &'static str,
) -> Result<Bytes, ThriftError> {
    let len = varint::read_u32(area, pos, what)? as usize;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= area.len())
        .ok_or(ThriftError::BadHeader(what))?;
    let s = frame.slice(area_start + *pos..area_start + end);
    *pos = end;
    Ok(s)
}

/// The first reservation for inflated bytes. The output then grows as the decoder actually
/// produces bytes, never from a size guessed up front: invalid zlib costs at most this much.
const INFLATE_FIRST_CHUNK: usize = 64 * 1024;

/// Inflates one complete zlib stream, failing once the output passes `max_frame` bytes.
fn inflate(data: &[u8], max_frame: u32) -> Result<Bytes, ThriftError> {
    let mut out = Vec::with_capacity(data.len().min(INFLATE_FIRST_CHUNK));
    let limit = u64::from(max_frame) + 1;
    flate2::read::ZlibDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| ThriftError::Inflate(e.to_string()))?;
    if out.len() as u64 > u64::from(max_frame) {
        return Err(ThriftError::FrameTooLarge {
            size: out.len() as u64,
            max: u64::from(max_frame),
        });
    }
    Ok(Bytes::from(out))
}

/// zlib-compresses a payload (for upstreams or replies that use the zlib transform).
pub fn deflate(data: &[u8]) -> Bytes {
    let mut encoder = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 16),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// The parts of a frame that go before the payload.
#[derive(Debug, Clone, Copy)]
pub struct HeaderHead<'a> {
    /// FLAGS.
    pub flags: u16,
    /// SEQUENCE ID.
    pub seq_id: u32,
    /// Payload protocol.
    pub protocol: ProtocolId,
    /// Transforms applied to the payload that follows.
    pub transforms: &'a [Transform],
    /// KEYVALUE headers.
    pub info: &'a [(Bytes, Bytes)],
    /// PKEYVALUE headers (written after KEYVALUE so Apache readers still see KEYVALUE).
    pub persistent: &'a [(Bytes, Bytes)],
}

/// Writes LENGTH, the fixed fields and the padded variable area for a payload of
/// `payload_len` (already transformed) bytes. The payload itself is written after it
/// (vectored), untouched. Fails if the header area would exceed the THeader limit.
pub fn encode_head(
    head: &HeaderHead<'_>,
    payload_len: usize,
    out: &mut BytesMut,
) -> Result<(), ThriftError> {
    let start = out.len();
    out.put_u32(0); // LENGTH, patched below
    out.put_u16(MAGIC);
    out.put_u16(head.flags);
    out.put_u32(head.seq_id);
    out.put_u16(0); // HEADER SIZE, patched below
    let area_start = out.len();
    varint::write_u32(out, head.protocol.id());
    varint::write_u32(out, head.transforms.len() as u32);
    for t in head.transforms {
        varint::write_u32(out, t.id());
    }
    for (id, list) in [
        (INFO_KEYVALUE, head.info),
        (INFO_PKEYVALUE, head.persistent),
    ] {
        if list.is_empty() {
            continue;
        }
        varint::write_u32(out, id);
        varint::write_u32(out, list.len() as u32);
        for (k, v) in list {
            varint::write_u32(out, k.len() as u32);
            out.put_slice(k);
            varint::write_u32(out, v.len() as u32);
            out.put_slice(v);
        }
    }
    let area_len = out.len() - area_start;
    let padding = (4 - area_len % 4) % 4;
    out.put_bytes(0, padding);
    let words = (area_len + padding) / 4;
    if words > MAX_HEADER_WORDS {
        out.truncate(start);
        return Err(ThriftError::BadHeader("header area over 64 KiB"));
    }
    let length = FIXED + words * 4 + payload_len;
    let length = u32::try_from(length).map_err(|_| ThriftError::FrameTooLarge {
        size: length as u64,
        max: u64::from(u32::MAX >> 2),
    })?;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    out[area_start - 2..area_start].copy_from_slice(&(words as u16).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn encode(head: &HeaderHead<'_>, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        encode_head(head, payload.len(), &mut out).unwrap();
        out.extend_from_slice(payload);
        out.freeze()
    }

    #[test]
    fn encodes_exact_bytes() {
        let info = vec![(b("k"), b("v"))];
        let frame = encode(
            &HeaderHead {
                flags: 1,
                seq_id: 7,
                protocol: ProtocolId::Binary,
                transforms: &[],
                info: &info,
                persistent: &[],
            },
            b"PAY",
        );
        // area: 00 (binary) 00 (no transforms) 01 (KEYVALUE) 01 (one) 01 'k' 01 'v' = 8 bytes, no padding
        let expected: &[u8] = &[
            0, 0, 0, 21, 0x0F, 0xFF, 0, 1, 0, 0, 0, 7, 0, 2, // fixed, HS = 2 words
            0, 0, 1, 1, 1, b'k', 1, b'v', // area
            b'P', b'A', b'Y',
        ];
        assert_eq!(&frame[..], expected);
        let decoded = decode(frame, DEFAULT).unwrap();
        assert_eq!(decoded.info, info);
        assert_eq!(decoded.payload, b("PAY"));
        assert_eq!((decoded.flags, decoded.seq_id), (1, 7));
    }

    const DEFAULT: u32 = super::super::DEFAULT_MAX_FRAME_SIZE;

    #[test]
    fn pads_to_words_and_round_trips_zlib_and_pkeyvalue() {
        let info = vec![
            (
                b("traceparent"),
                b("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ),
            (b("x"), b("")),
        ];
        let persistent = vec![(b("p"), b("q"))];
        let payload = vec![7u8; 5000];
        let compressed = deflate(&payload);
        let frame = encode(
            &HeaderHead {
                flags: 0,
                seq_id: 0xFFFF_FFFF,
                protocol: ProtocolId::Compact,
                transforms: &[Transform::Zlib],
                info: &info,
                persistent: &persistent,
            },
            &compressed,
        );
        assert_eq!((frame.len() - 14 - compressed.len()) % 4, 0);
        let decoded = decode(frame, DEFAULT).unwrap();
        assert_eq!(decoded.protocol, ProtocolId::Compact);
        assert_eq!(decoded.transforms, vec![Transform::Zlib]);
        assert_eq!(decoded.info, info);
        assert_eq!(decoded.persistent, persistent);
        assert_eq!(decoded.payload, Bytes::from(payload));
        assert_eq!(decoded.seq_id, 0xFFFF_FFFF);
    }

    fn raw_frame(area: &[u8], payload: &[u8]) -> Bytes {
        let mut f = Vec::new();
        let len = 10 + area.len() + payload.len();
        f.extend_from_slice(&(len as u32).to_be_bytes());
        f.extend_from_slice(&[0x0F, 0xFF, 0, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&((area.len() / 4) as u16).to_be_bytes());
        f.extend_from_slice(area);
        f.extend_from_slice(payload);
        Bytes::from(f)
    }

    #[test]
    fn accepts_cpp_style_full_word_padding() {
        // area of 8 bytes + a whole extra zero word, as Apache C++ and fbthrift write.
        let frame = raw_frame(&[0, 0, 1, 1, 1, b'k', 1, b'v', 0, 0, 0, 0], b"P");
        let d = decode(frame, DEFAULT).unwrap();
        assert_eq!(d.info, vec![(b("k"), b("v"))]);
        assert_eq!(d.payload, b("P"));
    }

    #[test]
    fn stops_at_unknown_info_id_like_apache() {
        let frame = raw_frame(&[0, 0, 3, 1, 1, b'k', 1, b'v', 0, 0, 0, 0], b"P");
        let d = decode(frame, DEFAULT).unwrap();
        assert!(d.info.is_empty());
    }

    #[test]
    fn rejects_malformed() {
        let cases: Vec<(Bytes, ThriftError)> = vec![
            (
                raw_frame(&[0, 1, 3, 0], b""),
                ThriftError::UnknownTransform(3),
            ),
            (
                raw_frame(&[1, 0, 0, 0], b""),
                ThriftError::UnknownProtocol(1),
            ),
            (
                raw_frame(&[0, 0, 1, 0xFF], b""),
                ThriftError::BadVarint("info header count"),
            ),
            (
                raw_frame(&[0, 0, 1, 1, 9, b'k', 0, 0], b""),
                ThriftError::BadHeader("info header key"),
            ),
            (
                raw_frame(&[0, 1, 1, 0], b"not zlib"),
                ThriftError::Inflate(String::new()),
            ),
        ];
        for (frame, want) in cases {
            let got = decode(frame, DEFAULT).unwrap_err();
            match (&got, &want) {
                (ThriftError::Inflate(_), ThriftError::Inflate(_)) => {}
                _ => assert_eq!(got, want),
            }
        }
        // HEADER SIZE past the frame.
        let mut f = raw_frame(&[0, 0, 0, 0], b"").to_vec();
        f[13] = 200;
        assert_eq!(
            decode(Bytes::from(f), DEFAULT),
            Err(ThriftError::BadHeader("header size runs past the frame"))
        );
        // No magic.
        let mut f = raw_frame(&[0, 0, 0, 0], b"").to_vec();
        f[4] = 0;
        assert_eq!(
            decode(Bytes::from(f), DEFAULT),
            Err(ThriftError::BadHeader("no 0x0FFF magic"))
        );
    }

    #[test]
    fn at_most_one_transform() {
        let cases: Vec<(&[u8], ThriftError)> = vec![
            // zlib listed twice.
            (&[0, 2, 1, 1], ThriftError::RepeatedTransform(2)),
            // zlib three times (padded to a word).
            (&[0, 3, 1, 1, 1, 0, 0, 0], ThriftError::RepeatedTransform(3)),
            // An unknown id among them is named as such.
            (&[0, 2, 1, 3], ThriftError::UnknownTransform(3)),
        ];
        let payload = deflate(&deflate(b"PAY"));
        for (area, want) in cases {
            assert_eq!(decode(raw_frame(area, &payload), DEFAULT), Err(want));
        }
        assert_eq!(
            ThriftError::RepeatedTransform(2).to_string(),
            "THeader frame lists 2 transforms; at most one (zlib) is accepted"
        );
        assert_eq!(
            ThriftError::RepeatedTransform(2).reason(),
            "repeated_transform"
        );
        // One zlib transform over zlib-of-zlib bytes inflates one layer, no more.
        let d = decode(raw_frame(&[0, 1, 1, 0], &payload), DEFAULT).unwrap();
        assert_eq!(d.transforms, vec![Transform::Zlib]);
        assert_eq!(d.payload, deflate(b"PAY"));
    }

    #[test]
    fn limits_frame_and_inflated_size() {
        assert_eq!(
            frame_len(&16_384_001u32.to_be_bytes(), DEFAULT),
            Err(ThriftError::FrameTooLarge {
                size: 16_384_001,
                max: 16_384_000
            })
        );
        assert_eq!(frame_len(&100u32.to_be_bytes(), DEFAULT), Ok(Some(104)));
        assert_eq!(frame_len(&[0, 0], DEFAULT), Ok(None));
        // A zlib bomb: 1 MiB of zeros compresses to ~1 KiB but inflates past a 64 KiB limit.
        let bomb = deflate(&vec![0u8; 1 << 20]);
        let frame = raw_frame(&[0, 1, 1, 0], &bomb);
        assert_eq!(
            decode(frame, 64 * 1024),
            Err(ThriftError::FrameTooLarge {
                size: 65_537,
                max: 65_536
            })
        );
    }

    #[test]
    fn info_lists_are_reused_empty_and_small_ones_only() {
        // Each test runs on its own thread: its spares start empty.
        let mut list = info_list();
        list.push((b("traceparent"), b("00-x")));
        list.push((b("x-trace-raw"), b("AAA=")));
        let room = list.capacity();
        recycle_info(list);
        let again = info_list();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        assert_eq!(info_list().capacity(), 0, "only one spare was given back");
        let mut big = Vec::with_capacity(SPARE_LIST_PAIRS + 1);
        big.push((b("k"), b("v")));
        recycle_info(big);
        assert_eq!(info_list().capacity(), 0, "a big list is freed, not kept");
    }
}
