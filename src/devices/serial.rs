//! Opening a serial line by path with the configured line settings.
//!
//! The one place that maps [`SerialLine`] onto tokio-serial. The path may be a
//! stable udev link (`/dev/serial/by-id/…`); the kernel follows it at every
//! open, so a replugged device that came back under a new `ttyUSB*`/`ttyACM*`
//! name is found again. Ports are opened exclusively (`TIOCEXCL` + `flock`), so
//! two processes never split one scanner's bytes between them.
//!
//! Reading is left to the caller; on Linux an unplugged device reads as EOF
//! (`Ok(0)`) or `EIO`, and both mean "device gone".

use std::path::{Path, PathBuf};

use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::config::{DataBits, FlowControl, Parity, SerialLine, StopBits};

/// Why a serial line could not be opened. Every variant is transient from the
/// gateway's point of view (the device may appear, or be released, later).
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("{}: path is not valid UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    #[error("{}: no such device (unplugged?)", .0.display())]
    NotFound(PathBuf),
    #[error("{}: permission denied (is the service user in the dialout group?)", .0.display())]
    PermissionDenied(PathBuf),
    #[error("{}: busy, opened exclusively by another process", .0.display())]
    Busy(PathBuf),
    #[error("{}: {detail}", path.display())]
    Other { path: PathBuf, detail: String },
}

/// Opens `path` with `line`'s baud rate, data bits, parity, stop bits and flow
/// control. Must be called inside a tokio runtime (the port is registered with
/// its reactor).
pub fn open(path: &Path, line: &SerialLine) -> Result<SerialStream, SerialError> {
    let Some(name) = path.to_str() else {
        return Err(SerialError::NonUtf8Path(path.to_owned()));
    };
    tokio_serial::new(name, line.baud)
        .data_bits(match line.data_bits {
            DataBits::Seven => tokio_serial::DataBits::Seven,
            DataBits::Eight => tokio_serial::DataBits::Eight,
        })
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match line.stop_bits {
            StopBits::One => tokio_serial::StopBits::One,
            StopBits::Two => tokio_serial::StopBits::Two,
        })
        .flow_control(match line.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        })
        .open_native_async()
        .map_err(|e| classify(path, e))
}

fn classify(path: &Path, e: tokio_serial::Error) -> SerialError {
    use std::io::ErrorKind as Io;
    use tokio_serial::ErrorKind as K;
    let path = path.to_owned();
    match e.kind {
        K::Io(Io::NotFound) => SerialError::NotFound(path),
        K::Io(Io::PermissionDenied) => SerialError::PermissionDenied(path),
        // serialport reports EBUSY from TIOCEXCL and a held flock as `NoDevice`.
        K::NoDevice => SerialError::Busy(path),
        _ => SerialError::Other {
            path,
            detail: e.description,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_device_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usb-Scanner_1234-if00");
        match open(&path, &SerialLine::default()) {
            Err(SerialError::NotFound(p)) => assert_eq!(p, path),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn non_tty_is_an_error_not_a_panic() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(open(file.path(), &SerialLine::default()).is_err());
    }

    #[tokio::test]
    async fn opens_a_pty_through_a_symlink() {
        let pty = crate::devices::pty::VirtualSerial::open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("usb-Scanner_1234-if00");
        std::os::unix::fs::symlink(pty.slave_path(), &link).unwrap();
        for line in [
            SerialLine::default(),
            SerialLine {
                baud: 115_200,
                data_bits: DataBits::Seven,
                parity: Parity::Even,
                stop_bits: StopBits::Two,
                flow_control: FlowControl::Hardware,
            },
        ] {
            let port = open(&link, &line).unwrap();
            drop(port);
        }
    }
}
