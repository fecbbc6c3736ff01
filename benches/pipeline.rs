//! End-to-end benchmarks of the linegate pipeline: scanner (pseudo-terminal)
//! → the real `linegate` binary (child process) → Mosquitto on loopback → an
//! MES-side rumqttc subscriber (QoS 1).
//!
//! What it measures (results in BENCHMARKS.md):
//!
//! 1. **Latency**, one scan at a time at a modest rate: pty write → subscriber
//!    receipt (p50/p99/max). This includes the broker hop, so it bounds
//!    scan → PUBACK from above. Also scan → commit (acceptance), from the wall
//!    clock timestamp of the gateway's `committed` debug log line, and the
//!    store commit time itself (`commit_ms` in that line: apply + flush +
//!    fdatasync).
//! 2. **Sustained throughput**: a burst of scans written to the pty as fast as
//!    it takes them; records/s from the first write to the last receipt, and
//!    the store's acceptance rate (first write → the commit of the last one).
//! 3. **Memory and backlog**: RSS when idle (connected, no traffic, ~5 s);
//!    RSS with a backlog (broker unreachable, then N scans committed); the
//!    store's size on disk with that backlog; then a broker comes up on the
//!    gateway's port and the drain rate is measured at the subscriber.
//!
//! Run (builds the binary with the bench profile, i.e. release):
//!
//! ```console
//! $ cargo bench --bench pipeline
//! $ LINEGATE_BENCH_SCALE=0.1 cargo bench --bench pipeline   # quick run
//! ```
//!
//! `LINEGATE_BENCH_SCALE` multiplies every size (1000 latency scans, 50,000
//! burst scans, 100,000 backlog records); `LINEGATE_BENCH_RATE` sets the
//! latency scan rate (default 20/s); `LINEGATE_BENCH_ROUNDS` the number of
//! extra bursts run to watch memory and store size (default 3);
//! `LINEGATE_BENCH_ENGINE` the store engine (`sled` or `redb`; default: the
//! config default); `LINEGATE_BENCH_BACKLOG` the backlog size (records,
//! overrides the scale, e.g. `1000000`); `LINEGATE_BENCH_ONLY=backlog` runs
//! the backlog and drain part alone. Needs `mosquitto` on the PATH (or in
//! /usr/sbin). Without `--bench` on the command line (e.g. under
//! `cargo test --all-targets`) it does nothing. Every wait is bounded.
//!
//! The broker, the gateway process, its config and the MES subscriber are the
//! integration tests' harness (`tests/common`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use common::{BIN, Commit, Gateway, GatewayConfig, Message, Mosquitto, Recorder, free_port};
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;
use support::{describe_fs, env_f64, pct, sorted};

const FILTER: &str = "bench/line1/#";
const SCAN_TOPIC: &str = "bench/line1/st10/scan";
const STATUS_TOPIC: &str = "bench/line1/gateway/gw-bench/status";

// ---------------------------------------------------------------- sizes

struct Sizes {
    scale: f64,
    latency_scans: usize,
    latency_rate: f64,
    burst: usize,
    /// Extra bursts after the first, to see whether memory or disk keep growing.
    rounds: usize,
    backlog: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let scale: f64 = env_f64("LINEGATE_BENCH_SCALE", 1.0).clamp(0.001, 10.0);
        let n = |base: f64| ((base * scale).round() as usize).max(10);
        Sizes {
            scale,
            latency_scans: n(1000.0),
            latency_rate: env_f64("LINEGATE_BENCH_RATE", 20.0).clamp(0.1, 1000.0),
            burst: n(50_000.0),
            rounds: env_f64("LINEGATE_BENCH_ROUNDS", 3.0).clamp(0.0, 100.0) as usize,
            backlog: match std::env::var("LINEGATE_BENCH_BACKLOG") {
                Ok(_) => (env_f64("LINEGATE_BENCH_BACKLOG", 100_000.0) as usize).max(10),
                Err(_) => n(100_000.0),
            },
        }
    }
}

// ---------------------------------------------------------------- helpers

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Signed `a - b` in milliseconds.
fn sys_diff_ms(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// (apparent bytes, allocated bytes) of every file under `dir`.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// CPU time (user + system) used so far by process `pid`, in seconds (0 when
/// there is no such process).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / tck
}

/// CPU seconds of the gateway, the broker and this process (pty writer + MES).
#[derive(Clone, Copy)]
struct Cpu {
    gateway: f64,
    broker: f64,
    bench: f64,
}

impl Cpu {
    fn now(gateway: &Gateway, broker: &Mosquitto) -> Cpu {
        Cpu {
            gateway: cpu_secs(gateway.pid()),
            broker: cpu_secs(broker.pid()),
            bench: cpu_secs(Some(std::process::id())),
        }
    }

    fn since(self, before: Cpu) -> String {
        format!(
            "{:.2} / {:.2} / {:.2} s",
            self.gateway - before.gateway,
            self.broker - before.broker,
            self.bench - before.bench
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// (VmRSS, VmHWM) of the gateway in KiB, from /proc/<pid>/status (0 when it
/// does not run).
fn memory(gw: &Gateway) -> (u64, u64) {
    let Some(pid) = gw.pid() else { return (0, 0) };
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reset the gateway's VmHWM to its current VmRSS (`clear_refs` 5), so the
/// next VmHWM read is the peak of the phase that follows.
fn reset_peak(gw: &Gateway) {
    if let Some(pid) = gw.pid() {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

// ---------------------------------------------------------------- MES subscriber

/// First receipt of one scan record.
#[derive(Clone, Copy)]
struct Receipt {
    at: Instant,
    seq: u64,
}

/// What the MES made of the messages it received.
#[derive(Default)]
struct MesState {
    /// Messages of the recorder taken into account so far.
    read: usize,
    /// Scan code → first receipt.
    scans: HashMap<String, Receipt>,
    duplicates: u64,
    /// First record (any kind) received, for the drain measurement.
    first_record: Option<Instant>,
    /// Status payloads, in arrival order.
    statuses: Vec<Value>,
    /// Records of other kinds (alarms, context), by kind.
    other: HashMap<String, u64>,
}

impl MesState {
    /// Take in the messages received since the last call.
    fn update(&mut self, msgs: &[Message]) {
        for m in &msgs[self.read..] {
            let v = m.json();
            if m.topic == STATUS_TOPIC {
                self.statuses.push(v);
            } else if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
                self.first_record.get_or_insert(m.received);
                if m.topic == SCAN_TOPIC {
                    let code = v["data"]["code"].as_str().unwrap_or("").to_owned();
                    match self.scans.entry(code) {
                        Entry::Occupied(_) => self.duplicates += 1,
                        Entry::Vacant(e) => {
                            e.insert(Receipt {
                                at: m.received,
                                seq,
                            });
                        }
                    }
                } else {
                    let kind = v["kind"].as_str().unwrap_or("?").to_owned();
                    *self.other.entry(kind).or_default() += 1;
                }
            }
        }
        self.read = msgs.len();
    }
}

/// The MES: a QoS 1 subscriber (the harness's [`Recorder`], which timestamps
/// each message on receipt) and what it made of the scan records.
struct Mes {
    rec: Recorder,
    state: Mutex<MesState>,
}

impl Mes {
    async fn start(port: u16) -> Mes {
        Mes {
            rec: Recorder::start_with_keep_alive(port, FILTER, Duration::from_secs(30)).await,
            state: Mutex::default(),
        }
    }

    /// The state, up to date with every message received so far.
    fn state(&self) -> MutexGuard<'_, MesState> {
        let msgs = self.rec.messages.lock().unwrap();
        let mut st = self.state.lock().unwrap();
        st.update(&msgs);
        st
    }

    /// Wait (bounded) until `cond` holds; false on timeout.
    async fn wait(&self, limit: Duration, mut cond: impl FnMut(&MesState) -> bool) -> bool {
        self.rec
            .wait_for_within(limit, |msgs| {
                let mut st = self.state.lock().unwrap();
                st.update(msgs);
                cond(&st)
            })
            .await
    }

    /// Wait (bounded) until every code in `codes` arrived; returns how many did.
    async fn wait_codes(&self, codes: &[String], limit: Duration) -> usize {
        // Codes arrive in order; check from where the last check stopped.
        let mut i = 0;
        self.wait(limit, |s| {
            while i < codes.len() && s.scans.contains_key(&codes[i]) {
                i += 1;
            }
            i == codes.len()
        })
        .await;
        let st = self.state();
        codes.iter().filter(|c| st.scans.contains_key(*c)).count()
    }

    fn receipt(&self, code: &str) -> Option<Receipt> {
        self.state().scans.get(code).copied()
    }
}

// ---------------------------------------------------------------- gateway

/// Start the gateway in `dir` (store in `dir/data`) for a broker on `port`.
fn start_gateway(dir: &Path, port: u16, scanner: &Path) -> Gateway {
    // Store and uplink values spelled out; they are the defaults at this commit.
    let config = GatewayConfig {
        engine: bench_engine(),
        store: r#"commit_interval = "10ms"
commit_max_records = 256
cache_size = "2MiB"
"#,
        ..support::bench_config()
    };
    Gateway::start(dir, &config.toml(&dir.join("data"), port, scanner))
}

/// The store engine under test: `LINEGATE_BENCH_ENGINE` (`sled` or `redb`),
/// else the default engine.
fn bench_engine() -> Option<&'static str> {
    match std::env::var("LINEGATE_BENCH_ENGINE").ok()?.as_str() {
        "sled" => Some("sled"),
        "redb" => Some("redb"),
        other => {
            eprintln!("LINEGATE_BENCH_ENGINE={other:?} is not sled or redb; using the default");
            None
        }
    }
}

/// SIGTERM the gateway and wait (bounded) for its exit code; SIGKILL if it hangs.
fn stop(gw: &mut Gateway) -> Option<i32> {
    gw.terminate(Duration::from_secs(10)).unwrap_or_else(|_| {
        eprintln!("linegate did not stop within 10 s of SIGTERM; killed it");
        None
    })
}

// ---------------------------------------------------------------- results

#[derive(Default)]
struct Results {
    rows: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Results {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        println!("  {what:<52} {value}");
        self.rows.push((what, value));
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  ! {text}");
        self.notes.push(text);
    }

    fn dist(&mut self, what: &str, v: &[f64]) {
        if v.is_empty() {
            self.note(format!("{what}: no samples"));
            return;
        }
        let v = sorted(v.to_vec());
        self.row(
            format!("{what} p50 / p99 / max (n={})", v.len()),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                pct(&v, 0.5),
                pct(&v, 0.99),
                pct(&v, 1.0)
            ),
        );
    }

    fn print_table(&self) {
        let w = self.rows.iter().map(|(a, _)| a.len()).max().unwrap_or(10);
        println!("\n| {:<w$} | value |", "measurement");
        println!("|{}|-------|", "-".repeat(w + 2));
        for (a, b) in &self.rows {
            println!("| {a:<w$} | {b} |");
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

// ---------------------------------------------------------------- scenarios

fn codes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

struct Burst {
    got: usize,
    written_s: f64,
    to_mes_s: f64,
    to_commit_s: Option<f64>,
    /// `commit_ms` of each group commit holding burst records.
    commits: Vec<f64>,
    records: u64,
    /// CPU used from the first write to the last receipt.
    cpu: String,
}

impl Burst {
    fn mean_batch(&self) -> f64 {
        self.records as f64 / self.commits.len().max(1) as f64
    }
}

/// Write `n` scans to the pty in one go and wait (bounded) for all of them at the MES.
async fn burst(
    pty: &VirtualSerial,
    mes: &Mes,
    gw: &Gateway,
    broker: &Mosquitto,
    prefix: &str,
    n: usize,
    out: &mut Results,
) -> Option<Burst> {
    let codes = codes(prefix, n);
    let bytes: Vec<u8> = codes
        .iter()
        .flat_map(|c| format!("{c}\r\n").into_bytes())
        .collect();
    let cpu0 = Cpu::now(gw, broker);
    let t0 = Instant::now();
    let t0_sys = SystemTime::now();
    pty.write(&bytes).await.expect("pty write");
    let written_s = t0.elapsed().as_secs_f64();
    let limit = Duration::from_secs(120).max(Duration::from_secs_f64(n as f64 / 500.0));
    let got = mes.wait_codes(&codes, limit).await;
    if got < n {
        out.note(format!(
            "burst {prefix}: only {got} of {n} scans reached the MES within {limit:?}"
        ));
        return None;
    }
    let cpu = Cpu::now(gw, broker).since(cpu0);
    let receipts: Vec<Receipt> = codes.iter().filter_map(|c| mes.receipt(c)).collect();
    let last = receipts.iter().map(|r| r.at).max().unwrap_or(t0);
    let lo = receipts.iter().map(|r| r.seq).min().unwrap_or(0);
    let hi = receipts.iter().map(|r| r.seq).max().unwrap_or(0);
    // The commit log line of the last record is normally written already.
    gw.wait_committed(hi, Duration::from_secs(10)).await;
    let all = gw.commits();
    let held: Vec<&Commit> = all
        .iter()
        .filter(|c| c.last_seq >= lo && c.first_seq <= hi)
        .collect();
    Some(Burst {
        got,
        written_s,
        to_mes_s: last.duration_since(t0).as_secs_f64(),
        to_commit_s: Commit::holding(&all, hi).map(|c| sys_diff_ms(c.at, t0_sys) / 1000.0),
        commits: held.iter().map(|c| c.commit_ms).collect(),
        records: held.iter().map(|c| c.records).sum(),
        cpu,
    })
}

async fn idle_and_latency_and_burst(sizes: &Sizes, out: &mut Results) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_port = free_port();
    let broker = Mosquitto::start_on(broker_port);
    let mes = Mes::start(broker_port).await;
    let pty = VirtualSerial::open().expect("pty");
    let mut gw = start_gateway(dir.path(), broker_port, pty.slave_path());
    let data_dir = dir.path().join("data");
    let online = mes
        .wait(Duration::from_secs(15), |s| {
            s.other.get("alarm").copied().unwrap_or(0) >= 1
        })
        .await;
    assert!(
        online,
        "no device-online alarm within 15 s; see {}",
        gw.log.display()
    );

    // ---- idle RSS
    println!("\n[idle] gateway connected, scanner online, no traffic; waiting 5 s");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = memory(&gw);
    out.row(
        "idle RSS after 5 s (VmRSS / VmHWM)",
        format!(
            "{:.1} / {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    );

    // ---- latency
    let n = sizes.latency_scans;
    let rate = sizes.latency_rate;
    println!("\n[latency] {n} scans, one at a time, {rate}/s");
    let lat_codes = codes("LAT", n);
    let mut writes: Vec<(Instant, SystemTime)> = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for code in &lat_codes {
        tick.tick().await;
        let line = format!("{code}\r\n");
        writes.push((Instant::now(), SystemTime::now()));
        pty.write(line.as_bytes()).await.expect("pty write");
    }
    let got = mes.wait_codes(&lat_codes, Duration::from_secs(30)).await;
    if got < n {
        out.note(format!(
            "latency: only {got} of {n} scans reached the MES within 30 s"
        ));
    }
    let commits = gw.commits();
    let mut to_mes = Vec::with_capacity(n);
    let mut to_commit = Vec::with_capacity(n);
    let mut commit_ms = Vec::new();
    let mut seen_commit = std::collections::BTreeSet::new();
    for (code, (w_inst, w_sys)) in lat_codes.iter().zip(&writes) {
        let Some(r) = mes.receipt(code) else { continue };
        to_mes.push(ms(r.at.duration_since(*w_inst)));
        if let Some(c) = Commit::holding(&commits, r.seq) {
            to_commit.push(sys_diff_ms(c.at, *w_sys));
            if seen_commit.insert(c.first_seq) {
                commit_ms.push(c.commit_ms);
            }
        }
    }
    out.dist("scan -> MES subscriber (latency run)", &to_mes);
    out.dist("scan -> committed (log timestamp, latency run)", &to_commit);
    out.dist(
        "commit time (apply+flush+fdatasync), latency run",
        &commit_ms,
    );

    // ---- burst
    let n = sizes.burst;
    println!("\n[burst] {n} scans written to the pty as fast as it takes them");
    let Some(b) = burst(&pty, &mes, &gw, &broker, "TP", n, out).await else {
        return;
    };
    out.row(
        format!("burst {n}: first write -> last MES receipt"),
        format!(
            "{:.2} s = {:.0} records/s",
            b.to_mes_s,
            b.got as f64 / b.to_mes_s
        ),
    );
    out.row(
        "burst: CPU gateway / mosquitto / bench (pty+MES)",
        b.cpu.clone(),
    );
    out.row(
        "burst: pty write call returned after",
        format!("{:.2} s", b.written_s),
    );
    if let Some(s) = b.to_commit_s {
        out.row(
            "burst: first write -> last record committed",
            format!("{s:.2} s = {:.0} records/s accepted", n as f64 / s),
        );
    }
    out.row(
        "burst: group commits / mean records per commit",
        format!("{} / {:.0}", b.commits.len(), b.mean_batch()),
    );
    out.dist("commit time per group commit, burst", &b.commits);
    let (rss, hwm) = memory(&gw);
    out.row(
        "RSS after the burst (VmRSS / VmHWM)",
        format!(
            "{:.1} / {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    );

    // ---- more bursts: does memory or the store keep growing?
    for round in 2..=sizes.rounds + 1 {
        let prefix = format!("R{round}");
        let Some(b) = burst(&pty, &mes, &gw, &broker, &prefix, n, out).await else {
            return;
        };
        let (rss, _) = memory(&gw);
        let (apparent, _) = disk_usage(&data_dir);
        out.row(
            format!("burst round {round}: records/s to MES, VmRSS, store size"),
            format!(
                "{:.0} /s, {:.1} MiB, {:.1} MiB",
                b.got as f64 / b.to_mes_s,
                rss as f64 / 1024.0,
                mib(apparent)
            ),
        );
    }
    let dups = mes.state().duplicates;
    if dups > 0 {
        out.note(format!("{dups} duplicate scan deliveries seen at the MES"));
    }
    if stop(&mut gw) != Some(0) {
        out.note("gateway 1 did not exit 0 on SIGTERM");
    }
}

async fn backlog_and_drain(sizes: &Sizes, out: &mut Results) {
    let n = sizes.backlog;
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens here until the drain starts.
    let port = free_port();
    let pty = VirtualSerial::open().expect("pty");
    let gw = start_gateway(dir.path(), port, pty.slave_path());
    let data_dir = dir.path().join("data");
    // The scanner's device-online alarm is the first record.
    assert!(
        gw.wait_committed(1, Duration::from_secs(15)).await,
        "the gateway committed nothing within 15 s; see {}",
        gw.log.display()
    );
    let (empty_apparent, empty_alloc) = disk_usage(&data_dir);
    let base = gw.last_committed();
    println!("\n[backlog] broker unreachable (port {port} closed); {n} scans");
    let bl_codes = codes("BL", n);
    let bytes: Vec<u8> = bl_codes
        .iter()
        .flat_map(|c| format!("{c}\r\n").into_bytes())
        .collect();
    let t0_sys = SystemTime::now();
    pty.write(&bytes).await.expect("pty write");
    let target = base + n as u64;
    let limit = Duration::from_secs(120).max(Duration::from_secs_f64(n as f64 / 500.0));
    if !gw.wait_committed(target, limit).await {
        out.note(format!(
            "backlog: the log showed last_seq {} of {target} after {limit:?}",
            gw.last_committed()
        ));
        return;
    }
    let commits = gw.commits();
    if let Some(c) = Commit::holding(&commits, target) {
        let s = sys_diff_ms(c.at, t0_sys) / 1000.0;
        out.row(
            format!("backlog {n}: first write -> last committed (no broker)"),
            format!("{s:.2} s = {:.0} records/s accepted", n as f64 / s),
        );
    }
    let (rss, hwm) = memory(&gw);
    out.row(
        format!("RSS with {n} records backlog (VmRSS / VmHWM)"),
        format!(
            "{:.1} / {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss2, _) = memory(&gw);
    out.row(
        "  same, 2 s later (VmRSS)",
        format!("{:.1} MiB", rss2 as f64 / 1024.0),
    );
    let (apparent, alloc) = disk_usage(&data_dir);
    out.row(
        "store on disk, one record (apparent / allocated)",
        format!("{empty_apparent} / {empty_alloc} B"),
    );
    out.row(
        format!("store on disk with {n} backlog (apparent / allocated)"),
        format!(
            "{:.1} / {:.1} MiB = {:.0} / {:.0} B/record",
            mib(apparent),
            mib(alloc),
            apparent as f64 / n as f64,
            alloc as f64 / n as f64
        ),
    );

    // ---- drain: freeze the gateway while the broker and the MES come up, so
    // the MES is subscribed before the gateway can connect.
    gw.signal(libc::SIGSTOP);
    reset_peak(&gw);
    let broker = Mosquitto::start_on(port);
    let mes = Mes::start(port).await;
    let cpu0 = Cpu::now(&gw, &broker);
    let t_cont = Instant::now();
    gw.signal(libc::SIGCONT);
    println!("[drain] broker up on port {port}; waiting for {n} records at the MES");
    let limit = Duration::from_secs(180).max(Duration::from_secs_f64(n as f64 / 300.0));
    let got = mes.wait_codes(&bl_codes, limit).await;
    if got < n {
        out.note(format!(
            "drain: only {got} of {n} backlog scans reached the MES within {limit:?}"
        ));
    }
    let cpu = Cpu::now(&gw, &broker);
    let receipts: Vec<Receipt> = bl_codes.iter().filter_map(|c| mes.receipt(c)).collect();
    let last = receipts.iter().map(|r| r.at).max().unwrap_or(t_cont);
    let (first, status) = {
        let st = mes.state();
        (
            st.first_record.unwrap_or(t_cont),
            st.statuses.first().cloned(),
        )
    };
    let from_cont = last.duration_since(t_cont).as_secs_f64();
    let from_first = last.duration_since(first).as_secs_f64();
    out.row(
        format!("drain {n}: SIGCONT -> last MES receipt"),
        format!("{from_cont:.2} s = {:.0} records/s", got as f64 / from_cont),
    );
    out.row(
        "drain: first record -> last record at the MES",
        format!(
            "{from_first:.2} s = {:.0} records/s",
            got as f64 / from_first
        ),
    );
    out.row(
        "drain: CPU gateway / mosquitto / bench (MES)",
        cpu.since(cpu0),
    );
    out.row(
        "drain: gateway CPU per record",
        format!(
            "{:.1} µs",
            (cpu.gateway - cpu0.gateway) * 1e6 / got.max(1) as f64
        ),
    );
    if let Some(s) = status {
        let q = &s["queue"];
        if let (Some(depth), Some(bytes)) = (q["depth"].as_u64(), q["bytes"].as_u64()) {
            out.row(
                "store queue at connect (status: depth, encoded bytes)",
                format!(
                    "{depth} records, {:.1} MiB = {:.0} B/record encoded",
                    mib(bytes),
                    bytes as f64 / depth.max(1) as f64
                ),
            );
        }
    }
    let (rss, hwm) = memory(&gw);
    out.row(
        "RSS after the drain (VmRSS / VmHWM = peak during the drain)",
        format!(
            "{:.1} / {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    );
    let (apparent, alloc) = disk_usage(&data_dir);
    out.row(
        "store on disk right after the drain (apparent / allocated)",
        format!("{:.1} / {:.1} MiB", mib(apparent), mib(alloc)),
    );
    let dups = mes.state().duplicates;
    if dups > 0 {
        out.note(format!(
            "drain: {dups} duplicate scan deliveries at the MES"
        ));
    }
    let mut gw = gw;
    if stop(&mut gw) != Some(0) {
        out.note("gateway 2 did not exit 0 on SIGTERM");
    }
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: skipped (run it with `cargo bench --bench pipeline`)");
        return ExitCode::SUCCESS;
    }
    let sizes = Sizes::from_env();
    println!(
        "linegate pipeline bench: scale {} (latency {} scans at {}/s, burst {}, backlog {})",
        sizes.scale, sizes.latency_scans, sizes.latency_rate, sizes.burst, sizes.backlog
    );
    println!("binary: {BIN}");
    println!(
        "store engine: {}",
        bench_engine().unwrap_or("the default (redb)")
    );
    println!("temp dir: {}", describe_fs(&std::env::temp_dir()));
    let rt = support::runtime();
    let started = Instant::now();
    let mut out = Results::default();
    let only_backlog = std::env::var("LINEGATE_BENCH_ONLY").is_ok_and(|v| v == "backlog");
    rt.block_on(async {
        if !only_backlog {
            idle_and_latency_and_burst(&sizes, &mut out).await;
        }
        backlog_and_drain(&sizes, &mut out).await;
    });
    out.print_table();
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
