//! Check characters for lot numbers: ISO/IEC 7064 MOD 37,36 (one character
//! 0-9A-Z over an alphanumeric string) and the GS1 mod-10 check digit (over
//! digits, as for GTIN and SSCC).

/// The characters a MOD 37,36 check can take, by value.
const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// ISO/IEC 7064 MOD 37,36 (the hybrid system with M = 36) over the
/// characters 0-9 and A-Z of `text` (letters case-insensitive, `0`-`9` worth
/// 0-9 and `A`-`Z` worth 10-35); any other character (`-`) is skipped.
///
/// `p = 36; for each value a: s = (p + a) mod 36, or 36 if that is 0;
/// p = 2s mod 37`; the check is the character worth `(37 - p) mod 36`.
pub fn mod37_36(text: &str) -> char {
    let mut p: u32 = 36;
    for c in text.chars() {
        let Some(a) = c.to_digit(36) else { continue };
        let s = match (p + a) % 36 {
            0 => 36,
            s => s,
        };
        p = (2 * s) % 37;
    }
    char::from(ALPHABET[((37 - p) % 36) as usize])
}

/// GS1 mod-10 check digit over the digits of `text` (anything else is
/// skipped): weights 3, 1, 3, … from the rightmost digit; the check digit is
/// `(10 - sum mod 10) mod 10`.
pub fn gs1_mod10(text: &str) -> char {
    let sum: u32 = text
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { 3 * d } else { d })
        .fold(0, |acc, x| (acc + x) % 10);
    char::from(b'0' + ((10 - sum) % 10) as u8)
}
