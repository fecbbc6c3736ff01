//! The Modbus TCP device task: connect, poll the planned blocks, decode,
//! report, reconnect. Also the one-shot [`probe`].
//!
//! ```text
//!   ┌────────────┐ TCP up     ┌──────────────────────────────────────────┐
//!   │ connecting │───────────▶│ polling (every poll.interval)            │
//!   └────────────┘            │  whole poll (every block answered)       │
//!     ▲   │ fails             │    → Online (once), backoff reset after  │
//!     │   ▼                   │    10 s of whole polls                   │
//!     │                       │  block data → decode → Sample per station│
//!     │                       │  exception → counted, block skipped      │
//!     │                       │  malformed reply → counted, block        │
//!     │                       │    skipped, Offline (once per outage)    │
//!     │                       └──────────────────────────────────────────┘
//!     │                          │ timeout, I/O or protocol error: the
//!     │                          ▼ blocks read are sent, the connection
//!     │                            dropped, Offline (once per outage)
//!   ┌─────────────────────────────────────────────┐
//!   │ wait a jittered backoff delay (growing)     │
//!   └─────────────────────────────────────────────┘
//! ```
//!
//! Online means "every block of the poll answered", not "TCP connected": a
//! PLC whose one block gets replies that cannot be decoded (a TCP↔serial
//! converter that cuts long replies) connects, reads its good blocks, and
//! fails at that block on every connection. That is one outage — one
//! `Offline`, naming the block — with a reconnect backoff that keeps
//! growing, while the good blocks' values still reach their stations at
//! each reconnect (a counter loses no units). Every failing block is named
//! in the health's `failing_blocks` until it reads again.
//!
//! tokio-modbus 0.17 has no timeout of its own: connect and every request are
//! wrapped in `poll.timeout`. After a timeout the connection is dropped, not
//! reused (a late reply would carry a stale transaction id).
//!
//! A peer that accepts TCP but never answers (a wedged PLC, a wrong port
//! behind a gateway) is likewise one outage with one `Offline`, not an
//! Online/Offline pair per reconnect attempt.
//!
//! Requests go through `Client::call` rather than the `Reader` methods: the
//! latter `debug_assert` the reply length, which would panic (in debug
//! builds) on a PLC that answers with the wrong count.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tracing::{debug, info, warn};

use super::decode::{RawValue, decode};
use super::map::RegisterMap;
use super::plan::{Block, Item, Plan, plan};
use super::{ProbeError, ProbeRaw, ProbeRow};
use crate::clock;
use crate::config::{ModbusTcpConfig, RegisterConfig, Table};
use crate::devices::backoff::Backoff;
use crate::devices::health::DeviceHealth;
use crate::devices::{DeviceEvent, Reading, Sample};

/// A session at least this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// The shortest poll interval (tokio's interval refuses zero).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// One block's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlockData {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// Why a block read gave no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The PLC answered with an exception: the link is fine.
    Exception(ExceptionCode),
    /// The PLC answered with the wrong shape: the link is fine, the reply unusable.
    Malformed(String),
    /// No reply within the timeout. Over TCP the link is taken as gone; on
    /// an RS-485 bus only the addressed unit is.
    Timeout(String),
    /// The connection (or port) failed, or the reply was unusable as a frame.
    Link(String),
}

/// A readable name for an exception code (`Custom` has none of its own).
pub fn exception_name(code: ExceptionCode) -> String {
    match code {
        ExceptionCode::Custom(c) => format!("exception code 0x{c:02X}"),
        other => format!("{other} (0x{:02X})", u8::from(other)),
    }
}

/// `host:port` for messages.
fn target(cfg: &ModbusTcpConfig) -> String {
    if cfg.host.contains(':') {
        format!("[{}]:{}", cfg.host, cfg.port)
    } else {
        format!("{}:{}", cfg.host, cfg.port)
    }
}

/// Opens the TCP connection (resolving `host`) within `poll.timeout`.
async fn connect(cfg: &ModbusTcpConfig) -> Result<Context, String> {
    let stream = tokio::time::timeout(
        cfg.poll.timeout,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| {
        format!(
            "connect to {} timed out after {:?}",
            target(cfg),
            cfg.poll.timeout
        )
    })?
    .map_err(|e| format!("connect to {} failed: {e}", target(cfg)))?;
    // Small request/reply exchanges: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(tokio_modbus::client::tcp::attach_slave(
        stream,
        Slave(cfg.unit_id),
    ))
}

pub(crate) fn describe(block: &Block) -> String {
    format!(
        "{} {}..{}",
        block.table.as_str(),
        block.start,
        u32::from(block.start) + u32::from(block.count)
    )
}

/// Reads one block within `timeout`, checking the reply's shape.
pub(crate) async fn read_block(
    ctx: &mut Context,
    block: &Block,
    timeout: Duration,
) -> Result<BlockData, ReadError> {
    let (start, count) = (block.start, block.count);
    let request = match block.table {
        Table::Coil => Request::ReadCoils(start, count),
        Table::Discrete => Request::ReadDiscreteInputs(start, count),
        Table::Input => Request::ReadInputRegisters(start, count),
        Table::Holding => Request::ReadHoldingRegisters(start, count),
    };
    let reply = match tokio::time::timeout(timeout, ctx.call(request)).await {
        Err(_) => {
            return Err(ReadError::Timeout(format!(
                "no reply within {timeout:?} (reading {})",
                describe(block)
            )));
        }
        Ok(Err(e)) => {
            return Err(ReadError::Link(format!(
                "request failed (reading {}): {}",
                describe(block),
                link_error(&e)
            )));
        }
        Ok(Ok(Err(code))) => return Err(ReadError::Exception(code)),
        Ok(Ok(Ok(reply))) => reply,
    };
    let want = usize::from(count);
    match reply {
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            if words.len() == want {
                Ok(BlockData::Words(words))
            } else {
                Err(ReadError::Malformed(format!(
                    "{} registers in the reply to a read of {}",
                    words.len(),
                    describe(block)
                )))
            }
        }
        // Bits arrive packed in bytes: up to 7 padding bits follow the last one.
        Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits) => {
            if bits.len() >= want && bits.len() < want + 8 {
                bits.truncate(want);
                Ok(BlockData::Bits(bits))
            } else {
                Err(ReadError::Malformed(format!(
                    "{} bits in the reply to a read of {}",
                    bits.len(),
                    describe(block)
                )))
            }
        }
        // tokio-modbus rejects a mismatching function code as a protocol
        // error already; this is belt and braces.
        other => Err(ReadError::Malformed(format!(
            "unexpected reply {:?} to a read of {}",
            other.function_code(),
            describe(block)
        ))),
    }
}

/// A transport error as a technician should read it.
///
/// When the PLC closes the connection, tokio-modbus 0.17 reports
/// `io::Error::last_os_error()` (`service/tcp.rs`: `framed.next()` returned
/// `None`), i.e. whatever errno the thread saw last — measured: "Resource
/// temporarily unavailable (os error 11)". tokio never lets a real
/// `WouldBlock` escape, so that (or errno 0) means "closed by the peer".
fn link_error(e: &tokio_modbus::Error) -> String {
    if let tokio_modbus::Error::Transport(io) = e
        && (io.kind() == std::io::ErrorKind::WouldBlock || io.raw_os_error() == Some(0))
    {
        return "connection closed by the PLC".to_owned();
    }
    e.to_string()
}

/// The part of a block's reply that belongs to `item`.
pub(crate) fn item_raw<'a>(data: &'a BlockData, item: &Item) -> Option<RawValue<'a>> {
    let from = usize::from(item.offset);
    let to = from + usize::from(item.width);
    match data {
        BlockData::Words(words) => words.get(from..to).map(RawValue::Words),
        // A bit table entry is one bit wide (only bool lives there).
        BlockData::Bits(bits) => bits.get(from).copied().map(RawValue::Bit),
    }
}

/// Why a polling session ended.
enum SessionEnd {
    /// The link failed (the device was told offline already).
    Gone(String),
    /// The reading channel closed: the gateway is shutting down.
    Shutdown,
}

/// What the stations were last told about the device, so that an outage is
/// one `Offline` and a recovery one `Online`, however many reconnects and
/// polls lie in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Nothing,
    Online,
    Offline,
}

/// One poll's outcome for the session.
enum PollEnd {
    /// Every block answered with data (or an exception: the PLC speaks
    /// Modbus and says the address is not mapped).
    Whole,
    /// A block's reply was unusable; the connection stays.
    Degraded(String),
    /// The link failed at a block: the connection must go.
    Lost(String),
}

struct Device<T> {
    id: Arc<str>,
    station: Arc<str>,
    cfg: ModbusTcpConfig,
    tx: Sender<T>,
    health: DeviceHealth,
    map: RegisterMap,
    /// The status name of each planned block, `holding 100..104 (unit 1)`.
    block_names: Vec<String>,
}

/// Runs one Modbus TCP device until `tx` is closed.
///
/// The device is online while its polls are whole: every planned block
/// answered (data, or a Modbus exception for an unmapped address). It emits
/// `Online` on the first whole poll after an outage, one `Sample` per station
/// per poll (the values of that station's registers, in register-map order,
/// from the blocks that read), and one `Offline` per outage: when the
/// connection is lost or cannot be made, or a block's replies are malformed
/// — not one per failed reconnect. `Online`/`Offline` go to the device's
/// `station`; samples to each register's own station.
///
/// A block that fails is named in the health's `failing_blocks` until it
/// reads again; the blocks that read keep reporting. An exception or a
/// malformed reply is counted with `health.reject` and logged; the
/// connection stays. A timeout, I/O or protocol error (a reply that cannot
/// even be decoded) drops the connection and reconnects with jittered
/// backoff, which grows until the polls have been whole for 10 s: a PLC
/// that connects and fails at the same block every time is retried ever
/// more slowly, not at the fastest rate.
/// `health.frame()` counts the polls that delivered at least one sample.
pub async fn run<T: From<Reading> + Send + 'static>(
    id: Arc<str>,
    station: Arc<str>,
    cfg: ModbusTcpConfig,
    tx: Sender<T>,
    health: DeviceHealth,
) {
    let map = RegisterMap::new(&cfg.registers, cfg.poll.max_gap);
    let block_names = map
        .plan
        .blocks
        .iter()
        .map(|b| block_name(b, cfg.unit_id))
        .collect();
    Device {
        id,
        station,
        cfg,
        tx,
        health,
        map,
        block_names,
    }
    .run()
    .await;
}

/// A block as the status names it: table, address range and unit.
pub(crate) fn block_name(block: &Block, unit: u8) -> String {
    format!("{} (unit {unit})", describe(block))
}

impl<T: From<Reading> + Send + 'static> Device<T> {
    async fn run(&self) {
        for &i in &self.map.plan.unreadable {
            if let Some(reg) = self.cfg.registers.get(i) {
                warn!(device = %self.id, register = %reg.name, address = reg.address, "register runs past address 65535; never read");
            }
        }
        let mut backoff = Backoff::new(self.cfg.poll.reconnect);
        let mut told = Told::Nothing;
        // Failed attempts since the device was last online.
        let mut failures: u64 = 0;
        loop {
            if self.tx.is_closed() {
                return;
            }
            let connected = tokio::select! {
                c = connect(&self.cfg) => c,
                _ = self.tx.closed() => return,
            };
            let msg = match connected {
                Ok(mut ctx) => {
                    debug!(device = %self.id, target = %target(&self.cfg), "modbus connected");
                    match self
                        .session(&mut ctx, &mut told, &mut backoff, &mut failures)
                        .await
                    {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Gone(msg) => msg,
                    }
                    // `ctx` is dropped here: the socket closes.
                }
                Err(msg) => msg,
            };
            failures += 1;
            if failures > 1 {
                debug!(device = %self.id, error = %msg, attempt = failures, "modbus device still offline");
            }
            if !self.offline(&mut told, msg).await {
                return;
            }
            let delay = backoff.next_delay();
            debug!(device = %self.id, ?delay, "reconnecting after delay");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Marks the device online, announcing it when the stations were not
    /// told so already; false when the channel is closed.
    async fn online(&self, told: &mut Told, after_failures: u64) -> bool {
        if *told == Told::Online {
            return true;
        }
        *told = Told::Online;
        info!(device = %self.id, target = %target(&self.cfg), after_failures, "modbus device online");
        self.health.set_online();
        self.send(self.station.clone(), DeviceEvent::Online).await
    }

    /// Marks the device offline with `why`, announcing it once per outage;
    /// false when the channel is closed.
    async fn offline(&self, told: &mut Told, why: String) -> bool {
        self.health.set_offline(why.clone());
        if *told == Told::Offline {
            return true;
        }
        *told = Told::Offline;
        warn!(device = %self.id, target = %target(&self.cfg), error = %why, "modbus device offline, retrying with backoff");
        self.send(self.station.clone(), DeviceEvent::Offline(why))
            .await
    }

    /// Polls until the link fails or the gateway shuts down.
    async fn session(
        &self,
        ctx: &mut Context,
        told: &mut Told,
        backoff: &mut Backoff,
        failures: &mut u64,
    ) -> SessionEnd {
        let blocks = &self.map.plan.blocks;
        if blocks.is_empty() {
            // Nothing to ask: the TCP connection is all there is to know.
            if !self.online(told, *failures).await {
                return SessionEnd::Shutdown;
            }
            *failures = 0;
        }
        // Start at a random point of the first period, so that many devices
        // connected at once do not all poll (and produce records) together.
        let period = self.cfg.poll.interval.max(MIN_INTERVAL);
        let offset = period.mul_f64(fastrand::f64());
        let mut ticker = tokio::time::interval_at(Instant::now() + offset, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Per block: whether its last read failed (to log a fault once).
        let mut failing = vec![false; blocks.len()];
        // Per register: a decode error was already reported this session.
        let mut bad = vec![false; self.map.len()];
        let mut data: Vec<Option<BlockData>> = Vec::with_capacity(blocks.len());
        // Since when the polls have been whole, without a break.
        let mut whole_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.tx.closed() => return SessionEnd::Shutdown,
            }
            let end = tokio::select! {
                end = self.poll(ctx, &mut failing, &mut data) => end,
                _ = self.tx.closed() => return SessionEnd::Shutdown,
            };
            // The state first, then the values of the blocks that read.
            let announced = match &end {
                PollEnd::Whole => {
                    let since = *whole_since.get_or_insert_with(Instant::now);
                    // Only polls whole for a while reset the backoff: a PLC
                    // that answers once and fails at once must not produce
                    // online/offline alarms at the fastest rate.
                    if since.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    let ok = self.online(told, *failures).await;
                    *failures = 0;
                    ok
                }
                PollEnd::Degraded(why) | PollEnd::Lost(why) => {
                    whole_since = None;
                    self.offline(told, why.clone()).await
                }
            };
            if !announced {
                return SessionEnd::Shutdown;
            }
            // Capture time: when the poll's replies arrived.
            let ts_ms = clock::now_ms();
            let samples = self.decode_poll(&data, &mut bad);
            if samples.iter().any(Option::is_some) {
                self.health.frame();
            }
            if !self.send_samples(ts_ms, samples).await {
                return SessionEnd::Shutdown;
            }
            if let PollEnd::Lost(msg) = end {
                return SessionEnd::Gone(msg);
            }
        }
    }

    /// Reads every planned block once into `data` (one entry per block read,
    /// `None` where it gave no data), stopping at a link failure.
    async fn poll(
        &self,
        ctx: &mut Context,
        failing: &mut [bool],
        data: &mut Vec<Option<BlockData>>,
    ) -> PollEnd {
        data.clear();
        let mut end = PollEnd::Whole;
        for ((block, name), was_failing) in self
            .map
            .plan
            .blocks
            .iter()
            .zip(&self.block_names)
            .zip(failing.iter_mut())
        {
            let got = match read_block(ctx, block, self.cfg.poll.timeout).await {
                Ok(d) => {
                    if std::mem::take(was_failing) {
                        info!(device = %self.id, block = %name, "block readable again");
                    }
                    self.health.block_read(name);
                    Some(d)
                }
                Err(ReadError::Link(msg) | ReadError::Timeout(msg)) => {
                    *was_failing = true;
                    self.health.block_failed(name, &msg);
                    return PollEnd::Lost(msg);
                }
                Err(ReadError::Exception(code)) => {
                    let reason = format!(
                        "modbus exception reading {}: {}",
                        describe(block),
                        exception_name(code)
                    );
                    self.block_fault(was_failing, name, reason);
                    None
                }
                Err(ReadError::Malformed(msg)) => {
                    let reason = format!("malformed reply: {msg}");
                    self.block_fault(was_failing, name, reason.clone());
                    if matches!(end, PollEnd::Whole) {
                        end = PollEnd::Degraded(reason);
                    }
                    None
                }
            };
            data.push(got);
        }
        end
    }

    fn block_fault(&self, was_failing: &mut bool, name: &str, reason: String) {
        self.health.block_failed(name, &reason);
        if *was_failing {
            debug!(device = %self.id, %reason, "block still rejected");
        } else {
            warn!(device = %self.id, %reason, "block rejected; its values are skipped until it reads again");
        }
        *was_failing = true;
        self.health.reject(reason);
    }

    /// Decodes one poll's replies; by register index, `None` where unread.
    fn decode_poll(&self, data: &[Option<BlockData>], bad: &mut [bool]) -> Vec<Option<Sample>> {
        self.map.decode_poll(data, bad, |reg, e| {
            let reason = format!("cannot decode {}: {e}", reg.name);
            warn!(device = %self.id, %reason, "register skipped");
            self.health.reject(reason);
        })
    }

    /// Sends one `Sample` reading per station that has values; false on shutdown.
    async fn send_samples(&self, ts_ms: u64, by_reg: Vec<Option<Sample>>) -> bool {
        for (station, samples) in self.map.by_station(by_reg) {
            if !self
                .send_at(ts_ms, station, DeviceEvent::Sample(samples))
                .await
            {
                return false;
            }
        }
        true
    }

    async fn send(&self, station: Arc<str>, event: DeviceEvent) -> bool {
        self.send_at(clock::now_ms(), station, event).await
    }

    async fn send_at(&self, ts_ms: u64, station: Arc<str>, event: DeviceEvent) -> bool {
        let reading = Reading {
            device: self.id.clone(),
            station,
            ts_ms,
            event,
        };
        self.tx.send(reading.into()).await.is_ok()
    }
}

/// Connects once, reads every planned block once and reports each register
/// of the map, in config order: where it lives, the raw words (or bit) and
/// the decoded value, or why it could not be read.
///
/// Only a failed connect is an error; a block answered with an exception, a
/// malformed reply or a lost connection shows in the rows it concerns.
pub async fn probe(cfg: &ModbusTcpConfig) -> Result<Vec<ProbeRow>, ProbeError> {
    let plan = plan(&cfg.registers, cfg.poll.max_gap);
    let mut ctx = connect(cfg).await.map_err(ProbeError::Connect)?;
    let mut reads = Vec::with_capacity(plan.blocks.len());
    let mut lost: Option<String> = None;
    for block in &plan.blocks {
        let read = match &lost {
            Some(msg) => Err(ReadError::Link(format!("not read, connection lost: {msg}"))),
            None => read_block(&mut ctx, block, cfg.poll.timeout).await,
        };
        if let Err(ReadError::Link(m) | ReadError::Timeout(m)) = &read {
            lost.get_or_insert(m.clone());
        }
        reads.push(read);
    }
    drop(ctx);
    Ok(probe_rows(&cfg.registers, &plan, &reads, None))
}

/// The probe rows of a register map, in config order, from the reads of
/// its planned blocks (`reads[i]` answers `plan.blocks[i]`).
pub(crate) fn probe_rows(
    registers: &[RegisterConfig],
    plan: &Plan,
    reads: &[Result<BlockData, ReadError>],
    unit: Option<u8>,
) -> Vec<ProbeRow> {
    let n = registers.len();
    let mut outcome: Vec<(ProbeRaw, Result<f64, String>)> = (0..n)
        .map(|_| (ProbeRaw::Missing, Err("not read".to_owned())))
        .collect();
    for &i in &plan.unreadable {
        if let Some(o) = outcome.get_mut(i) {
            o.1 = Err("runs past address 65535".to_owned());
        }
    }
    for (block, read) in plan.blocks.iter().zip(reads) {
        for item in &block.items {
            let (Some(reg), Some(slot)) =
                (registers.get(item.register), outcome.get_mut(item.register))
            else {
                continue;
            };
            *slot = match read {
                Ok(d) => match item_raw(d, item) {
                    Some(raw) => {
                        let shown = match raw {
                            RawValue::Words(w) => ProbeRaw::Words(w.to_vec()),
                            RawValue::Bit(b) => ProbeRaw::Bit(b),
                        };
                        let name = Arc::from(reg.name.as_str());
                        let value = decode(reg, &name, raw)
                            .map(|s| s.value)
                            .map_err(|e| e.to_string());
                        (shown, value)
                    }
                    None => (ProbeRaw::Missing, Err("outside the reply".to_owned())),
                },
                Err(ReadError::Exception(code)) => (
                    ProbeRaw::Missing,
                    Err(format!("exception: {}", exception_name(*code))),
                ),
                Err(ReadError::Malformed(m)) => {
                    (ProbeRaw::Missing, Err(format!("malformed reply: {m}")))
                }
                Err(ReadError::Link(m) | ReadError::Timeout(m)) => {
                    (ProbeRaw::Missing, Err(m.clone()))
                }
            };
        }
    }
    registers
        .iter()
        .zip(outcome)
        .map(|(reg, (raw, value))| ProbeRow {
            unit,
            name: reg.name.clone(),
            table: reg.table,
            address: reg.address,
            modicon: reg.modicon(),
            data_type: reg.data_type,
            word_order: reg.word_order,
            role: reg.role,
            station: reg.station.clone(),
            raw,
            value,
        })
        .collect()
}
