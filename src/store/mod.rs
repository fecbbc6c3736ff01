//! The durable queue: every accepted record lives here until the broker has
//! acknowledged it, together with the small durable state (sequence counter,
//! station context) that must change atomically with the records.
//!
//! [`Store`] is the engine-neutral contract, with two engines chosen by
//! `[store] engine`: `redb` (the default for a new store) and `sled` (kept for
//! stores that already use it; without the key the existing store's engine
//! is used). The group-commit loop that batches station output lives in `app::pipeline`; this
//! module only promises that [`Store::commit`] is a real durability point: when
//! it returns `Ok`, the batch survives `kill -9` and power loss.
//!
//! Capacity: the pipeline bounds the queue (`app::capacity`); a commit can
//! delete the oldest unacknowledged records in the same atomic batch
//! ([`Batch::drop`], picked by [`Store::plan_drop`]). [`ReopenableStore`]
//! closes and reopens the engine in place after a commit the full disk
//! refused, and [`disk_space`] reads the filesystem's free space.

mod codec;
mod epoch;
mod floor;
pub mod private;
mod redb;
mod reopen;
mod salvage;
mod sled;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{StoreConfig, StoreEngine};
use crate::record::Record;

pub use self::codec::CodecError;
pub use self::epoch::{Epoch, lost_alarm};
pub use self::floor::FILE_NAME as FLOOR_FILE;
pub use self::redb::RedbStore;
pub use self::reopen::{DiskSpace, ReopenableStore, disk_space};
pub use self::salvage::{DAMAGED_PREFIX, KEEP_DAMAGED, STORE_DIR};
pub use self::sled::SledStore;

/// Errors of the durable store. Every one of them means "not committed".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store engine error (sled): {0}")]
    Engine(#[from] ::sled::Error),
    /// Not marked as the source: its text is already in this message, and
    /// `{:#}` would print it twice.
    #[error("store engine error (redb): {0}")]
    Redb(::redb::Error),
    /// The engine failed inside while opening a damaged file.
    #[error("store file {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// The directory holds the other engine's store. Opening an empty store
    /// next to it would strand its unsent records and start `seq` at 1 again.
    #[error(
        "{} holds a {found} store but [store] engine is \"{configured}\": switching engines \
         would strand its unsent records and reuse seqs; drain it with engine = \"{found}\", \
         then stop linegate and move the directory away",
        dir.display()
    )]
    OtherEngine {
        dir: PathBuf,
        found: &'static str,
        configured: &'static str,
    },
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("store record could not be encoded: {0}")]
    Codec(#[from] CodecError),
    /// The engine was closed after a failed commit and is being reopened.
    #[error("the store is closed for a reopen after a failed commit")]
    Unavailable,
    /// This store cannot be reopened in place.
    #[error("this store cannot be reopened in place")]
    NotReopenable,
    /// The data directory, or the store in it, is no longer the one opened:
    /// deleted, moved or replaced while the gateway ran. Commits would go
    /// into files no restart finds.
    #[error("the data directory was deleted, moved or replaced while linegate ran: {what}")]
    Lost { what: String },
}

impl StoreError {
    /// The filesystem is full (ENOSPC) or the user's quota is (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            StoreError::Io(e) => Some(e),
            StoreError::Engine(::sled::Error::Io(e)) => Some(e),
            StoreError::Redb(::redb::Error::Io(e)) => Some(e),
            _ => None,
        };
        io.is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        })
    }

    /// The engine refuses writes because of an earlier I/O error (redb's
    /// `PreviousIo`): only closing and reopening it clears that.
    pub fn is_previous_io(&self) -> bool {
        matches!(self, StoreError::Redb(::redb::Error::PreviousIo))
    }
}

macro_rules! from_redb {
    ($($ty:ident),*) => {$(
        impl From<::redb::$ty> for StoreError {
            fn from(err: ::redb::$ty) -> Self {
                StoreError::Redb(err.into())
            }
        }
    )*};
}
from_redb!(
    Error,
    DatabaseError,
    TransactionError,
    TableError,
    StorageError,
    CommitError,
    SetDurabilityError
);

/// One group commit: records to append (their `seq` is assigned by the store)
/// and durable state entries to write in the same atomic commit.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub records: Vec<Record>,
    /// `(key, Some(value))` upserts, `(key, None)` deletes.
    pub state: Vec<(String, Option<Vec<u8>>)>,
    /// Unacknowledged records to delete unsent in the same atomic commit
    /// (drop-oldest, from [`Store::plan_drop`]). A seq already gone is skipped.
    pub drop: Vec<u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.state.is_empty() && self.drop.is_empty()
    }

    /// Keep only the last write of each state key (the one that wins
    /// anyway): a station rewrites its lot state with every record of a
    /// group commit, and only the final value needs to reach the disk.
    pub fn coalesce_state(&mut self) {
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<_> = std::mem::take(&mut self.state)
            .into_iter()
            .rev()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect();
        kept.reverse();
        self.state = kept;
    }
}

#[cfg(test)]
mod batch_tests {
    use super::Batch;

    #[test]
    fn coalescing_keeps_the_last_write_of_each_key_in_order() {
        let mut b = Batch {
            drop: vec![],
            records: vec![],
            state: vec![
                ("a".into(), Some(b"1".to_vec())),
                ("b".into(), Some(b"1".to_vec())),
                ("a".into(), Some(b"2".to_vec())),
                ("b".into(), None),
                ("c".into(), Some(b"1".to_vec())),
            ],
        };
        b.coalesce_state();
        assert_eq!(
            b.state,
            vec![
                ("a".to_owned(), Some(b"2".to_vec())),
                ("b".to_owned(), None),
                ("c".to_owned(), Some(b"1".to_vec())),
            ]
        );
    }
}

#[cfg(test)]
mod open_tests {
    use std::time::Duration;

    use super::*;

    fn config(engine: Option<StoreEngine>) -> StoreConfig {
        StoreConfig {
            engine,
            commit_interval: Duration::from_millis(10),
            commit_max_records: 256,
            cache_bytes: 1 << 20,
            max_bytes: 1 << 30,
            when_full: crate::config::WhenFull::Refuse,
            min_disk_free: 0,
        }
    }

    fn one_record() -> Batch {
        super::tests::records(1..=1)
    }

    #[test]
    fn a_new_store_without_a_configured_engine_is_redb() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&config(None), dir.path()).unwrap();
        store.commit(one_record()).unwrap();
        let store_dir = dir.path().join(STORE_DIR);
        assert!(store_dir.join(redb::FILE_NAME).exists());
        assert!(!store_dir.join("db").exists());
    }

    #[test]
    fn an_existing_sled_store_is_kept_when_no_engine_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = open(&config(Some(StoreEngine::Sled)), dir.path()).unwrap();
            sled.commit(one_record()).unwrap();
            sled.close().unwrap();
        }
        let store = open(&config(None), dir.path()).unwrap();
        assert_eq!(
            store.stats().depth,
            2,
            "the sled store (its store-created alarm and a record) was opened, not replaced"
        );
        assert_eq!(store.commit(one_record()).unwrap()[0].seq, 3);
        assert!(!dir.path().join(STORE_DIR).join(redb::FILE_NAME).exists());
    }

    #[test]
    fn a_configured_engine_refuses_the_other_engines_store() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&config(None), dir.path()).unwrap());
        let err = open(&config(Some(StoreEngine::Sled)), dir.path())
            .err()
            .expect("sled must refuse a redb store");
        assert!(
            matches!(err, StoreError::OtherEngine { found: "redb", .. }),
            "{err}"
        );
    }
}

/// Queue figures for the status message and for alarms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records accepted and not yet acknowledged by the broker.
    pub depth: u64,
    /// Encoded bytes of those records.
    pub bytes: u64,
    /// Capture time of the oldest unacknowledged record (ms since epoch).
    pub oldest_ts_ms: Option<u64>,
    /// Highest `seq` ever committed (0 before the first record).
    pub last_seq: u64,
    /// Stored records that could not be decoded and were set aside.
    pub corrupt: u64,
    /// The store's epoch (none for an engine opened on its own, in tests).
    pub epoch: Option<Epoch>,
}

/// The cheap part of [`StoreStats`]: kept in memory, no I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub depth: u64,
    pub bytes: u64,
    pub last_seq: u64,
}

/// The oldest unacknowledged records whose deletion frees the bytes asked
/// for: what drop-oldest deletes with the next commit ([`Batch::drop`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropPlan {
    /// Their seqs, ascending.
    pub seqs: Vec<u64>,
    /// The encoded bytes of each, in the same order.
    pub sizes: Vec<u64>,
    /// Their encoded bytes in all.
    pub bytes: u64,
}

impl DropPlan {
    pub fn first(&self) -> Option<u64> {
        self.seqs.first().copied()
    }

    pub fn last(&self) -> Option<u64> {
        self.seqs.last().copied()
    }

    /// Leave out the records in `skip`.
    pub fn without(&mut self, skip: &BTreeSet<u64>) {
        if skip.is_empty() {
            return;
        }
        let mut kept = DropPlan::default();
        for (&seq, &len) in self.seqs.iter().zip(&self.sizes) {
            if !skip.contains(&seq) {
                kept.seqs.push(seq);
                kept.sizes.push(len);
                kept.bytes += len;
            }
        }
        *self = kept;
    }
}

/// Pick, oldest first, records adding up to at least `bytes` from `queue`
/// (`(seq, encoded bytes, kept)` in seq order), taking the records
/// drop-oldest keeps ([`Record::kept_by_drop_oldest`]) only when the others
/// are not enough. Reads `queue` only as far as it needs.
pub(crate) fn pick_oldest(
    queue: impl Iterator<Item = Result<(u64, u64, bool), StoreError>>,
    bytes: u64,
) -> Result<DropPlan, StoreError> {
    let mut picked: Vec<(u64, u64)> = Vec::new();
    let mut total = 0;
    let mut kept = Vec::new();
    for entry in queue {
        if total >= bytes {
            break;
        }
        let (seq, len, keep) = entry?;
        if keep {
            kept.push((seq, len));
        } else {
            picked.push((seq, len));
            total += len;
        }
    }
    if total < bytes {
        for (seq, len) in kept {
            if total >= bytes {
                break;
            }
            picked.push((seq, len));
            total += len;
        }
        picked.sort_unstable();
    }
    Ok(DropPlan {
        seqs: picked.iter().map(|p| p.0).collect(),
        sizes: picked.iter().map(|p| p.1).collect(),
        bytes: total,
    })
}

/// The capacity figures of the status message, kept by the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CapacityStatus {
    /// `[store] max_bytes`.
    pub max_bytes: u64,
    /// `[store] when_full`.
    pub when_full: &'static str,
    /// The queue is at `max_bytes` (`store-full` raised).
    pub full: bool,
    /// The filesystem is below `min_disk_free` or refused a write (`disk-full` raised).
    pub disk_full: bool,
    /// Free space on the data directory's filesystem, when it could be read.
    pub disk_free_bytes: Option<u64>,
    /// Readings and commands refused because the store or disk was full, since start.
    pub refused: u64,
    /// Records dropped unsent by drop-oldest, ever (kept in the store).
    pub dropped: u64,
}

/// The size of `record` in the store (what [`StoreStats::bytes`] adds up):
/// for estimating a batch before it is committed.
pub fn encoded_len(record: &Record) -> u64 {
    codec::encode(record).map_or(0, |v| v.len() as u64)
}

/// The durable queue contract. One writer (the pipeline) calls `commit`; the
/// uplink reads and acknowledges; any task may read stats and state.
pub trait Store: Send + Sync + 'static {
    /// Assign the next `seq`s to `batch.records` (in order), write records and
    /// state atomically, and make them durable before returning. Returns the
    /// records with their `seq` set. `seq`s are never reused, even after a
    /// crash or power cut.
    fn commit(&self, batch: Batch) -> Result<Vec<Record>, StoreError>;

    /// Up to `max` unacknowledged records with `after < seq <= until`, oldest
    /// first. Entries that cannot be decoded are set aside and counted, not
    /// returned.
    fn read_range(&self, after: u64, until: u64, max: usize) -> Result<Vec<Record>, StoreError>;

    /// Move a record that can never be delivered out of the queue, keeping
    /// its bytes aside and counting it in [`StoreStats::corrupt`]. The MES
    /// then sees a gap at its `seq`: a loss that is detected and reported.
    fn set_aside(&self, seq: u64) -> Result<(), StoreError>;

    /// The broker acknowledged `seq`: delete it. Acks need not be durable at
    /// once (a lost ack only causes a detectable duplicate); `commit` and
    /// `close` make them durable.
    fn ack(&self, seq: u64) -> Result<(), StoreError>;

    fn stats(&self) -> StoreStats;

    /// A durable state value written by an earlier `commit`.
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every durable state entry whose key starts with `prefix`, in key order.
    fn state_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Make everything written so far durable (including acks).
    fn sync(&self) -> Result<(), StoreError>;

    /// Make acknowledgements durable if any were made since the last sync;
    /// cheap when there were none. The pipeline calls it when idle, so a
    /// crash after a quiet period does not resend what was acknowledged.
    /// Returns whether there was anything to sync.
    fn sync_acks(&self) -> Result<bool, StoreError>;

    /// Make everything durable before the process exits.
    fn close(&self) -> Result<(), StoreError> {
        self.sync()
    }

    /// Depth, bytes and last seq from memory: cheap enough to call for
    /// every reading.
    fn usage(&self) -> Usage {
        let s = self.stats();
        Usage {
            depth: s.depth,
            bytes: s.bytes,
            last_seq: s.last_seq,
        }
    }

    /// The oldest unacknowledged records whose deletion frees at least
    /// `bytes` (fewer if the queue holds less), never one in `skip` (out
    /// for delivery), and the ones drop-oldest keeps only when nothing else
    /// is left. Writes nothing: the caller puts the seqs in [`Batch::drop`].
    fn plan_drop(&self, bytes: u64, skip: &BTreeSet<u64>) -> Result<DropPlan, StoreError>;

    /// Close the engine and open it again from what is on disk, as a
    /// restart would (after a commit failed because the disk was full: the
    /// engine refuses further writes until then). Only [`ReopenableStore`]
    /// can.
    fn reopen(&self) -> Result<(), StoreError> {
        Err(StoreError::NotReopenable)
    }

    /// Whether a call of this store failed because the disk was full since
    /// it was last opened (an engine may report a later failure as "a
    /// previous I/O error").
    fn disk_full_seen(&self) -> bool {
        false
    }

    /// The store's epoch: `seq` counts within it (`store::epoch`).
    fn epoch(&self) -> Option<Epoch> {
        None
    }

    /// Fail with [`StoreError::Lost`] if the data directory or the store's
    /// files were deleted, moved or replaced since the store was opened.
    /// Cheap (a few `stat` calls): the pipeline asks before every commit
    /// and once a second.
    fn check_place(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Open the store in `data_dir/store` with the configured engine; without
/// one, with the engine of the store already there, else redb (the default
/// since the power-cut suite: docs/storage.md "Choosing the engine"). The
/// seq floor is `data_dir/seq.floor`. A damaged store is salvaged first (see
/// `salvage`): it does not stop the start. Environmental errors do.
pub fn open(cfg: &StoreConfig, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    salvage::open(cfg, data_dir)
}

/// The engine to open `dir` with: the configured one; without one, the
/// engine of the store already there, else redb.
fn engine_for(configured: Option<StoreEngine>, dir: &Path) -> StoreEngine {
    match configured {
        Some(engine) => engine,
        None => match existing_engine(dir) {
            Some(found) => {
                tracing::info!(
                    dir = %dir.display(),
                    engine = found.name(),
                    "no [store] engine configured: keeping the engine of the existing store"
                );
                found
            }
            None => StoreEngine::Redb,
        },
    }
}

/// The files that show which engine wrote a store directory.
fn markers(engine: StoreEngine) -> &'static [&'static str] {
    match engine {
        // sled's files in its directory: `conf` and the log `db`.
        StoreEngine::Sled => &["conf", "db"],
        StoreEngine::Redb => &[redb::FILE_NAME],
    }
}

/// The engine whose store is in `dir`, if any.
fn existing_engine(dir: &Path) -> Option<StoreEngine> {
    [StoreEngine::Redb, StoreEngine::Sled]
        .into_iter()
        .find(|&engine| markers(engine).iter().any(|name| dir.join(name).exists()))
}

/// Create `dir` and any missing ancestors so that their entries survive a
/// power cut: each directory created here is made durable by an fsync of
/// its parent, and `dir` itself is fsynced (its own entries, for a store
/// that already existed). `create_dir_all` alone leaves new entries in the
/// page cache; on a fresh install a power cut right after the first commit
/// would then lose the whole store with it.
pub(crate) fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_owned());
        match at.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Fail if `dir` holds a store written by the other engine than `engine`.
fn refuse_other_engine(dir: &Path, engine: StoreEngine) -> Result<(), StoreError> {
    let found = match engine {
        StoreEngine::Redb => StoreEngine::Sled,
        StoreEngine::Sled => StoreEngine::Redb,
    };
    if markers(found).iter().any(|name| dir.join(name).exists()) {
        return Err(StoreError::OtherEngine {
            dir: dir.to_owned(),
            found: found.name(),
            configured: engine.name(),
        });
    }
    Ok(())
}
