//! Small task helpers shared across modules: `AbortOnDrop`, and the
//! `Heartbeat` a long-lived task bumps so the watchdog can tell it turns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Aborts the task when dropped, so a task never outlives its owner
/// (a session's event-loop pump, a supervised device).
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task's sign of life: the task bumps it every turn of its loop (at
/// least once a second, idle or not), and the watchdog (`app::service`)
/// reads it. A task that stops turning, stuck inside a call or waiting on
/// something that never comes, stops bumping it.
#[derive(Debug, Default, Clone)]
pub struct Heartbeat(Arc<HeartbeatInner>);

#[derive(Debug, Default)]
struct HeartbeatInner {
    beats: AtomicU64,
    first: Notify,
}

impl Heartbeat {
    /// One turn of the task's loop.
    pub fn beat(&self) {
        if self.0.beats.fetch_add(1, Ordering::Relaxed) == 0 {
            self.0.first.notify_one();
        }
    }

    /// How many turns so far.
    pub fn beats(&self) -> u64 {
        self.0.beats.load(Ordering::Relaxed)
    }

    /// Completes once the task has turned at least once.
    pub async fn first(&self) {
        if self.beats() == 0 {
            self.0.first.notified().await;
        }
    }

    /// Beat every `period`, forever: run beside a task's work in one
    /// `select!`, it beats as long as the task is polled, however long the
    /// work waits (a connect, a backoff).
    pub async fn beat_every(&self, period: std::time::Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.beat();
        }
    }
}
