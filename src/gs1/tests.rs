//! Data-driven tests of the GS1 parser: GS1's own examples (the Syntax
//! Engine's scan-data vector, the DataMatrix example of the bracketed form,
//! published check-digit vectors), dates and the century rule, separator
//! failures, the AI table against the dictionary, and a no-panic property
//! over random input.

use super::check::century;
use super::*;

/// The "current year" injected into every decode unless a test says otherwise.
const YEAR: i32 = 2026;

fn els(pairs: &[(&str, &str)]) -> Vec<Element> {
    pairs
        .iter()
        .map(|(ai, value)| Element {
            ai: ai.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// The GS1 DataMatrix example `(01)09506000134352(17)261231(10)L24A0173(21)SN000123`.
const DM: &[(&str, &str)] = &[
    ("01", "09506000134352"),
    ("17", "261231"),
    ("10", "L24A0173"),
    ("21", "SN000123"),
];

#[test]
fn valid_scans() {
    // (what, raw, expect_gs1, aim, elements)
    type Case = (
        &'static str,
        &'static [u8],
        bool,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
    );
    let cases: &[Case] = &[
        (
            "GS1 Syntax Engine scan-data vector",
            b"]d2011231231231233310ABC123\x1d99TESTING",
            false,
            Some("]d2"),
            &[
                ("01", "12312312312333"),
                ("10", "ABC123"),
                ("99", "TESTING"),
            ],
        ),
        (
            "DataMatrix example as sent, CR LF suffix",
            b"]d2010950600013435217261231 10L24A0173\x1d21SN000123\r\n",
            false,
            Some("]d2"),
            DM,
        ),
        (
            "DataMatrix example, bracketed form",
            b"(01)09506000134352(17)261231(10)L24A0173(21)SN000123",
            false,
            None,
            DM,
        ),
        (
            "GS1-128 with trailing GS",
            b"]C1010950600013435210ABC\x1d",
            false,
            Some("]C1"),
            &[("01", "09506000134352"), ("10", "ABC")],
        ),
        (
            "trailing GS then CR LF",
            b"]C1010950600013435210ABC\x1d\r\n",
            false,
            Some("]C1"),
            &[("01", "09506000134352"), ("10", "ABC")],
        ),
        (
            "duplicated leading FNC1, empty element, GS after a predefined AI",
            b"]d2\x1d0109506000134352\x1d\x1d10ABC",
            false,
            Some("]d2"),
            &[("01", "09506000134352"), ("10", "ABC")],
        ),
        (
            "identical repeat kept once",
            b"]d201095060001343520109506000134352",
            false,
            Some("]d2"),
            &[("01", "09506000134352")],
        ),
        (
            "7003 in the middle, GS after it",
            b"]d201095060001343527003261231143 0\x1d10ABC",
            false,
            Some("]d2"),
            &[
                ("01", "09506000134352"),
                ("7003", "2612311430"),
                ("10", "ABC"),
            ],
        ),
        (
            "7003 last needs no GS",
            b"]d20109506000134352700326123114 30",
            false,
            Some("]d2"),
            &[("01", "09506000134352"), ("7003", "2612311430")],
        ),
        (
            "measures 3103 and 3302, best-before with DD=00",
            b"]C10109506000134352310300125033020007501526120 0",
            false,
            Some("]C1"),
            &[
                ("01", "09506000134352"),
                ("3103", "001250"),
                ("3302", "000750"),
                ("15", "261200"),
            ],
        ),
        (
            "8008 with minutes and seconds, then a GS",
            b"]C10109506000134352800826123114 3059\x1d10A",
            false,
            Some("]C1"),
            &[
                ("01", "09506000134352"),
                ("8008", "261231143059"),
                ("10", "A"),
            ],
        ),
        (
            "8008 with the hour only",
            b"]C1800826123114",
            false,
            Some("]C1"),
            &[("8008", "26123114")],
        ),
        (
            "SSCC",
            b"]C100106141411234567897",
            false,
            Some("]C1"),
            &[("00", "106141411234567897")],
        ),
        (
            "GLN (414) with extension (254)",
            b"]C14145901234123457254DOCK-3",
            false,
            Some("]C1"),
            &[("414", "5901234123457"), ("254", "DOCK-3")],
        ),
        (
            "GDTI (253) with and without its optional serial",
            b"]Q32539506000134352\x1d",
            false,
            Some("]Q3"),
            &[("253", "9506000134352")],
        ),
        (
            "GDTI (253) with serial",
            b"]Q32539506000134352ABC",
            false,
            Some("]Q3"),
            &[("253", "9506000134352ABC")],
        ),
        (
            "GS1 DataBar ]e0",
            b"]e00109506000134352",
            false,
            Some("]e0"),
            &[("01", "09506000134352")],
        ),
        (
            "GS1 DotCode ]J1",
            b"]J1010950600013435221X\x1d3712",
            false,
            Some("]J1"),
            &[("01", "09506000134352"), ("21", "X"), ("37", "12")],
        ),
        (
            "EAN-13 ]E0 is AI 01",
            b"]E04006381333931",
            false,
            Some("]E0"),
            &[("01", "04006381333931")],
        ),
        (
            "EAN-8 ]E4 is AI 01",
            b"]E496385074\r",
            false,
            Some("]E4"),
            &[("01", "00000096385074")],
        ),
        (
            "no AIM: a GS and a leading digit make an element string",
            b"010950600013435210ABC\x1d21X",
            false,
            None,
            &[("01", "09506000134352"), ("10", "ABC"), ("21", "X")],
        ),
        (
            "no AIM: leading FNC1 sent as GS",
            b"\x1d010950600013435210ABC",
            false,
            None,
            &[("01", "09506000134352"), ("10", "ABC")],
        ),
        (
            "no AIM, no GS: GS1 because the scanner is configured so",
            b"0109506000134352",
            true,
            None,
            &[("01", "09506000134352")],
        ),
        (
            "GMN (8013): csumalpha is not checked",
            b"]d28013ABC123",
            false,
            Some("]d2"),
            &[("8013", "ABC123")],
        ),
        (
            "CSET 39 (8010) and CSET 64 (8030) with padding",
            b"]d28010ABC#-/123\x1d8030abcd-_1==",
            false,
            Some("]d2"),
            &[("8010", "ABC#-/123"), ("8030", "abcd-_1==")],
        ),
        (
            "CSET 82 punctuation, 90 and 91",
            b"]d290!\"%&'()*+,-./:;<=>?_\x1d91station-10",
            false,
            Some("]d2"),
            &[("90", "!\"%&'()*+,-./:;<=>?_"), ("91", "station-10")],
        ),
        (
            "bracketed value with parentheses that are not an AI group",
            b"(01)09506000134352(10)A(B)1",
            false,
            None,
            &[("01", "09506000134352"), ("10", "A(B)1")],
        ),
        (
            "leap day in a leap year",
            b"]d21124022917000229",
            false,
            Some("]d2"),
            &[("11", "240229"), ("17", "000229")],
        ),
    ];
    for (what, raw, expect, aim, want) in cases {
        // The spaces in some literals only group the digits for reading.
        let raw: Vec<u8> = raw.iter().copied().filter(|&b| b != b' ').collect();
        let got = decode(&raw, YEAR, *expect);
        assert_eq!(got.aim.as_deref(), *aim, "{what}: aim");
        assert_eq!(got.gs1, Some(Ok(els(want))), "{what}");
    }
}

#[test]
fn get_finds_values_of_valid_scans_only() {
    let d = decode(b"]d2011231231231233310ABC123\x1d99TESTING", YEAR, false);
    assert_eq!(d.get("10"), Some("ABC123"));
    assert_eq!(d.get("21"), None);
    let bad = decode(b"]d201123123123123310ABC123", YEAR, false);
    assert_eq!(bad.get("01"), None);
}

#[test]
fn not_gs1() {
    // (raw, expect_gs1, aim)
    let cases: &[(&[u8], bool, Option<&str>)] = &[
        (b"]C0ABC123", false, Some("]C0")),
        (b"]C0ABC123", true, Some("]C0")),
        (b"]C00109506000134352\x1d10A", true, Some("]C0")),
        (b"]d1hello", true, Some("]d1")),
        (b"]Q1https://example.com/x", true, Some("]Q1")),
        (b"]E3400638133393112", true, Some("]E3")),
        (b"HELLO-123\r\n", false, None),
        (b"0109506000134352", false, None),
        (b"(ABC)", false, None),
        (b"LOT:(10)", false, None),
        (b"", false, None),
        (b"\r\n", false, None),
        (b"\xff\xfe\x00", false, None),
    ];
    for (raw, expect, aim) in cases {
        let got = decode(raw, YEAR, *expect);
        assert_eq!(
            got,
            Decoded {
                aim: aim.map(str::to_string),
                gs1: None
            },
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn errors() {
    use Gs1Error::*;
    // (what, raw, expect_gs1, error)
    let cases: Vec<(&str, &[u8], bool, Gs1Error)> = vec![
        (
            "unknown AI",
            b"]d2230123",
            false,
            UnknownAi {
                pos: 3,
                found: "2301".into(),
            },
        ),
        (
            "unknown AI after a valid element",
            b"]d201095060001343521",
            false,
            UnknownAi {
                pos: 19,
                found: "1".into(),
            },
        ),
        (
            "GTIN check digit",
            b"]d20109506000134353",
            false,
            BadCheckDigit {
                ai: "01",
                pos: 18,
                found: '3',
                expected: '2',
            },
        ),
        (
            "SSCC check digit",
            b"]C100106141411234567890",
            false,
            BadCheckDigit {
                ai: "00",
                pos: 22,
                found: '0',
                expected: '7',
            },
        ),
        (
            "GLN check digit",
            b"]C14145901234123458",
            false,
            BadCheckDigit {
                ai: "414",
                pos: 18,
                found: '8',
                expected: '7',
            },
        ),
        (
            "month 13",
            b"]d217261301",
            false,
            BadDate {
                ai: "17",
                pos: 5,
                value: "261301".into(),
                reason: "month must be 01 to 12",
            },
        ),
        (
            "Feb 29 in a common year (2027)",
            b"]d217270229",
            false,
            BadDate {
                ai: "17",
                pos: 5,
                value: "270229".into(),
                reason: "no such day in that month",
            },
        ),
        (
            "April 31",
            b"]d211260431",
            false,
            BadDate {
                ai: "11",
                pos: 5,
                value: "260431".into(),
                reason: "no such day in that month",
            },
        ),
        (
            "DD=00 where yymmdd (7003) does not allow it",
            b"]d270032612001430",
            false,
            BadDate {
                ai: "7003",
                pos: 7,
                value: "261200".into(),
                reason: "day 00 is not allowed here",
            },
        ),
        (
            "7003 hour 24",
            b"]d270032612312400",
            false,
            BadTime {
                ai: "7003",
                pos: 13,
                value: "2400".into(),
                reason: "hour must be 00 to 23",
            },
        ),
        (
            "8008 with a one-digit minute",
            b"]d28008261231143",
            false,
            TooShort {
                ai: "8008",
                pos: 7,
                len: 9,
                min: 10,
            },
        ),
        (
            "8008 minute 60",
            b"]d28008261231146000",
            false,
            BadTime {
                ai: "8008",
                pos: 15,
                value: "60".into(),
                reason: "minute must be 00 to 59",
            },
        ),
        (
            "7003 in the middle without its GS",
            b"]d27003261231143010ABC",
            false,
            MissingSeparator {
                ai: "7003",
                pos: 17,
                max: 10,
                next: Some("10"),
            },
        ),
        (
            "7003 with a bad date and no GS: the date is reported",
            b"]d27003261331143010ABC",
            false,
            BadDate {
                ai: "7003",
                pos: 7,
                value: "261331".into(),
                reason: "month must be 01 to 12",
            },
        ),
        (
            "wedge lost the GS after AI 10: lot and serial run over 20",
            b"]d2010950600013435210L24A017321SN0001234567",
            false,
            MissingSeparator {
                ai: "10",
                pos: 29,
                max: 20,
                next: Some("21"),
            },
        ),
        (
            "wedge lost the GS after AI 10, with (17) before it",
            b"]d201095060001343521726123110L24A017321SN000123456789",
            false,
            MissingSeparator {
                ai: "10",
                pos: 37,
                max: 20,
                next: Some("21"),
            },
        ),
        (
            "overlong AI 10 (21 characters), last",
            b"]d2010950600013435210ABCDEFGHIJKLMNOPQRSTU",
            false,
            TooLong {
                ai: "10",
                pos: 21,
                len: 21,
                max: 20,
            },
        ),
        (
            "overlong AI 10 (21 characters), GS after",
            b"]d210ABCDEFGHIJKLMNOPQRSTU\x1d21X",
            false,
            TooLong {
                ai: "10",
                pos: 5,
                len: 21,
                max: 20,
            },
        ),
        (
            "overlong AI 10, bracketed",
            b"(10)ABCDEFGHIJKLMNOPQRSTU",
            false,
            TooLong {
                ai: "10",
                pos: 4,
                len: 21,
                max: 20,
            },
        ),
        (
            "repeated AI with another value",
            b"]d201095060001343520112345678901231",
            false,
            RepeatedAi {
                ai: "01",
                first: "09506000134352".into(),
                second: "12345678901231".into(),
            },
        ),
        (
            "repeated AI with another value, bracketed",
            b"(10)A(10)B",
            false,
            RepeatedAi {
                ai: "10",
                first: "A".into(),
                second: "B".into(),
            },
        ),
        (
            "space is not CSET 82",
            b"]d210AB C",
            false,
            BadChar {
                ai: "10",
                pos: 7,
                byte: b' ',
                cset: Cset::Cset82,
            },
        ),
        (
            "non-UTF-8 byte in a value",
            b"]d210AB\xff\xfe",
            false,
            BadChar {
                ai: "10",
                pos: 7,
                byte: 0xff,
                cset: Cset::Cset82,
            },
        ),
        (
            "non-UTF-8 bytes where an AI should be",
            b"]d2\xff\xfe",
            false,
            UnknownAi {
                pos: 3,
                found: "\\xFF\\xFE".into(),
            },
        ),
        (
            "letter in a numeric AI",
            b"]d23012a",
            false,
            BadChar {
                ai: "30",
                pos: 7,
                byte: b'a',
                cset: Cset::Numeric,
            },
        ),
        (
            "lower case is not CSET 39",
            b"]d28010abc",
            false,
            BadChar {
                ai: "8010",
                pos: 7,
                byte: b'a',
                cset: Cset::Cset39,
            },
        ),
        (
            "bad CSET 64 padding",
            b"]d28030abcd=",
            false,
            BadChar {
                ai: "8030",
                pos: 11,
                byte: b'=',
                cset: Cset::Cset64,
            },
        ),
        (
            "GTIN cut short at the end",
            b"]d201095060001343",
            false,
            TooShort {
                ai: "01",
                pos: 5,
                len: 12,
                min: 14,
            },
        ),
        (
            "GTIN cut short by a GS",
            b"]d20109506\x1d10ABC",
            false,
            TooShort {
                ai: "01",
                pos: 5,
                len: 5,
                min: 14,
            },
        ),
        (
            "empty AI 10 before a GS",
            b"]d210\x1d21X",
            false,
            TooShort {
                ai: "10",
                pos: 5,
                len: 0,
                min: 1,
            },
        ),
        (
            "empty value, bracketed",
            b"(10)(21)X",
            false,
            TooShort {
                ai: "10",
                pos: 4,
                len: 0,
                min: 1,
            },
        ),
        (
            "unknown AI group, bracketed",
            b"(01)09506000134352(23)X",
            false,
            UnknownAi {
                pos: 19,
                found: "23".into(),
            },
        ),
        (
            "GS inside a bracketed value",
            b"(10)AB\x1dC",
            false,
            BadChar {
                ai: "10",
                pos: 6,
                byte: 0x1d,
                cset: Cset::Cset82,
            },
        ),
        ("AIM only", b"]d2", false, Empty),
        ("AIM, GS and CR LF only", b"]d2\x1d\r\n", false, Empty),
        ("nothing, GS1 expected", b"", true, Empty),
        ("only a GS, GS1 expected", b"\x1d", true, Empty),
        ("EAN-13 AIM without digits", b"]E0\r\n", false, Empty),
        (
            "text, GS1 expected",
            b"HELLO",
            true,
            UnknownAi {
                pos: 0,
                found: "HELL".into(),
            },
        ),
        (
            "EAN-13 check digit",
            b"]E04006381333932",
            false,
            BadCheckDigit {
                ai: "01",
                pos: 15,
                found: '2',
                expected: '1',
            },
        ),
        (
            "EAN-13 with 12 digits",
            b"]E0400638133393",
            false,
            TooShort {
                ai: "01",
                pos: 3,
                len: 12,
                min: 13,
            },
        ),
        (
            "EAN-8 with 9 digits",
            b"]E4963850741",
            false,
            TooLong {
                ai: "01",
                pos: 3,
                len: 9,
                max: 8,
            },
        ),
        (
            "EAN-13 with a letter",
            b"]E0400638133393X",
            false,
            BadChar {
                ai: "01",
                pos: 15,
                byte: b'X',
                cset: Cset::Numeric,
            },
        ),
    ];
    for (what, raw, expect, want) in cases {
        let got = decode(raw, YEAR, expect);
        assert_eq!(got.gs1, Some(Err(want)), "{what}");
    }
}

#[test]
fn a_lost_gs_that_leaves_a_valid_lot_cannot_be_detected() {
    // Without GS, "(10)L24A0173 (21)SN000123" reads as one 18-character lot,
    // which is valid GS1: nothing in the syntax says AI 10 is not last. A
    // rule that rejected it would also reject real lots such as "B21-07".
    // Detecting this needs knowledge of the item (expected lot format, a
    // serial that must be present), not of the symbol.
    let d = decode(b"]d2010950600013435210L24A017321SN000123", YEAR, false);
    assert_eq!(
        d.gs1,
        Some(Ok(els(&[
            ("01", "09506000134352"),
            ("10", "L24A017321SN000123")
        ])))
    );
}

#[test]
fn missing_separator_message_says_so() {
    let d = decode(b"]d2010950600013435210L24A017321SN0001234567", YEAR, false);
    let Some(Err(e)) = d.gs1 else {
        panic!("expected an error, got {d:?}");
    };
    assert_eq!(e.code(), "missing-separator");
    let msg = e.to_string();
    assert!(
        msg.contains("(10)") && msg.contains("byte 29") && msg.contains("(21)"),
        "{msg}"
    );
    assert!(msg.contains("GS separator is probably missing"), "{msg}");
}

#[test]
fn error_codes_and_messages() {
    use Gs1Error::*;
    let cases: Vec<(Gs1Error, &str, &str)> = vec![
        (Empty, "empty", "no GS1 data"),
        (
            InputTooLong {
                len: 5000,
                max: 4096,
            },
            "input-too-long",
            "scan of 5000 bytes is longer than the 4096 bytes decoded",
        ),
        (
            UnknownAi {
                pos: 3,
                found: "23".into(),
            },
            "unknown-ai",
            "no known Application Identifier at byte 3 (found \"23\")",
        ),
        (
            TooShort {
                ai: "01",
                pos: 5,
                len: 12,
                min: 14,
            },
            "too-short",
            "(01) at byte 5: 12 characters of data, needs 14 or more",
        ),
        (
            TooLong {
                ai: "10",
                pos: 21,
                len: 21,
                max: 20,
            },
            "too-long",
            "(10) at byte 21: 21 characters of data, at most 20 allowed",
        ),
        (
            BadChar {
                ai: "10",
                pos: 7,
                byte: 0xff,
                cset: Cset::Cset82,
            },
            "bad-char",
            "(10): \\xFF at byte 7 is not allowed (GS1 CSET 82 only)",
        ),
        (
            BadCheckDigit {
                ai: "01",
                pos: 18,
                found: '3',
                expected: '2',
            },
            "bad-check-digit",
            "(01) at byte 18: check digit is 3, should be 2",
        ),
        (
            BadDate {
                ai: "17",
                pos: 5,
                value: "261301".into(),
                reason: "month must be 01 to 12",
            },
            "bad-date",
            "(17) at byte 5: invalid date 261301: month must be 01 to 12",
        ),
        (
            BadTime {
                ai: "7003",
                pos: 13,
                value: "2400".into(),
                reason: "hour must be 00 to 23",
            },
            "bad-time",
            "(7003) at byte 13: invalid time 2400: hour must be 00 to 23",
        ),
        (
            MissingSeparator {
                ai: "7003",
                pos: 17,
                max: 10,
                next: None,
            },
            "missing-separator",
            "(7003): data goes on at byte 17 past its 10 characters with no GS separator; \
             a GS separator is probably missing (scanner or keyboard wedge not sending GS?)",
        ),
        (
            RepeatedAi {
                ai: "10",
                first: "A".into(),
                second: "B".into(),
            },
            "repeated-ai",
            "(10) occurs twice with different values: \"A\" and \"B\"",
        ),
    ];
    for (e, code, msg) in cases {
        assert_eq!(e.code(), code);
        assert_eq!(e.to_string(), msg);
    }
}

#[test]
fn check_digits() {
    let valid = [
        "12345678901231",
        "09506000134352",
        "04150000021126",
        "09521234543213",
        "12312312312333",
        "416000336108",
        "1234567890128",
        "106141411234567897",
        "5901234123457",
        "96385074",
    ];
    for v in valid {
        assert!(check_digit_valid(v), "{v}");
        assert_eq!(
            check_digit(&v[..v.len() - 1]).map(|d| char::from(b'0' + d)),
            v.chars().last(),
            "{v}"
        );
    }
    let invalid = [
        "12345678901232",
        "09506000134353",
        "04150000021125",
        "09521234543210",
        "12312312312334",
        "106141411234567890",
        "0950600013435X",
        "09506000134 352",
        "",
        "5",
        "0950600013435é",
    ];
    for v in invalid {
        assert!(!check_digit_valid(v), "{v:?}");
    }
}

#[test]
fn century_rule() {
    // (YY, current year, full year): lint_yymmd0's horizon.
    let cases = [
        (26, 2026, 2026),
        (76, 2026, 2076), // d = 50: still this century
        (77, 2026, 1977), // d = 51: previous century
        (0, 2049, 2000),  // d = -49
        (0, 2050, 2100),  // d = -50: next century
        (99, 2000, 1999),
        (0, 2100, 2100),
    ];
    for (yy, year, want) in cases {
        assert_eq!(century(yy, year), want, "{yy:02} in {year}");
    }
}

#[test]
fn dates_depend_on_the_injected_year() {
    // (raw, year, valid)
    let cases: &[(&[u8], i32, bool)] = &[
        // YY=00 is 2000 (leap) up to 2049, 2100 (not leap) from 2050.
        (b"]d211000229", 2026, true),
        (b"]d211000229", 2049, true),
        (b"]d211000229", 2050, false),
        // YY=96 is 1996 (leap) seen from 2026.
        (b"]d211960229", 2026, true),
        (b"]d211970229", 2026, false),
        (b"]d211240229", 2026, true),
        (b"]d211250229", 2026, false),
        // DD=00 for the yymmd0 AIs, any month.
        (b"]d215260200", 2026, true),
        (b"]d217261300", 2026, false),
        (b"]d211260000", 2026, false),
    ];
    for (raw, year, valid) in cases {
        let got = decode(raw, *year, false).gs1;
        match (valid, &got) {
            (true, Some(Ok(_))) => {}
            (false, Some(Err(e))) if e.code() == "bad-date" => {}
            _ => panic!("{} in {year}: {got:?}", String::from_utf8_lossy(raw)),
        }
    }
}

#[test]
fn table_matches_the_dictionary() {
    let n = |len, variable, lints: &'static [Lint]| Component {
        cset: Cset::Numeric,
        len,
        variable,
        optional: false,
        lints,
    };
    let x = |len, variable| Component {
        cset: Cset::Cset82,
        len,
        variable,
        optional: false,
        lints: &[],
    };
    // 01  *  N14,csum,keyoff1  # GTIN
    let gtin = ai_spec("01").expect("01");
    assert!(gtin.predefined);
    assert_eq!(gtin.title, "GTIN");
    assert_eq!(
        gtin.components,
        &[n(14, false, &[Lint::Csum, Lint::Unchecked("keyoff1")])]
    );
    assert_eq!(gtin.fixed_len(), Some(14));
    // 10  X..20  # BATCH/LOT
    let lot = ai_spec("10").expect("10");
    assert!(!lot.predefined);
    assert_eq!(lot.components, &[x(20, true)]);
    assert_eq!(
        (lot.min_len(), lot.max_len(), lot.fixed_len()),
        (1, 20, None)
    );
    // 7003  N6,yymmdd N4,hhmi  # EXPIRY TIME: fixed, yet not predefined
    let exp = ai_spec("7003").expect("7003");
    assert!(!exp.predefined);
    assert_eq!(exp.fixed_len(), Some(10));
    assert_eq!(
        exp.components,
        &[n(6, false, &[Lint::Yymmdd]), n(4, false, &[Lint::Hhmi])]
    );
    // 8008  N6,yymmdd N2,hh [N2],mi [N2],ss  # PROD TIME
    let prod = ai_spec("8008").expect("8008");
    assert!(!prod.predefined);
    assert_eq!((prod.min_len(), prod.max_len()), (8, 12));
    assert_eq!(prod.components.len(), 4);
    assert!(prod.components[2].optional && prod.components[3].optional);
    assert_eq!(prod.components[3].lints, &[Lint::Ss]);
    // 3100-3105  *  N6  # NET WEIGHT (kg)
    let kg = ai_spec("3103").expect("3103");
    assert!(kg.predefined);
    assert_eq!(kg.title, "NET WEIGHT (kg)");
    assert_eq!(kg.components, &[n(6, false, &[])]);
    assert!(ai_spec("3106").is_none());
    // 00  *  N18,csum  # SSCC; 414  *  N13,csum  # LOC No.
    assert_eq!(ai_spec("00").map(|s| s.fixed_len()), Some(Some(18)));
    assert!(ai_spec("414").is_some_and(|s| s.predefined && s.max_len() == 13));
    // 8013  X..25,csumalpha,key  # GMN: csumalpha noted, not checked
    assert_eq!(
        ai_spec("8013").map(|s| s.components[0].lints),
        Some(&[Lint::Unchecked("csumalpha"), Lint::Unchecked("key")][..])
    );
    // 8030  Z..90  # DIGSIG; 8010  Y..30  # CPID
    assert_eq!(
        ai_spec("8030").map(|s| s.components[0].cset),
        Some(Cset::Cset64)
    );
    assert_eq!(
        ai_spec("8010").map(|s| s.components[0].cset),
        Some(Cset::Cset39)
    );
    // 91-99  X..90  # INTERNAL
    assert!(
        ["91", "95", "99"]
            .iter()
            .all(|ai| ai_spec(ai).is_some_and(|s| s.max_len() == 90))
    );
    for missing in ["", "0", "04", "310", "23", "100", "99999"] {
        assert!(ai_spec(missing).is_none(), "{missing}");
    }
}

#[test]
fn table_is_complete_sorted_and_prefix_free() {
    let all = all_ais();
    // 219 lines in the dictionary, ranges expanded.
    assert_eq!(all.len(), 536);
    for pair in all.windows(2) {
        assert!(pair[0].ai < pair[1].ai);
        assert!(!pair[1].ai.starts_with(pair[0].ai), "{}", pair[1].ai);
    }
    for s in all {
        assert!((2..=4).contains(&s.ai.len()));
        assert!(!s.title.is_empty());
        assert!(s.min_len() >= 1 && s.max_len() <= 99);
        if s.predefined {
            assert!(s.fixed_len().is_some(), "{}", s.ai);
        }
    }
    // The predefined-length AIs are those GS1 lists: 00-03, 11-20 (no 14),
    // 31nn-36nn and 410-417.
    let predefined: Vec<&str> = all.iter().filter(|s| s.predefined).map(|s| s.ai).collect();
    assert_eq!(predefined.len(), 4 + 7 + 53 * 6 + 8);
    assert!(predefined.iter().all(|ai| {
        matches!(
            &ai[..2],
            "00" | "01" | "02" | "03" | "11" | "12" | "13" | "15" | "16" | "17" | "20"
        ) || (ai.len() == 4 && ("31".."37").contains(&&ai[..2]))
            || ai.starts_with("41")
    }));
}

#[test]
fn bracketed_rendering_round_trips() {
    let d = decode(
        b"]d2010950600013435217261231 10L24A0173\x1d21SN000123"
            .iter()
            .copied()
            .filter(|&b| b != b' ')
            .collect::<Vec<_>>()
            .as_slice(),
        YEAR,
        false,
    );
    let Some(Ok(elements)) = d.gs1 else {
        panic!("{d:?}");
    };
    let text = bracketed(&elements);
    assert_eq!(text, "(01)09506000134352(17)261231(10)L24A0173(21)SN000123");
    assert_eq!(decode(text.as_bytes(), YEAR, false).gs1, Some(Ok(elements)));
}

#[test]
fn over_long_scans_are_refused() {
    let mut raw = b"]d210".to_vec();
    raw.resize(MAX_SCAN_LEN + 1, b'A');
    assert_eq!(
        decode(&raw, YEAR, false),
        Decoded {
            aim: Some("]d2".into()),
            gs1: Some(Err(Gs1Error::InputTooLong {
                len: 4097,
                max: 4096
            })),
        }
    );
    // Not GS1 stays not GS1, whatever the length.
    assert_eq!(decode(&raw[3..], YEAR, false).gs1, None);
    // At the limit, the worst cases still finish: a long overrun whose
    // candidate cuts each parse far, and many short elements.
    let mut overrun = b"]d291".to_vec();
    overrun.extend(std::iter::repeat_n(b"20", (MAX_SCAN_LEN - 5) / 2).flatten());
    assert!(matches!(decode(&overrun, YEAR, false).gs1, Some(Err(_))));
    let mut many = b"]d2".to_vec();
    many.extend(std::iter::repeat_n(b"2012", (MAX_SCAN_LEN - 3) / 4).flatten());
    assert_eq!(
        decode(&many, YEAR, false).gs1,
        Some(Ok(els(&[("20", "12")])))
    );
}

/// Random scans built from the pieces real ones are made of, and plain
/// random bytes: `decode` never panics, and what it accepts is consistent.
#[test]
fn decode_never_panics_on_random_input() {
    let pieces: &[&[u8]] = &[
        b"]d2",
        b"]C1",
        b"]Q3",
        b"]e0",
        b"]E0",
        b"]E4",
        b"]C0",
        b"]",
        b"\x1d",
        b"\x1d",
        b"\r\n",
        b"(",
        b")",
        b"(01)",
        b"(10)",
        b"01",
        b"10",
        b"17",
        b"21",
        b"00",
        b"7003",
        b"8008",
        b"3103",
        b"414",
        b"253",
        b"8030",
        b"8010",
        b"99",
        b"09506000134352",
        b"261231",
        b"000229",
        b"L24A0173",
        b"=",
        b"0",
        b"1",
        b"9",
        b"A",
        b"\xff",
        b"\x00",
        b" ",
    ];
    let mut rng = fastrand::Rng::with_seed(0x6511);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..20_000 {
        let mut raw = Vec::new();
        if round % 4 == 0 {
            raw.extend((0..rng.usize(0..80)).map(|_| rng.u8(..)));
        } else if round % 4 == 1 {
            raw.extend_from_slice([&b"]d2"[..], b"]C1", b"]Q3", b""][rng.usize(..4)]);
            for _ in 0..rng.usize(1..5) {
                raw.extend_from_slice(&random_element(&mut rng));
            }
            // Now and then a damaged byte.
            if rng.u8(..) < 40 && !raw.is_empty() {
                let i = rng.usize(..raw.len());
                raw[i] = rng.u8(..);
            }
        } else {
            for _ in 0..rng.usize(0..12) {
                raw.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
        }
        let year = rng.i32(1900..2200);
        for expect in [false, true] {
            let d = decode(&raw, year, expect);
            let Some(Ok(elements)) = &d.gs1 else {
                refused += usize::from(d.gs1.is_some());
                continue;
            };
            accepted += 1;
            assert!(!elements.is_empty(), "{raw:?}");
            for e in elements {
                let spec = ai_spec(&e.ai).expect("elements carry table AIs");
                assert!(e.value.len() <= spec.max_len(), "{raw:?}");
            }
            // The element string rendering reads back the same.
            let mut es = b"]d2".to_vec();
            for e in elements {
                es.extend_from_slice(e.ai.as_bytes());
                es.extend_from_slice(e.value.as_bytes());
                es.push(0x1d);
            }
            let again = decode(&es, year, false);
            assert_eq!(again.gs1.as_ref(), Some(&Ok(elements.clone())), "{raw:?}");
            // So does the bracketed one, unless a value itself contains
            // something shaped like "(NN)".
            if elements.iter().all(|e| !e.value.contains('(')) {
                let again = decode(bracketed(elements).as_bytes(), year, false);
                assert_eq!(again.gs1.as_ref(), Some(&Ok(elements.clone())), "{raw:?}");
            }
        }
    }
    eprintln!("random scans: {accepted} accepted, {refused} refused as GS1");
    // The generator must reach both outcomes often enough to mean something.
    assert!(
        accepted > 5_000 && refused > 5_000,
        "{accepted} / {refused}"
    );
}

/// One element of a random table AI with data valid for it (check digits and
/// dates included), followed by a GS unless its length is predefined.
fn random_element(rng: &mut fastrand::Rng) -> Vec<u8> {
    const CSET82: &[u8] =
        b"!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    const CSET39: &[u8] = b"#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const CSET64: &[u8] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    let all = all_ais();
    let spec = &all[rng.usize(..all.len())];
    let mut out = spec.ai.as_bytes().to_vec();
    for c in spec.components {
        if c.optional && rng.bool() {
            break;
        }
        let len = if c.variable {
            rng.usize(1..=usize::from(c.len))
        } else {
            usize::from(c.len)
        };
        let set = match c.cset {
            Cset::Numeric => &b"0123456789"[..],
            Cset::Cset82 => CSET82,
            Cset::Cset39 => CSET39,
            Cset::Cset64 => CSET64,
        };
        let mut part: Vec<u8> = (0..len).map(|_| set[rng.usize(..set.len())]).collect();
        let two = |n: usize| format!("{:02}", n).into_bytes();
        for lint in c.lints {
            part = match lint {
                Lint::Csum => {
                    let body = &part[..len - 1];
                    let d = std::str::from_utf8(body).ok().and_then(check_digit);
                    [body, &[b'0' + d.unwrap_or(0)]].concat()
                }
                Lint::Yymmd0 | Lint::Yymmdd => [
                    two(rng.usize(0..100)),
                    two(rng.usize(1..13)),
                    two(rng.usize(1..29)),
                ]
                .concat(),
                Lint::Yyyymmd0 | Lint::Yyyymmdd => [
                    two(rng.usize(19..21)),
                    two(rng.usize(0..100)),
                    two(rng.usize(1..13)),
                    two(rng.usize(1..29)),
                ]
                .concat(),
                Lint::Hh => two(rng.usize(0..24)),
                Lint::Mi | Lint::Ss => two(rng.usize(0..60)),
                Lint::Hhmi => [two(rng.usize(0..24)), two(rng.usize(0..60))].concat(),
                Lint::Unchecked(_) => part,
            };
        }
        out.extend_from_slice(&part);
    }
    if !spec.predefined {
        out.push(0x1d);
    }
    out
}
