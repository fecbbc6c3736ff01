//! Crash loops under load, each ending with the ledger check:
//!
//! - **SIGKILL loop**: the gateway is killed with SIGKILL at a random moment
//!   and restarted, over and over, while scans stream in. The page cache
//!   survives a process crash, so this proves the commit protocol (nothing
//!   is published before it is committed, seqs are never reused, acks are
//!   never ahead of the records), not the fsyncs.
//! - **Power-cut loop**: the same, with the data directory on powercut-fs
//!   (`tools/powercut-fs`), which keeps every write in memory until it is
//!   fsynced. After each SIGKILL the power is cut: everything not fsynced is
//!   dropped, the filesystem is unmounted and mounted again, and the gateway
//!   restarts on what a real disk would have kept. This is the test that
//!   catches a missing fsync (of a file or of a directory entry).
//!
//! Both run on both store engines. The number of cycles is small in CI and
//! large under `LINEGATE_SOAK=1` (`bash .ci/soak`). The schedule comes from a
//! seeded RNG whose seed is printed; `LINEGATE_SEED=<n>` replays it.
//!
//! The power-cut tests need FUSE (root and /dev/fuse, as on the CI
//! machines); without it they fail with powercut-fs's message, they do not
//! skip.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::ledger::{Faults, Ledger, cycles, stream_scans};
use common::*;
use linegate::devices::pty::VirtualSerial;

const FILTER: &str = "plant1/line3/#";

/// What happens to the gateway at the end of each cycle.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// SIGKILL, restart.
    Kill,
    /// SIGKILL, power cut (unsynced data dropped; in torn mode each file
    /// keeps a random prefix of its unsynced writes), remount, restart.
    PowerCut { torn: bool },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sigkill_loop_loses_nothing_accepted() {
    crash_loop(Some("sled"), Crash::Kill, cycles(100, 500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sigkill_loop_loses_nothing_accepted_on_redb() {
    crash_loop(Some("redb"), Crash::Kill, cycles(100, 500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn power_cut_loop_loses_nothing_accepted() {
    crash_loop(
        Some("sled"),
        Crash::PowerCut { torn: false },
        cycles(20, 200),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn power_cut_loop_loses_nothing_accepted_on_redb() {
    crash_loop(
        Some("redb"),
        Crash::PowerCut { torn: false },
        cycles(20, 200),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn torn_power_cut_loop_loses_nothing_accepted() {
    crash_loop(
        Some("sled"),
        Crash::PowerCut { torn: true },
        cycles(20, 200),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn torn_power_cut_loop_loses_nothing_accepted_on_redb() {
    crash_loop(
        Some("redb"),
        Crash::PowerCut { torn: true },
        cycles(20, 200),
    )
    .await;
}

/// The seed of this run's schedule: `LINEGATE_SEED`, or a fresh one.
fn seed() -> u64 {
    std::env::var("LINEGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// The data directory's filesystem: a plain temp dir, or powercut-fs.
enum Disk {
    Plain,
    Powercut(powercut_fs::Mount),
}

impl Disk {
    /// Mount powercut-fs on `root/mnt` (backed by `root/backing`) if `crash`
    /// cuts power; the data dir is `<mount>/data`, created by the gateway.
    fn new(root: &Path, crash: Crash, seed: u64) -> (Disk, std::path::PathBuf) {
        match crash {
            Crash::Kill => (Disk::Plain, root.join("data")),
            Crash::PowerCut { torn } => {
                let (backing, mnt) = (root.join("backing"), root.join("mnt"));
                std::fs::create_dir(&backing).unwrap();
                std::fs::create_dir(&mnt).unwrap();
                let options = powercut_fs::Options {
                    torn_seed: torn.then_some(seed),
                };
                let mount = powercut_fs::Mount::start_with(&backing, &mnt, options)
                    .unwrap_or_else(|e| panic!("the power-cut tests need FUSE: {e}"));
                (Disk::Powercut(mount), mnt.join("data"))
            }
        }
    }

    /// After the gateway was killed (and reaped): cut the power and remount.
    /// Returns what the run wrote and synced through the mount, and what the
    /// cut dropped.
    async fn after_kill(&mut self) -> Cut {
        let Disk::Powercut(mount) = std::mem::replace(self, Disk::Plain) else {
            return Cut::default();
        };
        let stats = mount.stats();
        let (report, mount) = tokio::task::spawn_blocking(move || mount.power_cycle())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("power cycle failed: {e}"));
        *self = Disk::Powercut(mount);
        Cut {
            writes: stats.writes,
            syncs: stats.file_syncs + stats.dir_syncs,
            dropped_bytes: report.bytes_dropped,
            dropped_any: report.files_dropped + report.dirs_dropped + report.torn_ops_kept > 0,
        }
    }
}

/// What went through powercut-fs in one run, and what its cut dropped.
#[derive(Debug, Default, Clone, Copy)]
struct Cut {
    writes: u64,
    syncs: u64,
    dropped_bytes: u64,
    /// The cut found unsynced changes (dropped, or torn and partly kept).
    dropped_any: bool,
}

async fn crash_loop(engine: Option<&'static str>, crash: Crash, n: u64) {
    let seed = seed();
    let name = format!(
        "{}{}",
        match crash {
            Crash::Kill => "sigkill-loop",
            Crash::PowerCut { torn: false } => "power-cut-loop",
            Crash::PowerCut { torn: true } => "torn-power-cut-loop",
        },
        engine.map_or(String::new(), |e| format!("-{e}")),
    );
    eprintln!("{name}: {n} cycles, seed {seed} (LINEGATE_SEED={seed} replays the schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let root = tempfile::tempdir().unwrap();
    let (mut disk, data_dir) = Disk::new(root.path(), crash, seed);
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = Arc::new(VirtualSerial::open().unwrap());
    let cfg = GatewayConfig {
        engine,
        ..Default::default()
    };
    let mut gw = Gateway::start(
        root.path(),
        &cfg.toml(&data_dir, broker.port, pty.slave_path()),
    );
    pty.write(b"LOT:PC-1\r\n").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream_scans(pty.clone(), stop.clone(), 10));
    let mut spawned = vec![SystemTime::now()];
    let mut cuts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60 + n * 5);
    for cycle in 0..n {
        assert!(
            Instant::now() < deadline,
            "{name}: cycle {cycle} of {n} past the time bound"
        );
        // A random moment: during start-up, recovery, a burst or a drain.
        let lifetime = Duration::from_millis(rng.u64(50..1500));
        tokio::time::sleep(lifetime).await;
        gw.kill9();
        cuts.push(disk.after_kill().await);
        gw.spawn();
        spawned.push(SystemTime::now());
    }
    // Let the last run accept the stream for a moment, then stop the scans
    // and wait for everything the last run accepted to arrive.
    assert!(
        gw.wait_committed(gw.last_committed() + 1, WAIT).await,
        "{name}: the last run never committed"
    );
    stop.store(true, Ordering::SeqCst);
    let inputs = writer.await.unwrap();
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
    let report = Ledger::check(&gw.commits(), &rec.snapshot(), &inputs);
    let received: std::collections::HashSet<String> = rec
        .records()
        .iter()
        .filter_map(|r| Some(r["data"]["code"].as_str()?.to_owned()))
        .collect();
    let never_accepted = inputs
        .iter()
        .filter(|i| !received.contains(&i.code))
        .count();

    let log = gw.log_text();
    let runs: Vec<&str> = log.split("---- start").skip(1).collect();
    let productive = runs.iter().filter(|r| r.contains(" committed ")).count();
    let opens = open_times(&runs, &spawned);
    eprintln!(
        "{name}: {report}; {} of {} runs committed; inputs never accepted {} of {}; \
         {} of {} power cuts found unsynced changes ({} bytes dropped); start to store open p50 {} ms, \
         max {} ms",
        productive,
        runs.len(),
        never_accepted,
        inputs.len(),
        cuts.iter().filter(|c| c.dropped_any).count(),
        if matches!(crash, Crash::Kill) {
            0
        } else {
            cuts.len()
        },
        cuts.iter().map(|c| c.dropped_bytes).sum::<u64>(),
        percentile(&opens, 50),
        percentile(&opens, 100),
    );
    let faults = match crash {
        Crash::Kill => Faults {
            sigkills: n,
            ..Default::default()
        },
        Crash::PowerCut { .. } => Faults {
            sigkills: n,
            power_cuts: n,
            ..Default::default()
        },
    };
    report.summary(&name, faults);
    report.assert_nothing_lost();
    // The loop must have exercised something: most runs lived long enough
    // to accept records, and the records reached the MES.
    assert!(
        productive as u64 * 2 >= n,
        "{name}: only {productive} of {} runs committed anything",
        runs.len()
    );
    assert!(report.accepted > n * 10, "{name}: {report}");
    assert!(
        !log.contains("panicked"),
        "{name}: the gateway panicked:\n{log}"
    );
    if let Crash::PowerCut { .. } = crash {
        // The store really lived on powercut-fs: every run that committed
        // wrote and synced through it.
        let through = cuts.iter().filter(|c| c.writes > 0 && c.syncs > 0).count();
        assert!(
            through * 2 >= cuts.len(),
            "{name}: only {through} of {} runs wrote and synced through powercut-fs",
            cuts.len()
        );
    }
}

/// For each run, the time from its spawn to its `store opened` log line (ms).
fn open_times(runs: &[&str], spawned: &[SystemTime]) -> Vec<f64> {
    runs.iter()
        .zip(spawned)
        .filter_map(|(run, at)| {
            let line = run.lines().find(|l| l.contains("store opened"))?;
            let opened = humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()?;
            Some(opened.duration_since(*at).ok()?.as_secs_f64() * 1000.0)
        })
        .collect()
}

/// The `p`th percentile of `values` (nearest rank), formatted, or "n/a".
fn percentile(values: &[f64], p: usize) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    format!("{:.0}", v[rank - 1])
}
