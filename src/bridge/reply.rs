//! A gRPC reply body, read as events: each length-prefixed message (inflated when the
//! upstream compressed it with `grpc-encoding: gzip`), then the final status from the
//! trailers. Bounded: a message longer than the limit is an error as soon as its length
//! prefix arrives, so at most one message (plus one body chunk) is ever buffered.

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;

use crate::codec::grpc;
use crate::error::{ErrorKind, GatewayError, Side};

/// The final status of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStatus {
    /// The `grpc-status` code.
    pub code: u32,
    /// The decoded `grpc-message` (may be empty).
    pub message: String,
}

impl GrpcStatus {
    /// The status a header block (trailers, or the headers of a trailers-only reply) carries.
    pub fn of(headers: &HeaderMap) -> Option<GrpcStatus> {
        Some(GrpcStatus {
            code: grpc::status_of(headers)?,
            message: headers
                .get("grpc-message")
                .map(|v| grpc::decode_message(v.as_bytes()))
                .unwrap_or_default(),
        })
    }
}

/// What the reply body yields next.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyEvent {
    /// One message, protobuf bytes.
    Message(Bytes),
    /// The body ended; the status from the trailers, `None` if there were none.
    End(Option<GrpcStatus>),
}

/// Reads a gRPC reply body as [`ReplyEvent`]s.
#[derive(Debug)]
pub struct ReplyDecoder<B> {
    inner: B,
    buf: BytesMut,
    gzip: bool,
    max: usize,
    status: Option<GrpcStatus>,
    ended: bool,
}

impl<B> ReplyDecoder<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Reads `inner`; `headers` are the reply's headers (for `grpc-encoding`), `max` the
    /// largest message accepted.
    pub fn new(inner: B, headers: &HeaderMap, max: usize) -> Self {
        let gzip = headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        ReplyDecoder {
            inner,
            buf: BytesMut::new(),
            gzip,
            max,
            status: None,
            ended: false,
        }
    }

    /// The body being read.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The next event. After [`ReplyEvent::End`] it yields `End` again.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReplyEvent, GatewayError>> {
        loop {
            match grpc::decode_frame(&mut self.buf, self.max) {
                Ok(Some((false, message))) => return Poll::Ready(Ok(ReplyEvent::Message(message))),
                Ok(Some((true, packed))) if self.gzip => {
                    return Poll::Ready(
                        grpc::inflate_gzip(&packed, self.max)
                            .map(ReplyEvent::Message)
                            .map_err(|e| protocol(e.to_string())),
                    );
                }
                Ok(Some((true, _))) => {
                    return Poll::Ready(Err(protocol(
                        "gRPC reply message is compressed with an encoding other than gzip".into(),
                    )));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(protocol(format!("reply: {e}")))),
            }
            if self.ended {
                if !self.buf.is_empty() {
                    let left = self.buf.len();
                    self.buf.clear();
                    return Poll::Ready(Err(protocol(format!(
                        "reply ended inside a message ({left} bytes of it arrived)"
                    ))));
                }
                return Poll::Ready(Ok(ReplyEvent::End(self.status.clone())));
            }
            match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    self.buf.clear();
                    return Poll::Ready(Err(protocol(format!("reply body failed: {e}"))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            self.status = GrpcStatus::of(trailers);
                        }
                    }
                },
            }
        }
    }
}

fn protocol(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::UpstreamProtocol, Side::Upstream, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    type Frames = Vec<Result<Frame<Bytes>, Infallible>>;

    type TestBody = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn decoder(frames: Frames, headers: &HeaderMap, max: usize) -> ReplyDecoder<TestBody> {
        ReplyDecoder::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            headers,
            max,
        )
    }

    fn events<B>(mut d: ReplyDecoder<B>) -> Vec<Result<ReplyEvent, String>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        loop {
            match d.poll_event(&mut cx) {
                Poll::Ready(Ok(ReplyEvent::End(s))) => {
                    out.push(Ok(ReplyEvent::End(s)));
                    return out;
                }
                Poll::Ready(Ok(e)) => out.push(Ok(e)),
                Poll::Ready(Err(e)) => {
                    out.push(Err(e.message.to_string()));
                    return out;
                }
                Poll::Pending => panic!("iterator bodies are never pending"),
            }
        }
    }

    fn trailers(code: &str, message: &str) -> Frame<Bytes> {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        t.insert("grpc-message", message.parse().unwrap());
        Frame::trailers(t)
    }

    #[test]
    fn messages_split_across_chunks_then_status() {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02a"))),
            Ok(Frame::data(Bytes::from_static(b"b\0\0\0\0\x01c"))),
            Ok(trailers("5", "no%20such")),
        ];
        assert_eq!(
            events(decoder(frames, &HeaderMap::new(), 16)),
            vec![
                Ok(ReplyEvent::Message(Bytes::from_static(b"ab"))),
                Ok(ReplyEvent::Message(Bytes::from_static(b"c"))),
                Ok(ReplyEvent::End(Some(GrpcStatus {
                    code: 5,
                    message: "no such".into()
                }))),
            ]
        );
    }

    #[test]
    fn limits_truncation_and_compression() {
        let big: Frames = vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x11")))];
        assert_eq!(
            events(decoder(big, &HeaderMap::new(), 16)),
            vec![Err(
                "reply: gRPC message of 17 bytes exceeds the maximum message size 16".into()
            )]
        );
        let cut: Frames = vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x03ab")))];
        assert_eq!(
            events(decoder(cut, &HeaderMap::new(), 16)),
            vec![Err(
                "reply ended inside a message (7 bytes of it arrived)".into()
            )]
        );
        let packed: Frames = vec![Ok(Frame::data(Bytes::from_static(b"\x01\0\0\0\x01x")))];
        assert_eq!(
            events(decoder(packed, &HeaderMap::new(), 16)),
            vec![Err(
                "gRPC reply message is compressed with an encoding other than gzip".into()
            )]
        );
    }

    #[test]
    fn gzip_messages_are_inflated() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello").unwrap();
        let packed = gz.finish().unwrap();
        let mut wire = BytesMut::new();
        grpc::write_prefix(&mut wire, grpc::FLAG_COMPRESSED, packed.len());
        wire.extend_from_slice(&packed);
        let mut headers = HeaderMap::new();
        headers.insert("grpc-encoding", "gzip".parse().unwrap());
        let frames: Frames = vec![Ok(Frame::data(wire.freeze())), Ok(trailers("0", ""))];
        assert_eq!(
            events(decoder(frames, &headers, 64)),
            vec![
                Ok(ReplyEvent::Message(Bytes::from_static(b"hello"))),
                Ok(ReplyEvent::End(Some(GrpcStatus {
                    code: 0,
                    message: String::new()
                }))),
            ]
        );
    }
}
