//! Thrift upstreams: one multiplexed connection per endpoint. Calls from many downstream
//! connections share it; each call gets an upstream seqid of its own (written into the
//! message header, and the THeader seq id), and the reply is routed back by that seqid.
//! The call's arguments are forwarded as the same `Bytes`, written vectored after a freshly
//! encoded frame head and message header; only a protocol change (binary ⇄ compact) re-encodes.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::codec::thrift::detect::ClientType;
use crate::codec::thrift::frame::{Frame, ThriftDecoder};
use crate::codec::thrift::header::{HeaderHead, InfoHeaders, Transform, encode_head, recycle_info};
use crate::codec::thrift::message::{MessageType, ProtocolId, peek_message};
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

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<Result<ThriftReply, String>>>>>;

/// One connection to one endpoint: a writer queue, a reader task, and the calls in flight.
#[derive(Debug)]
struct Conn {
    tx: mpsc::Sender<Vec<Bytes>>,
    waiters: Waiters,
    next_seq: AtomicI32,
}

impl Conn {
    fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
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
    /// Dropping the future abandons the call (its reply, if any, is discarded).
    pub async fn call(&self, call: ThriftCall) -> Result<Option<ThriftReply>, GatewayError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len().max(1);
        let conn = self.connection(index).await?;
        let seq_id = conn.next_seq.fetch_add(1, Ordering::Relaxed);
        let parts = self.encode(&call, seq_id)?;
        // The info headers are in the frame head now: the list serves a later call.
        recycle_info(call.info);
        let reply = if call.kind == MessageType::Oneway {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            lock(&conn.waiters).insert(seq_id, tx);
            Some(WaiterGuard {
                waiters: conn.waiters.clone(),
                seq_id,
                rx: Some(rx),
            })
        };
        conn.tx.send(parts).await.map_err(|_| self.closed())?;
        let Some(mut guard) = reply else {
            return Ok(None);
        };
        let rx = guard.rx.take().ok_or_else(|| self.closed())?;
        match rx.await {
            Ok(Ok(reply)) => Ok(Some(reply)),
            Ok(Err(why)) => Err(GatewayError::new(
                ErrorKind::UpstreamProtocol,
                Side::Upstream,
                format!("upstream {}: {why}", self.name),
            )),
            Err(_) => Err(self.closed()),
        }
    }

    fn closed(&self) -> GatewayError {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            Side::Upstream,
            format!(
                "upstream {} closed the connection before replying",
                self.name
            ),
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
        let conn = Arc::new(spawn_conn(stream, self.client_type(), self.max_frame));
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

/// Removes a call's waiter if the caller gives up (timeout, cancellation).
struct WaiterGuard {
    waiters: Waiters,
    seq_id: i32,
    rx: Option<oneshot::Receiver<Result<ThriftReply, String>>>,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        lock(&self.waiters).remove(&self.seq_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map only means another task panicked mid-insert; the map itself is fine.
    m.lock().unwrap_or_else(|e| e.into_inner())
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

fn spawn_conn(stream: TcpStream, client: ClientType, max_frame: u32) -> Conn {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(256);
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(async move {
        while let Some(mut parts) = rx.recv().await {
            if write_all_vectored(&mut write, &mut parts).await.is_err() {
                break;
            }
        }
    });
    let reader_waiters = waiters.clone();
    tokio::spawn(async move {
        let mut frames = FramedRead::new(read, ThriftDecoder::for_client(client, max_frame));
        let reason = loop {
            match frames.next().await {
                Some(Ok(frame)) => {
                    if let Err(why) = deliver(frame, &reader_waiters) {
                        break why;
                    }
                }
                Some(Err(e)) => break format!("bad reply: {e}"),
                None => break "connection closed".to_owned(),
            }
        };
        // Fail every call still waiting on this connection.
        for (_, waiter) in lock(&reader_waiters).drain() {
            let _ = waiter.send(Err(reason.clone()));
        }
    });
    Conn {
        tx,
        waiters,
        next_seq: AtomicI32::new(1),
    }
}

fn deliver(frame: Frame, waiters: &Waiters) -> Result<(), String> {
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
    // A reply nobody waits for (caller timed out) is dropped.
    if let Some(waiter) = lock(waiters).remove(&seq_id) {
        let _ = waiter.send(Ok(reply));
    }
    Ok(())
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
