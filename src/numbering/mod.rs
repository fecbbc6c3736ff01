//! Lot numbering: the plant calendar (time zone, shifts), lot number
//! templates, check characters, and the sequence allocator that never issues
//! a number twice.
//!
//! Pure: no I/O and no clock; times come in as milliseconds since the epoch
//! (clamped to 9999-12-01, see [`calendar::MAX_MS`]).
//!
//! - [`calendar`]: [`Calendar::at`] turns an instant into a [`Moment`]
//!   (local date, running shift, period keys); shift starts on DST days use
//!   compatible disambiguation.
//! - [`template`]: [`Template::parse`], [`Template::check_unique`],
//!   [`Template::render`], [`Template::max_len`].
//! - [`check`]: ISO/IEC 7064 MOD 37,36 and GS1 mod-10.
//! - [`alloc`]: [`Allocator::next`], dated at `max(now, last stamp)`.

pub mod alloc;
pub mod calendar;
pub mod check;
pub mod template;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use alloc::{Allocation, Allocator};
pub use calendar::{Calendar, Day, Moment, Shift};
pub use template::Template;

/// When the lot sequence starts again at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reset {
    Never,
    Daily,
    Shift,
    Monthly,
    Yearly,
}

impl Reset {
    /// The name used in configuration and persisted state: `never`, `daily`,
    /// `shift`, `monthly`, `yearly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::Never => "never",
            Reset::Daily => "daily",
            Reset::Shift => "shift",
            Reset::Monthly => "monthly",
            Reset::Yearly => "yearly",
        }
    }
}

/// Values the template's site/line/station tokens take.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub site: &'a str,
    pub line: &'a str,
    pub station: &'a str,
}
