//! Several brokers (`mqtt.brokers`): two Mosquitto processes, the MES
//! subscribed to both. Scans stream in throughout; broker A (the first) is
//! killed and the gateway moves to B; A comes back and the gateway stays on
//! B (a working connection is not dropped to go back); B is killed and the
//! gateway returns to A. The ledger over what both brokers delivered shows
//! every accepted seq at least once, gap-free. The status names the broker
//! in use and why the last one was left.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::ledger::{Faults, Ledger, stream_scans};
use common::*;
use linegate::devices::pty::VirtualSerial;

const FILTER: &str = "plant1/line3/#";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";

/// Records (not status messages) `rec` has received.
fn records(rec: &Recorder) -> usize {
    rec.snapshot()
        .iter()
        .filter(|m| m.json()["seq"].is_u64())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_moves_between_brokers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Mosquitto::start();
    let mut b = Mosquitto::start();
    let rec_a = Recorder::start(a.port, FILTER).await;
    let rec_b = Recorder::start(b.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let toml = config_toml(&dir.path().join("data"), a.port, pty.slave_path()).replace(
        &format!("host = \"127.0.0.1\"\nport = {}\n", a.port),
        &format!(
            "brokers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            a.port, b.port
        ),
    );
    assert!(toml.contains("brokers = "), "{toml}");
    let gw = Gateway::start(dir.path(), &toml);
    let on_a = format!("MQTT connected broker=127.0.0.1:{}", a.port);
    let on_b = format!("MQTT connected broker=127.0.0.1:{}", b.port);
    assert!(
        gw.wait_log(&on_a, WAIT).await,
        "connects to the first broker"
    );
    rec_a
        .wait_for("scanner online", |m| {
            m.iter()
                .any(|m| m.json()["data"]["event"] == "device-online")
        })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream_scans(pty.clone(), stop.clone(), 5));
    rec_a.wait_for("live scans on A", |m| m.len() > 50).await;
    assert_eq!(records(&rec_b), 0, "nothing went to B while A was up");

    // A dies: the gateway moves to B.
    a.kill();
    assert!(gw.wait_log(&on_b, WAIT).await, "moved to B");
    rec_b
        .wait_for("records on B", |m| {
            m.iter().filter(|m| m.json()["seq"].is_u64()).count() > 50
        })
        .await;
    // The status names the broker in use and why A was left.
    rec_b
        .wait_for("a status from B naming A's failure", |m| {
            m.iter().any(|m| {
                let s = m.json();
                m.topic == STATUS_TOPIC
                    && s["uplink"]["broker"] == format!("127.0.0.1:{}", b.port)
                    && s["uplink"]["last_error"]["broker"] == format!("127.0.0.1:{}", a.port)
                    && s["uplink"]["last_error"]["kind"].is_string()
            })
        })
        .await;

    // A is back: the gateway stays on B while B works.
    a.restart();
    rec_a.wait_subscribed().await;
    let on_b_now = records(&rec_b);
    rec_b
        .wait_for("more records on B with A back", |m| {
            m.iter().filter(|m| m.json()["seq"].is_u64()).count() > on_b_now + 50
        })
        .await;
    assert_eq!(gw.log_count("MQTT connected"), 2, "{}", gw.log_text());

    // B dies: back to A, the first broker.
    b.kill();
    assert!(
        gw.wait_log_count(&on_a, 2, WAIT).await,
        "back to A:\n{}",
        gw.log_text()
    );
    let on_a_now = records(&rec_a);
    rec_a
        .wait_for("records on A again", |m| {
            m.iter().filter(|m| m.json()["seq"].is_u64()).count() > on_a_now + 50
        })
        .await;

    stop.store(true, Ordering::SeqCst);
    let inputs = writer.await.unwrap();
    let last_code = &inputs.last().expect("scans were sent").code;
    rec_a
        .wait_for("the last scan", |m| {
            m.iter()
                .any(|m| m.json()["data"]["code"] == last_code.as_str())
        })
        .await;
    let last = gw.last_committed();
    rec_a
        .wait_for("the last committed record", |m| {
            m.iter().any(|m| m.json()["seq"].as_u64() == Some(last))
        })
        .await;
    // What the MES saw from both brokers, in the order it arrived.
    let mut received = [rec_a.snapshot(), rec_b.snapshot()].concat();
    received.sort_by_key(|m| m.received);
    let report = Ledger::check(&gw.commits(), &received, &inputs);
    eprintln!("failover A → B → A: {report}");
    report.summary(
        "broker-failover",
        Faults {
            connection_faults: 2,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
}
