//! `linegate probe` end to end, the real binary without a running gateway:
//! a serial scanner on a pseudo-terminal prints its frames as they arrive;
//! a Modbus TCP device (a tokio-modbus server) is read once or for a
//! while; every probe that reads nothing exits 69.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use linegate::config::Table;
use linegate::devices::modbus::sim::SimPlc;
use linegate::devices::pty::VirtualSerial;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_modbus::ExceptionCode;

/// The test config (scanner `scanner-1` on `scanner`) plus a modbus-tcp
/// device `press` on `plc_port`.
fn config(dir: &Path, scanner: &Path, plc_port: u16) -> std::path::PathBuf {
    let mut toml = config_toml(&dir.join("data"), free_port(), scanner);
    toml.push_str(&format!(
        r#"
[[device]]
id = "press"
type = "modbus-tcp"
station = "st10"
host = "127.0.0.1"
port = {plc_port}
poll_interval = "50ms"
timeout = "500ms"

  [[device.register]]
  name = "good"
  address = "40001"
  type = "u16"
  role = "counter"
"#
    ));
    let path = dir.join("linegate.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Run `linegate probe <config> <device> [args…]` to its end.
async fn probe(config: &Path, device: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("probe")
        .arg(config)
        .arg(device)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("probe exits in time")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_probe_prints_frames_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let pty = VirtualSerial::open().unwrap();
    let config = config(dir.path(), pty.slave_path(), free_port());
    let mut child = tokio::process::Command::new(BIN)
        .arg("probe")
        .arg(&config)
        .arg("scanner-1")
        .args(["--for", "4s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("more output")
    };
    let first = next().await;
    assert!(first.contains("listening for 4s"), "{first}");
    // Each frame is printed before the next is sent: as it arrives.
    pty.write(b"PART-1\r\n").await.unwrap();
    let line = next().await;
    assert!(line.ends_with("frame (6 bytes): PART-1"), "{line}");
    pty.write(b"01\x1d21X\r\n").await.unwrap();
    let line = next().await;
    assert!(line.ends_with("frame (6 bytes): 01<GS>21X"), "{line}");
    pty.write(&[b'x'; 100]).await.unwrap();
    pty.write(b"\r\n").await.unwrap();
    let line = next().await;
    assert!(line.contains("rejected: frame too long"), "{line}");
    let end = next().await;
    assert_eq!(end, "2 frames, 1 rejected");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Nothing scanned: nothing read.
    let (code, out, err) = probe(&config, "scanner-1", &["--for", "200ms"]).await;
    assert_eq!(code, Some(69), "{out}{err}");
    assert!(err.contains("no frame"), "{err}");
    // No such port.
    let missing = self::config(dir.path(), Path::new("/dev/linegate-none"), free_port());
    let (code, out, err) = probe(&missing, "scanner-1", &[]).await;
    assert_eq!(code, Some(69), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_probe_reads_once_or_for_a_while_and_fails_when_nothing_reads() {
    let dir = tempfile::tempdir().unwrap();
    let plc = SimPlc::start().await.unwrap();
    plc.set_holding(0, &[4242]);
    let config = config(dir.path(), Path::new("/dev/null"), plc.port());

    let (code, out, err) = probe(&config, "press", &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("good") && l.contains("4242")),
        "{out}"
    );

    let (code, out, err) = probe(&config, "press", &["--for", "400ms"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let reads = out.lines().filter(|l| l.starts_with("-- read ")).count();
    assert!(reads >= 2, "read once only:\n{out}");

    // Every block answered with an exception: nothing read.
    plc.fail(Table::Holding, 0..10, ExceptionCode::IllegalDataAddress);
    let (code, out, err) = probe(&config, "press", &[]).await;
    assert_eq!(code, Some(69), "{out}{err}");
    assert!(out.contains("exception"), "{out}");
    assert!(err.contains("no register could be read"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtu_probe_reads_every_unit_and_fails_when_every_unit_is_silent() {
    use linegate::devices::modbus::sim::SimRtuBus;
    let dir = tempfile::tempdir().unwrap();
    let bus = SimRtuBus::start(&[1, 2]).unwrap();
    bus.set_holding(1, 0, &[11]);
    bus.set_holding(2, 0, &[22]);
    let mut toml = config_toml(
        &dir.path().join("data"),
        free_port(),
        Path::new("/dev/null"),
    );
    toml.push_str(&format!(
        r#"
[[device]]
id = "rs485"
type = "modbus-rtu"
station = "st10"
path = "{path}"
baud = 19200
poll_interval = "50ms"
timeout = "200ms"

  [[device.unit]]
  unit_id = 1
  name = "press"

    [[device.unit.register]]
    name = "good"
    address = "40001"
    role = "counter"

  [[device.unit]]
  unit_id = 2
  name = "saw"

    [[device.unit.register]]
    name = "good"
    address = "40001"
    role = "counter"
"#,
        path = bus.path().display()
    ));
    let config = dir.path().join("linegate.toml");
    std::fs::write(&config, toml).unwrap();

    let (code, out, err) = probe(&config, "rs485", &["--for", "300ms"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.lines().any(|l| l.contains("11")), "{out}");
    assert!(out.lines().any(|l| l.contains("22")), "{out}");
    assert!(
        out.lines().filter(|l| l.starts_with("-- read ")).count() >= 2,
        "{out}"
    );

    bus.silence(1, true);
    bus.silence(2, true);
    let (code, out, err) = probe(&config, "rs485", &[]).await;
    assert_eq!(code, Some(69), "{out}{err}");
}
