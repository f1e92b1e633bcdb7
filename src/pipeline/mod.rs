//! `pipeline`: the one request path every protocol's calls take, as named phases over a
//! [`Call`]:
//!
//! ```text
//! route ─▶ extract ─▶ enforce ─▶ sample ─▶ choose backend ─▶ bridge ─▶ inject ─▶ dispatch ─▶ respond ─▶ record
//! ```
//!
//! [`run`] drives the phases. A protocol supplies only an [`Adapter`]: how it routes a
//! request, where its trace context is read from (its carrier), how a request becomes the
//! upstream's (bridge, with the upstream's carrier to inject into), how it dispatches, and how
//! a reply or an error becomes its answer. Errors become answers only through
//! [`respond`]'s encoders (the `error.rs` table); metrics, spans and the access log are written
//! only by [`record`], once per call, from the `Call` and its `Outcome`.
//!
//! Governance plugs into these phases (sampling decided again at `record`, colour and canary
//! choice in `choose backend`, the breaker fed by `Outcome`), not into listeners.

pub mod record;
pub mod respond;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use self::record::{Recorded, Recorder};

use crate::call::{Call, CallTrace, Extraction};
use crate::config::OnMissing;
use crate::error::{ErrorDetail, ErrorKind, GatewayError, Side};
use crate::policy::{Decision, Router, Sampler, enforce};
use crate::telemetry::metrics::{RouteMetrics, UpstreamMetrics};
use crate::trace::{Carrier, Extracted, Propagator, TraceId, pool};

/// What every route has, whatever its protocol: its name, trace policy, timeout and metric
/// handles. A listener's route type embeds one ([`Routed`]).
#[derive(Debug)]
pub struct RoutePolicy {
    /// The route's name (metrics, spans, access log).
    pub name: Arc<str>,
    /// Its upstream's name.
    pub upstream: Arc<str>,
    /// The route's path prefix (HTTP span names), if any.
    pub path_prefix: Option<Arc<str>>,
    /// What to do without trace context.
    pub on_missing: OnMissing,
    /// Time allowed from dispatch to the upstream's answer.
    pub timeout: Duration,
    /// Handles for `requests_total` and `request_duration_seconds`.
    pub metrics: RouteMetrics,
    /// Handles for the upstream's metrics.
    pub upstream_metrics: UpstreamMetrics,
}

/// A route target that carries a [`RoutePolicy`].
pub trait Routed: Send + Sync + 'static {
    /// The protocol-neutral part of the route.
    fn policy(&self) -> &Arc<RoutePolicy>;
}

/// Everything a listener's calls share: its routes, propagator, sampler and recorder.
#[derive(Debug)]
pub struct Stage<R> {
    /// Listener name.
    pub listener: Arc<str>,
    /// The listener's routes.
    pub router: Router<Arc<R>>,
    /// Extract order and inject set.
    pub propagator: Arc<Propagator>,
    /// Head sampler.
    pub sampler: Sampler,
    /// Where calls are recorded.
    pub recorder: Arc<Recorder>,
}

/// What a protocol supplies to the pipeline. One value per call: it may keep per-call state
/// (a gRPC-Web mode, a Thrift dialect and seqid) that its respond step needs.
pub trait Adapter: Send {
    /// The listener's route target.
    type Route: Routed;
    /// The request as decoded from the downstream.
    type Request: Send;
    /// The request in the upstream's terms, with the upstream's trace carrier.
    type Outbound: Send;
    /// What dispatch gets back from the upstream.
    type Reply: Send;
    /// What goes back to the downstream.
    type Response;

    /// route: the route this request takes. Protocol checks that come before routing (a
    /// request that cannot be decoded, a routing loop) fail here.
    fn route(
        &mut self,
        stage: &Stage<Self::Route>,
        call: &mut Call,
        req: &Self::Request,
    ) -> Result<Arc<Self::Route>, GatewayError>;

    /// extract: where the downstream's trace context is read from.
    fn carrier<'a>(&self, req: &'a Self::Request) -> &'a (dyn Carrier + Sync);

    /// A sentence added to a `missing_trace_context` error (e.g. why this client cannot
    /// carry context at all).
    fn reject_hint(&self) -> Option<String> {
        None
    }

    /// bridge: turns the request into the upstream's (translating it when the protocols
    /// differ). Runs after `choose backend`, before `inject`.
    fn bridge(
        &mut self,
        call: &mut Call,
        route: &Self::Route,
        req: Self::Request,
    ) -> impl Future<Output = Result<Self::Outbound, GatewayError>> + Send;

    /// inject: the upstream's carrier, or `None` when the upstream's transport cannot carry
    /// trace context (counted as `trace_carrier_missing`).
    fn upstream_carrier<'a>(&self, out: &'a mut Self::Outbound) -> Option<&'a mut dyn Carrier>;

    /// dispatch: sends the request and waits for the upstream's answer (within the call's
    /// deadline).
    fn dispatch(
        &mut self,
        call: &mut Call,
        route: &Self::Route,
        out: Self::Outbound,
    ) -> impl Future<Output = Result<Self::Reply, GatewayError>> + Send;

    /// respond (success): the upstream's reply as the downstream's answer. Sets the call's
    /// outcome; the call is recorded when `call` is dropped (for a streamed body: when the
    /// body ends).
    fn respond(
        self,
        call: Recorded,
        reply: Self::Reply,
    ) -> impl Future<Output = Self::Response> + Send;

    /// respond (error): a gateway-made error in the downstream's terms, through
    /// [`respond`]'s encoders. Sets the call's outcome with [`Call::failed`].
    fn respond_error(self, call: Recorded, err: GatewayError) -> Self::Response;
}

/// Runs one call through every phase.
pub async fn run<A: Adapter>(
    stage: Arc<Stage<A::Route>>,
    mut adapter: A,
    call: Call,
    req: A::Request,
) -> A::Response {
    let mut call = Recorded::new(call, stage.recorder.clone());
    match forward(&stage, &mut adapter, &mut call, req).await {
        Ok(reply) => adapter.respond(call, reply).await,
        Err(err) => adapter.respond_error(call, err),
    }
}

/// route → extract → enforce → sample → choose backend → bridge → inject → dispatch.
async fn forward<A: Adapter>(
    stage: &Stage<A::Route>,
    adapter: &mut A,
    call: &mut Call,
    req: A::Request,
) -> Result<A::Reply, GatewayError> {
    let route = adapter.route(stage, call, &req)?;
    let policy = route.policy();
    call.route = Some(policy.clone());
    let extracted = extract(stage, call, adapter.carrier(&req));
    let decision = enforce_phase(stage, adapter, extracted, policy.on_missing)?;
    sample(stage, call, decision);
    choose_backend(call, policy);
    let mut out = adapter.bridge(call, &route, req).await?;
    inject(stage, call, adapter.upstream_carrier(&mut out), policy);
    call.dispatching();
    adapter.dispatch(call, &route, out).await
}

/// extract: the first valid context in the listener's extract order.
fn extract(
    stage: &Stage<impl Routed>,
    call: &mut Call,
    carrier: &(dyn Carrier + Sync),
) -> Extracted {
    let extracted = stage.propagator.extract(carrier);
    call.extraction = match (&extracted.format, &extracted.invalid) {
        (Some(f), _) => Extraction::Found(*f),
        (None, Some((f, _))) => Extraction::Invalid(*f),
        (None, None) => Extraction::Missing,
    };
    call.tracestate = extracted.tracestate;
    extracted
}

/// enforce: the route's `on_missing` against what extract found.
fn enforce_phase<A: Adapter>(
    stage: &Stage<A::Route>,
    adapter: &A,
    extracted: Extracted,
    on_missing: OnMissing,
) -> Result<Decision, GatewayError> {
    let decision = enforce(&extracted, on_missing);
    if decision != Decision::Reject {
        return Ok(decision);
    }
    let looked_for = stage.propagator.extract_header_names();
    let mut message = format!(
        "missing trace context: this route requires one of the headers {}",
        looked_for.join(", ")
    );
    if let Some(hint) = adapter.reject_hint() {
        message.push_str(&format!(" ({hint})"));
    }
    let invalid = extracted.invalid.as_ref().map(|(_, e)| e.to_string());
    if let Some(e) = &invalid {
        message.push_str(&format!("; invalid: {e}"));
    }
    Err(
        GatewayError::new(ErrorKind::MissingTraceContext, Side::Downstream, message).with_detail(
            ErrorDetail::MissingTraceContext {
                looked_for,
                invalid,
            },
        ),
    )
}

/// sample: the head decision, and the gateway's server and client span ids.
fn sample(stage: &Stage<impl Routed>, call: &mut Call, decision: Decision) {
    call.trace = match decision {
        Decision::Continue { parent } => {
            let sampled = stage.sampler.sample(Some(&parent), &parent.trace_id);
            Some(CallTrace::new(parent.trace_id, Some(parent), sampled))
        }
        Decision::Start => {
            let trace_id = TraceId::random();
            let sampled = stage.sampler.sample(None, &trace_id);
            Some(CallTrace::new(trace_id, None, sampled))
        }
        Decision::Pass | Decision::Reject => None,
    };
}

/// choose backend: the route's upstream, and the deadline its answer must meet. (Weighted
/// and colour choice plug in here.)
fn choose_backend(call: &mut Call, policy: &RoutePolicy) {
    let deadline = call.timings.started + policy.timeout;
    call.deadline = Some(call.deadline.map_or(deadline, |d| d.min(deadline)));
}

/// inject: the call's context into the upstream's carrier, with the gateway's client span as
/// parent. Every stale trace header is removed first, also when nothing is injected.
fn inject(
    stage: &Stage<impl Routed>,
    call: &Call,
    carrier: Option<&mut dyn Carrier>,
    policy: &RoutePolicy,
) {
    match (carrier, &call.trace) {
        (Some(carrier), Some(trace)) => {
            pool::with_writer(|w| stage.propagator.inject(&trace.upstream, carrier, w));
        }
        (Some(_), None) => {}
        (None, trace) => {
            if trace.is_some() {
                policy.upstream_metrics.carrier_missing();
            }
        }
    }
}

/// The time left until the call's deadline (zero once passed); `None` without a deadline.
pub fn time_left(call: &Call) -> Option<Duration> {
    call.deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
}

/// An `upstream_timeout` error naming the upstream and the limit that passed.
pub fn timeout_error(call: &Call, by_caller: bool) -> GatewayError {
    let upstream = call.route.as_ref().map_or("?", |r| &*r.upstream);
    let message = match (by_caller, &call.route) {
        (true, _) | (false, None) => {
            format!(
                "deadline exceeded: upstream {upstream} did not answer within the caller's deadline"
            )
        }
        (false, Some(r)) => format!("upstream {upstream} did not answer within {:?}", r.timeout),
    };
    GatewayError::new(ErrorKind::UpstreamTimeout, Side::Upstream, message)
}
