//! The demo's in-process gRPC upstream: `tracebridge.demo.v1.Greeter` from the built-in
//! descriptor set, served over h2c with prost-reflect dynamic messages. Each call is printed
//! with the trace context it arrived with, and the `traceparent` it saw is sent back as the
//! initial metadata `x-received-traceparent`, so a bridged curl shows the trace continuing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::bridge::descriptors;
use crate::codec::grpc;
use crate::error::{ErrorKind, GatewayError, Side};

/// The reply body: messages then trailers, all known up front.
type ReplyBody = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
>;

/// Starts the Greeter on a free loopback port.
pub(super) async fn start_greeter(
    seen: mpsc::UnboundedSender<String>,
) -> Result<SocketAddr, GatewayError> {
    let internal = |m: &'static str| {
        move |e: std::io::Error| {
            GatewayError::new(ErrorKind::Internal, Side::Internal, m).with_source(e)
        }
    };
    let pool = descriptors::builtin()
        .map_err(|e| GatewayError::new(ErrorKind::Internal, Side::Internal, e))?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(internal("cannot bind the demo gRPC upstream"))?;
    let address = listener
        .local_addr()
        .map_err(internal("demo gRPC upstream has no address"))?;
    let seen = Arc::new(seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, pool) = (seen.clone(), pool.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (seen, pool) = (seen.clone(), pool.clone());
                async move { Ok::<_, Infallible>(serve(&pool, &seen, req).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

async fn serve(
    pool: &DescriptorPool,
    seen: &mpsc::UnboundedSender<String>,
    req: Request<Incoming>,
) -> Response<ReplyBody> {
    let path = req.uri().path().to_owned();
    let traceparent = req.headers().get("traceparent").cloned();
    let mut line = format!("upstream greeter <-- gRPC {path}");
    if let Some(tp) = traceparent.as_ref().and_then(|v| v.to_str().ok()) {
        line.push_str(&format!(" traceparent={tp}"));
    }
    let _ = seen.send(line);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (frames, status, message) = match answer(pool, &path, &body) {
        Ok(frames) => (frames, 0, String::new()),
        Err((code, message)) => (Vec::new(), code, message),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    if !message.is_empty() {
        trailers.insert("grpc-message", grpc::encode_message(&message));
    }
    let mut chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> = frames
        .into_iter()
        .map(|f| Ok(http_body::Frame::data(f)))
        .collect();
    chunks.push(Ok(http_body::Frame::trailers(trailers)));
    let mut resp = Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        chunks,
    )));
    let headers = resp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    if let Some(tp) = traceparent {
        headers.insert("x-received-traceparent", tp);
    }
    resp
}

/// The reply messages of one call, framed; or a status code and message.
fn answer(pool: &DescriptorPool, path: &str, body: &[u8]) -> Result<Vec<Bytes>, (u32, String)> {
    let msg = |name: &str| {
        pool.get_message_by_name(&format!("tracebridge.demo.v1.{name}"))
            .ok_or((13, format!("{name} is not in the descriptor set")))
    };
    let (input, reply_type) = match path {
        "/tracebridge.demo.v1.Greeter/SayHello" => ("HelloRequest", "HelloReply"),
        "/tracebridge.demo.v1.Greeter/Countdown" => ("CountdownRequest", "CountdownReply"),
        _ => return Err((12, format!("{path} is not implemented by the demo"))),
    };
    let mut buf = BytesMut::from(body);
    let request = match grpc::decode_frame(&mut buf, grpc::DEFAULT_MAX_MESSAGE_SIZE) {
        Ok(Some((false, m))) => {
            DynamicMessage::decode(msg(input)?, m).map_err(|e| (3, format!("bad {input}: {e}")))?
        }
        _ => return Err((3, "expected one uncompressed message".into())),
    };
    let field = |name: &str| request.get_field_by_name(name).map(|v| v.into_owned());
    let mut out = Vec::new();
    if reply_type == "HelloReply" {
        let name = field("name").and_then(|v| v.as_str().map(str::to_owned));
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "stranger".into());
        let greeting = field("greeting").and_then(|v| v.as_str().map(str::to_owned));
        let greeting = greeting
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| "hello".into());
        let mut text = DynamicMessage::new(msg("HelloMessage")?);
        text.set_field_by_name("text", Value::String(format!("{greeting}, {name}!")));
        text.set_field_by_name("words", Value::U32(2));
        let mut reply = DynamicMessage::new(msg(reply_type)?);
        reply.set_field_by_name("message", Value::Message(text));
        for echoed in ["visitor_id", "mood", "tags"] {
            if let Some(v) = field(echoed) {
                reply.set_field_by_name(echoed, v);
            }
        }
        out.push(frame(&reply));
    } else {
        let from = field("from")
            .and_then(|v| v.as_i32())
            .unwrap_or(0)
            .clamp(0, 100);
        for n in (1..=from).rev() {
            let mut reply = DynamicMessage::new(msg(reply_type)?);
            reply.set_field_by_name("n", Value::I32(n));
            out.push(frame(&reply));
        }
    }
    Ok(out)
}

fn frame(msg: &DynamicMessage) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.encoded_len());
    crate::codec::grpc::write_prefix(&mut out, 0, msg.encoded_len());
    // Encoding into a BytesMut with room for the message cannot fail.
    let _ = msg.encode(&mut out);
    out.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_say_hello_and_countdown() {
        let pool = descriptors::builtin().unwrap();
        let mut req = DynamicMessage::new(
            pool.get_message_by_name("tracebridge.demo.v1.CountdownRequest")
                .unwrap(),
        );
        req.set_field_by_name("from", Value::I32(2));
        let frames = answer(
            &pool,
            "/tracebridge.demo.v1.Greeter/Countdown",
            &frame(&req),
        )
        .unwrap();
        assert_eq!(
            frames,
            vec![
                Bytes::from_static(b"\0\0\0\0\x02\x08\x02"),
                Bytes::from_static(b"\0\0\0\0\x02\x08\x01")
            ]
        );
        assert_eq!(
            answer(&pool, "/x.Y/Z", b"").unwrap_err(),
            (12, "/x.Y/Z is not implemented by the demo".to_owned())
        );
    }
}
