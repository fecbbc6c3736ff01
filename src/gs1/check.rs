//! Validation of one AI's data against its table entry: component lengths,
//! character sets, GS1 check digits and dates/times, as the GS1 Barcode
//! Syntax Dictionary's linters define them.

use super::Gs1Error;
use super::table::{AiSpec, Cset, Lint};

/// GS1 mod-10 check digit for `body` (the digits before the check digit):
/// weights 3, 1, 3, … from the right, check = (10 − sum mod 10) mod 10.
/// `None` if `body` has a non-digit.
pub fn check_digit(body: &str) -> Option<u8> {
    // Only the sum modulo 10 matters; keeping it reduced cannot overflow.
    let mut sum = 0u8;
    for (i, b) in body.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let weight = if i % 2 == 0 { 3 } else { 1 };
        sum = (sum + weight * (b - b'0')) % 10;
    }
    Some((10 - sum) % 10)
}

/// Whether `digits` (GTIN, SSCC, GLN, …, check digit last) is all digits, at
/// least two of them, and ends with the right GS1 check digit.
pub fn check_digit_valid(digits: &str) -> bool {
    let Some(last) = digits.bytes().last().filter(u8::is_ascii_digit) else {
        return false;
    };
    // The last byte is ASCII, so cutting it off leaves a valid &str.
    match digits.get(..digits.len() - 1) {
        Some(body) if !body.is_empty() => check_digit(body) == Some(last - b'0'),
        _ => false,
    }
}

/// Whether `b` belongs to the character set.
pub fn in_cset(cset: Cset, b: u8) -> bool {
    match cset {
        Cset::Numeric => b.is_ascii_digit(),
        // CSET 82: ! " % & ' ( ) * + , - . / 0-9 : ; < = > ? A-Z _ a-z
        Cset::Cset82 => b.is_ascii_alphanumeric() || b"!\"%&'()*+,-./:;<=>?_".contains(&b),
        // CSET 39: # - / 0-9 A-Z
        Cset::Cset39 => b.is_ascii_digit() || b.is_ascii_uppercase() || b"#-/".contains(&b),
        // CSET 64: A-Z a-z 0-9 - _ ('=' padding is handled by the caller)
        Cset::Cset64 => b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
    }
}

/// Offset of the first character of `part` outside `cset`, if any. For CSET
/// 64, up to two trailing `=` are padding, allowed as GS1's `cset64` linter
/// allows them: only when the whole length is a multiple of 3.
fn bad_char(cset: Cset, part: &[u8]) -> Option<usize> {
    let mut body = part;
    if cset == Cset::Cset64 {
        let pads = part.iter().rev().take_while(|&&b| b == b'=').count();
        if pads > 2 || (pads > 0 && !part.len().is_multiple_of(3)) {
            return Some(part.len() - pads);
        }
        body = &part[..part.len() - pads];
    }
    body.iter().position(|&b| !in_cset(cset, b))
}

/// Two ASCII digits as a number.
fn num2(d: &[u8]) -> Option<u32> {
    match d {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => None,
    }
}

/// The four-digit year of `yy` seen from `current_year`, GS1's rule
/// (`lint_yymmd0.c`): with d = YY − (current year mod 100), d ≥ 51 is the
/// previous century, d > −50 the current one, anything lower the next.
pub fn century(yy: u32, current_year: i32) -> i32 {
    let base = current_year - current_year.rem_euclid(100);
    // yy < 100, so the cast is exact.
    let d = yy as i32 - current_year.rem_euclid(100);
    if d >= 51 {
        base - 100 + yy as i32
    } else if d > -50 {
        base + yy as i32
    } else {
        base + 100 + yy as i32
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Month and day of a date, `year` already resolved.
fn check_month_day(year: i32, mm: u32, dd: u32, day0: bool) -> Result<(), &'static str> {
    let days = match mm {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return Err("month must be 01 to 12"),
    };
    match dd {
        0 if day0 => Ok(()),
        0 => Err("day 00 is not allowed here"),
        d if d > days => Err("no such day in that month"),
        _ => Ok(()),
    }
}

/// `YYMMDD` (`day0`: `DD` = `00` allowed), century from `current_year`.
pub fn check_yymmdd(d: &[u8], day0: bool, current_year: i32) -> Result<(), &'static str> {
    let (Some(yy), Some(mm), Some(dd)) = (
        d.get(0..2).and_then(num2),
        d.get(2..4).and_then(num2),
        d.get(4..6).and_then(num2),
    ) else {
        return Err("not six digits");
    };
    if d.len() != 6 {
        return Err("not six digits");
    }
    check_month_day(century(yy, current_year), mm, dd, day0)
}

/// `YYYYMMDD` (`day0`: `DD` = `00` allowed).
fn check_yyyymmdd(d: &[u8], day0: bool) -> Result<(), &'static str> {
    let (Some(cc), Some(yy), Some(mm), Some(dd)) = (
        d.get(0..2).and_then(num2),
        d.get(2..4).and_then(num2),
        d.get(4..6).and_then(num2),
        d.get(6..8).and_then(num2),
    ) else {
        return Err("not eight digits");
    };
    if d.len() != 8 {
        return Err("not eight digits");
    }
    // cc, yy < 100: the year fits easily.
    check_month_day((cc * 100 + yy) as i32, mm, dd, day0)
}

fn check_time(lint: Lint, d: &[u8]) -> Result<(), &'static str> {
    let hour = |x: Option<u32>| match x {
        Some(h) if h <= 23 => Ok(()),
        _ => Err("hour must be 00 to 23"),
    };
    let minute = |x: Option<u32>, what: &'static str| match x {
        Some(m) if m <= 59 => Ok(()),
        _ => Err(what),
    };
    match lint {
        Lint::Hh => hour(num2(d)),
        Lint::Mi => minute(num2(d), "minute must be 00 to 59"),
        Lint::Ss => minute(num2(d), "second must be 00 to 59"),
        Lint::Hhmi if d.len() == 4 => {
            hour(d.get(0..2).and_then(num2))?;
            minute(d.get(2..4).and_then(num2), "minute must be 00 to 59")
        }
        _ => Err("not a time"),
    }
}

fn text(d: &[u8]) -> String {
    d.iter().map(|&b| b as char).collect()
}

/// Check `value`, the data of `spec.ai` that starts at byte `pos` of the
/// scan, against its components: lengths, character set, then each enforced
/// linter. Errors carry scan byte positions.
pub fn validate(
    spec: &'static AiSpec,
    value: &[u8],
    pos: usize,
    year: i32,
) -> Result<(), Gs1Error> {
    let ai = spec.ai;
    let too_short = |min| Gs1Error::TooShort {
        ai,
        pos,
        len: value.len(),
        min,
    };
    let mut off = 0;
    for c in spec.components {
        let left = value.len() - off;
        if left == 0 {
            if c.optional {
                break;
            }
            return Err(too_short(spec.min_len()));
        }
        let take = if c.variable {
            left.min(usize::from(c.len))
        } else {
            usize::from(c.len)
        };
        if left < take {
            // A fixed component cut short (optional or not).
            return Err(too_short(off + take));
        }
        let part = &value[off..off + take];
        let at = pos + off;
        if let Some(i) = bad_char(c.cset, part) {
            return Err(Gs1Error::BadChar {
                ai,
                pos: at + i,
                byte: part.get(i).copied().unwrap_or(b'='),
                cset: c.cset,
            });
        }
        for &lint in c.lints {
            match lint {
                Lint::Csum => {
                    if let Some((&last, body)) = part.split_last() {
                        let expected = std::str::from_utf8(body).ok().and_then(check_digit);
                        if expected != Some(last.wrapping_sub(b'0')) {
                            return Err(Gs1Error::BadCheckDigit {
                                ai,
                                pos: at + take - 1,
                                found: last as char,
                                expected: expected.map_or('?', |d| char::from(b'0' + d)),
                            });
                        }
                    }
                }
                Lint::Yymmd0 | Lint::Yymmdd | Lint::Yyyymmd0 | Lint::Yyyymmdd => {
                    let r = match lint {
                        Lint::Yymmd0 => check_yymmdd(part, true, year),
                        Lint::Yymmdd => check_yymmdd(part, false, year),
                        Lint::Yyyymmd0 => check_yyyymmdd(part, true),
                        _ => check_yyyymmdd(part, false),
                    };
                    r.map_err(|reason| Gs1Error::BadDate {
                        ai,
                        pos: at,
                        value: text(part),
                        reason,
                    })?;
                }
                Lint::Hh | Lint::Mi | Lint::Ss | Lint::Hhmi => {
                    check_time(lint, part).map_err(|reason| Gs1Error::BadTime {
                        ai,
                        pos: at,
                        value: text(part),
                        reason,
                    })?;
                }
                Lint::Unchecked(_) => {}
            }
        }
        off += take;
    }
    if off < value.len() {
        return Err(Gs1Error::TooLong {
            ai,
            pos,
            len: value.len(),
            max: spec.max_len(),
        });
    }
    Ok(())
}
