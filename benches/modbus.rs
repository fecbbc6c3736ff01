//! Modbus polling cost: N simulated PLCs (`SimPlc`, tokio-modbus TCP servers
//! on 127.0.0.1, in this process) → the real `linegate` binary (child
//! process, one polling task per device, `poll_interval = "100ms"`) →
//! Mosquitto on loopback → a counting MES subscriber (QoS 1, in this process).
//!
//! For each N (default 10, 100 and 500 devices) it measures over a window of
//! 60 s:
//!
//! - the gateway's CPU seconds (user + sys, `/proc/<pid>/stat`) and the share
//!   of one core; the broker's and this process's (simulators, register
//!   driver, subscriber) for context;
//! - the gateway's VmRSS / VmHWM at the end of the window, its threads and
//!   open file descriptors;
//! - polls/s achieved (the simulators' request counters summed) against the
//!   10 Hz × N target;
//! - records committed/s (the `committed … last_seq=…` debug lines logged in
//!   the window), group commits and mean records per commit, commit time;
//! - records received at the MES/s, and capture → MES latency (the record's
//!   `ts`, ms resolution — when the poll's reply arrived — to its receipt,
//!   same clock).
//!
//! After the window the driver stops and the bench checks that the MES got
//! every unit counted: the sum of the `count` deltas of `c0` and `total`
//! equals the increments the driver made.
//!
//! Register map of every PLC (10 holding registers, one read per poll):
//!
//! | holding | name      | type        | role    | driven                      |
//! |---------|-----------|-------------|---------|-----------------------------|
//! | 0       | `c0`      | u16         | counter | +1 every 200 ms (5/s)       |
//! | 1–6     | `c1`–`c6` | u16         | counter | never (polled and compared) |
//! | 7–8     | `total`   | u32 ABCD    | counter | +1 every 1 s                |
//! | 9       | `state`   | u16         | state   | 1 ↔ 2 every 5 s             |
//!
//! i.e. 6.2 changes/s per PLC, each one record when every change is seen by
//! its own poll (c0 changes every second poll at 10 Hz).
//!
//! ```console
//! $ cargo bench --bench modbus
//! $ LINEGATE_BENCH_SCALE=0.1 cargo bench --bench modbus        # 6 s windows
//! $ LINEGATE_BENCH_DEVICES=10,100 cargo bench --bench modbus
//! ```
//!
//! `LINEGATE_BENCH_HOOK` runs a shell command at the window's start and end
//! (see `window_hook`; with `LINEGATE_WRAP` from the harness, a profiler).
//! `LINEGATE_BENCH_SCALE` multiplies the 60 s window; `LINEGATE_BENCH_DEVICES`
//! lists the device counts; `LINEGATE_BENCH_COMMIT_INTERVAL` the store's
//! `commit_interval` (default `10ms`, the default). Needs `mosquitto`. Without `--bench` on the
//! command line (e.g. `cargo test --all-targets`) it does nothing. Every wait
//! is bounded.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{BIN, Commit, Gateway, Mosquitto, free_port};
use linegate::config::WordOrder;
use linegate::devices::modbus::sim::SimPlc;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const FILTER: &str = "bench/line1/#";
const STATIONS: usize = 10;
const POLL_HZ: f64 = 10.0;
/// Time after every device answered its first poll before the window opens.
const WARMUP: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------- knobs

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

fn device_counts() -> Vec<usize> {
    let text = std::env::var("LINEGATE_BENCH_DEVICES").unwrap_or_else(|_| "10,100,500".into());
    let v: Vec<usize> = text
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .filter(|&n| (1..=5000).contains(&n))
        .collect();
    if v.is_empty() { vec![10, 100, 500] } else { v }
}

// ---------------------------------------------------------------- /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU seconds (user + sys) used so far by `pid` (0 when it does not run).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / clk_tck()
}

/// A numeric field (first number) of /proc/<pid>/status, e.g. `VmRSS:`.
fn status_field(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The "Max open files" line of /proc/<pid>/limits (soft, hard).
fn fd_limit_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} / {}",
                f.get(3).unwrap_or(&"?"),
                f.get(4).unwrap_or(&"?")
            )
        })
        .unwrap_or_else(|| "?".into())
}

/// RLIMIT_NOFILE of this process (soft, hard); raises the soft limit to
/// `want` (bounded by the hard one) if it is lower.
fn ensure_fd_limit(want: u64) -> (u64, u64, Option<u64>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= want {
        return (soft, hard, None);
    }
    let new = want.min(hard);
    let raised = libc::rlimit {
        rlim_cur: new,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    (soft, hard, ok.then_some(new))
}

// ---------------------------------------------------------------- MES

/// What the counting subscriber saw: distinct records (by seq), and the sums
/// needed to check the counts. Keeps no payloads.
#[derive(Default)]
struct MesStats {
    seqs: HashSet<u64>,
    duplicates: u64,
    max_seq: u64,
    c0_delta: u64,
    total_delta: u64,
    /// Non-baseline count records of c1..c6 (should stay 0).
    other_counts: u64,
    states: u64,
    alarms: u64,
    resets: u64,
    /// Capture (`ts`) → receipt, ms, of the records received while `sample` is on.
    latency_ms: Vec<f64>,
    sample: bool,
}

struct Mes {
    stats: Arc<Mutex<MesStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mes {
    async fn start(port: u16) -> Mes {
        let mut opts = MqttOptions::new(format!("mes-{}", free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let stats = Arc::new(Mutex::new(MesStats::default()));
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let (st, sub) = (stats.clone(), subscribed.clone());
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(FILTER, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now_ms = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                        let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        st.lock().unwrap().take(&v, now_ms);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        if tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .is_err()
        {
            panic!("MES subscriber: no SUBACK within 10 s");
        }
        Mes { stats, task }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MesStats) -> R) -> R {
        f(&mut self.stats.lock().unwrap())
    }

    /// Wait (bounded) until `cond` holds; polls every 20 ms.
    async fn wait(&self, limit: Duration, mut cond: impl FnMut(&MesStats) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.with(|s| cond(s)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Mes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MesStats {
    fn take(&mut self, v: &Value, now_ms: f64) {
        let Some(seq) = v.get("seq").and_then(Value::as_u64) else {
            return; // the gateway's status message
        };
        if !self.seqs.insert(seq) {
            self.duplicates += 1;
            return;
        }
        self.max_seq = self.max_seq.max(seq);
        if self.sample
            && let Some(ts) = v.get("ts").and_then(Value::as_str)
            && let Ok(ts) = humantime::parse_rfc3339_weak(ts)
        {
            let ts_ms = ts
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            self.latency_ms.push(now_ms - ts_ms);
        }
        let data = &v["data"];
        match v["kind"].as_str() {
            Some("count") => {
                let delta = data["delta"].as_u64().unwrap_or(0);
                if data["reset"].as_bool() == Some(true) {
                    self.resets += 1;
                }
                match data["name"].as_str() {
                    Some("c0") => self.c0_delta += delta,
                    Some("total") => self.total_delta += delta,
                    _ if data["baseline"].as_bool() != Some(true) => self.other_counts += 1,
                    _ => {}
                }
            }
            Some("state") => self.states += 1,
            Some("alarm") => self.alarms += 1,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- PLCs

/// Increments made by the driver (the same on every PLC).
#[derive(Default, Clone, Copy)]
struct Driven {
    c0: u64,
    total: u64,
    flips: u64,
    ticks: u64,
}

/// Every 100 ms: c0 +1 on every other tick, total +1 every 10th, state
/// flips every 50th; on every PLC. Runs until `stop`.
fn drive(plcs: Arc<Vec<SimPlc>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Driven> {
    tokio::spawn(async move {
        let mut d = Driven::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.tick().await;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            d.ticks += 1;
            if d.ticks % 2 == 0 {
                d.c0 += 1;
                for p in plcs.iter() {
                    p.set_holding(0, &[d.c0 as u16]);
                }
            }
            if d.ticks % 10 == 0 {
                d.total += 1;
                for p in plcs.iter() {
                    p.set_holding_u32(7, d.total as u32, WordOrder::Abcd);
                }
            }
            if d.ticks % 50 == 0 {
                d.flips += 1;
                let state = 1 + (d.flips % 2) as u16;
                for p in plcs.iter() {
                    p.set_holding(9, &[state]);
                }
            }
        }
        d
    })
}

/// `LINEGATE_BENCH_HOOK`: a shell command run (and waited for) at the
/// window's start and end as `sh -c "$HOOK" hook start|end <pid> <n>`, e.g.
/// to zero and dump a callgrind profile of the gateway
/// (`callgrind_control -z "$2"` / `callgrind_control -d "$1-$3" "$2"`).
fn window_hook(phase: &str, pid: u32, n: usize) {
    let Ok(hook) = std::env::var("LINEGATE_BENCH_HOOK") else {
        return;
    };
    let status = std::process::Command::new("sh")
        .args(["-c", &hook, "hook", phase, &pid.to_string(), &n.to_string()])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("LINEGATE_BENCH_HOOK {phase}: {status:?}");
    }
}

fn requests(plcs: &[SimPlc]) -> u64 {
    plcs.iter().map(SimPlc::requests).sum()
}

fn gateway_toml(data: &Path, mqtt_port: u16, plcs: &[SimPlc]) -> String {
    let mut t = format!(
        r#"[gateway]
id = "gw-mbbench"
site = "bench"
line = "line1"
data_dir = "{data}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive = "15s"
max_inflight = 128
reconnect_min = "50ms"
reconnect_max = "500ms"
status_interval = "30s"

[store]
commit_interval = "{commit_interval}"
commit_max_records = 256
cache_size = "2MiB"
"#,
        data = data.display(),
        commit_interval =
            std::env::var("LINEGATE_BENCH_COMMIT_INTERVAL").unwrap_or_else(|_| "10ms".into()),
    );
    for s in 0..STATIONS.min(plcs.len()) {
        let _ = writeln!(t, "\n[[station]]\nid = \"st{s:02}\"");
    }
    for (i, p) in plcs.iter().enumerate() {
        let _ = write!(
            t,
            r#"
[[device]]
id = "plc{i:03}"
type = "modbus-tcp"
station = "st{st:02}"
host = "127.0.0.1"
port = {port}
poll_interval = "100ms"
timeout = "1s"
"#,
            st = i % STATIONS,
            port = p.port()
        );
        for c in 0..7 {
            let _ = write!(
                t,
                "  [[device.register]]\n  name = \"c{c}\"\n  table = \"holding\"\n  address = {c}\n  role = \"counter\"\n"
            );
        }
        t.push_str(
            "  [[device.register]]\n  name = \"total\"\n  table = \"holding\"\n  address = 7\n  type = \"u32\"\n  role = \"counter\"\n",
        );
        t.push_str(
            "  [[device.register]]\n  name = \"state\"\n  table = \"holding\"\n  address = 9\n  role = \"state\"\n",
        );
    }
    t
}

// ---------------------------------------------------------------- one run

struct Row {
    n: usize,
    window_s: f64,
    cpu_gw: f64,
    cpu_broker: f64,
    cpu_bench: f64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: usize,
    polls_per_s: f64,
    committed_per_s: f64,
    commits: usize,
    mean_batch: f64,
    commit_ms_p50: f64,
    commit_ms_p99: f64,
    mes_per_s: f64,
    lat_p50: f64,
    lat_p99: f64,
    lat_max: f64,
    notes: Vec<String>,
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_one(n: usize, window: Duration) -> Row {
    let mut notes = Vec::new();
    let t_setup = Instant::now();
    let broker = Mosquitto::start();
    let mes = Mes::start(broker.port).await;
    let mut plcs = Vec::with_capacity(n);
    for _ in 0..n {
        plcs.push(SimPlc::start().await.expect("start SimPlc"));
    }
    let plcs = Arc::new(plcs);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut gw = Gateway::start(
        dir.path(),
        &gateway_toml(&dir.path().join("data"), broker.port, &plcs),
    );
    let pid = gw.pid().expect("gateway pid");

    // Every device answered a poll, and its first records (8 baselines, the
    // state, the online alarm) reached the MES.
    let deadline = Instant::now() + Duration::from_secs(60);
    while plcs.iter().any(|p| p.requests() == 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answered = plcs.iter().filter(|p| p.requests() > 0).count();
    if answered < n {
        notes.push(format!(
            "only {answered} of {n} PLCs were polled within 60 s"
        ));
    }
    let first = (n * 10) as u64;
    if !mes
        .wait(Duration::from_secs(30), |s| s.seqs.len() as u64 >= first)
        .await
    {
        notes.push(format!(
            "MES had {} of the {first} first records after 30 s",
            mes.with(|s| s.seqs.len())
        ));
    }
    let online_s = t_setup.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let driver = drive(plcs.clone(), stop.clone());
    tokio::time::sleep(WARMUP).await;

    // ---- window
    let self_pid = Some(std::process::id());
    let cpu0 = (
        cpu_secs(Some(pid)),
        cpu_secs(broker.pid()),
        cpu_secs(self_pid),
    );
    let req0 = requests(&plcs);
    let mes0 = mes.with(|s| {
        s.sample = true;
        s.seqs.len()
    });
    window_hook("start", pid, n);
    let t0 = Instant::now();
    let t0_sys = SystemTime::now();
    tokio::time::sleep(window).await;
    let t1_sys = SystemTime::now();
    window_hook("end", pid, n);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = (
        cpu_secs(Some(pid)),
        cpu_secs(broker.pid()),
        cpu_secs(self_pid),
    );
    let req1 = requests(&plcs);
    let (mes1, mut lat) = mes.with(|s| {
        s.sample = false;
        (s.seqs.len(), std::mem::take(&mut s.latency_ms))
    });
    let rss_kib = status_field(pid, "VmRSS:");
    let hwm_kib = status_field(pid, "VmHWM:");
    let threads = status_field(pid, "Threads:");
    let fds = open_fds(pid);
    if n == *device_counts().iter().max().unwrap_or(&n) {
        notes.push(format!(
            "gateway's open-file limit (soft / hard): {}",
            fd_limit_of(pid)
        ));
    }

    // ---- check: every unit counted reached the MES
    stop.store(true, Ordering::Relaxed);
    let driven = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let want_c0 = driven.c0 * n as u64;
    let want_total = driven.total * n as u64;
    let complete = mes
        .wait(Duration::from_secs(30), |s| {
            s.c0_delta >= want_c0 && s.total_delta >= want_total
        })
        .await;
    let s = mes.with(|s| {
        (
            s.c0_delta,
            s.total_delta,
            s.states,
            s.alarms,
            s.other_counts,
            s.resets,
            s.duplicates,
        )
    });
    let (c0, total, states, alarms, other, resets, dups) = s;
    let check = format!(
        "check: c0 deltas {c0} / {want_c0} driven, total deltas {total} / {want_total}, \
         state records {states} (initial {n} + flips {}), alarms {alarms}, \
         unexpected counts {other}, resets {resets}, duplicates at MES {dups}",
        driven.flips * n as u64
    );
    if !complete || c0 != want_c0 || total != want_total || other != 0 || resets != 0 {
        notes.push(format!("MISMATCH {check}"));
    } else {
        notes.push(check);
    }

    match gw.terminate(Duration::from_secs(15)) {
        Ok(Some(0)) => {}
        Ok(code) => notes.push(format!("gateway exit code on SIGTERM: {code:?}")),
        Err(_) => notes.push("gateway did not exit within 15 s of SIGTERM; killed".into()),
    }
    let log = gw.log_text();
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    let errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
    if warns + errors > 0 {
        notes.push(format!(
            "gateway log: {warns} WARN, {errors} ERROR lines (first: {})",
            log.lines()
                .find(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .unwrap_or("")
        ));
    }

    // ---- commits in the window
    let commits: Vec<Commit> = gw
        .commits()
        .into_iter()
        .filter(|c| c.at >= t0_sys && c.at < t1_sys)
        .collect();
    let records: u64 = commits.iter().map(|c| c.records).sum();
    let mut cms: Vec<f64> = commits.iter().map(|c| c.commit_ms).collect();
    cms.sort_by(f64::total_cmp);
    lat.sort_by(f64::total_cmp);
    drop(mes);
    drop(plcs);
    drop(broker);
    println!(
        "  N={n}: set-up to all online {online_s:.1} s, driver ticks {} in {:.1} s",
        driven.ticks,
        driven.ticks as f64 / 10.0
    );
    Row {
        n,
        window_s: elapsed,
        cpu_gw: cpu1.0 - cpu0.0,
        cpu_broker: cpu1.1 - cpu0.1,
        cpu_bench: cpu1.2 - cpu0.2,
        rss_kib,
        hwm_kib,
        threads,
        fds,
        polls_per_s: (req1 - req0) as f64 / elapsed,
        committed_per_s: records as f64 / elapsed,
        commits: commits.len(),
        mean_batch: records as f64 / commits.len().max(1) as f64,
        commit_ms_p50: pct(&cms, 0.5),
        commit_ms_p99: pct(&cms, 0.99),
        mes_per_s: (mes1 - mes0) as f64 / elapsed,
        lat_p50: pct(&lat, 0.5),
        lat_p99: pct(&lat, 0.99),
        lat_max: pct(&lat, 1.0),
        notes,
    }
}

// ---------------------------------------------------------------- report

fn print_table(rows: &[Row]) {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |what: &str, f: &dyn Fn(&Row) -> String| {
        lines.push((what.to_owned(), rows.iter().map(f).collect()));
    };
    add("window", &|r| format!("{:.1} s", r.window_s));
    add("gateway CPU (user+sys) in the window", &|r| {
        format!("{:.2} s", r.cpu_gw)
    });
    add("… as % of one core", &|r| {
        format!("{:.1} %", 100.0 * r.cpu_gw / r.window_s)
    });
    add("… per poll", &|r| {
        format!("{:.1} µs", 1e6 * r.cpu_gw / (r.polls_per_s * r.window_s))
    });
    add("broker / bench process CPU in the window", &|r| {
        format!("{:.2} / {:.2} s", r.cpu_broker, r.cpu_bench)
    });
    add("gateway VmRSS / VmHWM at the end", &|r| {
        format!(
            "{:.1} / {:.1} MiB",
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0
        )
    });
    add("gateway threads / open fds", &|r| {
        format!("{} / {}", r.threads, r.fds)
    });
    add("polls/s achieved / target", &|r| {
        format!("{:.0} / {:.0}", r.polls_per_s, POLL_HZ * r.n as f64)
    });
    add("records committed/s", &|r| {
        format!("{:.0}", r.committed_per_s)
    });
    add("records received at the MES/s", &|r| {
        format!("{:.0}", r.mes_per_s)
    });
    add("group commits / mean records per commit", &|r| {
        format!("{} / {:.1}", r.commits, r.mean_batch)
    });
    add("commit time p50 / p99", &|r| {
        format!("{:.2} / {:.2} ms", r.commit_ms_p50, r.commit_ms_p99)
    });
    add("capture → MES p50 / p99 / max", &|r| {
        format!("{:.1} / {:.1} / {:.1} ms", r.lat_p50, r.lat_p99, r.lat_max)
    });
    print!("\n| measurement |");
    for r in rows {
        print!(" N = {} |", r.n);
    }
    print!("\n|---|");
    for _ in rows {
        print!("---|");
    }
    println!();
    for (what, vals) in &lines {
        print!("| {what} |");
        for v in vals {
            print!(" {v} |");
        }
        println!();
    }
    for r in rows {
        for n in &r.notes {
            println!("note (N={}): {n}", r.n);
        }
    }
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("modbus bench: skipped (run it with `cargo bench --bench modbus`)");
        return ExitCode::SUCCESS;
    }
    let scale = env_f64("LINEGATE_BENCH_SCALE", 1.0).clamp(0.01, 10.0);
    let window = Duration::from_secs_f64((60.0 * scale).max(1.0));
    let counts = device_counts();
    let max_n = *counts.iter().max().unwrap_or(&1) as u64;
    // This process holds a listener and an accepted socket per PLC.
    let (soft, hard, raised) = ensure_fd_limit(2 * max_n + 256);
    println!(
        "linegate modbus bench: devices {counts:?}, window {:.1} s, poll 100 ms",
        window.as_secs_f64()
    );
    println!("binary: {BIN}");
    println!(
        "open-file limit (RLIMIT_NOFILE) of the bench: soft {soft}, hard {hard}{}",
        raised.map_or(String::new(), |r| format!(", soft raised to {r}"))
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &counts {
        println!("N = {n} …");
        rows.push(rt.block_on(run_one(n, window)));
    }
    print_table(&rows);
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
