//! The ledger: what the gateway accepted against what the MES received.
//!
//! The gateway makes its durability point observable in its log: every group
//! commit logs `committed first_seq=… last_seq=…` right after the commit
//! returned ([`Commit`]), so the seqs in those lines are exactly the records
//! it accepted. The [`Recorder`](super::Recorder) keeps every message the MES
//! side received. [`Ledger::check`] compares the two:
//!
//! - **accepted**: seqs the gateway logged as committed;
//! - **delivered**: accepted seqs received at least once;
//! - **lost**: accepted − delivered (must be empty);
//! - **duplicates**: copies beyond the first of an `(epoch, seq)` (allowed:
//!   QoS 1);
//! - **conflicts**: an `(epoch, seq)` received twice with different content
//!   (never allowed: it would be two records under one key);
//! - **order violations**: per epoch and station, a first arrival whose seq
//!   is lower than an earlier first arrival (replays come in seq order);
//!
//! Records are told apart by `(epoch, seq)`, the MES's idempotency key: a
//! store that was wiped starts a new epoch at seq 1.
//! - **corrupt**: record-topic payloads that are not a JSON record with a seq;
//! - **largest acceptance window**: for inputs the test sent (scan codes
//!   with their send time), the longest time from sending to the commit that
//!   made the input's record durable; inputs never delivered are listed.
//!
//! Every fault test ends with [`Report::assert_nothing_lost`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use serde_json::Value;

use super::{Commit, Message};

/// One input the test fed the gateway: a scan code and when it was written.
#[derive(Debug, Clone)]
pub struct Input {
    pub code: String,
    pub sent: SystemTime,
}

/// The accounting of one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub accepted: u64,
    pub delivered: u64,
    /// Accepted seqs never received (at most 20 listed; `lost_count` has all).
    pub lost: Vec<u64>,
    pub lost_count: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub order_violations: u64,
    pub corrupt: u64,
    /// Longest time from sending an input to the commit of its record.
    pub max_window_ms: Option<f64>,
    /// Inputs whose record was never received (at most 20 listed).
    pub undelivered_inputs: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lost of {} accepted ({} delivered); duplicates {}; conflicts {}; \
             order violations {}; corrupt {}; largest acceptance window {}",
            self.lost_count,
            self.accepted,
            self.delivered,
            self.duplicates,
            self.conflicts,
            self.order_violations,
            self.corrupt,
            self.max_window_ms
                .map_or("n/a".to_owned(), |w| format!("{w:.1} ms")),
        )
    }
}

impl Report {
    /// Nothing accepted lost, no seq with two contents, no payload broken,
    /// replays in order.
    pub fn assert_nothing_lost(&self) {
        assert!(
            self.lost_count == 0
                && self.conflicts == 0
                && self.corrupt == 0
                && self.order_violations == 0,
            "ledger: {self}; first lost seqs {:?}",
            self.lost
        );
    }
}

pub struct Ledger;

impl Ledger {
    /// Compare the commits the gateway logged with what the recorder
    /// received. Messages on gateway topics (`…/gateway/…`) without a `seq`
    /// (status, command results) are not records and are ignored; records
    /// there (the store's alarms, audits of commands refused before a
    /// station) count like any other.
    pub fn check(commits: &[Commit], received: &[Message], inputs: &[Input]) -> Report {
        let mut report = Report::default();
        let accepted: BTreeSet<u64> = commits
            .iter()
            .flat_map(|c| c.first_seq..=c.last_seq)
            .collect();
        report.accepted = accepted.len() as u64;

        let mut first: BTreeMap<(String, u64), Value> = BTreeMap::new();
        let mut last_first_by_station: BTreeMap<(String, String), u64> = BTreeMap::new();
        for m in received {
            let Some(v) = serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .filter(|v| v["seq"].is_u64())
            else {
                if !m.topic.contains("/gateway/") {
                    report.corrupt += 1;
                }
                continue;
            };
            let seq = v["seq"].as_u64().unwrap_or_default();
            let epoch = v["epoch"].as_str().unwrap_or_default().to_owned();
            match first.get(&(epoch.clone(), seq)) {
                Some(earlier) => {
                    report.duplicates += 1;
                    if *earlier != v {
                        report.conflicts += 1;
                    }
                }
                None => {
                    let station = v["station"].as_str().unwrap_or("").to_owned();
                    let last = last_first_by_station
                        .entry((epoch.clone(), station))
                        .or_insert(0);
                    if seq < *last {
                        report.order_violations += 1;
                    }
                    *last = (*last).max(seq);
                    first.insert((epoch, seq), v);
                }
            }
        }
        let received: BTreeSet<u64> = first.keys().map(|(_, seq)| *seq).collect();
        let lost: Vec<u64> = accepted
            .iter()
            .filter(|s| !received.contains(s))
            .copied()
            .collect();
        report.lost_count = lost.len() as u64;
        report.lost = lost.into_iter().take(20).collect();
        report.delivered = report.accepted - report.lost_count;

        let seq_of_code: BTreeMap<&str, u64> = first
            .iter()
            .filter_map(|((_, seq), v)| Some((v["data"]["code"].as_str()?, *seq)))
            .collect();
        for input in inputs {
            let committed = seq_of_code
                .get(input.code.as_str())
                .and_then(|seq| Commit::holding(commits, *seq));
            match committed {
                Some(c) => {
                    let window =
                        c.at.duration_since(input.sent)
                            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                    report.max_window_ms =
                        Some(report.max_window_ms.map_or(window, |w: f64| w.max(window)));
                }
                None if report.undelivered_inputs.len() < 20 => {
                    report.undelivered_inputs.push(input.code.clone());
                }
                None => {}
            }
        }
        report
    }
}

/// Write `codes` as scans (CR LF framed, 50 per write), recording when each
/// was sent: the inputs [`Ledger::check`] measures acceptance windows with.
pub async fn scan_all(
    pty: &linegate::devices::pty::VirtualSerial,
    codes: &[String],
    inputs: &mut Vec<Input>,
) {
    for chunk in codes.chunks(50) {
        let sent = SystemTime::now();
        let bytes: Vec<u8> = chunk
            .iter()
            .flat_map(|c| format!("{c}\r\n").into_bytes())
            .collect();
        pty.write(&bytes).await.unwrap();
        inputs.extend(chunk.iter().map(|c| Input {
            code: c.clone(),
            sent,
        }));
    }
}

/// Scans streaming in, `per_tick` every 50 ms (10 → 200 a second), until
/// `stop` (or an hour at most): the load a fault test injects its faults
/// under. Codes are `C-0000000`, `C-0000001`, … Returns every input with
/// its send time, for [`Ledger::check`].
pub async fn stream_scans(
    pty: std::sync::Arc<linegate::devices::pty::VirtualSerial>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    per_tick: u64,
) -> Vec<Input> {
    let mut inputs = Vec::new();
    let mut n = 0u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    let ticks = 20 * 60 * 60;
    for _ in 0..ticks {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tick.tick().await;
        let codes: Vec<String> = (n..n + per_tick).map(|i| format!("C-{i:07}")).collect();
        n += per_tick;
        scan_all(&pty, &codes, &mut inputs).await;
    }
    inputs
}

/// Wait until the last record `gw` logged as committed has reached `rec`,
/// then check the ledger (the end of every fault test).
pub async fn settle_and_check(
    gw: &super::Gateway,
    rec: &super::Recorder,
    inputs: &[Input],
) -> Report {
    let last = gw.last_committed();
    rec.wait_for("the last committed record", |m| {
        m.iter().any(|m| m.json()["seq"].as_u64() == Some(last))
    })
    .await;
    Ledger::check(&gw.commits(), &rec.snapshot(), inputs)
}

/// Faults a test injected, for its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    pub sigkills: u64,
    pub power_cuts: u64,
    pub connection_faults: u64,
    pub disk_faults: u64,
}

impl Report {
    /// For a test whose gateway ran throughout: every scan it wrote was
    /// accepted and delivered (none lost in an acceptance window).
    pub fn assert_every_input_delivered(&self) {
        assert!(
            self.undelivered_inputs.is_empty(),
            "{self}; inputs never delivered: {:?}",
            self.undelivered_inputs
        );
    }

    /// Print the one-line summary `.ci/faults` adds up:
    /// `ledger-summary test=<name> sigkills=… power_cuts=… connection_faults=…
    /// disk_faults=… accepted=… lost=… reported_lost=0 duplicates=…
    /// max_window_ms=…`. Run the tests with `--nocapture` to see them.
    pub fn summary(&self, test: &str, faults: Faults) {
        self.summary_with_reported(test, faults, 0);
    }

    /// [`Report::summary`] for a test whose fault costs records on purpose
    /// and has the gateway report them: dropped by `when_full =
    /// "drop-oldest"`, or destroyed with a damaged store file. `reported` of
    /// the lost records are counted apart (`reported_lost`); `lost` is what
    /// remains, which must be 0.
    pub fn summary_with_reported(&self, test: &str, faults: Faults, reported: u64) {
        eprintln!(
            "ledger-summary test={test} sigkills={} power_cuts={} connection_faults={} \
             disk_faults={} accepted={} lost={} reported_lost={reported} duplicates={} \
             max_window_ms={}",
            faults.sigkills,
            faults.power_cuts,
            faults.connection_faults,
            faults.disk_faults,
            self.accepted,
            self.lost_count.saturating_sub(reported),
            self.duplicates,
            self.max_window_ms
                .map_or("n/a".to_owned(), |w| format!("{w:.1}")),
        );
    }
}

/// How many cycles a fault loop runs: `ci` normally, `soak` when the
/// environment has `LINEGATE_SOAK=1` (`bash .ci/soak`, the release check).
pub fn cycles(ci: u64, soak: u64) -> u64 {
    if std::env::var("LINEGATE_SOAK").is_ok_and(|v| v == "1") {
        soak
    } else {
        ci
    }
}
