//! Logging to the systemd journal: when stderr is connected to journald,
//! every log line starts with its sd-daemon(3) priority prefix (`<3>`
//! error, `<4>` warning, `<6>` info, `<7>` debug and trace) and carries no
//! timestamp (the journal has its own), so `journalctl -p err` finds the
//! errors. Otherwise the log is as on a terminal.
//!
//! "Connected to the journal" is the documented test: `$JOURNAL_STREAM`
//! holds the device and inode numbers (`DEV:INO`) of the stream systemd
//! gave the service, and they match those of our stderr (a stderr
//! redirected elsewhere by the unit or a shell no longer matches).

use std::fmt;
use std::os::fd::AsFd;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the journal's stream (`$JOURNAL_STREAM` names its
/// device and inode).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    matches_stream(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// Whether `JOURNAL_STREAM`'s `DEV:INO` names device `dev`, inode `ino`.
fn matches_stream(stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = stream.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The sd-daemon priority of a log level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Print an error on stderr, outside the log (a fatal error, an invalid
/// config): each line at priority error when stderr is the journal, which
/// keeps one entry per line.
pub fn eprint_error(text: &str) {
    if stderr_is_journal() {
        for line in text.lines() {
            eprintln!("<3>{line}");
        }
    } else {
        eprintln!("{text}");
    }
}

/// A log line format that starts each line with its priority prefix.
pub struct Prefixed<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert!(matches_stream("64769:1234567", 64769, 1234567));
        assert!(!matches_stream("64769:1234568", 64769, 1234567));
        assert!(!matches_stream("1:1234567", 64769, 1234567));
        assert!(!matches_stream("64769", 64769, 1234567));
        assert!(!matches_stream("", 0, 0));
        assert!(!matches_stream("x:y", 0, 0));
    }

    #[test]
    fn levels_map_to_sd_daemon_priorities() {
        let got: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .into_iter()
        .map(priority)
        .collect();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }
}
