//! Jaeger `uber-trace-id` and `uberctx-*` baggage.
//!
//! ```text
//! uber-trace-id = trace-id ":" span-id ":" parent-span-id ":" flags
//!   trace-id  1..32 hex (64- or 128-bit; leading zeros may be omitted), not zero
//!   span-id   1..16 hex, not zero
//!   parent    hex, deprecated (written as 0)
//!   flags     1..2 hex digits; bit 0 sampled, bit 1 debug (debug implies sampled)
//! The value may arrive URL-encoded, with "%3A" for each ":".
//! ```

use super::pool::{IdWriter, hex_encode};
use super::{Carrier, ParseError, SpanId, TraceContext, TraceFlags, TraceId};

/// Header name.
pub(super) const UBER_TRACE_ID: &str = "uber-trace-id";
/// Baggage header prefix.
pub(super) const UBERCTX: &str = "uberctx-";

const H: &str = UBER_TRACE_ID;

/// Parses up to `N` bytes of hex without leading zeros into the low bytes of an array.
fn parse_hex_lenient<const N: usize>(s: &[u8]) -> Result<[u8; N], ParseError> {
    if s.is_empty() || s.len() > 2 * N {
        return Err(ParseError::Length { header: H });
    }
    let mut out = [0u8; N];
    // Walk from the last digit backwards, filling from the last byte.
    for (i, &c) in s.iter().rev().enumerate() {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(ParseError::Character { header: H }),
        };
        out[N - 1 - i / 2] |= if i % 2 == 0 { v } else { v << 4 };
    }
    Ok(out)
}

/// Splits on ":" or on the URL-encoded "%3A"/"%3a" into exactly four fields.
fn split4(v: &[u8]) -> Option<[&[u8]; 4]> {
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let (mut start, mut i, mut n) = (0, 0, 0);
    while i < v.len() {
        let sep = if v[i] == b':' {
            1
        } else if v[i] == b'%'
            && v.get(i + 1) == Some(&b'3')
            && matches!(v.get(i + 2), Some(b'A' | b'a'))
        {
            3
        } else {
            0
        };
        if sep > 0 {
            if n == 3 {
                return None;
            }
            fields[n] = &v[start..i];
            n += 1;
            i += sep;
            start = i;
        } else {
            i += 1;
        }
    }
    if n != 3 {
        return None;
    }
    fields[3] = &v[start..];
    Some(fields)
}

/// Extracts `uber-trace-id`. `Ok(None)` when absent.
pub(super) fn extract<C: Carrier + ?Sized>(
    carrier: &C,
) -> Result<Option<TraceContext>, ParseError> {
    let Some(v) = carrier.get(UBER_TRACE_ID) else {
        return Ok(None);
    };
    let [trace, span, _parent, flags] = split4(v).ok_or(ParseError::Malformed { header: H })?;
    let trace_id = TraceId(parse_hex_lenient::<16>(trace)?);
    let span_id = SpanId(parse_hex_lenient::<8>(span)?);
    if flags.len() > 2 {
        return Err(ParseError::Length { header: H });
    }
    let flags = parse_hex_lenient::<1>(flags)?[0];
    if trace_id.is_zero() || span_id.is_zero() {
        return Err(ParseError::ZeroId { header: H });
    }
    let sampled = flags & 0x03 != 0;
    Ok(Some(TraceContext {
        trace_id,
        span_id,
        flags: TraceFlags::default().with_sampled(sampled),
        ..Default::default()
    }))
}

/// Injects `uber-trace-id` as `{32 hex}:{16 hex}:0:{01|00}`.
pub(super) fn inject<C: Carrier + ?Sized>(ctx: &TraceContext, carrier: &mut C, w: &mut IdWriter) {
    let value = w.write(54, |b| {
        hex_encode(&ctx.trace_id.0, &mut b[..32]);
        b[32] = b':';
        hex_encode(&ctx.span_id.0, &mut b[33..49]);
        b[49..52].copy_from_slice(b":0:");
        b[52..54].copy_from_slice(if ctx.flags.is_sampled() { b"01" } else { b"00" });
    });
    carrier.set(UBER_TRACE_ID, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn ext(v: &str) -> Result<Option<TraceContext>, ParseError> {
        let mut h = HeaderMap::new();
        h.insert(UBER_TRACE_ID, v.parse().unwrap());
        extract(&h)
    }

    #[test]
    fn parses_128_and_64_bit_ids_with_and_without_leading_zeros() {
        let c = ext("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.trace_id.to_hex().as_str(), c.span_id.to_hex().as_str()),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        );
        assert!(c.flags.is_sampled());
        let c = ext("a3ce929d0e0e4736:f067aa0ba902b7:0:0").unwrap().unwrap();
        assert_eq!(c.trace_id.to_hex(), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_hex(), "00f067aa0ba902b7");
        assert!(!c.flags.is_sampled());
        let c = ext("1:2:0:3").unwrap().unwrap();
        assert_eq!(c.trace_id.to_hex(), "00000000000000000000000000000001");
        assert!(c.flags.is_sampled(), "debug implies sampled");
        let c = ext("ABC:DEF:0:02").unwrap().unwrap();
        assert_eq!(c.trace_id.to_hex(), "00000000000000000000000000000abc");
        assert!(c.flags.is_sampled());
    }

    #[test]
    fn accepts_url_encoded_separators() {
        let c = ext("4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3a0%3A1")
            .unwrap()
            .unwrap();
        assert_eq!(c.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(c.flags.is_sampled());
    }

    #[test]
    fn rejects_malformed() {
        use ParseError::*;
        let cases: &[(&str, ParseError)] = &[
            (
                "4bf92f3577b34da6:00f067aa0ba902b7:0",
                Malformed { header: H },
            ),
            ("a:b:c:d:e", Malformed { header: H }),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736a:1:0:1",
                Length { header: H },
            ),
            (":1:0:1", Length { header: H }),
            ("1:00f067aa0ba902b71:0:1", Length { header: H }),
            ("xyz:1:0:1", Character { header: H }),
            ("0:1:0:1", ZeroId { header: H }),
            ("1:0000:0:1", ZeroId { header: H }),
            ("1:1:0:100", Length { header: H }),
        ];
        for (v, want) in cases {
            assert_eq!(ext(v), Err(want.clone()), "{v}");
        }
    }

    #[test]
    fn injects_exact_bytes_and_round_trips() {
        let c = ext("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1")
            .unwrap()
            .unwrap();
        let mut list: Vec<(Bytes, Bytes)> = Vec::new();
        inject(&c, &mut list, &mut IdWriter::default());
        assert_eq!(
            list[0].1,
            Bytes::from_static(b"4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:01")
        );
        assert_eq!(extract(&list).unwrap().unwrap(), c);
    }
}
