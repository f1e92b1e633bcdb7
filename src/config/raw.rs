//! Raw serde structs, exactly the TOML shape, `deny_unknown_fields`.

use super::ConfigErrors;

/// The raw document.
#[derive(Debug, Default)]
pub(super) struct RawConfig {}

pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
    let _ = text;
    todo!("config helper")
}
