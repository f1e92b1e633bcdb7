//! Proves the propagation path allocates nothing per request at steady state: extract W3C or
//! Jaeger context from a request's headers, make the gateway's child context, strip and inject
//! the configured formats into the headers (HTTP) or a THeader info list, with a counting
//! global allocator.
//!
//! - [`per_call`]: the gateway's own per-call code (route, extract, enforce, sample, inject,
//!   metrics, record) without sockets, phase by phase: 0 allocations at steady state.
//! - [`whole_request`]: whole proxied HTTP/1.1 requests and THeader calls through the running
//!   gateway, against a direct connection and a bare proxy, allocations per request reported
//!   (`cargo test --test alloc -- --nocapture --test-threads 1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A global allocator needs `unsafe impl GlobalAlloc`; the crate denies unsafe code, this test
// binary alone allows it for the counting wrapper around the system allocator.
#![allow(unsafe_code)]

#[path = "alloc/per_call.rs"]
mod per_call;
#[path = "alloc/whole_request.rs"]
mod whole_request;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tracebridge::trace::pool::with_writer;
use tracebridge::trace::{Format, Propagator};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    /// This thread belongs to the runtime whose allocations [`RuntimeCounter`] counts.
    static MEMBER: Cell<bool> = const { Cell::new(false) };
}

/// Counting on for the member threads of the measured runtime (see [`RuntimeCounter`]).
static RUNTIME_COUNTING: AtomicBool = AtomicBool::new(false);
/// Allocations made on member threads while [`RUNTIME_COUNTING`] is on.
static RUNTIME_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn count() {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        if RUNTIME_COUNTING.load(Ordering::Relaxed) && MEMBER.with(Cell::get) {
            RUNTIME_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only counts
// allocations made on a thread that switched counting on (in that thread's own counter), and
// those made on the measured runtime's threads (in one global counter).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::count();
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::count();
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

/// Allocations on this thread so far while counting is on (for per-phase differences).
fn allocations_so_far() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Counts allocations on every thread of one tokio runtime: the thread that drives it and
/// the threads it starts (blocking pool), whatever task runs there. One at a time: holding a
/// `RuntimeCounter` serialises the tests that use it (the gate and the counter are global).
struct RuntimeCounter {
    _serial: std::sync::MutexGuard<'static, ()>,
}

static RUNTIME_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl RuntimeCounter {
    /// Takes the counter; the calling thread becomes a member.
    fn take() -> Self {
        let serial = RUNTIME_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        MEMBER.with(|m| m.set(true));
        RuntimeCounter { _serial: serial }
    }

    /// A current-thread runtime whose every thread is a member.
    fn runtime(&self) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(|| MEMBER.with(|m| m.set(true)))
            .build()
            .unwrap()
    }

    fn start(&self) {
        RUNTIME_ALLOCATIONS.store(0, Ordering::SeqCst);
        RUNTIME_COUNTING.store(true, Ordering::SeqCst);
    }

    fn stop(&self) -> usize {
        RUNTIME_COUNTING.store(false, Ordering::SeqCst);
        RUNTIME_ALLOCATIONS.load(Ordering::SeqCst)
    }
}

impl Drop for RuntimeCounter {
    fn drop(&mut self) {
        RUNTIME_COUNTING.store(false, Ordering::SeqCst);
        MEMBER.with(|m| m.set(false));
    }
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
