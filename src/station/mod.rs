//! Stations: the single owner of each station's context (lot, work order,
//! operator). Applies scan rules to readings, applies MES commands, and emits
//! the [`Record`]s the store will commit.
//!
//! Pure logic, no I/O: the pipeline feeds readings and commands in and commits
//! what comes out ([`Emitted`]), context state included, in one atomic batch.

mod context;
mod counters;
mod lot;
mod replay;
mod rules;
mod serials;
mod workstation;

use std::collections::{BTreeMap, VecDeque};

pub use self::context::Context;
use self::counters::Counters;
pub use self::counters::{CounterMark, Movement, classify, counter_key};
/// Entries a lot's longest list (materials) holds.
pub use self::lot::MAX_MATERIALS as MAX_TOTALS_LIST;
pub use self::lot::{LotState, OpenLot, lot_key};
use self::replay::{SEEN_PREFIX, Seen};
use self::serials::Serials;
pub use self::serials::serial_prefix;
pub use self::workstation::gs1_reading;
use self::workstation::{At, Env, Station};
use crate::config::{DeviceConfig, StationConfig};
use crate::devices::{DeviceEvent, Reading};
use crate::numbering::Calendar;
use crate::record::{AlarmEvent, Body, CommandOrigin, ContextSource, MAX_MESSAGE, Record, bounded};

/// How many recent command ids are remembered to refuse replays.
const RECENT_COMMANDS: usize = 256;
/// Key of the persisted recent command ids: a retry after a crash is still
/// recognised.
const RECENT_COMMANDS_KEY: &str = "cmd/recent";
/// Longest command payload kept in an audit record.
pub const AUDIT_PAYLOAD_MAX: usize = 1024;

/// What applying a reading, command or tick produced: records to commit, and
/// the durable state entries (`Some` upserts, `None` deletes) that must
/// commit with them.
#[derive(Debug, Default, PartialEq)]
pub struct Emitted {
    pub records: Vec<Record>,
    pub state: Vec<(String, Option<Vec<u8>>)>,
}

/// Durable state written by earlier commits, read once at start-up.
pub trait Restore {
    fn get(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Every entry whose key starts with `prefix`.
    fn scan(&mut self, prefix: &str) -> Vec<(String, Vec<u8>)>;
}

/// A map of durable state (tests, and what a batch would leave behind).
impl Restore for BTreeMap<String, Vec<u8>> {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }

    fn scan(&mut self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// What the stations are built from.
pub struct Setup<'a> {
    pub site: &'a str,
    pub line: &'a str,
    pub calendar: &'a Calendar,
    pub stations: &'a [StationConfig],
    pub devices: &'a [DeviceConfig],
}

/// A validated command, addressed to one station: from the MES over MQTT or
/// from `linegate lot` on the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Command name as in the topic (`set-lot`, `open-lot`, …).
    pub name: String,
    /// The sender's id for this command (idempotency, result correlation).
    pub id: String,
    pub station: String,
    pub action: CommandAction,
    /// The payload as received, for the audit record.
    pub payload: String,
    pub origin: CommandOrigin,
    /// A signed command (`uplink::signed`): its id is refused as a replay
    /// until this time (ms since the Unix epoch: its timestamp plus the
    /// replay window, twice). `None` for unsigned and local commands.
    pub remember_until_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAction {
    /// Open the named lot (`Some`, closing the open one) or close the open
    /// lot (`None`).
    SetLot(Option<String>),
    /// Open the named lot, or the next number from the template (`None`).
    OpenLot(Option<String>),
    /// Close the open lot.
    CloseLot,
    /// Set or clear the work order; `materials` lists the GTINs the order
    /// may consume (`None`: no check).
    SetOrder {
        order: Option<String>,
        materials: Option<Vec<String>>,
    },
    /// Log an operator in (`Some`) or out (`None`).
    SetOperator(Option<String>),
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown station `{0}`")]
    UnknownStation(String),
    #[error("duplicate command id `{0}`")]
    Duplicate(String),
    #[error("station `{0}` has no lot template: name the lot to open")]
    NoTemplate(String),
    #[error("no lot is open at station `{0}`")]
    NoLotOpen(String),
    #[error("{0}")]
    NumberingBlocked(String),
    #[error("replayed: command id `{0}` was already seen within the replay window")]
    Replayed(String),
    #[error(
        "too many signed commands within the replay window (at most {0} ids remembered): refused until older ones expire"
    )]
    TooManySigned(usize),
}

/// A station's context and open lot, as `linegate lot show` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StationView {
    pub station: String,
    pub context: Context,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_lot: Option<OpenLot>,
    /// Product serials held for the duplicate check.
    pub serials: usize,
}

/// All stations of this gateway and their contexts.
pub struct Stations {
    stations: BTreeMap<String, Station>,
    counters: Counters,
    recent_commands: VecDeque<String>,
    /// Ids of signed commands within their replay window.
    seen: Seen,
    calendar: Calendar,
    site: String,
    line: String,
}

/// Key under which a station's context is persisted in the store.
pub fn state_key(station: &str) -> String {
    format!("ctx/{station}")
}

impl Stations {
    /// Build the stations, their lots and PLC counters from durable state
    /// written by earlier commits.
    pub fn new(setup: Setup<'_>, restore: &mut dyn Restore) -> Self {
        let stations = setup
            .stations
            .iter()
            .map(|cfg| {
                let id = &cfg.id;
                let ctx = restore
                    .get(&state_key(id))
                    .and_then(|b| Context::decode(id, &b))
                    .unwrap_or_default();
                let persisted = restore.get(&lot_key(id));
                let mut lot = match persisted.as_deref().map(|b| LotState::decode(id, b)) {
                    None => LotState::default(),
                    Some(Some(lot)) => lot,
                    Some(None) => LotState {
                        // Starting the allocator again could repeat numbers.
                        numbering_blocked: Some(
                            cfg.lot
                                .numbering
                                .as_ref()
                                .map(|n| n.template_text.clone())
                                .unwrap_or_default(),
                        ),
                        ..LotState::default()
                    },
                };
                // Context and lot state always agree on the open lot. A
                // context written before lot records existed names a lot with
                // no lot state: adopt it (opened time set at the first tick).
                let mut ctx = ctx;
                match (&ctx.lot, &lot.open) {
                    (Some(named), None) => {
                        lot.open = Some(OpenLot::new(named.clone(), None, 0, &cfg.lot));
                    }
                    (_, Some(open)) if ctx.lot.as_deref() != Some(open.lot.as_str()) => {
                        ctx.lot = Some(open.lot.clone());
                    }
                    _ => {}
                }
                let serials = Serials::restore(
                    id,
                    cfg.lot.duplicate_window,
                    restore.scan(&serial_prefix(id)),
                );
                let station = Station {
                    cfg: cfg.clone(),
                    ctx,
                    lot,
                    serials,
                    last_activity_ms: None,
                    last_tick_ms: None,
                    serials_truncated: false,
                };
                (id.clone(), station)
            })
            .collect();
        let recent_commands = restore
            .get(RECENT_COMMANDS_KEY)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Stations {
            stations,
            counters: Counters::new(setup.devices, &mut |k: &str| restore.get(k)),
            recent_commands,
            seen: Seen::restore(restore.scan(SEEN_PREFIX)),
            calendar: setup.calendar.clone(),
            site: setup.site.to_owned(),
            line: setup.line.to_owned(),
        }
    }

    /// The current context of a station.
    pub fn context(&self, station: &str) -> Option<&Context> {
        self.stations.get(station).map(|s| &s.ctx)
    }

    /// Every station's context and open lot.
    pub fn views(&self) -> Vec<StationView> {
        self.stations
            .values()
            .map(|s| StationView {
                station: s.cfg.id.clone(),
                context: s.ctx.clone(),
                open_lot: s.lot.open.clone(),
                serials: s.serials.len(),
            })
            .collect()
    }

    /// Split borrow: the stations, the counters, and the environment of
    /// the lot engine.
    fn parts(&mut self) -> (&mut BTreeMap<String, Station>, &mut Counters, Env<'_>) {
        let env = Env {
            calendar: &self.calendar,
            site: &self.site,
            line: &self.line,
        };
        (&mut self.stations, &mut self.counters, env)
    }

    /// Apply one device reading.
    pub fn on_reading(&mut self, reading: &Reading, clock_synced: bool) -> Emitted {
        let mut out = Emitted::default();
        let at = At {
            ts_ms: reading.ts_ms,
            synced: clock_synced,
            device: Some(&reading.device),
        };
        let (stations, counters, env) = self.parts();
        let Some(station) = stations.get_mut(&*reading.station) else {
            // Config validation makes this unreachable; never panic on it.
            tracing::error!(station = %reading.station, "reading for unknown station dropped");
            return out;
        };
        let body = match &reading.event {
            DeviceEvent::Scan(raw) => {
                if let Some(who) = station.on_scan(&at, &env, raw, &mut out) {
                    let here = station.cfg.id.clone();
                    self.logout_elsewhere(&who, &here, &at, &mut out);
                }
                return out;
            }
            DeviceEvent::Sample(samples) => {
                for sample in samples {
                    if let Some((body, state)) =
                        counters.apply(&reading.device, sample, reading.ts_ms)
                    {
                        out.state.extend(state.map(|(k, v)| (k, Some(v))));
                        let counted = match &body {
                            Body::Count { name, delta, .. } => Some((name.clone(), *delta)),
                            _ => None,
                        };
                        out.records.push(station.record(&at, body));
                        if let Some((name, delta)) = counted {
                            station.on_count(&at, &env, &name, delta, &mut out);
                        }
                    }
                }
                return out;
            }
            DeviceEvent::Online => Body::Alarm {
                event: AlarmEvent::DeviceOnline,
                message: None,
                store: None,
            },
            DeviceEvent::Offline(why) => Body::Alarm {
                event: AlarmEvent::DeviceOffline,
                message: Some(bounded(why.clone(), MAX_MESSAGE)),
                store: None,
            },
        };
        out.records.push(station.record(&at, body));
        out
    }

    /// An operator who logged in at `here` is logged out everywhere else.
    fn logout_elsewhere(&mut self, who: &str, here: &str, at: &At<'_>, out: &mut Emitted) {
        for (id, st) in self.stations.iter_mut() {
            if id != here && st.ctx.operator.as_deref() == Some(who) {
                let at = At {
                    device: None,
                    ..*at
                };
                let source = ContextSource::Moved {
                    station: here.to_owned(),
                };
                st.set_operator(&at, None, source, out);
            }
        }
    }

    /// The plant clock at `now_ms`: shift and day boundaries, idle logout,
    /// auto-open. Called about once a second by the pipeline.
    pub fn on_tick(&mut self, now_ms: u64, clock_synced: bool) -> Emitted {
        let mut out = Emitted::default();
        let at = At {
            ts_ms: now_ms,
            synced: clock_synced,
            device: None,
        };
        self.seen.expire(now_ms, &mut out);
        let (stations, _, env) = self.parts();
        for station in stations.values_mut() {
            station.on_tick(&at, &env, &mut out);
        }
        out
    }

    /// Apply a command. The audit record is always emitted; the records of
    /// its effect follow when it was accepted.
    pub fn on_command(
        &mut self,
        cmd: &Command,
        ts_ms: u64,
        clock_synced: bool,
    ) -> (Result<(), Rejection>, Emitted) {
        let mut out = Emitted::default();
        let verdict = match cmd.remember_until_ms {
            // A signed command's id is remembered whatever its station makes
            // of it: a replay of a refused one must not pass later.
            Some(until) => self.seen.check(&cmd.id).and_then(|()| {
                self.seen.remember(&cmd.id, until, &mut out);
                self.check_command(cmd)
            }),
            None => self.check_command(cmd),
        };
        let audit = Body::Audit {
            command: cmd.name.clone(),
            id: Some(cmd.id.clone()),
            accepted: verdict.is_ok(),
            reason: verdict
                .as_ref()
                .err()
                .map(|r| bounded(r.to_string(), MAX_MESSAGE)),
            payload: truncate(&cmd.payload),
            origin: cmd.origin,
        };
        let at = At {
            ts_ms,
            synced: clock_synced,
            device: None,
        };
        let source = match cmd.origin {
            CommandOrigin::Mes => ContextSource::Command { id: cmd.id.clone() },
            CommandOrigin::Local => ContextSource::Local { id: cmd.id.clone() },
        };
        let (stations, _, env) = self.parts();
        let Some(station) = stations.get_mut(&cmd.station) else {
            out.records
                .push(Record::gateway_at(ts_ms, clock_synced, audit));
            return (verdict, out);
        };
        out.records.push(station.record(&at, audit));
        let mut logged_in = None;
        if verdict.is_ok() {
            match &cmd.action {
                CommandAction::SetLot(Some(lot)) | CommandAction::OpenLot(Some(lot)) => {
                    // Naming the lot already open (a retry) changes nothing.
                    if !station.open_lot_is(lot) {
                        station.open_lot(&at, lot.clone(), None, source, &mut out);
                    }
                }
                CommandAction::OpenLot(None) => {
                    // Checked: the station has a template.
                    if let Err(why) = station.open_next(&at, &env, source, &mut out) {
                        tracing::error!(station = %cmd.station, why, "lot not opened");
                    }
                }
                CommandAction::SetLot(None) | CommandAction::CloseLot => {
                    station.close_on_request(&at, &env, source, &mut out);
                }
                CommandAction::SetOrder { order, materials } => {
                    station.set_order(&at, order.clone(), materials.clone(), source, &mut out);
                }
                CommandAction::SetOperator(who) => {
                    station.set_operator(&at, who.clone(), source, &mut out);
                    logged_in = who.clone();
                }
            }
            if self.recent_commands.len() >= RECENT_COMMANDS {
                self.recent_commands.pop_front();
            }
            self.recent_commands.push_back(cmd.id.clone());
            out.state.push((
                RECENT_COMMANDS_KEY.to_owned(),
                Some(serde_json::to_vec(&self.recent_commands).unwrap_or_default()),
            ));
        }
        if let Some(who) = logged_in {
            self.logout_elsewhere(&who, &cmd.station, &at, &mut out);
        }
        (verdict, out)
    }

    fn check_command(&self, cmd: &Command) -> Result<(), Rejection> {
        let Some(station) = self.stations.get(&cmd.station) else {
            return Err(Rejection::UnknownStation(cmd.station.clone()));
        };
        if self.recent_commands.contains(&cmd.id) {
            return Err(Rejection::Duplicate(cmd.id.clone()));
        }
        match cmd.action {
            CommandAction::OpenLot(None) if station.cfg.lot.numbering.is_none() => {
                Err(Rejection::NoTemplate(cmd.station.clone()))
            }
            CommandAction::OpenLot(None) if station.numbering_blocked().is_some() => Err(
                Rejection::NumberingBlocked(station.numbering_blocked().unwrap_or_default()),
            ),
            CommandAction::CloseLot | CommandAction::SetLot(None) if station.lot.open.is_none() => {
                Err(Rejection::NoLotOpen(cmd.station.clone()))
            }
            _ => Ok(()),
        }
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
        reason: Some(bounded(reason.to_owned(), MAX_MESSAGE)),
        payload: truncate(payload),
        origin: CommandOrigin::Mes,
    };
    Record::gateway_at(ts_ms, clock_synced, body)
}

/// The payload as kept in an audit record: at most [`AUDIT_PAYLOAD_MAX`]
/// bytes, ending with `…` when cut.
fn truncate(payload: &str) -> String {
    bounded(payload.to_owned(), AUDIT_PAYLOAD_MAX)
}

#[cfg(test)]
mod tests;
