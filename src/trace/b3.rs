//! Zipkin B3, single header and multi header.
//!
//! ```text
//! b3 = trace-id "-" span-id [ "-" sampling [ "-" parent-span-id ] ]  |  sampling
//!   trace-id 16 or 32 hex; span-id 16 hex; sampling "0" | "1" | "d" (debug, implies sampled)
//! X-B3-TraceId (16 or 32 hex), X-B3-SpanId (16 hex), X-B3-ParentSpanId,
//! X-B3-Sampled ("1" | "0" | "true" | "false"), X-B3-Flags ("1" = debug, implies sampled)
//! ```
//! A lone sampling value carries no context (`None`). An absent sampling decision reads as
//! not sampled, as OpenTelemetry's B3 propagator does. 64-bit ids are left-padded with zeros.

use super::pool::{IdWriter, hex_decode, hex_encode};
use super::{Carrier, ParseError, SpanId, TraceContext, TraceFlags, TraceId};

/// Single header name.
pub(super) const B3: &str = "b3";
/// Multi header names.
pub(super) const TRACE_ID: &str = "x-b3-traceid";
pub(super) const SPAN_ID: &str = "x-b3-spanid";
pub(super) const PARENT_ID: &str = "x-b3-parentspanid";
pub(super) const SAMPLED: &str = "x-b3-sampled";
pub(super) const FLAGS: &str = "x-b3-flags";

fn trace_id(v: &[u8], header: &'static str) -> Result<TraceId, ParseError> {
    let mut id = [0u8; 16];
    let ok = match v.len() {
        32 => hex_decode(v, &mut id, false),
        16 => hex_decode(v, &mut id[8..], false),
        _ => return Err(ParseError::Length { header }),
    };
    ok.ok_or(ParseError::Character { header })?;
    let id = TraceId(id);
    if id.is_zero() {
        Err(ParseError::ZeroId { header })
    } else {
        Ok(id)
    }
}

fn span_id(v: &[u8], header: &'static str) -> Result<SpanId, ParseError> {
    if v.len() != 16 {
        return Err(ParseError::Length { header });
    }
    let mut id = [0u8; 8];
    hex_decode(v, &mut id, false).ok_or(ParseError::Character { header })?;
    let id = SpanId(id);
    if id.is_zero() {
        Err(ParseError::ZeroId { header })
    } else {
        Ok(id)
    }
}

fn sampling(v: &[u8], header: &'static str) -> Result<bool, ParseError> {
    match v {
        b"1" | b"d" | b"true" => Ok(true),
        b"0" | b"false" => Ok(false),
        _ => Err(ParseError::Malformed { header }),
    }
}

/// Extracts the single `b3` header. `Ok(None)` when absent or sampling-only.
pub(super) fn extract_single<C: Carrier + ?Sized>(
    carrier: &C,
) -> Result<Option<TraceContext>, ParseError> {
    let Some(v) = carrier.get(B3) else {
        return Ok(None);
    };
    let mut parts = v.split(|&b| b == b'-');
    let first = parts.next().unwrap_or_default();
    let Some(second) = parts.next() else {
        // Sampling-only: a decision without context.
        sampling(first, B3)?;
        return Ok(None);
    };
    let trace = trace_id(first, B3)?;
    let span = span_id(second, B3)?;
    let sampled = match parts.next() {
        Some(s) => sampling(s, B3)?,
        None => false,
    };
    if let Some(parent) = parts.next() {
        span_id(parent, B3)?;
    }
    if parts.next().is_some() {
        return Err(ParseError::Malformed { header: B3 });
    }
    Ok(Some(TraceContext {
        trace_id: trace,
        span_id: span,
        flags: TraceFlags::default().with_sampled(sampled),
        ..Default::default()
    }))
}

/// Extracts the multi-header form. `Ok(None)` when `X-B3-TraceId` is absent.
pub(super) fn extract_multi<C: Carrier + ?Sized>(
    carrier: &C,
) -> Result<Option<TraceContext>, ParseError> {
    let Some(t) = carrier.get(TRACE_ID) else {
        return Ok(None);
    };
    let trace = trace_id(t, TRACE_ID)?;
    let span = span_id(
        carrier
            .get(SPAN_ID)
            .ok_or(ParseError::Malformed { header: SPAN_ID })?,
        SPAN_ID,
    )?;
    let debug = carrier.get(FLAGS) == Some(b"1");
    let sampled = match carrier.get(SAMPLED) {
        Some(s) => sampling(s, SAMPLED)?,
        None => false,
    };
    Ok(Some(TraceContext {
        trace_id: trace,
        span_id: span,
        flags: TraceFlags::default().with_sampled(sampled || debug),
        ..Default::default()
    }))
}

/// Injects `b3: {32 hex}-{16 hex}-{1|0}`.
pub(super) fn inject_single<C: Carrier + ?Sized>(
    ctx: &TraceContext,
    carrier: &mut C,
    w: &mut IdWriter,
) {
    let value = w.write(51, |b| {
        hex_encode(&ctx.trace_id.0, &mut b[..32]);
        b[32] = b'-';
        hex_encode(&ctx.span_id.0, &mut b[33..49]);
        b[49] = b'-';
        b[50] = if ctx.flags.is_sampled() { b'1' } else { b'0' };
    });
    carrier.set(B3, value);
}

/// Injects `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`.
pub(super) fn inject_multi<C: Carrier + ?Sized>(
    ctx: &TraceContext,
    carrier: &mut C,
    w: &mut IdWriter,
) {
    carrier.set(TRACE_ID, w.write(32, |b| hex_encode(&ctx.trace_id.0, b)));
    carrier.set(SPAN_ID, w.write(16, |b| hex_encode(&ctx.span_id.0, b)));
    carrier.set(
        SAMPLED,
        bytes::Bytes::from_static(if ctx.flags.is_sampled() { b"1" } else { b"0" }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn single_forms() {
        let c = extract_single(&map(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(c.trace_id.to_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(c.span_id.to_hex(), "e457b5a2e4d86bd1");
        assert!(c.flags.is_sampled());
        let c = extract_single(&map(&[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-d")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.trace_id.to_hex(), "0000000000000000a3ce929d0e0e4736");
        assert!(c.flags.is_sampled());
        let c = extract_single(&map(&[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1")]))
            .unwrap()
            .unwrap();
        assert!(!c.flags.is_sampled());
        for only in ["0", "1", "d"] {
            assert_eq!(extract_single(&map(&[("b3", only)])), Ok(None), "{only}");
        }
    }

    #[test]
    fn single_malformed() {
        use ParseError::*;
        let cases: &[(&str, ParseError)] = &[
            ("x", Malformed { header: B3 }),
            ("a3ce929d0e0e473-e457b5a2e4d86bd1-1", Length { header: B3 }),
            ("a3ce929d0e0e4736-e457b5a2e4d86bd-1", Length { header: B3 }),
            (
                "a3ce929d0e0e4736-e457b5a2e4d86bd1-2",
                Malformed { header: B3 },
            ),
            (
                "a3ce929d0e0e4736-e457b5a2e4d86bd1-1-zz",
                Length { header: B3 },
            ),
            (
                "a3ce929d0e0e4736-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
                Malformed { header: B3 },
            ),
            ("0000000000000000-e457b5a2e4d86bd1-1", ZeroId { header: B3 }),
            (
                "g3ce929d0e0e4736-e457b5a2e4d86bd1-1",
                Character { header: B3 },
            ),
        ];
        for (v, want) in cases {
            assert_eq!(extract_single(&map(&[("b3", v)])), Err(want.clone()), "{v}");
        }
    }

    #[test]
    fn multi_forms() {
        let c = extract_multi(&map(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "true"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.trace_id.to_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(c.flags.is_sampled());
        let c = extract_multi(&map(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-flags", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert!(c.flags.is_sampled(), "debug implies sampled");
        assert_eq!(
            extract_multi(&map(&[("x-b3-traceid", "a3ce929d0e0e4736")])),
            Err(ParseError::Malformed { header: SPAN_ID })
        );
        assert_eq!(
            extract_multi(&map(&[
                ("x-b3-traceid", "a3ce929d0e0e4736"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "yes")
            ])),
            Err(ParseError::Malformed { header: SAMPLED })
        );
    }

    #[test]
    fn injects_exact_bytes_and_round_trips() {
        let c = extract_single(&map(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]))
        .unwrap()
        .unwrap();
        let mut h = HeaderMap::new();
        inject_single(&c, &mut h, &mut IdWriter::default());
        assert_eq!(
            h.get("b3").unwrap(),
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
        );
        let mut l: Vec<(Bytes, Bytes)> = Vec::new();
        inject_multi(&c, &mut l, &mut IdWriter::default());
        assert_eq!(extract_multi(&l).unwrap().unwrap(), c);
        assert_eq!(Carrier::get(&l, "x-b3-sampled"), Some(&b"1"[..]));
    }
}
