//! Opening the store, and what happens when it is found damaged: the store
//! is rebuilt from what can still be read, the damage is reported, and the
//! gateway carries on. A damaged store never stops the gateway from
//! starting (no crash loop under a service manager, no manual step);
//! environmental errors (permission denied, the data directory held by
//! another process, I/O errors from the disk) still fail the start.
//!
//! **Damage** is any of: the engine refuses the files as corrupt (or panics
//! reading them); the store files are missing or empty while the seq floor
//! shows a store existed; the store ends before the `last_seq` it had at
//! the last clean stop (a tail lost without an error).
//!
//! **Salvage**, crash-safe at every step:
//! 1. the damaged `store/` is copied to `store.scratch/`, which the engine
//!    may repair while it is read (the damaged files stay as they were);
//! 2. a new store is built in `store.salvage/`: every record and set-aside
//!    entry that can be read, under its own seq, every state entry, and an
//!    `alarm` record (`store-damaged`) with the counts, whose seq continues
//!    after everything seen and after the seq floor; then every file and the
//!    directory are fsynced;
//! 3. `store.salvage/` is renamed `store.salvaged-<time>/` (the salvage is
//!    complete), `store/` is renamed `store.damaged-<time>/` (kept for
//!    forensics, at most [`KEEP_DAMAGED`] of them), and
//!    `store.salvaged-<time>/` becomes `store/`; the data directory is
//!    fsynced after each rename.
//!
//! A start that finds `store.salvage/` discards it (the damaged store is
//! still in place and is salvaged again); one that finds
//! `store.salvaged-<time>/` finishes step 3. Either way the next start
//! recovers without a manual step.
//!
//! Reading a damaged engine is guarded: every open and every scan runs
//! under `catch_unwind`, and a read error or panic ends that scan, which
//! then resumes from the other end (so what lies before and after a bad
//! region is kept). sled is opened as it is, then without its config file,
//! then without its snapshot files (a replay of its log up to the first
//! damaged entry). redb is opened with its integrity check, then without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::epoch::{self, Epoch};
use super::floor::{self, Found, SeqFloor, sync_dir};
use super::sled::SledDb;
use super::{Batch, RedbStore, SledStore, Store, StoreError, codec, redb, sled};
use crate::config::{StoreConfig, StoreEngine};
use crate::record::{AlarmEvent, Body, Record, StoreFigures};

/// The store's directory inside the data directory.
pub const STORE_DIR: &str = "store";
/// A salvage being built; discarded when found at start.
const BUILDING: &str = "store.salvage";
/// A copy of the damaged store for the engine to read (and repair).
const SCRATCH: &str = "store.scratch";
/// A finished salvage waiting to be put in place: `store.salvaged-<time>`.
const BUILT_PREFIX: &str = "store.salvaged-";
/// A damaged store kept for forensics: `store.damaged-<time>`.
pub const DAMAGED_PREFIX: &str = "store.damaged-";
/// Damaged copies kept; older ones are deleted, so a flapping disk cannot
/// fill the data directory with them.
pub const KEEP_DAMAGED: usize = 3;
/// Entries written to the new store per write.
const IMPORT_BATCH: usize = 2000;
/// No seq handed out can be above this (2^53: 285 years at a million
/// records a second, and the largest integer a JSON number keeps exactly).
/// A larger one read from a damaged store is garbage: its entry is kept
/// aside and it does not move seq.
const MAX_SANE_SEQ: u64 = 1 << 53;
/// The value written for a station's lot state that the salvage could not
/// verify (`lot/<station>`): it does not decode, so the station refuses
/// generated lot numbers until its template changes (docs/mqtt.md,
/// `lot-not-opened`), instead of numbering again from a state that may be
/// older than the numbers it already issued.
const UNVERIFIED_LOT: &[u8] = b"salvaged-unverified:";

/// What a salvage found and did; the content of the `store-damaged` alarm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Why the store was taken for damaged.
    pub reason: String,
    /// How the damaged store could be read.
    pub how: String,
    /// Records salvaged under their own seq.
    pub records: u64,
    /// Entries read that could not be decoded (kept aside, counted in
    /// `queue.corrupt`).
    pub undecodable: u64,
    /// Entries that were already set aside, carried over.
    pub aside: u64,
    /// State entries salvaged.
    pub state: u64,
    /// Reads that failed: what lay behind them is unknown, and lost.
    pub read_errors: u64,
    /// Highest seq found in the damaged store (records, set-aside entries,
    /// its `last_seq`).
    pub highest_seen: u64,
    /// The seq floor's reserved mark, when the file could be read.
    pub floor: Option<u64>,
    /// The alarm's seq: new records continue after it. Seqs
    /// `highest_seen + 1 .. first_new` are never used.
    pub first_new: u64,
    /// Where the damaged store was moved (none if there was no directory).
    pub moved_to: Option<PathBuf>,
    /// Stations whose lot numbering state could not be verified.
    pub numbering_blocked: Vec<String>,
}

impl Report {
    /// Seqs skipped: never handed out, or lost with the damaged part.
    pub fn skipped(&self) -> u64 {
        self.first_new
            .saturating_sub(self.highest_seen.saturating_add(1))
    }

    /// The alarm's message (its wording is documented in docs/mqtt.md).
    pub fn message(&self) -> String {
        let mut m = format!(
            "the store was damaged ({}) and was rebuilt from what could be read ({}): \
             {} records salvaged with their seqs, {} entries undecodable (kept aside), \
             {} set-aside entries carried over, {} unreadable regions (what they held is lost), \
             {} state entries salvaged; highest seq found {}; seq continues at {}, so {} seqs \
             are skipped (reserved by the seq floor and never used, or lost with the damaged part)",
            self.reason,
            self.how,
            self.records,
            self.undecodable,
            self.aside,
            self.read_errors,
            self.state,
            self.highest_seen,
            self.first_new,
            self.skipped(),
        );
        if self.floor.is_none() {
            m.push_str(&format!(
                "; the seq floor file was missing or unreadable too, so seq continues {} past \
                 the highest seq found",
                floor::BLOCK
            ));
        }
        match &self.moved_to {
            Some(dir) => m.push_str(&format!("; damaged copy kept in {}", dir.display())),
            None => m.push_str("; there was no store directory to keep"),
        }
        if !self.numbering_blocked.is_empty() {
            m.push_str(&format!(
                "; the lot numbering state of {} could not be verified, so generated lot numbers \
                 are refused there until the template changes",
                self.numbering_blocked.join(", ")
            ));
        }
        m
    }
}

/// Open the store of `data_dir` (in `data_dir/store`), salvaging it first if
/// it is damaged.
pub fn open(cfg: &StoreConfig, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    open_reporting(cfg.engine, cfg.cache_bytes, data_dir, None).map(|(store, _)| store)
}

/// An engine opened in some directory, before it is shared.
enum Opened {
    Sled(SledStore),
    Redb(RedbStore),
}

impl Opened {
    fn store(&self) -> &dyn Store {
        match self {
            Opened::Sled(s) => s,
            Opened::Redb(s) => s,
        }
    }

    fn into_shared(self, floor: Arc<SeqFloor>) -> Arc<dyn Store> {
        match self {
            Opened::Sled(mut s) => {
                s.set_floor(floor);
                Arc::new(s)
            }
            Opened::Redb(mut s) => {
                s.set_floor(floor);
                Arc::new(s)
            }
        }
    }
}

/// Open an engine, a panic inside it reported as damage.
fn open_engine(engine: StoreEngine, dir: &Path, cache: u64) -> Result<Opened, StoreError> {
    let opened = std::panic::catch_unwind(|| match engine {
        StoreEngine::Sled => SledStore::open(dir, cache).map(Opened::Sled),
        StoreEngine::Redb => RedbStore::open(dir, cache).map(Opened::Redb),
    });
    opened.unwrap_or_else(|panic| {
        Err(StoreError::Damaged {
            path: dir.to_owned(),
            reason: panic_text(&*panic),
        })
    })
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the engine panicked".to_owned())
}

/// Whether an error means damaged files (salvage) rather than an
/// environment that must be fixed (fail the start).
pub fn is_damage(err: &StoreError) -> bool {
    fn io(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        )
    }
    match err {
        StoreError::Engine(e) => sled_damage(e),
        StoreError::Redb(e) => redb_damage(e),
        StoreError::Damaged { .. } => true,
        StoreError::Io(e) => io(e),
        StoreError::OtherEngine { .. }
        | StoreError::Codec(_)
        | StoreError::Unavailable
        | StoreError::NotReopenable
        | StoreError::Lost { .. } => false,
    }
}

fn redb_damage(e: &::redb::Error) -> bool {
    match e {
        ::redb::Error::Corrupted(_)
        | ::redb::Error::UpgradeRequired(_)
        | ::redb::Error::RepairAborted => true,
        ::redb::Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn sled_damage(e: &::sled::Error) -> bool {
    match e {
        // `Unsupported` at open: the config file no longer matches what
        // linegate always writes (a damaged `conf`).
        ::sled::Error::Corruption { .. }
        | ::sled::Error::Unsupported(_)
        | ::sled::Error::ReportableBug(_) => true,
        ::sled::Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        ::sled::Error::CollectionNotFound(_) => false,
    }
}

/// Whether the engine's files are absent or empty (it would start a new
/// store there).
fn is_fresh(engine: StoreEngine, dir: &Path) -> bool {
    let main = match engine {
        StoreEngine::Sled => dir.join("db"),
        StoreEngine::Redb => dir.join(redb::FILE_NAME),
    };
    match std::fs::metadata(main) {
        Ok(m) => m.len() == 0,
        // Only a file that is not there is missing; a file that cannot be
        // looked at is the engine's open to fail on (an environmental error).
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// [`open`], also returning the salvage's report when there was one. Without
/// a configured engine, the engine of the store found (after an interrupted
/// salvage is finished), else redb. `block` overrides the floor's
/// reservation block (tests).
pub(super) fn open_reporting(
    configured: Option<StoreEngine>,
    cache: u64,
    data_dir: &Path,
    block: Option<u64>,
) -> Result<(Arc<dyn Store>, Option<Report>), StoreError> {
    let (floor, found) = SeqFloor::lock(data_dir)?;
    #[cfg(test)]
    let floor = match block {
        Some(b) => floor.with_block(b),
        None => floor,
    };
    #[cfg(not(test))]
    let _ = block;
    let floor = Arc::new(floor);
    if let Found::Unreadable(why) = &found {
        tracing::warn!(file = %data_dir.join(floor::FILE_NAME).display(), why, "seq floor file unreadable; the store's own last seq is used");
    }
    finish_interrupted(data_dir)?;
    let store_dir = data_dir.join(STORE_DIR);
    // Only now: an interrupted salvage may just have put a store in place.
    let engine = super::engine_for(configured, &store_dir);
    // The other engine's store is no missing store: refuse it as the
    // engine would, before looking for this engine's files.
    super::refuse_other_engine(&store_dir, engine)?;

    let reason = if is_fresh(engine, &store_dir) && found != Found::Missing {
        format!(
            "the store files are missing or empty in {}, but the seq floor shows a store existed",
            store_dir.display()
        )
    } else {
        match open_engine(engine, &store_dir, cache) {
            Ok(opened) => {
                let last = opened.store().stats().last_seq;
                match found.mark().and_then(|m| m.clean) {
                    Some(clean) if last < clean => {
                        drop(opened);
                        format!(
                            "the store ends at seq {last} but held seq {clean} at the last clean \
                             stop: its newest part was lost"
                        )
                    }
                    _ => {
                        if found.mark().is_none_or(|m| m.reserved < last) {
                            floor.settle(last)?;
                        }
                        let store = opened.into_shared(Arc::clone(&floor));
                        finish_open(&store, &floor, &found, data_dir, engine)?;
                        return Ok((store, None));
                    }
                }
            }
            Err(err) if is_damage(&err) => err.to_string(),
            Err(err) => return Err(err),
        }
    };
    tracing::error!(dir = %store_dir.display(), reason, "store damaged; salvaging what can be read");
    let report = salvage(engine, cache, data_dir, &found, reason)?;
    tracing::error!(
        records = report.records,
        undecodable = report.undecodable,
        aside = report.aside,
        read_errors = report.read_errors,
        state = report.state,
        highest_seen = report.highest_seen,
        first_new = report.first_new,
        skipped = report.skipped(),
        moved_to = %report.moved_to.as_deref().map_or("-".into(), |p| p.display().to_string()),
        "store salvaged: {}",
        report.message()
    );
    let opened = open_engine(engine, &store_dir, cache)?;
    floor.settle(opened.store().stats().last_seq)?;
    let store = opened.into_shared(Arc::clone(&floor));
    finish_open(&store, &floor, &found, data_dir, engine)?;
    Ok((store, Some(report)))
}

/// Give an opened store its epoch, announcing a new one, and watch its
/// files from now on.
///
/// The epoch is the store's own (state [`epoch::STATE_KEY`]); a store
/// without one takes the seq floor's (a store rebuilt above the floor: seq
/// stayed monotonic, so the epoch can stay); with neither, a new epoch is
/// made, committed together with its `store-created` alarm (a crash before
/// that commit leaves no trace of it, and the next start makes another),
/// and only then written to the floor.
fn finish_open(
    store: &Arc<dyn Store>,
    floor: &SeqFloor,
    found: &Found,
    data_dir: &Path,
    engine: StoreEngine,
) -> Result<(), StoreError> {
    let stored = store.state(epoch::STATE_KEY)?.and_then(|bytes| {
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(str::parse::<Epoch>);
        parsed
            .map_err(|why| tracing::warn!(why, "the store's epoch is unreadable"))
            .ok()
    });
    let kept = floor.epoch();
    let epoch = match (stored, kept) {
        (Some(epoch), kept) => {
            if kept.is_some_and(|k| k != epoch) {
                tracing::warn!(%epoch, floor = %kept.map_or_else(String::new, |k| k.to_string()), "the seq floor names another epoch than the store; keeping the store's");
            }
            epoch
        }
        (None, Some(epoch)) => {
            store.commit(Batch {
                state: vec![(
                    epoch::STATE_KEY.to_owned(),
                    Some(epoch.to_string().into_bytes()),
                )],
                ..Batch::default()
            })?;
            epoch
        }
        (None, None) => {
            let epoch = Epoch::generate()?;
            let why = if store.stats().last_seq > 0 || matches!(found, Found::Mark(_)) {
                epoch::Why::Upgrade
            } else {
                epoch::Why::New
            };
            let alarm = epoch::created_alarm(epoch, why, data_dir);
            let committed = store.commit(Batch {
                records: vec![alarm],
                state: vec![(
                    epoch::STATE_KEY.to_owned(),
                    Some(epoch.to_string().into_bytes()),
                )],
                ..Batch::default()
            })?;
            tracing::warn!(
                %epoch,
                seq = committed.first().map_or(0, |r| r.seq),
                upgrade = why == epoch::Why::Upgrade,
                "new store epoch (store-created alarm)"
            );
            epoch
        }
    };
    if floor.epoch() != Some(epoch) {
        floor.set_epoch(epoch)?;
    }
    let store_dir = data_dir.join(STORE_DIR);
    let main = match engine {
        StoreEngine::Sled => store_dir.join("db"),
        StoreEngine::Redb => store_dir.join(redb::FILE_NAME),
    };
    floor.unwatch();
    floor.watch(&store_dir)?;
    floor.watch(&main)?;
    Ok(())
}

/// Complete or discard what an interrupted salvage left behind.
fn finish_interrupted(data_dir: &Path) -> Result<(), StoreError> {
    for leftover in [BUILDING, SCRATCH] {
        let dir = data_dir.join(leftover);
        if dir.try_exists()? {
            tracing::warn!(dir = %dir.display(), "removing what an interrupted salvage left");
            std::fs::remove_dir_all(&dir)?;
            sync_dir(data_dir)?;
        }
    }
    let mut built = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let name = entry?.file_name();
        if let Some(time) = name.to_str().and_then(|n| n.strip_prefix(BUILT_PREFIX)) {
            built.push(time.to_owned());
        }
    }
    built.sort();
    // Only one can exist (each salvage is finished before the next), but
    // if several did the newest is the one to use.
    if let Some(time) = built.pop() {
        tracing::warn!(time, "putting an interrupted salvage's store in place");
        put_in_place(data_dir, &time)?;
        for stale in built {
            std::fs::remove_dir_all(data_dir.join(format!("{BUILT_PREFIX}{stale}")))?;
        }
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// Step 3: the damaged store aside, the salvaged one in its place.
fn put_in_place(data_dir: &Path, time: &str) -> Result<Option<PathBuf>, StoreError> {
    let store_dir = data_dir.join(STORE_DIR);
    let moved_to = data_dir.join(format!("{DAMAGED_PREFIX}{time}"));
    let moved = if store_dir.try_exists()? {
        std::fs::rename(&store_dir, &moved_to)?;
        sync_dir(data_dir)?;
        crash_point("moved");
        Some(moved_to)
    } else {
        None
    };
    std::fs::rename(data_dir.join(format!("{BUILT_PREFIX}{time}")), &store_dir)?;
    sync_dir(data_dir)?;
    prune_damaged(data_dir)?;
    Ok(moved)
}

/// Keep the newest [`KEEP_DAMAGED`] damaged copies.
fn prune_damaged(data_dir: &Path) -> Result<(), StoreError> {
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let name = entry?.file_name();
        if let Some(name) = name.to_str().filter(|n| n.starts_with(DAMAGED_PREFIX)) {
            kept.push(name.to_owned());
        }
    }
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP_DAMAGED);
    for old in &kept[..excess] {
        tracing::warn!(dir = old, "deleting the oldest damaged store copy");
        std::fs::remove_dir_all(data_dir.join(old))?;
    }
    if excess > 0 {
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// A time for the directory names, unused by any of them.
fn fresh_time(data_dir: &Path) -> String {
    let base = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    (1..)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|t| {
            !data_dir.join(format!("{DAMAGED_PREFIX}{t}")).exists()
                && !data_dir.join(format!("{BUILT_PREFIX}{t}")).exists()
        })
        .unwrap_or(base)
}

/// Tests: die here, as a power cut or `kill -9` would, when
/// `LINEGATE_SALVAGE_CRASH_AT` names this point.
fn crash_point(name: &str) {
    #[cfg(test)]
    if std::env::var("LINEGATE_SALVAGE_CRASH_AT").is_ok_and(|at| at == name) {
        std::process::abort();
    }
    #[cfg(not(test))]
    let _ = name;
}

/// Copy a directory tree (files and directories; nothing else is ours).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// fsync every file and directory of a tree.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Build a new store from what can be read of the damaged one and put it in
/// place (steps 1 to 3 of the module doc).
fn salvage(
    engine: StoreEngine,
    cache: u64,
    data_dir: &Path,
    found: &Found,
    reason: String,
) -> Result<Report, StoreError> {
    let store_dir = data_dir.join(STORE_DIR);
    let scratch = data_dir.join(SCRATCH);
    let building = data_dir.join(BUILDING);
    let time = fresh_time(data_dir);

    let target = match open_engine(engine, &building, cache)? {
        Opened::Sled(s) => Target::Sled(s),
        Opened::Redb(s) => Target::Redb(s),
    };
    let mut import = Importer::new(&target);
    let clean = found.mark().and_then(|m| m.clean);
    let had_store = store_dir.try_exists()?;
    let read = if had_store {
        match engine {
            StoreEngine::Sled => read_sled(&store_dir, &scratch, cache, clean, &mut import)?,
            StoreEngine::Redb => read_redb(&store_dir, &scratch, &mut import)?,
        }
    } else {
        Read {
            how: "nothing to read".into(),
            ..Read::default()
        }
    };
    crash_point("read");
    if scratch.try_exists()? {
        std::fs::remove_dir_all(&scratch)?;
    }

    let highest_seen = import.highest.max(
        Some(read.last_seq)
            .filter(|s| *s <= MAX_SANE_SEQ)
            .unwrap_or(0),
    );
    let floor_mark = found.mark().map(|m| m.reserved);
    let continue_after = match floor_mark {
        Some(reserved) => reserved.max(highest_seen),
        None => highest_seen.saturating_add(floor::BLOCK),
    };
    // What was read is older than the store at its last clean stop (it lost
    // its newest part and opened as an older state): its lot state is stale.
    let stale = clean.is_some_and(|c| highest_seen < c);
    let numbering_blocked = if read.verified && read.errors == 0 && !stale {
        Vec::new()
    } else {
        import.block_numbering()?
    };
    // Each cause once, and not again when the reason says it already.
    let mut why: Vec<String> = Vec::new();
    for w in read.why {
        if !reason.contains(w.as_str()) && !why.contains(&w) {
            why.push(w);
        }
    }
    let how = if why.is_empty() {
        read.how
    } else {
        format!("{}: {}", read.how, why.join("; "))
    };
    let mut report = Report {
        reason,
        how,
        records: import.records,
        undecodable: import.undecodable,
        aside: import.aside,
        state: import.state,
        read_errors: read.errors,
        highest_seen,
        floor: floor_mark,
        first_new: continue_after.saturating_add(1),
        moved_to: had_store.then(|| data_dir.join(format!("{DAMAGED_PREFIX}{time}"))),
        numbering_blocked,
    };
    // Its message is not cut to `MAX_MESSAGE`: it names where the damaged
    // copy is, and `data_dir`'s length is bounded by the config.
    let alarm = Record {
        seq: report.first_new,
        ..Record::gateway(
            crate::clock::now_ms(),
            Body::Alarm {
                event: AlarmEvent::StoreDamaged,
                message: Some(report.message()),
                // The skipped seqs as a range, as `records-dropped` gives its
                // own: a gap the MES can match to this report.
                store: (report.skipped() > 0).then(|| {
                    Box::new(StoreFigures {
                        first_seq: Some(report.highest_seen + 1),
                        last_seq: Some(report.first_new - 1),
                        count: Some(report.skipped()),
                        ..StoreFigures::default()
                    })
                }),
            },
        )
    };
    import
        .pending
        .records
        .push((alarm.seq, codec::encode(&alarm)?));
    import.pending.last_seq = Some(alarm.seq);
    import.flush()?;
    target.close()?;
    drop(target);
    sync_tree(&building)?;
    sync_dir(data_dir)?;

    let built = data_dir.join(format!("{BUILT_PREFIX}{time}"));
    std::fs::rename(&building, &built)?;
    sync_dir(data_dir)?;
    crash_point("built");
    report.moved_to = put_in_place(data_dir, &time)?;
    Ok(report)
}

// ------------------------------------------------------------ the new store

/// Entries written to the new store as they are (records keep their seq).
#[derive(Debug, Default)]
struct Import {
    records: Vec<(u64, Vec<u8>)>,
    aside: Vec<(u64, Vec<u8>)>,
    state: Vec<(String, Vec<u8>)>,
    last_seq: Option<u64>,
}

impl Import {
    fn len(&self) -> usize {
        self.records.len() + self.aside.len() + self.state.len()
    }
}

/// The store a salvage builds.
enum Target {
    Sled(SledStore),
    Redb(RedbStore),
}

impl Target {
    /// Write `import` durably.
    fn write(&self, import: &Import) -> Result<(), StoreError> {
        match self {
            Target::Sled(store) => {
                let mut batch = ::sled::Batch::default();
                for (seq, value) in &import.records {
                    batch.insert(&sled::record_key(sled::RECORD, *seq), value.as_slice());
                }
                for (seq, value) in &import.aside {
                    batch.insert(&sled::record_key(sled::QUARANTINE, *seq), value.as_slice());
                }
                for (key, value) in &import.state {
                    batch.insert(sled::state_key(key), value.as_slice());
                }
                if let Some(last) = import.last_seq {
                    batch.insert(sled::META_SEQ, &last.to_be_bytes());
                }
                store.db.apply_batch(batch)?;
                store.sync()
            }
            Target::Redb(store) => {
                let mut txn = store.db.begin_write()?;
                txn.set_durability(::redb::Durability::Immediate)?;
                {
                    let mut records = txn.open_table(redb::RECORDS)?;
                    for (seq, value) in &import.records {
                        records.insert(*seq, value.as_slice())?;
                    }
                    let mut aside = txn.open_table(redb::ASIDE)?;
                    for (seq, value) in &import.aside {
                        aside.insert(*seq, value.as_slice())?;
                    }
                    let mut state = txn.open_table(redb::STATE)?;
                    for (key, value) in &import.state {
                        state.insert(key.as_str(), value.as_slice())?;
                    }
                    if let Some(last) = import.last_seq {
                        let mut meta = txn.open_table(redb::META)?;
                        meta.insert(redb::LAST_SEQ, last)?;
                    }
                }
                txn.commit()?;
                Ok(())
            }
        }
    }

    fn close(&self) -> Result<(), StoreError> {
        match self {
            Target::Sled(s) => s.close(),
            Target::Redb(s) => s.close(),
        }
    }
}

/// What a reader hands the importer.
enum Entry<'a> {
    Record(u64, &'a [u8]),
    Aside(u64, &'a [u8]),
    State(&'a str, &'a [u8]),
}

/// Writes what the readers find into the new store, in batches, and counts.
struct Importer<'a> {
    target: &'a Target,
    pending: Import,
    records: u64,
    undecodable: u64,
    aside: u64,
    state: u64,
    highest: u64,
    /// Stations named by records and state keys, and those with lot state.
    stations: BTreeSet<String>,
    lots: BTreeSet<String>,
}

const LOT_PREFIX: &str = "lot/";

impl<'a> Importer<'a> {
    fn new(target: &'a Target) -> Self {
        Importer {
            target,
            pending: Import::default(),
            records: 0,
            undecodable: 0,
            aside: 0,
            state: 0,
            highest: 0,
            stations: BTreeSet::new(),
            lots: BTreeSet::new(),
        }
    }

    fn add(&mut self, entry: Entry<'_>) -> Result<(), StoreError> {
        match entry {
            Entry::Record(seq, bytes) => {
                if seq <= MAX_SANE_SEQ {
                    self.highest = self.highest.max(seq);
                }
                // A record is salvaged only if it decodes and carries the
                // seq it is stored under; anything else is kept aside.
                match codec::decode(bytes) {
                    Ok(record) if record.seq == seq && seq <= MAX_SANE_SEQ => {
                        self.records += 1;
                        if let Some(station) = record.station {
                            self.stations.insert(station);
                        }
                        self.pending.records.push((seq, bytes.to_vec()));
                    }
                    _ => {
                        self.undecodable += 1;
                        self.pending.aside.push((seq, bytes.to_vec()));
                    }
                }
            }
            Entry::Aside(seq, bytes) => {
                if seq <= MAX_SANE_SEQ {
                    self.highest = self.highest.max(seq);
                }
                self.aside += 1;
                self.pending.aside.push((seq, bytes.to_vec()));
            }
            Entry::State(key, bytes) => {
                self.state += 1;
                let station = ["ctx/", LOT_PREFIX, "ser/"]
                    .iter()
                    .find_map(|p| key.strip_prefix(p))
                    .and_then(|rest| rest.split('/').next())
                    .filter(|s| !s.is_empty());
                if let Some(station) = station {
                    self.stations.insert(station.to_owned());
                }
                if let Some(station) = key.strip_prefix(LOT_PREFIX) {
                    self.lots.insert(station.to_owned());
                }
                self.pending.state.push((key.to_owned(), bytes.to_vec()));
            }
        }
        if self.pending.len() >= IMPORT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let import = std::mem::take(&mut self.pending);
        if import.len() > 0 || import.last_seq.is_some() {
            self.target.write(&import)?;
        }
        Ok(())
    }

    /// The lot state read could be stale or altered (an unverified read, or
    /// parts unreadable): replace every station's lot state with a value
    /// that does not decode, so each station known from records or state
    /// refuses generated lot numbers rather than repeat one. Returns those
    /// stations.
    fn block_numbering(&mut self) -> Result<Vec<String>, StoreError> {
        self.flush()?;
        let stations: Vec<String> = self.stations.iter().cloned().collect();
        for station in &stations {
            let key = format!("{LOT_PREFIX}{station}");
            let value = if self.lots.contains(station) {
                // Keep what was read after the marker, for forensics.
                let old = match self.target {
                    Target::Sled(s) => s.state(&key)?,
                    Target::Redb(s) => s.state(&key)?,
                };
                [UNVERIFIED_LOT, old.as_deref().unwrap_or_default()].concat()
            } else {
                UNVERIFIED_LOT.to_vec()
            };
            self.pending.state.push((key, value));
        }
        self.flush()?;
        Ok(stations)
    }
}

// ------------------------------------------------------------ the readers

/// How a damaged store was read.
#[derive(Debug, Default)]
struct Read {
    how: String,
    /// Why the ways that failed did (each engine error or panic once).
    why: Vec<String>,
    /// Everything read was verified by the engine (checksums), and is its
    /// latest state.
    verified: bool,
    errors: u64,
    /// Its `last_seq`, when readable.
    last_seq: u64,
}

/// A reader's scan stopped: reading failed (counted, the scan goes on from
/// elsewhere), or writing the new store failed (the salvage fails).
enum Stop {
    Read,
    Write(StoreError),
}

/// Run one step of reading a damaged engine, a panic counted as a failed
/// read.
fn guarded<T>(step: impl FnOnce() -> Result<T, Stop>) -> Result<T, Stop> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or(Err(Stop::Read))
}

/// Open sled in `dir`: `Ok(None)` (with the reason pushed to `why`) when it
/// refuses the files as damaged or panics.
fn open_sled(dir: &Path, cache: u64, why: &mut Vec<String>) -> Result<Option<SledDb>, StoreError> {
    let opened = std::panic::catch_unwind(|| SledDb::open(dir, cache));
    match opened {
        Ok(Ok(db)) => Ok(Some(db)),
        Ok(Err(err)) if !sled_damage(&err) => Err(err.into()),
        Ok(Err(err)) => {
            why.push(err.to_string());
            Ok(None)
        }
        Err(panic) => {
            why.push(panic_text(&*panic));
            Ok(None)
        }
    }
}

/// The highest seq an opened sled store knows (its `last_seq`, its newest
/// record); 0 when unreadable.
fn sled_last_seq(db: &::sled::Db) -> u64 {
    let meta = guarded(|| db.get(sled::META_SEQ).map_err(|_| Stop::Read))
        .ok()
        .flatten()
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let newest = guarded(|| {
        db.scan_prefix([sled::RECORD])
            .next_back()
            .transpose()
            .map_err(|_| Stop::Read)
    })
    .ok()
    .flatten()
    .and_then(|(k, _)| sled::seq_of(&k))
    .unwrap_or(0);
    meta.max(newest)
}

/// A fresh copy of the damaged store to read.
fn fresh_scratch(store_dir: &Path, scratch: &Path) -> std::io::Result<()> {
    if scratch.try_exists()? {
        std::fs::remove_dir_all(scratch)?;
    }
    copy_tree(store_dir, scratch)
}

/// A value whose drop may panic (an engine closing a damaged file): the
/// panic is caught and the value is gone either way.
struct DropGuarded<T>(Option<T>);

impl<T> std::ops::Deref for DropGuarded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Some until dropped.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<T> Drop for DropGuarded<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(value)));
            if dropped.is_err() {
                tracing::warn!("the damaged store's engine panicked while closing it");
            }
        }
    }
}

/// Read a damaged sled store into `import`, through a scratch copy (sled
/// writes while it recovers). Three ways to open it, each on a fresh copy:
/// as it was; without its config file (sled writes a new one); without its
/// snapshot files (sled replays its log, up to the first damaged entry).
/// The first that opens is used, unless it ends before `clean` (the seq
/// the store held at the last clean stop: it opened as an older state):
/// then the one that reaches furthest is.
fn read_sled(
    store_dir: &Path,
    scratch: &Path,
    cache: u64,
    clean: Option<u64>,
    import: &mut Importer<'_>,
) -> Result<Read, StoreError> {
    type Prepare = fn(&Path) -> std::io::Result<()>;
    let attempts: [(&str, Prepare, bool); 3] = [
        ("sled opened it as it was", |_| Ok(()), true),
        (
            "sled opened it after its config file was set aside",
            |dir| remove_if_present(&dir.join("conf")),
            true,
        ),
        (
            "sled replayed its log without the snapshot files, up to the first damaged entry",
            |dir| {
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    if entry.file_name().to_string_lossy().starts_with("snap.") {
                        std::fs::remove_file(entry.path())?;
                    }
                }
                Ok(())
            },
            false,
        ),
    ];
    let prepare = |upto: usize| -> Result<(), StoreError> {
        fresh_scratch(store_dir, scratch)?;
        for (_, prepare, _) in &attempts[..=upto] {
            prepare(scratch)?;
        }
        Ok(())
    };
    let mut why = Vec::new();
    let mut best: Option<(usize, u64)> = None;
    for i in 0..attempts.len() {
        prepare(i)?;
        let Some(db) = open_sled(scratch, cache, &mut why)? else {
            continue;
        };
        let last = sled_last_seq(&db);
        drop(db);
        if best.is_none_or(|(_, b)| last > b) {
            best = Some((i, last));
        }
        if clean.is_none_or(|c| last >= c) {
            break;
        }
    }
    let Some((chosen, _)) = best else {
        return Ok(Read {
            how: "sled could not open it".into(),
            why,
            errors: 1,
            ..Read::default()
        });
    };
    prepare(chosen)?;
    let (how, _, verified) = attempts[chosen];
    let Some(db) = open_sled(scratch, cache, &mut why)? else {
        return Ok(Read {
            how: "sled could not open it again".into(),
            why,
            errors: 1,
            ..Read::default()
        });
    };
    let mut read = Read {
        how: how.to_owned(),
        verified,
        ..Read::default()
    };
    if let Ok(Some(v)) = guarded(|| db.get(sled::META_SEQ).map_err(|_| Stop::Read)) {
        read.last_seq = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
    }
    let mut emit = |key: &[u8], value: &[u8]| -> Result<(), Stop> {
        let entry = match key.first() {
            Some(&sled::RECORD) => sled::seq_of(key).map(|seq| Entry::Record(seq, value)),
            Some(&sled::QUARANTINE) => sled::seq_of(key).map(|seq| Entry::Aside(seq, value)),
            _ => key
                .strip_prefix(sled::STATE)
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(|k| Entry::State(k, value)),
        };
        match entry {
            Some(entry) => import.add(entry).map_err(Stop::Write),
            None => Ok(()),
        }
    };
    // Forward until an error, then backward from the end down to the
    // last key read.
    let mut last: Option<::sled::IVec> = None;
    let forward = guarded(|| {
        for item in db.iter() {
            let (k, v) = item.map_err(|_| Stop::Read)?;
            emit(&k, &v)?;
            last = Some(k);
        }
        Ok(())
    });
    match forward {
        Ok(()) => {}
        Err(Stop::Write(err)) => return Err(err),
        Err(Stop::Read) => {
            read.errors += 1;
            let backward = guarded(|| {
                for item in db.iter().rev() {
                    let (k, v) = item.map_err(|_| Stop::Read)?;
                    if last.as_ref().is_some_and(|l| k <= *l) {
                        break;
                    }
                    emit(&k, &v)?;
                }
                Ok(())
            });
            match backward {
                Ok(()) => {}
                Err(Stop::Write(err)) => return Err(err),
                Err(Stop::Read) => read.errors += 1,
            }
        }
    }
    Ok(read)
}

/// The length redb expects, from its "File truncated below stored layout:
/// file_len=…, layout_len=…" error.
fn layout_len(message: &str) -> Option<u64> {
    let at = message.find("layout_len=")? + "layout_len=".len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The offset of redb's "god byte" in its header (after the 9-byte magic
/// number): bit 0 names the primary commit slot, bit 1 asks for recovery.
const REDB_GOD_BYTE: u64 = 9;

/// Make the other commit slot (the commit before the last) the primary one,
/// and ask redb to verify it as after a crash. `false` when the file is too
/// short to have a header.
fn redb_use_previous_commit(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    if file.metadata()?.len() <= REDB_GOD_BYTE {
        return Ok(false);
    }
    let mut god = [0u8; 1];
    file.seek(SeekFrom::Start(REDB_GOD_BYTE))?;
    file.read_exact(&mut god)?;
    file.seek(SeekFrom::Start(REDB_GOD_BYTE))?;
    file.write_all(&[(god[0] ^ 1) | 2])?;
    Ok(true)
}

/// Read a damaged redb store into `import`, through a scratch copy (redb
/// writes while it checks and repairs). Each way to open it gets a fresh
/// copy; the first that opens is used: with the integrity check; its
/// previous commit (the other commit slot) with the check; without the
/// check; its previous commit without the check. A file shorter than the
/// layout redb recorded (a cut tail) is zero-filled back to that length
/// first: redb refuses it otherwise, even without the check.
fn read_redb(
    store_dir: &Path,
    scratch: &Path,
    import: &mut Importer<'_>,
) -> Result<Read, StoreError> {
    use ::redb::{ReadableDatabase as _, ReadableTable as _};

    if !store_dir.join(redb::FILE_NAME).try_exists()? {
        return Ok(Read {
            how: "no database file".into(),
            ..Read::default()
        });
    }
    let path = scratch.join(redb::FILE_NAME);
    let mut why: Vec<String> = Vec::new();
    for (previous, check, how) in [
        (false, true, "redb opened it with its integrity check"),
        (
            true,
            true,
            "redb opened its previous commit (the other commit slot) with its integrity check",
        ),
        (
            false,
            false,
            "redb opened it without its integrity check (content unverified)",
        ),
        (
            true,
            false,
            "redb opened its previous commit without its integrity check (content unverified)",
        ),
    ] {
        fresh_scratch(store_dir, scratch)?;
        let padded = match why.iter().find_map(|w| layout_len(w)) {
            Some(len) => {
                let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                let short = file.metadata()?.len() < len;
                if short {
                    file.set_len(len)?;
                }
                short
            }
            None => false,
        };
        if previous && !redb_use_previous_commit(&path)? {
            continue;
        }
        let opened = std::panic::catch_unwind(|| {
            ::redb::Builder::new()
                .set_check_integrity_on_open(check)
                .open(&path)
        });
        let db = match opened {
            // Closing a damaged file can panic too (redb writes its
            // allocator state at close): the scratch copy is thrown away.
            Ok(Ok(db)) => DropGuarded(Some(db)),
            Ok(Err(err)) => {
                let err = ::redb::Error::from(err);
                if !redb_damage(&err) {
                    return Err(StoreError::Redb(err));
                }
                why.push(err.to_string());
                continue;
            }
            Err(panic) => {
                why.push(panic_text(&*panic));
                continue;
            }
        };
        let how = if padded {
            format!("{how}, its cut tail zero-filled")
        } else {
            how.to_owned()
        };
        let mut read = Read {
            how,
            verified: check,
            ..Read::default()
        };
        let Ok(txn) = guarded(|| db.begin_read().map_err(|_| Stop::Read)) else {
            read.errors += 1;
            return Ok(read);
        };
        if let Ok(Some(last)) = guarded(|| {
            let meta = txn.open_table(redb::META).map_err(|_| Stop::Read)?;
            let last = meta.get(redb::LAST_SEQ).map_err(|_| Stop::Read)?;
            Ok(last.map(|v| v.value()))
        }) {
            read.last_seq = last;
        }
        for (table, aside) in [(redb::RECORDS, false), (redb::ASIDE, true)] {
            let Ok(t) = guarded(|| txn.open_table(table).map_err(|_| Stop::Read)) else {
                read.errors += 1;
                continue;
            };
            let mut emit = |seq: u64, value: &[u8]| {
                import
                    .add(if aside {
                        Entry::Aside(seq, value)
                    } else {
                        Entry::Record(seq, value)
                    })
                    .map_err(Stop::Write)
            };
            let mut last: Option<u64> = None;
            let forward = guarded(|| {
                for item in t.iter().map_err(|_| Stop::Read)? {
                    let (k, v) = item.map_err(|_| Stop::Read)?;
                    emit(k.value(), v.value())?;
                    last = Some(k.value());
                }
                Ok(())
            });
            match forward {
                Ok(()) => continue,
                Err(Stop::Write(err)) => return Err(err),
                Err(Stop::Read) => read.errors += 1,
            }
            let from = last.map_or(0, |l| l.saturating_add(1));
            let backward = guarded(|| {
                for item in t.range(from..).map_err(|_| Stop::Read)?.rev() {
                    let (k, v) = item.map_err(|_| Stop::Read)?;
                    emit(k.value(), v.value())?;
                }
                Ok(())
            });
            match backward {
                Ok(()) => {}
                Err(Stop::Write(err)) => return Err(err),
                Err(Stop::Read) => read.errors += 1,
            }
        }
        let Ok(t) = guarded(|| txn.open_table(redb::STATE).map_err(|_| Stop::Read)) else {
            read.errors += 1;
            return Ok(read);
        };
        let mut last: Option<String> = None;
        let forward = guarded(|| {
            for item in t.iter().map_err(|_| Stop::Read)? {
                let (k, v) = item.map_err(|_| Stop::Read)?;
                import
                    .add(Entry::State(k.value(), v.value()))
                    .map_err(Stop::Write)?;
                last = Some(k.value().to_owned());
            }
            Ok(())
        });
        match forward {
            Ok(()) => {}
            Err(Stop::Write(err)) => return Err(err),
            Err(Stop::Read) => {
                read.errors += 1;
                let backward = guarded(|| {
                    for item in t.iter().map_err(|_| Stop::Read)?.rev() {
                        let (k, v) = item.map_err(|_| Stop::Read)?;
                        if last.as_deref().is_some_and(|l| k.value() <= l) {
                            break;
                        }
                        import
                            .add(Entry::State(k.value(), v.value()))
                            .map_err(Stop::Write)?;
                    }
                    Ok(())
                });
                match backward {
                    Ok(()) => {}
                    Err(Stop::Write(err)) => return Err(err),
                    Err(Stop::Read) => read.errors += 1,
                }
            }
        }
        return Ok(read);
    }
    Ok(Read {
        how: "redb could not open it".into(),
        why,
        errors: 1,
        ..Read::default()
    })
}

#[cfg(test)]
mod drop_guard_tests {
    use super::DropGuarded;

    /// Seen once in the end-to-end suite: redb panicked closing a damaged
    /// scratch copy (writing its allocator state), which ended the start.
    #[test]
    fn a_panic_while_dropping_is_caught() {
        struct PanicsOnDrop(u8);
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("closing a damaged file");
            }
        }
        let dropped = std::panic::catch_unwind(|| {
            let guarded = DropGuarded(Some(PanicsOnDrop(7)));
            assert_eq!(guarded.0.as_ref().map(|p| p.0), Some(7));
            assert_eq!((*guarded).0, 7);
        });
        assert!(dropped.is_ok(), "the panic escaped the drop");
    }
}
