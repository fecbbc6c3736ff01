//! A store that can be closed and opened again in place, and the free space
//! of the filesystem it lives on.
//!
//! After a commit fails because the disk is full, the engine must not be
//! written again: sled keeps the error and fails every later write, redb
//! refuses every write transaction (`PreviousIo`) until the file is
//! reopened, and after a failed write or fsync the kernel may report a later
//! sync as successful without the data being on disk ("fsyncgate").
//! [`ReopenableStore::reopen`] therefore does what a restart does, without
//! ending the process: it drops the engine, asks the kernel to drop the
//! store files' cached pages (so the reopened engine reads what the disk
//! holds, not pages whose writeback may have failed), and opens the
//! engine again. Its recovery decides what survived, exactly as after a
//! crash; the open makes that durable before anything counts as committed.
//!
//! While the engine is closed, every call fails with
//! [`StoreError::Unavailable`] and `stats` returns the last figures seen.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::{Batch, DropPlan, Epoch, Store, StoreError, StoreStats, Usage};
use crate::config::StoreConfig;
use crate::record::Record;

/// Free space of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write (`f_bavail`).
    pub available: u64,
    /// Size of the filesystem.
    pub total: u64,
}

/// The free space of the filesystem holding `path` (statvfs(3)).
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let unit = st.fragment_size() as u64;
    Ok(DiskSpace {
        available: (st.blocks_available() as u64).saturating_mul(unit),
        total: (st.blocks() as u64).saturating_mul(unit),
    })
}

/// Ask the kernel to drop the cached pages of every file directly in `dir`
/// (best effort: advice, not a command; dirty pages stay until written).
fn drop_cached_pages(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Ok(file) = File::open(entry.path()) {
            let _ = nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }
}

/// The configured engine, behind a lock that lets it be reopened in place.
pub struct ReopenableStore {
    cfg: StoreConfig,
    /// The data directory (`store::open` takes it: the seq floor lives there).
    data_dir: PathBuf,
    /// The store directory in it.
    dir: PathBuf,
    engine: RwLock<Option<Arc<dyn Store>>>,
    /// The engine's figures when last asked, for `stats` while it is closed.
    last: Mutex<StoreStats>,
    /// A call failed with a full disk since the engine was last opened.
    disk_full: AtomicBool,
    /// The epoch of the store first opened: a reopen must find the same.
    epoch: Option<Epoch>,
}

impl ReopenableStore {
    /// Open the engine `cfg` names in `data_dir/store` (salvaged first if
    /// it is damaged, as at every open: `store::open`).
    pub fn open(cfg: &StoreConfig, data_dir: &Path) -> Result<Self, StoreError> {
        let engine = super::open(cfg, data_dir)?;
        let last = engine.stats();
        Ok(ReopenableStore {
            epoch: engine.epoch(),
            cfg: cfg.clone(),
            data_dir: data_dir.to_owned(),
            dir: data_dir.join(super::STORE_DIR),
            engine: RwLock::new(Some(engine)),
            last: Mutex::new(last),
            disk_full: AtomicBool::new(false),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.engine.read().unwrap_or_else(PoisonError::into_inner);
        let Some(engine) = guard.as_ref() else {
            return Err(StoreError::Unavailable);
        };
        let r = f(engine.as_ref());
        if let Err(err) = &r
            && err.is_disk_full()
        {
            self.disk_full.store(true, Ordering::Release);
        }
        r
    }

    fn last(&self) -> std::sync::MutexGuard<'_, StoreStats> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for ReopenableStore {
    fn commit(&self, batch: Batch) -> Result<Vec<Record>, StoreError> {
        self.with(|e| e.commit(batch))
    }

    fn read_range(&self, after: u64, until: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        self.with(|e| e.read_range(after, until, max))
    }

    fn set_aside(&self, seq: u64) -> Result<(), StoreError> {
        self.with(|e| e.set_aside(seq))
    }

    fn ack(&self, seq: u64) -> Result<(), StoreError> {
        self.with(|e| e.ack(seq))
    }

    fn stats(&self) -> StoreStats {
        match self.with(|e| Ok(e.stats())) {
            Ok(stats) => {
                *self.last() = stats;
                stats
            }
            Err(_) => *self.last(),
        }
    }

    fn state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|e| e.state(key))
    }

    fn state_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with(|e| e.state_prefix(prefix))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.with(|e| e.sync())
    }

    fn sync_acks(&self) -> Result<bool, StoreError> {
        self.with(|e| e.sync_acks())
    }

    /// A closed engine has nothing to make durable: everything committed
    /// before it was closed is on disk.
    fn close(&self) -> Result<(), StoreError> {
        match self.with(|e| e.close()) {
            Err(StoreError::Unavailable) => Ok(()),
            r => r,
        }
    }

    fn usage(&self) -> Usage {
        match self.with(|e| Ok(e.usage())) {
            Ok(usage) => usage,
            Err(_) => {
                let s = *self.last();
                Usage {
                    depth: s.depth,
                    bytes: s.bytes,
                    last_seq: s.last_seq,
                }
            }
        }
    }

    fn plan_drop(&self, bytes: u64, skip: &BTreeSet<u64>) -> Result<DropPlan, StoreError> {
        self.with(|e| e.plan_drop(bytes, skip))
    }

    /// Close the engine, drop its cached pages, open it again. If the open
    /// fails the store stays closed ([`StoreError::Unavailable`]) and a
    /// later `reopen` tries again.
    fn reopen(&self) -> Result<(), StoreError> {
        // Taken out under the lock, dropped and reopened outside it: calls
        // meanwhile fail at once with `Unavailable` instead of waiting.
        let old = self
            .engine
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            *self.last() = old.stats();
            // The last reference: the engine closes its files (and releases
            // its lock) here.
            drop(old);
        }
        drop_cached_pages(&self.dir);
        let engine = super::open(&self.cfg, &self.data_dir)?;
        if engine.epoch() != self.epoch {
            // Another store took this one's place: this process must not
            // go on as if it were the same (the gateway stops, exit 74).
            let show = |e: Option<Epoch>| e.map_or("none".to_owned(), |e| e.to_string());
            return Err(StoreError::Lost {
                what: format!(
                    "the store reopened in {} has epoch {}, not {}",
                    self.dir.display(),
                    show(engine.epoch()),
                    show(self.epoch)
                ),
            });
        }
        *self.last() = engine.stats();
        self.disk_full.store(false, Ordering::Release);
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = Some(engine);
        tracing::info!(dir = %self.dir.display(), "store reopened");
        Ok(())
    }

    fn disk_full_seen(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// While the engine is closed there is nothing to check: the reopen
    /// checks the epoch it finds.
    fn check_place(&self) -> Result<(), StoreError> {
        match self.with(|e| e.check_place()) {
            Err(StoreError::Unavailable) => Ok(()),
            r => r,
        }
    }
}
