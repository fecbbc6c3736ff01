//! MES commands end to end: valid commands change the context; malformed,
//! unknown and retained commands are rejected with a result and an audit
//! record, and nothing else is disturbed.

mod common;

use common::*;
use linegate::devices::pty::VirtualSerial;
use rumqttc::QoS;
use serde_json::Value;

const FILTER: &str = "plant1/line3/#";
const CMD: &str = "plant1/line3/gateway/gw-test/cmd";

fn result_for(msgs: &[Message], name: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let topic = format!("{CMD}/{name}/result");
    msgs.iter()
        .filter(|m| m.topic == topic)
        .map(Message::json)
        .find(|v| pred(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_validated_applied_audited_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.port, FILTER).await;

    // A retained command left on the broker must be refused when the gateway subscribes.
    rec.client
        .publish(
            format!("{CMD}/set-lot"),
            QoS::AtLeastOnce,
            true,
            r#"{"id":"stale-1","station":"st10","lot":"OLD"}"#,
        )
        .await
        .unwrap();
    let pty = VirtualSerial::open().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
    );
    rec.wait_for("retained command refused", |m| {
        result_for(m, "set-lot", |v| {
            v["id"] == "stale-1" && v["accepted"] == false
        })
        .is_some()
    })
    .await;
    // Clear the retained message.
    rec.client
        .publish(
            format!("{CMD}/set-lot"),
            QoS::AtLeastOnce,
            true,
            Vec::<u8>::new(),
        )
        .await
        .unwrap();

    let send = |name: &str, body: &str| {
        let client = rec.client.clone();
        let (topic, body) = (format!("{CMD}/{name}"), body.to_owned());
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .unwrap()
        }
    };
    send(
        "set-lot",
        r#"{"id":"bad-1","station":"st10","lot":"L1","extra":true}"#,
    )
    .await;
    send("set-lot", "not json at all").await;
    send("reboot", r#"{"id":"bad-3"}"#).await;
    send(
        "set-lot",
        r#"{"id":"bad-4","station":"nowhere","lot":"L1"}"#,
    )
    .await;
    send("set-lot", r#"{"id":"ok-1","station":"st10","lot":"L-42"}"#).await;
    send(
        "set-order",
        r#"{"id":"ok-2","station":"st10","order":"WO777777"}"#,
    )
    .await;
    send(
        "set-lot",
        r#"{"id":"ok-1","station":"st10","lot":"REPLAY"}"#,
    )
    .await;

    rec.wait_for("all results", |m| {
        ["bad-1", "bad-4", "ok-1", "ok-2"].iter().all(|id| {
            result_for(
                m,
                if *id == "ok-2" {
                    "set-order"
                } else {
                    "set-lot"
                },
                |v| v["id"] == *id,
            )
            .is_some()
        }) && result_for(m, "reboot", |_| true).is_some()
            && result_for(m, "set-lot", |v| v["id"].is_null()).is_some()
            && result_for(m, "set-lot", |v| {
                v["id"] == "ok-1" && v["accepted"] == false
            })
            .is_some()
    })
    .await;
    let msgs = rec.snapshot();
    let reason = |name: &str, id: &str| {
        result_for(&msgs, name, |v| v["id"] == id && v["accepted"] == false)
            .map(|v| v["reason"].as_str().unwrap().to_owned())
    };
    assert!(
        reason("set-lot", "bad-1")
            .unwrap()
            .contains("unknown field")
    );
    assert!(
        result_for(&msgs, "set-lot", |v| v["id"].is_null()).unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("invalid payload")
    );
    assert!(
        result_for(&msgs, "reboot", |_| true).unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("unknown command")
    );
    assert!(
        reason("set-lot", "bad-4")
            .unwrap()
            .contains("unknown station")
    );
    assert!(reason("set-lot", "ok-1").unwrap().contains("duplicate"));
    let accepted =
        |name: &str, id: &str| result_for(&msgs, name, |v| v["id"] == id && v["accepted"] == true);
    assert!(accepted("set-lot", "ok-1").is_some());
    assert!(accepted("set-order", "ok-2").is_some());

    // Every command received left an audit record.
    rec.wait_for("audit records", |m| {
        m.iter().filter(|m| m.json()["kind"] == "audit").count() >= 8
    })
    .await;

    // A command topic with an absurd name is refused without wedging anything.
    send(&"x".repeat(40_000), r#"{"id":"huge"}"#).await;

    // Nothing else disturbed: scans flow and carry the context the valid commands set.
    pty.write(b"PART-1\r\n").await.unwrap();
    rec.wait_for("scan after commands", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "PART-1")
    })
    .await;
    let scan = rec
        .records()
        .into_iter()
        .find(|r| r["data"]["code"] == "PART-1")
        .unwrap();
    assert_eq!(
        scan["lot"], "L-42",
        "the replayed command did not change the lot"
    );
    assert_eq!(scan["order"], "WO777777");
    assert!(
        !gw.log_text().contains("MQTT connection lost"),
        "no command may break the MQTT session:\n{}",
        gw.log_text()
    );
}
