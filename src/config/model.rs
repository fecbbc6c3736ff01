//! The validated configuration: what the rest of the gateway consumes.
//!
//! Every value here has passed the cross-checks in `config::validate`; no other
//! module ever sees TOML. Durations are parsed, ids are checked to be safe MQTT
//! topic levels, device → station references resolve, regexes compile.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::numbering::{Calendar, Reset, Shift, Template};

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from (for messages).
    pub source: PathBuf,
    pub gateway: GatewayConfig,
    pub store: StoreConfig,
    pub mqtt: MqttConfig,
    /// Plant time: time zone and shift plan (lot dates, resets, rotation,
    /// operator logout at shift end).
    pub calendar: Calendar,
    pub stations: Vec<StationConfig>,
    pub devices: Vec<DeviceConfig>,
    /// `[commands]`: the MES's key and whether commands must be signed.
    pub commands: crate::uplink::signed::Signing,
    /// `[metrics] listen`: where the Prometheus endpoint listens; `None`: off.
    pub metrics: Option<std::net::SocketAddr>,
}

/// The control socket's file name in the data directory (`app::control`).
pub const CONTROL_SOCKET: &str = "control.sock";
/// The name the control socket is bound under before it is renamed into
/// place (no longer than [`CONTROL_SOCKET`]: the same length limit holds).
pub const CONTROL_SOCKET_BINDING: &str = ".control.tmp";
/// The longest path a Unix socket can be bound at: `sun_path` holds 108
/// bytes on Linux, its terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Gateway id: MQTT client id and the `gateway` field of every record.
    pub id: String,
    pub site: String,
    pub line: String,
    /// Directory holding the durable store.
    pub data_dir: PathBuf,
}

/// The engine behind the durable store (`[store] engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEngine {
    /// sled 0.34, with linegate's own fdatasync after each flush (kept for
    /// stores that already use it).
    Sled,
    /// redb: each commit is one write transaction, fsynced by redb (the
    /// default for a new store).
    Redb,
}

impl StoreEngine {
    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            StoreEngine::Sled => "sled",
            StoreEngine::Redb => "redb",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `None` when the key is absent: the engine of the store already in the
    /// data dir, else redb (`store::open` decides).
    pub engine: Option<StoreEngine>,
    /// Shortest time between the starts of two group commits unless a full
    /// batch waits (default 10 ms); a record that finds the pipeline idle
    /// after that is committed at once.
    pub commit_interval: Duration,
    /// A group commit happens as soon as this many records are pending (default 256).
    pub commit_max_records: usize,
    /// Engine page-cache budget in bytes (default 2 MiB).
    pub cache_bytes: u64,
    /// Capacity of the queue: encoded bytes of unacknowledged records
    /// (`queue.bytes`), at most (default 1 GiB).
    pub max_bytes: u64,
    /// What happens to new readings once the queue is full (default refuse).
    pub when_full: WhenFull,
    /// Free space the data directory's filesystem must keep; below it the
    /// store counts as full (default 128 MiB).
    pub min_disk_free: u64,
}

/// `[store] when_full`: the policy once the store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// New readings and commands are refused (counted, alarmed) before they
    /// change any station state; nothing accepted is ever dropped.
    Refuse,
    /// The oldest unacknowledged records are deleted to make room, in the
    /// same commit as the new ones, and reported with their seqs.
    DropOldest,
}

impl WhenFull {
    /// The name used in the config file and the status message.
    pub fn name(self) -> &'static str {
        match self {
            WhenFull::Refuse => "refuse",
            WhenFull::DropOldest => "drop-oldest",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The brokers, tried in this order (`host`/`port`, or `brokers`): at
    /// every reconnect from the first, the next when one cannot be reached
    /// or its handshake fails. Never empty.
    pub brokers: Vec<Broker>,
    /// Connected to another broker than the first, the gateway moves back
    /// to the first once it has accepted TCP connections for this long
    /// (and the current connection has lasted as long). Zero: never; it
    /// returns only at a reconnect.
    pub return_to_first: Duration,
    /// TLS to the broker (`[mqtt.tls]`); `None`: plaintext MQTT.
    pub tls: Option<TlsConfig>,
    /// Warnings about the config worth a technician's look (a key or
    /// password file others may read): printed by `linegate check`, logged
    /// at start.
    pub warnings: Vec<String>,
    /// Keepalive interval, at most 30 s so a dead link is seen within a minute.
    pub keepalive: Duration,
    pub username: Option<String>,
    /// Read from `password_file` at load; never written to logs.
    pub password: Option<Secret>,
    /// Records published and not yet acknowledged, at most (default 32).
    pub max_inflight: u16,
    /// Largest MQTT packet sent, in bytes (default 64 KiB).
    pub max_packet_bytes: usize,
    /// Backoff between reconnect attempts.
    pub reconnect: BackoffConfig,
    /// How often the retained status message is refreshed (default 30 s).
    pub status_interval: Duration,
    pub topics: Topics,
}

/// One broker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Broker {
    /// `host:port`, an IPv6 address in brackets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS to the broker, read and checked at load (`[mqtt.tls]`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The rustls client config (ring provider): trust anchors, client
    /// certificate and key, server name check.
    pub client: std::sync::Arc<rustls::ClientConfig>,
    /// Where the trust anchors come from: the `ca_file` path, or `None`
    /// for the system trust store (for the summary).
    pub ca_file: Option<PathBuf>,
    /// The client certificate presented (mutual TLS), if any.
    pub cert_file: Option<PathBuf>,
    /// The name the broker's certificate is checked against, when not its host.
    pub server_name: Option<String>,
}

/// A secret read from a file; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Topic layout, rendered from the configured templates.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `{site}/{line}` rendered, e.g. `plant1/line3`.
    pub root: String,
    /// Template for record topics; placeholders `{station}` and `{kind}` remain.
    pub record: String,
    /// `{root}/gateway/{gateway}` rendered: status, commands and gateway-level records live under it.
    pub gateway: String,
}

impl Topics {
    /// Topic of a record of `kind` at `station` (or at the gateway when `None`).
    pub fn record_topic(&self, station: Option<&str>, kind: &str) -> String {
        match station {
            Some(station) => self
                .record
                .replace("{station}", station)
                .replace("{kind}", kind),
            None => format!("{}/{}", self.gateway, kind),
        }
    }

    /// Retained birth/status topic (last will: offline).
    pub fn status(&self) -> String {
        format!("{}/status", self.gateway)
    }

    /// Subscription filter for MES commands.
    pub fn command_filter(&self) -> String {
        format!("{}/cmd/+", self.gateway)
    }

    /// The command name if `topic` is a command topic of this gateway.
    pub fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.gateway)?.strip_prefix("/cmd/")?;
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }

    /// Where the result of command `name` is published.
    pub fn command_result(&self, name: &str) -> String {
        format!("{}/cmd/{}/result", self.gateway, name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct StationConfig {
    pub id: String,
    /// Ordered; the first rule that matches a scan wins.
    pub scan_rules: Vec<ScanRule>,
    pub lot: LotConfig,
    pub operator: OperatorConfig,
}

/// How a station's lots are numbered, opened and closed (`[station.lot]`).
#[derive(Debug, Clone)]
pub struct LotConfig {
    /// Lot numbers generated by the gateway; `None`: lots only come from a
    /// scanned label or a command that names the lot.
    pub numbering: Option<LotNumbering>,
    /// Close the open lot and open the next at each shift or day boundary.
    pub rotate: Rotate,
    /// Close the lot and open the next when `good` has counted this many units.
    pub target: Option<u64>,
    /// Counter (register name at this station) of good units.
    pub good: Option<String>,
    /// Counter (register name at this station) of scrap units.
    pub scrap: Option<String>,
    /// Where a product serial must be unique.
    pub duplicate_window: DuplicateWindow,
    /// Keep a lot open: open a generated lot whenever none is (at start-up,
    /// and at once when one is closed on request).
    pub auto_open: bool,
    /// Entries of each list (materials, operators, orders) one lot record
    /// carries; longer lists continue in `totals` records. Not a key:
    /// derived from `mqtt.max_packet_size` so every lot record fits.
    pub totals_per_part: usize,
}

/// Entries per lot record when nothing smaller is needed.
pub const DEFAULT_TOTALS_PER_PART: usize = 32;

impl Default for LotConfig {
    fn default() -> Self {
        LotConfig {
            numbering: None,
            rotate: Rotate::default(),
            target: None,
            good: None,
            scrap: None,
            duplicate_window: DuplicateWindow::default(),
            auto_open: false,
            totals_per_part: DEFAULT_TOTALS_PER_PART,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LotNumbering {
    pub template: Template,
    /// The template as written (for `linegate check`).
    pub template_text: String,
    pub reset: Reset,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rotate {
    #[default]
    Never,
    Shift,
    Day,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DuplicateWindow {
    /// A serial may appear once per lot.
    #[default]
    Lot,
    /// A serial may appear once within this time, across lots.
    Time(Duration),
}

/// Operator sessions at a station (`[station.operator]`).
#[derive(Debug, Clone, Default)]
pub struct OperatorConfig {
    /// Log the operator out when their shift ends.
    pub logout_at_shift_end: bool,
    /// Log the operator out after this long without a scan at the station.
    pub idle_logout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ScanRule {
    pub name: String,
    /// Matched against the scan as text (lossy UTF-8), without its AIM
    /// identifier. The value taken is described at `station::rules::value_of`.
    pub pattern: Option<regex::Regex>,
    /// AIM symbology identifiers (`]d2`); the scan must carry one of them.
    pub symbology: Vec<String>,
    /// GS1 AIs that must all be present (the scan must be valid GS1).
    pub gs1: Vec<String>,
    pub action: RuleAction,
    /// GS1 AI the value is taken from (set-lot, set-order, set-operator,
    /// product).
    pub value_ai: Option<String>,
    /// Reason given in the record of a `reject` rule.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    SetLot,
    SetOrder,
    SetOperator,
    ConsumeMaterial,
    Product,
    Reject,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::SetLot => "set-lot",
            RuleAction::SetOrder => "set-order",
            RuleAction::SetOperator => "set-operator",
            RuleAction::ConsumeMaterial => "consume-material",
            RuleAction::Product => "product",
            RuleAction::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub station: String,
    pub kind: DeviceKind,
}

#[derive(Debug, Clone)]
pub enum DeviceKind {
    SerialScanner(SerialScannerConfig),
    ModbusTcp(ModbusTcpConfig),
    ModbusRtu(ModbusRtuConfig),
}

impl DeviceConfig {
    /// Every mapped register of a Modbus device (all units of an RTU bus);
    /// none for other devices.
    pub fn registers(&self) -> Box<dyn Iterator<Item = &RegisterConfig> + '_> {
        match &self.kind {
            DeviceKind::ModbusTcp(m) => Box::new(m.registers.iter()),
            DeviceKind::ModbusRtu(m) => Box::new(m.units.iter().flat_map(|u| u.registers.iter())),
            DeviceKind::SerialScanner(_) => Box::new(std::iter::empty()),
        }
    }
}

impl DeviceKind {
    /// The `type` as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            DeviceKind::SerialScanner(_) => "serial-scanner",
            DeviceKind::ModbusTcp(_) => "modbus-tcp",
            DeviceKind::ModbusRtu(_) => "modbus-rtu",
        }
    }
}

/// A PLC reached over Modbus TCP.
#[derive(Debug, Clone)]
pub struct ModbusTcpConfig {
    pub host: String,
    pub port: u16,
    /// Modbus unit id (slave id), 0..=255; 1 for most PLCs, 255 for some gateways.
    pub unit_id: u8,
    pub poll: PollConfig,
    /// The register map, in config order.
    pub registers: Vec<RegisterConfig>,
}

/// One RS-485 bus of Modbus RTU slaves ("units"), polled by one task that
/// owns the serial port.
#[derive(Debug, Clone)]
pub struct ModbusRtuConfig {
    /// Device node of the RS-485 adapter, preferably `/dev/serial/by-id/…`.
    pub path: PathBuf,
    /// Line settings (default 19200 8E1, the Modbus serial-line default).
    pub line: SerialLine,
    /// Poll interval, per-request timeout, backoff (of a dead unit, and of
    /// reopening the port), max gap and heartbeat: the same for every unit.
    pub poll: PollConfig,
    /// Silence kept on the bus before every request (t3.5; default from the
    /// baud rate, at least 1.75 ms).
    pub silent_interval: Duration,
    /// The slaves on the bus, in config order; unit ids and names unique.
    pub units: Vec<RtuUnit>,
}

/// One slave on an RS-485 bus.
#[derive(Debug, Clone, PartialEq)]
pub struct RtuUnit {
    /// Modbus slave address, 1..=247.
    pub unit_id: u8,
    /// Unique on the bus (default `unit-<id>`); readings of this unit carry
    /// the device id `<bus>/<name>` (see [`RtuUnit::device_id`]).
    pub name: String,
    /// Default station of the unit's registers (the bus's `station` unless set).
    pub station: String,
    /// The unit's register map, in config order.
    pub registers: Vec<RegisterConfig>,
}

impl RtuUnit {
    /// The `device` of this unit's readings and records: `<bus>/<name>`,
    /// e.g. `rs485-1/unit-3`. Register names are unique per unit only, so
    /// counters are kept (and persisted) per `(<bus>/<name>, register)`.
    pub fn device_id(&self, bus: &str) -> String {
        format!("{bus}/{}", self.name)
    }
}

/// t3.5 for a line: 3.5 character times (start, data, parity and stop bits),
/// and never less than 1.75 ms, the fixed value the Modbus serial-line spec
/// prescribes above 19200 baud.
pub fn default_silent_interval(line: &SerialLine) -> Duration {
    let bits =
        1 + match line.data_bits {
            DataBits::Seven => 7,
            DataBits::Eight => 8,
        } + u64::from(line.parity != Parity::None)
            + match line.stop_bits {
                StopBits::One => 1,
                StopBits::Two => 2,
            };
    let nanos = 3_500_000_000 * bits / u64::from(line.baud.max(1)) / 1000;
    Duration::from_nanos(nanos * 1000).max(Duration::from_micros(1750))
}

/// How a Modbus device is polled.
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    /// Time between the starts of two polls (default 1 s).
    pub interval: Duration,
    /// Every request's timeout (default 1 s); tokio-modbus has none of its own.
    pub timeout: Duration,
    /// Backoff between reconnect attempts after a failure.
    pub reconnect: BackoffConfig,
    /// Registers (or coils) of unmapped gap a block read may span to merge two
    /// mapped ranges into one request (default 8).
    pub max_gap: u16,
    /// Emit a `count` record even without change this often (default: never).
    pub heartbeat: Option<Duration>,
}

/// One mapped value, as a PLC manual lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterConfig {
    /// Unique within the device; names the value in records.
    pub name: String,
    /// Station the value belongs to (defaults to the device's station).
    pub station: String,
    pub table: Table,
    /// 0-based PDU address (`40001` in the config becomes holding 0).
    pub address: u16,
    pub data_type: DataType,
    pub word_order: WordOrder,
    /// Engineering value = raw × scale + offset (for `value` roles).
    pub scale: f64,
    pub offset: f64,
    pub role: Role,
    /// For counters: the highest plausible rate (units/s), used to tell a
    /// wrap-around from a PLC reset (default 1000).
    pub max_rate: f64,
}

impl RegisterConfig {
    /// Registers (or bits, for coil/discrete) the value occupies.
    pub fn width(&self) -> u16 {
        self.data_type.registers()
    }

    /// The same address in Modicon notation (`"40001"` for holding 0): 5 digits
    /// up to register number 9999, 6 digits (`"410000"`) beyond.
    pub fn modicon(&self) -> String {
        self.table.modicon(self.address)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    Discrete,
    Input,
    Holding,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    /// Bit tables (coil, discrete) read single bits; register tables 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Leading digit of the table in Modicon notation: 0 coil, 1 discrete
    /// input, 3 input register, 4 holding register.
    pub fn modicon_digit(self) -> u8 {
        match self {
            Table::Coil => 0,
            Table::Discrete => 1,
            Table::Input => 3,
            Table::Holding => 4,
        }
    }

    /// The Modicon form of 0-based `address` in this table: register number
    /// `address + 1` after the table digit, in 5 digits when it fits (up to
    /// 9999, `"40001"`) and 6 otherwise (`"465536"` for holding 65535).
    pub fn modicon(self, address: u16) -> String {
        let number = u32::from(address) + 1;
        let digit = self.modicon_digit();
        if number <= 9999 {
            format!("{digit}{number:04}")
        } else {
            format!("{digit}{number:05}")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
    U64,
}

impl DataType {
    /// Width in registers (1 for bool: one bit of a bit table).
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 => 4,
        }
    }

    /// Bits of the raw integer, for counter wrap arithmetic.
    pub fn bits(self) -> u32 {
        match self {
            DataType::Bool => 1,
            DataType::U16 | DataType::I16 => 16,
            DataType::U32 | DataType::I32 | DataType::F32 => 32,
            DataType::U64 => 64,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::F32 => "f32",
            DataType::U64 => "u64",
        }
    }
}

/// Order of the bytes of a multi-register value, named by where the most
/// significant byte `A` travels: `ABCD` big-endian (high word first), `CDAB`
/// word-swapped, `BADC` byte-swapped, `DCBA` little-endian. For 64-bit values
/// the same swap applies to the four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl WordOrder {
    /// As written in the config (`"CDAB"`).
    pub fn as_str(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
            WordOrder::Badc => "BADC",
            WordOrder::Dcba => "DCBA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A production counter: `count` records with deltas, wrap and reset detection.
    Counter,
    /// A state (run/stop/fault): a `state` record on each change.
    State,
    /// A measured value: a `value` record on each change.
    Value,
}

impl Role {
    /// As written in the config (`"counter"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Counter => "counter",
            Role::State => "state",
            Role::Value => "value",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SerialScannerConfig {
    /// Device node, preferably a stable `/dev/serial/by-id/…` link.
    pub path: PathBuf,
    pub line: SerialLine,
    pub framing: FramingConfig,
    pub reconnect: BackoffConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialLine {
    pub baud: u32,
    pub data_bits: DataBits,
    pub parity: Parity,
    pub stop_bits: StopBits,
    pub flow_control: FlowControl,
}

impl Default for SerialLine {
    /// 9600 8N1 without flow control: what most scanners ship with.
    fn default() -> Self {
        SerialLine {
            baud: 9600,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            flow_control: FlowControl::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataBits {
    Seven,
    Eight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBits {
    One,
    Two,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    None,
    Software,
    Hardware,
}

/// How a byte stream is cut into frames (one frame = one scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingConfig {
    /// Bytes the scanner sends before each code; stripped when present.
    pub prefix: Vec<u8>,
    /// Terminator (CR, LF, CRLF or any byte sequence); empty when framing by idle time only.
    pub suffix: Vec<u8>,
    /// A frame also ends when no byte arrives for this long (scanners without a suffix).
    pub idle_timeout: Option<Duration>,
    /// Longest accepted frame; longer ones are discarded whole and counted.
    pub max_len: usize,
}
