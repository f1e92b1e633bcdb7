//! `google.api.http` path templates: parsing and matching, pure.
//!
//! Grammar (from the `google.api.HttpRule` documentation):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{var}` is `{var=*}`. `*` matches one non-empty path segment, `**` the rest of the path
//! (one or more segments) and may only come last. A variable captures the text its segments matched,
//! percent-decoded; a multi-segment capture keeps `%2F` encoded so `/` stays a separator.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: the rest of the path.
    Rest,
}

/// A variable: which request field it fills and which segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, e.g. `["locale", "language"]`.
    pub field: Vec<String>,
    /// First segment index.
    pub start: usize,
    /// One past the last segment index.
    pub end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The segments, variables flattened into them.
    pub segments: Vec<Segment>,
    /// The variables, in order.
    pub variables: Vec<Variable>,
    /// The `:verb` suffix, if any.
    pub verb: Option<String>,
    text: String,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A matched request path: each variable's field path and captured value.
pub type Captures = Vec<(Vec<String>, String)>;

impl PathTemplate {
    /// Parses a template; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let err = |what: &str| format!("path template {text:?}: {what}");
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| err("does not start with \"/\""))?;
        // The verb is a `:` after the last `/` and outside braces.
        let (body, verb) = split_verb(rest);
        if verb == Some("") {
            return Err(err("empty verb after \":\""));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        for token in split_top(body).map_err(|e| err(&e))? {
            if let Some(inner) = token.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed \"{\""))?;
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field.iter().any(|f| !is_ident(f)) {
                    return Err(err(&format!("{inner:?} is not a field path")));
                }
                if variables.iter().any(|v: &Variable| v.field == field) {
                    return Err(err(&format!("field {} is bound twice", field.join("."))));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    if part.contains(['{', '}']) {
                        return Err(err("variables cannot nest"));
                    }
                    segments.push(segment(part).map_err(|e| err(&e))?);
                }
                variables.push(Variable {
                    field,
                    start,
                    end: segments.len(),
                });
            } else {
                segments.push(segment(token).map_err(|e| err(&e))?);
            }
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(err("\"**\" must be the last segment"));
        }
        Ok(PathTemplate {
            segments,
            variables,
            verb: verb.map(str::to_owned),
            text: text.to_owned(),
        })
    }

    /// Matches a request path (without query); `None` if it does not fit.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let rest_at = match self.segments.last() {
            Some(Segment::Rest) => Some(self.segments.len() - 1),
            _ => None,
        };
        match rest_at {
            Some(at) if parts.len() <= at => return None,
            None if parts.len() != self.segments.len() => return None,
            _ => {}
        }
        for (seg, part) in self.segments.iter().zip(&parts) {
            let ok = match seg {
                Segment::Literal(l) => l == part,
                Segment::One => !part.is_empty(),
                Segment::Rest => true,
            };
            if !ok {
                return None;
            }
        }
        let mut captures = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let end = if rest_at.is_some() && v.end == self.segments.len() {
                parts.len()
            } else {
                v.end
            };
            let taken = parts.get(v.start..end)?;
            let value = if v.end - v.start == 1 && self.segments[v.start] != Segment::Rest {
                percent_decode(taken.join("/").as_bytes(), false)
            } else {
                percent_decode(taken.join("/").as_bytes(), true)
            };
            captures.push((v.field.clone(), value?));
        }
        Some(captures)
    }
}

/// Splits `body:verb` at a `:` after the last `/` that is outside braces.
fn split_verb(body: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut colon = None;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => colon = None,
            ':' if depth == 0 => colon = Some(i),
            _ => {}
        }
    }
    match colon {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    }
}

/// Splits at `/` outside braces.
fn split_top(body: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' if depth > 0 => return Err("variables cannot nest".into()),
            '{' => depth = 1,
            '}' if depth == 0 => return Err("\"}\" without \"{\"".into()),
            '}' => depth = 0,
            '/' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed \"{\"".into());
    }
    out.push(&body[start..]);
    Ok(out)
}

fn segment(text: &str) -> Result<Segment, String> {
    match text {
        "" => Err("empty segment".into()),
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        t if t.contains('*') => Err(format!("{t:?} mixes \"*\" with text")),
        t => Ok(Segment::Literal(t.to_owned())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Percent-decodes URL text into UTF-8; with `keep_slash`, `%2F` stays encoded. `None` for
/// bytes that do not form UTF-8. Invalid escapes (`%`, `%4`, `%zz`) are kept as they are.
pub fn percent_decode(text: &[u8], keep_slash: bool) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    // Every `%2F` in the text is an escape of its own (its `%` cannot be the tail of an earlier
    // escape), so decoding the pieces between them equals decoding the whole.
    while keep_slash && let Some(at) = find_encoded_slash(rest) {
        out.extend(percent_encoding::percent_decode(&rest[..at]));
        out.extend_from_slice(&rest[at..at + 3]);
        rest = &rest[at + 3..];
    }
    out.extend(percent_encoding::percent_decode(rest));
    String::from_utf8(out).ok()
}

/// Where `%2F` (or `%2f`) first occurs in `text`.
fn find_encoded_slash(text: &[u8]) -> Option<usize> {
    text.windows(3)
        .position(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn caps(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(t)
            .unwrap()
            .matches(path)
            .map(|c| c.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    fn pairs(p: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parses_segments_variables_and_verbs() {
        let t = PathTemplate::parse("/v1/{name=shelves/*/books/**}:get").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("v1".into()),
                Segment::Literal("shelves".into()),
                Segment::One,
                Segment::Literal("books".into()),
                Segment::Rest,
            ]
        );
        assert_eq!(
            t.variables,
            vec![Variable {
                field: vec!["name".into()],
                start: 1,
                end: 5
            }]
        );
        assert_eq!(t.verb.as_deref(), Some("get"));
        let t = PathTemplate::parse("/v1/{locale.language}/x").unwrap();
        assert_eq!(t.variables[0].field, vec!["locale", "language"]);
        assert_eq!(t.segments[1], Segment::One);
        assert_eq!(t.verb, None);
    }

    #[test]
    fn rejects_bad_templates() {
        for (t, want) in [
            ("v1/x", "does not start with \"/\""),
            ("/v1/{name", "unclosed \"{\""),
            ("/v1/name}", "\"}\" without \"{\""),
            ("/v1/{a={b}}", "variables cannot nest"),
            ("/v1/**/x", "\"**\" must be the last segment"),
            ("/v1//x", "empty segment"),
            ("/v1/a*", "\"a*\" mixes \"*\" with text"),
            ("/v1/{1x}", "\"1x\" is not a field path"),
            ("/v1/{a}/{a}", "field a is bound twice"),
            ("/v1/x:", "empty verb after \":\""),
        ] {
            let e = PathTemplate::parse(t).unwrap_err();
            assert_eq!(e, format!("path template {t:?}: {want}"));
        }
    }

    #[test]
    fn matches_literals_and_variables() {
        let t = "/v1/greeter/{name}";
        assert_eq!(caps(t, "/v1/greeter/world"), pairs(&[("name", "world")]));
        assert_eq!(
            caps(t, "/v1/greeter/w%20x%2Fy"),
            pairs(&[("name", "w x/y")])
        );
        assert_eq!(caps(t, "/v1/greeter"), None);
        assert_eq!(caps(t, "/v1/greeter/"), None);
        assert_eq!(caps(t, "/v1/greeter/a/b"), None);
        assert_eq!(caps(t, "/v2/greeter/a"), None);
        assert_eq!(caps("/v1/x", "/v1/x"), pairs(&[]));
        assert_eq!(caps("/v1/*/x", "/v1/any/x"), pairs(&[]));
    }

    #[test]
    fn matches_multi_segment_and_rest() {
        let t = "/v1/{name=people/*}:greet";
        assert_eq!(
            caps(t, "/v1/people/ann:greet"),
            pairs(&[("name", "people/ann")])
        );
        assert_eq!(caps(t, "/v1/people/ann"), None);
        assert_eq!(caps(t, "/v1/robots/ann:greet"), None);
        let t = "/files/{path=**}";
        assert_eq!(caps(t, "/files/a/b/c.txt"), pairs(&[("path", "a/b/c.txt")]));
        assert_eq!(caps(t, "/files/a%2Fb"), pairs(&[("path", "a%2Fb")]));
        assert_eq!(caps(t, "/files"), None);
        let t = "/v1/{a.b}/{c=x/**}";
        assert_eq!(
            caps(t, "/v1/1/x/y/z"),
            pairs(&[("a.b", "1"), ("c", "x/y/z")])
        );
        assert_eq!(caps("/v1/**", "/v1/"), pairs(&[]));
    }

    #[test]
    fn percent_decoding() {
        for (text, keep_slash, want) in [
            ("a%20b%e2%98%83", false, Some("a b\u{2603}")),
            ("%25%2541", false, Some("%%41")),
            ("%%41 % %4 %zz", false, Some("%A % %4 %zz")),
            ("a%2Fb%2fc", false, Some("a/b/c")),
            ("a%2Fb%2fc%20", true, Some("a%2Fb%2fc ")),
            ("%2F%2F", true, Some("%2F%2F")),
            ("%%2F%2", true, Some("%%2F%2")),
            ("%C3%A9/%2F", true, Some("é/%2F")),
            ("%ff", false, None),
            ("%C3%2F%A9", true, None),
            ("", true, Some("")),
        ] {
            assert_eq!(
                percent_decode(text.as_bytes(), keep_slash).as_deref(),
                want,
                "{text:?} keep_slash={keep_slash}"
            );
        }
    }

    #[test]
    fn verbs_bind_only_the_last_segment() {
        let t = PathTemplate::parse("/v1/{name}:cancel").unwrap();
        assert_eq!(t.to_string(), "/v1/{name}:cancel");
        assert_eq!(
            t.matches("/v1/op1:cancel"),
            Some(vec![(vec!["name".to_owned()], "op1".to_owned())])
        );
        assert_eq!(t.matches("/v1/op1"), None);
        assert_eq!(t.matches("/v1/op1:other"), None);
        // Without a verb in the template, a colon is part of the segment.
        assert_eq!(caps("/v1/{name}", "/v1/a:b"), pairs(&[("name", "a:b")]));
    }
}
