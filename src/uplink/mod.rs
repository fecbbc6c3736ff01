//! Uplink: the MQTT session to the MES broker (rumqttc, QoS 1).
//!
//! MQTT 5 (`rumqttc::v5`). Publishes records from the store in `seq` order, one record per message,
//! and deletes a record only after its PUBACK. rumqttc's `publish()` returning
//! `Ok` means only "queued in memory", so acknowledgements are correlated from
//! the event stream: every publish request is remembered in order, tagged with
//! its `seq`; `Outgoing::Publish(pkid)` binds the oldest tag to the packet id;
//! `PubAck(pkid)` acknowledges it.
//!
//! Each connection gets a fresh rumqttc event loop. rumqttc drops its pending
//! publishes when a broker starts a new session and may yield stale PUBACKs
//! after a reconnect; a fresh event loop per connection sidesteps both, and
//! everything unacknowledged is republished from the store, oldest first,
//! after every (re)connect. Between reconnect attempts the jittered
//! exponential backoff applies, but a cheap TCP probe every 200–400 ms
//! (jittered) ends the wait as soon as a broker that was down accepts
//! connections again. Also: the retained status (last will `offline`),
//! and MES commands in, results out.

pub mod bound;
pub mod command;
pub mod payload;
mod session;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{GatewayConfig, MqttConfig};
use crate::devices::backoff::Backoff;
use crate::devices::health::HealthRegistry;
use crate::station::Command;
use crate::store::{CapacityStatus, Store};

pub use self::command::Refused;

/// Records out for delivery, shared by the uplink and the pipeline under
/// one lock, so that drop-oldest never drops a record the broker may be
/// receiving: the record is either published or dropped, never both.
#[derive(Debug, Default, Clone)]
pub struct Outbound(Arc<Mutex<OutboundSets>>);

#[derive(Debug, Default)]
pub struct OutboundSets {
    /// Handed to the MQTT client in the current connection and not yet
    /// acknowledged: drop-oldest skips them.
    pub in_flight: BTreeSet<u64>,
    /// Picked by drop-oldest for the commit in progress: the uplink does
    /// not publish them.
    pub dropping: BTreeSet<u64>,
    /// The uplink must read again from this seq (a drop whose commit
    /// failed: the records it skipped are still there).
    pub rewind: Option<u64>,
}

impl Outbound {
    pub fn lock(&self) -> MutexGuard<'_, OutboundSets> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The uplink's counters since the gateway started, shown in the status.
#[derive(Debug, Default, Clone)]
pub struct UplinkStats {
    /// Commands refused with `gateway busy: command queue full`, unaudited.
    pub commands_busy: u64,
    /// Of those, the ones there was no room to answer either: no result, no
    /// audit record, only this count.
    pub commands_unanswered: u64,
    /// Records the broker refused (PUBACK reason code >= 0x80): kept in the
    /// store and sent again.
    pub records_refused: u64,
    /// The broker's last refusal: its reason code and reason string.
    pub last_refusal: Option<String>,
}

/// Where the connection to the broker stands, for the service manager's
/// status line (`app::service`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Connecting (the first attempt, or again after a wait).
    #[default]
    Connecting,
    Connected,
    /// Lost or refused; waiting to try again. Why, as logged.
    Down(String),
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkState::Connecting => f.write_str("connecting"),
            LinkState::Connected => f.write_str("connected"),
            LinkState::Down(why) => write!(f, "down ({why})"),
        }
    }
}

/// How often the uplink task beats its heartbeat, whatever it is doing.
const BEAT: Duration = Duration::from_millis(500);

/// How a command ended: `Ok` when applied, `Err(reason)` when rejected.
pub type CommandOutcome = Result<(), String>;

/// A command handed to the pipeline: either validated for a station, or
/// refused (to be audited). The pipeline replies once the audit is committed.
#[derive(Debug)]
pub struct CommandRequest {
    pub command: Result<Command, Refused>,
    pub reply: oneshot::Sender<CommandOutcome>,
}

/// A stored record the uplink cannot publish (larger than
/// `mqtt.max_packet_size`), handed to the pipeline: the uplink commits
/// nothing itself, so the pipeline commits the `record-undeliverable`
/// alarm, then sets the record aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undeliverable {
    pub seq: u64,
    pub kind: &'static str,
    /// Its payload size and the limit it exceeds (topic and packet header
    /// included), in bytes.
    pub bytes: usize,
    pub max: usize,
}

/// Everything the uplink task needs. `T` is the pipeline's input queue item,
/// built from a [`CommandRequest`] or an [`Undeliverable`]; commands share
/// that one queue with device readings so both are applied in arrival order.
pub struct Uplink<T> {
    pub gateway: GatewayConfig,
    pub mqtt: MqttConfig,
    pub store: Arc<dyn Store>,
    /// Highest committed `seq`; a change means there is something new to send.
    pub committed: watch::Receiver<u64>,
    /// The store's capacity figures (kept by the pipeline), for the status.
    pub capacity: watch::Receiver<CapacityStatus>,
    /// Records out for delivery (shared with the pipeline's drop-oldest).
    pub outbound: Outbound,
    pub commands: mpsc::Sender<T>,
    pub health: HealthRegistry,
    /// Where the connection stands (written by the uplink only).
    pub link: Arc<watch::Sender<LinkState>>,
    /// The config generation, shown in the status.
    pub generation: watch::Receiver<u64>,
    /// Beaten while the uplink task turns (the watchdog reads it).
    pub heartbeat: crate::tasks::Heartbeat,
}

impl<T: From<CommandRequest> + From<Undeliverable> + Send + 'static> Uplink<T> {
    /// Run until `shutdown` turns true: connect, publish, reconnect with
    /// jittered backoff, cut short when the broker comes back
    /// ([`wait_for_broker`]), forever. The heartbeat beats as long as this
    /// task is polled: connecting and waiting to reconnect count as alive;
    /// a task stuck in a blocking call does not beat.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let heartbeat = self.heartbeat.clone();
        tokio::select! {
            () = self.sessions(shutdown) => {}
            () = heartbeat.beat_every(BEAT) => {}
        }
    }

    async fn sessions(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.mqtt.reconnect);
        let (results_tx, mut results_rx) = mpsc::channel(64);
        let mut committed = self.committed.clone();
        let mut stats = UplinkStats::default();
        let mut rng = fastrand::Rng::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.link.send_replace(LinkState::Connecting);
            let ended = session::Session::run(
                &self,
                &mut committed,
                &results_tx,
                &mut results_rx,
                &mut shutdown,
                &mut backoff,
                &mut stats,
            )
            .await;
            match ended {
                session::Ended::Shutdown => return,
                session::Ended::Lost(why) => {
                    self.link.send_replace(LinkState::Down(why.clone()));
                    tracing::warn!(broker = %format!("{}:{}", self.mqtt.host, self.mqtt.port), error = %why, "MQTT connection lost")
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                back = wait_for_broker(&self.mqtt.host, self.mqtt.port, delay, &mut rng) => {
                    if back {
                        tracing::info!(broker = %format!("{}:{}", self.mqtt.host, self.mqtt.port), "broker accepts connections again; reconnecting");
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// While waiting to reconnect, a bare TCP connect to the broker is tried
/// after a pause drawn anew each time from this range (ms), so that many
/// gateways waiting for the same broker probe, and then reconnect, spread
/// over the range rather than in step.
const PROBE_PAUSE_MS: std::ops::RangeInclusive<u64> = 200..=400;

/// Longest a probe waits for the TCP handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Wait `delay` (the backoff) before the next full MQTT connect, or less:
/// probes (a TCP connect, closed at once) run meanwhile, the first at once,
/// then one every 200–400 ms, and one that finds the port open after an
/// earlier probe found it closed (or timed out) ends the wait, since the
/// broker just came back. Returns whether it did.
///
/// A broker whose port is open at the first probe, right after the failed
/// attempt, is up: it (or the MQTT handshake), not the network, failed
/// that attempt. Probing stops and the whole backoff is waited, so a broker
/// that accepts TCP but refuses MQTT connects is not hammered. Each full
/// connect that fails still grows the backoff.
async fn wait_for_broker(host: &str, port: u16, delay: Duration, rng: &mut fastrand::Rng) -> bool {
    let deadline = Instant::now() + delay;
    let mut seen_down = false;
    // The first probe at once: it tells a broker that is down (the port
    // closed) from one that failed the connect while up.
    let mut probe_at = Instant::now();
    loop {
        if probe_at >= deadline {
            tokio::time::sleep_until(deadline).await;
            return false;
        }
        tokio::time::sleep_until(probe_at).await;
        let limit = PROBE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(limit, TcpStream::connect((host, port))).await {
            Ok(Ok(_open)) if seen_down => return true,
            Ok(Ok(_open)) => {
                tokio::time::sleep_until(deadline).await;
                return false;
            }
            Ok(Err(_)) | Err(_) => seen_down = true,
        }
        probe_at = Instant::now() + Duration::from_millis(rng.u64(PROBE_PAUSE_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port with nothing listening on it (a moment ago).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn the_wait_ends_when_a_closed_port_opens() {
        let port = closed_port();
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            loop {
                let _ = l.accept().await;
            }
        });
        let started = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let back = wait_for_broker("127.0.0.1", port, Duration::from_secs(30), &mut rng).await;
        opener.abort();
        assert!(back, "the wait was not cut short");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_port_open_all_along_does_not_cut_the_backoff_short() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            let mut accepted = 0u32;
            while l.accept().await.is_ok() {
                accepted += 1;
                if accepted > 1 {
                    return accepted;
                }
            }
            accepted
        });
        let started = Instant::now();
        let mut rng = fastrand::Rng::with_seed(2);
        let back = wait_for_broker("127.0.0.1", port, Duration::from_millis(1500), &mut rng).await;
        assert!(!back);
        assert!(started.elapsed() >= Duration::from_millis(1500));
        // One probe, then no more.
        assert!(!accept.is_finished(), "probed more than once");
        accept.abort();
    }
}
