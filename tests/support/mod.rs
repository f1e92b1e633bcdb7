//! Shared test support: in-process upstreams that record what they received, and clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub path_and_query: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the recording upstream answers.
#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
    pub delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: StatusCode::OK,
            headers: vec![],
            body: "hello from upstream",
            delay: Duration::ZERO,
        }
    }
}

/// A recording HTTP upstream (HTTP/1.1 and h2c prior knowledge on one port).
pub struct Upstream {
    pub address: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start(answer: Answer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let answer = answer.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        record.lock().unwrap().push(Seen {
                            method: parts.method,
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            version: parts.version,
                            headers: parts.headers,
                            body,
                        });
                        if !answer.delay.is_zero() {
                            tokio::time::sleep(answer.delay).await;
                        }
                        let mut resp =
                            Response::new(Full::new(Bytes::from_static(answer.body.as_bytes())));
                        *resp.status_mut() = answer.status;
                        for (k, v) in &answer.headers {
                            resp.headers_mut().append(*k, v.parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { address, seen }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// An h2c (prior knowledge) server on 127.0.0.1:0 answering every request with `handler`;
/// for gRPC upstreams in tests.
pub async fn serve_h2c<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// A client for HTTP/1.1 or h2c prior knowledge.
pub fn client(
    http2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

/// Sends a request and collects the response.
pub async fn send(
    http2: bool,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client(http2).request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// A port that nothing listens on (bound, then closed), on 127.0.0.2 so that the gateway,
/// which binds 127.0.0.1, can never be handed the same address.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Splits a version-00 traceparent into (trace id, parent id, flags).
pub fn traceparent(headers: &HeaderMap) -> (String, String, String) {
    let v = headers
        .get("traceparent")
        .expect("no traceparent")
        .to_str()
        .unwrap();
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

pub mod thrift;

/// Everything a caller got back over HTTP: status, headers, the whole body and the trailers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Sends `req` over HTTP/1.1 or h2c prior knowledge and collects the whole answer, trailers
/// included; panics if it takes more than 5 s.
pub async fn exchange(http2: bool, req: Request<Full<Bytes>>) -> Reply {
    let answer = async {
        let resp = client(http2).request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    };
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("no answer within 5 s")
}

/// The admin listener's `/metrics` text.
pub async fn scrape(admin: SocketAddr) -> String {
    let (status, _, body) = send(false, admin, "GET", "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK, "GET /metrics");
    String::from_utf8(body.to_vec()).unwrap()
}

/// The samples of the counter `families` in a scrape, as `name{labels}` → value.
pub fn counters(text: &str, families: &[&str]) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            families
                .iter()
                .any(|f| series.strip_prefix(f).is_some_and(|r| r.starts_with('{')))
        })
        .map(|(series, value)| {
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{series} {value}"));
            (series.to_owned(), value as u64)
        })
        .collect()
}

/// Whether `s` is a W3C trace id as the gateway shows it: 32 lower-case hex digits, not all
/// zero.
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}
