//! Configuration: TOML text → raw structs (serde, unknown keys rejected) →
//! validated [`Config`] (every cross-check done before anything starts).
//!
//! Only this module knows TOML. Errors name the file, line, column, key and
//! the expected form ([`ConfigError`]); the CLI maps them to exit code 64.
//! The layers: `raw` (spanned TOML → raw structs), `validate` (raw → model),
//! `summary` (what `linegate check` prints), `error` (locations and messages).

mod error;
mod files;
mod model;
mod raw;
mod summary;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use files::{MAX_CONFIG_BYTES, MAX_SECRET_BYTES};
pub use model::*;
pub use raw::DEVICE_TYPES;
pub use summary::summary;
pub use validate::fmt_duration;

/// Reads, parses and validates the config file at `path`.
///
/// Relative paths inside it (data dir, password file, device paths) are
/// resolved against the file's directory; secret files are read now. Only
/// a regular file of at most [`MAX_CONFIG_BYTES`] is read (a FIFO or a
/// device is refused, not read); text that is not UTF-8 is reported at
/// the line and column of its first invalid byte.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes =
        files::read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| ConfigError::io(path, e))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            return Err(ConfigError::not_utf8(path, e.as_bytes(), valid));
        }
    };
    parse(path, &text)
}

/// Parses and validates config `text` as if read from `source_name` (used
/// in messages and as the base of relative paths).
pub fn parse(source_name: &Path, text: &str) -> Result<Config, ConfigError> {
    let src = error::Source::new(source_name, text);
    let raw = raw::parse_raw(&src)?;
    validate::validate(&src, raw)
}
