//! The record: one fact captured at a station, stamped with its context.
//!
//! Records are produced by `station`, given their `seq` by `store` at commit,
//! and turned into the wire format by `uplink`. This type is the internal
//! vocabulary; the MQTT payload (docs/mqtt.md) is built from it in
//! `uplink::payload` and nowhere else. Free texts are bounded here
//! ([`bounded`], [`MAX_MESSAGE`]) so every record fits one MQTT packet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gs1::Element;

/// One record. `seq` is 0 until the store commits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Capture time, milliseconds since the Unix epoch (UTC).
    pub ts_ms: u64,
    /// Whether the kernel reported the clock as synchronised at capture.
    pub clock_synced: bool,
    /// Station the record belongs to; `None` for gateway-level records
    /// (e.g. the audit of a command that named no valid station).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    pub body: Body,
}

impl Record {
    /// A gateway-level record (no station, device or context) with `body`.
    /// `seq` is given by the commit.
    pub fn gateway(ts_ms: u64, body: Body) -> Record {
        Record::gateway_at(ts_ms, crate::clock::clock_synced(), body)
    }

    /// [`Record::gateway`] with the clock's state given (the stations
    /// take it from the reading or tick that made the record).
    pub fn gateway_at(ts_ms: u64, clock_synced: bool, body: Body) -> Record {
        Record {
            seq: 0,
            ts_ms,
            clock_synced,
            station: None,
            device: None,
            lot: None,
            order: None,
            operator: None,
            body,
        }
    }

    /// A gateway-level alarm, its message bounded like every alarm's
    /// ([`MAX_MESSAGE`]).
    pub fn gateway_alarm(
        ts_ms: u64,
        event: AlarmEvent,
        message: String,
        figures: Option<StoreFigures>,
    ) -> Record {
        Record::gateway(
            ts_ms,
            Body::Alarm {
                event,
                message: Some(bounded(message, MAX_MESSAGE)),
                store: figures.map(Box::new),
            },
        )
    }
}

/// The kind-specific part of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Body {
    /// A barcode read that no scan rule claimed, raw bytes exactly as
    /// framed (prefix and suffix removed), with its GS1 reading.
    Scan {
        #[serde(with = "b64")]
        raw: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gs1: Option<Gs1Reading>,
    },
    /// A change of station context (order, operator) or a material bound to
    /// the open lot (`field` = material).
    Context {
        field: ContextField,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
        source: ContextSource,
        /// The material consumed, for `field` = material.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        material: Option<Material>,
    },
    /// A lot opened or closed. The record's `lot` is the lot it concerns.
    Lot {
        event: LotEvent,
        /// Why it opened or closed.
        source: ContextSource,
        /// Sequence number of a lot number generated from the template.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number_seq: Option<u64>,
        /// What the lot made and used; on `closed` (all of it, lists
        /// possibly split) and `totals` (the rest of the lists) only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totals: Option<Box<LotTotals>>,
        /// Which of the lot records carrying one close's totals this is
        /// (`closed` is part 1, its `totals` continuations follow).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<Part>,
    },
    /// A part made under the open lot, identified by its serial.
    Product {
        rule: String,
        serial: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gtin: Option<String>,
        #[serde(with = "b64")]
        raw: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gs1: Option<Gs1Reading>,
    },
    /// A scan refused by a rule or by validation, with the reason.
    Reject {
        reason: RejectReason,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(with = "b64")]
        raw: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gs1: Option<Gs1Reading>,
    },
    /// A PLC counter moved (or its heartbeat is due).
    Count {
        /// The register map entry's name.
        name: String,
        /// The counter's raw value now.
        raw: u64,
        /// Units counted since the last `count` record of this counter.
        delta: u64,
        wrapped: bool,
        reset: bool,
        /// First value ever seen: `delta` is 0 and counts nothing.
        baseline: bool,
        /// Capture time of the value `delta` was computed from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// A PLC state (run/stop/fault code) changed.
    State {
        name: String,
        value: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<i64>,
    },
    /// A measured PLC value changed (scaled).
    Value {
        name: String,
        value: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<f64>,
    },
    /// Something a technician or the MES must see: device offline/online, …
    Alarm {
        event: AlarmEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// The store's figures, on the store's own alarms (capacity, disk).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<Box<StoreFigures>>,
    },
    /// The trail of a command received from the MES, accepted or not.
    Audit {
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        accepted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The payload as received, truncated to a bounded length.
        payload: String,
        /// Where the command came from (absent in records written before
        /// local commands existed: those came from the MES).
        #[serde(default)]
        origin: CommandOrigin,
    },
}

impl Body {
    /// The record kind as named in the MQTT contract.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Scan { .. } => "scan",
            Body::Context { .. } => "context",
            Body::Lot { .. } => "lot",
            Body::Product { .. } => "product",
            Body::Reject { .. } => "reject",
            Body::Count { .. } => "count",
            Body::State { .. } => "state",
            Body::Value { .. } => "value",
            Body::Alarm { .. } => "alarm",
            Body::Audit { .. } => "audit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextField {
    Lot,
    Order,
    Operator,
    Material,
}

impl ContextField {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextField::Lot => "lot",
            ContextField::Order => "order",
            ContextField::Operator => "operator",
            ContextField::Material => "material",
        }
    }
}

/// What GS1 made of a scan: its elements in symbol order, or why it could
/// not be read (the scan is still recorded, raw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gs1Reading {
    Elements(Vec<Element>),
    Error { code: String, message: String },
}

/// A material (component, raw material lot) consumed into a lot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Expiry date as scanned (GS1 AI 17, YYMMDD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LotEvent {
    Opened,
    Closed,
    /// The rest of a closed lot's lists (materials, operators, orders), in
    /// the records right after its `closed` record.
    Totals,
}

impl LotEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            LotEvent::Opened => "opened",
            LotEvent::Closed => "closed",
            LotEvent::Totals => "totals",
        }
    }
}

/// Part `part` of the `parts` lot records that carry one close's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub part: u32,
    pub parts: u32,
}

/// The longest free text (alarm message, reject message, refusal reason)
/// a record carries, in bytes; longer text is cut at a character boundary
/// and ends with [`CUT_MARK`].
pub const MAX_MESSAGE: usize = 512;
/// What ends a text cut to its bound.
pub const CUT_MARK: &str = "…";

/// `text` cut to at most `max` bytes (at a character boundary, ending with
/// [`CUT_MARK`] when cut).
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(CUT_MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(CUT_MARK);
    text
}

/// One material (by GTIN and lot) consumed into a lot, and how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterialTally {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    pub count: u64,
}

/// What a lot made and used, carried by its `closed` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotTotals {
    pub opened_ms: u64,
    pub closed_ms: u64,
    /// Units of the station's good-parts counter while the lot was open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good: Option<u64>,
    /// Units of the station's scrap counter while the lot was open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrap: Option<u64>,
    /// Every counter of the station, by name.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    pub products: u64,
    pub rejects: u64,
    #[serde(default)]
    pub materials: Vec<MaterialTally>,
    /// More distinct materials were consumed than the totals list.
    #[serde(default)]
    pub materials_truncated: bool,
    /// Material scans of materials the full list could not hold: the
    /// list's counts plus this add up to every material consumed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub materials_untallied: u64,
    /// Operators logged in at any time while the lot was open.
    #[serde(default)]
    pub operators: Vec<String>,
    /// More distinct operators logged in than the list holds.
    #[serde(default, skip_serializing_if = "is_false")]
    pub operators_truncated: bool,
    /// Work orders set at any time while the lot was open.
    #[serde(default)]
    pub orders: Vec<String>,
    /// More distinct orders were set than the list holds.
    #[serde(default, skip_serializing_if = "is_false")]
    pub orders_truncated: bool,
    /// How many entries each list has in all, over every part, when the
    /// lists were split over several lot records (set on the `closed`
    /// record only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<Listed>,
}

/// The full length of a closed lot's lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub materials: u64,
    pub operators: u64,
    pub orders: u64,
}

/// What follows the first `keep` entries of `list`, removed from it.
fn take_tail<T>(list: &mut Vec<T>, keep: usize) -> Vec<T> {
    list.split_off(list.len().min(keep))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LotTotals {
    /// Split a closed lot's totals so no lot record lists more than
    /// `per_part` entries of any list: the first part keeps every scalar
    /// and the first entries, each further part (a `totals` record) only
    /// the next entries of the lists. The first part's `listed` gives the
    /// full length of each list.
    pub fn split(mut self, per_part: usize) -> (LotTotals, Vec<LotTotals>) {
        let per_part = per_part.max(1);
        self.listed = Some(Listed {
            materials: self.materials.len() as u64,
            operators: self.operators.len() as u64,
            orders: self.orders.len() as u64,
        });
        let mut materials = take_tail(&mut self.materials, per_part);
        let mut operators = take_tail(&mut self.operators, per_part);
        let mut orders = take_tail(&mut self.orders, per_part);
        let mut rest = Vec::new();
        while !(materials.is_empty() && operators.is_empty() && orders.is_empty()) {
            let next_materials = take_tail(&mut materials, per_part);
            let next_operators = take_tail(&mut operators, per_part);
            let next_orders = take_tail(&mut orders, per_part);
            rest.push(LotTotals {
                materials: std::mem::replace(&mut materials, next_materials),
                operators: std::mem::replace(&mut operators, next_operators),
                orders: std::mem::replace(&mut orders, next_orders),
                ..LotTotals::default()
            });
        }
        (self, rest)
    }
}

/// Why a scan was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// A `reject` scan rule matched.
    Rule,
    /// A product or material scan while no lot is open.
    NoLotOpen,
    /// A product serial already seen in this lot (or duplicate window).
    DuplicateSerial,
    /// A material whose GTIN is not on the work order's material list.
    MaterialNotAllowed,
    /// A rule needed a value (serial, lot, GTIN) the scan did not carry, or
    /// its GS1 data was invalid.
    InvalidCode,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Rule => "rule",
            RejectReason::NoLotOpen => "no-lot-open",
            RejectReason::DuplicateSerial => "duplicate-serial",
            RejectReason::MaterialNotAllowed => "material-not-allowed",
            RejectReason::InvalidCode => "invalid-code",
        }
    }
}

/// Where a command came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandOrigin {
    /// MQTT, from the MES.
    #[default]
    Mes,
    /// `linegate lot …` on the gateway itself (the control socket).
    Local,
}

impl CommandOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandOrigin::Mes => "mes",
            CommandOrigin::Local => "local",
        }
    }
}

/// Where a context change came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ContextSource {
    /// A scan matched a station's scan rule.
    Scan {
        rule: String,
        #[serde(with = "b64")]
        raw: Vec<u8>,
    },
    /// An MES command, by its id.
    Command { id: String },
    /// A local operator action (`linegate lot …` on the gateway), by its id.
    Local { id: String },
    /// The lot's count target was reached.
    Target { counter: String, target: u64 },
    /// A shift or day boundary (lot rotation, operator logout at shift end).
    Boundary { boundary: Boundary },
    /// The operator was idle longer than the configured timeout.
    Idle,
    /// The station opened a lot by itself (`auto_open`: none was open).
    Auto,
    /// The same operator logged in at another station.
    Moved { station: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boundary {
    Shift,
    Day,
}

impl Boundary {
    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::Shift => "shift",
            Boundary::Day => "day",
        }
    }
}

impl Record {
    /// Whether drop-oldest must keep this record while others can go: the
    /// store's own alarms, which tell the MES what was dropped or refused.
    /// They are few (one per threshold crossing, one per dropped chunk).
    pub fn kept_by_drop_oldest(&self) -> bool {
        matches!(&self.body, Body::Alarm { event, .. } if event.is_store())
    }
}

/// The figures a store alarm carries (each present when it applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFigures {
    /// The threshold crossed, in percent of `max_bytes` (`store-filling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// Encoded bytes of unacknowledged records when the alarm was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// `refuse` or `drop-oldest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Free space on the data directory's filesystem, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_bytes: Option<u64>,
    /// Readings and commands refused while the alarm was raised (on `…-cleared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<u64>,
    /// Records dropped unsent while the alarm was raised (on `store-full-cleared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// `records-dropped`: the lowest and highest seq dropped, and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Records ever dropped unsent by this store, this drop included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_total: Option<u64>,
    /// `record-undeliverable`: the record's seq, kind, payload size and
    /// the limit it exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmEvent {
    DeviceOffline,
    DeviceOnline,
    /// The clock went back behind a lot number already issued; numbering
    /// continues in the later period so no number repeats.
    ClockWentBack,
    /// A lot could not be opened (no template, …); the message says why.
    LotNotOpened,
    /// More serials than the station holds: the oldest are no longer
    /// checked for duplicates.
    SerialCheckTruncated,
    /// The store's queue reached 80 % or 90 % of `max_bytes`.
    StoreFilling,
    /// It fell back below the threshold minus 5 points.
    StoreFillingCleared,
    /// The store is full: new readings are refused, or the oldest records
    /// dropped, as `when_full` says.
    StoreFull,
    StoreFullCleared,
    /// The data directory's filesystem is below `min_disk_free`, or refused
    /// a write: treated as a full store.
    DiskFull,
    DiskFullCleared,
    /// drop-oldest deleted unsent records to make room: which, how many.
    RecordsDropped,
    /// The store was found damaged at start and rebuilt from what could be
    /// read; the message gives the counts and where the damaged copy is.
    StoreDamaged,
    /// A new store (a new `epoch`) was made at start: a first start, or the
    /// previous store is gone. `seq` starts again at 1 in it.
    StoreCreated,
    /// The data directory was deleted, moved or replaced while the gateway
    /// ran; it stops (exit 74) and starts again on a new store.
    StoreLost,
    /// A stored record could not be published (larger than
    /// `mqtt.max_packet_size`): it was set aside; the alarm names its seq.
    RecordUndeliverable,
    /// A configuration reload was refused (the new file invalid, or it
    /// changes keys that need a restart); the old config keeps running.
    /// The message gives the file, line and reason, or the keys.
    ConfigReloadFailed,
}

impl AlarmEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmEvent::DeviceOffline => "device-offline",
            AlarmEvent::DeviceOnline => "device-online",
            AlarmEvent::ClockWentBack => "clock-went-back",
            AlarmEvent::LotNotOpened => "lot-not-opened",
            AlarmEvent::SerialCheckTruncated => "serial-check-truncated",
            AlarmEvent::StoreFilling => "store-filling",
            AlarmEvent::StoreFillingCleared => "store-filling-cleared",
            AlarmEvent::StoreFull => "store-full",
            AlarmEvent::StoreFullCleared => "store-full-cleared",
            AlarmEvent::DiskFull => "disk-full",
            AlarmEvent::DiskFullCleared => "disk-full-cleared",
            AlarmEvent::RecordsDropped => "records-dropped",
            AlarmEvent::StoreDamaged => "store-damaged",
            AlarmEvent::StoreCreated => "store-created",
            AlarmEvent::StoreLost => "store-lost",
            AlarmEvent::RecordUndeliverable => "record-undeliverable",
            AlarmEvent::ConfigReloadFailed => "config-reload-failed",
        }
    }

    /// One of the store's own alarms (capacity, disk, drops, damage, a
    /// record set aside as undeliverable).
    pub fn is_store(self) -> bool {
        matches!(
            self,
            AlarmEvent::StoreDamaged
                | AlarmEvent::StoreCreated
                | AlarmEvent::StoreLost
                | AlarmEvent::StoreFilling
                | AlarmEvent::StoreFillingCleared
                | AlarmEvent::StoreFull
                | AlarmEvent::StoreFullCleared
                | AlarmEvent::DiskFull
                | AlarmEvent::DiskFullCleared
                | AlarmEvent::RecordsDropped
                | AlarmEvent::RecordUndeliverable
        )
    }
}

/// Serde helper: bytes as standard base64 text.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
