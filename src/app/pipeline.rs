//! The ingest pipeline: the one task that owns the stations and is the single
//! writer of the store.
//!
//! Readings and commands arrive on one queue ([`Input`]), so they are applied
//! to the stations in exactly the order they arrived; what the stations emit
//! (records and context state) is gathered into an adaptive group commit:
//! a reading that finds the pipeline idle is committed at once, and
//! everything that queued up meanwhile (while the previous commit's fsync
//! ran) goes into the next commit, up to `commit_max_records`. A non-zero
//! `commit_interval` spaces commits: the next starts no sooner than that
//! after the last one started. A record is *accepted* when its commit
//! returns. Command replies are sent only after their audit record is
//! committed. A record the uplink cannot publish (too large for the packet
//! size) comes back on the same queue: an alarm naming it is committed,
//! then the record is set aside.
//!
//! Capacity (`app::capacity`): before a reading or command touches a
//! station, the pipeline asks whether the store has room; a refusal is
//! counted and changes nothing. Under drop-oldest the commit also deletes
//! the oldest records and carries the report of that drop.
//!
//! A commit that fails is never retried in place: after a failed write or
//! fsync the engine and the kernel may report later syncs as successful
//! without the data being on disk ("fsyncgate"), sled's write errors are
//! sticky, and redb refuses writes until reopened. Nothing of a failed batch
//! was published or answered, so nothing accepted is lost.
//! - A failure for lack of space (ENOSPC, EDQUOT) is survived in process:
//!   the store is closed and reopened from what is on disk (as a restart
//!   would), the stations are rebuilt from the reopened store (so the
//!   readings of the failed batch leave no trace in them), and the gateway
//!   refuses everything until the disk has room again or the backoff has
//!   passed. Whether the failed batch survived is read back from the store:
//!   if it did, it is accepted (published, commands answered); if not, its
//!   readings count as refused. A full disk never makes the process exit.
//! - Any other failure is fatal: the pipeline stops with the error, the
//!   process exits (74), and the store recovers on restart.
//!
//! The store's place is checked before every commit and once a second
//! (`Store::check_place`): a data directory deleted, moved or replaced
//! while the gateway runs would take every later commit with it. The
//! pending batch and a `store-lost` alarm are committed into the store
//! still open, the uplink gets [`LOST_DRAIN`] to deliver them, and the
//! pipeline stops with the error (exit 74): restarted, the gateway begins a
//! new store, announced with a new epoch.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::app::capacity::{self, Capacity, Incoming};
use crate::clock::clock_synced;
use crate::config::StoreConfig;
use crate::devices::{DeviceEvent, Reading};
use crate::record::{AlarmEvent, Record, StoreFigures};
use crate::station::{Emitted, StationView, Stations, rejected_command_audit};
use crate::store::{self, Batch, CapacityStatus, Store, StoreError};
use crate::uplink::{CommandOutcome, CommandRequest, Outbound, Undeliverable};

/// How often acknowledgements are made durable while no commit happens.
const ACK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the stations see the plant clock (shift and day boundaries,
/// idle logout). Boundaries are acted on within this time. Capacity alarms
/// and the disk's free space are checked at the same pace.
const STATION_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the uplink may take to deliver what is in a store whose data
/// directory went away, before the pipeline stops.
const LOST_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The answer to a command refused because the store has no room.
const STORE_FULL_REFUSAL: &str =
    "store full: the gateway refuses commands until its store has room; nothing changed";

/// Everything the pipeline consumes, on one ordered queue.
#[derive(Debug)]
pub enum Input {
    Reading(Reading),
    Command(CommandRequest),
    /// A read-only look at every station (`linegate lot show`).
    Inspect(oneshot::Sender<Vec<StationView>>),
    /// A stored record the uplink cannot publish.
    Undeliverable(Undeliverable),
    /// A reload was refused: commit a `config-reload-failed` alarm with
    /// this message.
    ReloadFailed(String),
    /// A reload changed the stations: once everything before it is
    /// committed, rebuild them with this from the store's durable state
    /// (open lots, orders and operators kept); the reply says whether it
    /// worked (if not, the old stations run on).
    Restation(NewStations, oneshot::Sender<Result<(), String>>),
}

/// How to build the stations of a reloaded config (see [`Input::Restation`]).
pub struct NewStations(pub RestoreStations);

impl std::fmt::Debug for NewStations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewStations")
    }
}

impl From<Undeliverable> for Input {
    fn from(u: Undeliverable) -> Self {
        Input::Undeliverable(u)
    }
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

/// Rebuilds the stations from the store's durable state (at start, and
/// after the store was reopened).
pub type RestoreStations = Box<dyn FnMut(&dyn Store) -> Result<Stations, StoreError> + Send>;

pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub stations: Stations,
    pub store_cfg: StoreConfig,
    /// The store's directory: its filesystem's free space is watched.
    pub store_dir: PathBuf,
    /// Highest committed `seq`, for the uplink.
    pub committed: watch::Sender<u64>,
    /// Capacity figures, for the status message.
    pub capacity: watch::Sender<CapacityStatus>,
    /// Records out for delivery: drop-oldest leaves them alone.
    pub outbound: Outbound,
    pub restore: RestoreStations,
    /// How long each commit took (the metrics endpoint reads them).
    pub commit_times: Arc<crate::app::metrics::CommitTimes>,
    /// Beaten at every turn of the loop (at least once a second, from the
    /// station tick, when idle); not while a store call is under way. The
    /// watchdog reads it.
    pub heartbeat: crate::tasks::Heartbeat,
}

#[derive(Default)]
struct Pending {
    batch: Batch,
    replies: Vec<(oneshot::Sender<CommandOutcome>, CommandOutcome)>,
    /// Encoded size of `batch.records`, estimated.
    bytes: u64,
    /// Readings and commands applied to the stations for this batch.
    applied: u64,
    /// Records this batch's `record-undeliverable` alarms report: set
    /// aside once the alarms are committed.
    set_aside: Vec<u64>,
}

impl Pending {
    fn add(&mut self, emitted: Emitted) {
        self.bytes += emitted.records.iter().map(store::encoded_len).sum::<u64>();
        self.batch.records.extend(emitted.records);
        self.batch.state.extend(emitted.state);
    }

    fn push(&mut self, record: Record) {
        self.bytes += store::encoded_len(&record);
        self.batch.records.push(record);
    }
}

/// A batch whose commit failed for lack of space, until the reopened store
/// says whether it survived.
struct Unresolved {
    first: u64,
    records: u64,
    applied: u64,
    dropped: u64,
    replies: Vec<(oneshot::Sender<CommandOutcome>, CommandOutcome)>,
}

/// The pipeline while it runs.
struct Running {
    p: Pipeline,
    cap: Capacity,
    unresolved: Option<Unresolved>,
    /// Undeliverable records already reported by a committed alarm (the
    /// uplink reports one again after each reconnect until it is aside).
    reported: std::collections::BTreeSet<u64>,
    /// A reload's new stations, built once the batch before it is committed.
    restation: Option<(NewStations, oneshot::Sender<Result<(), String>>)>,
}

impl Pipeline {
    /// Run until the input queue is closed (every sender gone), committing
    /// everything received. Returns the store error that stopped it, if any.
    pub async fn run(self, input: mpsc::Receiver<Input>) -> Result<(), StoreError> {
        let saved = self.store.state(capacity::STATE_KEY)?;
        let cap = Capacity::new(&self.store_cfg, saved.as_deref());
        let mut running = Running {
            p: self,
            cap,
            unresolved: None,
            reported: Default::default(),
            restation: None,
        };
        running.publish_status();
        running.run(input).await
    }
}

impl Running {
    async fn run(&mut self, mut input: mpsc::Receiver<Input>) -> Result<(), StoreError> {
        let mut open = true;
        let mut ack_tick = tokio::time::interval(ACK_SYNC_INTERVAL);
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut station_tick = tokio::time::interval(STATION_TICK);
        station_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spacing = self.p.store_cfg.commit_interval;
        let max_records = self.p.store_cfg.commit_max_records;
        // The next group commit starts no sooner than `commit_interval`
        // after the last one started.
        let mut not_before: Option<Instant> = None;
        while open {
            let mut pending = Pending::default();
            loop {
                self.p.heartbeat.beat();
                self.flush_outbox(&mut pending);
                if !pending.batch.is_empty() {
                    // Whatever queued up meanwhile (typically during the
                    // last commit's fsync) joins this commit.
                    open = self.take_queued(&mut input, &mut pending, max_records);
                    if !open
                        || pending.batch.records.len() >= max_records
                        || not_before.is_none_or(|t| Instant::now() >= t)
                    {
                        break;
                    }
                }
                let due = not_before.filter(|_| !pending.batch.is_empty());
                let sleep = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    item = input.recv() => match item {
                        Some(item) => self.on_input(item, &mut pending),
                        None => {
                            open = false;
                            break;
                        }
                    },
                    _ = sleep => break,
                    _ = station_tick.tick() => self.on_tick(&mut pending).await?,
                    _ = ack_tick.tick(), if pending.batch.is_empty() => self.sync_acks().await?,
                }
                if self.restation.is_some() {
                    break;
                }
            }
            self.flush_outbox(&mut pending);
            if !pending.batch.is_empty() {
                not_before = (!spacing.is_zero()).then(|| Instant::now() + spacing);
                self.commit(pending).await?;
            }
            if let Some((new, reply)) = self.restation.take() {
                // Everything applied to the old stations is committed: the
                // new ones start from exactly that state.
                let _ = reply.send(self.restation(new));
            }
            self.publish_status();
        }
        tracing::debug!("pipeline drained");
        Ok(())
    }

    /// Apply one input from the queue.
    fn on_input(&mut self, item: Input, pending: &mut Pending) {
        match item {
            Input::Reading(r) => self.on_reading(&r, pending),
            Input::Command(c) => self.on_command(c, pending),
            Input::Inspect(reply) => {
                let _ = reply.send(self.p.stations.views());
            }
            Input::Undeliverable(u) => self.on_undeliverable(u, pending),
            Input::ReloadFailed(message) => pending.push(Record::gateway_alarm(
                crate::clock::now_ms(),
                AlarmEvent::ConfigReloadFailed,
                message,
                None,
            )),
            Input::Restation(new, reply) => self.restation = Some((new, reply)),
        }
    }

    /// Rebuild the stations with a reloaded config from the store's
    /// durable state; the new builder also serves later reopens. On
    /// failure the old stations run on.
    fn restation(&mut self, mut new: NewStations) -> Result<(), String> {
        match (new.0)(self.p.store.as_ref()) {
            Ok(stations) => {
                self.p.stations = stations;
                self.p.restore = new.0;
                Ok(())
            }
            Err(err) => Err(format!(
                "cannot read the station state from the store: {err}"
            )),
        }
    }

    /// Apply every input already queued, without waiting, until the batch
    /// holds `max_records`. Returns `false` once the queue is closed.
    fn take_queued(
        &mut self,
        input: &mut mpsc::Receiver<Input>,
        pending: &mut Pending,
        max_records: usize,
    ) -> bool {
        while pending.batch.records.len() < max_records && self.restation.is_none() {
            match input.try_recv() {
                Ok(item) => self.on_input(item, pending),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Move alarm records the capacity policy made into the batch (unless
    /// nothing may be committed now).
    fn flush_outbox(&mut self, pending: &mut Pending) {
        for record in self.cap.take_outbox() {
            pending.push(record);
        }
    }

    fn on_reading(&mut self, reading: &Reading, pending: &mut Pending) {
        let what = match reading.event {
            DeviceEvent::Online | DeviceEvent::Offline(_) => Incoming::DeviceAlarm,
            DeviceEvent::Scan(_) | DeviceEvent::Sample(_) => Incoming::Data,
        };
        let usage = self.p.store.usage();
        if !self
            .cap
            .admit(what, usage, pending.bytes, crate::clock::now_ms())
        {
            // Refused before the station saw it: no state changed, so a
            // counter's next accepted sample carries the whole delta.
            tracing::debug!(device = %reading.device, "reading refused: store full");
            return;
        }
        pending.applied += 1;
        pending.add(self.p.stations.on_reading(reading, clock_synced()));
    }

    fn on_command(&mut self, req: CommandRequest, pending: &mut Pending) {
        let now = crate::clock::now_ms();
        let synced = clock_synced();
        let usage = self.p.store.usage();
        if !self.cap.admit(Incoming::Data, usage, pending.bytes, now) {
            tracing::warn!("command refused: store full");
            let _ = req.reply.send(Err(STORE_FULL_REFUSAL.to_owned()));
            return;
        }
        pending.applied += 1;
        let outcome = match &req.command {
            Ok(cmd) => {
                let (verdict, emitted) = self.p.stations.on_command(cmd, now, synced);
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
                pending.push(rec);
                Err(refused.reason.clone())
            }
        };
        pending.replies.push((req.reply, outcome));
    }

    /// A record the uplink cannot publish: a `record-undeliverable` alarm
    /// naming it goes into the batch (like the store's own alarms, without
    /// asking capacity), and the record is set aside once that is durable.
    fn on_undeliverable(&mut self, u: Undeliverable, pending: &mut Pending) {
        if self.reported.contains(&u.seq) || pending.set_aside.contains(&u.seq) {
            return;
        }
        let message = format!(
            "record {} ({}) makes an MQTT packet of {} bytes, larger than mqtt.max_packet_size ({} bytes): it cannot be delivered and is set aside in the store",
            u.seq, u.kind, u.bytes, u.max
        );
        let figures = StoreFigures {
            seq: Some(u.seq),
            record_kind: Some(u.kind.to_owned()),
            record_bytes: Some(u.bytes as u64),
            max_packet_size: Some(u.max as u64),
            ..StoreFigures::default()
        };
        pending.push(Record::gateway_alarm(
            crate::clock::now_ms(),
            AlarmEvent::RecordUndeliverable,
            message,
            Some(figures),
        ));
        pending.set_aside.push(u.seq);
    }

    /// Once a second: retry a disk that refused a commit, raise or clear
    /// capacity alarms, and let the stations see the clock (unless the
    /// store has no room for what they would make).
    async fn on_tick(&mut self, pending: &mut Pending) -> Result<(), StoreError> {
        if let Err(err) = self.p.store.check_place() {
            return Err(self.lost(err, std::mem::take(&mut pending.batch)).await);
        }
        let now_ms = crate::clock::now_ms();
        let disk = store::disk_space(&self.p.store_dir).ok();
        if self.cap.retry_due(Instant::now(), disk) {
            self.retry().await?;
        }
        self.cap.observe_disk(disk);
        if !self.cap.is_down() {
            let usage = self.p.store.usage();
            self.cap.evaluate(usage.bytes + pending.bytes, now_ms);
            if self.cap.has_room(Incoming::Data, usage, pending.bytes) {
                pending.add(self.p.stations.on_tick(now_ms, clock_synced()));
            }
        }
        self.publish_status();
        Ok(())
    }

    /// Make acknowledgements durable while idle. A failure is logged, not
    /// fatal here: a lost ack only resends a record (same `seq`), and a
    /// broken disk fails the next commit. A full disk is handled now.
    async fn sync_acks(&mut self) -> Result<(), StoreError> {
        if self.cap.is_blocked() {
            return Ok(());
        }
        let store = Arc::clone(&self.p.store);
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
            Ok(Err(err)) if self.is_disk_full(&err) => {
                tracing::error!(error = %err, "syncing acknowledgements failed: the disk is full; reopening the store");
                self.disk_full(None).await?;
            }
            Ok(Err(err)) => tracing::error!(error = %err, "syncing acknowledgements failed"),
            Err(join) => tracing::error!(error = %join, "ack sync task failed"),
        }
        Ok(())
    }

    /// Whether `err` means the disk is full (now, or as the engine's memory
    /// of an earlier failure for lack of space).
    fn is_disk_full(&self, err: &StoreError) -> bool {
        err.is_disk_full()
            || (self.p.store.disk_full_seen()
                && (err.is_previous_io() || matches!(err, StoreError::Engine(_))))
    }

    /// Commit one batch. A failure for lack of space is survived (see the
    /// module doc); any other failure is returned, and is fatal.
    async fn commit(&mut self, pending: Pending) -> Result<(), StoreError> {
        let started = Instant::now();
        let now_ms = crate::clock::now_ms();
        let Pending {
            mut batch,
            replies,
            bytes,
            applied,
            set_aside,
        } = pending;
        batch.coalesce_state();
        if let Err(err) = self.p.store.check_place() {
            return Err(self.lost(err, batch).await);
        }
        let usage = self.p.store.usage();
        let disk = store::disk_space(&self.p.store_dir).ok();
        // The free space first: drop-oldest frees what is added when the
        // disk is low.
        self.cap.observe_disk(disk);
        let mut freed = 0;
        if let Some(need) = self.cap.drop_needed(usage, bytes) {
            let store = Arc::clone(&self.p.store);
            let outbound = self.p.outbound.clone();
            // Planned around what the uplink has out, then reserved under
            // its lock (leaving out what it sent meanwhile): it publishes
            // none of these until the commit is done.
            let plan = move || {
                let out = outbound.lock().in_flight.clone();
                let mut plan = store.plan_drop(need, &out)?;
                let mut out = outbound.lock();
                plan.without(&out.in_flight);
                out.dropping.extend(plan.seqs.iter().copied());
                Ok::<_, StoreError>(plan)
            };
            match tokio::task::spawn_blocking(plan).await {
                Ok(Ok(plan)) if !plan.seqs.is_empty() => {
                    self.cap.dropping(&plan, now_ms, usage);
                    freed = plan.bytes;
                    batch.drop = plan.seqs;
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "cannot pick records to drop"),
                Err(join) => tracing::error!(error = %join, "drop planning task failed"),
            }
        }
        self.cap
            .evaluate((usage.bytes + bytes).saturating_sub(freed), now_ms);
        let alarms = self.cap.take_outbox();
        batch.records.extend(alarms);
        batch.state.extend(self.cap.state_write());
        let dropped = batch.drop.len() as u64;
        let first = usage.last_seq + 1;
        let count = batch.records.len() as u64;
        let store = Arc::clone(&self.p.store);
        let committing = tokio::task::spawn_blocking(move || store.commit(batch)).await;
        if dropped > 0 {
            let mut out = self.p.outbound.lock();
            if !matches!(committing, Ok(Ok(_))) {
                // Not dropped after all: the uplink reads them again.
                if let Some(first) = out.dropping.first().copied() {
                    out.rewind = Some(out.rewind.map_or(first, |r| r.min(first)));
                }
            }
            out.dropping.clear();
        }
        if !matches!(committing, Ok(Ok(_)))
            && let Some(&first) = set_aside.iter().min()
        {
            // The alarms were not committed: the uplink reads these
            // records again and reports them again.
            let mut out = self.p.outbound.lock();
            out.rewind = Some(out.rewind.map_or(first, |r| r.min(first)));
        }
        let records = match committing {
            Ok(Ok(records)) => records,
            Ok(Err(err)) if self.is_disk_full(&err) => {
                tracing::error!(
                    error = %err,
                    "commit failed: the disk is full; reopening the store and refusing readings until there is room"
                );
                self.unresolved = Some(Unresolved {
                    first,
                    records: count,
                    applied,
                    dropped,
                    replies,
                });
                return self.disk_full(Some(usage)).await;
            }
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
        self.cap.committed();
        self.set_aside(set_aside).await;
        self.p
            .commit_times
            .observe(started.elapsed(), records.len() as u64);
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            tracing::debug!(
                first_seq = first.seq,
                last_seq = last.seq,
                records = records.len(),
                commit_ms = started.elapsed().as_secs_f64() * 1000.0,
                "committed"
            );
            self.p.committed.send_replace(last.seq);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        Ok(())
    }

    /// The data directory went away (`err`, from `check_place`): commit
    /// `batch` and a `store-lost` alarm into the store still open, let the
    /// uplink deliver for up to [`LOST_DRAIN`] (nothing leaves if the
    /// broker is unreachable), and return `err` to stop the gateway.
    async fn lost(&mut self, err: StoreError, mut batch: Batch) -> StoreError {
        let StoreError::Lost { what } = &err else {
            return err;
        };
        tracing::error!(error = %err, "the store's data directory went away; delivering what can be, then stopping (exit 74) to start on a new store");
        batch
            .records
            .push(store::lost_alarm(what, self.p.store.epoch()));
        let store = Arc::clone(&self.p.store);
        match tokio::task::spawn_blocking(move || store.commit(batch)).await {
            Ok(Ok(records)) => {
                if let Some(last) = records.last() {
                    self.p.committed.send_replace(last.seq);
                }
                let until = Instant::now() + LOST_DRAIN;
                let mut poll = tokio::time::interval(std::time::Duration::from_millis(50));
                while self.p.store.usage().depth > 0 && Instant::now() < until {
                    poll.tick().await;
                }
                let depth = self.p.store.usage().depth;
                if depth > 0 {
                    tracing::error!(
                        depth,
                        "records not delivered before the stop are lost with the data directory"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot commit the store-lost alarm"),
            Err(join) => tracing::error!(error = %join, "store-lost commit task failed"),
        }
        err
    }

    /// Set aside the undeliverable records whose alarms were just
    /// committed. A failure leaves the record in the queue: reported again
    /// after the next reconnect, a second alarm, never a silent loss.
    async fn set_aside(&mut self, seqs: Vec<u64>) {
        for seq in seqs {
            let store = Arc::clone(&self.p.store);
            match tokio::task::spawn_blocking(move || store.set_aside(seq)).await {
                Ok(Ok(())) => {
                    self.reported.insert(seq);
                }
                Ok(Err(err)) => {
                    tracing::error!(seq, error = %err, "cannot set the undeliverable record aside")
                }
                Err(join) => tracing::error!(seq, error = %join, "set-aside task failed"),
            }
        }
    }

    /// The disk refused a write: reopen the store (the engine must not be
    /// written again) and refuse everything until there is room.
    async fn disk_full(&mut self, usage: Option<store::Usage>) -> Result<(), StoreError> {
        let usage = usage.unwrap_or_else(|| self.p.store.usage());
        self.try_reopen().await?;
        self.cap
            .on_disk_error(Instant::now(), crate::clock::now_ms(), usage);
        self.publish_status();
        Ok(())
    }

    /// After a failure for lack of space, once the backoff has passed or
    /// the disk has room: reopen the store if it is still closed, then let
    /// the next commit try the disk again.
    async fn retry(&mut self) -> Result<(), StoreError> {
        if self.cap.is_down() {
            self.try_reopen().await?;
            if self.cap.is_down() {
                let usage = self.p.store.usage();
                self.cap
                    .on_disk_error(Instant::now(), crate::clock::now_ms(), usage);
                return Ok(());
            }
        }
        tracing::info!("trying the store's disk again");
        self.cap.unblock();
        Ok(())
    }

    /// Reopen the store and rebuild the stations from it. A failure that a
    /// later attempt may not have (no space, the old engine's lock not yet
    /// released) leaves the store down; any other is returned (fatal).
    async fn try_reopen(&mut self) -> Result<(), StoreError> {
        let store = Arc::clone(&self.p.store);
        let reopened = match tokio::task::spawn_blocking(move || store.reopen()).await {
            Ok(r) => r,
            Err(join) => Err(StoreError::Io(std::io::Error::other(format!(
                "reopen task failed: {join}"
            )))),
        }
        .and_then(|()| (self.p.restore)(self.p.store.as_ref()))
        .and_then(|stations| {
            let saved = self.p.store.state(capacity::STATE_KEY)?;
            Ok((stations, saved))
        });
        match reopened {
            Ok((stations, saved)) => {
                self.p.stations = stations;
                let usage = self.p.store.usage();
                self.cap
                    .reload(saved.as_deref(), crate::clock::now_ms(), usage);
                self.cap.set_down(false);
                self.resolve();
                // Wake the uplink: it could not read while the store was closed.
                let last = self.p.store.usage().last_seq;
                self.p.committed.send_replace(last);
                Ok(())
            }
            Err(err) if may_pass(&err) => {
                tracing::error!(error = %err, "cannot reopen the store yet; retrying later");
                self.cap.set_down(true);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot reopen the store; stopping");
                Err(err)
            }
        }
    }

    /// Settle the batch whose commit failed, now that the reopened store
    /// says whether it survived.
    fn resolve(&mut self) {
        let Some(u) = self.unresolved.take() else {
            return;
        };
        let last = self.p.store.usage().last_seq;
        let survived = u.records > 0 && last >= u.first + u.records - 1;
        if survived {
            // Accepted after all: the reopened engine made it durable.
            tracing::info!(
                first_seq = u.first,
                last_seq = u.first + u.records - 1,
                "the batch of the failed commit survived in the store"
            );
            tracing::debug!(
                first_seq = u.first,
                last_seq = u.first + u.records - 1,
                records = u.records,
                commit_ms = 0.0,
                "committed"
            );
            for (reply, outcome) in u.replies {
                let _ = reply.send(outcome);
            }
        } else {
            tracing::warn!(
                readings = u.applied,
                "the batch of the failed commit was not stored: its readings and commands count as refused"
            );
            self.cap.refused_after_failure(u.applied, u.dropped);
            for (reply, _) in u.replies {
                let _ = reply.send(Err(STORE_FULL_REFUSAL.to_owned()));
            }
        }
    }

    fn publish_status(&self) {
        let status = self.cap.status();
        self.p.capacity.send_if_modified(|s| {
            let changed = *s != status;
            if changed {
                *s = status;
            }
            changed
        });
    }
}

/// Whether opening the store may succeed later: it failed for lack of space,
/// or on the lock the closed engine may still hold for a moment.
fn may_pass(err: &StoreError) -> bool {
    err.is_disk_full()
        || matches!(
            err,
            StoreError::Unavailable
                | StoreError::Io(_)
                | StoreError::Engine(::sled::Error::Io(_))
                | StoreError::Redb(::redb::Error::Io(_) | ::redb::Error::DatabaseAlreadyOpen)
        )
}
