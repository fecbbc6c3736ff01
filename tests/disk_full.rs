//! A full store and a full disk, end to end: the real binary, a real
//! Mosquitto, scans on a pseudo-terminal, and the ledger at the end.
//!
//! - **The store at `max_bytes`, broker unreachable** (a proxy refuses the
//!   gateway; the MES stays connected to the broker):
//!   - `drop-oldest`: every seq missing at the MES is inside a reported
//!     `records-dropped` range, their counts add up to exactly the missing
//!     seqs, the oldest went first, and everything else arrives;
//!   - `refuse`: nothing accepted is lost, and the refused count equals the
//!     scans that never got a seq;
//!   - `refuse` with a PLC counter moving while the store is full: its
//!     samples are refused before they touch the station, so the deltas the
//!     MES receives still add up to what the PLC counted.
//! - **A real full filesystem** (the data directory on an 8 MiB tmpfs,
//!   filled by a file while scans stream in): the gateway keeps running,
//!   says so (`disk-full` alarm, status), refuses instead of losing, and
//!   recovers by itself once the file is deleted:
//!   - below `min_disk_free`: the alarm is committed from the reserve and
//!     reaches the MES at once;
//!   - `min_disk_free = 0`, the disk filled to the last byte: a commit fails
//!     with ENOSPC, the store is reopened in process, and nothing crashes.
//!
//! The tmpfs tests mount with mount(8): they need root (as on the CI
//! machines) and fail, never skip, without it. Every loop is bounded.
//! They run on the default engine; `LINEGATE_TEST_ENGINE=sled` (or `redb`)
//! runs them all on that one.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::ledger::{Faults, Report, scan_all, settle_and_check};
use common::*;
use linegate::config::WordOrder;
use linegate::devices::modbus::sim::SimPlc;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";
const ALARM_TOPIC: &str = "plant1/line3/gateway/gw-test/alarm";

/// The store alarms received (first copy of each seq), in seq order.
fn store_alarms(rec: &Recorder, event: &str) -> Vec<Value> {
    first_copies(&rec.records(), |r| {
        r["kind"] == "alarm" && r["data"]["event"] == event
    })
}

/// Wait until the MES has a store alarm `event`.
async fn wait_alarm(rec: &Recorder, event: &str) {
    rec.wait_for(&format!("a {event} alarm"), |m| {
        m.iter()
            .any(|m| m.topic == ALARM_TOPIC && m.json()["data"]["event"] == event)
    })
    .await;
}

/// Wait until a status message received from now on satisfies `pred`
/// (one is published every second); returns it.
async fn wait_status(rec: &Recorder, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let since = Instant::now();
    let fits = |m: &Message| m.topic == STATUS_TOPIC && m.received >= since && pred(&m.json());
    rec.wait_for(what, |m| m.iter().any(fits)).await;
    rec.snapshot()
        .iter()
        .rev()
        .find(|m| fits(m))
        .map_or(Value::Null, Message::json)
}

/// Scan codes received (first copy of each seq).
fn scan_codes(rec: &Recorder) -> BTreeSet<String> {
    first_copies(&rec.records(), |r| r["kind"] == "scan")
        .iter()
        .filter_map(|r| r["data"]["code"].as_str().map(str::to_owned))
        .collect()
}

fn codes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// The gateway process has not exited (an exited, unreaped child is a
/// zombie: state `Z` in /proc).
fn running(gw: &Gateway) -> bool {
    let Some(pid) = gw.pid() else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Prints the end of the gateway's log when a test fails (the log lives in
/// a temporary directory that is gone afterwards).
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" committed ") && !l.contains("reading refused"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("---- gateway log (last lines) ----\n{}", tail.join("\n"));
        }
    }
}

/// Broker, MES recorder, a proxy the gateway connects through, a scanner.
struct Rig {
    _log: LogOnPanic,
    gw: Gateway,
    pty: VirtualSerial,
    proxy: Proxy,
    rec: Recorder,
    _broker: Mosquitto,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(store: &'static str, extra_toml: &str) -> Rig {
        Self::start_with(store, extra_toml, |toml| toml).await
    }

    async fn start_with(
        store: &'static str,
        extra_toml: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start();
        let proxy = Proxy::start(broker.port).await;
        let rec = Recorder::start(broker.port, FILTER).await;
        let pty = VirtualSerial::open().unwrap();
        let cfg = GatewayConfig {
            store,
            ..GatewayConfig::default()
        };
        let mut toml = cfg.toml(&dir.path().join("data"), proxy.port, pty.slave_path());
        toml.push_str(extra_toml);
        let gw = Gateway::start(dir.path(), &edit(toml));
        rec.wait_for("scanner online", |m| {
            m.iter()
                .any(|m| m.json()["data"]["event"] == "device-online")
        })
        .await;
        Rig {
            _log: LogOnPanic(gw.log.clone()),
            gw,
            pty,
            proxy,
            rec,
            _broker: broker,
            _dir: dir,
        }
    }

    /// The broker unreachable for the gateway (the MES stays connected),
    /// once everything sent so far is acknowledged.
    async fn cut(&self) {
        wait_status(&self.rec, "an empty queue", |s| s["queue"]["depth"] == 0).await;
        self.proxy.set_accepting(false);
        self.proxy.cut_all();
        assert!(
            self.gw.wait_log("MQTT connection lost", WAIT).await,
            "the gateway never noticed the cut"
        );
    }
}

/// `linegate <args>` (the CLI, e.g. `lot show`): exit code and stdout.
async fn linegate(args: &[&str]) -> (Option<i32>, String) {
    let run = tokio::process::Command::new(BIN)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("`linegate {}` did not exit within {WAIT:?}", args.join(" ")))
        .expect("run linegate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Wait until the gateway has taken every scan written so far and committed
/// what it made of them: a work-order scan `marker` (`WO` + 6 digits) ends
/// the scans, and `lot show` reports it once applied; then a local command
/// is answered only after its own record is committed, so after everything
/// before it. (`lot show` is polled: a CLI has no event to wait on.)
async fn wait_taken(rig: &Rig, marker: &str) {
    rig.pty
        .write(format!("{marker}\r\n").as_bytes())
        .await
        .unwrap();
    let cfg = rig.gw.config.to_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out) = linegate(&["lot", "show", "--json", "--config", cfg]).await;
        let applied = code == Some(0)
            && serde_json::from_str::<Value>(&out).is_ok_and(|v| {
                v["stations"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|s| s["context"]["order"] == marker))
            });
        if applied {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{marker} was never applied: {out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out) = linegate(&[
        "lot",
        "order",
        "--station",
        "st10",
        "--order",
        "WO999999",
        "--config",
        cfg,
    ])
    .await;
    assert_eq!(code, Some(0), "the local command was refused: {out}");
}

// ------------------------------------------------------------ max_bytes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_reports_exactly_the_records_it_dropped() {
    let started = Instant::now();
    let rig = Rig::start("max_bytes = \"64KiB\"\nwhen_full = \"drop-oldest\"\n", "").await;
    let mut inputs = Vec::new();
    scan_all(&rig.pty, &codes("A", 50), &mut inputs).await;
    rig.rec.wait_records(52).await; // 50 scans, device-online, store-created

    rig.cut().await;
    let outage = codes("B", 1500);
    scan_all(&rig.pty, &outage, &mut inputs).await;
    // All of the outage happens with the broker away: the drops can only
    // take what was never sent.
    wait_taken(&rig, "WO000001").await;
    assert!(
        rig.gw
            .log_text()
            .contains("dropping the oldest unsent records"),
        "nothing was dropped"
    );
    rig.proxy.set_accepting(true);
    rig.rec
        .wait_for("the last scan", |m| {
            m.iter().any(|m| m.json()["data"]["code"] == "B-01499")
        })
        .await;
    wait_alarm(&rig.rec, "store-full-cleared").await;
    let after = codes("C", 50);
    scan_all(&rig.pty, &after, &mut inputs).await;
    rig.rec
        .wait_for("the scans after", |m| {
            m.iter().any(|m| m.json()["data"]["code"] == "C-00049")
        })
        .await;
    let report = settle_and_check(&rig.gw, &rig.rec, &inputs).await;

    // What the MES misses is exactly what the gateway reported dropped.
    let commits = rig.gw.commits();
    let accepted: BTreeSet<u64> = commits
        .iter()
        .flat_map(|c| c.first_seq..=c.last_seq)
        .collect();
    let received: BTreeSet<u64> = first_copies(&rig.rec.records(), |_| true)
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    let missing: Vec<u64> = accepted.difference(&received).copied().collect();
    let drops = store_alarms(&rig.rec, "records-dropped");
    let reported: u64 = drops
        .iter()
        .map(|d| d["data"]["count"].as_u64().unwrap())
        .sum();
    let ranges: Vec<(u64, u64)> = drops
        .iter()
        .map(|d| {
            (
                d["data"]["first_seq"].as_u64().unwrap(),
                d["data"]["last_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    eprintln!(
        "drop-oldest: {} accepted, {} missing at the MES, {} reported dropped in {} alarms",
        accepted.len(),
        missing.len(),
        reported,
        drops.len()
    );
    assert!(reported > 500, "the outage overflowed 64 KiB: {reported}");
    assert_eq!(
        missing.len() as u64,
        reported,
        "every missing seq reported, and nothing reported that arrived"
    );
    for seq in &missing {
        assert!(
            ranges.iter().any(|(a, b)| a <= seq && seq <= b),
            "seq {seq} is missing but in no records-dropped range {ranges:?}"
        );
    }
    let last_total = drops.last().unwrap()["data"]["dropped_total"].as_u64();
    assert_eq!(last_total, Some(reported), "dropped_total adds up");
    // The oldest went first: the outage scans that arrived are its last ones.
    let got = scan_codes(&rig.rec);
    let outage_got: Vec<&String> = outage.iter().filter(|c| got.contains(*c)).collect();
    let first_kept = outage.len() - outage_got.len();
    assert_eq!(
        outage_got,
        outage[first_kept..].iter().collect::<Vec<_>>(),
        "the outage scans that arrived are the newest ones"
    );
    assert!(
        codes("A", 50).iter().all(|c| got.contains(c)),
        "sent before the outage"
    );
    assert!(after.iter().all(|c| got.contains(c)), "sent after it");
    // The thresholds and the full store were alarmed, and cleared.
    for event in [
        "store-filling",
        "store-full",
        "store-full-cleared",
        "store-filling-cleared",
    ] {
        assert!(
            !store_alarms(&rig.rec, event).is_empty(),
            "no {event} alarm"
        );
    }
    let cleared = &store_alarms(&rig.rec, "store-full-cleared")[0];
    assert_eq!(cleared["data"]["dropped"].as_u64(), Some(reported));
    assert_eq!(cleared["data"]["refused"].as_u64(), Some(0));
    let status = wait_status(&rig.rec, "a status with the drops", |s| {
        s["queue"]["dropped"].as_u64() == Some(reported)
    })
    .await;
    assert_eq!(status["queue"]["when_full"], "drop-oldest");
    assert_eq!(status["queue"]["refused"], 0);
    // Nothing else is lost, doubled or reordered: the ledger's only losses
    // are the reported drops.
    assert_eq!(report.lost_count, reported);
    let unexplained = Report {
        lost: Vec::new(),
        lost_count: report.lost_count - reported,
        ..report.clone()
    };
    unexplained.assert_nothing_lost();
    eprintln!(
        "drop_oldest_reports_exactly_the_records_it_dropped: {reported} dropped and reported; took {:?}",
        started.elapsed()
    );
    report.summary_with_reported(
        "drop_oldest_reports_exactly_the_records_it_dropped",
        Faults {
            connection_faults: 1,
            ..Faults::default()
        },
        reported,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_loses_nothing_accepted_and_counts_every_refusal() {
    let started = Instant::now();
    let rig = Rig::start("max_bytes = \"64KiB\"\nwhen_full = \"refuse\"\n", "").await;
    let mut inputs = Vec::new();
    scan_all(&rig.pty, &codes("A", 50), &mut inputs).await;
    rig.rec.wait_records(52).await; // 50 scans, device-online, store-created

    rig.cut().await;
    let outage = codes("B", 1500);
    scan_all(&rig.pty, &outage, &mut inputs).await;
    assert!(
        rig.gw.wait_log("reading refused", WAIT).await,
        "nothing was refused"
    );
    rig.proxy.set_accepting(true);
    wait_alarm(&rig.rec, "store-full-cleared").await;
    // A marker after the outage scans: once it arrives, every outage scan
    // has been taken or refused.
    let after = codes("C", 50);
    scan_all(&rig.pty, &after, &mut inputs).await;
    rig.rec
        .wait_for("the scans after", |m| {
            m.iter().any(|m| m.json()["data"]["code"] == "C-00049")
        })
        .await;
    let report = settle_and_check(&rig.gw, &rig.rec, &inputs).await;
    report.assert_nothing_lost();

    let got = scan_codes(&rig.rec);
    let sent = 50 + outage.len() + after.len();
    let never = sent - got.len();
    // The refused count in the status comes from the gateway; the scans
    // that never got a seq are what the MES can count.
    let status = wait_status(&rig.rec, "a status with every refusal", |s| {
        s["queue"]["refused"].as_u64() == Some(never as u64)
    })
    .await;
    eprintln!(
        "refuse: {sent} scans sent, {} accepted and delivered, {never} refused (status: {})",
        got.len(),
        status["queue"]
    );
    assert!(never > 500, "the outage overflowed 64 KiB: {never} refused");
    assert!(codes("A", 50).iter().all(|c| got.contains(c)));
    assert!(
        after.iter().all(|c| got.contains(c)),
        "accepted again after"
    );
    let refused_in_alarms: u64 = store_alarms(&rig.rec, "store-full-cleared")
        .iter()
        .map(|a| a["data"]["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(refused_in_alarms, never as u64, "the alarm counts them too");
    assert!(store_alarms(&rig.rec, "records-dropped").is_empty());
    assert_eq!(status["queue"]["dropped"], 0);
    assert_eq!(status["queue"]["when_full"], "refuse");
    for event in ["store-filling", "store-full"] {
        assert!(
            !store_alarms(&rig.rec, event).is_empty(),
            "no {event} alarm"
        );
    }
    eprintln!(
        "refuse_loses_nothing_accepted_and_counts_every_refusal took {:?}",
        started.elapsed()
    );
    report.summary(
        "refuse_loses_nothing_accepted_and_counts_every_refusal",
        Faults {
            connection_faults: 1,
            ..Faults::default()
        },
    );
}

/// A PLC counter on the simulated PLC, polled every 20 ms.
fn plc_device(port: u16) -> String {
    format!(
        r#"
[[device]]
id = "press"
type = "modbus-tcp"
station = "st10"
host = "127.0.0.1"
port = {port}
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
  max_rate = 100000000
"#
    )
}

/// Sum of the `good` deltas and the last raw value the MES received.
fn good_counts(rec: &Recorder) -> (u64, Option<u64>) {
    let counts = first_copies(&rec.records(), |r| {
        r["kind"] == "count" && r["data"]["name"] == "good"
    });
    let sum = counts
        .iter()
        .map(|r| r["data"]["delta"].as_u64().unwrap())
        .sum();
    (sum, counts.last().and_then(|r| r["data"]["raw"].as_u64()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_refused_while_the_store_is_full_loses_no_unit() {
    let plc = SimPlc::start().await.unwrap();
    let start = 1_000u32;
    plc.set_holding_u32(0, start, WordOrder::Cdab);
    let rig = Rig::start(
        "max_bytes = \"64KiB\"\nwhen_full = \"refuse\"\n",
        &plc_device(plc.port()),
    )
    .await;
    rig.rec
        .wait_for("the baseline count", |m| {
            m.iter().any(|m| m.json()["data"]["baseline"] == true)
        })
        .await;
    let mut total = start;
    total += 10;
    plc.set_holding_u32(0, total, WordOrder::Cdab);
    rig.rec
        .wait_for("the first delta", |m| {
            m.iter()
                .any(|m| m.json()["data"]["raw"] == u64::from(total))
        })
        .await;

    rig.cut().await;
    // Fill the store with scans, then count on the PLC while it is full.
    let mut inputs = Vec::new();
    scan_all(&rig.pty, &codes("B", 1500), &mut inputs).await;
    assert!(rig.gw.wait_log("store full", WAIT).await);
    let refused_samples = |gw: &Gateway| {
        gw.log_text()
            .lines()
            .filter(|l| l.contains("reading refused") && l.contains("device=press"))
            .count()
    };
    for _ in 0..5 {
        let before = refused_samples(&rig.gw);
        total += 1_234;
        plc.set_holding_u32(0, total, WordOrder::Cdab);
        // Polls of the new value were refused, so the station never saw it.
        let deadline = Instant::now() + WAIT;
        while refused_samples(&rig.gw) < before + 3 {
            assert!(Instant::now() < deadline, "PLC samples were not refused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    rig.proxy.set_accepting(true);
    wait_alarm(&rig.rec, "store-full-cleared").await;
    total += 1;
    plc.set_holding_u32(0, total, WordOrder::Cdab);
    rig.rec
        .wait_for("the last counter value", |m| {
            m.iter()
                .any(|m| m.json()["data"]["raw"] == u64::from(total))
        })
        .await;
    let (sum, last) = good_counts(&rig.rec);
    eprintln!(
        "refused counter: PLC counted {}, deltas at the MES add up to {sum}; {} samples refused",
        total - start,
        refused_samples(&rig.gw)
    );
    assert_eq!(last, Some(u64::from(total)));
    assert_eq!(
        sum,
        u64::from(total - start),
        "deltas lost with the refused samples"
    );
    let report = settle_and_check(&rig.gw, &rig.rec, &[]).await;
    report.assert_nothing_lost();
    report.summary(
        "a_counter_refused_while_the_store_is_full_loses_no_unit",
        Faults {
            connection_faults: 1,
            ..Faults::default()
        },
    );
}

// ------------------------------------------------------------ a full disk

/// Scans streaming in (10 every 20 ms) until `stop`, bounded in count.
async fn stream(
    pty: &VirtualSerial,
    prefix: &str,
    inputs: &mut Vec<common::ledger::Input>,
    stop: impl Fn() -> bool,
) -> usize {
    let mut n = 0;
    while !stop() && n < 20_000 {
        let batch: Vec<String> = (n..n + 10).map(|i| format!("{prefix}-{i:05}")).collect();
        scan_all(pty, &batch, inputs).await;
        n += 10;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

/// The data directory on an 8 MiB tmpfs; the disk filled while scans stream
/// in; then the filler deleted. `leave`: free bytes the filler leaves (0:
/// none); `commit_fails`: the disk is filled to the last byte, so a commit
/// fails (else the gateway sees the space below `min_disk_free` first).
async fn full_disk(name: &str, min_disk_free: &'static str, leave: u64, commit_fails: bool) {
    let started = Instant::now();
    let fs = powercut_fs::Tmpfs::mount("8m");
    let data = fs.path().join("data");
    let rig = Rig::start_with(min_disk_free, "", |toml| {
        toml.replace(
            &format!("data_dir = \"{}\"", toml_data_dir(&toml)),
            &format!("data_dir = \"{}\"", data.display()),
        )
    })
    .await;
    rig.proxy.set_accepting(true);
    let pid = rig.gw.pid();
    let mut inputs = Vec::new();
    let before = codes("A", 100);
    scan_all(&rig.pty, &before, &mut inputs).await;
    rig.rec
        .wait_for("the first scans", |m| {
            m.iter().any(|m| m.json()["data"]["code"] == "A-00099")
        })
        .await;

    let filler = fs.fill("filler", leave);
    eprintln!("{name}: filled, {} bytes free", fs.available());
    // Scans keep coming until the gateway says the disk is full.
    let gw = &rig.gw;
    let log_says_full = || {
        let log = gw.log_text();
        log.contains("disk full:") || log.contains("the disk is full")
    };
    let sent_full = stream(&rig.pty, "B", &mut inputs, log_says_full).await;
    assert!(log_says_full(), "the gateway never noticed the full disk");
    let status = wait_status(&rig.rec, "a status saying the disk is full", |s| {
        s["queue"]["disk_full"] == true
    })
    .await;
    eprintln!("{name}: status while full: {}", status["queue"]);
    // More scans while full: refused, counted, nothing crashes.
    let during = codes("C", 200);
    scan_all(&rig.pty, &during, &mut inputs).await;
    wait_status(&rig.rec, "refusals in the status", |s| {
        s["queue"]["refused"].as_u64().is_some_and(|n| n >= 100)
    })
    .await;
    assert!(running(&rig.gw), "the gateway exited on a full disk");
    assert_eq!(rig.gw.pid(), pid);
    if commit_fails {
        // The disk refused a commit: the store was closed and reopened in
        // process (at once, or once there was room).
        assert!(
            rig.gw
                .log_text()
                .contains("the disk is full; reopening the store"),
            "no commit failed for lack of space"
        );
    } else {
        // The alarm went into the reserve min_disk_free keeps: the MES has
        // it while the disk is still full.
        wait_alarm(&rig.rec, "disk-full").await;
    }

    std::fs::remove_file(&filler).unwrap();
    wait_alarm(&rig.rec, "disk-full-cleared").await;
    let after = codes("D", 100);
    scan_all(&rig.pty, &after, &mut inputs).await;
    rig.rec
        .wait_for("the scans after", |m| {
            m.iter().any(|m| m.json()["data"]["code"] == "D-00099")
        })
        .await;
    assert!(running(&rig.gw), "the gateway exited");
    if commit_fails {
        assert!(rig.gw.log_text().contains("store reopened"));
    }
    let starts = rig.gw.log_text().matches("linegate running").count();
    assert_eq!(starts, 1, "the gateway restarted");

    let report = settle_and_check(&rig.gw, &rig.rec, &inputs).await;
    report.assert_nothing_lost();
    let got = scan_codes(&rig.rec);
    let sent = before.len() + sent_full + during.len() + after.len();
    let never = (sent - got.len()) as u64;
    let status = wait_status(&rig.rec, "a status with every refusal", |s| {
        s["queue"]["refused"].as_u64() == Some(never) && s["queue"]["disk_full"] == false
    })
    .await;
    assert!(before.iter().chain(&after).all(|c| got.contains(c)));
    let alarm = &store_alarms(&rig.rec, "disk-full")[0];
    let why = alarm["data"]["message"].as_str().unwrap_or_default();
    if commit_fails {
        assert!(why.starts_with("a commit failed"), "{why}");
    } else {
        assert!(why.contains("below min_disk_free"), "{why}");
    }
    let cleared = &store_alarms(&rig.rec, "disk-full-cleared")[0];
    assert_eq!(cleared["data"]["refused"].as_u64(), Some(never));
    eprintln!(
        "{name}: {sent} scans, {} delivered, {never} refused; alarm {:?}; cleared {:?}; took {:?}",
        got.len(),
        alarm["data"]["message"],
        cleared["data"]["message"],
        started.elapsed()
    );
    eprintln!("{name}: final status {}", status["queue"]);
    report.summary(
        name,
        Faults {
            disk_faults: 1,
            ..Faults::default()
        },
    );
}

/// The `data_dir` the generated config names.
fn toml_data_dir(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("data_dir = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_below_min_disk_free_refuses_alarms_and_recovers_by_itself() {
    full_disk(
        "a_disk_below_min_disk_free_refuses_alarms_and_recovers_by_itself",
        "min_disk_free = \"2MiB\"\n",
        1 << 20,
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_with_enospc_is_survived_in_process() {
    full_disk(
        "a_commit_refused_with_enospc_is_survived_in_process",
        "min_disk_free = 0\n",
        0,
        true,
    )
    .await;
}
