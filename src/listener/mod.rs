//! `listener`: accept loops per protocol, connection limits, timeouts, drain.
//!
//! Listeners accept and decode; they do not orchestrate: each call goes through the
//! [`pipeline`](crate::pipeline) with the listener's adapter.
//!
//! - [`http`]: HTTP/1.1 and h2c (prior knowledge) on one port: plain HTTP, gRPC, gRPC-Web and
//!   the JSON → gRPC bridge.
//! - [`thrift`]: Apache Thrift, the transport detected per connection, replies in the client's
//!   own dialect.

pub mod http;
pub mod thrift;

pub use self::http::{HttpRoute, HttpStage, serve_http};
pub use self::thrift::{ThriftRoute, ThriftStage, serve_thrift};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The next connection of an accept loop, with the permit that counts it against
/// `max_connections` (waited for before accepting) and `TCP_NODELAY` set; `None` once
/// `shutdown` fires. Accept errors (EMFILE and the like) are transient: logged, then retried
/// after a short back-off.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    name: &str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        permit = permits.clone().acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((permit, stream, remote));
                }
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
