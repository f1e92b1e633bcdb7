//! Thrift upstreams: one multiplexed connection per endpoint. Calls from many downstream
//! connections share it; each call gets an upstream seqid of its own (written into the
//! message header, and the THeader seq id), and the reply is routed back by that seqid.
//! The call's arguments are forwarded as the same `Bytes`, written vectored after a freshly
//! encoded frame head and message header; only a protocol change (binary ⇄ compact) re-encodes.
//!
//! A connection whose reader or writer fails is retired at once ([`conn`]): its waiting calls
//! fail with the cause and the next call dials a fresh connection.

mod conn;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use self::conn::Conn;
use crate::codec::thrift::header::{InfoHeaders, recycle_info};
use crate::codec::thrift::{
    DEFAULT_MAX_FRAME_SIZE, Dialect, HeaderFields, MessageType, ProtocolId, Transport,
    encode_message_header, transcode_struct,
};
use crate::config::UpstreamConfig;
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
    dialect: Dialect,
    connect_timeout: Duration,
    max_frame: u32,
    conns: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl ThriftUpstream {
    /// Builds the upstream from config (connections are opened on first use).
    pub fn new(config: &UpstreamConfig) -> Self {
        let dialect = Dialect::new(
            config.transport.unwrap_or(Transport::Header),
            config.thrift_protocol.unwrap_or(ProtocolId::Binary),
        );
        ThriftUpstream {
            name: config.name.clone(),
            endpoints: config.endpoints.clone(),
            dialect,
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

    /// The transport and protocol the upstream speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sends a call; waits for the reply unless it is ONEWAY (then `Ok(None)` once written).
    /// Dropping the future abandons the call (its reply, if any, is discarded). A call on a
    /// connection that dies fails with the cause (`UpstreamProtocol`).
    pub async fn call(&self, call: ThriftCall) -> Result<Option<ThriftReply>, GatewayError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len().max(1);
        let conn = self.connection(index).await?;
        let seq_id = conn.next_seq.fetch_add(1, Ordering::Relaxed);
        let parts = self.encode(&call, seq_id)?;
        let oneway = call.kind == MessageType::Oneway;
        // The info headers are in the frame head now: the list serves a later call.
        recycle_info(call.info);
        let waiter = if oneway {
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
        let conn = Arc::new(conn::spawn(stream, self.dialect, self.max_frame));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The bytes of one call, as parts to write vectored: frame head, message head, and
    /// the arguments (re-encoded only if the protocols differ).
    fn encode(&self, call: &ThriftCall, seq_id: i32) -> Result<Vec<Bytes>, GatewayError> {
        let bad = |why: String| GatewayError::new(ErrorKind::BadRequest, Side::Downstream, why);
        let name = std::str::from_utf8(&call.name)
            .map_err(|_| bad("Thrift method name is not UTF-8".into()))?;
        let protocol = self.dialect.protocol;
        let mut message_head = BytesMut::with_capacity(16 + name.len());
        encode_message_header(&mut message_head, protocol, name, call.kind, seq_id);
        let args = if call.protocol == protocol {
            call.args.clone()
        } else {
            transcode_struct(&call.args, call.protocol, protocol).map_err(|e| bad(e.to_string()))?
        };
        let fields = HeaderFields {
            flags: call.flags,
            seq_id: seq_id as u32,
            info: &call.info,
            persistent: &call.persistent,
        };
        let mut head = BytesMut::with_capacity(64);
        self.dialect
            .encode_frame_head(&fields, message_head.len() + args.len(), &mut head)
            .map_err(|e| bad(e.to_string()))?;
        Ok(vec![head.freeze(), message_head.freeze(), args])
    }
}
