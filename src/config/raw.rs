//! The raw layer: TOML text → raw structs exactly as written (serde, unknown
//! keys rejected), with spans kept on every value a later cross-check points at.
//!
//! `[[device]]` entries are split off the spanned document and deserialized
//! one by one into the struct of their `type` (a serde internally-tagged enum
//! would lose the spans). Serde errors are turned into [`ConfigError`]s with
//! line, column and dotted key path; [`expected_for`] is the one table of
//! "expected forms" used by both this layer and `validate`.

use std::ops::Range;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Source};

/// `type` values of `[[device]]` this build knows.
pub const DEVICE_TYPES: &[&str] = &["serial-scanner", "modbus-tcp", "modbus-rtu"];

/// The whole file, raw.
#[derive(Debug)]
pub struct RawConfig {
    pub root: RootRaw,
    pub devices: Vec<DeviceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootRaw {
    pub gateway: Spanned<GatewayRaw>,
    #[serde(default)]
    pub store: Option<Spanned<StoreRaw>>,
    pub mqtt: Spanned<MqttRaw>,
    #[serde(default)]
    pub shift: Vec<Spanned<ShiftRaw>>,
    #[serde(default)]
    pub station: Vec<Spanned<StationRaw>>,
    #[serde(default)]
    pub commands: Option<Spanned<CommandsRaw>>,
    #[serde(default)]
    pub metrics: Option<Spanned<MetricsRaw>>,
    /// Never present here (split off before deserializing); listed so that
    /// "unknown key" messages name it among the accepted keys.
    #[serde(default, rename = "device")]
    pub _device: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRaw {
    pub id: Spanned<String>,
    pub site: Spanned<String>,
    pub line: Spanned<String>,
    pub data_dir: Spanned<String>,
    pub time_zone: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftRaw {
    pub name: Spanned<String>,
    pub start: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRaw {
    pub engine: Option<Spanned<String>>,
    pub commit_interval: Option<Spanned<String>>,
    pub commit_max_records: Option<Spanned<i64>>,
    pub cache_size: Option<Spanned<SizeRaw>>,
    pub max_bytes: Option<Spanned<SizeRaw>>,
    pub when_full: Option<Spanned<String>>,
    pub min_disk_free: Option<Spanned<SizeRaw>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRaw {
    pub host: Option<Spanned<String>>,
    pub brokers: Option<Spanned<Vec<Spanned<String>>>>,
    pub return_to_first: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub keepalive: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub max_inflight: Option<Spanned<i64>>,
    pub max_packet_size: Option<Spanned<SizeRaw>>,
    pub reconnect_min: Option<Spanned<String>>,
    pub reconnect_max: Option<Spanned<String>>,
    pub status_interval: Option<Spanned<String>>,
    pub topic_root: Option<Spanned<String>>,
    pub record_topic: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsRaw>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRaw {
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsRaw {
    pub listen: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsRaw {
    pub public_key_file: Option<Spanned<String>>,
    pub require_signature: Option<Spanned<bool>>,
    pub replay_window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationRaw {
    pub id: Spanned<String>,
    #[serde(default)]
    pub lot: Option<Spanned<LotRaw>>,
    #[serde(default)]
    pub operator: Option<Spanned<OperatorRaw>>,
    #[serde(default)]
    pub scan_rule: Vec<Spanned<ScanRuleRaw>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotRaw {
    pub template: Option<Spanned<String>>,
    pub reset: Option<Spanned<String>>,
    pub rotate: Option<Spanned<String>>,
    pub target: Option<Spanned<i64>>,
    pub good: Option<Spanned<String>>,
    pub scrap: Option<Spanned<String>>,
    pub duplicate_window: Option<Spanned<String>>,
    pub auto_open: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorRaw {
    pub logout_at_shift_end: Option<Spanned<bool>>,
    pub idle_logout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRuleRaw {
    pub name: Spanned<String>,
    pub pattern: Option<Spanned<String>>,
    pub symbology: Option<Spanned<Vec<Spanned<String>>>>,
    pub gs1: Option<Spanned<Vec<Spanned<String>>>>,
    pub action: Spanned<String>,
    pub value_ai: Option<Spanned<String>>,
    pub reason: Option<Spanned<String>>,
}

/// One `[[device]]` entry, deserialized according to its `type`.
#[derive(Debug)]
pub struct DeviceEntry {
    /// Position in the `device` array (0-based).
    pub index: usize,
    /// Span of the entry (its `[[device]]` header).
    pub span: Range<usize>,
    pub kind: DeviceRaw,
}

#[derive(Debug)]
pub enum DeviceRaw {
    SerialScanner(SerialScannerRaw),
    ModbusTcp(ModbusTcpRaw),
    ModbusRtu(ModbusRtuRaw),
}

impl DeviceRaw {
    pub fn id(&self) -> &Spanned<String> {
        match self {
            DeviceRaw::SerialScanner(d) => &d.id,
            DeviceRaw::ModbusTcp(d) => &d.id,
            DeviceRaw::ModbusRtu(d) => &d.id,
        }
    }

    pub fn station(&self) -> &Spanned<String> {
        match self {
            DeviceRaw::SerialScanner(d) => &d.station,
            DeviceRaw::ModbusTcp(d) => &d.station,
            DeviceRaw::ModbusRtu(d) => &d.station,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialScannerRaw {
    pub id: Spanned<String>,
    /// Already read to pick this struct; accepted here so it is not "unknown".
    #[serde(rename = "type")]
    pub _type: IgnoredAny,
    pub station: Spanned<String>,
    pub path: Spanned<String>,
    pub baud: Option<Spanned<i64>>,
    pub data_bits: Option<Spanned<i64>>,
    pub parity: Option<Spanned<String>>,
    pub stop_bits: Option<Spanned<i64>>,
    pub flow_control: Option<Spanned<String>>,
    pub suffix: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_frame_len: Option<Spanned<i64>>,
    pub reconnect_min: Option<Spanned<String>>,
    pub reconnect_max: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpRaw {
    pub id: Spanned<String>,
    /// Already read to pick this struct; accepted here so it is not "unknown".
    #[serde(rename = "type")]
    pub _type: IgnoredAny,
    pub station: Spanned<String>,
    pub host: Spanned<String>,
    pub port: Option<Spanned<i64>>,
    pub unit_id: Option<Spanned<i64>>,
    pub poll_interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub reconnect_min: Option<Spanned<String>>,
    pub reconnect_max: Option<Spanned<String>>,
    pub max_gap: Option<Spanned<i64>>,
    pub heartbeat: Option<Spanned<String>>,
    #[serde(default)]
    pub register: Vec<Spanned<RegisterRaw>>,
}

/// One RS-485 bus (`type = "modbus-rtu"`): serial line keys as the scanner,
/// poll keys as modbus-tcp, and its `[[device.unit]]` slaves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuRaw {
    pub id: Spanned<String>,
    /// Already read to pick this struct; accepted here so it is not "unknown".
    #[serde(rename = "type")]
    pub _type: IgnoredAny,
    pub station: Spanned<String>,
    pub path: Spanned<String>,
    pub baud: Option<Spanned<i64>>,
    pub data_bits: Option<Spanned<i64>>,
    pub parity: Option<Spanned<String>>,
    pub stop_bits: Option<Spanned<i64>>,
    pub flow_control: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub reconnect_min: Option<Spanned<String>>,
    pub reconnect_max: Option<Spanned<String>>,
    pub max_gap: Option<Spanned<i64>>,
    pub heartbeat: Option<Spanned<String>>,
    pub silent_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub unit: Vec<Spanned<RtuUnitRaw>>,
}

/// One `[[device.unit]]`: a slave on an RS-485 bus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuUnitRaw {
    pub unit_id: Spanned<i64>,
    pub name: Option<Spanned<String>>,
    pub station: Option<Spanned<String>>,
    #[serde(default)]
    pub register: Vec<Spanned<RegisterRaw>>,
}

/// One `[[device.register]]` entry of a Modbus device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRaw {
    pub name: Spanned<String>,
    pub table: Option<Spanned<String>>,
    pub address: Spanned<AddressRaw>,
    #[serde(rename = "type")]
    pub data_type: Option<Spanned<String>>,
    pub word_order: Option<Spanned<String>>,
    pub scale: Option<Spanned<f64>>,
    pub offset: Option<Spanned<f64>>,
    pub role: Spanned<String>,
    pub station: Option<Spanned<String>>,
    pub max_rate: Option<Spanned<f64>>,
}

/// A Modbus address as written: an integer (always the 0-based PDU address)
/// or a string (always a 5- or 6-digit Modicon address such as `"40001"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRaw {
    Pdu(i64),
    Modicon(String),
}

impl<'de> Deserialize<'de> for AddressRaw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AddressRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Modbus address")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AddressRaw, E> {
                Ok(AddressRaw::Pdu(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AddressRaw, E> {
                Ok(AddressRaw::Pdu(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AddressRaw, E> {
                Ok(AddressRaw::Modicon(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size as written: an integer number of bytes or a string such as `"8MiB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeRaw {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for SizeRaw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeRaw, E> {
                Ok(SizeRaw::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeRaw, E> {
                Ok(SizeRaw::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeRaw, E> {
                Ok(SizeRaw::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the TOML text into the raw layer.
pub fn parse_raw(src: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let mut doc = DeTable::parse(src.text).map_err(|e| syntax_error(src, &e))?;
    // Kept to map error spans back to key paths.
    let pristine = doc.clone();
    let device = doc.get_mut().remove("device");

    let root = RootRaw::deserialize(toml::de::Deserializer::from(doc))
        .map_err(|e| serde_error(src, &pristine, &e))?;

    let mut devices = Vec::new();
    if let Some(device) = device {
        let span = device.span();
        match device.into_inner() {
            DeValue::Array(items) => {
                for (index, item) in items.into_iter().enumerate() {
                    devices.push(parse_device(src, &pristine, index, item)?);
                }
            }
            other => {
                return Err(src.error(
                    span,
                    Some("device".into()),
                    format!("`device` is a {}, not a list of devices", other.type_str()),
                    expected_for("device"),
                ));
            }
        }
    }
    Ok(RawConfig { root, devices })
}

fn parse_device(
    src: &Source<'_>,
    pristine: &Spanned<DeTable<'_>>,
    index: usize,
    item: Spanned<DeValue<'_>>,
) -> Result<DeviceEntry, ConfigError> {
    let span = item.span();
    let key = |k: &str| Some(format!("device[{index}].{k}"));
    let Some(table) = item.get_ref().as_table() else {
        return Err(src.error(
            span,
            Some(format!("device[{index}]")),
            format!(
                "a device must be a table, found a {}",
                item.get_ref().type_str()
            ),
            expected_for("device"),
        ));
    };
    let Some(ty) = table.get("type") else {
        return Err(src.error(
            span,
            key("type"),
            "missing required key `type`",
            expected_for("device.type"),
        ));
    };
    let Some(type_name) = ty.get_ref().as_str() else {
        return Err(src.error(
            ty.span(),
            key("type"),
            format!("invalid type: {}", ty.get_ref().type_str()),
            expected_for("device.type"),
        ));
    };
    let kind = match type_name {
        "serial-scanner" => DeviceRaw::SerialScanner(
            SerialScannerRaw::deserialize(toml::de::ValueDeserializer::from(item))
                .map_err(|e| serde_error(src, pristine, &e))?,
        ),
        "modbus-tcp" => DeviceRaw::ModbusTcp(
            ModbusTcpRaw::deserialize(toml::de::ValueDeserializer::from(item))
                .map_err(|e| serde_error(src, pristine, &e))?,
        ),
        "modbus-rtu" => DeviceRaw::ModbusRtu(
            ModbusRtuRaw::deserialize(toml::de::ValueDeserializer::from(item))
                .map_err(|e| serde_error(src, pristine, &e))?,
        ),
        other => {
            return Err(src.error(
                ty.span(),
                key("type"),
                format!("unknown device type \"{other}\""),
                expected_for("device.type"),
            ));
        }
    };
    Ok(DeviceEntry { index, span, kind })
}

/// A TOML syntax error (the document could not be parsed at all).
fn syntax_error(src: &Source<'_>, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().replace('\n', " ");
    // For "duplicate key" the span covers the key itself: name it.
    let text = src.slice(&span);
    let key = (!text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| text.to_owned());
    src.error(span, key, format!("TOML syntax error: {message}"), None)
}

/// A serde error while deserializing the raw structs: locate it, name the key,
/// and say what was expected in the words of this schema.
fn serde_error(
    src: &Source<'_>,
    pristine: &Spanned<DeTable<'_>>,
    e: &toml::de::Error,
) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().replace('\n', " ");
    let path = if span == pristine.span() {
        String::new()
    } else {
        locate(pristine.get_ref(), &span).unwrap_or_default()
    };
    let join = |field: &str| {
        if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };

    if let Some(field) = between(&message, "missing field `", "`") {
        let key = join(field);
        let expected = expected_for(&normalize(&key));
        return src.error(
            span,
            Some(key),
            format!("missing required key `{field}`"),
            expected,
        );
    }
    if let Some(field) = between(&message, "unknown field `", "`") {
        let accepted = message
            .split_once(", expected ")
            .map(|(_, list)| list.to_owned());
        let key = if path.is_empty() {
            field.to_owned()
        } else {
            path.clone()
        };
        let (message, expected) = if normalize(&key) == "mqtt.password" {
            (
                "unknown key `password`: secrets are never written in the config, \
                 use password_file (a file holding the password)"
                    .to_owned(),
                expected_for("mqtt.password_file"),
            )
        } else {
            (
                format!("unknown key `{field}`"),
                accepted.map(|list| format!("{list} (keys are case-sensitive)")),
            )
        };
        return src.error(span, Some(key), message, expected);
    }

    let key = (!path.is_empty()).then(|| path.clone());
    let (what, serde_expected) = match message.split_once(", expected ") {
        Some((what, exp)) => (what.to_owned(), Some(exp.to_owned())),
        None => (message.clone(), None),
    };
    let expected = key
        .as_deref()
        .and_then(|k| expected_for(&normalize(k)))
        .or(serde_expected);
    src.error(span, key, what, expected)
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let rest = s.split_once(open)?.1;
    Some(rest.split_once(close)?.0)
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Dotted key path (`station[0].scan_rule[1].name`) of the deepest key or
/// value whose span covers `span`.
pub fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    let mut path = String::new();
    locate_in_table(table, span, &mut path).then_some(path)
}

fn locate_in_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut String) -> bool {
    for (k, v) in table.iter() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k.get_ref());
        if contains(&k.span(), span) || locate_in_value(v, span, path) {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn locate_in_value(v: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut String) -> bool {
    // Children first: a table's own span is its header, which an array of
    // tables shares with its first element.
    let found = match v.get_ref() {
        DeValue::Table(t) => locate_in_table(t, span, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let hit = locate_in_value(item, span, path);
            if !hit {
                path.truncate(len);
            }
            hit
        }),
        _ => false,
    };
    found || contains(&v.span(), span)
}

/// `device[2].baud` → `device.baud`.
pub fn normalize(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0usize;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

const ID_FORM: &str = "1 to 64 characters from A-Z a-z 0-9 _ . -";
const DURATION_FORM: &str = "a duration such as \"250ms\" or \"5s\"";

/// The expected form of a key, by its normalized path (`device.baud`).
pub fn expected_for(key: &str) -> Option<String> {
    // A unit's registers take exactly the keys of a device's registers.
    if let Some(rest) = key.strip_prefix("device.unit.register") {
        if rest == ".name" {
            return Some(format!("a name unique within the unit, {ID_FORM}"));
        }
        return expected_for(&format!("device.register{rest}"));
    }
    let s = match key {
        "gateway" => "a [gateway] table with id, site, line and data_dir",
        "gateway.id" | "gateway.site" | "gateway.line" | "station.id" | "device.id" => ID_FORM,
        "gateway.data_dir" => "a directory path such as \"/var/lib/linegate\"",
        "gateway.time_zone" => {
            "an IANA time zone such as \"Europe/Berlin\" or \"UTC\" (the plant's local time: shifts, lot dates and resets)"
        }
        "shift" => "[[shift]] tables, one per shift, each with name and start",
        "shift.name" => "a shift name of 1 to 8 letters or digits, unique, such as \"A\"",
        "shift.start" => "a local start time \"HH:MM\" such as \"06:00\", unique among shifts",
        "store" => "a [store] table",
        "store.engine" => "\"sled\" or \"redb\"",
        "store.commit_interval" => "a duration from 0ms to 1s such as \"10ms\"",
        "store.commit_max_records" => "an integer from 1 to 10000",
        "store.cache_size" => {
            "a size from 1MiB to 1GiB such as \"8MiB\" (units KiB, MiB, GiB) or an integer number of bytes"
        }
        "store.max_bytes" => {
            "a size from 64KiB to 1024GiB such as \"1GiB\" (units KiB, MiB, GiB) or an integer number of bytes"
        }
        "store.when_full" => "\"refuse\" or \"drop-oldest\"",
        "store.min_disk_free" => {
            "a size from 0 to 1024GiB such as \"128MiB\" (units KiB, MiB, GiB) or an integer number of bytes"
        }
        "mqtt" => "an [mqtt] table with host (one broker) or brokers (several)",
        "mqtt.host" => "a host name or IP address such as \"127.0.0.1\"",
        "mqtt.brokers" => {
            "a list of brokers tried in order, each \"host\" or \"host:port\" \
             (an IPv6 address in brackets), such as [\"10.0.0.5:8883\", \"10.0.0.6:8883\"]"
        }
        "mqtt.return_to_first" => {
            "a duration of at least 1s such as \"5m\", or \"0s\" to stay on a broker until it fails"
        }
        "mqtt.port" => "a TCP port from 1 to 65535 such as 1883",
        "mqtt.keepalive" => "a duration from 5s to 30s such as \"15s\"",
        "mqtt.username" => "a user name such as \"press-01\"",
        "mqtt.password_file" => {
            "the path of a file holding the password, such as \"/etc/linegate/mqtt.pass\", \
             or \"cred:NAME\" for a systemd credential"
        }
        "mqtt.tls" => "an [mqtt.tls] table (empty: TLS with the system trust store)",
        "mqtt.tls.ca_file" => {
            "the path of a PEM file of CA certificates, such as \"/etc/linegate/ca.pem\", \
             or \"cred:NAME\" for a systemd credential"
        }
        "mqtt.tls.cert_file" => {
            "the path of the PEM client certificate (chain), such as \"/etc/linegate/client.pem\", \
             or \"cred:NAME\" for a systemd credential"
        }
        "mqtt.tls.key_file" => {
            "the path of the PEM private key of cert_file, such as \"/etc/linegate/client.key\", \
             or \"cred:NAME\" for a systemd credential"
        }
        "mqtt.tls.server_name" => {
            "the DNS name (or IP address) the broker's certificate carries, such as \"broker.plant.local\""
        }
        "mqtt.max_inflight" => "an integer from 1 to 1000",
        "mqtt.max_packet_size" => {
            "a size from 1KiB to 16MiB such as \"64KiB\" (units KiB, MiB, GiB) or an integer number of bytes"
        }
        "mqtt.status_interval" => "a duration of at least 1s such as \"30s\"",
        "mqtt.topic_root" => {
            "a topic template using {site} {line} {gateway}, such as \"{site}/{line}\""
        }
        "mqtt.record_topic" => {
            "a topic template containing {station} and {kind}, such as \"{root}/{station}/{kind}\" \
             (placeholders {root} {site} {line} {gateway} {station} {kind})"
        }
        "mqtt.reconnect_min"
        | "mqtt.reconnect_max"
        | "device.reconnect_min"
        | "device.reconnect_max" => DURATION_FORM,
        "metrics" => "a [metrics] table with listen",
        "metrics.listen" => {
            "an IP address and port such as \"127.0.0.1:9464\" (the Prometheus endpoint, served at /metrics)"
        }
        "commands" => "a [commands] table",
        "commands.public_key_file" => {
            "the path of the MES's Ed25519 public key in PEM, such as \"/etc/linegate/mes.pub\" (openssl pkey -in mes.key -pubout -out mes.pub)"
        }
        "commands.require_signature" => "true or false",
        "commands.replay_window" => "a duration from 1s to 24h such as \"5m\"",
        "station" => "[[station]] tables, one per station",
        "station.scan_rule" => "[[station.scan_rule]] tables, one per rule",
        "station.scan_rule.name" => "a rule name, unique within its station, such as \"lot-label\"",
        "station.scan_rule.pattern" => {
            "a regular expression such as '^LOT:(?P<value>[A-Z0-9-]{1,40})$'"
        }
        "station.scan_rule.action" => {
            "\"set-lot\", \"set-order\", \"set-operator\", \"consume-material\", \"product\" or \"reject\""
        }
        "station.scan_rule.symbology" => {
            "a list of AIM symbology identifiers such as [\"]d2\", \"]C1\"]"
        }
        "station.scan_rule.gs1" => {
            "a list of GS1 Application Identifiers that must all be present, such as [\"01\", \"10\"]"
        }
        "station.scan_rule.value_ai" => {
            "a GS1 Application Identifier the value is taken from, such as \"10\" (set-lot, set-order, set-operator, product)"
        }
        "station.scan_rule.reason" => {
            "a reason text of 1 to 200 characters (only, and required, with action = \"reject\")"
        }
        "station.lot" => "a [station.lot] table",
        "station.lot.template" => {
            "a lot number template such as \"{line}{yy}{jjj}{shift}{seq:3}\" (tokens {site} {line} {station} {yyyy} {yy} {y} {mm} {dd} {jjj} {shift} {seq:N} {check}; letters, digits and - between them)"
        }
        "station.lot.reset" => {
            "\"never\", \"daily\", \"shift\", \"monthly\" or \"yearly\" (when the {seq} restarts at 1)"
        }
        "station.lot.rotate" => "\"never\", \"shift\" or \"day\"",
        "station.lot.target" => "an integer number of good units from 1 to 1000000000",
        "station.lot.good" | "station.lot.scrap" => {
            "the name of a counter register (role = \"counter\") of this station, such as \"good\""
        }
        "station.lot.duplicate_window" => {
            "\"lot\" (a serial once per lot) or a duration from 1m to 31d such as \"7d\""
        }
        "station.lot.auto_open" => "true or false",
        "station.operator" => "a [station.operator] table",
        "station.operator.logout_at_shift_end" => "true or false",
        "station.operator.idle_logout" => "a duration from 1m to 24h such as \"30m\"",
        "device" => "[[device]] tables, one per device",
        "device.type" => return Some(format!("one of: {}", DEVICE_TYPES.join(", "))),
        "device.station" => "the id of a [[station]]",
        "device.path" => "a device path such as \"/dev/serial/by-id/usb-Honeywell_1900-if00\"",
        "device.baud" => {
            "an integer baud rate such as 9600 (1200, 2400, 4800, 9600, 19200, 38400, 57600, \
             115200, 230400, 460800 or 921600)"
        }
        "device.data_bits" => "7 or 8",
        "device.parity" => "\"none\", \"even\" or \"odd\"",
        "device.stop_bits" => "1 or 2",
        "device.flow_control" => "\"none\", \"software\" or \"hardware\"",
        "device.suffix" => {
            "\"CR\", \"LF\", \"CRLF\", \"TAB\", \"none\" or bytes in hex such as \"hex:0D0A\""
        }
        "device.prefix" => {
            "\"\" or \"none\" (no prefix), \"CR\", \"LF\", \"CRLF\", \"TAB\" or bytes in hex such as \"hex:02\""
        }
        "device.idle_timeout" => "a duration from 1ms to 10s such as \"50ms\"",
        "device.max_frame_len" => "an integer from 16 to 4096",
        "device.host" => "a host name or IP address such as \"192.168.10.20\" (no scheme, no port)",
        "device.port" => "a TCP port from 1 to 65535 such as 502",
        "device.unit_id" => "a Modbus unit id from 0 to 255 (usually 1)",
        "device.poll_interval" => "a duration from 10ms to 1h such as \"1s\"",
        "device.timeout" => "a duration from 10ms to 60s such as \"1s\"",
        "device.max_gap" => "an integer from 0 to 124",
        "device.heartbeat" => "a duration from 1s to 24h, at least poll_interval, such as \"60s\"",
        "device.register" => "[[device.register]] tables, one per mapped value",
        "device.silent_interval" => {
            "a duration from 1ms to 1s such as \"2ms\" (default: 3.5 characters at the baud rate, at least 1.75ms)"
        }
        "device.unit" => {
            "[[device.unit]] tables, one per slave on the bus, each with unit_id and registers"
        }
        "device.unit.unit_id" => "a Modbus slave address from 1 to 247, unique on the bus",
        "device.unit.name" => {
            return Some(format!(
                "a name unique on the bus, {ID_FORM} (default \"unit-<unit_id>\")"
            ));
        }
        "device.unit.station" => "the id of a [[station]]",
        "device.register.name" => {
            return Some(format!("a name unique within the device, {ID_FORM}"));
        }
        "device.register.table" => "\"coil\", \"discrete\", \"input\" or \"holding\"",
        "device.register.address" => {
            "a 0-based address from 0 to 65535 as an integer (address = 0), or a 5- or 6-digit \
             Modicon address as a string (\"40001\" = holding 0, \"30010\" = input 9, \"10001\" = \
             discrete 0, \"00001\" = coil 0, \"400001\" = holding 0)"
        }
        "device.register.type" => {
            "\"bool\" (coil and discrete only), \"u16\", \"i16\", \"u32\", \"i32\", \"f32\" or \"u64\""
        }
        "device.register.word_order" => "\"ABCD\", \"CDAB\", \"BADC\" or \"DCBA\"",
        "device.register.scale" | "device.register.offset" => {
            "a finite number such as 0.1 (only with role = \"value\")"
        }
        "device.register.role" => "\"counter\", \"state\" or \"value\"",
        "device.register.station" => "the id of a [[station]]",
        "device.register.max_rate" => {
            "a number of units per second above 0, such as 1000 (only with role = \"counter\")"
        }
        _ => return None,
    };
    Some(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_names_nested_array_elements() {
        let text = "[gateway]\nid = 'a'\n[[station]]\nid = 's'\n[[station.scan_rule]]\nname = 'n'\n\
                    [[station.scan_rule]]\nname = 'm'\n";
        let doc = DeTable::parse(text).ok();
        let doc = doc.as_ref().map(|d| d.get_ref());
        let at = |needle: &str| {
            let start = text.find(needle).unwrap_or(0);
            start..start + needle.len()
        };
        assert_eq!(
            doc.and_then(|d| locate(d, &at("'m'"))),
            Some("station[0].scan_rule[1].name".to_owned())
        );
        assert_eq!(
            doc.and_then(|d| locate(d, &at("'a'"))).as_deref(),
            Some("gateway.id")
        );
    }

    #[test]
    fn normalize_drops_indices() {
        assert_eq!(
            normalize("station[3].scan_rule[0].name"),
            "station.scan_rule.name"
        );
        assert_eq!(normalize("mqtt.port"), "mqtt.port");
    }
}
