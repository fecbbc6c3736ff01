//! `linegate demo` end to end: one shift walk-through (20 scans) through the
//! real binary, its embedded broker and simulated scanner and press, read
//! back from what its MES side prints.

#![cfg(feature = "demo")]

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_linegate");

/// Run the demo for one walk-through; its stdout lines, bounded in time.
fn run_one_shift() -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(["demo", "--scans", "20", "--interval", "50ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the demo did not stop within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let text = reader.join().unwrap();
    assert!(status.success(), "{status}\n{stderr}\n{text}");
    assert!(
        !stderr.contains("did not reach the MES"),
        "a step's record was missing: {stderr}"
    );
    text.lines().map(str::to_owned).collect()
}

/// The records printed (`topic payload` lines with a record payload), first
/// copy of each seq.
fn records(lines: &[String]) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    lines
        .iter()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, payload)| serde_json::from_str::<Value>(payload).ok())
        .filter(|v| v["seq"].as_u64().is_some_and(|s| seen.insert(s)))
        .collect()
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

#[test]
fn one_shift_walk_through() {
    let lines = run_one_shift();
    let records = records(&lines);
    let all = lines.join("\n");

    // Operator login and logout by badge.
    let operator: Vec<&Value> = of_kind(&records, "context")
        .into_iter()
        .filter(|r| r["data"]["field"] == "operator")
        .collect();
    assert_eq!(operator.len(), 2, "{all}");
    assert_eq!(operator[0]["data"]["value"], "0042");
    assert_eq!(operator[0]["data"]["rule"], "badge");
    assert_eq!(operator[1]["data"]["value"], Value::Null, "badge out");
    assert_eq!(operator[1]["data"]["previous"], "0042");

    // Work order by scan, then by the MES with its material list.
    let orders: Vec<&Value> = of_kind(&records, "context")
        .into_iter()
        .filter(|r| r["data"]["field"] == "order")
        .collect();
    assert_eq!(orders.len(), 2, "{all}");
    assert_eq!(orders[0]["data"]["value"], "WO104233");
    assert_eq!(orders[0]["data"]["source"], "scan");
    assert_eq!(orders[1]["data"]["value"], "WO104234");
    assert_eq!(orders[1]["data"]["source"], "command");

    // Materials consumed, read from GS1 DataMatrix (one with a GS).
    let materials: Vec<&Value> = of_kind(&records, "context")
        .into_iter()
        .filter(|r| r["data"]["field"] == "material")
        .collect();
    assert_eq!(materials.len(), 3, "{all}");
    assert_eq!(materials[0]["data"]["material"]["gtin"], "04150000021126");
    assert_eq!(materials[0]["data"]["material"]["lot"], "C24-1187");
    assert_eq!(materials[0]["data"]["material"]["expiry"], "270630");
    assert_eq!(materials[1]["data"]["material"]["gtin"], "09506000134352");

    // Lots: opened by the MES, closed by the count target with its totals,
    // the next opened; then changed by a scanned lot label.
    let lots = of_kind(&records, "lot");
    let events: Vec<(&str, &str)> = lots
        .iter()
        .map(|l| {
            (
                l["data"]["event"].as_str().unwrap(),
                l["data"]["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("opened", "command"),
            ("closed", "target"),
            ("opened", "target"),
            ("closed", "scan"),
            ("opened", "scan"),
        ],
        "{all}"
    );
    let first = lots[0]["lot"].as_str().unwrap();
    assert!(
        first.starts_with("line1-") && first.ends_with("-001"),
        "{first}"
    );
    let closed = lots[1];
    assert_eq!(closed["lot"], first);
    assert_eq!(closed["data"]["target"], 6);
    let totals = &closed["data"]["totals"];
    assert_eq!(totals["good"], 6, "{closed}");
    assert_eq!(totals["scrap"], 1);
    assert_eq!(totals["products"], 6);
    assert_eq!(totals["rejects"], 2);
    assert_eq!(totals["materials"].as_array().unwrap().len(), 2);
    assert_eq!(totals["operators"], serde_json::json!(["0042"]));
    assert_eq!(totals["orders"], serde_json::json!(["WO104233"]));
    assert!(lots[2]["lot"].as_str().unwrap().ends_with("-002"));
    assert_eq!(lots[4]["lot"], "K26-0412");
    assert_eq!(lots[4]["data"]["rule"], "lot-label");

    // Products, each in the lot open when it was scanned.
    let products = of_kind(&records, "product");
    assert_eq!(products.len(), 10, "{all}");
    assert_eq!(products[0]["data"]["serial"], "SN000001");
    assert_eq!(products[0]["data"]["gtin"], "04012345000016");
    assert_eq!(products[0]["lot"], first);
    assert_eq!(products[0]["operator"], "0042");
    assert_eq!(products[6]["lot"], lots[2]["lot"], "after the target");
    assert_eq!(products[9]["lot"], "K26-0412");

    // Rejects: the duplicate serial, the test label, the material not on
    // the order's list.
    let rejects = of_kind(&records, "reject");
    let reasons: Vec<&str> = rejects
        .iter()
        .map(|r| r["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["duplicate-serial", "rule", "material-not-allowed"],
        "{all}"
    );
    let dup = rejects[0]["data"]["message"].as_str().unwrap();
    assert!(
        dup.contains(&format!("SN000002 was already recorded in lot {first}")),
        "{dup}"
    );
    assert_eq!(rejects[1]["data"]["rule"], "test-label");

    // Both MES commands accepted.
    let results: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("/cmd/") && l.contains("/result "))
        .collect();
    assert_eq!(results.len(), 2, "{all}");
    assert!(results.iter().all(|l| l.contains(r#""accepted":true"#)));

    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            "# 20 scans; lots opened 3, closed 2; products 10; rejects: 1 duplicate-serial, 1 material-not-allowed, 1 rule"
        )
    );
}
