//! gRPC-Web ⇄ gRPC, per the gRPC-Web protocol description (grpc/grpc `PROTOCOL-WEB.md`):
//!
//! - Content types `application/grpc-web`, `application/grpc-web+proto` (binary) and
//!   `application/grpc-web-text`, `application/grpc-web-text+proto` (base64 of the same bytes).
//!   Towards the upstream they become `application/grpc` / `application/grpc+proto` over h2
//!   with `te: trailers`.
//! - Messages keep gRPC's length-prefixed framing. Trailers have no HTTP/1.1 form here, so they
//!   travel in the body as a last frame: flag byte `0x80`, a 4-byte big-endian length, then
//!   `name: value\r\n` lines with lower-case names.
//! - `-text` bodies are base64 (standard alphabet, padded); senders may pad each chunk, so the
//!   decoder accepts `=` at any 4-character group boundary, and the encoder pads each frame.
//!
//! Both directions stream: nothing is buffered beyond an incomplete 4-character group.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use http_body::{Body, Frame, SizeHint};

use super::grpc::write_prefix;
use crate::error::BoxError;

/// A gRPC-Web request's flavour.
#[derive(Debug, Clone)]
pub struct WebMode {
    /// `-text`: bodies are base64 in both directions.
    pub text: bool,
    /// The caller's content type, echoed on the response.
    pub content_type: HeaderValue,
    /// What the upstream gets (`application/grpc` or `application/grpc+<codec>`).
    pub grpc_content_type: HeaderValue,
}

/// The request's gRPC-Web flavour, or `None` if it is not gRPC-Web.
pub fn mode(headers: &HeaderMap) -> Option<WebMode> {
    let ct = headers.get(header::CONTENT_TYPE)?;
    let raw = ct.to_str().ok()?;
    let base = raw.split(';').next().unwrap_or("").trim();
    let (text, codec) = if let Some(rest) = base.strip_prefix("application/grpc-web-text") {
        (true, rest)
    } else if let Some(rest) = base.strip_prefix("application/grpc-web") {
        (false, rest)
    } else {
        return None;
    };
    let grpc_content_type = match codec {
        "" => HeaderValue::from_static("application/grpc"),
        c if c.starts_with('+') && c.len() > 1 => {
            HeaderValue::from_str(&format!("application/grpc{c}")).ok()?
        }
        _ => return None,
    };
    Some(WebMode {
        text,
        content_type: ct.clone(),
        grpc_content_type,
    })
}

/// Rewrites a gRPC-Web request's headers for a gRPC upstream.
pub fn request_headers(headers: &mut HeaderMap, mode: &WebMode) {
    headers.insert(header::CONTENT_TYPE, mode.grpc_content_type.clone());
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if mode.text {
        // Decoding changes the length.
        headers.remove(header::CONTENT_LENGTH);
    }
    headers.remove("x-grpc-web");
    headers.remove("x-user-agent");
}

/// Rewrites a gRPC response's headers for a gRPC-Web caller.
pub fn response_headers(headers: &mut HeaderMap, mode: &WebMode) {
    headers.insert(header::CONTENT_TYPE, mode.content_type.clone());
    headers.remove(header::CONTENT_LENGTH);
}

/// Bit 7 of a frame's flag byte: the frame carries trailers, not a message.
const FLAG_TRAILERS: u8 = 0x80;

/// The trailer frame: `0x80`, length, `name: value\r\n` lines.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    // `name: value\r\n`: the name, the value and 4 bytes of punctuation a line.
    let len = trailers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut out = BytesMut::new();
    write_prefix(&mut out, FLAG_TRAILERS, len);
    for (name, value) in trailers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// Streaming base64 decoder for `-text` request bodies.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    pending: Vec<u8>,
}

impl Base64Decoder {
    /// Decodes what whole 4-character groups `chunk` completes; keeps the rest.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        self.pending
            .extend(chunk.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        // Padded groups may appear mid-stream (each chunk padded): decode group by group
        // runs, splitting after every group that ends in '='.
        let mut start = 0;
        let mut at = 0;
        while at < whole {
            let group_end = at + 4;
            if self.pending[at..group_end].contains(&b'=') || group_end == whole {
                STANDARD
                    .decode_vec(&self.pending[start..group_end], &mut out)
                    .map_err(|e| format!("grpc-web-text body is not base64: {e}"))?;
                start = group_end;
            }
            at = group_end;
        }
        self.pending.drain(..whole);
        Ok(Bytes::from(out))
    }

    /// Fails if the body ended inside a 4-character group.
    pub fn finish(&self) -> Result<(), String> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "grpc-web-text body ends with {} stray base64 characters",
                self.pending.len()
            ))
        }
    }
}

/// Why a caller's request body could not be decoded, shared by the request body that found
/// it and the response body that must answer it. The upstream only sees its request stream
/// reset; the caller must hear INVALID_ARGUMENT naming the fault, not the upstream's side of it.
pub type Fault = Arc<OnceLock<String>>;

pin_project_lite::pin_project! {
    /// A `-text` request body, decoded from base64 as it streams.
    pub struct DecodeText<B> {
        #[pin]
        inner: B,
        decoder: Base64Decoder,
        done: bool,
        fault: Fault,
    }
}

impl<B> DecodeText<B> {
    /// Wraps a base64 body; a decoding failure is also written to `fault`.
    pub fn new(inner: B, fault: Fault) -> Self {
        DecodeText {
            inner,
            decoder: Base64Decoder::default(),
            done: false,
            fault,
        }
    }
}

impl<B> Body for DecodeText<B>
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
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    *this.done = true;
                    return match this.decoder.finish() {
                        Ok(()) => Poll::Ready(None),
                        Err(e) => {
                            let _ = this.fault.set(e.clone());
                            Poll::Ready(Some(Err(e.into())))
                        }
                    };
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.decoder.push(&data) {
                        Ok(bytes) if bytes.is_empty() => continue,
                        Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        Err(e) => {
                            *this.done = true;
                            let _ = this.fault.set(e.clone());
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    },
                    // Request trailers have no gRPC-Web meaning; drop them.
                    Err(_) => continue,
                },
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body as gRPC-Web: data passes through (base64 per frame for `-text`)
    /// and the trailers become the final in-body frame.
    /// When the upstream body fails because the caller's request could not be decoded
    /// (`fault`), the answer ends with an INVALID_ARGUMENT trailer frame naming the fault.
    pub struct EncodeWeb<B> {
        #[pin]
        inner: B,
        text: bool,
        done: bool,
        fault: Fault,
    }
}

impl<B> EncodeWeb<B> {
    /// Wraps a gRPC response body.
    pub fn new(inner: B, text: bool, fault: Fault) -> Self {
        EncodeWeb {
            inner,
            text,
            done: false,
            fault,
        }
    }
}

/// The trailer frame of a caller's request fault: INVALID_ARGUMENT with the reason.
pub fn fault_trailers(why: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("3"));
    trailers.insert("grpc-message", super::grpc::encode_message(why));
    trailers
}

impl<B> Body for EncodeWeb<B>
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
        if *this.done {
            return Poll::Ready(None);
        }
        let text = *this.text;
        let encode = |b: Bytes| {
            if text {
                Bytes::from(STANDARD.encode(&b))
            } else {
                b
            }
        };
        match this.inner.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => match this.fault.get() {
                Some(why) => {
                    *this.done = true;
                    let frame = trailer_frame(&fault_trailers(why));
                    Poll::Ready(Some(Ok(Frame::data(encode(frame)))))
                }
                None => Poll::Ready(Some(Err(e.into()))),
            },
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(encode(data))))),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        *this.done = true;
                        Poll::Ready(Some(Ok(Frame::data(encode(trailer_frame(&trailers))))))
                    }
                    Err(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn headers(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    #[test]
    fn modes() {
        let cases: &[(&str, Option<(bool, &str)>)] = &[
            ("application/grpc-web", Some((false, "application/grpc"))),
            (
                "application/grpc-web+proto",
                Some((false, "application/grpc+proto")),
            ),
            (
                "application/grpc-web-text",
                Some((true, "application/grpc")),
            ),
            (
                "application/grpc-web-text+proto",
                Some((true, "application/grpc+proto")),
            ),
            (
                "application/grpc-web; charset=utf-8",
                Some((false, "application/grpc")),
            ),
            ("application/grpc", None),
            ("application/grpc-webx", None),
            ("application/json", None),
        ];
        for (ct, want) in cases {
            let got = mode(&headers(ct)).map(|m| (m.text, m.grpc_content_type));
            let want = want.map(|(t, c)| (t, HeaderValue::from_static(c)));
            assert_eq!(got, want, "{ct}");
        }
    }

    #[test]
    fn trailer_frame_bytes() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("grpc-message", HeaderValue::from_static("ok"));
        let f = trailer_frame(&t);
        let block = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
        assert_eq!(f[0], 0x80);
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            block.len()
        );
        assert_eq!(&f[5..], block);
    }

    #[test]
    fn base64_decoder_handles_split_and_padded_chunks() {
        let mut d = Base64Decoder::default();
        // "AAAAAAEq" = 00 00 00 00 01 2a; split mid-group, then a separately padded chunk.
        assert_eq!(&d.push(b"AAAA").unwrap()[..], &[0, 0, 0]);
        assert_eq!(&d.push(b"AA").unwrap()[..], &[] as &[u8]);
        assert_eq!(&d.push(b"Eq").unwrap()[..], &[0, 1, 0x2a]);
        assert_eq!(&d.push(b"/w==AQI=").unwrap()[..], &[0xff, 1, 2]);
        d.finish().unwrap();
        assert!(d.push(b"AB").is_ok());
        assert!(d.finish().unwrap_err().contains("2 stray"));
        let mut bad = Base64Decoder::default();
        assert!(bad.push(b"!!!!").is_err());
    }

    #[tokio::test]
    async fn response_body_gets_the_trailer_frame_and_text_encoding() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 1, 7]))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = EncodeWeb::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            false,
            Fault::default(),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let mut want = vec![0, 0, 0, 0, 1, 7];
        want.extend_from_slice(&trailer_frame(&trailers));
        assert_eq!(&bytes[..], &want[..]);

        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 1, 7]))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = EncodeWeb::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            true,
            Fault::default(),
        );
        let text = body.collect().await.unwrap().to_bytes();
        // Each frame is padded base64 of its own: decode group-wise.
        let mut d = Base64Decoder::default();
        assert_eq!(&d.push(&text).unwrap()[..], &want[..]);
    }

    #[tokio::test]
    async fn a_request_fault_ends_the_answer_with_invalid_argument() {
        let fault = Fault::default();
        let request = StreamBody::new(futures_util::stream::iter(vec![Ok::<_, BoxError>(
            Frame::data(Bytes::from_static(b"AAAA!!!!")),
        )]));
        let err = DecodeText::new(request, fault.clone())
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        let why = fault.get().unwrap().clone();
        assert!(why.starts_with("grpc-web-text body is not base64"), "{why}");

        // The upstream's body then fails (its stream was reset): the caller gets the fault.
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Err("stream reset".into())];
        let body = EncodeWeb::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            false,
            fault,
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], &trailer_frame(&fault_trailers(&why))[..]);
        let block = String::from_utf8(bytes[5..].to_vec()).unwrap();
        assert!(
            block.starts_with("grpc-status: 3\r\ngrpc-message: grpc-web-text body is not base64"),
            "{block}"
        );

        // Without a fault an upstream failure stays a failure.
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Err("stream reset".into())];
        let body = EncodeWeb::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            false,
            Fault::default(),
        );
        assert!(body.collect().await.is_err());
    }
}
