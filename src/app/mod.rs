//! `app`: wiring and lifetimes, the only module that sees everything.
//!
//! [`start`] turns a validated [`Config`] into running listeners (each with its stage of
//! routes, propagator, sampler, upstream pools), the admin endpoint and telemetry;
//! [`RunningGateway::shutdown`] stops accepting, drains in-flight calls and flushes spans.

pub mod demo;
mod demo_grpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bridge::JsonGrpcBridge;
use crate::codec::thrift::DEFAULT_MAX_FRAME_SIZE;
use crate::config::{BridgeKind, Config, ListenerConfig, ListenerProtocol, UpstreamProtocol};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::listener::http::{HttpRoute, HttpStage, Limits, serve_http};
use crate::listener::thrift::{ThriftRoute, ThriftStage, serve_thrift};
use crate::policy::{Router, Sampler};
use crate::telemetry::{Telemetry, admin};
use crate::trace::Propagator;
use crate::upstream::HttpUpstream;
use crate::upstream::thrift::ThriftUpstream;

/// An upstream built from config, by protocol.
#[derive(Debug, Clone)]
enum Upstream {
    Http(Arc<HttpUpstream>),
    Thrift(Arc<ThriftUpstream>),
}

/// A socket the gateway bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Listener name, or `admin`.
    pub name: String,
    /// `http`, `thrift` or `admin`.
    pub protocol: &'static str,
    /// The bound address (the real port when the config said 0).
    pub address: SocketAddr,
}

/// A started gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// Every bound socket, listeners first in config order, then admin.
    pub bound: Vec<Bound>,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    telemetry: Telemetry,
    drain_timeout: Duration,
}

impl RunningGateway {
    /// The bound address of a listener (or `admin`).
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.address)
    }

    /// A token that starts shutdown when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until shutdown is requested through [`RunningGateway::shutdown_token`], then
    /// drains and flushes like [`RunningGateway::shutdown`].
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight calls finish (up to the drain timeout), stops the admin
    /// endpoint and flushes queued spans.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        // Listener tasks bound their own drain by drain_timeout; the margin covers the admin task.
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.drain_timeout + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        self.telemetry.shutdown(Duration::from_secs(5)).await;
    }
}

/// Starts everything the config describes. Must run inside a tokio runtime.
pub async fn start(config: Config) -> Result<RunningGateway, GatewayError> {
    let telemetry = Telemetry::start(&config.telemetry)?;
    let upstreams = build_upstreams(&config)?;
    let propagator = Arc::new(Propagator::new(
        config.propagation.extract.clone(),
        config.propagation.inject.clone(),
    ));
    let sampler = Sampler::new(config.telemetry.sampler);
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let mut bound = Vec::new();

    for listener in &config.listeners {
        let socket = bind(&listener.name, listener.address).await?;
        let address = local_addr(&socket, &listener.name)?;
        match listener.protocol {
            ListenerProtocol::Http => {
                let stage = Arc::new(HttpStage {
                    listener: listener.name.as_str().into(),
                    router: http_router(&config, listener, &upstreams)?,
                    propagator: propagator.clone(),
                    sampler,
                    metrics: telemetry.metrics.clone(),
                    spans: telemetry.spans.clone(),
                });
                let limits = Limits {
                    max_connections: listener.max_connections,
                    header_timeout: listener.header_timeout,
                    drain_timeout: config.shutdown.drain_timeout,
                };
                tasks.spawn(serve_http(socket, stage, limits, shutdown.clone()));
                bound.push(Bound {
                    name: listener.name.clone(),
                    protocol: "http",
                    address,
                });
            }
            ListenerProtocol::Thrift => {
                let stage = Arc::new(ThriftStage {
                    listener: listener.name.as_str().into(),
                    router: thrift_router(&config, listener, &upstreams)?,
                    propagator: propagator.clone(),
                    sampler,
                    metrics: telemetry.metrics.clone(),
                    spans: telemetry.spans.clone(),
                    max_frame: DEFAULT_MAX_FRAME_SIZE,
                });
                let limits = Limits {
                    max_connections: listener.max_connections,
                    header_timeout: listener.header_timeout,
                    drain_timeout: config.shutdown.drain_timeout,
                };
                tasks.spawn(serve_thrift(socket, stage, limits, shutdown.clone()));
                bound.push(Bound {
                    name: listener.name.clone(),
                    protocol: "thrift",
                    address,
                });
            }
        }
    }

    if let Some(admin_addr) = config.admin.listen {
        let socket = bind("admin", admin_addr).await?;
        let address = local_addr(&socket, "admin")?;
        let token = shutdown.clone();
        tasks.spawn(admin::serve(
            socket,
            telemetry.metrics.clone(),
            ready.clone(),
            async move { token.cancelled().await },
        ));
        bound.push(Bound {
            name: "admin".into(),
            protocol: "admin",
            address,
        });
    }

    ready.store(true, Ordering::SeqCst);
    Ok(RunningGateway {
        bound,
        shutdown,
        ready,
        tasks,
        telemetry,
        drain_timeout: config.shutdown.drain_timeout,
    })
}

fn build_upstreams(config: &Config) -> Result<Vec<Upstream>, GatewayError> {
    config
        .upstreams
        .iter()
        .map(|u| match u.protocol {
            UpstreamProtocol::Http | UpstreamProtocol::H2c | UpstreamProtocol::Grpc => {
                HttpUpstream::new(u).map(|up| Upstream::Http(Arc::new(up)))
            }
            UpstreamProtocol::Thrift => Ok(Upstream::Thrift(Arc::new(ThriftUpstream::new(u)))),
        })
        .collect()
}

fn thrift_router(
    config: &Config,
    listener: &ListenerConfig,
    upstreams: &[Upstream],
) -> Result<Router<Arc<ThriftRoute>>, GatewayError> {
    let mut routes = Vec::new();
    for route in config.routes.iter().filter(|r| r.listener == listener.name) {
        let Some(Upstream::Thrift(upstream)) = upstreams.get(route.upstream) else {
            let name = config
                .upstreams
                .get(route.upstream)
                .map_or("?", |u| u.name.as_str());
            return Err(config_error(format!(
                "routes.{}: Thrift listener {:?} cannot forward to non-Thrift upstream {name:?} (Thrift ⇄ HTTP/gRPC bridging is not in this build yet)",
                route.name, listener.name
            )));
        };
        let target = ThriftRoute {
            name: route.name.as_str().into(),
            upstream: upstream.clone(),
            timeout: route.timeout,
            on_missing: route.on_missing.unwrap_or(config.propagation.on_missing),
        };
        routes.push((route.matcher.clone(), Arc::new(target)));
    }
    Ok(Router::new(routes))
}

fn http_router(
    config: &Config,
    listener: &ListenerConfig,
    upstreams: &[Upstream],
) -> Result<Router<Arc<HttpRoute>>, GatewayError> {
    let mut routes = Vec::new();
    for route in config.routes.iter().filter(|r| r.listener == listener.name) {
        let Some(Upstream::Http(upstream)) = upstreams.get(route.upstream) else {
            let name = config
                .upstreams
                .get(route.upstream)
                .map_or("?", |u| u.name.as_str());
            return Err(config_error(format!(
                "routes.{}: HTTP listener {:?} cannot forward to thrift upstream {name:?} (HTTP ⇄ Thrift bridging is not in this build yet)",
                route.name, listener.name
            )));
        };
        let bridge = match route.bridge {
            Some(BridgeKind::JsonGrpc) => Some(json_grpc_bridge(config, route.upstream)?),
            None => None,
        };
        let target = HttpRoute {
            name: route.name.as_str().into(),
            path_prefix: route.matcher.path_prefix.as_deref().map(Into::into),
            upstream: upstream.clone(),
            timeout: route.timeout,
            on_missing: route.on_missing.unwrap_or(config.propagation.on_missing),
            bridge,
        };
        routes.push((route.matcher.clone(), Arc::new(target)));
    }
    Ok(Router::new(routes))
}

/// The JSON → gRPC bridge of upstream `index`: built once by config validation and carried
/// in the config, shared by every route that bridges to it.
fn json_grpc_bridge(config: &Config, index: usize) -> Result<Arc<JsonGrpcBridge>, GatewayError> {
    let upstream = config.upstreams.get(index);
    upstream
        .and_then(|u| u.json_grpc.as_ref())
        .map(|b| b.bridge().clone())
        .ok_or_else(|| {
            let name = upstream.map_or("?", |u| u.name.as_str());
            config_error(format!(
                "upstream {name:?} carries no json-grpc bridge (the config did not come from config::parse or config::load)"
            ))
        })
}

async fn bind(name: &str, address: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(address).await.map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Side::Internal,
            format!("listener {name}: cannot bind {address}"),
        )
        .with_source(e)
    })
}

fn local_addr(socket: &TcpListener, name: &str) -> Result<SocketAddr, GatewayError> {
    socket.local_addr().map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Side::Internal,
            format!("listener {name}: no local address"),
        )
        .with_source(e)
    })
}

fn config_error(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::Internal, Side::Internal, message)
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
