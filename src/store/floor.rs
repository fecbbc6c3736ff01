//! The seq floor: `<data_dir>/seq.floor`, a small file that survives damage
//! to the store and says how far `seq` may have gone.
//!
//! It is a hi-lo reservation. Before the store hands out a `seq` above the
//! reserved mark, the mark is moved up by a block ([`BLOCK`]) and written
//! durably (temporary file, fsync, rename, fsync of the directory): one small
//! synced write per block of seqs, not per commit. Every `seq` ever committed
//! is therefore at or below the mark on disk, whatever happens to the store.
//! A normal start continues after the store's own `last_seq` (no gap); only a
//! store found damaged or missing continues after the mark, so a `seq` the
//! MES may already hold is never given to another record.
//!
//! A clean stop also writes `clean`, the store's `last_seq` at that moment.
//! A store that opens without error but ends before it has lost its tail
//! without saying so (an engine that silently rolls back to an older
//! state): that is treated as damage too.
//!
//! It also keeps the store's epoch (`store::epoch`): a store rebuilt above
//! the floor keeps the epoch, since its seqs stay monotonic.
//!
//! The file also carries the data directory's lock: [`SeqFloor::lock`] takes
//! an exclusive `flock` on the directory before anything in it is read or
//! repaired, so a second gateway on the same data directory fails at start
//! without touching a salvage in progress.
//!
//! And it watches the place: [`SeqFloor::check_place`] finds the data
//! directory (or the store's files, or this file) deleted, moved or
//! replaced since the store was opened, by comparing the device and inode
//! of each path with what was there at open (the data directory: the one
//! locked). Nothing is written into a data directory that is no longer the
//! one locked.
//!
//! Format (text, one `key value` per line, the last line a FNV-1a checksum
//! of the lines before it; version 1 had no `epoch` line):
//!
//! ```text
//! linegate-seq-floor 2
//! epoch 6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60
//! reserved 200000
//! clean 123456
//! check 9f0c3a1b22d4e5f6
//! ```

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::epoch::Epoch;

/// The file, in the data directory.
pub const FILE_NAME: &str = "seq.floor";
const TMP_NAME: &str = "seq.floor.tmp";
const HEADER_V1: &str = "linegate-seq-floor 1";
const HEADER: &str = "linegate-seq-floor 2";

/// Seqs reserved per write of the file. At the highest rates measured
/// (tens of thousands of records a second) that is one small synced write
/// every few seconds; at a line's usual rate, one every few hours. It is
/// also the largest gap a damaged store leaves in `seq`.
pub const BLOCK: u64 = 100_000;

/// What the file says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// No `seq` above this was ever handed out.
    pub reserved: u64,
    /// The store's `last_seq` at the last clean stop.
    pub clean: Option<u64>,
    /// The store's epoch (none in a version 1 file, or before it has one).
    pub epoch: Option<Epoch>,
}

/// The file as found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No file: a first start, or it was deleted.
    Missing,
    /// A file that does not parse or whose checksum fails.
    Unreadable(String),
    Mark(Mark),
}

impl Found {
    pub fn mark(&self) -> Option<Mark> {
        match self {
            Found::Mark(m) => Some(*m),
            Found::Missing | Found::Unreadable(_) => None,
        }
    }
}

/// The floor of one data directory, held (with its lock) while the store is
/// open.
#[derive(Debug)]
pub struct SeqFloor {
    dir: PathBuf,
    block: u64,
    mark: Mutex<Mark>,
    /// The data directory, `flock`ed for as long as this lives.
    lock: nix::fcntl::Flock<File>,
    /// The floor file as last written (device, inode), and other paths
    /// whose identity must not change while the store is open.
    watched: Mutex<Watched>,
}

/// A file's identity: device and inode.
type Id = (u64, u64);

#[derive(Debug, Default)]
struct Watched {
    floor: Option<Id>,
    paths: Vec<(PathBuf, Id)>,
}

fn id_of(path: &Path) -> std::io::Result<Id> {
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn encode(mark: Mark) -> String {
    let clean = mark.clean.map_or("-".to_owned(), |c| c.to_string());
    let epoch = mark.epoch.map_or("-".to_owned(), |e| e.to_string());
    let body = format!(
        "{HEADER}\nepoch {epoch}\nreserved {}\nclean {clean}\n",
        mark.reserved
    );
    format!("{body}check {:016x}\n", fnv1a(body.as_bytes()))
}

fn decode(text: &str) -> Result<Mark, String> {
    let Some(at) = text.rfind("check ") else {
        return Err("no checksum line".into());
    };
    let (body, check) = text.split_at(at);
    let check = check.trim_end_matches('\n');
    let want = format!("check {:016x}", fnv1a(body.as_bytes()));
    if check != want {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.lines();
    let v2 = match lines.next() {
        Some(HEADER) => true,
        Some(HEADER_V1) => false,
        _ => return Err("unknown header".into()),
    };
    let mut field = |key: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(key))
            .and_then(|l| l.strip_prefix(' '))
            .ok_or_else(|| format!("no `{key}` line"))
    };
    let epoch = match v2 {
        false => None,
        true => match field("epoch")? {
            "-" => None,
            e => Some(e.parse().map_err(|e| format!("epoch: {e}"))?),
        },
    };
    let reserved = field("reserved")?
        .parse()
        .map_err(|e| format!("reserved: {e}"))?;
    let clean = match field("clean")? {
        "-" => None,
        n => Some(n.parse().map_err(|e| format!("clean: {e}"))?),
    };
    Ok(Mark {
        reserved,
        clean,
        epoch,
    })
}

/// fsync a directory (its entries: a rename or a new file in it).
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SeqFloor {
    /// Create `data_dir` if needed, lock it, and read the floor file. An
    /// I/O error other than "no such file" (permission, a dead disk) is
    /// returned: it is not damage.
    pub fn lock(data_dir: &Path) -> std::io::Result<(SeqFloor, Found)> {
        let created = !data_dir.exists();
        super::create_dir_durable(data_dir)?;
        let dir_file = File::open(data_dir)?;
        let lock = nix::fcntl::Flock::lock(dir_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another linegate process ({errno})",
                    data_dir.display()
                ),
            )
        })?;
        // Locked: no other gateway is using it.
        match super::private::secure(data_dir, created) {
            Ok(found) => super::private::report(data_dir, &found),
            Err(e) => tracing::warn!(
                data_dir = %data_dir.display(),
                error = %e,
                "could not check the data directory's permissions"
            ),
        }
        let found = match std::fs::read(data_dir.join(FILE_NAME)) {
            Ok(bytes) => match std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(decode)
            {
                Ok(mark) => Found::Mark(mark),
                Err(why) => Found::Unreadable(why),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Missing,
            Err(e) => return Err(e),
        };
        let floor_id = match &found {
            Found::Missing => None,
            Found::Mark(_) | Found::Unreadable(_) => id_of(&data_dir.join(FILE_NAME)).ok(),
        };
        let floor = SeqFloor {
            dir: data_dir.to_owned(),
            block: BLOCK,
            mark: Mutex::new(found.mark().unwrap_or_default()),
            lock,
            watched: Mutex::new(Watched {
                floor: floor_id,
                paths: Vec::new(),
            }),
        };
        Ok((floor, found))
    }

    /// A smaller block (tests that cross it).
    #[cfg(test)]
    pub fn with_block(mut self, block: u64) -> Self {
        self.block = block.max(1);
        self
    }

    #[cfg(test)]
    pub fn mark(&self) -> Mark {
        *self.mark.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, mark: Mark) -> std::io::Result<()> {
        // Never into a directory that took the locked one's place: it
        // would make a fresh data directory look like a damaged store.
        self.check_dir().map_err(|what| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not writing the seq floor: {what}"),
            )
        })?;
        let tmp = self.dir.join(TMP_NAME);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(super::private::FILE_MODE)
            .open(&tmp)?;
        f.write_all(encode(mark).as_bytes())?;
        f.sync_all()?;
        drop(f);
        let path = self.dir.join(FILE_NAME);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.watched().floor = Some(id_of(&path)?);
        Ok(())
    }

    /// The data directory's path still names the directory locked.
    fn check_dir(&self) -> Result<(), String> {
        let locked = nix::sys::stat::fstat(&*self.lock).map_err(|e| e.to_string())?;
        let locked = (locked.st_dev as u64, locked.st_ino as u64);
        match id_of(&self.dir) {
            Ok(id) if id == locked => Ok(()),
            Ok(_) => Err(format!(
                "{} is no longer the data directory that was opened (moved or replaced)",
                self.dir.display()
            )),
            Err(e) => Err(format!("{} is gone ({e})", self.dir.display())),
        }
    }

    /// Watch `path` too (a store file or directory): from now on it must
    /// stay the file it is.
    pub fn watch(&self, path: &Path) -> std::io::Result<()> {
        let id = id_of(path)?;
        let mut w = self.watched();
        w.paths.retain(|(p, _)| p != path);
        w.paths.push((path.to_owned(), id));
        Ok(())
    }

    /// Forget the watched store paths (before the store is opened again).
    pub fn unwatch(&self) {
        self.watched().paths.clear();
    }

    /// Whether the data directory, the floor file and the watched store
    /// paths are still the ones opened; what changed, if not. A few
    /// `stat` calls.
    pub fn check_place(&self) -> Result<(), String> {
        self.check_dir()?;
        let w = self.watched();
        let floor = w.floor.map(|id| (self.dir.join(FILE_NAME), id));
        for (path, id) in floor.iter().chain(&w.paths) {
            match id_of(path) {
                Ok(now) if now == *id => {}
                Ok(_) => return Err(format!("{} was replaced", path.display())),
                Err(e) => return Err(format!("{} is gone ({e})", path.display())),
            }
        }
        Ok(())
    }

    /// [`check_place`](Self::check_place) as a store error.
    pub fn check(&self) -> Result<(), super::StoreError> {
        self.check_place()
            .map_err(|what| super::StoreError::Lost { what })
    }

    /// The epoch the floor holds.
    pub fn epoch(&self) -> Option<Epoch> {
        self.mark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    /// Keep `epoch` in the floor from now on (written durably).
    pub fn set_epoch(&self, epoch: Epoch) -> std::io::Result<()> {
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Mark {
            epoch: Some(epoch),
            ..*mark
        };
        self.write(next)?;
        *mark = next;
        Ok(())
    }

    /// Make sure every seq up to `last` is reserved on disk before any of
    /// them is handed out: when `last` passes the mark, move the mark to
    /// `last + block` and write it.
    pub fn cover(&self, last: u64) -> std::io::Result<()> {
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        if last <= mark.reserved {
            return Ok(());
        }
        let next = Mark {
            reserved: last.saturating_add(self.block),
            ..*mark
        };
        self.write(next)?;
        tracing::debug!(reserved = next.reserved, "seq floor moved up");
        *mark = next;
        Ok(())
    }

    /// Write the mark as it stands, with `reserved` at least `last` (after
    /// the file was found missing, unreadable or behind the store).
    pub fn settle(&self, last: u64) -> std::io::Result<()> {
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Mark {
            reserved: mark.reserved.max(last),
            ..*mark
        };
        self.write(next)?;
        *mark = next;
        Ok(())
    }

    /// A clean stop: the store is durable and ends at `last_seq`. Not for
    /// a store whose place was taken away (`check_place`): that stop is
    /// not clean.
    pub fn mark_clean(&self, last_seq: u64) -> std::io::Result<()> {
        self.check_place()
            .map_err(|what| std::io::Error::new(std::io::ErrorKind::NotFound, what))?;
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Mark {
            reserved: mark.reserved.max(last_seq),
            clean: Some(last_seq),
            ..*mark
        };
        self.write(next)?;
        *mark = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_changed_byte() {
        let mark = Mark {
            reserved: 200_000,
            clean: Some(123_456),
            epoch: Some("6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60".parse().unwrap()),
        };
        let text = encode(mark);
        assert_eq!(decode(&text), Ok(mark));
        let none = Mark {
            reserved: 7,
            clean: None,
            epoch: None,
        };
        assert_eq!(decode(&encode(none)), Ok(none));
        // A version 1 file (no epoch) still reads.
        let v1 = "linegate-seq-floor 1\nreserved 9\nclean -\n";
        let v1 = format!("{v1}check {:016x}\n", fnv1a(v1.as_bytes()));
        assert_eq!(
            decode(&v1),
            Ok(Mark {
                reserved: 9,
                clean: None,
                epoch: None
            })
        );
        for i in 0..text.len() {
            for bit in 0..8 {
                let mut bytes = text.clone().into_bytes();
                bytes[i] ^= 1 << bit;
                if let Ok(s) = std::str::from_utf8(&bytes) {
                    assert!(decode(s).is_err(), "byte {i} bit {bit} went unnoticed");
                }
            }
        }
        // Only the final newline may go.
        for cut in 0..text.len() - 1 {
            assert!(decode(&text[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn reserves_a_block_at_a_time_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (floor, found) = SeqFloor::lock(dir.path()).unwrap();
        assert_eq!(found, Found::Missing);
        let floor = floor.with_block(10);
        floor.cover(0).unwrap();
        assert!(
            !dir.path().join(FILE_NAME).exists(),
            "nothing to reserve yet"
        );
        floor.cover(3).unwrap();
        assert_eq!(floor.mark().reserved, 13);
        floor.cover(13).unwrap();
        assert_eq!(floor.mark().reserved, 13, "within the block: no write");
        floor.cover(14).unwrap();
        assert_eq!(floor.mark().reserved, 24);
        floor.mark_clean(14).unwrap();
        assert!(
            SeqFloor::lock(dir.path()).is_err(),
            "a second holder of the data directory is refused"
        );
        drop(floor);
        let (_floor, found) = SeqFloor::lock(dir.path()).unwrap();
        assert_eq!(
            found,
            Found::Mark(Mark {
                reserved: 24,
                clean: Some(14),
                epoch: None,
            })
        );
    }

    #[test]
    fn a_damaged_file_is_unreadable_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"reserved 99\n").unwrap();
        let (_floor, found) = SeqFloor::lock(dir.path()).unwrap();
        assert!(matches!(found, Found::Unreadable(_)), "{found:?}");
        drop(_floor);
        std::fs::write(dir.path().join(FILE_NAME), [0xffu8; 40]).unwrap();
        let (_floor, found) = SeqFloor::lock(dir.path()).unwrap();
        assert!(matches!(found, Found::Unreadable(_)), "{found:?}");
    }
}
