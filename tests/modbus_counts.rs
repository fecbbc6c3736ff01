//! PLC counters end to end: a simulated PLC (tokio-modbus server over TCP)
//! → linegate (real binary) → Mosquitto → recording MES subscriber. The sum of
//! the `count` deltas the MES receives must equal what the PLC counted,
//! exactly, across a broker outage and a gateway SIGKILL + restart, and
//! across a PLC that stops answering (which must not hold up the scanner).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::ledger::{Faults, scan_all, settle_and_check};
use common::*;
use linegate::config::WordOrder;
use linegate::devices::modbus::sim::SimPlc;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";

/// The test config plus one modbus-tcp device on the simulated PLC.
fn config(dir: &Path, mqtt_port: u16, scanner: &Path, plc_port: u16) -> String {
    let mut toml = config_toml(&dir.join("data"), mqtt_port, scanner);
    toml.push_str(&format!(
        r#"
[[device]]
id = "press"
type = "modbus-tcp"
station = "st10"
host = "127.0.0.1"
port = {plc_port}
poll_interval = "20ms"
timeout = "200ms"
reconnect_min = "20ms"
reconnect_max = "200ms"

  [[device.register]]
  name = "good"
  address = "40001"
  type = "u32"
  word_order = "CDAB"
  role = "counter"
  max_rate = 100000000 # the simulated PLC counts in big jumps

  [[device.register]]
  name = "scrap"
  address = "40003"
  type = "u16"
  role = "counter"
  max_rate = 10

  [[device.register]]
  name = "run"
  address = "40004"
  type = "u16"
  role = "state"
"#
    ));
    toml
}

/// Distinct `count` records of `name` (first copy of each seq), in seq order.
fn counts(records: &[Value], name: &str) -> Vec<Value> {
    first_copies(records, |r| {
        r["kind"] == "count" && r["data"]["name"] == name
    })
}

fn delta_sum(records: &[Value], name: &str) -> u64 {
    counts(records, name)
        .iter()
        .map(|r| r["data"]["delta"].as_u64().unwrap())
        .sum()
}

fn last_raw(records: &[Value], name: &str) -> Option<u64> {
    counts(records, name)
        .last()
        .map(|r| r["data"]["raw"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_across_broker_outage_and_gateway_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let plc = SimPlc::start().await.unwrap();
    let start = 4_294_000_000u32; // close to the 32-bit wrap, which the run crosses
    plc.set_holding_u32(0, start, WordOrder::Cdab);
    let mut gw = Gateway::start(
        dir.path(),
        &config(dir.path(), proxy.port, pty.slave_path(), plc.port()),
    );
    pty.write(b"LOT:L-77\r\n").await.unwrap();
    rec.wait_for("the baseline count", |m| {
        m.iter().any(|m| m.json()["data"]["baseline"] == true)
    })
    .await;

    // The PLC counts in steps; the test waits for the gateway to see each
    // phase's last value before the next fault.
    let mut total = start;
    let mut advance = |n: u32| {
        for _ in 0..n {
            total = total.wrapping_add(7_919);
            plc.set_holding_u32(0, total, WordOrder::Cdab);
        }
        total
    };
    let v = advance(40);
    seen(&rec, v).await;

    // Broker outage: the PLC keeps counting, the gateway keeps accepting.
    broker.kill();
    rec.wait_disconnected().await;
    let v = advance(60);
    assert!(gw.wait_committed(gw.last_committed() + 1, WAIT).await);
    proxy.set_accepting(false);
    broker.restart();
    rec.wait_subscribed().await;
    proxy.set_accepting(true);
    seen(&rec, v).await;

    // Gateway SIGKILL while the PLC counts; restart; the PLC counts on.
    let _ = advance(30);
    gw.kill9();
    let _ = advance(30);
    gw.spawn();
    let v = advance(25);
    seen(&rec, v).await;

    let records = rec.records();
    let expected = u64::from(v.wrapping_sub(start));
    assert_eq!(
        delta_sum(&records, "good"),
        expected,
        "sum of deltas equals what the PLC counted"
    );
    assert_eq!(last_raw(&records, "good"), Some(u64::from(v)));
    assert!(
        counts(&records, "good")
            .iter()
            .any(|r| r["data"]["wrapped"] == true),
        "the run crossed the 32-bit wrap"
    );
    assert!(
        counts(&records, "good")
            .iter()
            .all(|r| r["data"]["reset"] == false)
    );
    assert!(
        counts(&records, "good")
            .iter()
            .skip(1)
            .all(|r| r["lot"] == "L-77"),
        "counts carry the lot"
    );
    let report = settle_and_check(&gw, &rec, &[]).await;
    report.summary(
        "modbus-counts-broker-outage-and-sigkill",
        Faults {
            sigkills: 1,
            connection_faults: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bit_wrap_and_plc_reset_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let plc = SimPlc::start().await.unwrap();
    plc.set_holding(2, &[65_530]);
    plc.set_holding(3, &[1]);
    let _gw = Gateway::start(
        dir.path(),
        &config(dir.path(), broker.port, pty.slave_path(), plc.port()),
    );
    let raw_seen = |raw: u64| {
        let rec = &rec;
        async move {
            rec.wait_for(&format!("scrap raw {raw}"), |m| {
                m.iter().any(|m| {
                    let v = m.json();
                    v["data"]["name"] == "scrap" && v["data"]["raw"].as_u64() == Some(raw)
                })
            })
            .await
        }
    };
    raw_seen(65_530).await;
    plc.set_holding(2, &[3]); // 65530 → 3: a wrap, 9 units
    raw_seen(3).await;
    plc.set_holding(2, &[40_000]);
    raw_seen(40_000).await;
    plc.set_holding(2, &[12]); // 40000 → 12 at max_rate 10/s: a reset, 12 units
    raw_seen(12).await;
    plc.set_holding(3, &[2]); // run state 1 → 2
    rec.wait_for("state change", |m| {
        m.iter().any(|m| m.json()["data"]["previous"] == 1)
    })
    .await;

    let records = rec.records();
    let scrap = counts(&records, "scrap");
    let flags: Vec<(u64, u64, bool, bool)> = scrap
        .iter()
        .map(|r| {
            let d = &r["data"];
            (
                d["raw"].as_u64().unwrap(),
                d["delta"].as_u64().unwrap(),
                d["wrapped"] == true,
                d["reset"] == true,
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (65_530, 0, false, false),
            (3, 9, true, false),
            (40_000, 39_997, false, false),
            (12, 12, false, true)
        ]
    );
    let states: Vec<(Value, Value)> = records
        .iter()
        .filter(|r| r["kind"] == "state")
        .map(|r| (r["data"]["value"].clone(), r["data"]["previous"].clone()))
        .collect();
    assert_eq!(states, [(1.into(), Value::Null), (2.into(), 1.into())]);
}

/// Wait until the MES has a record whose `data.raw` is `raw`.
async fn seen(rec: &Recorder, raw: u32) {
    let raw = u64::from(raw);
    rec.wait_for(&format!("count raw {raw}"), |m| {
        m.iter()
            .any(|m| m.json()["data"]["raw"].as_u64() == Some(raw))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_raw_registers_beside_decoded_values() {
    let dir = tempfile::tempdir().unwrap();
    let plc = SimPlc::start().await.unwrap();
    plc.set_holding_u32(0, 123_456, WordOrder::Cdab);
    plc.set_holding(2, &[42]);
    plc.set_holding(3, &[1]);
    let path = dir.path().join("linegate.toml");
    std::fs::write(
        &path,
        config(dir.path(), 1883, Path::new("/dev/null"), plc.port()),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .arg("probe")
        .arg(&path)
        .arg("press")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let good = stdout
        .lines()
        .find(|l| l.contains("good"))
        .expect("a line for `good`");
    for needle in ["40001", "u32", "CDAB", "123456"] {
        assert!(good.contains(needle), "`{needle}` missing from: {good}");
    }
    assert!(
        good.to_lowercase().contains("e240"),
        "raw words missing from: {good}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("scrap") && l.contains("42")),
        "{stdout}"
    );

    let out = tokio::process::Command::new(BIN)
        .arg("probe")
        .arg(&path)
        .arg("nope")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    drop(plc);
    let out = tokio::process::Command::new(BIN)
        .arg("probe")
        .arg(&path)
        .arg("scanner-1")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "a scanner whose port cannot be opened reads nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_bus_counts_reach_the_mes_per_unit() {
    use linegate::devices::modbus::sim::SimRtuBus;

    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let bus = SimRtuBus::start(&[1, 2]).unwrap();
    bus.set_holding(1, 0, &[100]);
    bus.set_holding(2, 0, &[500]);
    let mut toml = config_toml(&dir.path().join("data"), broker.port, pty.slave_path());
    toml.push_str(&format!(
        r#"
[[device]]
id = "rs485"
type = "modbus-rtu"
station = "st10"
path = "{path}"
baud = 19200
poll_interval = "20ms"
timeout = "200ms"
reconnect_min = "20ms"
reconnect_max = "200ms"

  [[device.unit]]
  unit_id = 1
  name = "press"

    [[device.unit.register]]
    name = "good"
    address = "40001"
    role = "counter"

  [[device.unit]]
  unit_id = 2
  name = "saw"

    [[device.unit.register]]
    name = "good"
    address = "40001"
    role = "counter"
"#,
        path = bus.path().display()
    ));
    let _gw = Gateway::start(dir.path(), &toml);
    let raw_of = |device: &'static str, raw: u64| {
        move |m: &[Message]| {
            m.iter().any(|m| {
                let v = m.json();
                v["kind"] == "count"
                    && v["device"] == device
                    && v["data"]["raw"].as_u64() == Some(raw)
            })
        }
    };
    rec.wait_for("both baselines", |m| {
        raw_of("rs485/press", 100)(m) && raw_of("rs485/saw", 500)(m)
    })
    .await;
    bus.set_holding(1, 0, &[112]);
    bus.set_holding(2, 0, &[503]);
    rec.wait_for("both counts", |m| {
        raw_of("rs485/press", 112)(m) && raw_of("rs485/saw", 503)(m)
    })
    .await;
    let records = rec.records();
    let delta = |device: &str| -> u64 {
        records
            .iter()
            .filter(|r| r["kind"] == "count" && r["device"] == device)
            .map(|r| r["data"]["delta"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (delta("rs485/press"), delta("rs485/saw")),
        (12, 3),
        "counters are kept per unit"
    );
}

/// A PLC that goes silent: a TCP relay to the simulated PLC that, while
/// `silent`, still takes the gateway's requests but drops every reply (a PLC
/// whose CPU stopped, a network path that lost its return direction).
struct SilentPlc {
    port: u16,
    silent: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentPlc {
    async fn start(plc_port: u16) -> SilentPlc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let s = silent.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(plc) = tokio::net::TcpStream::connect(("127.0.0.1", plc_port)).await else {
                    continue;
                };
                let silent = s.clone();
                tokio::spawn(async move {
                    let (mut gw_read, mut gw_write) = inbound.into_split();
                    let (mut plc_read, mut plc_write) = plc.into_split();
                    let up = tokio::io::copy(&mut gw_read, &mut plc_write);
                    let down = async {
                        let mut buf = [0u8; 512];
                        loop {
                            match plc_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) if !silent.load(Ordering::SeqCst) => {
                                    if gw_write.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(_) => {} // the reply is lost
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        () = down => {}
                    }
                });
            }
        });
        SilentPlc { port, silent, task }
    }

    fn set_silent(&self, on: bool) {
        self.silent.store(on, Ordering::SeqCst);
    }
}

impl Drop for SilentPlc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A PLC that stops answering for a while does not hold up the station's
/// scanner: scans keep being accepted within the usual window, the PLC is
/// reported offline once, and when it answers again its counts resume with
/// the whole delta. Ends with the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_plc_does_not_hold_up_the_scanner_and_its_counts_resume() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let plc = SimPlc::start().await.unwrap();
    plc.set_holding_u32(0, 1_000, WordOrder::Cdab);
    let silent = SilentPlc::start(plc.port()).await;
    let gw = Gateway::start(
        dir.path(),
        &config(dir.path(), broker.port, pty.slave_path(), silent.port),
    );
    rec.wait_for("the baseline count", |m| {
        m.iter().any(|m| m.json()["data"]["baseline"] == true)
    })
    .await;

    let mut inputs = Vec::new();
    silent.set_silent(true);
    rec.wait_for("the PLC offline", |m| {
        m.iter().any(|m| {
            let v = m.json();
            v["device"] == "press" && v["data"]["event"] == "device-offline"
        })
    })
    .await;
    // The PLC counts on while silent; the scanner is used meanwhile.
    plc.set_holding_u32(0, 1_500, WordOrder::Cdab);
    let codes: Vec<String> = (0..200).map(|i| format!("S-{i:04}")).collect();
    scan_all(&pty, &codes, &mut inputs).await;
    rec.wait_for("every scan while the PLC is silent", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "S-0199")
    })
    .await;

    silent.set_silent(false);
    seen(&rec, 1_500).await;
    let report = settle_and_check(&gw, &rec, &inputs).await;
    report.summary(
        "modbus-plc-silent",
        Faults {
            connection_faults: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
    let window = report.max_window_ms.expect("scans were measured");
    assert!(
        window < 1_000.0,
        "scans waited {window} ms behind a silent PLC (its timeout is 200 ms)"
    );
    let records = rec.records();
    assert_eq!(
        delta_sum(&records, "good"),
        500,
        "the whole delta after the silence"
    );
    let offline = first_copies(&records, |r| {
        r["device"] == "press" && r["data"]["event"] == "device-offline"
    });
    assert_eq!(offline.len(), 1, "one offline alarm per outage");
}
