//! gRPC-Web text bodies: the streaming `Base64Decoder`, fed in chunks (byte 0 the size).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::codec::grpc_web::Base64Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = Base64Decoder::default();
    let mut decoded = 0;
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        match decoder.push(piece) {
            Ok(bytes) => decoded += bytes.len(),
            Err(_) => return,
        }
    }
    let _ = decoder.finish();
    assert!(
        decoded <= rest.len() / 4 * 3,
        "more bytes out than base64 can carry"
    );
});
