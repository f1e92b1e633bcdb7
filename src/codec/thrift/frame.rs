//! Per-connection framing: detect the client type from the first bytes, then cut the stream
//! into frames (THeader, framed) or whole messages (unframed). A tokio-util `Decoder`.
//!
//! Errors that keep the stream's framing intact (an unknown transform, a bad info header, an
//! unreadable message header) become [`Frame::Invalid`], so the listener answers that one call
//! with a `TApplicationException` and the connection carries on. Errors that lose the framing
//! (unknown transport, a frame over the limit) end the connection.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::detect::detect;
use super::dialect::{Dialect, Transport};
use super::header::{self, HeaderFrame};
use super::message::ProtocolId;
use super::walk::message_len;
use super::{ThriftError, varint};

/// Most the decoder reserves ahead of the bytes buffered while a frame is still arriving. A
/// peer that announces a large LENGTH and sends little gets a buffer sized by what it sent.
const RESERVE_AHEAD: usize = 64 * 1024;

/// One unit of a Thrift stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A THeader frame.
    Header(HeaderFrame),
    /// A framed message (the 4-byte length removed).
    Framed {
        /// Binary or compact.
        protocol: ProtocolId,
        /// The message.
        message: Bytes,
    },
    /// An unframed message, cut at its end by walking it.
    Unframed {
        /// Binary or compact.
        protocol: ProtocolId,
        /// The message.
        message: Bytes,
    },
    /// A whole THeader frame that could not be decoded; answer it and go on.
    Invalid {
        /// Header flags and seq id, to echo in the error reply.
        flags: u16,
        /// THeader seq id.
        seq_id: u32,
        /// The payload protocol, if the header got that far (else binary).
        protocol: ProtocolId,
        /// What was wrong.
        error: ThriftError,
    },
}

/// A decode failure that ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Invalid bytes with no way to find the next frame.
    #[error(transparent)]
    Thrift(#[from] ThriftError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The server-side decoder of one downstream connection.
#[derive(Debug, Clone)]
pub struct ThriftDecoder {
    dialect: Option<Dialect>,
    max_frame: u32,
}

impl ThriftDecoder {
    /// A decoder that detects the client's dialect from the first bytes.
    pub fn new(max_frame: u32) -> Self {
        ThriftDecoder {
            dialect: None,
            max_frame,
        }
    }

    /// A decoder for a known dialect (upstream replies).
    pub fn for_dialect(dialect: Dialect, max_frame: u32) -> Self {
        ThriftDecoder {
            dialect: Some(dialect),
            max_frame,
        }
    }

    /// The detected dialect, once known.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }
}

impl Decoder for ThriftDecoder {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let dialect = match self.dialect {
            Some(d) => d,
            None => match detect(src)? {
                Some(d) => {
                    self.dialect = Some(d);
                    d
                }
                None => return Ok(None),
            },
        };
        let protocol = dialect.protocol;
        match dialect.transport {
            Transport::Header | Transport::Framed => {
                let Some(total) = header::frame_len(src, self.max_frame)? else {
                    return Ok(None);
                };
                if src.len() < total {
                    // Grow with the bytes that arrive, not to the LENGTH the peer announced.
                    src.reserve((total - src.len()).min(RESERVE_AHEAD));
                    return Ok(None);
                }
                let frame = src.split_to(total).freeze();
                Ok(Some(match dialect.transport {
                    Transport::Header => decode_header(frame, self.max_frame),
                    _ => Frame::Framed {
                        protocol,
                        message: frame.slice(4..),
                    },
                }))
            }
            Transport::Unframed => match message_len(src, protocol)? {
                Some(n) => Ok(Some(Frame::Unframed {
                    protocol,
                    message: src.split_to(n).freeze(),
                })),
                None if src.len() > self.max_frame as usize => Err(ThriftError::FrameTooLarge {
                    size: src.len() as u64,
                    max: u64::from(self.max_frame),
                }
                .into()),
                None => Ok(None),
            },
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.has_remaining() => {
                let n = buf.len();
                buf.clear();
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed inside a Thrift frame ({n} bytes left)"),
                )
                .into())
            }
            None => Ok(None),
        }
    }
}

fn decode_header(frame: Bytes, max_frame: u32) -> Frame {
    let fixed = header::peek_fixed(&frame);
    match header::decode(frame.clone(), max_frame) {
        Ok(h) => Frame::Header(h),
        Err(error) => {
            let (flags, seq_id) = fixed.unwrap_or((0, 0));
            // The protocol id is the first varint of the header area, if readable.
            let mut pos = 14;
            let protocol = match varint::read_u32(&frame, &mut pos, "protocol id") {
                Ok(2) => ProtocolId::Compact,
                _ => ProtocolId::Binary,
            };
            Frame::Invalid {
                flags,
                seq_id,
                protocol,
                error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::thrift::header::{HeaderHead, Transform, encode_head};

    fn binary_call() -> Vec<u8> {
        // CALL "ping" seqid 1, empty args struct.
        let mut m = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4];
        m.extend_from_slice(b"ping");
        m.extend_from_slice(&[0, 0, 0, 1, 0]);
        m
    }

    fn drain(decoder: &mut ThriftDecoder, bytes: &[u8], step: usize) -> Vec<Frame> {
        // Feed in small steps to prove partial input is "need more", never an error.
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            src.extend_from_slice(chunk);
            while let Some(f) = decoder.decode(&mut src).unwrap() {
                out.push(f);
            }
        }
        assert!(src.is_empty());
        out
    }

    #[test]
    fn unframed_messages_are_cut_at_their_end() {
        let mut bytes = binary_call();
        bytes.extend(binary_call());
        let mut d = ThriftDecoder::new(1 << 20);
        let frames = drain(&mut d, &bytes, 3);
        assert_eq!(frames.len(), 2);
        assert_eq!(d.dialect(), Some(Dialect::UNFRAMED_BINARY));
        assert_eq!(
            frames[0],
            Frame::Unframed {
                protocol: ProtocolId::Binary,
                message: Bytes::from(binary_call())
            }
        );
    }

    #[test]
    fn framed_and_header_frames() {
        let call = binary_call();
        let mut framed = (call.len() as u32).to_be_bytes().to_vec();
        framed.extend(&call);
        let mut d = ThriftDecoder::new(1 << 20);
        assert_eq!(
            drain(&mut d, &framed, 5),
            vec![Frame::Framed {
                protocol: ProtocolId::Binary,
                message: Bytes::from(call.clone())
            }]
        );

        let mut head = BytesMut::new();
        let info = vec![(Bytes::from_static(b"traceparent"), Bytes::from_static(b"x"))];
        let h = HeaderHead {
            flags: 0,
            seq_id: 1,
            protocol: ProtocolId::Binary,
            transforms: &[],
            info: &info,
            persistent: &[],
        };
        encode_head(&h, call.len(), &mut head).unwrap();
        head.extend_from_slice(&call);
        let mut d = ThriftDecoder::new(1 << 20);
        let frames = drain(&mut d, &head, 7);
        let Frame::Header(f) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(f.payload, Bytes::from(call));
        assert_eq!(f.info, info);
        let _ = Transform::Zlib;
    }

    #[test]
    fn unknown_transform_is_a_per_frame_error_and_the_stream_goes_on() {
        // area: protocol 2 (compact), 1 transform: id 3 (snappy), pad
        let mut bad = vec![0, 0, 0, 14, 0x0F, 0xFF, 0, 1, 0, 0, 0, 42, 0, 1, 2, 1, 3, 0];
        let good_call = binary_call();
        let mut good = (good_call.len() as u32 + 14).to_be_bytes().to_vec();
        good.extend_from_slice(&[0x0F, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
        good.extend(&good_call);
        bad.extend(&good);
        let mut d = ThriftDecoder::new(1 << 20);
        let frames = drain(&mut d, &bad, 4);
        assert_eq!(
            frames[0],
            Frame::Invalid {
                flags: 1,
                seq_id: 42,
                protocol: ProtocolId::Compact,
                error: ThriftError::UnknownTransform(3)
            }
        );
        assert!(matches!(&frames[1], Frame::Header(h) if h.payload == good_call[..]));
    }

    #[test]
    fn announced_length_reserves_no_more_than_a_chunk_ahead() {
        // A THeader frame announcing 16,000,000 bytes, of which only the fixed part arrived.
        let mut src = BytesMut::new();
        src.extend_from_slice(&16_000_000u32.to_be_bytes());
        src.extend_from_slice(&[0x0F, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1]);
        let mut d = ThriftDecoder::new(16_384_000);
        assert_eq!(d.decode(&mut src).unwrap(), None);
        assert_eq!(src.len(), 14);
        assert!(
            src.capacity() <= 2 * RESERVE_AHEAD,
            "reserved {} bytes for 14 received",
            src.capacity()
        );
    }

    #[test]
    fn oversize_and_unknown_transport_end_the_connection() {
        let mut d = ThriftDecoder::new(16_384_000);
        let mut src = BytesMut::from(&[0x00, 0xFA, 0, 1, 0x0F, 0xFF, 0, 0][..]);
        assert!(matches!(
            d.decode(&mut src),
            Err(DecodeError::Thrift(ThriftError::FrameTooLarge {
                size: 16_384_001,
                max: 16_384_000
            }))
        ));
        let mut d = ThriftDecoder::new(16_384_000);
        let mut src = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            d.decode(&mut src),
            Err(DecodeError::Thrift(ThriftError::UnknownTransport(_)))
        ));
        // Truncated at EOF.
        let mut d = ThriftDecoder::new(1 << 20);
        let mut src = BytesMut::from(&binary_call()[..10]);
        assert!(matches!(d.decode_eof(&mut src), Err(DecodeError::Io(_))));
    }
}
