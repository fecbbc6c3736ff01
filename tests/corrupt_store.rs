//! Torn and corrupt store files, end to end: the real binary, a real
//! Mosquitto and a pseudo-terminal scanner. Records are queued while the
//! broker is down, the gateway is stopped, its store is damaged (a tail cut
//! off, bytes flipped, a file deleted), and it is started again: it keeps
//! running (no exit 74, so no crash loop under systemd), the MES gets the
//! `store-damaged` alarm and every record that could be salvaged, no seq is
//! reused (the ledger finds no conflict), and the restart after that is
//! clean. Runs on the default engine (redb for a new store);
//! `LINEGATE_TEST_ENGINE=sled` runs it on sled.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::ledger::{Faults, scan_all, settle_and_check};
use common::*;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const ALARM_TOPIC: &str = "plant1/line3/gateway/gw-test/alarm";

/// Whether the store in `store` is redb's (the default engine, or
/// `LINEGATE_TEST_ENGINE`): told by its files.
fn redb(store: &Path) -> bool {
    store.join("linegate.redb").exists()
}

/// The engine's main file in the store directory.
fn main_file(store: &Path) -> PathBuf {
    store.join(if redb(store) { "linegate.redb" } else { "db" })
}

/// The log of the gateway's current run (since its last start).
fn this_run(gw: &Gateway) -> String {
    let log = gw.log_text();
    log.rsplit("---- start")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Wait (bounded) until the current run has logged `needle`. The log file
/// has no event to wait on, so it is re-read every 20 ms, as the harness
/// does.
async fn wait_this_run(gw: &Gateway, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if this_run(gw).contains(needle) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Scans written after the store was damaged and the gateway restarted.
const AFTER: usize = 50;

/// Whether the damage of a test must be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// It must be found: salvage and alarm.
    Damage,
    /// It is none: the engine rebuilds what was touched by itself.
    NoDamage,
    /// Either (bits flipped in pages that may be free): if none is found,
    /// nothing may be lost or changed.
    Either,
}

/// Run the scenario with `damage` applied to the stopped gateway's store
/// directory; it says whether that damage must be found.
async fn damaged_store_restart(name: &str, damage: impl FnOnce(&Path) -> Expect) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &config_toml(&data, broker.port, pty.slave_path()),
    );
    rec.wait_for("scanner online", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-online")
    })
    .await;

    // Delivered before the outage.
    let mut inputs = Vec::new();
    let before: Vec<String> = (0..100).map(|i| format!("D-{i:04}")).collect();
    scan_all(&pty, &before, &mut inputs).await;
    rec.wait_for("the scans before the outage", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "D-0099")
    })
    .await;
    let delivered_before = gw.last_committed();

    // Queued while the broker is down, then the gateway stopped cleanly.
    broker.kill();
    rec.wait_disconnected().await;
    let queued: Vec<String> = (0..300).map(|i| format!("Q-{i:04}")).collect();
    scan_all(&pty, &queued, &mut inputs).await;
    let target = delivered_before + queued.len() as u64;
    assert!(
        gw.wait_committed(target, WAIT).await,
        "the queued scans were never committed"
    );
    let accepted_before = gw.last_committed();
    assert_eq!(gw.stop(), Some(0), "a clean stop");

    let expect = damage(&data.join("store"));

    broker.restart();
    rec.wait_subscribed().await;
    let seen_before = rec.snapshot().len();
    gw.spawn();
    assert!(
        wait_this_run(&gw, "linegate running").await,
        "the gateway did not start after the damage:\n{}",
        gw.log_text()
    );
    let log = this_run(&gw);
    assert!(!log.contains("cannot open the store"), "{log}");
    let expect_alarm = log.contains("store salvaged");
    match expect {
        Expect::Damage => assert!(expect_alarm, "damage not found: {log}"),
        Expect::NoDamage => assert!(!expect_alarm, "{log}"),
        Expect::Either => eprintln!("{name}: damage found: {expect_alarm}"),
    }

    // It keeps running: new scans are accepted and delivered.
    let after: Vec<String> = (0..AFTER).map(|i| format!("N-{i:04}")).collect();
    scan_all(&pty, &after, &mut inputs).await;
    let last_code = format!("N-{:04}", AFTER - 1);
    rec.wait_for("the scans after the restart", |m| {
        m.iter()
            .any(|m| m.json()["data"]["code"] == last_code.as_str())
    })
    .await;

    let since: Vec<Value> = rec.snapshot()[seen_before..]
        .iter()
        .map(Message::json)
        .collect();
    let news: Vec<u64> = since
        .iter()
        .filter(|v| {
            v["data"]["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("N-"))
        })
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert_eq!(
        news.iter().copied().collect::<BTreeSet<_>>().len(),
        AFTER,
        "every scan after the restart delivered"
    );
    let min_new = news.iter().copied().min().unwrap_or(0);
    assert!(
        min_new > accepted_before,
        "new seqs continue above every seq accepted before ({min_new} <= {accepted_before})"
    );

    let report = settle_and_check(&gw, &rec, &inputs).await;
    eprintln!("ledger after {name}: {report}");
    assert_eq!(report.conflicts, 0, "a seq reused: {report}");
    assert_eq!(report.corrupt, 0, "{report}");
    assert_eq!(report.order_violations, 0, "{report}");

    let queued_seqs = delivered_before + 1..=accepted_before;
    if expect_alarm {
        let alarms: Vec<&Value> = since
            .iter()
            .filter(|v| v["kind"] == "alarm" && v["data"]["event"] == "store-damaged")
            .collect();
        assert_eq!(alarms.len(), 1, "one store-damaged alarm: {since:?}");
        let alarm = alarms[0];
        assert!(
            rec.snapshot()
                .iter()
                .any(|m| m.topic == ALARM_TOPIC && m.json()["seq"] == alarm["seq"]),
            "the alarm is a gateway-level record"
        );
        let seq = alarm["seq"].as_u64().unwrap();
        assert!(
            seq > accepted_before && seq < min_new,
            "the alarm's seq continues above everything handed out: {seq}"
        );
        let message = alarm["data"]["message"].as_str().unwrap();
        let count = |label: &str| -> u64 {
            let at = message
                .find(label)
                .unwrap_or_else(|| panic!("no `{label}` in {message}"));
            message[..at]
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count before `{label}` in {message}"))
        };
        let salvaged_records = count("records salvaged");
        assert!(message.contains("store.damaged-"), "{message}");
        // Every salvaged record reached the MES again (before the alarm,
        // which has the highest seq of the rebuilt store).
        let resent: BTreeSet<u64> = since
            .iter()
            .filter_map(|v| v["seq"].as_u64())
            .filter(|s| *s < seq)
            .collect();
        assert_eq!(
            resent.len() as u64,
            salvaged_records,
            "every salvaged record delivered: {message}"
        );
        // What was lost is only what the damage destroyed: records queued
        // during the outage, never delivered.
        assert!(
            report.lost.iter().all(|s| queued_seqs.contains(s)),
            "lost {:?} outside the queued seqs {queued_seqs:?}: {report}",
            report.lost
        );
        let queued_resent = resent.iter().filter(|s| queued_seqs.contains(s)).count() as u64;
        assert_eq!(
            report.lost_count + queued_resent,
            queued.len() as u64,
            "{report}"
        );
        eprintln!(
            "{name}: {salvaged_records} records salvaged, {} of {} queued records lost; alarm: {message}",
            report.lost_count,
            queued.len()
        );
    } else {
        assert_eq!(report.lost_count, 0, "{report}");
        assert!(
            !since.iter().any(|v| v["data"]["event"] == "store-damaged"),
            "no alarm without damage"
        );
    }

    // A further restart is clean: no second salvage, no alarm.
    assert_eq!(gw.stop(), Some(0));
    let restarted_at = rec.snapshot().len();
    gw.spawn();
    assert!(wait_this_run(&gw, "linegate running").await);
    let last_run = this_run(&gw);
    assert!(!last_run.contains("store damaged"), "{last_run}");
    pty.write(b"LAST-1\r\n").await.unwrap();
    rec.wait_for("the scan after the clean restart", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "LAST-1")
    })
    .await;
    assert!(
        !rec.snapshot()[restarted_at..]
            .iter()
            .any(|m| m.json()["data"]["event"] == "store-damaged")
    );
    let damaged_copies = std::fs::read_dir(&data)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("store.damaged-")
        })
        .count();
    assert_eq!(damaged_copies, usize::from(expect_alarm));
    // The records the damage destroyed were checked above to be exactly
    // the queued ones the salvage could not read, announced by the alarm.
    report.summary_with_reported(
        name,
        Faults {
            disk_faults: 1,
            ..Faults::default()
        },
        if expect_alarm { report.lost_count } else { 0 },
    );
}

/// The tail cut: 1000 bytes of redb's file (inside its last page), a
/// quarter of sled's log (sled then opens an older state without an error;
/// the seq floor's clean mark finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_with_its_tail_cut_off() {
    damaged_store_restart("a_store_file_with_its_tail_cut_off", |store| {
        let file = main_file(store);
        let len = std::fs::metadata(&file).unwrap().len();
        let cut = if redb(store) { 1000 } else { len / 4 };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        Expect::Damage
    })
    .await;
}

/// One bit flipped in 8 places spread over the file, past its first 8 KiB
/// (a damaged header loses everything, which the unit tests cover). sled's
/// checksums always see it; in a redb file they may all land in free pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_with_flipped_bytes() {
    damaged_store_restart("a_store_file_with_flipped_bytes", |store| {
        let file = main_file(store);
        let mut bytes = std::fs::read(&file).unwrap();
        let len = bytes.len();
        for i in 1..=8 {
            bytes[8192 + (len - 8192) / 10 * i] ^= 0x08;
        }
        std::fs::write(&file, bytes).unwrap();
        Expect::Either
    })
    .await;
}

/// redb: its one file deleted (the seq floor shows a store existed).
/// sled: its config file deleted (it writes a new one; nothing is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_store_file() {
    damaged_store_restart("a_deleted_store_file", |store| {
        if redb(store) {
            std::fs::remove_file(main_file(store)).unwrap();
            Expect::Damage
        } else {
            std::fs::remove_file(store.join("conf")).unwrap();
            Expect::NoDamage
        }
    })
    .await;
}
