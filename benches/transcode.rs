//! JSON → protobuf cost of the HTTP/JSON → gRPC bridge: a representative
//! `tracebridge.demo.v1.HelloRequest` through the bridge's own path (binding lookup, prost-reflect
//! deserializer into a `DynamicMessage`, encode, length prefix), against a baseline that knows
//! the schema at compile time (serde_json into a serde struct, then a hand-written
//! `#[derive(prost::Message)]` struct encoded with prost).
//!
//! `cargo bench --bench transcode` (`-- --quick` for a short run)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use prost::Message;
use serde::Deserialize;
use tracebridge::bridge::JsonGrpcBridge;
use tracebridge::codec::grpc::write_prefix;

const JSON: &str = r#"{"greeting":"hi","count":3,"visitorId":"9007199254740993","mood":"MOOD_HAPPY","tags":["a","b","c"],"locale":{"language":"en","region":"GB"}}"#;
const PATH: &str = "/v1/greeter/world";

/// The baseline's compile-time schema: the same fields and numbers as `demo.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    greeting: String,
    #[prost(int32, tag = "3")]
    count: i32,
    #[prost(int64, tag = "4")]
    visitor_id: i64,
    #[prost(int32, tag = "5")]
    mood: i32,
    #[prost(string, repeated, tag = "6")]
    tags: Vec<String>,
    #[prost(message, optional, tag = "7")]
    locale: Option<Locale>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Locale {
    #[prost(string, tag = "1")]
    language: String,
    #[prost(string, tag = "2")]
    region: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonHello {
    #[serde(default)]
    greeting: String,
    #[serde(default)]
    count: i32,
    #[serde(default)]
    visitor_id: String,
    #[serde(default)]
    mood: String,
    #[serde(default)]
    tags: Vec<String>,
    locale: Option<JsonLocale>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLocale {
    #[serde(default)]
    language: String,
    #[serde(default)]
    region: String,
}

/// The baseline: serde into the struct, map to the prost struct, encode with a prefix.
fn baseline(name: &str, json: &str) -> Bytes {
    let j: JsonHello = serde_json::from_str(json).unwrap();
    let msg = HelloRequest {
        name: name.to_owned(),
        greeting: j.greeting,
        count: j.count,
        visitor_id: j.visitor_id.parse().unwrap_or(0),
        mood: match j.mood.as_str() {
            "MOOD_HAPPY" => 1,
            "MOOD_GRUMPY" => 2,
            _ => 0,
        },
        tags: j.tags,
        locale: j.locale.map(|l| Locale {
            language: l.language,
            region: l.region,
        }),
    };
    let mut out = BytesMut::new();
    write_prefix(&mut out, 0, msg.encoded_len());
    msg.encode(&mut out).unwrap();
    out.freeze()
}

fn bench(c: &mut Criterion) {
    let bridge = JsonGrpcBridge::load(None, &[]).unwrap();
    let via_bridge = || {
        let matched = bridge.find(&Method::POST, PATH).unwrap();
        bridge
            .request_frame(matched, None, JSON.as_bytes())
            .unwrap()
    };
    // Both produce the same bytes: the comparison is like for like.
    assert_eq!(&via_bridge()[..], &baseline("world", JSON)[..]);

    let mut group = c.benchmark_group("json_to_protobuf");
    group.bench_function("bridge_dynamic_message", |b| {
        b.iter(|| black_box(via_bridge()))
    });
    group.bench_function("baseline_serde_struct_prost", |b| {
        b.iter(|| black_box(baseline(black_box("world"), black_box(JSON))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
