//! Build script. Generates the GS1 Application Identifier table
//! (`$OUT_DIR/gs1_ai_table.rs`, included by `src/gs1/table.rs`) from our
//! transcription of the GS1 Barcode Syntax Dictionary,
//! `src/gs1/ai-table.txt`; that file's header describes the format.
//!
//! A malformed line stops the build with its line number and the reason; the
//! script never panics. Besides the syntax it checks what the parser relies
//! on: the AI set is prefix-free and has no duplicates, a predefined-length
//! AI has a fixed length, only the last component varies in length, optional
//! components come last, and date, time and check-digit linters sit on
//! numeric components of the length they need.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

const TABLE: &str = "src/gs1/ai-table.txt";

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed={TABLE}");
    println!("cargo:rerun-if-changed=build.rs");
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {TABLE}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let out = std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?;
    let text = std::fs::read_to_string(PathBuf::from(dir).join(TABLE))
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        parse_line(line, n + 1, &mut entries)
            .map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?;
    }
    check_set(&mut entries)?;
    let code = render(&entries);
    let dest = PathBuf::from(out).join("gs1_ai_table.rs");
    std::fs::write(&dest, code).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}

/// One AI after range expansion.
struct Entry {
    ai: String,
    predefined: bool,
    components: Vec<Component>,
    title: String,
    line: usize,
}

#[derive(Clone)]
struct Component {
    cset: char,
    len: u8,
    variable: bool,
    optional: bool,
    lints: Vec<String>,
}

fn parse_line(line: &str, line_no: usize, entries: &mut Vec<Entry>) -> Result<(), String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(());
    }
    // The title follows the first '#'; it may itself contain '#' ("CERT # 1").
    let (fields, title) = trimmed
        .split_once('#')
        .ok_or("no title (expected \"# TITLE\" at the end)")?;
    let title = title.trim();
    if title.is_empty() {
        return Err("empty title".into());
    }
    let mut fields = fields.split_whitespace();
    let ais = fields.next().ok_or("no AI")?;
    let predefined = match fields.next() {
        Some("*") => true,
        Some("-") => false,
        Some(other) => return Err(format!("flag must be \"*\" or \"-\", not {other:?}")),
        None => return Err("no flag".into()),
    };
    let components = fields.map(parse_component).collect::<Result<Vec<_>, _>>()?;
    check_components(predefined, &components)?;
    for ai in expand(ais)? {
        entries.push(Entry {
            ai,
            predefined,
            components: components.clone(),
            title: title.to_string(),
            line: line_no,
        });
    }
    Ok(())
}

/// `"10"` → `["10"]`; `"3100-3105"` → `["3100", …, "3105"]`.
fn expand(ais: &str) -> Result<Vec<String>, String> {
    let valid = |s: &str| (2..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let (first, last) = ais.split_once('-').unwrap_or((ais, ais));
    if !valid(first) || !valid(last) || first.len() != last.len() {
        return Err(format!(
            "AI must be 2 to 4 digits, or a range of two such of the same length, not {ais:?}"
        ));
    }
    let width = first.len();
    let (a, b) = match (first.parse::<u32>(), last.parse::<u32>()) {
        (Ok(a), Ok(b)) if a <= b => (a, b),
        _ => return Err(format!("bad AI range {ais:?}")),
    };
    Ok((a..=b).map(|n| format!("{n:0width$}")).collect())
}

/// `N14,csum,keyoff1`, `X..20`, `[N..12]`, `[N3,iso3166]`.
fn parse_component(text: &str) -> Result<Component, String> {
    let (optional, inner) = match text.strip_prefix('[') {
        Some(rest) => (
            true,
            rest.strip_suffix(']')
                .ok_or_else(|| format!("unclosed '[' in component {text:?}"))?,
        ),
        None => (false, text),
    };
    let mut parts = inner.split(',');
    let spec = parts.next().unwrap_or_default();
    let mut chars = spec.chars();
    let cset = match chars.next() {
        Some(c @ ('N' | 'X' | 'Y' | 'Z')) => c,
        _ => return Err(format!("component {text:?} must start with N, X, Y or Z")),
    };
    let rest = chars.as_str();
    let (variable, digits) = match rest.strip_prefix("..") {
        Some(d) => (true, d),
        None => (false, rest),
    };
    let len = match digits.parse::<u8>() {
        Ok(n) if (1..=99).contains(&n) && digits.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(format!("component {text:?}: length must be 1 to 99")),
    };
    let mut lints = Vec::new();
    for lint in parts {
        if lint.is_empty()
            || !lint
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!("component {text:?}: bad linter name {lint:?}"));
        }
        // Lengths the enforced linters need, on numeric data.
        let need = match lint {
            "yymmd0" | "yymmdd" => Some(6),
            "yyyymmd0" | "yyyymmdd" => Some(8),
            "hh" | "mi" | "ss" => Some(2),
            "hhmi" => Some(4),
            "csum" => None,
            _ => {
                lints.push(lint.to_string());
                continue;
            }
        };
        if cset != 'N' || variable || need.is_some_and(|n| n != len) || (lint == "csum" && len < 2)
        {
            return Err(format!(
                "component {text:?}: linter {lint} needs a fixed-length numeric component{}",
                need.map(|n| format!(" of {n} digits")).unwrap_or_default()
            ));
        }
        lints.push(lint.to_string());
    }
    Ok(Component {
        cset,
        len,
        variable,
        optional,
        lints,
    })
}

fn check_components(predefined: bool, components: &[Component]) -> Result<(), String> {
    if components.is_empty() {
        return Err("no components".into());
    }
    let last = components.len() - 1;
    let mut seen_optional = false;
    for (i, c) in components.iter().enumerate() {
        if c.variable && i != last {
            return Err("only the last component may have a variable length".into());
        }
        if seen_optional && !c.optional {
            return Err("a mandatory component follows an optional one".into());
        }
        seen_optional |= c.optional;
    }
    if predefined && components.iter().any(|c| c.variable || c.optional) {
        return Err("a predefined-length AI (\"*\") must have a fixed length".into());
    }
    let max: u32 = components.iter().map(|c| u32::from(c.len)).sum();
    if max > 99 {
        return Err(format!("data up to {max} characters; at most 99 supported"));
    }
    Ok(())
}

/// Sorted, no duplicates, no AI a prefix of another (the parser matches AIs
/// by their 2-, 3- or 4-digit prefix and relies on this).
fn check_set(entries: &mut [Entry]) -> Result<(), String> {
    entries.sort_by(|a, b| a.ai.cmp(&b.ai));
    // In sorted order the AIs extending a prefix directly follow it, so
    // checking neighbours is enough.
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.ai.starts_with(&a.ai) {
            return Err(format!(
                "AI {} (line {}) is a duplicate or a prefix of AI {} (line {})",
                a.ai, a.line, b.ai, b.line
            ));
        }
    }
    if entries.is_empty() {
        return Err("no AIs".into());
    }
    Ok(())
}

fn render(entries: &[Entry]) -> String {
    let mut s = String::new();
    s.push_str("// Generated by build.rs from src/gs1/ai-table.txt. Do not edit.\n\n");
    s.push_str("/// Every AI of the table, sorted by AI.\n");
    s.push_str("pub(crate) static AI_TABLE: &[AiSpec] = &[\n");
    for e in entries {
        let _ = write!(
            s,
            "    AiSpec {{ ai: {:?}, predefined: {}, title: {:?}, components: &[",
            e.ai, e.predefined, e.title
        );
        for c in &e.components {
            let cset = match c.cset {
                'N' => "Numeric",
                'X' => "Cset82",
                'Y' => "Cset39",
                _ => "Cset64",
            };
            let _ = write!(
                s,
                "Component {{ cset: Cset::{cset}, len: {}, variable: {}, optional: {}, lints: &[",
                c.len, c.variable, c.optional
            );
            for l in &c.lints {
                let lint = match l.as_str() {
                    "csum" => "Lint::Csum".to_string(),
                    "yymmd0" => "Lint::Yymmd0".to_string(),
                    "yymmdd" => "Lint::Yymmdd".to_string(),
                    "yyyymmd0" => "Lint::Yyyymmd0".to_string(),
                    "yyyymmdd" => "Lint::Yyyymmdd".to_string(),
                    "hh" => "Lint::Hh".to_string(),
                    "mi" => "Lint::Mi".to_string(),
                    "ss" => "Lint::Ss".to_string(),
                    "hhmi" => "Lint::Hhmi".to_string(),
                    other => format!("Lint::Unchecked({other:?})"),
                };
                let _ = write!(s, "{lint}, ");
            }
            s.push_str("] }, ");
        }
        s.push_str("] },\n");
    }
    s.push_str("];\n");
    s
}
