//! The request target a proxy routes and forwards: one authority and one path.
//!
//! - Authority (RFC 9112 §3.2, §3.2.2): an absolute-form target (or h2 `:authority`) wins and
//!   becomes the `Host` header; two `Host` fields, a `Host` that disagrees with the target's
//!   authority, a malformed `Host` or userinfo in the authority, and a missing `Host` on
//!   HTTP/1.1 are refused.
//! - Path: dot-segments removed (RFC 3986 §5.2.4) per the listener's
//!   [`PathNormalization`]; `%2e`/`%2f`, which a later hop may decode into another path than
//!   the one routed, are refused unless the mode says how to read them.

use std::borrow::Cow;
use std::fmt;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Version};

use crate::config::PathNormalization;

/// Why a request target is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// `CONNECT`: this gateway does not tunnel.
    Connect,
    /// More than one `Host` field.
    DuplicateHost,
    /// No `Host` on HTTP/1.1 (and no absolute-form target).
    MissingHost,
    /// A `Host` that is not `host[:port]`.
    BadHost,
    /// The target's authority carries userinfo (`user@host`).
    Userinfo,
    /// `Host` and the absolute-form target (or `:authority`) name different authorities.
    HostMismatch,
    /// The path holds `%2e` or `%2f` (named).
    EncodedPath(&'static str),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetError::Connect => "CONNECT is not supported: this gateway does not tunnel",
            TargetError::DuplicateHost => "request has more than one Host header",
            TargetError::MissingHost => "HTTP/1.1 request has no Host header",
            TargetError::BadHost => "Host header is not host[:port]",
            TargetError::Userinfo => "request target authority carries userinfo",
            TargetError::HostMismatch => {
                "Host header disagrees with the authority of the request target"
            }
            TargetError::EncodedPath(what) => {
                return write!(
                    f,
                    "request path holds an encoded {what}, ambiguous to normalise (path_normalization)"
                );
            }
        })
    }
}

/// Settles the request's authority and path in place: afterwards `Host` is the one authority
/// (absent only when none was sent on HTTP/1.0 or h2) and the URI's path is normalised.
pub fn decode_target<B>(req: &mut Request<B>, mode: PathNormalization) -> Result<(), TargetError> {
    if req.method() == Method::CONNECT {
        return Err(TargetError::Connect);
    }
    // A cheap clone (shared bytes): the headers are changed while it is read.
    let authority = req.uri().authority().cloned();
    settle_host(authority.as_ref(), req.version(), req.headers_mut())?;
    let Some(path) = normalize_path(req.uri().path(), mode)? else {
        return Ok(());
    };
    let with_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // The Host header now holds the authority: the URI keeps only the (normalised) path.
    let pq = PathAndQuery::try_from(with_query).map_err(|_| TargetError::EncodedPath("path"))?;
    *req.uri_mut() = Uri::from(pq);
    Ok(())
}

fn settle_host(
    authority: Option<&Authority>,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(), TargetError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    if let Some(h) = host
        && !h.is_empty()
        && !is_authority(h.as_bytes())
    {
        return Err(TargetError::BadHost);
    }
    match authority {
        Some(a) if a.as_str().contains('@') => Err(TargetError::Userinfo),
        Some(a) => {
            if host.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())) {
                return Err(TargetError::HostMismatch);
            }
            if host.is_none() {
                let value = HeaderValue::from_str(a.as_str()).map_err(|_| TargetError::BadHost)?;
                headers.insert(header::HOST, value);
            }
            Ok(())
        }
        None if host.is_none() && version == Version::HTTP_11 => Err(TargetError::MissingHost),
        None => Ok(()),
    }
}

fn is_authority(value: &[u8]) -> bool {
    !value.contains(&b'@') && Authority::try_from(value).is_ok()
}

/// The normalised path, or `None` when it is already normal (the common case: no copy).
pub fn normalize_path(path: &str, mode: PathNormalization) -> Result<Option<String>, TargetError> {
    if mode == PathNormalization::Off || !path.starts_with('/') {
        return Ok(None);
    }
    let encoded = |what: &[u8; 2]| {
        path.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1..].eq_ignore_ascii_case(what))
    };
    if encoded(b"2f") {
        return Err(TargetError::EncodedPath("'/' (%2f)"));
    }
    let path: Cow<'_, str> = if encoded(b"2e") {
        if mode == PathNormalization::Strict {
            return Err(TargetError::EncodedPath("'.' (%2e)"));
        }
        Cow::Owned(path.replace("%2e", ".").replace("%2E", "."))
    } else {
        Cow::Borrowed(path)
    };
    let has_dots = path
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    match (has_dots, path) {
        (true, p) => Ok(Some(remove_dot_segments(&p))),
        (false, Cow::Owned(p)) => Ok(Some(p)),
        (false, Cow::Borrowed(_)) => Ok(None),
    }
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments go, `..` removes the segment before it
/// (never above the root); a trailing `.` or `..` leaves a trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    let mut normal = String::with_capacity(path.len());
    for s in out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/api/users", None),
            ("/", None),
            ("/a/b/../c", Some("/a/c")),
            ("/a/./b", Some("/a/b")),
            ("/a/b/..", Some("/a/")),
            ("/a/.", Some("/a/")),
            ("/..", Some("/")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/api/../admin", Some("/admin")),
            ("//x/../y", Some("//y")),
            ("/a..b/.c", None),
            ("*", None),
        ];
        for (path, want) in cases {
            let got = normalize_path(path, PathNormalization::Strict).unwrap();
            assert_eq!(got.as_deref(), *want, "{path}");
            assert_eq!(normalize_path(path, PathNormalization::Off).unwrap(), None);
        }
    }

    #[test]
    fn encoded_dots_and_slashes_per_mode() {
        use PathNormalization::{DecodeDots, Off, Strict};
        let slash = Err(TargetError::EncodedPath("'/' (%2f)"));
        let dot = Err(TargetError::EncodedPath("'.' (%2e)"));
        assert_eq!(normalize_path("/a/%2e%2e/b", Strict), dot);
        assert_eq!(
            normalize_path("/a/%2E%2e/b", DecodeDots),
            Ok(Some("/b".into()))
        );
        assert_eq!(
            normalize_path("/f%2ejson", DecodeDots),
            Ok(Some("/f.json".into()))
        );
        assert_eq!(normalize_path("/a%2Fb", Strict), slash.clone());
        assert_eq!(normalize_path("/a%2fb", DecodeDots), slash);
        assert_eq!(normalize_path("/a/%2e%2e/%2fb", Off), Ok(None));
        assert_eq!(normalize_path("/a%20b%41", Strict), Ok(None));
    }

    fn request(uri: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(version);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_authority() {
        type Case<'a> = (
            &'a str,
            Version,
            &'a [&'a str],
            Result<Option<&'a str>, TargetError>,
        );
        let v11 = Version::HTTP_11;
        let cases: &[Case<'_>] = &[
            ("/x", v11, &["a.test"], Ok(Some("a.test"))),
            ("/x", v11, &[], Err(TargetError::MissingHost)),
            ("/x", Version::HTTP_10, &[], Ok(None)),
            (
                "/x",
                v11,
                &["a.test", "b.test"],
                Err(TargetError::DuplicateHost),
            ),
            ("/x", v11, &["a b"], Err(TargetError::BadHost)),
            ("/x", v11, &["u@a.test"], Err(TargetError::BadHost)),
            ("http://a.test:8080/x", v11, &[], Ok(Some("a.test:8080"))),
            ("http://a.test/x", v11, &["A.TEST"], Ok(Some("A.TEST"))),
            (
                "http://a.test/x",
                v11,
                &["b.test"],
                Err(TargetError::HostMismatch),
            ),
            ("http://u@a.test/x", v11, &[], Err(TargetError::Userinfo)),
            ("http://a.test/x", Version::HTTP_2, &[], Ok(Some("a.test"))),
            ("/x", Version::HTTP_2, &[], Ok(None)),
        ];
        for (uri, version, hosts, want) in cases {
            let mut req = request(uri, *version, hosts);
            let got = decode_target(&mut req, PathNormalization::Strict).map(|()| {
                req.headers()
                    .get("host")
                    .map(|h| h.to_str().unwrap().to_owned())
            });
            assert_eq!(
                got,
                want.clone().map(|h| h.map(str::to_owned)),
                "{uri} {hosts:?}"
            );
        }
    }

    #[test]
    fn connect_is_refused_and_paths_rewritten() {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri("a.test:443")
            .header("host", "a.test:443")
            .body(())
            .unwrap();
        assert_eq!(
            decode_target(&mut req, PathNormalization::Strict),
            Err(TargetError::Connect)
        );
        let mut req = request("http://a.test/a/../b?q=/../x", Version::HTTP_11, &[]);
        decode_target(&mut req, PathNormalization::Strict).unwrap();
        assert_eq!(req.uri(), "/b?q=/../x");
        assert_eq!(req.headers()["host"], "a.test");
    }
}
