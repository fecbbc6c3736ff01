//! Application: wiring of the tasks, signals and the command line.
//!
//! `gateway` starts and stops the pipeline, the uplink and the devices;
//! `pipeline` is the single writer of the store, and applies the store's
//! capacity policy (`capacity`); `control` is the local
//! control socket (`linegate lot …`, `linegate status`); `metrics` the
//! optional Prometheus endpoint; `cli` maps subcommands to those and
//! errors to exit codes; `demo` runs everything with simulated devices and an
//! embedded broker.

pub mod capacity;
pub mod cli;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
pub mod gateway;
pub mod journal;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod service;
