//! Durations in config: `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
//!
//! Part of `config` validation; the typed config holds [`Duration`]s only.

use std::time::Duration;

/// The units accepted, as named in error messages.
const UNITS: &str = "ms, s, m or h";

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
///
/// The error states the fact without the input (the caller quotes the value and its key
/// path): `missing unit (ms, s, m or h)`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    // <digits><unit>: split at the first non-digit.
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "fractions are not supported; use a smaller unit ({UNITS}), e.g. \"1500ms\""
        ));
    }
    if unit.starts_with('-') || unit.starts_with('+') {
        return Err("a sign is not allowed; durations are non-negative integers".to_owned());
    }
    if number.is_empty() {
        return Err(format!("missing number before the unit ({UNITS})"));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{number} is too large"))?;
    let millis_per_unit: u64 = match unit {
        "" => return Err(format!("missing unit ({UNITS})")),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("unknown unit \"{other}\" ({UNITS})")),
    };
    let millis = value
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("{number}{unit} is too large"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("", "empty"),
            ("30", "missing unit (ms, s, m or h)"),
            ("s", "missing number before the unit (ms, s, m or h)"),
            ("5d", "unknown unit \"d\" (ms, s, m or h)"),
            ("5 s", "unknown unit \" s\" (ms, s, m or h)"),
            ("5S", "unknown unit \"S\" (ms, s, m or h)"),
            (
                "1.5s",
                "fractions are not supported; use a smaller unit (ms, s, m or h), e.g. \"1500ms\"",
            ),
            (
                "-5s",
                "a sign is not allowed; durations are non-negative integers",
            ),
            ("99999999999999999999s", "99999999999999999999 is too large"),
            (
                "18446744073709551615h",
                "18446744073709551615h is too large",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_duration(input),
                Err(want.to_owned()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn largest_representable() {
        assert_eq!(
            parse_duration("18446744073709551615ms"),
            Ok(Duration::from_millis(u64::MAX))
        );
    }
}
