//! Thrift message walking: `peek_message`, `message_len`, `transcode` and `transcode_struct`
//! between binary and compact. Byte 0 picks the input protocol. What the transcoder writes
//! must itself be a whole message in the other protocol.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tracebridge::codec::thrift::walk::{message_len, transcode, transcode_struct};
use tracebridge::codec::thrift::{ProtocolId, peek_message};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (from, to) = if pick & 1 == 0 {
        (ProtocolId::Binary, ProtocolId::Compact)
    } else {
        (ProtocolId::Compact, ProtocolId::Binary)
    };
    let _ = peek_message(rest, from);
    let len = message_len(rest, from);
    let mut out = BytesMut::new();
    let used = transcode(rest, from, to, &mut out);
    if let (Ok(Some(len)), Ok(Some(used))) = (&len, &used) {
        assert_eq!(
            len, used,
            "message_len and transcode disagree on the message end"
        );
    }
    if let Ok(Some(_)) = used {
        let again = message_len(&out, to);
        assert!(
            matches!(again, Ok(Some(n)) if n == out.len()),
            "the transcoded message is not one whole {to:?} message: {again:?} of {} bytes",
            out.len()
        );
        let mut back = BytesMut::new();
        assert!(
            matches!(transcode(&out, to, from, &mut back), Ok(Some(n)) if n == out.len()),
            "the transcoded message does not transcode back"
        );
    }
    if let Ok(bytes) = transcode_struct(rest, from, to) {
        assert!(
            transcode_struct(&bytes, to, from).is_ok(),
            "struct does not transcode back"
        );
    }
});
