//! Reading the files a config consists of (the config file itself and a
//! `password_file`): regular files only, bounded in size, and never blocking.
//!
//! A FIFO given as the config would block `linegate check` until a writer
//! came; `/dev/zero` would be read until memory ran out. Both are refused,
//! with what the path is, before a byte is read: the file is opened
//! non-blocking (opening a FIFO then returns at once), checked on the open
//! descriptor (no race with a rename), and read up to its cap.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::validate::fmt_size;

/// The largest config file read: far above any real one (a thousand
/// registers take ~150 KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest `password_file` read.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// The bytes of the regular file at `path`, at most `limit` of them; an
/// `InvalidInput` error naming what the path is when it is not a regular
/// file, an `InvalidData` error when it holds more than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", kind(meta.file_type())),
        ));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {}", fmt_size(limit)),
        )
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    read_at_most(file, limit + 1, &mut bytes)?;
    if bytes.len() as u64 > limit {
        // It grew while being read.
        return Err(too_large());
    }
    Ok(bytes)
}

fn read_at_most(file: File, limit: u64, out: &mut Vec<u8>) -> io::Result<()> {
    file.take(limit).read_to_end(out).map(|_| ())
}

/// What a path that is not a regular file is, for the message.
fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking_or_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        for (path, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            let err = read_bounded(path, MAX_CONFIG_BYTES).expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(what), "{path:?}: {err}");
        }
    }

    #[test]
    fn caps_the_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("big");
        std::fs::write(&file, vec![b'a'; 1025]).expect("write");
        let err = read_bounded(&file, 1024).expect_err("too large");
        assert!(err.to_string().contains("larger than 1KiB"), "{err}");
        assert_eq!(read_bounded(&file, 1025).expect("fits").len(), 1025);
    }
}
