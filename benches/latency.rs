//! Capture → PUBACK latency and burst acceptance of the real `linegate`
//! binary against a real local Mosquitto, for this build and, when
//! `LINEGATE_BENCH_BASELINE` names another `linegate` binary, for that one
//! too, in alternating rounds of one run (same machine, same load).
//!
//! Path: scanner (a pseudo-terminal written by this process) → linegate
//! (child process, store on the temp dir's filesystem) → the harness's TCP
//! proxy with its tap on (`tests/common/proxy.rs`) → Mosquitto. The tap
//! timestamps each QoS 1 PUBLISH going up and each PUBACK coming back, in
//! this process, on the same monotonic clock as the pty write, so:
//!
//! - **capture → PUBACK**: pty write → the broker's PUBACK for that scan's
//!   record passing the proxy;
//! - broken down into capture → committed (the gateway's `committed` debug
//!   log line, wall clock, µs), committed → PUBLISH at the proxy, and
//!   PUBLISH → PUBACK (the broker's round trip through the proxy);
//! - the commit time itself (`commit_ms` in the log line).
//!
//! Then a **burst**: N scans written to the pty in one go; acceptance rate =
//! N / (first write → the commit of the last one, from the log).
//!
//! Every build runs with its own default store settings (nothing about the
//! group commit is spelled out in its config), `max_inflight = 128`.
//!
//! ```console
//! $ cargo bench --bench latency
//! $ LINEGATE_BENCH_BASELINE=/path/to/old/linegate cargo bench --bench latency
//! ```
//!
//! Knobs: `LINEGATE_BENCH_RATE` (scans/s, default 50), `LINEGATE_BENCH_SCANS`
//! (latency scans per round, default 500), `LINEGATE_BENCH_BURST` (default
//! 50,000), `LINEGATE_BENCH_ROUNDS` (default 3). Without `--bench` on the
//! command line it does nothing. Every wait is bounded.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use common::proxy::Tapped;
use common::{BIN, Commit, Gateway, Mosquitto, Proxy};
use linegate::devices::pty::VirtualSerial;
use support::{Build, builds, env_f64, loadavg, range, summary_ms};

/// The two clocks at one moment: maps the tap's `Instant`s onto the log's
/// wall-clock times.
#[derive(Clone, Copy)]
struct Clocks {
    mono: Instant,
    wall: SystemTime,
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Milliseconds from `at` (monotonic) to `wall` (a log time).
    fn ms_to_wall(&self, at: Instant, wall: SystemTime) -> f64 {
        let at_wall = self.wall + at.duration_since(self.mono);
        match wall.duration_since(at_wall) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -e.duration().as_secs_f64() * 1000.0,
        }
    }

    /// Milliseconds from `wall` (a log time) to `at` (monotonic).
    fn ms_from_wall(&self, wall: SystemTime, at: Instant) -> f64 {
        -self.ms_to_wall(at, wall)
    }
}

/// What one round of one build measured.
#[derive(Default)]
struct Round {
    capture_to_puback: Vec<f64>,
    capture_to_committed: Vec<f64>,
    committed_to_publish: Vec<f64>,
    publish_to_puback: Vec<f64>,
    commit_ms: Vec<f64>,
    missing: usize,
    burst_rate: Option<f64>,
    burst_commits: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn start_gateway(build: &Build, dir: &Path, port: u16, scanner: &Path) -> Gateway {
    let config = support::bench_config();
    Gateway::start_binary(
        &build.bin,
        dir,
        &config.toml(&dir.join("data"), port, scanner),
        Vec::new(),
    )
}

/// The scan code and seq in a record payload, if it is a scan.
fn code_of(payload: &[u8]) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some((v["data"]["code"].as_str()?.to_owned(), v["seq"].as_u64()?))
}

async fn round(build: &Build, scans: usize, rate: f64, burst: usize) -> Round {
    let mut out = Round::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let pty = VirtualSerial::open().expect("pty");
    let mut gw = start_gateway(build, dir.path(), proxy.port, pty.slave_path());
    assert!(
        gw.wait_committed(1, Duration::from_secs(15)).await,
        "{}: nothing committed within 15 s; see {}",
        build.name,
        gw.log.display()
    );
    // Connected, the online alarm and the first status acknowledged.
    assert!(
        proxy
            .wait_until(Duration::from_secs(15), |p| p.connections() >= 1
                && p.in_flight() == 0)
            .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.tap();
    let clocks = Clocks::now();

    // ---- latency: one scan at a time
    let codes: Vec<String> = (0..scans).map(|i| format!("LAT-{i:06}")).collect();
    let mut written: HashMap<&str, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for code in &codes {
        tick.tick().await;
        written.insert(code, Instant::now());
        pty.write(format!("{code}\r\n").as_bytes())
            .await
            .expect("pty write");
    }
    // Collect the tap until every scan is acknowledged (bounded).
    let mut by_pkid: HashMap<u16, (String, u64, Instant)> = HashMap::new();
    let mut published: HashMap<String, (u64, Instant, Instant)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while published.len() < scans && Instant::now() < deadline {
        for t in proxy.take_tapped() {
            match t {
                Tapped::Publish { at, pkid, payload } => {
                    if let Some((code, seq)) = code_of(&payload) {
                        by_pkid.insert(pkid, (code, seq, at));
                    }
                }
                Tapped::PubAck { at, pkid } => {
                    if let Some((code, seq, sent)) = by_pkid.remove(&pkid) {
                        published.entry(code).or_insert((seq, sent, at));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.missing = scans - published.len().min(scans);
    let commits = gw.commits();
    let mut seen_commits = std::collections::BTreeSet::new();
    for code in &codes {
        let (Some(w), Some((seq, sent, acked))) = (written.get(code.as_str()), published.get(code))
        else {
            continue;
        };
        out.capture_to_puback.push(ms(acked.duration_since(*w)));
        out.publish_to_puback.push(ms(acked.duration_since(*sent)));
        if let Some(c) = Commit::holding(&commits, *seq) {
            out.capture_to_committed.push(clocks.ms_to_wall(*w, c.at));
            out.committed_to_publish
                .push(clocks.ms_from_wall(c.at, *sent));
            if seen_commits.insert(c.first_seq) {
                out.commit_ms.push(c.commit_ms);
            }
        }
    }

    // ---- burst
    if burst > 0 {
        let base = gw.last_committed();
        let bytes: Vec<u8> = (0..burst)
            .flat_map(|i| format!("TP-{i:06}\r\n").into_bytes())
            .collect();
        let t0 = SystemTime::now();
        pty.write(&bytes).await.expect("pty write");
        let target = base + burst as u64;
        if gw.wait_committed(target, Duration::from_secs(120)).await {
            let commits = gw.commits();
            if let Some(c) = Commit::holding(&commits, target) {
                let s = c.at.duration_since(t0).unwrap_or_default().as_secs_f64();
                out.burst_rate = Some(burst as f64 / s);
            }
            out.burst_commits = commits.iter().filter(|c| c.last_seq > base).count();
        }
    }
    let _ = gw.terminate(Duration::from_secs(10));
    out
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("latency bench: skipped (run it with `cargo bench --bench latency`)");
        return ExitCode::SUCCESS;
    }
    let rate = env_f64("LINEGATE_BENCH_RATE", 50.0).clamp(1.0, 1000.0);
    let scans = env_f64("LINEGATE_BENCH_SCANS", 500.0).clamp(10.0, 100_000.0) as usize;
    let burst = env_f64("LINEGATE_BENCH_BURST", 50_000.0).clamp(0.0, 1_000_000.0) as usize;
    let rounds = env_f64("LINEGATE_BENCH_ROUNDS", 3.0).clamp(1.0, 100.0) as usize;
    let builds = builds(BIN);
    println!(
        "latency bench: {scans} scans at {rate}/s, burst {burst}, {rounds} rounds; builds: {}",
        support::describe_builds(&builds)
    );
    println!("temp dir: {}", support::describe_fs(&std::env::temp_dir()));
    let rt = support::runtime();
    let started = Instant::now();
    let mut results: Vec<Vec<Round>> = builds.iter().map(|_| Vec::new()).collect();
    rt.block_on(async {
        for r in 0..rounds {
            for (b, build) in builds.iter().enumerate() {
                let load = loadavg();
                let res = round(build, scans, rate, burst).await;
                let mut p = res.capture_to_puback.clone();
                p.sort_by(f64::total_cmp);
                println!(
                    "round {} {:<8} capture->PUBACK p50 {:.2} ms p99 {:.2} ms; burst {} records/s; load {load}",
                    r + 1,
                    build.name,
                    support::pct(&p, 0.5),
                    support::pct(&p, 0.99),
                    res.burst_rate.map_or("n/a".into(), |v| format!("{v:.0}")),
                );
                results[b].push(res);
            }
        }
    });
    println!();
    println!(
        "| measurement | {} |",
        builds
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(builds.len()));
    let pooled = |f: &dyn Fn(&Round) -> &Vec<f64>| -> Vec<String> {
        results
            .iter()
            .map(|rs| {
                summary_ms(
                    &rs.iter()
                        .flat_map(|r| f(r).iter().copied())
                        .collect::<Vec<_>>(),
                )
            })
            .collect()
    };
    let per_round = |q: f64, f: &dyn Fn(&Round) -> &Vec<f64>| -> Vec<String> {
        results
            .iter()
            .map(|rs| {
                let v: Vec<f64> = rs
                    .iter()
                    .map(|r| support::pct(&support::sorted(f(r).clone()), q))
                    .collect();
                format!("{} ms", range(&v, 2))
            })
            .collect()
    };
    let row = |what: &str, cells: Vec<String>| println!("| {what} | {} |", cells.join(" | "));
    row(
        "capture → PUBACK, p50 / p95 / p99 / max, all rounds",
        pooled(&|r| &r.capture_to_puback),
    );
    row(
        "capture → PUBACK p50, range over rounds",
        per_round(0.5, &|r| &r.capture_to_puback),
    );
    row(
        "capture → PUBACK p99, range over rounds",
        per_round(0.99, &|r| &r.capture_to_puback),
    );
    row(
        "capture → committed (log)",
        pooled(&|r| &r.capture_to_committed),
    );
    row(
        "committed (log) → PUBLISH at the proxy",
        pooled(&|r| &r.committed_to_publish),
    );
    row(
        "PUBLISH → PUBACK (broker round trip)",
        pooled(&|r| &r.publish_to_puback),
    );
    row("commit time (commit_ms)", pooled(&|r| &r.commit_ms));
    row(
        "scans never acknowledged",
        results
            .iter()
            .map(|rs| rs.iter().map(|r| r.missing).sum::<usize>().to_string())
            .collect(),
    );
    row(
        &format!("burst {burst}: accepted, records/s, range over rounds"),
        results
            .iter()
            .map(|rs| {
                range(
                    &rs.iter().filter_map(|r| r.burst_rate).collect::<Vec<_>>(),
                    0,
                )
            })
            .collect(),
    );
    row(
        "burst: group commits, range over rounds",
        results
            .iter()
            .map(|rs| {
                range(
                    &rs.iter()
                        .map(|r| r.burst_commits as f64)
                        .collect::<Vec<_>>(),
                    0,
                )
            })
            .collect(),
    );
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
