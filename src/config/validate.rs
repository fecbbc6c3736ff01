//! Raw → validated: every value parsed (durations, sizes, framing bytes,
//! regexes, topic templates) and range-checked, every cross-check done
//! (unique ids, device → station references, backoff bounds, suffix/idle
//! timeout), relative paths resolved against the config file's directory and
//! secret files read. Each error carries the span of the offending key or value.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Source};
use super::model::*;
use super::raw::{
    AddressRaw, CommandsRaw, DeviceEntry, DeviceRaw, ModbusRtuRaw, ModbusTcpRaw, MqttRaw,
    RawConfig, RegisterRaw, RtuUnitRaw, SerialScannerRaw, SizeRaw, StoreRaw, expected_for,
    normalize,
};

use crate::uplink::signed::Signing;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Baud rates accepted for serial devices.
pub const BAUD_RATES: &[u32] = &[
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600,
];

const ROOT_PLACEHOLDERS: &[&str] = &["site", "line", "gateway"];
const RECORD_PLACEHOLDERS: &[&str] = &["root", "site", "line", "gateway", "station", "kind"];

mod places;
mod records;
mod secrets;
mod stations;

type Result<T> = std::result::Result<T, ConfigError>;

/// Validates the raw config. `src.file`'s directory anchors relative paths.
pub fn validate(src: &Source<'_>, raw: RawConfig) -> Result<Config> {
    let base = src.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let v = Validator {
        src: *src,
        base,
        credentials: std::env::var_os(secrets::CREDENTIALS_DIRECTORY).map(PathBuf::from),
        warnings: std::cell::RefCell::default(),
    };

    let g = raw.root.gateway.get_ref();
    let gateway = GatewayConfig {
        id: v.id(&g.id, "gateway.id")?,
        site: v.id(&g.site, "gateway.site")?,
        line: v.id(&g.line, "gateway.line")?,
        data_dir: v.data_dir(&g.data_dir)?,
    };
    let calendar = v.calendar(g.time_zone.as_ref(), &raw.root.shift)?;

    let default_store = StoreRaw::default();
    let store_raw = raw
        .root
        .store
        .as_ref()
        .map_or(&default_store, |s| s.get_ref());
    let store = v.store(store_raw)?;

    let stations = raw
        .root
        .station
        .iter()
        .enumerate()
        .map(|(i, s)| v.station(i, s.get_ref(), &gateway, &calendar))
        .collect::<Result<Vec<_>>>()?;
    v.unique(
        raw.root.station.iter().enumerate().map(|(i, s)| {
            let id = &s.get_ref().id;
            (id, format!("station[{i}].id"))
        }),
        "station id",
    )?;

    let mqtt = v.mqtt(&raw.root.mqtt, &gateway, &stations)?;
    let commands = match &raw.root.commands {
        Some(c) => v.commands(c)?,
        None => Signing::default(),
    };
    let metrics = match &raw.root.metrics {
        Some(m) => {
            let listen = &m.get_ref().listen;
            Some(listen.get_ref().trim().parse().map_err(|_| {
                v.err(
                    listen.span(),
                    "metrics.listen",
                    format!("\"{}\" is not an IP address and port", listen.get_ref()),
                )
            })?)
        }
        None => None,
    };

    let devices = raw
        .devices
        .iter()
        .map(|d| v.device(d, &stations))
        .collect::<Result<Vec<_>>>()?;
    v.unique(
        raw.devices
            .iter()
            .map(|d| (d.kind.id(), format!("device[{}].id", d.index))),
        "device id",
    )?;
    v.unique_device_paths(&raw.devices)?;
    v.lot_counters(&raw.root.station, &stations, &devices)?;
    let mut stations = stations;
    v.record_sizes(&raw, &gateway, &mqtt, &mut stations, &devices)?;

    Ok(Config {
        source: src.file.to_path_buf(),
        gateway,
        store,
        mqtt,
        calendar,
        stations,
        devices,
        commands,
        metrics,
    })
}

/// The poll keys as written (shared by modbus-tcp and modbus-rtu).
struct PollRaw<'a> {
    interval: Option<&'a Spanned<String>>,
    timeout: Option<&'a Spanned<String>>,
    reconnect_min: Option<&'a Spanned<String>>,
    reconnect_max: Option<&'a Spanned<String>>,
    max_gap: Option<&'a Spanned<i64>>,
    heartbeat: Option<&'a Spanned<String>>,
}

/// The serial line keys as written (shared by serial-scanner and modbus-rtu).
struct LineRaw<'a> {
    baud: Option<&'a Spanned<i64>>,
    data_bits: Option<&'a Spanned<i64>>,
    parity: Option<&'a Spanned<String>>,
    stop_bits: Option<&'a Spanned<i64>>,
    flow_control: Option<&'a Spanned<String>>,
}

struct Validator<'a> {
    src: Source<'a>,
    /// Directory of the config file (empty: the current directory).
    base: PathBuf,
    /// `$CREDENTIALS_DIRECTORY`: where `cred:NAME` values point.
    credentials: Option<PathBuf>,
    /// Warnings gathered on the way (see `MqttConfig::warnings`).
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Validator<'_> {
    /// An error at `span` about `key`, with the expected form of that key.
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        self.src.error(
            span,
            Some(key.to_owned()),
            message,
            expected_for(&normalize(key)),
        )
    }

    /// An error at `span` about `key` where the expected form would not help
    /// (duplicates, conflicts between keys, unreadable files).
    fn err_plain(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        self.src.error(span, Some(key.to_owned()), message, None)
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.src.line_col(span.start).0
    }

    /// An id that is also a safe MQTT topic level.
    fn id(&self, v: &Spanned<String>, key: &str) -> Result<String> {
        let s = v.get_ref();
        if s.is_empty() {
            return Err(self.err(v.span(), key, "must not be empty"));
        }
        if s.chars().count() > 64 {
            return Err(self.err(
                v.span(),
                key,
                format!("\"{s}\" is longer than 64 characters"),
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(self.err(
                v.span(),
                key,
                format!("\"{s}\" contains the character {c:?}, which is not allowed in an id"),
            ));
        }
        Ok(s.clone())
    }

    /// A path; relative paths are resolved against the config file's directory.
    fn path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf> {
        let s = v.get_ref();
        if s.trim().is_empty() {
            return Err(self.err(v.span(), key, "must not be empty"));
        }
        if s.contains('\0') {
            return Err(self.err(
                v.span(),
                key,
                "contains a NUL character (\\u0000), which no path can hold",
            ));
        }
        let p = Path::new(s);
        if p.is_absolute() {
            return Ok(p.to_path_buf());
        }
        let joined = self.base.join(p);
        Ok(std::path::absolute(&joined).unwrap_or(joined))
    }

    fn non_empty(&self, v: &Spanned<String>, key: &str) -> Result<String> {
        let s = v.get_ref();
        if s.trim().is_empty() {
            return Err(self.err(v.span(), key, "must not be empty"));
        }
        Ok(s.clone())
    }

    /// Picks one of `choices` (exact spelling).
    fn choice<T: Copy>(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T> {
        let Some(v) = v else { return Ok(default) };
        choices
            .iter()
            .find(|(name, _)| *name == v.get_ref())
            .map(|(_, t)| *t)
            .ok_or_else(|| self.err(v.span(), key, format!("unknown value \"{}\"", v.get_ref())))
    }

    fn int(
        &self,
        v: Option<&Spanned<i64>>,
        key: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64> {
        let Some(v) = v else { return Ok(default) };
        let n = *v.get_ref();
        if !range.contains(&n) {
            return Err(self.err(
                v.span(),
                key,
                format!("{n} is out of range {}..={}", range.start(), range.end()),
            ));
        }
        Ok(n)
    }

    /// A duration (`"250ms"`, `"5s"`), `default` when absent, within `min..=max`.
    fn duration(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
        min: Duration,
        max: Option<Duration>,
    ) -> Result<Duration> {
        let Some(v) = v else { return Ok(default) };
        let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            let why = match e {
                // Positions inside the string say little to a technician.
                humantime::DurationError::InvalidCharacter(_)
                | humantime::DurationError::NumberExpected(_) => String::new(),
                other => format!(" ({other})"),
            };
            self.err(
                v.span(),
                key,
                format!("\"{}\" is not a duration{why}", v.get_ref()),
            )
        })?;
        if d < min {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{} is below the minimum of {}",
                    fmt_duration(d),
                    fmt_duration(min)
                ),
            ));
        }
        if let Some(max) = max.filter(|max| d > *max) {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{} is above the maximum of {}",
                    fmt_duration(d),
                    fmt_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    /// A byte size (`"8MiB"` or an integer), `default` when absent, within `min..=max`.
    fn size(
        &self,
        v: Option<&Spanned<SizeRaw>>,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64> {
        let Some(v) = v else { return Ok(default) };
        let n = match v.get_ref() {
            SizeRaw::Bytes(n) => u64::try_from(*n)
                .map_err(|_| self.err(v.span(), key, format!("{n} is negative")))?,
            SizeRaw::Text(s) => parse_size(s).map_err(|e| self.err(v.span(), key, e))?,
        };
        if n < min || n > max {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{} is out of range {}..={}",
                    fmt_size(n),
                    fmt_size(min),
                    fmt_size(max)
                ),
            ));
        }
        Ok(n)
    }

    /// `min <= max`; the error points at whichever of the two was written.
    fn backoff(
        &self,
        prefix: &str,
        min_raw: Option<&Spanned<String>>,
        max_raw: Option<&Spanned<String>>,
        defaults: BackoffConfig,
        fallback_span: Range<usize>,
    ) -> Result<BackoffConfig> {
        let key_min = format!("{prefix}.reconnect_min");
        let key_max = format!("{prefix}.reconnect_max");
        let one_ms = Duration::from_millis(1);
        let min = self.duration(min_raw, &key_min, defaults.min, one_ms, None)?;
        let max = self.duration(max_raw, &key_max, defaults.max, one_ms, None)?;
        if min > max {
            let (span, key) = match (min_raw, max_raw) {
                (Some(m), _) => (m.span(), key_min),
                (None, Some(m)) => (m.span(), key_max),
                (None, None) => (fallback_span, key_min),
            };
            let note =
                |raw: Option<&Spanned<String>>| if raw.is_none() { ", the default" } else { "" };
            return Err(self.err_plain(
                span,
                &key,
                format!(
                    "reconnect_min ({}{}) is greater than reconnect_max ({}{})",
                    fmt_duration(min),
                    note(min_raw),
                    fmt_duration(max),
                    note(max_raw)
                ),
            ));
        }
        Ok(BackoffConfig { min, max })
    }

    /// The first duplicate in `ids` (error at the second occurrence).
    fn unique<'s>(
        &self,
        ids: impl Iterator<Item = (&'s Spanned<String>, String)>,
        what: &str,
    ) -> Result<()> {
        let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
        for (id, key) in ids {
            if let Some(first) = seen.get(id.get_ref().as_str()) {
                return Err(self.err_plain(
                    id.span(),
                    &key,
                    format!(
                        "duplicate {what} \"{}\" (first defined at line {})",
                        id.get_ref(),
                        self.line_of(first)
                    ),
                ));
            }
            seen.insert(id.get_ref(), id.span());
        }
        Ok(())
    }

    fn store(&self, s: &StoreRaw) -> Result<StoreConfig> {
        let engine = s
            .engine
            .as_ref()
            .map(|engine| {
                self.choice(
                    Some(engine),
                    "store.engine",
                    StoreEngine::Redb,
                    &[("sled", StoreEngine::Sled), ("redb", StoreEngine::Redb)],
                )
            })
            .transpose()?;
        let commit_interval = self.duration(
            s.commit_interval.as_ref(),
            "store.commit_interval",
            Duration::from_millis(10),
            Duration::ZERO,
            Some(Duration::from_secs(1)),
        )?;
        let commit_max_records = self.int(
            s.commit_max_records.as_ref(),
            "store.commit_max_records",
            256,
            1..=10_000,
        )?;
        let cache_bytes =
            self.size(s.cache_size.as_ref(), "store.cache_size", 2 * MIB, MIB, GIB)?;
        let max_bytes = self.size(
            s.max_bytes.as_ref(),
            "store.max_bytes",
            GIB,
            64 * KIB,
            1024 * GIB,
        )?;
        let when_full = self.choice(
            s.when_full.as_ref(),
            "store.when_full",
            WhenFull::Refuse,
            &[
                ("refuse", WhenFull::Refuse),
                ("drop-oldest", WhenFull::DropOldest),
            ],
        )?;
        let min_disk_free = self.size(
            s.min_disk_free.as_ref(),
            "store.min_disk_free",
            128 * MIB,
            0,
            1024 * GIB,
        )?;
        Ok(StoreConfig {
            engine,
            commit_interval,
            commit_max_records: to_usize(commit_max_records),
            cache_bytes,
            max_bytes,
            when_full,
            min_disk_free,
        })
    }

    fn mqtt(
        &self,
        raw: &Spanned<MqttRaw>,
        gateway: &GatewayConfig,
        stations: &[StationConfig],
    ) -> Result<MqttConfig> {
        let m = raw.get_ref();
        let tls = m.tls.as_ref().map(|t| self.tls(t)).transpose()?;
        let default_port = if tls.is_some() { 8883 } else { 1883 };
        let port = self.int(m.port.as_ref(), "mqtt.port", default_port, 1..=65535)?;
        let brokers = self.brokers(raw, u16::try_from(port).unwrap_or(1883))?;
        let return_to_first = self.duration(
            m.return_to_first.as_ref(),
            "mqtt.return_to_first",
            Duration::from_secs(300),
            Duration::ZERO,
            None,
        )?;
        if let Some(v) = &m.return_to_first
            && !return_to_first.is_zero()
            && return_to_first < Duration::from_secs(1)
        {
            return Err(self.err(
                v.span(),
                "mqtt.return_to_first",
                format!(
                    "{} is below the minimum of 1s",
                    fmt_duration(return_to_first)
                ),
            ));
        }
        let keepalive = self.duration(
            m.keepalive.as_ref(),
            "mqtt.keepalive",
            Duration::from_secs(15),
            Duration::from_secs(5),
            Some(Duration::from_secs(30)),
        )?;
        let username = m
            .username
            .as_ref()
            .map(|u| self.non_empty(u, "mqtt.username"))
            .transpose()?;
        let password = match &m.password_file {
            Some(pf) => {
                if username.is_none() {
                    return Err(self.err_plain(
                        pf.span(),
                        "mqtt.password_file",
                        "a password needs a username: add `username` to [mqtt]",
                    ));
                }
                Some(self.secret(pf, "mqtt.password_file")?)
            }
            None => None,
        };
        let max_inflight = self.int(m.max_inflight.as_ref(), "mqtt.max_inflight", 128, 1..=1000)?;
        let max_packet_bytes = self.size(
            m.max_packet_size.as_ref(),
            "mqtt.max_packet_size",
            64 * KIB,
            KIB,
            16 * MIB,
        )?;
        let reconnect = self.backoff(
            "mqtt",
            m.reconnect_min.as_ref(),
            m.reconnect_max.as_ref(),
            BackoffConfig {
                min: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            raw.span(),
        )?;
        let status_interval = self.duration(
            m.status_interval.as_ref(),
            "mqtt.status_interval",
            Duration::from_secs(30),
            Duration::from_secs(1),
            None,
        )?;
        let topics = self.topics(raw, gateway, stations)?;
        Ok(MqttConfig {
            brokers,
            return_to_first,
            tls,
            warnings: self.warnings.take(),
            keepalive,
            username,
            password,
            max_inflight: u16::try_from(max_inflight).unwrap_or(128),
            max_packet_bytes: usize::try_from(max_packet_bytes).unwrap_or(usize::MAX),
            reconnect,
            status_interval,
            topics,
        })
    }

    /// `[commands]`: the MES's public key, whether signatures are required,
    /// the replay window.
    fn commands(&self, raw: &Spanned<CommandsRaw>) -> Result<Signing> {
        let c = raw.get_ref();
        let key = match &c.public_key_file {
            Some(v) => {
                let key = "commands.public_key_file";
                // A path, or `cred:NAME` (a systemd credential), as for
                // the other secrets; a public key may be readable by all.
                let (path, bytes) =
                    self.secret_file(v, key, "public key file", super::MAX_SECRET_BYTES, false)?;
                let cannot = |why: String| {
                    self.err_plain(
                        v.span(),
                        key,
                        format!("public key file {}: {why}", path.display()),
                    )
                };
                let text =
                    String::from_utf8(bytes).map_err(|_| cannot("it is not UTF-8 text".into()))?;
                Some(crate::uplink::signed::parse_public_key(&text).map_err(cannot)?)
            }
            None => None,
        };
        let required = c.require_signature.as_ref().is_some_and(|r| *r.get_ref());
        if required && key.is_none() {
            let span = c
                .require_signature
                .as_ref()
                .map_or_else(|| raw.span(), |r| r.span());
            return Err(self.err_plain(
                span,
                "commands.require_signature",
                "signatures cannot be required without a key to verify them: add public_key_file to [commands]",
            ));
        }
        let window = self.duration(
            c.replay_window.as_ref(),
            "commands.replay_window",
            Duration::from_secs(300),
            Duration::from_secs(1),
            Some(Duration::from_secs(24 * 3600)),
        )?;
        Ok(Signing {
            key,
            required,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn topics(
        &self,
        raw: &Spanned<MqttRaw>,
        gateway: &GatewayConfig,
        stations: &[StationConfig],
    ) -> Result<Topics> {
        let m = raw.get_ref();
        let values = |name: &str| match name {
            "site" => Some(gateway.site.clone()),
            "line" => Some(gateway.line.clone()),
            "gateway" => Some(gateway.id.clone()),
            _ => None,
        };

        let (root_text, root_span) = template_or(m.topic_root.as_ref(), "{site}/{line}", raw);
        let root_pieces = parse_template(&root_text, ROOT_PLACEHOLDERS)
            .map_err(|e| self.err(root_span.clone(), "mqtt.topic_root", e))?;
        let root = render(&root_pieces, &values);
        check_topic(&root).map_err(|e| {
            self.err(
                root_span.clone(),
                "mqtt.topic_root",
                format!("renders to \"{root}\", which {e}"),
            )
        })?;

        let (rec_text, rec_span) =
            template_or(m.record_topic.as_ref(), "{root}/{station}/{kind}", raw);
        let rec_pieces = parse_template(&rec_text, RECORD_PLACEHOLDERS)
            .map_err(|e| self.err(rec_span.clone(), "mqtt.record_topic", e))?;
        for needed in ["station", "kind"] {
            if !rec_pieces
                .iter()
                .any(|p| matches!(p, Piece::Placeholder(n) if n == needed))
            {
                return Err(self.err(
                    rec_span.clone(),
                    "mqtt.record_topic",
                    format!("\"{rec_text}\" does not contain {{{needed}}}"),
                ));
            }
        }
        let record = render(&rec_pieces, &|name: &str| match name {
            "root" => Some(root.clone()),
            other => values(other),
        });
        let station = stations.first().map_or("st", |s| s.id.as_str());
        let probe = record
            .replace("{station}", station)
            .replace("{kind}", "scan");
        check_topic(&probe).map_err(|e| {
            self.err(
                rec_span.clone(),
                "mqtt.record_topic",
                format!("renders to \"{probe}\", which {e}"),
            )
        })?;

        Ok(Topics {
            gateway: format!("{root}/gateway/{}", gateway.id),
            root,
            record,
        })
    }

    fn device(&self, d: &DeviceEntry, stations: &[StationConfig]) -> Result<DeviceConfig> {
        let prefix = format!("device[{}]", d.index);
        let id = self.id(d.kind.id(), &format!("{prefix}.id"))?;
        let station = self.station_ref(d.kind.station(), &format!("{prefix}.station"), stations)?;
        let kind = match &d.kind {
            DeviceRaw::SerialScanner(s) => {
                DeviceKind::SerialScanner(self.serial_scanner(&prefix, d, s)?)
            }
            DeviceRaw::ModbusTcp(m) => {
                DeviceKind::ModbusTcp(self.modbus_tcp(&prefix, d, m, &station, stations)?)
            }
            DeviceRaw::ModbusRtu(m) => {
                DeviceKind::ModbusRtu(self.modbus_rtu(&prefix, d, m, &station, stations)?)
            }
        };
        Ok(DeviceConfig { id, station, kind })
    }

    /// A reference to a `[[station]]` that must exist.
    fn station_ref(
        &self,
        st: &Spanned<String>,
        key: &str,
        stations: &[StationConfig],
    ) -> Result<String> {
        if !stations.iter().any(|s| &s.id == st.get_ref()) {
            let known = if stations.is_empty() {
                "no [[station]] is defined".to_owned()
            } else {
                format!(
                    "defined stations: {}",
                    stations
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(self.err(
                st.span(),
                key,
                format!("station \"{}\" is not defined ({known})", st.get_ref()),
            ));
        }
        Ok(st.get_ref().clone())
    }

    fn modbus_tcp(
        &self,
        prefix: &str,
        d: &DeviceEntry,
        m: &ModbusTcpRaw,
        device_station: &str,
        stations: &[StationConfig],
    ) -> Result<ModbusTcpConfig> {
        let key = |k: &str| format!("{prefix}.{k}");
        let host = self.host(&m.host, &key("host"), true)?;
        let port = self.int(m.port.as_ref(), &key("port"), 502, 1..=65535)?;
        let unit_id = self.int(m.unit_id.as_ref(), &key("unit_id"), 1, 0..=255)?;
        let poll = self.poll(
            prefix,
            d,
            PollRaw {
                interval: m.poll_interval.as_ref(),
                timeout: m.timeout.as_ref(),
                reconnect_min: m.reconnect_min.as_ref(),
                reconnect_max: m.reconnect_max.as_ref(),
                max_gap: m.max_gap.as_ref(),
                heartbeat: m.heartbeat.as_ref(),
            },
        )?;
        let registers = self.register_map(
            prefix,
            d.span.clone(),
            &m.register,
            device_station,
            stations,
            "a modbus-tcp device needs at least one [[device.register]]",
        )?;

        Ok(ModbusTcpConfig {
            host,
            port: u16::try_from(port).unwrap_or(502),
            unit_id: u8::try_from(unit_id).unwrap_or(1),
            poll,
            registers,
        })
    }

    /// The poll keys shared by Modbus TCP devices and RTU buses.
    fn poll(&self, prefix: &str, d: &DeviceEntry, m: PollRaw<'_>) -> Result<PollConfig> {
        let key = |k: &str| format!("{prefix}.{k}");
        let interval = self.duration(
            m.interval,
            &key("poll_interval"),
            Duration::from_secs(1),
            Duration::from_millis(10),
            Some(Duration::from_secs(3600)),
        )?;
        let timeout = self.duration(
            m.timeout,
            &key("timeout"),
            Duration::from_secs(1),
            Duration::from_millis(10),
            Some(Duration::from_secs(60)),
        )?;
        let reconnect = self.backoff(
            prefix,
            m.reconnect_min,
            m.reconnect_max,
            BackoffConfig {
                min: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            d.span.clone(),
        )?;
        let max_gap = self.int(m.max_gap, &key("max_gap"), 8, 0..=124)?;
        let heartbeat = m
            .heartbeat
            .map(|v| {
                let hb = self.duration(
                    Some(v),
                    &key("heartbeat"),
                    Duration::ZERO,
                    Duration::from_secs(1),
                    Some(Duration::from_secs(24 * 3600)),
                )?;
                if hb < interval {
                    return Err(self.err(
                        v.span(),
                        &key("heartbeat"),
                        format!(
                            "heartbeat ({}) is shorter than poll_interval ({})",
                            fmt_duration(hb),
                            fmt_duration(interval)
                        ),
                    ));
                }
                Ok(hb)
            })
            .transpose()?;
        Ok(PollConfig {
            interval,
            timeout,
            reconnect,
            max_gap: u16::try_from(max_gap).unwrap_or(8),
            heartbeat,
        })
    }

    /// A register map (`[[….register]]` under `prefix`): at least one entry,
    /// names unique, no two entries sharing a register (or bit) of a table.
    fn register_map(
        &self,
        prefix: &str,
        owner_span: Range<usize>,
        raw: &[Spanned<RegisterRaw>],
        default_station: &str,
        stations: &[StationConfig],
        empty_message: &str,
    ) -> Result<Vec<RegisterConfig>> {
        if raw.is_empty() {
            return Err(self.err(owner_span, &format!("{prefix}.register"), empty_message));
        }
        let registers = raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                self.register(
                    &format!("{prefix}.register[{i}]"),
                    r,
                    default_station,
                    stations,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.unique(
            raw.iter()
                .enumerate()
                .map(|(i, r)| (&r.get_ref().name, format!("{prefix}.register[{i}].name"))),
            "register name",
        )?;
        // Two entries sharing any register (or bit) of the same table.
        for (i, r) in registers.iter().enumerate() {
            let end = u32::from(r.address) + u32::from(r.width()) - 1;
            let earlier = registers[..i].iter().enumerate().find(|(_, o)| {
                let o_end = u32::from(o.address) + u32::from(o.width()) - 1;
                o.table == r.table && u32::from(o.address) <= end && u32::from(r.address) <= o_end
            });
            if let Some((j, o)) = earlier {
                let entry = raw[i].get_ref();
                return Err(self.err_plain(
                    entry.address.span(),
                    &format!("{prefix}.register[{i}].address"),
                    format!(
                        "\"{}\" ({}) overlaps \"{}\" ({}, line {}): two entries share a register",
                        r.name,
                        span_text(r),
                        o.name,
                        span_text(o),
                        self.line_of(&raw[j].get_ref().name.span())
                    ),
                ));
            }
        }
        Ok(registers)
    }

    /// The serial line keys shared by scanners and RTU buses.
    fn serial_line(&self, prefix: &str, l: LineRaw<'_>, default: SerialLine) -> Result<SerialLine> {
        let key = |k: &str| format!("{prefix}.{k}");
        let baud = match l.baud {
            None => default.baud,
            Some(b) => u32::try_from(*b.get_ref())
                .ok()
                .filter(|rate| BAUD_RATES.contains(rate))
                .ok_or_else(|| {
                    self.err(
                        b.span(),
                        &key("baud"),
                        format!("{} is not a standard baud rate", b.get_ref()),
                    )
                })?,
        };
        let data_bits = match l.data_bits {
            None => default.data_bits,
            Some(_) => match self.int(l.data_bits, &key("data_bits"), 8, 7..=8)? {
                7 => DataBits::Seven,
                _ => DataBits::Eight,
            },
        };
        let stop_bits = match l.stop_bits {
            None => default.stop_bits,
            Some(_) => match self.int(l.stop_bits, &key("stop_bits"), 1, 1..=2)? {
                2 => StopBits::Two,
                _ => StopBits::One,
            },
        };
        let parity = self.choice(
            l.parity,
            &key("parity"),
            default.parity,
            &[
                ("none", Parity::None),
                ("even", Parity::Even),
                ("odd", Parity::Odd),
            ],
        )?;
        let flow_control = self.choice(
            l.flow_control,
            &key("flow_control"),
            default.flow_control,
            &[
                ("none", FlowControl::None),
                ("software", FlowControl::Software),
                ("hardware", FlowControl::Hardware),
            ],
        )?;
        Ok(SerialLine {
            baud,
            data_bits,
            parity,
            stop_bits,
            flow_control,
        })
    }

    fn modbus_rtu(
        &self,
        prefix: &str,
        d: &DeviceEntry,
        m: &ModbusRtuRaw,
        bus_station: &str,
        stations: &[StationConfig],
    ) -> Result<ModbusRtuConfig> {
        let key = |k: &str| format!("{prefix}.{k}");
        let path = self.path(&m.path, &key("path"))?;
        let line = self.serial_line(
            prefix,
            LineRaw {
                baud: m.baud.as_ref(),
                data_bits: m.data_bits.as_ref(),
                parity: m.parity.as_ref(),
                stop_bits: m.stop_bits.as_ref(),
                flow_control: m.flow_control.as_ref(),
            },
            SerialLine {
                baud: 19200,
                parity: Parity::Even,
                ..SerialLine::default()
            },
        )?;
        let poll = self.poll(
            prefix,
            d,
            PollRaw {
                interval: m.poll_interval.as_ref(),
                timeout: m.timeout.as_ref(),
                reconnect_min: m.reconnect_min.as_ref(),
                reconnect_max: m.reconnect_max.as_ref(),
                max_gap: m.max_gap.as_ref(),
                heartbeat: m.heartbeat.as_ref(),
            },
        )?;
        let silent_interval = self.duration(
            m.silent_interval.as_ref(),
            &key("silent_interval"),
            default_silent_interval(&line),
            Duration::from_millis(1),
            Some(Duration::from_secs(1)),
        )?;
        if m.unit.is_empty() {
            return Err(self.err(
                d.span.clone(),
                &key("unit"),
                "a modbus-rtu bus needs at least one [[device.unit]]",
            ));
        }
        let units = m
            .unit
            .iter()
            .enumerate()
            .map(|(i, u)| self.rtu_unit(&format!("{prefix}.unit[{i}]"), u, bus_station, stations))
            .collect::<Result<Vec<_>>>()?;
        // Duplicate unit ids break the whole bus (two slaves answer at once).
        let mut seen: HashMap<u8, Range<usize>> = HashMap::new();
        for (i, (u, raw)) in units.iter().zip(&m.unit).enumerate() {
            let span = raw.get_ref().unit_id.span();
            if let Some(first) = seen.get(&u.unit_id) {
                return Err(self.err_plain(
                    span,
                    &format!("{prefix}.unit[{i}].unit_id"),
                    format!(
                        "duplicate unit id {} on this bus (first defined at line {}): two slaves \
                         with one address answer at once and garble each other",
                        u.unit_id,
                        self.line_of(first)
                    ),
                ));
            }
            seen.insert(u.unit_id, span);
        }
        let mut names: HashMap<&str, Range<usize>> = HashMap::new();
        for (i, (u, raw)) in units.iter().zip(&m.unit).enumerate() {
            let r = raw.get_ref();
            let span = r
                .name
                .as_ref()
                .map_or_else(|| r.unit_id.span(), |n| n.span());
            if let Some(first) = names.get(u.name.as_str()) {
                return Err(self.err_plain(
                    span,
                    &format!("{prefix}.unit[{i}].name"),
                    format!(
                        "duplicate unit name \"{}\" on this bus (first defined at line {})",
                        u.name,
                        self.line_of(first)
                    ),
                ));
            }
            names.insert(&u.name, span);
        }
        Ok(ModbusRtuConfig {
            path,
            line,
            poll,
            silent_interval,
            units,
        })
    }

    fn rtu_unit(
        &self,
        prefix: &str,
        raw: &Spanned<RtuUnitRaw>,
        bus_station: &str,
        stations: &[StationConfig],
    ) -> Result<RtuUnit> {
        let u = raw.get_ref();
        let key = |k: &str| format!("{prefix}.{k}");
        let unit_id = self.int(Some(&u.unit_id), &key("unit_id"), 1, 1..=247)?;
        let unit_id = u8::try_from(unit_id).unwrap_or(1);
        let name = match &u.name {
            Some(n) => self.id(n, &key("name"))?,
            None => format!("unit-{unit_id}"),
        };
        let station = match &u.station {
            Some(st) => self.station_ref(st, &key("station"), stations)?,
            None => bus_station.to_owned(),
        };
        let registers = self.register_map(
            prefix,
            raw.span(),
            &u.register,
            &station,
            stations,
            &format!("unit {unit_id} needs at least one [[device.unit.register]]"),
        )?;
        Ok(RtuUnit {
            unit_id,
            name,
            station,
            registers,
        })
    }

    fn register(
        &self,
        prefix: &str,
        raw: &Spanned<RegisterRaw>,
        device_station: &str,
        stations: &[StationConfig],
    ) -> Result<RegisterConfig> {
        let r = raw.get_ref();
        let key = |k: &str| format!("{prefix}.{k}");
        let name = self.id(&r.name, &key("name"))?;

        let table = self.choice(
            r.table.as_ref(),
            &key("table"),
            None,
            &[
                ("coil", Some(Table::Coil)),
                ("discrete", Some(Table::Discrete)),
                ("input", Some(Table::Input)),
                ("holding", Some(Table::Holding)),
            ],
        )?;
        let (table, address) = match r.address.get_ref() {
            AddressRaw::Pdu(n) => {
                let Some(table) = table else {
                    return Err(self.err(
                        raw.span(),
                        &key("table"),
                        format!(
                            "missing `table`: the integer address {n} is a 0-based address and \
                             does not say which table; add table = \"holding\" (or coil, discrete, \
                             input), or write a Modicon address as a string such as \"40001\""
                        ),
                    ));
                };
                let address = u16::try_from(*n).map_err(|_| {
                    self.err(
                        r.address.span(),
                        &key("address"),
                        format!("{n} is out of range 0..=65535"),
                    )
                })?;
                (table, address)
            }
            AddressRaw::Modicon(text) => {
                let (from_modicon, address) = parse_modicon(text)
                    .map_err(|e| self.err(r.address.span(), &key("address"), e))?;
                if let (Some(t), Some(written)) = (table, &r.table)
                    && t != from_modicon
                {
                    return Err(self.err_plain(
                        written.span(),
                        &key("table"),
                        format!(
                            "table \"{}\" disagrees with address \"{text}\", which is in the {} table \
                             (0-based {address}); remove `table` or fix one of them",
                            t.as_str(),
                            from_modicon.as_str()
                        ),
                    ));
                }
                (from_modicon, address)
            }
        };

        let default_type = if table.is_bits() {
            DataType::Bool
        } else {
            DataType::U16
        };
        let data_type = self.choice(
            r.data_type.as_ref(),
            &key("type"),
            default_type,
            &[
                ("bool", DataType::Bool),
                ("u16", DataType::U16),
                ("i16", DataType::I16),
                ("u32", DataType::U32),
                ("i32", DataType::I32),
                ("f32", DataType::F32),
                ("u64", DataType::U64),
            ],
        )?;
        // Only reachable with an explicit `type` (the default always fits).
        let type_span = r
            .data_type
            .as_ref()
            .map_or_else(|| raw.span(), |t| t.span());
        if table.is_bits() && data_type != DataType::Bool {
            return Err(self.err(
                type_span,
                &key("type"),
                format!(
                    "the {} table holds single bits: its type must be \"bool\", not \"{}\"",
                    table.as_str(),
                    data_type.as_str()
                ),
            ));
        }
        if !table.is_bits() && data_type == DataType::Bool {
            return Err(self.err(
                type_span,
                &key("type"),
                format!(
                    "\"bool\" is only for the coil and discrete tables; the {} table holds \
                     16-bit registers (use u16 for a register holding 0/1)",
                    table.as_str()
                ),
            ));
        }
        let last = u32::from(address) + u32::from(data_type.registers()) - 1;
        if last > 65535 {
            return Err(self.err(
                r.address.span(),
                &key("address"),
                format!(
                    "a {} at address {address} takes {} registers and would end at {last}, \
                     beyond the last address 65535",
                    data_type.as_str(),
                    data_type.registers()
                ),
            ));
        }

        let word_order = self.choice(
            r.word_order.as_ref(),
            &key("word_order"),
            WordOrder::Abcd,
            &[
                ("ABCD", WordOrder::Abcd),
                ("CDAB", WordOrder::Cdab),
                ("BADC", WordOrder::Badc),
                ("DCBA", WordOrder::Dcba),
            ],
        )?;
        let role = self.choice(
            Some(&r.role),
            &key("role"),
            Role::Value,
            &[
                ("counter", Role::Counter),
                ("state", Role::State),
                ("value", Role::Value),
            ],
        )?;
        if role == Role::Counter && matches!(data_type, DataType::F32 | DataType::Bool) {
            return Err(self.err(
                type_span,
                &key("type"),
                format!(
                    "a counter must be an integer type (u16, i16, u32, i32 or u64), not \"{}\"; \
                     use role = \"value\" for a measured {}",
                    data_type.as_str(),
                    if data_type == DataType::Bool {
                        "bit"
                    } else {
                        "number"
                    }
                ),
            ));
        }
        let scale = self.factor(r.scale.as_ref(), &key("scale"), role, 1.0)?;
        let offset = self.factor(r.offset.as_ref(), &key("offset"), role, 0.0)?;
        if let Some(v) = &r.scale
            && scale == 0.0
        {
            return Err(self.err(
                v.span(),
                &key("scale"),
                "scale 0 would make every value equal to offset",
            ));
        }
        let max_rate = match &r.max_rate {
            None => 1000.0,
            Some(v) => {
                if role != Role::Counter {
                    return Err(self.err(
                        v.span(),
                        &key("max_rate"),
                        format!(
                            "max_rate is only for counters (this register's role is \"{}\")",
                            role.as_str()
                        ),
                    ));
                }
                let rate = *v.get_ref();
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(self.err(
                        v.span(),
                        &key("max_rate"),
                        format!("{rate} is not a number of units per second above 0"),
                    ));
                }
                rate
            }
        };
        let station = match &r.station {
            Some(st) => self.station_ref(st, &key("station"), stations)?,
            None => device_station.to_owned(),
        };

        Ok(RegisterConfig {
            name,
            station,
            table,
            address,
            data_type,
            word_order,
            scale,
            offset,
            role,
            max_rate,
        })
    }

    /// `scale` or `offset`: a finite number, allowed only for the `value` role.
    fn factor(&self, v: Option<&Spanned<f64>>, key: &str, role: Role, default: f64) -> Result<f64> {
        let Some(v) = v else { return Ok(default) };
        let name = key.rsplit('.').next().unwrap_or(key);
        if role != Role::Value {
            return Err(self.err_plain(
                v.span(),
                key,
                format!(
                    "{name} is only for role = \"value\": a {} is reported raw, as the PLC \
                     counts it; remove {name}, or use role = \"value\"",
                    role.as_str()
                ),
            ));
        }
        let x = *v.get_ref();
        if !x.is_finite() {
            return Err(self.err(v.span(), key, format!("{x} is not a finite number")));
        }
        Ok(x)
    }

    fn serial_scanner(
        &self,
        prefix: &str,
        d: &DeviceEntry,
        s: &SerialScannerRaw,
    ) -> Result<SerialScannerConfig> {
        let key = |k: &str| format!("{prefix}.{k}");
        let path = self.path(&s.path, &key("path"))?;

        let line = self.serial_line(
            prefix,
            LineRaw {
                baud: s.baud.as_ref(),
                data_bits: s.data_bits.as_ref(),
                parity: s.parity.as_ref(),
                stop_bits: s.stop_bits.as_ref(),
                flow_control: s.flow_control.as_ref(),
            },
            SerialLine::default(),
        )?;

        let suffix = match &s.suffix {
            Some(v) => {
                parse_bytes(v.get_ref()).map_err(|e| self.err(v.span(), &key("suffix"), e))?
            }
            None => b"\r".to_vec(),
        };
        let prefix_bytes = match &s.prefix {
            Some(v) => {
                parse_bytes(v.get_ref()).map_err(|e| self.err(v.span(), &key("prefix"), e))?
            }
            None => Vec::new(),
        };
        let idle_timeout = s
            .idle_timeout
            .as_ref()
            .map(|v| {
                self.duration(
                    Some(v),
                    &key("idle_timeout"),
                    Duration::ZERO,
                    Duration::from_millis(1),
                    Some(Duration::from_secs(10)),
                )
            })
            .transpose()?;
        if suffix.is_empty() && idle_timeout.is_none() {
            let span = s.suffix.as_ref().map_or(d.span.clone(), |v| v.span());
            return Err(self.err(
                span,
                &key("idle_timeout"),
                "suffix is \"none\", so idle_timeout is required to know where a scan ends",
            ));
        }
        let max_len = self.int(
            s.max_frame_len.as_ref(),
            &key("max_frame_len"),
            512,
            16..=4096,
        )?;
        let reconnect = self.backoff(
            prefix,
            s.reconnect_min.as_ref(),
            s.reconnect_max.as_ref(),
            BackoffConfig {
                min: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            d.span.clone(),
        )?;

        Ok(SerialScannerConfig {
            path,
            line,
            framing: FramingConfig {
                prefix: prefix_bytes,
                suffix,
                idle_timeout,
                max_len: to_usize(max_len),
            },
            reconnect,
        })
    }

    /// Two devices must not open the same device node.
    fn unique_device_paths(&self, devices: &[DeviceEntry]) -> Result<()> {
        let mut seen: HashMap<PathBuf, (&str, Range<usize>)> = HashMap::new();
        for d in devices {
            let (id, raw_path) = match &d.kind {
                DeviceRaw::SerialScanner(s) => (&s.id, &s.path),
                DeviceRaw::ModbusRtu(m) => (&m.id, &m.path),
                DeviceRaw::ModbusTcp(_) => continue,
            };
            let key = format!("device[{}].path", d.index);
            let path = self.path(raw_path, &key)?;
            if let Some((other, first)) = seen.get(&path) {
                return Err(self.err_plain(
                    raw_path.span(),
                    &key,
                    format!(
                        "{} is already used by device \"{other}\" (line {})",
                        path.display(),
                        self.line_of(first)
                    ),
                ));
            }
            seen.insert(path, (id.get_ref(), raw_path.span()));
        }
        Ok(())
    }
}

/// `holding 0` or `holding 0..=1`: the registers an entry occupies.
fn span_text(r: &RegisterConfig) -> String {
    let last = u32::from(r.address) + u32::from(r.width()) - 1;
    if last == u32::from(r.address) {
        format!("{} {}", r.table.as_str(), r.address)
    } else {
        format!("{} {}..={last}", r.table.as_str(), r.address)
    }
}

/// A Modicon address string → (table, 0-based address).
///
/// Exactly 5 or 6 ASCII digits: the first names the table (0 coil, 1 discrete
/// input, 3 input register, 4 holding register), the rest is the 1-based
/// register number (1..=9999 in 5 digits, 1..=65536 in 6). `"40001"` is
/// holding 0, `"30010"` input 9, `"400001"` holding 0, `"465536"` holding 65535.
pub fn parse_modicon(text: &str) -> std::result::Result<(Table, u16), String> {
    if !(text.len() == 5 || text.len() == 6) || !text.bytes().all(|b| b.is_ascii_digit()) {
        let hint = match text.trim().parse::<i64>() {
            Ok(n) if text.len() < 5 => {
                format!("; for a 0-based address write an integer without quotes (address = {n})")
            }
            _ => String::new(),
        };
        return Err(format!(
            "\"{text}\" is not a Modicon address: a string address must be 5 or 6 digits \
             such as \"40001\"{hint}"
        ));
    }
    let table = match text.as_bytes()[0] {
        b'0' => Table::Coil,
        b'1' => Table::Discrete,
        b'3' => Table::Input,
        b'4' => Table::Holding,
        d => {
            return Err(format!(
                "\"{text}\" is not a Modicon address: the first digit {} names no table \
                 (0 coil, 1 discrete, 3 input, 4 holding)",
                char::from(d)
            ));
        }
    };
    let number: u32 = text[1..].parse().unwrap_or(0);
    if number == 0 {
        return Err(format!(
            "\"{text}\" is not a Modicon address: register numbers start at 1 (\"{}\" is the first)",
            table.modicon(0)
        ));
    }
    let address = u16::try_from(number - 1).map_err(|_| {
        format!(
            "\"{text}\" is beyond the last register (\"{}\")",
            table.modicon(65535)
        )
    })?;
    Ok((table, address))
}

fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The template as written, or `default` (spanned at the `[mqtt]` header).
fn template_or(
    v: Option<&Spanned<String>>,
    default: &str,
    table: &Spanned<MqttRaw>,
) -> (String, Range<usize>) {
    match v {
        Some(v) => (v.get_ref().clone(), v.span()),
        None => (default.to_owned(), table.span()),
    }
}

/// Formats a duration the way it is written in the config (`"15s"`, `"500ms"`).
pub fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        "0ms".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Formats a byte count the way it is written in the config (`"8MiB"`).
pub fn fmt_size(n: u64) -> String {
    for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// `"8MiB"`, `"64 KiB"`, `"1GiB"`, `"4096"`, `"4096B"` → bytes.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("\"{text}\" is not a size"));
    }
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        u @ ("K" | "k" | "KB" | "kB" | "M" | "MB" | "G" | "GB") => {
            let hint = match u.chars().next() {
                Some('M') => "MiB",
                Some('G') => "GiB",
                _ => "KiB",
            };
            return Err(format!(
                "unit \"{u}\" is ambiguous in \"{text}\": write {hint} (powers of 1024)"
            ));
        }
        u => return Err(format!("unknown unit \"{u}\" in \"{text}\"")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// `"CR"`, `"LF"`, `"CRLF"`, `"TAB"`, `"none"`/`""`, `"hex:0D0A"` → bytes.
pub fn parse_bytes(text: &str) -> std::result::Result<Vec<u8>, String> {
    let t = text.trim();
    if let Some(hex) = t
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("hex:"))
        .map(|_| &t[4..])
    {
        let digits: Vec<char> = hex.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.is_empty() {
            return Err(format!("\"{text}\" has no bytes after hex:"));
        }
        if !digits.len().is_multiple_of(2) {
            return Err(format!("\"{text}\" has an odd number of hex digits"));
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let s: String = pair.iter().collect();
                u8::from_str_radix(&s, 16)
                    .map_err(|_| format!("\"{s}\" in \"{text}\" is not a hex byte"))
            })
            .collect();
    }
    match t.to_ascii_uppercase().as_str() {
        "" | "NONE" => Ok(Vec::new()),
        "CR" => Ok(b"\r".to_vec()),
        "LF" => Ok(b"\n".to_vec()),
        "CRLF" => Ok(b"\r\n".to_vec()),
        "TAB" => Ok(b"\t".to_vec()),
        _ => Err(format!("unknown value \"{text}\"")),
    }
}

/// The readable part of a regex error (its last `error: …` line).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| text.replace('\n', " "), str::to_owned)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Placeholder(String),
}

/// Splits a topic template into literal text and `{name}` placeholders.
fn parse_template(text: &str, allowed: &[&str]) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("\"{text}\" has a `}}` without `{{`"));
        }
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("\"{text}\" has a `{{` without `}}`"));
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            let list = allowed
                .iter()
                .map(|a| format!("{{{a}}}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(format!(
                "unknown placeholder {{{name}}} in \"{text}\" (known here: {list})"
            ));
        }
        pieces.push(Piece::Placeholder(name.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_owned()));
    }
    Ok(pieces)
}

/// Renders the pieces; placeholders `value` returns `None` for stay as `{name}`.
fn render(pieces: &[Piece], value: &dyn Fn(&str) -> Option<String>) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Literal(s) => s.clone(),
            Piece::Placeholder(n) => value(n).unwrap_or_else(|| format!("{{{n}}}")),
        })
        .collect()
}

/// A concrete MQTT topic to publish on: the reason it is not valid, if any.
fn check_topic(topic: &str) -> std::result::Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".into());
    }
    if topic.starts_with('/') {
        return Err("starts with `/`".into());
    }
    if topic.ends_with('/') {
        return Err("ends with `/`".into());
    }
    if topic.contains("//") {
        return Err("has an empty level (`//`)".into());
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(format!("contains the wildcard `{c}`"));
    }
    if topic.starts_with('$') {
        return Err("starts with `$` (reserved for broker topics)".into());
    }
    if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("8MiB", Some(8 * MIB)),
            ("64 KiB", Some(64 * KIB)),
            ("1GiB", Some(GIB)),
            ("4096", Some(4096)),
            ("4096B", Some(4096)),
            ("8MB", None),
            ("8 mib", None),
            ("MiB", None),
            ("-1", None),
            ("99999999999999999999GiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), *want, "{text}");
        }
        assert!(
            parse_size("8MB")
                .err()
                .is_some_and(|e| e.contains("write MiB"))
        );
    }

    #[test]
    fn framing_bytes() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("CR", Some(b"\r")),
            ("lf", Some(b"\n")),
            ("CRLF", Some(b"\r\n")),
            ("TAB", Some(b"\t")),
            ("none", Some(b"")),
            ("", Some(b"")),
            ("hex:0D0A", Some(b"\r\n")),
            ("hex:02", Some(b"\x02")),
            ("HEX:0d 0a", Some(b"\r\n")),
            ("hex:", None),
            ("hex:0", None),
            ("hex:zz", None),
            ("ETX", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_bytes(text).ok().as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn templates() {
        let p = parse_template("{root}/x/{kind}", RECORD_PLACEHOLDERS).expect("valid");
        assert_eq!(
            p,
            vec![
                Piece::Placeholder("root".into()),
                Piece::Literal("/x/".into()),
                Piece::Placeholder("kind".into()),
            ]
        );
        assert!(parse_template("{site}/{root}", ROOT_PLACEHOLDERS).is_err());
        assert!(parse_template("{site", ROOT_PLACEHOLDERS).is_err());
        assert!(parse_template("site}", ROOT_PLACEHOLDERS).is_err());
        let r = render(&p, &|n: &str| (n == "root").then(|| "a/b".to_owned()));
        assert_eq!(r, "a/b/x/{kind}");
    }

    #[test]
    fn topics() {
        for ok in ["a", "a/b", "plant1/line-3/gw.1"] {
            assert_eq!(check_topic(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/+/b", "a/#", "$SYS/x", "a b"] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_and_sizes_format_as_written() {
        assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(fmt_duration(Duration::from_secs(15)), "15s");
        assert_eq!(fmt_duration(Duration::ZERO), "0ms");
        assert_eq!(fmt_size(8 * MIB), "8MiB");
        assert_eq!(fmt_size(1000), "1000 bytes");
    }
}
