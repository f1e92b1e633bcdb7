//! `app`: wiring and lifetimes, the only module that sees everything.
//!
//! [`start`] turns a validated [`Config`] into running listeners (each with its stage of
//! routes, propagator, sampler, upstream pools), the admin endpoint and telemetry;
//! [`RunningGateway::shutdown`] stops accepting, drains in-flight calls and flushes spans.

pub mod demo;
mod demo_grpc;
mod demo_thrift;
pub mod reload;
mod stages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::stages::{Builder, Pools};
use crate::codec::thrift::DEFAULT_MAX_FRAME_SIZE;
use crate::config::{AccessLogFormat, Config, ListenerProtocol};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::listener::http::{Hardening, HttpStage, Limits, serve_http};
use crate::listener::thrift::{ThriftBounds, ThriftStage, serve_thrift};
use crate::pipeline::Recorder;
use crate::telemetry::access::AccessLog;
use crate::telemetry::{Metrics, Telemetry, admin};

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
    live: Arc<Live>,
}

/// The stage of one running listener, swapped whole by a reload.
#[derive(Debug, Clone)]
enum LiveStage {
    Http(Arc<ArcSwap<HttpStage>>),
    Thrift(Arc<ArcSwap<ThriftStage>>),
}

/// What a reload replaces, and what it keeps: the listeners' recorders and the pools.
#[derive(Debug)]
struct Live {
    stages: Vec<LiveStage>,
    recorders: Vec<Arc<Recorder>>,
    pools: Mutex<Pools>,
    config: Mutex<Config>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Why a reload was not applied; the running config stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config changes something only a restart can apply.
    #[error("not applied: {0} changed; restart the gateway to apply it")]
    RestartRequired(&'static str),
    /// The new config could not be built (an upstream endpoint, a descriptor set).
    #[error("not applied: {0}")]
    Build(GatewayError),
}

/// Applies new configs to a running gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader(Arc<Live>);

impl Reloader {
    /// Swaps in `config` (already validated, as `check` does) as the next snapshot; calls in
    /// flight finish on the one they started with. Returns the new generation.
    pub fn reload(&self, config: Config) -> Result<u64, ReloadError> {
        let result = self.0.reload(config);
        self.0.metrics.config_reload(match &result {
            Ok(_) => "ok",
            Err(ReloadError::RestartRequired(_)) => "restart_required",
            Err(ReloadError::Build(_)) => "invalid",
        });
        result
    }

    /// Counts a reload refused because the file did not validate.
    pub fn invalid(&self) {
        self.0.metrics.config_reload("invalid");
    }

    /// The generation of the running snapshot (1 at start).
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::SeqCst)
    }
}

impl Live {
    fn reload(&self, config: Config) -> Result<u64, ReloadError> {
        let mut current = lock(&self.config);
        if let Some(what) = restart_only_change(&current, &config) {
            return Err(ReloadError::RestartRequired(what));
        }
        let mut pools = lock(&self.pools);
        let (mut builder, next_pools) =
            Builder::new(&config, &self.metrics, &pools).map_err(ReloadError::Build)?;
        // Build every stage first, then swap: a failure leaves the old snapshot whole.
        let mut built = Vec::with_capacity(self.stages.len());
        for ((listener, live), recorder) in config
            .listeners
            .iter()
            .zip(&self.stages)
            .zip(&self.recorders)
        {
            built.push(match live {
                LiveStage::Http(_) => Built::Http(
                    builder
                        .http(listener, recorder)
                        .map_err(ReloadError::Build)?,
                ),
                LiveStage::Thrift(_) => Built::Thrift(
                    builder
                        .thrift(listener, recorder)
                        .map_err(ReloadError::Build)?,
                ),
            });
        }
        for (live, stage) in self.stages.iter().zip(built) {
            match (live, stage) {
                (LiveStage::Http(swap), Built::Http(s)) => swap.store(Arc::new(s)),
                (LiveStage::Thrift(swap), Built::Thrift(s)) => swap.store(Arc::new(s)),
                _ => {}
            }
        }
        pools.commit(next_pools);
        *current = config;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.metrics.set_config_generation(generation);
        Ok(generation)
    }
}

enum Built {
    Http(HttpStage),
    Thrift(ThriftStage),
}

/// What a reload cannot apply: sockets, the admin endpoint, span export, logging, drain.
fn restart_only_change(old: &Config, new: &Config) -> Option<&'static str> {
    let export = |c: &Config| {
        let t = &c.telemetry;
        (
            t.service_name.clone(),
            t.otlp_endpoint.clone(),
            t.otlp_protocol,
            t.span_queue,
            t.log_spans,
        )
    };
    if old.listeners != new.listeners {
        Some("[[listeners]]")
    } else if old.admin != new.admin {
        Some("[admin]")
    } else if export(old) != export(new) {
        Some("[telemetry] export settings")
    } else if old.log != new.log {
        Some("[log]")
    } else if old.shutdown != new.shutdown {
        Some("[shutdown]")
    } else {
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A handle that applies new configs (hot reload).
    pub fn reloader(&self) -> Reloader {
        Reloader(self.live.clone())
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
    let metrics = telemetry.metrics.clone();
    let access = match config.log.access {
        AccessLogFormat::Off => None,
        AccessLogFormat::Json => Some(AccessLog::stdout(metrics.clone())),
    };
    let (mut builder, pools) = Builder::new(&config, &metrics, &Pools::default())?;
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let mut bound = Vec::new();
    let mut stages = Vec::new();
    let mut recorders = Vec::new();

    for listener in &config.listeners {
        let socket = bind(&listener.name, listener.address).await?;
        let address = local_addr(&socket, &listener.name)?;
        let recorder = Arc::new(Recorder::new(
            &listener.name,
            &metrics,
            telemetry.spans.clone(),
            access.clone(),
        ));
        let limits = Limits {
            max_connections: listener.max_connections,
            header_timeout: listener.header_timeout,
            drain_timeout: config.shutdown.drain_timeout,
        };
        let protocol = match listener.protocol {
            ListenerProtocol::Http => {
                let stage = Arc::new(ArcSwap::from_pointee(builder.http(listener, &recorder)?));
                let hardening = Hardening {
                    path_normalization: listener.path_normalization,
                    trusted_proxies: listener.trusted_proxies.as_slice().into(),
                };
                tasks.spawn(serve_http(
                    socket,
                    stage.clone(),
                    limits,
                    hardening,
                    shutdown.clone(),
                ));
                stages.push(LiveStage::Http(stage));
                "http"
            }
            ListenerProtocol::Thrift => {
                let stage = Arc::new(ArcSwap::from_pointee(builder.thrift(listener, &recorder)?));
                let bounds = ThriftBounds {
                    max_frame: DEFAULT_MAX_FRAME_SIZE,
                    max_inflight: listener.max_inflight_per_connection,
                    max_inflight_bytes: listener.max_inflight_bytes,
                };
                tasks.spawn(serve_thrift(
                    socket,
                    stage.clone(),
                    limits,
                    bounds,
                    shutdown.clone(),
                ));
                stages.push(LiveStage::Thrift(stage));
                "thrift"
            }
        };
        recorders.push(recorder);
        bound.push(Bound {
            name: listener.name.clone(),
            protocol,
            address,
        });
    }

    if let Some(admin_addr) = config.admin.listen {
        let socket = bind("admin", admin_addr).await?;
        let address = local_addr(&socket, "admin")?;
        tasks.spawn(admin::serve(
            socket,
            metrics.clone(),
            ready.clone(),
            shutdown.clone(),
        ));
        bound.push(Bound {
            name: "admin".into(),
            protocol: "admin",
            address,
        });
    }

    drop(builder);
    metrics.set_config_generation(1);
    ready.store(true, Ordering::SeqCst);
    let drain_timeout = config.shutdown.drain_timeout;
    Ok(RunningGateway {
        bound,
        shutdown,
        ready,
        tasks,
        telemetry,
        drain_timeout,
        live: Arc::new(Live {
            stages,
            recorders,
            pools: Mutex::new(pools),
            config: Mutex::new(config),
            generation: AtomicU64::new(1),
            metrics,
        }),
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

/// Resolves when SIGTERM or SIGINT arrives. The handlers are installed by this call, not
/// on the first poll: call it before announcing readiness, so a SIGTERM right after `ready`
/// drains instead of killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                (None, _) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
