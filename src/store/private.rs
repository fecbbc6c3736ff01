//! The data directory kept private to the service user: the records, the
//! station state and `seq.floor` are nobody else's to read.
//!
//! The process runs with umask 077 (set by `app::cli` before anything is
//! created), so every file the store's engines and the salvage create is
//! 0600 and every directory 0700; what the store writes itself (`seq.floor`)
//! is created 0600 explicitly. The data directory is 0710: its group may
//! only pass through it, to reach the control socket (`app::control`, 0660)
//! by name, but not list or read anything.
//!
//! At start, [`secure`] checks an existing data directory: when it or
//! anything in it grants its group or others more than that (an older
//! version's store, a directory made by hand), a warning names it and the
//! excess permissions are removed from what this user owns; what it cannot
//! fix is named in the warning.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The data directory's mode: owner all, group search only.
pub const DATA_DIR_MODE: u32 = 0o710;
/// Files in the data directory (the control socket excepted).
pub const FILE_MODE: u32 = 0o600;
/// The process's umask: files 0600, directories 0700.
pub const UMASK: u32 = 0o077;

/// Permission bits beyond what the data directory may grant.
const DIR_EXCESS: u32 = 0o067;
/// Permission bits beyond what anything inside it may grant.
const ENTRY_EXCESS: u32 = 0o077;
/// How deep into the data directory permissions are fixed (the store's
/// files sit at depth 2; a salvage's kept copies at depth 2 or 3).
const MAX_DEPTH: usize = 4;
/// Entries looked at, at most (a data directory holds a few dozen).
const MAX_ENTRIES: usize = 10_000;

/// What [`secure`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fixed {
    /// Paths that granted too much, with their old mode, made private.
    pub fixed: Vec<(PathBuf, u32)>,
    /// Paths that grant too much and could not be changed (another owner,
    /// or chmod refused), with the reason.
    pub unfixed: Vec<(PathBuf, String)>,
}

/// Make the data directory `dir` private; `created`: it was made just now
/// (its mode is set, nothing is reported). Sockets and symbolic links are
/// left alone (the control socket has its own mode; a link's target is not
/// ours to change).
pub fn secure(dir: &Path, created: bool) -> std::io::Result<Fixed> {
    let mut out = Fixed::default();
    if created {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))?;
        return Ok(out);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut seen = 0;
    let mut todo = vec![(dir.to_path_buf(), 0usize)];
    while let Some((path, depth)) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_symlink() || std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            continue;
        }
        let excess = if depth == 0 { DIR_EXCESS } else { ENTRY_EXCESS };
        let mode = meta.mode() & 0o7777;
        if mode & excess != 0 {
            if meta.uid() != uid {
                out.unfixed.push((
                    path.clone(),
                    format!("mode {mode:04o}, owned by uid {}", meta.uid()),
                ));
            } else {
                match std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(mode & !excess),
                ) {
                    Ok(()) => out.fixed.push((path.clone(), mode)),
                    Err(e) => out
                        .unfixed
                        .push((path.clone(), format!("mode {mode:04o}: {e}"))),
                }
            }
        }
        if kind.is_dir() && depth < MAX_DEPTH {
            for entry in std::fs::read_dir(&path)? {
                seen += 1;
                if seen > MAX_ENTRIES {
                    break;
                }
                todo.push((entry?.path(), depth + 1));
            }
        }
    }
    Ok(out)
}

/// Log what [`secure`] found: one warning naming what was too open.
pub fn report(dir: &Path, found: &Fixed) {
    let list = |paths: &mut dyn Iterator<Item = String>| {
        let mut shown: Vec<String> = paths.take(5).collect();
        let total = shown.len();
        if total == 5 {
            shown.push("…".into());
        }
        shown.join(", ")
    };
    if !found.fixed.is_empty() {
        tracing::warn!(
            data_dir = %dir.display(),
            fixed = found.fixed.len(),
            paths = %list(&mut found.fixed.iter().map(|(p, m)| format!("{} (was {m:04o})", p.display()))),
            "the data directory was readable or writable by other users; made private to the service user (directory 0710, files 0600)"
        );
    }
    if !found.unfixed.is_empty() {
        tracing::warn!(
            data_dir = %dir.display(),
            paths = %list(&mut found.unfixed.iter().map(|(p, why)| format!("{} ({why})", p.display()))),
            "parts of the data directory are open to other users and cannot be made private by this user: fix their owner or mode"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn an_open_data_directory_is_made_private_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("store")).unwrap();
        std::fs::write(dir.join("seq.floor"), "x").unwrap();
        std::fs::write(dir.join("store/linegate.redb"), "x").unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("store"), 0o775),
            (dir.join("seq.floor"), 0o644),
            (dir.join("store/linegate.redb"), 0o600),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        let found = secure(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o710);
        assert_eq!(mode(&dir.join("store")), 0o700);
        assert_eq!(mode(&dir.join("seq.floor")), 0o600);
        assert_eq!(mode(&dir.join("store/linegate.redb")), 0o600);
        let mut fixed: Vec<_> = found.fixed.iter().map(|(_, m)| *m).collect();
        fixed.sort();
        assert_eq!(fixed, vec![0o644, 0o755, 0o775]);
        assert!(found.unfixed.is_empty());
        // Private already: nothing to report.
        assert_eq!(secure(&dir, false).unwrap(), Fixed::default());
        // A stricter directory stays as it is.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(secure(&dir, false).unwrap(), Fixed::default());
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_new_data_directory_gets_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(secure(&dir, true).unwrap(), Fixed::default());
        assert_eq!(mode(&dir), 0o710);
    }
}
