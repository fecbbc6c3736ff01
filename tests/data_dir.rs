//! The data directory deleted or replaced under a running gateway, end to
//! end: the real binary, a real Mosquitto and a pseudo-terminal scanner.
//! The gateway notices within a second, sends a `store-lost` alarm (the
//! broker is up here), and exits 74 without writing anything into whatever
//! now sits at the path; restarted, it starts a new store whose new epoch
//! is announced by a `store-created` alarm, so the MES can tell its seqs
//! (which start again at 1) from the old ones. With the broker down the
//! alarm cannot leave, and the gateway still stops after its bounded wait
//! for the uplink. Runs on the default engine;
//! `LINEGATE_TEST_ENGINE=sled` runs it on sled.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ledger::scan_all;
use common::*;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";

/// The first record of `event` seen with an epoch other than `not`.
fn alarm(rec: &Recorder, event: &str, not: Option<&str>) -> Option<Value> {
    rec.records().into_iter().find(|v| {
        v["kind"] == "alarm"
            && v["data"]["event"] == event
            && v["epoch"].as_str().is_some_and(|e| Some(e) != not)
    })
}

/// Run a gateway, take its data directory away with `take_away`, and
/// check the alarm, the exit and the new epoch after the restart.
async fn data_dir_taken_away(take_away: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &config_toml(&data, broker.port, pty.slave_path()),
    );

    // A first start announces its new store: seq 1 of a new epoch.
    let created = wait_alarm(&rec, "store-created", None).await;
    assert_eq!(created["seq"], 1, "{created}");
    let first = created["epoch"].as_str().unwrap().to_owned();
    let message = created["data"]["message"].as_str().unwrap();
    assert!(message.contains("lot numbering"), "{message}");

    let mut inputs = Vec::new();
    let codes: Vec<String> = (0..20).map(|i| format!("A-{i:04}")).collect();
    scan_all(&pty, &codes, &mut inputs).await;
    rec.wait_for("the scans", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "A-0019")
    })
    .await;
    assert!(
        rec.records()
            .iter()
            .all(|r| r["epoch"].as_str() == Some(first.as_str())),
        "every record carries the store's epoch"
    );

    take_away(&data);
    let code = gw.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        code.ok(),
        Some(Some(74)),
        "exit 74 after the data directory went away:\n{}",
        gw.log_text()
    );
    let lost = wait_alarm(&rec, "store-lost", None).await;
    assert_eq!(lost["epoch"].as_str(), Some(first.as_str()), "{lost}");
    assert!(
        lost["seq"].as_u64() > Some(20),
        "the alarm follows the records: {lost}"
    );
    assert!(
        !data.join("seq.floor").exists(),
        "nothing written into what now sits at the data directory's path"
    );

    // Restarted: a new store, a new epoch, announced; seq starts again.
    gw.spawn();
    let created = wait_alarm(&rec, "store-created", Some(&first)).await;
    let second = created["epoch"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(created["seq"], 1, "{created}");
    let codes: Vec<String> = (0..5).map(|i| format!("B-{i:04}")).collect();
    scan_all(&pty, &codes, &mut inputs).await;
    rec.wait_for("the scans after the restart", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "B-0004")
    })
    .await;
    let after: Vec<Value> = rec
        .records()
        .into_iter()
        .filter(|r| {
            r["data"]["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("B-"))
        })
        .collect();
    assert!(
        after
            .iter()
            .all(|r| r["epoch"].as_str() == Some(second.as_str())),
        "{after:?}"
    );
    // Same seqs as records of the first epoch: told apart by the epoch.
    assert!(
        after.iter().any(|r| r["seq"].as_u64() <= Some(20)),
        "{after:?}"
    );
    rec.wait_for("a status with the new epoch", |m| {
        m.iter()
            .any(|m| m.topic == STATUS_TOPIC && m.json()["epoch"].as_str() == Some(second.as_str()))
    })
    .await;
    assert_eq!(gw.stop(), Some(0), "the new store stops cleanly");
}

/// Wait (bounded) for the alarm `event` with an epoch other than `not`.
async fn wait_alarm(rec: &Recorder, event: &str, not: Option<&str>) -> Value {
    rec.wait_for(&format!("a {event} alarm"), |m| {
        m.iter().any(|m| {
            let v = m.json();
            v["kind"] == "alarm"
                && v["data"]["event"] == event
                && v["epoch"].as_str().is_some_and(|e| Some(e) != not)
        })
    })
    .await;
    alarm(rec, event, not).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_data_directory_stops_the_gateway_and_a_new_epoch_is_announced() {
    data_dir_taken_away(|data| std::fs::remove_dir_all(data).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_data_directory_stops_the_gateway_and_the_old_one_is_left_alone() {
    data_dir_taken_away(|data| {
        let away = data.with_file_name("data.away");
        std::fs::rename(data, &away).unwrap();
        std::fs::create_dir(data).unwrap();
    })
    .await;
}

/// With the broker unreachable the `store-lost` alarm cannot leave: the
/// gateway still stops (exit 74) once its wait for the uplink is over,
/// and the new epoch's `store-created` alarm is what the MES sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_the_gateway_still_stops_and_the_new_epoch_tells() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &config_toml(&data, broker.port, pty.slave_path()),
    );
    let created = wait_alarm(&rec, "store-created", None).await;
    let first = created["epoch"].as_str().unwrap().to_owned();

    broker.kill();
    rec.wait_disconnected().await;
    std::fs::remove_dir_all(&data).unwrap();
    let code = gw.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code.ok(), Some(Some(74)), "{}", gw.log_text());
    assert!(
        gw.log_text().contains("lost with the data directory"),
        "the undelivered records are logged as lost"
    );

    broker.restart();
    rec.wait_subscribed().await;
    gw.spawn();
    let created = wait_alarm(&rec, "store-created", Some(&first)).await;
    assert_eq!(created["seq"], 1);
    assert!(
        alarm(&rec, "store-lost", None).is_none(),
        "the store-lost alarm was lost with its store"
    );
    assert_eq!(gw.stop(), Some(0));
}

/// Every path under `data` (the control socket excepted) with its mode.
fn modes(data: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let mut out = Vec::new();
    let mut todo = vec![data.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_socket() {
            continue;
        }
        out.push((p.clone(), meta.mode() & 0o7777));
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// The data directory 0710 (its group may reach the control socket, not
/// read), everything in it private to the service user.
fn assert_private(data: &Path) {
    let all = modes(data);
    assert!(
        all.iter().any(|(p, _)| p.ends_with("seq.floor")),
        "no seq.floor in {all:?}"
    );
    for (path, mode) in &all {
        let allowed = if path == data { 0o010 } else { 0 };
        assert_eq!(
            mode & 0o077 & !allowed,
            0,
            "{} is open to other users: {mode:04o}",
            path.display()
        );
    }
    assert_eq!(all[0].1, 0o710, "the data directory's mode");
}

/// Issue: the store and `seq.floor` were world-readable. A new data
/// directory is made private; an existing open one is reported at start and
/// made private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_to_the_service_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &config_toml(&data, broker.port, pty.slave_path()),
    );
    wait_alarm(&rec, "store-created", None).await;
    assert_private(&data);
    assert_eq!(gw.stop(), Some(0), "{}", gw.log_text());

    // Opened up, as an older version or a hand-made directory left it.
    for (path, _) in modes(&data) {
        let mode = if path.is_dir() { 0o777 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    gw.spawn();
    assert!(
        gw.wait_log("made private to the service user", WAIT).await,
        "{}",
        gw.log_text()
    );
    assert_private(&data);
    pty.write(b"AFTER-1\r\n").await.unwrap();
    rec.wait_for("a scan after the restart", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "AFTER-1")
    })
    .await;
    assert_private(&data);
}
