//! Scan rules: ordered, first match wins. A rule matches by any combination
//! of a regular expression, AIM symbology identifiers and GS1 AIs that must
//! be present; all the conditions it has must hold.

use crate::config::{RuleAction, ScanRule};
use crate::gs1::Decoded;

/// Longest value a rule may take from a scan (lot, order, operator, serial).
pub const MAX_VALUE_LEN: usize = 64;

/// The text rules see: the scan without its AIM identifier (lossy UTF-8).
pub fn rule_text<'a>(raw: &'a [u8], decoded: &Decoded) -> std::borrow::Cow<'a, str> {
    let skip = decoded.aim.as_ref().map_or(0, |a| a.len());
    String::from_utf8_lossy(raw.get(skip..).unwrap_or_default())
}

/// What a matching rule captured.
#[derive(Debug, Default)]
pub struct Captured {
    /// The named group `value` (pattern rules only).
    pub value: Option<String>,
    /// The whole match, when the pattern has no named groups at all.
    pub whole: Option<String>,
    /// Named groups `gtin`, `lot`, `serial`, `expiry` (materials, products).
    pub gtin: Option<String>,
    pub lot: Option<String>,
    pub serial: Option<String>,
    pub expiry: Option<String>,
}

/// Whether `rule` matches; `decoded` is the scan's GS1 reading as the rule
/// needs it (forced GS1 for rules with `gs1` conditions, see the caller).
pub fn matches(rule: &ScanRule, text: &str, decoded: &Decoded) -> Option<Captured> {
    if !rule.symbology.is_empty()
        && !decoded
            .aim
            .as_ref()
            .is_some_and(|a| rule.symbology.iter().any(|s| s == a))
    {
        return None;
    }
    if !rule.gs1.iter().all(|ai| decoded.get(ai).is_some()) {
        return None;
    }
    let mut cap = Captured::default();
    if let Some(pattern) = &rule.pattern {
        let caps = pattern.captures(text)?;
        let group = |name: &str| caps.name(name).map(|m| m.as_str().to_owned());
        cap.value = group("value");
        if pattern.capture_names().all(|n| n.is_none()) {
            cap.whole = caps.get(0).map(|m| m.as_str().to_owned());
        }
        cap.gtin = group("gtin");
        cap.lot = group("lot");
        cap.serial = group("serial");
        cap.expiry = group("expiry");
    }
    Some(cap)
}

/// The single value a rule takes (lot, order, operator, serial), first of:
/// the named group `value`; the action's own named group (`serial` for a
/// product, `lot` for set-lot); the configured `value_ai`, or the action's
/// usual AI (21 for a product, 10 for set-lot); the whole match of a pattern
/// without named groups; the whole text when the scan is not GS1.
pub fn value_of(rule: &ScanRule, cap: &Captured, text: &str, decoded: &Decoded) -> Option<String> {
    let own_group = match rule.action {
        RuleAction::Product => cap.serial.clone(),
        RuleAction::SetLot => cap.lot.clone(),
        _ => None,
    };
    if let Some(v) = cap.value.clone().or(own_group) {
        return Some(v);
    }
    let usual = match rule.action {
        RuleAction::SetLot => Some("10"),
        RuleAction::Product => Some("21"),
        _ => None,
    };
    if let Some(v) = rule
        .value_ai
        .as_deref()
        .or(usual)
        .and_then(|ai| decoded.get(ai))
    {
        return Some(v.to_owned());
    }
    if rule.value_ai.is_some() {
        return None;
    }
    if let Some(whole) = &cap.whole {
        return Some(whole.clone());
    }
    if decoded.gs1.is_some() || rule.pattern.is_some() {
        // GS1 data without the AI the action needs, or a pattern whose
        // named groups did not give the value: no usable value.
        return None;
    }
    Some(text.trim().to_owned())
}

/// A value fit to stamp records with: 1 to [`MAX_VALUE_LEN`] characters, no
/// control characters.
pub fn valid_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_VALUE_LEN && !v.chars().any(char::is_control)
}
