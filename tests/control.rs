//! `linegate lot …` end to end: the real daemon, its control socket, the
//! command line as a separate process, and the MES (a Recorder on a real
//! Mosquitto) seeing local commands as `audit` and `lot` records.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";

/// The exit of one `linegate` command-line run.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `linegate <args…>` and wait (bounded) for it to exit.
async fn linegate(args: &[&str]) -> Run {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, child)
        .await
        .unwrap_or_else(|_| panic!("`linegate {}` did not exit within {WAIT:?}", args.join(" ")))
        .expect("run linegate");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `linegate lot <args…> --config <config>`.
async fn lot(config: &Path, args: &[&str]) -> Run {
    let config = config.to_str().unwrap();
    let mut all = vec!["lot"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    linegate(&all).await
}

/// A running gateway with its broker, MES recorder and scanner, its control
/// socket up.
struct Setup {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    _pty: VirtualSerial,
    rec: Recorder,
    gw: Gateway,
    socket: PathBuf,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start();
        let rec = Recorder::start(broker.port, FILTER).await;
        let pty = VirtualSerial::open().unwrap();
        let data = dir.path().join("data");
        let gw = Gateway::start(
            dir.path(),
            &config_toml(&data, broker.port, pty.slave_path()),
        );
        assert!(
            gw.wait_log("control socket listening", WAIT).await,
            "no control socket:\n{}",
            gw.log_text()
        );
        Setup {
            _dir: dir,
            _broker: broker,
            _pty: pty,
            rec,
            gw,
            socket: data.join("control.sock"),
        }
    }

    /// The record of `kind` matching `pred`, once the MES has it.
    async fn record(&self, what: &str, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let find = |msgs: &[Message]| {
            msgs.iter()
                .map(Message::json)
                .find(|v| v["kind"] == kind && pred(v))
        };
        self.rec.wait_for(what, |m| find(m).is_some()).await;
        find(&self.rec.snapshot()).unwrap()
    }
}

/// The command id the command line printed: `… (command local-…)`.
fn printed_id(stdout: &str) -> String {
    let start = stdout.find("(command ").expect(stdout) + "(command ".len();
    let end = stdout[start..].find(')').expect(stdout) + start;
    stdout[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_lot_commands_are_applied_audited_and_reach_the_mes() {
    let s = Setup::start().await;
    let cfg = s.gw.config.clone();

    let meta = std::fs::symlink_metadata(&s.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // (a) open a named lot.
    let open = lot(&cfg, &["open", "--station", "st10", "--lot", "L-7"]).await;
    assert_eq!(open.code, Some(0), "{open:?}");
    assert!(
        open.stdout
            .starts_with("lot L-7 opened at st10 (command local-"),
        "{open:?}"
    );
    let id = printed_id(&open.stdout);

    let show = lot(&cfg, &["show", "--json"]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    let reply: Value = serde_json::from_str(&show.stdout).expect(&show.stdout);
    assert_eq!(reply["ok"], true);
    let st10 = reply["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["station"] == "st10")
        .expect(&show.stdout);
    assert_eq!(st10["context"]["lot"], "L-7");
    assert_eq!(st10["open_lot"]["lot"], "L-7");

    let audit = s
        .record("audit of the local open-lot", "audit", |v| {
            v["data"]["id"] == id.as_str()
        })
        .await;
    assert_eq!(audit["station"], "st10");
    assert_eq!(audit["data"]["command"], "open-lot");
    assert_eq!(audit["data"]["accepted"], true);
    assert_eq!(audit["data"]["origin"], "local");
    let request: Value = serde_json::from_str(audit["data"]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(request["op"], "open-lot");
    assert_eq!(request["lot"], "L-7");

    let opened = s
        .record("lot L-7 opened", "lot", |v| v["data"]["event"] == "opened")
        .await;
    assert_eq!(opened["lot"], "L-7");
    assert_eq!(opened["station"], "st10");
    assert_eq!(opened["data"]["source"], "local");
    assert_eq!(opened["data"]["command_id"], id.as_str());
    assert!(
        opened["seq"].as_u64() > audit["seq"].as_u64(),
        "the audit comes first"
    );

    // Operator and order: `context` records from a local source.
    let login = lot(
        &cfg,
        &["operator", "--station", "st10", "--operator", "OP-7"],
    )
    .await;
    assert_eq!(login.code, Some(0), "{login:?}");
    assert!(
        login.stdout.starts_with("operator OP-7 logged in at st10"),
        "{login:?}"
    );
    let order = lot(&cfg, &["order", "--station", "st10", "--order", "WO123456"]).await;
    assert_eq!(order.code, Some(0), "{order:?}");
    for (field, value) in [("operator", "OP-7"), ("order", "WO123456")] {
        let ctx = s
            .record(&format!("{field} set locally"), "context", |v| {
                v["data"]["field"] == field && v["data"]["value"] == value
            })
            .await;
        assert_eq!(ctx["data"]["source"], "local", "{ctx}");
        assert_eq!(ctx["lot"], "L-7");
    }

    let table = lot(&cfg, &["show"]).await;
    assert_eq!(table.code, Some(0), "{table:?}");
    for needle in ["st10", "L-7", "WO123456", "OP-7", "products"] {
        assert!(table.stdout.contains(needle), "{needle}: {table:?}");
    }

    // (b) close it: `closed` with the lot's totals.
    let close = lot(&cfg, &["close", "--station", "st10"]).await;
    assert_eq!(close.code, Some(0), "{close:?}");
    let close_id = printed_id(&close.stdout);
    let closed = s
        .record("lot L-7 closed", "lot", |v| v["data"]["event"] == "closed")
        .await;
    assert_eq!(closed["lot"], "L-7");
    assert_eq!(closed["data"]["source"], "local");
    assert_eq!(closed["data"]["command_id"], close_id.as_str());
    let totals = &closed["data"]["totals"];
    assert!(totals.is_object(), "{closed}");
    assert_eq!(totals["products"], 0);
    assert_eq!(totals["operators"], serde_json::json!(["OP-7"]));
    assert_eq!(totals["orders"], serde_json::json!(["WO123456"]));

    // Logging out and clearing the order work too.
    let logout = lot(&cfg, &["operator", "--station", "st10", "--logout"]).await;
    assert_eq!(logout.code, Some(0), "{logout:?}");
    let clear = lot(&cfg, &["order", "--station", "st10", "--clear"]).await;
    assert_eq!(clear.code, Some(0), "{clear:?}");
    let show = lot(&cfg, &["show", "--json"]).await;
    let reply: Value = serde_json::from_str(&show.stdout).expect(&show.stdout);
    let ctx = &reply["stations"][0]["context"];
    assert!(
        ctx["lot"].is_null() && ctx["operator"].is_null() && ctx["order"].is_null(),
        "{show:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_local_commands_exit_65_with_the_reason() {
    let s = Setup::start().await;
    let cfg = s.gw.config.clone();

    // (c) nothing to close.
    let close = lot(&cfg, &["close", "--station", "st10"]).await;
    assert_eq!(close.code, Some(65), "{close:?}");
    assert!(
        close.stderr.contains("no lot is open at station `st10`"),
        "{close:?}"
    );
    let id = printed_id(&close.stderr);
    let audit = s
        .record("audit of the refused close", "audit", |v| {
            v["data"]["id"] == id.as_str()
        })
        .await;
    assert_eq!(audit["data"]["accepted"], false);
    assert_eq!(audit["data"]["origin"], "local");

    let unknown = lot(&cfg, &["open", "--station", "st99", "--lot", "L-1"]).await;
    assert_eq!(unknown.code, Some(65), "{unknown:?}");
    assert!(
        unknown.stderr.contains("unknown station `st99`"),
        "{unknown:?}"
    );

    // A value the MES could not set either: refused before any station.
    let long = "L".repeat(65);
    let bad = lot(&cfg, &["open", "--station", "st10", "--lot", &long]).await;
    assert_eq!(bad.code, Some(65), "{bad:?}");
    assert!(bad.stderr.contains("invalid value"), "{bad:?}");

    // Bad config: 64, before any socket.
    let missing = s.gw.config.with_file_name("missing.toml");
    let run = lot(&missing, &["show"]).await;
    assert_eq!(run.code, Some(64), "{run:?}");

    let show = lot(&cfg, &["show", "--json"]).await;
    let reply: Value = serde_json::from_str(&show.stdout).expect(&show.stdout);
    assert!(
        reply["stations"][0]["context"]["lot"].is_null(),
        "nothing opened: {show:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_daemon_lot_exits_69_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let pty = VirtualSerial::open().unwrap();
    let data = dir.path().join("data");
    let toml = config_toml(&data, broker.port, pty.slave_path());
    let config = dir.path().join("linegate.toml");
    std::fs::write(&config, &toml).unwrap();
    let socket = data.join("control.sock");
    let socket_text = socket.display().to_string();

    // (d) never started: no socket.
    let run = lot(&config, &["show"]).await;
    assert_eq!(run.code, Some(69), "{run:?}");
    assert!(run.stderr.contains("not running"), "{run:?}");
    assert!(run.stderr.contains(&socket_text), "{run:?}");

    // Killed: a stale socket file nobody listens on.
    let mut gw = Gateway::start(dir.path(), &toml);
    assert!(gw.wait_log("control socket listening", WAIT).await);
    gw.kill9();
    assert!(socket.exists(), "SIGKILL leaves the socket file behind");
    let run = lot(&config, &["open", "--station", "st10", "--lot", "L-1"]).await;
    assert_eq!(run.code, Some(69), "{run:?}");
    assert!(run.stderr.contains(&socket_text), "{run:?}");

    // Started again: the stale socket is replaced and served.
    gw.spawn();
    assert!(
        gw.wait_log("replaced a stale socket file", WAIT).await,
        "{}",
        gw.log_text()
    );
    let run = lot(&config, &["show"]).await;
    assert_eq!(run.code, Some(0), "{run:?}\n{}", gw.log_text());

    // A clean stop removes it.
    assert_eq!(gw.stop(), Some(0));
    assert!(!socket.exists(), "socket removed at a clean stop");
    let run = lot(&config, &["show"]).await;
    assert_eq!(run.code, Some(69), "{run:?}");
}

/// Send `bytes` on a fresh connection and read what comes back until the
/// daemon closes (bounded by a read timeout).
fn exchange(socket: &Path, bytes: &[u8]) -> String {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // A daemon that closes early may refuse the rest: not this test's concern.
    let _ = c.write_all(bytes);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn reply_of(text: &str) -> Value {
    let line = text.lines().next().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_is_answered_and_the_daemon_keeps_serving() {
    let s = Setup::start().await;
    let socket = s.socket.clone();

    let replies = tokio::task::spawn_blocking(move || {
        let mut replies = Vec::new();
        for bytes in [
            b"not json at all\n".to_vec(),
            b"\xff\xfe\n".to_vec(),
            br#"{"op":"reboot"}"#.to_vec(),
            br#"{"op":"close-lot","station":"st10","extra":1}"#.to_vec(),
            format!("{}\n", "x".repeat(10_000)).into_bytes(),
        ] {
            replies.push(exchange(&socket, &bytes));
        }
        // Connected and gone without a word.
        drop(UnixStream::connect(&socket).unwrap());
        replies
    })
    .await
    .unwrap();
    for (i, text) in replies.iter().enumerate() {
        let reply = reply_of(text);
        assert_eq!(reply["ok"], false, "{i}: {text}");
        assert_eq!(reply["kind"], "invalid", "{i}: {text}");
    }
    assert!(
        replies[2].contains("unknown variant `reboot`"),
        "{}",
        replies[2]
    );
    assert!(replies[3].contains("unknown field"), "{}", replies[3]);
    assert!(
        replies[4].contains("longer than 4096 bytes"),
        "{}",
        replies[4]
    );

    // Every client slot held by a silent client: a real request takes the
    // oldest one's slot at once (that client is told why); the others are
    // cut off after the read timeout.
    let socket = s.socket.clone();
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let cfg = s.gw.config.clone();
    let open = lot(&cfg, &["open", "--station", "st10", "--lot", "L-9"]).await;
    assert_eq!(open.code, Some(0), "{open:?}");
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(
            out.contains("no complete request line") || out.contains("its slot was needed"),
            "{out:?}"
        );
    }

    // Nothing of the garbage reached the MES; the valid request did.
    s.record("lot L-9 opened", "lot", |v| v["lot"] == "L-9")
        .await;
    let audits: Vec<Value> = s
        .rec
        .records()
        .into_iter()
        .filter(|v| v["kind"] == "audit")
        .collect();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert!(
        s.gw.log_text().contains("local command applied"),
        "{}",
        s.gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_idle_connections_do_not_starve_a_request() {
    let s = Setup::start().await;
    let socket = s.socket.clone();
    // A local user opens 100 connections and sends nothing on any of them.
    let idle: Vec<UnixStream> = tokio::task::spawn_blocking(move || {
        (0..100)
            .map(|_| UnixStream::connect(&socket).unwrap())
            .collect()
    })
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let show = lot(&s.gw.config, &["show"]).await;
    let took = started.elapsed();
    println!("`linegate lot show` behind 100 idle connections took {took:?}");
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(show.stdout.contains("st10"), "{show:?}");
    // Served at once, not after the idle clients' timeouts.
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Every idle connection is closed by the daemon, with a reason, within
    // the read timeout (2 s) plus slack.
    let closed = tokio::task::spawn_blocking(move || {
        idle.into_iter()
            .map(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let mut out = String::new();
                let _ = c.read_to_string(&mut out);
                out
            })
            .collect::<Vec<String>>()
    })
    .await
    .unwrap();
    let evicted = closed
        .iter()
        .filter(|o| o.contains("its slot was needed"))
        .count();
    let timed_out = closed
        .iter()
        .filter(|o| o.contains("no complete request line within 2s"))
        .count();
    println!("idle clients: {evicted} evicted for a new connection, {timed_out} timed out");
    assert_eq!(evicted + timed_out, 100, "{closed:?}");
    // At least the one whose slot `lot show` took (normally 97: every
    // connection past the fourth evicts the oldest; a stalled machine may
    // let some time out first).
    assert!(evicted >= 1, "{evicted} evicted");

    // And the daemon still serves.
    let show = lot(&s.gw.config, &["show"]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
}
