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
//! after every (re)connect. Also: the retained status (last will `offline`),
//! and MES commands in, results out.

pub mod bound;
pub mod command;
pub mod payload;
mod session;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot, watch};

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
}

impl<T: From<CommandRequest> + From<Undeliverable> + Send + 'static> Uplink<T> {
    /// Run until `shutdown` turns true: connect, publish, reconnect with
    /// jittered backoff, forever.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.mqtt.reconnect);
        let (results_tx, mut results_rx) = mpsc::channel(64);
        let mut committed = self.committed.clone();
        let mut stats = UplinkStats::default();
        loop {
            if *shutdown.borrow() {
                return;
            }
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
                    tracing::warn!(broker = %format!("{}:{}", self.mqtt.host, self.mqtt.port), error = %why, "MQTT connection lost")
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
