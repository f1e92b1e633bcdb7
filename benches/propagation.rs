//! Propagation cost per request: extract + child + inject through `Propagator` with the pooled
//! writer, against a naive implementation that splits into `String`s and formats with
//! `format!` + `HeaderValue::from_str` (what a hand-written bridge typically does).
//!
//! `cargo bench --bench propagation`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use tracebridge::trace::pool::with_writer;
use tracebridge::trace::{Format, Propagator, SpanId};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UBER: &str = "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1";

fn request(name: &'static str, value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(16);
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert(name, HeaderValue::from_static(value));
    h
}

/// The naive W3C path: parse with split + String, write with format!.
fn naive_w3c(incoming: &HeaderMap, outgoing: &mut HeaderMap) {
    let Some(v) = incoming.get("traceparent").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let parts: Vec<String> = v.split('-').map(str::to_owned).collect();
    if parts.len() != 4 || parts[1].len() != 32 || parts[2].len() != 16 {
        return;
    }
    let span = SpanId::random();
    let value = format!("00-{}-{}-{}", parts[1], span.to_hex(), parts[3]);
    outgoing.remove("traceparent");
    if let Ok(v) = HeaderValue::from_str(&value) {
        outgoing.insert("traceparent", v);
    }
}

/// The naive Jaeger → W3C + Jaeger path.
fn naive_jaeger(incoming: &HeaderMap, outgoing: &mut HeaderMap) {
    let Some(v) = incoming.get("uber-trace-id").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let parts: Vec<String> = v.split(':').map(str::to_owned).collect();
    if parts.len() != 4 {
        return;
    }
    let trace = format!("{:0>32}", parts[0]);
    let span = SpanId::random().to_hex();
    let sampled = if parts[3] == "1" { "01" } else { "00" };
    outgoing.remove("uber-trace-id");
    for (name, value) in [
        ("traceparent", format!("00-{trace}-{span}-{sampled}")),
        ("uber-trace-id", format!("{trace}:{span}:0:{sampled}")),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            outgoing.insert(name, v);
        }
    }
}

fn pooled(p: &Propagator, incoming: &HeaderMap, outgoing: &mut HeaderMap) {
    if let Some(parent) = p.extract(incoming).context {
        let ctx = parent.child();
        with_writer(|w| p.inject(&ctx, outgoing, w));
    }
}

fn bench(c: &mut Criterion) {
    let w3c = Propagator::new(vec![Format::W3c], vec![Format::W3c]);
    let incoming = request("traceparent", TP);
    let mut outgoing = incoming.clone();
    let mut g = c.benchmark_group("w3c_extract_inject");
    g.bench_function("pooled", |b| {
        b.iter(|| pooled(&w3c, black_box(&incoming), &mut outgoing))
    });
    g.bench_function("naive_format", |b| {
        b.iter(|| naive_w3c(black_box(&incoming), &mut outgoing))
    });
    g.finish();

    let jaeger = Propagator::new(vec![Format::Jaeger], vec![Format::W3c, Format::Jaeger]);
    let incoming = request("uber-trace-id", UBER);
    let mut outgoing = incoming.clone();
    let mut g = c.benchmark_group("jaeger_to_w3c_jaeger");
    g.bench_function("pooled", |b| {
        b.iter(|| pooled(&jaeger, black_box(&incoming), &mut outgoing))
    });
    g.bench_function("naive_format", |b| {
        b.iter(|| naive_jaeger(black_box(&incoming), &mut outgoing))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
