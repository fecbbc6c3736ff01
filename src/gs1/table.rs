//! The Application Identifier table: one [`AiSpec`] per AI, generated at build
//! time by `build.rs` from `ai-table.txt`, our transcription of the GS1
//! Barcode Syntax Dictionary (every AI, with its components, character sets
//! and the content checks the dictionary names).

/// Character set of a component, as the dictionary names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cset {
    /// `N`: digits 0-9.
    Numeric,
    /// `X`: GS1 AI encodable character set 82.
    Cset82,
    /// `Y`: GS1 AI encodable character set 39.
    Cset39,
    /// `Z`: GS1 AI encodable character set 64 (base64url, `=` padding).
    Cset64,
}

impl Cset {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Cset::Numeric => "digits",
            Cset::Cset82 => "GS1 CSET 82",
            Cset::Cset39 => "GS1 CSET 39",
            Cset::Cset64 => "GS1 CSET 64",
        }
    }
}

/// A content check ("linter") the dictionary attaches to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lint {
    /// GS1 mod-10 check digit in the last position.
    Csum,
    /// `YYMMDD`; `DD` = `00` allowed (day not specified).
    Yymmd0,
    /// `YYMMDD`.
    Yymmdd,
    /// `YYYYMMDD`; `DD` = `00` allowed.
    Yyyymmd0,
    /// `YYYYMMDD`.
    Yyyymmdd,
    /// Hour `00`-`23`.
    Hh,
    /// Minute `00`-`59`.
    Mi,
    /// Second `00`-`59`.
    Ss,
    /// `HHMI`.
    Hhmi,
    /// Named by the dictionary, not checked by linegate (`csumalpha`, `key`,
    /// `iso3166`, `pcenc`, …).
    Unchecked(&'static str),
}

/// One component of an AI's data field, e.g. `N14` or `[X..17]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub cset: Cset,
    /// Exact length, or the maximum when `variable` (minimum 1).
    pub len: u8,
    pub variable: bool,
    /// May be left out, only when the data ends before it.
    pub optional: bool,
    pub lints: &'static [Lint],
}

/// Everything the parser knows about one AI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiSpec {
    pub ai: &'static str,
    /// Predefined length (`*` in the dictionary): never followed by FNC1/GS.
    /// Not the same as a fixed length: 7003 is fixed but not predefined.
    pub predefined: bool,
    pub components: &'static [Component],
    pub title: &'static str,
}

impl AiSpec {
    /// Shortest valid data: the mandatory components (a variable one counts 1).
    pub fn min_len(&self) -> usize {
        self.components
            .iter()
            .filter(|c| !c.optional)
            .map(|c| if c.variable { 1 } else { usize::from(c.len) })
            .sum()
    }

    /// Longest valid data: all components at full length.
    pub fn max_len(&self) -> usize {
        self.components.iter().map(|c| usize::from(c.len)).sum()
    }

    /// The length when it is fixed (all components fixed and mandatory).
    pub fn fixed_len(&self) -> Option<usize> {
        let (min, max) = (self.min_len(), self.max_len());
        (min == max).then_some(max)
    }
}

include!(concat!(env!("OUT_DIR"), "/gs1_ai_table.rs"));

/// The table entry for `ai` (`"01"`, `"3103"`, …).
pub fn ai_spec(ai: &str) -> Option<&'static AiSpec> {
    AI_TABLE
        .binary_search_by(|s| s.ai.cmp(ai))
        .ok()
        .and_then(|i| AI_TABLE.get(i))
}

/// Every AI in the table, sorted.
pub fn all_ais() -> &'static [AiSpec] {
    AI_TABLE
}

/// The AI that `data` starts with: its 2-, 3- or 4-digit prefix found in the
/// table (the AI set is prefix-free, so at most one matches).
pub fn match_prefix(data: &[u8]) -> Option<&'static AiSpec> {
    (2..=4).find_map(|n| {
        let head = data.get(..n)?;
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // All ASCII digits, so valid UTF-8.
        ai_spec(std::str::from_utf8(head).ok()?)
    })
}
