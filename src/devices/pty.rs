//! A virtual serial port: a raw pseudo-terminal pair whose slave side looks
//! like a scanner's `/dev/tty*` node.
//!
//! Used by the tests and by `linegate demo` to feed simulated scans through the
//! real serial-scanner path (open by path, termios, framing, unplug handling).
//! The test side writes to the master; the scanner opens [`VirtualSerial::slave_path`].
//!
//! Lifecycle, as the scanner sees it:
//! - while a `VirtualSerial` lives, the slave node exists and can be (re)opened
//!   any number of times; a slave fd kept inside means the master never sees a
//!   hangup while the scanner closes and reopens;
//! - dropping it closes the master: the kernel hangs the slave up (readers get
//!   EOF or `EIO`) and removes the `/dev/pts/N` node, which is what an
//!   unplugged USB scanner looks like.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A pseudo-terminal pair in raw mode: bytes written with [`VirtualSerial::write`]
/// arrive unchanged (no CR→LF translation, no echo) on the slave side.
#[derive(Debug)]
pub struct VirtualSerial {
    /// Master side, non-blocking, registered with the tokio reactor.
    master: AsyncFd<OwnedFd>,
    /// Held open so the pty stays alive while the scanner closes and reopens.
    _slave: OwnedFd,
    slave_path: PathBuf,
}

impl VirtualSerial {
    /// Creates the pair. Must be called from within a tokio runtime (the master
    /// is registered with its reactor); outside one this returns an error.
    pub fn open() -> io::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "VirtualSerial::open must be called inside a tokio runtime",
            ));
        }
        let pair = openpty(None, None).map_err(io::Error::from)?;

        // Raw mode on the slave: bytes pass through the line discipline unchanged.
        let mut termios = tcgetattr(&pair.slave).map_err(io::Error::from)?;
        cfmakeraw(&mut termios);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).map_err(io::Error::from)?;

        let slave_path = nix::unistd::ttyname(&pair.slave).map_err(io::Error::from)?;

        // openpty(3) does not set close-on-exec; the demo may spawn processes.
        for fd in [&pair.master, &pair.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
        }
        let flags = fcntl(&pair.master, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&pair.master, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;

        // SAFETY: `OwnedFd` keeps the master fd open, unchanged, until the
        // `AsyncFd` (which owns it) is dropped.
        let master = unsafe { AsyncFd::register_with_interest(pair.master, Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            master,
            _slave: pair.slave,
            slave_path,
        })
    }

    /// The slave device node, e.g. `/dev/pts/7`: what the scanner opens.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// Writes all of `bytes` to the master, as a scanner would send them.
    ///
    /// Waits (without blocking the runtime) while the pty buffer is full, i.e.
    /// until the reader on the slave side catches up.
    pub async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), rest).map_err(io::Error::from))
            {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => rest = rest.get(n..).unwrap_or_default(),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                // Not writable after all: readiness was cleared, wait again.
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::time::timeout;

    use super::*;
    use crate::config::SerialLine;
    use crate::devices::serial;

    const WAIT: Duration = Duration::from_secs(5);

    async fn read_exactly(port: &mut tokio_serial::SerialStream, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < n {
            let k = timeout(WAIT, port.read(&mut buf)).await.unwrap().unwrap();
            assert!(k > 0, "unexpected EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..k]);
        }
        got
    }

    #[tokio::test]
    async fn every_byte_value_passes_unchanged_and_is_buffered_before_open() {
        let pty = VirtualSerial::open().unwrap();
        assert!(pty.slave_path().starts_with("/dev/pts"));
        let all: Vec<u8> = (0..=255u8).chain(b"\r\n\r".iter().copied()).collect();
        // Nobody has the slave open yet: the write is buffered, no EIO.
        pty.write(&all).await.unwrap();
        let mut port = serial::open(pty.slave_path(), &SerialLine::default()).unwrap();
        assert_eq!(read_exactly(&mut port, all.len()).await, all);
        // Close and reopen: the pair survives, the scanner can come back.
        drop(port);
        pty.write(b"again").await.unwrap();
        let mut port = serial::open(pty.slave_path(), &SerialLine::default()).unwrap();
        assert_eq!(read_exactly(&mut port, 5).await, b"again");
    }

    #[tokio::test]
    async fn drop_reads_as_eof_and_removes_the_node() {
        let pty = VirtualSerial::open().unwrap();
        let path = pty.slave_path().to_owned();
        let mut port = serial::open(&path, &SerialLine::default()).unwrap();
        drop(pty);
        let mut buf = [0u8; 16];
        // Measured on Linux 6.x: Ok(0) at once and on every later read.
        for _ in 0..3 {
            let n = timeout(WAIT, port.read(&mut buf)).await.unwrap().unwrap();
            assert_eq!(n, 0);
        }
        assert!(matches!(
            serial::open(&path, &SerialLine::default()),
            Err(serial::SerialError::NotFound(_))
        ));
    }
}
