//! TEMPORARY stand-in; replaced by the full backoff module.
use std::time::Duration;

use crate::config::BackoffConfig;

#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    current: Duration,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Self {
        Backoff { cfg, current: cfg.min }
    }
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.cfg.max);
        d
    }
    pub fn reset(&mut self) {
        self.current = self.cfg.min;
    }
}
