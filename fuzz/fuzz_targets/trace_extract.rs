//! Trace context extraction (every format, in the default order) from hostile headers, on
//! both carriers: an `http::HeaderMap` and a THeader info list. The input is lines
//! `<name byte><value>`: the name byte picks a known trace header (or, past the table, the
//! line up to ':' is the name). A context that was extracted must survive inject → extract.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tracebridge::trace::{Format, IdWriter, Propagator, TraceState};

const NAMES: [&str; 14] = [
    "traceparent",
    "tracestate",
    "baggage",
    "uber-trace-id",
    "uberctx-user",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "grpc-trace-bin",
    "x-trace-raw",
    "uberctx-",
];

fn pairs(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, rest)) = line.split_first() else {
            continue;
        };
        match NAMES.get(usize::from(pick)) {
            Some(name) => out.push((name.as_bytes().to_vec(), rest.to_vec())),
            None => {
                if let Some(colon) = rest.iter().position(|&b| b == b':') {
                    out.push((rest[..colon].to_vec(), rest[colon + 1..].to_vec()));
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let pairs = pairs(data);
    let propagator = Propagator::new(Format::ALL.to_vec(), Format::ALL.to_vec());

    let mut headers = HeaderMap::new();
    for (name, value) in &pairs {
        let _ = TraceState::parse(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let found = propagator.extract(&headers);
    round_trip(&propagator, &found.context);

    let info: Vec<(Bytes, Bytes)> = pairs
        .into_iter()
        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
        .collect();
    let found = propagator.extract(&info);
    round_trip(&propagator, &found.context);
});

fn round_trip(propagator: &Propagator, ctx: &Option<tracebridge::trace::TraceContext>) {
    let Some(ctx) = ctx else { return };
    let mut writer = IdWriter::default();
    let mut headers = HeaderMap::new();
    propagator.inject(ctx, &mut headers, &mut writer);
    let again = propagator.extract(&headers).context;
    let again = again
        .as_ref()
        .map(|c| (c.trace_id, c.span_id, c.flags.is_sampled()));
    assert_eq!(
        again,
        Some((ctx.trace_id, ctx.span_id, ctx.flags.is_sampled())),
        "an extracted context does not survive inject and extract"
    );
}
