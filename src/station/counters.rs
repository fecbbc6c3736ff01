//! PLC values at a station: counter deltas (wrap and reset aware, persisted),
//! state changes and measured values.
//!
//! A counter's last recorded raw value is persisted under
//! `ctr/<device>/<register>` and committed with the `count` record it
//! produced, so after a gateway restart, a broker outage or a long PLC
//! disconnect the next delta is computed from it: no unit lost or counted twice.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{DeviceConfig, DeviceKind, RegisterConfig, Role};
use crate::devices::Sample;
use crate::record::Body;

/// A durable state entry to commit with a record: key and value.
pub type StateEntry = (String, Vec<u8>);

/// Safety factor on `max_rate × elapsed` when telling a wrap from a reset.
const WRAP_MARGIN: f64 = 3.0;

/// A counter's last recorded value, as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterMark {
    pub raw: u64,
    pub ts_ms: u64,
}

/// A counter mark as stored: with what register the raw value was read
/// from (table, address, type, word order). A mark from a differently mapped
/// register is not compared with: the counter starts a new baseline instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredMark {
    raw: u64,
    ts_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    register: String,
}

/// The identity of a counter's register mapping, stored with its mark.
fn fingerprint(r: &RegisterConfig) -> String {
    format!(
        "{}:{}:{}:{}",
        r.table.as_str(),
        r.address,
        r.data_type.as_str(),
        r.word_order.as_str()
    )
}

/// How a counter moved since its last recorded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    /// Units counted since the last record.
    pub delta: u64,
    /// The counter passed its maximum and restarted from 0.
    pub wrapped: bool,
    /// The counter dropped in a way no wrap explains: a PLC reset; `delta`
    /// counts from 0.
    pub reset: bool,
    /// First value ever seen for this counter: nothing to compare with.
    pub baseline: bool,
}

/// Classify a counter move (shared/reference/domain-standards.md §4.9):
/// up is a plain delta; down is a wrap when the wrapped delta is plausible
/// for `max_rate` over the elapsed time, a reset otherwise.
pub fn classify(
    prev: Option<CounterMark>,
    raw: u64,
    bits: u32,
    ts_ms: u64,
    max_rate: f64,
) -> Movement {
    let Some(prev) = prev else {
        return Movement {
            delta: 0,
            wrapped: false,
            reset: false,
            baseline: true,
        };
    };
    if raw >= prev.raw {
        return Movement {
            delta: raw - prev.raw,
            wrapped: false,
            reset: false,
            baseline: false,
        };
    }
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let wrapped_delta = raw.wrapping_sub(prev.raw) & mask;
    let elapsed_s = ts_ms.saturating_sub(prev.ts_ms) as f64 / 1000.0;
    let plausible = (max_rate * elapsed_s.max(1.0) * WRAP_MARGIN).max(1.0);
    if (wrapped_delta as f64) <= plausible {
        Movement {
            delta: wrapped_delta,
            wrapped: true,
            reset: false,
            baseline: false,
        }
    } else {
        Movement {
            delta: raw,
            wrapped: false,
            reset: true,
            baseline: false,
        }
    }
}

/// Per-register settings the station needs.
#[derive(Debug, Clone)]
struct Spec {
    max_rate: f64,
    heartbeat: Option<Duration>,
    /// [`fingerprint`] of the register.
    register: String,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            max_rate: 1000.0,
            heartbeat: None,
            register: String::new(),
        }
    }
}

/// What the station knows and remembers of one mapped register.
#[derive(Debug, Default)]
struct Tracked {
    spec: Spec,
    /// The counter's last recorded value.
    counter: Option<CounterMark>,
    /// When the last `count` record for this counter was made.
    last_record_ms: Option<u64>,
    /// When this counter was last read (recorded or not): the wrap/reset test
    /// measures the time the counter had to move from here, not from the
    /// last record, or a long standstill would make any drop look like a wrap.
    last_seen_ms: Option<u64>,
    /// Last state or value recorded.
    last_value: Option<f64>,
}

/// All PLC values of the gateway's stations, by sample `device`, then
/// register name (looked up by `&str`: no allocation per sample).
#[derive(Debug, Default)]
pub struct Counters {
    by_device: HashMap<String, HashMap<String, Tracked>>,
}

/// Key under which a counter's last recorded value is persisted.
pub fn counter_key(device: &str, register: &str) -> String {
    format!("ctr/{device}/{register}")
}

impl Counters {
    /// Build from the device configs; `restore` returns persisted state by key.
    pub fn new(
        devices: &[DeviceConfig],
        restore: &mut impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Self {
        let mut c = Counters::default();
        for d in devices {
            // Counters are keyed by the `device` of the samples: the device
            // id for a TCP PLC, `<bus>/<unit name>` for a unit on an RTU bus.
            let maps: Vec<(String, &[RegisterConfig], Option<Duration>)> = match &d.kind {
                DeviceKind::ModbusTcp(m) => vec![(d.id.clone(), &m.registers, m.poll.heartbeat)],
                DeviceKind::ModbusRtu(bus) => bus
                    .units
                    .iter()
                    .map(|u| {
                        (
                            u.device_id(&d.id),
                            u.registers.as_slice(),
                            bus.poll.heartbeat,
                        )
                    })
                    .collect(),
                DeviceKind::SerialScanner(_) => continue,
            };
            for (device, registers, heartbeat) in maps {
                let tracked = c.by_device.entry(device.clone()).or_default();
                for r in registers {
                    let entry = tracked.entry(r.name.clone()).or_default();
                    entry.spec = Spec {
                        max_rate: r.max_rate,
                        heartbeat,
                        register: fingerprint(r),
                    };
                    if r.role == Role::Counter {
                        entry.counter = restore(&counter_key(&device, &r.name))
                            .and_then(|b| {
                                serde_json::from_slice::<StoredMark>(&b)
                                    .inspect_err(|e| tracing::error!(%device, register = %r.name, error = %e, "persisted counter unreadable; next value is a new baseline"))
                                    .ok()
                            })
                            .filter(|m| {
                                let same = m.register.is_empty() || m.register == entry.spec.register;
                                if !same {
                                    tracing::warn!(%device, register = %r.name, was = %m.register, now = %entry.spec.register, "counter register remapped; next value is a new baseline");
                                }
                                same
                            })
                            .map(|m| CounterMark { raw: m.raw, ts_ms: m.ts_ms });
                    }
                }
            }
        }
        c
    }

    /// Apply one sample; returns the record body to emit (if any) and the
    /// durable state entry to commit with it.
    pub fn apply(
        &mut self,
        device: &str,
        s: &Sample,
        ts_ms: u64,
    ) -> Option<(Body, Option<StateEntry>)> {
        // Called for every register of every poll: one lookup per level, and
        // nothing allocated unless a record is made.
        if let Some(seen) = self
            .by_device
            .get_mut(device)
            .and_then(|m| m.get_mut(&*s.name))
        {
            return Self::apply_to(seen, device, s, ts_ms);
        }
        // Not in the config (cannot happen with a validated config): track
        // it with default settings rather than drop it.
        let seen = self
            .by_device
            .entry(device.to_owned())
            .or_default()
            .entry(s.name.to_string())
            .or_default();
        Self::apply_to(seen, device, s, ts_ms)
    }

    fn apply_to(
        seen: &mut Tracked,
        device: &str,
        s: &Sample,
        ts_ms: u64,
    ) -> Option<(Body, Option<StateEntry>)> {
        let spec = &seen.spec;
        match s.role {
            Role::Counter => {
                let (max_rate, heartbeat) = (spec.max_rate, spec.heartbeat);
                let prev = seen.counter;
                // Elapsed since the last read in this run; after a restart,
                // since the persisted mark (the counter may have moved since).
                let moved_since = prev.map(|p| CounterMark {
                    raw: p.raw,
                    ts_ms: seen.last_seen_ms.unwrap_or(p.ts_ms),
                });
                seen.last_seen_ms = Some(ts_ms);
                let m = classify(moved_since, s.raw, s.bits, ts_ms, max_rate);
                let heartbeat_due = match (heartbeat, seen.last_record_ms) {
                    (Some(hb), Some(last)) => ts_ms.saturating_sub(last) >= hb.as_millis() as u64,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if m.delta == 0 && !m.baseline && !m.reset && !heartbeat_due {
                    return None;
                }
                let mark = CounterMark { raw: s.raw, ts_ms };
                seen.counter = Some(mark);
                seen.last_record_ms = Some(ts_ms);
                let stored = StoredMark {
                    raw: s.raw,
                    ts_ms,
                    register: seen.spec.register.clone(),
                };
                let state = serde_json::to_vec(&stored)
                    .ok()
                    .map(|b| (counter_key(device, &s.name), b));
                let body = Body::Count {
                    name: s.name.to_string(),
                    raw: s.raw,
                    delta: m.delta,
                    wrapped: m.wrapped,
                    reset: m.reset,
                    baseline: m.baseline,
                    since_ms: prev.map(|p| p.ts_ms),
                };
                Some((body, state))
            }
            Role::State | Role::Value => {
                if seen
                    .last_value
                    .is_some_and(|v| v.to_bits() == s.value.to_bits())
                {
                    return None;
                }
                let previous = seen.last_value.replace(s.value);
                let body = if s.role == Role::State {
                    Body::State {
                        name: s.name.to_string(),
                        value: s.value as i64,
                        previous: previous.map(|p| p as i64),
                    }
                } else {
                    Body::Value {
                        name: s.name.to_string(),
                        value: s.value,
                        previous,
                    }
                };
                Some((body, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(raw: u64, ts_ms: u64) -> Option<CounterMark> {
        Some(CounterMark { raw, ts_ms })
    }

    #[test]
    fn a_reset_after_a_standstill_is_a_reset_not_a_wrap() {
        let dev = DeviceConfig {
            id: "plc".into(),
            station: "st".into(),
            kind: DeviceKind::SerialScanner(crate::config::SerialScannerConfig {
                path: "/dev/null".into(),
                line: crate::config::SerialLine::default(),
                framing: crate::config::FramingConfig {
                    prefix: vec![],
                    suffix: b"\r".to_vec(),
                    idle_timeout: None,
                    max_len: 64,
                },
                reconnect: crate::config::BackoffConfig {
                    min: Duration::from_millis(1),
                    max: Duration::from_millis(2),
                },
            }),
        };
        let mut c = Counters::new(&[dev], &mut |_: &str| None);
        let sample = |raw| Sample {
            name: "good".into(),
            role: Role::Counter,
            raw,
            bits: 16,
            value: raw as f64,
        };
        // 40000 read every second for a minute while the line stands still,
        // then reset to 12: at the default max_rate that is a reset, 12 units.
        c.apply("plc", &sample(40_000), 0);
        for t in 1..=60u64 {
            assert!(c.apply("plc", &sample(40_000), t * 1000).is_none());
        }
        let (body, _) = c.apply("plc", &sample(12), 61_000).unwrap();
        assert!(
            matches!(
                body,
                Body::Count {
                    delta: 12,
                    reset: true,
                    wrapped: false,
                    ..
                }
            ),
            "{body:?}"
        );
    }

    #[test]
    fn movement_table() {
        // (prev, raw, bits, ts_ms, max_rate) → (delta, wrapped, reset, baseline)
        type Case = (
            Option<CounterMark>,
            u64,
            u32,
            u64,
            f64,
            (u64, bool, bool, bool),
        );
        let cases: &[Case] = &[
            (None, 500, 16, 0, 10.0, (0, false, false, true)),
            (mark(500, 0), 500, 16, 1000, 10.0, (0, false, false, false)),
            (mark(500, 0), 510, 16, 1000, 10.0, (10, false, false, false)),
            // 16-bit wrap: 65530 → 3 is 9 units (domain-standards §4.9).
            (mark(65530, 0), 3, 16, 1000, 10.0, (9, true, false, false)),
            // 32-bit wrap: 4294967290 → 5 is 11 units.
            (
                mark(4_294_967_290, 0),
                5,
                32,
                1000,
                10.0,
                (11, true, false, false),
            ),
            // A drop no plausible rate explains: a PLC reset, counting from 0.
            (
                mark(40_000, 0),
                12,
                16,
                1000,
                10.0,
                (12, false, true, false),
            ),
            (mark(5, 0), 0, 16, 1000, 10.0, (0, false, true, false)),
            // The same drop after a long gap at a high rate is a wrap.
            (
                mark(40_000, 0),
                12,
                16,
                3_600_000,
                10.0,
                (25_548, true, false, false),
            ),
            // 64-bit wrap.
            (
                mark(u64::MAX - 1, 0),
                1,
                64,
                1000,
                10.0,
                (3, true, false, false),
            ),
        ];
        for (prev, raw, bits, ts, rate, (delta, wrapped, reset, baseline)) in cases {
            let m = classify(*prev, *raw, *bits, *ts, *rate);
            assert_eq!(
                (m.delta, m.wrapped, m.reset, m.baseline),
                (*delta, *wrapped, *reset, *baseline),
                "prev {prev:?} raw {raw} bits {bits}"
            );
        }
    }

    #[test]
    fn rtu_units_are_keyed_by_bus_and_unit_name() {
        let text = r#"
[gateway]
id = "gw"
site = "p"
line = "l"
data_dir = "/tmp/lg"
[mqtt]
host = "localhost"
[[station]]
id = "st1"
[[device]]
id = "bus"
type = "modbus-rtu"
station = "st1"
path = "/dev/ttyUSB9"
heartbeat = "5s"
[[device.unit]]
unit_id = 1
[[device.unit.register]]
name = "good"
address = "40001"
role = "counter"
max_rate = 5
[[device.unit]]
unit_id = 2
[[device.unit.register]]
name = "good"
address = "40001"
role = "counter"
"#;
        let cfg = crate::config::parse(std::path::Path::new("t.toml"), text).expect("valid");
        let persisted = serde_json::to_vec(&CounterMark { raw: 100, ts_ms: 1 }).ok();
        let mut asked = Vec::new();
        let mut c = Counters::new(&cfg.devices, &mut |key: &str| {
            asked.push(key.to_owned());
            (key == "ctr/bus/unit-1/good")
                .then(|| persisted.clone())
                .flatten()
        });
        assert_eq!(asked, ["ctr/bus/unit-1/good", "ctr/bus/unit-2/good"]);
        let spec = &c.by_device["bus/unit-1"]["good"].spec;
        assert_eq!(
            (spec.max_rate, spec.heartbeat),
            (5.0, Some(Duration::from_secs(5)))
        );
        let sample = |raw| Sample {
            name: "good".into(),
            role: Role::Counter,
            raw,
            bits: 16,
            value: raw as f64,
        };
        // Unit 1 continues from its persisted value; unit 2 starts a baseline.
        let (body, state) = c.apply("bus/unit-1", &sample(103), 2000).expect("record");
        assert!(
            matches!(
                body,
                Body::Count {
                    delta: 3,
                    baseline: false,
                    ..
                }
            ),
            "{body:?}"
        );
        assert_eq!(state.map(|s| s.0).as_deref(), Some("ctr/bus/unit-1/good"));
        let (body, _) = c.apply("bus/unit-2", &sample(103), 2000).expect("record");
        assert!(
            matches!(body, Body::Count { baseline: true, .. }),
            "{body:?}"
        );
    }
}
