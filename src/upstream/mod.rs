//! `upstream`: endpoint pools per protocol, and balancing across endpoints.
//!
//! - [`http`]: HTTP/1.1 and h2c (prior knowledge) pools on hyper-util's client, round-robin.

pub mod http;
pub mod thrift;

pub use self::http::HttpUpstream;
