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
//!
//! Several brokers (`mqtt.brokers`) are tried in their order in a round:
//! when one cannot be reached or its handshake (TLS or MQTT) fails, the
//! next at once; when every one failed, the backoff (and the probes, of
//! every broker) before the next round. Every round starts from the first
//! broker, so the gateway returns to it at the next reconnect once it is
//! back; on another broker, it also leaves that working connection for the
//! first once the first has accepted TCP connections for
//! `mqtt.return_to_first` (5 min) and the connection has lasted as long,
//! so a flapping broker causes no storm of switches. What the gateway has
//! not seen acknowledged is sent again from the store to whichever broker
//! it reaches: a switch loses nothing, it may duplicate.

pub mod bound;
pub mod command;
pub mod payload;
mod session;
pub mod signed;
pub mod tls;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{Broker, GatewayConfig, MqttConfig};
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

/// The uplink's state and counters since the gateway started, shown in the
/// status (MQTT, `linegate status`, metrics). Owned by the uplink task,
/// which publishes every change on a `watch` ([`Uplink::stats`]).
#[derive(Debug, Default, Clone)]
pub struct UplinkStats {
    /// The MQTT session is up (CONNACK received, not lost since).
    pub connected: bool,
    /// Records the broker acknowledged (and the store deleted).
    pub records_published: u64,
    /// Commands received on the command topics.
    pub commands_received: u64,
    /// Command results published: accepted, and refused (any reason).
    pub commands_accepted: u64,
    pub commands_refused: u64,
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
    /// The broker of the current connection (`host:port`).
    pub broker: Option<String>,
    /// The connection (the current one, or the last) is TLS.
    pub tls: bool,
    /// Sessions established since the gateway started.
    pub connects: u64,
    /// Why the last connect failed or the last connection ended, `None`
    /// before any.
    pub last_error: Option<LinkError>,
}

impl UplinkStats {
    /// Where the connection stands, in brief (the service manager's
    /// status line).
    pub fn link_state(&self) -> LinkState {
        match &self.last_error {
            _ if self.connected => LinkState::Connected,
            None => LinkState::Connecting,
            Some(e) => LinkState::Down(format!("{}: {}", e.kind, e.message)),
        }
    }
}

/// A failed connect or a lost connection, for the log and the status.
#[derive(Debug, Clone)]
pub struct LinkError {
    /// A short stable name: `refused`, `timeout`, `unknown-ca`, `expired`,
    /// `name-mismatch`, `bad-client-cert`, `not-authorized`, … (see
    /// docs/mqtt.md).
    pub kind: &'static str,
    /// The broker it happened with (`host:port`).
    pub broker: String,
    /// The error in words.
    pub message: String,
    /// When (Unix ms).
    pub ts_ms: u64,
}

/// Where the connection to the broker stands, for the service manager's
/// status line (`app::service`), from [`UplinkStats::link_state`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Connecting for the first time.
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
    /// How commands are authenticated (`[commands]`).
    pub signing: signed::Signing,
    pub store: Arc<dyn Store>,
    /// Highest committed `seq`; a change means there is something new to send.
    pub committed: watch::Receiver<u64>,
    /// The store's capacity figures (kept by the pipeline), for the status.
    pub capacity: watch::Receiver<CapacityStatus>,
    /// Records out for delivery (shared with the pipeline's drop-oldest).
    pub outbound: Outbound,
    pub commands: mpsc::Sender<T>,
    pub health: HealthRegistry,
    /// The uplink's state and counters, for every reader of the status;
    /// shared by the uplink tasks a reload starts one after the other.
    pub stats: Arc<watch::Sender<UplinkStats>>,
    /// The config generation, shown in the status.
    pub generation: watch::Receiver<u64>,
    /// Beaten while the uplink task turns (the watchdog reads it).
    pub heartbeat: crate::tasks::Heartbeat,
}

/// What the status is made of, shared by the retained MQTT status and the
/// control socket's `status` (so both say the same, in the same JSON).
#[derive(Clone)]
pub struct StatusSources {
    pub gateway: GatewayConfig,
    pub store: Arc<dyn Store>,
    pub capacity: watch::Receiver<CapacityStatus>,
    pub health: HealthRegistry,
    pub uplink: watch::Receiver<UplinkStats>,
    /// The config generation: 1 at start, one more per applied reload.
    pub generation: watch::Receiver<u64>,
}

impl StatusSources {
    /// The status message's JSON at `now_ms` ([`payload::status`]).
    pub fn status(&self, now_ms: u64) -> Vec<u8> {
        let capacity = self.capacity.borrow().clone();
        let uplink = self.uplink.borrow().clone();
        payload::status(
            &self.gateway,
            now_ms,
            &self.store.stats(),
            &capacity,
            &self.health.snapshot(),
            &uplink,
            *self.generation.borrow(),
        )
    }
}

impl<T> Uplink<T> {
    /// The sources of the status this uplink publishes.
    pub fn status_sources(&self) -> StatusSources {
        StatusSources {
            gateway: self.gateway.clone(),
            store: Arc::clone(&self.store),
            capacity: self.capacity.clone(),
            health: self.health.clone(),
            uplink: self.stats.subscribe(),
            generation: self.generation.clone(),
        }
    }
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
        let mut rng = fastrand::Rng::new();
        for warning in &self.mqtt.warnings {
            tracing::warn!("{warning}");
        }
        loop {
            // Leaving a working connection for the first broker: a round at once.
            let mut returning = false;
            // A round: each broker in turn, until one connects.
            for broker in &self.mqtt.brokers {
                if *shutdown.borrow() {
                    return;
                }
                let ended = session::Session::run(
                    &self,
                    broker,
                    &mut committed,
                    &results_tx,
                    &mut results_rx,
                    &mut shutdown,
                )
                .await;
                self.stats.send_modify(|s| {
                    s.connected = false;
                    s.broker = None;
                });
                let (kind, why, connected) = match ended {
                    session::Ended::Shutdown => return,
                    session::Ended::ReturnToFirst => {
                        tracing::info!(broker = %broker, "the first broker is back; moving to it");
                        backoff.reset();
                        returning = true;
                        break;
                    }
                    session::Ended::Lost {
                        kind,
                        why,
                        connected,
                    } => (kind, why, connected),
                };
                if connected {
                    tracing::warn!(broker = %broker, kind, error = %why, "MQTT connection lost");
                } else {
                    tracing::warn!(broker = %broker, kind, error = %why, "MQTT connect failed");
                }
                self.stats.send_modify(|s| {
                    s.last_error = Some(LinkError {
                        kind,
                        broker: broker.to_string(),
                        message: why,
                        ts_ms: crate::clock::now_ms(),
                    });
                });
                if connected {
                    // It worked for a while: the backoff from its start,
                    // then a round from the first broker.
                    backoff.reset();
                    break;
                }
            }
            if returning {
                continue;
            }
            let delay = backoff.next_delay();
            tokio::select! {
                back = wait_for_broker(&self.mqtt.brokers, delay, &mut rng) => {
                    if let Some(broker) = back {
                        tracing::info!(broker = %broker, "broker accepts connections again; reconnecting");
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
/// probes (a TCP connect to each broker, closed at once) run meanwhile,
/// the first at once, then one every 200–400 ms, and one that finds a
/// broker's port open after an earlier probe found it closed (or timed
/// out) ends the wait, since that broker just came back. Returns the one
/// that did.
///
/// A broker whose port is open at the first probe, right after the failed
/// attempt, is up: it (or the TLS or MQTT handshake), not the network,
/// failed that attempt. It is probed no more and the whole backoff is
/// waited, so a broker that accepts TCP but refuses MQTT connects is not
/// hammered. Each round that fails still grows the backoff.
async fn wait_for_broker<'b>(
    brokers: &'b [Broker],
    delay: Duration,
    rng: &mut fastrand::Rng,
) -> Option<&'b Broker> {
    let deadline = Instant::now() + delay;
    // Per broker: still probed, and seen down by a probe.
    let mut probed = vec![true; brokers.len()];
    let mut seen_down = vec![false; brokers.len()];
    // The first probe at once: it tells a broker that is down (the port
    // closed) from one that failed the connect while up.
    let mut probe_at = Instant::now();
    loop {
        if probe_at >= deadline || !probed.contains(&true) {
            tokio::time::sleep_until(deadline).await;
            return None;
        }
        tokio::time::sleep_until(probe_at).await;
        for (i, broker) in brokers.iter().enumerate() {
            if !probed[i] {
                continue;
            }
            let limit = PROBE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let addr = (broker.host.as_str(), broker.port);
            match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                Ok(Ok(_open)) if seen_down[i] => return Some(broker),
                Ok(Ok(_open)) => probed[i] = false,
                Ok(Err(_)) | Err(_) => seen_down[i] = true,
            }
        }
        probe_at = Instant::now() + Duration::from_millis(rng.u64(PROBE_PAUSE_MS));
    }
}

/// Returns once `first` has accepted a TCP connect at every probe for
/// `stable` (probes `stable / 10` apart, 200 ms to 30 s): the first broker
/// is back, and stays.
async fn first_is_back(first: &Broker, stable: Duration) {
    let every = (stable / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
    let mut open_since: Option<Instant> = None;
    loop {
        let addr = (first.host.as_str(), first.port);
        let open = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
        let now = Instant::now();
        open_since = if open { open_since.or(Some(now)) } else { None };
        if open_since.is_some_and(|since| now.duration_since(since) >= stable) {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> Broker {
        Broker {
            host: "127.0.0.1".into(),
            port,
        }
    }

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
        let brokers = [local(closed_port()), local(port)];
        let back = wait_for_broker(&brokers, Duration::from_secs(30), &mut rng).await;
        opener.abort();
        assert_eq!(back, Some(&brokers[1]), "the wait was not cut short");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn the_first_broker_counts_as_back_only_once_it_stayed_up() {
        let port = closed_port();
        // Up for 300 ms, down, then up for good from 1 s on.
        let flapper = tokio::spawn(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(l);
            tokio::time::sleep(Duration::from_millis(700)).await;
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            loop {
                let _ = l.accept().await;
            }
        });
        let started = Instant::now();
        first_is_back(&local(port), Duration::from_secs(2)).await;
        flapper.abort();
        let took = started.elapsed();
        // Up at 1 s, stable for 2 s: not before 3 s.
        assert!(took >= Duration::from_millis(2900), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
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
        let brokers = [local(port)];
        let back = wait_for_broker(&brokers, Duration::from_millis(1500), &mut rng).await;
        assert!(back.is_none());
        assert!(started.elapsed() >= Duration::from_millis(1500));
        // One probe, then no more.
        assert!(!accept.is_finished(), "probed more than once");
        accept.abort();
    }
}
