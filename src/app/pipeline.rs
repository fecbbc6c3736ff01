//! The ingest pipeline: the one task that owns the stations and is the single
//! writer of the store.
//!
//! Readings and commands arrive on one queue ([`Input`]), so they are applied
//! to the stations in exactly the order they arrived; what the stations emit
//! (records and context state) is gathered into a group commit that closes
//! after `commit_interval` or `commit_max_records`, whichever comes first. A
//! record is *accepted* when its commit returns. Command replies are sent
//! only after their audit record is committed.
//!
//! A commit that fails is fatal: the pipeline stops with the error, the
//! process exits, and the store recovers on restart. Retrying in place is not
//! safe: after a failed write or fsync the engine and the kernel may report
//! later syncs as successful without the data being on disk ("fsyncgate"),
//! and sled's write errors are sticky. Nothing of a failed batch was
//! published or answered, so nothing accepted is lost.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::clock_synced;
use crate::config::StoreConfig;
use crate::devices::Reading;
use crate::station::{Emitted, StationView, Stations, rejected_command_audit};
use crate::store::{Batch, Store, StoreError};
use crate::uplink::{CommandOutcome, CommandRequest};

/// How often acknowledgements are made durable while no commit happens.
const ACK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the stations see the plant clock (shift and day boundaries,
/// idle logout). Boundaries are acted on within this time.
const STATION_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything the pipeline consumes, on one ordered queue.
#[derive(Debug)]
pub enum Input {
    Reading(Reading),
    Command(CommandRequest),
    /// A read-only look at every station (`linegate lot show`).
    Inspect(oneshot::Sender<Vec<StationView>>),
}

impl From<Reading> for Input {
    fn from(r: Reading) -> Self {
        Input::Reading(r)
    }
}

impl From<CommandRequest> for Input {
    fn from(c: CommandRequest) -> Self {
        Input::Command(c)
    }
}

pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub stations: Stations,
    pub store_cfg: StoreConfig,
    /// Highest committed `seq`, for the uplink.
    pub committed: watch::Sender<u64>,
}

#[derive(Default)]
struct Pending {
    batch: Batch,
    replies: Vec<(oneshot::Sender<CommandOutcome>, CommandOutcome)>,
}

impl Pending {
    fn add(&mut self, emitted: Emitted) {
        self.batch.records.extend(emitted.records);
        self.batch.state.extend(emitted.state);
    }
}

impl Pipeline {
    /// Run until the input queue is closed (every sender gone), committing
    /// everything received. Returns the store error that stopped it, if any.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>) -> Result<(), StoreError> {
        let mut open = true;
        let mut ack_tick = tokio::time::interval(ACK_SYNC_INTERVAL);
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut station_tick = tokio::time::interval(STATION_TICK);
        station_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while open {
            let mut pending = Pending::default();
            let mut deadline: Option<Instant> = None;
            loop {
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    item = input.recv() => match item {
                        Some(Input::Reading(r)) => self.on_reading(&r, &mut pending),
                        Some(Input::Command(c)) => self.on_command(c, &mut pending),
                        Some(Input::Inspect(reply)) => {
                            let _ = reply.send(self.stations.views());
                        }
                        None => {
                            open = false;
                            break;
                        }
                    },
                    _ = sleep => break,
                    _ = station_tick.tick() => {
                        pending.add(self.stations.on_tick(crate::clock::now_ms(), clock_synced()));
                    }
                    _ = ack_tick.tick(), if pending.batch.is_empty() => {
                        self.sync_acks().await;
                        continue;
                    }
                }
                if pending.batch.is_empty() {
                    continue;
                }
                let d = *deadline
                    .get_or_insert_with(|| Instant::now() + self.store_cfg.commit_interval);
                if pending.batch.records.len() >= self.store_cfg.commit_max_records
                    || Instant::now() >= d
                {
                    break;
                }
            }
            if !pending.batch.is_empty() {
                self.commit(pending).await?;
            }
        }
        tracing::debug!("pipeline drained");
        Ok(())
    }

    fn on_reading(&mut self, reading: &Reading, pending: &mut Pending) {
        pending.add(self.stations.on_reading(reading, clock_synced()));
    }

    fn on_command(&mut self, req: CommandRequest, pending: &mut Pending) {
        let now = crate::clock::now_ms();
        let synced = clock_synced();
        let outcome = match &req.command {
            Ok(cmd) => {
                let (verdict, emitted) = self.stations.on_command(cmd, now, synced);
                pending.add(emitted);
                verdict.map_err(|r| r.to_string())
            }
            Err(refused) => {
                let rec = rejected_command_audit(
                    &refused.name,
                    refused.id.clone(),
                    &refused.reason,
                    &refused.payload,
                    now,
                    synced,
                );
                pending.batch.records.push(rec);
                Err(refused.reason.clone())
            }
        };
        pending.replies.push((req.reply, outcome));
    }

    /// Make acknowledgements durable while idle. A failure is logged, not
    /// fatal here: a lost ack only resends a record (same `seq`), and a
    /// broken disk fails the next commit, which is fatal.
    async fn sync_acks(&self) {
        let store = Arc::clone(&self.store);
        // Depth read first: every ack it reflects is covered by the sync.
        let sync = move || {
            let stats = store.stats();
            store.sync_acks().map(|synced| synced.then_some(stats))
        };
        match tokio::task::spawn_blocking(sync).await {
            Ok(Ok(Some(stats))) => tracing::debug!(
                depth = stats.depth,
                last_seq = stats.last_seq,
                "acknowledgements synced"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "syncing acknowledgements failed"),
            Err(join) => tracing::error!(error = %join, "ack sync task failed"),
        }
    }

    /// Commit one batch; any failure is returned (and is fatal, see the module doc).
    async fn commit(&mut self, pending: Pending) -> Result<(), StoreError> {
        let started = Instant::now();
        let store = Arc::clone(&self.store);
        let mut batch = pending.batch;
        batch.coalesce_state();
        let records = match tokio::task::spawn_blocking(move || store.commit(batch)).await {
            Ok(Ok(records)) => records,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "commit failed; stopping so the store recovers on restart");
                return Err(err);
            }
            Err(join) => {
                tracing::error!(error = %join, "commit task failed; stopping so the store recovers on restart");
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "commit task failed: {join}"
                ))));
            }
        };
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            tracing::debug!(
                first_seq = first.seq,
                last_seq = last.seq,
                records = records.len(),
                commit_ms = started.elapsed().as_secs_f64() * 1000.0,
                "committed"
            );
            self.committed.send_replace(last.seq);
        }
        for (reply, outcome) in pending.replies {
            let _ = reply.send(outcome);
        }
        Ok(())
    }
}
