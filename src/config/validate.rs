//! Raw → typed, collecting every error with its key path.

use super::raw::RawConfig;
use super::{Config, ConfigErrors};

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let _ = raw;
    todo!("config helper")
}
