//! Configuration: TOML text → raw structs (serde, unknown keys rejected) →
//! validated [`Config`] (every cross-check done before anything starts).
//!
//! Only this module knows TOML. Errors name the file, line, column, key and
//! the expected form ([`ConfigError`]); the CLI maps them to exit code 64.

mod model;

pub use model::*;
