//! The demo's in-process Thrift upstream and the THeader caller of `demo --once`.
//!
//! The upstream speaks THeader with the binary protocol only (like a default Apache Python
//! THeader server) and implements one method; the caller sends that method through the
//! gateway's Thrift listener with a W3C `traceparent` info header. Both are built on the
//! crate's own codec, so the demo exercises the bytes the gateway itself reads and writes.
//!
//! ```text
//! service Greeter { string greet(1: string name) }
//!
//! CALL   greet  args   { 1: string name }          binary: 0B 0001 <i32 len> <name> 00
//! REPLY  greet  result { 0: string success }       binary: 0B 0000 <i32 len> <text> 00
//! other methods: EXCEPTION TApplicationException UNKNOWN_METHOD (1)
//! ```
//! The upstream records the trace context each call arrived with (the `traceparent` info
//! header the gateway injected), so the demo can print the trace crossing the gateway.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::codec::thrift::exception::{PROTOCOL_ERROR, encode_exception};
use crate::codec::thrift::frame::{Frame, ThriftDecoder};
use crate::codec::thrift::header::{HeaderFrame, HeaderHead, encode_head};
use crate::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use crate::codec::thrift::{DEFAULT_MAX_FRAME_SIZE, InfoHeaders};
use crate::codec::thrift::{Dialect, encode_message_header};
use crate::error::{ErrorKind, GatewayError, Side};
use crate::trace::{Format, Propagator, TraceContext};

/// The one method the demo upstream implements.
pub(super) const METHOD: &str = "greet";
/// `TApplicationException` type UNKNOWN_METHOD (Apache `TApplicationException.UNKNOWN_METHOD`).
const UNKNOWN_METHOD: i32 = 1;
/// Info headers the upstream prints when present (what the demo's gateway injects).
const TRACE_KEYS: [&str; 3] = ["traceparent", "tracestate", "uber-trace-id"];
/// Calls the upstream remembers for [`ThriftGreeter::received`].
const KEEP: usize = 64;
/// Thrift binary type ids used here.
const T_STOP: u8 = 0;
const T_STRING: u8 = 11;

/// What the Thrift upstream received with one `greet` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The `name` argument.
    pub name: String,
    /// The W3C context of the `traceparent` info header, if one arrived and was valid.
    pub context: Option<TraceContext>,
}

/// The running demo Thrift upstream.
#[derive(Debug, Clone)]
pub(super) struct ThriftGreeter {
    /// Where it listens.
    pub(super) address: SocketAddr,
    log: Arc<Mutex<VecDeque<Received>>>,
}

impl ThriftGreeter {
    /// The latest `greet` call with this `name` argument, if the upstream saw one.
    pub(super) fn received(&self, name: &str) -> Option<Received> {
        lock(&self.log)
            .iter()
            .rev()
            .find(|r| r.name == name)
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned log only means a connection task panicked mid-push; the log is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the Thrift upstream on a free loopback port; each call is also printed to `seen`.
pub(super) async fn start_thrift_greeter(
    seen: mpsc::UnboundedSender<String>,
) -> Result<ThriftGreeter, GatewayError> {
    let internal = |m: &'static str| {
        move |e: std::io::Error| {
            GatewayError::new(ErrorKind::Internal, Side::Internal, m).with_source(e)
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(internal("cannot bind the demo Thrift upstream"))?;
    let address = listener
        .local_addr()
        .map_err(internal("demo Thrift upstream has no address"))?;
    let greeter = ThriftGreeter {
        address,
        log: Arc::default(),
    };
    let server = greeter.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, server.clone(), seen.clone()));
        }
    });
    Ok(greeter)
}

/// Answers THeader frames until the peer closes or sends bytes that lose the framing.
async fn serve_connection(
    stream: TcpStream,
    greeter: ThriftGreeter,
    seen: mpsc::UnboundedSender<String>,
) {
    let (read, mut write) = stream.into_split();
    let decoder = ThriftDecoder::for_dialect(Dialect::HEADER, DEFAULT_MAX_FRAME_SIZE);
    let mut frames = FramedRead::new(read, decoder);
    while let Some(Ok(frame)) = frames.next().await {
        let reply = match frame {
            Frame::Header(h) => answer(&greeter, &seen, h),
            Frame::Invalid {
                flags,
                seq_id,
                protocol,
                error,
            } => {
                let body = encode_exception(protocol, "", 0, PROTOCOL_ERROR, &error.to_string());
                header_frame(flags, seq_id, protocol, &[], &body).ok()
            }
            // A Header decoder yields only THeader frames.
            Frame::Framed { .. } | Frame::Unframed { .. } => None,
        };
        if let Some(bytes) = reply
            && write.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}

/// The reply frame to one THeader frame; `None` for a ONEWAY call (run, never answered).
fn answer(
    greeter: &ThriftGreeter,
    seen: &mpsc::UnboundedSender<String>,
    h: HeaderFrame,
) -> Option<Bytes> {
    let protocol = h.protocol;
    let body = match peek_message(&h.payload, protocol) {
        Ok(Some(m)) if matches!(m.kind, MessageType::Call | MessageType::Oneway) => {
            let args = h.payload.get(m.body_offset..).unwrap_or_default();
            let result = call(greeter, seen, &h.info, protocol, m.name, args);
            if m.kind == MessageType::Oneway {
                return None;
            }
            match result {
                Ok(text) => {
                    let mut out = BytesMut::with_capacity(32 + text.len());
                    encode_message_header(&mut out, protocol, m.name, MessageType::Reply, m.seq_id);
                    put_string_struct(&mut out, 0, &text);
                    out.freeze()
                }
                Err((kind, why)) => encode_exception(protocol, m.name, m.seq_id, kind, &why),
            }
        }
        Ok(Some(m)) => encode_exception(
            protocol,
            m.name,
            m.seq_id,
            PROTOCOL_ERROR,
            "expected a CALL message",
        ),
        Ok(None) => encode_exception(protocol, "", 0, PROTOCOL_ERROR, "truncated message"),
        Err(e) => encode_exception(protocol, "", 0, PROTOCOL_ERROR, &e.to_string()),
    };
    // Echo flags and the header seq id, as Apache servers do.
    header_frame(h.flags, h.seq_id, protocol, &[], &body).ok()
}

/// Runs one call: records and prints what arrived, returns the `greet` result or an
/// exception type and message.
fn call(
    greeter: &ThriftGreeter,
    seen: &mpsc::UnboundedSender<String>,
    info: &InfoHeaders,
    protocol: ProtocolId,
    method: &str,
    args: &[u8],
) -> Result<String, (i32, String)> {
    let mut line = format!("upstream greeter <-- THeader {method}");
    for key in TRACE_KEYS {
        if let Some((_, v)) = info
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
        {
            line.push_str(&format!(" {key}={}", String::from_utf8_lossy(v)));
        }
    }
    let _ = seen.send(line);
    if method != METHOD {
        return Err((
            UNKNOWN_METHOD,
            format!("the demo Thrift upstream implements only {METHOD}, not {method:?}"),
        ));
    }
    if protocol != ProtocolId::Binary {
        return Err((
            PROTOCOL_ERROR,
            "the demo Thrift upstream speaks the binary protocol only".into(),
        ));
    }
    let name = string_field(args, 1)
        .map_err(|why| (PROTOCOL_ERROR, format!("{METHOD} args: {why}")))?
        .unwrap_or_default();
    let context = Propagator::new(vec![Format::W3c], Vec::new())
        .extract(info)
        .context;
    let mut log = lock(&greeter.log);
    if log.len() == KEEP {
        log.pop_front();
    }
    log.push_back(Received {
        name: name.clone(),
        context,
    });
    Ok(format!("Hello, {name}"))
}

/// One THeader frame around a whole message.
fn header_frame(
    flags: u16,
    seq_id: u32,
    protocol: ProtocolId,
    info: &[(Bytes, Bytes)],
    message: &[u8],
) -> Result<Bytes, crate::codec::thrift::ThriftError> {
    let head = HeaderHead {
        flags,
        seq_id,
        protocol,
        transforms: &[],
        info,
        persistent: &[],
    };
    let mut out = BytesMut::with_capacity(64 + message.len());
    encode_head(&head, message.len(), &mut out)?;
    out.extend_from_slice(message);
    Ok(out.freeze())
}

/// Writes a binary struct with one string field: `0B <i16 id> <i32 len> <bytes> 00`.
fn put_string_struct(out: &mut BytesMut, id: i16, value: &str) {
    out.put_u8(T_STRING);
    out.put_i16(id);
    out.put_i32(value.len() as i32);
    out.put_slice(value.as_bytes());
    out.put_u8(T_STOP);
}

/// Reads the string field `id` of a binary struct, skipping other fields of fixed-size or
/// string types (all the demo's structs use).
fn string_field(mut buf: &[u8], id: i16) -> Result<Option<String>, &'static str> {
    let mut found = None;
    loop {
        let ttype = take(&mut buf, 1)?[0];
        if ttype == T_STOP {
            return Ok(found);
        }
        let field = take(&mut buf, 2)?.get_i16();
        let size = match ttype {
            2 | 3 => 1,  // bool, byte
            6 => 2,      // i16
            8 => 4,      // i32
            4 | 10 => 8, // double, i64
            T_STRING => {
                let len = take(&mut buf, 4)?.get_i32();
                usize::try_from(len).map_err(|_| "negative string length")?
            }
            _ => return Err("only primitive and string fields are understood"),
        };
        let value = take(&mut buf, size)?;
        if ttype == T_STRING && field == id {
            let text = std::str::from_utf8(value).map_err(|_| "string is not UTF-8")?;
            found = Some(text.to_owned());
        }
    }
}

/// The next `n` bytes of `buf`, advancing it.
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if buf.len() < n {
        return Err("struct is truncated");
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// One THeader call of `demo --once`: what the caller sent and what the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThriftCrossing {
    /// The `traceparent` info header the caller sent.
    pub traceparent: &'static str,
    /// The caller's context (trace id, and its own span id: the parent it hands on).
    pub sent: TraceContext,
    /// What the upstream saw, if it recorded the call.
    pub received: Option<Received>,
    /// The decoded `greet` result.
    pub reply: String,
}

/// The caller's context in the sample call.
pub(super) const SAMPLE_TRACEPARENT: &str =
    "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01";
/// The `name` argument of the sample call.
pub(super) const SAMPLE_NAME: &str = "thrift";

/// Calls `greet(SAMPLE_NAME)` through the gateway's Thrift listener `rpc` and looks up what
/// `greeter` received.
pub(super) async fn sample(
    rpc: SocketAddr,
    greeter: &ThriftGreeter,
) -> Result<ThriftCrossing, GatewayError> {
    let info = [(
        Bytes::from_static(b"traceparent"),
        Bytes::from_static(SAMPLE_TRACEPARENT.as_bytes()),
    )];
    let sent = Propagator::new(vec![Format::W3c], Vec::new())
        .extract(&info.to_vec())
        .context
        .ok_or_else(|| caller_error("the sample traceparent is not valid W3C"))?;
    let reply = call_greet(rpc, &info, SAMPLE_NAME).await?;
    Ok(ThriftCrossing {
        traceparent: SAMPLE_TRACEPARENT,
        sent,
        received: greeter.received(SAMPLE_NAME),
        reply,
    })
}

fn caller_error(message: impl Into<std::borrow::Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorKind::Internal, Side::Internal, message)
}

/// A THeader client call of `greet(name)` with these info headers; the decoded result.
async fn call_greet(
    address: SocketAddr,
    info: &[(Bytes, Bytes)],
    name: &str,
) -> Result<String, GatewayError> {
    const SEQ: i32 = 1;
    let mut message = BytesMut::with_capacity(32 + name.len());
    encode_message_header(
        &mut message,
        ProtocolId::Binary,
        METHOD,
        MessageType::Call,
        SEQ,
    );
    put_string_struct(&mut message, 1, name);
    let frame = header_frame(0, SEQ as u32, ProtocolId::Binary, info, &message)
        .map_err(|e| caller_error(format!("cannot encode the sample call: {e}")))?;
    let mut stream = TcpStream::connect(address).await.map_err(|e| {
        caller_error(format!("cannot connect to the Thrift listener {address}")).with_source(e)
    })?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| caller_error("cannot send the sample call").with_source(e))?;
    let decoder = ThriftDecoder::for_dialect(Dialect::HEADER, DEFAULT_MAX_FRAME_SIZE);
    let h = match FramedRead::new(stream, decoder).next().await {
        Some(Ok(Frame::Header(h))) => h,
        Some(Ok(other)) => return Err(caller_error(format!("unexpected reply {other:?}"))),
        Some(Err(e)) => return Err(caller_error(format!("bad reply: {e}"))),
        None => return Err(caller_error("the gateway closed the connection")),
    };
    decode_greet_reply(&h.payload)
}

/// The `greet` result of a binary REPLY, or the message of an EXCEPTION.
fn decode_greet_reply(payload: &[u8]) -> Result<String, GatewayError> {
    let m = match peek_message(payload, ProtocolId::Binary) {
        Ok(Some(m)) => m,
        Ok(None) => return Err(caller_error("the reply is truncated")),
        Err(e) => return Err(caller_error(format!("bad reply: {e}"))),
    };
    let body = payload.get(m.body_offset..).unwrap_or_default();
    let field = if m.kind == MessageType::Reply { 0 } else { 1 };
    let text = string_field(body, field)
        .map_err(|why| caller_error(format!("bad {:?} struct: {why}", m.kind)))?
        .unwrap_or_default();
    match m.kind {
        MessageType::Reply => Ok(text),
        kind => Err(caller_error(format!("{kind:?}: {text}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn greeter() -> ThriftGreeter {
        ThriftGreeter {
            address: SocketAddr::from(([127, 0, 0, 1], 9)),
            log: Arc::default(),
        }
    }

    fn call_frame(info: &[(Bytes, Bytes)], method: &str, name: &str) -> HeaderFrame {
        let mut m = BytesMut::new();
        encode_message_header(&mut m, ProtocolId::Binary, method, MessageType::Call, 7);
        put_string_struct(&mut m, 1, name);
        let f = header_frame(1, 7, ProtocolId::Binary, info, &m).unwrap();
        crate::codec::thrift::header::decode(f, DEFAULT_MAX_FRAME_SIZE).unwrap()
    }

    #[test]
    fn greet_reply_bytes_are_exact() {
        let g = greeter();
        let (seen, mut lines) = mpsc::unbounded_channel();
        let info = [(
            Bytes::from_static(b"traceparent"),
            Bytes::from_static(SAMPLE_TRACEPARENT.as_bytes()),
        )];
        let reply = answer(&g, &seen, call_frame(&info, "greet", "ann")).unwrap();
        let expected: &[u8] = &[
            0, 0, 0, 49, 0x0F, 0xFF, 0, 1, 0, 0, 0, 7, 0, 1, // fixed, flags and seq echoed
            0, 0, 0, 0, // binary, no transforms, padding
            0x80, 0x01, 0x00, 0x02, 0, 0, 0, 5, b'g', b'r', b'e', b'e', b't', 0, 0, 0, 7, //
            11, 0, 0, 0, 0, 0, 10, b'H', b'e', b'l', b'l', b'o', b',', b' ', b'a', b'n', b'n', 0,
        ];
        assert_eq!(&reply[..], expected);
        let h = crate::codec::thrift::header::decode(reply, DEFAULT_MAX_FRAME_SIZE).unwrap();
        assert_eq!(decode_greet_reply(&h.payload).unwrap(), "Hello, ann");
        let got = g.received("ann").unwrap();
        let ctx = got.context.unwrap();
        assert_eq!(ctx.trace_id.to_hex(), "5b8aa5a2d2c872e8321cf37308d69df2");
        assert_eq!(ctx.span_id.to_hex(), "051581bf3cb55c13");
        assert_eq!(
            lines.try_recv().unwrap(),
            format!("upstream greeter <-- THeader greet traceparent={SAMPLE_TRACEPARENT}")
        );
    }

    #[test]
    fn unknown_method_and_bad_args_are_exceptions() {
        let g = greeter();
        let (seen, _lines) = mpsc::unbounded_channel();
        let reply = answer(&g, &seen, call_frame(&[], "wave", "ann")).unwrap();
        let h = crate::codec::thrift::header::decode(reply, DEFAULT_MAX_FRAME_SIZE).unwrap();
        assert_eq!(
            decode_greet_reply(&h.payload).unwrap_err().message,
            "Exception: the demo Thrift upstream implements only greet, not \"wave\""
        );
        assert_eq!(g.received("ann"), None);
        // A list field (type 15) is not understood.
        assert_eq!(
            string_field(&[15, 0, 2, 11, 0, 0, 0, 0, 0], 1),
            Err("only primitive and string fields are understood")
        );
        assert_eq!(
            string_field(&[11, 0, 1, 0, 0, 0, 9, b'x'], 1),
            Err("struct is truncated")
        );
        assert_eq!(
            string_field(&[11, 0, 1, 0xFF, 0, 0, 0], 1),
            Err("negative string length")
        );
        // Other fields are skipped; no field 1 means no name.
        assert_eq!(string_field(&[8, 0, 2, 0, 0, 0, 1, 0], 1), Ok(None));
    }
}
