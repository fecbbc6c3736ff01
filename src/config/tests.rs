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
    /// `(from, to)` replacements applied to `BASE` + `append`, first match
    /// only (each must match).
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

/// A modbus-tcp device (`device[1]`) to append after `BASE`: `[[device]]` at
/// line 15, then `id`, `type`, `station`, `host` (line 19); the first part
/// (more device keys) starts at line 20, the register tables follow.
macro_rules! modbus {
    ($($part:expr),* $(,)?) => {
        concat!(
            "[[device]]\nid = \"plc\"\ntype = \"modbus-tcp\"\nstation = \"st10\"\nhost = \"10.0.0.5\"\n",
            $($part),*
        )
    };
}

/// The register most modbus cases start from, six lines: header, `name`,
/// `table`, `address`, `type`, `role` (lines 20 to 25 after `modbus!("", …)`).
macro_rules! good {
    () => {
        "[[device.register]]\nname = \"good\"\ntable = \"holding\"\naddress = 0\ntype = \"u32\"\nrole = \"counter\"\n"
    };
}

/// A modbus-rtu bus (`device[1]`) to append after `BASE`: `[[device]]` at
/// line 15, then `id`, `type`, `station`, `path` (line 19); the parts follow
/// from line 20.
macro_rules! rtu {
    ($($part:expr),* $(,)?) => {
        concat!(
            "[[device]]\nid = \"bus\"\ntype = \"modbus-rtu\"\nstation = \"st10\"\npath = \"/dev/ttyUSB1\"\n",
            $($part),*
        )
    };
}

/// A unit: header and `unit_id` (two lines).
macro_rules! unit {
    ($id:literal) => {
        concat!("[[device.unit]]\nunit_id = ", $id, "\n")
    };
}

/// A unit's register, six lines like `good!()`.
macro_rules! ureg {
    () => {
        "[[device.unit.register]]\nname = \"good\"\ntable = \"holding\"\naddress = 0\ntype = \"u32\"\nrole = \"counter\"\n"
    };
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
        line: 16,
        column: 1,
        key: "mqtt.tls.ca",
        message: "unknown key `ca`",
        expected: "`ca_file`",
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
        name: "no broker in [mqtt]",
        edits: &[("host = \"localhost\"\n", "")],
        append: "",
        line: 6,
        column: 1,
        key: "mqtt",
        message: "neither host nor brokers is set",
        expected: "host (one broker) or brokers (several)",
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
        expected: "\"set-lot\", \"set-order\", \"set-operator\", \"consume-material\", \"product\" or \"reject\"",
    },
    // --- traceability: rules, lots, operators, plant time ---
    Case {
        name: "rule that matches nothing",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\naction = \"product\"\n",
        line: 15,
        column: 1,
        key: "station[0].scan_rule[0]",
        message: "a rule needs at least one of pattern, symbology or gs1",
        expected: "",
    },
    Case {
        name: "reject rule without a reason",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\npattern = \"^T\"\naction = \"reject\"\n",
        line: 15,
        column: 1,
        key: "station[0].scan_rule[0].reason",
        message: "a \"reject\" rule needs a reason",
        expected: "",
    },
    Case {
        name: "reason on a rule that does not reject",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\npattern = \"^T\"\naction = \"product\"\nreason = \"x\"\n",
        line: 19,
        column: 10,
        key: "station[0].scan_rule[0].reason",
        message: "only a \"reject\" rule has a reason",
        expected: "",
    },
    Case {
        name: "symbology that is not an AIM identifier",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\nsymbology = [\"]d2\", \"d2\"]\naction = \"product\"\n",
        line: 17,
        column: 21,
        key: "station[0].scan_rule[0].symbology[1]",
        message: "\"d2\" is not an AIM symbology identifier",
        expected: "AIM symbology identifiers",
    },
    Case {
        name: "unknown GS1 AI in a rule",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\ngs1 = [\"01\", \"0x\"]\naction = \"product\"\n",
        line: 17,
        column: 14,
        key: "station[0].scan_rule[0].gs1[1]",
        message: "\"0x\" is not a GS1 Application Identifier",
        expected: "GS1 Application Identifiers",
    },
    Case {
        name: "value_ai on a material rule",
        edits: &[],
        append: "[[station.scan_rule]]\nname = \"r\"\ngs1 = [\"01\"]\naction = \"consume-material\"\nvalue_ai = \"10\"\n",
        line: 19,
        column: 12,
        key: "station[0].scan_rule[0].value_ai",
        message: "takes no value_ai",
        expected: "",
    },
    Case {
        name: "unknown time zone",
        edits: &[(
            "data_dir = \"/tmp/lg\"\n",
            "data_dir = \"/tmp/lg\"\ntime_zone = \"Mars/Olympus\"\n",
        )],
        append: "",
        line: 6,
        column: 13,
        key: "gateway.time_zone",
        message: "Mars/Olympus",
        expected: "IANA time zone",
    },
    Case {
        name: "shift start that is not a time",
        edits: &[],
        append: "[[shift]]\nname = \"A\"\nstart = \"25:00\"\n",
        line: 17,
        column: 9,
        key: "shift[0].start",
        message: "\"25:00\" is not a time of day",
        expected: "\"HH:MM\"",
    },
    Case {
        name: "two shifts with one name",
        edits: &[],
        append: "[[shift]]\nname = \"A\"\nstart = \"06:00\"\n[[shift]]\nname = \"A\"\nstart = \"14:00\"\n",
        line: 19,
        column: 8,
        key: "shift[1].name",
        message: "duplicate shift name \"A\" (first defined at line 16)",
        expected: "",
    },
    Case {
        name: "lot target without a good counter",
        edits: &[],
        append: "[station.lot]\ntemplate = \"{station}-{seq:4}\"\ntarget = 500\n",
        line: 17,
        column: 10,
        key: "station[0].lot.target",
        message: "a target needs `good`",
        expected: "",
    },
    Case {
        name: "lot good counter that the station does not have",
        edits: &[],
        append: "[station.lot]\ntemplate = \"{station}-{seq:4}\"\ngood = \"parts\"\n",
        line: 17,
        column: 8,
        key: "station[0].lot.good",
        message: "\"parts\" is not a counter of station \"st10\" (the station has no counter registers)",
        expected: "counter register",
    },
    Case {
        name: "rotation without a template",
        edits: &[],
        append: "[station.lot]\nrotate = \"day\"\n",
        line: 16,
        column: 10,
        key: "station[0].lot.rotate",
        message: "needs a template",
        expected: "",
    },
    Case {
        name: "per-shift reset without shifts",
        edits: &[],
        append: "[station.lot]\ntemplate = \"{yy}{jjj}{seq:3}\"\nreset = \"shift\"\n",
        line: 17,
        column: 9,
        key: "station[0].lot.reset",
        message: "a per-shift reset needs [[shift]] tables",
        expected: "",
    },
    Case {
        name: "duplicate window that is neither lot nor a duration",
        edits: &[],
        append: "[station.lot]\nduplicate_window = \"forever\"\n",
        line: 16,
        column: 20,
        key: "station[0].lot.duplicate_window",
        message: "",
        expected: "\"lot\" (a serial once per lot) or a duration",
    },
    Case {
        name: "template taking a character lot numbers must not have from an id",
        edits: &[
            ("id = \"st10\"", "id = \"st_10\""),
            ("station = \"st10\"", "station = \"st_10\""),
        ],
        append: "[station.lot]\ntemplate = \"{station}-{seq:3}\"\n",
        line: 16,
        column: 12,
        key: "station[0].lot.template",
        message: "makes lot numbers such as \"st_10-001\" with the character '_'",
        expected: "",
    },
    Case {
        name: "shift start with a sign",
        edits: &[],
        append: "[[shift]]\nname = \"A\"\nstart = \"+6:00\"\n",
        line: 17,
        column: 9,
        key: "shift[0].start",
        message: "\"+6:00\" is not a time of day",
        expected: "",
    },
    Case {
        name: "logout at shift end without shifts",
        edits: &[],
        append: "[station.operator]\nlogout_at_shift_end = true\n",
        line: 16,
        column: 23,
        key: "station[0].operator.logout_at_shift_end",
        message: "needs [[shift]] tables",
        expected: "",
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
        name: "packet size too small for an audit record",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nmax_packet_size = \"8KiB\"\n",
        )],
        append: "max_frame_len = 16\n",
        line: 8,
        column: 19,
        key: "mqtt.max_packet_size",
        message: "an audit record can be up to",
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
    // --- modbus-tcp devices ---
    Case {
        name: "modbus: unknown device key",
        edits: &[],
        append: modbus!("hots = 1\n", good!()),
        line: 20,
        column: 1,
        key: "device[1].hots",
        message: "unknown key `hots`",
        expected: "`host`",
    },
    Case {
        name: "modbus: unknown register key",
        edits: &[],
        append: modbus!("", good!(), "scalee = 2\n"),
        line: 26,
        column: 1,
        key: "device[1].register[0].scalee",
        message: "unknown key `scalee`",
        expected: "`scale`",
    },
    Case {
        name: "modbus: missing host",
        edits: &[("host = \"10.0.0.5\"\n", "")],
        append: modbus!("", good!()),
        line: 15,
        column: 1,
        key: "device[1].host",
        message: "missing required key `host`",
        expected: "no scheme, no port",
    },
    Case {
        name: "modbus: host with a port",
        edits: &[("host = \"10.0.0.5\"", "host = \"10.0.0.5:502\"")],
        append: modbus!("", good!()),
        line: 19,
        column: 8,
        key: "device[1].host",
        message: "the port goes in `port`",
        expected: "",
    },
    Case {
        name: "modbus: host with a scheme",
        edits: &[("host = \"10.0.0.5\"", "host = \"tcp://plc\"")],
        append: modbus!("", good!()),
        line: 19,
        column: 8,
        key: "device[1].host",
        message: "without scheme",
        expected: "",
    },
    Case {
        name: "modbus: device station that does not exist",
        edits: &[("station = \"st10\"\nhost", "station = \"st99\"\nhost")],
        append: modbus!("", good!()),
        line: 18,
        column: 11,
        key: "device[1].station",
        message: "station \"st99\" is not defined",
        expected: "",
    },
    Case {
        name: "modbus: port out of range",
        edits: &[],
        append: modbus!("port = 0\n", good!()),
        line: 20,
        column: 8,
        key: "device[1].port",
        message: "0 is out of range 1..=65535",
        expected: "502",
    },
    Case {
        name: "modbus: unit id out of range",
        edits: &[],
        append: modbus!("unit_id = 256\n", good!()),
        line: 20,
        column: 11,
        key: "device[1].unit_id",
        message: "256 is out of range 0..=255",
        expected: "0 to 255",
    },
    Case {
        name: "modbus: poll interval below range",
        edits: &[],
        append: modbus!("poll_interval = \"5ms\"\n", good!()),
        line: 20,
        column: 17,
        key: "device[1].poll_interval",
        message: "5ms is below the minimum of 10ms",
        expected: "10ms to 1h",
    },
    Case {
        name: "modbus: poll interval above range",
        edits: &[],
        append: modbus!("poll_interval = \"2h\"\n", good!()),
        line: 20,
        column: 17,
        key: "device[1].poll_interval",
        message: "2h is above the maximum of 1h",
        expected: "",
    },
    Case {
        name: "modbus: timeout above range",
        edits: &[],
        append: modbus!("timeout = \"2m\"\n", good!()),
        line: 20,
        column: 11,
        key: "device[1].timeout",
        message: "2m is above the maximum of 1m",
        expected: "10ms to 60s",
    },
    Case {
        name: "modbus: max_gap out of range",
        edits: &[],
        append: modbus!("max_gap = 125\n", good!()),
        line: 20,
        column: 11,
        key: "device[1].max_gap",
        message: "125 is out of range 0..=124",
        expected: "",
    },
    Case {
        name: "modbus: reconnect_min above the default reconnect_max",
        edits: &[],
        append: modbus!("reconnect_min = \"1m\"\n", good!()),
        line: 20,
        column: 17,
        key: "device[1].reconnect_min",
        message: "reconnect_min (1m) is greater than reconnect_max (30s, the default)",
        expected: "",
    },
    Case {
        name: "modbus: heartbeat shorter than the poll interval",
        edits: &[],
        append: modbus!("poll_interval = \"2s\"\nheartbeat = \"1s\"\n", good!()),
        line: 21,
        column: 13,
        key: "device[1].heartbeat",
        message: "heartbeat (1s) is shorter than poll_interval (2s)",
        expected: "",
    },
    Case {
        name: "modbus: device without registers",
        edits: &[],
        append: modbus!("port = 502\n"),
        line: 15,
        column: 1,
        key: "device[1].register",
        message: "needs at least one [[device.register]]",
        expected: "[[device.register]] tables",
    },
    Case {
        name: "modbus: register without role",
        edits: &[("role = \"counter\"\n", "")],
        append: modbus!("", good!()),
        line: 20,
        column: 1,
        key: "device[1].register[0].role",
        message: "missing required key `role`",
        expected: "\"counter\", \"state\" or \"value\"",
    },
    Case {
        name: "modbus: register without address",
        edits: &[("address = 0\n", "")],
        append: modbus!("", good!()),
        line: 20,
        column: 1,
        key: "device[1].register[0].address",
        message: "missing required key `address`",
        expected: "0-based",
    },
    Case {
        name: "modbus: register name outside the safe charset",
        edits: &[("name = \"good\"", "name = \"good count\"")],
        append: modbus!("", good!()),
        line: 21,
        column: 8,
        key: "device[1].register[0].name",
        message: "contains the character ' '",
        expected: "unique within the device",
    },
    Case {
        name: "modbus: duplicate register name",
        edits: &[],
        append: modbus!(
            "",
            good!(),
            "[[device.register]]\nname = \"good\"\ntable = \"holding\"\naddress = 10\nrole = \"state\"\n"
        ),
        line: 27,
        column: 8,
        key: "device[1].register[1].name",
        message: "duplicate register name \"good\" (first defined at line 21)",
        expected: "",
    },
    Case {
        name: "modbus: register station that does not exist",
        edits: &[],
        append: modbus!("", good!(), "station = \"st99\"\n"),
        line: 26,
        column: 11,
        key: "device[1].register[0].station",
        message: "station \"st99\" is not defined (defined stations: st10)",
        expected: "the id of a [[station]]",
    },
    Case {
        name: "modbus: unknown table",
        edits: &[("table = \"holding\"", "table = \"holdings\"")],
        append: modbus!("", good!()),
        line: 22,
        column: 9,
        key: "device[1].register[0].table",
        message: "unknown value \"holdings\"",
        expected: "\"coil\", \"discrete\", \"input\" or \"holding\"",
    },
    Case {
        name: "modbus: integer address without table",
        edits: &[("table = \"holding\"\n", "")],
        append: modbus!("", good!()),
        line: 20,
        column: 1,
        key: "device[1].register[0].table",
        message: "missing `table`: the integer address 0 is a 0-based address",
        expected: "\"holding\"",
    },
    Case {
        name: "modbus: address above 65535",
        edits: &[("address = 0\n", "address = 65536\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "65536 is out of range 0..=65535",
        expected: "0-based address from 0 to 65535",
    },
    Case {
        name: "modbus: negative address",
        edits: &[("address = 0\n", "address = -1\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "-1 is out of range 0..=65535",
        expected: "",
    },
    Case {
        name: "modbus: address written as a float",
        edits: &[("address = 0\n", "address = 1.5\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "invalid type: floating point",
        expected: "Modicon address as a string",
    },
    Case {
        name: "modbus: a u32 at the last address runs past 65535",
        edits: &[("address = 0\n", "address = 65535\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "a u32 at address 65535 takes 2 registers and would end at 65536",
        expected: "",
    },
    Case {
        name: "modbus: Modicon string with an unknown table digit",
        edits: &[("address = 0\n", "address = \"20001\"\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "the first digit 2 names no table",
        expected: "\"40001\" = holding 0",
    },
    Case {
        name: "modbus: Modicon string with 4 digits",
        edits: &[("address = 0\n", "address = \"4001\"\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "must be 5 or 6 digits",
        expected: "",
    },
    Case {
        name: "modbus: short numeric string hints at the integer form",
        edits: &[("address = 0\n", "address = \"1\"\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "write an integer without quotes (address = 1)",
        expected: "",
    },
    Case {
        name: "modbus: Modicon string with letters",
        edits: &[("address = 0\n", "address = \"4x001\"\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "\"4x001\" is not a Modicon address",
        expected: "",
    },
    Case {
        name: "modbus: Modicon register number 0",
        edits: &[("address = 0\n", "address = \"40000\"\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "register numbers start at 1 (\"40001\" is the first)",
        expected: "",
    },
    Case {
        name: "modbus: 6-digit Modicon beyond the last register",
        edits: &[("address = 0\n", "address = \"465537\"\n")],
        append: modbus!("", good!()),
        line: 23,
        column: 11,
        key: "device[1].register[0].address",
        message: "beyond the last register (\"465536\")",
        expected: "",
    },
    Case {
        name: "modbus: table disagrees with the Modicon address",
        edits: &[("address = 0\n", "address = \"30001\"\n")],
        append: modbus!("", good!()),
        line: 22,
        column: 9,
        key: "device[1].register[0].table",
        message: "table \"holding\" disagrees with address \"30001\", which is in the input table",
        expected: "",
    },
    Case {
        name: "modbus: unknown data type",
        edits: &[("type = \"u32\"", "type = \"float\"")],
        append: modbus!("", good!()),
        line: 24,
        column: 8,
        key: "device[1].register[0].type",
        message: "unknown value \"float\"",
        expected: "\"f32\"",
    },
    Case {
        name: "modbus: bool on a holding register",
        edits: &[
            ("type = \"u32\"", "type = \"bool\""),
            ("role = \"counter\"", "role = \"state\""),
        ],
        append: modbus!("", good!()),
        line: 24,
        column: 8,
        key: "device[1].register[0].type",
        message: "\"bool\" is only for the coil and discrete tables",
        expected: "",
    },
    Case {
        name: "modbus: u16 on a coil",
        edits: &[
            ("table = \"holding\"", "table = \"coil\""),
            ("type = \"u32\"", "type = \"u16\""),
        ],
        append: modbus!("", good!()),
        line: 24,
        column: 8,
        key: "device[1].register[0].type",
        message: "the coil table holds single bits: its type must be \"bool\", not \"u16\"",
        expected: "",
    },
    Case {
        name: "modbus: u16 on a discrete input written in Modicon form",
        edits: &[
            (
                "table = \"holding\"\naddress = 0\n",
                "address = \"10001\"\n",
            ),
            ("type = \"u32\"", "type = \"u16\""),
        ],
        append: modbus!("", good!()),
        line: 23,
        column: 8,
        key: "device[1].register[0].type",
        message: "the discrete table holds single bits",
        expected: "",
    },
    Case {
        name: "modbus: f32 counter",
        edits: &[("type = \"u32\"", "type = \"f32\"")],
        append: modbus!("", good!()),
        line: 24,
        column: 8,
        key: "device[1].register[0].type",
        message: "a counter must be an integer type (u16, i16, u32, i32 or u64), not \"f32\"",
        expected: "",
    },
    Case {
        name: "modbus: counter on a coil (bool by default)",
        edits: &[
            ("table = \"holding\"", "table = \"coil\""),
            ("type = \"u32\"\n", ""),
        ],
        append: modbus!("", good!()),
        line: 20,
        column: 1,
        key: "device[1].register[0].type",
        message: "a counter must be an integer type",
        expected: "",
    },
    Case {
        name: "modbus: unknown word order",
        edits: &[],
        append: modbus!("", good!(), "word_order = \"ABDC\"\n"),
        line: 26,
        column: 14,
        key: "device[1].register[0].word_order",
        message: "unknown value \"ABDC\"",
        expected: "\"CDAB\"",
    },
    Case {
        name: "modbus: unknown role",
        edits: &[("role = \"counter\"", "role = \"count\"")],
        append: modbus!("", good!()),
        line: 25,
        column: 8,
        key: "device[1].register[0].role",
        message: "unknown value \"count\"",
        expected: "\"counter\", \"state\" or \"value\"",
    },
    Case {
        name: "modbus: scale on a counter",
        edits: &[],
        append: modbus!("", good!(), "scale = 2.0\n"),
        line: 26,
        column: 9,
        key: "device[1].register[0].scale",
        message: "scale is only for role = \"value\": a counter is reported raw",
        expected: "",
    },
    Case {
        name: "modbus: offset on a state",
        edits: &[("role = \"counter\"", "role = \"state\"")],
        append: modbus!("", good!(), "offset = 1\n"),
        line: 26,
        column: 10,
        key: "device[1].register[0].offset",
        message: "offset is only for role = \"value\": a state is reported raw",
        expected: "",
    },
    Case {
        name: "modbus: scale that is not finite",
        edits: &[("role = \"counter\"", "role = \"value\"")],
        append: modbus!("", good!(), "scale = nan\n"),
        line: 26,
        column: 9,
        key: "device[1].register[0].scale",
        message: "NaN is not a finite number",
        expected: "a finite number",
    },
    Case {
        name: "modbus: scale 0",
        edits: &[("role = \"counter\"", "role = \"value\"")],
        append: modbus!("", good!(), "scale = 0\n"),
        line: 26,
        column: 9,
        key: "device[1].register[0].scale",
        message: "scale 0 would make every value equal to offset",
        expected: "",
    },
    Case {
        name: "modbus: max_rate on a state",
        edits: &[("role = \"counter\"", "role = \"state\"")],
        append: modbus!("", good!(), "max_rate = 5\n"),
        line: 26,
        column: 12,
        key: "device[1].register[0].max_rate",
        message: "max_rate is only for counters (this register's role is \"state\")",
        expected: "",
    },
    Case {
        name: "modbus: max_rate of 0",
        edits: &[],
        append: modbus!("", good!(), "max_rate = 0\n"),
        line: 26,
        column: 12,
        key: "device[1].register[0].max_rate",
        message: "0 is not a number of units per second above 0",
        expected: "above 0",
    },
    Case {
        name: "modbus: overlapping registers name both",
        edits: &[],
        append: modbus!(
            "",
            good!(),
            "[[device.register]]\nname = \"scrap\"\ntable = \"holding\"\naddress = 1\nrole = \"counter\"\n"
        ),
        line: 29,
        column: 11,
        key: "device[1].register[1].address",
        message: "\"scrap\" (holding 1) overlaps \"good\" (holding 0..=1, line 21)",
        expected: "",
    },
    Case {
        name: "modbus: overlap written in Modicon form",
        edits: &[],
        append: modbus!(
            "",
            "[[device.register]]\nname = \"temp\"\naddress = \"30011\"\ntype = \"f32\"\nrole = \"value\"\n",
            "[[device.register]]\nname = \"total\"\naddress = \"300010\"\ntype = \"u64\"\nrole = \"counter\"\n"
        ),
        line: 27,
        column: 11,
        key: "device[1].register[1].address",
        message: "\"total\" (input 9..=12) overlaps \"temp\" (input 10..=11, line 21)",
        expected: "",
    },
    // --- modbus-rtu buses ---
    Case {
        name: "rtu: unknown bus key",
        edits: &[],
        append: rtu!("bauds = 9600\n", unit!("1"), ureg!()),
        line: 20,
        column: 1,
        key: "device[1].bauds",
        message: "unknown key `bauds`",
        expected: "`silent_interval`",
    },
    Case {
        name: "rtu: unknown unit key",
        edits: &[],
        append: rtu!("", unit!("1"), "slave = 2\n", ureg!()),
        line: 22,
        column: 1,
        key: "device[1].unit[0].slave",
        message: "unknown key `slave`",
        expected: "`unit_id`",
    },
    Case {
        name: "rtu: unknown key in a unit's register",
        edits: &[],
        append: rtu!("", unit!("1"), ureg!(), "scalee = 2\n"),
        line: 28,
        column: 1,
        key: "device[1].unit[0].register[0].scalee",
        message: "unknown key `scalee`",
        expected: "`scale`",
    },
    Case {
        name: "rtu: bus without units",
        edits: &[],
        append: rtu!("baud = 9600\n"),
        line: 15,
        column: 1,
        key: "device[1].unit",
        message: "a modbus-rtu bus needs at least one [[device.unit]]",
        expected: "unit_id",
    },
    Case {
        name: "rtu: unit without registers",
        edits: &[],
        append: rtu!("", unit!("3")),
        line: 20,
        column: 1,
        key: "device[1].unit[0].register",
        message: "unit 3 needs at least one [[device.unit.register]]",
        expected: "",
    },
    Case {
        name: "rtu: missing unit_id",
        edits: &[],
        append: rtu!("", "[[device.unit]]\nname = \"x\"\n", ureg!()),
        line: 20,
        column: 1,
        key: "device[1].unit[0].unit_id",
        message: "missing required key `unit_id`",
        expected: "1 to 247",
    },
    Case {
        name: "rtu: unit_id 0 is broadcast, not a unit",
        edits: &[],
        append: rtu!("", unit!("0"), ureg!()),
        line: 21,
        column: 11,
        key: "device[1].unit[0].unit_id",
        message: "0 is out of range 1..=247",
        expected: "1 to 247",
    },
    Case {
        name: "rtu: unit_id 248 is reserved",
        edits: &[],
        append: rtu!("", unit!("248"), ureg!()),
        line: 21,
        column: 11,
        key: "device[1].unit[0].unit_id",
        message: "248 is out of range 1..=247",
        expected: "unique on the bus",
    },
    Case {
        name: "rtu: unit_id written as a string",
        edits: &[],
        append: rtu!("", unit!("\"1\""), ureg!()),
        line: 21,
        column: 11,
        key: "device[1].unit[0].unit_id",
        message: "invalid type",
        expected: "1 to 247",
    },
    Case {
        name: "rtu: duplicate unit id names the first",
        edits: &[],
        append: rtu!("", unit!("5"), ureg!(), unit!("5"), ureg!()),
        line: 29,
        column: 11,
        key: "device[1].unit[1].unit_id",
        message: "duplicate unit id 5 on this bus (first defined at line 21)",
        expected: "",
    },
    Case {
        name: "rtu: duplicate unit name",
        edits: &[],
        append: rtu!(
            "",
            unit!("1"),
            "name = \"drive\"\n",
            ureg!(),
            unit!("2"),
            "name = \"drive\"\n",
            ureg!()
        ),
        line: 31,
        column: 8,
        key: "device[1].unit[1].name",
        message: "duplicate unit name \"drive\" on this bus (first defined at line 22)",
        expected: "",
    },
    Case {
        name: "rtu: a name clashing with another unit's default name",
        edits: &[],
        append: rtu!(
            "",
            unit!("1"),
            ureg!(),
            unit!("2"),
            "name = \"unit-1\"\n",
            ureg!()
        ),
        line: 30,
        column: 8,
        key: "device[1].unit[1].name",
        message: "duplicate unit name \"unit-1\" on this bus (first defined at line 21)",
        expected: "",
    },
    Case {
        name: "rtu: unit name outside the safe charset",
        edits: &[],
        append: rtu!("", unit!("1"), "name = \"drive/1\"\n", ureg!()),
        line: 22,
        column: 8,
        key: "device[1].unit[0].name",
        message: "contains the character '/'",
        expected: "unique on the bus",
    },
    Case {
        name: "rtu: unit station that does not exist",
        edits: &[],
        append: rtu!("", unit!("1"), "station = \"st99\"\n", ureg!()),
        line: 22,
        column: 11,
        key: "device[1].unit[0].station",
        message: "station \"st99\" is not defined (defined stations: st10)",
        expected: "",
    },
    Case {
        name: "rtu: overlapping registers within a unit",
        edits: &[],
        append: rtu!(
            "",
            unit!("1"),
            ureg!(),
            "[[device.unit.register]]\nname = \"scrap\"\ntable = \"holding\"\naddress = 1\nrole = \"counter\"\n"
        ),
        line: 31,
        column: 11,
        key: "device[1].unit[0].register[1].address",
        message: "\"scrap\" (holding 1) overlaps \"good\" (holding 0..=1, line 23)",
        expected: "",
    },
    Case {
        name: "rtu: duplicate register name within a unit",
        edits: &[],
        append: rtu!(
            "",
            unit!("1"),
            ureg!(),
            "[[device.unit.register]]\nname = \"good\"\ntable = \"holding\"\naddress = 9\nrole = \"counter\"\n"
        ),
        line: 29,
        column: 8,
        key: "device[1].unit[0].register[1].name",
        message: "duplicate register name \"good\" (first defined at line 23)",
        expected: "",
    },
    Case {
        name: "rtu: a unit register's bad type names the unit's key",
        edits: &[("type = \"u32\"", "type = \"u128\"")],
        append: rtu!("", unit!("1"), ureg!()),
        line: 26,
        column: 8,
        key: "device[1].unit[0].register[0].type",
        message: "unknown value \"u128\"",
        expected: "\"u64\"",
    },
    Case {
        name: "rtu: parity",
        edits: &[],
        append: rtu!("parity = \"mark\"\n", unit!("1"), ureg!()),
        line: 20,
        column: 10,
        key: "device[1].parity",
        message: "unknown value \"mark\"",
        expected: "\"even\"",
    },
    Case {
        name: "rtu: baud",
        edits: &[],
        append: rtu!("baud = 14400\n", unit!("1"), ureg!()),
        line: 20,
        column: 8,
        key: "device[1].baud",
        message: "14400 is not a standard baud rate",
        expected: "19200",
    },
    Case {
        name: "rtu: silent_interval above range",
        edits: &[],
        append: rtu!("silent_interval = \"2s\"\n", unit!("1"), ureg!()),
        line: 20,
        column: 19,
        key: "device[1].silent_interval",
        message: "2s is above the maximum of 1s",
        expected: "1.75ms",
    },
    Case {
        name: "rtu: timeout below range",
        edits: &[],
        append: rtu!("timeout = \"1ms\"\n", unit!("1"), ureg!()),
        line: 20,
        column: 11,
        key: "device[1].timeout",
        message: "1ms is below the minimum of 10ms",
        expected: "",
    },
    Case {
        name: "rtu: bus on the scanner's port",
        edits: &[("/dev/ttyUSB1", "/dev/ttyUSB0")],
        append: rtu!("", unit!("1"), ureg!()),
        line: 19,
        column: 8,
        key: "device[1].path",
        message: "/dev/ttyUSB0 is already used by device \"sc1\" (line 14)",
        expected: "",
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
        name: "store max_bytes below range",
        edits: &[],
        append: "[store]\nmax_bytes = \"16KiB\"\n",
        line: 16,
        column: 13,
        key: "store.max_bytes",
        message: "16KiB is out of range 64KiB..=1024GiB",
        expected: "\"1GiB\"",
    },
    Case {
        name: "store max_bytes negative",
        edits: &[],
        append: "[store]\nmax_bytes = -1\n",
        line: 16,
        column: 13,
        key: "store.max_bytes",
        message: "-1 is negative",
        expected: "",
    },
    Case {
        name: "unknown when_full policy",
        edits: &[],
        append: "[store]\nwhen_full = \"drop-newest\"\n",
        line: 16,
        column: 13,
        key: "store.when_full",
        message: "unknown value \"drop-newest\"",
        expected: "\"refuse\" or \"drop-oldest\"",
    },
    Case {
        name: "min_disk_free not a size",
        edits: &[],
        append: "[store]\nmin_disk_free = \"lots\"\n",
        line: 16,
        column: 17,
        key: "store.min_disk_free",
        message: "\"lots\" is not a size",
        expected: "\"128MiB\"",
    },
    Case {
        name: "unknown store engine",
        edits: &[],
        append: "[store]\nengine = \"rocksdb\"\n",
        line: 16,
        column: 10,
        key: "store.engine",
        message: "unknown value \"rocksdb\"",
        expected: "\"sled\" or \"redb\"",
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
    // --- places: paths, hosts ---
    Case {
        name: "data_dir with a NUL",
        edits: &[("data_dir = \"/tmp/lg\"", "data_dir = \"/tmp/l\\u0000g\"")],
        append: "",
        line: 5,
        column: 12,
        key: "gateway.data_dir",
        message: "contains a NUL character",
        expected: "directory path",
    },
    Case {
        name: "data_dir too long for the control socket",
        edits: &[(
            "data_dir = \"/tmp/lg\"",
            "data_dir = \"/var/lib/linegate/plant-one/line-three/gateway-press-01/store-area/data-directory-of-press-01xx\"",
        )],
        append: "",
        line: 5,
        column: 12,
        key: "gateway.data_dir",
        message: "would be 108 bytes long; a Unix socket path holds at most 107, so the data directory may be at most 94 bytes",
        expected: "",
    },
    Case {
        name: "a device path with a NUL",
        edits: &[("path = \"/dev/ttyUSB0\"", "path = \"/dev/tty\\u0000USB0\"")],
        append: "",
        line: 14,
        column: 8,
        key: "device[0].path",
        message: "contains a NUL character",
        expected: "",
    },
    Case {
        name: "mqtt.host with a NUL",
        edits: &[("host = \"localhost\"", "host = \"local\\u0000host\"")],
        append: "",
        line: 7,
        column: 8,
        key: "mqtt.host",
        message: "\"local\\0host\" contains the control character '\\0'",
        expected: "host name or IP address",
    },
    Case {
        name: "mqtt.host with a port",
        edits: &[("host = \"localhost\"", "host = \"localhost:1883\"")],
        append: "",
        line: 7,
        column: 8,
        key: "mqtt.host",
        message: "is not a host name: write only the host or IP address, without scheme, port or spaces",
        expected: "",
    },
    Case {
        name: "mqtt.host with a character no host name has",
        edits: &[("host = \"localhost\"", "host = \"broker*1\"")],
        append: "",
        line: 7,
        column: 8,
        key: "mqtt.host",
        message: "\"broker*1\" is not a host name: the character '*'",
        expected: "",
    },
    Case {
        name: "modbus host with an empty label",
        edits: &[("host = \"10.0.0.5\"", "host = \"plc..line3\"")],
        append: modbus!(good!()),
        line: 19,
        column: 8,
        key: "device[1].host",
        message: "not a host name: an empty label",
        expected: "no scheme, no port",
    },
    Case {
        name: "modbus host with a tab",
        edits: &[("host = \"10.0.0.5\"", "host = \"plc\\t1\"")],
        append: modbus!(good!()),
        line: 19,
        column: 8,
        key: "device[1].host",
        message: "contains the control character '\\t'",
        expected: "",
    },
    // --- brokers ---
    Case {
        name: "host and brokers both",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nbrokers = [\"a\", \"b\"]\n",
        )],
        append: "",
        line: 8,
        column: 11,
        key: "mqtt.brokers",
        message: "not both",
        expected: "",
    },
    Case {
        name: "a broker with a bad port",
        edits: &[(
            "host = \"localhost\"\n",
            "brokers = [\"a:1883\", \"b:99999\"]\n",
        )],
        append: "",
        line: 7,
        column: 22,
        key: "mqtt.brokers[1]",
        message: "not one from 1 to 65535",
        expected: "host:port",
    },
    Case {
        name: "a broker listed twice",
        edits: &[(
            "host = \"localhost\"\n",
            "port = 1884\nbrokers = [\"a\", \"a:1884\"]\n",
        )],
        append: "",
        line: 8,
        column: 17,
        key: "mqtt.brokers[1]",
        message: "a:1884 is listed twice",
        expected: "",
    },
    Case {
        name: "return_to_first below 1s",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nreturn_to_first = \"500ms\"\n",
        )],
        append: "",
        line: 8,
        column: 19,
        key: "mqtt.return_to_first",
        message: "500ms is below the minimum of 1s",
        expected: "\"0s\" to stay",
    },
    Case {
        name: "an empty broker list",
        edits: &[("host = \"localhost\"\n", "brokers = []\n")],
        append: "",
        line: 7,
        column: 11,
        key: "mqtt.brokers",
        message: "0 brokers listed",
        expected: "",
    },
    Case {
        name: "a credential without CREDENTIALS_DIRECTORY",
        edits: &[(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nusername = \"u\"\npassword_file = \"cred:mqtt-pass\"\n",
        )],
        append: "",
        line: 9,
        column: 17,
        key: "mqtt.password_file",
        message: "$CREDENTIALS_DIRECTORY is not set",
        expected: "",
    },
    Case {
        name: "a key without its certificate",
        edits: &[],
        append: "[mqtt.tls]\nkey_file = \"k.pem\"\n",
        line: 16,
        column: 12,
        key: "mqtt.tls.cert_file",
        message: "key_file is set but cert_file is not",
        expected: "",
    },
];

fn build(case: &Case) -> String {
    let mut text = BASE.to_owned() + case.append;
    for (from, to) in case.edits {
        assert!(
            text.contains(from),
            "case {:?}: edit {from:?} does not match BASE + append",
            case.name
        );
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn base_is_valid() {
    let cfg = parse(Path::new("base.toml"), BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.devices.len(), 1);
}

/// A closed lot's lists are split so each lot record fits the packet: the
/// smaller the packet (or the larger the scanner's frames, which a lot
/// closed by a scan carries), the fewer entries per record.
#[test]
fn lot_records_carry_as_many_list_entries_as_the_packet_size_allows() {
    let per_part = |mqtt: &str, device: &str| {
        let text = BASE
            .replace(
                "host = \"localhost\"\n",
                &format!("host = \"localhost\"\n{mqtt}"),
            )
            .replace(
                "path = \"/dev/ttyUSB0\"\n",
                &format!("path = \"/dev/ttyUSB0\"\n{device}"),
            );
        let cfg = parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        cfg.stations[0].lot.totals_per_part
    };
    let default = per_part("", "");
    let small = per_part("max_packet_size = \"24KiB\"\n", "");
    let long_frames = per_part("", "max_frame_len = 4096\n");
    let vast = per_part("max_packet_size = \"1MiB\"\n", "");
    assert!(small >= 1 && small < default, "{small} vs {default}");
    assert!(
        long_frames >= 1 && long_frames < default,
        "{long_frames} vs {default}"
    );
    assert_eq!(vast, crate::station::MAX_TOTALS_LIST);
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
max_bytes = "64MiB"
when_full = "drop-oldest"
min_disk_free = 0

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

    assert_eq!(cfg.store.engine, Some(StoreEngine::Sled));
    assert_eq!(cfg.store.commit_interval, Duration::ZERO);
    assert_eq!(cfg.store.commit_max_records, 10_000);
    assert_eq!(cfg.store.cache_bytes, 16 * 1024 * 1024);
    assert_eq!(cfg.store.max_bytes, 64 * 1024 * 1024);
    assert_eq!(cfg.store.when_full, WhenFull::DropOldest);
    assert_eq!(cfg.store.min_disk_free, 0);

    let m = &cfg.mqtt;
    assert_eq!(m.brokers[0].to_string(), "broker.local:8883");
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
    assert!(
        st.scan_rules[0]
            .pattern
            .as_ref()
            .unwrap()
            .is_match("LOT:A-1")
    );
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
fn both_store_engines_are_accepted() {
    for (name, engine) in [("sled", StoreEngine::Sled), ("redb", StoreEngine::Redb)] {
        let text = format!("{BASE}\n[store]\nengine = \"{name}\"\n");
        let cfg = parse(Path::new("linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.store.engine, Some(engine));
        assert_eq!(engine.name(), name);
        assert!(
            summary(&cfg).contains(&format!("store:    {name} (")),
            "{}",
            summary(&cfg)
        );
    }
}

#[test]
fn defaults_when_optional_tables_are_absent() {
    let cfg =
        parse(Path::new("/etc/linegate/linegate.toml"), BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.store.engine, None,
        "absent: the existing store's engine, else redb"
    );
    assert_eq!(cfg.store.commit_interval, Duration::from_millis(10));
    assert_eq!(cfg.store.commit_max_records, 256);
    assert_eq!(cfg.store.cache_bytes, 2 * 1024 * 1024);
    assert_eq!(cfg.store.max_bytes, 1024 * 1024 * 1024);
    assert_eq!(cfg.store.when_full, WhenFull::Refuse);
    assert_eq!(cfg.store.min_disk_free, 128 * 1024 * 1024);
    let m = &cfg.mqtt;
    assert_eq!(m.brokers[0].port, 1883);
    assert_eq!(m.keepalive, Duration::from_secs(15));
    assert_eq!(m.username, None);
    assert_eq!(m.password, None);
    assert_eq!(m.max_inflight, 128);
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
                .any(|f| f.ends_with("devices/serial-scanner.toml"))
            && files.iter().any(|f| f.ends_with("devices/modbus-tcp.toml")),
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
        "packets:  up to 64KiB, which every record fits; a closed lot's lists continue past",
        "records:  p1/l1/st10/{kind}",
        "status:   p1/l1/gateway/gw1/status",
        "commands: p1/l1/gateway/gw1/cmd/+",
        "signed commands: no key, unsigned commands obeyed",
        "st10 (1 scan rule)",
        "1. lot-label: set-lot when it matches ^LOT:(.+)$",
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
    mangle(&FULL.replace("password_file = \"mqtt.pass\"\n", ""));
    mangle(MODBUS);
}

fn mangle(text: &str) {
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

// --- modbus-tcp ---

/// A modbus-tcp device with every key written, and one with the defaults.
const MODBUS: &str = r#"
[gateway]
id = "gw1"
site = "p1"
line = "l1"
data_dir = "/tmp/lg"

[mqtt]
host = "localhost"

[[station]]
id = "st10"

[[station]]
id = "st20"

[[device]]
id = "press-plc"
type = "modbus-tcp"
station = "st10"
host = "192.168.10.20"
port = 5020
unit_id = 255
poll_interval = "250ms"
timeout = "200ms"
reconnect_min = "1s"
reconnect_max = "1m"
max_gap = 0
heartbeat = "60s"

  [[device.register]]
  name = "good_count"
  table = "holding"
  address = 0
  type = "u32"
  word_order = "CDAB"
  role = "counter"
  max_rate = 20

  [[device.register]]
  name = "scrap_count"
  address = "40003"
  role = "counter"

  [[device.register]]
  name = "run"
  table = "coil"
  address = 0
  role = "state"

  [[device.register]]
  name = "door_open"
  address = "100001"
  role = "state"
  station = "st20"

  [[device.register]]
  name = "oven.temp-c"
  table = "input"
  address = "30011"
  type = "f32"
  word_order = "DCBA"
  scale = 0.1
  offset = -40
  role = "value"
  station = "st20"

  [[device.register]]
  name = "mode"
  table = "holding"
  address = 65535
  type = "i16"
  word_order = "BADC"
  role = "state"

  [[device.register]]
  name = "total"
  table = "input"
  address = 65532
  type = "u64"
  word_order = "BADC"
  role = "counter"

  [[device.register]]
  name = "speed"
  address = "465534"
  type = "i32"
  role = "value"

[[device]]
id = "small-plc"
type = "modbus-tcp"
station = "st20"
host = "plc-2.local"

  [[device.register]]
  name = "count"
  table = "input"
  address = 0
  role = "counter"
"#;

#[test]
fn modbus_config_round_trip() {
    let cfg =
        parse(Path::new("/etc/linegate/linegate.toml"), MODBUS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.devices.len(), 2);
    let d = &cfg.devices[0];
    assert_eq!((d.id.as_str(), d.station.as_str()), ("press-plc", "st10"));
    assert_eq!(d.kind.type_name(), "modbus-tcp");
    let DeviceKind::ModbusTcp(m) = &d.kind else {
        panic!("not a modbus device")
    };
    assert_eq!(
        (m.host.as_str(), m.port, m.unit_id),
        ("192.168.10.20", 5020, 255)
    );
    assert_eq!(
        m.poll,
        PollConfig {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(200),
            reconnect: BackoffConfig {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            max_gap: 0,
            heartbeat: Some(Duration::from_secs(60)),
        }
    );
    #[allow(clippy::too_many_arguments)]
    fn reg(
        name: &str,
        station: &str,
        table: Table,
        address: u16,
        data_type: DataType,
        word_order: WordOrder,
        (scale, offset): (f64, f64),
        role: Role,
        max_rate: f64,
    ) -> RegisterConfig {
        RegisterConfig {
            name: name.into(),
            station: station.into(),
            table,
            address,
            data_type,
            word_order,
            scale,
            offset,
            role,
            max_rate,
        }
    }
    use DataType::*;
    use Table::*;
    use WordOrder::*;
    let raw = (1.0, 0.0);
    let want = vec![
        reg(
            "good_count",
            "st10",
            Holding,
            0,
            U32,
            Cdab,
            raw,
            Role::Counter,
            20.0,
        ),
        reg(
            "scrap_count",
            "st10",
            Holding,
            2,
            U16,
            Abcd,
            raw,
            Role::Counter,
            1000.0,
        ),
        reg("run", "st10", Coil, 0, Bool, Abcd, raw, Role::State, 1000.0),
        reg(
            "door_open",
            "st20",
            Discrete,
            0,
            Bool,
            Abcd,
            raw,
            Role::State,
            1000.0,
        ),
        reg(
            "oven.temp-c",
            "st20",
            Input,
            10,
            F32,
            Dcba,
            (0.1, -40.0),
            Role::Value,
            1000.0,
        ),
        reg(
            "mode",
            "st10",
            Holding,
            65535,
            I16,
            Badc,
            raw,
            Role::State,
            1000.0,
        ),
        reg(
            "total",
            "st10",
            Input,
            65532,
            U64,
            Badc,
            raw,
            Role::Counter,
            1000.0,
        ),
        reg(
            "speed",
            "st10",
            Holding,
            65533,
            I32,
            Abcd,
            raw,
            Role::Value,
            1000.0,
        ),
    ];
    assert_eq!(m.registers, want);
    assert_eq!(m.registers[6].width(), 4);
    assert_eq!(m.registers[5].modicon(), "465536");

    // Defaults.
    let DeviceKind::ModbusTcp(m) = &cfg.devices[1].kind else {
        panic!("not a modbus device")
    };
    assert_eq!(
        (m.host.as_str(), m.port, m.unit_id),
        ("plc-2.local", 502, 1)
    );
    assert_eq!(
        m.poll,
        PollConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            reconnect: BackoffConfig {
                min: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            max_gap: 8,
            heartbeat: None,
        }
    );
    assert_eq!(
        m.registers,
        vec![reg(
            "count",
            "st20",
            Input,
            0,
            U16,
            Abcd,
            raw,
            Role::Counter,
            1000.0
        )]
    );
}

#[test]
fn modbus_edge_cases_that_are_valid() {
    let base = BASE.to_owned() + modbus!("");
    for (name, regs) in [
        (
            "word_order on a single-register type is accepted and ignored",
            "[[device.register]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\nword_order = \"DCBA\"\nrole = \"state\"\n",
        ),
        (
            "the same address in different tables does not overlap",
            "[[device.register]]\nname = \"a\"\naddress = \"40001\"\ntype = \"u32\"\nrole = \"counter\"\n\
             [[device.register]]\nname = \"b\"\naddress = \"30001\"\ntype = \"u32\"\nrole = \"counter\"\n\
             [[device.register]]\nname = \"c\"\naddress = \"00001\"\nrole = \"state\"\n\
             [[device.register]]\nname = \"d\"\naddress = \"10001\"\nrole = \"state\"\n",
        ),
        (
            "adjacent registers do not overlap",
            "[[device.register]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\ntype = \"u64\"\nrole = \"counter\"\n\
             [[device.register]]\nname = \"b\"\ntable = \"holding\"\naddress = 4\nrole = \"counter\"\n",
        ),
        (
            "table that agrees with a Modicon address",
            "[[device.register]]\nname = \"a\"\ntable = \"input\"\naddress = \"300010\"\nrole = \"value\"\n",
        ),
        (
            "scale and offset as integers on a value",
            "[[device.register]]\nname = \"a\"\ntable = \"input\"\naddress = 3\nscale = 2\noffset = -1\nrole = \"value\"\n",
        ),
        (
            "IPv6 host and unit id 0",
            "[[device.register]]\nname = \"a\"\ntable = \"input\"\naddress = 3\nrole = \"value\"\n",
        ),
    ] {
        let mut text = base.clone() + regs;
        if name.starts_with("IPv6") {
            text = text.replace("host = \"10.0.0.5\"", "host = \"fd00::5\"\nunit_id = 0");
        }
        if let Err(e) = parse(Path::new("linegate.toml"), &text) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn modicon_addresses_convert_to_table_and_0_based_address() {
    use super::validate::parse_modicon;
    let cases: &[(&str, Option<(Table, u16)>)] = &[
        ("40001", Some((Table::Holding, 0))),
        ("30010", Some((Table::Input, 9))),
        ("10001", Some((Table::Discrete, 0))),
        ("00001", Some((Table::Coil, 0))),
        ("49999", Some((Table::Holding, 9998))),
        ("400001", Some((Table::Holding, 0))),
        ("410000", Some((Table::Holding, 9999))),
        ("465536", Some((Table::Holding, 65535))),
        ("065536", Some((Table::Coil, 65535))),
        ("300010", Some((Table::Input, 9))),
        // A string is always Modicon: 5 or 6 digits, table digit 0/1/3/4,
        // register numbers from 1.
        ("1", None),
        ("0", None),
        ("4001", None),
        ("4000001", None),
        ("40000", None),
        ("400000", None),
        ("465537", None),
        ("20001", None),
        ("50001", None),
        ("4000a", None),
        ("+4001", None),
        (" 40001", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_modicon(text).ok(), *want, "{text:?}");
    }
    // And back: the summary's Modicon form parses to the same address.
    for (table, address, text) in [
        (Table::Holding, 0, "40001"),
        (Table::Input, 9, "30010"),
        (Table::Discrete, 0, "10001"),
        (Table::Coil, 0, "00001"),
        (Table::Holding, 9998, "49999"),
        (Table::Holding, 9999, "410000"),
        (Table::Input, 65535, "365536"),
    ] {
        assert_eq!(table.modicon(address), text);
        assert_eq!(parse_modicon(text).ok(), Some((table, address)), "{text}");
    }
}

#[test]
fn summary_lists_the_register_map_with_both_address_forms() {
    let cfg =
        parse(Path::new("/etc/linegate/linegate.toml"), MODBUS).unwrap_or_else(|e| panic!("{e}"));
    let s = summary(&cfg);
    for want in [
        "press-plc (modbus-tcp) at station st10: 192.168.10.20:5020 unit 255\n",
        "    poll every 250ms, timeout 200ms, max gap 0, heartbeat 1m\n",
        "    good_count: holding 0 (40001) u32 CDAB counter (max 20/s) → st10\n",
        "    scrap_count: holding 2 (40003) u16 counter → st10\n",
        "    run: coil 0 (00001) bool state → st10\n",
        "    door_open: discrete 0 (10001) bool state → st20\n",
        "    oven.temp-c: input 10 (30011) f32 DCBA value scale 0.1 offset -40 → st20\n",
        "    mode: holding 65535 (465536) i16 state → st10\n",
        "    total: input 65532 (365533) u64 BADC counter → st10\n",
        "small-plc (modbus-tcp) at station st20: plc-2.local:502 unit 1\n",
        "    poll every 1s, timeout 1s, max gap 8\n",
        "    count: input 0 (30001) u16 counter → st20\n",
    ] {
        assert!(s.contains(want), "summary lacks {want:?}:\n{s}");
    }
}

#[test]
fn modbus_example_has_the_press_map() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/devices/modbus-tcp.toml");
    let cfg = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let DeviceKind::ModbusTcp(m) = &cfg.devices[0].kind else {
        panic!("not a modbus device")
    };
    let map: Vec<String> = m
        .registers
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r.name,
                r.table.as_str(),
                r.address,
                r.data_type.as_str(),
                r.role.as_str()
            )
        })
        .collect();
    assert_eq!(
        map,
        [
            "good_count holding 0 u32 counter",
            "scrap_count holding 2 u16 counter",
            "run coil 0 bool state",
            "oven_temp_c input 10 f32 value",
        ]
    );
    assert_eq!(m.registers[0].word_order, WordOrder::Cdab);
    assert_eq!(m.registers[3].scale, 0.1);
}

// --- modbus-rtu ---

#[test]
fn modbus_rtu_example_has_two_units_with_defaults_and_ids() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/devices/modbus-rtu.toml");
    let cfg = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let d = &cfg.devices[0];
    assert_eq!(d.kind.type_name(), "modbus-rtu");
    let DeviceKind::ModbusRtu(bus) = &d.kind else {
        panic!("not an rtu bus")
    };
    assert_eq!(
        bus.line,
        SerialLine {
            baud: 19200,
            data_bits: DataBits::Eight,
            parity: Parity::Even,
            stop_bits: StopBits::One,
            flow_control: FlowControl::None,
        }
    );
    assert_eq!(bus.silent_interval, Duration::from_micros(2005));
    assert_eq!(bus.poll.timeout, Duration::from_millis(300));
    let ids: Vec<(u8, &str, &str, String)> = bus
        .units
        .iter()
        .map(|u| {
            (
                u.unit_id,
                u.name.as_str(),
                u.station.as_str(),
                u.device_id(&d.id),
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            (1, "winder", "st30", "rs485-1/winder".to_owned()),
            (7, "scale", "st40", "rs485-1/scale".to_owned()),
        ]
    );
    // A unit's station is its registers' default.
    assert!(bus.units[1].registers.iter().all(|r| r.station == "st40"));
    assert_eq!(bus.units[1].registers[0].table, Table::Input);
    let text = summary(&cfg);
    assert!(
        text.contains("19200 8E1, flow control none, silent interval 2.005ms"),
        "{text}"
    );
    assert!(text.contains("    unit 7 as device rs485-1/scale at station st40\n      weight_kg: input 0 (30001) i32 ABCD value scale 0.001 → st40\n"), "{text}");
}

#[test]
fn modbus_rtu_defaults_and_names_shared_across_units() {
    let text = BASE.to_owned() + rtu!("", unit!("1"), ureg!(), unit!("2"), ureg!());
    let cfg = parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let DeviceKind::ModbusRtu(bus) = &cfg.devices[1].kind else {
        panic!("not an rtu bus")
    };
    // Modbus serial-line defaults: 19200 8E1.
    assert_eq!((bus.line.baud, bus.line.parity), (19200, Parity::Even));
    assert_eq!(bus.poll.interval, Duration::from_secs(1));
    let names: Vec<&str> = bus.units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["unit-1", "unit-2"]);
    // Same register name on two units is fine: they are different devices.
    assert_eq!(
        bus.units[0].registers[0].name,
        bus.units[1].registers[0].name
    );
}

#[test]
fn default_silent_interval_is_three_and_a_half_characters_at_least_1750us() {
    let line = |baud, parity| SerialLine {
        baud,
        parity,
        ..SerialLine::default()
    };
    let cases = [
        (line(9600, Parity::Even), 4010),
        (line(19200, Parity::Even), 2005),
        (line(19200, Parity::None), 1822),
        (line(38400, Parity::Even), 1750),
        (line(115_200, Parity::Even), 1750),
        (line(1200, Parity::Even), 32_083),
    ];
    for (l, micros) in cases {
        assert_eq!(
            default_silent_interval(&l),
            Duration::from_micros(micros),
            "{l:?}"
        );
    }
}

#[test]
fn a_host_of_5000_characters_is_refused_and_quoted_short() {
    let long = "a".repeat(5000);
    for (from, key) in [
        ("host = \"localhost\"", "mqtt.host"),
        ("host = \"10.0.0.5\"", "device[1].host"),
    ] {
        let text =
            (BASE.to_owned() + modbus!(good!())).replacen(from, &format!("host = \"{long}\""), 1);
        let err = parse(Path::new("linegate.toml"), &text).expect_err("too long");
        assert_eq!(err.key.as_deref(), Some(key), "{err}");
        assert!(
            err.message
                .contains("… (5000 characters) is 5000 bytes long; a host name has at most 253"),
            "{err}"
        );
        assert!(err.to_string().len() < 600, "{err}");
    }
    // 253 characters in labels of 63 at most: a host name.
    let ok = [&"a".repeat(63)[..]; 4].join(".")[..253].to_owned();
    let text = BASE.replacen("host = \"localhost\"", &format!("host = \"{ok}\""), 1);
    parse(Path::new("linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_huge_value_prints_an_excerpt_around_the_column_not_the_whole_line() {
    // `baud` wants an integer: the message would quote the whole string.
    let value = "x".repeat(1 << 20);
    let text = format!("{BASE}baud = \"{value}\" # the end\n");
    let err = parse(Path::new("linegate.toml"), &text).expect_err("bad baud");
    let shown = err.to_string();
    assert!(shown.len() < 1000, "{} bytes: {shown:.2000}", shown.len());
    assert_eq!((err.line, err.column), (15, 8), "{shown:.2000}");
    assert!(err.message.contains("(cut; "), "{shown:.2000}");
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    // The excerpt starts at the line's start (the column is near it), is
    // cut after 100 characters, and the caret stays under the value.
    assert_eq!(lines[1], format!("15 | baud = \"{}…", "x".repeat(100 - 8)));
    assert_eq!(lines[2], format!("   |        {}", "^".repeat(93)));

    // Far along a long line, the excerpt starts 40 characters before the
    // column, marked with `…`, and the caret lines up under it.
    let text = BASE.replace(
        "path = \"/dev/ttyUSB0\"",
        &format!(
            "path = \"/dev/{}\" ; \"{}\"",
            "p".repeat(300),
            "q".repeat(300)
        ),
    );
    let err = parse(Path::new("linegate.toml"), &text).expect_err("syntax");
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    let excerpt = lines[1].split_once(" | ").map(|x| x.1).unwrap_or_default();
    let caret = lines[2].split_once(" | ").map(|x| x.1).unwrap_or_default();
    assert!(
        excerpt.starts_with('…') && excerpt.ends_with('…'),
        "{shown}"
    );
    assert_eq!(excerpt.chars().count(), 102, "{shown}");
    let at = caret.chars().position(|c| c == '^').unwrap_or_default();
    assert_eq!(
        at, 41,
        "40 characters (and the `…`) before the column: {shown}"
    );
    assert_eq!(excerpt.chars().nth(at), Some(';'), "{shown}");
}

#[test]
fn a_file_that_is_not_utf8_is_reported_at_its_first_invalid_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("linegate.toml");
    // Latin-1 "é" (0xE9) in `site` on line 3, after `site = "Usin`.
    let mut bytes = BASE
        .replace("site = \"p1\"", "site = \"UsinX\"")
        .into_bytes();
    let at = bytes.iter().position(|&b| b == b'X').expect("marker");
    bytes[at] = 0xE9;
    std::fs::write(&file, &bytes).expect("write");
    let err = load(&file).expect_err("not UTF-8");
    assert_eq!(
        (err.line, err.column, err.key.as_deref()),
        (3, 13, None),
        "{err}"
    );
    assert!(err.message.contains("not UTF-8 text: byte 0xE9"), "{err}");
    assert_eq!(
        err.snippet(),
        Some("3 | site = \"Usin\n  |             ^"),
        "{err}"
    );
}

#[test]
fn a_password_file_that_is_a_device_or_a_fifo_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pass.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let big = dir.path().join("pass.big");
    std::fs::write(&big, vec![b'p'; (MAX_SECRET_BYTES + 1) as usize]).expect("write");
    for (file, what) in [
        ("/dev/zero", "it is a character device, not a regular file"),
        ("pass.fifo", "it is a FIFO (named pipe), not a regular file"),
        ("pass.big", "it is larger than 64KiB"),
    ] {
        let text = BASE.replace(
            "host = \"localhost\"\n",
            &format!("host = \"localhost\"\nusername = \"u\"\npassword_file = \"{file}\"\n"),
        );
        let err = parse(&dir.path().join("linegate.toml"), &text).expect_err(file);
        assert_eq!(err.key.as_deref(), Some("mqtt.password_file"), "{err}");
        assert!(err.message.contains(what), "{file}: {err}");
    }
}

#[test]
fn a_config_that_is_a_device_a_fifo_or_too_large_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("linegate.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let big = dir.path().join("big.toml");
    let mut text = BASE.to_owned();
    text.push_str(&"#".repeat(MAX_CONFIG_BYTES as usize));
    std::fs::write(&big, text).expect("write");
    for (file, what) in [
        (
            Path::new("/dev/zero"),
            "it is a character device, not a regular file",
        ),
        (
            fifo.as_path(),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (big.as_path(), "it is larger than 4MiB"),
        (dir.path(), "it is a directory, not a regular file"),
    ] {
        let err = load(file).expect_err("refused");
        assert_eq!((err.line, err.column), (0, 0), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("cannot read config file: {what}")),
            "{err}"
        );
    }
}

#[test]
fn commands_public_key_and_required_signatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("linegate.toml");
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
    std::fs::write(
        dir.path().join("mes.pub"),
        crate::uplink::signed::public_key_pem(&key),
    )
    .expect("write key");
    std::fs::write(dir.path().join("rsa.pub"), "not a key\n").expect("write");

    let cfg = parse(&config, BASE).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.commands.key.is_none() && !cfg.commands.required);
    assert_eq!(cfg.commands.window_ms, 300_000);

    let text = format!(
        "{BASE}\n[commands]\npublic_key_file = \"mes.pub\"\nrequire_signature = true\nreplay_window = \"2m\"\n"
    );
    let cfg = parse(&config, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.commands.key, Some(key));
    assert!(cfg.commands.required);
    assert_eq!(cfg.commands.window_ms, 120_000);
    assert!(
        summary(&cfg).contains("signed commands: required; replay window 2m"),
        "{}",
        summary(&cfg)
    );

    for (table, key, fragment) in [
        (
            "require_signature = true\n",
            "commands.require_signature",
            "add public_key_file",
        ),
        (
            "public_key_file = \"rsa.pub\"\n",
            "commands.public_key_file",
            "PEM",
        ),
        (
            "public_key_file = \"missing.pub\"\n",
            "commands.public_key_file",
            "cannot read public key file",
        ),
        (
            "public_key_file = \"mes.pub\"\nreplay_window = \"2d\"\n",
            "commands.replay_window",
            "above the maximum",
        ),
    ] {
        let text = format!("{BASE}\n[commands]\n{table}");
        let err = parse(&config, &text).expect_err(table);
        assert_eq!(err.key.as_deref(), Some(key), "{err}");
        assert!(err.to_string().contains(fragment), "{table}: {err}");
        assert!(err.line > 0, "{err}");
    }
}

#[test]
fn metrics_listen_is_an_ip_address_and_port() {
    let path = Path::new("/etc/linegate/linegate.toml");
    assert_eq!(
        parse(path, BASE).unwrap_or_else(|e| panic!("{e}")).metrics,
        None
    );
    let text = format!("{BASE}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n");
    let cfg = parse(path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(summary(&cfg).contains("metrics:  http://127.0.0.1:9464/metrics"));
    for bad in ["localhost:9464", "127.0.0.1", ":9464"] {
        let text = format!("{BASE}\n[metrics]\nlisten = \"{bad}\"\n");
        let err = parse(path, &text).expect_err(bad);
        assert_eq!(err.key.as_deref(), Some("metrics.listen"), "{err}");
        assert!(err.to_string().contains("127.0.0.1:9464"), "{err}");
    }
    let err = parse(path, &format!("{BASE}\n[metrics]\n")).expect_err("no listen");
    assert!(err.to_string().contains("listen"), "{err}");
}

/// A self-signed certificate and its key, PEM, written to `dir`.
fn cert_and_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["broker.local".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (c, k)
}

fn with_tls(tls: &str) -> String {
    format!("{BASE}[mqtt.tls]\n{tls}")
}

#[test]
fn brokers_are_listed_in_order_with_the_default_port() {
    let text = BASE.replace(
        "host = \"localhost\"\n",
        "port = 1884\nbrokers = [\"a.local\", \"10.0.0.6:8883\", \"[fd00::1]:1885\", \"::1\"]\n",
    );
    let cfg = parse(Path::new("b.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let shown: Vec<String> = cfg.mqtt.brokers.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "a.local:1884",
            "10.0.0.6:8883",
            "[fd00::1]:1885",
            "[::1]:1884"
        ]
    );
    assert_eq!(cfg.mqtt.return_to_first, Duration::from_secs(300));
    assert!(summary(&cfg).contains("a.local:1884, then 10.0.0.6:8883"));
    assert!(
        summary(&cfg).contains("(back to the first once up for 5m)"),
        "{}",
        summary(&cfg)
    );
}

#[test]
fn tls_is_built_at_load_and_its_port_defaults_to_8883() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _) = cert_and_key(dir.path(), "ca");
    let (cert, key) = cert_and_key(dir.path(), "client");
    let text = with_tls(&format!(
        "ca_file = \"ca.pem\"\ncert_file = \"{}\"\nkey_file = \"client.key\"\nserver_name = \"broker.local\"\n",
        cert.display()
    ));
    let cfg = parse(&dir.path().join("linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.mqtt.brokers[0].port, 8883);
    let tls = cfg.mqtt.tls.as_ref().expect("tls on");
    assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(tls.cert_file.as_deref(), Some(cert.as_path()));
    assert!(cfg.mqtt.warnings.is_empty(), "{:?}", cfg.mqtt.warnings);
    let shown = summary(&cfg);
    assert!(shown.contains("tls:      on, trusting"), "{shown}");
    assert!(!shown.contains("BEGIN"), "{shown}");
    drop(key);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _) = cert_and_key(dir.path(), "ca");
    let (cert, _) = cert_and_key(dir.path(), "client");
    let (_, other_key) = cert_and_key(dir.path(), "other");
    let text = with_tls(&format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.display(),
        cert.display(),
        other_key.display()
    ));
    let err = parse(&dir.path().join("linegate.toml"), &text).expect_err("mismatch");
    assert_eq!(err.key.as_deref(), Some("mqtt.tls.key_file"), "{err}");
    assert_eq!(err.line, 18, "{err}");
    assert!(err.message.contains("does not belong"), "{err}");
    assert!(err.message.contains("other.key"), "{err}");
    assert!(err.message.contains("client.pem"), "{err}");
}

#[test]
fn tls_files_that_hold_no_pem_are_refused_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("junk"), "not pem\n").expect("write");
    let (cert, _) = cert_and_key(dir.path(), "client");
    for (tls, key, what) in [
        (
            "ca_file = \"junk\"\n".to_owned(),
            "mqtt.tls.ca_file",
            "no PEM certificate",
        ),
        (
            "ca_file = \"missing.pem\"\n".to_owned(),
            "mqtt.tls.ca_file",
            "cannot read CA file",
        ),
        (
            format!(
                "ca_file = \"{}\"\ncert_file = \"junk\"\nkey_file = \"client.key\"\n",
                cert.display()
            ),
            "mqtt.tls.cert_file",
            "no PEM certificate",
        ),
        (
            format!(
                "ca_file = \"{}\"\ncert_file = \"client.pem\"\nkey_file = \"junk\"\n",
                cert.display()
            ),
            "mqtt.tls.key_file",
            "no PEM private key",
        ),
        (
            "cert_file = \"client.pem\"\n".to_owned(),
            "mqtt.tls.key_file",
            "key_file is not",
        ),
    ] {
        let err = parse(&dir.path().join("linegate.toml"), &with_tls(&tls)).expect_err(&tls);
        assert_eq!(err.key.as_deref(), Some(key), "{tls}: {err}");
        assert!(err.message.contains(what), "{tls}: {err}");
    }
}

#[test]
fn a_key_or_password_file_others_can_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_and_key(dir.path(), "client");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "pw\n").expect("write");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    let text = format!(
        "{}[mqtt.tls]\nca_file = \"client.pem\"\ncert_file = \"{}\"\nkey_file = \"client.key\"\n",
        BASE.replace(
            "host = \"localhost\"\n",
            "host = \"localhost\"\nusername = \"u\"\npassword_file = \"pass\"\n"
        ),
        cert.display()
    );
    let cfg = parse(&dir.path().join("linegate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let w = &cfg.mqtt.warnings;
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.starts_with("mqtt.tls.key_file:") && w.contains("0644")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("mqtt.password_file:") && w.contains("every user")),
        "{w:?}"
    );
    // The certificate is public: no warning for it.
    assert!(!w.iter().any(|w| w.contains("cert_file")), "{w:?}");
}
