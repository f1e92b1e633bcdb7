//! Route matching: the first route of a listener whose every condition holds wins.

use crate::config::RouteMatch;

/// The parts of an HTTP request that routes match on, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestView<'a> {
    /// Host without port (from `:authority` or `Host`), if any.
    pub host: Option<&'a str>,
    /// The path.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
}

impl<'a> HttpRequestView<'a> {
    /// Borrows the routing view of a request.
    pub fn of<B>(req: &'a http::Request<B>) -> Self {
        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(strip_port)
        });
        HttpRequestView {
            host,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
        }
    }
}

/// Strips a `:port` suffix from a host (IPv6 literals in brackets keep their colons).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A listener's routes, in order, each pointing at a value of type `T` (the route's target).
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(RouteMatch, T)>,
}

impl<T> Router<T> {
    /// A router over `(matcher, target)` pairs, tried in order.
    pub fn new(routes: Vec<(RouteMatch, T)>) -> Self {
        Router { routes }
    }

    /// The first target whose matcher accepts the request.
    pub fn match_http(&self, req: &HttpRequestView<'_>) -> Option<&T> {
        self.routes
            .iter()
            .find(|(m, _)| matches_http(m, req))
            .map(|(_, t)| t)
    }

    /// The first target whose matcher accepts a Thrift call named `method` (as sent, e.g.
    /// `getUser`, or `Users:getUser` when multiplexed). A `thrift_method` ending in `:` is a
    /// service prefix; any other value must equal the name; no `thrift_method` matches every call.
    pub fn match_thrift(&self, method: &[u8]) -> Option<&T> {
        self.routes
            .iter()
            .find(|(m, _)| matches_thrift(m, method))
            .map(|(_, t)| t)
    }

    /// Every target, in order.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|(_, t)| t)
    }
}

fn matches_http(m: &RouteMatch, req: &HttpRequestView<'_>) -> bool {
    if let Some(host) = &m.host
        && !req.host.is_some_and(|h| h.eq_ignore_ascii_case(host))
    {
        return false;
    }
    if let Some(prefix) = &m.path_prefix
        && !path_has_prefix(req.path, prefix)
    {
        return false;
    }
    let headers_ok = m.headers.iter().all(|(name, value)| {
        req.headers
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    });
    if !headers_ok {
        return false;
    }
    let query_ok = m
        .query
        .iter()
        .all(|(name, value)| query_has(req.query, name, value));
    if !query_ok {
        return false;
    }
    if let Some(service) = &m.grpc_service {
        // gRPC paths are `/package.Service/Method`.
        let path_service = req
            .path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(s, _)| s);
        if path_service != Some(service.as_str()) {
            return false;
        }
    }
    // thrift_method never matches an HTTP request (config validation forbids it on http listeners).
    m.thrift_method.is_none()
}

fn matches_thrift(m: &RouteMatch, method: &[u8]) -> bool {
    // HTTP conditions never match a Thrift call (validation forbids them on thrift listeners).
    let http_only = m.host.is_some()
        || m.path_prefix.is_some()
        || !m.headers.is_empty()
        || !m.query.is_empty()
        || m.grpc_service.is_some();
    if http_only {
        return false;
    }
    match m.thrift_method.as_deref() {
        None => true,
        Some(prefix) if prefix.ends_with(':') => method.starts_with(prefix.as_bytes()),
        Some(name) => method == name.as_bytes(),
    }
}

/// `/users` matches `/users`, `/users/` and `/users/1`, not `/usersx`. `/` matches everything.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether the query string has `name=value` (compared undecoded, as sent).
fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == name && v == value
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn router() -> Router<&'static str> {
        Router::new(vec![
            (
                RouteMatch {
                    host: Some("api.example.com".into()),
                    ..Default::default()
                },
                "by-host",
            ),
            (
                RouteMatch {
                    path_prefix: Some("/users".into()),
                    headers: vec![("x-colour".into(), "blue".into())],
                    ..Default::default()
                },
                "users-blue",
            ),
            (
                RouteMatch {
                    path_prefix: Some("/users".into()),
                    query: vec![("colour".into(), "green".into())],
                    ..Default::default()
                },
                "users-green",
            ),
            (
                RouteMatch {
                    path_prefix: Some("/users".into()),
                    ..Default::default()
                },
                "users",
            ),
            (
                RouteMatch {
                    grpc_service: Some("demo.Echo".into()),
                    ..Default::default()
                },
                "grpc",
            ),
        ])
    }

    #[test]
    fn table() {
        let r = router();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            ("/users", &[], Some("users")),
            ("/users/7", &[], Some("users")),
            ("/usersx", &[], None),
            ("/users/7", &[("x-colour", "blue")], Some("users-blue")),
            ("/users/7", &[("x-colour", "red")], Some("users")),
            ("/users/7?colour=green", &[], Some("users-green")),
            ("/users/7?a=1&colour=green", &[], Some("users-green")),
            ("/users/7?colour=greenish", &[], Some("users")),
            ("/x", &[("host", "API.example.com:8080")], Some("by-host")),
            ("http://api.example.com/x", &[], Some("by-host")),
            ("/demo.Echo/Say", &[], Some("grpc")),
            ("/demo.Echo2/Say", &[], None),
            ("/other", &[], None),
        ];
        for (uri, headers, want) in cases {
            let request = req(uri, headers);
            let got = r.match_http(&HttpRequestView::of(&request)).copied();
            assert_eq!(got, *want, "uri {uri} headers {headers:?}");
        }
    }

    #[test]
    fn thrift_methods_and_service_prefixes() {
        let r = Router::new(vec![
            (
                RouteMatch {
                    thrift_method: Some("getUser".into()),
                    ..Default::default()
                },
                "get-user",
            ),
            (
                RouteMatch {
                    thrift_method: Some("Orders:".into()),
                    ..Default::default()
                },
                "orders",
            ),
            (
                RouteMatch {
                    path_prefix: Some("/".into()),
                    ..Default::default()
                },
                "http-only",
            ),
            (RouteMatch::default(), "rest"),
        ]);
        let cases: &[(&[u8], &str)] = &[
            (b"getUser", "get-user"),
            (b"getUsers", "rest"),
            (b"Users:getUser", "rest"),
            (b"Orders:place", "orders"),
            (b"Orders", "rest"),
            (b"", "rest"),
        ];
        for (method, want) in cases {
            assert_eq!(r.match_thrift(method).copied(), Some(*want), "{method:?}");
        }
        assert_eq!(router().match_thrift(b"getUser"), None);
    }

    #[test]
    fn root_prefix_matches_everything() {
        assert!(path_has_prefix("/", "/"));
        assert!(path_has_prefix("/a/b", "/"));
        assert!(path_has_prefix("/api/", "/api/"));
        assert!(path_has_prefix("/api/x", "/api/"));
        assert!(!path_has_prefix("/apix", "/api/"));
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
