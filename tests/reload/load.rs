//! The Thrift upstream and the load clients: HTTP/1.1 keep-alive and h2c connections sending
//! requests in loops, Thrift connections keeping calls pipelined, each call recorded with when
//! it was sent, when it was answered and who answered.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracebridge::codec::thrift::Dialect as WireDialect;
use tracebridge::codec::thrift::encode_message_header;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{HeaderHead, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};

use crate::{SLEEPY_DELAY, UPSTREAM_DELAY, WAIT};

/// A THeader binary Thrift server that answers every call after [`UPSTREAM_DELAY`]
/// ([`SLEEPY_DELAY`] for `Sleepy:` methods) with the result `{0: string "thrift"}`. Calls on
/// one connection are answered concurrently, in whatever order their delays end (the gateway
/// multiplexes by seqid).
pub(crate) struct ThriftUpstream {
    pub(crate) address: SocketAddr,
    /// Connections accepted so far.
    pub(crate) accepted: Arc<AtomicUsize>,
}

impl ThriftUpstream {
    pub(crate) async fn start() -> ThriftUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_thrift_connection(stream));
            }
        });
        ThriftUpstream { address, accepted }
    }
}

async fn serve_thrift_connection(stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let (replies, mut outgoing) = mpsc::unbounded_channel::<BytesMut>();
    tokio::spawn(async move {
        while let Some(reply) = outgoing.recv().await {
            if write.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    let mut frames = FramedRead::new(read, ThriftDecoder::new(1 << 24));
    while let Some(Ok(frame)) = frames.next().await {
        let Frame::Header(h) = frame else {
            panic!("the Thrift upstream got {frame:?}")
        };
        let m = peek_message(&h.payload, h.protocol).unwrap().unwrap();
        let (name, seq) = (m.name.to_owned(), m.seq_id);
        let replies = replies.clone();
        tokio::spawn(async move {
            let delay = if name.starts_with("Sleepy:") {
                SLEEPY_DELAY
            } else {
                UPSTREAM_DELAY
            };
            tokio::time::sleep(delay).await;
            let mut msg = BytesMut::new();
            encode_message_header(&mut msg, h.protocol, &name, MessageType::Reply, seq);
            put_result(&mut msg, "thrift");
            let head = HeaderHead {
                flags: 0,
                seq_id: h.seq_id,
                protocol: h.protocol,
                transforms: &[],
                info: &[],
                persistent: &[],
            };
            let mut out = BytesMut::new();
            encode_head(&head, msg.len(), &mut out).unwrap();
            out.extend_from_slice(&msg);
            let _ = replies.send(out);
        });
    }
}

/// `{0: string value}` in binary protocol: a REPLY's `success`.
fn put_result(out: &mut BytesMut, value: &str) {
    out.put_u8(11);
    out.put_i16(0);
    out.put_i32(value.len() as i32);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
}

/// Field 1 (a string) of a binary struct: the `success` a REPLY carries here, or the
/// `message` of a `TApplicationException`.
fn first_string(body: &[u8]) -> Option<String> {
    let (&kind, rest) = body.split_first()?;
    if kind != 11 || rest.len() < 6 {
        return None;
    }
    let len = i32::from_be_bytes(rest[2..6].try_into().ok()?) as usize;
    let text = rest.get(6..6 + len)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

/// One request or call: when it was sent, when its answer came, and who answered (or why not).
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    pub(crate) answer: Result<String, String>,
}

/// What every load client shares: when to stop, and how many calls are in flight / done.
#[derive(Clone, Default)]
pub(crate) struct Load {
    pub(crate) stop: CancellationToken,
    in_flight: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

impl Load {
    async fn timed(&self, call: impl Future<Output = Result<String, String>>) -> Record {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let answer = call.await;
        let finished = Instant::now();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        Record {
            started,
            finished,
            answer,
        }
    }

    /// Calls sent and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Calls answered (or failed) so far.
    pub(crate) fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }
}

/// The body of a 200 answer, or what went wrong.
async fn http_answer(
    resp: hyper::Result<http::Response<hyper::body::Incoming>>,
) -> Result<String, String> {
    let resp = resp.map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// One HTTP/1.1 keep-alive connection sending requests one after another until stopped.
pub(crate) async fn http1_client(edge: SocketAddr, load: Load) -> Vec<Record> {
    let stream = TcpStream::connect(edge).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut records = Vec::new();
    while !load.stop.is_cancelled() {
        let req = Request::get("/who")
            .header("host", edge.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let sender = &mut sender;
        records.push(
            load.timed(async move {
                sender
                    .ready()
                    .await
                    .map_err(|e| format!("connection lost: {e}"))?;
                http_answer(sender.send_request(req).await).await
            })
            .await,
        );
    }
    records
}

/// One h2c connection with `streams` concurrent request loops until stopped.
pub(crate) async fn h2c_client(edge: SocketAddr, streams: usize, load: Load) -> Vec<Record> {
    let stream = TcpStream::connect(edge).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let loops = (0..streams).map(|_| {
        let (mut sender, load) = (sender.clone(), load.clone());
        async move {
            let mut records = Vec::new();
            while !load.stop.is_cancelled() {
                let req = Request::get(format!("http://{edge}/who"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let sender = &mut sender;
                records.push(
                    load.timed(async move {
                        sender
                            .ready()
                            .await
                            .map_err(|e| format!("connection lost: {e}"))?;
                        http_answer(sender.send_request(req).await).await
                    })
                    .await,
                );
            }
            records
        }
    });
    futures_util::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A THeader binary CALL of `name` with an empty args struct.
fn thrift_call(name: &str, seq: i32) -> BytesMut {
    let mut msg = BytesMut::new();
    encode_message_header(&mut msg, ProtocolId::Binary, name, MessageType::Call, seq);
    msg.put_u8(0);
    let head = HeaderHead {
        flags: 0,
        seq_id: seq as u32,
        protocol: ProtocolId::Binary,
        transforms: &[],
        info: &[],
        persistent: &[],
    };
    let mut out = BytesMut::new();
    encode_head(&head, msg.len(), &mut out).unwrap();
    out.extend_from_slice(&msg);
    out
}

/// The result string of a REPLY to call `seq`, or what the reply was instead.
fn thrift_answer(
    frame: Option<Result<Frame, impl std::fmt::Display>>,
    seq: i32,
) -> Result<String, String> {
    let frame = match frame {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(format!("reply undecodable: {e}")),
        None => return Err("the gateway closed the connection".into()),
    };
    let Frame::Header(h) = frame else {
        return Err(format!("not a THeader reply: {frame:?}"));
    };
    let m = peek_message(&h.payload, h.protocol)
        .map_err(|e| format!("reply message: {e}"))?
        .ok_or("reply message cut short")?;
    let value = first_string(&h.payload[m.body_offset..]).unwrap_or_default();
    match (m.kind, m.seq_id == seq) {
        (MessageType::Reply, true) => Ok(value),
        (kind, true) => Err(format!("{kind:?}: {value}")),
        (_, false) => Err(format!(
            "reply to seqid {} while waiting for {seq}",
            m.seq_id
        )),
    }
}

/// One Thrift connection keeping `depth` `Calc:add` calls pipelined until stopped, then
/// collecting the replies still due (they come in call order).
pub(crate) async fn thrift_client(rpc: SocketAddr, depth: usize, load: Load) -> Vec<Record> {
    let stream = TcpStream::connect(rpc).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut replies = FramedRead::new(
        read,
        ThriftDecoder::for_dialect(WireDialect::HEADER, 1 << 24),
    );
    let mut pending: VecDeque<(i32, Instant)> = VecDeque::new();
    let mut records = Vec::new();
    let mut seq = 0;
    loop {
        while pending.len() < depth && !load.stop.is_cancelled() {
            seq += 1;
            write
                .write_all(&thrift_call("Calc:add", seq))
                .await
                .unwrap();
            load.in_flight.fetch_add(1, Ordering::SeqCst);
            pending.push_back((seq, Instant::now()));
        }
        let Some((seq, started)) = pending.pop_front() else {
            return records;
        };
        let frame = tokio::time::timeout(WAIT, replies.next())
            .await
            .unwrap_or_else(|_| panic!("no Thrift reply to seqid {seq} within {WAIT:?}"));
        load.in_flight.fetch_sub(1, Ordering::SeqCst);
        load.done.fetch_add(1, Ordering::SeqCst);
        records.push(Record {
            started,
            finished: Instant::now(),
            answer: thrift_answer(frame, seq),
        });
    }
}

/// One call of `name` on a fresh connection: the result string, or what came instead.
pub(crate) async fn thrift_once(rpc: SocketAddr, name: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(rpc).await.unwrap();
    stream.write_all(&thrift_call(name, 1)).await.unwrap();
    let mut replies = FramedRead::new(
        stream,
        ThriftDecoder::for_dialect(WireDialect::HEADER, 1 << 24),
    );
    let frame = tokio::time::timeout(WAIT, replies.next())
        .await
        .expect("no Thrift reply");
    thrift_answer(frame, 1)
}

/// Waits (at most [`WAIT`]) until `ready()` holds.
pub(crate) async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
