//! Wall-clock time for record timestamps, and whether the kernel believes the
//! clock is synchronised (NTP/PTP). Timers never use this: they use tokio's
//! monotonic clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (UTC). A clock set before 1970 reads 0.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long an answer of [`clock_synced`] is reused: it is asked for every
/// reading (every Modbus poll), and each fresh answer is a system call.
const SYNC_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// True when the kernel reports the system clock as synchronised; asked of
/// the kernel at most once per [`SYNC_RECHECK`], so a change shows within a
/// second.
pub fn clock_synced() -> bool {
    static LAST: std::sync::Mutex<Option<(std::time::Instant, bool)>> = std::sync::Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match *last {
        Some((at, synced)) if at.elapsed() < SYNC_RECHECK => synced,
        _ => {
            let synced = kernel_clock_synced();
            *last = Some((std::time::Instant::now(), synced));
            synced
        }
    }
}

/// The kernel's answer, now.
///
/// `adjtimex(2)` with no modes only reads the state; it returns `TIME_ERROR`
/// while the clock is unsynchronised (no NTP daemon, or one that has not
/// locked yet — typical for a Raspberry Pi without an RTC just after boot).
fn kernel_clock_synced() -> bool {
    // SAFETY: a zeroed `timex` with `modes = 0` asks adjtimex for a read-only
    // query; the kernel writes into the struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::adjtimex(&mut tx) };
    rc >= 0 && rc != libc::TIME_ERROR
}

/// RFC 3339 UTC rendering with millisecond precision, e.g. `2026-11-22T03:15:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    // RFC 3339 stops at year 9999; clamp rather than fail on a bad clock.
    const MAX_MS: u64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.min(MAX_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_with_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
