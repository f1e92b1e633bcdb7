//! `codec`: bytes ⇄ frames, pure and I/O-free.
//!
//! - [`http`]: HTTP message hygiene for a proxy — hop-by-hop header removal (RFC 9110 §7.6.1)
//!   and the `Via` / `X-Forwarded-*` headers. hyper does the HTTP/1.1 and HTTP/2 framing.
//! - [`grpc`]: which requests are gRPC, `grpc-timeout`, trailers-only statuses.
//! - [`grpc_web`]: gRPC-Web ⇄ gRPC (content types, base64 `-text` bodies, in-body trailers).
//! - [`thrift`]: Thrift transports, THeader, message peek, binary ⇄ compact.

pub mod grpc;
pub mod grpc_web;
pub mod http;
pub mod thrift;
