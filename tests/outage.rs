//! A long broker outage under steady load (reliability catalogue T5): scans
//! stream in at 100 a second while the broker is down, the backlog builds
//! up in the store, the broker comes back and the backlog drains, in seq
//! order, while scans keep arriving. Ends with the ledger, and with the
//! gateway's memory before and after the outage: the backlog lives on disk,
//! not in memory.
//!
//! The outage lasts 8 s in CI (about 800 records queued) and 10 minutes
//! under `LINEGATE_SOAK=1` (about 60,000).
//!
//! Also the reconnect after an outage: records flow again promptly once the
//! broker accepts connections, however far the backoff has grown, and a
//! broker that accepts TCP but refuses MQTT connects is not hammered.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::ledger::{Faults, Ledger, cycles, settle_and_check, stream_scans};
use common::*;
use linegate::devices::pty::VirtualSerial;

const FILTER: &str = "plant1/line3/#";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";

/// Resident memory of `pid` in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_broker_outage_under_load_loses_nothing_and_drains_in_order() {
    let outage = Duration::from_secs(cycles(8, 600));
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let gw = Gateway::start(
        dir.path(),
        &config_toml(&dir.path().join("data"), proxy.port, pty.slave_path()),
    );
    rec.wait_for("scanner online", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-online")
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream_scans(pty.clone(), stop.clone(), 5));
    rec.wait_for("live scans", |m| m.len() > 50).await;

    let pid = gw.pid().expect("gateway runs");
    let rss_before = rss_kib(pid);
    broker.kill();
    rec.wait_disconnected().await;
    // The outage is the schedule under test: scans keep coming meanwhile.
    tokio::time::sleep(outage).await;
    let rss_during = rss_kib(pid);
    let queued_at_restart = gw.last_committed();

    // The MES subscribes again first, then the gateway gets through.
    proxy.set_accepting(false);
    broker.restart();
    rec.wait_subscribed().await;
    proxy.set_accepting(true);
    // The backlog drains while live scans keep coming: wait for the last
    // record queued during the outage, then stop the scans.
    let drained = rec
        .wait_for_within(WAIT + outage, |m| {
            m.iter()
                .any(|m| m.json()["seq"].as_u64() == Some(queued_at_restart))
        })
        .await;
    assert!(
        drained,
        "the backlog did not drain within {:?}",
        WAIT + outage
    );
    stop.store(true, Ordering::SeqCst);
    let inputs = writer.await.unwrap();
    let last = &inputs.last().expect("scans were sent").code;
    rec.wait_for("the last scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == last.as_str())
    })
    .await;
    // Then the queue empties: a status message with depth 0 and every seq.
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
    eprintln!(
        "long outage ({outage:?}): {report}; RSS {rss_before} KiB before, {rss_during} KiB \
         with the backlog queued"
    );
    report.summary(
        "broker-down-long-outage",
        Faults {
            connection_faults: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    // The gateway ran throughout: every scan is accepted.
    report.assert_every_input_delivered();
    let queued = queued_at_restart.saturating_sub(50);
    assert!(
        queued as f64 >= outage.as_secs_f64() * 50.0,
        "a backlog built up: {queued} records"
    );
    // Flat memory: the backlog is on disk. 16 MiB is far below what the
    // queued records would take if they were held in memory in the soak
    // form (60,000 records), and above the allocator's noise.
    assert!(
        rss_during.saturating_sub(rss_before) < 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB during the outage"
    );
}

/// The broker is down for longer than `reconnect_max`, so the backoff has
/// grown to its ceiling, and comes back right after a failed reconnect
/// attempt: records must reach the MES within seconds, not after the next
/// backoff delay (at least `reconnect_min`, 8 s here: the old behaviour).
/// Scans stream in throughout; the ledger shows nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_again_promptly_when_the_broker_returns() {
    let soak = cycles(0, 1) == 1;
    let (reconnect_max, outage) = if soak {
        ("30s", Duration::from_secs(35))
    } else {
        ("10s", Duration::from_secs(11))
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    // The gateway's way to the broker: closed while the broker is down, so
    // connection attempts are refused as by a host whose broker is down.
    let proxy = Proxy::start(broker.port).await;
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let cfg = GatewayConfig {
        reconnect: ("8s", reconnect_max),
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(
        dir.path(),
        &cfg.toml(&dir.path().join("data"), proxy.port, pty.slave_path()),
    );
    rec.wait_for("scanner online", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-online")
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream_scans(pty.clone(), stop.clone(), 1));
    rec.wait_for("live scans", |m| m.len() > 20).await;

    proxy.set_listening(false).await;
    broker.kill();
    rec.wait_disconnected().await;
    // The outage is the schedule under test: scans keep coming meanwhile.
    tokio::time::sleep(outage).await;
    // Come back right after a failed attempt: the old code then waited a
    // whole backoff delay before trying again.
    let failed = gw.log_count("MQTT connect failed");
    assert!(
        gw.wait_log_count("MQTT connect failed", failed + 1, WAIT)
            .await,
        "no reconnect attempt within {WAIT:?}"
    );
    broker.restart();
    rec.wait_subscribed().await;
    let before = gw.last_committed();
    proxy.set_listening(true).await;
    let back = std::time::Instant::now();
    let bound = Duration::from_secs(4);
    let prompt = rec
        .wait_for_within(bound, |m| {
            m.iter()
                .any(|m| m.json()["seq"].as_u64().is_some_and(|s| s > before))
        })
        .await;
    let waited = back.elapsed();
    assert!(
        prompt,
        "no record committed after the broker returned reached the MES within {bound:?}"
    );
    stop.store(true, Ordering::SeqCst);
    let inputs = writer.await.unwrap();
    let last = &inputs.last().expect("scans were sent").code;
    rec.wait_for("the last scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == last.as_str())
    })
    .await;
    let report = settle_and_check(&gw, &rec, &inputs).await;
    eprintln!("broker back after {outage:?}: fresh records at the MES after {waited:?}; {report}");
    report.summary(
        "broker-returns-promptly",
        Faults {
            connection_faults: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
}

/// A broker that accepts TCP connections but fails every MQTT connect (here
/// the proxy closes each connection at once): the probe finds its port
/// open, which must not cut the backoff short. Each wait costs at most one
/// probe and one full connect, and lasts at least `reconnect_min`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_mqtt_connects_is_retried_at_the_backoff_pace() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    proxy.set_accepting(false);
    let pty = VirtualSerial::open().unwrap();
    let cfg = GatewayConfig {
        reconnect: ("1s", "2s"),
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(
        dir.path(),
        &cfg.toml(&dir.path().join("data"), proxy.port, pty.slave_path()),
    );
    let failed = "MQTT connect failed";
    assert!(
        gw.wait_log_count(failed, 1, WAIT).await,
        "no connect attempt"
    );
    let (t1, r1) = (std::time::Instant::now(), proxy.refused());
    let attempts = 4;
    assert!(
        gw.wait_log_count(failed, 1 + attempts, WAIT).await,
        "fewer than {attempts} more attempts within {WAIT:?}"
    );
    let (elapsed, connections) = (t1.elapsed(), proxy.refused() - r1);
    // Each wait is at least reconnect_min (1 s); the log is polled every
    // 20 ms, so allow that much early.
    assert!(
        elapsed >= Duration::from_millis(attempts as u64 * 1000 - 100),
        "{attempts} failed connects within {elapsed:?}: the backoff was cut short"
    );
    assert!(
        connections <= 2 * attempts as u64 + 1,
        "{connections} connections for {attempts} attempts"
    );
}
