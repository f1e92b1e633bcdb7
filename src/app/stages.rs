//! Building the listeners' stages from a validated config: routes resolved to upstream pools
//! (from the [`Pools`] registry, so a reload keeps the connections of upstreams it did not
//! change), the propagator, the sampler and metric handles.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bridge::JsonGrpcBridge;
use crate::config::{BridgeKind, Config, ListenerConfig, UpstreamConfig, UpstreamProtocol};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::listener::http::{HttpRoute, HttpStage};
use crate::listener::thrift::{ThriftRoute, ThriftStage};
use crate::pipeline::{Recorder, RoutePolicy, Stage};
use crate::policy::{Router, Sampler};
use crate::telemetry::Metrics;
use crate::trace::Propagator;
use crate::upstream::HttpUpstream;
use crate::upstream::thrift::ThriftUpstream;

/// An upstream pool built from config, by protocol.
#[derive(Debug, Clone)]
enum Pool {
    Http(Arc<HttpUpstream>),
    Thrift(Arc<ThriftUpstream>),
}

/// Upstream pools by name, with the config each was built from: a reload reuses a pool
/// (and its connections) when its upstream's config is unchanged.
#[derive(Debug, Default)]
pub(super) struct Pools {
    by_name: HashMap<String, (UpstreamConfig, Pool)>,
}

impl Pools {
    /// The pools `config` needs, in `config.upstreams` order (reusing unchanged ones), and
    /// the registry that holds exactly those. Nothing changes until [`Pools::commit`]: a
    /// reload that fails later keeps the registry as it was.
    fn plan(&self, config: &Config) -> Result<(Vec<Pool>, Pools), GatewayError> {
        let mut next = HashMap::new();
        let mut ordered = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let pool = match self.by_name.get(&u.name) {
                Some((old, pool)) if old == u => pool.clone(),
                _ => build_pool(u)?,
            };
            ordered.push(pool.clone());
            next.insert(u.name.clone(), (u.clone(), pool));
        }
        Ok((ordered, Pools { by_name: next }))
    }

    /// Makes a planned registry the current one; pools it no longer names are dropped (their
    /// connections close once calls in flight on them finish).
    pub(super) fn commit(&mut self, next: Pools) {
        *self = next;
    }
}

fn build_pool(u: &UpstreamConfig) -> Result<Pool, GatewayError> {
    Ok(match u.protocol {
        UpstreamProtocol::Http | UpstreamProtocol::H2c | UpstreamProtocol::Grpc => {
            Pool::Http(Arc::new(HttpUpstream::new(u)?))
        }
        UpstreamProtocol::Thrift => Pool::Thrift(Arc::new(ThriftUpstream::new(u))),
    })
}

/// What every stage of one config shares.
pub(super) struct Builder<'a> {
    pub(super) config: &'a Config,
    pub(super) metrics: &'a Arc<Metrics>,
    pools: Vec<Pool>,
    propagator: Arc<Propagator>,
    sampler: Sampler,
}

impl<'a> Builder<'a> {
    /// Resolves the upstream pools of `config` (reusing unchanged ones from `pools`); also
    /// returns the registry to [`Pools::commit`] once every stage is built.
    pub(super) fn new(
        config: &'a Config,
        metrics: &'a Arc<Metrics>,
        pools: &Pools,
    ) -> Result<(Self, Pools), GatewayError> {
        let (ordered, next) = pools.plan(config)?;
        let builder = Builder {
            config,
            metrics,
            pools: ordered,
            propagator: Arc::new(Propagator::new(
                config.propagation.extract.clone(),
                config.propagation.inject.clone(),
            )),
            sampler: Sampler::new(config.telemetry.sampler),
        };
        Ok((builder, next))
    }

    fn stage<R>(
        &self,
        listener: &ListenerConfig,
        router: Router<Arc<R>>,
        recorder: &Arc<Recorder>,
    ) -> Stage<R> {
        Stage {
            listener: listener.name.as_str().into(),
            router,
            propagator: self.propagator.clone(),
            sampler: self.sampler,
            recorder: recorder.clone(),
        }
    }

    fn policy(&self, listener: &ListenerConfig, index: usize) -> Arc<RoutePolicy> {
        let route = &self.config.routes[index];
        let upstream = &self.config.upstreams[route.upstream].name;
        Arc::new(RoutePolicy {
            name: route.name.as_str().into(),
            upstream: upstream.as_str().into(),
            path_prefix: route.matcher.path_prefix.as_deref().map(Into::into),
            on_missing: route
                .on_missing
                .unwrap_or(self.config.propagation.on_missing),
            timeout: route.timeout,
            metrics: self.metrics.route(&listener.name, &route.name),
            upstream_metrics: self.metrics.upstream(upstream),
        })
    }

    fn routes_of<'l>(&self, listener: &'l ListenerConfig) -> impl Iterator<Item = usize> + 'l
    where
        'a: 'l,
    {
        let routes = &self.config.routes;
        (0..routes.len()).filter(move |&i| routes[i].listener == listener.name)
    }

    /// The stage of an HTTP listener.
    pub(super) fn http(
        &mut self,
        listener: &ListenerConfig,
        recorder: &Arc<Recorder>,
    ) -> Result<HttpStage, GatewayError> {
        let mut routes = Vec::new();
        for i in self.routes_of(listener).collect::<Vec<_>>() {
            let route = &self.config.routes[i];
            let Some(Pool::Http(upstream)) = self.pools.get(route.upstream).cloned() else {
                return Err(mismatch(self.config, i, "HTTP", "thrift"));
            };
            let bridge = match route.bridge {
                Some(BridgeKind::JsonGrpc) => Some(self.json_grpc_bridge(route.upstream)?),
                None => None,
            };
            let target = HttpRoute {
                policy: self.policy(listener, i),
                upstream,
                bridge,
                // Validated as an authority, so always a valid header value.
                host_rewrite: route
                    .host_rewrite
                    .as_deref()
                    .and_then(|h| http::HeaderValue::from_str(h).ok()),
            };
            routes.push((route.matcher.clone(), Arc::new(target)));
        }
        Ok(self.stage(listener, Router::new(routes), recorder))
    }

    /// The stage of a Thrift listener.
    pub(super) fn thrift(
        &mut self,
        listener: &ListenerConfig,
        recorder: &Arc<Recorder>,
    ) -> Result<ThriftStage, GatewayError> {
        let mut routes = Vec::new();
        for i in self.routes_of(listener).collect::<Vec<_>>() {
            let route = &self.config.routes[i];
            let Some(Pool::Thrift(upstream)) = self.pools.get(route.upstream) else {
                return Err(mismatch(self.config, i, "Thrift", "non-Thrift"));
            };
            let target = ThriftRoute {
                policy: self.policy(listener, i),
                upstream: upstream.clone(),
            };
            routes.push((route.matcher.clone(), Arc::new(target)));
        }
        Ok(self.stage(listener, Router::new(routes), recorder))
    }

    /// The JSON → gRPC bridge of upstream `index`: built once, when the config was validated.
    fn json_grpc_bridge(&self, index: usize) -> Result<Arc<JsonGrpcBridge>, GatewayError> {
        let u = &self.config.upstreams[index];
        u.json_grpc
            .as_ref()
            .map(|b| b.bridge().clone())
            .ok_or_else(|| {
                config_error(format!(
                    "upstream {:?} carries no json-grpc bridge (validation builds it)",
                    u.name
                ))
            })
    }
}

/// A route whose upstream speaks what its listener cannot forward to (validation refuses
/// these; this guards `start` against a config built by hand).
fn mismatch(config: &Config, route: usize, listener: &str, kind: &str) -> GatewayError {
    let r = &config.routes[route];
    let upstream = config.upstreams.get(r.upstream).map_or("?", |u| &u.name);
    config_error(format!(
        "routes[{route}].upstream: {listener} listener {:?} cannot forward to {kind} upstream {upstream:?}",
        r.listener
    ))
}

pub(super) fn config_error(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::Internal, Side::Internal, message)
}
