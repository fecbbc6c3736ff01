//! Jittered exponential backoff between reconnect attempts.
//!
//! Generic: serial scanners, the MQTT uplink and Modbus devices all use it.
//! It only computes delays; the caller sleeps.
//!
//! Algorithm: *full jitter* (AWS Architecture Blog, "Exponential Backoff And
//! Jitter"), floored at `min`:
//!
//! ```text
//! ceiling(n) = min(max, min · 2^(n+1))      n = attempts since the last reset
//! delay(n)   = uniform(min, ceiling(n))
//! ```
//!
//! Every delay lies in `[min, max]`, so a retry loop never spins (plain full
//! jitter draws from `[0, ceiling]` and can return ~0). The ceiling doubles per
//! attempt until it saturates at `max`; the draw spreads many gateways that
//! lost the same peer (a broker restart, a power cut on the line) instead of
//! retrying in lockstep — even the first retry is jittered, over `[min, 2·min]`.
//! [`Backoff::reset`] after a success starts again from `n = 0`.
//!
//! (Decorrelated jitter was considered: its median delay grows only ~10 % per
//! attempt, so it can take ~70 attempts to go from 10 ms to 10 s.)

use std::time::Duration;

use crate::config::BackoffConfig;

/// Smallest delay ever returned: a zero `min` would let a retry loop spin.
const FLOOR: Duration = Duration::from_millis(1);

/// The ceiling stops doubling here (`min · 2^31`: 24 days for a 1 ms minimum).
const MAX_DOUBLINGS: u32 = 31;

/// Backoff state for one reconnecting thing (a device, the MQTT session).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Attempts since the last reset, capped (the ceiling saturates long before).
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff over `[cfg.min, cfg.max]`. A zero `min` is raised to 1 ms and a
    /// `max` below `min` is raised to `min`, so the bounds always hold.
    pub fn new(cfg: BackoffConfig) -> Self {
        Self::with_rng(cfg, fastrand::Rng::new())
    }

    /// Like [`Backoff::new`] with a seeded generator: reproducible delays for tests.
    pub fn with_seed(cfg: BackoffConfig, seed: u64) -> Self {
        Self::with_rng(cfg, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(cfg: BackoffConfig, rng: fastrand::Rng) -> Self {
        let min = cfg.min.max(FLOOR);
        let max = cfg.max.max(min);
        Self {
            min,
            max,
            attempt: 0,
            rng,
        }
    }

    /// The delay to wait before the next attempt; grows with each call.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << (self.attempt + 1).min(MAX_DOUBLINGS);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = (self.attempt + 1).min(MAX_DOUBLINGS);
        Duration::from_nanos(self.rng.u64(nanos(self.min)..=nanos(ceiling)))
    }

    /// Call after a success: the next delay starts again near `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Nanoseconds, saturating (a `Duration` above ~584 years is not a backoff).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_ms: u64, max_ms: u64) -> BackoffConfig {
        BackoffConfig {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn delays_stay_within_bounds() {
        for seed in 0..50 {
            let mut b = Backoff::with_seed(cfg(20, 5_000), seed);
            for _ in 0..200 {
                let d = b.next_delay();
                assert!(d >= Duration::from_millis(20), "{d:?} below min");
                assert!(d <= Duration::from_secs(5), "{d:?} above max");
            }
        }
    }

    #[test]
    fn grows_towards_max() {
        for seed in 0..50 {
            let mut b = Backoff::with_seed(cfg(10, 10_000), seed);
            let first = b.next_delay();
            assert!(first <= Duration::from_millis(20));
            let second = b.next_delay();
            assert!(second <= Duration::from_millis(40));
            let later: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
            let peak = later.iter().max().copied().unwrap_or_default();
            assert!(
                peak >= Duration::from_secs(5),
                "seed {seed}: never grew past {peak:?}"
            );
        }
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut b = Backoff::with_seed(cfg(10, 10_000), 7);
        for _ in 0..40 {
            b.next_delay();
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
    }

    #[test]
    fn degenerate_configs_never_spin_or_panic() {
        let mut zero = Backoff::with_seed(cfg(0, 0), 1);
        assert!((0..100).all(|_| zero.next_delay() == FLOOR));
        let mut inverted = Backoff::with_seed(cfg(500, 100), 1);
        assert!((0..100).all(|_| inverted.next_delay() == Duration::from_millis(500)));
        let mut huge = Backoff::with_seed(
            BackoffConfig {
                min: Duration::from_secs(1),
                max: Duration::MAX,
            },
            1,
        );
        assert!((0..200).all(|_| huge.next_delay() >= Duration::from_secs(1)));
    }

    #[test]
    fn first_retries_are_jittered() {
        let firsts: std::collections::BTreeSet<Duration> = (0..20)
            .map(|seed| Backoff::with_seed(cfg(100, 10_000), seed).next_delay())
            .collect();
        assert!(firsts.len() > 10, "first delays not spread: {firsts:?}");
    }

    #[test]
    fn min_equal_max_is_constant() {
        let mut b = Backoff::with_seed(cfg(250, 250), 3);
        assert!((0..20).all(|_| b.next_delay() == Duration::from_millis(250)));
    }
}
