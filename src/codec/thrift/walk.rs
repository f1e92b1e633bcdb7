//! Walks a Thrift message value by value without its IDL: to find where an unframed message
//! ends (skip), and to re-encode binary ⇄ compact (transcode). Depth and sizes are bounded.
//!
//! ```text
//! type        binary id  binary encoding          compact id  compact encoding
//! bool        2          u8 0/1                    1/2         in the field header; 1/2 byte in containers
//! byte        3          i8                        3           i8
//! double      4          f64 BE                    7           f64 LE
//! i16         6          i16 BE                    4           zigzag varint
//! i32         8          i32 BE                    5           zigzag varint
//! i64         10         i64 BE                    6           zigzag varint64
//! string      11         i32 len + bytes           8           varint len + bytes
//! struct      12         fields, stop (0)          12          fields (delta ids), stop (0)
//! map         13         kt, vt, i32 size          11          varint size, (kt<<4|vt) if size>0
//! set / list  14 / 15    et, i32 size              10 / 9      (size<<4|et), varint if size>=15
//! uuid        16         16 bytes                  13          16 bytes
//! field       type u8, id i16 BE                  (delta<<4|type), or type then zigzag i16 id
//! ```
//!
//! One fact is lost without the IDL: an empty compact map is the single byte 0 and names no
//! key/value types, so compact → binary writes an empty map as `map<byte, byte>` (`03 03`,
//! size 0). Generated readers of the Apache languages ignore the element types of an empty
//! map; tests/thrift_golden.rs pins the difference against Python's own encoding. An empty
//! compact list or set whose element type is 0 (STOP, which binary cannot carry) is written as
//! a list of byte for the same reason.

use bytes::{BufMut, Bytes, BytesMut};

use super::message::{MessageType, ProtocolId, encode_message_header, peek_message};
use super::{ThriftError, varint};

/// Deepest nesting of structs and containers accepted.
const MAX_DEPTH: usize = 64;

/// Protocol-neutral type ids (the binary protocol's).
mod ttype {
    pub(super) const STOP: u8 = 0;
    pub(super) const BOOL: u8 = 2;
    pub(super) const BYTE: u8 = 3;
    pub(super) const DOUBLE: u8 = 4;
    pub(super) const I16: u8 = 6;
    pub(super) const I32: u8 = 8;
    pub(super) const I64: u8 = 10;
    pub(super) const STRING: u8 = 11;
    pub(super) const STRUCT: u8 = 12;
    pub(super) const MAP: u8 = 13;
    pub(super) const SET: u8 = 14;
    pub(super) const LIST: u8 = 15;
    pub(super) const UUID: u8 = 16;
}

/// Walk failure: more bytes are needed, or the input is invalid.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Incomplete,
    Invalid(&'static str),
}

impl From<ThriftError> for Stop {
    fn from(_: ThriftError) -> Self {
        Stop::Invalid("bad varint")
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    protocol: ProtocolId,
    /// Last field id per open compact struct.
    last_ids: Vec<i16>,
    /// A compact bool field's value, carried from the field header.
    pending_bool: Option<bool>,
}

/// Output side: the other protocol, or nothing (skip).
struct Writer<'o> {
    out: Option<&'o mut BytesMut>,
    protocol: ProtocolId,
    last_ids: Vec<i16>,
    /// A compact bool field's header waits for its value.
    pending_field: Option<i16>,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Stop> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(Stop::Invalid("size overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or(Stop::Incomplete)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn varint64(&mut self) -> Result<u64, Stop> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Stop::Invalid("varint longer than 10 bytes"))
    }
    fn varint32(&mut self) -> Result<u32, Stop> {
        if self.pos >= self.buf.len() {
            return Err(Stop::Incomplete);
        }
        let mut pos = self.pos;
        match varint::read_u32(self.buf, &mut pos, "value") {
            Ok(v) => {
                self.pos = pos;
                Ok(v)
            }
            // Running off the end is "need more"; an overlong varint is invalid.
            Err(_) if self.buf.len() - self.pos < 5 => Err(Stop::Incomplete),
            Err(_) => Err(Stop::Invalid("bad varint")),
        }
    }
    fn size(&mut self) -> Result<usize, Stop> {
        let n = match self.protocol {
            ProtocolId::Binary => i32::from_be_bytes(self.be()?),
            ProtocolId::Compact => self.varint32()? as i32,
        };
        // Every element takes at least one byte except in exotic cases; a size larger than the
        // whole buffer can only be "need more", but cap it to refuse absurd announcements.
        usize::try_from(n)
            .map_err(|_| Stop::Invalid("negative size"))
            .and_then(|n| {
                if n > 256 * 1024 * 1024 {
                    Err(Stop::Invalid("size over 256 MiB"))
                } else {
                    Ok(n)
                }
            })
    }
}

fn zigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}
fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn compact_to_ttype(c: u8) -> Result<u8, Stop> {
    Ok(match c {
        0 => ttype::STOP,
        1 | 2 => ttype::BOOL,
        3 => ttype::BYTE,
        4 => ttype::I16,
        5 => ttype::I32,
        6 => ttype::I64,
        7 => ttype::DOUBLE,
        8 => ttype::STRING,
        9 => ttype::LIST,
        10 => ttype::SET,
        11 => ttype::MAP,
        12 => ttype::STRUCT,
        13 => ttype::UUID,
        _ => return Err(Stop::Invalid("unknown compact type")),
    })
}

fn ttype_to_compact(t: u8) -> u8 {
    match t {
        ttype::BOOL => 1,
        ttype::BYTE => 3,
        ttype::I16 => 4,
        ttype::I32 => 5,
        ttype::I64 => 6,
        ttype::DOUBLE => 7,
        ttype::STRING => 8,
        ttype::LIST => 9,
        ttype::SET => 10,
        ttype::MAP => 11,
        ttype::STRUCT => 12,
        ttype::UUID => 13,
        _ => 0,
    }
}

fn check_ttype(t: u8) -> Result<u8, Stop> {
    match t {
        ttype::BOOL
        | ttype::BYTE
        | ttype::DOUBLE
        | ttype::I16
        | ttype::I32
        | ttype::I64
        | ttype::STRING
        | ttype::STRUCT
        | ttype::MAP
        | ttype::SET
        | ttype::LIST
        | ttype::UUID => Ok(t),
        _ => Err(Stop::Invalid("unknown binary type")),
    }
}

impl Writer<'_> {
    fn put(&mut self, f: impl FnOnce(&mut BytesMut)) {
        if let Some(out) = self.out.as_deref_mut() {
            f(out);
        }
    }
    fn zigzag32(&mut self, v: i32) {
        self.put(|o| varint::write_u32(o, ((v << 1) ^ (v >> 31)) as u32));
    }
    fn varint64(&mut self, mut v: u64) {
        self.put(|o| {
            while v >= 0x80 {
                o.put_u8((v as u8 & 0x7F) | 0x80);
                v >>= 7;
            }
            o.put_u8(v as u8);
        });
    }
    fn field_header(&mut self, t: u8, id: i16) {
        match self.protocol {
            ProtocolId::Binary => self.put(|o| {
                o.put_u8(t);
                o.put_i16(id);
            }),
            ProtocolId::Compact => {
                if t == ttype::BOOL {
                    // The value decides the type nibble: written when the value arrives.
                    self.pending_field = Some(id);
                } else {
                    self.compact_field(ttype_to_compact(t), id);
                }
            }
        }
    }
    fn compact_field(&mut self, ctype: u8, id: i16) {
        let last = self.last_ids.last().copied().unwrap_or(0);
        let delta = i32::from(id) - i32::from(last);
        if (1..=15).contains(&delta) {
            self.put(|o| o.put_u8(((delta as u8) << 4) | ctype));
        } else {
            self.put(|o| o.put_u8(ctype));
            self.zigzag32(i32::from(id));
        }
        if let Some(l) = self.last_ids.last_mut() {
            *l = id;
        }
    }
    fn bool(&mut self, v: bool) {
        match (self.protocol, self.pending_field.take()) {
            (ProtocolId::Compact, Some(id)) => self.compact_field(if v { 1 } else { 2 }, id),
            (ProtocolId::Compact, None) => self.put(|o| o.put_u8(if v { 1 } else { 2 })),
            (ProtocolId::Binary, _) => self.put(|o| o.put_u8(u8::from(v))),
        }
    }
}

/// Copies one value of type `t` from `r` to `w`.
fn value(r: &mut Reader<'_>, w: &mut Writer<'_>, t: u8, depth: usize) -> Result<(), Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop::Invalid("nesting deeper than 64"));
    }
    let compact_in = r.protocol == ProtocolId::Compact;
    let compact_out = w.protocol == ProtocolId::Compact;
    match t {
        ttype::BOOL => {
            let v = match r.pending_bool.take() {
                Some(v) => v,
                None if compact_in => r.u8()? == 1,
                None => r.u8()? != 0,
            };
            w.bool(v);
        }
        ttype::BYTE => {
            let b = r.u8()?;
            w.put(|o| o.put_u8(b));
        }
        ttype::DOUBLE => {
            let mut bytes: [u8; 8] = r.be()?;
            if compact_in != compact_out {
                bytes.reverse();
            }
            w.put(|o| o.put_slice(&bytes));
        }
        ttype::I16 | ttype::I32 => {
            let v = if compact_in {
                zigzag32(r.varint32()?)
            } else if t == ttype::I16 {
                i32::from(i16::from_be_bytes(r.be()?))
            } else {
                i32::from_be_bytes(r.be()?)
            };
            if compact_out {
                w.zigzag32(v);
            } else if t == ttype::I16 {
                w.put(|o| o.put_i16(v as i16));
            } else {
                w.put(|o| o.put_i32(v));
            }
        }
        ttype::I64 => {
            let v = if compact_in {
                zigzag64(r.varint64()?)
            } else {
                i64::from_be_bytes(r.be()?)
            };
            if compact_out {
                w.varint64(((v << 1) ^ (v >> 63)) as u64);
            } else {
                w.put(|o| o.put_i64(v));
            }
        }
        ttype::STRING => {
            let n = r.size()?;
            let s = r.take(n)?;
            let out_compact = compact_out;
            w.put(|o| {
                if out_compact {
                    varint::write_u32(o, s.len() as u32);
                } else {
                    o.put_i32(s.len() as i32);
                }
                o.put_slice(s);
            });
        }
        ttype::UUID => {
            let s = r.take(16)?;
            w.put(|o| o.put_slice(s));
        }
        ttype::STRUCT => structure(r, w, depth + 1)?,
        ttype::LIST | ttype::SET => {
            let (et, n) = if compact_in {
                let h = r.u8()?;
                let n = if h >> 4 == 15 {
                    r.size()?
                } else {
                    usize::from(h >> 4)
                };
                // Compact readers accept element type 0 (STOP) in an empty list; binary has
                // no such element type, so it becomes list<byte>, as the empty map does.
                let et = match compact_to_ttype(h & 0x0F)? {
                    ttype::STOP if n == 0 => ttype::BYTE,
                    ttype::STOP => return Err(Stop::Invalid("list of STOP elements")),
                    et => et,
                };
                (et, n)
            } else {
                let et = check_ttype(r.u8()?)?;
                (et, r.size()?)
            };
            if compact_out {
                let ct = ttype_to_compact(et);
                if n < 15 {
                    w.put(|o| o.put_u8(((n as u8) << 4) | ct));
                } else {
                    w.put(|o| {
                        o.put_u8(0xF0 | ct);
                        varint::write_u32(o, n as u32);
                    });
                }
            } else {
                w.put(|o| {
                    o.put_u8(et);
                    o.put_i32(n as i32);
                });
            }
            for _ in 0..n {
                value(r, w, et, depth + 1)?;
            }
        }
        ttype::MAP => {
            let (kt, vt, n) = if compact_in {
                let n = r.size()?;
                if n == 0 {
                    (ttype::BYTE, ttype::BYTE, 0)
                } else {
                    let h = r.u8()?;
                    (compact_to_ttype(h >> 4)?, compact_to_ttype(h & 0x0F)?, n)
                }
            } else {
                let kt = check_ttype(r.u8()?)?;
                let vt = check_ttype(r.u8()?)?;
                (kt, vt, r.size()?)
            };
            if compact_out {
                w.put(|o| {
                    varint::write_u32(o, n as u32);
                    if n > 0 {
                        o.put_u8((ttype_to_compact(kt) << 4) | ttype_to_compact(vt));
                    }
                });
            } else {
                w.put(|o| {
                    o.put_u8(kt);
                    o.put_u8(vt);
                    o.put_i32(n as i32);
                });
            }
            for _ in 0..n {
                value(r, w, kt, depth + 1)?;
                value(r, w, vt, depth + 1)?;
            }
        }
        _ => return Err(Stop::Invalid("unknown type")),
    }
    Ok(())
}

fn structure(r: &mut Reader<'_>, w: &mut Writer<'_>, depth: usize) -> Result<(), Stop> {
    r.last_ids.push(0);
    w.last_ids.push(0);
    loop {
        let (t, id) = if r.protocol == ProtocolId::Compact {
            let h = r.u8()?;
            if h == 0 {
                break;
            }
            let ct = h & 0x0F;
            let t = compact_to_ttype(ct)?;
            let delta = h >> 4;
            let id = if delta == 0 {
                zigzag32(r.varint32()?) as i16
            } else {
                r.last_ids
                    .last()
                    .copied()
                    .unwrap_or(0)
                    .wrapping_add(i16::from(delta))
            };
            if let Some(l) = r.last_ids.last_mut() {
                *l = id;
            }
            if t == ttype::BOOL {
                r.pending_bool = Some(ct == 1);
            }
            (t, id)
        } else {
            let t = r.u8()?;
            if t == ttype::STOP {
                break;
            }
            (check_ttype(t)?, i16::from_be_bytes(r.be()?))
        };
        w.field_header(t, id);
        value(r, w, t, depth)?;
    }
    w.put(|o| o.put_u8(0));
    r.last_ids.pop();
    w.last_ids.pop();
    Ok(())
}

fn walk(
    buf: &[u8],
    from: ProtocolId,
    to: ProtocolId,
    out: Option<&mut BytesMut>,
) -> Result<Option<usize>, ThriftError> {
    let Some(header) = peek_message(buf, from)? else {
        return Ok(None);
    };
    let mut w = Writer {
        out,
        protocol: to,
        last_ids: Vec::new(),
        pending_field: None,
    };
    if w.out.is_some() {
        write_message_header(&mut w, header.name, header.kind, header.seq_id);
    }
    let mut r = Reader {
        buf,
        pos: header.body_offset,
        protocol: from,
        last_ids: Vec::new(),
        pending_bool: None,
    };
    match structure(&mut r, &mut w, 0) {
        Ok(()) => Ok(Some(r.pos)),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(why)) => Err(ThriftError::BadMessage(why)),
    }
}

fn write_message_header(w: &mut Writer<'_>, name: &str, kind: MessageType, seq_id: i32) {
    let protocol = w.protocol;
    w.put(|o| match protocol {
        ProtocolId::Binary => {
            o.put_u32(0x8001_0000 | u32::from(kind.as_u8()));
            o.put_i32(name.len() as i32);
            o.put_slice(name.as_bytes());
            o.put_i32(seq_id);
        }
        ProtocolId::Compact => {
            o.put_u8(0x82);
            o.put_u8((kind.as_u8() << 5) | 0x01);
            varint::write_u32(o, seq_id as u32);
            varint::write_u32(o, name.len() as u32);
            o.put_slice(name.as_bytes());
        }
    });
}

/// The length of the whole message (header and argument struct) at the start of `buf`, for
/// unframed transports. `Ok(None)`: the message is not complete yet.
pub fn message_len(buf: &[u8], protocol: ProtocolId) -> Result<Option<usize>, ThriftError> {
    walk(buf, protocol, protocol, None)
}

/// Re-encodes one whole message from `from` to `to` into `out`; returns the input length used.
/// `Ok(None)`: incomplete (nothing useful is left in `out`).
pub fn transcode(
    buf: &[u8],
    from: ProtocolId,
    to: ProtocolId,
    out: &mut BytesMut,
) -> Result<Option<usize>, ThriftError> {
    let start = out.len();
    let result = walk(buf, from, to, Some(out));
    if !matches!(result, Ok(Some(_))) {
        out.truncate(start);
    }
    result
}

/// Re-encodes an argument or result struct between protocols (wrapped in a throwaway
/// message head so the walker can run, the head cut off again).
pub fn transcode_struct(
    args: &[u8],
    from: ProtocolId,
    to: ProtocolId,
) -> Result<Bytes, ThriftError> {
    let mut wrapped = BytesMut::with_capacity(args.len() + 16);
    encode_message_header(&mut wrapped, from, "x", MessageType::Call, 0);
    wrapped.extend_from_slice(args);
    let mut out = BytesMut::with_capacity(args.len() + 16);
    if transcode(&wrapped, from, to, &mut out)?.is_none() {
        return Err(ThriftError::BadMessage("the Thrift struct is truncated"));
    }
    let mut head = BytesMut::new();
    encode_message_header(&mut head, to, "x", MessageType::Call, 0);
    Ok(out.freeze().slice(head.len()..))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary CALL `echo`(seqid 7) with every type:
    /// 1: bool true, 2: byte -2, 3: i16 -300, 4: i32 70000, 5: i64 -5e12, 6: double 1.5,
    /// 7: string "hi", 8: list<i32>[1,2,3], 9: map<string,bool>{"k": false},
    /// 10: struct { 1: set<string>{"a"} }, 300: uuid, 11: list<bool> x 16
    fn binary_sample() -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u32(0x8001_0001);
        b.put_i32(4);
        b.put_slice(b"echo");
        b.put_i32(7);
        b.put_u8(2);
        b.put_i16(1);
        b.put_u8(1);
        b.put_u8(3);
        b.put_i16(2);
        b.put_i8(-2);
        b.put_u8(6);
        b.put_i16(3);
        b.put_i16(-300);
        b.put_u8(8);
        b.put_i16(4);
        b.put_i32(70000);
        b.put_u8(10);
        b.put_i16(5);
        b.put_i64(-5_000_000_000_000);
        b.put_u8(4);
        b.put_i16(6);
        b.put_f64(1.5);
        b.put_u8(11);
        b.put_i16(7);
        b.put_i32(2);
        b.put_slice(b"hi");
        b.put_u8(15);
        b.put_i16(8);
        b.put_u8(8);
        b.put_i32(3);
        for v in [1, 2, 3] {
            b.put_i32(v);
        }
        b.put_u8(13);
        b.put_i16(9);
        b.put_u8(11);
        b.put_u8(2);
        b.put_i32(1);
        b.put_i32(1);
        b.put_slice(b"k");
        b.put_u8(0);
        b.put_u8(12);
        b.put_i16(10);
        b.put_u8(14);
        b.put_i16(1);
        b.put_u8(11);
        b.put_i32(1);
        b.put_i32(1);
        b.put_slice(b"a");
        b.put_u8(0);
        b.put_u8(16);
        b.put_i16(300);
        b.put_slice(&[0xAB; 16]);
        b.put_u8(15);
        b.put_i16(11);
        b.put_u8(2);
        b.put_i32(16);
        for i in 0..16 {
            b.put_u8(u8::from(i % 2 == 0));
        }
        b.put_u8(0);
        b.to_vec()
    }

    #[test]
    fn finds_the_end_of_a_message_and_needs_more_before() {
        let msg = binary_sample();
        let mut with_next = msg.clone();
        with_next.extend_from_slice(&[0x80, 0x01]);
        assert_eq!(
            message_len(&with_next, ProtocolId::Binary),
            Ok(Some(msg.len()))
        );
        for cut in 0..msg.len() {
            assert_eq!(
                message_len(&msg[..cut], ProtocolId::Binary),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn binary_compact_round_trip_is_byte_exact() {
        let msg = binary_sample();
        let mut compact = BytesMut::new();
        assert_eq!(
            transcode(&msg, ProtocolId::Binary, ProtocolId::Compact, &mut compact),
            Ok(Some(msg.len()))
        );
        // Spot-check compact bytes: header 82 21 07 04 "echo", then bool field 1 true = 0x11.
        assert_eq!(
            &compact[..9],
            &[0x82, 0x21, 0x07, 0x04, b'e', b'c', b'h', b'o', 0x11]
        );
        assert_eq!(
            message_len(&compact, ProtocolId::Compact),
            Ok(Some(compact.len()))
        );
        let mut back = BytesMut::new();
        assert_eq!(
            transcode(&compact, ProtocolId::Compact, ProtocolId::Binary, &mut back),
            Ok(Some(compact.len()))
        );
        assert_eq!(back.to_vec(), msg);
        for cut in 0..compact.len() {
            assert_eq!(
                message_len(&compact[..cut], ProtocolId::Compact),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn rejects_bad_types_depth_and_sizes() {
        let mut m = binary_sample()[..16].to_vec();
        m.extend_from_slice(&[9, 0, 1]); // type 9 does not exist
        assert_eq!(
            message_len(&m, ProtocolId::Binary),
            Err(ThriftError::BadMessage("unknown binary type"))
        );
        let mut m = binary_sample()[..16].to_vec();
        m.extend_from_slice(&[11, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]); // negative string size
        assert_eq!(
            message_len(&m, ProtocolId::Binary),
            Err(ThriftError::BadMessage("negative size"))
        );
        let mut m = binary_sample()[..16].to_vec();
        for _ in 0..70 {
            m.extend_from_slice(&[12, 0, 1]); // struct in struct in ...
        }
        assert_eq!(
            message_len(&m, ProtocolId::Binary),
            Err(ThriftError::BadMessage("nesting deeper than 64"))
        );
    }

    /// Found by fuzz/fuzz_targets/thrift_walk.rs: an empty compact list of element type 0
    /// was transcoded to a binary list of type 0, which the binary walker then rejected.
    #[test]
    fn empty_compact_list_of_stop_transcodes_to_valid_binary() {
        // CALL ping(seqid 1) { 1: list<STOP> [] } and the same list with one element.
        let empty = b"\x82\x21\x01\x04ping\x19\x00\x00";
        let mut binary = BytesMut::new();
        let used = transcode(empty, ProtocolId::Compact, ProtocolId::Binary, &mut binary);
        assert_eq!(used, Ok(Some(empty.len())));
        assert_eq!(
            &binary[binary.len() - 9..],
            b"\x0f\x00\x01\x03\x00\x00\x00\x00\x00"
        );
        assert_eq!(
            message_len(&binary, ProtocolId::Binary),
            Ok(Some(binary.len()))
        );
        let one = b"\x82\x21\x01\x04ping\x19\x10\x00\x00";
        assert_eq!(
            message_len(one, ProtocolId::Compact),
            Err(ThriftError::BadMessage("list of STOP elements"))
        );
    }
}
