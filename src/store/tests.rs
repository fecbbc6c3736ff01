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

/// The wrapper the gateway runs on: a reopen in place is a restart without
/// the process ending.
fn a_reopen_in_place_keeps_everything_committed<E: Engine>(dir: &Path) {
    let cfg = store_cfg(E::ENGINE);
    let store = ReopenableStore::open(&cfg, dir).unwrap();
    store.commit(records(1..=5)).unwrap();
    store.ack(1).unwrap();
    store.sync().unwrap();
    store.ack(2).unwrap(); // not synced: may come back
    let before = store.stats();
    store.reopen().unwrap();
    let left = seqs(&store.read_range(0, u64::MAX, usize::MAX).unwrap());
    assert!(left == [2, 3, 4, 5] || left == [3, 4, 5], "{left:?}");
    assert_eq!(store.stats().last_seq, before.last_seq);
    assert_eq!(store.commit(records(6..=6)).unwrap()[0].seq, 6);
    assert!(!store.disk_full_seen());
    // Twice in a row, and the engine's lock is released each time.
    store.reopen().unwrap();
    store.reopen().unwrap();
    assert_eq!(store.usage().last_seq, 6);
    store.close().unwrap();
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

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop. Needs
/// root (as on the CI machines); without it the test fails and says why.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}"));
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} (the full-disk tests need root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file until the filesystem is full; returns its path.
    fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        for _ in 0..100_000 {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A commit refused for lack of space fails with a disk-full error on both
/// engines (directly, or as the engine's memory of it); the store reopens in
/// place once there is room, with every committed record, and the failed
/// batch either whole or absent.
fn a_full_disk_fails_commits_and_a_reopen_recovers<E: Engine>(_dir: &Path) {
    let fs = Tmpfs::mount("4m");
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
    let filler = fs.fill("filler");
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

    /// What a damaged file did: refused at open, opened with every record
    /// and state entry intact, opened with content changed, or a panic.
    #[derive(Default, Debug)]
    struct Outcomes {
        refused: usize,
        intact: usize,
        changed: Vec<String>,
        panicked: Vec<String>,
    }

    /// Records and state entries.
    type Content = (Vec<Record>, Vec<(String, Vec<u8>)>);

    /// The content of a store.
    fn content(store: &RedbStore) -> Result<Content, StoreError> {
        Ok((
            store.read_range(0, u64::MAX, usize::MAX)?,
            store.state_prefix("")?,
        ))
    }

    impl Outcomes {
        /// Open the damaged store in `dir`, compare it with `good`, and use it.
        fn try_open(&mut self, what: &str, dir: &Path, good: &Content) {
            let r = std::panic::catch_unwind(|| {
                let store = RedbStore::open_in(dir).map_err(|e| e.to_string())?;
                let same = content(&store).is_ok_and(|c| &c == good) && store.stats().corrupt == 0;
                let _ = store.commit(records(1..=3));
                let _ = store.sync();
                Ok::<bool, String>(same)
            });
            match r {
                Ok(Ok(true)) => self.intact += 1,
                Ok(Ok(false)) => self.changed.push(what.to_owned()),
                Ok(Err(_)) => self.refused += 1,
                Err(p) => self.panicked.push(format!(
                    "{what}: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default()
                )),
            }
        }
    }

    /// A store with some content, closed cleanly; returns its file and content.
    fn filled(dir: &Path) -> (std::path::PathBuf, Content) {
        let store = open::<RedbStore>(dir);
        for i in 0..40u8 {
            store
                .commit(Batch {
                    records: (0..25).map(|_| rec(i)).collect(),
                    state: vec![(format!("ctx/{i}"), Some(vec![i; 100]))],
                    drop: vec![],
                })
                .unwrap();
        }
        for seq in 1..=300 {
            store.ack(seq).unwrap();
        }
        store.close().unwrap();
        let good = content(&store).unwrap();
        assert_eq!((good.0.len(), good.1.len()), (700, 40));
        (dir.join(REDB_FILE), good)
    }

    #[test]
    fn a_truncated_file_fails_to_open_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (file, good) = filled(dir.path());
        let bytes = std::fs::read(&file).unwrap();
        let mut outcomes = Outcomes::default();
        let mut cut = 1;
        while cut < bytes.len() {
            std::fs::write(&file, &bytes[..cut]).unwrap();
            outcomes.try_open(&format!("truncated to {cut}"), dir.path(), &good);
            cut = cut * 2 + 777;
        }
        eprintln!("truncated redb file ({} bytes): {outcomes:?}", bytes.len());
        assert!(outcomes.panicked.is_empty(), "{:?}", outcomes.panicked);
        assert!(outcomes.changed.is_empty(), "{:?}", outcomes.changed);
    }

    #[test]
    fn flipped_bytes_fail_to_open_or_are_survived_and_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (file, good) = filled(dir.path());
        let bytes = std::fs::read(&file).unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut outcomes = Outcomes::default();
        for round in 0..150 {
            let mut damaged = bytes.clone();
            // The header and the first pages hold the most structure.
            let span = if round % 2 == 0 { 8192 } else { damaged.len() };
            let at = rng.usize(0..span.min(damaged.len()));
            for i in 0..rng.usize(1..=8) {
                if let Some(b) = damaged.get_mut(at + i * 7) {
                    *b ^= 1 << rng.u8(0..8);
                }
            }
            std::fs::write(&file, &damaged).unwrap();
            outcomes.try_open(&format!("round {round} at {at}"), dir.path(), &good);
        }
        eprintln!(
            "flipped bytes in a redb file ({} bytes): {outcomes:?}",
            bytes.len()
        );
        assert!(outcomes.panicked.is_empty(), "{:?}", outcomes.panicked);
        assert!(outcomes.changed.is_empty(), "{:?}", outcomes.changed);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REDB_FILE), vec![0xA5u8; 20_000]).unwrap();
        let err = RedbStore::open_in(dir.path()).err().expect("must not open");
        eprintln!("garbage file: {err}");
    }
}
