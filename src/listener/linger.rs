//! `listener::linger`: a downstream socket that, once its HTTP connection is done with it,
//! closes its write side (FIN) and reads off what the client still sends for a moment before
//! the socket is really closed (a "lingering close", as nginx and Apache do).
//!
//! Closing a socket with unread bytes makes the kernel send RST, and the client's kernel then
//! discards a response it received but its application had not read yet. During a drain
//! that loses answers: an h2 stream answered just before the GOAWAY close, racing the
//! client's PING ack or WINDOW_UPDATE.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

/// Most time a closed connection's socket keeps reading off what the client sends.
const LINGER: Duration = Duration::from_secs(1);

/// A [`TcpStream`] closed with a lingering close when dropped, on a task of the listener's
/// tracker (so a drain, and the process exit after it, waits for it).
#[derive(Debug)]
pub(crate) struct Lingering {
    stream: Option<TcpStream>,
    tracker: TaskTracker,
}

impl Lingering {
    /// Wraps an accepted stream; its close runs on `tracker`.
    pub(crate) fn new(stream: TcpStream, tracker: TaskTracker) -> Self {
        Lingering {
            stream: Some(stream),
            tracker,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.stream.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")),
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.tracker.spawn(async move {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Unread bytes at close: the client still gets everything written before it (a FIN,
    /// not an RST that would discard it).
    #[tokio::test]
    async fn a_close_with_unread_bytes_keeps_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let tracker = TaskTracker::new();
        let mut server = Lingering::new(server, tracker.clone());
        client.write_all(b"unread by the server").await.unwrap();
        server.write_all(b"the answer").await.unwrap();
        // Let the client's bytes arrive before the close.
        let ready = tokio::time::timeout(
            Duration::from_secs(5),
            server.stream.as_ref().unwrap().readable(),
        );
        ready.await.unwrap().unwrap();
        drop(server);
        assert_eq!(tracker.len(), 1, "the close runs on the tracker");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"the answer");
    }
}
