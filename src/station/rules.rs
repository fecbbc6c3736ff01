//! Scan rules: ordered regex rules, first match wins.

use crate::config::ScanRule;

/// Longest value a rule may take from a scan (lot and order numbers).
pub const MAX_VALUE_LEN: usize = 64;

/// The first rule matching `raw`, and the value it takes: the named group
/// `value` when the pattern has one, otherwise the whole match. A rule whose
/// value would be empty or longer than [`MAX_VALUE_LEN`] does not match.
pub fn first_match<'r>(rules: &'r [ScanRule], raw: &[u8]) -> Option<(&'r ScanRule, String)> {
    let text = String::from_utf8_lossy(raw);
    rules.iter().find_map(|rule| {
        let caps = rule.pattern.captures(&text)?;
        let value = caps.name("value").or_else(|| caps.get(0))?.as_str();
        (!value.is_empty() && value.len() <= MAX_VALUE_LEN).then(|| (rule, value.to_owned()))
    })
}
