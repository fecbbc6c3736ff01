//! End-to-end tests of the serial scanner task over real pseudo-terminals:
//! exact bytes, bursts, rejects, idle-timeout framing, unplug and replug
//! through a `/dev/serial/by-id`-style symlink.
//!
//! Tests wait for events on the reading channel with a bounded timeout; they
//! never sleep to wait for something to happen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use linegate::config::{
    BackoffConfig, DataBits, FlowControl, FramingConfig, Parity, SerialLine, SerialScannerConfig,
    StopBits,
};
use linegate::devices::health::DeviceHealth;
use linegate::devices::pty::VirtualSerial;
use linegate::devices::scanner;
use linegate::devices::{DeviceEvent, Reading};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Longest wait for any single event; generous for loaded CI machines.
const WAIT: Duration = Duration::from_secs(10);

fn crlf_framing(max_len: usize) -> FramingConfig {
    FramingConfig {
        prefix: Vec::new(),
        suffix: b"\r\n".to_vec(),
        idle_timeout: None,
        max_len,
    }
}

fn config(path: &Path, framing: FramingConfig) -> SerialScannerConfig {
    SerialScannerConfig {
        path: path.to_owned(),
        line: SerialLine {
            baud: 9600,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            flow_control: FlowControl::None,
        },
        framing,
        reconnect: BackoffConfig {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
    }
}

/// A running scanner task and what the test observes of it.
struct Running {
    rx: mpsc::Receiver<Reading>,
    health: DeviceHealth,
    task: JoinHandle<()>,
}

impl Running {
    fn start(cfg: SerialScannerConfig) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let health = DeviceHealth::default();
        let task = tokio::spawn(scanner::run(
            Arc::from("scanner-1"),
            Arc::from("st-10"),
            cfg,
            tx,
            health.clone(),
        ));
        Running { rx, health, task }
    }

    async fn next(&mut self) -> DeviceEvent {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(reading)) => {
                assert_eq!(&*reading.device, "scanner-1");
                assert_eq!(&*reading.station, "st-10");
                assert!(reading.ts_ms > 0);
                reading.event
            }
            Ok(None) => panic!("scanner task ended unexpectedly"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    async fn expect_scan(&mut self, bytes: &[u8]) {
        assert_eq!(self.next().await, DeviceEvent::Scan(bytes.to_vec()));
    }

    async fn expect_online(&mut self) {
        assert_eq!(self.next().await, DeviceEvent::Online);
    }

    /// Closes the channel, as the gateway does at shutdown: the task must return.
    async fn stop(self) {
        drop(self.rx);
        timeout(WAIT, self.task)
            .await
            .expect("scanner task did not stop after its channel closed")
            .expect("scanner task panicked");
    }
}

/// Points `link` at `target` atomically, the way udev replaces a by-id link.
fn point_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn by_id_link(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("usb-ACME_Scanner_SN42-if00")
}

#[tokio::test]
async fn gs1_datamatrix_scan_arrives_byte_exact() {
    let pty = VirtualSerial::open().unwrap();
    let mut s = Running::start(config(pty.slave_path(), crlf_framing(4096)));
    s.expect_online().await;

    let mut code = b"]d2".to_vec();
    code.extend_from_slice(b"0109506000134352");
    code.extend_from_slice(b"17261231");
    code.extend_from_slice(b"10L24A0173");
    code.push(0x1D);
    code.extend_from_slice(b"21SN000123");
    let mut wire = code.clone();
    wire.extend_from_slice(b"\r\n");
    pty.write(&wire).await.unwrap();

    s.expect_scan(&code).await;
    let h = s.health.snapshot();
    assert!(h.online);
    assert_eq!((h.frames, h.rejects, h.connects), (1, 0, 1));
    s.stop().await;
}

#[tokio::test]
async fn burst_of_1000_scans_arrives_in_order() {
    let pty = VirtualSerial::open().unwrap();
    let mut s = Running::start(config(pty.slave_path(), crlf_framing(64)));
    s.expect_online().await;

    let mut burst = Vec::new();
    for i in 0..1000 {
        burst.extend_from_slice(format!("]C1SCAN-{i:06}\r\n").as_bytes());
    }
    // The channel holds 64 readings: the writer is paced by the scanner, which
    // is paced by the receiver below. Write and receive concurrently.
    let writer = async { pty.write(&burst).await.unwrap() };
    let reader = async {
        for i in 0..1000 {
            s.expect_scan(format!("]C1SCAN-{i:06}").as_bytes()).await;
        }
    };
    tokio::join!(writer, reader);

    let h = s.health.snapshot();
    assert_eq!((h.frames, h.rejects), (1000, 0));
    s.stop().await;
}

#[tokio::test]
async fn overlong_and_garbage_frames_are_rejected_and_counted() {
    let pty = VirtualSerial::open().unwrap();
    let mut s = Running::start(config(pty.slave_path(), crlf_framing(32)));
    s.expect_online().await;

    let mut wire = Vec::new();
    wire.extend_from_slice(b"BEFORE\r\n");
    wire.extend_from_slice(&[b'X'; 5000]); // over-long: dropped, not buffered
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(b"AB\x00\x07CD\r\n"); // line noise
    wire.extend_from_slice(b"\x00\x00\x00\r\n"); // NUL burst
    wire.extend_from_slice(b"AFTER-1\r\nAFTER-2\r\n");
    pty.write(&wire).await.unwrap();

    s.expect_scan(b"BEFORE").await;
    s.expect_scan(b"AFTER-1").await;
    s.expect_scan(b"AFTER-2").await;
    let h = s.health.snapshot();
    assert_eq!((h.frames, h.rejects), (3, 3));
    assert!(h.online, "rejects must not take the scanner offline");
    assert!(h.last_error.is_some_and(|e| e.contains("0x00")));
    s.stop().await;
}

#[tokio::test]
async fn idle_timeout_frames_a_scanner_without_suffix() {
    let pty = VirtualSerial::open().unwrap();
    let framing = FramingConfig {
        prefix: Vec::new(),
        suffix: Vec::new(),
        idle_timeout: Some(Duration::from_millis(150)),
        max_len: 64,
    };
    let mut s = Running::start(config(pty.slave_path(), framing));
    s.expect_online().await;

    pty.write(b"ABC123").await.unwrap();
    s.expect_scan(b"ABC123").await;
    // Two writes in quick succession (well within the idle time) are one scan.
    pty.write(b"]d2010950600013").await.unwrap();
    pty.write(b"4352\x1d10LOT7").await.unwrap();
    s.expect_scan(b"]d20109506000134352\x1d10LOT7").await;
    pty.write(b"NEXT").await.unwrap();
    s.expect_scan(b"NEXT").await;
    assert_eq!(s.health.snapshot().frames, 3);
    s.stop().await;
}

#[tokio::test]
async fn unplug_and_replug_through_a_by_id_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = by_id_link(&dir);
    let first = VirtualSerial::open().unwrap();
    point_link(&link, first.slave_path());

    let mut s = Running::start(config(&link, crlf_framing(64)));
    s.expect_online().await;
    first.write(b"BEFORE-UNPLUG\r\n").await.unwrap();
    s.expect_scan(b"BEFORE-UNPLUG").await;

    // Unplug: udev removes the by-id link and the tty node disappears.
    std::fs::remove_file(&link).unwrap();
    drop(first);
    match s.next().await {
        DeviceEvent::Offline(msg) => assert!(msg.contains("end of file"), "{msg}"),
        other => panic!("expected Offline, got {other:?}"),
    }
    let h = s.health.snapshot();
    assert!(!h.online);
    assert!(h.last_error.is_some());

    // Stay unplugged long enough for several reopen attempts (backoff
    // 20..200 ms). This sleep is the outage itself, not a wait for an event.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        s.rx.try_recv().is_err(),
        "no further events while unplugged (exactly one Offline)"
    );
    let h = s.health.snapshot();
    assert!(!h.online);
    assert_eq!(h.connects, 1);
    let err = h.last_error.unwrap_or_default();
    assert!(
        err.contains("no such device"),
        "reopen failures recorded: {err}"
    );

    // Replug: a new device node, the link re-created; recovery on its own.
    let second = VirtualSerial::open().unwrap();
    point_link(&link, second.slave_path());
    s.expect_online().await;
    second.write(b"AFTER-REPLUG\r\n").await.unwrap();
    s.expect_scan(b"AFTER-REPLUG").await;
    let h = s.health.snapshot();
    assert!(h.online);
    assert_eq!((h.connects, h.frames), (2, 2));
    s.stop().await;
}

#[tokio::test]
async fn scanner_absent_at_startup_is_reported_once_then_found() {
    let dir = tempfile::tempdir().unwrap();
    let link = by_id_link(&dir);
    let mut s = Running::start(config(&link, crlf_framing(64)));

    match s.next().await {
        DeviceEvent::Offline(msg) => assert!(msg.contains("no such device"), "{msg}"),
        other => panic!("expected Offline, got {other:?}"),
    }
    assert!(!s.health.snapshot().online);

    let pty = VirtualSerial::open().unwrap();
    point_link(&link, pty.slave_path());
    // Whatever number of reopens failed before, the next event is Online.
    s.expect_online().await;
    pty.write(b"HELLO\r\n").await.unwrap();
    s.expect_scan(b"HELLO").await;
    s.stop().await;
}

#[tokio::test]
async fn stops_when_the_channel_closes_while_unplugged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Running::start(config(&by_id_link(&dir), crlf_framing(64)));
    assert!(matches!(s.next().await, DeviceEvent::Offline(_)));
    s.stop().await;
}
