//! Whole requests through the running gateway, counted on every thread of one current-thread
//! runtime that holds client, gateway and upstream alike. The same N keep-alive requests are
//! counted four ways, so hyper's (and tokio's) share separates from the gateway's own:
//!
//! - direct: client → upstream;
//! - bare proxy: client → the least proxy (HTTP: a hyper server handing each request to a
//!   hyper-util pooled client, configured like the gateway's; Thrift: a TCP relay) → upstream;
//! - tracebridge, spans unsampled (`ratio = 0.0`, no incoming context) and sampled
//!   (`ratio = 1.0`);
//! - ours = tracebridge − bare proxy.
//!
//! The figures are printed (`--nocapture`) and bounded loosely, so that a change adding many
//! allocations per request fails; no timing is measured.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, FramedRead};
use tracebridge::app::{self, RunningGateway};
use tracebridge::codec::thrift::encode_message_header;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{HeaderHead, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use tracebridge::trace::Carrier;

use super::RuntimeCounter;

const WARM_UP: usize = 200;
const N: usize = 500;
const BODY: &[u8] = b"hello from upstream";

/// Generous bounds on the gateway's own allocations per request (tracebridge − bare proxy).
/// Measured when this test was written (debug build, hyper 1.12, tokio 1.54): HTTP 8
/// unsampled, 26 sampled; Thrift 20 unsampled, 41 sampled. A change that adds a few
/// allocations per request still passes; one that adds a dozen (a `format!` per header, a
/// label built per request) fails.
const OURS_HTTP_UNSAMPLED: f64 = 20.0;
const OURS_HTTP_SAMPLED: f64 = 50.0;
const OURS_THRIFT_UNSAMPLED: f64 = 35.0;
const OURS_THRIFT_SAMPLED: f64 = 70.0;

/// How the upstream saw the trace context of the requests it got (`traceparent` flags).
#[derive(Debug, Default)]
struct SeenFlags {
    none: AtomicUsize,
    unsampled: AtomicUsize,
    sampled: AtomicUsize,
}

impl SeenFlags {
    fn note(&self, traceparent: Option<&[u8]>) {
        let slot = match traceparent {
            None => &self.none,
            // Sampled, with or without the Level 2 random bit (set on the gateway's roots).
            Some(t) if t.ends_with(b"-01") || t.ends_with(b"-03") => &self.sampled,
            Some(_) => &self.unsampled,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    /// (none, unsampled, sampled) since the last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.none.swap(0, Ordering::Relaxed),
            self.unsampled.swap(0, Ordering::Relaxed),
            self.sampled.swap(0, Ordering::Relaxed),
        )
    }
}

/// The four figures of one protocol, allocations per request.
#[derive(Debug)]
struct Figures {
    direct: f64,
    bare: f64,
    unsampled: f64,
    sampled: f64,
}

impl Figures {
    fn print(&self, protocol: &str, bare: &str) {
        println!(
            "whole {protocol} request, allocations per request (N={N} keep-alive, after {WARM_UP}): \
             direct {:.2} | {bare} {:.2} (proxy share {:.2}) | tracebridge unsampled {:.2}, \
             sampled {:.2} | ours (tracebridge − {bare}) unsampled {:.2}, sampled {:.2}",
            self.direct,
            self.bare,
            self.bare - self.direct,
            self.unsampled,
            self.sampled,
            self.unsampled - self.bare,
            self.sampled - self.bare,
        );
    }

    fn check(&self, unsampled_bound: f64, sampled_bound: f64) {
        // The counter sees the gateway's tasks, and the span records of sampled calls.
        assert!(self.unsampled > self.bare, "{self:?}");
        assert!(self.sampled > self.unsampled, "{self:?}");
        let ours = (self.unsampled - self.bare, self.sampled - self.bare);
        assert!(ours.0 <= unsampled_bound, "ours unsampled: {self:?}");
        assert!(ours.1 <= sampled_bound, "ours sampled: {self:?}");
    }
}

/// Counts the allocations of N requests after the warm-up; `request` runs one.
async fn per_request<C>(
    counter: &RuntimeCounter,
    client: &mut C,
    mut request: impl AsyncFnMut(&mut C),
) -> f64 {
    for _ in 0..WARM_UP {
        request(client).await;
    }
    counter.start();
    for _ in 0..N {
        request(client).await;
    }
    counter.stop() as f64 / N as f64
}

async fn start_gateway(config: &str, listener: &str) -> (RunningGateway, SocketAddr) {
    let cfg = tracebridge::config::parse(config).unwrap_or_else(|e| panic!("config: {e}"));
    let gw = app::start(cfg).await.unwrap();
    let address = gw.address(listener).unwrap();
    (gw, address)
}

fn ratio(sampled: bool) -> &'static str {
    if sampled { "1.0" } else { "0.0" }
}

// ---- HTTP/1.1 ----

fn http_config(upstream: SocketAddr, sampled: bool) -> String {
    let ratio = ratio(sampled);
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[telemetry]
sampler = {{ kind = "parent_ratio", ratio = {ratio} }}
[propagation]
extract = ["w3c", "jaeger", "b3"]
inject = ["w3c"]
on_missing = "start"
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
name = "strict"
listener = "edge"
match = {{ path_prefix = "/strict" }}
upstream = "svc"
on_missing = "reject"
[[routes]]
name = "main"
listener = "edge"
match = {{ path_prefix = "/api" }}
upstream = "svc"
[[upstreams]]
name = "svc"
protocol = "http"
endpoints = ["{upstream}"]
"#
    )
}

/// An HTTP/1.1 upstream answering every request with a fixed body.
async fn http_upstream(seen: Arc<SeenFlags>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                seen.note(req.headers().get("traceparent").map(|v| v.as_bytes()));
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY)))) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(conn);
        }
    });
    address
}

/// The least HTTP proxy: hyper-util's auto server (timers and header timeout as the gateway
/// sets them) hands each request, URI rewritten, to hyper-util's pooled client (configured as
/// the gateway's upstream pool) and returns the response as it comes. No tracebridge code.
async fn bare_http_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);
    let authority: Authority = upstream.to_string().parse().unwrap();
    tokio::spawn(async move {
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        server.http2().timer(TokioTimer::new());
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let (client, authority) = (client.clone(), authority.clone());
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(Scheme::HTTP);
                parts.authority = Some(authority.clone());
                parts.path_and_query = req.uri().path_and_query().cloned();
                *req.uri_mut() = Uri::from_parts(parts).unwrap();
                client.request(req)
            });
            let conn = server
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    });
    address
}

/// One keep-alive HTTP/1.1 connection sending `GET /api/users?id=7` as curl does.
struct HttpClient {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl HttpClient {
    async fn connect(address: SocketAddr) -> HttpClient {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        HttpClient { sender }
    }

    async fn get(&mut self) {
        self.sender.ready().await.unwrap();
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = Uri::from_static("/api/users?id=7");
        let headers = req.headers_mut();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_static("api.example.com"),
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("curl/8.14"),
        );
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        let response = self.sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                assert_eq!(&data[..], &BODY[len..len + data.len()]);
                len += data.len();
            }
        }
        assert_eq!(len, BODY.len());
    }
}

async fn http_per_request(counter: &RuntimeCounter, address: SocketAddr) -> f64 {
    let mut client = HttpClient::connect(address).await;
    per_request(counter, &mut client, async |c: &mut HttpClient| {
        c.get().await
    })
    .await
}

#[test]
fn whole_http_request_allocations() {
    let counter = RuntimeCounter::take();
    let figures = counter.runtime().block_on(async {
        let seen = Arc::new(SeenFlags::default());
        let upstream = http_upstream(seen.clone()).await;
        let all = WARM_UP + N;
        let direct = http_per_request(&counter, upstream).await;
        let bare = http_per_request(&counter, bare_http_proxy(upstream).await).await;
        assert_eq!(seen.take(), (2 * all, 0, 0));
        let mut through = [0.0; 2];
        for (sampled, figure) in [false, true].into_iter().zip(&mut through) {
            let (gw, edge) = start_gateway(&http_config(upstream, sampled), "edge").await;
            *figure = http_per_request(&counter, edge).await;
            let want = if sampled { (0, 0, all) } else { (0, all, 0) };
            assert_eq!(seen.take(), want, "sampled {sampled}");
            gw.shutdown().await;
        }
        Figures {
            direct,
            bare,
            unsampled: through[0],
            sampled: through[1],
        }
    });
    figures.print("HTTP/1.1", "bare hyper proxy");
    figures.check(OURS_HTTP_UNSAMPLED, OURS_HTTP_SAMPLED);
}

// ---- Thrift (THeader, binary) ----

fn thrift_config(upstream: SocketAddr, sampled: bool) -> String {
    let ratio = ratio(sampled);
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[telemetry]
sampler = {{ kind = "parent_ratio", ratio = {ratio} }}
[propagation]
extract = ["w3c", "jaeger", "b3", "x-trace-raw"]
inject = ["w3c", "x-trace-raw"]
on_missing = "start"
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
name = "strict"
listener = "rpc"
match = {{ thrift_method = "Strict:" }}
upstream = "legacy"
on_missing = "reject"
[[routes]]
name = "main"
listener = "rpc"
match = {{ thrift_method = "add" }}
upstream = "legacy"
[[upstreams]]
name = "legacy"
protocol = "thrift"
transport = "header"
thrift_protocol = "binary"
endpoints = ["{upstream}"]
"#
    )
}

/// A THeader upstream echoing each call's args as its REPLY (no info headers back).
async fn thrift_upstream(seen: Arc<SeenFlags>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(echo_calls(stream, seen.clone()));
        }
    });
    address
}

async fn echo_calls(stream: TcpStream, seen: Arc<SeenFlags>) {
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, ThriftDecoder::new(1 << 24));
    let (mut message, mut out) = (BytesMut::new(), BytesMut::new());
    while let Some(Ok(frame)) = frames.next().await {
        let Frame::Header(h) = frame else {
            panic!("upstream got {frame:?}")
        };
        seen.note(Carrier::get(&h.info, "traceparent"));
        let m = peek_message(&h.payload, h.protocol).unwrap().unwrap();
        message.clear();
        encode_message_header(
            &mut message,
            h.protocol,
            m.name,
            MessageType::Reply,
            m.seq_id,
        );
        message.extend_from_slice(&h.payload[m.body_offset..]);
        let head = HeaderHead {
            flags: 0,
            seq_id: h.seq_id,
            protocol: h.protocol,
            transforms: &[],
            info: &[],
            persistent: &[],
        };
        out.clear();
        encode_head(&head, message.len(), &mut out).unwrap();
        out.extend_from_slice(&message);
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The least Thrift proxy: a TCP relay (what an L4 load balancer does).
async fn tcp_relay(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            down.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut up = TcpStream::connect(upstream).await.unwrap();
                up.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    address
}

/// The args struct `{ 1: i32 n, 2: string s }` in binary.
fn args() -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(8);
    b.put_i16(1);
    b.put_i32(7);
    b.put_u8(11);
    b.put_i16(2);
    b.put_i32(5);
    b.put_slice(b"hello");
    b.put_u8(0);
    b.freeze()
}

/// One THeader (binary) connection calling `add` with the same frame each time.
struct ThriftClient {
    stream: TcpStream,
    call: Bytes,
    reply: Vec<u8>,
}

impl ThriftClient {
    async fn connect(address: SocketAddr) -> ThriftClient {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut message = BytesMut::new();
        encode_message_header(
            &mut message,
            ProtocolId::Binary,
            "add",
            MessageType::Call,
            9,
        );
        message.extend_from_slice(&args());
        let head = HeaderHead {
            flags: 0,
            seq_id: 777,
            protocol: ProtocolId::Binary,
            transforms: &[],
            info: &[],
            persistent: &[],
        };
        let mut call = BytesMut::new();
        encode_head(&head, message.len(), &mut call).unwrap();
        call.extend_from_slice(&message);
        ThriftClient {
            stream,
            call: call.freeze(),
            reply: Vec::with_capacity(256),
        }
    }

    /// One call; the reply's bytes (length prefix included) stay in `self.reply`.
    async fn call(&mut self) {
        self.stream.write_all(&self.call).await.unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.unwrap();
        let n = u32::from_be_bytes(len) as usize;
        self.reply.clear();
        self.reply.extend_from_slice(&len);
        self.reply.resize(4 + n, 0);
        self.stream.read_exact(&mut self.reply[4..]).await.unwrap();
    }

    /// The last reply is the REPLY to `add` with the request's seqids and the args echoed.
    fn check_reply(&self) {
        let mut buf = BytesMut::from(&self.reply[..]);
        let frame = ThriftDecoder::new(1 << 24).decode(&mut buf).unwrap();
        let Some(Frame::Header(h)) = frame else {
            panic!("reply {frame:?}")
        };
        assert_eq!(h.seq_id, 777);
        let m = peek_message(&h.payload, h.protocol).unwrap().unwrap();
        assert_eq!((m.name, m.kind, m.seq_id), ("add", MessageType::Reply, 9));
        assert_eq!(&h.payload[m.body_offset..], &args()[..]);
    }
}

async fn thrift_per_request(counter: &RuntimeCounter, address: SocketAddr) -> f64 {
    let mut client = ThriftClient::connect(address).await;
    let n = per_request(counter, &mut client, async |c: &mut ThriftClient| {
        c.call().await
    })
    .await;
    client.check_reply();
    n
}

#[test]
fn whole_thrift_call_allocations() {
    let counter = RuntimeCounter::take();
    let figures = counter.runtime().block_on(async {
        let seen = Arc::new(SeenFlags::default());
        let upstream = thrift_upstream(seen.clone()).await;
        let all = WARM_UP + N;
        let direct = thrift_per_request(&counter, upstream).await;
        let bare = thrift_per_request(&counter, tcp_relay(upstream).await).await;
        assert_eq!(seen.take(), (2 * all, 0, 0));
        let mut through = [0.0; 2];
        for (sampled, figure) in [false, true].into_iter().zip(&mut through) {
            let (gw, rpc) = start_gateway(&thrift_config(upstream, sampled), "rpc").await;
            *figure = thrift_per_request(&counter, rpc).await;
            let want = if sampled { (0, 0, all) } else { (0, all, 0) };
            assert_eq!(seen.take(), want, "sampled {sampled}");
            gw.shutdown().await;
        }
        Figures {
            direct,
            bare,
            unsampled: through[0],
            sampled: through[1],
        }
    });
    figures.print("Thrift THeader", "TCP relay");
    figures.check(OURS_THRIFT_UNSAMPLED, OURS_THRIFT_SAMPLED);
}
