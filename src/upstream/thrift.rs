//! Thrift upstreams: one multiplexed connection per endpoint. Calls from many downstream
//! connections share it; each call gets an upstream seqid of its own (written into the
//! message header, and the THeader seq id), and the reply is routed back by that seqid.
//! The call's arguments are forwarded as the same `Bytes`, written vectored after a freshly
//! encoded frame head and message header; only a protocol change (binary ⇄ compact) re-encodes.
//!
//! A connection whose reader or writer fails is retired at once ([`conn`]): its waiting calls
//! fail with the cause and the next call dials a fresh connection.

mod conn;

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use self::conn::Conn;
use crate::codec::thrift::detect::ClientType;
use crate::codec::thrift::header::{HeaderHead, InfoHeaders, Transform, encode_head};
use crate::codec::thrift::message::{MessageType, ProtocolId};
use crate::codec::thrift::walk::transcode;
use crate::codec::thrift::{DEFAULT_MAX_FRAME_SIZE, varint};
use crate::config::{ThriftProtocol, ThriftTransport, UpstreamConfig};
use crate::error::{ErrorKind, GatewayError, Side};

/// A call to forward: the message header's parts and the untouched argument bytes.
#[derive(Debug, Clone)]
pub struct ThriftCall {
    /// Method name as the client sent it (`Service:method` when multiplexed).
    pub name: Bytes,
    /// CALL or ONEWAY.
    pub kind: MessageType,
    /// Protocol of `args`.
    pub protocol: ProtocolId,
    /// The argument struct, exactly as received.
    pub args: Bytes,
    /// Info headers for a THeader upstream (trace context already injected).
    pub info: InfoHeaders,
    /// fbthrift persistent headers, forwarded as received.
    pub persistent: InfoHeaders,
    /// THeader flags to send.
    pub flags: u16,
}

/// An upstream's reply, with its message header parsed.
#[derive(Debug, Clone)]
pub struct ThriftReply {
    /// REPLY or EXCEPTION.
    pub kind: MessageType,
    /// Protocol of `args`.
    pub protocol: ProtocolId,
    /// The result struct, exactly as received.
    pub args: Bytes,
    /// Info headers of a THeader reply.
    pub info: InfoHeaders,
}

/// A Thrift upstream: endpoints, their transport and protocol, and a connection each.
#[derive(Debug)]
pub struct ThriftUpstream {
    name: String,
    endpoints: Vec<String>,
    transport: ThriftTransport,
    protocol: ProtocolId,
    connect_timeout: Duration,
    max_frame: u32,
    conns: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl ThriftUpstream {
    /// Builds the upstream from config (connections are opened on first use).
    pub fn new(config: &UpstreamConfig) -> Self {
        let protocol = match config.thrift_protocol {
            Some(ThriftProtocol::Compact) => ProtocolId::Compact,
            _ => ProtocolId::Binary,
        };
        ThriftUpstream {
            name: config.name.clone(),
            endpoints: config.endpoints.clone(),
            transport: config.transport.unwrap_or(ThriftTransport::Header),
            protocol,
            connect_timeout: config.connect_timeout,
            max_frame: DEFAULT_MAX_FRAME_SIZE,
            conns: config
                .endpoints
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The transport the upstream speaks.
    pub fn transport(&self) -> ThriftTransport {
        self.transport
    }

    /// The protocol the upstream speaks.
    pub fn protocol(&self) -> ProtocolId {
        self.protocol
    }

    /// Sends a call; waits for the reply unless it is ONEWAY (then `Ok(None)` once written).
    /// Dropping the future abandons the call (its reply, if any, is discarded). A call on a
    /// connection that dies fails with the cause (`UpstreamProtocol`).
    pub async fn call(&self, call: ThriftCall) -> Result<Option<ThriftReply>, GatewayError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len().max(1);
        let conn = self.connection(index).await?;
        let seq_id = conn.next_seq.fetch_add(1, Ordering::Relaxed);
        let parts = self.encode(&call, seq_id)?;
        let waiter = if call.kind == MessageType::Oneway {
            None
        } else {
            // Refused only if the connection died since `connection()`: nothing was sent.
            let waiter = conn.link.wait_for(seq_id);
            Some(waiter.map_err(|cause| self.failed(&cause).retryable())?)
        };
        if conn.tx.send(parts).await.is_err() {
            let cause = conn.link.cause();
            let cause = cause.as_deref().unwrap_or("connection closed");
            return Err(self.failed(cause).retryable());
        }
        let Some(mut waiter) = waiter else {
            return Ok(None);
        };
        match waiter.reply().await {
            Ok(reply) => Ok(Some(reply)),
            Err(cause) => Err(self.failed(&cause)),
        }
    }

    /// The error of a call whose connection died of `cause`.
    fn failed(&self, cause: &str) -> GatewayError {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            Side::Upstream,
            format!("upstream {}: {cause}", self.name),
        )
    }

    async fn connection(&self, index: usize) -> Result<Arc<Conn>, GatewayError> {
        let mut slot = self.conns[index].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(conn.clone());
        }
        let endpoint = &self.endpoints[index];
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint.as_str()))
                .await
                .map_err(|_| {
                    GatewayError::new(
                        ErrorKind::UpstreamConnect,
                        Side::Upstream,
                        format!(
                            "upstream {}: connecting to {endpoint} took longer than {:?}",
                            self.name, self.connect_timeout
                        ),
                    )
                    .retryable()
                })?
                .map_err(|e| {
                    GatewayError::new(
                        ErrorKind::UpstreamConnect,
                        Side::Upstream,
                        format!("cannot connect to upstream {} at {endpoint}", self.name),
                    )
                    .retryable()
                    .with_source(e)
                })?;
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(conn::spawn(stream, self.client_type(), self.max_frame));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn client_type(&self) -> ClientType {
        match (self.transport, self.protocol) {
            (ThriftTransport::Header, _) => ClientType::Header,
            (ThriftTransport::Framed, ProtocolId::Binary) => ClientType::FramedBinary,
            (ThriftTransport::Framed, ProtocolId::Compact) => ClientType::FramedCompact,
            (ThriftTransport::Unframed, ProtocolId::Binary) => ClientType::UnframedBinary,
            (ThriftTransport::Unframed, ProtocolId::Compact) => ClientType::UnframedCompact,
        }
    }

    /// The bytes of one call, as parts to write vectored.
    fn encode(&self, call: &ThriftCall, seq_id: i32) -> Result<Vec<Bytes>, GatewayError> {
        let name = std::str::from_utf8(&call.name).map_err(|_| {
            GatewayError::new(
                ErrorKind::BadRequest,
                Side::Downstream,
                "Thrift method name is not UTF-8",
            )
        })?;
        // Message header in the upstream's protocol, then the args (re-encoded only if the
        // protocols differ).
        let mut message_head = BytesMut::with_capacity(16 + name.len());
        encode_message_header(&mut message_head, self.protocol, name, call.kind, seq_id);
        let args = if call.protocol == self.protocol {
            call.args.clone()
        } else {
            transcode_struct(&call.args, call.protocol, self.protocol)?
        };
        let payload_len = message_head.len() + args.len();
        let mut parts = Vec::with_capacity(3);
        match self.transport {
            ThriftTransport::Header => {
                let mut head = BytesMut::with_capacity(64);
                let h = HeaderHead {
                    flags: call.flags,
                    seq_id: seq_id as u32,
                    protocol: self.protocol,
                    transforms: &[] as &[Transform],
                    info: &call.info,
                    persistent: &call.persistent,
                };
                encode_head(&h, payload_len, &mut head).map_err(|e| {
                    GatewayError::new(ErrorKind::BadRequest, Side::Downstream, e.to_string())
                })?;
                parts.push(head.freeze());
            }
            ThriftTransport::Framed => {
                parts.push(Bytes::copy_from_slice(&(payload_len as u32).to_be_bytes()));
            }
            ThriftTransport::Unframed => {}
        }
        parts.push(message_head.freeze());
        parts.push(args);
        Ok(parts)
    }
}

/// Writes a message header (name, type, seqid) in `protocol`.
pub fn encode_message_header(
    out: &mut BytesMut,
    protocol: ProtocolId,
    name: &str,
    kind: MessageType,
    seq_id: i32,
) {
    match protocol {
        ProtocolId::Binary => {
            out.put_u32(0x8001_0000 | u32::from(kind.as_u8()));
            out.put_i32(name.len() as i32);
            out.put_slice(name.as_bytes());
            out.put_i32(seq_id);
        }
        ProtocolId::Compact => {
            out.put_u8(0x82);
            out.put_u8((kind.as_u8() << 5) | 0x01);
            varint::write_u32(out, seq_id as u32);
            varint::write_u32(out, name.len() as u32);
            out.put_slice(name.as_bytes());
        }
    }
}

/// Re-encodes an argument/result struct between protocols (wrapping it in a throwaway
/// message so the walker can run, then cutting the header off).
pub fn transcode_struct(
    args: &[u8],
    from: ProtocolId,
    to: ProtocolId,
) -> Result<Bytes, GatewayError> {
    let bad = |why: String| GatewayError::new(ErrorKind::BadRequest, Side::Downstream, why);
    let mut wrapped = BytesMut::with_capacity(args.len() + 16);
    encode_message_header(&mut wrapped, from, "x", MessageType::Call, 0);
    wrapped.extend_from_slice(args);
    let mut out = BytesMut::with_capacity(args.len() + 16);
    match transcode(&wrapped, from, to, &mut out) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(bad("Thrift struct is truncated".into())),
        Err(e) => return Err(bad(e.to_string())),
    }
    let mut head = BytesMut::new();
    encode_message_header(&mut head, to, "x", MessageType::Call, 0);
    Ok(out.freeze().slice(head.len()..))
}

/// Writes every part with vectored writes, handling partial writes.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &mut [Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[first..].iter().map(|b| IoSlice::new(b)).collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "socket accepted no bytes",
            ));
        }
        while first < parts.len() && written >= parts[first].len() {
            written -= parts[first].len();
            first += 1;
        }
        if written > 0 {
            parts[first].advance(written);
        }
    }
    w.flush().await
}
