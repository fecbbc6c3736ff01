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
    /// Times the device was (re)opened successfully.
    pub connects: u64,
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

    pub fn snapshot(&self) -> BTreeMap<String, HealthSnapshot> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }
}
