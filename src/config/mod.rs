//! `config`: TOML → raw serde structs (`deny_unknown_fields`) → this validated, typed config.
//!
//! Every error names its key path and bad value (`routes[2].upstream: "users" is not a
//! defined upstream`); [`parse`] reports every error in one pass. Stages receive their own
//! slice of the config, never the whole.
//!
//! [`watch()`] re-loads the file after it changes (and [`reload_now`] on SIGHUP), through the
//! same [`load`] that `tracebridge check` uses.

mod duration;
mod raw;
mod validate;
pub mod watch;

pub use duration::parse_duration;
pub use watch::{ConfigWatch, WatchError, reload_now, watch};

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bridge::descriptors::{builtin, decode};
use crate::bridge::{BuildError, JsonGrpcBridge};
use crate::policy::Cidr;
use crate::trace::Format;

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: AdminConfig,
    /// Span export and sampling.
    pub telemetry: TelemetryConfig,
    /// Trace header formats.
    pub propagation: PropagationConfig,
    /// Drain behaviour on SIGTERM/SIGINT.
    pub shutdown: ShutdownConfig,
    /// Downstream-facing listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Routes, in match order (first match wins within a listener).
    pub routes: Vec<RouteConfig>,
    /// Upstream services.
    pub upstreams: Vec<UpstreamConfig>,
    /// Logging.
    pub log: LogConfig,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// The access log: one JSON line per call on standard output; default off.
    pub access: AccessLogFormat,
}

/// `[log] access`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// No access log.
    #[default]
    Off,
    /// One JSON line per call.
    Json,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where the admin endpoint listens; default `127.0.0.1:9901`. `None` when disabled (`listen = ""`).
    pub listen: Option<SocketAddr>,
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `service.name` on exported spans; default `tracebridge`.
    pub service_name: String,
    /// OTLP endpoint, e.g. `http://127.0.0.1:4317`; `None`: spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// OTLP transport; default gRPC.
    pub otlp_protocol: OtlpProtocol,
    /// Sampler for traces the gateway starts or continues.
    pub sampler: SamplerConfig,
    /// Bound of the span queue between the data path and the exporter; default 4096.
    pub span_queue: usize,
    /// Print each span as it is recorded (the demo does); default false.
    pub log_spans: bool,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

/// `[telemetry] sampler`
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// `{ kind = "parent_ratio", ratio = 0.0..=1.0 }`: follow the parent's sampled flag; new
    /// roots are sampled with probability `ratio` (decided on the trace id).
    ParentRatio {
        /// Probability for new roots.
        ratio: f64,
    },
}

/// `[propagation]`
#[derive(Debug, Clone, PartialEq)]
pub struct PropagationConfig {
    /// Formats accepted on ingress, in this order; default `["w3c", "jaeger", "b3", "grpc-trace-bin", "x-trace-raw"]`.
    pub extract: Vec<Format>,
    /// Formats written on egress; default `["w3c"]`.
    pub inject: Vec<Format>,
    /// What to do when no valid context arrives; default `start`.
    pub on_missing: OnMissing,
}

/// What to do with a request that carries no valid trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissing {
    /// Start a new root trace.
    Start,
    /// Reject: HTTP 400, gRPC INVALID_ARGUMENT, Thrift TApplicationException.
    Reject,
    /// Forward untouched: no context is added and no spans are recorded.
    Pass,
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM/SIGINT; default 30s.
    pub drain_timeout: Duration,
}

/// `[[listeners]]`
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, referenced by routes.
    pub name: String,
    /// Protocol served.
    pub protocol: ListenerProtocol,
    /// Bind address (port 0 picks a free port).
    pub address: SocketAddr,
    /// Most concurrent downstream connections; default 10,000.
    pub max_connections: usize,
    /// Most time a connection may go without a request in flight: the first byte, a request
    /// head (HTTP/1.1), the next whole frame (Thrift), an idle h2 connection; default 30s.
    pub header_timeout: Duration,
    /// Thrift listeners: most calls in flight per connection; default 64.
    pub max_inflight_per_connection: usize,
    /// Thrift listeners: most bytes of frames held by a connection's calls in flight (reading
    /// pauses beyond it; a larger frame is refused); default 64 MiB.
    pub max_inflight_bytes: usize,
    /// What happens to a request path before routing (`path_normalization`); default strict.
    pub path_normalization: PathNormalization,
    /// Peers whose `X-Forwarded-*` headers are kept (`trusted_proxies`); default none.
    pub trusted_proxies: Vec<Cidr>,
}

/// `path_normalization` of an http listener: what is done to the request path before it is
/// routed and forwarded. Dot-segments (`.`, `..`) are removed (RFC 3986 §5.2.4) except with
/// `Off`; the normalised path is the one routed and forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    /// `strict`: remove dot-segments; refuse (400) a path holding `%2e` or `%2f`, which
    /// another hop could decode into a different path than the one routed.
    #[default]
    Strict,
    /// `decode_dots`: decode `%2e` to `.` first, then remove dot-segments; `%2f` is still
    /// refused.
    DecodeDots,
    /// `off`: route and forward the path as received.
    Off,
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c (gRPC and gRPC-Web on the same port).
    Http,
    /// Apache Thrift, transport auto-detected.
    Thrift,
}

/// `[[routes]]`
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Name used in metrics and spans; default `<listener>#<index>`, the index being the
    /// route's position in `[[routes]]` (as in the key path `routes[<index>]`).
    pub name: String,
    /// The listener this route belongs to.
    pub listener: String,
    /// What a request must look like to take this route (all given conditions must hold).
    pub matcher: RouteMatch,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Whole-request timeout, from the first upstream attempt to the response head; default 30s.
    pub timeout: Duration,
    /// Overrides `[propagation] on_missing` for this route.
    pub on_missing: Option<OnMissing>,
    /// Translates the caller's protocol into the upstream's (`bridge = "json-grpc"`).
    pub bridge: Option<BridgeKind>,
    /// The `Host` an HTTP/1.1 upstream sees (`host_rewrite`); default the caller's authority.
    pub host_rewrite: Option<String>,
}

/// A route's protocol bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    /// `json-grpc`: plain HTTP/JSON callers reach a gRPC upstream; the method is found by the
    /// `google.api.http` rules of the upstream's descriptor set.
    JsonGrpc,
}

/// `match = { ... }` of a route. An empty matcher matches every request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    /// Exact host (without port), case-insensitive; from `Host` or the `:authority`.
    pub host: Option<String>,
    /// Path prefix, matched on `/` segment boundaries (`/users` matches `/users` and `/users/1`, not `/usersx`).
    pub path_prefix: Option<String>,
    /// Headers that must be present with exactly these values (names lower-cased, sorted by
    /// name: a TOML table keeps no order).
    pub headers: Vec<(String, String)>,
    /// Query parameters that must be present with exactly these values (sorted by name).
    pub query: Vec<(String, String)>,
    /// gRPC service (`package.Service`), for gRPC requests.
    pub grpc_service: Option<String>,
    /// Thrift method name (or `Service:` prefix for multiplexed names).
    pub thrift_method: Option<String>,
}

/// `[[upstreams]]`
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name.
    pub name: String,
    /// Protocol spoken to the upstream.
    pub protocol: UpstreamProtocol,
    /// Thrift transport (thrift upstreams only; default `header`).
    pub transport: Option<ThriftTransport>,
    /// Thrift protocol (thrift upstreams only; default `binary`).
    pub thrift_protocol: Option<ThriftProtocol>,
    /// `host:port` endpoints, used round-robin.
    pub endpoints: Vec<String>,
    /// Connect timeout; default 5s.
    pub connect_timeout: Duration,
    /// Idle pooled connections kept per endpoint; default 64.
    pub pool_idle_per_endpoint: usize,
    /// gRPC upstreams: the serialized `FileDescriptorSet` bridged routes read their schemas
    /// from; `None`: the built-in set (the demo service and well-known types).
    pub descriptor_set: Option<PathBuf>,
    /// gRPC upstreams: the services bridged routes may call; empty: every service in the set.
    pub services: Vec<String>,
    /// gRPC upstreams: the JSON → gRPC bridge, built once while validating (so `check` finds
    /// what start-up would, and start-up does not load the set again). `Some` when the
    /// upstream sets `descriptor_set` or `services`, or a `bridge = "json-grpc"` route targets
    /// it (then from the built-in set by default); `None` otherwise and for other protocols.
    pub json_grpc: Option<SharedJsonGrpcBridge>,
}

/// A built [`JsonGrpcBridge`], shared by every route that bridges to its upstream and by
/// every clone of the [`Config`] that carries it.
///
/// Two are equal when built from the same inputs: the same descriptor set bytes (compared by
/// a 64-bit SipHash digest taken when the file was read; or both the built-in set) and the
/// same services. So a reload of an unchanged file compares equal (an upstream pool keyed by
/// its config survives it), and one whose descriptor set changed does not, even at the same
/// path.
#[derive(Clone)]
pub struct SharedJsonGrpcBridge {
    bridge: Arc<JsonGrpcBridge>,
    /// Digest of the descriptor set's bytes; `None`: the built-in set.
    set_digest: Option<u64>,
}

impl SharedJsonGrpcBridge {
    /// Reads the descriptor set once (`None`: the built-in one) and builds the bridge for
    /// `services` (empty: every service in the set), as [`JsonGrpcBridge::load`] does.
    pub fn load(descriptor_set: Option<&Path>, services: &[String]) -> Result<Self, BuildError> {
        let (pool, set_digest) = match descriptor_set {
            None => (builtin().map_err(BuildError::DescriptorSet)?, None),
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    BuildError::DescriptorSet(format!("cannot read {}: {e}", path.display()))
                })?;
                let pool = decode(&bytes)
                    .map_err(|e| BuildError::DescriptorSet(format!("{}: {e}", path.display())))?;
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut hasher);
                (pool, Some(hasher.finish()))
            }
        };
        Ok(SharedJsonGrpcBridge {
            bridge: Arc::new(JsonGrpcBridge::new(&pool, services)?),
            set_digest,
        })
    }

    /// The bridge, to hand to the routes that use it.
    pub fn bridge(&self) -> &Arc<JsonGrpcBridge> {
        &self.bridge
    }
}

impl PartialEq for SharedJsonGrpcBridge {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.bridge, &other.bridge)
            || (self.set_digest == other.set_digest
                && self.bridge.services() == other.bridge.services())
    }
}

impl std::fmt::Debug for SharedJsonGrpcBridge {
    // The bridge's own Debug prints every descriptor; its services say which one it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonGrpcBridge")
            .field("services", &self.bridge.services())
            .field("set_digest", &self.set_digest)
            .finish_non_exhaustive()
    }
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2 with prior knowledge (cleartext).
    H2c,
    /// gRPC over h2c.
    Grpc,
    /// Apache Thrift.
    Thrift,
}

/// Thrift transport of an upstream (the codec's one dialect type names it).
pub use crate::codec::thrift::Transport as ThriftTransport;

/// Thrift protocol of an upstream.
pub use crate::codec::thrift::ProtocolId as ThriftProtocol;

/// Every error found in a config, each with its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    /// The errors, in document order.
    pub errors: Vec<ConfigError>,
}

/// One config error: where, and what is wrong there (`path: message`, or the message alone
/// for a whole-document error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    /// Key path, e.g. `routes[2].upstream` (empty for a whole-document syntax error).
    pub path: String,
    /// The fact, naming the bad value.
    pub message: String,
}

/// Parses and validates TOML text.
/// Relative file paths in it (`descriptor_set`) are taken from the working directory.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    validate::validate(raw::parse(text)?, None)
}

/// Reads, parses and validates a config file. Relative file paths in it (`descriptor_set`)
/// are taken from the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    from_bytes(path, &read(path)?)
}

/// The bytes of a config file; the error is the one [`load`] reports.
fn read(path: &Path) -> Result<Vec<u8>, ConfigErrors> {
    std::fs::read(path).map_err(|e| unreadable(path, &e))
}

/// Parses and validates the bytes read from `path`: the rest of [`load`].
fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        );
        unreadable(path, &e)
    })?;
    validate::validate(raw::parse(text)?, path.parent())
}

fn unreadable(path: &Path, e: &std::io::Error) -> ConfigErrors {
    ConfigErrors {
        errors: vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }],
    }
}

/// The path of a config file given on the command line.
pub type ConfigPath = PathBuf;
