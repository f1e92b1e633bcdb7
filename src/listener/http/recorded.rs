//! The upstream's response body on its way downstream: streamed through, the call recorded
//! when it ends (or is dropped).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::call::{Code, Outcome};
use crate::codec::{grpc, grpc_web};
use crate::error::{BoxError, ErrorKind, GatewayError, Side};
use crate::pipeline::Recorded;

pin_project_lite::pin_project! {
    /// The upstream's response body, streamed through; the call is recorded when it ends (or
    /// is dropped), with the gRPC status from the trailers and the bytes sent.
    pub(crate) struct RecordedBody {
        #[pin]
        inner: Incoming,
        call: Option<Recorded>,
        fault: Option<grpc_web::Fault>,
        hold: bool,
    }
}

impl RecordedBody {
    /// Streams `inner` for `call`; `fault` is the caller's gRPC-Web text fault, and `hold`
    /// leaves ending the call to a bridge reading the body.
    pub(super) fn new(
        inner: Incoming,
        call: Recorded,
        fault: Option<grpc_web::Fault>,
        hold: bool,
    ) -> Self {
        RecordedBody {
            inner,
            call: Some(call),
            fault,
            hold,
        }
    }

    /// The call, until the body ended.
    pub(crate) fn call_mut(&mut self) -> Option<&mut Recorded> {
        self.call.as_mut()
    }

    /// Ends the call: a caller's undecodable request body (gRPC-Web text) outranks whatever
    /// the upstream answered.
    fn finish(call: &mut Option<Recorded>, fault: Option<&grpc_web::Fault>, hold: bool) {
        if let (Some(c), Some(why)) = (call.as_mut(), fault.and_then(|f| f.get())) {
            c.recorder().metrics.decode_error("grpc-web", "bad_base64");
            let err = GatewayError::new(ErrorKind::BadRequest, Side::Downstream, why.clone());
            c.failed(&err, Code::Grpc(err.kind.grpc_code()));
        }
        if !hold {
            call.take();
        }
    }
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                if let Some(c) = this.call.as_mut() {
                    c.outcome = Outcome::Broken {
                        code: c.outcome.code(),
                        message: format!("upstream body failed: {e}").into(),
                    };
                }
                RecordedBody::finish(this.call, this.fault.as_ref(), *this.hold);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                // A gRPC answer that ended without a status: UNKNOWN, as gRPC clients see it.
                if let Some(c) = this.call.as_mut()
                    && c.outcome == Outcome::Pending
                {
                    c.outcome = Outcome::Answered {
                        code: Code::Grpc(2),
                    };
                }
                RecordedBody::finish(this.call, this.fault.as_ref(), *this.hold);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(c) = this.call.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        c.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref()
                        && c.protocol.speaks_grpc()
                    {
                        let status = grpc::status_of(trailers).unwrap_or(2);
                        c.outcome = Outcome::Answered {
                            code: Code::Grpc(status),
                        };
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
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
