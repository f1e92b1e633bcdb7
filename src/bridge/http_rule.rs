//! `google.api.http` rules → bindings: which HTTP verb and path template reach a gRPC method,
//! which request field the JSON body fills and which reply field becomes the JSON body.
//! Every method also gets the default binding `POST /package.Service/Method` with `body: "*"`.
//! Field paths are checked against the method's messages when the bridge is built, so a bad
//! rule is a start-up error, not a per-request surprise.

use http::Method;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};

use super::template::PathTemplate;

/// What the JSON request body fills.
#[derive(Debug, Clone)]
pub enum BodySelector {
    /// No body: every field comes from the path and the query.
    None,
    /// `body: "*"`: the whole request message (path variables still apply).
    All,
    /// `body: "field"`: one top-level field.
    Field(FieldDescriptor),
}

/// One way to reach a method over HTTP.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The HTTP verb.
    pub verb: Method,
    /// The path template.
    pub template: PathTemplate,
    /// What the body fills.
    pub body: BodySelector,
    /// The reply field sent as the body (`None`: the whole reply).
    pub response_body: Option<FieldDescriptor>,
    /// Index of the method in the bridge's method table.
    pub method: usize,
}

/// The bindings an `HttpRule` (and its `additional_bindings`) declares for a method.
pub fn bindings_of(
    rule: &DynamicMessage,
    input: &MessageDescriptor,
    output: &MessageDescriptor,
    method: usize,
) -> Result<Vec<Binding>, String> {
    let mut out = vec![binding_of(rule, input, output, method)?];
    if let Some(more) = rule.get_field_by_name("additional_bindings")
        && let Some(list) = more.as_list()
    {
        for extra in list {
            let Some(extra) = extra.as_message() else {
                continue;
            };
            if extra
                .get_field_by_name("additional_bindings")
                .and_then(|v| v.as_list().map(|l| !l.is_empty()))
                .unwrap_or(false)
            {
                return Err("additional_bindings must not nest further bindings".into());
            }
            out.push(binding_of(extra, input, output, method)?);
        }
    }
    Ok(out)
}

/// The default binding: `POST /package.Service/Method`, whole message in the body.
pub fn default_binding(path: &str, method: usize) -> Result<Binding, String> {
    Ok(Binding {
        verb: Method::POST,
        template: PathTemplate::parse(path)?,
        body: BodySelector::All,
        response_body: None,
        method,
    })
}

fn binding_of(
    rule: &DynamicMessage,
    input: &MessageDescriptor,
    output: &MessageDescriptor,
    method: usize,
) -> Result<Binding, String> {
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut pattern = None;
    for (field, verb) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            pattern = Some((verb, text(field)));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(custom) = rule.get_field_by_name("custom")
        && let Some(custom) = custom.as_message()
    {
        let kind = custom
            .get_field_by_name("kind")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let path = custom
            .get_field_by_name("path")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let verb = Method::from_bytes(kind.as_bytes())
            .map_err(|_| format!("custom kind {kind:?} is not an HTTP method"))?;
        pattern = Some((verb, path));
    }
    let (verb, path) = pattern.ok_or("the rule names no HTTP verb and path")?;
    let template = PathTemplate::parse(&path)?;
    for v in &template.variables {
        check_field_path(input, &v.field)
            .map_err(|e| format!("{path}: variable {}: {e}", v.field.join(".")))?;
    }
    let body = match text("body").as_str() {
        "" => BodySelector::None,
        "*" => BodySelector::All,
        name => BodySelector::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body {name:?} is not a field of {}", input.full_name()))?,
        ),
    };
    let response_body = match text("response_body").as_str() {
        "" => None,
        name => Some(output.get_field_by_name(name).ok_or_else(|| {
            format!(
                "response_body {name:?} is not a field of {}",
                output.full_name()
            )
        })?),
    };
    Ok(Binding {
        verb,
        template,
        body,
        response_body,
        method,
    })
}

/// Resolves a dotted field path (proto or JSON names) to its last field: every step but the
/// last must be a singular message field; the last must be singular or a list of scalars.
pub fn resolve_field_path(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut fields = Vec::with_capacity(path.len());
    let mut current = message.clone();
    for (i, name) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| format!("{name:?} is not a field of {}", current.full_name()))?;
        if field.is_map() {
            return Err(format!("{} is a map field", field.full_name()));
        }
        let last = i + 1 == path.len();
        if !last {
            match field.kind() {
                Kind::Message(m) if !field.is_list() => current = m,
                _ => {
                    return Err(format!(
                        "{} is not a singular message field",
                        field.full_name()
                    ));
                }
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

fn check_field_path(message: &MessageDescriptor, path: &[String]) -> Result<(), String> {
    let fields = resolve_field_path(message, path)?;
    match fields.last() {
        Some(f) if f.is_list() => Err(format!("{} is repeated", f.full_name())),
        Some(_) => Ok(()),
        None => Err("empty field path".into()),
    }
}
