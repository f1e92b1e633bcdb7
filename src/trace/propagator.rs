//! [`Propagator`]: the configured extract order and inject set over every format.

use super::pool::IdWriter;
use super::tracestate::TracestateOutcome;
use super::{Carrier, Format, ParseError, TraceContext, b3, baggage, binary, jaeger, w3c};

/// What extraction found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The first valid context in extract order, if any.
    pub context: Option<TraceContext>,
    /// The format it came from.
    pub format: Option<Format>,
    /// The first invalid header seen (counted in metrics; the trace restarts).
    pub invalid: Option<(Format, ParseError)>,
    /// What happened to the W3C `tracestate` that came with a valid `traceparent` (members
    /// kept, dropped as invalid or duplicate, truncated to the limits); zero otherwise.
    pub tracestate: TracestateOutcome,
}

/// Every header any format writes (baggage and `uberctx-*` are not trace headers: they pass).
const ALL_TRACE_HEADERS: [&str; 11] = [
    w3c::TRACEPARENT,
    w3c::TRACESTATE,
    jaeger::UBER_TRACE_ID,
    b3::B3,
    b3::TRACE_ID,
    b3::SPAN_ID,
    b3::PARENT_ID,
    b3::SAMPLED,
    b3::FLAGS,
    binary::GRPC_TRACE_BIN,
    binary::X_TRACE_RAW,
];

/// Extracts in the configured order and injects the configured set.
#[derive(Debug, Clone)]
pub struct Propagator {
    extract: Vec<Format>,
    inject: Vec<Format>,
}

impl Propagator {
    /// A propagator with this extract order and inject set.
    pub fn new(extract: Vec<Format>, inject: Vec<Format>) -> Self {
        Propagator { extract, inject }
    }

    /// The header names looked for on extract (for `on_missing = reject` messages).
    pub fn extract_header_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for f in &self.extract {
            let add: &[&'static str] = match f {
                Format::W3c => &[w3c::TRACEPARENT],
                Format::Jaeger => &[jaeger::UBER_TRACE_ID],
                Format::B3 | Format::B3Multi => &[b3::B3, b3::TRACE_ID],
                Format::GrpcTraceBin => &[binary::GRPC_TRACE_BIN],
                Format::XTraceRaw => &[binary::X_TRACE_RAW],
            };
            for n in add {
                if !names.contains(n) {
                    names.push(*n);
                }
            }
        }
        names
    }

    /// Extracts the first valid context in extract order. `tracestate` comes with a W3C
    /// `traceparent` only (the spec ties the two); `baggage` and `uberctx-*` are attached
    /// whichever format gave the ids.
    pub fn extract<C: Carrier + ?Sized>(&self, carrier: &C) -> Extracted {
        let mut found = Extracted::default();
        for &format in &self.extract {
            let result = match format {
                Format::W3c => w3c::extract(carrier, &mut found.tracestate),
                Format::Jaeger => jaeger::extract(carrier),
                Format::B3 | Format::B3Multi => match b3::extract_single(carrier) {
                    Ok(None) => b3::extract_multi(carrier),
                    other => other,
                },
                Format::GrpcTraceBin => binary::extract_grpc(carrier),
                Format::XTraceRaw => binary::extract_raw(carrier),
            };
            match result {
                Ok(Some(ctx)) => {
                    found.context = Some(ctx);
                    found.format = Some(format);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    if found.invalid.is_none() {
                        found.invalid = Some((format, e));
                    }
                }
            }
        }
        if let Some(ctx) = found.context.as_mut() {
            ctx.baggage = baggage::extract(carrier);
        }
        found
    }

    /// Removes every header of every known format from `carrier` (so no stale context is
    /// forwarded), then writes `ctx` in each inject format (and `baggage` if it has some).
    pub fn inject<C: Carrier + ?Sized>(
        &self,
        ctx: &TraceContext,
        carrier: &mut C,
        writer: &mut IdWriter,
    ) {
        carrier.remove_all(&ALL_TRACE_HEADERS);
        for format in &self.inject {
            match format {
                Format::W3c => w3c::inject(ctx, carrier, writer),
                Format::Jaeger => jaeger::inject(ctx, carrier, writer),
                Format::B3 => b3::inject_single(ctx, carrier, writer),
                Format::B3Multi => b3::inject_multi(ctx, carrier, writer),
                Format::GrpcTraceBin => binary::inject_grpc(ctx, carrier, writer),
                Format::XTraceRaw => binary::inject_raw(ctx, carrier, writer),
            }
        }
        baggage::inject(ctx.baggage.as_ref(), carrier);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceFlags, TraceId};
    use bytes::Bytes;
    use http::HeaderMap;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extract_order_decides_and_invalid_is_reported() {
        let h = map(&[
            (
                "traceparent",
                "00-XXf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("uber-trace-id", "1:2:0:1"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let p = Propagator::new(vec![Format::W3c, Format::B3, Format::Jaeger], vec![]);
        let e = p.extract(&h);
        assert_eq!(e.format, Some(Format::B3));
        assert_eq!(
            e.context.unwrap().trace_id.to_hex(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(
            e.invalid,
            Some((
                Format::W3c,
                ParseError::Character {
                    header: "traceparent"
                }
            ))
        );
        let p = Propagator::new(vec![Format::Jaeger, Format::B3], vec![]);
        assert_eq!(p.extract(&h).format, Some(Format::Jaeger));
        // A format not in the extract list is ignored.
        let p = Propagator::new(vec![Format::GrpcTraceBin], vec![]);
        assert_eq!(p.extract(&h), Extracted::default());
    }

    #[test]
    fn tracestate_only_with_traceparent_and_baggage_always() {
        let h = map(&[
            ("uber-trace-id", "1:2:0:1"),
            ("tracestate", "a=b"),
            ("baggage", "k=v"),
        ]);
        let p = Propagator::new(vec![Format::Jaeger], vec![]);
        let ctx = p.extract(&h).context.unwrap();
        assert!(ctx.tracestate.is_empty());
        assert_eq!(ctx.baggage, Some(Bytes::from_static(b"k=v")));
    }

    #[test]
    fn inject_strips_every_known_header_and_writes_the_set() {
        let mut h = map(&[
            ("traceparent", TP),
            ("tracestate", "a=b"),
            ("uber-trace-id", "1:2:0:1"),
            ("b3", "1"),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "a3ce929d0e0e4736"),
            ("grpc-trace-bin", "AAA"),
            ("x-trace-raw", "AAA"),
            ("baggage", "k=v"),
            ("uberctx-k", "v"),
            ("x-other", "kept"),
        ]);
        let ctx = TraceContext {
            trace_id: TraceId([0x11; 16]),
            span_id: SpanId([0x22; 8]),
            flags: TraceFlags::SAMPLED,
            ..Default::default()
        };
        Propagator::new(vec![], vec![Format::Jaeger, Format::B3Multi]).inject(
            &ctx,
            &mut h,
            &mut IdWriter::default(),
        );
        let mut keys: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "baggage",
                "uber-trace-id",
                "uberctx-k",
                "x-b3-sampled",
                "x-b3-spanid",
                "x-b3-traceid",
                "x-other"
            ]
        );
        assert_eq!(
            h.get("uber-trace-id").unwrap(),
            "11111111111111111111111111111111:2222222222222222:0:01"
        );
        assert_eq!(
            h.get("x-b3-traceid").unwrap(),
            "11111111111111111111111111111111"
        );
    }

    #[test]
    fn every_format_round_trips_on_both_carriers() {
        let ctx = TraceContext {
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0xcd; 8]),
            flags: TraceFlags::SAMPLED,
            ..Default::default()
        };
        for f in Format::ALL {
            let p = Propagator::new(vec![f], vec![f]);
            let mut h = HeaderMap::new();
            p.inject(&ctx, &mut h, &mut IdWriter::default());
            assert_eq!(
                p.extract(&h).context.as_ref(),
                Some(&ctx),
                "{f:?} on HeaderMap"
            );
            let mut l: Vec<(Bytes, Bytes)> = Vec::new();
            p.inject(&ctx, &mut l, &mut IdWriter::default());
            assert_eq!(
                p.extract(&l).context.as_ref(),
                Some(&ctx),
                "{f:?} on THeader list"
            );
            let unsampled = TraceContext {
                flags: TraceFlags(0),
                ..ctx.clone()
            };
            p.inject(&unsampled, &mut l, &mut IdWriter::default());
            assert_eq!(p.extract(&l).context, Some(unsampled), "{f:?} unsampled");
        }
    }

    #[test]
    fn repeated_traceparent_restarts_and_is_counted_invalid() {
        let mut h = map(&[("uber-trace-id", "1:2:0:1")]);
        h.append("traceparent", TP.parse().unwrap());
        h.append("traceparent", TP.parse().unwrap());
        let p = Propagator::new(vec![Format::W3c], vec![]);
        let e = p.extract(&h);
        assert_eq!(e.context, None);
        assert_eq!(
            e.invalid,
            Some((
                Format::W3c,
                ParseError::Repeated {
                    header: "traceparent",
                    count: 2
                }
            ))
        );
        // Another format in the extract order still gives the context.
        let p = Propagator::new(vec![Format::W3c, Format::Jaeger], vec![]);
        assert_eq!(p.extract(&h).format, Some(Format::Jaeger));
    }

    #[test]
    fn tracestate_outcome_is_reported() {
        let mut h = map(&[("traceparent", TP), ("tracestate", "a=1,a=2")]);
        h.append("tracestate", "B=3".parse().unwrap());
        let e = Propagator::new(vec![Format::W3c], vec![]).extract(&h);
        assert_eq!(e.context.unwrap().tracestate.0, "a=1");
        assert_eq!(
            e.tracestate,
            TracestateOutcome {
                kept: 1,
                dropped_invalid: 1,
                dropped_duplicate: 1,
                truncated: 0
            }
        );
    }

    #[test]
    fn header_names_for_reject_messages() {
        let p = Propagator::new(
            vec![Format::W3c, Format::B3, Format::B3Multi, Format::XTraceRaw],
            vec![],
        );
        assert_eq!(
            p.extract_header_names(),
            vec!["traceparent", "b3", "x-b3-traceid", "x-trace-raw"]
        );
    }
}
