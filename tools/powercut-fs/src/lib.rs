//! powercut-fs: a FUSE filesystem for simulated power cuts.
//!
//! It passes through to a backing directory, but keeps every change in memory
//! until the application makes it durable (`fsync`/`fdatasync` on a file, or
//! `fsync` on a directory for its entries). A cut drops everything unsynced,
//! so the backing directory holds exactly what was synced. The model is
//! described in `README.md` beside this crate.
//!
//! ```no_run
//! # fn main() -> Result<(), powercut_fs::Error> {
//! use std::path::Path;
//! let mount = powercut_fs::Mount::start(Path::new("/tmp/backing"), Path::new("/tmp/mnt"))?;
//! // ... run the program under test on /tmp/mnt, SIGKILL it, wait for it ...
//! let (report, mount) = mount.power_cycle()?; // cut, unmount, mount again
//! // Only what was synced is left in /tmp/backing and visible in /tmp/mnt.
//! # let _ = (report, mount);
//! # Ok(())
//! # }
//! ```

mod data;
mod fs;
mod state;
mod sys;
mod tmpfs;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

pub use state::{CutReport, Options, Stats};
pub use tmpfs::Tmpfs;

/// Name of the control file in the root of every mount. Writing `cut` to it
/// cuts the power; writing `sync` makes everything durable; reading it shows
/// counters. It is not listed by `readdir`.
pub const CONTROL_FILE: &str = state::CTL_NAME;

/// What advises the user when FUSE cannot be used.
const FUSE_HINT: &str = "run as root with /dev/fuse, e.g. --device /dev/fuse --cap-add SYS_ADMIN";

/// Errors of [`Mount`].
#[derive(Debug)]
pub enum Error {
    /// FUSE cannot be used on this machine (no `/dev/fuse`, or no permission
    /// to open it or to mount). The message says what to do.
    FuseUnavailable(String),
    /// Any other failure, with what was being done.
    Io { context: String, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::FuseUnavailable(detail) => {
                write!(f, "FUSE is not available: {detail}; {FUSE_HINT}")
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::FuseUnavailable(_) => None,
            Error::Io { source, .. } => Some(source),
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Checks that FUSE can be used: `/dev/fuse` exists and opens read-write.
pub fn check_fuse() -> Result<(), Error> {
    check_fuse_device(Path::new("/dev/fuse"))
}

fn check_fuse_device(device: &Path) -> Result<(), Error> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::FuseUnavailable(format!(
            "{} missing",
            device.display()
        ))),
        Err(e) => Err(Error::FuseUnavailable(format!(
            "cannot open {}: {e}",
            device.display()
        ))),
    }
}

/// A mounted powercut filesystem. Dropping it unmounts (unsynced data is
/// dropped, as in a cut).
pub struct Mount {
    state: fs::Shared,
    notifier: Arc<OnceLock<fuser::Notifier>>,
    hold: Arc<fs::SyncHold>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    backing: PathBuf,
    options: Options,
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}

impl Mount {
    /// Mounts `backing` on `mountpoint` (both existing directories).
    ///
    /// Fails with [`Error::FuseUnavailable`] when FUSE cannot be used here;
    /// tests should fail with that message, not skip.
    pub fn start(backing: &Path, mountpoint: &Path) -> Result<Mount, Error> {
        Mount::start_with(backing, mountpoint, Options::default())
    }

    /// [`Mount::start`] with options (torn mode).
    pub fn start_with(backing: &Path, mountpoint: &Path, options: Options) -> Result<Mount, Error> {
        check_fuse()?;
        for (what, dir) in [("backing directory", backing), ("mountpoint", mountpoint)] {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Io {
                        context: format!("{what} {}", dir.display()),
                        source: io::Error::from_raw_os_error(libc::ENOTDIR),
                    });
                }
                Err(e) => {
                    let hint = if e.raw_os_error() == Some(libc::ENOTCONN) {
                        " (a stale FUSE mount: `umount -l` it)"
                    } else {
                        ""
                    };
                    return Err(io_error(format!("{what} {}{hint}", dir.display()))(e));
                }
            }
        }
        sys::raise_nofile_limit();
        let state = state::State::new(backing, &options)
            .map_err(io_error(format!("opening {}", backing.display())))?;
        let state = Arc::new(Mutex::new(state));
        let notifier = Arc::new(OnceLock::new());
        let hold = Arc::new(fs::SyncHold::default());
        let filesystem = fs::PowercutFs {
            state: state.clone(),
            notifier: notifier.clone(),
            hold: hold.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("powercut:{}", backing.display())),
            MountOption::Subtype("powercut".into()),
            MountOption::DefaultPermissions,
        ];
        config.acl = SessionACL::All;
        let session = fuser::Session::new(filesystem, mountpoint, &config).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
                || e.kind() == io::ErrorKind::NotFound
            {
                // mount(2) needs CAP_SYS_ADMIN; without it fuser falls back
                // to the fusermount3 helper, whose absence reads ENOENT.
                Error::FuseUnavailable(format!(
                    "mounting on {} failed: {e} (mount(2) needs CAP_SYS_ADMIN; \
                     without it the fusermount3 helper is tried)",
                    mountpoint.display()
                ))
            } else {
                io_error(format!("mounting on {}", mountpoint.display()))(e)
            }
        })?;
        let _ = notifier.set(session.notifier());
        let session = session
            .spawn()
            .map_err(io_error("starting the FUSE session thread"))?;
        Ok(Mount {
            state,
            notifier,
            hold,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
            backing: backing.to_path_buf(),
            options,
        })
    }

    /// The directory the filesystem is mounted on.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Power cut: drops every unsynced change and invalidates every open
    /// file handle (later use fails with `EIO`). Kill and reap the programs
    /// using the mount first: a surviving process could still read stale
    /// pages from the kernel's cache.
    ///
    /// # Panics
    /// If the backing directory fails while applying torn writes (torn mode
    /// only): the state would no longer match the model.
    pub fn cut(&self) -> CutReport {
        let (report, inos) = fs::lock(&self.state)
            .cut()
            .unwrap_or_else(|e| panic!("powercut-fs: cut failed on the backing directory: {e:?}"));
        if let Some(notifier) = self.notifier.get() {
            fs::invalidate(notifier, &inos);
        }
        report
    }

    /// The power cut and the reboot of a test cycle: cuts, unmounts and
    /// mounts again with the same options. The new mount starts from the
    /// backing directory alone, with fresh kernel caches.
    pub fn power_cycle(self) -> Result<(CutReport, Mount), Error> {
        let report = self.cut();
        let (backing, mountpoint, options) = (
            self.backing.clone(),
            self.mountpoint.clone(),
            self.options.clone(),
        );
        self.unmount()?;
        Ok((report, Mount::start_with(&backing, &mountpoint, options)?))
    }

    /// Makes everything durable (a clean `sync`; `syncfs(2)` does not reach
    /// FUSE filesystems).
    pub fn sync_all(&self) -> Result<(), Error> {
        fs::lock(&self.state).sync_all().map_err(|e| Error::Io {
            context: "sync_all".into(),
            source: io::Error::from_raw_os_error(i32::from(e)),
        })
    }

    /// Holds every sync from now on (`fsync`, `fdatasync`, directory
    /// `fsync`): each waits, without an error, until
    /// [`Mount::release_syncs`]. Other requests are still served. A disk
    /// whose flushes hang; `hold-syncs` written to the control file does
    /// the same.
    pub fn hold_syncs(&self) {
        self.hold.set(true);
    }

    /// Lets the held syncs run, and later ones run at once
    /// (`release-syncs` in the control file).
    pub fn release_syncs(&self) {
        self.hold.set(false);
    }

    /// How many syncs are waiting for [`Mount::release_syncs`] now.
    pub fn syncs_waiting(&self) -> usize {
        self.hold.waiting()
    }

    /// Counters since the mount started.
    pub fn stats(&self) -> Stats {
        fs::lock(&self.state).stats()
    }

    /// Unmounts. Unsynced changes are dropped, as in a cut. Fails if a
    /// process still uses the mount (`EBUSY`); kill it first.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.hold.set(false);
        let session = self.session.take().expect("mounted until unmount or drop");
        session.umount_and_join().map_err(|e| {
            detach(&self.mountpoint);
            io_error(format!("unmounting {}", self.mountpoint.display()))(e)
        })
    }
}

/// Lazily detaches a mount that is still in use, so the mountpoint is free;
/// its session thread ends when the last user goes away.
fn detach(mountpoint: &Path) {
    if let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid C string.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A held sync would keep its process, and so the unmount, waiting.
        self.hold.set(false);
        if let Some(session) = self.session.take() {
            if session.umount_and_join().is_err() {
                detach(&self.mountpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_gives_the_documented_message() {
        let err = check_fuse_device(Path::new("/nonexistent/dev/fuse")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("FUSE is not available: /nonexistent/dev/fuse missing; run as root with /dev/fuse, e.g. --device /dev/fuse --cap-add SYS_ADMIN"),
            "{msg}"
        );
    }
}
