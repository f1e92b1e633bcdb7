//! proto3 JSON ⇄ protobuf messages, through prost-reflect's serde support: well-known types
//! in their JSON forms, 64-bit integers as strings (numbers accepted), enums by name
//! (numbers accepted), lowerCamelCase and original field names both accepted, unknown
//! fields refused.
//!
//! A failed decode is retried on the error path only, field by field, to name the field at
//! fault (`field `locale.region``): prost-reflect's own errors say what was wrong, not where.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
};

/// Decodes a JSON document into a message of type `desc`. The error names the message type
/// and, when it can be found, the field: `invalid JSON for pkg.Msg: field `count`: ...`.
pub fn decode(desc: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let options = DeserializeOptions::new();
    let result = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options)
        .and_then(|m| de.end().map(|()| m));
    result.map_err(|e| explain(desc, json, &e.to_string()))
}

/// Decodes an already parsed JSON value into a message of type `desc`.
pub fn decode_value(
    desc: &MessageDescriptor,
    value: serde_json::Value,
) -> Result<DynamicMessage, String> {
    let options = DeserializeOptions::new();
    match DynamicMessage::deserialize_with_options(desc.clone(), value.clone(), &options) {
        Ok(m) => Ok(m),
        Err(e) => Err(describe(desc, &value, &e.to_string())),
    }
}

/// Writes `msg` as JSON (default proto3 options: lowerCamelCase names, defaults omitted).
pub fn encode(msg: &DynamicMessage, out: &mut Vec<u8>) -> Result<(), String> {
    let mut ser = serde_json::Serializer::new(out);
    msg.serialize_with_options(&mut ser, &SerializeOptions::new())
        .map_err(|e| format!("cannot write {} as JSON: {e}", msg.descriptor().full_name()))
}

/// The error of a failed decode, with the field at fault when one can be found.
fn explain(desc: &MessageDescriptor, json: &[u8], fallback: &str) -> String {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Err(e) => format!("invalid JSON for {}: {e}", desc.full_name()),
        Ok(value) => describe(desc, &value, fallback),
    }
}

fn describe(desc: &MessageDescriptor, value: &serde_json::Value, fallback: &str) -> String {
    match locate(desc, value, "") {
        Some((path, why)) => format!(
            "invalid JSON for {}: field `{path}`: {why}",
            desc.full_name()
        ),
        None => format!("invalid JSON for {}: {fallback}", desc.full_name()),
    }
}

/// Finds the first field of `value` (an object for `desc`) that does not decode: its dotted
/// path and the reason. Recurses into message fields and lists of messages.
fn locate(
    desc: &MessageDescriptor,
    value: &serde_json::Value,
    prefix: &str,
) -> Option<(String, String)> {
    let object = value.as_object()?;
    for (key, item) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            return Some((path, format!("unknown field of {}", desc.full_name())));
        };
        let mut single = serde_json::Map::new();
        single.insert(key.clone(), item.clone());
        let Err(e) = DynamicMessage::deserialize_with_options(
            desc.clone(),
            serde_json::Value::Object(single),
            &DeserializeOptions::new(),
        ) else {
            continue;
        };
        // A plain (not well-known) message field: look inside for the deeper culprit.
        if let Kind::Message(inner) = field.kind()
            && !inner.full_name().starts_with("google.protobuf.")
            && !field.is_map()
        {
            let found = match item {
                serde_json::Value::Array(items) if field.is_list() => items
                    .iter()
                    .enumerate()
                    .find_map(|(i, it)| locate(&inner, it, &format!("{path}[{i}]"))),
                serde_json::Value::Object(_) => locate(&inner, item, &path),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        return Some((path, e.to_string()));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bridge::descriptors::builtin;
    use prost::Message;

    fn desc(name: &str) -> MessageDescriptor {
        builtin().unwrap().get_message_by_name(name).unwrap()
    }

    fn hello() -> MessageDescriptor {
        desc("tracebridge.demo.v1.HelloRequest")
    }

    fn to_json(m: &DynamicMessage) -> String {
        let mut out = Vec::new();
        encode(m, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn round_trip_through_protobuf() {
        let input = r#"{"name":"ann","greeting":"hi","count":2,"visitor_id":9007199254740993,
            "mood":"MOOD_GRUMPY","tags":["x","y"],"locale":{"language":"en"},
            "sentAt":"2024-05-01T12:00:00.500Z","patience":"3s","polite":false,
            "extras":{"k":[1,"two",null]}}"#;
        let msg = decode(&hello(), input.as_bytes()).unwrap();
        let wire = msg.encode_to_vec();
        // name (1) = "ann": tag 0x0a, length 3.
        assert_eq!(&wire[..5], b"\x0a\x03ann");
        let back = DynamicMessage::decode(hello(), wire.as_slice()).unwrap();
        assert_eq!(
            to_json(&back),
            r#"{"name":"ann","greeting":"hi","count":2,"visitorId":"9007199254740993","mood":"MOOD_GRUMPY","tags":["x","y"],"locale":{"language":"en"},"sentAt":"2024-05-01T12:00:00.500Z","patience":"3s","polite":false,"extras":{"k":[1.0,"two",null]}}"#
        );
    }

    #[test]
    fn int64_as_string_and_enum_by_number() {
        let msg = decode(&hello(), br#"{"visitorId":"-42","mood":2}"#).unwrap();
        assert_eq!(to_json(&msg), r#"{"visitorId":"-42","mood":"MOOD_GRUMPY"}"#);
    }

    #[test]
    fn errors_name_the_field() {
        for (json, want) in [
            (
                r#"{"count":"many"}"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: field `count`: ",
            ),
            (
                r#"{"name":"a","nmae":"b"}"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: field `nmae`: unknown field of tracebridge.demo.v1.HelloRequest",
            ),
            (
                r#"{"locale":{"language":"en","region":7}}"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: field `locale.region`: ",
            ),
            (
                r#"{"locale":{"lang":"en"}}"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: field `locale.lang`: unknown field of tracebridge.demo.v1.Locale",
            ),
            (
                r#"{"sentAt":"noon"}"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: field `sentAt`: ",
            ),
            (
                r#"{"mood":"SAD"}"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: field `mood`: ",
            ),
            (
                r#"{"name": "a""#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: EOF while parsing an object at line 1 column 12",
            ),
            (
                r#"[1]"#,
                "invalid JSON for tracebridge.demo.v1.HelloRequest: ",
            ),
        ] {
            let e = decode(&hello(), json.as_bytes()).unwrap_err();
            assert!(e.starts_with(want), "{json}: {e}");
        }
        let e = decode(&hello(), br#"{"count":"many"}"#).unwrap_err();
        assert!(e.ends_with("invalid digit found in string"), "{e}");
    }

    #[test]
    fn decode_value_names_the_field_too() {
        let v = serde_json::json!({ "language": 5 });
        let e = decode_value(&desc("tracebridge.demo.v1.Locale"), v).unwrap_err();
        assert!(
            e.starts_with("invalid JSON for tracebridge.demo.v1.Locale: field `language`: "),
            "{e}"
        );
    }
}
