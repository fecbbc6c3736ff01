//! The service manager's contract: systemd's notify protocol (sd_notify(3))
//! as linegate speaks it, and the watchdog's liveness check.
//!
//! - `READY=1` once the store is open and the pipeline turns.
//! - `EXTEND_TIMEOUT_USEC=` while opening the store takes long (a salvage of
//!   a damaged store reads every record), so the start is not timed out.
//! - `STATUS=` with the queue depth, the uplink's state and the config
//!   generation, when it changed, at most every [`STATUS_EVERY`].
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC`, but only while both the
//!   pipeline and the uplink turn: each beats a [`Heartbeat`] every turn of
//!   its loop (at least once a second, idle or not). A task that has not
//!   beaten for [`stall_limit`] is stalled (the pipeline stuck inside a
//!   store call, a deadlock, a runtime whose threads are all blocked) and
//!   the pings stop: systemd kills the process after `WatchdogSec` and,
//!   with `Restart=`, starts it again. Should the task turn again before
//!   that, the pings resume.
//! - `RELOADING=1` when a reload starts, `READY=1` when it is done.
//! - `STOPPING=1` at the start of a clean stop.
//!
//! Without `$NOTIFY_SOCKET` nothing is sent; a socket that refuses a message
//! is logged once as a warning and never stops the gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::Store;
use crate::tasks::Heartbeat;
use crate::uplink::{LinkState, UplinkStats};

/// The status line is sent when it changed, at most this often.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// While the store is being opened, more start time is asked for this
/// often (the first time after [`EXTEND_AFTER`])...
const EXTEND_EVERY: Duration = Duration::from_secs(5);
/// ...each time this much from then on.
const EXTEND_BY: Duration = Duration::from_secs(30);
/// A store open that takes longer than this asks for more time.
const EXTEND_AFTER: Duration = Duration::from_secs(1);

/// How often the heartbeats are sampled.
const SAMPLE: Duration = Duration::from_millis(250);

/// A task that has not beaten for this long is stalled, at the least: the
/// pipeline and the uplink beat at least once a second, so a loaded
/// machine's late tick is not taken for a stall.
const MIN_STALL: Duration = Duration::from_secs(3);

/// Set once a message could not be sent, so the warning is logged once.
static SEND_FAILED: AtomicBool = AtomicBool::new(false);

/// Send `states` to the service manager, if there is one.
fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states)
        && !SEND_FAILED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            socket = ?std::env::var_os("NOTIFY_SOCKET"),
            error = %err,
            "cannot notify the service manager (NOTIFY_SOCKET); running on without telling it"
        );
    }
}

/// `READY=1`, with the first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`: a clean stop begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// `RELOADING=1` (with the monotonic time systemd asks for): a reload
/// begins; [`ready`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Run `open` (the store's open, which may salvage) and ask the service
/// manager for more start time while it runs longer than [`EXTEND_AFTER`].
pub async fn extending_start<T>(open: impl Future<Output = T>) -> T {
    let mut open = std::pin::pin!(open);
    let mut next = Instant::now() + EXTEND_AFTER;
    let mut told = false;
    loop {
        tokio::select! {
            done = &mut open => return done,
            () = tokio::time::sleep_until(next) => {
                if !told {
                    told = true;
                    tracing::info!(
                        extend_s = EXTEND_BY.as_secs(),
                        "opening the store takes long (a salvage reads every record); asking the service manager for more start time"
                    );
                }
                let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
                send(&[NotifyState::ExtendTimeoutUsec(usec)]);
                next = Instant::now() + EXTEND_EVERY;
            }
        }
    }
}

/// The watchdog period asked for by the service manager (`$WATCHDOG_USEC`,
/// for this process), if any.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|p| !p.is_zero())
}

/// How long a task may go without a beat before it is stalled: half the
/// watchdog period, at least [`MIN_STALL`].
pub fn stall_limit(period: Duration) -> Duration {
    (period / 2).max(MIN_STALL)
}

/// One task's heartbeat as the watchdog sees it: when it last changed.
#[derive(Debug)]
struct Watched {
    name: &'static str,
    heartbeat: Heartbeat,
    beats: u64,
    changed: Instant,
    /// Reported as stalled (logged once per stall).
    stalled: bool,
}

impl Watched {
    fn new(name: &'static str, heartbeat: Heartbeat, now: Instant) -> Self {
        Watched {
            name,
            beats: heartbeat.beats(),
            heartbeat,
            changed: now,
            stalled: false,
        }
    }

    /// Sample the heartbeat; how long since it last changed.
    fn sample(&mut self, now: Instant) -> Duration {
        let beats = self.heartbeat.beats();
        if beats != self.beats {
            self.beats = beats;
            self.changed = now;
        }
        now.saturating_duration_since(self.changed)
    }
}

/// What the status line shows.
#[derive(Clone)]
pub struct StatusSource {
    pub store: Arc<dyn Store>,
    pub uplink: watch::Receiver<UplinkStats>,
    /// The config generation: 1 at start, one more at each applied reload.
    pub generation: watch::Receiver<u64>,
}

impl StatusSource {
    /// The status line: queue depth, uplink state, config generation.
    /// (The depth is a counter the engines keep in memory, not read from
    /// disk: a store stuck in a commit does not hold it up.)
    pub fn line(&self) -> String {
        status_line(
            self.store.usage().depth,
            &self.uplink.borrow().link_state(),
            *self.generation.borrow(),
        )
    }
}

/// `queue 12 records; uplink connected; config 1`, cut to a readable width.
pub fn status_line(depth: u64, link: &LinkState, generation: u64) -> String {
    let mut line = format!("queue {depth} records; uplink {link}; config {generation}");
    if line.len() > 200 {
        let mut cut = 199;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// The watchdog and the status line, until the gateway stops (the caller
/// drops or aborts it). `period` is the watchdog period (`None`: no
/// watchdog, the status line only).
pub async fn run(
    period: Option<Duration>,
    pipeline: Heartbeat,
    uplink: Heartbeat,
    status: StatusSource,
) {
    let now = Instant::now();
    let mut watched = [
        Watched::new("pipeline", pipeline, now),
        Watched::new("uplink", uplink, now),
    ];
    let mut sample = tokio::time::interval(SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_ping = now;
    let mut next_status = now + STATUS_EVERY;
    let mut shown = String::new();
    loop {
        sample.tick().await;
        let now = Instant::now();
        if let Some(period) = period {
            let limit = stall_limit(period);
            let mut alive = true;
            for w in &mut watched {
                let since = w.sample(now);
                if since >= limit {
                    alive = false;
                    if !w.stalled {
                        w.stalled = true;
                        tracing::error!(
                            task = w.name,
                            stalled_s = since.as_secs(),
                            watchdog_s = period.as_secs_f64(),
                            "the {} has not turned for {} s: no more watchdog pings; the service manager will restart the gateway",
                            w.name,
                            since.as_secs()
                        );
                    }
                } else if w.stalled {
                    w.stalled = false;
                    tracing::warn!(
                        task = w.name,
                        "the {} turns again: watchdog pings resume",
                        w.name
                    );
                }
            }
            if alive && now >= next_ping {
                send(&[NotifyState::Watchdog]);
                next_ping = now + period / 2;
            }
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY;
            let line = status.line();
            if line != shown {
                send(&[NotifyState::Status(&line)]);
                shown = line;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_limit_is_half_the_period_but_at_least_three_seconds() {
        assert_eq!(
            stall_limit(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(stall_limit(Duration::from_secs(2)), Duration::from_secs(3));
    }

    #[test]
    fn a_heartbeat_that_does_not_change_ages() {
        let t0 = Instant::now();
        let hb = Heartbeat::default();
        let mut w = Watched::new("pipeline", hb.clone(), t0);
        assert_eq!(
            w.sample(t0 + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        hb.beat();
        assert_eq!(w.sample(t0 + Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(
            w.sample(t0 + Duration::from_secs(7)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn the_status_line_names_queue_uplink_and_generation() {
        assert_eq!(
            status_line(12, &LinkState::Connected, 1),
            "queue 12 records; uplink connected; config 1"
        );
        let down = status_line(0, &LinkState::Down("x".repeat(400)), 3);
        assert!(
            down.starts_with("queue 0 records; uplink down (xxx"),
            "{down}"
        );
        assert!(down.chars().count() <= 200, "{}", down.len());
    }
}
