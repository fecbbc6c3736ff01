//! Per-device health: online state, last error, counters.
//!
//! Each device task owns and updates its own [`DeviceHealth`]; the uplink reads
//! snapshots for the status message. The registry only hands out handles.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// A point-in-time view of one device's health, as published in the status message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealthSnapshot {
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Frames accepted (scans delivered to the station).
    pub frames: u64,
    /// Frames rejected: too long, or containing bytes a scanner never sends.
    pub rejects: u64,
    /// Times the device was (re)opened successfully (a Modbus device: came
    /// online, every register block read).
    pub connects: u64,
    /// Register blocks whose last read failed, e.g. `holding 100..104 (unit 1)`,
    /// with why; a block leaves the list when it reads again.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failing_blocks: BTreeMap<String, String>,
}

/// Handle a device task uses to report its health.
#[derive(Debug, Clone, Default)]
pub struct DeviceHealth(Arc<Mutex<HealthSnapshot>>);

impl DeviceHealth {
    fn with<R>(&self, f: impl FnOnce(&mut HealthSnapshot) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn set_online(&self) {
        self.with(|h| {
            h.online = true;
            h.connects += 1;
        });
    }

    pub fn set_offline(&self, error: impl Into<String>) {
        let error = error.into();
        self.with(|h| {
            h.online = false;
            h.last_error = Some(error);
        });
    }

    pub fn frame(&self) {
        self.with(|h| h.frames += 1);
    }

    pub fn reject(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.with(|h| {
            h.rejects += 1;
            h.last_error = Some(reason);
        });
    }

    /// A register block's read failed: named in the status until it reads again.
    pub fn block_failed(&self, block: &str, why: &str) {
        self.with(|h| match h.failing_blocks.get_mut(block) {
            Some(w) if w == why => {}
            Some(w) => why.clone_into(w),
            None => {
                h.failing_blocks.insert(block.to_owned(), why.to_owned());
            }
        });
    }

    /// A register block read fine.
    pub fn block_read(&self, block: &str) {
        self.with(|h| {
            h.failing_blocks.remove(block);
        });
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        self.with(|h| h.clone())
    }
}

/// All devices' health handles, by device id.
#[derive(Debug, Clone, Default)]
pub struct HealthRegistry(Arc<Mutex<BTreeMap<String, DeviceHealth>>>);

impl HealthRegistry {
    /// The handle for `device`, created on first use.
    pub fn handle(&self, device: &str) -> DeviceHealth {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(device.to_owned()).or_default().clone()
    }

    /// Forget `device` (removed by a reload).
    pub fn remove(&self, device: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(device);
    }

    pub fn snapshot(&self) -> BTreeMap<String, HealthSnapshot> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }
}
