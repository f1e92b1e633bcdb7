//! gRPC over HTTP/2 as the gateway sees it: which requests are gRPC, the `grpc-timeout`
//! header, and gateway-made statuses as trailers-only responses (HTTP 200 with `grpc-status`
//! and `grpc-message` in the headers), never a bare HTTP error.
//!
//! Wire facts from gRPC's "gRPC over HTTP2" protocol description: `grpc-timeout` is at most
//! 8 ASCII digits and a unit (`H` hours, `M` minutes, `S` seconds, `m` milliseconds,
//! `u` microseconds, `n` nanoseconds); `grpc-message` is percent-encoded UTF-8 where bytes
//! outside `0x20..=0x7E`, and `%` itself, are written as `%XX`.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};

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

/// Percent-encodes a status message for `grpc-message`.
pub fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static(""))
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
