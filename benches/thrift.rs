//! Thrift forwarding cost per frame.
//!
//! - `theader_forward`: one THeader call (binary protocol, ~200-byte payload, `traceparent` +
//!   `tracestate` info headers) through decode → extract → inject W3C + `x-trace-raw` with the
//!   pooled writer → `encode_head`, the payload `Bytes` forwarded untouched (`zero_copy`),
//!   against a naive bridge that re-serialises (`naive_reserialize`): owned `String` headers
//!   built with `format!`, the payload copied into a new `Vec`, the whole frame written into a
//!   fresh `Vec`. Both in one group, so their ratio comes from one run.
//! - `message_peek`: `peek_message` (name, type, seqid without decoding the arguments) on
//!   strict binary, non-strict binary and compact messages.
//!
//! `cargo bench --bench thrift -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use tracebridge::codec::thrift::header::{HeaderHead, decode, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};
use tracebridge::codec::thrift::{DEFAULT_MAX_FRAME_SIZE, varint};
use tracebridge::trace::pool::with_writer;
use tracebridge::trace::{Format, Propagator, SpanId, TraceContext};

const MAX: u32 = DEFAULT_MAX_FRAME_SIZE;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TS: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
const METHOD: &str = "UserService:getProfile";
const SEQ: i32 = 42;

/// A realistic argument struct in TBinaryProtocol:
/// `getProfile(1: i64 user_id, 2: string locale, 3: list<string> fields, 4: Ctx ctx)`,
/// `Ctx { 1: string client, 2: i32 timeout_ms, 3: bool trace }`.
fn binary_args() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, kind: u8, id: i16) {
        out.push(kind);
        out.extend_from_slice(&id.to_be_bytes());
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut a = Vec::with_capacity(256);
    field(&mut a, 10, 1); // i64
    a.extend_from_slice(&8_675_309i64.to_be_bytes());
    field(&mut a, 11, 2); // string
    string(&mut a, "en-US");
    field(&mut a, 15, 3); // list<string>
    let fields = [
        "display_name",
        "avatar_url",
        "email",
        "created_at",
        "preferences.notifications",
        "preferences.theme",
    ];
    a.push(11);
    a.extend_from_slice(&(fields.len() as i32).to_be_bytes());
    for f in fields {
        string(&mut a, f);
    }
    field(&mut a, 12, 4); // struct Ctx
    field(&mut a, 11, 1);
    string(&mut a, "web-frontend/2.14.1 (checkout)");
    field(&mut a, 8, 2);
    a.extend_from_slice(&250i32.to_be_bytes());
    field(&mut a, 2, 3);
    a.push(1);
    a.push(0); // Ctx STOP
    a.push(0); // args STOP
    a
}

/// The call message in strict binary: `80 01 00 01 | name | seqid | args`.
fn strict_message(args: &[u8]) -> Vec<u8> {
    let mut m = vec![0x80, 0x01, 0x00, MessageType::Call.as_u8()];
    m.extend_from_slice(&(METHOD.len() as i32).to_be_bytes());
    m.extend_from_slice(METHOD.as_bytes());
    m.extend_from_slice(&SEQ.to_be_bytes());
    m.extend_from_slice(args);
    m
}

/// The call message in non-strict binary: `name len | name | type | seqid | args`.
fn non_strict_message(args: &[u8]) -> Vec<u8> {
    let mut m = (METHOD.len() as i32).to_be_bytes().to_vec();
    m.extend_from_slice(METHOD.as_bytes());
    m.push(MessageType::Call.as_u8());
    m.extend_from_slice(&SEQ.to_be_bytes());
    m.extend_from_slice(args);
    m
}

/// A compact message header (`82 | type<<5|1 | varint seqid | varint len | name`) over the
/// same bytes (the peek never reads the arguments).
fn compact_message(args: &[u8]) -> Vec<u8> {
    let mut m = vec![0x82, (MessageType::Call.as_u8() << 5) | 0x01];
    varint::write_u32(&mut m, SEQ as u32);
    varint::write_u32(&mut m, METHOD.len() as u32);
    m.extend_from_slice(METHOD.as_bytes());
    m.extend_from_slice(args);
    m
}

/// The THeader frame a downstream client sends.
fn incoming_frame(payload: &[u8]) -> Bytes {
    let info = vec![
        (
            Bytes::from_static(b"traceparent"),
            Bytes::from_static(TP.as_bytes()),
        ),
        (
            Bytes::from_static(b"tracestate"),
            Bytes::from_static(TS.as_bytes()),
        ),
    ];
    let head = HeaderHead {
        flags: 0,
        seq_id: SEQ as u32,
        protocol: ProtocolId::Binary,
        transforms: &[],
        info: &info,
        persistent: &[],
    };
    let mut out = BytesMut::new();
    encode_head(&head, payload.len(), &mut out).unwrap();
    out.extend_from_slice(payload);
    out.freeze()
}

/// The gateway's path: the info headers are slices of the received frame, the new values come
/// from the pooled writer, and the payload goes out as the same `Bytes` after a new head
/// (written vectored by the upstream).
fn zero_copy(p: &Propagator, frame: Bytes) -> [Bytes; 2] {
    let mut h = decode(frame, MAX).unwrap();
    if let Some(parent) = p.extract(&h.info).context {
        let ctx = parent.child();
        with_writer(|w| p.inject(&ctx, &mut h.info, w));
    }
    let mut head = BytesMut::with_capacity(192);
    let fields = HeaderHead {
        flags: h.flags,
        seq_id: h.seq_id,
        protocol: h.protocol,
        transforms: &h.transforms,
        info: &h.info,
        persistent: &h.persistent,
    };
    encode_head(&fields, h.payload.len(), &mut head).unwrap();
    [head.freeze(), h.payload]
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    varint::write_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// What a hand-written bridge typically does: owned `String` headers, `split` + `format!`,
/// the payload copied, and the whole frame re-serialised into a fresh `Vec`.
fn naive_reserialize(frame: Bytes) -> Vec<u8> {
    let h = decode(frame, MAX).unwrap();
    let mut headers: Vec<(String, String)> = h
        .info
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let traceparent = headers
        .iter()
        .rev()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone());
    if let Some(tp) = traceparent {
        let parts: Vec<String> = tp.split('-').map(str::to_owned).collect();
        if parts.len() == 4 && parts[1].len() == 32 && parts[2].len() == 16 {
            let span = SpanId::random();
            let new_tp = format!("00-{}-{}-{}", parts[1], span.to_hex(), parts[3]);
            let mut raw = vec![0u8, 0u8];
            for i in (0..32).step_by(2) {
                raw.push(u8::from_str_radix(&parts[1][i..i + 2], 16).unwrap_or(0));
            }
            raw.push(1);
            raw.extend_from_slice(&span.0);
            raw.push(2);
            raw.push(u8::from_str_radix(&parts[3], 16).unwrap_or(0) & 1);
            let new_raw = STANDARD.encode(&raw);
            headers.retain(|(k, _)| k != "traceparent" && k != "x-trace-raw");
            headers.push(("traceparent".to_owned(), new_tp));
            headers.push(("x-trace-raw".to_owned(), new_raw));
        }
    }
    let payload: Vec<u8> = h.payload.to_vec();

    let mut area = Vec::new();
    varint::write_u32(&mut area, h.protocol.id());
    varint::write_u32(&mut area, 0); // no transforms
    varint::write_u32(&mut area, 1); // KEYVALUE
    varint::write_u32(&mut area, headers.len() as u32);
    for (k, v) in &headers {
        put_string(&mut area, k);
        put_string(&mut area, v);
    }
    area.resize(area.len().div_ceil(4) * 4, 0);
    let mut out = Vec::new();
    out.put_u32((10 + area.len() + payload.len()) as u32);
    out.put_u16(0x0FFF);
    out.put_u16(h.flags);
    out.put_u32(h.seq_id);
    out.put_u16((area.len() / 4) as u16);
    out.extend_from_slice(&area);
    out.extend_from_slice(&payload);
    out
}

/// Decodes a forwarded frame and checks it before anything is timed: same payload, the same
/// trace in both `traceparent` and `x-trace-raw`, a new span id, `tracestate` kept.
fn check_forwarded(frame: Bytes, payload: &[u8], path: &str) -> TraceContext {
    let h = decode(frame, MAX).unwrap_or_else(|e| panic!("{path}: output does not decode: {e}"));
    assert_eq!(&h.payload[..], payload, "{path}: payload changed");
    let w3c = Propagator::new(vec![Format::W3c], vec![]).extract(&h.info);
    let raw = Propagator::new(vec![Format::XTraceRaw], vec![]).extract(&h.info);
    let (w3c, raw) = (w3c.context.unwrap(), raw.context.unwrap());
    assert_eq!(
        w3c.trace_id.to_hex(),
        TRACE_ID,
        "{path}: traceparent trace id"
    );
    assert_eq!(raw.trace_id, w3c.trace_id, "{path}: x-trace-raw trace id");
    assert_eq!(raw.span_id, w3c.span_id, "{path}: x-trace-raw span id");
    assert_ne!(
        w3c.span_id.to_hex(),
        "00f067aa0ba902b7",
        "{path}: no child span"
    );
    assert!(w3c.flags.is_sampled(), "{path}: sampled flag");
    let ts = h.info.iter().rev().find(|(k, _)| &k[..] == b"tracestate");
    assert_eq!(
        ts.map(|(_, v)| &v[..]),
        Some(TS.as_bytes()),
        "{path}: tracestate"
    );
    w3c
}

fn forward(c: &mut Criterion) {
    let args = binary_args();
    let payload = strict_message(&args);
    assert!(
        (180..=240).contains(&payload.len()),
        "payload is {} bytes",
        payload.len()
    );
    let frame = incoming_frame(&payload);
    let p = Propagator::new(
        vec![Format::W3c, Format::XTraceRaw],
        vec![Format::W3c, Format::XTraceRaw],
    );

    let [head, body] = zero_copy(&p, frame.clone());
    assert_eq!(body.as_ptr(), frame[frame.len() - payload.len()..].as_ptr());
    let mut joined = BytesMut::from(&head[..]);
    joined.extend_from_slice(&body);
    let ours = check_forwarded(joined.freeze(), &payload, "zero_copy");
    let naive = check_forwarded(
        Bytes::from(naive_reserialize(frame.clone())),
        &payload,
        "naive_reserialize",
    );
    assert_eq!(ours.trace_id, naive.trace_id);

    let mut g = c.benchmark_group("theader_forward");
    g.bench_function("zero_copy", |b| {
        b.iter(|| zero_copy(&p, black_box(frame.clone())))
    });
    g.bench_function("naive_reserialize", |b| {
        b.iter(|| naive_reserialize(black_box(frame.clone())))
    });
    g.finish();
}

fn peek(c: &mut Criterion) {
    let args = binary_args();
    let cases = [
        ("binary_strict", ProtocolId::Binary, strict_message(&args)),
        (
            "binary_non_strict",
            ProtocolId::Binary,
            non_strict_message(&args),
        ),
        ("compact", ProtocolId::Compact, compact_message(&args)),
    ];
    let mut g = c.benchmark_group("message_peek");
    for (name, protocol, message) in &cases {
        let h = peek_message(message, *protocol).unwrap().unwrap();
        assert_eq!(
            (h.name, h.kind, h.seq_id),
            (METHOD, MessageType::Call, SEQ),
            "{name}"
        );
        assert_eq!(h.body_offset, message.len() - args.len(), "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| {
                peek_message(black_box(message), *protocol)
                    .unwrap()
                    .unwrap()
                    .seq_id
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward, peek);
criterion_main!(benches);
