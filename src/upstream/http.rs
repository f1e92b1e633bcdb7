//! HTTP/1.1 and h2c upstream pools: hyper-util's pooled client, one per upstream, with
//! round-robin over the upstream's endpoints. Bodies stream through; nothing is buffered.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::error::{ErrorKind, GatewayError, Side};

/// The body type sent upstream: anything that streams `Bytes`.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub use crate::error::BoxError;

/// One upstream: its endpoints and a pooled client speaking HTTP/1.1 or h2c.
#[derive(Debug)]
pub struct HttpUpstream {
    name: String,
    http2: bool,
    endpoints: Vec<Authority>,
    endpoint_names: Vec<Arc<str>>,
    next: AtomicUsize,
    client: Client<HttpConnector, UpstreamBody>,
}

impl HttpUpstream {
    /// Builds the pool from config. Fails for endpoints that are not a valid `host:port`.
    pub fn new(config: &UpstreamConfig) -> Result<Self, GatewayError> {
        let http2 = matches!(
            config.protocol,
            UpstreamProtocol::H2c | UpstreamProtocol::Grpc
        );
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                e.parse::<Authority>().map_err(|err| {
                    GatewayError::new(
                        ErrorKind::Internal,
                        Side::Internal,
                        format!("upstream {}: endpoint {e:?} is not host:port", config.name),
                    )
                    .with_source(err)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(GatewayError::new(
                ErrorKind::Internal,
                Side::Internal,
                format!("upstream {} has no endpoints", config.name),
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.pool_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(http2)
            .build(connector);
        Ok(HttpUpstream {
            name: config.name.clone(),
            http2,
            endpoint_names: endpoints.iter().map(|a| Arc::from(a.as_str())).collect(),
            endpoints,
            next: AtomicUsize::new(0),
            client,
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this upstream speaks HTTP/2 (h2c or gRPC).
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// Sends `req` to the next endpoint (round-robin); see [`HttpUpstream::send_next`].
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        self.send_next(req).1.await
    }

    /// Picks the next endpoint (round-robin) and returns its name with the exchange: the URI
    /// is rewritten to that endpoint (keeping path and query) and the version to what the
    /// upstream speaks; the future resolves with the response head.
    pub fn send_next(
        &self,
        req: Request<UpstreamBody>,
    ) -> (
        Arc<str>,
        impl Future<Output = Result<Response<Incoming>, GatewayError>> + Send + '_,
    ) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        (self.endpoint_names[index].clone(), self.send_to(index, req))
    }

    async fn send_to(
        &self,
        index: usize,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let authority = self.endpoints[index].clone();
        let path_and_query = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query =
            path_and_query.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| {
            GatewayError::new(
                ErrorKind::Internal,
                Side::Internal,
                "cannot build upstream URI",
            )
            .with_source(e)
        })?;
        if self.http2 {
            *req.version_mut() = Version::HTTP_2;
            // :authority comes from the URI; a Host header would contradict it.
            req.headers_mut().remove(http::header::HOST);
        } else {
            *req.version_mut() = Version::HTTP_11;
        }
        self.client.request(req).await.map_err(|e| self.classify(e))
    }

    fn classify(&self, err: hyper_util::client::legacy::Error) -> GatewayError {
        if err.is_connect() {
            GatewayError::new(
                ErrorKind::UpstreamConnect,
                Side::Upstream,
                format!("cannot connect to upstream {}", self.name),
            )
            .retryable()
            .with_source(err)
        } else {
            GatewayError::new(
                ErrorKind::UpstreamProtocol,
                Side::Upstream,
                format!("upstream {} failed before answering", self.name),
            )
            .with_source(err)
        }
    }
}

/// Boxes any `Bytes` body with a boxable error into an [`UpstreamBody`].
pub fn box_body<B>(body: B) -> UpstreamBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed_unsync()
}
