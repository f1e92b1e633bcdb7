//! The [`Carrier`] trait: where trace headers are read from and written to.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// A set of key/value headers that trace context travels in.
///
/// Implemented for `http::HeaderMap` (HTTP/1.1, h2 and gRPC metadata; keys lower-case) and for
/// a THeader info-header list `Vec<(Bytes, Bytes)>` (keys case-sensitive, the last duplicate
/// wins, as in every THeader reader). Keys passed in are always lower-case ASCII.
pub trait Carrier {
    /// The value of `key`, if present (the first value for HTTP, the last for THeader).
    fn get(&self, key: &str) -> Option<&[u8]>;
    /// Calls `f` with every value of `key`, in the order received: each HTTP field line
    /// (`HeaderMap::get_all`), each THeader pair with that key. For headers whose repeated
    /// fields are combined (RFC 9110 §5.3: `tracestate`) or must not repeat (`traceparent`).
    /// The values borrow from the carrier, so `f` may keep them.
    fn get_all<'a>(&'a self, key: &str, f: &mut dyn FnMut(&'a [u8]));
    /// Sets `key` to `value`, replacing any existing values. `value` comes from the id pool.
    /// Values that are not valid for the carrier (e.g. control characters in HTTP) are skipped.
    fn set(&mut self, key: &'static str, value: Bytes);
    /// Removes every value of `key`.
    fn remove(&mut self, key: &str);
    /// Calls `f` for every header whose key starts with `prefix` (for `uberctx-*`).
    fn for_each_prefixed(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8]));
    /// Removes every header whose key is in `keys`. The default removes key by key; carriers
    /// where a lookup costs more than a scan override it.
    fn remove_all(&mut self, keys: &[&'static str]) {
        for key in keys {
            self.remove(key);
        }
    }
}

impl Carrier for HeaderMap {
    fn get(&self, key: &str) -> Option<&[u8]> {
        HeaderMap::get(self, key).map(HeaderValue::as_bytes)
    }

    fn get_all<'a>(&'a self, key: &str, f: &mut dyn FnMut(&'a [u8])) {
        for value in HeaderMap::get_all(self, key) {
            f(value.as_bytes());
        }
    }

    fn set(&mut self, key: &'static str, value: Bytes) {
        // from_static does not allocate for a lower-case key; from_maybe_shared wraps the
        // pooled bytes without copying.
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            self.insert(HeaderName::from_static(key), value);
        }
    }

    fn remove(&mut self, key: &str) {
        HeaderMap::remove(self, key);
    }

    fn for_each_prefixed(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self {
            if name.as_str().starts_with(prefix) {
                f(name.as_str(), value.as_bytes());
            }
        }
    }

    fn remove_all(&mut self, keys: &[&'static str]) {
        // One scan over the (few) present names instead of a hashed lookup per key; only the
        // keys actually present are then removed.
        let mut present: [Option<&'static str>; 16] = [None; 16];
        let mut n = 0;
        for name in self.keys() {
            if let Some(k) = keys.iter().find(|k| **k == name.as_str())
                && n < present.len()
                && !present[..n].contains(&Some(*k))
            {
                present[n] = Some(*k);
                n += 1;
            }
        }
        for key in present.iter().flatten() {
            self.remove(HeaderName::from_static(key));
        }
    }
}

impl Carrier for Vec<(Bytes, Bytes)> {
    fn get(&self, key: &str) -> Option<&[u8]> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    fn get_all<'a>(&'a self, key: &str, f: &mut dyn FnMut(&'a [u8])) {
        for (k, v) in self {
            if k.as_ref() == key.as_bytes() {
                f(v);
            }
        }
    }

    fn set(&mut self, key: &'static str, value: Bytes) {
        Carrier::remove(self, key);
        self.push((Bytes::from_static(key.as_bytes()), value));
    }

    fn remove(&mut self, key: &str) {
        self.retain(|(k, _)| k.as_ref() != key.as_bytes());
    }

    fn for_each_prefixed(&self, prefix: &str, f: &mut dyn FnMut(&str, &[u8])) {
        for (k, v) in self {
            if let Ok(k) = std::str::from_utf8(k)
                && k.starts_with(prefix)
            {
                f(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all<'a>(c: &'a dyn Carrier, key: &str) -> Vec<&'a [u8]> {
        let mut values = Vec::new();
        c.get_all(key, &mut |v| values.push(v));
        values
    }

    #[test]
    fn get_all_gives_every_field_line_in_order() {
        let mut h = HeaderMap::new();
        h.append("tracestate", HeaderValue::from_static("a=1"));
        h.append("x-other", HeaderValue::from_static("x"));
        h.append("tracestate", HeaderValue::from_static("b=2, c=3"));
        assert_eq!(all(&h, "tracestate"), [&b"a=1"[..], b"b=2, c=3"]);
        assert!(all(&h, "traceparent").is_empty());
    }

    #[test]
    fn header_map_first_value_and_replace() {
        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static("a"));
        h.append("traceparent", HeaderValue::from_static("b"));
        assert_eq!(Carrier::get(&h, "traceparent"), Some(&b"a"[..]));
        Carrier::set(&mut h, "traceparent", Bytes::from_static(b"c"));
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert_eq!(Carrier::get(&h, "traceparent"), Some(&b"c"[..]));
        // An invalid header value is skipped, not a panic.
        Carrier::set(&mut h, "b3", Bytes::from_static(b"bad\nvalue"));
        assert!(h.get("b3").is_none());
    }

    #[test]
    fn theader_list_is_case_sensitive_and_last_wins() {
        let mut l: Vec<(Bytes, Bytes)> = vec![
            (
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(b"first"),
            ),
            (
                Bytes::from_static(b"Traceparent"),
                Bytes::from_static(b"upper"),
            ),
            (
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(b"last"),
            ),
        ];
        assert_eq!(Carrier::get(&l, "traceparent"), Some(&b"last"[..]));
        assert_eq!(all(&l, "traceparent"), [&b"first"[..], b"last"]);
        assert!(all(&l, "tracestate").is_empty());
        Carrier::set(&mut l, "traceparent", Bytes::from_static(b"new"));
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].0, Bytes::from_static(b"Traceparent"));
        let mut seen = Vec::new();
        l.push((Bytes::from_static(b"uberctx-a"), Bytes::from_static(b"1")));
        l.for_each_prefixed("uberctx-", &mut |k, v| {
            seen.push((k.to_owned(), v.to_vec()))
        });
        assert_eq!(seen, vec![("uberctx-a".to_owned(), b"1".to_vec())]);
    }
}
