//! The gateway's own per-call code without sockets, on the test thread, phase by phase as
//! the pipeline runs it: route, extract, enforce + sample, inject (pooled writer), metrics
//! (route, listener and upstream handles), the `Call`, and `Recorder::record`. After a
//! warm-up (handles made on first use, the id pool's slabs settled) routing, propagation and
//! metrics allocate nothing; neither does recording an unsampled call. Recording a sampled
//! call builds its span attributes (strings): that count is reported, not asserted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use tracebridge::call::{
    Call, CallTrace, Code, Extraction, Outcome, Protocol, Request as CallRequest,
};
use tracebridge::codec::thrift::header::{info_list, recycle_info};
use tracebridge::config::{OnMissing, OtlpProtocol, RouteMatch, SamplerConfig, TelemetryConfig};
use tracebridge::pipeline::{Recorder, RoutePolicy};
use tracebridge::policy::{Decision, HttpRequestView, Router, Sampler, enforce};
use tracebridge::telemetry::{Metrics, Telemetry};
use tracebridge::trace::pool::with_writer;
use tracebridge::trace::{Carrier, Extracted, Format, Propagator, TraceId};

use super::{allocations, allocations_so_far};

const WARM_UP: usize = 50;
const N: usize = 1000;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The phases of one call, in pipeline order.
const PHASES: [&str; 7] = [
    "route",
    "extract",
    "enforce+sample",
    "inject",
    "metrics",
    "call",
    "record",
];
const RECORD: usize = 6;

/// Allocations per phase, summed over calls.
#[derive(Default)]
struct Phases {
    counts: [usize; PHASES.len()],
    mark: usize,
}

impl Phases {
    fn begin(&mut self) {
        self.mark = allocations_so_far();
    }

    fn end(&mut self, phase: usize) {
        let now = allocations_so_far();
        self.counts[phase] += now - self.mark;
        self.mark = now;
    }
}

/// What a listener's calls share, built the way `app` builds a stage: routes with their
/// policies and metric handles, the propagator, the sampler and the recorder (with a span
/// sink whose export task runs on its own runtime).
struct Gateway {
    listener: Arc<str>,
    router: Router<Arc<RoutePolicy>>,
    propagator: Propagator,
    sampler: Sampler,
    recorder: Recorder,
    client: SocketAddr,
    _telemetry: Telemetry,
    _runtime: tokio::runtime::Runtime,
}

impl Gateway {
    fn new(listener: &str, routes: Vec<(&str, RouteMatch)>, propagator: Propagator) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let telemetry = {
            let _in_runtime = runtime.enter();
            Telemetry::start_with(&telemetry_config(), metrics.clone()).unwrap()
        };
        let recorder = Recorder::new(listener, &metrics, telemetry.spans.clone(), None);
        let routes = routes
            .into_iter()
            .map(|(name, m)| {
                let policy = RoutePolicy {
                    name: name.into(),
                    upstream: "svc".into(),
                    path_prefix: m.path_prefix.as_deref().map(Into::into),
                    on_missing: OnMissing::Start,
                    timeout: Duration::from_secs(30),
                    metrics: metrics.route(listener, name),
                    upstream_metrics: metrics.upstream("svc"),
                };
                (m, Arc::new(policy))
            })
            .collect();
        Gateway {
            listener: listener.into(),
            router: Router::new(routes),
            propagator,
            // Parent-based: calls with context follow the caller's flag; roots are unsampled.
            sampler: Sampler::ratio(0.0),
            recorder,
            client: "127.0.0.1:40000".parse().unwrap(),
            _telemetry: telemetry,
            _runtime: runtime,
        }
    }
}

fn telemetry_config() -> TelemetryConfig {
    TelemetryConfig {
        service_name: "tracebridge".into(),
        otlp_endpoint: None,
        otlp_protocol: OtlpProtocol::Grpc,
        sampler: SamplerConfig::ParentRatio { ratio: 0.0 },
        span_queue: 4096,
        log_spans: false,
    }
}

/// extract's result as the pipeline files it on the call.
fn extraction_of(e: &Extracted) -> Extraction {
    match (&e.format, &e.invalid) {
        (Some(f), _) => Extraction::Found(*f),
        (None, Some((f, _))) => Extraction::Invalid(*f),
        (None, None) => Extraction::Missing,
    }
}

/// enforce + sample, as the pipeline runs them.
fn sample(g: &Gateway, extracted: &Extracted, on_missing: OnMissing) -> Option<CallTrace> {
    match enforce(extracted, on_missing) {
        Decision::Continue { parent } => {
            let sampled = g.sampler.sample(Some(&parent), &parent.trace_id);
            Some(CallTrace::new(parent.trace_id, Some(parent), sampled))
        }
        Decision::Start => {
            let trace_id = TraceId::random();
            let sampled = g.sampler.sample(None, &trace_id);
            Some(CallTrace::new(trace_id, None, sampled))
        }
        Decision::Pass | Decision::Reject => None,
    }
}

/// The rest of a call after inject: metrics through the handles, the `Call` as the pipeline
/// fills it, and its record. Returns whether the call was sampled.
fn finish(
    g: &Gateway,
    route: &Arc<RoutePolicy>,
    extraction: Extraction,
    trace: Option<CallTrace>,
    (protocol, request, code): (Protocol, CallRequest, Code),
    p: &mut Phases,
) -> bool {
    route
        .metrics
        .request(protocol, code, "ok", Duration::from_micros(300));
    g.recorder.listener.extract(extraction);
    route
        .upstream_metrics
        .request("ok", Duration::from_micros(200));
    p.end(4);
    let sampled = trace.as_ref().is_some_and(|t| t.sampled);
    let mut call = Call::new(g.listener.clone(), protocol, g.client, request);
    call.route = Some(route.clone());
    call.extraction = extraction;
    call.trace = trace;
    call.dispatching();
    call.outcome = Outcome::Answered { code };
    p.end(5);
    g.recorder.record(&call);
    p.end(RECORD);
    sampled
}

/// One HTTP call; the upstream's headers are `outgoing` (the request's own, in the gateway).
fn http_call(g: &Gateway, req: &Request<()>, outgoing: &mut HeaderMap, p: &mut Phases) -> bool {
    p.begin();
    let route = g.router.match_http(&HttpRequestView::of(req)).unwrap();
    p.end(0);
    let extracted = g.propagator.extract(req.headers());
    let extraction = extraction_of(&extracted);
    p.end(1);
    let trace = sample(g, &extracted, route.on_missing);
    p.end(2);
    if let Some(t) = &trace {
        with_writer(|w| g.propagator.inject(&t.upstream, outgoing, w));
    }
    p.end(3);
    let request = CallRequest::Http {
        method: req.method().clone(),
        target: req.uri().path_and_query().cloned(),
        version: req.version(),
    };
    let answer = (Protocol::Http, request, Code::Http(200));
    finish(g, route, extraction, trace, answer, p)
}

/// One Thrift call named `name` whose frame carried the info headers `decoded` (the list
/// as the THeader decoder made it), forwarded as the listener and the upstream pool do it;
/// returns whether it was sampled, and leaves the upstream's info headers in `sent`.
fn thrift_call(
    g: &Gateway,
    name: &Bytes,
    decoded: Vec<(Bytes, Bytes)>,
    sent: &mut Vec<(Bytes, Bytes)>,
    p: &mut Phases,
) -> bool {
    p.begin();
    let route = g.router.match_thrift(name).unwrap();
    p.end(0);
    let extracted = g.propagator.extract(&decoded);
    let extraction = extraction_of(&extracted);
    p.end(1);
    let trace = sample(g, &extracted, route.on_missing);
    p.end(2);
    // bridge: the upstream's carrier is a reused list holding the decoded pairs.
    let mut decoded = decoded;
    let mut outgoing = info_list();
    outgoing.append(&mut decoded);
    if let Some(t) = &trace {
        with_writer(|w| g.propagator.inject(&t.upstream, &mut outgoing, w));
    }
    // The upstream encodes the list into the frame head (here: `sent`), then gives it back.
    sent.clear();
    sent.extend(outgoing.iter().cloned());
    recycle_info(outgoing);
    p.end(3);
    let request = CallRequest::Thrift {
        name: name.clone(),
        dialect: "header",
    };
    let answer = (Protocol::Thrift, request, Code::ThriftReply);
    finish(g, route, extraction, trace, answer, p)
}

/// Runs `call` WARM_UP times, then N times counted; prints and checks the figures.
fn measure(what: &str, sampled: bool, mut call: impl FnMut(&mut Phases) -> bool) {
    let mut cold = Phases::default();
    let first = allocations(|| assert_eq!(call(&mut cold), sampled, "{what}: sampled"));
    for _ in 1..WARM_UP {
        call(&mut Phases::default());
    }
    let mut warm = Phases::default();
    let total = allocations(|| {
        for _ in 0..N {
            call(&mut warm);
        }
    });
    let per_phase: Vec<String> = PHASES
        .iter()
        .zip(warm.counts)
        .map(|(name, n)| format!("{name} {:.2}", n as f64 / N as f64))
        .collect();
    println!(
        "per-call {what}: first call {first} allocations (handles made); steady state per call: {}",
        per_phase.join(", ")
    );
    assert_eq!(warm.counts.iter().sum::<usize>(), total, "{what}: phases");
    let ours: usize = warm.counts[..RECORD].iter().sum();
    assert_eq!(
        ours, 0,
        "{what}: {ours} allocations in {N} calls in routing, propagation and metrics: {:?}",
        warm.counts
    );
    if !sampled {
        assert_eq!(
            warm.counts[RECORD], 0,
            "{what}: recording an unsampled call allocated"
        );
    }
}

fn route(name: &'static str, m: RouteMatch) -> (&'static str, RouteMatch) {
    (name, m)
}

fn http_gateway() -> Gateway {
    let prefix = |p: &str| RouteMatch {
        path_prefix: Some(p.into()),
        ..Default::default()
    };
    let routes = vec![
        route(
            "admin",
            RouteMatch {
                host: Some("admin.example.com".into()),
                ..Default::default()
            },
        ),
        route("strict", prefix("/strict")),
        route(
            "blue",
            RouteMatch {
                headers: vec![("x-colour".into(), "blue".into())],
                ..prefix("/api")
            },
        ),
        route("main", prefix("/api")),
    ];
    let propagator = Propagator::new(
        vec![Format::W3c, Format::Jaeger, Format::B3],
        vec![Format::W3c],
    );
    Gateway::new("edge", routes, propagator)
}

fn http_request(trace: Option<&'static str>) -> Request<()> {
    let mut b = Request::builder()
        .uri("/api/users?id=7")
        .header("host", "api.example.com:8080")
        .header("user-agent", "curl/8")
        .header("accept", "*/*");
    if let Some(t) = trace {
        b = b.header("traceparent", t);
    }
    b.body(()).unwrap()
}

fn check_http(trace: Option<&'static str>, sampled: bool, what: &str) {
    let g = http_gateway();
    let req = http_request(trace);
    let mut outgoing = req.headers().clone();
    measure(what, sampled, |p| http_call(&g, &req, &mut outgoing, p));
    let sent = outgoing.get("traceparent").unwrap().to_str().unwrap();
    if trace.is_some() {
        assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
    }
    // A root the gateway starts carries the Level 2 random flag (0x02) as well.
    let random = if trace.is_none() { 0x02 } else { 0x00 };
    let flags = format!("-{:02x}", random | u8::from(sampled));
    assert!(sent.ends_with(&flags), "{sent}");
}

#[test]
fn http_call_routes_propagates_and_counts_without_allocating() {
    check_http(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        true,
        "http w3c sampled",
    );
    check_http(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        false,
        "http w3c unsampled",
    );
    check_http(None, false, "http no context (root, ratio 0)");
}

fn thrift_gateway() -> Gateway {
    let method = |m: &str| RouteMatch {
        thrift_method: Some(m.into()),
        ..Default::default()
    };
    let routes = vec![
        route("strict", method("Strict:")),
        route("pass", method("passThrough")),
        route("main", method("Calc:")),
    ];
    let propagator = Propagator::new(
        vec![Format::W3c, Format::Jaeger, Format::B3, Format::XTraceRaw],
        vec![Format::W3c, Format::XTraceRaw],
    );
    Gateway::new("rpc", routes, propagator)
}

fn check_thrift(info: &[(&'static str, &'static str)], sampled: bool, what: &str) {
    let g = thrift_gateway();
    let name = Bytes::from_static(b"Calc:add");
    let info: Vec<(Bytes, Bytes)> = info
        .iter()
        .map(|(k, v)| {
            (
                Bytes::from_static(k.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            )
        })
        .collect();
    let continues = Carrier::get(&info, "traceparent").is_some();
    // Every call's frame, decoded beforehand: the decoder pushes the pairs (slices of the
    // frame) into a new list, so decode's own allocation is not counted as the gateway's.
    let mut frames: Vec<Vec<(Bytes, Bytes)>> = (0..WARM_UP + N)
        .map(|_| {
            let mut list = Vec::new();
            for pair in &info {
                list.push(pair.clone());
            }
            list
        })
        .collect();
    let mut sent = Vec::new();
    measure(what, sampled, |p| {
        let decoded = frames.pop().unwrap();
        thrift_call(&g, &name, decoded, &mut sent, p)
    });
    let traceparent = std::str::from_utf8(Carrier::get(&sent, "traceparent").unwrap()).unwrap();
    if continues {
        assert!(
            traceparent.starts_with(&format!("00-{TRACE}-")),
            "{traceparent}"
        );
    }
    assert!(Carrier::get(&sent, "x-trace-raw").is_some());
    assert_eq!(
        Carrier::get(&sent, "client"),
        Carrier::get(&info, "client"),
        "other info headers pass"
    );
}

const CLIENT: (&str, &str) = ("client", "alloc-test");

#[test]
fn thrift_call_routes_propagates_and_counts_without_allocating() {
    let parent = |flags: &'static str| {
        (
            "traceparent",
            match flags {
                "01" => "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                _ => "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            },
        )
    };
    check_thrift(&[CLIENT, parent("01")], true, "thrift w3c sampled");
    check_thrift(&[CLIENT, parent("00")], false, "thrift w3c unsampled");
    check_thrift(&[CLIENT], false, "thrift no context (root, ratio 0)");
    // A client that sends no info headers at all (its decoded list has no room), and one
    // whose decoded list is full.
    check_thrift(&[], false, "thrift no info headers (root, ratio 0)");
    let full = [("a", "1"), ("b", "2"), CLIENT, parent("01")];
    check_thrift(&full, true, "thrift 4 info headers, w3c sampled");
}
