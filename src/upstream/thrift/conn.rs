//! One multiplexed connection to a Thrift upstream endpoint: a writer task that sends calls, a
//! reader task that routes each reply to its caller by seqid, and the calls waiting.
//!
//! A connection that fails (a reply that cannot be read, a frame over the limit, a reset, EOF,
//! a failed write) is retired at once: it is marked dead first, so the pool dials a fresh one
//! for the next call; then every waiting call fails with the cause; then both tasks stop,
//! which closes the socket. Registering a waiter and retiring take the same lock, so no call
//! can start waiting on a connection that has already been drained.

use std::collections::HashMap;
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::ThriftReply;
use crate::codec::thrift::Dialect;
use crate::codec::thrift::frame::{DecodeError, Frame, ThriftDecoder};
use crate::codec::thrift::message::{MessageType, peek_message};
use crate::io::write_all_vectored;

/// A reply, or the cause the connection died before it came.
type Outcome = Result<ThriftReply, String>;

/// Calls queued for the writer before callers wait to queue theirs.
const WRITE_QUEUE: usize = 256;

/// One connection, as the pool holds it.
#[derive(Debug)]
pub(super) struct Conn {
    /// Calls to write, each as parts written vectored.
    pub(super) tx: mpsc::Sender<Vec<Bytes>>,
    /// Waiters and the dead flag, shared with the reader and the writer.
    pub(super) link: Arc<Link>,
    /// The next upstream seqid.
    pub(super) next_seq: AtomicI32,
}

impl Conn {
    /// Whether new calls may use this connection.
    pub(super) fn is_open(&self) -> bool {
        !self.link.dead.is_cancelled() && !self.tx.is_closed()
    }
}

/// The calls waiting for a reply and, once the connection has died, why.
#[derive(Debug, Default)]
struct Pending {
    waiters: HashMap<i32, oneshot::Sender<Outcome>>,
    cause: Option<String>,
}

/// What the reader, the writer and the pool share about one connection.
#[derive(Debug, Default)]
pub(super) struct Link {
    pending: Mutex<Pending>,
    /// Cancelled when the connection is retired: the pool stops handing it out and both
    /// tasks stop.
    dead: CancellationToken,
}

impl Link {
    /// Registers a waiter for the reply to `seq_id`; fails with the cause if the connection
    /// has died.
    pub(super) fn wait_for(self: &Arc<Self>, seq_id: i32) -> Result<Waiter, String> {
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        if let Some(cause) = &pending.cause {
            return Err(cause.clone());
        }
        pending.waiters.insert(seq_id, tx);
        Ok(Waiter {
            link: self.clone(),
            seq_id,
            rx,
        })
    }

    /// Why the connection died, if it has.
    pub(super) fn cause(&self) -> Option<String> {
        lock(&self.pending).cause.clone()
    }

    fn take(&self, seq_id: i32) -> Option<oneshot::Sender<Outcome>> {
        lock(&self.pending).waiters.remove(&seq_id)
    }

    /// Marks the connection dead, then fails every waiting call with `cause`. The first cause
    /// wins; retiring again does nothing.
    fn retire(&self, cause: String) {
        let waiters = {
            let mut pending = lock(&self.pending);
            if pending.cause.is_some() {
                return;
            }
            // Dead before the drain: from here on the pool dials afresh and `wait_for` refuses.
            self.dead.cancel();
            pending.cause = Some(cause.clone());
            std::mem::take(&mut pending.waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(cause.clone()));
        }
    }
}

/// A call's claim on its reply. Dropping it (the caller timed out or gave up) removes the
/// waiter, so a late reply is discarded.
#[derive(Debug)]
pub(super) struct Waiter {
    link: Arc<Link>,
    seq_id: i32,
    rx: oneshot::Receiver<Outcome>,
}

impl Waiter {
    /// The reply, or the cause the connection died before it came.
    pub(super) async fn reply(&mut self) -> Outcome {
        match (&mut self.rx).await {
            Ok(outcome) => outcome,
            // Every waiter is answered or drained before its sender goes; this is a backstop.
            Err(_) => Err("connection closed before the reply".to_owned()),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.link.take(self.seq_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map only means another task panicked mid-insert; the map itself is fine.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the writer and reader tasks of a connected stream.
pub(super) fn spawn(stream: TcpStream, dialect: Dialect, max_frame: u32) -> Conn {
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let link = Arc::new(Link::default());
    tokio::spawn(write_calls(write, rx, link.clone()));
    let frames = FramedRead::new(read, ThriftDecoder::for_dialect(dialect, max_frame));
    tokio::spawn(read_replies(frames, link.clone()));
    Conn {
        tx,
        link,
        next_seq: AtomicI32::new(1),
    }
}

/// The writer task. Ends when the connection dies, a write fails, or the pool lets go of the
/// connection (every sender dropped, so no call is in flight); ending retires it. Dropping the
/// write half here and the read half in the reader closes the socket.
async fn write_calls(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    link: Arc<Link>,
) {
    let cause = tokio::select! {
        _ = link.dead.cancelled() => return,
        cause = write_until_failure(&mut write, &mut rx) => cause,
    };
    link.retire(cause);
}

async fn write_until_failure(
    write: &mut OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Vec<Bytes>>,
) -> String {
    while let Some(mut parts) = rx.recv().await {
        if let Err(e) = write_all_vectored(write, &mut parts).await {
            return format!("writing a call failed: {e}");
        }
    }
    "connection released by the gateway".to_owned()
}

/// The reader task: routes replies until one cannot be read or the connection dies, then
/// retires the connection with the cause.
async fn read_replies(mut frames: FramedRead<OwnedReadHalf, ThriftDecoder>, link: Arc<Link>) {
    let cause = tokio::select! {
        _ = link.dead.cancelled() => return,
        cause = read_until_failure(&mut frames, &link) => cause,
    };
    link.retire(cause);
}

/// Delivers replies to their waiters; returns why the stream cannot be read further.
async fn read_until_failure(
    frames: &mut FramedRead<OwnedReadHalf, ThriftDecoder>,
    link: &Link,
) -> String {
    loop {
        match frames.next().await {
            Some(Ok(frame)) => {
                if let Err(cause) = deliver(frame, link) {
                    return cause;
                }
            }
            Some(Err(DecodeError::Io(e))) => return format!("connection lost: {e}"),
            // Framing is lost (e.g. a LENGTH over max_frame_size): the stream cannot be
            // resynchronised without reading the bytes, so every call on it fails.
            Some(Err(e)) => return format!("bad reply: {e}"),
            None => return "connection closed by the upstream".to_owned(),
        }
    }
}

/// Hands one reply to the call waiting for its seqid. A reply nobody waits for (the caller
/// timed out) is dropped; a frame that is not a reply ends the connection.
fn deliver(frame: Frame, link: &Link) -> Result<(), String> {
    let (protocol, message, info) = match frame {
        Frame::Header(h) => (h.protocol, h.payload, h.info),
        Frame::Framed { protocol, message } | Frame::Unframed { protocol, message } => {
            (protocol, message, Vec::new())
        }
        Frame::Invalid { error, .. } => return Err(format!("bad reply frame: {error}")),
    };
    let header = match peek_message(&message, protocol) {
        Ok(Some(h)) => h,
        Ok(None) => return Err("reply message is truncated".into()),
        Err(e) => return Err(format!("bad reply message: {e}")),
    };
    let (seq_id, kind, body) = (header.seq_id, header.kind, header.body_offset);
    if !matches!(kind, MessageType::Reply | MessageType::Exception) {
        return Err("upstream sent a message that is not a reply".into());
    }
    let reply = ThriftReply {
        kind,
        protocol,
        args: message.slice(body..),
        info,
    };
    if let Some(waiter) = link.take(seq_id) {
        let _ = waiter.send(Ok(reply));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retiring_fails_the_waiting_and_refuses_the_late() {
        let link = Arc::new(Link::default());
        let mut early = link.wait_for(1).unwrap();
        link.retire("bad reply: first".to_owned());
        link.retire("connection closed by the upstream".to_owned());
        assert!(link.dead.is_cancelled());
        assert_eq!(early.reply().await.unwrap_err(), "bad reply: first");
        // A call that registers after the drain is refused with the cause, never left waiting.
        assert_eq!(link.wait_for(2).unwrap_err(), "bad reply: first");
        assert_eq!(link.cause().as_deref(), Some("bad reply: first"));
    }

    #[tokio::test]
    async fn a_dropped_waiter_is_removed() {
        let link = Arc::new(Link::default());
        let waiter = link.wait_for(7).unwrap();
        drop(waiter);
        assert!(link.take(7).is_none());
        assert!(!link.dead.is_cancelled());
    }
}
