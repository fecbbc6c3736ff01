//! The redb engine of the [`Store`](super::Store).
//!
//! One file, `<dir>/linegate.redb`, with four tables:
//!
//! | table      | key        | value                                   |
//! |------------|------------|-----------------------------------------|
//! | `records`  | seq (u64)  | encoded record (unacknowledged)         |
//! | `aside`    | seq (u64)  | undecodable entry set aside             |
//! | `meta`     | `last_seq` | highest seq ever assigned (u64)         |
//! | `state`    | key (str)  | durable state (station context, …)      |
//!
//! **Durability.** Every write transaction is committed with
//! `Durability::Immediate`: redb writes the new pages with checksums, flips
//! the commit slot and `fdatasync`s the file before `commit` returns (its
//! "1-phase commit + checksum"; after a crash the newest slot whose checksum
//! holds is used). A `commit` of this store is therefore a real durability
//! point on its own; there is no separate flush. The directory is fsynced
//! after the file is created.
//!
//! **Acknowledgements.** An ack only marks the record as removed in memory
//! (and takes it out of depth and bytes): no write transaction, no fsync. The
//! marked records are deleted by the next write transaction, which is either
//! the next group commit (the deletes ride along for free) or, when no commit
//! comes, `sync_acks` (the pipeline's idle sync, about once a second) or
//! `sync`/`close`. Until then `read_range` skips them, so an acknowledged
//! record is never handed out again by this process. A crash in between
//! loses the marks: the records come back after restart and are sent again
//! with their same `seq` (a duplicate the MES can detect, never a loss).
//! Records found undecodable, and records set aside by the uplink, are
//! handled the same way: marked at once, moved to `aside` by the next write.
//!
//! **Figures in memory.** depth, bytes, the last seq and the set-aside count
//! are rebuilt by a scan at open and kept in memory; the oldest record's
//! timestamp is cached and looked up again only when that record leaves.
//!
//! **Damaged files.** The database is opened with redb's integrity check on:
//! every page checksum of the committed trees is verified at each open, so a
//! damaged file fails to open with a typed error instead of being trusted
//! (redb documents that a plain open of an altered file may panic). The open
//! is also guarded against a panic inside redb, reported as
//! [`StoreError::Damaged`]. `store::salvage` then rebuilds the store from
//! what can still be read.
//!
//! **Seqs** are reserved in the seq floor (`store::floor`) before a commit
//! hands them out; a clean `close` records the last seq there.
//!
//! **One process.** redb locks the file: a second gateway on the same data
//! directory fails to open the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ::redb::{
    Database, Durability, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition, WriteTransaction,
};

use super::codec::{decode, encode, kept_by_drop_oldest};
use super::floor::SeqFloor;
use super::{Batch, DropPlan, Epoch, Store, StoreError, StoreStats, Usage};
use crate::config::StoreEngine;
use crate::record::Record;

/// The database file inside the store directory.
pub const FILE_NAME: &str = "linegate.redb";

pub(super) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
pub(super) const ASIDE: TableDefinition<u64, &[u8]> = TableDefinition::new("aside");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
pub(super) const LAST_SEQ: &str = "last_seq";

/// A removal decided in memory and not yet written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// The broker acknowledged it: delete.
    Ack,
    /// It can never be delivered: move it to `aside`.
    SetAside,
}

/// The capture time of the oldest unacknowledged record, cached.
#[derive(Debug, Clone, Copy)]
enum Oldest {
    /// Must be looked up: the cached record left the queue. Every record
    /// older than it left before, so the search starts after `after`.
    Unknown {
        after: u64,
    },
    /// The queue is empty.
    Empty,
    At {
        seq: u64,
        ts_ms: u64,
    },
}

#[derive(Debug)]
struct Inner {
    last_seq: u64,
    depth: u64,
    bytes: u64,
    corrupt: u64,
    /// Acked or set-aside records whose removal the next write transaction
    /// applies. `read_range` never returns them.
    pending: BTreeMap<u64, Removal>,
    /// Encoded length of each record `read_range` handed out and not yet
    /// removed, so that an ack needs no read transaction of its own.
    handed: HashMap<u64, usize>,
    oldest: Oldest,
}

impl Inner {
    /// Take `seq` (of `len` encoded bytes), deleted by a commit, out of the
    /// queue figures.
    fn remove_dropped(&mut self, seq: u64, len: usize) {
        self.handed.remove(&seq);
        self.depth = self.depth.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len as u64);
        if self.depth == 0 {
            self.oldest = Oldest::Empty;
        } else if matches!(self.oldest, Oldest::At { seq: s, .. } if s == seq) {
            self.oldest = Oldest::Unknown { after: seq };
        }
    }

    /// Take `seq` (of `len` encoded bytes) out of the queue figures.
    fn remove(&mut self, seq: u64, len: usize, how: Removal) {
        self.pending.insert(seq, how);
        self.depth = self.depth.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len as u64);
        if how == Removal::SetAside {
            self.corrupt += 1;
        }
        if self.depth == 0 {
            self.oldest = Oldest::Empty;
        } else if matches!(self.oldest, Oldest::At { seq: s, .. } if s == seq) {
            self.oldest = Oldest::Unknown { after: seq };
        }
    }
}

/// The redb-backed durable queue.
pub struct RedbStore {
    pub(super) db: Database,
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Held through a whole `commit`, so seqs are assigned once even if two
    /// callers ever committed at the same time (the contract has one).
    committing: Mutex<()>,
    /// Reserves seqs before they are handed out (`store::open` sets it).
    floor: Option<Arc<SeqFloor>>,
}

impl RedbStore {
    /// Open (or create) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        super::refuse_other_engine(dir, StoreEngine::Redb)?;
        super::create_dir_durable(dir)?;
        let path = dir.join(FILE_NAME);
        let cache = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let opened = std::panic::catch_unwind(|| {
            ::redb::Builder::new()
                .set_cache_size(cache)
                .set_check_integrity_on_open(true)
                .create(&path)
        });
        let db = match opened {
            Ok(db) => db?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "redb panicked while opening the file".to_owned());
                return Err(StoreError::Damaged { path, reason: what });
            }
        };
        // The file's directory entry must survive a power cut too.
        File::open(dir)?.sync_all()?;

        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            txn.open_table(RECORDS)?;
            txn.open_table(ASIDE)?;
            txn.open_table(META)?;
            txn.open_table(STATE)?;
        }
        txn.commit()?;

        let mut inner = Inner {
            last_seq: 0,
            depth: 0,
            bytes: 0,
            corrupt: 0,
            pending: BTreeMap::new(),
            handed: HashMap::new(),
            oldest: Oldest::Unknown { after: 0 },
        };
        {
            let read = db.begin_read()?;
            let meta = read.open_table(META)?;
            if let Some(v) = meta.get(LAST_SEQ)? {
                inner.last_seq = v.value();
            }
            let records = read.open_table(RECORDS)?;
            for entry in records.iter()? {
                let (k, v) = entry?;
                inner.depth += 1;
                inner.bytes += v.value().len() as u64;
                inner.last_seq = inner.last_seq.max(k.value());
            }
            let aside = read.open_table(ASIDE)?;
            inner.corrupt = aside.len()?;
        }
        if inner.depth == 0 {
            inner.oldest = Oldest::Empty;
        }
        tracing::info!(
            dir = %dir.display(),
            engine = "redb",
            depth = inner.depth,
            last_seq = inner.last_seq,
            corrupt = inner.corrupt,
            "store opened"
        );
        Ok(RedbStore {
            db,
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
            committing: Mutex::new(()),
            floor: None,
        })
    }

    /// Reserve seqs in `floor` before handing them out, and mark it at a
    /// clean close.
    pub(super) fn set_floor(&mut self, floor: Arc<SeqFloor>) {
        self.floor = Some(floor);
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write an entry as it is, bypassing the codec (tests of damaged entries).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            records.insert(seq, bytes)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Mark `seq` for removal if it is in the queue and not marked already.
    fn mark(&self, seq: u64, how: Removal) -> Result<(), StoreError> {
        let mut inner = self.inner();
        if seq == 0 || seq > inner.last_seq || inner.pending.contains_key(&seq) {
            return Ok(());
        }
        let len = match inner.handed.remove(&seq) {
            Some(len) => Some(len),
            None => {
                let read = self.db.begin_read()?;
                let records = read.open_table(RECORDS)?;
                let found = records.get(seq)?;
                found.map(|v| v.value().len())
            }
        };
        if let Some(len) = len {
            inner.remove(seq, len, how);
        }
        Ok(())
    }

    /// The removals to apply in the next write transaction.
    fn pending(&self) -> Vec<(u64, Removal)> {
        self.inner()
            .pending
            .iter()
            .map(|(&seq, &how)| (seq, how))
            .collect()
    }

    /// Forget the removals a committed write transaction applied.
    fn applied(inner: &mut Inner, removals: &[(u64, Removal)]) {
        for (seq, _) in removals {
            inner.pending.remove(seq);
        }
    }

    /// The oldest record's capture time: the first decodable record after
    /// `after` that is not marked for removal.
    fn find_oldest(&self, inner: &Inner, after: u64) -> Result<Oldest, StoreError> {
        let read = self.db.begin_read()?;
        let records = read.open_table(RECORDS)?;
        for entry in records.range(after.saturating_add(1)..)? {
            let (k, v) = entry?;
            let seq = k.value();
            if inner.pending.contains_key(&seq) {
                continue;
            }
            if let Ok(record) = decode(v.value()) {
                return Ok(Oldest::At {
                    seq,
                    ts_ms: record.ts_ms,
                });
            }
        }
        Ok(Oldest::Empty)
    }
}

/// Apply marked removals inside `txn`: acked records are deleted, set-aside
/// ones moved to `aside`. A record already gone is skipped.
fn apply_removals(
    txn: &WriteTransaction,
    removals: &[(u64, Removal)],
) -> Result<(), ::redb::Error> {
    if removals.is_empty() {
        return Ok(());
    }
    let mut records = txn.open_table(RECORDS)?;
    let mut aside = txn.open_table(ASIDE)?;
    for &(seq, how) in removals {
        let Some(old) = records.remove(seq)? else {
            continue;
        };
        if how == Removal::SetAside {
            let bytes = old.value().to_vec();
            drop(old);
            aside.insert(seq, bytes.as_slice())?;
        }
    }
    Ok(())
}

/// Delete `seqs` unsent inside `txn` (drop-oldest), except those `removals`
/// already handles; returns what was there: `(seq, encoded bytes)`.
fn drop_records(
    txn: &WriteTransaction,
    seqs: &[u64],
    removals: &[(u64, Removal)],
) -> Result<Vec<(u64, usize)>, ::redb::Error> {
    let mut dropped = Vec::with_capacity(seqs.len());
    if seqs.is_empty() {
        return Ok(dropped);
    }
    let mut records = txn.open_table(RECORDS)?;
    for &seq in seqs {
        // `removals` is in seq order (taken from a BTreeMap).
        if removals.binary_search_by_key(&seq, |(s, _)| *s).is_ok() {
            continue;
        }
        if let Some(old) = records.remove(seq)? {
            dropped.push((seq, old.value().len()));
        }
    }
    Ok(dropped)
}

impl Store for RedbStore {
    fn commit(&self, batch: Batch) -> Result<Vec<Record>, StoreError> {
        let _one_at_a_time = self
            .committing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first = self.inner().last_seq + 1;
        let mut records = batch.records;
        let mut encoded = Vec::with_capacity(records.len());
        let mut bytes = 0u64;
        for (record, seq) in records.iter_mut().zip(first..) {
            record.seq = seq;
            let value = encode(record)?;
            bytes += value.len() as u64;
            encoded.push(value);
        }
        let last = first - 1 + records.len() as u64;
        if let Some(floor) = &self.floor {
            floor.cover(last)?;
        }
        let removals = self.pending();

        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(RECORDS)?;
            for (seq, value) in (first..).zip(&encoded) {
                table.insert(seq, value.as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(LAST_SEQ, last)?;
            let mut state = txn.open_table(STATE)?;
            for (key, value) in &batch.state {
                match value {
                    Some(v) => {
                        state.insert(key.as_str(), v.as_slice())?;
                    }
                    None => {
                        state.remove(key.as_str())?;
                    }
                }
            }
        }
        apply_removals(&txn, &removals)?;
        let dropped = drop_records(&txn, &batch.drop, &removals)?;
        let committed = txn.commit();

        let mut inner = self.inner();
        // Whether or not the commit succeeded, these seqs may be on disk now
        // and must never be handed out again. On failure the caller must not
        // publish them nor commit again (the pipeline stops, and recovery on
        // restart decides what survived).
        inner.last_seq = inner.last_seq.max(last);
        committed?;
        Self::applied(&mut inner, &removals);
        for (seq, len) in dropped {
            // Marked since `removals` was taken: that ack already took it
            // out of the figures (its delete will find nothing left).
            if !inner.pending.contains_key(&seq) {
                inner.remove_dropped(seq, len);
            }
        }
        if let Some(r) = records.first()
            && matches!(inner.oldest, Oldest::Empty)
        {
            inner.oldest = Oldest::At {
                seq: r.seq,
                ts_ms: r.ts_ms,
            };
        }
        inner.depth += records.len() as u64;
        inner.bytes += bytes;
        Ok(records)
    }

    fn read_range(&self, after: u64, until: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        if until <= after || max == 0 {
            return Ok(Vec::new());
        }
        let mut inner = self.inner();
        let mut out = Vec::with_capacity(max.min(1024));
        let mut damaged = Vec::new();
        {
            let read = self.db.begin_read()?;
            let records = read.open_table(RECORDS)?;
            for entry in records.range(after.saturating_add(1)..=until)? {
                let (k, v) = entry?;
                let seq = k.value();
                if inner.pending.contains_key(&seq) {
                    continue;
                }
                match decode(v.value()) {
                    Ok(record) => {
                        inner.handed.insert(seq, v.value().len());
                        out.push(record);
                        if out.len() >= max {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::error!(seq, error = %err, "corrupt record set aside");
                        damaged.push((seq, v.value().len()));
                    }
                }
            }
        }
        for (seq, len) in damaged {
            inner.remove(seq, len, Removal::SetAside);
        }
        Ok(out)
    }

    fn set_aside(&self, seq: u64) -> Result<(), StoreError> {
        self.mark(seq, Removal::SetAside)
    }

    fn ack(&self, seq: u64) -> Result<(), StoreError> {
        self.mark(seq, Removal::Ack)
    }

    fn stats(&self) -> StoreStats {
        let mut inner = self.inner();
        if let Oldest::Unknown { after } = inner.oldest {
            match self.find_oldest(&inner, after) {
                Ok(found) => inner.oldest = found,
                Err(err) => tracing::warn!(error = %err, "cannot read the oldest record"),
            }
        }
        StoreStats {
            depth: inner.depth,
            bytes: inner.bytes,
            oldest_ts_ms: match inner.oldest {
                Oldest::At { ts_ms, .. } => Some(ts_ms),
                Oldest::Unknown { .. } | Oldest::Empty => None,
            },
            last_seq: inner.last_seq,
            corrupt: inner.corrupt,
            epoch: self.epoch(),
        }
    }

    fn state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read()?;
        let state = read.open_table(STATE)?;
        let value = state.get(key)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn state_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let read = self.db.begin_read()?;
        let state = read.open_table(STATE)?;
        let mut out = Vec::new();
        for entry in state.range(prefix..)? {
            let (k, v) = entry?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every commit is already durable; what may be outstanding are the
    /// marked removals, written here in one durable transaction.
    fn sync(&self) -> Result<(), StoreError> {
        self.sync_acks().map(|_| ())
    }

    fn sync_acks(&self) -> Result<bool, StoreError> {
        let removals = self.pending();
        if removals.is_empty() {
            return Ok(false);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        apply_removals(&txn, &removals)?;
        txn.commit()?;
        Self::applied(&mut self.inner(), &removals);
        Ok(true)
    }

    fn close(&self) -> Result<(), StoreError> {
        self.sync()?;
        if let Some(floor) = &self.floor {
            floor.mark_clean(self.inner().last_seq)?;
        }
        Ok(())
    }

    fn usage(&self) -> Usage {
        let inner = self.inner();
        Usage {
            depth: inner.depth,
            bytes: inner.bytes,
            last_seq: inner.last_seq,
        }
    }

    fn epoch(&self) -> Option<Epoch> {
        self.floor.as_ref().and_then(|f| f.epoch())
    }

    fn check_place(&self) -> Result<(), StoreError> {
        self.floor.as_ref().map_or(Ok(()), |f| f.check())
    }

    fn plan_drop(&self, bytes: u64, skip: &BTreeSet<u64>) -> Result<DropPlan, StoreError> {
        // Held throughout, so no ack is marked while the plan is made.
        let inner = self.inner();
        let read = self.db.begin_read()?;
        let records = read.open_table(RECORDS)?;
        let queue = records
            .range(1u64..)?
            .filter(|entry| {
                entry.as_ref().map_or(true, |(k, _)| {
                    !inner.pending.contains_key(&k.value()) && !skip.contains(&k.value())
                })
            })
            .map(|entry| {
                let (k, v) = entry?;
                Ok((
                    k.value(),
                    v.value().len() as u64,
                    kept_by_drop_oldest(v.value()),
                ))
            });
        super::pick_oldest(queue, bytes)
    }
}
