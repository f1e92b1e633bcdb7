//! THeader frames: `frame_len`, `peek_fixed` and `decode` (transforms, info headers, inflate),
//! then trace extraction from the decoded info headers as the Thrift listener does.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracebridge::codec::thrift::header;
use tracebridge::trace::{Format, Propagator};

const MAX_FRAME: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = header::frame_len(data, MAX_FRAME);
    let _ = header::peek_fixed(data);
    if let Ok(frame) = header::decode(Bytes::copy_from_slice(data), MAX_FRAME) {
        assert!(
            frame.payload.len() <= MAX_FRAME as usize,
            "payload over max_frame"
        );
        let propagator = Propagator::new(Format::ALL.to_vec(), Vec::new());
        let _ = propagator.extract(&frame.info);
    }
});
