//! [`Tmpfs`]: a size-limited tmpfs on a fresh directory, for the full-disk
//! tests (the other way the tests fake a disk, beside the power-cut mount).
//! Mounting needs root, as on the CI machines; without it the test fails and
//! says why, it does not skip.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A tmpfs of a given size, unmounted (lazily) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (`mount -o size=…`, e.g. `"8m"`) on a new
    /// temporary directory.
    ///
    /// # Panics
    /// If it cannot be mounted (not root), with the reason.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}"));
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} (the full-disk tests need root, as on CI): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes available to an unprivileged writer (`statvfs` `f_bavail`).
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: a zeroed statvfs filled in by the kernel; a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {}", self.path().display());
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Write the file `name` until at most `leave` bytes are free (0: until
    /// the filesystem refuses a write with ENOSPC); returns its path.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let chunk = vec![0x5a; 16 * 1024];
        // Bounded: 16 KiB × 100,000 is far more than any test's tmpfs.
        for _ in 0..100_000 {
            if leave > 0 && self.available() <= leave {
                break;
            }
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
