//! `policy`: decisions on a call, as pure functions and state machines.
//!
//! - [`route`]: which route a request takes (host, path prefix, headers, query).
//! - [`enforce`]: what to do when no valid trace context arrived (`on_missing`).
//! - [`sample`]: whether the gateway's spans are recorded (parent-based ratio).

pub mod enforce;
pub mod route;
pub mod sample;

pub use enforce::{Decision, enforce};
pub use route::{HttpRequestView, Router};
pub use sample::Sampler;
