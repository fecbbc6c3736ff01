//! Configuration reload (SIGHUP), end to end: the real binary, a real
//! Mosquitto, pseudo-terminal scanners and a simulated Modbus PLC.
//!
//! - an invalid file is refused: the old config runs on, the log names
//!   file:line, and a `config-reload-failed` alarm reaches the MES;
//! - keys that need a restart are refused by name;
//! - a valid file is applied: a device added starts alone (the running
//!   scanner is not reopened), a new scan rule works with the open lot
//!   kept, `[mqtt]` changes reconnect, the status's `config` counts up;
//! - reloading in a loop under load (scans and PLC counts) loses nothing:
//!   every accepted seq reaches the MES, gap-free.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::ledger::{Faults, Ledger, cycles, scan_all, stream_scans};
use common::*;
use linegate::config::WordOrder;
use linegate::devices::modbus::sim::SimPlc;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";

/// Replace the config file and send SIGHUP.
fn reload(gw: &Gateway, toml: &str) {
    std::fs::write(&gw.config, toml).unwrap();
    gw.signal(libc::SIGHUP);
}

/// The latest retained status received.
fn last_status(rec: &Recorder) -> Option<Value> {
    rec.snapshot()
        .iter()
        .rev()
        .find(|m| m.topic == STATUS_TOPIC && m.json()["online"] == true)
        .map(|m| m.json())
}

async fn wait_config(rec: &Recorder, generation: u64) -> Value {
    rec.wait_for(&format!("a status with config {generation}"), |m| {
        m.iter()
            .any(|m| m.topic == STATUS_TOPIC && m.json()["config"] == generation)
    })
    .await;
    last_status(rec).unwrap()
}

fn alarms(rec: &Recorder, event: &str) -> Vec<Value> {
    first_copies(&rec.records(), |r| {
        r["kind"] == "alarm" && r["data"]["event"] == event
    })
}

#[tokio::test]
async fn an_invalid_file_or_a_restart_key_is_refused_and_the_old_config_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let good = config_toml(&dir.path().join("data"), broker.port, pty.slave_path());
    let mut gw = Gateway::start(dir.path(), &good);
    wait_config(&rec, 1).await;

    // Line 13 of the file: `port = "not a port"`.
    let bad = good.replacen(
        &format!("port = {}", broker.port),
        "port = \"not a port\"",
        1,
    );
    let line = bad.lines().position(|l| l.contains("not a port")).unwrap() + 1;
    reload(&gw, &bad);
    rec.wait_for("the config-reload-failed alarm", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "config-reload-failed")
    })
    .await;
    let alarm = &alarms(&rec, "config-reload-failed")[0];
    let message = alarm["data"]["message"].as_str().unwrap();
    let place = format!("linegate.toml:{line}:");
    assert!(message.contains(&place), "names file:line: {message}");
    assert!(message.contains("mqtt.port"), "{message}");
    assert!(
        gw.log_text().contains("configuration reload refused"),
        "{}",
        gw.log_text()
    );
    assert!(gw.log_text().contains(&place));

    // The old config runs on: scans flow, the generation stays.
    let mut inputs = Vec::new();
    scan_all(&pty, &["AFTER-BAD".to_owned()], &mut inputs).await;
    rec.wait_for("a scan after the refused reload", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "AFTER-BAD")
    })
    .await;

    // A key that needs a restart: refused by name, nothing applied.
    let moved = good.replace(
        &dir.path().join("data").display().to_string(),
        &dir.path().join("elsewhere").display().to_string(),
    );
    reload(&gw, &moved);
    rec.wait_for("a second alarm", |m| {
        m.iter()
            .filter(|m| m.json()["data"]["event"] == "config-reload-failed")
            .count()
            >= 2
    })
    .await;
    let second = &alarms(&rec, "config-reload-failed")[1];
    let message = second["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("gateway.data_dir changed: applied only by a restart"),
        "{message}"
    );
    assert!(!dir.path().join("elsewhere").exists());
    let status = last_status(&rec).unwrap();
    assert_eq!(status["config"], 1, "{status}");

    // The same from the shell: an invalid file is refused before the
    // daemon is asked (exit 64, file:line named) ...
    std::fs::write(&gw.config, &bad).unwrap();
    let out = linegate_reload(&gw.config);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&place),
        "{out:?}"
    );
    // ... and a key that needs a restart is refused by the daemon (exit 65).
    let store_key = good.replace("[mqtt]", "[store]\nmax_bytes = \"64MiB\"\n\n[mqtt]");
    std::fs::write(&gw.config, &store_key).unwrap();
    let out = linegate_reload(&gw.config);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store.max_bytes changed: applied only by a restart"),
        "{stderr}"
    );
    assert_eq!(gw.stop(), Some(0), "still the clean gateway it was");
}

/// `linegate reload --config FILE`.
fn linegate_reload(config: &Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["reload", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// A second scanner on `st10`, after the first.
fn with_second_scanner(toml: &str, path: &Path) -> String {
    format!(
        "{toml}\n[[device]]\nid = \"scanner-2\"\ntype = \"serial-scanner\"\nstation = \"st10\"\npath = \"{}\"\nsuffix = \"CRLF\"\n",
        path.display()
    )
}

/// A scan rule setting the operator (`OP` + 4 digits) at `st10`.
fn with_operator_rule(toml: &str) -> String {
    toml.replace(
        "id = \"st10\"\n",
        "id = \"st10\"\n\n  [[station.scan_rule]]\n  name = \"badge\"\n  pattern = '^OP[0-9]{4}$'\n  action = \"set-operator\"\n",
    )
}

#[tokio::test]
async fn a_valid_file_is_applied_device_by_device_with_the_open_lot_kept() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let pty2 = VirtualSerial::open().unwrap();
    let base = config_toml(&dir.path().join("data"), broker.port, pty.slave_path());
    let mut gw = Gateway::start(dir.path(), &base);
    wait_config(&rec, 1).await;
    let mut inputs = Vec::new();
    scan_all(
        &pty,
        &["LOT:L-1".to_owned(), "OP1234".to_owned()],
        &mut inputs,
    )
    .await;
    rec.wait_for("OP1234 as a plain scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "OP1234")
    })
    .await;
    let connected = gw.log_count("MQTT connected");

    // A device added, a rule added, a keepalive changed.
    let new = with_operator_rule(&with_second_scanner(&base, pty2.slave_path()))
        .replace("keepalive = \"5s\"", "keepalive = \"6s\"");
    reload(&gw, &new);
    let status = wait_config(&rec, 2).await;
    assert!(gw.log_text().contains("configuration reloaded"));
    let summary = gw
        .log_text()
        .lines()
        .find(|l| l.contains("applying the reloaded configuration"))
        .unwrap()
        .to_owned();
    assert!(summary.contains("devices added: scanner-2"), "{summary}");
    assert!(summary.contains("MQTT reconnects"), "{summary}");
    assert!(gw.log_count("MQTT connected") > connected);
    // The running scanner was left alone: opened once.
    rec.wait_for("scanner-2 in the status", |m| {
        m.iter()
            .any(|m| m.topic == STATUS_TOPIC && m.json()["devices"]["scanner-2"]["online"] == true)
    })
    .await;
    let status = last_status(&rec).unwrap_or(status);
    assert_eq!(status["devices"]["scanner-1"]["connects"], 1, "{status}");

    // The new rule works, the lot opened before the reload is still open.
    scan_all(&pty2, &["OP5678".to_owned()], &mut inputs).await;
    rec.wait_for("the operator set by the new rule", |m| {
        m.iter().any(|m| {
            let v = m.json();
            v["kind"] == "context" && v["data"]["value"] == "OP5678"
        })
    })
    .await;
    scan_all(&pty, &["AFTER".to_owned()], &mut inputs).await;
    rec.wait_for("a scan after the reload", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "AFTER")
    })
    .await;
    let after = first_copies(&rec.records(), |r| r["data"]["code"] == "AFTER");
    assert_eq!(after[0]["lot"], "L-1", "{}", after[0]);
    assert_eq!(after[0]["operator"], "OP5678", "{}", after[0]);

    // From the shell: applied, the new generation printed.
    let out = linegate_reload(&gw.config);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configuration reloaded: generation 3\n"
    );
    assert_eq!(gw.stop(), Some(0));
}

/// The base config plus a modbus-tcp counter `press` polled every `poll`.
fn with_press(toml: &str, plc_port: u16, poll: &str) -> String {
    format!(
        r#"{toml}
[[device]]
id = "press"
type = "modbus-tcp"
station = "st10"
host = "127.0.0.1"
port = {plc_port}
poll_interval = "{poll}"
timeout = "200ms"
reconnect_min = "20ms"
reconnect_max = "200ms"

  [[device.register]]
  name = "good"
  address = "40001"
  type = "u32"
  word_order = "CDAB"
  role = "counter"
  max_rate = 100000000
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_in_a_loop_under_load_loses_nothing() {
    let reloads = cycles(30, 300);
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let plc = SimPlc::start().await.unwrap();
    let base = config_toml(&dir.path().join("data"), broker.port, pty.slave_path());
    // Two configs to alternate: the press restarted (poll interval), the
    // stations rebuilt (a rule), the uplink reconnected (keepalive).
    let a = with_press(&base, plc.port(), "20ms");
    let b = with_operator_rule(&with_press(&base, plc.port(), "25ms"))
        .replace("keepalive = \"5s\"", "keepalive = \"6s\"");
    let mut gw = Gateway::start(dir.path(), &a);
    wait_config(&rec, 1).await;
    pty.write(b"LOT:L-RELOAD\r\n").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream_scans(pty.clone(), stop.clone(), 5));
    let counting = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                plc.set_holding_u32(0, n, WordOrder::Cdab);
            }
            n
        })
    };
    rec.wait_for("live scans", |m| m.len() > 50).await;
    for i in 0..reloads {
        let next = if i % 2 == 0 { &b } else { &a };
        reload(&gw, next);
        assert!(
            gw.wait_log_count("configuration reloaded", i as usize + 1, WAIT)
                .await,
            "reload {} was not applied",
            i + 1
        );
        // Records flow between reloads.
        let committed = gw.last_committed();
        assert!(gw.wait_committed(committed + 20, WAIT).await);
    }
    stop.store(true, Ordering::SeqCst);
    let inputs = writer.await.unwrap();
    let counted = counting.await.unwrap();
    let last = &inputs.last().expect("scans were sent").code;
    rec.wait_for("the last scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == last.as_str())
    })
    .await;
    let last_seq = gw.last_committed();
    rec.wait_for("an empty queue", |m| {
        m.iter().any(|m| {
            m.topic == STATUS_TOPIC
                && m.json()["queue"]["depth"] == 0
                && m.json()["queue"]["last_seq"]
                    .as_u64()
                    .is_some_and(|s| s >= last_seq)
        })
    })
    .await;
    let report = Ledger::check(&gw.commits(), &rec.snapshot(), &inputs);
    eprintln!("{reloads} reloads under load, the PLC at {counted}: {report}");
    report.summary("reload-loop", Faults::default());
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
    let counts = first_copies(&rec.records(), |r| r["kind"] == "count");
    assert!(counts.len() > 10, "PLC counts flowed: {}", counts.len());
    let status = wait_config(&rec, reloads + 1).await;
    assert_eq!(status["config"], reloads + 1);
    assert!(alarms(&rec, "config-reload-failed").is_empty());
    assert_eq!(gw.stop(), Some(0));
}
