//! W3C `tracestate`: a list of up to 32 vendor `key=value` members.
//!
//! ```text
//! list        = list-member 0*31( OWS "," OWS list-member )
//! list-member = key "=" value            (empty members between commas are allowed)
//! key         = simple-key / multi-tenant-key
//! simple-key  = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
//! multi-tenant-key = tenant-id "@" system-id
//!   tenant-id = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
//!   system-id = lcalpha 0*13( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
//! value       = 0*255(chr) nblk-chr ;  nblk-chr = %x21-2B / %x2D-3C / %x3E-7E ; chr = %x20 / nblk-chr
//! ```
//! A header with an invalid member, more than 32 members or a duplicate key is dropped whole.
//! On inject a list over 512 characters is truncated: first members longer than 128
//! characters are removed, then members from the end, until it fits.

use bytes::Bytes;

use super::pool::{IdWriter, with_writer};

/// A validated W3C `tracestate` value (empty = absent), kept as header bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState(pub Bytes);

const MAX_MEMBERS: usize = 32;
const MAX_LEN: usize = 512;
const LONG_MEMBER: usize = 128;

impl TraceState {
    /// Validates a header value; an invalid one gives the empty state. Valid values are copied
    /// into the pooled slab (no allocation at steady state).
    pub fn parse(value: &[u8]) -> TraceState {
        if !is_valid(value) {
            return TraceState::default();
        }
        TraceState(with_writer(|w| {
            w.write(value.len(), |b| b.copy_from_slice(value))
        }))
    }

    /// Whether no state is carried.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value to inject: `None` if empty; the same bytes if within 512 characters; else the
    /// truncated list.
    pub(super) fn for_inject(&self, w: &mut IdWriter) -> Option<Bytes> {
        if self.0.is_empty() {
            return None;
        }
        if self.0.len() <= MAX_LEN {
            return Some(self.0.clone());
        }
        let members: Vec<&[u8]> = members(&self.0).collect();
        let mut keep: Vec<&[u8]> = members
            .iter()
            .copied()
            .filter(|m| m.len() <= LONG_MEMBER)
            .collect();
        while joined_len(&keep) > MAX_LEN {
            keep.pop();
        }
        if keep.is_empty() {
            return None;
        }
        let len = joined_len(&keep);
        Some(w.write(len, |out| {
            let mut at = 0;
            for (i, m) in keep.iter().enumerate() {
                if i > 0 {
                    out[at] = b',';
                    at += 1;
                }
                out[at..at + m.len()].copy_from_slice(m);
                at += m.len();
            }
        }))
    }
}

fn joined_len(members: &[&[u8]]) -> usize {
    members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
}

/// Non-empty members with optional whitespace trimmed.
fn members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|m| m.trim_ascii())
        .filter(|m| !m.is_empty())
}

fn is_valid(value: &[u8]) -> bool {
    let mut keys: [&[u8]; MAX_MEMBERS] = [&[]; MAX_MEMBERS];
    for (count, member) in members(value).enumerate() {
        if count == MAX_MEMBERS {
            return false;
        }
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !valid_key(key) || !valid_value(value) || keys[..count].contains(&key) {
            return false;
        }
        keys[count] = key;
    }
    true
}

fn key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            (1..=256).contains(&key.len())
                && key[0].is_ascii_lowercase()
                && key.iter().all(|&c| key_char(c))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant.iter().all(|&c| key_char(c))
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && system.iter().all(|&c| key_char(c))
        }
    }
}

fn valid_value(value: &[u8]) -> bool {
    let nblk = |c: u8| matches!(c, 0x21..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E);
    (1..=256).contains(&value.len())
        && value.last().is_some_and(|&c| nblk(c))
        && value.iter().all(|&c| c == 0x20 || nblk(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(v: &str) -> String {
        String::from_utf8(TraceState::parse(v.as_bytes()).0.to_vec()).unwrap()
    }

    #[test]
    fn accepts_valid_lists() {
        for v in [
            "rojo=00f067aa0ba902b7",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "rojo=1 , congo=2",
            "rojo=1,,congo=2",
            "t@sys=v",
            "0tenant@s-y_s*/=value with spaces",
            "a*/_-9=x",
        ] {
            assert_eq!(parsed(v), v, "{v}");
        }
    }

    #[test]
    fn rejects_invalid_lists_whole() {
        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let thirty_two: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parsed(&thirty_two.join(",")), thirty_two.join(","));
        for v in [
            too_many.join(","),
            "Rojo=1".into(),
            "1abc=1".into(),
            "rojo=1,rojo=2".into(),
            "rojo".into(),
            "rojo=".into(),
            "rojo=a,b".into(),
            "rojo=a\tb".into(),
            "rojo=x=y".into(),
            "@sys=v".into(),
            "t@=v".into(),
            "t@Sys=v".into(),
            "t@system-id-too-long=v".into(),
            format!("{}=v", "a".repeat(257)),
            format!("k={}", "v".repeat(257)),
        ] {
            assert_eq!(parsed(&v), "", "{v}");
        }
    }

    #[test]
    fn truncates_long_members_first_then_from_the_end() {
        let long = format!("big={}", "x".repeat(200));
        let small: Vec<String> = (0..30)
            .map(|i| format!("k{i:02}={}", "v".repeat(10)))
            .collect();
        let mut all = vec![small[0].clone(), long.clone()];
        all.extend(small[1..].iter().cloned());
        let state = TraceState::parse(all.join(",").as_bytes());
        assert!(!state.is_empty());
        let out = state.for_inject(&mut IdWriter::default()).unwrap();
        let out = std::str::from_utf8(&out).unwrap();
        assert!(out.len() <= 512, "{}", out.len());
        assert!(!out.contains("big="), "long member must go first");
        // 15-character members: 30 of them with commas = 479 characters, all fit.
        assert_eq!(out, small.join(","));

        let many: Vec<String> = (0..32)
            .map(|i| format!("k{i:02}={}", "v".repeat(14)))
            .collect();
        let out = TraceState::parse(many.join(",").as_bytes())
            .for_inject(&mut IdWriter::default())
            .unwrap();
        // 18 characters + comma each: 27 members = 512 characters exactly; the 28th would pass it.
        assert_eq!(std::str::from_utf8(&out).unwrap(), many[..27].join(","));
    }
}
