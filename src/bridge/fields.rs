//! Request fields from text: path variables and query parameters, each a dotted field path
//! and a string, written into the request message by the field's type (numbers parsed,
//! enums by name or number, bools `true`/`false`, bytes as base64, well-known types by
//! their JSON string form, wrappers through their `value`). Repeated fields append.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, ReflectMessage, Value};
use serde::de::DeserializeSeed;

use super::http_rule::resolve_field_path;
use super::template::percent_decode;

/// `a=1&b.c=x%20y&a=2` → `[("a", "1"), ("b.c", "x y"), ("a", "2")]`; `+` is a space.
/// Pairs with an empty name are skipped; bad UTF-8 after decoding is an error.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode(s.replace('+', " ").as_bytes(), false)
                .ok_or_else(|| format!("query parameter {s:?} is not UTF-8 once decoded"))
        };
        let name = decode(name)?;
        if !name.is_empty() {
            out.push((name, decode(value)?));
        }
    }
    Ok(out)
}

/// Sets the field at `path` (proto or JSON names) from `text`.
pub fn set_from_text(msg: &mut DynamicMessage, path: &[String], text: &str) -> Result<(), String> {
    let fields = resolve_field_path(&msg.descriptor(), path)?;
    let Some((last, parents)) = fields.split_last() else {
        return Err("empty field path".into());
    };
    let mut target = msg;
    for field in parents {
        target = match target.get_field_mut(field) {
            Value::Message(m) => m,
            _ => return Err(format!("{} is not a message", field.full_name())),
        };
    }
    let value = value_from_text(last, text)?;
    if last.is_list() {
        match target.get_field_mut(last) {
            Value::List(list) => list.push(value),
            _ => return Err(format!("{} is not a list", last.full_name())),
        }
    } else {
        target.set_field(last, value);
    }
    Ok(())
}

/// One value of `field`'s type from text.
fn value_from_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("{text:?} is not {what}");
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("a bool (true or false)")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| bad("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| bad("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            text.parse()
                .map_err(|_| bad("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(
            text.parse()
                .map_err(|_| bad("an unsigned 64-bit integer"))?,
        ),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad("a number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad("a number"))?),
        Kind::Bytes => Value::Bytes(
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE.decode(text))
                .map_err(|_| bad("base64"))?
                .into(),
        ),
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => match text.parse::<i32>() {
                Ok(n) => Value::EnumNumber(n),
                Err(_) => return Err(bad(&format!("a value of {}", e.full_name()))),
            },
        },
        Kind::Message(m) => {
            // Wrappers take their `value`; other well-known types (Timestamp, Duration,
            // FieldMask) have a JSON string form.
            if m.full_name().starts_with("google.protobuf.")
                && m.full_name().ends_with("Value")
                && let Some(inner) = m.get_field_by_name("value")
            {
                let mut wrapper = DynamicMessage::new(m.clone());
                wrapper.set_field(&inner, value_from_text(&inner, text)?);
                Value::Message(wrapper)
            } else {
                let json = serde_json::Value::String(text.to_owned());
                let name = m.full_name().to_owned();
                Value::Message(
                    m.deserialize(json)
                        .map_err(|e| format!("{text:?} is not a {name}: {e}"))?,
                )
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bridge::descriptors::builtin;

    fn hello() -> DynamicMessage {
        let pool = builtin().unwrap();
        DynamicMessage::new(
            pool.get_message_by_name("tracebridge.demo.v1.HelloRequest")
                .unwrap(),
        )
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    fn json(msg: &DynamicMessage) -> String {
        serde_json::to_string(msg).unwrap()
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            parse_query("a=1&b.c=x%20y+z&a=2&&flag&=skipped").unwrap(),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b.c".to_owned(), "x y z".to_owned()),
                ("a".to_owned(), "2".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert!(parse_query("a=%ff").is_err());
    }

    #[test]
    fn scalars_enums_nested_and_repeated() {
        let mut m = hello();
        for (p, v) in [
            ("name", "ann"),
            ("count", "3"),
            ("visitorId", "9007199254740993"),
            ("mood", "MOOD_HAPPY"),
            ("tags", "a"),
            ("tags", "b"),
            ("locale.language", "en"),
            ("locale.region", "GB"),
            ("sent_at", "2024-05-01T12:00:00Z"),
            ("patience", "1.5s"),
            ("polite", "true"),
        ] {
            set_from_text(&mut m, &path(p), v).unwrap();
        }
        assert_eq!(
            json(&m),
            r#"{"name":"ann","count":3,"visitorId":"9007199254740993","mood":"MOOD_HAPPY","tags":["a","b"],"locale":{"language":"en","region":"GB"},"sentAt":"2024-05-01T12:00:00Z","patience":"1.500s","polite":true}"#
        );
    }

    #[test]
    fn bad_text_names_the_type() {
        let mut m = hello();
        for (p, v, want) in [
            ("count", "three", "\"three\" is not a 32-bit integer"),
            (
                "mood",
                "SAD",
                "\"SAD\" is not a value of tracebridge.demo.v1.Mood",
            ),
            ("polite", "yes", "\"yes\" is not a bool (true or false)"),
            (
                "nope",
                "1",
                "\"nope\" is not a field of tracebridge.demo.v1.HelloRequest",
            ),
            (
                "name.x",
                "1",
                "tracebridge.demo.v1.HelloRequest.name is not a singular message field",
            ),
        ] {
            assert_eq!(set_from_text(&mut m, &path(p), v).unwrap_err(), want, "{p}");
        }
        let e = set_from_text(&mut m, &path("sent_at"), "yesterday").unwrap_err();
        assert!(
            e.starts_with("\"yesterday\" is not a google.protobuf.Timestamp: "),
            "{e}"
        );
    }
}
