//! Thrift stream framing: `detect` and `ThriftDecoder` (detecting and per-dialect), fed the
//! input in chunks as a socket would. Byte 0 picks the decoder, byte 1 the chunk size.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use tracebridge::codec::thrift::Dialect;
use tracebridge::codec::thrift::detect::detect;
use tracebridge::codec::thrift::frame::ThriftDecoder;

/// Small enough that a hostile LENGTH or inflate is cheap, large enough for real frames.
const MAX_FRAME: u32 = 1 << 20;

const DIALECTS: [Dialect; 5] = [
    Dialect::HEADER,
    Dialect::FRAMED_BINARY,
    Dialect::FRAMED_COMPACT,
    Dialect::UNFRAMED_BINARY,
    Dialect::UNFRAMED_COMPACT,
];

fuzz_target!(|data: &[u8]| {
    let Some((&[pick, chunk], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let _ = detect(rest);
    let mut decoder = match usize::from(pick) % (DIALECTS.len() + 1) {
        0 => ThriftDecoder::new(MAX_FRAME),
        i => ThriftDecoder::for_dialect(DIALECTS[i - 1], MAX_FRAME),
    };
    let chunk = usize::from(chunk).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => assert!(buf.len() < before, "a frame consumed no bytes"),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    // End of stream: what a closing socket triggers.
    for _ in 0..=rest.len() {
        if !matches!(decoder.decode_eof(&mut buf), Ok(Some(_))) {
            break;
        }
    }
});
