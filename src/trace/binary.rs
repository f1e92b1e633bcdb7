//! The gRPC / OpenCensus binary trace context: `grpc-trace-bin`, and THeader's `x-trace-raw`.
//!
//! ```text
//! byte 0      version = 0
//! field 0     0x00, 16-byte trace id
//! field 1     0x01, 8-byte span id
//! field 2     0x02, 1-byte options (bit 0 sampled)          29 bytes in all
//! ```
//! Fields come in id order; parsing stops at the first unknown field id. On HTTP/2 the
//! `grpc-trace-bin` value is base64 (gRPC `-bin` metadata; padded or not, both accepted; written
//! unpadded). `x-trace-raw` is the standard padded base64 of the same 29 bytes (40 characters).

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD,
};

use super::pool::IdWriter;
use super::{Carrier, ParseError, SpanId, TraceContext, TraceFlags, TraceId};

/// Header names.
pub(super) const GRPC_TRACE_BIN: &str = "grpc-trace-bin";
pub(super) const X_TRACE_RAW: &str = "x-trace-raw";

const LEN: usize = 29;

/// Standard alphabet, padding optional on decode.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses the binary form.
pub(super) fn parse(bytes: &[u8], header: &'static str) -> Result<TraceContext, ParseError> {
    if bytes.first() != Some(&0) {
        return Err(if bytes.is_empty() {
            ParseError::Length { header }
        } else {
            ParseError::Version { header }
        });
    }
    let mut pos = 1;
    let mut trace = None;
    let mut span = None;
    let mut options = 0u8;
    while pos < bytes.len() {
        match bytes[pos] {
            0 if trace.is_none() && span.is_none() => {
                let id = bytes
                    .get(pos + 1..pos + 17)
                    .ok_or(ParseError::Length { header })?;
                let mut t = [0u8; 16];
                t.copy_from_slice(id);
                trace = Some(TraceId(t));
                pos += 17;
            }
            1 if trace.is_some() && span.is_none() => {
                let id = bytes
                    .get(pos + 1..pos + 9)
                    .ok_or(ParseError::Length { header })?;
                let mut s = [0u8; 8];
                s.copy_from_slice(id);
                span = Some(SpanId(s));
                pos += 9;
            }
            2 if span.is_some() => {
                options = *bytes.get(pos + 1).ok_or(ParseError::Length { header })?;
                pos += 2;
            }
            // Unknown (or out-of-order) field: stop, keeping what was read.
            _ => break,
        }
    }
    let (Some(trace_id), Some(span_id)) = (trace, span) else {
        return Err(ParseError::Malformed { header });
    };
    if trace_id.is_zero() || span_id.is_zero() {
        return Err(ParseError::ZeroId { header });
    }
    Ok(TraceContext {
        trace_id,
        span_id,
        flags: TraceFlags::default().with_sampled(options & 1 == 1),
        ..Default::default()
    })
}

/// The 29 bytes for `ctx`.
pub(super) fn encode(ctx: &TraceContext) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[1] = 0;
    b[2..18].copy_from_slice(&ctx.trace_id.0);
    b[18] = 1;
    b[19..27].copy_from_slice(&ctx.span_id.0);
    b[27] = 2;
    b[28] = u8::from(ctx.flags.is_sampled());
    b
}

fn extract_base64<C: Carrier + ?Sized>(
    carrier: &C,
    header: &'static str,
) -> Result<Option<TraceContext>, ParseError> {
    let Some(v) = carrier.get(header) else {
        return Ok(None);
    };
    let mut buf = [0u8; 96];
    if v.len() > 128 {
        return Err(ParseError::Length { header });
    }
    let n = LENIENT
        .decode_slice(v, &mut buf)
        .map_err(|_| ParseError::Character { header })?;
    parse(&buf[..n], header).map(Some)
}

/// Extracts `grpc-trace-bin` (base64 in the carrier).
pub(super) fn extract_grpc<C: Carrier + ?Sized>(
    carrier: &C,
) -> Result<Option<TraceContext>, ParseError> {
    extract_base64(carrier, GRPC_TRACE_BIN)
}

/// Extracts `x-trace-raw`.
pub(super) fn extract_raw<C: Carrier + ?Sized>(
    carrier: &C,
) -> Result<Option<TraceContext>, ParseError> {
    extract_base64(carrier, X_TRACE_RAW)
}

/// Injects `grpc-trace-bin` as unpadded base64 (39 characters).
pub(super) fn inject_grpc<C: Carrier + ?Sized>(
    ctx: &TraceContext,
    carrier: &mut C,
    w: &mut IdWriter,
) {
    let raw = encode(ctx);
    carrier.set(
        GRPC_TRACE_BIN,
        w.write(39, |b| {
            let _ = STANDARD_NO_PAD.encode_slice(raw, b);
        }),
    );
}

/// Injects `x-trace-raw` as padded standard base64 (40 characters).
pub(super) fn inject_raw<C: Carrier + ?Sized>(
    ctx: &TraceContext,
    carrier: &mut C,
    w: &mut IdWriter,
) {
    let raw = encode(ctx);
    carrier.set(
        X_TRACE_RAW,
        w.write(40, |b| {
            let _ = STANDARD.encode_slice(raw, b);
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn ctx() -> TraceContext {
        TraceContext {
            trace_id: TraceId([
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ]),
            span_id: SpanId([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
            flags: TraceFlags::SAMPLED,
            ..Default::default()
        }
    }

    #[test]
    fn exact_bytes_and_base64() {
        let b = encode(&ctx());
        assert_eq!(b.len(), 29);
        assert_eq!(&b[..2], &[0, 0]);
        assert_eq!((b[18], b[27], b[28]), (1, 2, 1));
        let mut l: Vec<(Bytes, Bytes)> = Vec::new();
        inject_raw(&ctx(), &mut l, &mut IdWriter::default());
        assert_eq!(
            l[0].1,
            Bytes::from_static(b"AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=")
        );
        assert_eq!(extract_raw(&l).unwrap().unwrap(), ctx());
        let mut h = HeaderMap::new();
        inject_grpc(&ctx(), &mut h, &mut IdWriter::default());
        assert_eq!(
            h.get("grpc-trace-bin").unwrap(),
            "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE"
        );
        assert_eq!(extract_grpc(&h).unwrap().unwrap(), ctx());
        // Padded is accepted for grpc-trace-bin too.
        h.insert(
            "grpc-trace-bin",
            "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=".parse().unwrap(),
        );
        assert_eq!(extract_grpc(&h).unwrap().unwrap(), ctx());
    }

    #[test]
    fn options_are_optional_and_unknown_fields_stop_parsing() {
        let b = encode(&ctx());
        let c = parse(&b[..27], GRPC_TRACE_BIN).unwrap();
        assert!(!c.flags.is_sampled());
        let mut extended = b.to_vec();
        extended.extend_from_slice(&[9, 1, 2, 3]);
        assert_eq!(parse(&extended, GRPC_TRACE_BIN).unwrap(), ctx());
    }

    #[test]
    fn malformed() {
        use ParseError::*;
        let h = GRPC_TRACE_BIN;
        let b = encode(&ctx());
        let mut v1 = b;
        v1[0] = 1;
        let mut zero = b;
        zero[2..18].fill(0);
        let cases: Vec<(Vec<u8>, ParseError)> = vec![
            (vec![], Length { header: h }),
            (v1.to_vec(), Version { header: h }),
            (b[..10].to_vec(), Length { header: h }),
            (b[..18].to_vec(), Malformed { header: h }),
            (b[..22].to_vec(), Length { header: h }),
            (zero.to_vec(), ZeroId { header: h }),
            (vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 1], Malformed { header: h }),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(&bytes, h), Err(want), "{bytes:?}");
        }
        let mut hm = HeaderMap::new();
        hm.insert("grpc-trace-bin", "!!!".parse().unwrap());
        assert_eq!(extract_grpc(&hm), Err(Character { header: h }));
    }
}
