//! Golden bytes: frames written and answered by the Python `thrift` 0.25 library
//! (tests/fixtures/thrift, made by interop/capture_thrift_fixtures.py) are decoded by the
//! codec and re-encoded byte for byte; the binary⇄compact transcoder turns one Python
//! encoding of a value into the other Python encoding of the same value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;
use tracebridge::codec::thrift::exception::encode_exception;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{self, HeaderHead, Transform, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use tracebridge::codec::thrift::{encode_message_header, transcode_struct};
use tracebridge::trace::{Format, Propagator, pool};

fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/thrift")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Every fixture file name.
fn all() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/thrift");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "fixtures missing: {names:?}");
    names
}

/// Decodes a whole fixture as exactly one frame, detecting the transport like a server.
fn decode_one(bytes: &Bytes) -> Frame {
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoder = ThriftDecoder::new(tracebridge::codec::thrift::DEFAULT_MAX_FRAME_SIZE);
    let frame = decoder.decode(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    frame
}

fn parts(frame: &Frame) -> (ProtocolId, Bytes) {
    match frame {
        Frame::Header(h) => (h.protocol, h.payload.clone()),
        Frame::Framed { protocol, message } | Frame::Unframed { protocol, message } => {
            (*protocol, message.clone())
        }
        Frame::Invalid { error, .. } => panic!("invalid: {error}"),
    }
}

/// The frame written again from its decoded parts.
fn reencode(frame: &Frame) -> Bytes {
    let mut out = BytesMut::new();
    match frame {
        Frame::Header(h) => {
            let payload = if h.transforms.contains(&Transform::Zlib) {
                header::deflate(&h.payload)
            } else {
                h.payload.clone()
            };
            let head = HeaderHead {
                flags: h.flags,
                seq_id: h.seq_id,
                protocol: h.protocol,
                transforms: &h.transforms,
                info: &h.info,
                persistent: &h.persistent,
            };
            encode_head(&head, payload.len(), &mut out).unwrap();
            out.extend_from_slice(&payload);
        }
        Frame::Framed { message, .. } => {
            out.extend_from_slice(&(message.len() as u32).to_be_bytes());
            out.extend_from_slice(message);
        }
        Frame::Unframed { message, .. } => out.extend_from_slice(message),
        Frame::Invalid { error, .. } => panic!("invalid: {error}"),
    }
    out.freeze()
}

#[test]
fn every_fixture_decodes_and_reencodes_byte_for_byte() {
    for name in all() {
        let bytes = fixture(&name);
        let frame = decode_one(&bytes);
        let again = reencode(&frame);
        if name.contains("zlib") && name.ends_with(".req.bin") {
            // Another deflate implementation may pick other bytes: the head must match exactly
            // and the payload must inflate to the same message.
            assert_eq!(decode_one(&again), frame, "{name}");
            let Frame::Header(h) = &frame else { panic!() };
            let head_len = 14 + 4 * header_words(&bytes);
            assert_eq!(&again[4..head_len], &bytes[4..head_len], "{name}: head");
            assert_eq!(h.transforms, vec![Transform::Zlib]);
        } else {
            assert_eq!(again, bytes, "{name}");
        }

        // The message header, written by our writer, is Python's byte for byte.
        let (protocol, message) = parts(&frame);
        let h = peek_message(&message, protocol).unwrap().unwrap();
        let mut m = BytesMut::new();
        encode_message_header(&mut m, protocol, h.name, h.kind, h.seq_id);
        assert_eq!(&m[..], &message[..h.body_offset], "{name}: message header");
    }
}

fn header_words(frame: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([frame[12], frame[13]]))
}

#[test]
fn facts_from_the_fixture_readme() {
    // (file, client type on the wire, protocol, message type, seqid)
    type Case = (&'static str, &'static str, ProtocolId, MessageType, i32);
    let cases: &[Case] = &[
        (
            "header_binary_echo.req.bin",
            "header",
            ProtocolId::Binary,
            MessageType::Call,
            1,
        ),
        (
            "header_compact_echo.req.bin",
            "header",
            ProtocolId::Compact,
            MessageType::Call,
            300,
        ),
        (
            "header_compact_zlib_echo.req.bin",
            "header",
            ProtocolId::Compact,
            MessageType::Call,
            i32::MAX,
        ),
        (
            "header_compact_zlib_echo.rep.bin",
            "header",
            ProtocolId::Compact,
            MessageType::Reply,
            i32::MAX,
        ),
        (
            "framed_binary_echo.req.bin",
            "framed",
            ProtocolId::Binary,
            MessageType::Call,
            5,
        ),
        (
            "framed_compact_echo.req.bin",
            "framed",
            ProtocolId::Compact,
            MessageType::Call,
            128,
        ),
        (
            "unframed_binary_echo.req.bin",
            "unframed",
            ProtocolId::Binary,
            MessageType::Call,
            7,
        ),
        (
            "unframed_compact_echo.rep.bin",
            "unframed",
            ProtocolId::Compact,
            MessageType::Reply,
            8,
        ),
        (
            "header_binary_unknown_method.rep.bin",
            "header",
            ProtocolId::Binary,
            MessageType::Exception,
            9,
        ),
        (
            "header_binary_fire_oneway.req.bin",
            "header",
            ProtocolId::Binary,
            MessageType::Oneway,
            11,
        ),
    ];
    for (name, transport, protocol, kind, seq) in cases {
        let frame = decode_one(&fixture(name));
        let got_transport = match &frame {
            Frame::Header(h) => {
                // Apache writers copy the message seqid into the THeader SEQUENCE ID.
                assert_eq!(h.seq_id, *seq as u32, "{name}");
                "header"
            }
            Frame::Framed { .. } => "framed",
            Frame::Unframed { .. } => "unframed",
            Frame::Invalid { .. } => "invalid",
        };
        let (p, message) = parts(&frame);
        let h = peek_message(&message, p).unwrap().unwrap();
        assert_eq!(
            (got_transport, p, h.kind, h.seq_id),
            (*transport, *protocol, *kind, *seq),
            "{name}"
        );
    }
}

/// The argument struct of an `echo` fixture.
fn echo_args(name: &str) -> (ProtocolId, Bytes) {
    let (protocol, message) = parts(&decode_one(&fixture(name)));
    let h = peek_message(&message, protocol).unwrap().unwrap();
    assert_eq!(h.name, "echo");
    (protocol, message.slice(h.body_offset..))
}

#[test]
fn transcoder_turns_python_binary_into_python_compact_and_back() {
    let (_, binary) = echo_args("header_binary_echo.req.bin");
    let (_, compact) = echo_args("header_compact_echo.req.bin");
    assert_eq!(
        transcode_struct(&binary, ProtocolId::Binary, ProtocolId::Compact).unwrap(),
        compact
    );
    // Compact → binary is exact but for one fact of the wire: an empty compact map is the single
    // byte 0 and names no key/value types, so without the IDL the binary map header gets
    // byte/byte (0x03 0x03) where Python, knowing the IDL, wrote string/string (0x0b 0x0b).
    // Readers of every Apache language ignore the types of an empty map.
    let back = transcode_struct(&compact, ProtocolId::Compact, ProtocolId::Binary).unwrap();
    assert_eq!(back.len(), binary.len());
    let diffs: Vec<usize> = (0..back.len()).filter(|&i| back[i] != binary[i]).collect();
    assert_eq!(
        diffs.len(),
        2,
        "only the empty map's two type bytes may differ: {diffs:?}"
    );
    let at = diffs[0];
    assert_eq!(diffs[1], at + 1);
    assert_eq!(
        (&back[at..at + 6], &binary[at..at + 6]),
        (&[3, 3, 0, 0, 0, 0][..], &[11, 11, 0, 0, 0, 0][..])
    );
    // Binary → compact → binary → compact is a fixed point.
    assert_eq!(
        transcode_struct(&back, ProtocolId::Binary, ProtocolId::Compact).unwrap(),
        compact
    );
    // The same value in every other dialect's file.
    for (name, protocol) in [
        ("framed_binary_echo.req.bin", ProtocolId::Binary),
        ("unframed_binary_echo.req.bin", ProtocolId::Binary),
        ("framed_compact_echo.req.bin", ProtocolId::Compact),
        ("unframed_compact_echo.req.bin", ProtocolId::Compact),
        ("header_compact_zlib_echo.req.bin", ProtocolId::Compact),
    ] {
        let (p, args) = echo_args(name);
        assert_eq!(p, protocol, "{name}");
        let want = if protocol == ProtocolId::Binary {
            &binary
        } else {
            &compact
        };
        assert_eq!(&args, want, "{name}");
    }
    // Replies (the echoed value in field 0 of the result struct) transcode the same way.
    let (_, rb) = echo_args("header_binary_echo.rep.bin");
    let (_, rc) = echo_args("header_compact_echo.rep.bin");
    assert_eq!(
        transcode_struct(&rb, ProtocolId::Binary, ProtocolId::Compact).unwrap(),
        rc
    );
}

#[test]
fn application_exception_encoder_matches_python() {
    for (name, protocol) in [
        ("header_binary_unknown_method.rep.bin", ProtocolId::Binary),
        ("framed_binary_unknown_method.rep.bin", ProtocolId::Binary),
    ] {
        let (p, message) = parts(&decode_one(&fixture(name)));
        assert_eq!(p, protocol);
        let h = peek_message(&message, p).unwrap().unwrap();
        // TApplicationException { 1: string message, 2: i32 type } as Python wrote it.
        let body = &message[h.body_offset..];
        assert_eq!(&body[..3], &[11, 0, 1]);
        let len = i32::from_be_bytes(body[3..7].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&body[7..7 + len]).unwrap();
        let kind = i32::from_be_bytes(body[10 + len..14 + len].try_into().unwrap());
        assert_eq!(kind, 1, "UNKNOWN_METHOD");
        let ours = encode_exception(p, h.name, h.seq_id, kind, text);
        assert_eq!(&ours[..], &message[..], "{name}");
        // And in compact, it transcodes to what our compact encoder writes.
        let compact = encode_exception(ProtocolId::Compact, h.name, h.seq_id, kind, text);
        let ch = peek_message(&compact, ProtocolId::Compact)
            .unwrap()
            .unwrap();
        assert_eq!(ch.kind, MessageType::Exception);
        assert_eq!(
            transcode_struct(body, ProtocolId::Binary, ProtocolId::Compact).unwrap(),
            compact.slice(ch.body_offset..)
        );
    }
}

#[test]
fn python_trace_headers_are_extracted_and_replaced_without_touching_the_payload() {
    let frame = decode_one(&fixture("header_binary_info_echo.req.bin"));
    let Frame::Header(h) = frame else { panic!() };
    let propagator = Propagator::new(vec![Format::W3c], vec![Format::W3c, Format::XTraceRaw]);
    let extracted = propagator.extract(&h.info);
    let ctx = extracted.context.expect("Python's traceparent is valid");
    assert_eq!(ctx.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ctx.span_id.to_hex(), "00f067aa0ba902b7");

    let mut child = ctx.clone();
    child.span_id = tracebridge::trace::SpanId::random();
    let mut info = h.info.clone();
    pool::with_writer(|w| propagator.inject(&child, &mut info, w));
    let keys: Vec<&[u8]> = info.iter().map(|(k, _)| &k[..]).collect();
    assert_eq!(keys, [&b"traceparent"[..], b"tracestate", b"x-trace-raw"]);

    let mut out = BytesMut::new();
    let head = HeaderHead {
        flags: h.flags,
        seq_id: h.seq_id,
        protocol: h.protocol,
        transforms: &[],
        info: &info,
        persistent: &[],
    };
    encode_head(&head, h.payload.len(), &mut out).unwrap();
    out.extend_from_slice(&h.payload);
    let Frame::Header(again) = decode_one(&out.freeze()) else {
        panic!()
    };
    assert_eq!(again.payload, h.payload);
    let tp = &again
        .info
        .iter()
        .find(|(k, _)| &k[..] == b"traceparent")
        .unwrap()
        .1;
    assert_eq!(
        std::str::from_utf8(tp).unwrap(),
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            child.span_id.to_hex()
        )
    );
}
