//! The store's capacity policy, applied by the pipeline: how much the queue
//! may hold (`[store] max_bytes`), what happens when it is full
//! (`when_full`), the free space the disk must keep (`min_disk_free`), and
//! the alarms that say so. Pure: figures in, decisions and alarm records out;
//! the pipeline does the I/O.
//!
//! - **Admission.** Before a reading or command touches a station, the
//!   pipeline asks [`Capacity::admit`]. Under `refuse`, a full store or disk
//!   refuses it there: it is counted, and no station state changes, so a
//!   PLC counter's next accepted sample carries the whole delta. Under
//!   `drop-oldest` it is admitted while there is something to drop.
//! - **Room.** Readings may fill the queue up to `max_bytes` minus a reserve
//!   (2 %, 4 KiB to 1 MiB); the reserve is for alarms: device online/offline
//!   may use it, the store's own alarms always go in.
//! - **Dropping.** Under `drop-oldest`, [`Capacity::drop_needed`] says how
//!   many bytes the next commit must free (at least 1 % of `max_bytes`, 4 KiB
//!   to 16 MiB, so drops come in chunks and their reports stay few); the
//!   store picks the oldest records, and [`Capacity::dropping`] reports them
//!   in a `records-dropped` alarm committed in the same batch.
//! - **Alarms, with hysteresis.** `store-filling` at 80 % and 90 % of
//!   `max_bytes`, cleared below 75 % and 85 %; `store-full` at the first
//!   refusal or drop, cleared below the reading limit minus 5 % (or two
//!   chunks); `disk-full` below `min_disk_free` or when a commit failed for
//!   lack of space, cleared at `min_disk_free` plus a quarter (at least
//!   1 MiB). Which alarms are raised, and the drop total, are durable state
//!   (`cap/state`), written in the commit that carries the alarm: a restart
//!   neither repeats nor forgets one.
//! - **A disk that refused a commit.** After that, nothing is committed
//!   until the backoff (1 s doubling to 30 s) has passed or the free space
//!   is back ([`Capacity::retry_due`]); meanwhile everything is refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{StoreConfig, WhenFull};
use crate::record::{AlarmEvent, Record, StoreFigures};
use crate::store::{CapacityStatus, DiskSpace, DropPlan, Usage};

/// Durable state key: raised alarms and the drop total.
pub const STATE_KEY: &str = "cap/state";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Threshold alarms, in percent of `max_bytes`, and their hysteresis.
const THRESHOLDS: [u8; 2] = [80, 90];
const HYSTERESIS_PCT: u64 = 5;

/// Why `disk-full` was raised, when a commit failed.
const COMMIT_FAILED: &str = "a commit failed: no space left on the data directory's filesystem";

/// First wait after a commit failed for lack of space, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The durable part: which alarms are raised, and records ever dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Raised {
    #[serde(default)]
    filling80: bool,
    #[serde(default)]
    filling90: bool,
    #[serde(default)]
    full: bool,
    #[serde(default)]
    disk_full: bool,
    #[serde(default)]
    dropped_total: u64,
}

impl Raised {
    fn filling(&mut self, pct: u8) -> &mut bool {
        if pct == 80 {
            &mut self.filling80
        } else {
            &mut self.filling90
        }
    }
}

/// The limits derived from `[store]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    /// Readings are admitted while the queue is below this.
    pub data_limit: u64,
    /// `store-full` clears below this.
    pub full_clear: u64,
    /// Least a drop frees.
    pub drop_chunk: u64,
    pub when_full: WhenFull,
    pub min_disk_free: u64,
    /// `disk-full` clears at this much free space.
    pub disk_clear: u64,
}

impl Limits {
    pub fn new(cfg: &StoreConfig) -> Limits {
        let max = cfg.max_bytes;
        let reserve = (max / 50).clamp(4 * KIB, MIB).min(max / 4);
        let drop_chunk = (max / 100).clamp(4 * KIB, 16 * MIB).min(max / 4);
        let data_limit = max - reserve;
        let full_clear =
            data_limit.saturating_sub((max * HYSTERESIS_PCT / 100).max(2 * drop_chunk));
        Limits {
            max_bytes: max,
            data_limit,
            full_clear,
            drop_chunk,
            when_full: cfg.when_full,
            min_disk_free: cfg.min_disk_free,
            disk_clear: cfg.min_disk_free + (cfg.min_disk_free / 4).max(MIB),
        }
    }
}

/// What asks to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A reading or command that makes data records or changes station state.
    Data,
    /// A device online/offline alarm: may use the reserve.
    DeviceAlarm,
}

/// After a commit failed for lack of space.
#[derive(Debug, Clone, Copy)]
struct Blocked {
    until: Instant,
}

/// The policy's state. One per pipeline.
pub struct Capacity {
    limits: Limits,
    /// As last committed.
    committed: Raised,
    /// Including transitions whose alarms are not committed yet.
    proposed: Raised,
    /// Alarm records made and not yet handed to a batch.
    outbox: Vec<Record>,
    /// Free space below `min_disk_free` (with hysteresis), or a commit
    /// refused for lack of space and the space not back yet.
    disk_low: bool,
    /// The disk refused a write, and the space is not back yet.
    write_refused: bool,
    disk_free: Option<u64>,
    blocked: Option<Blocked>,
    /// The wait before the next retry after a failed commit (grows while
    /// retries fail; reset by a commit that succeeds).
    backoff: Duration,
    /// The store could not be reopened: nothing can be read or written.
    down: bool,
    refused: u64,
    refused_full: u64,
    refused_disk: u64,
    dropped_full: u64,
    dropped_disk: u64,
}

impl Capacity {
    /// The policy for `cfg`, continuing the durable state `saved` (the
    /// value of [`STATE_KEY`], if any).
    pub fn new(cfg: &StoreConfig, saved: Option<&[u8]>) -> Capacity {
        let raised = Self::decode(saved);
        Capacity {
            limits: Limits::new(cfg),
            committed: raised,
            proposed: raised,
            outbox: Vec::new(),
            disk_low: raised.disk_full,
            write_refused: false,
            disk_free: None,
            blocked: None,
            backoff: RETRY_FIRST,
            down: false,
            refused: 0,
            refused_full: 0,
            refused_disk: 0,
            dropped_full: 0,
            dropped_disk: 0,
        }
    }

    fn decode(saved: Option<&[u8]>) -> Raised {
        match saved.map(serde_json::from_slice::<Raised>) {
            None => Raised::default(),
            Some(Ok(r)) => r,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "unreadable capacity state; alarms start cleared");
                Raised::default()
            }
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forget what was not committed and continue from the durable state
    /// (after the store was reopened). A full disk seen meanwhile is
    /// raised again if the store does not say so already.
    pub fn reload(&mut self, saved: Option<&[u8]>, now_ms: u64, queue: Usage) {
        self.committed = Self::decode(saved);
        self.proposed = self.committed;
        self.outbox.clear();
        self.disk_low |= self.committed.disk_full;
        if self.disk_low || self.blocked.is_some() {
            self.raise_disk(now_ms, queue);
        }
    }

    /// Whether `what` may be applied now, with `queue` in the store and
    /// `pending` bytes waiting for the next commit. A refusal is counted and
    /// raises `store-full` or `disk-full`.
    pub fn admit(&mut self, what: Incoming, queue: Usage, pending: u64, now_ms: u64) -> bool {
        if self.has_room(what, queue, pending) {
            return true;
        }
        let disk = self.disk_low || self.is_blocked();
        self.refuse(disk, now_ms, queue);
        false
    }

    /// [`Capacity::admit`] without counting or alarming (for the stations'
    /// clock ticks, which are not refused but postponed).
    pub fn has_room(&self, what: Incoming, queue: Usage, pending: u64) -> bool {
        if self.is_blocked() {
            return false;
        }
        let limit = match what {
            Incoming::Data => self.limits.data_limit,
            Incoming::DeviceAlarm => self.limits.max_bytes,
        };
        let full = queue.bytes + pending >= limit;
        if !full && !self.disk_low {
            return true;
        }
        // Under drop-oldest there is room while there is something to drop.
        self.limits.when_full == WhenFull::DropOldest && queue.depth > 0
    }

    fn refuse(&mut self, disk: bool, now_ms: u64, queue: Usage) {
        self.refused += 1;
        if disk {
            self.refused_disk += 1;
            self.raise_disk(now_ms, queue);
        } else {
            self.refused_full += 1;
            self.raise_full(now_ms, queue);
        }
    }

    /// Bytes the next commit must free, if any, with `queue` in the store
    /// and `batch` bytes to add. Only under `drop-oldest`.
    pub fn drop_needed(&self, queue: Usage, batch: u64) -> Option<u64> {
        if self.limits.when_full != WhenFull::DropOldest || queue.depth == 0 {
            return None;
        }
        let projected = queue.bytes + batch;
        let need = if self.disk_low {
            // The disk must not grow: free what is added.
            batch
        } else {
            projected.checked_sub(self.limits.data_limit)?
        };
        (need > 0).then(|| need.max(self.limits.drop_chunk))
    }

    /// The next commit deletes `plan`: report it (`records-dropped`, in the
    /// same commit) and raise `store-full` or `disk-full`.
    pub fn dropping(&mut self, plan: &DropPlan, now_ms: u64, queue: Usage) {
        let (Some(first), Some(last)) = (plan.first(), plan.last()) else {
            return;
        };
        let count = plan.seqs.len() as u64;
        self.proposed.dropped_total += count;
        if self.disk_low {
            self.dropped_disk += count;
            self.raise_disk(now_ms, queue);
        } else {
            self.dropped_full += count;
            self.raise_full(now_ms, queue);
        }
        let total = self.proposed.dropped_total;
        tracing::warn!(
            first_seq = first,
            last_seq = last,
            count,
            bytes = plan.bytes,
            dropped_total = total,
            "store full: dropping the oldest unsent records"
        );
        self.alarm(
            now_ms,
            AlarmEvent::RecordsDropped,
            format!(
                "{count} unsent records dropped to make room (seq {first} to {last}); \
                 {total} dropped in all"
            ),
            StoreFigures {
                first_seq: Some(first),
                last_seq: Some(last),
                count: Some(count),
                bytes: Some(plan.bytes),
                dropped_total: Some(total),
                ..StoreFigures::default()
            },
        );
    }

    /// Take the free space of the data directory's filesystem into account
    /// (`None`: it could not be read).
    pub fn observe_disk(&mut self, disk: Option<DiskSpace>) {
        let Some(d) = disk else {
            return;
        };
        self.disk_free = Some(d.available);
        if d.available < self.limits.min_disk_free {
            self.disk_low = true;
        } else if d.available >= self.limits.disk_clear && self.blocked.is_none() {
            self.disk_low = false;
            self.write_refused = false;
        }
    }

    /// Raise or clear the threshold, full and disk alarms for a queue of
    /// `bytes` (as it will be after the next commit) and the free space
    /// last observed.
    pub fn evaluate(&mut self, bytes: u64, now_ms: u64) {
        let queue = Usage {
            bytes,
            ..Usage::default()
        };
        let max = self.limits.max_bytes;
        for pct in THRESHOLDS {
            let raise_at = max * u64::from(pct) / 100;
            let clear_below = max * (u64::from(pct) - HYSTERESIS_PCT) / 100;
            let raised = *self.proposed.filling(pct);
            if !raised && bytes >= raise_at {
                *self.proposed.filling(pct) = true;
                tracing::warn!(bytes, max_bytes = max, percent = pct, "store filling");
                self.alarm(
                    now_ms,
                    AlarmEvent::StoreFilling,
                    format!(
                        "the store holds {} of {} ({} %), over the {pct} % threshold",
                        show(bytes),
                        show(max),
                        bytes * 100 / max.max(1)
                    ),
                    self.figures(Some(pct), queue),
                );
            } else if raised && bytes < clear_below {
                *self.proposed.filling(pct) = false;
                tracing::info!(
                    bytes,
                    max_bytes = max,
                    percent = pct,
                    "store below threshold again"
                );
                self.alarm(
                    now_ms,
                    AlarmEvent::StoreFillingCleared,
                    format!(
                        "the store holds {} of {}, below {} % again",
                        show(bytes),
                        show(max),
                        u64::from(pct) - HYSTERESIS_PCT
                    ),
                    self.figures(Some(pct), queue),
                );
            }
        }
        if self.proposed.full && bytes < self.limits.full_clear {
            self.proposed.full = false;
            let (refused, dropped) = (self.refused_full, self.dropped_full);
            (self.refused_full, self.dropped_full) = (0, 0);
            tracing::info!(bytes, refused, dropped, "store has room again");
            self.alarm(
                now_ms,
                AlarmEvent::StoreFullCleared,
                format!(
                    "the store has room again ({} of {}); while it was full, {refused} readings \
                     and commands were refused and {dropped} records dropped",
                    show(bytes),
                    show(max)
                ),
                StoreFigures {
                    refused: Some(refused),
                    dropped: Some(dropped),
                    ..self.figures(None, queue)
                },
            );
        }
        if self.proposed.disk_full && !self.disk_low && self.blocked.is_none() && !self.down {
            self.proposed.disk_full = false;
            let (refused, dropped) = (self.refused_disk, self.dropped_disk);
            (self.refused_disk, self.dropped_disk) = (0, 0);
            tracing::info!(
                free_bytes = self.disk_free,
                refused,
                dropped,
                "disk has room again"
            );
            self.alarm(
                now_ms,
                AlarmEvent::DiskFullCleared,
                format!(
                    "the data directory's filesystem has {} free again; while it was full, \
                     {refused} readings and commands were refused and {dropped} records dropped",
                    self.disk_free.map_or("room".to_owned(), show)
                ),
                StoreFigures {
                    refused: Some(refused),
                    dropped: Some(dropped),
                    ..self.disk_figures()
                },
            );
        }
    }

    /// A commit failed, or could not be made durable, because the disk is
    /// full: refuse everything until [`Capacity::retry_due`].
    pub fn on_disk_error(&mut self, now: Instant, now_ms: u64, queue: Usage) {
        self.disk_low = true;
        self.write_refused = true;
        self.blocked = Some(Blocked {
            until: now + self.backoff,
        });
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        self.raise_disk(now_ms, queue);
    }

    /// The store could not be reopened (`true`) or is open again.
    pub fn set_down(&mut self, down: bool) {
        self.down = down;
    }

    pub fn is_down(&self) -> bool {
        self.down
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some() || self.down
    }

    /// Whether to try again after a failed commit: the backoff has passed,
    /// or the filesystem has room again.
    pub fn retry_due(&self, now: Instant, disk: Option<DiskSpace>) -> bool {
        let Some(b) = self.blocked else {
            return self.down;
        };
        now >= b.until || disk.is_some_and(|d| d.available >= self.limits.disk_clear)
    }

    /// Lift the block: the next commit tries the disk again.
    pub fn unblock(&mut self) {
        self.blocked = None;
    }

    /// Alarm records to add to the next commit, unless nothing may be
    /// committed now (they wait).
    pub fn take_outbox(&mut self) -> Vec<Record> {
        if self.is_blocked() {
            return Vec::new();
        }
        std::mem::take(&mut self.outbox)
    }

    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty() && !self.is_blocked()
    }

    /// The durable state to write with the next commit, if it changed.
    pub fn state_write(&self) -> Option<(String, Option<Vec<u8>>)> {
        (self.proposed != self.committed).then(|| {
            (
                STATE_KEY.to_owned(),
                serde_json::to_vec(&self.proposed).ok(),
            )
        })
    }

    /// The commit carrying [`Capacity::state_write`] succeeded.
    pub fn committed(&mut self) {
        self.committed = self.proposed;
        self.backoff = RETRY_FIRST;
    }

    /// Readings of a batch that was not accepted after all (its commit
    /// failed and did not survive): counted as refused.
    /// Its planned drop (`dropped` records) did not happen either.
    pub fn refused_after_failure(&mut self, n: u64, dropped: u64) {
        self.refused += n;
        self.refused_disk += n;
        self.dropped_full = self.dropped_full.saturating_sub(dropped);
        self.dropped_disk = self.dropped_disk.saturating_sub(dropped);
    }

    pub fn status(&self) -> CapacityStatus {
        CapacityStatus {
            max_bytes: self.limits.max_bytes,
            when_full: self.limits.when_full.name(),
            full: self.proposed.full,
            disk_full: self.proposed.disk_full,
            disk_free_bytes: self.disk_free,
            refused: self.refused,
            dropped: self.proposed.dropped_total,
        }
    }

    fn raise_full(&mut self, now_ms: u64, queue: Usage) {
        if self.proposed.full {
            return;
        }
        self.proposed.full = true;
        let what = match self.limits.when_full {
            WhenFull::Refuse => {
                "new readings and commands are refused until the broker takes records"
            }
            WhenFull::DropOldest => "the oldest unsent records are dropped to make room",
        };
        tracing::warn!(
            bytes = queue.bytes,
            max_bytes = self.limits.max_bytes,
            policy = self.limits.when_full.name(),
            "store full"
        );
        self.alarm(
            now_ms,
            AlarmEvent::StoreFull,
            format!(
                "the store is full ({} of {}): {what}",
                show(queue.bytes),
                show(self.limits.max_bytes)
            ),
            StoreFigures {
                policy: Some(self.limits.when_full.name().to_owned()),
                ..self.figures(None, queue)
            },
        );
    }

    fn raise_disk(&mut self, now_ms: u64, queue: Usage) {
        if self.proposed.disk_full {
            return;
        }
        self.proposed.disk_full = true;
        let why = if self.write_refused {
            COMMIT_FAILED.to_owned()
        } else {
            format!(
                "the data directory's filesystem has {} free, below min_disk_free ({})",
                self.disk_free.map_or("little".to_owned(), show),
                show(self.limits.min_disk_free)
            )
        };
        let what = match self.limits.when_full {
            WhenFull::Refuse => "new readings and commands are refused",
            WhenFull::DropOldest => {
                "the oldest unsent records are dropped to make room, or new readings refused \
                 when nothing can be dropped"
            }
        };
        tracing::error!(
            free_bytes = self.disk_free,
            min_disk_free = self.limits.min_disk_free,
            bytes = queue.bytes,
            "disk full: {why}"
        );
        self.alarm(
            now_ms,
            AlarmEvent::DiskFull,
            format!("{why}: {what} until it has room again"),
            StoreFigures {
                policy: Some(self.limits.when_full.name().to_owned()),
                bytes: Some(queue.bytes),
                max_bytes: Some(self.limits.max_bytes),
                ..self.disk_figures()
            },
        );
    }

    fn figures(&self, percent: Option<u8>, queue: Usage) -> StoreFigures {
        StoreFigures {
            percent,
            bytes: Some(queue.bytes),
            max_bytes: Some(self.limits.max_bytes),
            ..StoreFigures::default()
        }
    }

    fn disk_figures(&self) -> StoreFigures {
        StoreFigures {
            free_bytes: self.disk_free,
            min_free_bytes: Some(self.limits.min_disk_free),
            ..StoreFigures::default()
        }
    }

    fn alarm(&mut self, now_ms: u64, event: AlarmEvent, message: String, figures: StoreFigures) {
        self.outbox
            .push(Record::gateway_alarm(now_ms, event, message, Some(figures)));
    }
}

/// A byte count for a message: `812 KiB`, `1.5 GiB`.
fn show(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let v = n as f64 / size as f64;
            return if v < 10.0 {
                format!("{v:.1} {unit}")
            } else {
                format!("{v:.0} {unit}")
            };
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests;
