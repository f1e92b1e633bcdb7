//! W3C Trace Context Level 2: `traceparent` (and `tracestate`, see `tracestate.rs`).
//!
//! ```text
//! traceparent = version "-" trace-id "-" parent-id "-" trace-flags
//!   version     2 lower-case hex, "ff" forbidden
//!   trace-id    32 lower-case hex, not all zero
//!   parent-id   16 lower-case hex, not all zero
//!   trace-flags 2 lower-case hex (bit 0: sampled, bit 1: random)
//! version 00: exactly 55 characters. A higher version: parsed by the version-00 layout; the
//! value may be longer, and then the 56th character must be "-".
//! ```
//! `traceparent` must come in one field: repeated fields are invalid (RFC 9110 §5.3 would
//! combine them into "a, b") and the trace restarts. `tracestate` fields are combined.
//! The sampled and random flags are propagated as received; other bits are not (version 00
//! defines none).

use super::pool::{IdWriter, hex_decode, hex_encode};
use super::tracestate::{TraceState, TracestateOutcome};
use super::{Carrier, ParseError, SpanId, TraceContext, TraceFlags, TraceId};

/// Header name.
pub(super) const TRACEPARENT: &str = "traceparent";
/// Header name.
pub(super) const TRACESTATE: &str = "tracestate";

const LEN: usize = 55;

/// Parses a `traceparent` value.
pub(super) fn parse_traceparent(v: &[u8]) -> Result<(TraceId, SpanId, TraceFlags), ParseError> {
    const H: &str = TRACEPARENT;
    if v.len() < LEN {
        return Err(ParseError::Length { header: H });
    }
    let mut version = [0u8; 1];
    hex_decode(&v[0..2], &mut version, true).ok_or(ParseError::Character { header: H })?;
    match version[0] {
        0xff => return Err(ParseError::Version { header: H }),
        0x00 if v.len() != LEN => return Err(ParseError::Length { header: H }),
        0x00 => {}
        _ if v.len() > LEN && v[LEN] != b'-' => return Err(ParseError::Malformed { header: H }),
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(ParseError::Malformed { header: H });
    }
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    let mut flags = [0u8; 1];
    hex_decode(&v[3..35], &mut trace, true).ok_or(ParseError::Character { header: H })?;
    hex_decode(&v[36..52], &mut span, true).ok_or(ParseError::Character { header: H })?;
    hex_decode(&v[53..55], &mut flags, true).ok_or(ParseError::Character { header: H })?;
    let (trace, span) = (TraceId(trace), SpanId(span));
    if trace.is_zero() || span.is_zero() {
        return Err(ParseError::ZeroId { header: H });
    }
    Ok((trace, span, TraceFlags(flags[0])))
}

/// Extracts `traceparent` (+ every `tracestate` field, combined; what was dropped of it goes
/// to `outcome`). `Ok(None)` when no `traceparent` is present.
pub(super) fn extract<C: Carrier + ?Sized>(
    carrier: &C,
    outcome: &mut TracestateOutcome,
) -> Result<Option<TraceContext>, ParseError> {
    let mut first = None;
    let mut count = 0;
    carrier.get_all(TRACEPARENT, &mut |v| {
        first.get_or_insert(v);
        count += 1;
    });
    let Some(value) = first else {
        return Ok(None);
    };
    if count > 1 {
        return Err(ParseError::Repeated {
            header: TRACEPARENT,
            count,
        });
    }
    let (trace_id, span_id, flags) = parse_traceparent(value)?;
    let (tracestate, trimmed) = TraceState::parse_fields(|f| carrier.get_all(TRACESTATE, f));
    *outcome = trimmed;
    Ok(Some(TraceContext {
        trace_id,
        span_id,
        flags: TraceFlags(flags.0 & TraceFlags::KNOWN.0),
        tracestate,
        baggage: None,
    }))
}

/// Writes the 55-character version-00 `traceparent` for `ctx` into `out`.
pub(super) fn write_traceparent(ctx: &TraceContext, out: &mut [u8]) {
    out[0..3].copy_from_slice(b"00-");
    hex_encode(&ctx.trace_id.0, &mut out[3..35]);
    out[35] = b'-';
    hex_encode(&ctx.span_id.0, &mut out[36..52]);
    out[52] = b'-';
    hex_encode(&[ctx.flags.0 & TraceFlags::KNOWN.0], &mut out[53..55]);
}

/// Injects `traceparent` and, when non-empty, `tracestate` (truncated to 512 characters).
pub(super) fn inject<C: Carrier + ?Sized>(ctx: &TraceContext, carrier: &mut C, w: &mut IdWriter) {
    carrier.set(TRACEPARENT, w.write(LEN, |b| write_traceparent(ctx, b)));
    if let Some(state) = ctx.tracestate.for_inject(w) {
        carrier.set(TRACESTATE, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn ext<C: Carrier + ?Sized>(c: &C) -> Result<Option<TraceContext>, ParseError> {
        extract(c, &mut TracestateOutcome::default())
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn parses_the_spec_example() {
        let ctx = ext(&map(&[("traceparent", VALID)])).unwrap().unwrap();
        assert_eq!(ctx.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id.to_hex(), "00f067aa0ba902b7");
        assert!(ctx.flags.is_sampled());
    }

    #[test]
    fn table_of_invalid_values() {
        use ParseError::*;
        let h = TRACEPARENT;
        let cases: &[(&str, ParseError)] = &[
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                Length { header: h },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Length { header: h },
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version { header: h },
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Character { header: h },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                Character { header: h },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                Character { header: h },
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Character { header: h },
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroId { header: h },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroId { header: h },
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Malformed { header: h },
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                Malformed { header: h },
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_traceparent(value.as_bytes()),
                Err(want.clone()),
                "{value}"
            );
        }
    }

    #[test]
    fn future_versions_parse_by_their_prefix() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds";
        let (t, s, f) = parse_traceparent(v.as_bytes()).unwrap();
        assert_eq!(t.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_hex(), "00f067aa0ba902b7");
        assert_eq!(f, TraceFlags(0x09));
        assert!(parse_traceparent(&v.as_bytes()[..LEN]).is_ok());
    }

    /// Level 2: sampled and random are propagated as received; unknown bits are not.
    #[test]
    fn sampled_and_random_flags_propagate_unknown_flags_do_not() {
        for (received, kept) in [("ff", "03"), ("02", "02"), ("03", "03"), ("fd", "01")] {
            let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{received}");
            let ctx = ext(&map(&[("traceparent", &tp)])).unwrap().unwrap();
            let mut out = HeaderMap::new();
            inject(&ctx, &mut out, &mut IdWriter::default());
            let sent = out.get("traceparent").unwrap().to_str().unwrap();
            assert!(sent.ends_with(&format!("-{kept}")), "{received}: {sent}");
        }
        let ctx = ext(&map(&[("traceparent", &VALID.replace("-01", "-02"))]))
            .unwrap()
            .unwrap();
        assert!(ctx.flags.is_random() && !ctx.flags.is_sampled());
    }

    #[test]
    fn repeated_traceparent_is_invalid_on_both_carriers() {
        let mut h = HeaderMap::new();
        h.append("traceparent", VALID.parse().unwrap());
        h.append("traceparent", VALID.parse().unwrap());
        let want = Err(ParseError::Repeated {
            header: TRACEPARENT,
            count: 2,
        });
        assert_eq!(ext(&h), want);
        let tp = || {
            (
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(VALID.as_bytes()),
            )
        };
        let list: Vec<(Bytes, Bytes)> = vec![tp(), tp()];
        assert_eq!(ext(&list), want);
        // The combined form of two fields is no valid value either (future version too).
        let combined = format!("{VALID}, {VALID}");
        assert!(ext(&map(&[("traceparent", &combined)])).is_err());
        let future = VALID.replacen("00", "cc", 1);
        assert!(ext(&map(&[("traceparent", &format!("{future}, {future}"))])).is_err());
    }

    #[test]
    fn repeated_tracestate_fields_are_combined_and_normalised() {
        let mut h = map(&[("traceparent", VALID)]);
        h.append("tracestate", "rojo=1 , congo=2".parse().unwrap());
        h.append("tracestate", "".parse().unwrap());
        h.append("tracestate", "rojo=3,Bad=x, a@b=4".parse().unwrap());
        let mut outcome = TracestateOutcome::default();
        let ctx = extract(&h, &mut outcome).unwrap().unwrap();
        assert_eq!(ctx.tracestate.0, "rojo=1,congo=2,a@b=4");
        assert_eq!(
            outcome,
            TracestateOutcome {
                kept: 3,
                dropped_invalid: 1,
                dropped_duplicate: 1,
                truncated: 0
            }
        );
        let mut out = HeaderMap::new();
        inject(&ctx, &mut out, &mut IdWriter::default());
        assert_eq!(out.get_all("tracestate").iter().count(), 1);
        assert_eq!(out.get("tracestate").unwrap(), "rojo=1,congo=2,a@b=4");
        // THeader: every pair, in order.
        let pair = |k: &'static str, v: &'static str| {
            (
                Bytes::from_static(k.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            )
        };
        let list = vec![
            pair("tracestate", "a=1"),
            pair("traceparent", VALID),
            pair("tracestate", "b=2"),
        ];
        assert_eq!(ext(&list).unwrap().unwrap().tracestate.0, "a=1,b=2");
    }

    #[test]
    fn injects_exact_bytes_and_round_trips_on_both_carriers() {
        let ctx = ext(&map(&[
            ("traceparent", VALID),
            ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ]))
        .unwrap()
        .unwrap();
        let mut out = HeaderMap::new();
        inject(&ctx, &mut out, &mut IdWriter::default());
        assert_eq!(out.get("traceparent").unwrap(), VALID);
        assert_eq!(
            out.get("tracestate").unwrap(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        assert_eq!(ext(&out).unwrap().unwrap(), ctx);
        let mut list: Vec<(Bytes, Bytes)> = Vec::new();
        inject(&ctx, &mut list, &mut IdWriter::default());
        assert_eq!(
            list[0],
            (
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(VALID.as_bytes())
            )
        );
        assert_eq!(ext(&list).unwrap().unwrap(), ctx);
    }

    #[test]
    fn absent_is_none() {
        assert_eq!(ext(&HeaderMap::new()), Ok(None));
    }
}
