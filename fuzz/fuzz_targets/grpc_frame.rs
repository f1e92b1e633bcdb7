//! gRPC: length-prefixed message framing (`decode_frame`, fed in chunks), gzip inflate of
//! compressed messages, and the `grpc-timeout` / `grpc-message` header decoders.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tracebridge::codec::grpc::{decode_frame, decode_message, inflate_gzip, parse_timeout};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = parse_timeout(data);
    let _ = decode_message(data);
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decode_frame(&mut buf, MAX) {
                Ok(Some((compressed, message))) => {
                    assert!(message.len() <= MAX, "message over max");
                    if compressed && let Ok(plain) = inflate_gzip(&message, MAX) {
                        assert!(plain.len() <= MAX, "inflated message over max");
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
