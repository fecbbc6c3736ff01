//! Data-driven tests of lot numbering: template rendering (leap years, check
//! characters, published schemes), parse and uniqueness errors, the calendar
//! in zones with DST (night shifts, local midnight, transition days), period
//! boundaries, and the allocator (resets at local boundaries, clock jumps,
//! persistence, random walks that must never repeat a number).

use std::collections::HashSet;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::check::{gs1_mod10, mod37_36};
use super::*;

const FIELDS: Fields<'static> = Fields {
    site: "ABC",
    line: "03",
    station: "st10",
};

/// Milliseconds of an RFC 3339 instant (with offset).
fn ms(s: &str) -> u64 {
    let t: Timestamp = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    u64::try_from(t.as_millisecond()).unwrap()
}

fn shifts(plan: &[(&str, &str)]) -> Vec<Shift> {
    plan.iter()
        .map(|(name, hhmm)| {
            let (h, m) = hhmm.split_once(':').unwrap();
            Shift {
                name: name.to_string(),
                start_minute: h.parse::<u16>().unwrap() * 60 + m.parse::<u16>().unwrap(),
            }
        })
        .collect()
}

fn cal(tz: &str, plan: &[(&str, &str)]) -> Calendar {
    Calendar::new(tz, shifts(plan)).unwrap()
}

const ABC: &[(&str, &str)] = &[("A", "06:00"), ("B", "14:00"), ("C", "22:00")];

/// Independent MOD 37,36: the check is the character that makes the whole
/// string valid, where a valid string leaves 1 after its last character.
fn mod37_36_by_search(text: &str) -> char {
    let alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let valid = |s: String| {
        let values: Vec<u32> = s
            .to_ascii_uppercase()
            .chars()
            .filter_map(|c| alphabet.find(c).map(|v| v as u32))
            .collect();
        let mut product = 36;
        let mut sum = 0;
        for v in values {
            sum = (product + v) % 36;
            if sum == 0 {
                sum = 36;
            }
            product = sum * 2 % 37;
        }
        sum % 36 == 1
    };
    let found: Vec<char> = alphabet
        .chars()
        .filter(|&c| valid(format!("{text}{c}")))
        .collect();
    assert_eq!(found.len(), 1, "{text}: {found:?}");
    found[0]
}

/// Independent GS1 mod-10: the digit that makes the weighted sum of the
/// whole string (weights 1, 3, 1, … from the right, check included) a
/// multiple of 10.
fn gs1_by_search(digits: &str) -> char {
    let found: Vec<char> = ('0'..='9')
        .filter(|&c| {
            let all = format!("{digits}{c}");
            let sum: u32 = all
                .chars()
                .rev()
                .enumerate()
                .map(|(i, c)| c.to_digit(10).unwrap() * if i % 2 == 1 { 3 } else { 1 })
                .sum();
            sum.is_multiple_of(10)
        })
        .collect();
    assert_eq!(found.len(), 1);
    found[0]
}

// ---------------------------------------------------------------- rendering

#[test]
fn render_table() {
    let utc = Calendar::utc();
    let utc_abc = cal("UTC", ABC);
    let utc_123 = cal("UTC", &[("1", "06:00"), ("2", "14:00"), ("3", "22:00")]);
    let berlin = cal("Europe/Berlin", ABC);
    let long = Fields {
        site: "Augsburg",
        line: "L3",
        station: "st10x",
    };
    // (template, calendar, fields, [(instant, seq, expected)])
    type Rows<'a> = &'a [(&'a str, u64, &'a str)];
    type Group<'a> = (&'a str, &'a Calendar, Fields<'a>, Rows<'a>);
    let groups: &[Group] = &[
        // Day of the year across leap years: 2000 is one (divisible by
        // 400), 2100 is not.
        (
            "{yyyy}{jjj}-{seq:1}",
            &utc,
            FIELDS,
            &[
                ("2026-01-01T00:00:00Z", 1, "2026001-1"),
                ("2024-02-29T12:00:00Z", 1, "2024060-1"),
                ("2024-03-01T12:00:00Z", 1, "2024061-1"),
                ("2025-03-01T12:00:00Z", 1, "2025060-1"),
                ("2024-12-31T12:00:00Z", 1, "2024366-1"),
                ("2025-12-31T12:00:00Z", 1, "2025365-1"),
                ("2000-02-29T12:00:00Z", 1, "2000060-1"),
                ("2000-12-31T12:00:00Z", 1, "2000366-1"),
                ("2100-03-01T12:00:00Z", 1, "2100060-1"),
                ("2100-12-31T12:00:00Z", 1, "2100365-1"),
            ],
        ),
        // Canned Food Alliance: year digit + day + shift suffix. Day 195 of
        // 2000 is 13 July (a leap year), not 14 July.
        (
            "{y}{jjj}-{shift}{seq:2}",
            &utc_123,
            FIELDS,
            &[
                ("2000-07-13T10:00:00Z", 1, "0195-101"),
                ("2000-07-14T10:00:00Z", 1, "0196-101"),
            ],
        ),
        // Kraft: year digit, day, plant, shift (`9003A2`).
        (
            "{y}{jjj}{site:1}{shift}-{seq:2}",
            &utc_123,
            FIELDS,
            &[("1999-01-03T16:00:00Z", 1, "9003A2-01")],
        ),
        // Holcim-style YYMMDD + plant digit + 2-digit batch.
        (
            "{yy}{mm}{dd}7{seq:2}",
            &utc,
            FIELDS,
            &[("2026-11-22T08:00:00Z", 5, "261122705")],
        ),
        // The reference scheme: plant, line, YY, DDD, shift, 3-digit
        // sequence; then with a MOD 37,36 check (see `check_vectors`).
        (
            "{site:1}{line}{yy}{jjj}{shift}{seq:3}",
            &utc_abc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 17, "A0326001A017")],
        ),
        (
            "{site:1}{line}{yy}{jjj}{shift}{seq:3}{check}",
            &utc_abc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 17, "A0326001A017O")],
        ),
        // Truncation by characters; shorter ids are not padded.
        (
            "{site:2}{station:3}{line:10}{seq:2}",
            &utc,
            long,
            &[("2026-01-01T08:00:00Z", 1, "Aust1L301")],
        ),
        (
            "{site}-{line}-{station}-{seq:2}",
            &utc,
            long,
            &[("2026-01-01T08:00:00Z", 1, "Augsburg-L3-st10x-01")],
        ),
        // A sequence wider than its width is never truncated.
        (
            "L{seq:3}",
            &utc,
            FIELDS,
            &[
                ("2026-01-01T08:00:00Z", 0, "L000"),
                ("2026-01-01T08:00:00Z", 999, "L999"),
                ("2026-01-01T08:00:00Z", 12345, "L12345"),
                ("2026-01-01T08:00:00Z", u64::MAX, "L18446744073709551615"),
            ],
        ),
        // {y} is the last digit of the year.
        (
            "{y}{yy}{yyyy}{seq:1}",
            &utc,
            FIELDS,
            &[
                ("2029-06-30T08:00:00Z", 1, "92920291"),
                ("2030-06-30T08:00:00Z", 1, "03020301"),
            ],
        ),
        // {shift} without shifts renders nothing.
        (
            "{shift}{seq:3}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 1, "001")],
        ),
        // GRid example: MOD 37,36 gives M; letters are case-insensitive,
        // and `-` is skipped.
        (
            "A12425GABC{seq:7}{check}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 1234002, "A12425GABC1234002M")],
        ),
        (
            "a12425gabc{seq:7}{check}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 1234002, "a12425gabc1234002M")],
        ),
        (
            "A1-2425G-ABC{seq:7}-{check}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 1234002, "A1-2425G-ABC1234002-M")],
        ),
        // GS1 mod-10 (GTIN vectors from the reference).
        (
            "095060001343{seq:1}{check:mod10}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 5, "09506000134352")],
        ),
        (
            "041500000211{seq:1}{check:mod10}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 2, "04150000021126")],
        ),
        (
            "123123123123{seq:1}{check:mod10}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 3, "12312312312333")],
        ),
        (
            "41{seq:9}{check:mod10}",
            &utc,
            FIELDS,
            &[("2026-01-01T08:00:00Z", 600033610, "416000336108")],
        ),
        // The local date, not UTC's: 23:30 UTC on 21 Nov is 22 Nov in Berlin.
        (
            "{yy}{mm}{dd}{shift}{seq:3}",
            &berlin,
            FIELDS,
            &[("2026-11-21T23:30:00Z", 1, "261122C001")],
        ),
        (
            "{yy}{mm}{dd}{shift}{seq:3}",
            &utc_abc,
            FIELDS,
            &[("2026-11-21T23:30:00Z", 1, "261121C001")],
        ),
    ];
    for (template, calendar, fields, rows) in groups {
        let t = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
        for (at, seq, expected) in rows.iter() {
            let got = t.render(*fields, &calendar.at(ms(at)), *seq);
            assert_eq!(&got, expected, "{template} at {at} seq {seq}");
        }
    }
}

#[test]
fn day_195_of_2000_is_13_july() {
    let date = jiff::civil::date(2000, 1, 1)
        .with()
        .day_of_year(195)
        .build()
        .unwrap();
    assert_eq!(date, jiff::civil::date(2000, 7, 13));
}

#[test]
fn check_vectors() {
    // By hand, MOD 37,36 over "AB1" (A=10, B=11, 1=1), p starts at 36:
    //   A: s = (36+10) mod 36 = 10, p = 20 mod 37 = 20
    //   B: s = (20+11) mod 36 = 31, p = 62 mod 37 = 25
    //   1: s = (25+1)  mod 36 = 26, p = 52 mod 37 = 15
    //   check = (37-15) mod 36 = 22 -> 'M'
    let table = [
        ("AB1", 'M'),
        ("A12425GABC1234002", 'M'), // GRid A1-2425G-ABC1234002-M
        ("RABD", 'A'),
        ("X0H", 'X'),
        ("TBR", '1'),
        ("A0326001A017", 'O'),
        ("", '1'),
        ("---", '1'),
    ];
    for (text, expected) in table {
        assert_eq!(mod37_36(text), expected, "{text}");
        assert_eq!(mod37_36_by_search(text), expected, "{text}");
    }
    // Cross-check on pseudo-random strings, including lowercase and `-`.
    let mut rng = fastrand::Rng::with_seed(7);
    let chars: Vec<char> = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz-"
        .chars()
        .collect();
    for _ in 0..2000 {
        let len = rng.usize(0..24);
        let s: String = (0..len).map(|_| chars[rng.usize(..chars.len())]).collect();
        assert_eq!(mod37_36(&s), mod37_36_by_search(&s), "{s}");
    }

    for (digits, expected) in [
        ("0950600013435", '2'),
        ("0415000002112", '6'),
        ("0952123454321", '3'),
        ("1231231231233", '3'),
        ("1234567890123", '1'),
        ("41600033610", '8'),
        ("123456789012", '8'),
        ("", '0'),
    ] {
        assert_eq!(gs1_mod10(digits), expected, "{digits}");
        assert_eq!(gs1_by_search(digits), expected, "{digits}");
    }
    let mut rng = fastrand::Rng::with_seed(8);
    for _ in 0..2000 {
        let len = rng.usize(0..20);
        let s: String = (0..len).map(|_| rng.digit(10)).collect();
        assert_eq!(gs1_mod10(&s), gs1_by_search(&s), "{s}");
    }
}

#[test]
fn check_over_rendered_text_matches_independent_implementations() {
    let berlin = cal("Europe/Berlin", ABC);
    let t37 = Template::parse("{site:1}{line}-{yy}{jjj}{shift}{seq:4}{check}").unwrap();
    let t10 = Template::parse("{yy}{mm}{dd}{seq:5}{check:mod10}").unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..500 {
        let at = berlin.at(rng.u64(ms("2020-01-01T00:00:00Z")..ms("2030-01-01T00:00:00Z")));
        let seq = rng.u64(0..200_000);
        let lot = t37.render(FIELDS, &at, seq);
        let (body, check) = lot.split_at(lot.len() - 1);
        assert_eq!(check, mod37_36_by_search(body).to_string(), "{lot}");
        let lot = t10.render(FIELDS, &at, seq);
        assert!(lot.chars().all(|c| c.is_ascii_digit()), "{lot}");
        let (body, check) = lot.split_at(lot.len() - 1);
        assert_eq!(check, gs1_by_search(body).to_string(), "{lot}");
    }
}

#[test]
fn max_len_counts_the_longest_number() {
    let abc = cal("UTC", ABC);
    let long = cal(
        "UTC",
        &[("early", "06:00"), ("night", "22:00"), ("N", "14:00")],
    );
    let table: &[(&str, &Calendar, usize)] = &[
        ("{site:1}{line}{yy}{jjj}{shift}{seq:3}{check}", &abc, 13),
        ("{site:1}{line}{yy}{jjj}{shift}{seq:3}{check}", &long, 17),
        ("{site}{line}{station}{seq:9}", &abc, 3 + 2 + 4 + 9),
        (
            "{site:10}{station:2}{yyyy}{mm}{dd}{y}{seq:1}",
            &abc,
            3 + 2 + 4 + 2 + 2 + 1 + 1,
        ),
        ("LOT-{seq:6}{check}", &Calendar::utc(), 11),
        ("{yyyy}{jjj}{seq:6}{check:mod10}", &Calendar::utc(), 14),
    ];
    let mut rng = fastrand::Rng::with_seed(5);
    for (template, calendar, expected) in table {
        let t = Template::parse(template).unwrap();
        assert_eq!(t.max_len(FIELDS, calendar), *expected, "{template}");
        // Rendered numbers never exceed it while the sequence fits.
        for _ in 0..200 {
            let at = calendar.at(rng.u64(0..ms("2100-01-01T00:00:00Z")));
            let lot = t.render(FIELDS, &at, rng.u64(0..10));
            assert!(lot.chars().count() <= *expected, "{template}: {lot}");
        }
    }
}

// ------------------------------------------------------------ parse errors

#[test]
fn parse_errors() {
    // (template, a part of the error text)
    let table = [
        (
            "{foo}{seq:3}",
            "unknown token {foo} at column 1: expected one of {site}",
        ),
        ("{YYYY}{seq:3}", "tokens are lowercase: {yyyy}"),
        ("{Seq:3}", "tokens are lowercase: {seq:3}"),
        ("{}{seq:3}", "unknown token {}"),
        ("L{yy}{jjj}", "no {seq:N}"),
        ("", "no {seq:N}"),
        ("{seq:3}{seq:3}", "more than one {seq:N}"),
        ("{check}{seq:3}", "{check} must be the last"),
        ("{seq:3}{check}X", "{check} must be the last"),
        ("{seq:3}{check}{check}", "{check} must be the last"),
        ("{seq:3}{check:mod10}{yy}", "{check} must be the last"),
        (
            "L_{seq:3}",
            "'_' at column 2 is not allowed: literal text may only use A-Z, a-z, 0-9 and `-`",
        ),
        ("L {seq:3}", "' ' at column 2 is not allowed"),
        ("L/{seq:3}", "'/' at column 2"),
        ("L.{seq:3}", "'.' at column 2"),
        ("{seq:3}^FS", "'^' at column 8"),
        ("Lé{seq:3}", "'é' at column 2"),
        ("{seq:3", "the `{` at column 1 is not closed"),
        ("L{seq:{3}}", "the `{` at column 2 is not closed"),
        ("{seq:3}{", "the `{` at column 8 is not closed"),
        ("L}{seq:3}", "the `}` at column 2 closes nothing"),
        ("{seq:3}}", "the `}` at column 8 closes nothing"),
        (
            "{seq}",
            "{seq} at column 1: expected {seq:N} with a width N from 1 to 9",
        ),
        ("{seq:0}", "width N from 1 to 9"),
        ("{seq:10}", "width N from 1 to 9"),
        ("{seq:x}", "width N from 1 to 9"),
        ("{seq:-1}", "width N from 1 to 9"),
        (
            "{site:0}{seq:3}",
            "{site:0} at column 1: expected {site} or {site:N} with N from 1 to 20",
        ),
        ("{line:21}{seq:3}", "{line} or {line:N}"),
        ("{station:+2}{seq:3}", "{station} or {station:N}"),
        (
            "{yy:2}{seq:3}",
            "{yy:2} at column 1: {yy} takes no argument",
        ),
        (
            "{seq:3}{check:mod11}",
            "expected {check} (ISO/IEC 7064 MOD 37,36 check character) or {check:mod10}",
        ),
        (
            "{site}{seq:3}{check:mod10}",
            "{check:mod10} is the GS1 mod-10 check digit and needs an all-digit number",
        ),
        ("{shift}{seq:3}{check:mod10}", "needs an all-digit number"),
        ("L{seq:3}{check:mod10}", "needs an all-digit number"),
        ("{yy}-{seq:3}{check:mod10}", "needs an all-digit number"),
    ];
    for (template, expected) in table {
        match Template::parse(template) {
            Ok(_) => panic!("{template:?} parsed"),
            Err(e) => assert!(e.contains(expected), "{template:?}: {e}"),
        }
    }
}

#[test]
fn parse_accepts() {
    for template in [
        "{seq:1}",
        "{seq:9}",
        "LOT-{seq:4}",
        "{site}{line}{station}{yyyy}{yy}{y}{mm}{dd}{jjj}{shift}{seq:3}{check}",
        "{site:1}{line:20}{station:3}{seq:3}",
        "9{yy}{jjj}{mm}{dd}{y}{yyyy}{seq:4}{check:mod10}",
        "{seq:4}{check}",
    ] {
        let t = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
        assert_eq!(t.as_str(), template);
        assert_eq!(t.to_string(), template);
    }
    assert!(Template::parse("{shift}{seq:3}").unwrap().uses_shift());
    assert!(!Template::parse("{seq:3}").unwrap().uses_shift());
}

#[test]
fn parse_never_panics_on_junk() {
    let mut rng = fastrand::Rng::with_seed(11);
    let alphabet: Vec<char> = "{}:seqyjmdhiftcko019A-_ é\u{0}".chars().collect();
    for _ in 0..20_000 {
        let len = rng.usize(0..16);
        let s: String = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        if let Ok(t) = Template::parse(&s) {
            let lot = t.render(FIELDS, &Calendar::utc().at(0), 7);
            assert!(!lot.is_empty());
        }
    }
}

// ---------------------------------------------------------- check_unique

#[test]
fn check_unique_table() {
    use Reset::*;
    // (template, reset, None = accepted, Some(part of the error))
    let table: &[(&str, Reset, Option<&str>)] = &[
        ("L{seq:4}", Never, None),
        (
            "L{seq:4}",
            Daily,
            Some(
                "with a daily reset the sequence starts again at 1, so the number must show the period: add {yy} or {yyyy}; and {jjj}, or {mm} and {dd}",
            ),
        ),
        ("L{seq:4}", Yearly, Some("add {yy} or {yyyy}")),
        (
            "{y}{jjj}{seq:3}",
            Daily,
            Some("{yy} or {yyyy} (a one-digit {y} repeats every 10 years)"),
        ),
        ("{y}{seq:3}", Yearly, Some("repeats every 10 years")),
        ("{yy}{jjj}{seq:3}", Daily, None),
        ("{yyyy}{jjj}{seq:3}", Daily, None),
        ("{yy}{mm}{dd}{seq:3}", Daily, None),
        (
            "{yy}{mm}{seq:3}",
            Daily,
            Some("add {jjj}, or {mm} and {dd}"),
        ),
        (
            "{yy}{dd}{seq:3}",
            Daily,
            Some("add {jjj}, or {mm} and {dd}"),
        ),
        (
            "{yy}{jjj}{seq:3}",
            Shift,
            Some(
                "with a reset every shift the sequence starts again at 1, so the number must show the period: add {shift}",
            ),
        ),
        ("{yy}{jjj}{shift}{seq:3}", Shift, None),
        ("{yy}{mm}{dd}{shift}{seq:3}", Shift, None),
        (
            "{yy}{mm}{shift}{seq:3}",
            Shift,
            Some("add {jjj}, or {mm} and {dd}"),
        ),
        (
            "{shift}{seq:3}",
            Shift,
            Some("add {yy} or {yyyy}; and {jjj}, or {mm} and {dd}"),
        ),
        ("{yy}{mm}{seq:3}", Monthly, None),
        ("{yy}{jjj}{seq:3}", Monthly, None),
        (
            "{yy}{dd}{seq:3}",
            Monthly,
            Some(
                "with a monthly reset the sequence starts again at 1, so the number must show the period: add {mm} or {jjj}",
            ),
        ),
        ("{mm}{seq:3}", Monthly, Some("add {yy} or {yyyy}")),
        ("{yy}{seq:5}", Yearly, None),
        ("{yyyy}{seq:5}", Yearly, None),
        ("{mm}{dd}{seq:3}", Yearly, Some("with a yearly reset")),
        ("{yy}{seq:5}", Monthly, Some("add {mm} or {jjj}")),
    ];
    for (template, reset, expected) in table {
        let result = Template::parse(template).unwrap().check_unique(*reset);
        match (expected, result) {
            (None, Ok(())) => {}
            (Some(part), Err(e)) => assert!(e.contains(part), "{template} {reset:?}: {e}"),
            (_, r) => panic!("{template} {reset:?}: {r:?}"),
        }
    }
}

// ------------------------------------------------------------- calendar

#[test]
fn calendar_new_errors() {
    type Plan<'a> = &'a [(&'a str, &'a str)];
    let table: &[(&str, Plan, &str)] = &[
        (
            "Europe/Berln",
            ABC,
            "unknown time zone \"Europe/Berln\": expected an IANA time zone such as \"Europe/Berlin\" or \"UTC\"",
        ),
        ("", ABC, "unknown time zone \"\""),
        ("CET+1", ABC, "unknown time zone"),
        (
            "UTC",
            &[("A", "06:00"), ("B", "06:00")],
            "shifts \"A\" and \"B\" both start at 06:00",
        ),
        (
            "UTC",
            &[("A", "06:00"), ("A", "14:00")],
            "shift name \"A\" is used twice",
        ),
        (
            "UTC",
            &[("A", "24:00")],
            "starts at minute 1440: expected a start from 0 (00:00) to 1439 (23:59)",
        ),
        (
            "UTC",
            &[("", "06:00")],
            "shift name \"\": expected 1 to 16 characters from A-Z, a-z, 0-9 and `-`",
        ),
        (
            "UTC",
            &[("night shift", "06:00")],
            "shift name \"night shift\"",
        ),
        ("UTC", &[("A/B", "06:00")], "shift name \"A/B\""),
        (
            "UTC",
            &[("ABCDEFGHIJKLMNOPQ", "06:00")],
            "1 to 16 characters",
        ),
    ];
    for (tz, plan, expected) in table {
        match Calendar::new(tz, shifts(plan)) {
            Ok(_) => panic!("{tz} {plan:?} accepted"),
            Err(e) => assert!(e.contains(expected), "{tz} {plan:?}: {e}"),
        }
    }
    for tz in [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Kolkata",
        "Etc/UTC",
    ] {
        let c = Calendar::new(tz, shifts(ABC)).unwrap();
        assert_eq!(c.zone_name(), tz);
    }
    // Shifts are sorted by start time.
    let c = cal("UTC", &[("C", "22:00"), ("A", "06:00"), ("B", "14:00")]);
    let names: Vec<&str> = c.shifts().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"]);
}

/// (instant, local date, shift, shift key)
type At<'a> = (&'a str, &'a str, Option<&'a str>, &'a str);

fn check_at(calendar: &Calendar, table: &[At]) {
    for (at, date, shift, key) in table {
        let m = calendar.at(ms(at));
        assert_eq!(
            (
                m.day_key().as_str(),
                m.shift.as_deref(),
                m.shift_key.as_str()
            ),
            (*date, *shift, *key),
            "{} at {at}",
            calendar.zone_name()
        );
    }
}

#[test]
fn night_shift_and_local_midnight_berlin() {
    check_at(
        &cal("Europe/Berlin", ABC),
        &[
            (
                "2026-11-21T13:59:59.999+01:00",
                "2026-11-21",
                Some("A"),
                "2026-11-21/A",
            ),
            (
                "2026-11-21T14:00:00.000+01:00",
                "2026-11-21",
                Some("B"),
                "2026-11-21/B",
            ),
            (
                "2026-11-21T21:59:59.999+01:00",
                "2026-11-21",
                Some("B"),
                "2026-11-21/B",
            ),
            (
                "2026-11-21T22:00:00.000+01:00",
                "2026-11-21",
                Some("C"),
                "2026-11-21/C",
            ),
            // Local midnight is 23:00 UTC, not 00:00 UTC.
            (
                "2026-11-21T22:59:59.999Z",
                "2026-11-21",
                Some("C"),
                "2026-11-21/C",
            ),
            (
                "2026-11-21T23:00:00.000Z",
                "2026-11-22",
                Some("C"),
                "2026-11-21/C",
            ),
            (
                "2026-11-22T01:00:00.000+01:00",
                "2026-11-22",
                Some("C"),
                "2026-11-21/C",
            ),
            (
                "2026-11-22T05:59:59.999+01:00",
                "2026-11-22",
                Some("C"),
                "2026-11-21/C",
            ),
            (
                "2026-11-22T06:00:00.000+01:00",
                "2026-11-22",
                Some("A"),
                "2026-11-22/A",
            ),
            // Summer time: midnight is 22:00 UTC.
            (
                "2026-07-01T21:59:59.999Z",
                "2026-07-01",
                Some("C"),
                "2026-07-01/C",
            ),
            (
                "2026-07-01T22:00:00.000Z",
                "2026-07-02",
                Some("C"),
                "2026-07-01/C",
            ),
            (
                "2026-07-02T04:00:00.000Z",
                "2026-07-02",
                Some("A"),
                "2026-07-02/A",
            ),
        ],
    );
    // The production day of the night shift after midnight is the day before.
    let m = cal("Europe/Berlin", ABC).at(ms("2026-11-22T01:00:00+01:00"));
    assert_eq!((m.year, m.month, m.day, m.yday), (2026, 11, 22, 326));
    assert_eq!(m.shift_day.key(), "2026-11-21");
    assert_eq!(m.shift_day.yday, 325);
    let n = m.numbered(Reset::Shift);
    assert_eq!((n.day, n.yday), (21, 325));
    assert_eq!(m.numbered(Reset::Daily), m);
}

#[test]
fn night_shift_and_local_midnight_new_york() {
    check_at(
        &cal("America/New_York", ABC),
        &[
            (
                "2026-11-22T04:59:59.999Z",
                "2026-11-21",
                Some("C"),
                "2026-11-21/C",
            ),
            (
                "2026-11-22T05:00:00.000Z",
                "2026-11-22",
                Some("C"),
                "2026-11-21/C",
            ),
            // UTC midnight is still the evening before in New York.
            (
                "2026-11-22T00:00:00.000Z",
                "2026-11-21",
                Some("B"),
                "2026-11-21/B",
            ),
            (
                "2026-11-22T10:59:59.999Z",
                "2026-11-22",
                Some("C"),
                "2026-11-21/C",
            ),
            (
                "2026-11-22T11:00:00.000Z",
                "2026-11-22",
                Some("A"),
                "2026-11-22/A",
            ),
            // Before the epoch locally.
            (
                "1970-01-01T00:00:00Z",
                "1969-12-31",
                Some("B"),
                "1969-12-31/B",
            ),
        ],
    );
}

#[test]
fn dst_transition_days_berlin() {
    // E starts at 02:30, which does not exist on 29 March 2026 (02:00 CET
    // -> 03:00 CEST): it starts at 03:30 CEST. On 25 October 02:30 happens
    // twice: E starts at the first one (CEST).
    let c = cal(
        "Europe/Berlin",
        &[("N", "22:00"), ("E", "02:30"), ("D", "10:00")],
    );
    check_at(
        &c,
        &[
            (
                "2026-03-29T01:59:59.999+01:00",
                "2026-03-29",
                Some("N"),
                "2026-03-28/N",
            ),
            (
                "2026-03-29T03:00:00.000+02:00",
                "2026-03-29",
                Some("N"),
                "2026-03-28/N",
            ),
            (
                "2026-03-29T03:29:59.999+02:00",
                "2026-03-29",
                Some("N"),
                "2026-03-28/N",
            ),
            (
                "2026-03-29T03:30:00.000+02:00",
                "2026-03-29",
                Some("E"),
                "2026-03-29/E",
            ),
            (
                "2026-03-29T09:59:59.999+02:00",
                "2026-03-29",
                Some("E"),
                "2026-03-29/E",
            ),
            (
                "2026-03-29T10:00:00.000+02:00",
                "2026-03-29",
                Some("D"),
                "2026-03-29/D",
            ),
            (
                "2026-03-30T02:30:00.000+02:00",
                "2026-03-30",
                Some("E"),
                "2026-03-30/E",
            ),
            (
                "2026-10-25T02:29:59.999+02:00",
                "2026-10-25",
                Some("N"),
                "2026-10-24/N",
            ),
            (
                "2026-10-25T02:30:00.000+02:00",
                "2026-10-25",
                Some("E"),
                "2026-10-25/E",
            ),
            (
                "2026-10-25T02:59:59.999+02:00",
                "2026-10-25",
                Some("E"),
                "2026-10-25/E",
            ),
            (
                "2026-10-25T02:00:00.000+01:00",
                "2026-10-25",
                Some("E"),
                "2026-10-25/E",
            ),
            (
                "2026-10-25T02:30:00.000+01:00",
                "2026-10-25",
                Some("E"),
                "2026-10-25/E",
            ),
            (
                "2026-10-25T09:59:59.999+01:00",
                "2026-10-25",
                Some("E"),
                "2026-10-25/E",
            ),
            (
                "2026-10-25T10:00:00.000+01:00",
                "2026-10-25",
                Some("D"),
                "2026-10-25/D",
            ),
        ],
    );
    let spring = c.next_boundary(ms("2026-03-29T01:00:00+01:00"), Reset::Shift);
    assert_eq!(spring, Some(ms("2026-03-29T03:30:00+02:00")));
    let fall = c.next_boundary(ms("2026-10-25T00:00:00+02:00"), Reset::Shift);
    assert_eq!(fall, Some(ms("2026-10-25T02:30:00+02:00")));
}

#[test]
fn dst_transition_days_new_york() {
    // 8 March 2026: 02:00 EST -> 03:00 EDT; 1 November: 02:00 EDT -> 01:00 EST.
    let c = cal(
        "America/New_York",
        &[("1", "01:30"), ("2", "02:30"), ("3", "14:00")],
    );
    check_at(
        &c,
        &[
            (
                "2026-03-08T01:29:59.999-05:00",
                "2026-03-08",
                Some("3"),
                "2026-03-07/3",
            ),
            (
                "2026-03-08T01:30:00.000-05:00",
                "2026-03-08",
                Some("1"),
                "2026-03-08/1",
            ),
            (
                "2026-03-08T03:00:00.000-04:00",
                "2026-03-08",
                Some("1"),
                "2026-03-08/1",
            ),
            (
                "2026-03-08T03:30:00.000-04:00",
                "2026-03-08",
                Some("2"),
                "2026-03-08/2",
            ),
            (
                "2026-11-01T01:29:59.999-04:00",
                "2026-11-01",
                Some("3"),
                "2026-10-31/3",
            ),
            (
                "2026-11-01T01:30:00.000-04:00",
                "2026-11-01",
                Some("1"),
                "2026-11-01/1",
            ),
            // The second 01:30 does not start shift 1 again.
            (
                "2026-11-01T01:30:00.000-05:00",
                "2026-11-01",
                Some("1"),
                "2026-11-01/1",
            ),
            (
                "2026-11-01T02:29:59.999-05:00",
                "2026-11-01",
                Some("1"),
                "2026-11-01/1",
            ),
            (
                "2026-11-01T02:30:00.000-05:00",
                "2026-11-01",
                Some("2"),
                "2026-11-01/2",
            ),
        ],
    );
}

#[test]
fn no_shifts_and_extreme_instants() {
    let c = Calendar::new("Europe/Berlin", Vec::new()).unwrap();
    let m = c.at(ms("2026-11-22T01:00:00+01:00"));
    assert_eq!((m.shift.as_deref(), m.shift_key.as_str()), (None, ""));
    assert_eq!(m.shift_day, m.date());
    assert_eq!(m.period(Reset::Shift), "2026-11-22");
    assert_eq!(
        c.next_boundary(0, Reset::Shift),
        c.next_boundary(0, Reset::Daily)
    );

    for c in [
        Calendar::utc(),
        cal("Pacific/Kiritimati", ABC),
        cal("Pacific/Pago_Pago", ABC),
    ] {
        for ts in [
            0,
            1,
            calendar::MAX_MS,
            calendar::MAX_MS + 1,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let m = c.at(ts);
            assert!(m.year == 9999 || m.year <= 1970, "{m:?}");
            for reset in [
                Reset::Never,
                Reset::Daily,
                Reset::Shift,
                Reset::Monthly,
                Reset::Yearly,
            ] {
                let _ = m.period(reset);
                if let Some(b) = c.next_boundary(ts, reset) {
                    assert!(b > ts);
                }
            }
        }
    }
    let m = Calendar::utc().at(u64::MAX);
    assert_eq!(m.day_key(), "9999-12-01");
    assert_eq!(Calendar::utc().next_boundary(u64::MAX, Reset::Daily), None);
    assert_eq!(
        Calendar::utc().next_boundary(calendar::MAX_MS, Reset::Yearly),
        None
    );
    assert_eq!(
        Calendar::utc().next_boundary(calendar::MAX_MS, Reset::Daily),
        Some(ms("9999-12-02T00:00:00Z"))
    );
    assert_eq!(calendar::MAX_MS, ms("9999-12-01T00:00:00Z"));
}

#[test]
fn period_keys() {
    let c = cal("Europe/Berlin", ABC);
    let m = c.at(ms("2026-11-22T01:00:00+01:00"));
    let table = [
        (Reset::Never, ""),
        (Reset::Daily, "2026-11-22"),
        (Reset::Shift, "2026-11-21/C"),
        (Reset::Monthly, "2026-11"),
        (Reset::Yearly, "2026"),
    ];
    for (reset, key) in table {
        assert_eq!(m.period(reset), key, "{reset:?}");
    }
    let next = [
        (Reset::Never, None),
        (Reset::Daily, Some("2026-11-23T00:00:00+01:00")),
        (Reset::Shift, Some("2026-11-22T06:00:00+01:00")),
        (Reset::Monthly, Some("2026-12-01T00:00:00+01:00")),
        (Reset::Yearly, Some("2027-01-01T00:00:00+01:00")),
    ];
    for (reset, at) in next {
        let b = c.next_boundary(ms("2026-11-22T01:00:00+01:00"), reset);
        assert_eq!(b, at.map(ms), "{reset:?}");
    }
}

/// Every DST transition of 2025-2027 in zones with unusual rules, walked in
/// 7-minute steps: no panic, shift instances never come back once left,
/// and the local date only moves forward except across a transition.
#[test]
fn dst_sweep_shift_instances_never_recur() {
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe", // 30-minute DST
        "America/Santiago",    // transitions at local midnight
        "America/Havana",      // transitions at local midnight
        "Pacific/Chatham",     // +12:45 / +13:45
        "Asia/Kolkata",
    ];
    let plan = [
        ("M", "00:00"),
        ("E", "02:30"),
        ("D", "10:00"),
        ("N", "22:00"),
    ];
    for zone in zones {
        let c = cal(zone, &plan);
        let tz = TimeZone::get(zone).unwrap();
        let start: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let end: Timestamp = "2028-01-01T00:00:00Z".parse().unwrap();
        for transition in tz.following(start).take_while(|t| t.timestamp() < end) {
            let t0 = u64::try_from(transition.timestamp().as_millisecond()).unwrap();
            let mut seen = HashSet::new();
            let mut current = String::new();
            let mut ts = t0 - 36 * 3_600_000;
            while ts < t0 + 36 * 3_600_000 {
                let m = c.at(ts);
                if m.shift_key != current {
                    assert!(
                        seen.insert(m.shift_key.clone()),
                        "{zone}: {} recurs",
                        m.shift_key
                    );
                    current = m.shift_key.clone();
                }
                ts += 7 * 60_000;
            }
            assert!(seen.len() >= 4, "{zone} around {t0}: {seen:?}");
        }
    }
}

/// For random instants, the period is constant up to `next_boundary` and
/// changes exactly there.
#[test]
fn next_boundary_agrees_with_periods() {
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Pacific/Chatham",
        "Asia/Kolkata",
    ];
    let plan = [
        ("M", "00:00"),
        ("E", "02:30"),
        ("D", "10:00"),
        ("N", "22:00"),
    ];
    let mut rng = fastrand::Rng::with_seed(3);
    let lo = ms("2025-01-01T00:00:00Z");
    let hi = ms("2028-01-01T00:00:00Z");
    for zone in zones {
        let c = cal(zone, &plan);
        for _ in 0..400 {
            let ts = rng.u64(lo..hi);
            for reset in [Reset::Daily, Reset::Shift, Reset::Monthly, Reset::Yearly] {
                let p = c.at(ts).period(reset);
                let b = c
                    .next_boundary(ts, reset)
                    .unwrap_or_else(|| panic!("{zone} {ts} {reset:?}"));
                assert!(b > ts);
                assert_eq!(c.at(b - 1).period(reset), p, "{zone} {ts} {reset:?}");
                assert_eq!(
                    c.at(rng.u64(ts..b)).period(reset),
                    p,
                    "{zone} {ts} {reset:?}"
                );
                assert_ne!(c.at(b).period(reset), p, "{zone} {ts} {reset:?}");
            }
        }
    }
}

// ------------------------------------------------------------ allocator

fn lots(
    alloc: &mut Allocator,
    template: &str,
    reset: Reset,
    calendar: &Calendar,
    instants: &[&str],
) -> Vec<(String, u64)> {
    let t = Template::parse(template).unwrap();
    instants
        .iter()
        .map(|at| {
            let a = alloc.next(&t, reset, calendar, FIELDS, ms(at));
            (a.lot, a.seq)
        })
        .collect()
}

fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(l, s)| (l.to_string(), *s)).collect()
}

#[test]
fn resets_at_local_boundaries() {
    let berlin = cal("Europe/Berlin", ABC);
    let new_york = cal("America/New_York", ABC);
    // (template, reset, calendar, instants, expected (lot, seq))
    type Case<'a> = (
        &'a str,
        Reset,
        &'a Calendar,
        &'a [&'a str],
        &'a [(&'a str, u64)],
    );
    let cases: &[Case] = &[
        (
            "{yy}{mm}{dd}-{seq:3}",
            Reset::Daily,
            &berlin,
            &[
                "2026-11-21T22:59:59.997Z",
                "2026-11-21T22:59:59.998Z",
                "2026-11-21T22:59:59.999Z",
                "2026-11-21T23:00:00.000Z", // local midnight
                "2026-11-21T23:00:00.001Z",
            ],
            &[
                ("261121-001", 1),
                ("261121-002", 2),
                ("261121-003", 3),
                ("261122-001", 1),
                ("261122-002", 2),
            ],
        ),
        (
            "{yy}{jjj}{seq:4}",
            Reset::Daily,
            &new_york,
            &[
                "2026-11-22T04:59:59.998Z",
                "2026-11-22T04:59:59.999Z",
                "2026-11-22T05:00:00.000Z",
            ],
            &[("263250001", 1), ("263250002", 2), ("263260001", 1)],
        ),
        (
            // Per shift at 06:00 local; the night shift keeps its start date.
            "{yy}{jjj}{shift}{seq:3}",
            Reset::Shift,
            &berlin,
            &[
                "2026-11-21T22:00:00.000+01:00",
                "2026-11-21T23:59:59.999+01:00",
                "2026-11-22T00:00:00.000+01:00",
                "2026-11-22T05:59:59.999+01:00",
                "2026-11-22T06:00:00.000+01:00",
                "2026-11-22T06:00:00.001+01:00",
                "2026-11-22T22:00:00.000+01:00",
                "2026-11-23T01:00:00.000+01:00",
            ],
            &[
                ("26325C001", 1),
                ("26325C002", 2),
                ("26325C003", 3),
                ("26325C004", 4),
                ("26326A001", 1),
                ("26326A002", 2),
                ("26326C001", 1),
                ("26326C002", 2),
            ],
        ),
        (
            "{yyyy}{mm}-{seq:4}",
            Reset::Monthly,
            &new_york,
            &[
                "2026-11-01T00:00:00.000-04:00",
                "2026-11-30T23:59:59.999-05:00",
                "2026-12-01T00:00:00.000-05:00",
                "2026-12-31T23:59:59.999-05:00",
            ],
            &[
                ("202611-0001", 1),
                ("202611-0002", 2),
                ("202612-0001", 1),
                ("202612-0002", 2),
            ],
        ),
        (
            "{yy}-{seq:5}",
            Reset::Yearly,
            &berlin,
            &[
                "2026-06-01T12:00:00+02:00",
                "2026-12-31T23:59:59.999+01:00",
                "2027-01-01T00:00:00.000+01:00",
            ],
            &[("26-00001", 1), ("26-00002", 2), ("27-00001", 1)],
        ),
        (
            "L{seq:6}",
            Reset::Never,
            &berlin,
            &[
                "2026-06-01T12:00:00Z",
                "2026-12-31T23:59:59Z",
                "2027-01-01T00:00:00Z",
                "2031-05-05T00:00:00Z",
            ],
            &[
                ("L000001", 1),
                ("L000002", 2),
                ("L000003", 3),
                ("L000004", 4),
            ],
        ),
    ];
    for (template, reset, calendar, instants, expected) in cases {
        let mut alloc = Allocator::default();
        let got = lots(&mut alloc, template, *reset, calendar, instants);
        assert_eq!(got, owned(expected), "{template} {reset:?}");
    }
}

#[test]
fn clock_going_back_keeps_the_later_period() {
    let berlin = cal("Europe/Berlin", ABC);
    let t = Template::parse("{yy}{mm}{dd}-{seq:3}").unwrap();
    let mut alloc = Allocator::default();
    let mut next = |at: &str| alloc.next(&t, Reset::Daily, &berlin, FIELDS, ms(at));

    let a = next("2026-11-22T10:00:00+01:00");
    assert_eq!(
        (a.lot.as_str(), a.seq, a.clock_went_back),
        ("261122-001", 1, false)
    );
    // The clock jumps back into the previous day: still dated 22 Nov.
    let b = next("2026-11-21T23:00:00+01:00");
    assert_eq!(
        (b.lot.as_str(), b.seq, b.clock_went_back),
        ("261122-002", 2, true)
    );
    assert_eq!(b.stamp_ms, ms("2026-11-22T10:00:00+01:00"));
    let c = next("2026-11-22T09:00:00+01:00");
    assert_eq!((c.lot.as_str(), c.clock_went_back), ("261122-003", true));
    let d = next("2026-11-22T10:00:00.001+01:00");
    assert_eq!((d.lot.as_str(), d.clock_went_back), ("261122-004", false));
    let e = next("2026-11-23T00:00:00+01:00");
    assert_eq!((e.lot.as_str(), e.seq), ("261123-001", 1));

    // A wild clock (year 9999 and beyond) pins the date; never a panic.
    let f = next("2026-11-23T00:00:01+01:00");
    assert_eq!(f.seq, 2);
    let g = alloc.next(&t, Reset::Daily, &berlin, FIELDS, u64::MAX);
    assert_eq!(
        (g.lot.as_str(), g.seq, g.clock_went_back),
        ("991201-001", 1, false)
    );
    let h = alloc.next(
        &t,
        Reset::Daily,
        &berlin,
        FIELDS,
        ms("2026-11-23T00:00:02+01:00"),
    );
    assert_eq!((h.lot.as_str(), h.clock_went_back), ("991201-002", true));
}

#[test]
fn a_number_equal_to_the_last_one_is_skipped() {
    // A template without the date under a daily reset (check_unique rejects
    // it; the allocator must still not repeat the last number).
    let c = Calendar::utc();
    let mut alloc = Allocator::default();
    let got = lots(
        &mut alloc,
        "L{seq:3}",
        Reset::Daily,
        &c,
        &[
            "2026-11-21T10:00:00Z",
            "2026-11-22T10:00:00Z",
            "2026-11-22T11:00:00Z",
        ],
    );
    assert_eq!(got, owned(&[("L001", 1), ("L002", 2), ("L003", 3)]));
}

#[test]
fn changing_the_reset_policy_counts_on() {
    let c = Calendar::utc();
    let mut alloc = Allocator::default();
    let t = "{yy}{jjj}{seq:3}";
    let day = ["2026-11-22T08:00:00Z", "2026-11-22T09:00:00Z"];
    assert_eq!(
        lots(&mut alloc, t, Reset::Monthly, &c, &day),
        owned(&[("26326001", 1), ("26326002", 2)])
    );
    // Daily from now on: the first daily period continues the sequence…
    assert_eq!(
        lots(&mut alloc, t, Reset::Daily, &c, &["2026-11-22T10:00:00Z"]),
        owned(&[("26326003", 3)])
    );
    // …and the next day starts again.
    assert_eq!(
        lots(&mut alloc, t, Reset::Daily, &c, &["2026-11-23T00:00:00Z"]),
        owned(&[("26327001", 1)])
    );
    assert_eq!(
        lots(
            &mut alloc,
            t,
            Reset::Never,
            &c,
            &["2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"]
        ),
        owned(&[("26328002", 2), ("26329003", 3)])
    );
}

#[test]
fn a_zone_change_back_in_local_time_does_not_restart() {
    // Tokyo is 9 hours ahead of UTC: numbers of 22 Nov are issued while it
    // is still 21 Nov in UTC. After the switch to UTC the sequence counts
    // on through UTC's 22 Nov and restarts only on 23 Nov.
    let tokyo = cal("Asia/Tokyo", &[]);
    let utc = Calendar::utc();
    let t = "{yy}{mm}{dd}-{seq:3}";
    let mut alloc = Allocator::default();
    let mut issued = lots(
        &mut alloc,
        t,
        Reset::Daily,
        &tokyo,
        &["2026-11-21T15:00:00Z", "2026-11-21T15:30:00Z"],
    );
    issued.extend(lots(
        &mut alloc,
        t,
        Reset::Daily,
        &utc,
        &[
            "2026-11-21T16:00:00Z",
            "2026-11-22T00:00:00Z",
            "2026-11-23T00:00:00Z",
        ],
    ));
    assert_eq!(
        issued,
        owned(&[
            ("261122-001", 1),
            ("261122-002", 2),
            ("261122-003", 3),
            ("261122-004", 4),
            ("261123-001", 1),
        ])
    );
}

#[test]
fn allocator_serde_round_trip() {
    let c = cal("Europe/Berlin", ABC);
    let t = Template::parse("{yy}{jjj}{shift}{seq:3}").unwrap();
    let mut alloc = Allocator::default();
    for at in ["2026-11-21T22:00:00+01:00", "2026-11-22T01:00:00+01:00"] {
        alloc.next(&t, Reset::Shift, &c, FIELDS, ms(at));
    }
    let json = serde_json::to_string(&alloc).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"reset":"shift","period":"2026-11-21/C","seq":2,"last_stamp_ms":{},"last_lot":"26325C002","template":"{{yy}}{{jjj}}{{shift}}{{seq:3}}","dated":{{"year":2026,"month":11,"day":21,"yday":325,"shift":"C"}}}}"#,
            ms("2026-11-22T01:00:00+01:00")
        )
    );
    let mut back: Allocator = serde_json::from_str(&json).unwrap();
    assert_eq!(back, alloc);
    assert_eq!(
        (back.seq(), back.period(), back.last_lot()),
        (2, "2026-11-21/C", "26325C002")
    );
    let at = ms("2026-11-22T02:00:00+01:00");
    assert_eq!(
        back.next(&t, Reset::Shift, &c, FIELDS, at),
        alloc.next(&t, Reset::Shift, &c, FIELDS, at)
    );
    let fresh: Allocator =
        serde_json::from_str(&serde_json::to_string(&Allocator::default()).unwrap()).unwrap();
    assert_eq!(fresh, Allocator::default());
    assert_eq!(
        serde_json::to_string(&Reset::Monthly).unwrap(),
        "\"monthly\""
    );
    assert_eq!(Reset::Monthly.as_str(), "monthly");
}

/// Random walks with the clock jumping back and forth across days, shifts,
/// months and DST transitions, with restarts from persisted state: for each
/// policy and a template that passes `check_unique`, no number repeats.
#[test]
fn numbers_never_repeat_under_clock_jumps() {
    let calendars = [
        cal(
            "Europe/Berlin",
            &[
                ("A", "06:00"),
                ("B", "14:00"),
                ("C", "22:00"),
                ("E", "02:30"),
            ],
        ),
        cal("America/New_York", &[("N", "22:00"), ("D", "06:00")]),
    ];
    let table: &[(&str, Reset)] = &[
        ("L{seq:5}", Reset::Never),
        ("{yy}{jjj}-{seq:3}", Reset::Daily),
        ("{yyyy}{mm}{dd}{seq:2}{check}", Reset::Daily),
        ("{yy}{jjj}{shift}{seq:3}", Reset::Shift),
        ("{yy}{mm}{dd}{shift}{seq:2}", Reset::Shift),
        ("{yy}{mm}{seq:4}", Reset::Monthly),
        ("{yy}{jjj}{seq:4}", Reset::Monthly),
        ("{yy}{seq:5}", Reset::Yearly),
    ];
    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;
    for (seed, calendar) in calendars.iter().enumerate() {
        for (template, reset) in table {
            let t = Template::parse(template).unwrap();
            t.check_unique(*reset).unwrap();
            let mut rng = fastrand::Rng::with_seed(seed as u64 * 100 + 17);
            let mut alloc = Allocator::default();
            let mut issued = HashSet::new();
            // Real time moves on by about 75 minutes a step (from March to
            // November, across both DST transitions); the clock is real time
            // plus an error that jumps back (up to 30 days) or ahead (up to
            // 2 days) and is corrected now and then.
            let mut real = ms("2026-03-05T00:00:00Z") as i64;
            let mut error = 0;
            let mut went_back = 0;
            let mut periods = HashSet::new();
            for step in 0..5000 {
                real += if rng.u8(0..10) < 7 {
                    rng.i64(0..210 * MIN)
                } else {
                    rng.i64(0..2 * MIN)
                };
                error = match rng.u8(0..100) {
                    0..=7 => -rng.i64(0..2 * DAY),
                    8..=10 => -rng.i64(2 * DAY..30 * DAY),
                    11..=15 => rng.i64(0..2 * DAY),
                    16..=30 => 0,
                    _ => error,
                };
                let clock = (real + error).max(0);
                if step % 500 == 499 {
                    let json = serde_json::to_string(&alloc).unwrap();
                    alloc = serde_json::from_str(&json).unwrap();
                }
                let a = alloc.next(&t, *reset, calendar, FIELDS, clock as u64);
                went_back += usize::from(a.clock_went_back);
                periods.insert(calendar.at(a.stamp_ms).period(*reset));
                assert!(
                    issued.insert(a.lot.clone()),
                    "{template} {reset:?} {}: {} issued twice at step {step}",
                    calendar.zone_name(),
                    a.lot
                );
            }
            assert!(went_back > 500, "{template}: the walk should go back often");
            let expected = match reset {
                Reset::Never => 1,
                Reset::Daily => 200,
                Reset::Shift => 300,
                Reset::Monthly => 8,
                Reset::Yearly => 1,
            };
            assert!(
                periods.len() >= expected,
                "{template}: {} periods",
                periods.len()
            );
        }
    }
}

#[test]
fn going_back_to_an_earlier_template_resumes_its_own_sequence() {
    let c = Calendar::utc();
    let plain = Template::parse("L{seq:5}").unwrap();
    let dated = Template::parse("L{yy}{jjj}{seq:3}").unwrap();
    let mut alloc = Allocator::default();
    let mut issued = std::collections::BTreeSet::new();
    let mut take = |alloc: &mut Allocator, t: &Template, reset: Reset, at: &str| {
        let a = alloc.next(t, reset, &c, FIELDS, ms(at));
        assert!(issued.insert(a.lot.clone()), "{} issued twice", a.lot);
        a.lot
    };
    for _ in 0..10 {
        take(&mut alloc, &plain, Reset::Never, "2026-11-22T10:00:00Z");
    }
    take(&mut alloc, &dated, Reset::Daily, "2026-11-22T11:00:00Z");
    let next_day = take(&mut alloc, &dated, Reset::Daily, "2026-11-23T11:00:00Z");
    assert_eq!(next_day, "L26327001");
    take(&mut alloc, &dated, Reset::Daily, "2026-11-23T11:01:00Z");
    // Back to the first template: its own sequence goes on from 10.
    let back = take(&mut alloc, &plain, Reset::Never, "2026-11-23T12:00:00Z");
    assert_eq!(back, "L00011");
    // And the dated one resumes where it stood, after a restart too.
    let json = serde_json::to_string(&alloc).unwrap();
    let mut restored: Allocator = serde_json::from_str(&json).unwrap();
    let again = take(&mut restored, &dated, Reset::Daily, "2026-11-23T13:00:00Z");
    assert_eq!(again, "L26327003");
}

#[test]
fn a_zone_change_that_moves_plant_time_back_keeps_the_stored_date() {
    let berlin = cal("Europe/Berlin", &[]);
    let utc = Calendar::utc();
    let t = Template::parse("L{yy}{jjj}{seq:3}").unwrap();
    let mut alloc = Allocator::default();
    let mut issued = std::collections::BTreeSet::new();
    // 00:30 Berlin on 23 Nov is 23:30 UTC on 22 Nov.
    for at in [
        "2026-11-22T12:00:00Z",
        "2026-11-22T23:30:00Z",
        "2026-11-22T23:31:00Z",
    ] {
        let a = alloc.next(&t, Reset::Daily, &berlin, FIELDS, ms(at));
        assert!(issued.insert(a.lot.clone()), "{}", a.lot);
    }
    assert_eq!(alloc.last_lot(), "L26327002");
    // The gateway is reconfigured to UTC: the same instant is day 326 again.
    let a = alloc.next(&t, Reset::Daily, &utc, FIELDS, ms("2026-11-22T23:32:00Z"));
    assert_eq!(
        a.lot, "L26327003",
        "dated as the stored period, not day 326 again"
    );
    assert!(issued.insert(a.lot));
    let b = alloc.next(&t, Reset::Daily, &utc, FIELDS, ms("2026-11-23T00:01:00Z"));
    assert_eq!(b.lot, "L26327004", "same period in the new zone: counts on");
    let c = alloc.next(&t, Reset::Daily, &utc, FIELDS, ms("2026-11-24T00:01:00Z"));
    assert_eq!(c.lot, "L26328001");
}
