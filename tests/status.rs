//! On the box: `linegate status` over the control socket, from a separate
//! process, while the broker is up and after it is gone.

mod common;

use std::path::Path;

use common::*;
use linegate::devices::pty::VirtualSerial;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";

/// Run `linegate <args…>` and wait (bounded) for it: exit code and stdout.
async fn linegate(args: &[&str]) -> (Option<i32>, String, String) {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, child)
        .await
        .unwrap_or_else(|_| panic!("`linegate {}` did not exit within {WAIT:?}", args.join(" ")))
        .expect("run linegate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn status_json(config: &Path) -> Value {
    let (code, out, err) =
        linegate(&["status", "--json", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_on_the_box_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("linegate.toml");
    let mut broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
    );
    rec.wait_for("the gateway's status", |m| {
        m.iter()
            .any(|m| m.topic.ends_with("/status") && m.json()["online"] == true)
    })
    .await;
    assert!(
        gw.wait_log("control socket listening", WAIT).await,
        "{}",
        gw.log_text()
    );
    pty.write(b"UP-1\r\n").await.unwrap();
    rec.wait_for("the first scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "UP-1")
    })
    .await;

    let up = status_json(&config).await;
    assert_eq!(up["gateway"], "gw-test", "{up}");
    assert_eq!(up["broker"]["connected"], true, "{up}");
    assert_eq!(up["broker"]["connects"], 1, "{up}");
    assert!(up["epoch"].is_string(), "{up}");
    assert_eq!(up["devices"]["scanner-1"]["online"], true, "{up}");
    // The same fields as the retained MQTT status.
    let mqtt = rec
        .snapshot()
        .iter()
        .rev()
        .find(|m| m.topic.ends_with("/status") && m.json()["online"] == true)
        .unwrap()
        .json();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&up), keys(&mqtt));

    broker.kill();
    assert!(
        gw.wait_log("MQTT connection lost", WAIT).await,
        "{}",
        gw.log_text()
    );
    let before = gw.last_committed();
    pty.write(b"DOWN-1\r\n").await.unwrap();
    assert!(
        gw.wait_committed(before + 1, WAIT).await,
        "{}",
        gw.log_text()
    );
    let down = status_json(&config).await;
    assert_eq!(down["broker"]["connected"], false, "{down}");
    assert!(down["broker"]["last_error"].is_string(), "{down}");
    assert!(down["queue"]["depth"].as_u64() >= Some(1), "{down}");

    let (code, text, err) = linegate(&["status", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("uplink    disconnected ("), "{text}");
    assert!(text.contains("scanner-1  online"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_running_gateway_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("linegate.toml");
    std::fs::write(
        &config,
        config_toml(
            &dir.path().join("data"),
            free_port(),
            Path::new("/dev/null"),
        ),
    )
    .unwrap();
    let (code, out, err) = linegate(&["status", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, Some(69), "{out}{err}");
}
