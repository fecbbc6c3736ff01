//! The serial barcode scanner task: open, read, frame, report, reconnect;
//! and [`probe`], the same framing for `linegate probe`.
//!
//! One task per scanner ([`run`]). It owns the scanner's port, framer, backoff
//! and [`DeviceHealth`], and turns the byte stream into [`Reading`]s:
//!
//! ```text
//!   ┌──────────┐ ok: Online, reset backoff ┌─────────┐ frame → Scan
//!   │ opening  │──────────────────────────▶│ reading │ reject → counted + warn
//!   └──────────┘                           └─────────┘
//!     ▲   │ fails: Offline once per outage,     │ EOF / EIO / any read error:
//!     │   ▼ warn first time, then debug         ▼ close, Offline (once)
//!   ┌─────────────────────────────────────────────┐
//!   │ wait a jittered backoff delay               │
//!   └─────────────────────────────────────────────┘
//! ```
//!
//! On Linux an unplugged scanner (and a hung-up pseudo-terminal) reads as
//! `Ok(0)` immediately and forever; treating it as "gone" and sleeping the
//! backoff before reopening is what prevents a 100 % CPU loop. The task never
//! exits on device errors; it returns only when the reading channel closes
//! (the gateway is shutting down).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::Sender;
use tokio_serial::SerialStream;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::framing::{FrameOutcome, Framer, RejectReason};
use super::health::DeviceHealth;
use super::serial;
use super::{DeviceEvent, Reading};
use crate::clock;
use crate::config::SerialScannerConfig;

/// Bytes asked for per `read`; a burst of scans is framed in batches this size.
const READ_CHUNK: usize = 4096;

/// Why a reading session ended.
enum SessionEnd {
    /// The device went away or failed; the message says how.
    Gone(String),
    /// The reading channel closed: the gateway is shutting down.
    Shutdown,
}

struct Scanner<T> {
    id: Arc<str>,
    station: Arc<str>,
    cfg: SerialScannerConfig,
    tx: Sender<T>,
    health: DeviceHealth,
}

/// Runs one serial scanner until `tx` is closed.
///
/// Emits `Online` after every successful open, one `Scan` per accepted frame,
/// and one `Offline` per outage (when the port is lost, or when the very first
/// open fails) — not one per failed reopen. Rejected frames are counted in
/// A session at least this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// `health` and logged, never sent.
///
/// `T` is whatever the consumer's queue carries (the pipeline merges device
/// readings and MES commands into one ordered queue); the scanner only needs
/// to build it from a [`Reading`].
pub async fn run<T: From<Reading> + Send + 'static>(
    id: Arc<str>,
    station: Arc<str>,
    cfg: SerialScannerConfig,
    tx: Sender<T>,
    health: DeviceHealth,
) {
    Scanner {
        id,
        station,
        cfg,
        tx,
        health,
    }
    .run()
    .await;
}

impl<T: From<Reading> + Send + 'static> Scanner<T> {
    async fn run(&self) {
        let mut backoff = Backoff::new(self.cfg.reconnect);
        // Whether the current outage was already announced with `Offline`.
        let mut offline_sent = false;
        let mut open_failures: u64 = 0;
        loop {
            if self.tx.is_closed() {
                return;
            }
            match serial::open(&self.cfg.path, &self.cfg.line) {
                Ok(port) => {
                    let resolved = std::fs::canonicalize(&self.cfg.path).ok();
                    info!(
                        device = %self.id,
                        path = %self.cfg.path.display(),
                        node = ?resolved,
                        after_failures = open_failures,
                        "scanner online"
                    );
                    open_failures = 0;
                    self.health.set_online();
                    let opened = tokio::time::Instant::now();
                    if !self.send(DeviceEvent::Online).await {
                        return;
                    }
                    let end = self.session(port).await;
                    // Only a session that lasted resets the backoff: a port
                    // that opens and fails at once (a flapping USB link) must
                    // not produce online/offline alarms at the fastest rate.
                    if opened.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    match end {
                        SessionEnd::Shutdown => return,
                        // A new outage starts: announce it (once).
                        SessionEnd::Gone(msg) => {
                            warn!(device = %self.id, path = %self.cfg.path.display(), error = %msg, "scanner offline");
                            self.health.set_offline(msg.clone());
                            offline_sent = true;
                            if !self.send(DeviceEvent::Offline(msg)).await {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    open_failures += 1;
                    let msg = e.to_string();
                    if open_failures == 1 {
                        warn!(device = %self.id, error = %msg, "cannot open scanner, retrying with backoff");
                    } else {
                        debug!(device = %self.id, error = %msg, attempt = open_failures, "cannot open scanner");
                    }
                    self.health.set_offline(msg.clone());
                    if !offline_sent {
                        offline_sent = true;
                        if !self.send(DeviceEvent::Offline(msg)).await {
                            return;
                        }
                    }
                }
            }
            let delay = backoff.next_delay();
            debug!(device = %self.id, ?delay, "reopening scanner after delay");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Reads and frames until the port fails or the gateway shuts down.
    async fn session(&self, mut port: SerialStream) -> SessionEnd {
        let mut framer = Framer::new(&self.cfg.framing);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut outcomes = Vec::new();
        loop {
            let idle = self
                .cfg
                .framing
                .idle_timeout
                .filter(|_| framer.has_pending());
            let read = tokio::select! {
                r = read_with_idle(&mut port, &mut buf, idle) => r,
                _ = self.tx.closed() => return SessionEnd::Shutdown,
            };
            // Capture time: when the bytes arrived, not when the channel had room.
            let ts_ms = clock::now_ms();
            match read {
                Some(Ok(0)) => {
                    return self.gone(&framer, "end of file (device unplugged or closed)");
                }
                Some(Ok(n)) => framer.feed(buf.get(..n).unwrap_or_default(), &mut outcomes),
                Some(Err(e)) => return self.gone(&framer, &format!("read failed: {e}")),
                None => outcomes.extend(framer.idle()),
            }
            for outcome in outcomes.drain(..) {
                match outcome {
                    FrameOutcome::Frame(bytes) => {
                        self.health.frame();
                        if !self.send_at(ts_ms, DeviceEvent::Scan(bytes)).await {
                            return SessionEnd::Shutdown;
                        }
                    }
                    FrameOutcome::Rejected(reason) => {
                        warn!(device = %self.id, %reason, "scanner frame rejected");
                        self.health.reject(reason.to_string());
                    }
                }
            }
        }
    }

    fn gone(&self, framer: &Framer, why: &str) -> SessionEnd {
        let partial = framer.pending_len();
        if partial > 0 {
            warn!(device = %self.id, bytes = partial, "unfinished frame lost with the device");
        }
        SessionEnd::Gone(why.to_owned())
    }

    /// Sends one event; false when the channel is closed (shutdown).
    async fn send(&self, event: DeviceEvent) -> bool {
        self.send_at(clock::now_ms(), event).await
    }

    async fn send_at(&self, ts_ms: u64, event: DeviceEvent) -> bool {
        let reading = Reading {
            device: self.id.clone(),
            station: self.station.clone(),
            ts_ms,
            event,
        };
        self.tx.send(reading.into()).await.is_ok()
    }
}

/// What `linegate probe` sees from a scanner, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A frame the gateway would accept as a scan (prefix, suffix removed).
    Frame(Vec<u8>),
    /// A frame the gateway would reject, and why.
    Rejected(RejectReason),
    /// The port failed or closed; nothing more is read.
    Ended(String),
}

/// Open the scanner's port and report every frame as it arrives
/// (`seen(capture time in ms, event)`) for `duration`, framed exactly as
/// the running gateway frames it. Only a port that cannot be opened is an
/// error; a port that fails later ends the probe with [`ProbeEvent::Ended`].
pub async fn probe(
    cfg: &SerialScannerConfig,
    duration: Duration,
    mut seen: impl FnMut(u64, ProbeEvent),
) -> Result<(), serial::SerialError> {
    let mut port = serial::open(&cfg.path, &cfg.line)?;
    let deadline = tokio::time::Instant::now() + duration;
    let mut framer = Framer::new(&cfg.framing);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut outcomes = Vec::new();
    loop {
        let idle = cfg.framing.idle_timeout.filter(|_| framer.has_pending());
        let read = tokio::select! {
            r = read_with_idle(&mut port, &mut buf, idle) => r,
            () = tokio::time::sleep_until(deadline) => return Ok(()),
        };
        let ts_ms = clock::now_ms();
        match read {
            Some(Ok(0)) => {
                seen(
                    ts_ms,
                    ProbeEvent::Ended("end of file (device unplugged or closed)".into()),
                );
                return Ok(());
            }
            Some(Ok(n)) => framer.feed(buf.get(..n).unwrap_or_default(), &mut outcomes),
            Some(Err(e)) => {
                seen(ts_ms, ProbeEvent::Ended(format!("read failed: {e}")));
                return Ok(());
            }
            None => outcomes.extend(framer.idle()),
        }
        for outcome in outcomes.drain(..) {
            seen(
                ts_ms,
                match outcome {
                    FrameOutcome::Frame(bytes) => ProbeEvent::Frame(bytes),
                    FrameOutcome::Rejected(reason) => ProbeEvent::Rejected(reason),
                },
            );
        }
    }
}

/// One `read`; `None` when `idle` is set and elapsed first. Cancel-safe.
async fn read_with_idle(
    port: &mut SerialStream,
    buf: &mut [u8],
    idle: Option<Duration>,
) -> Option<std::io::Result<usize>> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, port.read(buf)).await.ok(),
        None => Some(port.read(buf).await),
    }
}
