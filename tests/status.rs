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
    assert!(
        down["broker"]["last_error"]["message"].is_string(),
        "{down}"
    );
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

/// One HTTP request to `port`, written as `request`; the whole reply.
async fn http(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request).await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        String::from_utf8(reply).unwrap()
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an HTTP reply in time")
}

/// The sample `line` (name and labels) of a metrics page, as a number.
fn sample(page: &str, line: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoint_serves_metrics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let port = free_port();
    let toml = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        config_toml(&dir.path().join("data"), broker.port, pty.slave_path())
    );
    let gw = Gateway::start(dir.path(), &toml);
    assert!(
        gw.wait_log("metrics endpoint listening", WAIT).await,
        "{}",
        gw.log_text()
    );
    pty.write(b"M-1\r\n").await.unwrap();
    rec.wait_for("the scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "M-1")
    })
    .await;
    // Published: the gateway's counters move when the PUBACK is in.
    rec.wait_for("a status after the scan", |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/status") && m.json()["broker"]["published"].as_u64() >= Some(1)
        })
    })
    .await;

    let page = http(port, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("# TYPE linegate_commit_seconds histogram"),
        "{body}"
    );
    assert!(
        sample(body, "linegate_commit_seconds_count") >= Some(1.0),
        "{body}"
    );
    assert!(
        sample(body, "linegate_records_committed_total") >= Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "linegate_uplink_connected"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "linegate_uplink_connects_total"),
        Some(1.0),
        "{body}"
    );
    assert!(
        sample(body, "linegate_records_published_total") >= Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "linegate_device_online{device=\"scanner-1\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "linegate_device_frames_total{device=\"scanner-1\"}"),
        Some(1.0),
        "{body}"
    );
    assert!(sample(body, "linegate_queue_depth").is_some(), "{body}");

    let other = http(port, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let post = http(port, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let junk = http(port, b"\x16\x03\x01 hello\r\n\r\n").await;
    assert!(junk.starts_with("HTTP/1.1 400"), "{junk}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    let too_large = http(port, &huge).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    // Still serving.
    let again = http(port, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
