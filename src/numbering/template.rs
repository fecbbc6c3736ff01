//! Lot number templates: parsing (with errors a technician can act on),
//! the uniqueness check against a reset policy, rendering, and the longest
//! number a template can produce.
//!
//! A template is literal text and tokens in braces:
//!
//! | token | renders |
//! |---|---|
//! | `{site}` `{line}` `{station}` | the id as given; `{site:N}` its first N characters (N 1..=20) |
//! | `{yyyy}` `{yy}` `{y}` | year: 4 digits, last 2, last 1 (repeats every 10 years) |
//! | `{mm}` `{dd}` | month and day, 2 digits |
//! | `{jjj}` | day of the year, 3 digits (`366` on 31 December of a leap year) |
//! | `{shift}` | the running shift's name (empty without shifts) |
//! | `{seq:N}` | the sequence, zero-padded to N digits (N 1..=9); required, once; never truncated |
//! | `{check}` | ISO/IEC 7064 MOD 37,36 check character over everything before it |
//! | `{check:mod10}` | GS1 mod-10 check digit over everything before it |
//!
//! Literal text may only use `A-Z a-z 0-9 -`: lot numbers go into GS1 AI 10
//! (CSET 82), ZPL (where `^ ~ _` are commands), MQTT topics and file names.
//! A check token must be the last thing in the template. `{check:mod10}` is
//! only accepted when everything before it renders digits only (date tokens,
//! `{seq:N}`, literal digits): site, line, station and shift may carry
//! letters, which the GS1 algorithm cannot cover, so the template is rejected
//! at parse time instead of printing a check digit that checks nothing.

use super::check::{gs1_mod10, mod37_36};
use super::{Fields, Moment, Reset};

/// Longest `{site:N}` truncation (GS1 AI 10 holds 20 characters).
const MAX_TRUNCATE: usize = 20;

const VALID_TOKENS: &str = "{site}, {line}, {station} (or {site:N} etc. for the first N characters), \
     {yyyy}, {yy}, {y}, {mm}, {dd}, {jjj}, {shift}, {seq:N}, {check}, {check:mod10}";

const LITERALS: &str = "literal text may only use A-Z, a-z, 0-9 and `-` \
     (lot numbers go into GS1 barcodes, labels, MQTT topics and file names)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Site,
    Line,
    Station,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckKind {
    Mod37_36,
    Mod10,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Id(Id, Option<usize>),
    Yyyy,
    Yy,
    Y,
    Mm,
    Dd,
    Jjj,
    Shift,
    Seq(usize),
    Check(CheckKind),
}

impl Part {
    /// Whether the part renders digits only.
    fn digits_only(&self) -> bool {
        match self {
            Part::Lit(s) => s.chars().all(|c| c.is_ascii_digit()),
            Part::Yyyy | Part::Yy | Part::Y | Part::Mm | Part::Dd | Part::Jjj | Part::Seq(_) => {
                true
            }
            Part::Id(..) | Part::Shift | Part::Check(_) => false,
        }
    }
}

/// A parsed lot number template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Template {
    /// Parse a template; the error text states the expected form.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut chars = text.chars().enumerate();
        while let Some((i, c)) = chars.next() {
            let col = i + 1;
            match c {
                '{' => {
                    let mut body = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => break,
                            c => body.push(c),
                        }
                    }
                    if !closed {
                        return Err(format!(
                            "the `{{` at column {col} is not closed: expected a token such as {{seq:4}} \
                             (valid tokens: {VALID_TOKENS})"
                        ));
                    }
                    if let Some(Part::Check(_)) = parts.last() {
                        return Err(check_not_last());
                    }
                    parts.push(token(&body, col)?);
                }
                '}' => {
                    return Err(format!(
                        "the `}}` at column {col} closes nothing: tokens are written {{name}}, and {LITERALS}"
                    ));
                }
                c if c.is_ascii_alphanumeric() || c == '-' => match parts.last_mut() {
                    Some(Part::Check(_)) => return Err(check_not_last()),
                    Some(Part::Lit(s)) => s.push(c),
                    _ => parts.push(Part::Lit(c.to_string())),
                },
                c => {
                    return Err(format!(
                        "the character {c:?} at column {col} is not allowed: {LITERALS}"
                    ));
                }
            }
        }
        let seqs = parts.iter().filter(|p| matches!(p, Part::Seq(_))).count();
        if seqs == 0 {
            return Err(
                "the template has no {seq:N}: expected exactly one sequence token, e.g. {seq:4} \
                 for a 4-digit sequence, so that numbers differ"
                    .to_string(),
            );
        }
        if seqs > 1 {
            return Err(
                "the template has more than one {seq:N}: expected exactly one sequence token"
                    .to_string(),
            );
        }
        if let Some(Part::Check(CheckKind::Mod10)) = parts.last() {
            let before = &parts[..parts.len() - 1];
            if !before.iter().all(Part::digits_only) {
                return Err(
                    "{check:mod10} is the GS1 mod-10 check digit and needs an all-digit number: \
                     expected only {yyyy} {yy} {y} {mm} {dd} {jjj} {seq:N} and literal digits before it \
                     ({site}, {line}, {station}, {shift} and letters or `-` can make non-digits); \
                     use {check} (ISO/IEC 7064 MOD 37,36) for letters"
                        .to_string(),
                );
            }
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template contains `{shift}` (configuration rejects that
    /// without a shift plan).
    pub fn uses_shift(&self) -> bool {
        self.parts.contains(&Part::Shift)
    }

    /// Whether the template's tokens tell the periods of `reset` apart (a
    /// daily reset needs the date in the number, …); the error says what is
    /// missing.
    ///
    /// The year needs `{yyyy}` or `{yy}`: `{y}` alone repeats every 10 years
    /// and is not enough. A day needs `{jjj}`, or `{mm}` and `{dd}`; a month
    /// needs `{mm}` or `{jjj}` (the day of the year tells the month too).
    pub fn check_unique(&self, reset: Reset) -> Result<(), String> {
        let has = |p: Part| self.parts.contains(&p);
        let year = has(Part::Yyyy) || has(Part::Yy);
        let day = has(Part::Jjj) || (has(Part::Mm) && has(Part::Dd));
        let month = has(Part::Jjj) || has(Part::Mm);
        let what = match reset {
            Reset::Never => return Ok(()),
            Reset::Daily => "a daily reset",
            Reset::Shift => "a reset every shift",
            Reset::Monthly => "a monthly reset",
            Reset::Yearly => "a yearly reset",
        };
        let mut missing: Vec<&str> = Vec::new();
        if !year {
            missing.push(if has(Part::Y) {
                "{yy} or {yyyy} (a one-digit {y} repeats every 10 years)"
            } else {
                "{yy} or {yyyy}"
            });
        }
        match reset {
            Reset::Daily | Reset::Shift if !day => {
                missing.push("{jjj}, or {mm} and {dd}");
            }
            Reset::Monthly if !month => missing.push("{mm} or {jjj}"),
            _ => {}
        }
        if reset == Reset::Shift && !has(Part::Shift) {
            missing.push("{shift}");
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "with {what} the sequence starts again at 1, so the number must show the period: add {}",
            missing.join("; and ")
        ))
    }

    /// The number for `fields`, the date and shift of `at`, and `seq`. A
    /// sequence wider than its `{seq:N}` is rendered in full, so numbers stay
    /// unique; ids are inserted as given (callers validate them).
    pub fn render(&self, fields: Fields<'_>, at: &Moment, seq: u64) -> String {
        let mut out = String::with_capacity(24);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Id(id, n) => {
                    let value = match id {
                        Id::Site => fields.site,
                        Id::Line => fields.line,
                        Id::Station => fields.station,
                    };
                    out.extend(value.chars().take(n.unwrap_or(usize::MAX)));
                }
                Part::Yyyy => out.push_str(&format!("{:04}", at.year.rem_euclid(10_000))),
                Part::Yy => out.push_str(&format!("{:02}", at.year.rem_euclid(100))),
                Part::Y => out.push_str(&format!("{}", at.year.rem_euclid(10))),
                Part::Mm => out.push_str(&format!("{:02}", at.month.rem_euclid(100))),
                Part::Dd => out.push_str(&format!("{:02}", at.day.rem_euclid(100))),
                Part::Jjj => out.push_str(&format!("{:03}", at.yday.rem_euclid(1000))),
                Part::Shift => out.push_str(at.shift.as_deref().unwrap_or("")),
                Part::Seq(w) => out.push_str(&format!("{seq:0w$}")),
                Part::Check(CheckKind::Mod37_36) => out.push(mod37_36(&out)),
                Part::Check(CheckKind::Mod10) => out.push(gs1_mod10(&out)),
            }
        }
        out
    }

    /// The longest number the template renders for `fields` and the shifts
    /// of `calendar`, in characters, while the sequence fits its width (the
    /// configuration checks this against the 20 characters of GS1 AI 10).
    pub fn max_len(&self, fields: Fields<'_>, calendar: &super::Calendar) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Lit(s) => s.chars().count(),
                Part::Id(id, n) => {
                    let value = match id {
                        Id::Site => fields.site,
                        Id::Line => fields.line,
                        Id::Station => fields.station,
                    };
                    value.chars().count().min(n.unwrap_or(usize::MAX))
                }
                Part::Yyyy => 4,
                Part::Yy | Part::Mm | Part::Dd => 2,
                Part::Y | Part::Check(_) => 1,
                Part::Jjj => 3,
                Part::Shift => calendar.longest_shift_name(),
                Part::Seq(w) => *w,
            })
            .sum()
    }
}

fn check_not_last() -> String {
    "{check} must be the last thing in the template: it covers everything before it".to_string()
}

/// One token from the text between braces; `col` is the column of its `{`.
fn token(body: &str, col: usize) -> Result<Part, String> {
    let (name, arg) = match body.split_once(':') {
        Some((name, arg)) => (name, Some(arg)),
        None => (body, None),
    };
    let shown = format!("{{{body}}}");
    let no_arg = |part: Part| match arg {
        None => Ok(part),
        Some(_) => Err(format!(
            "{shown} at column {col}: {{{name}}} takes no argument, expected {{{name}}}"
        )),
    };
    let id = |id: Id| match arg {
        None => Ok(Part::Id(id, None)),
        Some(n) => match n.parse::<usize>() {
            Ok(v) if n.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_TRUNCATE).contains(&v) => {
                Ok(Part::Id(id, Some(v)))
            }
            _ => Err(format!(
                "{shown} at column {col}: expected {{{name}}} or {{{name}:N}} with N from 1 to \
                 {MAX_TRUNCATE} for its first N characters, e.g. {{{name}:1}}"
            )),
        },
    };
    match name {
        "site" => id(Id::Site),
        "line" => id(Id::Line),
        "station" => id(Id::Station),
        "yyyy" => no_arg(Part::Yyyy),
        "yy" => no_arg(Part::Yy),
        "y" => no_arg(Part::Y),
        "mm" => no_arg(Part::Mm),
        "dd" => no_arg(Part::Dd),
        "jjj" => no_arg(Part::Jjj),
        "shift" => no_arg(Part::Shift),
        "seq" => match arg.map(str::as_bytes) {
            Some([d @ b'1'..=b'9']) => Ok(Part::Seq(usize::from(d - b'0'))),
            _ => Err(format!(
                "{shown} at column {col}: expected {{seq:N}} with a width N from 1 to 9, e.g. {{seq:4}} \
                 for 0001, 0002, …"
            )),
        },
        "check" => match arg {
            None => Ok(Part::Check(CheckKind::Mod37_36)),
            Some("mod10") => Ok(Part::Check(CheckKind::Mod10)),
            Some(_) => Err(format!(
                "{shown} at column {col}: expected {{check}} (ISO/IEC 7064 MOD 37,36 check character) \
                 or {{check:mod10}} (GS1 mod-10 check digit)"
            )),
        },
        other => {
            let lower = other.to_ascii_lowercase();
            let hint = if lower != other && token(&body.to_ascii_lowercase(), col).is_ok() {
                format!(" (tokens are lowercase: {{{}}})", body.to_ascii_lowercase())
            } else {
                String::new()
            };
            Err(format!(
                "unknown token {shown} at column {col}{hint}: expected one of {VALID_TOKENS}"
            ))
        }
    }
}
