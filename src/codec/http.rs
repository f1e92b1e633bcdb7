//! HTTP header hygiene for forwarding: what a proxy must remove and add (RFC 9110 §7.6);
//! [`target`] settles the authority and path a request is routed and forwarded by.

pub mod target;

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields that never cross a proxy (RFC 9110 §7.6.1, plus the legacy
/// `keep-alive` and `proxy-connection` that RFC 9110 tells intermediaries to drop).
/// `te` is handled separately: `te: trailers` is end-to-end meaningful for gRPC over h2.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

/// Removes hop-by-hop headers: the fixed set, `keep-alive`, `proxy-connection`, every field
/// named in `Connection`, and `TE` unless its value is exactly `trailers`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Fields named by Connection go first, while Connection is still there to read.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    let te_trailers_only = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers_only {
        headers.remove(header::TE);
    }
}

/// The `Via` received-protocol token for an HTTP version (RFC 9110 §7.6.3).
pub fn via_value(version: http::Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        http::Version::HTTP_10 => "1.0 tracebridge",
        http::Version::HTTP_2 => "2 tracebridge",
        http::Version::HTTP_3 => "3 tracebridge",
        _ => "1.1 tracebridge",
    })
}

/// How many times this gateway's own `Via` token appears (to detect routing loops).
pub fn own_hops(headers: &HeaderMap) -> usize {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|hop| hop.trim().ends_with(" tracebridge"))
        .count()
}

/// The caller's address as an `X-Forwarded-For` element, made once per connection.
pub fn client_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// What a hop adds to the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The downstream's HTTP version (the `Via` token).
    pub version: http::Version,
    /// The caller's address, from [`client_value`].
    pub client: &'a HeaderValue,
    /// The authority the request was sent to (its `Host`), if any.
    pub host: Option<&'a HeaderValue>,
    /// The caller is a trusted proxy: the `X-Forwarded-*` it sent are kept.
    pub trusted: bool,
}

/// Appends this hop to `Via` and sets the `X-Forwarded-*` headers. From a trusted proxy the
/// caller's address is appended to `X-Forwarded-For` and its `X-Forwarded-Proto` /
/// `X-Forwarded-Host` are kept (set if absent); from anyone else all three are replaced by
/// what this hop saw, so a client cannot forge its address, scheme or host.
pub fn add_forwarding_headers(headers: &mut HeaderMap, hop: &Forwarded<'_>) {
    headers.append(header::VIA, via_value(hop.version));
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    if !hop.trusted {
        headers.insert(xff, hop.client.clone());
        headers.insert(xfp, HeaderValue::from_static("http"));
        match hop.host {
            Some(host) => headers.insert(xfh, host.clone()),
            None => headers.remove(xfh),
        };
        return;
    }
    // Every prior field line joins into one list (RFC 9110 §5.3).
    let mut joined: Vec<u8> = Vec::new();
    for prior in headers.get_all(&xff).iter().map(HeaderValue::as_bytes) {
        if !prior.is_empty() {
            joined.extend_from_slice(prior);
            joined.extend_from_slice(b", ");
        }
    }
    let combined = if joined.is_empty() {
        Some(hop.client.clone())
    } else {
        joined.extend_from_slice(hop.client.as_bytes());
        HeaderValue::from_bytes(&joined).ok()
    };
    if let Some(value) = combined {
        headers.insert(xff, value);
    }
    headers
        .entry(xfp)
        .or_insert(HeaderValue::from_static("http"));
    if let Some(host) = hop.host {
        headers.entry(xfh).or_insert(host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
            ("traceparent", "kept"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, vec!["traceparent", "x-end-to-end"]);
    }

    #[test]
    fn counts_own_hops() {
        let h = map(&[
            ("via", "1.1 tracebridge, 1.1 edge"),
            ("via", "2 tracebridge"),
        ]);
        assert_eq!(own_hops(&h), 2);
        assert_eq!(own_hops(&HeaderMap::new()), 0);
    }

    #[test]
    fn keeps_te_trailers() {
        let mut h = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn forwarding_headers_from_trusted_and_untrusted_callers() {
        let sent = [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "forged.test"),
            ("via", "1.1 edge"),
        ];
        let client = client_value("127.0.0.1".parse().unwrap());
        let host = HeaderValue::from_static("api.test");
        // (trusted, host, want XFF, want XFP, want XFH)
        let cases = [
            (
                true,
                Some(&host),
                "10.0.0.1, 10.0.0.2, 127.0.0.1",
                "https",
                Some("forged.test"),
            ),
            (false, Some(&host), "127.0.0.1", "http", Some("api.test")),
            (false, None, "127.0.0.1", "http", None),
        ];
        for (trusted, host, xff, xfp, xfh) in cases {
            let mut h = map(&sent);
            let hop = Forwarded {
                version: http::Version::HTTP_2,
                client: &client,
                host,
                trusted,
            };
            add_forwarding_headers(&mut h, &hop);
            assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1, "{trusted}");
            assert_eq!(h["x-forwarded-for"], xff, "{trusted}");
            assert_eq!(h["x-forwarded-proto"], xfp, "{trusted}");
            assert_eq!(
                h.get("x-forwarded-host").map(|v| v.to_str().unwrap()),
                xfh,
                "{trusted}"
            );
            let via: Vec<_> = h
                .get_all("via")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(via, vec!["1.1 edge", "2 tracebridge"]);
        }
        let mut h = HeaderMap::new();
        let hop = Forwarded {
            version: http::Version::HTTP_11,
            client: &client,
            host: Some(&host),
            trusted: true,
        };
        add_forwarding_headers(&mut h, &hop);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.test");
    }
}
