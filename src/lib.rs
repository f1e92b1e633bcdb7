//! tracebridge: a gateway that terminates HTTP (1.1, h2c), gRPC and Apache Thrift, keeps one
//! distributed trace alive across all three, and forwards calls, also across protocols.
//!
//! # Layout
//!
//! A request flows through the modules in this order:
//!
//! ```text
//! downstream ─▶ listener ─▶ codec(decode) ─▶ trace(extract) ─▶ policy(route, enforce, sample)
//!            ─▶ trace(inject) ─▶ bridge (only when protocols differ) ─▶ codec(encode)
//!            ─▶ upstream ─▶ upstream service
//! reply: the same path back; errors become the protocol's own error (error.rs).
//! side:  spans ─▶ bounded channel ─▶ OTLP exporter;  counters/histograms ─▶ /metrics
//! ```
//!
//! - [`listener`]: accept loops per protocol, connection limits, timeouts, drain.
//! - [`codec`]: bytes ⇄ frames, pure and I/O-free (HTTP header hygiene here).
//! - [`trace`]: `TraceContext`, every trace header format, the `Carrier` trait, the pooled id writer.
//! - [`policy`]: route matching, trace enforcement, sampling.
//! - [`bridge`]: HTTP/JSON → gRPC transcoding from descriptor sets and `google.api.http` rules.
//! - [`upstream`]: endpoint pools per protocol.
//! - [`telemetry`]: spans over OTLP, Prometheus metrics, the admin endpoint.
//! - [`config`]: TOML → validated typed config; every error names its key path.
//! - [`app`]: wiring and lifetimes; the only module that sees everything.

pub mod app;
pub mod bridge;
pub mod call;
pub mod codec;
pub mod config;
pub mod error;
pub mod io;
pub mod listener;
pub mod pipeline;
pub mod policy;
pub mod telemetry;
pub mod trace;
pub mod upstream;
