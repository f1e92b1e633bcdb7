//! gRPC over HTTP/2 as the gateway sees it: which requests are gRPC, the `grpc-timeout`
//! header, and gateway-made statuses as trailers-only responses (HTTP 200 with `grpc-status`
//! and `grpc-message` in the headers), never a bare HTTP error.
//!
//! Wire facts from gRPC's "gRPC over HTTP2" protocol description: `grpc-timeout` is at most
//! 8 ASCII digits and a unit (`H` hours, `M` minutes, `S` seconds, `m` milliseconds,
//! `u` microseconds, `n` nanoseconds); `grpc-message` is percent-encoded UTF-8 where bytes
//! outside `0x20..=0x7E`, and `%` itself, are written as `%XX`. Messages are length-prefixed:
//! one flag byte (bit 0: compressed with the call's `grpc-encoding`), a 4-byte big-endian
//! length, then the message bytes.

use std::borrow::Cow;
use std::io::Read;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};

/// Bit 0 of a message prefix's flag byte: the message is compressed with the call's
/// `grpc-encoding`.
pub const FLAG_COMPRESSED: u8 = 0x01;

/// gRPC's default largest message a receiver accepts (4 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Why a length-prefixed message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    #[error("gRPC message of {len} bytes exceeds the maximum message size {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The flag byte is neither 0 nor 1.
    #[error("gRPC message flag {0:#04x} is neither 0 (plain) nor 1 (compressed)")]
    BadFlag(u8),
    /// A compressed message could not be inflated, or inflates past the limit.
    #[error("gRPC message does not inflate: {0}")]
    Inflate(String),
}

/// One length-prefixed message from the front of `buf`: `Ok(None)` until `buf` holds it whole;
/// `(compressed, message)` once it does (the bytes are taken from `buf`).
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(bool, Bytes)>, FrameError> {
    // flag (1) | length (4, big-endian) | message (length)
    if buf.len() < 5 {
        return Ok(None);
    }
    let flag = buf[0];
    if flag & !FLAG_COMPRESSED != 0 {
        return Err(FrameError::BadFlag(flag));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some((flag == FLAG_COMPRESSED, buf.split_to(len).freeze())))
}

/// Writes the 5-byte prefix of a length-prefixed message whose `len` bytes follow: the flag
/// byte (`0`, or [`FLAG_COMPRESSED`]; gRPC-Web's trailer frame sets `0x80`), then `len` as a
/// 4-byte big-endian integer. Every writer of gRPC framing goes through here. A `len` past
/// `u32::MAX` (far beyond any message size limit) is written as `u32::MAX`.
pub fn write_prefix(out: &mut BytesMut, flags: u8, len: usize) {
    // flag (1) | length (4, big-endian) | message (length)
    out.reserve(5 + len);
    out.put_u8(flags);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Writes `message` as one uncompressed length-prefixed message.
pub fn encode_frame(message: &[u8], out: &mut BytesMut) {
    write_prefix(out, 0, message.len());
    out.put_slice(message);
}

/// Inflates a gzip-compressed message (`grpc-encoding: gzip`), refusing output beyond `max`.
pub fn inflate_gzip(message: &[u8], max: usize) -> Result<Bytes, FrameError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(message)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Inflate(e.to_string()))?;
    if out.len() > max {
        return Err(FrameError::Inflate(format!(
            "inflated size exceeds the maximum message size {max}"
        )));
    }
    Ok(Bytes::from(out))
}

/// Whether the request is gRPC (`application/grpc` or `application/grpc+<codec>`; gRPC-Web's
/// `application/grpc-web*` is not).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .is_some_and(|ct| {
            ct.strip_prefix(b"application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
        })
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
pub fn service_and_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// Parses a `grpc-timeout` value; `None` if it is malformed (then it is ignored, as gRPC
/// servers do).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes a duration as `grpc-timeout` in the finest unit whose value fits 8 digits,
/// truncated, so the upstream's deadline is never later than the caller's.
pub fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        // Truncating keeps the forwarded deadline no later than the real one.
        let n = nanos / per;
        if n <= MAX {
            let text = format!("{n}{unit}");
            return HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0n"));
        }
    }
    HeaderValue::from_static("99999999H")
}

/// What `grpc-message` percent-encodes besides non-ASCII bytes (which are always encoded):
/// the controls 0x00..=0x1F and 0x7F, and `%` itself; 0x20..=0x7E otherwise stay as they are.
const GRPC_MESSAGE_ESCAPED: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes a status message for `grpc-message`.
pub fn encode_message(message: &str) -> HeaderValue {
    let encoded: Cow<'_, str> = utf8_percent_encode(message, GRPC_MESSAGE_ESCAPED).into();
    HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static(""))
}

/// Decodes a percent-encoded `grpc-message`; invalid escapes are kept as they are and
/// invalid UTF-8 is replaced.
pub fn decode_message(value: &[u8]) -> String {
    percent_decode(value).decode_utf8_lossy().into_owned()
}

/// The `grpc-status` of a header block (response headers of a trailers-only response, or
/// trailers), if present and numeric.
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_parse_and_encode() {
        let cases: &[(&[u8], Option<Duration>)] = &[
            (b"1H", Some(Duration::from_secs(3600))),
            (b"2M", Some(Duration::from_secs(120))),
            (b"3S", Some(Duration::from_secs(3))),
            (b"250m", Some(Duration::from_millis(250))),
            (b"7u", Some(Duration::from_micros(7))),
            (b"99999999n", Some(Duration::from_nanos(99_999_999))),
            (b"123456789m", None), // 9 digits
            (b"m", None),
            (b"10", None),
            (b"10x", None),
            (b"-1S", None),
            (b"", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_timeout(v), *want, "{}", String::from_utf8_lossy(v));
        }
        assert_eq!(encode_timeout(Duration::from_nanos(500)), "500n");
        assert_eq!(encode_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(encode_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(encode_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(encode_timeout(Duration::from_secs(400 * 3600)), "1440000S");
        for d in [1u64, 999, 123_456, 86_400_000] {
            let d = Duration::from_millis(d);
            let back = parse_timeout(encode_timeout(d).as_bytes()).unwrap();
            assert!(
                back <= d && d - back < Duration::from_millis(1),
                "{d:?} -> {back:?}"
            );
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no route"), "no route");
        assert_eq!(encode_message("50% ☃\n"), "50%25 %E2%98%83%0A");
        assert_eq!(
            encode_message("\0\t\x1f\x7f ~%é"),
            "%00%09%1F%7F ~%25%C3%A9"
        );
        // Every ASCII byte: 0x20..=0x7E but `%` stays, the rest is `%XX` in upper case.
        for b in 0u8..=0x7F {
            let text = char::from(b).to_string();
            let want = if (0x20..=0x7E).contains(&b) && b != b'%' {
                text.clone()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(encode_message(&text), want.as_str(), "byte {b:#04x}");
        }
    }

    #[test]
    fn messages_are_percent_decoded() {
        assert_eq!(decode_message(b"50%25 %E2%98%83%0A"), "50% \u{2603}\n");
        assert_eq!(decode_message(b"bad %zz %4"), "bad %zz %4");
        assert_eq!(
            decode_message(encode_message("no such user: ☃").as_bytes()),
            "no such user: ☃"
        );
        // Lower-case hex decodes; a lone or half escape and `%%` stay; bad UTF-8 is replaced.
        assert_eq!(decode_message(b"%e2%98%83 %%41 100%"), "\u{2603} %A 100%");
        assert_eq!(decode_message(b"%FFok%C3"), "\u{FFFD}ok\u{FFFD}");
        assert_eq!(decode_message(b""), "");
    }

    #[test]
    fn frames_decode_incrementally_and_bounded() {
        let mut wire = BytesMut::new();
        encode_frame(b"abc", &mut wire);
        encode_frame(b"", &mut wire);
        assert_eq!(&wire[..], b"\0\0\0\0\x03abc\0\0\0\0\0");
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            buf.put_u8(b);
            let got = decode_frame(&mut buf, 16).unwrap();
            match i {
                7 => assert_eq!(got, Some((false, Bytes::from_static(b"abc")))),
                12 => assert_eq!(got, Some((false, Bytes::new()))),
                _ => assert_eq!(got, None, "byte {i}"),
            }
        }
        let mut big = BytesMut::from(&[0u8, 0, 0, 0, 17][..]);
        assert_eq!(
            decode_frame(&mut big, 16),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        let mut flag = BytesMut::from(&[2u8, 0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut flag, 16), Err(FrameError::BadFlag(2)));
        let mut flag = BytesMut::from(&[0x80u8, 0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut flag, 16), Err(FrameError::BadFlag(0x80)));
    }

    #[test]
    fn prefixes_carry_the_flag_and_big_endian_length() {
        let mut out = BytesMut::new();
        write_prefix(&mut out, FLAG_COMPRESSED, 0x0102_0304);
        write_prefix(&mut out, 0x80, 0);
        assert_eq!(&out[..], b"\x01\x01\x02\x03\x04\x80\0\0\0\0");
        out.clear();
        write_prefix(&mut out, FLAG_COMPRESSED, 2);
        out.put_slice(b"xy");
        assert_eq!(
            decode_frame(&mut out, 16),
            Ok(Some((true, Bytes::from_static(b"xy"))))
        );
    }

    #[test]
    fn gzip_messages_inflate_within_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[7u8; 100]).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(
            inflate_gzip(&packed, 100).unwrap(),
            Bytes::from(vec![7u8; 100])
        );
        assert!(matches!(
            inflate_gzip(&packed, 99),
            Err(FrameError::Inflate(m)) if m.contains("exceeds the maximum message size 99")
        ));
        assert!(matches!(
            inflate_gzip(b"not gzip", 100),
            Err(FrameError::Inflate(_))
        ));
    }

    #[test]
    fn paths() {
        assert_eq!(
            service_and_method("/grpc.testing.TestService/EmptyCall"),
            Some(("grpc.testing.TestService", "EmptyCall"))
        );
        assert_eq!(service_and_method("/a/b/c"), None);
        assert_eq!(service_and_method("/a"), None);
        assert_eq!(service_and_method("//b"), None);
    }
}
