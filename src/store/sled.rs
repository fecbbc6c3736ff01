//! The sled engine of the [`Store`](super::Store).
//!
//! One sled tree with prefixed keys, so that records, the sequence counter and
//! station state change in one atomic `apply_batch`:
//!
//! | key                     | value                          |
//! |-------------------------|--------------------------------|
//! | `r` + seq (u64 BE)      | encoded record (unacknowledged) |
//! | `q` + seq (u64 BE)      | undecodable entry set aside    |
//! | `m:seq`                 | highest seq ever assigned      |
//! | `s:` + key              | durable state (station context) |
//!
//! Durability: sled's `flush()` ends in `sync_file_range`, which neither
//! flushes the drive cache nor file metadata, so it is not a power-loss
//! durability point on its own. After `flush()` we `fdatasync` sled's log
//! file ourselves; `conf` and the directory are fsynced once at open. A
//! commit returns only after that.
//!
//! Seqs are reserved in the seq floor (`store::floor`) before a commit hands
//! them out; a clean `close` records the last seq there. Damage found at
//! open (every record and state entry is read once) is salvaged by
//! `store::salvage`.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::codec::{decode, encode, kept_by_drop_oldest};
use super::floor::SeqFloor;
use super::{Batch, DropPlan, Epoch, Store, StoreError, StoreStats, Usage};
use crate::config::StoreEngine;
use crate::record::Record;

pub(super) const RECORD: u8 = b'r';
pub(super) const QUARANTINE: u8 = b'q';
pub(super) const META_SEQ: &[u8] = b"m:seq";
pub(super) const STATE: &[u8] = b"s:";

pub(super) fn record_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn seq_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub(super) fn state_key(key: &str) -> Vec<u8> {
    [STATE, key.as_bytes()].concat()
}

#[derive(Debug, Default)]
struct Counters {
    last_seq: u64,
    depth: u64,
    bytes: u64,
    corrupt: u64,
}

/// How long dropping a [`SledDb`] waits at most for sled to release its
/// lock (its background writers finish within milliseconds; this bound only
/// keeps a stuck one from hanging the caller).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A sled database that is closed when dropped: the drop returns only once
/// sled has released its lock on the log file, so the same directory can be
/// opened again at once (`ReopenableStore::reopen` after a full disk, a
/// salvage reading a scratch copy several times, a restart in tests).
///
/// sled takes an exclusive `flock` on its log `db` and holds it for as long
/// as any handle on that open file lives. Dropping the last `Db` flushes and
/// syncs, but the jobs sled hands its I/O thread pool (writing a sealed
/// buffer to the log, truncating a segment) hold their own handle until
/// they return, which on a loaded machine can be well after the drop: an
/// open right then fails with `WouldBlock`.
pub(super) struct SledDb {
    // Dropped first (fields drop in declaration order), then `_released`
    // waits for the lock.
    db: ::sled::Db,
    _released: Released,
}

impl SledDb {
    /// Open sled in `dir` as linegate always does.
    pub(super) fn open(dir: &Path, cache_bytes: u64) -> Result<SledDb, ::sled::Error> {
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(::sled::Mode::LowSpace)
            // No background flusher: commits flush and fsync themselves, and
            // the pipeline syncs acks when idle (`sync_acks`). sled's own
            // periodic `sync_all` ran concurrently with commits and made
            // their latency tail several times longer (BENCHMARKS.md).
            .flush_every_ms(None)
            .open()?;
        // The log sled has just locked, opened again: the same file even if
        // its name is gone or taken by another by the time of the drop.
        let path = dir.join("db");
        let log = File::open(&path)?;
        Ok(SledDb {
            db,
            _released: Released { log, path },
        })
    }
}

impl std::ops::Deref for SledDb {
    type Target = ::sled::Db;

    fn deref(&self) -> &::sled::Db {
        &self.db
    }
}

/// Waits, when dropped, until sled's log is no longer locked.
struct Released {
    /// The log, opened a second time (its own open file description).
    log: File,
    path: PathBuf,
}

impl Drop for Released {
    fn drop(&mut self) {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            // A lock of our own, on our own open file description, conflicts
            // with sled's for as long as any of sled's handles lives; ours
            // is released when the duplicate closes, at once.
            let Ok(file) = self.log.try_clone() else {
                return;
            };
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    let _ = locked.unlock();
                    return;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if started.elapsed() < RELEASE_WAIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err((_, errno)) => {
                    tracing::warn!(
                        file = %self.path.display(),
                        %errno,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "sled still holds its lock after the store was closed"
                    );
                    return;
                }
            }
        }
    }
}

/// The sled-backed durable queue.
pub struct SledStore {
    pub(super) db: SledDb,
    /// sled's log file, opened a second time so we can `fdatasync` it.
    log: File,
    dir: PathBuf,
    counters: Mutex<Counters>,
    /// Acks (deletes) applied since the last sync.
    acks_dirty: AtomicBool,
    /// Reserves seqs before they are handed out (`store::open` sets it).
    floor: Option<Arc<SeqFloor>>,
}

impl SledStore {
    /// Open (or create) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        super::refuse_other_engine(dir, StoreEngine::Sled)?;
        super::create_dir_durable(dir)?;
        let db = SledDb::open(dir, cache_bytes)?;
        let log = File::open(dir.join("db"))?;
        // What recovery found may still be only in the page cache (after a
        // kill -9 during a commit): make it durable before any of it counts
        // as committed. sled never fsyncs `conf` or the directory entries.
        db.flush()?;
        log.sync_data()?;
        File::open(dir.join("conf"))?.sync_all()?;
        File::open(dir)?.sync_all()?;

        let mut counters = Counters::default();
        if let Some(v) = db.get(META_SEQ)? {
            counters.last_seq = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
        }
        for entry in db.scan_prefix([RECORD]) {
            let (k, v) = entry?;
            counters.depth += 1;
            counters.bytes += v.len() as u64;
            counters.last_seq = counters.last_seq.max(seq_of(&k).unwrap_or(0));
        }
        counters.corrupt = db.scan_prefix([QUARANTINE]).count() as u64;
        // Read every state entry once: damage found here is found at open,
        // where it can be salvaged, not by the first reader after start.
        for entry in db.scan_prefix(STATE) {
            entry?;
        }
        tracing::info!(
            dir = %dir.display(),
            engine = "sled",
            depth = counters.depth,
            last_seq = counters.last_seq,
            corrupt = counters.corrupt,
            "store opened"
        );
        Ok(SledStore {
            db,
            log,
            dir: dir.to_owned(),
            counters: Mutex::new(counters),
            acks_dirty: AtomicBool::new(false),
            floor: None,
        })
    }

    /// Reserve seqs in `floor` before handing them out, and mark it at a
    /// clean close.
    pub(super) fn set_floor(&mut self, floor: Arc<SeqFloor>) {
        self.floor = Some(floor);
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write an entry as it is, bypassing the codec (tests of damaged entries).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.db.insert(record_key(RECORD, seq), bytes)?;
        Ok(())
    }
}

impl Store for SledStore {
    fn commit(&self, batch: Batch) -> Result<Vec<Record>, StoreError> {
        let mut counters = self.counters();
        let mut seq = counters.last_seq;
        let mut bytes = 0u64;
        let mut sled_batch = ::sled::Batch::default();
        let mut records = batch.records;
        for record in &mut records {
            seq += 1;
            record.seq = seq;
            let value = encode(record)?;
            bytes += value.len() as u64;
            sled_batch.insert(&record_key(RECORD, seq), value);
        }
        if let Some(floor) = &self.floor {
            floor.cover(seq)?;
        }
        sled_batch.insert(META_SEQ, &seq.to_be_bytes());
        for (key, value) in batch.state {
            match value {
                Some(v) => sled_batch.insert(state_key(&key), v),
                None => sled_batch.remove(state_key(&key)),
            }
        }
        // Dropped unsent (drop-oldest). Acks take the counters lock before
        // they delete, so what is found here is still there when the batch
        // is applied, and counted once.
        let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
        for &old in &batch.drop {
            let key = record_key(RECORD, old);
            if let Some(value) = self.db.get(key)? {
                sled_batch.remove(&key);
                dropped += 1;
                dropped_bytes += value.len() as u64;
            }
        }
        self.db.apply_batch(sled_batch)?;
        // Applied: these seqs exist now and must never be handed out again,
        // whether or not the sync below succeeds.
        counters.last_seq = seq;
        counters.depth = (counters.depth + records.len() as u64).saturating_sub(dropped);
        counters.bytes = (counters.bytes + bytes).saturating_sub(dropped_bytes);
        drop(counters);
        // If this fails the batch is applied but not durable; the caller
        // must not publish it and must not commit it again (the pipeline
        // stops, and recovery on restart decides what survived).
        self.sync()?;
        Ok(records)
    }

    fn read_range(&self, after: u64, until: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        if until <= after {
            return Ok(Vec::new());
        }
        let start = record_key(RECORD, after.saturating_add(1));
        let end = record_key(RECORD, until);
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in self.db.range(start..=end) {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry?;
            match decode(&value) {
                Ok(record) => out.push(record),
                Err(err) => {
                    let seq = seq_of(&key).unwrap_or(0);
                    tracing::error!(seq, error = %err, "corrupt record set aside");
                    self.set_aside(seq)?;
                }
            }
        }
        Ok(out)
    }

    fn set_aside(&self, seq: u64) -> Result<(), StoreError> {
        let key = record_key(RECORD, seq);
        // Held while deleting, as in `ack`: a commit dropping records sees
        // each record either here or gone.
        let mut c = self.counters();
        if let Some(value) = self.db.get(key)? {
            // Written aside before removal: a crash in between keeps both, never neither.
            self.db.insert(record_key(QUARANTINE, seq), value.clone())?;
            if self.db.remove(key)?.is_some() {
                c.depth = c.depth.saturating_sub(1);
                c.bytes = c.bytes.saturating_sub(value.len() as u64);
                c.corrupt += 1;
            }
        }
        Ok(())
    }

    fn ack(&self, seq: u64) -> Result<(), StoreError> {
        // Held while deleting: a commit that drops records (drop-oldest)
        // reads and deletes them under the same lock, so a record is
        // subtracted from the figures once, by whichever came first.
        let mut c = self.counters();
        if let Some(old) = self.db.remove(record_key(RECORD, seq))? {
            self.acks_dirty.store(true, Ordering::Release);
            c.depth = c.depth.saturating_sub(1);
            c.bytes = c.bytes.saturating_sub(old.len() as u64);
        }
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        let oldest_ts_ms = self
            .db
            .scan_prefix([RECORD])
            .next()
            .and_then(Result::ok)
            .and_then(|(_, v)| decode(&v).ok())
            .map(|r| r.ts_ms);
        let c = self.counters();
        StoreStats {
            depth: c.depth,
            bytes: c.bytes,
            oldest_ts_ms,
            last_seq: c.last_seq,
            corrupt: c.corrupt,
            epoch: self.epoch(),
        }
    }

    fn state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(state_key(key))?.map(|v| v.to_vec()))
    }

    fn state_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(state_key(prefix)) {
            let (k, v) = item?;
            // Keys are written from `&str`; anything else is not ours.
            if let Ok(key) = std::str::from_utf8(&k[STATE.len()..]) {
                out.push((key.to_owned(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Flush sled's buffers, then make them durable with a real fdatasync.
    fn sync(&self) -> Result<(), StoreError> {
        self.acks_dirty.store(false, Ordering::Release);
        self.db.flush()?;
        self.log.sync_data()?;
        Ok(())
    }

    fn sync_acks(&self) -> Result<bool, StoreError> {
        let dirty = self.acks_dirty.load(Ordering::Acquire);
        if dirty {
            self.sync()?;
        }
        Ok(dirty)
    }

    fn close(&self) -> Result<(), StoreError> {
        self.sync()?;
        if let Some(floor) = &self.floor {
            floor.mark_clean(self.counters().last_seq)?;
        }
        Ok(())
    }

    fn usage(&self) -> Usage {
        let c = self.counters();
        Usage {
            depth: c.depth,
            bytes: c.bytes,
            last_seq: c.last_seq,
        }
    }

    fn epoch(&self) -> Option<Epoch> {
        self.floor.as_ref().and_then(|f| f.epoch())
    }

    fn check_place(&self) -> Result<(), StoreError> {
        self.floor.as_ref().map_or(Ok(()), |f| f.check())
    }

    fn plan_drop(&self, bytes: u64, skip: &BTreeSet<u64>) -> Result<DropPlan, StoreError> {
        let queue = self
            .db
            .scan_prefix([RECORD])
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    seq_of(&key).unwrap_or(0),
                    value.len() as u64,
                    kept_by_drop_oldest(&value),
                ))
            })
            .filter(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(seq, _, _)| !skip.contains(seq))
            });
        super::pick_oldest(queue, bytes)
    }
}
