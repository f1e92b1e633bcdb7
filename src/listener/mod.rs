//! `listener`: accept loops per protocol, connection limits, timeouts, drain.
//!
//! - [`http`]: HTTP/1.1 and h2c (prior knowledge) on one port; the request handler runs the
//!   phases route → extract → enforce → sample → inject → dispatch → respond → record.

pub mod http;

pub use self::http::{HttpRoute, HttpStage, serve_http};
