//! Telling a downstream cancellation from a clean end of the request body.
//!
//! hyper's HTTP/2 server ends a request body with `None` both when the client sent END_STREAM
//! and when it reset the stream with CANCEL or NO_ERROR (hyperium/hyper#3681). Forwarded as
//! is, a cancelled client-streaming or bidi call would reach the upstream as a clean
//! half-close — the upstream would go on and answer a caller that is gone. hyper does drop the
//! call's future (or its response body) when the stream is reset; a [`DownstreamGuard`] held
//! there marks the call as gone, and [`CancelAware`] turns the `None` of a gone call into an
//! error, which makes the upstream client reset the upstream stream instead of ending it.
//!
//! Both are woken by the same RST_STREAM, in an order the scheduler picks; so on `None` the
//! body first yields to the scheduler a few times, letting hyper drop the guard, before it
//! believes the end is clean. That costs a few task polls once per HTTP/2 request body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::upstream::http::BoxError;

/// Times [`CancelAware`] yields to the scheduler on `None` before passing the end on.
const YIELDS_BEFORE_END: u8 = 4;

/// Marks its call as gone when dropped while armed: hyper dropped the call (its future or
/// its response body) before it finished.
#[derive(Debug)]
pub(crate) struct DownstreamGuard {
    gone: Arc<AtomicBool>,
    armed: bool,
}

impl DownstreamGuard {
    /// A guard and the flag it sets.
    pub(crate) fn new() -> (DownstreamGuard, Arc<AtomicBool>) {
        let gone = Arc::new(AtomicBool::new(false));
        let guard = DownstreamGuard {
            gone: gone.clone(),
            armed: true,
        };
        (guard, gone)
    }

    /// The call finished normally; dropping the guard no longer means cancellation.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for DownstreamGuard {
    fn drop(&mut self) {
        if self.armed {
            self.gone.store(true, Ordering::Release);
        }
    }
}

/// The error a cancelled downstream's request body ends with.
#[derive(Debug)]
pub(crate) struct DownstreamCancelled;

impl std::fmt::Display for DownstreamCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the downstream cancelled the call")
    }
}

impl std::error::Error for DownstreamCancelled {}

pin_project_lite::pin_project! {
    /// A request body that ends with [`DownstreamCancelled`] instead of `None` when its call
    /// was cancelled by the downstream.
    pub(crate) struct CancelAware<B> {
        #[pin]
        inner: B,
        gone: Arc<AtomicBool>,
        yields: u8,
    }
}

impl<B> CancelAware<B> {
    pub(crate) fn new(inner: B, gone: Arc<AtomicBool>) -> Self {
        CancelAware {
            inner,
            gone,
            yields: 0,
        }
    }
}

impl<B> Body for CancelAware<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.gone.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(DownstreamCancelled))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(None) => {
                if *this.yields < YIELDS_BEFORE_END {
                    *this.yields += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if this.gone.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(Box::new(DownstreamCancelled))))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    type Frames = std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>;

    fn frames(n: usize) -> StreamBody<futures_util::stream::Iter<Frames>> {
        let items: Vec<_> = (0..n)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; 3]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn clean_end_passes_through_with_every_frame() {
        let (mut guard, gone) = DownstreamGuard::new();
        let body = CancelAware::new(frames(3), gone);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], &[0, 0, 0, 1, 1, 1, 2, 2, 2]);
        guard.disarm();
    }

    #[tokio::test]
    async fn a_guard_dropped_before_the_end_turns_the_end_into_an_error() {
        let (guard, gone) = DownstreamGuard::new();
        let mut body = CancelAware::new(frames(1), gone);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(&[0, 0, 0]));
        drop(guard); // hyper dropped the call: the stream was reset
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<DownstreamCancelled>(), "{err}");
    }

    #[tokio::test]
    async fn a_gone_call_errors_before_its_next_frame() {
        let (guard, gone) = DownstreamGuard::new();
        let body = CancelAware::new(Full::new(Bytes::from_static(b"x")), gone);
        drop(guard);
        let err = body.collect().await.unwrap_err();
        assert!(err.is::<DownstreamCancelled>(), "{err}");
    }

    #[test]
    fn the_end_is_held_back_long_enough_to_see_a_late_cancellation() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let (guard, gone) = DownstreamGuard::new();
        let mut body = std::pin::pin!(CancelAware::new(frames(0), gone));
        // The inner body has ended, but the guard is still there: the end is held back.
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        drop(guard); // hyper drops the call on its turn
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Err(e))) => assert!(e.is::<DownstreamCancelled>(), "{e}"),
            other => panic!("expected the cancellation, got {other:?}"),
        }
        // Without a cancellation the end comes after the yields.
        let (mut guard, gone) = DownstreamGuard::new();
        let mut body = std::pin::pin!(CancelAware::new(frames(0), gone));
        for _ in 0..YIELDS_BEFORE_END {
            assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        }
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        guard.disarm();
    }

    #[test]
    fn a_disarmed_guard_marks_nothing() {
        let (mut guard, gone) = DownstreamGuard::new();
        guard.disarm();
        drop(guard);
        assert!(!gone.load(Ordering::Acquire));
        let (guard, gone) = DownstreamGuard::new();
        drop(guard);
        assert!(gone.load(Ordering::Acquire));
    }

    #[test]
    fn end_of_stream_and_size_are_the_inner_body_s() {
        let (_guard, gone) = DownstreamGuard::new();
        let body = CancelAware::new(Full::new(Bytes::from_static(b"abcd")), gone);
        assert_eq!(body.size_hint().exact(), Some(4));
        assert!(!body.is_end_stream());
    }
}
