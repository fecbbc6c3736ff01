//! The Modbus RTU bus task: one task per RS-485 port, owning the port and
//! serialising the requests to its units (the master may have only one
//! transaction outstanding on a serial line). Also the one-shot [`probe`].
//!
//! ```text
//!   ┌─────────┐ opened   ┌──────────────────────────────────────────────────┐
//!   │ opening │─────────▶│ every poll.interval, unit by unit:               │
//!   └─────────┘          │  unit in backoff → skipped (costs nothing)       │
//!     ▲   │ fails        │  per block: wait silent_interval, flush input,   │
//!     │   ▼              │    address the unit, request, wait ≤ timeout     │
//!     │                  │  reply → decode → Sample per station             │
//!     │                  │  exception / malformed → counted, block skipped  │
//!     │                  │  timeout → counted, unit skipped until its own   │
//!     │                  │    backoff expires (other units keep their rate) │
//!     │                  └──────────────────────────────────────────────────┘
//!     │                     │ the port itself fails (EOF, EIO: unplugged):
//!     │                     ▼ close it, Offline (once per outage)
//!   ┌───────────────────────────────────────────┐
//!   │ wait a jittered backoff delay, reopen     │
//!   └───────────────────────────────────────────┘
//! ```
//!
//! **Port or unit?** tokio-modbus reports a failed read of the port and an
//! undecodable frame alike (`Error::Transport`). The port is therefore
//! wrapped ([`BusPort`]) so that every read and write result of the serial
//! port itself is seen: an EOF or I/O error from the port marks the *bus*
//! failed; anything else (timeout, CRC or framing garbage, a reply from the
//! wrong unit) is the addressed *unit*'s problem and never closes the port.
//!
//! **Stale replies.** tokio-modbus's RTU client matches replies only by unit
//! id and function code, so a reply arriving after its timeout could be
//! taken for the answer to the next request. Before every request the task
//! keeps the bus silent for `silent_interval` (t3.5), then discards whatever
//! the port has buffered; after any failed request the client context is
//! discarded and re-attached to the same port (fresh framing state). The
//! port is only reopened after a port failure.
//!
//! **Identity.** Samples of a unit carry the device id `<bus>/<unit name>`
//! ([`RtuUnit::device_id`]), so two identical slaves on one bus may use the
//! same register names; counters are keyed by that id. `Online`/`Offline`
//! and health belong to the bus (its `id`, its `station`). The bus is
//! online from the first reply of any unit after the port opened; it goes
//! offline when the port fails, or when every unit has stopped answering
//! (`"no unit answers"`) — one `Offline` per outage either way.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::Sender;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, rtu as rtu_client};
use tokio_serial::{ClearBuffer, SerialPort, SerialStream};
use tracing::{debug, info, warn};

use super::map::RegisterMap;
use super::plan::plan;
use super::tcp::{
    BlockData, ReadError, block_name, describe, exception_name, probe_rows, read_block,
};
use super::{ProbeError, ProbeRow};
use crate::clock;
use crate::config::{ModbusRtuConfig, RtuUnit};
use crate::devices::backoff::Backoff;
use crate::devices::health::DeviceHealth;
use crate::devices::serial;
use crate::devices::{DeviceEvent, Reading, Sample};

/// A session at least this long resets the reopen backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// After a failed exchange, the line must stay this quiet (at least) before
/// the next request: longer than a slave's usual turnaround.
const DRAIN_QUIET: Duration = Duration::from_millis(50);

/// The shortest poll interval (tokio's interval refuses zero).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The serial port, shared between the bus task and the tokio-modbus client
/// context attached to it, recording whether the port itself failed.
///
/// Only one side uses it at a time (the task awaits each request), so the
/// lock is never contended; it is never held across an `.await`.
#[derive(Clone)]
struct BusPort(Arc<PortInner>);

struct PortInner {
    stream: Mutex<SerialStream>,
    /// Set on the first EOF or I/O error of the port itself.
    failed: Mutex<Option<String>>,
}

impl BusPort {
    fn new(stream: SerialStream) -> Self {
        BusPort(Arc::new(PortInner {
            stream: Mutex::new(stream),
            failed: Mutex::new(None),
        }))
    }

    fn failed(&self) -> Option<String> {
        self.0
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn fail(&self, why: String) {
        self.0
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
    }

    /// Drops whatever the port received and nobody asked for (a late reply
    /// to a timed-out request). A failure here is a port failure.
    fn discard_input(&self) {
        let stream = self.0.stream.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = stream.clear(ClearBuffer::Input) {
            drop(stream);
            self.fail(format!("cannot flush the port: {e}"));
        }
    }

    /// A client context for `unit` on this port, with fresh framing state.
    fn attach(&self, unit: u8) -> Context {
        rtu_client::attach_slave(self.clone(), Slave(unit))
    }

    fn with<R>(
        &self,
        f: impl FnOnce(Pin<&mut SerialStream>) -> Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        let mut stream = self.0.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(Pin::new(&mut *stream));
        drop(stream);
        if let Poll::Ready(Err(e)) = &r {
            self.fail(format!("serial port error: {e}"));
        }
        r
    }
}

impl std::fmt::Debug for BusPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusPort")
    }
}

impl AsyncRead for BusPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let r = self.with(|s| s.poll_read(cx, buf));
        if matches!(r, Poll::Ready(Ok(()))) && wanted && buf.filled().len() == before {
            // Linux: an unplugged adapter (or a closed pty) reads as EOF.
            self.fail("serial port closed (EOF): unplugged?".to_owned());
        }
        r
    }
}

impl AsyncWrite for BusPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_shutdown(cx))
    }
}

/// The bus: the port, the client context and when the line last went quiet.
struct Line {
    port: BusPort,
    ctx: Context,
    /// Address the context currently carries.
    addressed: u8,
    /// End of the last exchange (reply, timeout or failure).
    quiet_since: Instant,
    silent: Duration,
}

impl Line {
    fn open(cfg: &ModbusRtuConfig) -> Result<Line, String> {
        let stream = serial::open(&cfg.path, &cfg.line).map_err(|e| e.to_string())?;
        let port = BusPort::new(stream);
        let first = cfg.units.first().map_or(1, |u| u.unit_id);
        Ok(Line {
            ctx: port.attach(first),
            port,
            addressed: first,
            quiet_since: Instant::now(),
            silent: cfg.silent_interval,
        })
    }

    /// One request to `unit`: t3.5 of silence, stale input dropped, then the
    /// request with `timeout`. After a failure the context is re-attached.
    async fn read(
        &mut self,
        unit: u8,
        block: &super::plan::Block,
        timeout: Duration,
    ) -> Result<BlockData, ReadError> {
        tokio::time::sleep_until(self.quiet_since + self.silent).await;
        self.port.discard_input();
        if self.addressed != unit {
            tokio_modbus::prelude::SlaveContext::set_slave(&mut self.ctx, Slave(unit));
            self.addressed = unit;
        }
        let r = read_block(&mut self.ctx, block, timeout).await;
        if r.is_err() {
            // A late or mismatched reply may still be on its way (a slave
            // turns a request around in 5–50 ms): wait until the line has
            // been quiet for a while, discarding what arrives, so it cannot
            // be taken for the answer to the next request. Then a fresh
            // context: no half-read frame or stale state leaks either.
            self.drain(timeout).await;
            self.ctx = self.port.attach(unit);
        }
        self.quiet_since = Instant::now();
        r
    }

    /// Read and discard until the line has been silent for
    /// `max(silent_interval, DRAIN_QUIET)`, for at most `limit`.
    async fn drain(&mut self, limit: Duration) {
        use tokio::io::AsyncReadExt as _;
        let quiet = self.silent.max(DRAIN_QUIET);
        let deadline = Instant::now() + limit;
        let mut port = self.port.clone();
        let mut buf = [0u8; 256];
        while Instant::now() < deadline && self.port.failed().is_none() {
            match tokio::time::timeout(quiet, port.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => debug!(bytes = n, "discarded late bytes on the bus"),
                // Quiet long enough, EOF or an error (recorded by the port).
                _ => return,
            }
        }
    }
}

/// One unit's plan, identity and failure state.
struct Unit {
    cfg: RtuUnit,
    /// `<bus>/<name>`: the `device` of its samples.
    device: Arc<str>,
    map: RegisterMap,
    backoff: Backoff,
    /// While set and in the future, the unit is not asked.
    skip_until: Option<Instant>,
    /// Its last request timed out (it counts as not answering).
    dead: bool,
    /// Consecutive timed-out polls (for the log).
    misses: u64,
    /// Per block: whether its last read was rejected (log once).
    failing: Vec<bool>,
    /// Per block: its name in the status, `holding 0..2 (unit 3)`.
    block_names: Vec<String>,
    /// Per register: a decode error was already reported.
    bad: Vec<bool>,
}

impl Unit {
    fn new(bus: &str, cfg: &ModbusRtuConfig, u: &RtuUnit) -> Unit {
        let map = RegisterMap::new(&u.registers, cfg.poll.max_gap);
        Unit {
            device: Arc::from(u.device_id(bus)),
            failing: vec![false; map.plan.blocks.len()],
            block_names: map
                .plan
                .blocks
                .iter()
                .map(|b| block_name(b, u.unit_id))
                .collect(),
            bad: vec![false; map.len()],
            map,
            backoff: Backoff::new(cfg.poll.reconnect),
            skip_until: None,
            dead: false,
            misses: 0,
            cfg: u.clone(),
        }
    }
}

/// How one unit's poll went.
enum UnitPoll {
    /// It replied (data or exception) to every request asked.
    Answered(Vec<Option<BlockData>>),
    /// It timed out; the rest of its blocks were not asked.
    Silent,
    /// Skipped: in backoff.
    Skipped,
    /// The port failed.
    PortGone(String),
}

enum SessionEnd {
    Shutdown,
    Gone {
        msg: String,
        online_since: Option<Instant>,
    },
}

struct Bus<T> {
    id: Arc<str>,
    station: Arc<str>,
    cfg: ModbusRtuConfig,
    tx: Sender<T>,
    health: DeviceHealth,
}

/// Runs one RS-485 bus until `tx` is closed.
///
/// One task owns the port and asks the units in config order, every
/// `poll.interval`, keeping `silent_interval` of silence before each request.
/// Per unit: its own plan, `poll.timeout` per request and backoff
/// (`reconnect_min`…`reconnect_max`): a unit that times out is counted
/// (`health.reject("unit 3: no reply …")`) and not asked again until its
/// backoff expires, so a dead unit costs the others at most one timeout per
/// its backoff period. Exceptions and malformed replies are counted and skip
/// the block for this poll. A port failure (EOF/EIO: unplugged) closes the
/// port, sends one `Offline` and reopens with backoff (reset after a session
/// of at least 10 s).
///
/// Samples go to each register's station with the device id
/// `<bus>/<unit name>`; `Online`/`Offline` to the bus's `station` as `id`.
pub async fn run<T: From<Reading> + Send + 'static>(
    id: Arc<str>,
    station: Arc<str>,
    cfg: ModbusRtuConfig,
    tx: Sender<T>,
    health: DeviceHealth,
) {
    Bus {
        id,
        station,
        cfg,
        tx,
        health,
    }
    .run()
    .await;
}

impl<T: From<Reading> + Send + 'static> Bus<T> {
    async fn run(&self) {
        let mut units: Vec<Unit> = self
            .cfg
            .units
            .iter()
            .map(|u| Unit::new(&self.id, &self.cfg, u))
            .collect();
        for u in &units {
            for &i in &u.map.plan.unreadable {
                if let Some(reg) = u.cfg.registers.get(i) {
                    warn!(device = %self.id, unit = u.cfg.unit_id, register = %reg.name, "register runs past address 65535; never read");
                }
            }
        }
        let mut backoff = Backoff::new(self.cfg.poll.reconnect);
        let mut offline_sent = false;
        let mut failures: u64 = 0;
        loop {
            if self.tx.is_closed() {
                return;
            }
            let (msg, online_since) = match Line::open(&self.cfg) {
                Ok(mut line) => {
                    debug!(device = %self.id, path = %self.cfg.path.display(), "rs-485 port open");
                    match self
                        .session(&mut line, &mut units, failures, &mut offline_sent)
                        .await
                    {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Gone { msg, online_since } => (msg, online_since),
                    }
                    // `line` is dropped here: the port closes.
                }
                Err(msg) => (msg, None),
            };
            if let Some(since) = online_since {
                if since.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
                failures = 0;
            }
            failures += 1;
            if failures == 1 {
                warn!(device = %self.id, path = %self.cfg.path.display(), error = %msg, "modbus rtu bus offline, reopening with backoff");
            } else {
                debug!(device = %self.id, error = %msg, attempt = failures, "modbus rtu bus still offline");
            }
            self.health.set_offline(msg.clone());
            if !offline_sent {
                offline_sent = true;
                if !self
                    .send(self.station.clone(), DeviceEvent::Offline(msg))
                    .await
                {
                    return;
                }
            }
            // A new port: every unit gets asked at once again.
            for u in &mut units {
                u.skip_until = None;
                u.backoff.reset();
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Polls until the port fails or the gateway shuts down.
    async fn session(
        &self,
        line: &mut Line,
        units: &mut [Unit],
        failures: u64,
        offline_sent: &mut bool,
    ) -> SessionEnd {
        let mut online_since: Option<Instant> = None;
        let mut ticker = tokio::time::interval(self.cfg.poll.interval.max(MIN_INTERVAL));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.tx.closed() => return SessionEnd::Shutdown,
            }
            for i in 0..units.len() {
                let polled = tokio::select! {
                    p = self.poll_unit(line, &mut units[i]) => p,
                    _ = self.tx.closed() => return SessionEnd::Shutdown,
                };
                match polled {
                    UnitPoll::PortGone(msg) => return SessionEnd::Gone { msg, online_since },
                    UnitPoll::Skipped => {}
                    UnitPoll::Silent => {
                        let outage_starts = online_since.is_some() || !*offline_sent;
                        if outage_starts && units_all_dead(units) {
                            // Every unit stopped answering: the cable, the
                            // far side of the adapter or the bus power is gone.
                            let msg = "no unit answers on the bus".to_owned();
                            warn!(device = %self.id, path = %self.cfg.path.display(), "{msg}");
                            self.health.set_offline(msg.clone());
                            online_since = None;
                            *offline_sent = true;
                            if !self
                                .send(self.station.clone(), DeviceEvent::Offline(msg))
                                .await
                            {
                                return SessionEnd::Shutdown;
                            }
                        }
                    }
                    UnitPoll::Answered(data) => {
                        if online_since.is_none() {
                            info!(device = %self.id, path = %self.cfg.path.display(), after_failures = failures, "modbus rtu bus online");
                            self.health.set_online();
                            *offline_sent = false;
                            online_since = Some(Instant::now());
                            if !self.send(self.station.clone(), DeviceEvent::Online).await {
                                return SessionEnd::Shutdown;
                            }
                        }
                        let ts_ms = clock::now_ms();
                        let unit = &mut units[i];
                        let samples = self.decode_poll(unit, &data);
                        if samples.iter().any(Option::is_some) {
                            self.health.frame();
                        }
                        if !self.send_samples(unit, ts_ms, samples).await {
                            return SessionEnd::Shutdown;
                        }
                    }
                }
            }
        }
    }

    /// Asks `unit` for each of its blocks, unless it is in backoff.
    async fn poll_unit(&self, line: &mut Line, unit: &mut Unit) -> UnitPoll {
        if unit.skip_until.is_some_and(|t| Instant::now() < t) {
            return UnitPoll::Skipped;
        }
        let id = unit.cfg.unit_id;
        let timeout = self.cfg.poll.timeout;
        let mut data = Vec::with_capacity(unit.map.plan.blocks.len());
        for (b, block) in unit.map.plan.blocks.iter().enumerate() {
            let read = line.read(id, block, timeout).await;
            if let Some(why) = line.port.failed() {
                return UnitPoll::PortGone(why);
            }
            let got = match read {
                Ok(d) => {
                    if std::mem::take(&mut unit.failing[b]) {
                        info!(device = %self.id, unit = id, block = %describe(block), "block readable again");
                    }
                    self.health.block_read(&unit.block_names[b]);
                    Some(d)
                }
                Err(ReadError::Timeout(msg)) => {
                    let delay = unit.backoff.next_delay();
                    unit.skip_until = Some(Instant::now() + delay);
                    unit.dead = true;
                    unit.misses += 1;
                    let reason = format!("unit {id}: {msg}");
                    if unit.misses == 1 {
                        warn!(device = %self.id, unit = id, name = %unit.cfg.name, %reason, ?delay, "unit not answering; skipped until its backoff expires");
                    } else {
                        debug!(device = %self.id, unit = id, %reason, ?delay, misses = unit.misses, "unit still not answering");
                    }
                    self.health.block_failed(&unit.block_names[b], &msg);
                    self.health.reject(reason);
                    return UnitPoll::Silent;
                }
                Err(ReadError::Exception(code)) => {
                    let reason = format!(
                        "unit {id}: modbus exception reading {}: {}",
                        describe(block),
                        exception_name(code)
                    );
                    self.block_fault(&mut unit.failing[b], &unit.block_names[b], reason);
                    None
                }
                Err(ReadError::Malformed(msg) | ReadError::Link(msg)) => {
                    // A garbled frame, a CRC error, a reply from another
                    // unit: the line is up, this reply is unusable.
                    self.block_fault(
                        &mut unit.failing[b],
                        &unit.block_names[b],
                        format!("unit {id}: malformed reply: {msg}"),
                    );
                    None
                }
            };
            data.push(got);
        }
        if unit.dead || unit.misses > 0 {
            info!(device = %self.id, unit = id, name = %unit.cfg.name, after_misses = unit.misses, "unit answering again");
        }
        unit.dead = false;
        unit.misses = 0;
        unit.skip_until = None;
        unit.backoff.reset();
        UnitPoll::Answered(data)
    }

    fn block_fault(&self, was_failing: &mut bool, name: &str, reason: String) {
        self.health.block_failed(name, &reason);
        if *was_failing {
            debug!(device = %self.id, block = %name, %reason, "block still rejected");
        } else {
            warn!(device = %self.id, block = %name, %reason, "block rejected; its values are skipped until it reads again");
        }
        *was_failing = true;
        self.health.reject(reason);
    }

    /// Decodes one unit's poll; by register index, `None` where unread.
    fn decode_poll(&self, unit: &mut Unit, data: &[Option<BlockData>]) -> Vec<Option<Sample>> {
        let unit_id = unit.cfg.unit_id;
        unit.map.decode_poll(data, &mut unit.bad, |reg, e| {
            let reason = format!("unit {unit_id}: cannot decode {}: {e}", reg.name);
            warn!(device = %self.id, %reason, "register skipped");
            self.health.reject(reason);
        })
    }

    /// One `Sample` reading per station of the unit; false on shutdown.
    async fn send_samples(&self, unit: &Unit, ts_ms: u64, by_reg: Vec<Option<Sample>>) -> bool {
        for (station, samples) in unit.map.by_station(by_reg) {
            let reading = Reading {
                device: unit.device.clone(),
                station,
                ts_ms,
                event: DeviceEvent::Sample(samples),
            };
            if self.tx.send(reading.into()).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn send(&self, station: Arc<str>, event: DeviceEvent) -> bool {
        let reading = Reading {
            device: self.id.clone(),
            station,
            ts_ms: clock::now_ms(),
            event,
        };
        self.tx.send(reading.into()).await.is_ok()
    }
}

/// Every unit's last request timed out.
fn units_all_dead(units: &[Unit]) -> bool {
    units.iter().all(|u| u.dead)
}

/// Opens the port once and reads every unit's planned blocks once; rows in
/// config order (unit by unit), each with its unit. Only a port that cannot
/// be opened is an error; a unit that does not answer shows in its rows
/// (its remaining blocks are not asked), as do exceptions and malformed
/// replies.
pub async fn probe(cfg: &ModbusRtuConfig) -> Result<Vec<ProbeRow>, ProbeError> {
    let mut line = Line::open(cfg).map_err(ProbeError::Connect)?;
    let mut rows = Vec::new();
    for unit in &cfg.units {
        let plan = plan(&unit.registers, cfg.poll.max_gap);
        let mut reads = Vec::with_capacity(plan.blocks.len());
        let mut silent: Option<String> = None;
        for block in &plan.blocks {
            let read = match (&silent, line.port.failed()) {
                (_, Some(why)) => Err(ReadError::Link(format!("not read, port failed: {why}"))),
                (Some(msg), None) => Err(ReadError::Timeout(format!(
                    "not read, unit did not answer: {msg}"
                ))),
                (None, None) => line.read(unit.unit_id, block, cfg.poll.timeout).await,
            };
            if let Err(ReadError::Timeout(m)) = &read {
                silent.get_or_insert(m.clone());
            }
            reads.push(read);
        }
        rows.extend(probe_rows(
            &unit.registers,
            &plan,
            &reads,
            Some(unit.unit_id),
        ));
    }
    Ok(rows)
}
