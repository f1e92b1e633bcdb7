//! Raw serde structs, exactly the TOML shape, `deny_unknown_fields`.
//!
//! First stage of `config`: TOML text → these structs → `validate` → the typed config.
//! Everything that can be wrong in more than one place at once (enum names, addresses,
//! durations, missing keys) is kept as plain TOML values here so that `validate` reports
//! every error; only syntax errors, unknown keys and TOML type mismatches stop here.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, ConfigErrors};

/// The raw document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    #[serde(default)]
    pub(super) propagation: RawPropagation,
    #[serde(default)]
    pub(super) shutdown: RawShutdown,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) upstreams: Vec<RawUpstream>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
}

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) service_name: Option<String>,
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_protocol: Option<String>,
    pub(super) sampler: Option<RawSampler>,
    pub(super) span_queue: Option<i64>,
    pub(super) log_spans: Option<bool>,
}

/// `sampler = { kind = "parent_ratio", ratio = 1.0 }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSampler {
    pub(super) kind: Option<String>,
    pub(super) ratio: Option<f64>,
}

/// `[propagation]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPropagation {
    pub(super) extract: Option<Vec<String>>,
    pub(super) inject: Option<Vec<String>>,
    pub(super) on_missing: Option<String>,
}

/// `[shutdown]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    pub(super) drain_timeout: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) access: Option<String>,
}

/// `[[listeners]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) address: Option<String>,
    pub(super) max_connections: Option<i64>,
    pub(super) header_timeout: Option<String>,
    pub(super) path_normalization: Option<String>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) max_inflight_per_connection: Option<i64>,
    pub(super) max_inflight_bytes: Option<i64>,
}

/// `[[routes]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<String>,
    pub(super) listener: Option<String>,
    #[serde(default, rename = "match")]
    pub(super) matcher: RawMatch,
    pub(super) upstream: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) on_missing: Option<String>,
    pub(super) bridge: Option<String>,
    pub(super) host_rewrite: Option<String>,
}

/// `match = { ... }` of a route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) host: Option<String>,
    pub(super) path_prefix: Option<String>,
    // A TOML table does not keep key order: these come sorted by key.
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) query: BTreeMap<String, String>,
    pub(super) grpc_service: Option<String>,
    pub(super) thrift_method: Option<String>,
}

/// `[[upstreams]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) transport: Option<String>,
    pub(super) thrift_protocol: Option<String>,
    pub(super) endpoints: Option<Vec<String>>,
    pub(super) connect_timeout: Option<String>,
    pub(super) pool_idle_per_endpoint: Option<i64>,
    pub(super) descriptor_set: Option<String>,
    pub(super) services: Option<Vec<String>>,
}

/// Parses TOML text into the raw structs. A syntax error, an unknown key or a TOML type
/// mismatch is one error: at its key path when one can be found, else at `line:column`.
pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => return Err(one_error(location(text, e.span()), e.message())),
    };
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let path = e
            .span()
            .and_then(|span| key_path_at(doc.get_ref(), span.start))
            .unwrap_or_else(|| location(text, e.span()));
        one_error(path, e.message())
    })
}

fn one_error(path: String, message: &str) -> ConfigErrors {
    ConfigErrors {
        errors: vec![ConfigError {
            path,
            message: message.trim_end().to_owned(),
        }],
    }
}

/// `line:column` (both 1-based) of a span's start; empty without a span.
fn location(text: &str, span: Option<Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{column}")
}

/// The key path (`routes[0].match.host`) of the innermost key or value whose span holds
/// byte `pos`.
fn key_path_at(doc: &DeTable<'_>, pos: usize) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    walk_table(doc, "", pos, &mut best);
    best.map(|(_, path)| path)
}

fn walk_table(table: &DeTable<'_>, prefix: &str, pos: usize, best: &mut Option<(usize, String)>) {
    for (key, value) in table {
        let path = join_key(prefix, key.get_ref());
        consider(key.span(), &path, pos, best);
        walk_value(value.get_ref(), value.span(), &path, pos, best);
    }
}

fn walk_value(
    value: &DeValue<'_>,
    span: Range<usize>,
    path: &str,
    pos: usize,
    best: &mut Option<(usize, String)>,
) {
    consider(span, path, pos, best);
    match value {
        DeValue::Table(table) => walk_table(table, path, pos, best),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                walk_value(
                    item.get_ref(),
                    item.span(),
                    &format!("{path}[{i}]"),
                    pos,
                    best,
                );
            }
        }
        _ => {}
    }
}

/// Keeps `path` if its span holds `pos` and is no wider than the best so far (deeper wins
/// ties: it is visited later).
fn consider(span: Range<usize>, path: &str, pos: usize, best: &mut Option<(usize, String)>) {
    let holds = span.start <= pos && (pos < span.end || span.is_empty() && pos == span.start);
    let width = span.end.saturating_sub(span.start);
    if holds && best.as_ref().is_none_or(|(w, _)| width <= *w) {
        *best = Some((width, path.to_owned()));
    }
}

/// Appends a key to a path, quoting it unless it is a bare TOML key.
fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> (String, String) {
        match parse(text) {
            Ok(raw) => panic!("expected an error, parsed {raw:?}"),
            Err(e) => {
                assert_eq!(e.errors.len(), 1, "{e}");
                (e.errors[0].path.clone(), e.errors[0].message.clone())
            }
        }
    }

    #[test]
    fn empty_document_is_all_defaults() {
        let raw = parse("").unwrap();
        assert!(raw.admin.listen.is_none());
        assert!(raw.listeners.is_empty());
        assert!(raw.routes.is_empty());
        assert!(raw.upstreams.is_empty());
    }

    #[test]
    fn match_tables_come_sorted_by_key() {
        let raw = parse(
            r#"
[[routes]]
match = { host = "a", headers = { "x-b" = "1", "X-A" = "2" }, query = { z = "1", a = "2" } }
"#,
        )
        .unwrap();
        let m = &raw.routes[0].matcher;
        assert_eq!(m.host.as_deref(), Some("a"));
        let headers: Vec<_> = m.headers.iter().collect();
        assert_eq!(
            headers,
            [
                (&"X-A".to_owned(), &"2".to_owned()),
                (&"x-b".to_owned(), &"1".to_owned())
            ]
        );
        let query: Vec<_> = m.query.iter().collect();
        assert_eq!(
            query,
            [
                (&"a".to_owned(), &"2".to_owned()),
                (&"z".to_owned(), &"1".to_owned())
            ]
        );
    }

    #[test]
    fn unknown_field_has_its_key_path() {
        let cases = [
            (
                "[admin]\nlisen = \"x\"\n",
                "admin.lisen",
                "unknown field `lisen`, expected `listen`",
            ),
            (
                "[[listeners]]\nname = \"a\"\n[[listeners]]\nname = \"b\"\nadress = \"x\"\n",
                "listeners[1].adress",
                "unknown field `adress`, expected one of `name`, `protocol`, `address`, `max_connections`, `header_timeout`, `path_normalization`, `trusted_proxies`, `max_inflight_per_connection`, `max_inflight_bytes`",
            ),
            (
                "[[routes]]\nmatch = { path = \"/\" }\n",
                "routes[0].match.path",
                "unknown field `path`, expected one of `host`, `path_prefix`, `headers`, `query`, `grpc_service`, `thrift_method`",
            ),
            (
                "[telemetry]\nsampler = { kind = \"parent_ratio\", rate = 0.5 }\n",
                "telemetry.sampler.rate",
                "unknown field `rate`, expected `kind` or `ratio`",
            ),
            (
                "[tracing]\n",
                "tracing",
                "unknown field `tracing`, expected one of `admin`, `telemetry`, `propagation`, `shutdown`, `log`, `listeners`, `routes`, `upstreams`",
            ),
        ];
        for (text, path, message) in cases {
            assert_eq!(
                error_of(text),
                (path.to_owned(), message.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn type_mismatch_has_its_key_path() {
        assert_eq!(
            error_of("[telemetry]\nspan_queue = \"big\"\n"),
            (
                "telemetry.span_queue".to_owned(),
                "invalid type: string \"big\", expected i64".to_owned()
            )
        );
        assert_eq!(
            error_of("[[routes]]\nmatch = { headers = { \"x-a\" = 1 } }\n"),
            (
                "routes[0].match.headers.x-a".to_owned(),
                "invalid type: integer `1`, expected a string".to_owned()
            )
        );
        assert_eq!(
            error_of("[[upstreams]]\nendpoints = [\"a:1\", 2]\n"),
            (
                "upstreams[0].endpoints[1]".to_owned(),
                "invalid type: integer `2`, expected a string".to_owned()
            )
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let cases = [
            (
                "[admin]\nlisten = \"127.0.0.1:1\nx = 1\n",
                "2:22",
                "invalid basic string, expected `\"`",
            ),
            (
                "[admin]\nlisten = = 1\n",
                "2:10",
                "extra `=`, expected nothing",
            ),
            ("[admin\n", "1:7", "unclosed table, expected `]`"),
            ("a = 1\na = 2\n", "2:1", "duplicate key"),
            ("x = [1,\n", "1:8", "unclosed array, expected `]`"),
        ];
        for (text, path, message) in cases {
            assert_eq!(
                error_of(text),
                (path.to_owned(), message.to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn quotes_keys_that_are_not_bare() {
        assert_eq!(join_key("a", "b-c_1"), "a.b-c_1");
        assert_eq!(join_key("a", "b.c"), "a.\"b.c\"");
        assert_eq!(join_key("", "top"), "top");
    }
}
