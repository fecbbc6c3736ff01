//! Test harness: real peers, no mocks. Shared by the integration tests
//! (`mod common;`) and the pipeline bench (`#[path = "../tests/common/mod.rs"]
//! mod common;`); each uses a subset, hence `allow(dead_code)`.
//!
//! - [`Mosquitto`]: a real broker process on a free loopback port (`mosquitto`
//!   from the PATH, else /usr/sbin or /usr/local/sbin). Tests fail loudly when
//!   it is not installed (`.ci/run` installs it).
//! - [`Proxy`] (`proxy.rs`): a TCP relay between gateway and broker that
//!   refuses new connections, cuts open ones, black-holes them, resets one
//!   between a PUBLISH and its PUBACK or closes its port, so tests decide
//!   when and how the gateway gets through; its tap times PUBLISH/PUBACK.
//! - [`Recorder`]: an MES-side subscriber that keeps every message received,
//!   with its receipt time.
//! - [`GatewayConfig`] / [`config_toml`]: the generated gateway config.
//! - [`Gateway`]: the `linegate` binary as a child process, killable with
//!   SIGKILL, with its pid and the group commits it logged ([`Commit`]).
//! - [`ledger::Ledger`]: accepted (committed) against delivered, the check
//!   every fault test ends with.
//!
//! Every wait is bounded, and event-driven where there is an event to wait for
//! (the exceptions poll: a port coming up, a commit showing in the log).

#![allow(dead_code)]

pub mod ledger;
pub mod proxy;

// Not every test binary uses it (see `allow(dead_code)` above).
#[allow(unused_imports)]
pub use proxy::Proxy;

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::Notify;

/// Default bound of the harness's waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// A loopback port that was free a moment ago.
/// The first copy of each record (by `seq`) that `keep` accepts, in seq
/// order: what an MES de-duplicating on `(gateway, seq)` keeps.
pub fn first_copies(records: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut by_seq = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| keep(r)) {
        if let Some(seq) = r["seq"].as_u64() {
            by_seq.entry(seq).or_insert_with(|| r.clone());
        }
    }
    by_seq.into_values().collect()
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `cond` holds, re-checking whenever `notify` fires; bounded by
/// `limit`, after which it panics naming `what`.
pub async fn wait_until(notify: &Notify, limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until_within(notify, limit, cond).await,
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Like [`wait_until`], but returns whether `cond` held instead of panicking
/// when `limit` runs out (for callers that report a timeout themselves).
pub async fn wait_until_within(
    notify: &Notify,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = notify.notified();
        if cond() {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return cond();
        }
    }
}

// ---------------------------------------------------------------- Mosquitto

/// Where to look for `mosquitto` when it is not on the PATH (Debian puts it
/// in /usr/sbin, which a user's PATH often lacks).
const MOSQUITTO_FALLBACKS: [&str; 2] = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"];

/// A Mosquitto broker process on 127.0.0.1, anonymous, no persistence, no
/// queue or in-flight limits. SIGKILLed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// More lines for its config file (e.g. `acl_file …`).
    extra: String,
}

impl Mosquitto {
    /// Start a broker on a free port.
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    /// Start a broker on `port` (e.g. one a gateway is already configured for).
    pub fn start_on(port: u16) -> Mosquitto {
        Self::start_with(port, "")
    }

    /// Start a broker on `port` with `extra` lines in its config file.
    pub fn start_with(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            port,
            child: None,
            dir,
            extra: extra.to_owned(),
        };
        m.restart();
        m
    }

    /// SIGHUP: the broker reloads its config (and its ACL file).
    pub fn reload(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        }
    }

    /// (Re)start the broker process on the same port, with a fresh, empty state.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n{}\n", self.port, self.extra),
        )
        .unwrap();
        let spawn = |exe: &str| {
            Command::new(exe)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = match spawn("mosquitto") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MOSQUITTO_FALLBACKS
                .into_iter()
                .find(|p| Path::new(p).exists())
                .map_or(Err(e), spawn),
            r => r,
        }
        .unwrap_or_else(|e| {
            panic!("cannot start `mosquitto` ({e}); install it (apt-get install mosquitto) — `bash .ci/run` does")
        });
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// The broker's process id, while it runs (e.g. for its CPU time in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the broker.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Block (bounded) until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listening on port {port} after 5 s");
}

// ---------------------------------------------------------------- Recorder

/// One PUBLISH received by a [`Recorder`].
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// When the recorder's event loop got it off the wire.
    pub received: Instant,
}

impl Message {
    /// The payload as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// An MES-side subscriber (QoS 1) that records everything it receives, in
/// arrival order. `notify` fires on every message and subscription change.
/// It resubscribes after a reconnect.
pub struct Recorder {
    pub messages: Arc<Mutex<Vec<Message>>>,
    pub notify: Arc<Notify>,
    pub client: AsyncClient,
    subscribed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Connect to the broker on `port`, subscribe to `filter`, and wait for the
    /// SUBACK. MQTT keep-alive 5 s.
    pub async fn start(port: u16, filter: &str) -> Recorder {
        Self::start_with_keep_alive(port, filter, Duration::from_secs(5)).await
    }

    /// [`Recorder::start`] with another MQTT keep-alive: a long one for heavy
    /// traffic, where a PINGRESP can queue behind thousands of PUBLISHes.
    pub async fn start_with_keep_alive(port: u16, filter: &str, keep_alive: Duration) -> Recorder {
        let mut opts = MqttOptions::new(format!("recorder-{}", free_port()), "127.0.0.1", port);
        // Room for the oversized commands some tests send. A persistent
        // session, as an MES keeps: if the recorder's own connection drops
        // (a PINGRESP late behind a flood), the broker keeps what arrives
        // meanwhile for it. (A restarted broker starts with no sessions.)
        opts.set_clean_session(false)
            .set_keep_alive(keep_alive)
            .set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let subscribed = Arc::new(AtomicBool::new(false));
        let (m, n, s, c, f) = (
            messages.clone(),
            notify.clone(),
            subscribed.clone(),
            client.clone(),
            filter.to_owned(),
        );
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        eprintln!("recorder: connected");
                        let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.store(true, Ordering::SeqCst);
                        n.notify_waiters();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let received = Instant::now();
                        m.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            received,
                        });
                        n.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if s.load(Ordering::SeqCst) {
                            eprintln!("recorder: connection lost: {e}");
                        }
                        s.store(false, Ordering::SeqCst);
                        n.notify_waiters();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        let r = Recorder {
            messages,
            notify,
            client,
            subscribed,
            task,
        };
        r.wait_subscribed().await;
        r
    }

    /// Wait until the subscription is in place (again, after a reconnect).
    pub async fn wait_subscribed(&self) {
        let s = self.subscribed.clone();
        wait_until(&self.notify, WAIT, "recorder subscription", move || {
            s.load(Ordering::SeqCst)
        })
        .await;
    }

    /// Wait until the recorder has noticed that its connection is gone (after
    /// the broker was killed), so a later `wait_subscribed` means a fresh
    /// subscription on the new broker.
    pub async fn wait_disconnected(&self) {
        let s = self.subscribed.clone();
        wait_until(&self.notify, WAIT, "recorder disconnect", move || {
            !s.load(Ordering::SeqCst)
        })
        .await;
    }

    /// A copy of every message so far.
    pub fn snapshot(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Record payloads (messages with a `seq`), in arrival order.
    pub fn records(&self) -> Vec<Value> {
        self.snapshot()
            .iter()
            .map(Message::json)
            .filter(|v| v.get("seq").is_some())
            .collect()
    }

    /// Wait for an online status published at or after `since` (the
    /// gateway's clock): once the recorder has it, that gateway's command
    /// subscription (requested before its status, on the same connection)
    /// is in place.
    pub async fn wait_status_since(&self, since: std::time::SystemTime) {
        self.wait_for("a status from the gateway", |m| {
            m.iter().any(|m| {
                let v = m.json();
                m.topic.ends_with("/status")
                    && v["online"] == true
                    && v["ts"]
                        .as_str()
                        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                        .is_some_and(|t| t >= since)
            })
        })
        .await;
    }

    /// Wait until `pred` holds over the recorded messages; panics after [`WAIT`].
    pub async fn wait_for(&self, what: &str, mut pred: impl FnMut(&[Message]) -> bool) {
        let m = self.messages.clone();
        wait_until(&self.notify, WAIT, what, move || pred(&m.lock().unwrap())).await;
    }

    /// Wait until `pred` holds over the recorded messages, at most `limit`;
    /// returns whether it held. `pred` runs with the message list locked, and
    /// sees it grow: it can resume where its previous call stopped.
    pub async fn wait_for_within(
        &self,
        limit: Duration,
        mut pred: impl FnMut(&[Message]) -> bool,
    ) -> bool {
        let m = self.messages.clone();
        wait_until_within(&self.notify, limit, move || pred(&m.lock().unwrap())).await
    }

    /// Wait until at least `n` distinct record seqs have arrived.
    pub async fn wait_records(&self, n: usize) {
        self.wait_for(&format!("{n} distinct records"), |msgs| {
            let seqs: std::collections::BTreeSet<u64> = msgs
                .iter()
                .filter_map(|m| m.json().get("seq").and_then(Value::as_u64))
                .collect();
            seqs.len() >= n
        })
        .await;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- Gateway

/// The `linegate` binary under test (built by cargo for tests and benches).
pub const BIN: &str = env!("CARGO_BIN_EXE_linegate");

/// The knobs of the generated config: one station `st10` and one serial
/// scanner `scanner-1` (CRLF suffix). [`Default`] is what the tests run with
/// (see [`config_toml`]); a bench or test changes what it needs:
///
/// ```ignore
/// GatewayConfig { status_interval: "30s", scan_rules: false, ..Default::default() }
/// ```
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `gateway.id`, `gateway.site`, `gateway.line` (topics start with
    /// `<site>/<line>/`).
    pub id: &'static str,
    pub site: &'static str,
    pub line: &'static str,
    /// `mqtt.keepalive`.
    pub keepalive: &'static str,
    /// `mqtt.status_interval`.
    pub status_interval: &'static str,
    /// `mqtt.max_inflight`; `None` leaves it out (the default applies).
    pub max_inflight: Option<u16>,
    /// `mqtt.reconnect_min` and `mqtt.reconnect_max`.
    pub reconnect: (&'static str, &'static str),
    /// Station scan rules `lot-label` (`LOT:<value>` sets the lot) and
    /// `work-order` (`WO` + 6 digits sets the order).
    pub scan_rules: bool,
    /// The scanner's `max_frame_len`; `None` leaves it out (the default applies).
    pub max_frame_len: Option<u32>,
    /// `[store] engine` (`"sled"` or `"redb"`). `None` leaves it out, so the
    /// default engine runs, unless `LINEGATE_TEST_ENGINE` names one: that
    /// runs every test built on this config on that engine.
    pub engine: Option<&'static str>,
    /// More keys for the `[store]` table, one per line.
    pub store: &'static str,
    /// More TOML appended at the end: whole tables only, since the tables
    /// above are closed by then (use `store` for `[store]` keys).
    pub extra: &'static str,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: "gw-test",
            site: "plant1",
            line: "line3",
            keepalive: "5s",
            status_interval: "1s",
            max_inflight: None,
            reconnect: ("50ms", "500ms"),
            scan_rules: true,
            max_frame_len: Some(64),
            engine: None,
            store: "",
            extra: "",
        }
    }
}

impl GatewayConfig {
    /// The config text: store in `data_dir`, broker on 127.0.0.1:`mqtt_port`,
    /// scanner on `scanner_path`; short reconnect backoffs so tests are quick
    /// (unless `reconnect` says otherwise).
    pub fn toml(&self, data_dir: &Path, mqtt_port: u16, scanner_path: &Path) -> String {
        let GatewayConfig {
            id,
            site,
            line,
            keepalive,
            status_interval,
            max_inflight,
            reconnect: (reconnect_min, reconnect_max),
            scan_rules,
            max_frame_len,
            engine,
            store,
            extra,
        } = self;
        let engine = engine
            .map(str::to_owned)
            .or_else(|| std::env::var("LINEGATE_TEST_ENGINE").ok());
        let store = match (engine, *store) {
            (None, "") => String::new(),
            (engine, keys) => format!(
                "\n[store]\n{}{keys}",
                engine.map_or(String::new(), |e| format!("engine = \"{e}\"\n"))
            ),
        };
        let max_inflight = max_inflight.map_or(String::new(), |n| format!("max_inflight = {n}\n"));
        let scan_rules = if *scan_rules {
            r#"
  [[station.scan_rule]]
  name = "lot-label"
  pattern = '^LOT:(?P<value>[A-Z0-9-]{1,40})$'
  action = "set-lot"

  [[station.scan_rule]]
  name = "work-order"
  pattern = '^WO[0-9]{6}$'
  action = "set-order"
"#
        } else {
            ""
        };
        let max_frame_len =
            max_frame_len.map_or(String::new(), |n| format!("max_frame_len = {n}\n"));
        format!(
            r#"[gateway]
id = "{id}"
site = "{site}"
line = "{line}"
data_dir = "{data}"
{store}
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive = "{keepalive}"
{max_inflight}reconnect_min = "{reconnect_min}"
reconnect_max = "{reconnect_max}"
status_interval = "{status_interval}"

[[station]]
id = "st10"
{scan_rules}
[[device]]
id = "scanner-1"
type = "serial-scanner"
station = "st10"
path = "{scanner}"
suffix = "CRLF"
{max_frame_len}reconnect_min = "20ms"
reconnect_max = "200ms"
{extra}"#,
            data = data_dir.display(),
            scanner = scanner_path.display(),
        )
    }
}

/// The tests' config ([`GatewayConfig::default`]): gateway `gw-test` on
/// `plant1/line3`, one station `st10` (lot rule `LOT:…`, order rule `WO…`) and
/// one serial scanner `scanner-1` on `scanner_path`.
pub fn config_toml(data_dir: &Path, mqtt_port: u16, scanner_path: &Path) -> String {
    GatewayConfig::default().toml(data_dir, mqtt_port, scanner_path)
}

/// The `linegate` binary running as a child process, its stderr appended to
/// `log`; SIGKILLed on drop.
pub struct Gateway {
    child: Option<Child>,
    /// The binary run: [`BIN`] unless [`Gateway::start_binary`] named another.
    pub bin: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the process (e.g. libfaketime).
    pub env: Vec<(String, String)>,
}

/// [`Gateway::terminate`]: the gateway did not exit in time after SIGTERM
/// (it has been SIGKILLed).
#[derive(Debug)]
pub struct StopTimeout;

impl Gateway {
    /// Write `toml` into `dir/linegate.toml` and start `linegate run` on it.
    pub fn start(dir: &Path, toml: &str) -> Gateway {
        Self::start_with_env(dir, toml, Vec::new())
    }

    /// [`Gateway::start`] with extra environment variables, kept for every
    /// [`Gateway::spawn`].
    pub fn start_with_env(dir: &Path, toml: &str, env: Vec<(String, String)>) -> Gateway {
        Self::start_binary(Path::new(BIN), dir, toml, env)
    }

    /// [`Gateway::start_with_env`] running the `linegate` binary at `bin`
    /// (a bench comparing with another build).
    pub fn start_binary(bin: &Path, dir: &Path, toml: &str, env: Vec<(String, String)>) -> Gateway {
        let config = dir.join("linegate.toml");
        std::fs::write(&config, toml).unwrap();
        let mut g = Gateway {
            child: None,
            bin: bin.to_owned(),
            config,
            log: dir.join("gateway.log"),
            env,
        };
        g.spawn();
        g
    }

    /// Start the process again on the same config (after a kill). It logs at
    /// `info`, and at `debug` for the pipeline (its `committed` lines).
    pub fn spawn(&mut self) {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "---- start").unwrap();
        // Benches: `LINEGATE_BIN` runs another build of the binary where the
        // default one was asked for (before / after comparisons in one run);
        // `LINEGATE_WRAP` runs it under a profiler, e.g.
        // "valgrind --tool=callgrind".
        let bin = match std::env::var("LINEGATE_BIN") {
            Ok(other) if self.bin == Path::new(BIN) => PathBuf::from(other),
            _ => self.bin.clone(),
        };
        let wrap = std::env::var("LINEGATE_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(first) => {
                let mut c = Command::new(first);
                c.args(words).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("LINEGATE_LOG", "info,linegate::app::pipeline=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn linegate");
        self.child = Some(child);
    }

    /// The process id while it runs (e.g. for its memory and CPU time in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send `sig` (e.g. `libc::SIGSTOP` / `libc::SIGCONT`) if it runs.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit code
    /// (`None` if it was not running). Panics if it does not exit within 10 s.
    pub fn stop(&mut self) -> Option<i32> {
        self.terminate(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("linegate did not stop within 10 s of SIGTERM"))
    }

    /// SIGTERM and wait up to `limit` for the exit: its code (`None` if it was
    /// not running or died by a signal), or, if it hangs, SIGKILL and
    /// [`StopTimeout`].
    pub fn terminate(&mut self, limit: Duration) -> Result<Option<i32>, StopTimeout> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err(StopTimeout)
    }

    /// Wait up to `limit` for the gateway to exit by itself: its exit code
    /// (`None` if it died by a signal), or `Err` (still running, left so).
    /// A child's exit has no event to wait on here, so it is polled every
    /// 20 ms.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<Option<i32>, StopTimeout> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.child.as_mut().map(Child::try_wait) {
                None => return Ok(None),
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return Ok(status.code());
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        Err(StopTimeout)
    }

    /// Everything the gateway logged so far (all runs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The group commits the gateway logged (all runs), in log order, i.e. by
    /// ascending `seq`.
    pub fn commits(&self) -> Vec<Commit> {
        self.log_text().lines().filter_map(Commit::parse).collect()
    }

    /// Highest `seq` the gateway logged as committed (accepted), from its log.
    pub fn last_committed(&self) -> u64 {
        self.commits().iter().map(|c| c.last_seq).max().unwrap_or(0)
    }

    /// Wait until the log shows `seq >= target` committed, at most `limit`;
    /// returns whether it did.
    pub async fn wait_committed(&self, target: u64, limit: Duration) -> bool {
        self.wait_log_until(limit, || self.last_committed() >= target)
            .await
    }

    /// Wait until the gateway's log contains `needle`, at most `limit`;
    /// returns whether it did.
    pub async fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        self.wait_log_until(limit, || self.log_text().contains(needle))
            .await
    }

    /// How many lines of the log (all runs) contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Wait until at least `n` lines of the log contain `needle`, at most
    /// `limit`; returns whether they did.
    pub async fn wait_log_count(&self, needle: &str, n: usize, limit: Duration) -> bool {
        self.wait_log_until(limit, || self.log_count(needle) >= n)
            .await
    }

    /// Re-check `cond` on the log every 20 ms (a child's log file has no
    /// event to wait on), at most `limit`.
    async fn wait_log_until(&self, limit: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}

impl Gateway {
    /// Print the end of the gateway's log (its `committed` lines left out
    /// but the last): when a test fails, what the gateway was doing.
    fn print_log_tail(&self) {
        const LINES: usize = 60;
        let text = self.log_text();
        let last_commit = text.lines().rev().find(|l| Commit::parse(l).is_some());
        let mut tail: Vec<&str> = text
            .lines()
            .rev()
            .filter(|l| Commit::parse(l).is_none())
            .take(LINES)
            .collect();
        tail.reverse();
        eprintln!("---- the gateway's log, last {LINES} lines but `committed` ----");
        for line in tail {
            eprintln!("{line}");
        }
        if let Some(line) = last_commit {
            eprintln!("---- its last `committed` line ----\n{line}");
        }
    }
}

/// One group commit of the store, from the pipeline's `committed` debug line:
/// `<RFC 3339 time> DEBUG … committed first_seq=… last_seq=… records=… commit_ms=…`.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    /// Wall-clock time the line was logged (right after the commit returned).
    pub at: SystemTime,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// Time the commit took: apply + flush + fdatasync.
    pub commit_ms: f64,
}

impl Commit {
    /// Parse one log line; `None` unless it is a complete `committed` line.
    pub fn parse(line: &str) -> Option<Commit> {
        if !line.contains(" committed ") {
            return None;
        }
        let at = humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()?;
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        };
        Some(Commit {
            at,
            first_seq: field("first_seq")?.parse().ok()?,
            last_seq: field("last_seq")?.parse().ok()?,
            records: field("records")?.parse().ok()?,
            commit_ms: field("commit_ms")?.parse().ok()?,
        })
    }

    /// The commit in `commits` (sorted by seq, as [`Gateway::commits`]
    /// returns them) that holds `seq`.
    pub fn holding(commits: &[Commit], seq: u64) -> Option<&Commit> {
        let i = commits.partition_point(|c| c.last_seq < seq);
        commits.get(i).filter(|c| c.first_seq <= seq)
    }
}

// ---------------------------------------------------------------- DeviceRun

/// A device task run by the test itself (no gateway), and its reading channel.
pub struct DeviceRun {
    pub rx: tokio::sync::mpsc::Receiver<linegate::devices::Reading>,
    pub health: linegate::devices::health::DeviceHealth,
    _task: linegate::tasks::AbortOnDrop<()>,
}

/// Bounded wait for one reading of a [`DeviceRun`].
pub const DEVICE_WAIT: Duration = Duration::from_secs(5);
/// Readings a [`DeviceRun::until`] looks through before giving up.
pub const MAX_READINGS: usize = 2000;

impl DeviceRun {
    /// Spawn the device task `start(tx, health)` builds.
    pub fn spawn<F>(
        start: impl FnOnce(
            tokio::sync::mpsc::Sender<linegate::devices::Reading>,
            linegate::devices::health::DeviceHealth,
        ) -> F,
    ) -> DeviceRun
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let health = linegate::devices::health::DeviceHealth::default();
        let task = tokio::spawn(start(tx, health.clone()));
        DeviceRun {
            rx,
            health,
            _task: linegate::tasks::AbortOnDrop(task),
        }
    }

    pub async fn next(&mut self) -> linegate::devices::Reading {
        match tokio::time::timeout(DEVICE_WAIT, self.rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("device task ended"),
            Err(_) => panic!("no reading within {DEVICE_WAIT:?}"),
        }
    }

    /// The next reading matching `pred`; the ones skipped are returned too.
    pub async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&linegate::devices::Reading) -> bool,
    ) -> (linegate::devices::Reading, Vec<linegate::devices::Reading>) {
        let mut skipped = Vec::new();
        for _ in 0..MAX_READINGS {
            let r = self.next().await;
            if pred(&r) {
                return (r, skipped);
            }
            skipped.push(r);
        }
        panic!("no {what} in {MAX_READINGS} readings");
    }

    /// The next `Sample` reading for `station`.
    pub async fn samples(&mut self, station: &str) -> Vec<linegate::devices::Sample> {
        use linegate::devices::DeviceEvent;
        let (r, _) = self
            .until("sample", |r| {
                &*r.station == station && matches!(r.event, DeviceEvent::Sample(_))
            })
            .await;
        match r.event {
            DeviceEvent::Sample(s) => s,
            _ => unreachable!(),
        }
    }

    /// Everything already queued, without waiting.
    pub fn drain(&mut self) -> Vec<linegate::devices::Reading> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            out.push(r);
        }
        out
    }

    /// Every reading that arrives within `window` (bounded by its end).
    pub async fn collect_for(&mut self, window: Duration) -> Vec<linegate::devices::Reading> {
        let end = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(Some(r)) = tokio::time::timeout_at(end, self.rx.recv()).await {
            out.push(r);
        }
        out
    }
}
