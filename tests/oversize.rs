//! No record the gateway makes is too large to deliver, end to end through
//! the real binary, a real Mosquitto and a recording MES subscriber:
//!
//! - a lot closed after hundreds of materials and dozens of operators and
//!   orders, all with long backslash-, quote- and multi-byte-heavy values,
//!   plus the longest frames of such bytes and a large command's audit, at
//!   the default `mqtt.max_packet_size`: every seq reaches the MES, and the
//!   lot's totals, reassembled from its `closed` and `totals` records, add
//!   up to what was scanned;
//! - a record that still cannot be sent (stored under an earlier config
//!   with larger limits) is not set aside silently: a `record-undeliverable`
//!   alarm naming its seq reaches the MES, and the status counts it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use linegate::devices::pty::VirtualSerial;
use rumqttc::QoS;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const CMD: &str = "plant1/line3/gateway/gw-test/cmd";
const STATUS: &str = "plant1/line3/gateway/gw-test/status";

/// Station st10 with rules whose values may be any 64 bytes without
/// control characters (the longest a rule lets through), and the scanner's
/// longest frames.
fn config(data: &Path, mqtt_port: u16, scanner: &Path, mqtt: &str, frame: u32) -> String {
    let extra = r#"
[[station.scan_rule]]
name = "lot-label"
pattern = '^LOT:(?P<value>[A-Z0-9-]{1,20})(;.*)?$'
action = "set-lot"

[[station.scan_rule]]
name = "badge"
pattern = '^OP:(?P<value>.+)$'
action = "set-operator"

[[station.scan_rule]]
name = "order"
pattern = '^WO:(?P<value>.+)$'
action = "set-order"

[[station.scan_rule]]
name = "material"
pattern = '^MAT:(?P<gtin>[0-9]{14}):(?P<lot>.+)$'
action = "consume-material"
"#;
    let cfg = GatewayConfig {
        scan_rules: false,
        max_frame_len: Some(frame),
        extra,
        ..GatewayConfig::default()
    };
    let toml = cfg.toml(data, mqtt_port, scanner);
    toml.replace("[mqtt]\n", &format!("[mqtt]\n{mqtt}"))
}

/// A 64-byte value (the longest a rule takes) of a multi-byte character,
/// then backslashes and quotes, unique by `i`: almost every byte escapes
/// to 2 in JSON.
fn nasty(tag: &str, i: usize) -> String {
    let mut v = format!("{tag}{i:04}é");
    let fill = ["\\", "\""];
    let mut k = 0;
    while v.len() < 64 {
        v.push_str(fill[k % 2]);
        k += 1;
    }
    v
}

fn lines(codes: &[String]) -> Vec<u8> {
    codes
        .iter()
        .flat_map(|c| format!("{c}\r\n").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_lots_long_scans_and_large_commands_all_reach_the_mes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &config(
            &dir.path().join("data"),
            broker.port,
            pty.slave_path(),
            "",
            4096,
        ),
    );

    pty.write(b"LOT:L-BIG\r\n").await.unwrap();
    let materials = 300;
    let codes: Vec<String> = (0..materials)
        .map(|i| format!("MAT:09506000134352:{}", nasty("B", i)))
        .collect();
    for chunk in codes.chunks(50) {
        pty.write(&lines(chunk)).await.unwrap();
    }
    let badges: Vec<String> = (0..70).map(|i| format!("OP:{}", nasty("P", i))).collect();
    let orders: Vec<String> = (0..70).map(|i| format!("WO:{}", nasty("W", i))).collect();
    pty.write(&lines(&badges)).await.unwrap();
    pty.write(&lines(&orders)).await.unwrap();
    // An unclaimed scan of the longest frame: GS and other permitted
    // control bytes (6 bytes each in JSON), backslashes, bytes that are not
    // UTF-8.
    let mut long_scan: Vec<u8> = Vec::new();
    while long_scan.len() < 4096 {
        long_scan.extend_from_slice(&[0x1d, b'\\', 0xff, 0x04, b'"', 0xc3, 0xa9, b'\t']);
    }
    long_scan.truncate(4096);
    long_scan.extend_from_slice(b"\r\n");
    pty.write(&long_scan).await.unwrap();
    // A large command: refused (too long), its audit keeps a bounded echo.
    // Published once the gateway's status is seen: it subscribes to its
    // commands before it publishes the status, so the command cannot beat
    // the subscription to the broker.
    rec.wait_for("the gateway's status", |m| {
        m.iter().any(|m| m.topic == STATUS)
    })
    .await;
    let mut big = String::from(r#"{"id":"big-1","station":"st10","lot":""#);
    big.push_str(&"\\u0001\\\\\"".repeat(800));
    big.push_str("\"}");
    rec.client
        .publish(
            format!("{CMD}/set-lot"),
            QoS::AtLeastOnce,
            false,
            big.clone(),
        )
        .await
        .unwrap();
    rec.wait_for("the large command's audit", |m| {
        m.iter().any(|m| m.json()["kind"] == "audit")
    })
    .await;
    // The next label closes the lot; its frame is as long as the scanner
    // allows, full of backslashes and multi-byte characters, and the
    // closed record carries that scan as its source.
    let mut label = "LOT:L-NEXT;".to_owned();
    while label.len() + 9 <= 4096 {
        label.push_str("\\\\\\\\\\\\\\é");
    }
    pty.write(&lines(&[label])).await.unwrap();
    rec.wait_for("the next lot opened", |m| {
        m.iter().any(|m| {
            let v = m.json();
            v["kind"] == "lot" && v["data"]["event"] == "opened" && v["lot"] == "L-NEXT"
        })
    })
    .await;

    // Every accepted seq arrived; nothing was set aside.
    let report = ledger::settle_and_check(&gw, &rec, &[]).await;
    report.assert_nothing_lost();
    assert!(
        !gw.log_text().contains("cannot be delivered"),
        "a record was undeliverable"
    );
    let records = rec.records();
    assert!(
        records
            .iter()
            .all(|r| r["kind"] != "alarm" || r["data"]["event"] != "record-undeliverable")
    );

    // Reassemble the closed lot: its closed record, then the `totals`
    // records right after it, numbered part/parts.
    let lot_records: Vec<Value> = first_copies(&records, |r| {
        r["kind"] == "lot" && r["lot"] == "L-BIG" && r["data"]["event"] != "opened"
    });
    let closed = &lot_records[0];
    assert_eq!(closed["data"]["event"], "closed");
    assert_eq!(closed["data"]["source"], "scan");
    let parts = closed["data"]["parts"].as_u64().unwrap() as usize;
    assert!(parts > 1, "the lists did not fit one record: {parts} parts");
    assert_eq!(lot_records.len(), parts);
    let first_seq = closed["seq"].as_u64().unwrap();
    let (mut mats, mut ops, mut ords) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in lot_records.iter().enumerate() {
        assert_eq!(
            r["seq"].as_u64().unwrap(),
            first_seq + i as u64,
            "consecutive"
        );
        assert_eq!(r["data"]["part"].as_u64().unwrap(), i as u64 + 1);
        assert_eq!(r["data"]["parts"].as_u64().unwrap(), parts as u64);
        if i > 0 {
            assert_eq!(r["data"]["event"], "totals");
        }
        let t = &r["data"]["totals"];
        mats.extend(t["materials"].as_array().unwrap().iter().cloned());
        ops.extend(t["operators"].as_array().unwrap().iter().cloned());
        ords.extend(t["orders"].as_array().unwrap().iter().cloned());
    }
    let totals = &closed["data"]["totals"];
    assert_eq!(totals["materials_listed"].as_u64(), Some(mats.len() as u64));
    assert_eq!(totals["operators_listed"].as_u64(), Some(ops.len() as u64));
    assert_eq!(totals["orders_listed"].as_u64(), Some(ords.len() as u64));
    assert_eq!(mats.len(), 256);
    let counted: u64 = mats.iter().map(|m| m["count"].as_u64().unwrap()).sum();
    let untallied = totals["materials_untallied"].as_u64().unwrap();
    assert_eq!(
        counted + untallied,
        materials as u64,
        "material counts add up"
    );
    // Each material listed once, with its exact value.
    let lots: BTreeSet<&str> = mats.iter().map(|m| m["lot"].as_str().unwrap()).collect();
    assert_eq!(lots.len(), 256);
    assert!(lots.contains(nasty("B", 0).as_str()));
    // The first 64 operators and orders (the list's bound), exactly, and
    // the flag that more were seen.
    let want_ops: Vec<String> = (0..64).map(|i| nasty("P", i)).collect();
    assert_eq!(ops, want_ops);
    assert_eq!(totals["operators_truncated"], true);
    assert_eq!(ords.len(), 64);
    assert_eq!(totals["orders_truncated"], true);
    // The material records themselves are the exact source: one per scan.
    let material_records = first_copies(&records, |r| {
        r["kind"] == "context" && r["data"]["field"] == "material" && r["lot"] == "L-BIG"
    });
    assert_eq!(material_records.len(), materials);

    // The long scan and the audit arrived whole.
    let scan = first_copies(&records, |r| r["kind"] == "scan");
    assert_eq!(scan.len(), 1);
    assert_eq!(scan[0]["data"]["utf8"], false);
    let audit = first_copies(&records, |r| r["kind"] == "audit");
    assert_eq!(audit[0]["data"]["accepted"], false);
    assert!(
        audit[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );
    assert!(audit[0]["data"]["payload"].as_str().unwrap().ends_with('…'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_a_smaller_packet_size_is_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pty = VirtualSerial::open().unwrap();
    // First run: no broker, a large packet size and long frames; a long
    // scan full of GS bytes is stored, undelivered.
    let nobody = free_port();
    let mut gw = Gateway::start(
        dir.path(),
        &config(
            &data,
            nobody,
            pty.slave_path(),
            "max_packet_size = \"1MiB\"\n",
            4096,
        ),
    );
    let mut frame = vec![0x1d; 4000];
    frame.extend_from_slice(b"\r\n");
    pty.write(&frame).await.unwrap();
    pty.write(b"LOT:L-1\r\n").await.unwrap();
    // The scanner's online alarm, the scan, the lot opened.
    assert!(gw.wait_committed(3, Duration::from_secs(30)).await);
    assert_eq!(gw.stop(), Some(0));

    // Second run: the packet size lowered (short frames, so `check`
    // accepts it): the stored scan no longer fits.
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let mut gw = Gateway::start(
        dir.path(),
        &config(
            &data,
            broker.port,
            pty.slave_path(),
            "max_packet_size = \"16KiB\"\n",
            16,
        ),
    );
    rec.wait_for("the record-undeliverable alarm", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "record-undeliverable")
    })
    .await;
    let records = rec.records();
    let alarm = first_copies(&records, |r| r["data"]["event"] == "record-undeliverable");
    assert_eq!(alarm.len(), 1, "one alarm: {alarm:?}");
    let a = &alarm[0];
    assert_eq!(a["kind"], "alarm");
    let big_seq = a["data"]["seq"].as_u64().unwrap();
    assert_eq!(a["data"]["record_kind"], "scan");
    assert!(a["data"]["record_bytes"].as_u64().unwrap() > 16 * 1024);
    assert_eq!(a["data"]["max_packet_size"], 16 * 1024);
    assert!(
        a["data"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("record {big_seq}"))
    );
    // The status counts it.
    rec.wait_for("the status counting it", |m| {
        m.iter()
            .any(|m| m.topic == STATUS && m.json()["queue"]["corrupt"] == 1)
    })
    .await;
    // Every other accepted record arrived; the one gap is the seq the
    // alarm names.
    let report = ledger::settle_and_check(&gw, &rec, &[]).await;
    assert_eq!(report.lost, vec![big_seq], "{report}");
    let lot = first_copies(&records, |r| r["kind"] == "lot");
    assert_eq!(lot[0]["lot"], "L-1");

    // After a restart the record stays aside: a new record (read past its
    // seq) arrives, and no second alarm.
    assert_eq!(gw.stop(), Some(0));
    gw.spawn();
    pty.write(b"LOT:L-2\r\n").await.unwrap();
    rec.wait_for("lot L-2 after the restart", |m| {
        m.iter()
            .any(|m| m.json()["kind"] == "lot" && m.json()["lot"] == "L-2")
    })
    .await;
    let report = ledger::settle_and_check(&gw, &rec, &[]).await;
    assert_eq!(report.lost, vec![big_seq], "{report}");
    let records = rec.records();
    let alarms = first_copies(&records, |r| r["data"]["event"] == "record-undeliverable");
    assert_eq!(alarms.len(), 1);
}
