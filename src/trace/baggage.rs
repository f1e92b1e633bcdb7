//! W3C `baggage`, passed through, with Jaeger `uberctx-*` items merged in W3C form.
//!
//! ```text
//! baggage = list-member 0*179( OWS "," OWS list-member ) ; member = key OWS "=" OWS value *( ";" property )
//! uberctx-{key}: {value}     (one header per item; the value may be URL-encoded)
//! ```
//! The gateway does not interpret baggage: the `baggage` header is kept as received (copied
//! into the pooled slab, so no allocation at steady state); `uberctx-*` items, if any, are
//! appended as `key=value` members (this path allocates).

use bytes::Bytes;

use super::Carrier;
use super::jaeger::UBERCTX;
use super::pool::with_writer;

/// Header name.
pub(super) const BAGGAGE: &str = "baggage";
/// W3C limit on the whole header.
const MAX_LEN: usize = 8192;

/// The baggage to carry, or `None`.
pub(super) fn extract<C: Carrier + ?Sized>(carrier: &C) -> Option<Bytes> {
    let w3c = carrier
        .get(BAGGAGE)
        .filter(|v| !v.is_empty() && v.len() <= MAX_LEN);
    let mut jaeger: Vec<u8> = Vec::new();
    carrier.for_each_prefixed(UBERCTX, &mut |key, value| {
        let key = &key[UBERCTX.len()..];
        let valid = !key.is_empty()
            && key
                .bytes()
                .all(|c| c.is_ascii_graphic() && !matches!(c, b',' | b';' | b'=' | b'"' | b'\\'))
            && value
                .iter()
                .all(|&c| c.is_ascii_graphic() && c != b',' && c != b';');
        if valid {
            if !jaeger.is_empty() {
                jaeger.push(b',');
            }
            jaeger.extend_from_slice(key.as_bytes());
            jaeger.push(b'=');
            jaeger.extend_from_slice(value);
        }
    });
    match (w3c, jaeger.is_empty()) {
        (None, true) => None,
        (Some(v), true) => Some(with_writer(|w| w.write(v.len(), |b| b.copy_from_slice(v)))),
        (None, false) => Some(Bytes::from(jaeger)),
        (Some(v), false) => {
            let mut all = v.to_vec();
            all.push(b',');
            all.extend_from_slice(&jaeger);
            Some(Bytes::from(all))
        }
    }
    .filter(|b| b.len() <= MAX_LEN)
}

/// Writes `baggage` when the context carries some.
pub(super) fn inject<C: Carrier + ?Sized>(baggage: Option<&Bytes>, carrier: &mut C) {
    if let Some(b) = baggage {
        carrier.set(BAGGAGE, b.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn passes_w3c_through_and_merges_uberctx() {
        let mut h = HeaderMap::new();
        assert_eq!(extract(&h), None);
        h.insert(
            "baggage",
            "userId=alice,serverNode=DF%2028;prop".parse().unwrap(),
        );
        assert_eq!(
            extract(&h).unwrap(),
            Bytes::from_static(b"userId=alice,serverNode=DF%2028;prop")
        );
        h.insert("uberctx-tenant", "acme".parse().unwrap());
        assert_eq!(
            extract(&h).unwrap(),
            Bytes::from_static(b"userId=alice,serverNode=DF%2028;prop,tenant=acme")
        );
        h.remove("baggage");
        h.insert("uberctx-bad", "a,b".parse().unwrap());
        assert_eq!(extract(&h).unwrap(), Bytes::from_static(b"tenant=acme"));
    }
}
