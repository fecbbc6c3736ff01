//! One conformance suite for every engine behind [`Store`]: each test below
//! is a generic function, instantiated once per engine by `conformance!`.
//! Engine-specific behaviour (what a crash does to unsynced acks, damaged
//! files) is tested at the end.

use std::path::Path;

use super::redb::FILE_NAME as REDB_FILE;
use super::*;
use crate::config::StoreEngine;
use crate::record::{Body, Record};

/// What the suite needs from an engine beyond [`Store`].
pub(super) trait Engine: Store + Sized {
    const ENGINE: StoreEngine;
    fn open_in(dir: &Path) -> Result<Self, StoreError>;
    /// Write an entry's bytes as they are, bypassing the codec.
    fn put_raw(&self, seq: u64, bytes: &[u8]);
}

impl Engine for SledStore {
    const ENGINE: StoreEngine = StoreEngine::Sled;
    fn open_in(dir: &Path) -> Result<Self, StoreError> {
        SledStore::open(dir, 1 << 20)
    }
    fn put_raw(&self, seq: u64, bytes: &[u8]) {
        SledStore::put_raw(self, seq, bytes).unwrap();
    }
}

impl Engine for RedbStore {
    const ENGINE: StoreEngine = StoreEngine::Redb;
    fn open_in(dir: &Path) -> Result<Self, StoreError> {
        RedbStore::open(dir, 1 << 20)
    }
    fn put_raw(&self, seq: u64, bytes: &[u8]) {
        RedbStore::put_raw(self, seq, bytes).unwrap();
    }
}

fn rec(i: u8) -> Record {
    Record {
        seq: 0,
        ts_ms: 1000 + u64::from(i),
        clock_synced: false,
        station: Some("st".into()),
        device: None,
        lot: None,
        order: None,
        operator: None,
        body: Body::Scan {
            raw: vec![i],
            gs1: None,
        },
    }
}

pub(super) fn records(range: std::ops::RangeInclusive<u8>) -> Batch {
    Batch {
        records: range.map(rec).collect(),
        ..Batch::default()
    }
}

fn state(entries: &[(&str, Option<&[u8]>)]) -> Batch {
    Batch {
        drop: vec![],
        records: vec![],
        state: entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

fn seqs(v: &[Record]) -> Vec<u64> {
    v.iter().map(|r| r.seq).collect()
}

fn open<E: Engine>(dir: &Path) -> E {
    E::open_in(dir).unwrap()
}

fn all<E: Engine>(store: &E) -> Vec<Record> {
    store.read_range(0, u64::MAX, usize::MAX).unwrap()
}

fn encoded_len(r: &Record) -> u64 {
    codec::encode(r).unwrap().len() as u64
}

// ------------------------------------------------------------ the suite

fn assigns_gap_free_seqs_and_reads_in_order<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    assert_eq!(store.stats(), StoreStats::default(), "a new store is empty");
    let a = store.commit(records(1..=2)).unwrap();
    let b = store.commit(records(3..=3)).unwrap();
    let committed: Vec<u64> = a.iter().chain(&b).map(|r| r.seq).collect();
    assert_eq!(committed, [1, 2, 3]);
    let read = all(&store);
    assert_eq!(seqs(&read), [1, 2, 3]);
    assert_eq!(read, [a, b].concat(), "read back exactly as committed");
    let stats = store.stats();
    assert_eq!(
        (stats.depth, stats.last_seq, stats.oldest_ts_ms),
        (3, 3, Some(1001))
    );
    assert_eq!(stats.bytes, read.iter().map(encoded_len).sum::<u64>());
}

fn seqs_are_never_reused_across_reopen<E: Engine>(dir: &Path) {
    {
        let store = open::<E>(dir);
        store.commit(records(1..=2)).unwrap();
        store.ack(1).unwrap();
        store.ack(2).unwrap();
        assert_eq!((store.stats().depth, store.stats().bytes), (0, 0));
        store.close().unwrap();
    }
    {
        let store = open::<E>(dir);
        assert_eq!(store.stats().depth, 0);
        assert_eq!(store.stats().last_seq, 2);
        let next = store.commit(records(3..=3)).unwrap();
        assert_eq!(next[0].seq, 3, "seq continues after every record was acked");
        // No close: dropped as after a crash (the commit itself is durable).
    }
    let store = open::<E>(dir);
    let next = store.commit(records(4..=5)).unwrap();
    assert_eq!(seqs(&next), [4, 5]);
    assert_eq!(store.stats().last_seq, 5);
}

fn an_empty_commit_assigns_nothing<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    store.commit(records(1..=1)).unwrap();
    assert!(store.commit(Batch::default()).unwrap().is_empty());
    store
        .commit(state(&[("ctx/st", Some(b"{}".as_slice()))]))
        .unwrap();
    assert_eq!(store.commit(records(2..=2)).unwrap()[0].seq, 2);
}

fn read_range_respects_its_bounds_and_max<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    store.commit(records(1..=5)).unwrap();
    let read = |after, until, max| seqs(&store.read_range(after, until, max).unwrap());
    assert_eq!(
        read(1, 3, 10),
        [2, 3],
        "after is exclusive, until inclusive"
    );
    assert_eq!(read(3, 3, 10), Vec::<u64>::new());
    assert_eq!(read(4, 3, 10), Vec::<u64>::new());
    assert_eq!(read(0, 5, 2), [1, 2]);
    assert_eq!(read(0, 5, 0), Vec::<u64>::new());
    assert_eq!(read(1, u64::MAX, 1), [2]);
    assert_eq!(read(5, u64::MAX, 10), Vec::<u64>::new());
    assert_eq!(read(0, 100, 100), [1, 2, 3, 4, 5]);
}

fn acked_records_are_never_read_again<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    store.commit(records(1..=5)).unwrap();
    store.ack(2).unwrap();
    store.ack(1).unwrap();
    assert_eq!(seqs(&all(&store)), [3, 4, 5]);
    assert_eq!(seqs(&store.read_range(0, 5, 1).unwrap()), [3]);
    let stats = store.stats();
    assert_eq!((stats.depth, stats.oldest_ts_ms), (3, Some(1003)));
    store.ack(4).unwrap();
    assert_eq!(seqs(&all(&store)), [3, 5]);
    // Acks ride along with (or are made durable by) the next commit.
    store.commit(records(6..=6)).unwrap();
    assert_eq!(seqs(&all(&store)), [3, 5, 6]);
    store.close().unwrap();
    drop(store);
    let store = open::<E>(dir);
    assert_eq!(seqs(&all(&store)), [3, 5, 6], "acks survive a restart");
    let stats = store.stats();
    assert_eq!((stats.depth, stats.oldest_ts_ms), (3, Some(1003)));
}

/// A store dropped and opened again at once, as `ReopenableStore::reopen`
/// does after a full disk: the engine's lock must be free by the time the
/// drop returns, however loaded the machine. (sled let go of it only when
/// its I/O thread had finished the jobs the store left it, which on a busy
/// machine could be a while after the drop.)
fn a_dropped_store_can_be_opened_again_at_once<E: Engine>(dir: &Path) {
    const ROUNDS: u64 = 150;
    // Other threads keep every core busy, so the engine's background
    // threads are descheduled as on the loaded machine where this was seen.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy: Vec<_> = (0..cores * 2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut failed = None;
    for round in 0..ROUNDS {
        let store = match E::open_in(dir) {
            Ok(store) => store,
            Err(err) => {
                failed = Some(format!("round {round}: {err}"));
                break;
            }
        };
        store.commit(records(1..=1)).unwrap();
        store.ack(round + 1).unwrap();
        drop(store);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    assert_eq!(failed, None, "the store could not be opened again at once");
    assert_eq!(open::<E>(dir).stats().last_seq, ROUNDS);
}

fn ack_is_idempotent_and_ignores_unknown_seqs<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    let committed = store.commit(records(1..=2)).unwrap();
    store.ack(1).unwrap();
    store.ack(1).unwrap();
    store.ack(0).unwrap();
    store.ack(99).unwrap();
    let stats = store.stats();
    assert_eq!((stats.depth, stats.bytes), (1, encoded_len(&committed[1])));
    store.sync().unwrap();
    store.ack(1).unwrap();
    assert_eq!(store.stats().depth, 1);
    assert_eq!(seqs(&all(&store)), [2]);
}

fn acks_are_durable_after_sync_acks<E: Engine>(dir: &Path) {
    {
        let store = open::<E>(dir);
        assert!(!store.sync_acks().unwrap(), "nothing acked yet");
        store.commit(records(1..=4)).unwrap();
        assert!(!store.sync_acks().unwrap(), "commits need no ack sync");
        store.ack(1).unwrap();
        store.ack(2).unwrap();
        assert!(store.sync_acks().unwrap());
        assert!(!store.sync_acks().unwrap(), "cheap and false when clean");
        store.ack(3).unwrap();
        // Dropped without sync or close, as after a crash: ack 3 is not
        // durable yet and may come back.
    }
    let store = open::<E>(dir);
    let left = all(&store);
    let left = seqs(&left);
    assert!(
        left == [3, 4] || left == [4],
        "synced acks never come back; the unsynced one may: {left:?}"
    );
    assert_eq!(store.stats().depth, left.len() as u64);
}

fn an_unsynced_ack_lost_in_a_crash_resends_the_same_record<E: Engine>(dir: &Path) {
    let committed = {
        let store = open::<E>(dir);
        let committed = store.commit(records(1..=2)).unwrap();
        store.ack(1).unwrap();
        committed
    };
    let store = open::<E>(dir);
    let read = all(&store);
    // Whatever survived is exactly what was committed, under the same seq.
    for r in &read {
        assert_eq!(r, &committed[(r.seq - 1) as usize]);
    }
    assert!(seqs(&read).contains(&2));
    assert_eq!(store.commit(records(3..=3)).unwrap()[0].seq, 3);
}

fn set_aside_removes_from_the_queue_and_counts<E: Engine>(dir: &Path) {
    {
        let store = open::<E>(dir);
        let committed = store.commit(records(1..=3)).unwrap();
        store.set_aside(1).unwrap();
        store.set_aside(1).unwrap();
        store.set_aside(42).unwrap();
        let stats = store.stats();
        assert_eq!(
            (stats.depth, stats.corrupt, stats.oldest_ts_ms),
            (2, 1, Some(1002))
        );
        assert_eq!(
            stats.bytes,
            encoded_len(&committed[1]) + encoded_len(&committed[2])
        );
        assert_eq!(seqs(&all(&store)), [2, 3]);
        store.ack(1).unwrap();
        assert_eq!(store.stats().depth, 2, "a set-aside record cannot be acked");
        store.close().unwrap();
    }
    let store = open::<E>(dir);
    let stats = store.stats();
    assert_eq!(
        (stats.depth, stats.corrupt),
        (2, 1),
        "counted after restart"
    );
    assert_eq!(seqs(&all(&store)), [2, 3]);
}

fn undecodable_entries_are_set_aside_and_counted<E: Engine>(dir: &Path) {
    {
        let store = open::<E>(dir);
        store.commit(records(1..=3)).unwrap();
        store.put_raw(2, b"\x01{not json");
        let read = all(&store);
        assert_eq!(seqs(&read), [1, 3]);
        let stats = store.stats();
        assert_eq!((stats.depth, stats.corrupt), (2, 1));
        assert_eq!(seqs(&all(&store)), [1, 3], "not returned on a second read");
        store.close().unwrap();
    }
    let store = open::<E>(dir);
    let stats = store.stats();
    assert_eq!((stats.depth, stats.corrupt), (2, 1));
    assert_eq!(seqs(&all(&store)), [1, 3]);
}

fn damaged_entries_do_not_hide_the_records_after_them<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    store.commit(records(1..=5)).unwrap();
    store.put_raw(1, b"");
    store.put_raw(2, b"\x09future format");
    store.put_raw(3, b"\x01[");
    // The uplink reads a small window; an empty answer means "nothing left".
    assert_eq!(seqs(&store.read_range(0, 5, 1).unwrap()), [4]);
    assert_eq!(store.stats().corrupt, 3);
    assert_eq!(store.stats().oldest_ts_ms, Some(1004));
    assert_eq!(seqs(&store.read_range(0, 5, 10).unwrap()), [4, 5]);
}

fn state_upserts_deletes_and_scans_by_prefix<E: Engine>(dir: &Path) {
    {
        let store = open::<E>(dir);
        store
            .commit(Batch {
                records: vec![rec(1)],
                state: vec![("ctx/st".into(), Some(b"{}".to_vec()))],
                drop: vec![],
            })
            .unwrap();
        assert_eq!(store.state("ctx/st").unwrap().as_deref(), Some(&b"{}"[..]));
        store
            .commit(state(&[("ctx/st", Some(b"{\"lot\":1}".as_slice()))]))
            .unwrap();
        assert_eq!(
            store.state("ctx/st").unwrap().as_deref(),
            Some(&b"{\"lot\":1}"[..])
        );
        store.commit(state(&[("ctx/st", None)])).unwrap();
        assert_eq!(store.state("ctx/st").unwrap(), None);
        store.commit(state(&[("never", None)])).unwrap();
        store
            .commit(state(&[
                ("ser/st/B", Some(b"2".as_slice())),
                ("ser/st/A", Some(b"1".as_slice())),
                ("ser/st2/C", Some(b"3".as_slice())),
                ("ser/st", Some(b"0".as_slice())),
                ("set", Some(b"4".as_slice())),
                ("ser/st/\u{e9}", Some(b"5".as_slice())),
                ("ser/st/A", None),
                ("ser/st/A", Some(b"1b".as_slice())),
            ]))
            .unwrap();
        store.close().unwrap();
    }
    let store = open::<E>(dir);
    let expected = vec![
        ("ser/st/A".to_owned(), b"1b".to_vec()),
        ("ser/st/B".to_owned(), b"2".to_vec()),
        ("ser/st/\u{e9}".to_owned(), b"5".to_vec()),
    ];
    assert_eq!(
        store.state_prefix("ser/st/").unwrap(),
        expected,
        "key order; later writes in a batch win; survives restart"
    );
    assert_eq!(store.state_prefix("ser/st").unwrap().len(), 5);
    assert_eq!(store.state_prefix("zzz").unwrap(), vec![]);
    assert_eq!(store.state_prefix("").unwrap().len(), 6);
    assert_eq!(store.state("ctx/st").unwrap(), None);
    assert_eq!(seqs(&all(&store)), [1], "state writes take no seq");
}

fn stats_are_the_same_after_reopen<E: Engine>(dir: &Path) {
    let before = {
        let store = open::<E>(dir);
        store.commit(records(1..=6)).unwrap();
        store.ack(1).unwrap();
        store.set_aside(2).unwrap();
        store.put_raw(4, b"\x01garbage");
        all(&store);
        store.ack(3).unwrap();
        let stats = store.stats();
        store.close().unwrap();
        stats
    };
    assert_eq!((before.depth, before.corrupt, before.last_seq), (2, 2, 6));
    assert_eq!(before.oldest_ts_ms, Some(1005));
    let store = open::<E>(dir);
    let after = store.stats();
    // `put_raw` bypassed the counters, so the bytes before are off by the
    // damaged entry; after the reopen scan they are exact.
    assert_eq!(
        StoreStats { bytes: 0, ..after },
        StoreStats { bytes: 0, ..before }
    );
    assert_eq!(
        after.bytes,
        all(&store).iter().map(encoded_len).sum::<u64>()
    );
}

fn a_second_open_of_the_same_dir_fails<E: Engine>(dir: &Path) {
    let first = open::<E>(dir);
    first.commit(records(1..=1)).unwrap();
    assert!(
        E::open_in(dir).is_err(),
        "a second store on the same directory must not open"
    );
    assert_eq!(seqs(&all(&first)), [1], "the first is unharmed");
    first.close().unwrap();
    drop(first);
    let again = open::<E>(dir);
    assert_eq!(again.stats().last_seq, 1);
}

/// A batch is all or nothing, even when the process is killed during a
/// commit: a child process commits batches whose state entry `n` names the
/// batch's last seq, and is SIGKILLed at a random moment; after reopening,
/// `n` matches the last record exactly. The commit also continues the seqs.
fn a_batch_is_atomic_across_sigkill<E: Engine>(dir: &Path, child_test: &str) {
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", child_test, "--ignored", "--test-threads=1"])
            .env(CRASH_CHILD_DIR, dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it open and commit for a while (recovery included after round 0).
        let ready = dir.join("committing");
        let started = std::time::Instant::now();
        while !ready.exists() {
            assert!(started.elapsed().as_secs() < 30, "child never committed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(20..200)));
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_file(&ready).unwrap();

        let store = open::<E>(dir);
        let stats = store.stats();
        let n = store
            .state("n")
            .unwrap()
            .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
            .unwrap_or(0);
        assert!(stats.last_seq > 0, "round {round}: nothing committed");
        assert_eq!(
            n, stats.last_seq,
            "round {round}: state and records disagree"
        );
        let read = all(&store);
        assert_eq!(seqs(&read), (1..=n).collect::<Vec<_>>(), "round {round}");
        assert_eq!(stats.depth, n);
        let next = store.commit(records(1..=1)).unwrap();
        assert_eq!(next[0].seq, n + 1);
        store.close().unwrap();
    }
}

// ------------------------------------------------------------ capacity

/// A store alarm of the kind drop-oldest keeps.
fn store_alarm() -> Record {
    Record {
        station: None,
        body: Body::Alarm {
            event: crate::record::AlarmEvent::RecordsDropped,
            message: Some("dropped".into()),
            store: Some(Box::default()),
        },
        ..rec(0)
    }
}

fn none() -> std::collections::BTreeSet<u64> {
    std::collections::BTreeSet::new()
}

fn usage_is_the_cheap_part_of_stats<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    assert_eq!(store.usage(), Usage::default());
    store.commit(records(1..=4)).unwrap();
    store.ack(2).unwrap();
    let (u, s) = (store.usage(), store.stats());
    assert_eq!(
        (u.depth, u.bytes, u.last_seq),
        (s.depth, s.bytes, s.last_seq)
    );
    assert_eq!((u.depth, u.last_seq), (3, 4));
}

fn plan_drop_takes_the_oldest_and_keeps_store_alarms<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    let mut batch = records(1..=6);
    batch.records[1] = store_alarm();
    let committed = store.commit(batch).unwrap();
    let len = |seq: u64| encoded_len(&committed[(seq - 1) as usize]);
    store.ack(1).unwrap();
    // One byte: one record, the oldest unacknowledged that is not kept.
    let plan = store.plan_drop(1, &none()).unwrap();
    assert_eq!(plan.seqs, [3]);
    assert_eq!(plan.bytes, len(3));
    let plan = store.plan_drop(len(3) + 1, &none()).unwrap();
    assert_eq!(plan.seqs, [3, 4]);
    assert_eq!((plan.first(), plan.last()), (Some(3), Some(4)));
    // More than the others hold: the kept alarm goes last, seqs in order.
    let plan = store.plan_drop(u64::MAX, &none()).unwrap();
    assert_eq!(plan.seqs, [2, 3, 4, 5, 6]);
    assert_eq!(plan.bytes, store.stats().bytes);
    assert_eq!(plan.bytes, (2..=6).map(len).sum::<u64>());
    assert_eq!(
        seqs(&all(&store)),
        [2, 3, 4, 5, 6],
        "planning writes nothing"
    );
    // Records out for delivery are never picked.
    let out: std::collections::BTreeSet<u64> = [3, 5].into();
    let plan = store.plan_drop(len(4) + len(6), &out).unwrap();
    assert_eq!(plan.seqs, [4, 6]);
    assert_eq!(plan.sizes, [len(4), len(6)]);
    // And taken out of a plan made before they went out.
    let mut plan = store.plan_drop(u64::MAX, &none()).unwrap();
    plan.without(&out);
    assert_eq!(plan.seqs, [2, 4, 6]);
    assert_eq!(plan.bytes, len(2) + len(4) + len(6));
    assert_eq!(store.plan_drop(0, &none()).unwrap(), DropPlan::default());
}

fn a_commit_drops_the_oldest_atomically_with_its_records<E: Engine>(dir: &Path) {
    {
        let store = open::<E>(dir);
        store.commit(records(1..=10)).unwrap();
        let plan = store.plan_drop(1, &none()).unwrap();
        let plan = store.plan_drop(plan.bytes * 3, &none()).unwrap();
        assert_eq!(plan.seqs, [1, 2, 3]);
        let mut batch = records(11..=12);
        batch.drop = plan.seqs.clone();
        batch.drop.push(99); // never existed: skipped
        batch.state.push(("cap/state".into(), Some(b"{}".to_vec())));
        let added = store.commit(batch).unwrap();
        assert_eq!(seqs(&added), [11, 12], "seqs continue; drops take none");
        let left = all(&store);
        assert_eq!(seqs(&left), (4..=12).collect::<Vec<_>>());
        let stats = store.stats();
        assert_eq!((stats.depth, stats.last_seq), (9, 12));
        assert_eq!(stats.bytes, left.iter().map(encoded_len).sum::<u64>());
        assert_eq!(stats.oldest_ts_ms, Some(1004));
        // Dropping everything empties the queue.
        let rest = store.plan_drop(u64::MAX, &none()).unwrap();
        store
            .commit(Batch {
                drop: rest.seqs,
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(store.stats().depth, 0);
        assert_eq!(store.stats().bytes, 0);
        assert_eq!(store.stats().oldest_ts_ms, None);
        store.commit(records(13..=13)).unwrap();
        // No close: the commits are durable on their own.
    }
    let store = open::<E>(dir);
    assert_eq!(seqs(&all(&store)), [13], "the drops survived a restart");
    assert_eq!(store.stats().last_seq, 13);
    assert_eq!(
        store.state("cap/state").unwrap().as_deref(),
        Some(&b"{}"[..])
    );
}

fn a_record_acked_between_plan_and_commit_is_counted_once<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    store.commit(records(1..=5)).unwrap();
    let plan = store.plan_drop(u64::MAX, &none()).unwrap();
    assert_eq!(plan.seqs, [1, 2, 3, 4, 5]);
    // The broker acknowledges two of them before the commit drops them.
    store.ack(2).unwrap();
    store.ack(4).unwrap();
    let mut batch = records(6..=6);
    batch.drop = plan.seqs;
    store.commit(batch).unwrap();
    store.ack(5).unwrap(); // already dropped: nothing happens
    let left = all(&store);
    assert_eq!(seqs(&left), [6]);
    let stats = store.stats();
    assert_eq!(stats.depth, 1);
    assert_eq!(stats.bytes, encoded_len(&left[0]));
    store.sync().unwrap();
    assert_eq!(store.stats().bytes, encoded_len(&left[0]));
}

fn acks_of_records_read_keep_the_figures_exact<E: Engine>(dir: &Path) {
    let store = open::<E>(dir);
    store.commit(records(1..=4)).unwrap();
    let read = all(&store);
    let len = |seq: u64| encoded_len(&read[seq as usize - 1]);
    let total = store.stats().bytes;
    // Read, then acknowledged (what the uplink does).
    store.ack(1).unwrap();
    store.ack(1).unwrap(); // a second PUBACK for it changes nothing
    assert_eq!(store.stats().bytes, total - len(1));
    // Read, then dropped by drop-oldest, then acknowledged: counted once.
    let dropping = Batch {
        drop: vec![2],
        ..Batch::default()
    };
    store.commit(dropping).unwrap();
    store.ack(2).unwrap();
    assert_eq!(store.stats().bytes, total - len(1) - len(2));
    // Not read by this process (e.g. a stale PUBACK after a restart).
    store.close().unwrap();
    drop(store);
    let store = open::<E>(dir);
    store.ack(3).unwrap();
    let stats = store.stats();
    assert_eq!((stats.depth, stats.bytes), (1, len(4)));
}

/// The wrapper the gateway runs on: a reopen in place is a restart without
/// the process ending.
fn a_reopen_in_place_keeps_everything_committed<E: Engine>(dir: &Path) {
    let cfg = store_cfg(E::ENGINE);
    let store = ReopenableStore::open(&cfg, dir).unwrap();
    let epoch = store.epoch();
    assert!(epoch.is_some());
    // Seq 1 is the new store's store-created alarm.
    store.commit(records(2..=6)).unwrap();
    store.ack(1).unwrap();
    store.ack(2).unwrap();
    store.sync().unwrap();
    store.ack(3).unwrap(); // not synced: may come back
    let before = store.stats();
    store.reopen().unwrap();
    let left = seqs(&store.read_range(0, u64::MAX, usize::MAX).unwrap());
    assert!(left == [3, 4, 5, 6] || left == [4, 5, 6], "{left:?}");
    assert_eq!(store.stats().last_seq, before.last_seq);
    assert_eq!(store.commit(records(7..=7)).unwrap()[0].seq, 7);
    assert!(!store.disk_full_seen());
    // Twice in a row, and the engine's lock is released each time.
    store.reopen().unwrap();
    store.reopen().unwrap();
    assert_eq!(store.usage().last_seq, 7);
    assert_eq!(store.epoch(), epoch, "the same store, the same epoch");
    assert_eq!(store.stats().epoch, epoch);
    // A reopen that finds another store in the data directory's place
    // refuses it: the gateway stops instead of going on as if it were
    // the same.
    let away = dir.with_extension("away");
    std::fs::rename(dir, &away).unwrap();
    std::fs::create_dir(dir).unwrap();
    let err = store.reopen().expect_err("another store");
    assert!(matches!(err, StoreError::Lost { .. }), "{err}");
    store.close().unwrap();
    drop(store);
    std::fs::remove_dir_all(&away).unwrap();
}

fn store_cfg(engine: StoreEngine) -> StoreConfig {
    StoreConfig {
        engine: Some(engine),
        commit_interval: std::time::Duration::from_millis(10),
        commit_max_records: 256,
        cache_bytes: 1 << 20,
        max_bytes: 1 << 30,
        when_full: crate::config::WhenFull::Refuse,
        min_disk_free: 0,
    }
}

/// A commit refused for lack of space fails with a disk-full error on both
/// engines (directly, or as the engine's memory of it); the store reopens in
/// place once there is room, with every committed record, and the failed
/// batch either whole or absent.
fn a_full_disk_fails_commits_and_a_reopen_recovers<E: Engine>(_dir: &Path) {
    let fs = powercut_fs::Tmpfs::mount("4m");
    let dir = fs.path().join("store");
    let store = ReopenableStore::open(&store_cfg(E::ENGINE), &dir).unwrap();
    let big = |n: u64| Batch {
        records: (0..20)
            .map(|i| Record {
                body: Body::Scan {
                    raw: vec![b'x'; 2000 + (n as usize + i) % 7],
                    gs1: None,
                },
                ..rec(1)
            })
            .collect(),
        ..Batch::default()
    };
    store.commit(big(0)).unwrap();
    let filler = fs.fill("filler", 0);
    let mut committed = store.usage().last_seq;
    let mut failure = None;
    for n in 1..2000 {
        match store.commit(big(n)) {
            Ok(r) => committed = r.last().unwrap().seq,
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let err = failure.expect("a full disk refused no commit");
    assert!(
        err.is_disk_full() || (store.disk_full_seen() && err.is_previous_io()),
        "not reported as a full disk: {err:?}"
    );
    assert!(store.disk_full_seen());
    // The engine is not written again: closed, and opened when there is room.
    let early = store.reopen();
    eprintln!(
        "{}: commit on a full disk: {err}; reopen while still full: {early:?}",
        E::ENGINE.name()
    );
    if let Err(err) = &early {
        assert!(err.is_disk_full(), "{err:?}");
        assert!(matches!(store.commit(big(0)), Err(StoreError::Unavailable)));
        // The last figures seen (with the failed batch's seqs, which are
        // never handed out twice by this engine instance).
        assert!(store.stats().last_seq >= committed);
    }
    std::fs::remove_file(&filler).unwrap();
    store.reopen().unwrap();
    let read = store.read_range(0, u64::MAX, usize::MAX).unwrap();
    let last = store.usage().last_seq;
    assert!(
        last == committed || last == committed + 20,
        "the failed batch is whole or absent: committed {committed}, found {last}"
    );
    assert_eq!(seqs(&read), (1..=last).collect::<Vec<_>>());
    let next = store.commit(big(0)).unwrap();
    assert_eq!(next[0].seq, last + 1);
    store.close().unwrap();
}

const CRASH_CHILD_DIR: &str = "LINEGATE_STORE_CRASH_CHILD_DIR";

/// The child of [`a_batch_is_atomic_across_sigkill`]: commit until killed.
fn commit_until_killed<E: Engine>() {
    let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = open::<E>(dir);
    let mut size = 1u8;
    loop {
        let mut batch = records(1..=size);
        let last = store.stats().last_seq + u64::from(size);
        batch
            .state
            .push(("n".into(), Some(last.to_be_bytes().to_vec())));
        batch
            .state
            .push((format!("blob/{}", last % 7), Some(vec![size; 3000])));
        let committed = store.commit(batch).unwrap();
        assert_eq!(committed.last().unwrap().seq, last);
        if last == u64::from(size) || !dir.join("committing").exists() {
            std::fs::write(dir.join("committing"), b"").unwrap();
        }
        size = size % 50 + 1;
    }
}

macro_rules! conformance {
    ($engine:ident, $ty:ty, [$($name:ident),* $(,)?]) => {
        mod $engine {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name::<$ty>(dir.path());
                }
            )*

            #[test]
            fn a_batch_is_atomic_across_sigkill() {
                let dir = tempfile::tempdir().unwrap();
                let path = module_path!().split_once("::").unwrap().1;
                super::a_batch_is_atomic_across_sigkill::<$ty>(
                    dir.path(),
                    &format!("{path}::commit_until_killed"),
                );
            }

            /// Not a test: the child process of `a_batch_is_atomic_across_sigkill`.
            #[test]
            #[ignore]
            fn commit_until_killed() {
                super::commit_until_killed::<$ty>();
            }
        }
    };
}

macro_rules! suite {
    ($($engine:ident: $ty:ty),*) => {$(
        conformance!($engine, $ty, [
            assigns_gap_free_seqs_and_reads_in_order,
            seqs_are_never_reused_across_reopen,
            an_empty_commit_assigns_nothing,
            read_range_respects_its_bounds_and_max,
            acked_records_are_never_read_again,
            a_dropped_store_can_be_opened_again_at_once,
            ack_is_idempotent_and_ignores_unknown_seqs,
            acks_are_durable_after_sync_acks,
            an_unsynced_ack_lost_in_a_crash_resends_the_same_record,
            set_aside_removes_from_the_queue_and_counts,
            undecodable_entries_are_set_aside_and_counted,
            damaged_entries_do_not_hide_the_records_after_them,
            state_upserts_deletes_and_scans_by_prefix,
            stats_are_the_same_after_reopen,
            a_second_open_of_the_same_dir_fails,
            usage_is_the_cheap_part_of_stats,
            plan_drop_takes_the_oldest_and_keeps_store_alarms,
            a_commit_drops_the_oldest_atomically_with_its_records,
            a_record_acked_between_plan_and_commit_is_counted_once,
            acks_of_records_read_keep_the_figures_exact,
            a_reopen_in_place_keeps_everything_committed,
            a_full_disk_fails_commits_and_a_reopen_recovers,
        ]);
    )*};
}

suite!(sled: SledStore, redb: RedbStore);

// ------------------------------------------------------------ both engines

#[test]
fn an_engine_refuses_the_other_engines_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("a");
    let redb_dir = dir.path().join("b");
    open::<SledStore>(&sled_dir).close().unwrap();
    open::<RedbStore>(&redb_dir).close().unwrap();
    let err = RedbStore::open_in(&sled_dir).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::OtherEngine {
                found: "sled",
                configured: "redb",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("holds a sled store"), "{err}");
    let err = SledStore::open_in(&redb_dir).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::OtherEngine {
                found: "redb",
                configured: "sled",
                ..
            }
        ),
        "{err}"
    );
    // Nothing was created next to the other engine's files.
    assert!(!sled_dir.join(REDB_FILE).exists());
    assert!(!redb_dir.join("conf").exists());
}

// ------------------------------------------------------------ redb only

mod redb_only {
    use super::*;

    /// The ack strategy: acks are marks in memory until the next write
    /// transaction. Without one, a crash brings the record back.
    #[test]
    fn acks_wait_in_memory_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open::<RedbStore>(dir.path());
            store.commit(records(1..=3)).unwrap();
            store.ack(1).unwrap();
            assert_eq!(seqs(&all(&store)), [2, 3]);
        }
        {
            let store = open::<RedbStore>(dir.path());
            assert_eq!(seqs(&all(&store)), [1, 2, 3], "the unwritten ack is lost");
            store.ack(1).unwrap();
            store.commit(records(4..=4)).unwrap();
        }
        let store = open::<RedbStore>(dir.path());
        assert_eq!(
            seqs(&all(&store)),
            [2, 3, 4],
            "the ack rode along with the commit"
        );
    }

    /// Acking many records costs no write until the next sync.
    #[test]
    fn thousands_of_acks_are_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open::<RedbStore>(dir.path());
        for _ in 0..20 {
            store.commit(records(1..=250)).unwrap();
        }
        let file = dir.path().join(REDB_FILE);
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        let started = std::time::Instant::now();
        for seq in 1..=5000 {
            store.ack(seq).unwrap();
        }
        let acking = started.elapsed();
        assert_eq!(store.stats().depth, 0);
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            before
        );
        assert!(store.sync_acks().unwrap());
        drop(store);
        let store = open::<RedbStore>(dir.path());
        assert_eq!(store.stats().depth, 0);
        // Generous bound (debug build, shared CI): far below one fsync each.
        assert!(acking.as_secs() < 5, "5000 acks took {acking:?}");
    }

    /// The engine itself still refuses a file that is not a database with
    /// a typed error (which `store::open` then takes for damage).
    #[test]
    fn a_file_that_is_not_a_database_is_refused_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REDB_FILE), vec![0xA5u8; 20_000]).unwrap();
        let err = RedbStore::open_in(dir.path()).err().expect("must not open");
        assert!(super::super::salvage::is_damage(&err), "{err}");
    }
}

// ------------------------------------------------------------ damaged stores (both engines)

/// Damaged store files, on both engines, through `store::open`'s path (the
/// seq floor and the salvage): the open always succeeds, what was intact
/// comes back under its own seq, the damage is reported, new seqs continue
/// above everything handed out before, and the next open is clean.
mod salvage_suite {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::floor;
    use super::super::salvage::{self, Report};
    use super::*;
    use crate::config::StoreEngine;
    use crate::record::AlarmEvent;

    /// The floor's block in these tests (small, so the fill crosses it).
    const BLOCK: u64 = 1000;

    fn open_data(engine: StoreEngine, data: &Path) -> (Arc<dyn Store>, Option<Report>) {
        salvage::open_reporting(Some(engine), 1 << 20, data, Some(BLOCK))
            .unwrap_or_else(|e| panic!("the open must succeed: {e}"))
    }

    fn store_dir(data: &Path) -> std::path::PathBuf {
        data.join(STORE_DIR)
    }

    fn main_file(engine: StoreEngine, data: &Path) -> std::path::PathBuf {
        store_dir(data).join(match engine {
            StoreEngine::Sled => "db",
            StoreEngine::Redb => REDB_FILE,
        })
    }

    /// Everything ever committed by [`fill`], by seq, and the state at the end.
    struct Good {
        committed: BTreeMap<u64, Record>,
        state: BTreeMap<String, Vec<u8>>,
        /// The floor's reserved mark after the fill.
        reserved: u64,
    }

    /// 1000 records in 40 commits with station state (a context per commit,
    /// lot state rewritten by every commit), 300 acked, closed cleanly.
    fn fill(engine: StoreEngine, data: &Path, commits: u64, per_commit: u8) -> Good {
        let (store, report) = open_data(engine, data);
        assert!(report.is_none(), "a new store is not damaged");
        // The store-created alarm of the new store, at seq 1.
        let mut committed: BTreeMap<u64, Record> =
            all_of(&*store).into_iter().map(|r| (r.seq, r)).collect();
        assert_eq!(committed.keys().copied().collect::<Vec<_>>(), [1]);
        for i in 0..commits {
            let batch = Batch {
                drop: vec![],
                records: (0..per_commit).map(|j| rec(j ^ (i as u8))).collect(),
                state: vec![
                    (format!("ctx/s{}", i % 40), Some(vec![i as u8; 100])),
                    ("lot/st".into(), Some(format!("{{\"n\":{i}}}").into_bytes())),
                ],
            };
            for r in store.commit(batch).unwrap() {
                committed.insert(r.seq, r);
            }
        }
        let acked = committed.len() as u64 * 3 / 10;
        for seq in 1..=acked {
            store.ack(seq).unwrap();
        }
        store.close().unwrap();
        let state = store.state_prefix("").unwrap().into_iter().collect();
        drop(store);
        let text = std::fs::read_to_string(data.join(floor::FILE_NAME)).unwrap();
        let reserved = text
            .lines()
            .find_map(|l| l.strip_prefix("reserved "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            reserved >= committed.len() as u64,
            "the floor covers every seq"
        );
        Good {
            committed,
            state,
            reserved,
        }
    }

    /// What one damaged open gave.
    #[derive(Debug)]
    struct Outcome {
        records: usize,
        report: Option<Report>,
    }

    /// Open the damaged store and check every promise; returns the figures.
    fn check_open(engine: StoreEngine, data: &Path, good: &Good, what: &str) -> Outcome {
        let highest_before = good.committed.keys().max().copied().unwrap_or(0);
        let (store, report) = open_data(engine, data);
        let read = all_of(&*store);
        let (alarms, records): (Vec<_>, Vec<_>) = read.into_iter().partition(|r| {
            matches!(
                r.body,
                Body::Alarm {
                    event: AlarmEvent::StoreDamaged,
                    ..
                }
            )
        });
        for r in &records {
            assert_eq!(
                Some(r),
                good.committed.get(&r.seq),
                "{what}: seq {} came back changed (or was never committed)",
                r.seq
            );
        }
        let state = store.state_prefix("").unwrap();
        for (k, v) in &state {
            if k.starts_with("lot/")
                && report
                    .as_ref()
                    .is_some_and(|r| !r.numbering_blocked.is_empty())
            {
                assert!(
                    v.starts_with(b"salvaged-unverified:"),
                    "{what}: {k} not marked"
                );
                continue;
            }
            assert_eq!(Some(v), good.state.get(k), "{what}: state {k} changed");
        }
        let unacked: Vec<u64> = good
            .committed
            .keys()
            .copied()
            .filter(|s| *s > good.committed.len() as u64 * 3 / 10)
            .collect();
        let complete = unacked.iter().all(|s| records.iter().any(|r| r.seq == *s))
            && state.len() == good.state.len();
        let stats = store.stats();
        match &report {
            None => {
                assert!(complete, "{what}: records or state lost without a report");
                assert!(alarms.is_empty(), "{what}");
                assert_eq!(
                    stats.last_seq, highest_before,
                    "{what}: no gap without damage"
                );
            }
            Some(report) => {
                assert_eq!(report.records as usize, records.len(), "{what}: {report:?}");
                assert_eq!(alarms.len(), 1, "{what}: one alarm");
                assert_eq!(alarms[0].seq, report.first_new, "{what}");
                assert!(alarms[0].station.is_none(), "a gateway-level record");
                assert!(
                    report.first_new > highest_before.max(good.reserved),
                    "{what}: seq continues above everything handed out: {report:?}"
                );
                assert_eq!(stats.last_seq, report.first_new, "{what}");
                let Body::Alarm { message, .. } = &alarms[0].body else {
                    unreachable!()
                };
                let message = message.as_deref().unwrap_or_default();
                assert!(
                    message.contains(&format!("{} records salvaged", report.records)),
                    "{what}: {message}"
                );
                if store_dir_existed(report) {
                    assert!(
                        report.moved_to.as_ref().is_some_and(|d| d.is_dir()),
                        "{what}: damaged copy kept: {report:?}"
                    );
                }
            }
        }
        // New commits continue above everything, and above the floor.
        let next = store.commit(records_batch(3)).unwrap();
        assert_eq!(next[0].seq, stats.last_seq + 1, "{what}");
        store.close().unwrap();
        let outcome = Outcome {
            records: records.len(),
            report,
        };
        drop(store);
        // A second open is clean, with the same content.
        let (again, second) = open_data(engine, data);
        assert!(second.is_none(), "{what}: a second salvage: {second:?}");
        assert_eq!(
            all_of(&*again).len(),
            outcome.records + alarms.len() + 3,
            "{what}"
        );
        assert_eq!(again.stats().last_seq, next[2].seq, "{what}");
        outcome
    }

    fn store_dir_existed(report: &Report) -> bool {
        !report.reason.contains("missing") || report.moved_to.is_some()
    }

    fn records_batch(n: u8) -> Batch {
        Batch {
            records: (0..n).map(rec).collect(),
            ..Batch::default()
        }
    }

    fn all_of(store: &dyn Store) -> Vec<Record> {
        store.read_range(0, u64::MAX, usize::MAX).unwrap()
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;

    /// Every damage class for `engine`, by name: what it does to a data dir.
    fn damages(engine: StoreEngine, seeds: u64) -> Vec<(String, Damage<'static>)> {
        let mut out: Vec<(String, Damage<'static>)> = Vec::new();
        for k in [1u64, 100, 1000, 4095, 4096, 5000, 65_536] {
            out.push((
                format!("tail truncated by {k} bytes"),
                Box::new(move |data: &Path| {
                    let file = main_file(engine, data);
                    let len = std::fs::metadata(&file).unwrap().len();
                    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                    f.set_len(len.saturating_sub(k)).unwrap();
                }),
            ));
        }
        out.push((
            "truncated to half".into(),
            Box::new(move |data: &Path| {
                let file = main_file(engine, data);
                let len = std::fs::metadata(&file).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                f.set_len(len / 2).unwrap();
            }),
        ));
        out.push((
            "last 4 KiB zeroed".into(),
            Box::new(move |data: &Path| {
                let file = main_file(engine, data);
                let mut b = std::fs::read(&file).unwrap();
                let from = b.len().saturating_sub(4096);
                b[from..].fill(0);
                std::fs::write(&file, b).unwrap();
            }),
        ));
        for seed in 0..seeds {
            out.push((
                format!("bits flipped (seed {seed})"),
                Box::new(move |data: &Path| {
                    let file = main_file(engine, data);
                    let mut b = std::fs::read(&file).unwrap();
                    let mut rng = fastrand::Rng::with_seed(seed);
                    // Half the rounds in the first 8 KiB (header, first pages).
                    let span = if seed % 2 == 0 {
                        8192.min(b.len())
                    } else {
                        b.len()
                    };
                    let at = rng.usize(0..span);
                    for i in 0..rng.usize(1..=8) {
                        if let Some(x) = b.get_mut(at + i * 7) {
                            *x ^= 1 << rng.u8(0..8);
                        }
                    }
                    std::fs::write(&file, b).unwrap();
                }),
            ));
        }
        out.push((
            "main file missing".into(),
            Box::new(move |data: &Path| std::fs::remove_file(main_file(engine, data)).unwrap()),
        ));
        out.push((
            "main file empty".into(),
            Box::new(move |data: &Path| std::fs::write(main_file(engine, data), b"").unwrap()),
        ));
        out.push((
            "store directory empty".into(),
            Box::new(|data: &Path| {
                std::fs::remove_dir_all(store_dir(data)).unwrap();
                std::fs::create_dir(store_dir(data)).unwrap();
            }),
        ));
        out.push((
            "store directory missing".into(),
            Box::new(|data: &Path| std::fs::remove_dir_all(store_dir(data)).unwrap()),
        ));
        if engine == StoreEngine::Sled {
            let each_snapshot = |f: fn(&Path)| {
                move |data: &Path| {
                    for e in std::fs::read_dir(store_dir(data)).unwrap() {
                        let e = e.unwrap();
                        if e.file_name().to_string_lossy().starts_with("snap.") {
                            f(&e.path());
                        }
                    }
                }
            };
            out.push((
                "sled conf missing".into(),
                Box::new(|data: &Path| std::fs::remove_file(store_dir(data).join("conf")).unwrap()),
            ));
            out.push((
                "sled conf flipped".into(),
                Box::new(|data: &Path| {
                    let path = store_dir(data).join("conf");
                    let mut b = std::fs::read(&path).unwrap();
                    b[3] ^= 0x10;
                    std::fs::write(&path, b).unwrap();
                }),
            ));
            out.push((
                "sled snapshot missing".into(),
                Box::new(each_snapshot(|p| std::fs::remove_file(p).unwrap())),
            ));
            out.push((
                "sled snapshot flipped".into(),
                Box::new(each_snapshot(|p| {
                    let mut b = std::fs::read(p).unwrap();
                    let mid = b.len() / 2;
                    b[mid] ^= 0x04;
                    std::fs::write(p, b).unwrap();
                })),
            ));
            out.push((
                "sled snapshot truncated".into(),
                Box::new(each_snapshot(|p| {
                    let b = std::fs::read(p).unwrap();
                    std::fs::write(p, &b[..b.len() / 2]).unwrap();
                })),
            ));
        }
        out
    }

    /// Every damage class on a store of 1000 records: the promises of
    /// [`check_open`] hold for each, and the figures are printed (run with
    /// `--nocapture`; docs/storage.md quotes them).
    pub(super) fn every_damage_class_is_survived(engine: StoreEngine) {
        let base = tempfile::tempdir().unwrap();
        let template = base.path().join("template");
        let good = fill(engine, &template, 40, 25);
        // A sled store writes its snapshot at the open after a clean stop.
        drop(open_data(engine, &template));
        let mut salvaged = 0;
        let mut full = 0;
        for (i, (what, damage)) in damages(engine, 30).into_iter().enumerate() {
            let data = base.path().join(format!("case{i}"));
            copy_tree(&template, &data);
            damage(&data);
            let out = check_open(engine, &data, &good, &what);
            let unacked = good.committed.len() - good.committed.len() * 3 / 10;
            match &out.report {
                None => {
                    full += 1;
                    eprintln!(
                        "{engine:?} {what}: no damage found; {unacked} of {unacked} records, all state"
                    );
                }
                Some(r) => {
                    salvaged += 1;
                    eprintln!(
                        "{engine:?} {what}: salvaged {} records ({} of {unacked} unacked), {} state entries of {}, {} undecodable, {} unreadable regions, skipped {} seqs; {}; {}",
                        r.records,
                        out.records.min(unacked),
                        r.state,
                        good.state.len(),
                        r.undecodable,
                        r.read_errors,
                        r.skipped(),
                        r.how,
                        r.reason
                    );
                }
            }
        }
        eprintln!("{engine:?}: {salvaged} salvaged, {full} opened whole");
        assert!(salvaged > 0);
    }

    /// The floor file missing as well: seq continues a whole block past
    /// the highest seq found, and the report says so.
    pub(super) fn a_damaged_store_without_its_floor_file_skips_a_whole_block(engine: StoreEngine) {
        let data = tempfile::tempdir().unwrap();
        let good = fill(engine, data.path(), 40, 25);
        std::fs::remove_file(data.path().join(floor::FILE_NAME)).unwrap();
        // Damage each engine reports (a tail cut from a sled log can open
        // without an error: only the floor's clean mark finds that).
        match engine {
            StoreEngine::Sled => {
                let conf = store_dir(data.path()).join("conf");
                let mut b = std::fs::read(&conf).unwrap();
                b[3] ^= 0x10;
                std::fs::write(&conf, b).unwrap();
            }
            StoreEngine::Redb => {
                let file = main_file(engine, data.path());
                let len = std::fs::metadata(&file).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_len(len - 100)
                    .unwrap();
            }
        }
        let (store, report) = open_data(engine, data.path());
        let report = report.expect("damage reported");
        assert_eq!(report.floor, None);
        assert_eq!(
            report.first_new,
            report.highest_seen + floor::BLOCK + 1,
            "{report:?}"
        );
        assert_eq!(report.highest_seen, good.committed.len() as u64);
        // Whether the cut tail held a record's bytes (then undecodable)
        // depends on the page layout; every entry is either read or counted.
        assert_eq!(report.records + report.undecodable, 701, "{report:?}");
        assert!(
            report
                .message()
                .contains("seq floor file was missing or unreadable too")
        );
        assert_eq!(store.stats().last_seq, report.first_new);
    }

    /// An intact store with a damaged floor file: the store is used, no
    /// gap, and the file is written again.
    pub(super) fn an_intact_store_with_a_damaged_floor_file_is_used_as_is(engine: StoreEngine) {
        let data = tempfile::tempdir().unwrap();
        fill(engine, data.path(), 10, 10);
        std::fs::write(data.path().join(floor::FILE_NAME), b"reserved 5\ncheck 0\n").unwrap();
        let (store, report) = open_data(engine, data.path());
        assert!(report.is_none());
        // 100 records after the store-created alarm.
        assert_eq!(store.commit(records_batch(1)).unwrap()[0].seq, 102);
        store.close().unwrap();
        drop(store);
        let text = std::fs::read_to_string(data.path().join(floor::FILE_NAME)).unwrap();
        assert!(text.contains("clean 102"), "{text}");
        std::fs::remove_file(data.path().join(floor::FILE_NAME)).unwrap();
        let (store, report) = open_data(engine, data.path());
        assert!(
            report.is_none(),
            "a missing floor with an intact store is no damage"
        );
        assert_eq!(store.commit(records_batch(1)).unwrap()[0].seq, 103);
    }

    /// A store that opens without error but ends before the seq it held at
    /// the last clean stop (an older copy put back, an engine rolling back)
    /// is damage: seq continues above the floor, not after its last seq.
    pub(super) fn a_store_that_lost_its_tail_silently_is_found(engine: StoreEngine) {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let old = base.path().join("old");
        fill(engine, &data, 20, 25);
        copy_tree(&store_dir(&data), &old);
        let (store, _) = open_data(engine, &data);
        store.commit(records_batch(50)).unwrap();
        store.close().unwrap();
        drop(store);
        std::fs::remove_dir_all(store_dir(&data)).unwrap();
        copy_tree(&old, &store_dir(&data));
        let (store, report) = open_data(engine, &data);
        let report = report.expect("the lost tail is damage");
        assert!(report.reason.contains("held seq 551"), "{}", report.reason);
        assert_eq!(report.records, 351, "the older copy's unacked records");
        assert_eq!(
            report.numbering_blocked,
            [
                "s0", "s1", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19",
                "s2"
            ]
            .iter()
            .chain(&["s3", "s4", "s5", "s6", "s7", "s8", "s9", "st"])
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
            "the older lot state could repeat numbers"
        );
        assert!(
            store
                .state("lot/st")
                .unwrap()
                .is_some_and(|v| v.starts_with(b"salvaged-unverified:{"))
        );
        assert!(report.first_new > 551);
        assert_eq!(store.stats().last_seq, report.first_new);
    }

    /// The store-created alarms in `store`.
    fn created(store: &dyn Store) -> Vec<Record> {
        all_of(store)
            .into_iter()
            .filter(|r| {
                matches!(
                    r.body,
                    Body::Alarm {
                        event: AlarmEvent::StoreCreated,
                        ..
                    }
                )
            })
            .collect()
    }

    fn message(r: &Record) -> &str {
        match &r.body {
            Body::Alarm {
                message: Some(m), ..
            } => m,
            _ => "",
        }
    }

    /// A new store gets an epoch, announced by a store-created alarm at
    /// seq 1 that says the lot numbering starts afresh; it is kept in the
    /// store and the floor, and a reopen keeps it without a new alarm.
    pub(super) fn a_new_store_announces_its_epoch_once(engine: StoreEngine) {
        let data = tempfile::tempdir().unwrap();
        let (store, _) = open_data(engine, data.path());
        let epoch = store.epoch().expect("an epoch");
        assert_eq!(store.stats().epoch, Some(epoch));
        let alarms = created(&*store);
        assert_eq!(seqs(&alarms), [1]);
        assert!(message(&alarms[0]).contains(&epoch.to_string()));
        assert!(message(&alarms[0]).contains("lot numbering starts afresh"));
        let floor_text = std::fs::read_to_string(data.path().join(floor::FILE_NAME)).unwrap();
        assert!(
            floor_text.contains(&format!("epoch {epoch}")),
            "{floor_text}"
        );
        store.ack(1).unwrap();
        store.close().unwrap();
        drop(store);
        let (store, _) = open_data(engine, data.path());
        assert_eq!(store.epoch(), Some(epoch));
        assert!(created(&*store).is_empty(), "announced once");
        assert_eq!(store.commit(records_batch(1)).unwrap()[0].seq, 2);
    }

    /// A salvage keeps the epoch (the floor keeps seq monotonic, and holds
    /// it even when the store is gone); a data directory that lost both
    /// store and floor starts a new epoch at seq 1.
    pub(super) fn a_salvaged_store_keeps_its_epoch_a_wiped_one_does_not(engine: StoreEngine) {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        fill(engine, &data, 10, 10);
        let (store, _) = open_data(engine, &data);
        let epoch = store.epoch().unwrap();
        drop(store);
        std::fs::remove_dir_all(store_dir(&data)).unwrap();
        let (store, report) = open_data(engine, &data);
        assert!(report.is_some(), "a missing store is damage");
        assert_eq!(store.epoch(), Some(epoch), "the floor kept the epoch");
        assert!(created(&*store).is_empty());
        drop(store);
        let (store, _) = open_data(engine, &data);
        assert_eq!(store.epoch(), Some(epoch), "and the store has it now");
        drop(store);

        std::fs::remove_dir_all(&data).unwrap();
        let (store, report) = open_data(engine, &data);
        assert!(report.is_none(), "nothing left to salvage");
        let new = store.epoch().unwrap();
        assert_ne!(new, epoch);
        assert_eq!(seqs(&created(&*store)), [1]);
        assert_eq!(
            store.stats().last_seq,
            1,
            "seq starts again in the new epoch"
        );
    }

    /// A store made before epochs (none in the store, a version 1 floor or
    /// none) gets one, announced as such, and its seq goes on.
    pub(super) fn a_store_without_an_epoch_gets_one_and_keeps_its_seqs(engine: StoreEngine) {
        let data = tempfile::tempdir().unwrap();
        let (store, _) = open_data(engine, data.path());
        store.commit(records_batch(5)).unwrap();
        store
            .commit(state(&[(super::super::epoch::STATE_KEY, None)]))
            .unwrap();
        store.close().unwrap();
        drop(store);
        std::fs::remove_file(data.path().join(floor::FILE_NAME)).unwrap();
        let (store, report) = open_data(engine, data.path());
        assert!(report.is_none(), "{report:?}");
        let alarms = created(&*store);
        assert_eq!(seqs(&alarms), [1, 7], "seq goes on after 6");
        assert!(message(&alarms[1]).contains("had no epoch"), "{alarms:?}");
        assert!(store.epoch().is_some());
    }

    /// The data directory moved away (and a new one put in its place),
    /// deleted, or the store file deleted while the store is open: found,
    /// and nothing is written into what now sits at the path.
    pub(super) fn a_data_directory_taken_away_is_noticed(engine: StoreEngine) {
        type TakeAway = fn(&Path);
        let cases: [(&str, TakeAway); 3] = [
            ("replaced", |data| {
                std::fs::rename(data, data.with_file_name("away")).unwrap();
                std::fs::create_dir(data).unwrap();
            }),
            ("deleted", |data| std::fs::remove_dir_all(data).unwrap()),
            ("store file deleted", |data| {
                for name in ["linegate.redb", "db"] {
                    let _ = std::fs::remove_file(data.join(STORE_DIR).join(name));
                }
            }),
        ];
        for (what, take_away) in cases {
            let base = tempfile::tempdir().unwrap();
            let data = base.path().join("data");
            let (store, _) = open_data(engine, &data);
            store.commit(records_batch(3)).unwrap();
            store.check_place().unwrap();
            take_away(&data);
            let err = store.check_place().expect_err(what);
            assert!(matches!(err, StoreError::Lost { .. }), "{what}: {err}");
            assert!(!salvage::is_damage(&err));
            assert!(store.close().is_err(), "{what}: the clean stop fails");
            assert!(
                what == "store file deleted" || !data.join(floor::FILE_NAME).exists(),
                "{what}: no seq floor written into the new directory"
            );
        }
    }

    /// Errors that are not damage still fail the open, and nothing is
    /// moved or salvaged: the data directory held by another process, and
    /// a store path that is not a directory.
    pub(super) fn environmental_errors_fail_loudly(engine: StoreEngine) {
        let data = tempfile::tempdir().unwrap();
        let (first, _) = open_data(engine, data.path());
        first.commit(records_batch(2)).unwrap();
        let err = salvage::open_reporting(Some(engine), 1 << 20, data.path(), Some(BLOCK))
            .err()
            .expect("a second open must fail");
        assert!(!salvage::is_damage(&err), "{err}");
        assert!(
            err.to_string().contains("in use by another linegate"),
            "{err}"
        );
        assert_eq!(seqs(&all_of(&*first)), [1, 2, 3], "the first is unharmed");
        drop(first);

        // The other engine's store, after this engine's floor was written.
        let switched = tempfile::tempdir().unwrap();
        let (store, _) = open_data(engine, switched.path());
        store.commit(records_batch(2)).unwrap();
        store.close().unwrap();
        drop(store);
        std::fs::remove_dir_all(store_dir(switched.path())).unwrap();
        let other_engine = match engine {
            StoreEngine::Sled => StoreEngine::Redb,
            StoreEngine::Redb => StoreEngine::Sled,
        };
        drop(salvage::open_reporting(Some(other_engine), 1 << 20, switched.path(), None).unwrap());
        let err = salvage::open_reporting(Some(engine), 1 << 20, switched.path(), Some(BLOCK))
            .err()
            .expect("the other engine's store is refused");
        assert!(matches!(err, StoreError::OtherEngine { .. }), "{err}");

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(STORE_DIR), b"not a directory").unwrap();
        let err = salvage::open_reporting(Some(engine), 1 << 20, other.path(), Some(BLOCK))
            .err()
            .expect("must fail");
        assert!(!salvage::is_damage(&err), "{err}");
        let names: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .chain(std::fs::read_dir(other.path()).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("store.")),
            "nothing salvaged or moved: {names:?}"
        );
    }

    /// Damaged copies are bounded: repeated damage keeps the newest few.
    pub(super) fn damaged_copies_are_bounded(engine: StoreEngine) {
        let data = tempfile::tempdir().unwrap();
        fill(engine, data.path(), 4, 5);
        let mut last = 0;
        for _ in 0..KEEP_DAMAGED + 2 {
            std::fs::write(main_file(engine, data.path()), b"").unwrap();
            let (store, report) = open_data(engine, data.path());
            let report = report.expect("damage");
            assert!(report.first_new > last);
            last = report.first_new;
            store.close().unwrap();
        }
        let copies = std::fs::read_dir(data.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(DAMAGED_PREFIX)
            })
            .count();
        assert_eq!(copies, KEEP_DAMAGED);
    }

    pub(super) const SALVAGE_CHILD_DIR: &str = "LINEGATE_SALVAGE_CHILD_DIR";

    /// The child of [`a_salvage_killed_midway_recovers_on_the_next_open`]:
    /// open (and so salvage) the data dir it is given, then wait to be
    /// killed.
    pub(super) fn salvage_until_killed(engine: StoreEngine) {
        let Some(dir) = std::env::var_os(SALVAGE_CHILD_DIR) else {
            return;
        };
        let (store, _) = open_data(engine, Path::new(&dir));
        store.close().unwrap();
        std::fs::write(Path::new(&dir).join("child-done"), b"").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    /// A salvage killed at each of its steps (after reading, once built,
    /// after the damaged store was moved aside) and at a random moment:
    /// the next open finishes or redoes it, with every salvageable record,
    /// exactly one alarm, and no seq reused.
    pub(super) fn a_salvage_killed_midway_recovers_on_the_next_open(
        engine: StoreEngine,
        child_test: &str,
    ) {
        let base = tempfile::tempdir().unwrap();
        let template = base.path().join("template");
        let good = fill(engine, &template, 100, 100);
        // Damage that keeps most records readable: the redb integrity check
        // fails on a flipped byte, sled loses its snapshot.
        match engine {
            StoreEngine::Sled => {
                drop(open_data(engine, &template));
                for e in std::fs::read_dir(store_dir(&template)).unwrap() {
                    let e = e.unwrap();
                    if e.file_name().to_string_lossy().starts_with("snap.") {
                        let mut b = std::fs::read(e.path()).unwrap();
                        let mid = b.len() / 2;
                        b[mid] ^= 0x04;
                        std::fs::write(e.path(), b).unwrap();
                    }
                }
            }
            StoreEngine::Redb => {
                let file = main_file(engine, &template);
                let len = std::fs::metadata(&file).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_len(len - 100)
                    .unwrap();
            }
        }
        let reference = {
            let data = base.path().join("reference");
            copy_tree(&template, &data);
            let (store, report) = open_data(engine, &data);
            let report = report.expect("damage");
            assert!(report.records > 1000, "{report:?}");
            (seqs(&all_of(&*store)), report.first_new)
        };
        let mut rng = fastrand::Rng::with_seed(3);
        for (round, at) in ["read", "built", "moved", "random"].into_iter().enumerate() {
            let data = base.path().join(format!("round{round}"));
            copy_tree(&template, &data);
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", child_test, "--ignored", "--test-threads=1"])
                .env(SALVAGE_CHILD_DIR, &data)
                .env("LINEGATE_SALVAGE_CRASH_AT", at)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            if at == "random" {
                // Kill it while the salvage runs (or just after it).
                let started = std::time::Instant::now();
                while !data.join("store.scratch").exists() && !data.join("child-done").exists() {
                    assert!(
                        started.elapsed().as_secs() < 30,
                        "the salvage never started"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                std::thread::sleep(std::time::Duration::from_millis(rng.u64(0..40)));
                child.kill().unwrap();
            }
            let status = child.wait().unwrap();
            assert!(!status.success(), "round {at}: the child died");
            let (store, report) = open_data(engine, &data);
            let read = all_of(&*store);
            let alarms: Vec<_> = read
                .iter()
                .filter(|r| matches!(r.body, Body::Alarm { .. }))
                .collect();
            assert_eq!(alarms.len(), 1, "round {at}: exactly one alarm; {report:?}");
            assert_eq!(seqs(&read), reference.0, "round {at}");
            assert_eq!(alarms[0].seq, reference.1, "round {at}");
            for r in read.iter().filter(|r| r.seq != reference.1) {
                assert_eq!(Some(r), good.committed.get(&r.seq), "round {at}");
            }
            eprintln!(
                "{engine:?} salvage killed at {at}: recovered, {}",
                if report.is_some() {
                    "salvaged again"
                } else {
                    "finished the interrupted salvage"
                }
            );
            assert!(!data.join("store.salvage").exists() && !data.join("store.scratch").exists());
        }
    }
}

macro_rules! salvage_suite {
    ($($engine:ident: $value:expr),*) => {$(
        mod $engine {
            use super::salvage_suite as s;
            use crate::config::StoreEngine;

            const ENGINE: StoreEngine = $value;

            #[test]
            fn every_damage_class_is_survived() {
                s::every_damage_class_is_survived(ENGINE);
            }
            #[test]
            fn a_damaged_store_without_its_floor_file_skips_a_whole_block() {
                s::a_damaged_store_without_its_floor_file_skips_a_whole_block(ENGINE);
            }
            #[test]
            fn an_intact_store_with_a_damaged_floor_file_is_used_as_is() {
                s::an_intact_store_with_a_damaged_floor_file_is_used_as_is(ENGINE);
            }
            #[test]
            fn a_store_that_lost_its_tail_silently_is_found() {
                s::a_store_that_lost_its_tail_silently_is_found(ENGINE);
            }
            #[test]
            fn environmental_errors_fail_loudly() {
                s::environmental_errors_fail_loudly(ENGINE);
            }
            #[test]
            fn a_new_store_announces_its_epoch_once() {
                s::a_new_store_announces_its_epoch_once(ENGINE);
            }
            #[test]
            fn a_salvaged_store_keeps_its_epoch_a_wiped_one_does_not() {
                s::a_salvaged_store_keeps_its_epoch_a_wiped_one_does_not(ENGINE);
            }
            #[test]
            fn a_store_without_an_epoch_gets_one_and_keeps_its_seqs() {
                s::a_store_without_an_epoch_gets_one_and_keeps_its_seqs(ENGINE);
            }
            #[test]
            fn a_data_directory_taken_away_is_noticed() {
                s::a_data_directory_taken_away_is_noticed(ENGINE);
            }
            #[test]
            fn damaged_copies_are_bounded() {
                s::damaged_copies_are_bounded(ENGINE);
            }
            #[test]
            fn a_salvage_killed_midway_recovers_on_the_next_open() {
                let path = module_path!().split_once("::").unwrap().1;
                s::a_salvage_killed_midway_recovers_on_the_next_open(
                    ENGINE,
                    &format!("{path}::salvage_until_killed"),
                );
            }
            /// Not a test: the child process of
            /// `a_salvage_killed_midway_recovers_on_the_next_open`.
            #[test]
            #[ignore]
            fn salvage_until_killed() {
                s::salvage_until_killed(ENGINE);
            }
        }
    )*};
}

salvage_suite!(salvage_sled: StoreEngine::Sled, salvage_redb: StoreEngine::Redb);
