//! Signed MES commands end to end (`[commands] require_signature = true`):
//! a command signed with the MES's key is obeyed; unsigned, wrongly signed,
//! tampered, retargeted (another gateway, another command topic), stale and
//! replayed commands are refused with a result and an audit record naming
//! the reason, a replay also after a restart; and the openssl recipe in
//! docs/mqtt.md produces a command the gateway obeys.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use ed25519_dalek::{Signer as _, SigningKey};
use linegate::devices::pty::VirtualSerial;
use rumqttc::QoS;
use serde_json::Value;
use std::path::Path;
use std::time::SystemTime;

const FILTER: &str = "plant1/line3/#";
const CMD: &str = "plant1/line3/gateway/gw-test/cmd";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The config of the tests, commands signed by `key_file` required.
fn config(dir: &Path, port: u16, scanner: &Path, key_file: &Path) -> String {
    format!(
        "{}\n[commands]\npublic_key_file = \"{}\"\nrequire_signature = true\nreplay_window = \"5m\"\n",
        config_toml(&dir.join("data"), port, scanner),
        key_file.display()
    )
}

/// The inner JSON of a signed command.
fn inner(gateway: &str, command: &str, ts: u64, id: &str, args: &str) -> String {
    format!(
        r#"{{"gateway":"{gateway}","command":"{command}","ts":{ts},"id":"{id}","station":"st10"{args}}}"#
    )
}

fn envelope(key: &SigningKey, inner: &str) -> String {
    let sig = key.sign(inner.as_bytes());
    serde_json::json!({
        "signed": STANDARD.encode(inner),
        "sig": STANDARD.encode(sig.to_bytes()),
    })
    .to_string()
}

async fn publish(rec: &Recorder, name: &str, body: &str) {
    rec.client
        .publish(
            format!("{CMD}/{name}"),
            QoS::AtLeastOnce,
            false,
            body.to_owned(),
        )
        .await
        .unwrap();
}

/// The results published for command `id`, in order.
fn results(msgs: &[Message], id: &str) -> Vec<Value> {
    msgs.iter()
        .filter(|m| m.topic.starts_with(CMD) && m.topic.ends_with("/result"))
        .map(Message::json)
        .filter(|v| v["id"] == id)
        .collect()
}

/// The audit records of command `id`.
fn audits(msgs: &[Message], id: &str) -> Vec<Value> {
    msgs.iter()
        .map(Message::json)
        .filter(|v| v["kind"] == "audit" && v["data"]["id"] == id)
        .collect()
}

async fn wait_results(rec: &Recorder, id: &str, n: usize) {
    rec.wait_for(&format!("{n} result(s) for {id}"), |m| {
        results(m, id).len() >= n && audits(m, id).len() >= n
    })
    .await;
}

/// The last result and audit of `id` are refusals naming `why`.
fn assert_refused(msgs: &[Message], id: &str, why: &str) {
    let result = results(msgs, id)
        .pop()
        .unwrap_or_else(|| panic!("no result for {id}"));
    assert_eq!(result["accepted"], false, "{id}: {result}");
    assert!(
        result["reason"].as_str().unwrap_or("").contains(why),
        "{id}: expected a reason with {why:?}: {result}"
    );
    let audit = audits(msgs, id)
        .pop()
        .unwrap_or_else(|| panic!("no audit for {id}"));
    assert_eq!(audit["data"]["accepted"], false, "{id}: {audit}");
    assert!(
        audit["data"]["reason"].as_str().unwrap_or("").contains(why),
        "{id}: expected an audit reason with {why:?}: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commands_signed_for_this_gateway_now_and_once_are_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let wrong = SigningKey::from_bytes(&[0x22; 32]);
    let key_file = dir.path().join("mes.pub");
    std::fs::write(
        &key_file,
        linegate::uplink::signed::public_key_pem(&key.verifying_key()),
    )
    .unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &config(dir.path(), broker.port, pty.slave_path(), &key_file),
    );
    rec.wait_status_since(SystemTime::UNIX_EPOCH).await;

    let now = now_ms();
    // Refused by the station (no lot open yet): its id is remembered all the same.
    let close = envelope(&key, &inner("gw-test", "close-lot", now, "cl-1", ""));
    publish(&rec, "close-lot", &close).await;
    wait_results(&rec, "cl-1", 1).await;
    let open = envelope(
        &key,
        &inner("gw-test", "set-lot", now, "s-1", r#","lot":"L-1""#),
    );
    publish(&rec, "set-lot", &open).await;
    publish(
        &rec,
        "set-lot",
        r#"{"id":"u-1","station":"st10","lot":"U"}"#,
    )
    .await;
    let by_wrong = envelope(
        &wrong,
        &inner("gw-test", "set-lot", now, "w-1", r#","lot":"W""#),
    );
    publish(&rec, "set-lot", &by_wrong).await;
    let good = inner("gw-test", "set-lot", now, "t-1", r#","lot":"T""#);
    let signed: Value = serde_json::from_str(&envelope(&key, &good)).unwrap();
    let tampered = serde_json::json!({
        "signed": STANDARD.encode(good.replace("\"T\"", "\"EVIL\"")),
        "sig": signed["sig"],
    })
    .to_string();
    publish(&rec, "set-lot", &tampered).await;
    let elsewhere = envelope(
        &key,
        &inner("gw-other", "set-lot", now, "g-1", r#","lot":"G""#),
    );
    publish(&rec, "set-lot", &elsewhere).await;
    let other_topic = envelope(&key, &inner("gw-test", "close-lot", now, "x-1", ""));
    publish(&rec, "set-lot", &other_topic).await;
    let stale = envelope(
        &key,
        &inner(
            "gw-test",
            "set-lot",
            now - 10 * 60_000,
            "o-1",
            r#","lot":"O""#,
        ),
    );
    publish(&rec, "set-lot", &stale).await;
    publish(&rec, "close-lot", &close).await;
    publish(&rec, "set-lot", &open).await;
    for (id, n) in [
        ("s-1", 2),
        ("u-1", 1),
        ("w-1", 1),
        ("t-1", 1),
        ("g-1", 1),
        ("x-1", 1),
        ("o-1", 1),
        ("cl-1", 2),
    ] {
        wait_results(&rec, id, n).await;
    }
    let msgs = rec.snapshot();
    let first = &results(&msgs, "s-1")[0];
    assert_eq!(first["accepted"], true, "{first}");
    assert_refused(&msgs, "u-1", "signature required");
    assert_refused(&msgs, "w-1", "invalid signature");
    assert_refused(&msgs, "t-1", "invalid signature");
    assert_refused(&msgs, "g-1", "signed for gateway `gw-other`");
    assert_refused(&msgs, "x-1", "signed for command `close-lot`");
    assert_refused(&msgs, "o-1", "outside the replay window");
    assert_refused(&msgs, "s-1", "replayed");
    assert_refused(&msgs, "cl-1", "replayed");
    // The audit of a signed command keeps the inner JSON as signed.
    let audit = &audits(&msgs, "s-1")[0];
    assert!(
        audit["data"]["payload"]
            .as_str()
            .unwrap()
            .contains("\"gateway\":\"gw-test\""),
        "{audit}"
    );

    // A restart forgets nothing: the replayed close-lot (refused the first
    // time, now that a lot is open it would close it) is refused again.
    gw.kill9();
    let restarted = SystemTime::now();
    gw.spawn();
    rec.wait_status_since(restarted).await;
    publish(&rec, "close-lot", &close).await;
    wait_results(&rec, "cl-1", 3).await;
    assert_refused(&rec.snapshot(), "cl-1", "replayed");

    pty.write(b"PART-1\r\n").await.unwrap();
    rec.wait_for("the scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "PART-1")
    })
    .await;
    let scan = rec
        .records()
        .into_iter()
        .find(|r| r["data"]["code"] == "PART-1")
        .unwrap();
    assert_eq!(
        scan["lot"], "L-1",
        "only the signed set-lot changed the lot: {scan}"
    );
}

/// The recipe of docs/mqtt.md ("Signing a command by hand"), run as
/// written but for the gateway id and the broker's address: openssl makes
/// the key pair and signs, mosquitto_pub sends, the gateway obeys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openssl_recipe_in_the_docs_signs_commands_the_gateway_obeys() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mqtt.md")).unwrap();
    let block = |marker: &str| -> String {
        let start = doc
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} not in docs/mqtt.md"));
        let rest = &doc[start..];
        let code = &rest[rest.find("```sh\n").expect("a sh block") + 6..];
        code[..code.find("```").unwrap()].to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let run = |script: String| {
        let script = script
            .replace("gw-01", "gw-test")
            .replace("-h broker", &format!("-h 127.0.0.1 -p {}", broker.port));
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(block("<!-- recipe: keys -->"));
    let rec = Recorder::start(broker.port, FILTER).await;
    let pty = VirtualSerial::open().unwrap();
    let _gw = Gateway::start(
        dir.path(),
        &config(
            dir.path(),
            broker.port,
            pty.slave_path(),
            &dir.path().join("mes.pub"),
        ),
    );
    rec.wait_status_since(SystemTime::UNIX_EPOCH).await;
    run(block("<!-- recipe: sign -->"));
    wait_results(&rec, "c-1001", 1).await;
    let result = &results(&rec.snapshot(), "c-1001")[0];
    assert_eq!(result["accepted"], true, "{result}");
    rec.wait_for("the lot opened by the signed command", |m| {
        m.iter()
            .any(|m| m.json()["kind"] == "lot" && m.json()["lot"] == "L-42")
    })
    .await;
}
