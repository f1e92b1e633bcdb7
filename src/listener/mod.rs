//! `listener`: accept loops per protocol, connection limits, timeouts, drain.
//!
//! Listeners accept and decode; they do not orchestrate: each call goes through the
//! [`pipeline`](crate::pipeline) with the listener's adapter.
//!
//! - [`http`]: HTTP/1.1 and h2c (prior knowledge) on one port: plain HTTP, gRPC, gRPC-Web and
//!   the JSON → gRPC bridge.
//! - [`thrift`]: Apache Thrift, the transport detected per connection, replies in the client's
//!   own dialect.
//! - `registry`: the open connections of a listener against `max_connections`; at the cap
//!   the oldest idle one is shed, so silent sockets cannot lock a listener out.
//! - `guard`: one HTTP connection under its timeouts (first byte, idle), shedding, the
//!   rapid-reset budget and the drain.
//! - `linger`: the lingering close of HTTP sockets (no RST that would discard an answer).
//!
//! Drain order on shutdown: stop accepting, serve what the kernel already queued, close the
//! listening socket, then close connections gracefully (a client told to reconnect is then
//! refused, never queued on a socket about to close).

pub mod http;
pub mod thrift;

pub use self::http::{HttpRoute, HttpStage, serve_http};
pub use self::thrift::{ThriftBounds, ThriftRoute, ThriftStage, serve_thrift};

pub(crate) mod guard;
mod linger;
pub(crate) mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use self::registry::{Registry, Slot};

/// The next connection of an accept loop, with its [`Slot`] in the listener's registry
/// (counted against `max_connections`; at the cap an idle connection is shed to make room,
/// see [`registry`]) and `TCP_NODELAY` set; `None` once `shutdown` fires. Accept errors
/// (EMFILE and the like) are transient: logged, then retried after a short back-off.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    registry: &Arc<Registry>,
    shutdown: &CancellationToken,
    name: &str,
) -> Option<(Slot, TcpStream, SocketAddr)> {
    let (stream, remote) = loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => break accepted,
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };
    // Registered after the accept: a connection that waits for a place is held here (the
    // accept loop pauses, later ones wait in the backlog) while an idle one is shed.
    let slot = registry.register(shutdown).await?;
    let _ = stream.set_nodelay(true);
    Some((slot, stream, remote))
}

/// The connections the kernel already completed (queued in the backlog) when an accept loop
/// stopped, each with a slot if one is free at once. Served rather than reset when the
/// listening socket closes: their clients may have written a request already.
pub(crate) fn accept_queued(
    listener: &TcpListener,
    registry: &Arc<Registry>,
) -> Vec<(Slot, TcpStream, SocketAddr)> {
    use futures_util::FutureExt;
    let mut queued = Vec::new();
    while let Some(Ok((stream, remote))) = listener.accept().now_or_never() {
        let Some(slot) = registry.try_register() else {
            break;
        };
        let _ = stream.set_nodelay(true);
        queued.push((slot, stream, remote));
    }
    queued
}
