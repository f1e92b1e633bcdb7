//! The downstream's request body on its way upstream, its failures marked as the caller's: a
//! malformed chunked body surfaces at the upstream client as a send error, which without the
//! mark reads as the upstream failing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::GatewayError;

/// A downstream request body that failed to arrive (bad chunked framing, a reset, a cut).
#[derive(Debug, thiserror::Error)]
#[error("request body from the downstream failed: {0}")]
pub(crate) struct DownstreamBodyError(#[source] hyper::Error);

pin_project_lite::pin_project! {
    /// [`Incoming`] whose errors are [`DownstreamBodyError`]s.
    pub(crate) struct DownstreamBody {
        #[pin]
        inner: Incoming,
    }
}

impl DownstreamBody {
    /// Marks `inner`'s errors as the downstream's.
    pub(crate) fn new(inner: Incoming) -> Self {
        DownstreamBody { inner }
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = DownstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DownstreamBodyError>>> {
        self.project()
            .inner
            .poll_frame(cx)
            .map_err(DownstreamBodyError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The downstream body failure behind an upstream send error, if that is what it was.
pub(crate) fn body_failure(err: &GatewayError) -> Option<&DownstreamBodyError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> =
        err.source.as_deref().map(|e| e as _);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<DownstreamBodyError>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}
