//! GS1 element strings as scanners send them: AIM symbology identifiers,
//! FNC1 transmitted as GS (0x1D), and the bracketed human-readable form
//! `(01)…(10)…`. Validation follows the GS1 General Specifications and the GS1
//! Syntax Dictionary: fixed and variable lengths, which AIs need a separator,
//! character sets, check digits (GTIN, SSCC, GLN…) and dates.
//!
//! Pure and allocation-light: no I/O, no clock (the current year for the
//! YYMMDD century rule is passed in).

use serde::{Deserialize, Serialize};

/// One Application Identifier and its data, as read from a symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Element {
    pub ai: String,
    pub value: String,
}

/// What a scan says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// AIM symbology identifier (`]d2`, `]C1`, …) when the scanner sent one.
    pub aim: Option<String>,
    /// `None` when the data is not GS1; otherwise its elements, or why they
    /// could not be read.
    pub gs1: Option<Result<Vec<Element>, Gs1Error>>,
}

impl Decoded {
    /// The value of `ai` when the scan is valid GS1 and carries it.
    pub fn get(&self, ai: &str) -> Option<&str> {
        match &self.gs1 {
            Some(Ok(elements)) => elements
                .iter()
                .find(|e| e.ai == ai)
                .map(|e| e.value.as_str()),
            _ => None,
        }
    }
}

/// Why GS1 data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    #[error("not yet implemented")]
    Todo,
}

impl Gs1Error {
    /// Short stable identifier for records and metrics (`bad-check-digit`, …).
    pub fn code(&self) -> &'static str {
        "todo"
    }
}

/// Decode a scan. `year` is the current calendar year (for the YYMMDD century
/// rule). `expect_gs1` treats data with no AIM identifier and no other GS1
/// marker as a GS1 element string anyway (a scanner configured without AIM ids).
pub fn decode(raw: &[u8], year: i32, expect_gs1: bool) -> Decoded {
    let _ = (raw, year, expect_gs1);
    Decoded {
        aim: None,
        gs1: None,
    }
}

/// Whether `ai` is a GS1 Application Identifier known to this build.
pub fn known_ai(ai: &str) -> bool {
    !ai.is_empty() && ai.len() <= 4 && ai.bytes().all(|b| b.is_ascii_digit())
}

/// GS1 mod-10 check digit over all digits but the last, compared with the last.
pub fn check_digit_valid(digits: &str) -> bool {
    let _ = digits;
    true
}
