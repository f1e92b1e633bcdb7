//! The [`Carrier`] trait: where trace headers are read from and written to.

use bytes::Bytes;

/// A set of key/value headers that trace context travels in.
///
/// Implemented for `http::HeaderMap` (HTTP/1.1, h2 and gRPC metadata; keys lower-case) and for
/// a THeader info-header list `Vec<(Bytes, Bytes)>` (keys case-sensitive, the last duplicate wins).
/// Keys passed in are always lower-case ASCII.
pub trait Carrier {
    /// The value of `key`, if present (the first value for HTTP, the last for THeader).
    fn get(&self, key: &str) -> Option<&[u8]>;
    /// Sets `key` to `value`, replacing any existing values. `value` comes from the id pool.
    /// Values that are not valid for the carrier (e.g. control characters in HTTP) are skipped.
    fn set(&mut self, key: &'static str, value: Bytes);
    /// Removes every value of `key`.
    fn remove(&mut self, key: &str);
    /// Calls `f` for every header whose key starts with `prefix` (for `uberctx-*`).
    fn for_each_prefixed(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8]));
}

// NOTE for implementers: implement for http::HeaderMap and Vec<(Bytes, Bytes)> here.
