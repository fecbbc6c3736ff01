//! Clock jumps: the gateway runs under libfaketime with its wall clock moved
//! back two days and forward again mid-run (an NTP step, an RTC reset after a
//! power cut). `seq` order is unaffected, timers keep running on the
//! monotonic clock (records keep flowing at once), the record `ts` shows the
//! clock as it was, and the ledger balances.
//!
//! libfaketime comes from Debian's `faketime` package (`.ci/run` installs
//! it); the test fails, naming the package, when the library is missing.

mod common;

use std::path::{Path, PathBuf};

use common::ledger::{Faults, scan_all, settle_and_check};
use common::*;
use linegate::devices::pty::VirtualSerial;

const FILTER: &str = "plant1/line3/#";

fn libfaketime() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/arm-linux-gnueabihf/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("libfaketime not found (install Debian's `faketime` package; looked in {candidates:?})")
        })
}

fn set_offset(file: &Path, offset: &str) {
    std::fs::write(file, offset).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_do_not_disturb_seq_order_or_timers() {
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let env = vec![
        ("LD_PRELOAD".to_owned(), libfaketime().display().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_owned(),
            offset.display().to_string(),
        ),
        ("FAKETIME_NO_CACHE".to_owned(), "1".to_owned()),
        // Only the wall clock jumps, as with NTP: CLOCK_MONOTONIC is real.
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
    ];
    let gw = Gateway::start_with_env(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
        env,
    );
    let mut inputs = Vec::new();
    let phase = |p: &str| (0..100).map(|i| format!("{p}-{i:03}")).collect::<Vec<_>>();
    let seen = |code: &'static str| {
        let rec = &rec;
        async move {
            rec.wait_for(code, |m| m.iter().any(|m| m.json()["data"]["code"] == code))
                .await
        }
    };

    scan_all(&pty, &phase("NOW"), &mut inputs).await;
    seen("NOW-099").await;
    set_offset(&offset, "-2d");
    scan_all(&pty, &phase("BACK"), &mut inputs).await;
    seen("BACK-099").await;
    set_offset(&offset, "+0");
    scan_all(&pty, &phase("AGAIN"), &mut inputs).await;
    seen("AGAIN-099").await;

    let report = settle_and_check(&gw, &rec, &inputs).await;
    eprintln!("ledger across clock jumps: {report}");
    report.summary("wall-clock-jumps", Faults::default());
    report.assert_nothing_lost();

    // seq follows arrival, whatever the wall clock says.
    let records = rec.records();
    let scans = first_copies(&records, |r| r["kind"] == "scan");
    let codes: Vec<&str> = scans
        .iter()
        .map(|r| r["data"]["code"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = ["NOW", "BACK", "AGAIN"]
        .iter()
        .flat_map(|p| phase(p))
        .collect();
    assert_eq!(codes, expected, "scans in input order, seq increasing");
    let ts = |code: &str| {
        let r = scans.iter().find(|r| r["data"]["code"] == code).unwrap();
        humantime::parse_rfc3339(r["ts"].as_str().unwrap()).unwrap()
    };
    let back = ts("NOW-099")
        .duration_since(ts("BACK-000"))
        .expect("ts went back");
    assert!(
        back.as_secs() > 47 * 3600,
        "ts shows the clock two days back: {back:?}"
    );
    assert!(ts("AGAIN-000") > ts("NOW-099"), "and forward again");
    // clock_synced is the kernel's own verdict (adjtimex), which a shifted
    // libc clock does not change: the same as this process reads, on every
    // record, before, during and after the jumps.
    let synced = linegate::clock::clock_synced();
    assert!(
        scans.iter().all(|r| r["clock_synced"] == synced),
        "clock_synced is {synced} here; the records say otherwise"
    );
}
