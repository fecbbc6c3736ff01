//! The record: one fact captured at a station, stamped with its context.
//!
//! Records are produced by `station`, given their `seq` by `store` at commit,
//! and turned into the wire format by `uplink`. This type is the internal
//! vocabulary; the MQTT payload (docs/mqtt.md) is built from it in
//! `uplink::payload` and nowhere else.

use serde::{Deserialize, Serialize};

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

/// The kind-specific part of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Body {
    /// A barcode read, raw bytes exactly as framed (prefix and suffix removed).
    Scan {
        #[serde(with = "b64")]
        raw: Vec<u8>,
    },
    /// A change of station context (lot, order, operator).
    Context {
        field: ContextField,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
        source: ContextSource,
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
    },
}

impl Body {
    /// The record kind as named in the MQTT contract.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Scan { .. } => "scan",
            Body::Context { .. } => "context",
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
}

impl ContextField {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextField::Lot => "lot",
            ContextField::Order => "order",
            ContextField::Operator => "operator",
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmEvent {
    DeviceOffline,
    DeviceOnline,
}

impl AlarmEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmEvent::DeviceOffline => "device-offline",
            AlarmEvent::DeviceOnline => "device-online",
        }
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
