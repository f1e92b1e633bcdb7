//! A minimal gRPC upstream for the load harness (h2c): `/bench.Svc/Unary` answers one
//! 64-byte message, `/bench.Svc/Stream` answers 10 of them (server streaming); both end with
//! `grpc-status: 0` trailers. Prints `listening address=<ip:port>`.
//!
//! `cargo run --release --example grpc_bench_upstream -- 127.0.0.1:0`

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Messages per `/bench.Svc/Stream` call.
const STREAM_MESSAGES: usize = 10;

fn message() -> Bytes {
    let mut m = BytesMut::with_capacity(69);
    m.put_u8(0);
    m.put_u32(64);
    m.put_bytes(b'x', 64);
    m.freeze()
}

async fn answer(
    req: Request<Incoming>,
) -> Result<
    Response<
        StreamBody<
            futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
        >,
    >,
    Infallible,
> {
    let count = if req.uri().path().ends_with("/Stream") {
        STREAM_MESSAGES
    } else {
        1
    };
    // Read the request message(s) whole: unary and server-streaming requests are one message.
    let _ = req.into_body().collect().await;
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
        (0..count).map(|_| Ok(Frame::data(message()))).collect();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    frames.push(Ok(Frame::trailers(trailers)));
    let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(resp)
}

fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        println!("listening address={}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1024)
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    })
}
