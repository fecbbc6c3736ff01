//! The ledger checker itself must be able to fail: synthetic runs with a
//! lost record, a duplicate, a conflicting duplicate, a replay out of order
//! and a corrupt payload are each reported.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::ledger::{Input, Ledger};
use common::{Commit, Message};

fn msg(seq: u64, station: &str, code: &str) -> Message {
    let payload = format!(
        r#"{{"v":2,"seq":{seq},"station":"{station}","kind":"scan","data":{{"code":"{code}"}}}}"#
    );
    Message {
        topic: format!("plant1/line3/{station}/scan"),
        payload: payload.into_bytes(),
        retain: false,
        received: Instant::now(),
    }
}

fn commit(at: SystemTime, first_seq: u64, last_seq: u64) -> Commit {
    Commit {
        at,
        first_seq,
        last_seq,
        records: last_seq - first_seq + 1,
        commit_ms: 1.0,
    }
}

#[test]
fn a_clean_run_balances_and_measures_the_acceptance_window() {
    let t0 = SystemTime::now();
    let commits = [
        commit(t0 + Duration::from_millis(12), 1, 2),
        commit(t0 + Duration::from_millis(30), 3, 3),
    ];
    let received = [
        msg(1, "st10", "A"),
        msg(2, "st10", "B"),
        msg(2, "st10", "B"),
        msg(3, "st20", "C"),
    ];
    let inputs = [
        Input {
            code: "A".into(),
            sent: t0,
        },
        Input {
            code: "C".into(),
            sent: t0 + Duration::from_millis(5),
        },
        Input {
            code: "never-read".into(),
            sent: t0,
        },
    ];
    let report = Ledger::check(&commits, &received, &inputs);
    report.assert_nothing_lost();
    assert_eq!(
        (report.accepted, report.delivered, report.duplicates),
        (3, 3, 1)
    );
    assert_eq!(report.max_window_ms.map(|w| w.round()), Some(25.0));
    assert_eq!(report.undelivered_inputs, ["never-read"]);
    assert!(
        report.to_string().starts_with("0 lost of 3 accepted"),
        "{report}"
    );
}

#[test]
fn every_kind_of_damage_is_reported() {
    let t0 = SystemTime::now();
    let commits = [commit(t0, 1, 5)];
    let mut conflicting = msg(2, "st10", "B");
    conflicting.payload = msg(2, "st10", "OTHER").payload;
    let received = vec![
        msg(1, "st10", "A"),
        msg(3, "st10", "C"),
        msg(2, "st10", "B"), // first arrival of 2 after 3: out of order
        conflicting,         // seq 2 again with other content
        Message {
            topic: "plant1/line3/st10/scan".into(),
            payload: b"{not json".to_vec(),
            retain: false,
            received: Instant::now(),
        },
        Message {
            topic: "plant1/line3/gateway/gw/status".into(),
            payload: b"ignored".to_vec(),
            retain: true,
            received: Instant::now(),
        },
    ];
    let report = Ledger::check(&commits, &received, &[]);
    assert_eq!(report.lost, [4, 5]);
    assert_eq!(report.lost_count, 2);
    assert_eq!(report.conflicts, 1);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.order_violations, 1);
    assert_eq!(report.corrupt, 1);
    let caught = std::panic::catch_unwind(|| report.assert_nothing_lost());
    assert!(caught.is_err(), "a lossy run must fail the check");
}

/// A record's key is `(epoch, seq)`: a store wiped and started again has a
/// new epoch and counts from seq 1, which is neither a conflict nor out of
/// order; the same seq twice in one epoch with other content still is.
#[test]
fn the_same_seq_in_another_epoch_is_another_record() {
    let in_epoch = |epoch: &str, seq: u64, code: &str| {
        let mut m = msg(seq, "st10", code);
        let text = String::from_utf8(m.payload).unwrap();
        m.payload = text
            .replacen("{", &format!(r#"{{"epoch":"{epoch}","#), 1)
            .into_bytes();
        m
    };
    let commits = [commit(SystemTime::now(), 1, 2)];
    let received = vec![
        in_epoch("e1", 1, "A"),
        in_epoch("e1", 2, "B"),
        in_epoch("e2", 1, "C"),
        in_epoch("e2", 2, "D"),
    ];
    let report = Ledger::check(&commits, &received, &[]);
    assert_eq!((report.conflicts, report.duplicates), (0, 0), "{report}");
    assert_eq!(report.order_violations, 0, "{report}");
    report.assert_nothing_lost();

    let again = vec![in_epoch("e1", 1, "A"), in_epoch("e1", 1, "C")];
    assert_eq!(Ledger::check(&commits, &again, &[]).conflicts, 1);
}
