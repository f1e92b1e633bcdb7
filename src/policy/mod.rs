//! `policy`: decisions on a call, as pure functions and state machines.
//!
//! - [`route`]: which route a request takes (host, path prefix, headers, query).
//! - [`enforce`]: what to do when no valid trace context arrived (`on_missing`).
//! - [`sample`]: whether the gateway's spans are recorded (parent-based ratio).
//! - [`trust`]: which downstream peers are trusted proxies (`trusted_proxies`).

pub mod enforce;
pub mod route;
pub mod sample;
pub mod trust;

pub use enforce::{Decision, enforce};
pub use route::{HttpRequestView, Router};
pub use sample::Sampler;
pub use trust::Cidr;
