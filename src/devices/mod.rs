//! Devices: turn device I/O into typed [`Reading`]s.
//!
//! Each device runs as its own task with its own timeouts, backoff and
//! [`health::DeviceHealth`]; a dead device affects only itself. Devices know
//! protocols, framing and reconnects; they know nothing of lots or MQTT.

pub mod backoff;
pub mod framing;
pub mod health;
pub mod pty;
pub mod scanner;
pub mod serial;

use std::sync::Arc;

/// One thing a device observed, handed to the station that owns the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: Arc<str>,
    pub station: Arc<str>,
    /// Capture time, ms since the Unix epoch.
    pub ts_ms: u64,
    pub event: DeviceEvent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// A complete scanner frame, prefix/suffix removed, bytes exactly as received.
    Scan(Vec<u8>),
    /// The device came (back) online.
    Online,
    /// The device went offline; the error says why.
    Offline(String),
}
