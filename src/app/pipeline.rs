//! The ingest pipeline: the one task that owns the stations and is the single
//! writer of the store.
//!
//! Readings and commands are applied to the stations in arrival order; what
//! the stations emit (records and context state) is gathered into a group
//! commit that closes after `commit_interval` or `commit_max_records`,
//! whichever comes first. A record is *accepted* when its commit returns.
//! Command replies are sent only after their audit record is committed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::clock_synced;
use crate::config::{BackoffConfig, StoreConfig};
use crate::devices::Reading;
use crate::devices::backoff::Backoff;
use crate::station::{Emitted, Stations, rejected_command_audit};
use crate::store::{Batch, Store, StoreError};
use crate::uplink::{CommandOutcome, CommandRequest};

/// Backoff while the disk refuses a commit.
const COMMIT_RETRY: BackoffConfig = BackoffConfig {
    min: Duration::from_millis(50),
    max: Duration::from_secs(5),
};

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
        self.batch
            .state
            .extend(emitted.state.into_iter().map(|(k, v)| (k, Some(v))));
    }
}

impl Pipeline {
    /// Run until both input channels are closed, committing everything received.
    pub async fn run(
        mut self,
        mut readings: mpsc::Receiver<Reading>,
        mut commands: mpsc::Receiver<CommandRequest>,
    ) {
        let mut readings_open = true;
        let mut commands_open = true;
        while readings_open || commands_open {
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
                    biased;
                    r = readings.recv(), if readings_open => match r {
                        Some(r) => self.on_reading(&r, &mut pending),
                        None => readings_open = false,
                    },
                    c = commands.recv(), if commands_open => match c {
                        Some(c) => self.on_command(c, &mut pending),
                        None => commands_open = false,
                    },
                    _ = sleep => break,
                }
                if !readings_open && !commands_open {
                    break;
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
                self.commit(pending).await;
            }
        }
        tracing::debug!("pipeline drained");
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

    /// Commit one batch, retrying until the disk takes it. Nothing is dropped:
    /// while the disk refuses, readings wait in the bounded channel and the
    /// devices feel back-pressure.
    async fn commit(&mut self, pending: Pending) {
        let mut backoff = Backoff::new(COMMIT_RETRY);
        let started = Instant::now();
        let records = loop {
            let store = Arc::clone(&self.store);
            let batch = pending.batch.clone();
            match tokio::task::spawn_blocking(move || store.commit(batch)).await {
                Ok(Ok(records)) => break records,
                Ok(Err(StoreError::Unsynced { records, source })) => {
                    tracing::error!(error = %source, "commit not yet durable; retrying sync");
                    self.sync_until_durable(&mut backoff).await;
                    break records;
                }
                Ok(Err(err)) => tracing::error!(error = %err, "commit failed; retrying"),
                Err(join) => tracing::error!(error = %join, "commit task failed; retrying"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
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
    }

    async fn sync_until_durable(&self, backoff: &mut Backoff) {
        loop {
            let store = Arc::clone(&self.store);
            match tokio::task::spawn_blocking(move || store.sync()).await {
                Ok(Ok(())) => return,
                Ok(Err(err)) => tracing::error!(error = %err, "store sync failed; retrying"),
                Err(join) => tracing::error!(error = %join, "store sync task failed; retrying"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}
