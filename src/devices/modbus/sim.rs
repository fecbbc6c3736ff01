//! [`SimPlc`]: a simulated PLC — a real Modbus TCP server (tokio-modbus) on
//! 127.0.0.1, for tests and `linegate demo`.
//!
//! The PLC's four tables (coils, discrete inputs, input and holding
//! registers, 65 536 entries each, all zero at start) live behind a mutex the
//! owner sets at any time; every request sees the tables as they are when it
//! arrives. Switches make it misbehave the ways real PLCs do:
//!
//! - [`SimPlc::fail`]: answer any request touching an address range with a
//!   Modbus exception (e.g. `IllegalDataAddress` for an unmapped area);
//! - [`SimPlc::short_replies`]: answer reads touching a range with one
//!   register (or one byte of bits) too few — a malformed reply;
//! - [`SimPlc::stop`] / [`SimPlc::restart`]: stop listening and drop every
//!   connection (the PLC is switched off), then listen again on the same port.
//!
//! Supported functions: read coils / discrete inputs / input / holding
//! registers (FC 1–4) and write single / multiple coils and registers (FC 5,
//! 6, 15, 16). Anything else is answered with `IllegalFunction`; a read of 0
//! or more than 125 registers (2000 bits) with `IllegalDataValue`; a range
//! past address 65535 with `IllegalDataAddress`. No client input can panic it.
//! The unit id is ignored (it answers for every unit).
//!
//! [`SimRtuBus`]: simulated RS-485 slaves — tokio-modbus's RTU server on the
//! master side of a pseudo-terminal pair. The gateway opens the slave side
//! ([`SimRtuBus::path`]) as its serial port. Several unit ids answer on one
//! bus, each with its own tables (the same functions and switches as
//! [`SimPlc`]); a unit can be [`silence`](SimRtuBus::silence)d (it never
//! replies, like a dead or unpowered slave) and requests to unknown unit ids
//! get no reply, as on a real bus. [`SimRtuBus::unplug`] closes the master:
//! the slave node disappears and the gateway's reads end (EOF/`EIO`), what
//! an unplugged USB–RS-485 adapter looks like.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tracing::{debug, warn};

use super::decode::split_words;
use super::plan::limit;
use crate::config::{Table, WordOrder};

const TABLE_LEN: usize = 0x1_0000;

/// A simulated PLC listening on 127.0.0.1. Dropping it stops the server.
#[derive(Debug)]
pub struct SimPlc {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    /// While stopped: a socket bound to the port but not listening. Connects
    /// are refused as by a switched-off PLC, and the port is not handed to
    /// anyone else (another test's `start()` on port 0) in the meantime.
    reserve: Option<TcpSocket>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    requests: AtomicU64,
    connections: AtomicU64,
}

#[derive(Debug)]
struct State {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    input: Vec<u16>,
    holding: Vec<u16>,
    faults: Vec<(Table, Range<u32>, ExceptionCode)>,
    short: Vec<(Table, Range<u32>)>,
}

impl SimPlc {
    /// Starts a simulated PLC on 127.0.0.1 on a free port (see [`SimPlc::addr`]).
    pub async fn start() -> io::Result<Self> {
        Self::start_on(0).await
    }

    /// Starts a simulated PLC on 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(port: u16) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let listener = listen(port)?;
        let addr = listener.local_addr()?;
        let server = Some(spawn(listener, shared.clone()));
        Ok(SimPlc {
            shared,
            addr,
            server,
            reserve: None,
        })
    }

    /// The address it listens on (stays the same across stop/restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether it is listening (not [`stop`](SimPlc::stop)ped).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Stops listening and closes every client connection, as a PLC that is
    /// switched off. The tables and switches are kept.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // Wait until the listener is really closed (the task dropped).
            let _ = server.await;
            // Keep the port. Failing that (someone took it in between),
            // `restart` reports the conflict.
            self.reserve = bind(self.addr.port()).ok();
        }
    }

    /// Listens again on the same port after [`stop`](SimPlc::stop); a no-op
    /// when running. The port stays reserved while stopped, so this only
    /// fails if another program took it in the instant between the two.
    pub async fn restart(&mut self) -> io::Result<()> {
        if self.server.is_none() {
            let listener = listen(self.addr.port())?;
            self.reserve = None;
            self.server = Some(spawn(listener, self.shared.clone()));
        }
        Ok(())
    }

    /// Requests answered so far (data or exception).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.shared.with(f)
    }

    /// Sets holding registers from `addr` on; words past 65535 are ignored.
    pub fn set_holding(&self, addr: u16, words: &[u16]) {
        self.with(|s| put(&mut s.holding, addr, words));
    }

    /// Sets input registers from `addr` on; words past 65535 are ignored.
    pub fn set_input(&self, addr: u16, words: &[u16]) {
        self.with(|s| put(&mut s.input, addr, words));
    }

    pub fn set_coil(&self, addr: u16, on: bool) {
        self.with(|s| put(&mut s.coils, addr, &[on]));
    }

    pub fn set_discrete(&self, addr: u16, on: bool) {
        self.with(|s| put(&mut s.discrete, addr, &[on]));
    }

    /// Writes a u32 into two holding registers in `order`.
    pub fn set_holding_u32(&self, addr: u16, value: u32, order: WordOrder) {
        self.set_holding(addr, &split_words(u64::from(value), 2, order));
    }

    /// Writes a u32 into two input registers in `order`.
    pub fn set_input_u32(&self, addr: u16, value: u32, order: WordOrder) {
        self.set_input(addr, &split_words(u64::from(value), 2, order));
    }

    /// Writes an f32 into two holding registers in `order`.
    pub fn set_holding_f32(&self, addr: u16, value: f32, order: WordOrder) {
        self.set_holding_u32(addr, value.to_bits(), order);
    }

    /// Writes a u64 into four holding registers in `order`.
    pub fn set_holding_u64(&self, addr: u16, value: u64, order: WordOrder) {
        self.set_holding(addr, &split_words(value, 4, order));
    }

    /// The holding registers `addr..addr + n` (clipped at 65535).
    pub fn holding(&self, addr: u16, n: u16) -> Vec<u16> {
        self.with(|s| get(&s.holding, addr, n).to_vec())
    }

    pub fn coil(&self, addr: u16) -> bool {
        self.with(|s| s.coils.get(usize::from(addr)).copied().unwrap_or(false))
    }

    /// From now on, answers every request that touches `range` of `table`
    /// with the exception `code`.
    pub fn fail(&self, table: Table, range: Range<u16>, code: ExceptionCode) {
        let range = u32::from(range.start)..u32::from(range.end);
        self.with(|s| s.faults.push((table, range, code)));
    }

    /// From now on, answers reads that touch `range` of `table` with one
    /// register (or 8 bits) fewer than asked: a malformed reply.
    pub fn short_replies(&self, table: Table, range: Range<u16>) {
        let range = u32::from(range.start)..u32::from(range.end);
        self.with(|s| s.short.push((table, range)));
    }

    /// Clears every [`fail`](SimPlc::fail) and
    /// [`short_replies`](SimPlc::short_replies) switch.
    pub fn heal(&self) {
        self.with(|s| {
            s.faults.clear();
            s.short.clear();
        });
    }
}

impl Drop for SimPlc {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A listener on 127.0.0.1:`port` with `SO_REUSEADDR`, so a restart can bind
/// the same port while old connections linger in TIME_WAIT.
/// (Linux lets it share the port with the non-listening reserve socket.)
fn listen(port: u16) -> io::Result<TcpListener> {
    bind(port)?.listen(64)
}

fn bind(port: u16) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    Ok(socket)
}

fn spawn(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = move |stream: TcpStream, peer: SocketAddr| {
            let shared = shared.clone();
            async move {
                debug!(%peer, "sim plc: client connected");
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                Ok(Some((SimService(shared), stream)))
            }
        };
        let on_error = |e: io::Error| debug!(error = %e, "sim plc: connection ended");
        // Dropping `serve` (abort) cancels every connection task with it.
        if let Err(e) = server.serve(&on_connected, on_error).await {
            warn!(error = %e, "sim plc: stopped listening");
        }
    })
}

fn put<V: Copy>(table: &mut [V], addr: u16, values: &[V]) {
    let from = usize::from(addr);
    for (slot, v) in table.iter_mut().skip(from).zip(values) {
        *slot = *v;
    }
}

fn get<V>(table: &[V], addr: u16, n: u16) -> &[V] {
    let from = usize::from(addr);
    let to = (from + usize::from(n)).min(table.len());
    table.get(from..to).unwrap_or_default()
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    fn answer(&self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.with(|s| s.answer(req))
    }
}

impl State {
    fn new() -> Self {
        State {
            coils: vec![false; TABLE_LEN],
            discrete: vec![false; TABLE_LEN],
            input: vec![0; TABLE_LEN],
            holding: vec![0; TABLE_LEN],
            faults: Vec::new(),
            short: Vec::new(),
        }
    }

    /// The exception configured for `table` over `addr..addr + n`, if any;
    /// also checks the range fits the address space.
    fn check(&self, table: Table, addr: u16, n: usize) -> Result<(), ExceptionCode> {
        let from = u32::from(addr);
        let to = from + u32::try_from(n).unwrap_or(u32::MAX).min(TABLE_LEN as u32);
        if to > TABLE_LEN as u32 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match self
            .faults
            .iter()
            .find(|(t, r, _)| *t == table && r.start < to && from < r.end)
        {
            Some((_, _, code)) => Err(*code),
            None => Ok(()),
        }
    }

    fn is_short(&self, table: Table, addr: u16, n: u16) -> bool {
        let from = u32::from(addr);
        let to = from + u32::from(n);
        self.short
            .iter()
            .any(|(t, r)| *t == table && r.start < to && from < r.end)
    }

    fn read_check(&self, table: Table, addr: u16, n: u16) -> Result<(), ExceptionCode> {
        if n == 0 || n > limit(table) {
            return Err(ExceptionCode::IllegalDataValue);
        }
        self.check(table, addr, usize::from(n))
    }

    fn read_words(&self, table: Table, addr: u16, n: u16) -> Result<Vec<u16>, ExceptionCode> {
        self.read_check(table, addr, n)?;
        let src = if table == Table::Input {
            &self.input
        } else {
            &self.holding
        };
        let mut words = get(src, addr, n).to_vec();
        if self.is_short(table, addr, n) {
            words.pop();
        }
        Ok(words)
    }

    fn read_bits(&self, table: Table, addr: u16, n: u16) -> Result<Vec<bool>, ExceptionCode> {
        self.read_check(table, addr, n)?;
        let src = if table == Table::Coil {
            &self.coils
        } else {
            &self.discrete
        };
        let mut bits = get(src, addr, n).to_vec();
        if self.is_short(table, addr, n) {
            // Bits travel packed: drop a whole byte so the reply is visibly short.
            bits.truncate(bits.len().saturating_sub(8).min(usize::from(n - 1)));
        }
        Ok(bits)
    }

    fn answer(&mut self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        match req {
            Request::ReadCoils(a, n) => self.read_bits(Table::Coil, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => self
                .read_bits(Table::Discrete, a, n)
                .map(Response::ReadDiscreteInputs),
            Request::ReadInputRegisters(a, n) => self
                .read_words(Table::Input, a, n)
                .map(Response::ReadInputRegisters),
            Request::ReadHoldingRegisters(a, n) => self
                .read_words(Table::Holding, a, n)
                .map(Response::ReadHoldingRegisters),
            Request::WriteSingleCoil(a, on) => {
                self.check(Table::Coil, a, 1)?;
                put(&mut self.coils, a, &[on]);
                Ok(Response::WriteSingleCoil(a, on))
            }
            Request::WriteMultipleCoils(a, bits) => {
                self.check(Table::Coil, a, bits.len())?;
                put(&mut self.coils, a, &bits);
                let n = u16::try_from(bits.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                Ok(Response::WriteMultipleCoils(a, n))
            }
            Request::WriteSingleRegister(a, w) => {
                self.check(Table::Holding, a, 1)?;
                put(&mut self.holding, a, &[w]);
                Ok(Response::WriteSingleRegister(a, w))
            }
            Request::WriteMultipleRegisters(a, words) => {
                self.check(Table::Holding, a, words.len())?;
                put(&mut self.holding, a, &words);
                let n = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                Ok(Response::WriteMultipleRegisters(a, n))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// The per-connection service: answers from the shared tables.
struct SimService(Arc<Shared>);

impl Service for SimService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.0.answer(req))
    }
}

/// Simulated RTU slaves on one pseudo-terminal "bus". Dropping it (or
/// [`unplug`](SimRtuBus::unplug)) removes the port.
#[derive(Debug)]
pub struct SimRtuBus {
    bus: Arc<RtuBus>,
    path: std::path::PathBuf,
    server: Option<JoinHandle<()>>,
    /// The slave side, held so the pty survives the gateway closing and
    /// reopening its port. Never read here.
    _slave: tokio_serial::SerialStream,
}

#[derive(Debug)]
struct RtuBus {
    units: Mutex<BTreeMap<u8, RtuUnit>>,
}

#[derive(Debug)]
struct RtuUnit {
    state: State,
    silent: bool,
    /// Requests answered (data or exception).
    answered: u64,
    /// Requests addressed to it and left unanswered (silenced).
    ignored: u64,
}

impl SimRtuBus {
    /// Starts a bus whose slaves answer for `unit_ids` (all tables zero).
    /// Must be called inside a tokio runtime.
    pub fn start(unit_ids: &[u8]) -> io::Result<Self> {
        let (master, slave) = tokio_serial::SerialStream::pair().map_err(io::Error::from)?;
        let path = tokio_serial::SerialPort::name(&slave)
            .map(std::path::PathBuf::from)
            .ok_or_else(|| io::Error::other("pty slave has no name"))?;
        let units = unit_ids
            .iter()
            .map(|&id| {
                let unit = RtuUnit {
                    state: State::new(),
                    silent: false,
                    answered: 0,
                    ignored: 0,
                };
                (id, unit)
            })
            .collect();
        let bus = Arc::new(RtuBus {
            units: Mutex::new(units),
        });
        let service = RtuService(bus.clone());
        let server = tokio::spawn(async move {
            let server = tokio_modbus::server::rtu::Server::new(master);
            if let Err(e) = server.serve_forever(service).await {
                debug!(error = %e, "sim rtu bus: server stopped");
            }
        });
        Ok(SimRtuBus {
            bus,
            path,
            server: Some(server),
            _slave: slave,
        })
    }

    /// The serial device node the gateway opens (`/dev/pts/N`).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn unit<R>(&self, unit: u8, f: impl FnOnce(&mut RtuUnit) -> R) -> R {
        let mut units = self
            .bus
            .units
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match units.get_mut(&unit) {
            Some(u) => f(u),
            None => panic!("sim rtu bus has no unit {unit}"),
        }
    }

    /// Sets holding registers of `unit` from `addr` on.
    pub fn set_holding(&self, unit: u8, addr: u16, words: &[u16]) {
        self.unit(unit, |u| put(&mut u.state.holding, addr, words));
    }

    /// Writes a u32 into two holding registers of `unit` in `order`.
    pub fn set_holding_u32(&self, unit: u8, addr: u16, value: u32, order: WordOrder) {
        self.set_holding(unit, addr, &split_words(u64::from(value), 2, order));
    }

    /// Sets input registers of `unit` from `addr` on.
    pub fn set_input(&self, unit: u8, addr: u16, words: &[u16]) {
        self.unit(unit, |u| put(&mut u.state.input, addr, words));
    }

    /// From now on `unit` answers requests touching `range` of `table` with `code`.
    pub fn fail(&self, unit: u8, table: Table, range: Range<u16>, code: ExceptionCode) {
        let range = u32::from(range.start)..u32::from(range.end);
        self.unit(unit, |u| u.state.faults.push((table, range, code)));
    }

    /// From now on `unit` answers reads touching `range` of `table` one
    /// register short: a malformed reply.
    pub fn short_replies(&self, unit: u8, table: Table, range: Range<u16>) {
        let range = u32::from(range.start)..u32::from(range.end);
        self.unit(unit, |u| u.state.short.push((table, range)));
    }

    /// Clears `unit`'s fault and short-reply switches.
    pub fn heal(&self, unit: u8) {
        self.unit(unit, |u| {
            u.state.faults.clear();
            u.state.short.clear();
        });
    }

    /// A silent unit receives its requests but never replies (dead slave).
    pub fn silence(&self, unit: u8, silent: bool) {
        self.unit(unit, |u| u.silent = silent);
    }

    /// Requests `unit` answered so far (data or exception).
    pub fn answered(&self, unit: u8) -> u64 {
        self.unit(unit, |u| u.answered)
    }

    /// Requests addressed to `unit` while it was silent.
    pub fn ignored(&self, unit: u8) -> u64 {
        self.unit(unit, |u| u.ignored)
    }

    /// Unplugs the adapter: stops the server and closes both pty ends, so
    /// the node disappears and the gateway's port reads EOF or `EIO`.
    pub async fn unplug(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // Wait until the master is really closed (the task dropped).
            let _ = server.await;
        }
        // `_slave` closes as `self` drops here.
    }
}

impl Drop for SimRtuBus {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The RTU server's service: dispatches by unit id; unknown and silenced
/// units give no reply (`Ok(None)`), as no slave answers on a real bus.
struct RtuService(Arc<RtuBus>);

impl Service for RtuService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut units = self.0.units.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = match units.get_mut(&req.slave) {
            None => Ok(None),
            Some(u) if u.silent => {
                u.ignored += 1;
                Ok(None)
            }
            Some(u) => {
                u.answered += 1;
                u.state.answer(req.request).map(Some)
            }
        };
        std::future::ready(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new()
    }

    #[test]
    fn hostile_requests_get_exceptions_not_panics() {
        let mut s = state();
        use ExceptionCode::*;
        let table = [
            (Request::ReadHoldingRegisters(65535, 2), IllegalDataAddress),
            (Request::ReadHoldingRegisters(0, 0), IllegalDataValue),
            (Request::ReadHoldingRegisters(0, 126), IllegalDataValue),
            (Request::ReadCoils(65000, 2000), IllegalDataAddress),
            (Request::ReadCoils(0, 2001), IllegalDataValue),
            (
                Request::WriteMultipleRegisters(65535, vec![1, 2].into()),
                IllegalDataAddress,
            ),
            (Request::ReportServerId, IllegalFunction),
        ];
        for (req, want) in table {
            assert_eq!(s.answer(req.clone()), Err(want), "{req:?}");
        }
        assert_eq!(
            s.answer(Request::ReadHoldingRegisters(65535, 1)),
            Ok(Response::ReadHoldingRegisters(vec![0]))
        );
    }

    #[test]
    fn faults_and_short_replies_apply_to_overlapping_reads() {
        let mut s = state();
        s.faults
            .push((Table::Holding, 10..12, ExceptionCode::ServerDeviceBusy));
        s.short.push((Table::Input, 0..1));
        assert_eq!(
            s.answer(Request::ReadHoldingRegisters(8, 3)),
            Err(ExceptionCode::ServerDeviceBusy)
        );
        assert!(s.answer(Request::ReadHoldingRegisters(12, 3)).is_ok());
        assert!(s.answer(Request::ReadCoils(10, 3)).is_ok());
        assert_eq!(
            s.answer(Request::ReadInputRegisters(0, 3)),
            Ok(Response::ReadInputRegisters(vec![0, 0]))
        );
    }

    #[tokio::test]
    async fn rtu_bus_answers_per_unit_and_a_silent_unit_never() {
        use crate::config::{Parity, SerialLine};
        use tokio_modbus::Slave;
        use tokio_modbus::client::{Reader, rtu};
        use tokio_modbus::prelude::SlaveContext;
        let bus = SimRtuBus::start(&[1, 2, 3]).unwrap();
        bus.set_holding(1, 0, &[11]);
        bus.set_holding(2, 0, &[22]);
        bus.silence(3, true);
        let line = SerialLine {
            baud: 19200,
            parity: Parity::Even,
            ..SerialLine::default()
        };
        let port = crate::devices::serial::open(bus.path(), &line).unwrap();
        let mut ctx = rtu::attach_slave(port, Slave(1));
        let wait = std::time::Duration::from_secs(5);
        let r = tokio::time::timeout(wait, ctx.read_holding_registers(0, 1)).await;
        assert_eq!(r.unwrap().unwrap(), Ok(vec![11]));
        ctx.set_slave(Slave(2));
        let r = tokio::time::timeout(wait, ctx.read_holding_registers(0, 1)).await;
        assert_eq!(r.unwrap().unwrap(), Ok(vec![22]));
        ctx.set_slave(Slave(3));
        let short = std::time::Duration::from_millis(100);
        assert!(
            tokio::time::timeout(short, ctx.read_holding_registers(0, 1))
                .await
                .is_err()
        );
        assert_eq!(
            (bus.answered(1), bus.answered(2), bus.ignored(3)),
            (1, 1, 1)
        );
    }
}
