//! A simulated press PLC for a gateway running elsewhere (e.g. an ARM build
//! under qemu-user, `.ci/cross`): the real Modbus TCP server of the tests
//! and the demo ([`linegate::devices::modbus::sim::SimPlc`]) on 127.0.0.1,
//! whose good-part counter (holding register 0, u16) counts up by one every
//! `INTERVAL`.
//!
//! `cargo run --example sim-plc -- [INTERVAL]` (default 200ms) prints
//! `listening on 127.0.0.1:PORT` once, then runs until killed.

use std::process::ExitCode;
use std::time::Duration;

use linegate::devices::modbus::sim::SimPlc;

fn main() -> ExitCode {
    let interval = match std::env::args()
        .nth(1)
        .map(|s| humantime::parse_duration(&s))
    {
        None => Duration::from_millis(200),
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            eprintln!("usage: sim-plc [INTERVAL]  (e.g. 200ms; not zero)");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let plc = match SimPlc::start().await {
            Ok(plc) => plc,
            Err(err) => {
                eprintln!("error: cannot listen on 127.0.0.1: {err}");
                return ExitCode::FAILURE;
            }
        };
        println!("listening on {}", plc.addr());
        let mut count: u16 = 0;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            count = count.wrapping_add(1);
            plc.set_holding(0, &[count]);
        }
    })
}
