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
//! The file also carries the data directory's lock: [`SeqFloor::lock`] takes
//! an exclusive `flock` on the directory before anything in it is read or
//! repaired, so a second gateway on the same data directory fails at start
//! without touching a salvage in progress.
//!
//! Format (text, one `key value` per line, the last line a FNV-1a checksum
//! of the lines before it):
//!
//! ```text
//! linegate-seq-floor 1
//! reserved 200000
//! clean 123456
//! check 9f0c3a1b22d4e5f6
//! ```

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The file, in the data directory.
pub const FILE_NAME: &str = "seq.floor";
const TMP_NAME: &str = "seq.floor.tmp";
const HEADER: &str = "linegate-seq-floor 1";

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
    _lock: nix::fcntl::Flock<File>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn encode(mark: Mark) -> String {
    let clean = mark.clean.map_or("-".to_owned(), |c| c.to_string());
    let body = format!("{HEADER}\nreserved {}\nclean {clean}\n", mark.reserved);
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
    if lines.next() != Some(HEADER) {
        return Err("unknown header".into());
    }
    let mut field = |key: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(key))
            .and_then(|l| l.strip_prefix(' '))
            .ok_or_else(|| format!("no `{key}` line"))
    };
    let reserved = field("reserved")?
        .parse()
        .map_err(|e| format!("reserved: {e}"))?;
    let clean = match field("clean")? {
        "-" => None,
        n => Some(n.parse().map_err(|e| format!("clean: {e}"))?),
    };
    Ok(Mark { reserved, clean })
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
        let floor = SeqFloor {
            dir: data_dir.to_owned(),
            block: BLOCK,
            mark: Mutex::new(found.mark().unwrap_or_default()),
            _lock: lock,
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

    fn write(&self, mark: Mark) -> std::io::Result<()> {
        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp)?;
        f.write_all(encode(mark).as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        sync_dir(&self.dir)
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

    /// A clean stop: the store is durable and ends at `last_seq`.
    pub fn mark_clean(&self, last_seq: u64) -> std::io::Result<()> {
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Mark {
            reserved: mark.reserved.max(last_seq),
            clean: Some(last_seq),
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
        };
        let text = encode(mark);
        assert_eq!(decode(&text), Ok(mark));
        let none = Mark {
            reserved: 7,
            clean: None,
        };
        assert_eq!(decode(&encode(none)), Ok(none));
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
                clean: Some(14)
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
