//! Stations: the single owner of each station's context (lot, work order,
//! operator). Applies scan rules to readings, applies MES commands, and emits
//! the [`Record`]s the store will commit.
//!
//! Pure logic, no I/O: the pipeline feeds readings and commands in and commits
//! what comes out ([`Emitted`]), context state included, in one atomic batch.

mod context;
mod counters;
mod rules;

use std::collections::{BTreeMap, VecDeque};

pub use self::context::Context;
use self::counters::Counters;
pub use self::counters::{CounterMark, Movement, classify, counter_key};
use crate::config::{DeviceConfig, RuleAction, StationConfig};
use crate::devices::{DeviceEvent, Reading};
use crate::record::{AlarmEvent, Body, ContextField, ContextSource, Record};

/// How many recent command ids are remembered to refuse replays.
const RECENT_COMMANDS: usize = 256;
/// Longest command payload kept in an audit record.
pub const AUDIT_PAYLOAD_MAX: usize = 1024;

/// What applying a reading or command produced: records to commit, and the
/// durable state entries (station context) that must commit with them.
#[derive(Debug, Default, PartialEq)]
pub struct Emitted {
    pub records: Vec<Record>,
    pub state: Vec<(String, Vec<u8>)>,
}

impl Emitted {
    fn push(&mut self, other: Emitted) {
        self.records.extend(other.records);
        self.state.extend(other.state);
    }
}

/// A validated MES command, addressed to one station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Command name as in the topic (`set-lot`, `set-order`).
    pub name: String,
    /// The MES's id for this command (idempotency, result correlation).
    pub id: String,
    pub station: String,
    pub action: CommandAction,
    /// The payload as received, for the audit record.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAction {
    /// Set (`Some`) or clear (`None`) the station's lot.
    SetLot(Option<String>),
    /// Set (`Some`) or clear (`None`) the station's work order.
    SetOrder(Option<String>),
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown station `{0}`")]
    UnknownStation(String),
    #[error("duplicate command id `{0}`")]
    Duplicate(String),
}

struct Station {
    cfg: StationConfig,
    ctx: Context,
}

/// All stations of this gateway and their contexts.
pub struct Stations {
    stations: BTreeMap<String, Station>,
    counters: Counters,
    recent_commands: VecDeque<String>,
}

/// Key under which a station's context is persisted in the store.
pub fn state_key(station: &str) -> String {
    format!("ctx/{station}")
}

impl Stations {
    /// Build the stations and their PLC values; `restore` returns durable
    /// state written by earlier commits, by key (contexts, counter marks).
    pub fn new(
        configs: &[StationConfig],
        devices: &[DeviceConfig],
        mut restore: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Self {
        let stations = configs
            .iter()
            .map(|cfg| {
                let ctx = restore(&state_key(&cfg.id))
                    .and_then(|b| Context::decode(&cfg.id, &b))
                    .unwrap_or_default();
                (
                    cfg.id.clone(),
                    Station {
                        cfg: cfg.clone(),
                        ctx,
                    },
                )
            })
            .collect();
        Stations {
            stations,
            counters: Counters::new(devices, &mut restore),
            recent_commands: VecDeque::new(),
        }
    }

    /// The current context of a station.
    pub fn context(&self, station: &str) -> Option<&Context> {
        self.stations.get(station).map(|s| &s.ctx)
    }

    /// Apply one device reading.
    pub fn on_reading(&mut self, reading: &Reading, clock_synced: bool) -> Emitted {
        let Some(station) = self.stations.get_mut(&*reading.station) else {
            // Config validation makes this unreachable; never panic on it.
            tracing::error!(station = %reading.station, "reading for unknown station dropped");
            return Emitted::default();
        };
        let mut out = Emitted::default();
        let body = match &reading.event {
            DeviceEvent::Scan(raw) => match rules::first_match(&station.cfg.scan_rules, raw) {
                Some((rule, value)) => {
                    let field = match rule.action {
                        RuleAction::SetLot => ContextField::Lot,
                        RuleAction::SetOrder => ContextField::Order,
                    };
                    let source = ContextSource::Scan {
                        rule: rule.name.clone(),
                        raw: raw.clone(),
                    };
                    let previous = station.ctx.set(field, Some(value.clone()));
                    out.state.push(station.persist());
                    Body::Context {
                        field,
                        value: Some(value),
                        previous,
                        source,
                    }
                }
                None => Body::Scan { raw: raw.clone() },
            },
            DeviceEvent::Sample(samples) => {
                for sample in samples {
                    if let Some((body, state)) =
                        self.counters.apply(&reading.device, sample, reading.ts_ms)
                    {
                        out.state.extend(state);
                        out.records.push(station.record(
                            reading.ts_ms,
                            clock_synced,
                            Some(reading.device.to_string()),
                            body,
                        ));
                    }
                }
                return out;
            }
            DeviceEvent::Online => Body::Alarm {
                event: AlarmEvent::DeviceOnline,
                message: None,
            },
            DeviceEvent::Offline(why) => Body::Alarm {
                event: AlarmEvent::DeviceOffline,
                message: Some(why.clone()),
            },
        };
        out.records.push(station.record(
            reading.ts_ms,
            clock_synced,
            Some(reading.device.to_string()),
            body,
        ));
        out
    }

    /// Apply an MES command. The audit record is always emitted; a context
    /// record follows when the command was accepted.
    pub fn on_command(
        &mut self,
        cmd: &Command,
        ts_ms: u64,
        clock_synced: bool,
    ) -> (Result<(), Rejection>, Emitted) {
        let mut out = Emitted::default();
        let verdict = self.check_command(cmd);
        let audit = Body::Audit {
            command: cmd.name.clone(),
            id: Some(cmd.id.clone()),
            accepted: verdict.is_ok(),
            reason: verdict.as_ref().err().map(ToString::to_string),
            payload: truncate(&cmd.payload),
        };
        match self.stations.get_mut(&cmd.station) {
            Some(station) => {
                out.records
                    .push(station.record(ts_ms, clock_synced, None, audit));
                if verdict.is_ok() {
                    let (field, value) = match &cmd.action {
                        CommandAction::SetLot(v) => (ContextField::Lot, v.clone()),
                        CommandAction::SetOrder(v) => (ContextField::Order, v.clone()),
                    };
                    let previous = station.ctx.set(field, value.clone());
                    out.state.push(station.persist());
                    let body = Body::Context {
                        field,
                        value,
                        previous,
                        source: ContextSource::Command { id: cmd.id.clone() },
                    };
                    out.push(Emitted {
                        records: vec![station.record(ts_ms, clock_synced, None, body)],
                        state: vec![],
                    });
                }
            }
            None => out.records.push(gateway_record(ts_ms, clock_synced, audit)),
        }
        if verdict.is_ok() {
            if self.recent_commands.len() >= RECENT_COMMANDS {
                self.recent_commands.pop_front();
            }
            self.recent_commands.push_back(cmd.id.clone());
        }
        (verdict, out)
    }

    fn check_command(&self, cmd: &Command) -> Result<(), Rejection> {
        if !self.stations.contains_key(&cmd.station) {
            return Err(Rejection::UnknownStation(cmd.station.clone()));
        }
        if self.recent_commands.contains(&cmd.id) {
            return Err(Rejection::Duplicate(cmd.id.clone()));
        }
        Ok(())
    }
}

/// The audit record of a command rejected before it reached a station
/// (malformed, oversized, retained, unknown command name).
pub fn rejected_command_audit(
    name: &str,
    id: Option<String>,
    reason: &str,
    payload: &str,
    ts_ms: u64,
    clock_synced: bool,
) -> Record {
    let body = Body::Audit {
        command: name.to_owned(),
        id,
        accepted: false,
        reason: Some(reason.to_owned()),
        payload: truncate(payload),
    };
    gateway_record(ts_ms, clock_synced, body)
}

fn gateway_record(ts_ms: u64, clock_synced: bool, body: Body) -> Record {
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

fn truncate(payload: &str) -> String {
    if payload.len() <= AUDIT_PAYLOAD_MAX {
        return payload.to_owned();
    }
    let mut end = AUDIT_PAYLOAD_MAX;
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    payload[..end].to_owned()
}

impl Station {
    fn record(&self, ts_ms: u64, clock_synced: bool, device: Option<String>, body: Body) -> Record {
        Record {
            seq: 0,
            ts_ms,
            clock_synced,
            station: Some(self.cfg.id.clone()),
            device,
            lot: self.ctx.lot.clone(),
            order: self.ctx.order.clone(),
            operator: self.ctx.operator.clone(),
            body,
        }
    }

    fn persist(&self) -> (String, Vec<u8>) {
        (state_key(&self.cfg.id), self.ctx.encode())
    }
}

#[cfg(test)]
mod tests;
