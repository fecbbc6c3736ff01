//! The two GS1 data forms a scan can carry: the element string as scanners
//! transmit it (FNC1 sent as GS, 0x1D) and the bracketed human-readable form
//! `(01)…(10)…`. Both produce the same [`Element`] list; each value is checked
//! with [`validate`].

use std::collections::HashMap;

use super::check::validate;
use super::table::{AiSpec, ai_spec, match_prefix};
use super::{Element, Gs1Error};

/// FNC1 as transmitted between elements.
pub(crate) const GS: u8 = 0x1D;

/// Bytes as text for values and messages. Values are validated first (ASCII);
/// for messages, anything outside printable ASCII is shown as `\xNN`.
pub(crate) fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

/// The elements read so far, with the repeat rule: an AI seen again with the
/// same value is kept once, with a different value it is an error.
#[derive(Default)]
struct Elements {
    list: Vec<Element>,
    index: HashMap<&'static str, usize>,
}

impl Elements {
    fn push(&mut self, spec: &'static AiSpec, value: &[u8]) -> Result<(), Gs1Error> {
        let value = show(value);
        if let Some(first) = self.index.get(spec.ai).and_then(|&i| self.list.get(i)) {
            if first.value == value {
                return Ok(());
            }
            return Err(Gs1Error::RepeatedAi {
                ai: spec.ai,
                first: first.value.clone(),
                second: value,
            });
        }
        self.index.insert(spec.ai, self.list.len());
        self.list.push(Element {
            ai: spec.ai.to_string(),
            value,
        });
        Ok(())
    }

    fn finish(self) -> Result<Vec<Element>, Gs1Error> {
        if self.list.is_empty() {
            return Err(Gs1Error::Empty);
        }
        Ok(self.list)
    }
}

/// Parse an element string. `data` starts at byte `base` of the scan, just
/// after the AIM identifier, and has its trailing CR/LF/GS already removed.
///
/// For each element: the AI is the 2-, 3- or 4-digit prefix found in the
/// table. A predefined-length AI takes exactly its length. Any other AI takes
/// everything up to the next GS or the end; a fixed-length one among them
/// (7003) must then end exactly there, and a variable-length one must fit its
/// maximum (see [`overrun`]). GS bytes where an AI should start (a duplicated
/// leading FNC1, a GS after a predefined-length AI, an empty element) are
/// skipped.
pub(crate) fn element_string(
    data: &[u8],
    base: usize,
    year: i32,
) -> Result<Vec<Element>, Gs1Error> {
    parse(data, base, year, true)
}

/// [`element_string`]; `explain` lets an overrun look for the missing GS
/// (off when checking a candidate split, so the search does not nest).
fn parse(data: &[u8], base: usize, year: i32, explain: bool) -> Result<Vec<Element>, Gs1Error> {
    let mut out = Elements::default();
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b == GS {
            i += 1;
            continue;
        }
        let here = &data[i..];
        let Some(spec) = match_prefix(here) else {
            return Err(Gs1Error::UnknownAi {
                pos: base + i,
                found: show(&here[..here.len().min(4)]),
            });
        };
        let start = i + spec.ai.len();
        let rest = &data[start..];
        // The data up to the next separator.
        let run = rest.iter().position(|&b| b == GS).unwrap_or(rest.len());
        let len = if spec.predefined {
            let n = spec.max_len();
            if run < n {
                return Err(Gs1Error::TooShort {
                    ai: spec.ai,
                    pos: base + start,
                    len: run,
                    min: n,
                });
            }
            n
        } else {
            match spec.fixed_len() {
                // Fixed length but not predefined: a GS (or the end) must
                // follow, whatever comes next. Bad data of its own length
                // is reported as such first.
                Some(n) if run > n => {
                    validate(spec, &rest[..n], base + start, year)?;
                    return Err(Gs1Error::MissingSeparator {
                        ai: spec.ai,
                        pos: base + start + n,
                        max: n,
                        next: match_prefix(&rest[n..]).map(|s| s.ai),
                    });
                }
                _ if run > spec.max_len() => {
                    return Err(overrun(spec, data, start, run, base, year, explain));
                }
                _ => run,
            }
        };
        let value = &rest[..len];
        validate(spec, value, base + start, year)?;
        out.push(spec, value)?;
        i = start + len;
    }
    out.finish()
}

/// The error for a variable-length AI whose data runs past its maximum with
/// no GS: the scanner or keyboard wedge most likely dropped a separator.
///
/// Rule: if the data can be cut at some point within the AI's length limits
/// so that the part before is valid data for the AI and everything from the
/// cut parses as valid elements to the end, the error is `MissingSeparator`
/// at the first such cut, naming the AI found there. Otherwise it is
/// `TooLong` (for example a lot number that is simply 21 characters).
fn overrun(
    spec: &'static AiSpec,
    data: &[u8],
    start: usize,
    run: usize,
    base: usize,
    year: i32,
    explain: bool,
) -> Gs1Error {
    let max = spec.max_len();
    if explain {
        for cut in spec.min_len().max(1)..=max {
            let (Some(head), Some(tail)) = (data.get(start..start + cut), data.get(start + cut..))
            else {
                break;
            };
            let Some(next) = match_prefix(tail) else {
                continue;
            };
            if validate(spec, head, base + start, year).is_ok()
                && parse(tail, base + start + cut, year, false).is_ok()
            {
                return Gs1Error::MissingSeparator {
                    ai: spec.ai,
                    pos: base + start + cut,
                    max,
                    next: Some(next.ai),
                };
            }
        }
    }
    Gs1Error::TooLong {
        ai: spec.ai,
        pos: base + start,
        len: run,
        max,
    }
}

/// Number of digits when `d` starts with `(`, 2 to 4 digits and `)`.
fn ai_digits(d: &[u8]) -> Option<usize> {
    if d.first() != Some(&b'(') {
        return None;
    }
    let digits = d
        .iter()
        .skip(1)
        .take(5)
        .take_while(|b| b.is_ascii_digit())
        .count();
    ((2..=4).contains(&digits) && d.get(1 + digits) == Some(&b')')).then_some(digits)
}

/// Whether the data is in the bracketed form: it starts with `(`, 2 to 4
/// digits and `)`.
pub(crate) fn looks_bracketed(data: &[u8]) -> bool {
    ai_digits(data).is_some()
}

/// Parse the bracketed form `(01)09506000134352(10)ABC`. A value runs to the
/// next `(` that is followed by 2 to 4 digits and `)`, or to the end. So a
/// value may contain parentheses (CSET 82 allows them) but not text shaped
/// like an AI group, such as `A(12)B`: that is read as a new element (here
/// AI 12), and there is no escape for it. A group with an AI that is not in
/// the table is an error, not part of the previous value. Each value must
/// have a valid length on its own: no separator rules apply.
pub(crate) fn bracketed(data: &[u8], base: usize, year: i32) -> Result<Vec<Element>, Gs1Error> {
    let mut out = Elements::default();
    let mut i = 0;
    while i < data.len() {
        let here = &data[i..];
        // The caller checked that the data starts with a group, and every
        // value below ends where the next group starts, so this holds.
        let Some(digits) = ai_digits(here) else {
            return Err(Gs1Error::UnknownAi {
                pos: base + i,
                found: show(&here[..here.len().min(4)]),
            });
        };
        // `ai_digits` saw `(`, `digits` digits and `)`.
        let found = &here[1..1 + digits];
        let Some(spec) = std::str::from_utf8(found).ok().and_then(ai_spec) else {
            return Err(Gs1Error::UnknownAi {
                pos: base + i + 1,
                found: show(found),
            });
        };
        let start = i + digits + 2;
        let end = (start..data.len())
            .find(|&k| ai_digits(&data[k..]).is_some())
            .unwrap_or(data.len());
        let value = &data[start..end];
        validate(spec, value, base + start, year)?;
        out.push(spec, value)?;
        i = end;
    }
    out.finish()
}
