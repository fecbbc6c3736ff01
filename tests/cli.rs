//! The command line: `check` and `run` on valid and invalid configs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::BIN;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const VALID: &str = r#"[gateway]
id = "gw-1"
site = "plant1"
line = "line3"
data_dir = "data"

[mqtt]
host = "127.0.0.1"

[[station]]
id = "st10"

[[device]]
id = "scanner-1"
type = "serial-scanner"
station = "st10"
path = "/dev/serial/by-id/usb-scanner"
"#;

#[test]
fn check_prints_a_summary_of_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "ok.toml", VALID);
    let out = Command::new(BIN).arg("check").arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "gw-1",
        "st10",
        "scanner-1",
        "serial-scanner",
        "plant1/line3",
    ] {
        assert!(stdout.contains(needle), "summary lacks {needle}: {stdout}");
    }
}

#[test]
fn invalid_configs_exit_64_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    // (description, config text, expected line, expected fragment)
    let cases = [
        (
            "unknown key in a device",
            VALID.replace("path =", "bogus = 1\npath ="),
            17,
            "bogus",
        ),
        (
            "device names a missing station",
            VALID.replace("station = \"st10\"", "station = \"st99\""),
            16,
            "st99",
        ),
        (
            "bad duration",
            VALID.replace(
                "host = \"127.0.0.1\"",
                "host = \"127.0.0.1\"\nkeepalive = \"fast\"",
            ),
            9,
            "keepalive",
        ),
        (
            "wrong type",
            VALID.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nport = \"x\""),
            9,
            "port",
        ),
    ];
    for (what, text, line, fragment) in cases {
        let cfg = write(dir.path(), "bad.toml", &text);
        for args in [
            vec!["check".to_owned()],
            vec!["run".into(), "--config".into()],
        ] {
            let out = Command::new(BIN).args(&args).arg(&cfg).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{what} ({args:?}): {stderr}");
            assert!(
                stderr.contains(&format!("bad.toml:{line}:")),
                "{what}: line {line} not named in: {stderr}"
            );
            assert!(
                stderr.contains(fragment),
                "{what}: `{fragment}` not named in: {stderr}"
            );
        }
    }
}

#[test]
fn missing_config_file_exits_64() {
    let out = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/linegate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/linegate.toml"));
}

#[test]
fn a_second_gateway_on_the_same_store_exits_74() {
    second_gateway_on_the_same_store_exits_74("sled");
}

#[test]
fn a_second_gateway_on_the_same_redb_store_exits_74() {
    second_gateway_on_the_same_store_exits_74("redb");
}

/// The config `VALID` with an unreachable broker and the store on `engine`.
fn config_on(dir: &Path, name: &str, engine: &str) -> PathBuf {
    let text = VALID.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nport = 9")
        + &format!("\n[store]\nengine = \"{engine}\"\n");
    write(dir, name, &text)
}

/// `linegate run` on `cfg`, returned once its log says the store is open.
fn run_until_store_opened(cfg: &Path, log: &Path) -> std::process::Child {
    run_until_logged(cfg, log, "store opened")
}

/// `linegate run` on `cfg`, returned once its log contains `needle` (bounded).
fn run_until_logged(cfg: &Path, log: &Path, needle: &str) -> std::process::Child {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let opened = (0..500).any(|_| {
        let done = std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle);
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        done
    });
    if !opened {
        let _ = child.kill();
        panic!("the gateway never logged {needle:?}");
    }
    child
}

/// `linegate run` on `cfg`, expected to exit on its own within 5 s: its exit
/// code and stderr.
fn run_to_exit(cfg: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = (0..500).find_map(|_| {
        let s = child.try_wait().unwrap();
        if s.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        s
    });
    let _ = child.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.and_then(|s| s.code()), stderr)
}

fn second_gateway_on_the_same_store_exits_74(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_on(dir.path(), "ok.toml", engine);
    let mut first = run_until_store_opened(&cfg, &dir.path().join("first.log"));
    let (code, stderr) = run_to_exit(&cfg);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, Some(74), "{stderr}");
    assert!(stderr.contains("store"), "{stderr}");
}

#[test]
fn switching_the_engine_of_an_existing_store_exits_74() {
    for (from, to) in [("sled", "redb"), ("redb", "sled")] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_on(dir.path(), "from.toml", from);
        let mut first = run_until_store_opened(&cfg, &dir.path().join("first.log"));
        let _ = first.kill();
        let _ = first.wait();
        let (code, stderr) = run_to_exit(&config_on(dir.path(), "to.toml", to));
        assert_eq!(code, Some(74), "{from} → {to}: {stderr}");
        assert!(
            stderr.contains(&format!("holds a {from} store")),
            "{from} → {to}: {stderr}"
        );
    }
}

/// A damaged store is no reason to exit (under systemd that would be a
/// crash loop): the gateway salvages it, says why once, and runs on
/// (tests/corrupt_store.rs has the whole story, with a broker).
#[test]
fn a_damaged_redb_store_is_salvaged_and_the_gateway_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_on(dir.path(), "ok.toml", "redb");
    let mut first = run_until_store_opened(&cfg, &dir.path().join("first.log"));
    let _ = first.kill();
    let _ = first.wait();
    // `data_dir = "data"` is relative to the config file.
    let file = dir.path().join("data/store/linegate.redb");
    let mut bytes = std::fs::read(&file).expect("the store file");
    for b in bytes.iter_mut().take(64) {
        *b ^= 0xFF;
    }
    std::fs::write(&file, &bytes).unwrap();
    let log = dir.path().join("second.log");
    let mut second = run_until_logged(&cfg, &log, "linegate running");
    let running = second.try_wait().unwrap().is_none();
    let _ = second.kill();
    let _ = second.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(running, "the gateway exited: {text}");
    assert!(text.contains("store salvaged"), "{text}");
    let salvaged = text.lines().find(|l| l.contains("store salvaged")).unwrap();
    assert_eq!(
        salvaged.matches("Not a redb database").count(),
        1,
        "the cause once, not repeated: {salvaged}"
    );
    assert!(dir.path().join("data/seq.floor").exists());
    assert!(
        std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("store.damaged-")),
        "the damaged copy is kept"
    );
}

/// `linegate <args>`, expected to exit on its own within 10 s (killed and
/// reported as `None` otherwise): its exit code and stderr.
fn exit_of(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = (0..1000).find_map(|_| {
        let s = child.try_wait().unwrap();
        if s.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        s
    });
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn check_refuses_a_fifo_a_device_and_bad_bytes_with_64_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("linegate.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut latin1 = VALID.replace("plant1", "UsinX").into_bytes();
    let at = latin1.iter().position(|&b| b == b'X').unwrap();
    latin1[at] = 0xE9;
    let latin1_file = dir.path().join("latin1.toml");
    std::fs::write(&latin1_file, latin1).unwrap();
    for (file, what) in [
        (
            fifo.as_path(),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (
            Path::new("/dev/zero"),
            "it is a character device, not a regular file",
        ),
        (
            latin1_file.as_path(),
            "latin1.toml:3:13: the file is not UTF-8 text: byte 0xE9",
        ),
    ] {
        for args in [vec!["check"], vec!["run", "--config"]] {
            let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            all.push(file.as_os_str());
            let (code, stderr) = exit_of(&all);
            assert_eq!(code, Some(64), "{file:?} {args:?}: {stderr}");
            assert!(stderr.contains(what), "{file:?} {args:?}: {stderr}");
        }
    }
}

#[test]
fn a_data_dir_that_cannot_hold_the_control_socket_fails_check_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("/tmp/{}", "d".repeat(100));
    for (data_dir, what) in [
        ("da\\u0000ta", "contains a NUL character"),
        (long.as_str(), "a Unix socket path holds at most 107"),
    ] {
        let text = VALID.replace("data_dir = \"data\"", &format!("data_dir = \"{data_dir}\""));
        let cfg = write(dir.path(), "bad.toml", &text);
        for args in [vec!["check"], vec!["run", "--config"]] {
            let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            all.push(cfg.as_os_str());
            let (code, stderr) = exit_of(&all);
            assert_eq!(code, Some(64), "{data_dir} {args:?}: {stderr}");
            assert!(
                stderr.contains("bad.toml:5:12: key gateway.data_dir") && stderr.contains(what),
                "{data_dir} {args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn usage_errors_exit_2_and_say_how_to_use_it() {
    for args in [
        vec![],
        vec!["bogus"],
        vec!["check"],
        vec!["run"],
        vec!["run", "--config"],
        vec!["check", "x.toml", "--bogus"],
    ] {
        let all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let (code, stderr) = exit_of(&all);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage:") || stderr.contains("--help"),
            "{args:?}: {stderr}"
        );
    }
}
