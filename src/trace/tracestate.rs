//! W3C `tracestate` (Trace Context Level 2): a list of up to 32 vendor `key=value` members.
//!
//! ```text
//! list        = list-member 0*31( OWS "," OWS list-member )   (empty members allowed)
//! list-member = key "=" value
//! key         = ( lcalpha / DIGIT ) 0*255( keychar )
//! keychar     = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
//! value       = 0*255(chr) nblk-chr
//! nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E ;  chr = %x20 / nblk-chr
//! OWS         = *( SP / HTAB )
//! ```
//! Repeated `tracestate` fields are combined in order, as if comma-joined (RFC 9110 §5.3), and
//! the limits apply to the combined list. Member by member: empty ones are skipped, invalid
//! ones dropped, a repeated key keeps its first occurrence. Over 32 members, the right-most
//! are dropped; over 512 characters (commas included, OWS not), members longer than 128
//! characters go first, then members from the end, until it fits. What survives is written in
//! the spec's form, `k1=v1,k2=v2`, into the pooled slab; [`TracestateOutcome`] says what was
//! dropped, for metrics.

use bytes::Bytes;

use super::pool::{IdWriter, with_writer};

/// A validated W3C `tracestate` value (empty = absent), kept as header bytes in the spec's
/// form (`k1=v1,k2=v2`: no OWS, no empty members, at most 32 members and 512 characters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState(pub Bytes);

/// What extraction did to the `tracestate` it received (counts of list members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TracestateOutcome {
    /// Members kept and propagated. (Counts saturate at `u16::MAX`.)
    pub kept: u16,
    /// Members dropped for breaking the grammar (key, value, or no `=`).
    pub dropped_invalid: u16,
    /// Members dropped because their key already appeared earlier in the list.
    pub dropped_duplicate: u16,
    /// Members dropped to fit the 32-member or 512-character limit.
    pub truncated: u16,
}

impl TracestateOutcome {
    /// Whether any member was dropped, for any reason.
    pub fn trimmed(&self) -> bool {
        self.dropped_invalid != 0 || self.dropped_duplicate != 0 || self.truncated != 0
    }
}

const MAX_MEMBERS: usize = 32;
const MAX_LEN: usize = 512;
const LONG_MEMBER: usize = 128;

/// Collects the valid members of one or more `tracestate` fields (borrowed, no allocation).
struct Members<'a> {
    list: [&'a [u8]; MAX_MEMBERS],
    keys: [&'a [u8]; MAX_MEMBERS],
    len: usize,
    outcome: TracestateOutcome,
}

impl<'a> Members<'a> {
    fn new() -> Self {
        Members {
            list: [&[]; MAX_MEMBERS],
            keys: [&[]; MAX_MEMBERS],
            len: 0,
            outcome: TracestateOutcome::default(),
        }
    }

    /// Adds every member of one field, in order.
    fn add_field(&mut self, field: &'a [u8]) {
        for member in field.split(|&b| b == b',').map(trim_ows) {
            self.add(member);
        }
    }

    fn add(&mut self, member: &'a [u8]) {
        if member.is_empty() {
            return;
        }
        let Some(key) = valid_member(member) else {
            self.outcome.dropped_invalid = self.outcome.dropped_invalid.saturating_add(1);
            return;
        };
        if self.keys[..self.len].contains(&key) {
            self.outcome.dropped_duplicate = self.outcome.dropped_duplicate.saturating_add(1);
        } else if self.len == MAX_MEMBERS {
            // Over 32: the right-most members go.
            self.outcome.truncated = self.outcome.truncated.saturating_add(1);
        } else {
            self.list[self.len] = member;
            self.keys[self.len] = key;
            self.len += 1;
        }
    }

    /// Drops members until the joined list fits 512 characters: first those over 128
    /// characters, then from the end.
    fn fit(&mut self) {
        if joined_len(&self.list[..self.len]) <= MAX_LEN {
            return;
        }
        let before = self.len;
        let mut kept = 0;
        for i in 0..self.len {
            if self.list[i].len() <= LONG_MEMBER {
                self.list[kept] = self.list[i];
                kept += 1;
            }
        }
        self.len = kept;
        while joined_len(&self.list[..self.len]) > MAX_LEN {
            self.len -= 1;
        }
        // At most 32 members are held, so the difference fits.
        let dropped = u16::try_from(before - self.len).unwrap_or(u16::MAX);
        self.outcome.truncated = self.outcome.truncated.saturating_add(dropped);
    }

    /// The surviving members comma-joined into the pooled slab.
    fn finish(mut self) -> (TraceState, TracestateOutcome) {
        self.fit();
        self.outcome.kept = self.len as u16;
        let members = &self.list[..self.len];
        let state = if members.is_empty() {
            TraceState::default()
        } else {
            TraceState(with_writer(|w| write_joined(w, members)))
        };
        (state, self.outcome)
    }
}

impl TraceState {
    /// Parses one header value; see [`TraceState::parse_fields`].
    pub fn parse(value: &[u8]) -> TraceState {
        TraceState::parse_fields(|f| f(value)).0
    }

    /// Parses every `tracestate` field `fields` hands to its callback (e.g.
    /// `|f| carrier.get_all("tracestate", f)`), combined in order.
    /// The kept members are copied into the pooled slab (no allocation at steady state).
    pub fn parse_fields<'a>(
        fields: impl FnOnce(&mut dyn FnMut(&'a [u8])),
    ) -> (TraceState, TracestateOutcome) {
        let mut members = Members::new();
        fields(&mut |field| members.add_field(field));
        members.finish()
    }

    /// Whether no state is carried.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value to inject: `None` if empty; the same bytes if within 512 characters; else the
    /// truncated list (only for a state not made by [`TraceState::parse_fields`]).
    pub(super) fn for_inject(&self, w: &mut IdWriter) -> Option<Bytes> {
        if self.0.is_empty() {
            return None;
        }
        if self.0.len() <= MAX_LEN {
            return Some(self.0.clone());
        }
        let mut members = Members::new();
        members.add_field(&self.0);
        members.fit();
        let keep = &members.list[..members.len];
        (!keep.is_empty()).then(|| write_joined(w, keep))
    }
}

fn write_joined(w: &mut IdWriter, members: &[&[u8]]) -> Bytes {
    w.write(joined_len(members), |out| {
        let mut at = 0;
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                out[at] = b',';
                at += 1;
            }
            out[at..at + m.len()].copy_from_slice(m);
            at += m.len();
        }
    })
}

fn joined_len(members: &[&[u8]]) -> usize {
    members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
}

/// Strips OWS (spaces and tabs) from both ends.
fn trim_ows(m: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = m.iter().position(|b| !is_ows(b)).unwrap_or(m.len());
    let end = m.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &m[start..end]
}

/// The key of a valid `key=value` member.
fn valid_member(member: &[u8]) -> Option<&[u8]> {
    let eq = member.iter().position(|&b| b == b'=')?;
    let (key, value) = (&member[..eq], &member[eq + 1..]);
    (valid_key(key) && valid_value(value)).then_some(key)
}

fn valid_key(key: &[u8]) -> bool {
    let keychar = |c: &u8| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
    };
    (1..=256).contains(&key.len())
        && (key[0].is_ascii_lowercase() || key[0].is_ascii_digit())
        && key.iter().all(keychar)
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

    fn combined(fields: &[&str]) -> (String, TracestateOutcome) {
        let (state, outcome) = TraceState::parse_fields(|f| {
            for field in fields {
                f(field.as_bytes());
            }
        });
        (String::from_utf8(state.0.to_vec()).unwrap(), outcome)
    }

    #[test]
    fn accepts_valid_lists() {
        for v in [
            "rojo=00f067aa0ba902b7",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "t@sys=v",
            "0tenant@s-y_s*/=value with spaces",
            "a*/_-9=x",
        ] {
            assert_eq!(parsed(v), v, "{v}");
        }
    }

    #[test]
    fn key_grammar_level_2() {
        let long_key = format!("{}=v", "a".repeat(256));
        let long_value = format!("k={}", "v".repeat(256));
        for v in [
            "1abc=1", // a digit may start any key
            "t@=v",   // "@" is a keychar: anywhere after the first
            "t@system-id-too-long-for-level-1=v",
            "a@b@c=v",
            "tenant@0sys=v",
            long_key.as_str(),
            long_value.as_str(),
            "k=!\"#$%&'()*+-./:;<>?[\\]^_`{|}~",
        ] {
            assert_eq!(combined(&[v]).0, v, "{v}");
        }
        for v in [
            "@sys=v".to_owned(),
            "_k=v".into(),
            "Rojo=1".into(),
            "t@Sys=v".into(),
            "k.x=v".into(),
            "rojo".into(),
            "rojo=".into(),
            "rojo=x=y".into(),
            "rojo=a\tb".into(),
            "rojo=a\u{7f}".into(),
            format!("{}=v", "a".repeat(257)),
            format!("k={}", "v".repeat(257)),
        ] {
            let (out, outcome) = combined(&[&v]);
            assert_eq!(out, "", "{v}");
            assert_eq!(outcome.dropped_invalid, 1, "{v}");
        }
    }

    #[test]
    fn value_may_hold_spaces_but_not_end_in_one() {
        assert_eq!(parsed("k=a b"), "k=a b");
        // A trailing space is OWS around the member, trimmed, not part of the value.
        assert_eq!(parsed("k=a b "), "k=a b");
        assert_eq!(parsed("k= "), "");
    }

    #[test]
    fn invalid_members_are_dropped_alone() {
        let (out, o) = combined(&["rojo=1,Bad=2,congo=3,nokey,x=a,b"]);
        assert_eq!(out, "rojo=1,congo=3,x=a");
        assert_eq!(
            o,
            TracestateOutcome {
                kept: 3,
                dropped_invalid: 3,
                ..Default::default()
            }
        );
        assert!(o.trimmed());
    }

    #[test]
    fn duplicate_keys_keep_the_first() {
        let (out, o) = combined(&["rojo=1,congo=2,rojo=3"]);
        assert_eq!(out, "rojo=1,congo=2");
        assert_eq!((o.kept, o.dropped_duplicate), (2, 1));
        // Also across repeated fields.
        let (out, o) = combined(&["rojo=1", "congo=2,rojo=3"]);
        assert_eq!(out, "rojo=1,congo=2");
        assert_eq!(o.dropped_duplicate, 1);
    }

    #[test]
    fn whitespace_is_normalised() {
        for v in [
            "rojo=1 , congo=2",
            " rojo=1,\tcongo=2\t",
            "rojo=1,,congo=2",
            ",rojo=1,  ,congo=2,",
        ] {
            let (out, o) = combined(&[v]);
            assert_eq!(out, "rojo=1,congo=2", "{v:?}");
            assert!(!o.trimmed(), "{v:?}: empty members are not dropped members");
        }
    }

    #[test]
    fn repeated_fields_combine_in_order() {
        let (out, o) = combined(&["rojo=1", "", " congo=2 ,", "a=3"]);
        assert_eq!(out, "rojo=1,congo=2,a=3");
        assert_eq!(o.kept, 3);
        assert!(!o.trimmed());
        // Only empty fields: no state.
        assert_eq!(combined(&["", " , "]).0, "");
    }

    #[test]
    fn member_limit_applies_to_the_combined_list() {
        let first: Vec<String> = (0..20).map(|i| format!("a{i}=v")).collect();
        let second: Vec<String> = (0..20).map(|i| format!("b{i}=v")).collect();
        let (out, o) = combined(&[&first.join(","), &second.join(",")]);
        let mut want = first.clone();
        want.extend(second[..12].iter().cloned());
        assert_eq!(out, want.join(","));
        assert_eq!((o.kept, o.truncated), (32, 8));
        let thirty_two: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert_eq!(combined(&[&thirty_two.join(",")]).1.truncated, 0);
    }

    #[test]
    fn length_limit_applies_to_the_combined_list() {
        // 16 members of 31 characters per field; 16 fit in 511 characters, 17 do not.
        let field = |p: char| -> String {
            (0..16)
                .map(|i| format!("{p}{i:02}={}", "v".repeat(27)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (a, b) = (field('a'), field('b'));
        assert_eq!(a.len(), 511);
        let (out, o) = combined(&[&a, &b]);
        assert_eq!(out, a);
        assert_eq!((o.kept, o.truncated), (16, 16));
        // OWS does not count: the same list with spaces after every comma still fits.
        let spaced = a.replace(',', ", ");
        assert!(spaced.len() > 512);
        let (out, o) = combined(&[&spaced]);
        assert_eq!((out.as_str(), o.truncated), (a.as_str(), 0));
    }

    #[test]
    fn truncates_long_members_first_then_from_the_end() {
        let long = format!("big={}", "x".repeat(200));
        let small: Vec<String> = (0..30)
            .map(|i| format!("k{i:02}={}", "v".repeat(10)))
            .collect();
        let mut all = vec![small[0].clone(), long.clone()];
        all.extend(small[1..].iter().cloned());
        let (state, outcome) = combined(&[&all.join(",")]);
        // 15-character members: 30 of them with commas = 479 characters, all fit.
        assert_eq!(state, small.join(","));
        assert_eq!((outcome.kept, outcome.truncated), (30, 1));

        let many: Vec<String> = (0..32)
            .map(|i| format!("k{i:02}={}", "v".repeat(14)))
            .collect();
        // 18 characters + comma each: 27 members = 512 characters exactly; the 28th would pass it.
        let (state, outcome) = combined(&[&many.join(",")]);
        assert_eq!(state, many[..27].join(","));
        assert_eq!(outcome.truncated, 5);
    }

    #[test]
    fn huge_lists_saturate_the_counts() {
        let v = ",x".repeat(70_000);
        let (out, o) = combined(&[&v]);
        assert_eq!((out.as_str(), o.dropped_invalid), ("", u16::MAX));
        assert!(o.trimmed());
    }

    #[test]
    fn inject_truncates_a_state_not_made_by_parse() {
        let many: Vec<String> = (0..32)
            .map(|i| format!("k{i:02}={}", "v".repeat(14)))
            .collect();
        let state = TraceState(Bytes::from(many.join(",")));
        let out = state.for_inject(&mut IdWriter::default()).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), many[..27].join(","));
        let small = TraceState(Bytes::from_static(b"a=1"));
        assert_eq!(
            small.for_inject(&mut IdWriter::default()),
            Some(Bytes::from_static(b"a=1"))
        );
        assert_eq!(
            TraceState::default().for_inject(&mut IdWriter::default()),
            None
        );
    }
}
