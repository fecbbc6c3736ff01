//! Tests of the whole config pipeline (text → validated `Config` or a located
//! `ConfigError`): a data-driven table of broken configs, each with the line,
//! column and key the error must name; a full round trip; the shipped examples
//! in `config/`; secrets; and the summary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A minimal valid config; the cases below edit it, so its line numbers matter.
const BASE: &str = r#"[gateway]
id = "gw1"
site = "p1"
line = "l1"
data_dir = "/tmp/lg"
[mqtt]
host = "localhost"
[[station]]
id = "st10"
[[device]]
id = "sc1"
type = "serial-scanner"
station = "st10"
path = "/dev/ttyUSB0"
"#;

struct Case {
    name: &'static str,
    /// `(from, to)` replacements applied to `BASE` (each must match).
    edits: &'static [(&'static str, &'static str)],
    /// Appended after `BASE` (so it starts at line 15).
    append: &'static str,
    line: usize,
    column: usize,
    key: &'static str,
    /// Substring of the message.
    message: &'static str,
    /// Substring of the expected form ("" = not checked).
    expected: &'static str,
}

const CASES: &[Case] = &[
    // --- unknown keys, everywhere ---
    Case {
        name: "unknown key at top level",
        edits: &[("[gateway]\n", "bogus = 1\n[gateway]\n")],
        append: "",
        line: 1,
        column: 1,
        key: "bogus",
        message: "unknown key `bogus`",
        expected: "`gateway`",
    },
    Case {
        name: "unknown key in [gateway]",
        edits: &[("line = \"l1\"\n", "line = \"l1\"\nsite_name = \"x\"\n")],
        append: "",
        line: 5,
        column: 1,
        key: "gateway.site_name",
        message: "unknown key `site_name`",
        expected: "`data_dir`",
    },
    Case {
        name: "unknown key in [mqtt]",
        edits: &[("host = \"localhost\"\n", "host = \"localhost\"\nhots = 1\n")],
        append: "",
        line: 8,
        column: 1,
        key: "mqtt.hots",
        message: "unknown key `hots`",
        expected: "`keepalive`",
    },
    Case {
        name: "inline password is refused",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\npassword = \"hunter2\"\n",
        )],
        append: "",
        line: 8,
        column: 1,
        key: "mqtt.password",
        message: "use password_file",
        expected: "",
    },
    Case {
        name: "unknown key in [[station.scan_rule]]",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\npattern = \"x\"\naction = \"set-lot\"\ncolour = \"red\"\n",
        line: 19,
        column: 1,
        key: "station[0].scan_rule[0].colour",
        message: "unknown key `colour`",
        expected: "`pattern`",
    },
    Case {
        name: "unknown key in [[device]]",
        edits: &[],
        append: "baudrate = 9600\n",
        line: 15,
        column: 1,
        key: "device[0].baudrate",
        message: "unknown key `baudrate`",
        expected: "`baud`",
    },
    Case {
        name: "unknown key in [store]",
        edits: &[],
        append: "[store]\nengin = \"sled\"\n",
        line: 16,
        column: 1,
        key: "store.engin",
        message: "unknown key `engin`",
        expected: "`engine`",
    },
    Case {
        name: "unknown key in a nested table",
        edits: &[],
        append: "[mqtt.tls]\nca = \"x\"\n",
        line: 15,
        column: 7,
        key: "mqtt.tls",
        message: "unknown key `tls`",
        expected: "",
    },
    // --- wrong types ---
    Case {
        name: "wrong type in [[device]]",
        edits: &[],
        append: "baud = \"x\"\n",
        line: 15,
        column: 8,
        key: "device[0].baud",
        message: "invalid type: string \"x\"",
        expected: "an integer baud rate such as 9600",
    },
    Case {
        name: "wrong type in the second [[device]]",
        edits: &[],
        append: "[[device]]\nid = \"sc2\"\ntype = \"serial-scanner\"\nstation = \"st10\"\npath = \"/dev/ttyUSB1\"\ndata_bits = \"8\"\n",
        line: 20,
        column: 13,
        key: "device[1].data_bits",
        message: "invalid type: string",
        expected: "7 or 8",
    },
    Case {
        name: "duration written as an integer",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nkeepalive = 15\n",
        )],
        append: "",
        line: 8,
        column: 13,
        key: "mqtt.keepalive",
        message: "invalid type: integer",
        expected: "a duration from 5s to 30s",
    },
    Case {
        name: "[[station]] written as [station]",
        edits: &[("[[station]]\nid = \"st10\"\n", "[station]\nid = \"st10\"\n")],
        append: "",
        line: 8,
        column: 1,
        key: "station",
        message: "invalid type",
        expected: "[[station]] tables",
    },
    Case {
        name: "[[device]] written as [device]",
        edits: &[("[[device]]\n", "[device]\n")],
        append: "",
        line: 10,
        column: 1,
        key: "device",
        message: "not a list of devices",
        expected: "[[device]] tables",
    },
    // --- missing keys ---
    Case {
        name: "missing required key in [mqtt]",
        edits: &[("host = \"localhost\"\n", "")],
        append: "",
        line: 6,
        column: 1,
        key: "mqtt.host",
        message: "missing required key `host`",
        expected: "host name",
    },
    Case {
        name: "missing required key in [[device]]",
        edits: &[("path = \"/dev/ttyUSB0\"\n", "")],
        append: "",
        line: 10,
        column: 1,
        key: "device[0].path",
        message: "missing required key `path`",
        expected: "/dev/serial/by-id",
    },
    Case {
        name: "missing device type",
        edits: &[("type = \"serial-scanner\"\n", "")],
        append: "",
        line: 10,
        column: 1,
        key: "device[0].type",
        message: "missing required key `type`",
        expected: "serial-scanner",
    },
    Case {
        name: "missing [mqtt] table",
        edits: &[("[mqtt]\nhost = \"localhost\"\n", "")],
        append: "",
        line: 1,
        column: 1,
        key: "mqtt",
        message: "missing required key `mqtt`",
        expected: "[mqtt] table",
    },
    // --- device type ---
    Case {
        name: "unknown device type",
        edits: &[("type = \"serial-scanner\"", "type = \"tcp-scanner\"")],
        append: "",
        line: 12,
        column: 8,
        key: "device[0].type",
        message: "unknown device type \"tcp-scanner\"",
        expected: "one of: serial-scanner",
    },
    // --- durations ---
    Case {
        name: "bad duration",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nkeepalive = \"fast\"\n",
        )],
        append: "",
        line: 8,
        column: 13,
        key: "mqtt.keepalive",
        message: "\"fast\" is not a duration",
        expected: "a duration from 5s to 30s",
    },
    Case {
        name: "duration above range",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nkeepalive = \"45s\"\n",
        )],
        append: "",
        line: 8,
        column: 13,
        key: "mqtt.keepalive",
        message: "45s is above the maximum of 30s",
        expected: "",
    },
    Case {
        name: "commit interval above range",
        edits: &[],
        append: "[store]\ncommit_interval = \"2s\"\n",
        line: 16,
        column: 19,
        key: "store.commit_interval",
        message: "above the maximum of 1s",
        expected: "",
    },
    Case {
        name: "status interval below range",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nstatus_interval = \"500ms\"\n",
        )],
        append: "",
        line: 8,
        column: 19,
        key: "mqtt.status_interval",
        message: "below the minimum of 1s",
        expected: "",
    },
    Case {
        name: "mqtt reconnect_min above reconnect_max",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nreconnect_min = \"1m\"\nreconnect_max = \"10s\"\n",
        )],
        append: "",
        line: 8,
        column: 17,
        key: "mqtt.reconnect_min",
        message: "reconnect_min (1m) is greater than reconnect_max (10s)",
        expected: "",
    },
    Case {
        name: "device reconnect_max below default reconnect_min",
        edits: &[],
        append: "reconnect_max = \"100ms\"\n",
        line: 15,
        column: 17,
        key: "device[0].reconnect_max",
        message: "reconnect_min (200ms, the default) is greater than reconnect_max (100ms)",
        expected: "",
    },
    // --- topics ---
    Case {
        name: "unknown placeholder in record_topic",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nrecord_topic = \"{root}/{stn}/{kind}\"\n",
        )],
        append: "",
        line: 8,
        column: 16,
        key: "mqtt.record_topic",
        message: "unknown placeholder {stn}",
        expected: "{station} and {kind}",
    },
    Case {
        name: "record_topic without {kind}",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nrecord_topic = \"{root}/{station}\"\n",
        )],
        append: "",
        line: 8,
        column: 16,
        key: "mqtt.record_topic",
        message: "does not contain {kind}",
        expected: "",
    },
    Case {
        name: "{station} is not a topic_root placeholder",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\ntopic_root = \"{site}/{station}\"\n",
        )],
        append: "",
        line: 8,
        column: 14,
        key: "mqtt.topic_root",
        message: "unknown placeholder {station}",
        expected: "",
    },
    Case {
        name: "topic_root with an empty level",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\ntopic_root = \"{site}//{line}\"\n",
        )],
        append: "",
        line: 8,
        column: 14,
        key: "mqtt.topic_root",
        message: "renders to \"p1//l1\", which has an empty level",
        expected: "",
    },
    Case {
        name: "wildcard in record_topic",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nrecord_topic = \"{root}/+/{station}/{kind}\"\n",
        )],
        append: "",
        line: 8,
        column: 16,
        key: "mqtt.record_topic",
        message: "wildcard `+`",
        expected: "",
    },
    Case {
        name: "leading slash in topic_root",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\ntopic_root = \"/{site}\"\n",
        )],
        append: "",
        line: 8,
        column: 14,
        key: "mqtt.topic_root",
        message: "starts with `/`",
        expected: "",
    },
    // --- ids and cross-references ---
    Case {
        name: "gateway id outside the safe charset",
        edits: &[("id = \"gw1\"", "id = \"gw 1\"")],
        append: "",
        line: 2,
        column: 6,
        key: "gateway.id",
        message: "contains the character ' '",
        expected: "A-Z a-z 0-9 _ . -",
    },
    Case {
        name: "station id with a topic wildcard",
        edits: &[("id = \"st10\"", "id = \"st#10\"")],
        append: "",
        line: 9,
        column: 6,
        key: "station[0].id",
        message: "contains the character '#'",
        expected: "",
    },
    Case {
        name: "duplicate station id",
        edits: &[],
        append: "[[station]]\nid = \"st10\"\n",
        line: 16,
        column: 6,
        key: "station[1].id",
        message: "duplicate station id \"st10\" (first defined at line 9)",
        expected: "",
    },
    Case {
        name: "duplicate device id",
        edits: &[],
        append: "[[device]]\nid = \"sc1\"\ntype = \"serial-scanner\"\nstation = \"st10\"\npath = \"/dev/ttyUSB1\"\n",
        line: 16,
        column: 6,
        key: "device[1].id",
        message: "duplicate device id \"sc1\" (first defined at line 11)",
        expected: "",
    },
    Case {
        name: "two devices on one port",
        edits: &[],
        append: "[[device]]\nid = \"sc2\"\ntype = \"serial-scanner\"\nstation = \"st10\"\npath = \"/dev/ttyUSB0\"\n",
        line: 19,
        column: 8,
        key: "device[1].path",
        message: "already used by device \"sc1\" (line 14)",
        expected: "",
    },
    Case {
        name: "device station that does not exist",
        edits: &[("station = \"st10\"", "station = \"st99\"")],
        append: "",
        line: 13,
        column: 11,
        key: "device[0].station",
        message: "station \"st99\" is not defined (defined stations: st10)",
        expected: "the id of a [[station]]",
    },
    Case {
        name: "duplicate rule name in a station",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\npattern = \"a\"\naction = \"set-lot\"\n\
                 [[station.scan_rule]]\nname = \"r\"\npattern = \"b\"\naction = \"set-order\"\n",
        line: 20,
        column: 8,
        key: "station[0].scan_rule[1].name",
        message: "duplicate rule name \"r\" (first defined at line 16)",
        expected: "",
    },
    Case {
        name: "regex that does not compile",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\npattern = '^LOT:(?P<value>[A-Z'\naction = \"set-lot\"\n",
        line: 17,
        column: 11,
        key: "station[0].scan_rule[0].pattern",
        message: "invalid regular expression: unclosed character class",
        expected: "",
    },
    Case {
        name: "unknown rule action",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\npattern = \"a\"\naction = \"set-batch\"\n",
        line: 18,
        column: 10,
        key: "station[0].scan_rule[0].action",
        message: "unknown value \"set-batch\"",
        expected: "\"set-lot\" or \"set-order\"",
    },
    // --- device values ---
    Case {
        name: "suffix none without idle_timeout",
        edits: &[],
        append: "suffix = \"none\"\n",
        line: 15,
        column: 10,
        key: "device[0].idle_timeout",
        message: "idle_timeout is required",
        expected: "",
    },
    Case {
        name: "non-standard baud rate",
        edits: &[],
        append: "baud = 9601\n",
        line: 15,
        column: 8,
        key: "device[0].baud",
        message: "9601 is not a standard baud rate",
        expected: "115200",
    },
    Case {
        name: "bad hex suffix",
        edits: &[],
        append: "suffix = \"hex:0D0\"\n",
        line: 15,
        column: 10,
        key: "device[0].suffix",
        message: "odd number of hex digits",
        expected: "hex:0D0A",
    },
    Case {
        name: "max_frame_len out of range",
        edits: &[],
        append: "max_frame_len = 8\n",
        line: 15,
        column: 17,
        key: "device[0].max_frame_len",
        message: "8 is out of range 16..=4096",
        expected: "",
    },
    Case {
        name: "frames too long for the MQTT packet size",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nmax_packet_size = \"16KiB\"\n",
        )],
        append: "max_frame_len = 4096\n",
        line: 11,
        column: 1,
        key: "device[0].max_frame_len",
        message: "larger than mqtt.max_packet_size",
        expected: "",
    },
    Case {
        name: "unknown parity",
        edits: &[],
        append: "parity = \"mark\"\n",
        line: 15,
        column: 10,
        key: "device[0].parity",
        message: "unknown value \"mark\"",
        expected: "\"none\", \"even\" or \"odd\"",
    },
    // --- store and mqtt values ---
    Case {
        name: "ambiguous size unit",
        edits: &[],
        append: "[store]\ncache_size = \"8MB\"\n",
        line: 16,
        column: 14,
        key: "store.cache_size",
        message: "write MiB",
        expected: "1MiB to 1GiB",
    },
    Case {
        name: "size out of range",
        edits: &[],
        append: "[store]\ncache_size = 1024\n",
        line: 16,
        column: 14,
        key: "store.cache_size",
        message: "1KiB is out of range 1MiB..=1GiB",
        expected: "",
    },
    Case {
        name: "unknown store engine",
        edits: &[],
        append: "[store]\nengine = \"redb\"\n",
        line: 16,
        column: 10,
        key: "store.engine",
        message: "unknown value \"redb\"",
        expected: "\"sled\"",
    },
    Case {
        name: "port out of range",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nport = 70000\n",
        )],
        append: "",
        line: 8,
        column: 8,
        key: "mqtt.port",
        message: "70000 is out of range 1..=65535",
        expected: "",
    },
    Case {
        name: "host written as a URL",
        edits: &[("host = \"localhost\"", "host = \"tcp://localhost:1883\"")],
        append: "",
        line: 7,
        column: 8,
        key: "mqtt.host",
        message: "without scheme",
        expected: "",
    },
    Case {
        name: "password_file without username",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\npassword_file = \"/nonexistent/linegate.pass\"\n",
        )],
        append: "",
        line: 8,
        column: 17,
        key: "mqtt.password_file",
        message: "needs a username",
        expected: "",
    },
    Case {
        name: "secret file missing",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nusername = \"u\"\npassword_file = \"/nonexistent/linegate.pass\"\n",
        )],
        append: "",
        line: 9,
        column: 17,
        key: "mqtt.password_file",
        message: "cannot read password file /nonexistent/linegate.pass",
        expected: "",
    },
    // --- TOML syntax ---
    Case {
        name: "duplicate key is a syntax error",
        edits: &[("line = \"l1\"\n", "line = \"l1\"\nline = \"l2\"\n")],
        append: "",
        line: 5,
        column: 1,
        key: "line",
        message: "duplicate key",
        expected: "",
    },
];

fn build(case: &Case) -> String {
    let mut text = BASE.to_owned();
    for (from, to) in case.edits {
        assert!(
            text.contains(from),
            "case {:?}: edit {from:?} does not match BASE",
            case.name
        );
        text = text.replacen(from, to, 1);
    }
    text.push_str(case.append);
    text
}

#[test]
fn base_is_valid() {
    let cfg = parse(Path::new("base.toml"), BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.devices.len(), 1);
}

#[test]
fn each_broken_config_is_reported_at_its_line_column_and_key() {
    let mut failures = Vec::new();
    for case in CASES {
        let text = build(case);
        let err = match parse(Path::new("linegate.toml"), &text) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.name));
                continue;
            }
            Err(err) => err,
        };
        let got = (err.line, err.column, err.key.as_deref());
        let want = (case.line, case.column, Some(case.key));
        let expected = err.expected.as_deref().unwrap_or("");
        if got != want
            || !err.message.contains(case.message)
            || !expected.contains(case.expected)
            || err.file != Path::new("linegate.toml")
        {
            failures.push(format!(
                "{}:\n  want {want:?} message ~ {:?} expected ~ {:?}\n  got  {got:?} {:?} / {:?}\n{err}",
                case.name, case.message, case.expected, err.message, err.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn display_is_one_headline_then_the_source_line_and_a_caret() {
    let text = format!("{BASE}baud = \"x\"\n");
    let err = parse(Path::new("linegate.toml"), &text).expect_err("bad baud");
    assert_eq!(
        err.to_string(),
        "linegate.toml:15:8: key device[0].baud: invalid type: string \"x\"; expected an integer \
         baud rate such as 9600 (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, \
         460800 or 921600)\n15 | baud = \"x\"\n   |        ^^^"
    );
    assert!(!err.headline().contains('\n'));
}

const FULL: &str = r#"
[gateway]
id = "press-01"
site = "plant1"
line = "line3"
data_dir = "data"

[store]
engine = "sled"
commit_interval = "0ms"
commit_max_records = 10000
cache_size = 16777216

[mqtt]
host = "broker.local"
port = 8883
keepalive = "30s"
username = "press-01"
password_file = "mqtt.pass"
max_inflight = 1000
max_packet_size = "16MiB"
reconnect_min = "1s"
reconnect_max = "1s"
status_interval = "1s"
topic_root = "factory/{site}/{line}/{gateway}"
record_topic = "{root}/stations/{station}/{kind}/{site}"

[[station]]
id = "st10"
  [[station.scan_rule]]
  name = "lot-label"
  pattern = '^LOT:(?P<value>[A-Z0-9-]{1,40})$'
  action = "set-lot"
  [[station.scan_rule]]
  name = "order"
  pattern = '^ORD\d+$'
  action = "set-order"

[[station]]
id = "st20"

[[device]]
id = "scanner-1"
type = "serial-scanner"
station = "st20"
path = "/dev/serial/by-id/usb-Honeywell_1900-if00"
baud = 115200
data_bits = 7
parity = "even"
stop_bits = 2
flow_control = "hardware"
suffix = "none"
prefix = "hex:02"
idle_timeout = "50ms"
max_frame_len = 16
reconnect_min = "1s"
reconnect_max = "2s"

[[device]]
id = "scanner-2"
type = "serial-scanner"
station = "st10"
path = "ttyV0"
"#;

#[test]
fn full_config_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("linegate.toml");
    std::fs::write(&file, FULL).expect("write config");
    std::fs::write(dir.path().join("mqtt.pass"), "s3cret\r\n").expect("write secret");
    let cfg = load(&file).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(cfg.source, file);
    assert_eq!(cfg.gateway.id, "press-01");
    assert_eq!(cfg.gateway.site, "plant1");
    assert_eq!(cfg.gateway.line, "line3");
    assert_eq!(cfg.gateway.data_dir, dir.path().join("data"));

    assert_eq!(cfg.store.engine, StoreEngine::Sled);
    assert_eq!(cfg.store.commit_interval, Duration::ZERO);
    assert_eq!(cfg.store.commit_max_records, 10_000);
    assert_eq!(cfg.store.cache_bytes, 16 * 1024 * 1024);

    let m = &cfg.mqtt;
    assert_eq!((m.host.as_str(), m.port), ("broker.local", 8883));
    assert_eq!(m.keepalive, Duration::from_secs(30));
    assert_eq!(m.username.as_deref(), Some("press-01"));
    assert_eq!(m.password, Some(Secret("s3cret".into())));
    assert_eq!(m.max_inflight, 1000);
    assert_eq!(m.max_packet_bytes, 16 * 1024 * 1024);
    assert_eq!(
        m.reconnect,
        BackoffConfig {
            min: Duration::from_secs(1),
            max: Duration::from_secs(1)
        }
    );
    assert_eq!(m.status_interval, Duration::from_secs(1));
    assert_eq!(m.topics.root, "factory/plant1/line3/press-01");
    assert_eq!(
        m.topics.record,
        "factory/plant1/line3/press-01/stations/{station}/{kind}/plant1"
    );
    assert_eq!(
        m.topics.gateway,
        "factory/plant1/line3/press-01/gateway/press-01"
    );
    assert_eq!(
        m.topics.record_topic(Some("st10"), "scan"),
        "factory/plant1/line3/press-01/stations/st10/scan/plant1"
    );

    assert_eq!(cfg.stations.len(), 2);
    let st = &cfg.stations[0];
    assert_eq!(st.id, "st10");
    assert_eq!(st.scan_rules.len(), 2);
    assert_eq!(st.scan_rules[0].name, "lot-label");
    assert_eq!(st.scan_rules[0].action, RuleAction::SetLot);
    assert!(st.scan_rules[0].pattern.is_match("LOT:A-1"));
    assert_eq!(st.scan_rules[1].action, RuleAction::SetOrder);
    assert!(cfg.stations[1].scan_rules.is_empty());

    assert_eq!(cfg.devices.len(), 2);
    let d = &cfg.devices[0];
    assert_eq!((d.id.as_str(), d.station.as_str()), ("scanner-1", "st20"));
    assert_eq!(d.kind.type_name(), "serial-scanner");
    let DeviceKind::SerialScanner(s) = &d.kind else {
        panic!("not a scanner")
    };
    assert_eq!(
        s.path,
        PathBuf::from("/dev/serial/by-id/usb-Honeywell_1900-if00")
    );
    assert_eq!(
        s.line,
        SerialLine {
            baud: 115_200,
            data_bits: DataBits::Seven,
            parity: Parity::Even,
            stop_bits: StopBits::Two,
            flow_control: FlowControl::Hardware,
        }
    );
    assert_eq!(
        s.framing,
        FramingConfig {
            prefix: vec![0x02],
            suffix: vec![],
            idle_timeout: Some(Duration::from_millis(50)),
            max_len: 16,
        }
    );
    assert_eq!(s.reconnect.max, Duration::from_secs(2));

    // Defaults, and a relative device path resolved next to the config file.
    let DeviceKind::SerialScanner(s) = &cfg.devices[1].kind else {
        panic!("not a scanner")
    };
    assert_eq!(s.path, dir.path().join("ttyV0"));
    assert_eq!(
        s.line,
        SerialLine {
            baud: 9600,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            flow_control: FlowControl::None,
        }
    );
    assert_eq!(
        s.framing,
        FramingConfig {
            prefix: vec![],
            suffix: b"\r".to_vec(),
            idle_timeout: None,
            max_len: 512,
        }
    );
    assert_eq!(
        s.reconnect,
        BackoffConfig {
            min: Duration::from_millis(200),
            max: Duration::from_secs(10)
        }
    );

    // The secret never shows.
    let text = summary(&cfg);
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert!(!text.contains("s3cret"), "{text}");
    for want in [
        "broker:   broker.local:8883 (keepalive 30s, user press-01, password from file",
        "records:  factory/plant1/line3/press-01/stations/st10/{kind}/plant1",
        "115200 7E2, flow control hardware, suffix none, prefix hex:02, idle timeout 50ms",
        "st20 (0 scan rules)",
    ] {
        assert!(text.contains(want), "summary lacks {want:?}:\n{text}");
    }
}

#[test]
fn defaults_when_optional_tables_are_absent() {
    let cfg =
        parse(Path::new("/etc/linegate/linegate.toml"), BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.store.engine, StoreEngine::Sled);
    assert_eq!(cfg.store.commit_interval, Duration::from_millis(10));
    assert_eq!(cfg.store.commit_max_records, 256);
    assert_eq!(cfg.store.cache_bytes, 8 * 1024 * 1024);
    let m = &cfg.mqtt;
    assert_eq!(m.port, 1883);
    assert_eq!(m.keepalive, Duration::from_secs(15));
    assert_eq!(m.username, None);
    assert_eq!(m.password, None);
    assert_eq!(m.max_inflight, 32);
    assert_eq!(m.max_packet_bytes, 64 * 1024);
    assert_eq!(
        m.reconnect,
        BackoffConfig {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30)
        }
    );
    assert_eq!(m.status_interval, Duration::from_secs(30));
    assert_eq!(m.topics.root, "p1/l1");
    assert_eq!(m.topics.record, "p1/l1/{station}/{kind}");
    assert_eq!(m.topics.gateway, "p1/l1/gateway/gw1");
    assert_eq!(m.topics.status(), "p1/l1/gateway/gw1/status");
    assert_eq!(m.topics.command_filter(), "p1/l1/gateway/gw1/cmd/+");
}

#[test]
fn relative_data_dir_is_resolved_against_the_config_directory() {
    let text = BASE.replace("data_dir = \"/tmp/lg\"", "data_dir = \"../var/lg\"");
    let cfg =
        parse(Path::new("/etc/linegate/linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.gateway.data_dir,
        PathBuf::from("/etc/linegate/../var/lg")
    );
}

#[test]
fn password_file_is_read_and_trimmed_relative_to_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pass"), "pa ss\n").expect("write secret");
    let text = BASE.replace(
        "host = \"localhost\"\n",
        "host = \"localhost\"\nusername = \"u\"\npassword_file = \"pass\"\n",
    );
    let cfg = parse(&dir.path().join("linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.mqtt.password, Some(Secret("pa ss".into())));

    std::fs::write(dir.path().join("pass"), "\n").expect("write secret");
    let err = parse(&dir.path().join("linegate.toml"), &text).expect_err("empty secret");
    assert_eq!(err.key.as_deref(), Some("mqtt.password_file"));
    assert!(err.message.contains("is empty"), "{err}");
}

#[test]
fn missing_config_file_is_an_io_error_without_position() {
    let err = load(Path::new("/nonexistent/linegate.toml")).expect_err("no file");
    assert_eq!((err.line, err.column, err.key.as_deref()), (0, 0, None));
    assert_eq!(
        err.io_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
    assert!(
        err.to_string()
            .starts_with("/nonexistent/linegate.toml: cannot read config file:"),
        "{err}"
    );
}

#[test]
fn devices_written_as_inline_tables_are_located_too() {
    let text = BASE.replace(
        "[[device]]\nid = \"sc1\"\ntype = \"serial-scanner\"\nstation = \"st10\"\npath = \"/dev/ttyUSB0\"\n",
        "",
    )
    .replace(
        "[gateway]",
        "device = [\n  { id = \"a\", type = \"serial-scanner\", station = \"st10\", path = \"/dev/a\" },\n  \
         { id = \"b\", type = \"serial-scanner\", station = \"st10\", path = \"/dev/b\", baud = true },\n]\n[gateway]",
    );
    let err = parse(Path::new("x.toml"), &text).expect_err("bad baud");
    assert_eq!(
        (err.line, err.column, err.key.as_deref()),
        (3, 82, Some("device[1].baud")),
        "{err}"
    );
}

#[test]
fn syntax_error_names_a_line() {
    let text = "[gateway]\nid = \"gw1\nsite = \"p1\"\n";
    let err = parse(Path::new("x.toml"), text).expect_err("syntax");
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.starts_with("TOML syntax error"), "{err}");
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read config dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_example_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("config/linegate.toml"))
            && files
                .iter()
                .any(|f| f.ends_with("devices/serial-scanner.toml")),
        "examples missing: {files:?}"
    );
    for file in &files {
        let cfg = load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!cfg.devices.is_empty(), "{}: no device", file.display());
    }
}

#[test]
fn every_device_type_has_an_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/devices");
    for ty in DEVICE_TYPES {
        assert!(
            root.join(format!("{ty}.toml")).is_file(),
            "no config/devices/{ty}.toml"
        );
    }
}

#[test]
fn summary_shows_what_a_technician_checks() {
    let text = BASE.replace(
        "[[device]]",
        "  [[station.scan_rule]]\n  name = \"lot-label\"\n  pattern = '^LOT:(.+)$'\n  action = \"set-lot\"\n[[device]]",
    ) + "suffix = \"CRLF\"\n";
    let cfg =
        parse(Path::new("/etc/linegate/linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let s = summary(&cfg);
    for want in [
        "gw1 (site p1, line l1)",
        "/tmp/lg",
        "localhost:1883",
        "records:  p1/l1/st10/{kind}",
        "status:   p1/l1/gateway/gw1/status",
        "commands: p1/l1/gateway/gw1/cmd/+",
        "st10 (1 scan rule)",
        "1. lot-label: set-lot when the scan matches ^LOT:(.+)$",
        "sc1 (serial-scanner) at station st10: /dev/ttyUSB0\n",
        "    9600 8N1, flow control none, suffix CRLF\n",
    ] {
        assert!(s.contains(want), "summary lacks {want:?}:\n{s}");
    }
}

#[test]
fn config_errors_never_panic_on_odd_input() {
    // A few hostile inputs: each must come back as an error, not a panic.
    for text in [
        "",
        "\u{feff}",
        "[[device]]\n",
        "device = 3\n",
        "device = [1, 2]\n",
        "[gateway]\nid = \"é\"\n",
        "[[device]]\ntype = 7\n",
        "[gateway\n",
        "a = \"\\u{0}\"\n",
        "[gateway]\nid = \"a\"\nsite = \"b\"\nline = \"c\"\ndata_dir = \"\"\n[mqtt]\nhost = \"h\"\n",
    ] {
        let err = parse(Path::new("x.toml"), text).expect_err(text);
        assert!(err.line >= 1, "{text:?}: {err}");
    }
}

/// Cheap robustness sweep (the fuzz target belongs elsewhere): every
/// truncation, every line deleted and every line doubled of a full config
/// must give a `Config` or a located error, never a panic.
#[test]
fn mangled_configs_never_panic() {
    let text = FULL.replace("password_file = \"mqtt.pass\"\n", "");
    let mut variants: Vec<String> = text
        .char_indices()
        .map(|(i, _)| text[..i].to_owned())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    for i in 0..lines.len() {
        let mut deleted = lines.clone();
        deleted.remove(i);
        variants.push(deleted.join("\n"));
        let mut doubled = lines.clone();
        doubled.insert(i, lines[i]);
        variants.push(doubled.join("\n"));
    }
    for v in &variants {
        if let Err(e) = parse(Path::new("/etc/linegate/x.toml"), v) {
            assert!(e.line >= 1 && e.column >= 1, "{v:?}: {e}");
            assert!(!e.headline().contains('\n'), "{e}");
        }
    }
}
