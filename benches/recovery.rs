//! Recovery after a broker outage: how long after the broker accepts
//! connections again records reach the MES, for this build and, when
//! `LINEGATE_BENCH_BASELINE` names another `linegate` binary, that one too:
//! both builds' gateways run side by side through the same outages.
//!
//! Set-up: one Mosquitto; G gateways per build (the real binary, each with
//! its own scanner pty, store and topics `bench/<line>/…`), all reaching the
//! broker through the harness's TCP proxy; the MES (a QoS 1 subscriber on
//! `bench/#`) connects to the broker directly. Each gateway gets scans at
//! `LINEGATE_BENCH_RATE` a second throughout. MQTT settings are the
//! product's defaults: `reconnect_min = "500ms"`, `reconnect_max = "30s"`,
//! `keepalive = "15s"`.
//!
//! For each outage length L: the proxy's port is closed (connections are
//! refused, as with the broker down) and the broker is killed; after L the
//! broker is restarted and the MES resubscribes; then the proxy's port
//! opens: t0, "the broker accepts connections again". Per gateway:
//!
//! - **first record**: t0 → the first record at the MES (the oldest of the
//!   backlog queued during the outage);
//! - **first fresh record**: t0 → the first record committed after t0 (it
//!   comes after the backlog: records go out in seq order);
//! - **drained**: t0 → the last record committed before t0.
//!
//! ```console
//! $ LINEGATE_BENCH_BASELINE=/path/to/old/linegate cargo bench --bench recovery
//! $ LINEGATE_BENCH_OUTAGES=5,60,600 cargo bench --bench recovery   # the 10-minute form
//! ```
//!
//! Knobs: `LINEGATE_BENCH_OUTAGES` (seconds, comma-separated; default
//! `5,15,30,60,120`), `LINEGATE_BENCH_GATEWAYS` (per build, default 3),
//! `LINEGATE_BENCH_RATE` (scans/s per gateway, default 10). Without
//! `--bench` it does nothing. Every wait is bounded.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, Gateway, GatewayConfig, Message, Mosquitto, Proxy, Recorder};
use linegate::devices::pty::VirtualSerial;
use support::{Build, builds, env_f64, loadavg, pct, sorted};

/// One gateway under test and what feeds it.
struct Subject {
    build: usize,
    id: String,
    gw: Gateway,
    _dir: tempfile::TempDir,
    _pty: Arc<VirtualSerial>,
}

/// One gateway's recovery from one outage, in seconds from t0.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    first: f64,
    fresh: f64,
    drained: f64,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn start(build: &Build, b: usize, i: usize, port: u16) -> Subject {
    let dir = tempfile::tempdir().expect("tempdir");
    let pty = Arc::new(VirtualSerial::open().expect("pty"));
    let id = format!("gw-{}-{i}", build.name);
    let config = GatewayConfig {
        id: leak(id.clone()),
        line: leak(format!("{}{i}", build.name)),
        reconnect: ("500ms", "30s"),
        ..support::bench_config()
    };
    let gw = Gateway::start_binary(
        &build.bin,
        dir.path(),
        &config.toml(&dir.path().join("data"), port, pty.slave_path()),
        Vec::new(),
    );
    Subject {
        build: b,
        id,
        gw,
        _dir: dir,
        _pty: pty,
    }
}

/// Scans into `pty` at `rate` a second until `stop`.
async fn feed(pty: Arc<VirtualSerial>, prefix: String, rate: f64, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let _ = pty.write(format!("{prefix}-{n:07}\r\n").as_bytes()).await;
        n += 1;
    }
}

/// (gateway id, seq) of a record message.
fn record_of(m: &Message) -> Option<(String, u64)> {
    let v = m.json();
    Some((v["gateway"].as_str()?.to_owned(), v["seq"].as_u64()?))
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("recovery bench: skipped (run it with `cargo bench --bench recovery`)");
        return ExitCode::SUCCESS;
    }
    let outages: Vec<u64> = std::env::var("LINEGATE_BENCH_OUTAGES")
        .unwrap_or_else(|_| "5,15,30,60,120".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let per_build = env_f64("LINEGATE_BENCH_GATEWAYS", 3.0).clamp(1.0, 50.0) as usize;
    let rate = env_f64("LINEGATE_BENCH_RATE", 10.0).clamp(0.1, 500.0);
    let builds = builds(BIN);
    println!(
        "recovery bench: outages {outages:?} s, {per_build} gateways per build, {rate} scans/s each; builds: {}",
        support::describe_builds(&builds)
    );
    let rt = support::runtime();
    let started = Instant::now();
    // (build, outage) → recoveries
    let mut results: HashMap<(usize, u64), Vec<Recovery>> = HashMap::new();
    let mut missing = 0usize;
    rt.block_on(async {
        let mut broker = Mosquitto::start();
        let proxy = Proxy::start(broker.port).await;
        let mes =
            Recorder::start_with_keep_alive(broker.port, "bench/#", Duration::from_secs(30)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut subjects = Vec::new();
        for (b, build) in builds.iter().enumerate() {
            for i in 0..per_build {
                let s = start(build, b, i, proxy.port);
                tokio::spawn(feed(
                    s._pty.clone(),
                    format!("{}-{i}", build.name),
                    rate,
                    stop.clone(),
                ));
                subjects.push(s);
            }
        }
        // Every gateway delivering.
        let ids: Vec<String> = subjects.iter().map(|s| s.id.clone()).collect();
        let live = mes
            .wait_for_within(Duration::from_secs(30), |m| {
                ids.iter().all(|id| {
                    m.iter()
                        .any(|m| record_of(m).is_some_and(|(g, s)| &g == id && s > 5))
                })
            })
            .await;
        assert!(live, "not every gateway delivered within 30 s");

        for &outage in &outages {
            proxy.set_listening(false).await;
            broker.kill();
            mes.wait_disconnected().await;
            tokio::time::sleep(Duration::from_secs(outage)).await;
            broker.restart();
            mes.wait_subscribed().await;
            let before: Vec<u64> = subjects.iter().map(|s| s.gw.last_committed()).collect();
            let from = mes.messages.lock().unwrap().len();
            let load = loadavg();
            proxy.set_listening(true).await;
            let t0 = Instant::now();
            // Bounded: the old backoff may wait up to reconnect_max (30 s),
            // then the backlog drains.
            let limit = Duration::from_secs(60 + outage / 10);
            let fresh_everywhere = |m: &[Message]| {
                subjects.iter().zip(&before).all(|(s, b)| {
                    m[from..]
                        .iter()
                        .any(|m| record_of(m).is_some_and(|(g, q)| g == s.id && q > *b))
                })
            };
            mes.wait_for_within(limit, fresh_everywhere).await;
            let msgs = mes.snapshot();
            let after = &msgs[from..];
            let mut line = format!("outage {outage:>4} s (load {load}):");
            for (s, b) in subjects.iter().zip(&before) {
                let secs = |pred: &dyn Fn(u64) -> bool| {
                    after
                        .iter()
                        .find(|m| record_of(m).is_some_and(|(g, q)| g == s.id && pred(q)))
                        .map(|m| m.received.saturating_duration_since(t0).as_secs_f64())
                };
                let (first, fresh, drained) =
                    (secs(&|_| true), secs(&|q| q > *b), secs(&|q| q >= *b));
                match (first, fresh, drained) {
                    (Some(first), Some(fresh), Some(drained)) => {
                        line += &format!(" {}={fresh:.2}s", s.id);
                        results
                            .entry((s.build, outage))
                            .or_default()
                            .push(Recovery {
                                first,
                                fresh,
                                drained,
                            });
                    }
                    _ => {
                        line += &format!(" {}=none", s.id);
                        missing += 1;
                    }
                }
            }
            println!("{line}");
        }
        stop.store(true, Ordering::SeqCst);
        for s in &mut subjects {
            let _ = s.gw.terminate(Duration::from_secs(10));
        }
    });

    println!();
    println!("times from the broker accepting connections again, seconds: p50 / p95 / max (n)");
    println!();
    println!("| build | outage | first record | first fresh record | backlog drained |");
    println!("|---|---|---|---|---|");
    let fmt = |v: Vec<f64>| {
        let v = sorted(v);
        format!(
            "{:.2} / {:.2} / {:.2} ({})",
            pct(&v, 0.5),
            pct(&v, 0.95),
            pct(&v, 1.0),
            v.len()
        )
    };
    for (b, build) in builds.iter().enumerate() {
        let mut all = Vec::new();
        for &outage in &outages {
            let rs = results.get(&(b, outage)).cloned().unwrap_or_default();
            println!(
                "| {} | {outage} s | {} | {} | {} |",
                build.name,
                fmt(rs.iter().map(|r| r.first).collect()),
                fmt(rs.iter().map(|r| r.fresh).collect()),
                fmt(rs.iter().map(|r| r.drained).collect()),
            );
            all.extend(rs);
        }
        println!(
            "| {} | all | {} | {} | {} |",
            build.name,
            fmt(all.iter().map(|r| r.first).collect()),
            fmt(all.iter().map(|r| r.fresh).collect()),
            fmt(all.iter().map(|r| r.drained).collect()),
        );
    }
    if missing > 0 {
        println!("note: {missing} gateway-outages had no fresh record within the bound");
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
