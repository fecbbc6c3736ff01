//! The service manager's contract, end to end: the real binary, a real
//! Mosquitto, a pseudo-terminal scanner, and a Unix datagram socket in
//! place of systemd's notify socket (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`).
//! The messages must come in order (READY=1, STATUS=, WATCHDOG=1, …,
//! STOPPING=1); a pipeline stalled for real, by a disk whose syncs hang
//! (powercut-fs holding every fsync), must stop the watchdog pings, which
//! resume when it turns again; a slow store open asks for more start time
//! (EXTEND_TIMEOUT_USEC) before READY=1; a notify socket that is not there
//! changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ledger::scan_all;
use common::*;
use linegate::devices::pty::VirtualSerial;
use tokio::net::UnixDatagram;

const FILTER: &str = "plant1/line3/#";

/// The watchdog period the tests ask for: a ping every second.
const WATCHDOG_USEC: &str = "2000000";

/// systemd's end of the notify protocol: a datagram socket, every message
/// kept in order with the time it came.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    messages: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            sock,
            path,
            messages: Vec::new(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.path.display().to_string()),
            ("WATCHDOG_USEC".into(), WATCHDOG_USEC.into()),
        ]
    }

    /// The next message, if one comes within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(limit, self.sock.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.messages.push((Instant::now(), text.clone()));
        Some(text)
    }

    /// Read until a message with a line starting with `line` arrives
    /// (within `limit`); its index in `messages`.
    async fn wait_for(&mut self, line: &str, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(m) if m.lines().any(|l| l.starts_with(line)) => {
                    return self.messages.len() - 1;
                }
                Some(_) => {}
                None => panic!("no `{line}` within {limit:?}; messages: {:?}", self.texts()),
            }
        }
    }

    /// Everything read within `window`.
    async fn read_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(m) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            got.push(m);
        }
        got
    }

    fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|(_, m)| m.as_str()).collect()
    }

    /// Index of the first message with a line starting with `line`.
    fn first(&self, line: &str) -> Option<usize> {
        self.messages
            .iter()
            .position(|(_, m)| m.lines().any(|l| l.starts_with(line)))
    }
}

fn has(m: &str, line: &str) -> bool {
    m.lines().any(|l| l.starts_with(line))
}

#[tokio::test]
async fn the_service_manager_hears_ready_status_watchdog_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let pty = VirtualSerial::open().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut gw = Gateway::start_with_env(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
        notify.env(),
    );

    let ready = notify.wait_for("READY=1", Duration::from_secs(60)).await;
    assert!(
        notify.messages[..ready]
            .iter()
            .all(|(_, m)| has(m, "EXTEND_TIMEOUT_USEC=")),
        "only start-time extensions come before READY=1: {:?}",
        notify.texts()
    );
    assert!(
        has(&notify.messages[ready].1, "STATUS=queue "),
        "READY=1 comes with a status line: {:?}",
        notify.messages[ready].1
    );
    let connected = notify
        .wait_for(
            "STATUS=queue 0 records; uplink connected; config 1",
            Duration::from_secs(30),
        )
        .await;
    assert!(connected > ready);
    // Pings every half period (1 s): three of them.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", Duration::from_secs(10)).await;
    }
    let first_ping = notify.first("WATCHDOG=1").unwrap();
    assert!(first_ping > ready, "{:?}", notify.texts());

    // A reload: RELOADING=1 (with the monotonic time), then READY=1 with
    // the next generation in the status.
    gw.signal(libc::SIGHUP);
    let reloading = notify
        .wait_for("RELOADING=1", Duration::from_secs(10))
        .await;
    assert!(
        has(&notify.messages[reloading].1, "MONOTONIC_USEC="),
        "{:?}",
        notify.messages[reloading].1
    );
    let again = notify.wait_for("READY=1", Duration::from_secs(10)).await;
    assert!(
        has(&notify.messages[again].1, "STATUS=queue ")
            && notify.messages[again].1.contains("; config 2"),
        "{:?}",
        notify.messages[again].1
    );

    assert_eq!(gw.stop(), Some(0));
    let stopping = notify.wait_for("STOPPING=1", Duration::from_secs(5)).await;
    let after = notify.read_for(Duration::from_millis(500)).await;
    assert!(
        notify.messages[stopping..]
            .iter()
            .all(|(_, m)| !has(m, "WATCHDOG=1") && !has(m, "READY=1")),
        "nothing but the stop after STOPPING=1: {after:?}"
    );
    let log = gw.log_text();
    assert!(log.contains("watchdog_s=2"), "the run logs its watchdog");
    assert!(!log.contains("cannot notify"), "{log}");
}

/// The data directory on powercut-fs, so its syncs can be held.
fn powercut(root: &Path) -> (powercut_fs::Mount, PathBuf) {
    let (backing, mnt) = (root.join("backing"), root.join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mount = powercut_fs::Mount::start(&backing, &mnt)
        .unwrap_or_else(|e| panic!("the watchdog tests need FUSE: {e}"));
    (mount, mnt.join("data"))
}

/// Releases the held syncs when dropped: declared after the gateway, it is
/// dropped before it, so a failing test's SIGKILL does not wait on a held
/// sync forever.
struct ReleaseOnDrop<'a>(&'a powercut_fs::Mount);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release_syncs();
    }
}

/// Wait (bounded) until a sync is held: the gateway is stuck in it.
async fn wait_sync_held(mount: &powercut_fs::Mount) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while mount.syncs_waiting() == 0 {
        assert!(Instant::now() < deadline, "no sync reached the held disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pipeline_stuck_in_a_sync_stops_the_watchdog_pings_until_it_turns_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mount, data) = powercut(dir.path());
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut gw = Gateway::start_with_env(
        dir.path(),
        &config_toml(&data, broker.port, pty.slave_path()),
        notify.env(),
    );
    let _release = ReleaseOnDrop(&mount);
    notify.wait_for("READY=1", Duration::from_secs(60)).await;
    notify
        .wait_for(
            "STATUS=queue 0 records; uplink connected",
            Duration::from_secs(30),
        )
        .await;
    notify.wait_for("WATCHDOG=1", Duration::from_secs(10)).await;
    let mut inputs = Vec::new();
    scan_all(&pty, &["BEFORE-1".to_owned()], &mut inputs).await;
    rec.wait_for("the first scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "BEFORE-1")
    })
    .await;

    // The disk's syncs hang: the next commit stays inside its fsync.
    mount.hold_syncs();
    scan_all(&pty, &["STALLED-1".to_owned()], &mut inputs).await;
    wait_sync_held(&mount).await;
    assert!(
        gw.wait_log("the pipeline has not turned for", Duration::from_secs(20))
            .await,
        "the watchdog noticed the stall"
    );
    // From now on, not one ping: five ping periods of silence.
    notify.read_for(Duration::from_millis(300)).await;
    let during = notify.read_for(Duration::from_secs(5)).await;
    assert!(
        during.iter().all(|m| !has(m, "WATCHDOG=1")),
        "no watchdog ping while the pipeline is stuck: {during:?}"
    );
    assert!(
        !gw.log_text().contains("the uplink has not turned"),
        "the stall is the pipeline's alone"
    );
    assert!(
        gw.pid().is_some(),
        "still running: systemd, not linegate, ends it"
    );

    // The disk recovers: the commit returns, the pings resume (had systemd
    // been watching, it would have killed the process already).
    mount.release_syncs();
    notify.wait_for("WATCHDOG=1", Duration::from_secs(10)).await;
    assert!(
        gw.wait_log("the pipeline turns again", Duration::from_secs(10))
            .await
    );
    rec.wait_for("the scan of the stalled commit", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "STALLED-1")
    })
    .await;
    assert_eq!(gw.stop(), Some(0));
    notify.wait_for("STOPPING=1", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_slow_store_open_asks_for_more_start_time_before_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (mount, data) = powercut(dir.path());
    let broker = Mosquitto::start();
    let pty = VirtualSerial::open().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    // The store's first sync hangs until released.
    mount.hold_syncs();
    let mut gw = Gateway::start_with_env(
        dir.path(),
        &config_toml(&data, broker.port, pty.slave_path()),
        notify.env(),
    );
    let _release = ReleaseOnDrop(&mount);
    wait_sync_held(&mount).await;
    let extended = notify
        .wait_for("EXTEND_TIMEOUT_USEC=30000000", Duration::from_secs(20))
        .await;
    // Asked again while it lasts.
    notify
        .wait_for("EXTEND_TIMEOUT_USEC=30000000", Duration::from_secs(20))
        .await;
    assert_eq!(notify.first("READY=1"), None, "{:?}", notify.texts());
    assert!(extended < notify.messages.len());
    mount.release_syncs();
    notify.wait_for("READY=1", Duration::from_secs(60)).await;
    assert_eq!(gw.stop(), Some(0));
}

#[tokio::test]
async fn a_notify_socket_that_is_not_there_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start_with_env(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
        vec![
            (
                "NOTIFY_SOCKET".into(),
                dir.path().join("nobody.sock").display().to_string(),
            ),
            ("WATCHDOG_USEC".into(), WATCHDOG_USEC.into()),
        ],
    );
    let mut inputs = Vec::new();
    let codes: Vec<String> = (0..5).map(|i| format!("N-{i}")).collect();
    scan_all(&pty, &codes, &mut inputs).await;
    rec.wait_for("the scans", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "N-4")
    })
    .await;
    assert_eq!(gw.stop(), Some(0));
    assert_eq!(
        gw.log_count("cannot notify the service manager"),
        1,
        "warned once: {}",
        gw.log_text()
    );
}
