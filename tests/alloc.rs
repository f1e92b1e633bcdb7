//! Proves the propagation path allocates nothing per request at steady state: extract W3C or
//! Jaeger context from a request's headers, make the gateway's child context, strip and inject
//! the configured formats into the headers (HTTP) or a THeader info list, with a counting
//! global allocator.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A global allocator needs `unsafe impl GlobalAlloc`; the crate denies unsafe code, this test
// binary alone allows it for the counting wrapper around the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tracebridge::trace::pool::with_writer;
use tracebridge::trace::{Format, Propagator};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only counts
// allocations made on a thread that switched counting on, in that thread's own counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

const ITERATIONS: usize = 10_000;

fn http_request(trace_header: (&'static str, &'static str)) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(32);
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert("user-agent", HeaderValue::from_static("curl/8"));
    h.insert(trace_header.0, HeaderValue::from_static(trace_header.1));
    h
}

/// One request's propagation work, as the listener does it.
fn propagate(p: &Propagator, incoming: &HeaderMap, outgoing: &mut HeaderMap) -> usize {
    let extracted = p.extract(incoming);
    let Some(parent) = extracted.context else {
        return 0;
    };
    let ctx = parent.child();
    with_writer(|w| p.inject(&ctx, outgoing, w));
    outgoing.len()
}

fn assert_zero_on_http(trace_header: (&'static str, &'static str), inject: Vec<Format>) {
    let p = Propagator::new(vec![Format::W3c, Format::Jaeger, Format::B3], inject);
    let incoming = http_request(trace_header);
    let mut outgoing = incoming.clone();
    // Warm up: the header map's capacity and the thread's slab settle.
    for _ in 0..100 {
        propagate(&p, &incoming, &mut outgoing);
    }
    let mut written = 0;
    let n = allocations(|| {
        for _ in 0..ITERATIONS {
            written += propagate(&p, &incoming, &mut outgoing);
        }
    });
    assert!(written > 0);
    assert_eq!(
        n, 0,
        "{n} allocations in {ITERATIONS} requests for {trace_header:?}"
    );
}

#[test]
fn w3c_extract_and_inject_allocate_nothing() {
    assert_zero_on_http(
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        vec![Format::W3c, Format::Jaeger],
    );
}

#[test]
fn w3c_with_tracestate_allocates_nothing() {
    let p = Propagator::new(vec![Format::W3c], vec![Format::W3c]);
    let mut incoming = http_request((
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    incoming.insert(
        "tracestate",
        HeaderValue::from_static("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    );
    let mut outgoing = incoming.clone();
    for _ in 0..100 {
        propagate(&p, &incoming, &mut outgoing);
    }
    let n = allocations(|| {
        for _ in 0..ITERATIONS {
            propagate(&p, &incoming, &mut outgoing);
        }
    });
    assert_eq!(
        outgoing.get("tracestate").unwrap(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
    assert_eq!(n, 0);
}

#[test]
fn jaeger_extract_and_inject_allocate_nothing() {
    assert_zero_on_http(
        (
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        ),
        vec![Format::W3c, Format::Jaeger, Format::B3],
    );
}

#[test]
fn theader_inject_allocates_nothing() {
    let p = Propagator::new(
        vec![Format::W3c, Format::XTraceRaw],
        vec![Format::W3c, Format::XTraceRaw],
    );
    let incoming: Vec<(Bytes, Bytes)> = vec![(
        Bytes::from_static(b"traceparent"),
        Bytes::from_static(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )];
    let mut outgoing: Vec<(Bytes, Bytes)> = Vec::with_capacity(16);
    let run = |outgoing: &mut Vec<(Bytes, Bytes)>| {
        let parent = p.extract(&incoming).context.unwrap();
        let ctx = parent.child();
        with_writer(|w| p.inject(&ctx, outgoing, w));
    };
    for _ in 0..100 {
        run(&mut outgoing);
    }
    let n = allocations(|| {
        for _ in 0..ITERATIONS {
            run(&mut outgoing);
        }
    });
    assert_eq!(outgoing.len(), 2);
    assert_eq!(n, 0);
}

/// The counter itself works: a `format!` per request is seen.
#[test]
fn the_counter_sees_allocations() {
    let n = allocations(|| {
        for i in 0..10 {
            std::hint::black_box(format!("00-{i:032x}"));
        }
    });
    assert!(n >= 10, "{n}");
}
