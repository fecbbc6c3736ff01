//! Devices: turn device I/O into typed [`Reading`]s.
//!
//! Each device runs as its own task with its own timeouts, backoff and
//! [`health::DeviceHealth`]; a dead device affects only itself. Devices know
//! protocols, framing and reconnects; they know nothing of lots or MQTT.

pub mod backoff;
pub mod framing;
pub mod health;
pub mod modbus;
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
    /// One poll of a PLC: the decoded values that belong to this station, in
    /// register-map order.
    Sample(Vec<Sample>),
    /// The device came (back) online.
    Online,
    /// The device went offline; the error says why.
    Offline(String),
}

/// One mapped PLC value from one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The register map entry's name.
    pub name: Arc<str>,
    pub role: crate::config::Role,
    /// The raw bit pattern, zero-extended (two's complement for signed types,
    /// IEEE 754 bits for f32): what counter wrap arithmetic works on.
    pub raw: u64,
    /// Width of `raw` in bits (1 for bool, 16, 32 or 64).
    pub bits: u32,
    /// The decoded number (signed types sign-extended, f32 as float), with
    /// `scale` and `offset` applied for the `value` role.
    pub value: f64,
}
