//! Connection faults between the gateway and the broker, each ending with the
//! ledger check (accepted against delivered). Broker SIGKILL and gateway
//! SIGKILL mid-burst are in `pipeline.rs`; this file adds the half-open
//! connection of a frozen broker.

mod common;

use std::time::Duration;

use common::ledger::{scan_all, settle_and_check};
use common::*;
use linegate::devices::pty::VirtualSerial;

const FILTER: &str = "plant1/line3/#";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_frozen_with_sigstop_then_resumed_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    // The MES keeps its connection through the freeze (long keep-alive).
    let rec = Recorder::start_with_keep_alive(broker.port, FILTER, Duration::from_secs(120)).await;
    let pty = VirtualSerial::open().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
    );
    rec.wait_for("scanner online", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-online")
    })
    .await;
    let mut inputs = Vec::new();
    let before: Vec<String> = (0..200).map(|i| format!("F-{i:04}")).collect();
    scan_all(&pty, &before, &mut inputs).await;

    // Frozen: the TCP connection stays open, nothing answers (half-open).
    let pid = broker.pid().expect("broker runs") as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let during: Vec<String> = (0..300).map(|i| format!("G-{i:04}")).collect();
    scan_all(&pty, &during, &mut inputs).await;
    // The gateway notices the dead link by its keep-alive (5 s here).
    let noticed = gw.wait_log("MQTT connection lost", WAIT).await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(noticed, "the gateway never noticed the frozen broker");

    let after: Vec<String> = (0..100).map(|i| format!("H-{i:04}")).collect();
    scan_all(&pty, &after, &mut inputs).await;
    rec.wait_for("the last scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "H-0099")
    })
    .await;
    let report = settle_and_check(&gw, &rec, &inputs).await;
    eprintln!("ledger after a frozen broker: {report}");
    report.assert_nothing_lost();
    assert!(
        report.undelivered_inputs.is_empty(),
        "{report}: {:?}",
        report.undelivered_inputs
    );
    assert_eq!(
        report.accepted as usize,
        inputs.len() + 1,
        "every scan plus the online alarm"
    );
}
