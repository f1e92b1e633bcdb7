//! Durations in config: `"250ms"`, `"5s"`, `"2m"`, `"1h"`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(if unit.starts_with('.') || unit.contains('.') {
            format!(
                "{text:?} is not a duration: fractions are not supported, use a smaller unit (e.g. \"1500ms\")"
            )
        } else {
            format!(
                "{text:?} is not a duration: expected a whole number and a unit (ms, s, m, h), e.g. \"5s\""
            )
        });
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "" => return Err(format!("{text:?} has no unit: add ms, s, m or h")),
        u if u.starts_with('.') => {
            return Err(format!(
                "{text:?}: fractions are not supported, use a smaller unit (e.g. \"1500ms\")"
            ));
        }
        u => {
            return Err(format!(
                "{text:?} has unknown unit {u:?}: use ms, s, m or h"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("5"),
            Err("\"5\" has no unit: add ms, s, m or h".into())
        );
        assert_eq!(
            parse_duration("5d"),
            Err("\"5d\" has unknown unit \"d\": use ms, s, m or h".into())
        );
        assert_eq!(
            parse_duration("1.5s"),
            Err(
                "\"1.5s\": fractions are not supported, use a smaller unit (e.g. \"1500ms\")"
                    .into()
            )
        );
        assert!(
            parse_duration("")
                .unwrap_err()
                .contains("expected a whole number")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("expected a whole number")
        );
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err("\"99999999999999999999s\" is too large".into())
        );
        assert_eq!(
            parse_duration("9999999999999999h"),
            Err("\"9999999999999999h\" is too large".into())
        );
    }
}
