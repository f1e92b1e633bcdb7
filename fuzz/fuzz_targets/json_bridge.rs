//! The HTTP/JSON → gRPC bridge over the built-in descriptor set: route lookup (`find`), the
//! request message built from path variables, query and JSON body (`request_frame`), and the
//! protobuf reply turned back into JSON (`reply_json`). Input: byte 0 picks the verb, then
//! `<path>\n<query>\n<body>`; the body is also tried as a reply of the matched binding.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use tracebridge::bridge::JsonGrpcBridge;

const VERBS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn bridge() -> &'static JsonGrpcBridge {
    static BRIDGE: OnceLock<JsonGrpcBridge> = OnceLock::new();
    BRIDGE.get_or_init(|| match JsonGrpcBridge::load(None, &[]) {
        Ok(b) => b,
        Err(e) => panic!("the built-in descriptor set does not load: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&verb, rest)) = data.split_first() else {
        return;
    };
    let verb = &VERBS[usize::from(verb) % VERBS.len()];
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let (Some(path), query, body) = (parts.next(), parts.next(), parts.next().unwrap_or(&[]))
    else {
        return;
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let query = query
        .and_then(|q| std::str::from_utf8(q).ok())
        .filter(|q| !q.is_empty());
    let bridge = bridge();
    let Ok(matched) = bridge.find(verb, path) else {
        return;
    };
    let binding = matched.binding;
    let _ = bridge.request_frame(matched, query, body);
    let _ = bridge.reply_json(binding, body);
});
