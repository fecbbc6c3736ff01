//! What the benches share beside the test harness (`tests/common`):
//! percentiles, the builds under comparison, and the process figures read
//! from /proc. Included with `#[path = "support/mod.rs"] mod support;`;
//! each bench uses a subset, hence `allow(dead_code)`.

#![allow(dead_code)]

use std::path::PathBuf;

/// Nearest-rank percentile of sorted `v` (`q` in 0..=1); NaN when empty.
pub fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `v` sorted ascending.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A number from the environment, or `default` (said so when unparsable).
pub fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

/// One build of `linegate` under measurement.
#[derive(Debug, Clone)]
pub struct Build {
    /// `this` (the binary cargo built for the bench) or `baseline`.
    pub name: &'static str,
    pub bin: PathBuf,
}

/// The builds to compare: this one, and `LINEGATE_BENCH_BASELINE` (the
/// path of another `linegate` binary, e.g. built from main) when set.
pub fn builds(this: &str) -> Vec<Build> {
    let mut builds = vec![Build {
        name: "this",
        bin: PathBuf::from(this),
    }];
    if let Ok(path) = std::env::var("LINEGATE_BENCH_BASELINE") {
        let bin = PathBuf::from(path);
        assert!(
            bin.is_file(),
            "LINEGATE_BENCH_BASELINE={} is not a file",
            bin.display()
        );
        builds.insert(
            0,
            Build {
                name: "baseline",
                bin,
            },
        );
    }
    builds
}

/// The builds, as `name = path` for a bench's header line.
pub fn describe_builds(builds: &[Build]) -> String {
    builds
        .iter()
        .map(|b| format!("{} = {}", b.name, b.bin.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bench process's runtime: tokio, 2 workers (the machine's cores are
/// shared with the gateway and the broker).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The gateway config the benches start from: one station, no scan rules,
/// keepalive 15 s, status every 30 s, 128 records in flight (the default), reconnects
/// between 50 ms and 500 ms; a bench changes what it measures.
pub fn bench_config() -> crate::common::GatewayConfig {
    crate::common::GatewayConfig {
        id: "gw-bench",
        site: "bench",
        line: "line1",
        keepalive: "15s",
        status_interval: "30s",
        max_inflight: Some(128),
        reconnect: ("50ms", "500ms"),
        scan_rules: false,
        max_frame_len: None,
        engine: None,
        store: "",
        extra: "",
    }
}

/// `p50 / p95 / p99 / max (n)` of `v` in milliseconds.
pub fn summary_ms(v: &[f64]) -> String {
    let v = sorted(v.to_vec());
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2} ms (n={})",
        pct(&v, 0.5),
        pct(&v, 0.95),
        pct(&v, 0.99),
        pct(&v, 1.0),
        v.len()
    )
}

/// `lo–hi` of `v`, with `digits` decimals.
pub fn range(v: &[f64], digits: usize) -> String {
    let v = sorted(v.to_vec());
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => format!("{lo:.digits$}–{hi:.digits$}"),
        _ => "n/a".to_owned(),
    }
}

/// The mount (device, fs type) holding `path`, from /proc/self/mounts.
pub fn describe_fs(path: &std::path::Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), f[0], f[1], f[2]))
        })
        .max_by_key(|m| m.0);
    match best {
        Some((_, dev, mnt, fs)) => format!("{} ({fs} on {dev}, mounted at {mnt})", path.display()),
        None => path.display().to_string(),
    }
}

/// The load average, as /proc/loadavg gives it (how busy the shared
/// machine was during a run).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
