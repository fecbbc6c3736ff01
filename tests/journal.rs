//! Logs for journald, end to end: the real binary with its stderr in a
//! file and `$JOURNAL_STREAM` naming that file's device and inode, as
//! systemd sets it. Every line must then start with its sd-daemon priority
//! (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and carry no
//! timestamp, the fatal error printed at exit included; with a
//! `JOURNAL_STREAM` naming another stream, the log is as before.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use linegate::devices::pty::VirtualSerial;

/// Start `linegate run` on `config` with stderr into `log`; `journal`:
/// `JOURNAL_STREAM` names `log` (else another stream).
fn spawn(config: &Path, log: &Path, journal: bool) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let meta = file.metadata().unwrap();
    let stream = if journal {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("LINEGATE_LOG", "debug,rumqttc=off")
        .env("JOURNAL_STREAM", stream)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap()
}

/// Wait (bounded) until `log` contains `needle`.
async fn wait_text(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no `{needle}` in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (bounded) for the exit; its code.
async fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "linegate did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn terminate(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// The line containing `needle`.
fn line_with<'t>(text: &'t str, needle: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in:\n{text}"))
}

#[tokio::test]
async fn on_the_journal_every_line_carries_its_priority_and_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let pty = VirtualSerial::open().unwrap();
    // No broker on this port: the uplink warns.
    let toml = config_toml(&dir.path().join("data"), free_port(), pty.slave_path());
    let config = dir.path().join("linegate.toml");
    std::fs::write(&config, toml).unwrap();
    let log = dir.path().join("stderr");
    let mut gw = spawn(&config, &log, true);
    wait_text(&log, "MQTT connect failed").await;
    terminate(&mut gw);
    assert_eq!(wait_exit(&mut gw).await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(line_with(&text, "linegate running").starts_with("<6>"));
    assert!(line_with(&text, "MQTT connect failed").starts_with("<4>"));
    assert!(text.lines().any(|l| l.starts_with("<7>")), "{text}");
    for line in text.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("a line without a priority: {line:?}"));
        assert!(
            !rest.starts_with("20"),
            "journald stamps the time itself: {line:?}"
        );
    }

    // A fatal error at start (the data directory is a file): exit 74, the
    // error at priority error, where `journalctl -p err` finds it.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let toml = config_toml(&blocked, free_port(), pty.slave_path());
    std::fs::write(&config, toml).unwrap();
    let mut gw = spawn(&config, &log, true);
    assert_eq!(wait_exit(&mut gw).await, Some(74));
    let text = std::fs::read_to_string(&log).unwrap();
    let fatal = line_with(&text, "error: cannot open the store");
    assert!(fatal.starts_with("<3>error: "), "{fatal:?}");
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
}

#[tokio::test]
async fn elsewhere_the_log_is_as_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let pty = VirtualSerial::open().unwrap();
    let toml = config_toml(&dir.path().join("data"), free_port(), pty.slave_path());
    let config = dir.path().join("linegate.toml");
    std::fs::write(&config, toml).unwrap();
    let log = dir.path().join("stderr");
    // JOURNAL_STREAM inherited, but stderr redirected to another file.
    let mut gw = spawn(&config, &log, false);
    wait_text(&log, "MQTT connect failed").await;
    terminate(&mut gw);
    assert_eq!(wait_exit(&mut gw).await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let running = line_with(&text, "linegate running");
    assert!(running.starts_with("20"), "a timestamp first: {running:?}");
    assert!(running.contains(" INFO "), "{running:?}");
    assert!(!text.contains("<6>"), "{text}");
}
