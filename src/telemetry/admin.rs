//! The admin endpoint: `GET /metrics` (OpenMetrics text, scraped by Prometheus), `/healthz`
//! (the process is up) and `/readyz` (listeners bound and not draining).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::listener::accept_next;
use crate::listener::guard::drive;
use crate::listener::http::connection_builder;
use crate::listener::registry::Registry;

/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most admin connections at once (scrapers and probes); at the cap the oldest idle one is
/// shed.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Most time an admin connection may go without a request in flight (first byte, request
/// head, idle keep-alive).
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin endpoint on `listener` until `shutdown` fires, each connection under the
/// same guards as a gateway listener (see `listener::guard`): [`ADMIN_HEADER_TIMEOUT`] and
/// [`ADMIN_MAX_CONNECTIONS`].
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    serve_with(
        listener,
        metrics,
        ready,
        shutdown,
        ADMIN_HEADER_TIMEOUT,
        ADMIN_MAX_CONNECTIONS,
    )
    .await;
}

/// [`serve`] with the limits given (tests use short ones).
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    header_timeout: Duration,
    max_connections: usize,
) {
    let registry = Registry::new(max_connections);
    let builder = connection_builder(header_timeout);
    while let Some((slot, stream, _)) = accept_next(&listener, &registry, &shutdown, "admin").await
    {
        let metrics = metrics.clone();
        let ready = ready.clone();
        let slot = Arc::new(slot);
        let service_slot = slot.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = service_slot.busy();
            let response = answer(&req, &metrics, &ready);
            busy.finish();
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let token = shutdown.clone();
        tokio::spawn(async move {
            drive(
                conn,
                |c| c.graceful_shutdown(),
                &slot,
                header_timeout,
                &token,
                "admin",
            )
            .await;
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"GET only\n"),
        );
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, OPENMETRICS, Bytes::from(metrics.render())),
        "/healthz" => text(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" if ready.load(Ordering::SeqCst) => {
            text(StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n"))
        }
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"not ready\n"),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    }
}
