//! linegate: the edge gateway of a factory workstation.
//!
//! Data flows one way through the modules (see ARCHITECTURE.md):
//! `devices` (device I/O → [`devices::Reading`]) → `station` (context, rules →
//! [`record::Record`]) → `store` (durable queue, `seq` assigned at commit) →
//! `uplink` (MQTT, delete on PUBACK). `config` turns TOML into a validated
//! [`config::Config`]; `app` wires the tasks together and owns the CLI.

pub mod app;
pub mod clock;
pub mod config;
pub mod devices;
pub mod gs1;
pub mod numbering;
pub mod record;
pub mod station;
pub mod store;
pub mod tasks;
pub mod uplink;
