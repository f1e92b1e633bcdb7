//! Durations in config: `"250ms"`, `"5s"`, `"2m"`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let _ = text;
    todo!("config helper")
}
