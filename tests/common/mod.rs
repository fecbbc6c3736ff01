//! Test harness: real peers, no mocks.
//!
//! - [`Mosquitto`]: a real broker process on a free loopback port. Tests fail
//!   loudly when `mosquitto` is not installed (`.ci/run` installs it).
//! - [`Proxy`]: a TCP relay between gateway and broker that can refuse new
//!   connections and cut existing ones, so tests decide when the gateway gets
//!   through.
//! - [`Recorder`]: an MES-side subscriber that keeps every message received.
//! - [`Gateway`]: the `linegate` binary as a child process, killable with SIGKILL.
//!
//! Every wait is bounded and event-driven (no sleeps to wait for something).

#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `cond` holds, re-checking whenever `notify` fires; bounded by `limit`.
pub async fn wait_until(
    notify: &Notify,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = notify.notified();
        if cond() {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            assert!(cond(), "timed out after {limit:?} waiting for {what}");
            return;
        }
    }
}

// ---------------------------------------------------------------- Mosquitto

pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            port,
            child: None,
            dir,
        };
        m.restart();
        m
    }

    /// (Re)start the broker process on the same port, with a fresh, empty state.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n", self.port),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `mosquitto` ({e}); install it (apt-get install mosquitto) — `bash .ci/run` does")
            });
        self.child = Some(child);
        wait_for_port(self.port);
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

// ---------------------------------------------------------------- Proxy

/// A TCP relay: gateway → proxy → broker.
pub struct Proxy {
    pub port: u16,
    accepting: Arc<AtomicBool>,
    cut: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepting = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (a, c) = (accepting.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !a.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            accepting,
            cut,
            task,
        }
    }

    /// Refuse (close at once) new connections while `false`.
    pub fn set_accepting(&self, on: bool) {
        self.accepting.store(on, Ordering::SeqCst);
    }

    /// Cut every open connection.
    pub fn cut_all(&self) {
        self.cut.notify_waiters();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- Recorder

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// An MES-side subscriber that records everything it receives.
pub struct Recorder {
    pub messages: Arc<Mutex<Vec<Message>>>,
    pub notify: Arc<Notify>,
    pub client: AsyncClient,
    subscribed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Connect to the broker on `port`, subscribe to `filter`, and wait for the SUBACK.
    pub async fn start(port: u16, filter: &str) -> Recorder {
        let mut opts = MqttOptions::new(format!("recorder-{}", free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
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
                        let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.store(true, Ordering::SeqCst);
                        n.notify_waiters();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                        n.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(_) => {
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

    pub async fn wait_subscribed(&self) {
        let s = self.subscribed.clone();
        wait_until(&self.notify, WAIT, "recorder subscription", move || {
            s.load(Ordering::SeqCst)
        })
        .await;
    }

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

    /// Wait until `pred` holds over the recorded messages.
    pub async fn wait_for(&self, what: &str, mut pred: impl FnMut(&[Message]) -> bool) {
        let m = self.messages.clone();
        wait_until(&self.notify, WAIT, what, move || pred(&m.lock().unwrap())).await;
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

pub const BIN: &str = env!("CARGO_BIN_EXE_linegate");

/// A config for one station `st10` (lot rule `LOT:…`, order rule `WO…`) and one
/// serial scanner `scanner-1` on `scanner_path`.
pub fn config_toml(data_dir: &Path, mqtt_port: u16, scanner_path: &Path) -> String {
    format!(
        r#"[gateway]
id = "gw-test"
site = "plant1"
line = "line3"
data_dir = "{data}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keepalive = "5s"
reconnect_min = "50ms"
reconnect_max = "500ms"
status_interval = "1s"

[[station]]
id = "st10"

  [[station.scan_rule]]
  name = "lot-label"
  pattern = '^LOT:(?P<value>[A-Z0-9-]{{1,40}})$'
  action = "set-lot"

  [[station.scan_rule]]
  name = "work-order"
  pattern = '^WO[0-9]{{6}}$'
  action = "set-order"

[[device]]
id = "scanner-1"
type = "serial-scanner"
station = "st10"
path = "{scanner}"
suffix = "CRLF"
max_frame_len = 64
reconnect_min = "20ms"
reconnect_max = "200ms"
"#,
        data = data_dir.display(),
        scanner = scanner_path.display(),
    )
}

/// The `linegate` binary running as a child process.
pub struct Gateway {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// Write `toml` into `dir/linegate.toml` and start `linegate run` on it.
    pub fn start(dir: &Path, toml: &str) -> Gateway {
        let config = dir.join("linegate.toml");
        std::fs::write(&config, toml).unwrap();
        let mut g = Gateway {
            child: None,
            config,
            log: dir.join("gateway.log"),
        };
        g.spawn();
        g
    }

    /// Start the process again on the same config (after a kill).
    pub fn spawn(&mut self) {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "---- start").unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("LINEGATE_LOG", "info,linegate::app::pipeline=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn linegate");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        for _ in 0..1000 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        panic!("linegate did not stop within 10 s of SIGTERM");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Highest `seq` the gateway logged as committed (accepted), from its log.
    pub fn last_committed(&self) -> u64 {
        self.log_text()
            .lines()
            .filter(|l| l.contains("committed"))
            .filter_map(|l| l.split("last_seq=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}
