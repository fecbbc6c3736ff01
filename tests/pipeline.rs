//! End to end: serial scanner (pseudo-terminal) → linegate (real binary) →
//! Mosquitto (real broker) → recording MES subscriber. Faults on purpose:
//! broker killed, gateway SIGKILLed, scanner unplugged, bad frames.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use common::ledger::{Faults, Input, scan_all, settle_and_check};
use common::*;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const SCAN_TOPIC: &str = "plant1/line3/st10/scan";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";

fn scans_with_code<'a>(records: &'a [Value], code: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "scan" && r["data"]["code"] == code)
        .collect()
}

/// Distinct seqs in first-arrival order; panics if one seq carried two different payloads.
fn check_seqs(records: &[Value]) -> Vec<u64> {
    let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
    let mut order = Vec::new();
    for r in records {
        let seq = r["seq"].as_u64().expect("seq is a number");
        match by_seq.get(&seq) {
            Some(first) => assert_eq!(*first, r, "seq {seq} reused for a different record"),
            None => {
                by_seq.insert(seq, r);
                order.push(seq);
            }
        }
    }
    order
}

fn assert_gap_free(seqs: &[u64]) {
    let set: BTreeSet<u64> = seqs.iter().copied().collect();
    let max = set.iter().next_back().copied().unwrap_or(0);
    let expected: BTreeSet<u64> = (1..=max).collect();
    let missing: Vec<_> = expected.difference(&set).take(10).collect();
    assert!(missing.is_empty(), "seq gaps (first missing: {missing:?})");
}

async fn wait_online(rec: &Recorder) {
    rec.wait_for("scanner online alarm", |m| {
        m.iter().any(|m| {
            m.topic == "plant1/line3/st10/alarm" && m.json()["data"]["event"] == "device-online"
        })
    })
    .await;
}

fn start(dir: &Path, port: u16, scanner: &Path) -> Gateway {
    start_on(None, dir, port, scanner)
}

/// [`start`] with the store on `engine` (`None`: the default engine).
fn start_on(engine: Option<&'static str>, dir: &Path, port: u16, scanner: &Path) -> Gateway {
    let cfg = GatewayConfig {
        engine,
        ..GatewayConfig::default()
    };
    Gateway::start(dir, &cfg.toml(&dir.join("data"), port, scanner))
}

/// The usual set-up: a broker, the MES recorder, a scanner pty and a running
/// gateway whose scanner is online.
struct Rig {
    gw: Gateway,
    pty: VirtualSerial,
    rec: Recorder,
    _broker: Mosquitto,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        Rig::start_on(None).await
    }

    /// The rig with the store on `engine` (`None`: the default engine).
    async fn start_on(engine: Option<&'static str>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start();
        let rec = Recorder::start(broker.port, FILTER).await;
        let pty = VirtualSerial::open().unwrap();
        let gw = start_on(engine, dir.path(), broker.port, pty.slave_path());
        wait_online(&rec).await;
        if let Some(engine) = engine {
            let log = gw.log_text();
            assert!(
                log.contains(&format!("engine=\"{engine}\"")),
                "store not opened on {engine}:\n{log}"
            );
        }
        Rig {
            gw,
            pty,
            rec,
            _broker: broker,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_reaches_the_mes_with_every_contract_field() {
    // Bound in this order so the gateway is dropped (killed) first.
    let Rig {
        _dir,
        _broker,
        rec,
        pty,
        mut gw,
    } = Rig::start().await;

    let code = b"]d201095060001343521726123110L24A0173\x1d21SN000123";
    pty.write(b"LOT:L24A0173\r\nWO123456\r\n").await.unwrap();
    pty.write(&[&code[..], b"\r\n"].concat()).await.unwrap();
    rec.wait_for("the scan", |m| m.iter().any(|m| m.topic == SCAN_TOPIC))
        .await;

    let scan = rec
        .snapshot()
        .into_iter()
        .find(|m| m.topic == SCAN_TOPIC)
        .unwrap();
    assert!(!scan.retain);
    let v = scan.json();
    assert_eq!(v["v"], 2);
    assert_eq!(v["gateway"], "gw-test");
    assert_eq!(v["site"], "plant1");
    assert_eq!(v["line"], "line3");
    assert!(v["seq"].as_u64().unwrap() >= 1);
    humantime::parse_rfc3339(v["ts"].as_str().unwrap()).expect("ts is RFC 3339");
    assert!(v["ts"].as_str().unwrap().ends_with('Z'), "ts is UTC");
    assert!(v["clock_synced"].is_boolean());
    assert_eq!(v["station"], "st10");
    assert_eq!(v["device"], "scanner-1");
    assert_eq!(v["kind"], "scan");
    assert_eq!(v["lot"], "L24A0173");
    assert_eq!(v["order"], "WO123456");
    assert!(v.get("operator").is_none(), "unknown operator is absent");
    assert_eq!(v["data"]["code"], String::from_utf8(code.to_vec()).unwrap());
    assert_eq!(v["data"]["symbology"], "]d2");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"]["raw_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, code, "raw bytes survive exactly, GS included");

    // The lot came from a scan rule as a `lot` record, the order as a
    // `context` record; the scan itself carries its GS1 reading.
    let records = rec.records();
    let lots: Vec<_> = records.iter().filter(|r| r["kind"] == "lot").collect();
    assert_eq!(lots.len(), 1);
    assert_eq!(
        (&lots[0]["lot"], &lots[0]["data"]["event"]),
        (&"L24A0173".into(), &"opened".into())
    );
    assert_eq!(lots[0]["data"]["rule"], "lot-label");
    let ctx: Vec<_> = records.iter().filter(|r| r["kind"] == "context").collect();
    assert_eq!(ctx.len(), 1);
    assert_eq!(
        (&ctx[0]["data"]["field"], &ctx[0]["data"]["value"]),
        (&"order".into(), &"WO123456".into())
    );
    assert_eq!(v["data"]["gs1"]["01"], "09506000134352");

    // Retained status: online with the device's health; offline after a clean stop.
    rec.wait_for("status with the scanner online", |m| {
        m.iter()
            .any(|m| m.topic == STATUS_TOPIC && m.json()["devices"]["scanner-1"]["online"] == true)
    })
    .await;
    assert_eq!(gw.stop(), Some(0));
    rec.wait_for("offline status", |m| {
        m.iter()
            .rev()
            .find(|m| m.topic == STATUS_TOPIC)
            .is_some_and(|m| m.json()["online"] == false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_scans_get_a_thousand_gap_free_seqs() {
    // Bound in this order so the gateway is dropped (killed) first.
    let Rig {
        _dir,
        _broker,
        rec,
        pty,
        gw: _gw,
    } = Rig::start().await;

    let burst: Vec<u8> = (0..1000)
        .flat_map(|i| format!("ITEM-{i:04}\r\n").into_bytes())
        .collect();
    pty.write(&burst).await.unwrap();
    rec.wait_records(1002).await; // 1000 scans, the online alarm, store-created

    let records = rec.records();
    let seqs = check_seqs(&records);
    assert_gap_free(&seqs);
    let scans: Vec<&Value> = records.iter().filter(|r| r["kind"] == "scan").collect();
    let codes: Vec<String> = scans
        .iter()
        .map(|r| r["data"]["code"].as_str().unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), 1000);
    let scan_seqs: Vec<u64> = scans.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        scan_seqs.windows(2).all(|w| w[0] < w[1]),
        "scans arrive in seq order"
    );
    for (i, code) in codes.iter().enumerate() {
        assert_eq!(code, &format!("ITEM-{i:04}"), "scan order preserved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_burst_loses_nothing() {
    broker_killed_mid_burst(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_burst_loses_nothing_on_sled() {
    broker_killed_mid_burst(Some("sled")).await;
}

/// Broker killed during a burst, a second burst during the outage: every
/// scan of both arrives, seqs gap-free and first arrivals in order.
async fn broker_killed_mid_burst(engine: Option<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let gw = start_on(engine, dir.path(), proxy.port, pty.slave_path());
    wait_online(&rec).await;
    if let Some(engine) = engine {
        assert!(gw.log_text().contains(&format!("engine=\"{engine}\"")));
    }

    let first: Vec<u8> = (0..300)
        .flat_map(|i| format!("A-{i:04}\r\n").into_bytes())
        .collect();
    pty.write(&first).await.unwrap();
    rec.wait_for("some of the burst", |m| m.len() > 50).await;
    broker.kill();
    rec.wait_disconnected().await;
    let second: Vec<u8> = (0..300)
        .flat_map(|i| format!("B-{i:04}\r\n").into_bytes())
        .collect();
    pty.write(&second).await.unwrap();

    // Bring the broker back, let the MES resubscribe first, then the gateway in.
    proxy.set_accepting(false);
    broker.restart();
    rec.wait_subscribed().await;
    proxy.set_accepting(true);
    // The birth status after the outage shows the backlog and its age.
    rec.wait_for("status with a backlog", |m| {
        m.iter().any(|m| {
            let v = m.json();
            m.topic == STATUS_TOPIC
                && v["queue"]["depth"].as_u64().is_some_and(|d| d > 0)
                && v["queue"]["oldest_age_s"].as_f64().is_some_and(|a| a > 0.0)
        })
    })
    .await;
    rec.wait_for("every scan of both bursts", |m| {
        let codes: BTreeSet<String> = m
            .iter()
            .filter(|m| m.topic == SCAN_TOPIC)
            .filter_map(|m| m.json()["data"]["code"].as_str().map(str::to_owned))
            .collect();
        codes.len() == 600
    })
    .await;

    let records = rec.records();
    let seqs = check_seqs(&records);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "first arrivals in seq order"
    );
    assert_gap_free(&seqs);
    for i in 0..300 {
        assert!(!scans_with_code(&records, &format!("A-{i:04}")).is_empty());
        assert!(!scans_with_code(&records, &format!("B-{i:04}")).is_empty());
    }
    let report = settle_and_check(&gw, &rec, &[]).await;
    eprintln!("ledger after a broker SIGKILL: {report}");
    report.summary(
        &format!("broker-killed-mid-burst-{}", engine.unwrap_or("default")),
        Faults {
            connection_faults: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkill_mid_burst_loses_nothing_accepted() {
    gateway_sigkill_mid_burst(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkill_mid_burst_loses_nothing_accepted_on_sled() {
    gateway_sigkill_mid_burst(Some("sled")).await;
}

/// The gateway SIGKILLed during a 3000-scan burst and restarted: every seq
/// it had logged as committed reaches the MES, seqs stay gap-free and
/// continue, and the station context survives.
async fn gateway_sigkill_mid_burst(engine: Option<&'static str>) {
    // Bound in this order so the gateway is dropped (killed) first.
    let Rig {
        _dir,
        _broker,
        rec,
        pty,
        mut gw,
    } = Rig::start_on(engine).await;
    pty.write(b"LOT:LK-1\r\n").await.unwrap();
    rec.wait_for("lot opened", |m| {
        m.iter().any(|m| m.json()["kind"] == "lot")
    })
    .await;

    let codes: Vec<String> = (0..3000).map(|i| format!("K-{i:05}")).collect();
    let mut inputs: Vec<Input> = Vec::new();
    let writer = scan_all(&pty, &codes, &mut inputs);
    // Kill and restart while the writer may still be blocked on a full pty
    // buffer: only the restarted gateway drains it.
    let kill_and_restart = async {
        rec.wait_for("part of the burst", |m| m.len() > 200).await;
        gw.kill9();
        let accepted = gw.last_committed();
        gw.spawn();
        accepted
    };
    let ((), accepted) = tokio::join!(writer, kill_and_restart);
    assert!(accepted > 0, "the gateway logged commits before the kill");

    pty.write(b"AFTER-RESTART\r\n").await.unwrap();
    rec.wait_for("the scan after restart", |m| {
        m.iter()
            .any(|m| m.json()["data"]["code"] == "AFTER-RESTART")
    })
    .await;
    rec.wait_records(accepted as usize).await;

    let records = rec.records();
    let seqs = check_seqs(&records);
    let delivered: BTreeSet<u64> = seqs.iter().copied().collect();
    for seq in 1..=accepted {
        assert!(
            delivered.contains(&seq),
            "accepted seq {seq} lost (accepted up to {accepted})"
        );
    }
    assert_gap_free(&seqs);
    let after = records
        .iter()
        .find(|r| r["data"]["code"] == "AFTER-RESTART")
        .unwrap();
    assert!(
        after["seq"].as_u64().unwrap() > accepted,
        "seq continues after the restart"
    );
    assert_eq!(
        after["lot"], "LK-1",
        "station context restored after SIGKILL"
    );
    // Everything logged as committed by now must arrive.
    let report = settle_and_check(&gw, &rec, &inputs).await;
    eprintln!("ledger after SIGKILL mid-burst: {report}");
    report.summary(
        &format!("gateway-sigkill-mid-burst-{}", engine.unwrap_or("default")),
        Faults {
            sigkills: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    assert!(report.accepted > accepted, "{report}");
    assert!(report.max_window_ms.is_some(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_scanner_recovers_on_its_own_and_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let link = dir.path().join("usb-Honeywell_1900-if00");
    let pty = VirtualSerial::open().unwrap();
    std::os::unix::fs::symlink(pty.slave_path(), &link).unwrap();
    let gw = start(dir.path(), broker.port, &link);
    wait_online(&rec).await;
    let mut inputs = Vec::new();
    scan_all(&pty, &["BEFORE".to_owned()], &mut inputs).await;
    rec.wait_for("scan before unplug", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "BEFORE")
    })
    .await;

    drop(pty); // unplug
    rec.wait_for("offline alarm", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-offline")
    })
    .await;
    let pty = VirtualSerial::open().unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(pty.slave_path(), &link).unwrap();
    rec.wait_for("online again", |m| {
        m.iter()
            .filter(|m| m.json()["data"]["event"] == "device-online")
            .count()
            == 2
    })
    .await;
    scan_all(&pty, &["AFTER".to_owned()], &mut inputs).await;
    rec.wait_for("scan after replug", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "AFTER")
    })
    .await;
    let report = settle_and_check(&gw, &rec, &inputs).await;
    report.summary("scanner-unplugged-and-replugged", Faults::default());
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
    let offline = rec
        .records()
        .iter()
        .filter(|r| r["data"]["event"] == "device-offline")
        .count();
    assert_eq!(offline, 1, "one alarm per outage, no flapping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_and_garbage_frames_are_rejected_and_counted() {
    // Bound in this order so the gateway is dropped (killed) first.
    let Rig {
        _dir,
        _broker,
        rec,
        pty,
        gw: _gw,
    } = Rig::start().await;

    let long = "X".repeat(5000); // max_frame_len is 64
    pty.write(format!("GOOD-1\r\n{long}\r\n\x00\x01\x02junk\r\nGOOD-2\r\n").as_bytes())
        .await
        .unwrap();
    rec.wait_for("the scan after the bad frames", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "GOOD-2")
    })
    .await;
    let codes: Vec<String> = rec
        .records()
        .iter()
        .filter(|r| r["kind"] == "scan")
        .map(|r| r["data"]["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["GOOD-1", "GOOD-2"]);
    rec.wait_for("status counting 2 rejects", |m| {
        m.iter()
            .any(|m| m.topic == STATUS_TOPIC && m.json()["devices"]["scanner-1"]["rejects"] == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_are_not_resent_after_sigkill_once_idle() {
    acks_not_resent_after_sigkill_once_idle(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_are_not_resent_after_sigkill_once_idle_on_sled() {
    acks_not_resent_after_sigkill_once_idle(Some("sled")).await;
}

/// 200 scans delivered and acknowledged, the idle ack sync logged, then
/// SIGKILL: after the restart nothing already acknowledged is sent again.
async fn acks_not_resent_after_sigkill_once_idle(engine: Option<&'static str>) {
    // Bound in this order so the gateway is dropped (killed) first.
    let Rig {
        _dir,
        _broker,
        rec,
        pty,
        mut gw,
    } = Rig::start_on(engine).await;
    let burst: Vec<u8> = (0..200)
        .flat_map(|i| format!("ACK-{i:03}\r\n").into_bytes())
        .collect();
    pty.write(&burst).await.unwrap();
    rec.wait_records(202).await; // and store-created

    // Wait (bounded, on the gateway's own log) for the idle ack sync that
    // covers every ack of the burst (queue empty, all 202 records committed).
    assert!(
        gw.wait_log("acknowledgements synced depth=0 last_seq=202", WAIT)
            .await,
        "acks never synced"
    );
    gw.kill9();
    gw.spawn();
    pty.write(b"AFTER\r\n").await.unwrap();
    rec.wait_for("scan after restart", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "AFTER")
    })
    .await;

    let records = rec.records();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        seqs.len(),
        distinct.len(),
        "acknowledged records were sent again after the restart; gateway log:\n{}",
        gw.log_text()
    );
    assert_gap_free(&seqs);
}

/// The adaptive group commit: a scan that finds the pipeline idle is
/// committed at once, not after `commit_interval`; a non-zero
/// `commit_interval` spaces commits, and what arrives meanwhile is batched,
/// at most `commit_max_records` to a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pipeline_commits_at_once_and_batches_what_queues_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let cfg = GatewayConfig {
        store: "commit_interval = \"1s\"\ncommit_max_records = 100\n",
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(
        dir.path(),
        &cfg.toml(&dir.path().join("data"), broker.port, pty.slave_path()),
    );
    wait_online(&rec).await;
    // Idle for longer than the spacing (the schedule under test), then one
    // scan. A state-only commit in between (the station's first tick
    // persists its lot state once) restarts the spacing, so up to three
    // tries; before, every lone scan waited for the whole window (1 s).
    let mut waits = Vec::new();
    let mut before = 0;
    for i in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        before = gw.last_committed();
        let sent = std::time::SystemTime::now();
        pty.write(format!("LONE-{i}\r\n").as_bytes()).await.unwrap();
        assert!(
            gw.wait_committed(before + 1, WAIT).await,
            "the scan was never committed"
        );
        let commits = gw.commits();
        let lone = Commit::holding(&commits, before + 1).expect("the lone scan's commit");
        let waited = lone.at.duration_since(sent).unwrap_or_default();
        waits.push(waited);
        if waited < std::time::Duration::from_millis(500) {
            break;
        }
    }
    assert!(
        waits
            .last()
            .is_some_and(|w| *w < std::time::Duration::from_millis(500)),
        "a lone scan on an idle pipeline waited {waits:?} for its commit"
    );

    // 250 scans at once, right after: full batches of 100 are committed
    // as soon as they are full; the remaining 50 wait for the spacing.
    let codes: Vec<String> = (0..250).map(|i| format!("B-{i:04}")).collect();
    scan_all(&pty, &codes, &mut Vec::new()).await;
    let target = before + 1 + 250;
    assert!(
        gw.wait_committed(target, WAIT).await,
        "the burst was never committed"
    );
    let commits = gw.commits();
    let burst: Vec<&Commit> = commits
        .iter()
        .filter(|c| c.last_seq > before + 1 && c.first_seq <= target)
        .collect();
    let sizes: Vec<u64> = burst.iter().map(|c| c.records).collect();
    assert_eq!(sizes, [100, 100, 50], "the burst's commits");
    let apart = burst[2].at.duration_since(burst[1].at).unwrap_or_default();
    assert!(
        apart >= std::time::Duration::from_millis(900),
        "a partial batch committed {apart:?} after the last commit, with commit_interval = 1s"
    );
}

/// With the default (no spacing), what queues up during a commit's fsync
/// goes into the next commit: a burst is batched, not one fsync a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_batched_by_default() {
    let Rig {
        _dir,
        _broker,
        rec,
        pty,
        gw,
    } = Rig::start().await;
    let before = gw.last_committed();
    let codes: Vec<String> = (0..1000).map(|i| format!("D-{i:04}")).collect();
    let mut inputs = Vec::new();
    scan_all(&pty, &codes, &mut inputs).await;
    assert!(gw.wait_committed(before + 1000, WAIT).await);
    let commits: Vec<Commit> = gw
        .commits()
        .into_iter()
        .filter(|c| c.last_seq > before)
        .collect();
    assert!(
        commits.len() < 500,
        "1000 scans took {} commits: not batched",
        commits.len()
    );
    assert!(commits.iter().all(|c| c.records <= 256));
    let report = settle_and_check(&gw, &rec, &inputs).await;
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
}
