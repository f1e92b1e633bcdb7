//! `codec`: bytes ⇄ frames, pure and I/O-free.
//!
//! - [`http`]: HTTP message hygiene for a proxy — hop-by-hop header removal (RFC 9110 §7.6.1)
//!   and the `Via` / `X-Forwarded-*` headers. hyper does the HTTP/1.1 and HTTP/2 framing.
//! - [`grpc`]: which requests are gRPC, `grpc-timeout`, trailers-only statuses.
//! - [`thrift`]: Thrift transports, THeader, message peek, binary ⇄ compact.

pub mod grpc;
pub mod http;
pub mod thrift;
