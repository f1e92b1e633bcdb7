//! `listener::guard`: drives one HTTP connection (hyper-util's auto connection, HTTP/1.1 or
//! h2c) under its listener's guards, in the accept phase's aftermath:
//!
//! - **first byte / idle**: a connection with no request in flight for `header_timeout` is
//!   closed — at once (the socket dropped) if it never sent a request (this covers the
//!   protocol sniff of the auto builder, which has no timeout of its own, and a stalled h2
//!   preface), gracefully otherwise (HTTP/1.1: closed when idle; h2: GOAWAY with the last
//!   stream id). HTTP/1.1's `header_read_timeout` bounds each later request head.
//! - **shed**: the registry cancels the connection's [`Slot::shed`] to make room at
//!   `max_connections`: graceful close, then dropped after `header_timeout` at the latest.
//! - **rapid reset**: a client that cancels more calls than its budget (see
//!   [`registry::RESET_BURST`](super::registry::RESET_BURST)) gets a graceful close (h2:
//!   GOAWAY, so no new stream is accepted), dropped after a second at the latest.
//! - **drain**: on `drain` (fired by the listener once it stopped listening, so a client told
//!   to reconnect is refused rather than queued on a socket about to close), graceful close.
//!   A connection that has not sent its first request yet gets [`DRAIN_FIRST_REQUEST`] (at
//!   most `header_timeout`) to do so — its client may have written it already, and has no way
//!   to know it was not read — and is then closed after that one answer (`Connection:
//!   close`). The listener bounds the whole wait by its drain timeout.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::registry::Slot;

/// During a drain, how long a connection that has not sent a request yet may take to send
/// its first (at most `header_timeout`).
pub(crate) const DRAIN_FIRST_REQUEST: Duration = Duration::from_secs(1);

/// Most time a connection told to go away for cancelling too many calls keeps its socket.
const CALM_CLOSE: Duration = Duration::from_secs(1);

/// How often a draining connection looks whether its first request arrived.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The client closed it, or a graceful close for a drain or an idle connection finished.
    Done,
    /// No request arrived within `header_timeout` of the connect (or of the drain): dropped.
    Silent,
    /// Shed at `max_connections` to make room.
    Shed,
    /// The client cancelled too many calls (rapid reset).
    RapidReset,
}

impl Closed {
    /// The `reason` label of a connection the gateway cut, if it did.
    pub(crate) fn cut_reason(self) -> Option<&'static str> {
        match self {
            Closed::Done => None,
            Closed::Silent => Some("timeout"),
            Closed::Shed => Some("shed"),
            Closed::RapidReset => Some("rapid_reset"),
        }
    }
}

/// Serves `conn` until it ends, applying the guards of the module docs; `close` starts its
/// graceful close (hyper's `graceful_shutdown`, passed in rather than named through a trait
/// bound, whose higher-ranked form a spawned future cannot prove). Its errors are logged at
/// debug (a client going away mid-request is routine).
pub(crate) async fn drive<C, E>(
    conn: C,
    close: impl Fn(Pin<&mut C>),
    slot: &Slot,
    header_timeout: Duration,
    drain: &CancellationToken,
    listener: &str,
) -> Closed
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = pin!(conn);
    // The three control signals are watched by a task of their own and arrive here as
    // events: polling their tokens (a mutex each) on every wake-up of a busy connection cost
    // more per request than the rest of the guard.
    let (mut control, _watch) = watch_controls(drain, slot);
    let check = sleep(header_timeout);
    let mut check = pin!(check);
    // Set once a graceful close began; for idle and shed, a deadline to drop the connection.
    let mut closing = false;
    let mut give_up: Option<Instant> = None;
    // Draining, the first request not in yet: close once it is, or drop at this instant.
    let mut first_by: Option<Instant> = None;
    // What the gateway's own close was for, reported when the connection ends.
    let mut why = Closed::Done;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(listener = %listener, error = %e, "connection ended with error");
                }
                return why;
            }
            Some(event) = control.recv() => match event {
            // A signal whose branch is closed is dropped: `closing` never turns back, and
            // `first_by` is set by the drain event alone, so it could not have fired later.
            Control::Drain if !closing && first_by.is_none() => {
                if slot.served() {
                    closing = true;
                    close(conn.as_mut());
                } else {
                    first_by = Some(Instant::now() + DRAIN_FIRST_REQUEST.min(header_timeout));
                    check.as_mut().reset(Instant::now());
                }
            }
            Control::Calm if !closing => {
                tracing::warn!(listener = %listener, "closing a connection that cancelled too many calls (rapid reset)");
                why = Closed::RapidReset;
                closing = true;
                close(conn.as_mut());
                let soon = Instant::now() + CALM_CLOSE.min(header_timeout);
                give_up = Some(soon);
                check.as_mut().reset(soon);
            }
            Control::Shed if !closing => {
                tracing::debug!(listener = %listener, "shedding an idle connection at max_connections");
                if !slot.served() {
                    return Closed::Shed;
                }
                why = Closed::Shed;
                closing = true;
                close(conn.as_mut());
                give_up = Some(Instant::now() + header_timeout);
                check.as_mut().reset(Instant::now() + header_timeout);
            }
            _ => {}
            },
            _ = check.as_mut() => {
                if give_up.is_some_and(|at| Instant::now() >= at) {
                    return why;
                }
                if let Some(by) = first_by.filter(|_| !closing) {
                    if slot.served() {
                        // In flight: HTTP/1.1 answers it with `Connection: close`, h2 sends
                        // GOAWAY after it.
                        closing = true;
                        close(conn.as_mut());
                    } else if Instant::now() >= by {
                        return Closed::Silent;
                    } else {
                        check.as_mut().reset(Instant::now() + DRAIN_POLL);
                    }
                    continue;
                }
                if closing {
                    // Draining: the listener's drain timeout bounds it.
                    check.as_mut().reset(Instant::now() + header_timeout);
                    continue;
                }
                match slot.idle_for() {
                    Some(idle) if idle >= header_timeout => {
                        if !slot.served() {
                            return Closed::Silent;
                        }
                        closing = true;
                        close(conn.as_mut());
                        give_up = Some(Instant::now() + header_timeout);
                        check.as_mut().reset(Instant::now() + header_timeout);
                    }
                    Some(idle) => check.as_mut().reset(Instant::now() + (header_timeout - idle)),
                    None => check.as_mut().reset(Instant::now() + header_timeout),
                }
            }
        }
    }
}

/// A control signal of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Drain,
    Calm,
    Shed,
}

/// Aborts the watcher task when the connection's guard ends.
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches `drain` and the slot's calm and shed tokens in a task of its own; each fires one
/// event, in the order they happen.
fn watch_controls(
    drain: &CancellationToken,
    slot: &Slot,
) -> (tokio::sync::mpsc::Receiver<Control>, Watcher) {
    let (tx, rx) = tokio::sync::mpsc::channel(3);
    let (drain, calm, shed) = (drain.clone(), slot.calm().clone(), slot.shed().clone());
    let task = tokio::spawn(async move {
        let mut pending = [true; 3];
        loop {
            let event = tokio::select! {
                _ = drain.cancelled(), if pending[0] => Control::Drain,
                _ = calm.cancelled(), if pending[1] => Control::Calm,
                _ = shed.cancelled(), if pending[2] => Control::Shed,
                else => return,
            };
            pending[event as usize] = false;
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    (rx, Watcher(task))
}
