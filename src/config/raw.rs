//! The raw document: TOML parsed into a tree, read through a [`Reader`] that tracks the key
//! path and collects every error (unknown keys, wrong types, bad values) instead of stopping
//! at the first, which serde's `deny_unknown_fields` would do.

use toml::{Table, Value};

use super::{ConfigError, ConfigErrors};

/// The raw document.
#[derive(Debug)]
pub(super) struct RawConfig(pub(super) Table);

/// Parses TOML syntax. A syntax error is the only thing reported here (with line and column).
pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
    text.parse::<Table>().map(RawConfig).map_err(|e| {
        let location = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}")
            })
            .unwrap_or_else(|| "document".to_owned());
        ConfigErrors {
            errors: vec![ConfigError {
                path: location,
                message: format!("TOML syntax: {}", e.message()),
            }],
        }
    })
}

/// Collects errors while reading values by key path.
#[derive(Debug, Default)]
pub(super) struct Reader {
    pub(super) errors: Vec<ConfigError>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `parent.key`, or `key` at the top.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Reader {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Reports keys of `table` not in `allowed`.
    pub(super) fn known_keys(&mut self, table: &Table, path: &str, allowed: &[&str]) {
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    join(path, key),
                    format!("unknown key (allowed here: {})", allowed.join(", ")),
                );
            }
        }
    }

    fn typed<'a, T>(
        &mut self,
        table: &'a Table,
        path: &str,
        key: &str,
        want: &str,
        get: impl Fn(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = table.get(key)?;
        let got = get(value);
        if got.is_none() {
            self.error(
                join(path, key),
                format!("expected {want}, found {} ({value})", kind(value)),
            );
        }
        got
    }

    pub(super) fn table<'a>(
        &mut self,
        table: &'a Table,
        path: &str,
        key: &str,
    ) -> Option<&'a Table> {
        self.typed(table, path, key, "a table", Value::as_table)
    }

    pub(super) fn str<'a>(&mut self, table: &'a Table, path: &str, key: &str) -> Option<&'a str> {
        self.typed(table, path, key, "a string", Value::as_str)
    }

    pub(super) fn int(&mut self, table: &Table, path: &str, key: &str) -> Option<i64> {
        self.typed(table, path, key, "an integer", Value::as_integer)
    }

    pub(super) fn float(&mut self, table: &Table, path: &str, key: &str) -> Option<f64> {
        self.typed(table, path, key, "a number", |v| {
            v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
        })
    }

    pub(super) fn bool(&mut self, table: &Table, path: &str, key: &str) -> Option<bool> {
        self.typed(table, path, key, "a boolean", Value::as_bool)
    }

    pub(super) fn array<'a>(
        &mut self,
        table: &'a Table,
        path: &str,
        key: &str,
    ) -> Option<&'a Vec<Value>> {
        self.typed(table, path, key, "an array", Value::as_array)
    }

    /// An array of strings; non-string items are reported with their index.
    pub(super) fn strings<'a>(
        &mut self,
        table: &'a Table,
        path: &str,
        key: &str,
    ) -> Option<Vec<(String, &'a str)>> {
        let items = self.array(table, path, key)?;
        let base = join(path, key);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push((format!("{base}[{i}]"), s)),
                None => self.error(
                    format!("{base}[{i}]"),
                    format!("expected a string, found {} ({item})", kind(item)),
                ),
            }
        }
        Some(out)
    }

    /// An array of tables (`[[key]]`).
    pub(super) fn tables<'a>(&mut self, table: &'a Table, key: &str) -> Vec<(String, &'a Table)> {
        let Some(items) = self.array(table, "", key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_table() {
                Some(t) => out.push((format!("{key}[{i}]"), t)),
                None => self.error(
                    format!("{key}[{i}]"),
                    format!("expected a table, found {} ({item})", kind(item)),
                ),
            }
        }
        out
    }

    /// A table of string values (`{ "x-colour" = "blue" }`), in document order.
    pub(super) fn string_map(
        &mut self,
        table: &Table,
        path: &str,
        key: &str,
    ) -> Vec<(String, String)> {
        let Some(map) = self.table(table, path, key) else {
            return Vec::new();
        };
        let base = join(path, key);
        let mut out = Vec::new();
        for (k, v) in map {
            match v.as_str() {
                Some(s) => out.push((k.clone(), s.to_owned())),
                None => self.error(
                    join(&base, k),
                    format!("expected a string, found {} ({v})", kind(v)),
                ),
            }
        }
        out
    }
}
