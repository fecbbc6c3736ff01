//! The `linegate` binary: see `app::cli`.
fn main() {}
