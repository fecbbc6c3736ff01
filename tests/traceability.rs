//! Traceability end to end, through the real binary, a real Mosquitto and a
//! recording MES subscriber: a scanned lot label stamps the products that
//! follow; badges log operators in and out; a duplicate serial is rejected
//! with its reason; a count target closes the lot with its totals and opens
//! the next; and SIGKILL between the allocation of a lot number and its
//! publication neither repeats nor skips a number.

mod common;

use std::path::Path;

use common::*;
use linegate::devices::modbus::sim::SimPlc;
use linegate::devices::pty::VirtualSerial;
use rumqttc::QoS;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const CMD: &str = "plant1/line3/gateway/gw-test/cmd";
const STATUS: &str = "plant1/line3/gateway/gw-test/status";

/// Rules and lot settings of station st10 (appended after the scanner, so
/// they land in the last `[[station]]`), plus `more` (whole tables).
fn config(dir: &Path, mqtt_port: u16, scanner: &Path, lot: &str, more: &str) -> String {
    let extra = format!(
        r#"
[[station.scan_rule]]
name = "badge"
pattern = '^OP(?P<value>[0-9]{{4}})$'
action = "set-operator"

[[station.scan_rule]]
name = "lot-label"
pattern = '^LOT:(?P<value>[A-Z0-9-]{{1,20}})$'
action = "set-lot"

[[station.scan_rule]]
name = "part"
symbology = ["]d2"]
gs1 = ["01", "21"]
action = "product"

[[station.scan_rule]]
name = "material"
gs1 = ["01", "10"]
action = "consume-material"

[station.lot]
{lot}
{more}"#
    );
    let cfg = GatewayConfig {
        scan_rules: false,
        max_frame_len: Some(128),
        extra: Box::leak(extra.into_boxed_str()),
        ..GatewayConfig::default()
    };
    cfg.toml(&dir.join("data"), mqtt_port, scanner)
}

/// Records of `kind`, first copy of each seq, in seq order.
fn distinct(records: &[Value], kind: &str) -> Vec<Value> {
    first_copies(records, |r| r["kind"] == kind)
}

fn has(msgs: &[Message], pred: impl Fn(&Value) -> bool) -> bool {
    msgs.iter()
        .filter(|m| !m.topic.contains("/gateway/"))
        .any(|m| pred(&m.json()))
}

/// A GS1 DataMatrix part label as a scanner sends it (AIM id, GS after the
/// variable-length serial is not needed: it is last).
fn part(serial: &str) -> Vec<u8> {
    format!("]d20109506000134352\x1d21{serial}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lot_labels_badges_products_and_duplicate_serials() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let _gw = Gateway::start(
        dir.path(),
        &config(dir.path(), broker.port, pty.slave_path(), "", ""),
    );

    // A product before any lot: refused, with the reason.
    pty.write(&part("SN-0")).await.unwrap();
    rec.wait_for("no-lot reject", |m| {
        has(m, |v| {
            v["kind"] == "reject" && v["data"]["reason"] == "no-lot-open"
        })
    })
    .await;

    pty.write(b"OP0042\r\n").await.unwrap();
    pty.write(b"LOT:L-24A0173\r\n").await.unwrap();
    pty.write(b"]d201095060001343521726123110B7781\r\n")
        .await
        .unwrap();
    pty.write(&part("SN-1")).await.unwrap();
    pty.write(&part("SN-1")).await.unwrap();
    pty.write(b"OP0042\r\n").await.unwrap();
    pty.write(&part("SN-2")).await.unwrap();
    rec.wait_for("product SN-2", |m| {
        has(m, |v| {
            v["kind"] == "product" && v["data"]["serial"] == "SN-2"
        })
    })
    .await;

    let records = rec.records();
    let login = distinct(&records, "context")
        .into_iter()
        .find(|r| r["data"]["field"] == "operator")
        .expect("operator login");
    assert_eq!(login["operator"], "0042");
    assert_eq!(login["data"]["source"], "scan");

    let opened = distinct(&records, "lot");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["lot"], "L-24A0173");
    assert_eq!(opened[0]["data"]["event"], "opened");
    assert_eq!(opened[0]["data"]["rule"], "lot-label");

    let material = distinct(&records, "context")
        .into_iter()
        .find(|r| r["data"]["field"] == "material")
        .expect("material consumed");
    assert_eq!(material["lot"], "L-24A0173");
    assert_eq!(material["data"]["material"]["gtin"], "09506000134352");
    assert_eq!(material["data"]["material"]["lot"], "B7781");
    assert_eq!(material["data"]["material"]["expiry"], "261231");

    let products = distinct(&records, "product");
    assert_eq!(products.len(), 2, "{products:?}");
    let first = &products[0];
    assert_eq!(first["data"]["serial"], "SN-1");
    assert_eq!(first["lot"], "L-24A0173", "products carry the scanned lot");
    assert_eq!(first["operator"], "0042");
    assert_eq!(first["data"]["gtin"], "09506000134352");
    assert_eq!(first["data"]["gs1"]["21"], "SN-1");
    assert_eq!(first["data"]["symbology"], "]d2");
    assert_eq!(products[1]["data"]["serial"], "SN-2");
    assert!(
        products[1].get("operator").is_none(),
        "the same badge again logged the operator out"
    );

    let rejects = distinct(&records, "reject");
    let dup = rejects
        .iter()
        .find(|r| r["data"]["reason"] == "duplicate-serial")
        .expect("duplicate rejected");
    assert!(
        dup["data"]["message"]
            .as_str()
            .unwrap()
            .contains("SN-1 was already recorded in lot L-24A0173"),
        "{dup}"
    );
    assert_eq!(dup["lot"], "L-24A0173");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_target_closes_the_lot_with_totals_and_opens_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let plc = SimPlc::start().await.unwrap();
    plc.set_holding(0, &[1000]);
    plc.set_holding(1, &[7]);
    let lot = r#"template = "{station}-{yy}{jjj}-{seq:3}"
reset = "yearly"
auto_open = true
target = 50
good = "good"
scrap = "scrap""#;
    let plc_device = format!(
        r#"
[[device]]
id = "press"
type = "modbus-tcp"
station = "st10"
host = "127.0.0.1"
port = {}
poll_interval = "20ms"
timeout = "200ms"
reconnect_min = "20ms"
reconnect_max = "200ms"

  [[device.register]]
  name = "good"
  address = "40001"
  type = "u16"
  role = "counter"
  max_rate = 100000

  [[device.register]]
  name = "scrap"
  address = "40002"
  type = "u16"
  role = "counter"
  max_rate = 100000
"#,
        plc.port()
    );
    let _gw = Gateway::start(
        dir.path(),
        &config(dir.path(), broker.port, pty.slave_path(), lot, &plc_device),
    );
    rec.wait_for("auto-opened lot and baseline", |m| {
        has(m, |v| v["kind"] == "lot" && v["data"]["source"] == "auto")
            && has(m, |v| {
                v["data"]["baseline"] == true && v["data"]["name"] == "good"
            })
    })
    .await;
    pty.write(b"OP0007\r\n").await.unwrap();
    pty.write(&part("A1")).await.unwrap();
    rec.wait_for("product", |m| has(m, |v| v["kind"] == "product"))
        .await;
    plc.set_holding(1, &[9]); // 2 scrap
    plc.set_holding(0, &[1030]);
    rec.wait_for("30 good", |m| has(m, |v| v["data"]["raw"] == 1030))
        .await;
    plc.set_holding(0, &[1061]); // 61 good in all: past the target of 50
    rec.wait_for("next lot", |m| {
        has(m, |v| {
            v["kind"] == "lot" && v["data"]["source"] == "target" && v["data"]["event"] == "opened"
        })
    })
    .await;

    let lots = distinct(&rec.records(), "lot");
    let events: Vec<(&str, &str)> = lots
        .iter()
        .map(|l| {
            (
                l["data"]["event"].as_str().unwrap(),
                l["lot"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let (first, second) = (events[0].1, events[2].1);
    assert!(
        first.starts_with("st10-") && first.ends_with("-001"),
        "{first}"
    );
    assert!(second.ends_with("-002"), "{second}");
    assert_eq!(events[1], ("closed", first));
    let closed = &lots[1];
    assert_eq!(closed["data"]["source"], "target");
    assert_eq!(closed["data"]["target"], 50);
    let totals = &closed["data"]["totals"];
    assert_eq!(totals["good"], 61);
    assert_eq!(totals["scrap"], 2);
    assert_eq!(totals["products"], 1);
    assert_eq!(totals["operators"], serde_json::json!(["0007"]));
    assert_eq!(lots[2]["operator"], "0007", "the operator stays logged in");
    assert_eq!(lots[2]["data"]["number_seq"], 2);
}

/// Status messages received so far (one per connect and per interval).
fn statuses(rec: &Recorder) -> usize {
    rec.snapshot().iter().filter(|m| m.topic == STATUS).count()
}

/// Scanner `device-online` alarms among `msgs` (distinct seqs): one per start.
fn scanner_starts(msgs: &[Message]) -> usize {
    let records: Vec<Value> = msgs
        .iter()
        .filter(|m| !m.topic.contains("/gateway/"))
        .map(Message::json)
        .collect();
    first_copies(&records, |r| {
        r["kind"] == "alarm" && r["data"]["event"] == "device-online"
    })
    .len()
}

/// Wait until the gateway started after `statuses`/`starts` were counted is
/// subscribed (its status arrived) and its start-up records are in (the
/// scanner's online alarm), so nothing else commits while a test waits for
/// its own commit.
async fn wait_settled(rec: &Recorder, statuses: usize, starts: usize) {
    rec.wait_for("gateway status and scanner online after start", |m| {
        m.iter()
            .filter(|m| m.topic == STATUS && m.json()["online"] == true)
            .count()
            > statuses
    })
    .await;
    rec.wait_for("scanner online", |m| scanner_starts(m) > starts)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_allocation_and_publication_neither_repeats_nor_skips() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let lot = r#"template = "{line}{yy}{jjj}-{seq:4}"
reset = "never""#;
    let mut gw = Gateway::start(
        dir.path(),
        &config(dir.path(), broker.port, pty.slave_path(), lot, ""),
    );
    wait_settled(&rec, 0, 0).await;
    const CYCLES: usize = 8;
    for i in 0..CYCLES {
        let (seen, starts) = (statuses(&rec), scanner_starts(&rec.snapshot()));
        let before = gw.last_committed();
        rec.client
            .publish(
                format!("{CMD}/open-lot"),
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"id":"open-{i}","station":"st10"}}"#),
            )
            .await
            .unwrap();
        if i % 2 == 0 {
            // Killed right after the allocation is committed: before or
            // while the lot record is published.
            assert!(
                gw.wait_committed(before + 1, WAIT).await,
                "cycle {i}: commit"
            );
        }
        // Odd cycles: killed as soon as the command is on its way, most
        // likely before it was applied.
        gw.kill9();
        gw.spawn();
        wait_settled(&rec, seen, starts).await;
    }
    // One more, undisturbed, and wait until everything committed arrived.
    rec.client
        .publish(
            format!("{CMD}/open-lot"),
            QoS::AtLeastOnce,
            false,
            r#"{"id":"open-last","station":"st10"}"#,
        )
        .await
        .unwrap();
    rec.wait_for("the last lot", |m| {
        has(m, |v| {
            v["kind"] == "audit" && v["data"]["id"] == "open-last"
        }) && has(m, |v| {
            v["kind"] == "lot"
                && v["data"]["source"] == "command"
                && v["data"]["command_id"] == "open-last"
                && v["data"]["event"] == "opened"
        })
    })
    .await;
    let committed = gw.last_committed();
    rec.wait_for("every committed record", |m| {
        has(m, |v| v["seq"].as_u64() == Some(committed))
    })
    .await;

    let records = rec.records();
    let opened: Vec<Value> = distinct(&records, "lot")
        .into_iter()
        .filter(|l| l["data"]["event"] == "opened")
        .collect();
    let numbers: Vec<u64> = opened
        .iter()
        .map(|l| l["data"]["number_seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=opened.len() as u64).collect();
    assert_eq!(numbers, expected, "no lot number skipped or repeated");
    let mut lots: Vec<&str> = opened.iter().map(|l| l["lot"].as_str().unwrap()).collect();
    lots.sort_unstable();
    lots.dedup();
    assert_eq!(lots.len(), opened.len(), "every lot number distinct");
    let accepted = distinct(&records, "audit")
        .iter()
        .filter(|a| a["data"]["command"] == "open-lot" && a["data"]["accepted"] == true)
        .count();
    assert_eq!(accepted, opened.len(), "one lot per accepted command");
    assert!(
        opened.len() > CYCLES / 2,
        "at least the committed cycles opened lots"
    );
}
