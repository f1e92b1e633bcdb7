//! Descriptor sets the bridge reads its schemas from: the built-in one (compiled from `proto/`
//! by `build.rs` with protox, embedded) or a serialized `google.protobuf.FileDescriptorSet`
//! named in config (`protoc --include_imports --descriptor_set_out=FILE`). Also reads a
//! method's `google.api.http` option whatever pool the method comes from.

use std::path::Path;
use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// The built-in descriptor set: `google/api/{http,annotations}.proto`,
/// `tracebridge/demo/v1/demo.proto` and every import (well-known types included).
pub const BUILTIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tracebridge.binpb"));

/// Extension number of `google.api.http` on `google.protobuf.MethodOptions`.
pub const HTTP_RULE_EXTENSION: u32 = 72295728;

/// The built-in pool, decoded once.
pub fn builtin() -> Result<DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| decode(BUILTIN).map_err(|e| format!("built-in descriptor set: {e}")))
        .clone()
}

/// Decodes a serialized `FileDescriptorSet`.
pub fn decode(bytes: &[u8]) -> Result<DescriptorPool, String> {
    DescriptorPool::decode(bytes)
        .map_err(|e| format!("not a valid serialized google.protobuf.FileDescriptorSet: {e}"))
}

/// Reads and decodes a descriptor set file.
pub fn load(path: &Path) -> Result<DescriptorPool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The method's `google.api.http` rule, if it has one.
///
/// The options are re-read with the built-in pool's `MethodOptions`, which knows the
/// extension: a descriptor set built without `google/api/annotations.proto` still carries
/// the rule as an unknown field of its options.
pub fn http_rule(method: &MethodDescriptor) -> Option<DynamicMessage> {
    let pool = builtin().ok()?;
    let options_desc = pool.get_message_by_name("google.protobuf.MethodOptions")?;
    let extension = options_desc
        .extensions()
        .find(|e| e.number() == HTTP_RULE_EXTENSION)?;
    let bytes = method.options().encode_to_vec();
    let options = DynamicMessage::decode(options_desc, bytes.as_slice()).ok()?;
    if !options.has_extension(&extension) {
        return None;
    }
    match options.get_extension(&extension).into_owned() {
        Value::Message(rule) => Some(rule),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builtin_set_has_the_demo_and_well_known_types() {
        let pool = builtin().unwrap();
        let greeter = pool
            .get_service_by_name("tracebridge.demo.v1.Greeter")
            .unwrap();
        let names: Vec<String> = greeter.methods().map(|m| m.name().to_owned()).collect();
        assert_eq!(names, ["SayHello", "Countdown", "Shout"]);
        for wkt in [
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
            "google.protobuf.BoolValue",
            "google.protobuf.Struct",
        ] {
            assert!(pool.get_message_by_name(wkt).is_some(), "{wkt}");
        }
        let ext = pool.get_extension_by_name("google.api.http").unwrap();
        assert_eq!(ext.number(), HTTP_RULE_EXTENSION);
    }

    #[test]
    fn reads_the_http_rule_of_a_method() {
        let pool = builtin().unwrap();
        let say = pool
            .get_service_by_name("tracebridge.demo.v1.Greeter")
            .unwrap()
            .methods()
            .next()
            .unwrap();
        let rule = http_rule(&say).unwrap();
        assert_eq!(
            rule.get_field_by_name("post").unwrap().as_str(),
            Some("/v1/greeter/{name}")
        );
        assert_eq!(rule.get_field_by_name("body").unwrap().as_str(), Some("*"));
    }

    #[test]
    fn garbage_and_missing_files_are_clear_errors() {
        assert!(
            decode(b"\xff\xff\xff")
                .unwrap_err()
                .starts_with("not a valid serialized google.protobuf.FileDescriptorSet: ")
        );
        let e = load(Path::new("/nonexistent/x.binpb")).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/x.binpb: "), "{e}");
    }
}
