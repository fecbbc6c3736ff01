//! Several brokers (`mqtt.brokers`): two Mosquitto processes, the MES
//! subscribed to both. Scans stream in throughout; broker A (the first) is
//! killed and the gateway moves to B; A comes back and the gateway stays on
//! B (a working connection is not dropped before `return_to_first`, 5 min
//! by default); B is killed and the gateway returns to A. With a short
//! `return_to_first`, it leaves B for A once A has stayed up that long. The
//! ledger over what both brokers delivered shows every accepted seq at
//! least once, gap-free. The status names the broker in use and why the
//! last one was left.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::ledger::{self, Faults, Ledger, stream_scans};
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

/// The test config with `brokers = [a, b]` and `extra` keys in `[mqtt]`.
fn two_brokers(dir: &std::path::Path, pty: &VirtualSerial, a: u16, b: u16, extra: &str) -> String {
    let toml = config_toml(&dir.join("data"), a, pty.slave_path()).replace(
        &format!("host = \"127.0.0.1\"\nport = {a}\n"),
        &format!("brokers = [\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"]\n{extra}"),
    );
    assert!(toml.contains("brokers = "), "{toml}");
    toml
}

/// Wait for the last scan of `inputs` on `rec`, then check the ledger over
/// what `recs` received, in arrival order.
async fn check_ledger(
    gw: &Gateway,
    rec: &Recorder,
    recs: &[&Recorder],
    inputs: &[ledger::Input],
    test: &str,
) {
    let last_code = &inputs.last().expect("scans were sent").code;
    rec.wait_for("the last scan", |m| {
        m.iter()
            .any(|m| m.json()["data"]["code"] == last_code.as_str())
    })
    .await;
    let last = gw.last_committed();
    rec.wait_for("the last committed record", |m| {
        m.iter().any(|m| m.json()["seq"].as_u64() == Some(last))
    })
    .await;
    // What the MES saw from both brokers, in the order it arrived.
    let mut received: Vec<Message> = recs.iter().flat_map(|r| r.snapshot()).collect();
    received.sort_by_key(|m| m.received);
    let report = Ledger::check(&gw.commits(), &received, inputs);
    eprintln!("{test}: {report}");
    report.summary(
        test,
        Faults {
            connection_faults: 2,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_moves_between_brokers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Mosquitto::start();
    let mut b = Mosquitto::start();
    let rec_a = Recorder::start(a.port, FILTER).await;
    let rec_b = Recorder::start(b.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let gw = Gateway::start(
        dir.path(),
        &two_brokers(dir.path(), &pty, a.port, b.port, ""),
    );
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
                    && s["broker"]["address"] == format!("127.0.0.1:{}", b.port)
                    && s["broker"]["last_error"]["broker"] == format!("127.0.0.1:{}", a.port)
                    && s["broker"]["last_error"]["kind"].is_string()
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
    check_ledger(&gw, &rec_a, &[&rec_a, &rec_b], &inputs, "broker-failover").await;
}

/// `return_to_first = "2s"`: on B while A is down; A back and up for 2 s,
/// the gateway leaves B cleanly (its retained status there says offline)
/// and returns to A, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_returns_to_the_first_broker_once_it_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Mosquitto::start();
    let b = Mosquitto::start();
    let rec_a = Recorder::start(a.port, FILTER).await;
    let rec_b = Recorder::start(b.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let toml = two_brokers(
        dir.path(),
        &pty,
        a.port,
        b.port,
        "return_to_first = \"2s\"\n",
    );
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

    a.kill();
    assert!(gw.wait_log(&on_b, WAIT).await, "moved to B");
    rec_b
        .wait_for("records on B", |m| {
            m.iter().filter(|m| m.json()["seq"].is_u64()).count() > 50
        })
        .await;
    a.restart();
    rec_a.wait_subscribed().await;
    assert!(
        gw.wait_log_count(&on_a, 2, WAIT).await,
        "back to A with B still up:\n{}",
        gw.log_text()
    );
    assert!(gw.log_text().contains("the first broker is back"));
    // B was left cleanly: its retained status says offline.
    rec_b
        .wait_for("the offline status on B", |m| {
            m.iter()
                .any(|m| m.topic == STATUS_TOPIC && m.json()["online"] == false)
        })
        .await;
    let on_a_now = records(&rec_a);
    rec_a
        .wait_for("records on A again", |m| {
            m.iter().filter(|m| m.json()["seq"].is_u64()).count() > on_a_now + 50
        })
        .await;
    assert_eq!(gw.log_count("MQTT connected"), 3, "{}", gw.log_text());
    stop.store(true, Ordering::SeqCst);
    let inputs = writer.await.unwrap();
    check_ledger(
        &gw,
        &rec_a,
        &[&rec_a, &rec_b],
        &inputs,
        "broker-return-to-first",
    )
    .await;
}
