//! The capacity policy, as data: figures in, decisions and alarms out.

use std::time::Duration;

use super::*;
use crate::config::StoreEngine;
use crate::record::Body;

const MAX: u64 = 1_000_000;

fn cfg(when_full: WhenFull, min_disk_free: u64) -> StoreConfig {
    StoreConfig {
        engine: Some(StoreEngine::Redb),
        commit_interval: Duration::from_millis(10),
        commit_max_records: 256,
        cache_bytes: 1 << 20,
        max_bytes: MAX,
        when_full,
        min_disk_free,
    }
}

fn queue(bytes: u64, depth: u64) -> Usage {
    Usage {
        depth,
        bytes,
        last_seq: depth,
    }
}

/// The events of the alarms waiting in the outbox, taken out.
fn events(cap: &mut Capacity) -> Vec<(AlarmEvent, StoreFigures)> {
    cap.take_outbox()
        .into_iter()
        .inspect(|r| {
            assert!(r.station.is_none(), "a gateway-level record");
            assert!(r.kept_by_drop_oldest());
        })
        .map(|r| match r.body {
            Body::Alarm {
                event,
                store: Some(f),
                ..
            } => (event, *f),
            other => panic!("not a store alarm: {other:?}"),
        })
        .collect()
}

fn names(alarms: &[(AlarmEvent, StoreFigures)]) -> Vec<&'static str> {
    alarms.iter().map(|(e, _)| e.as_str()).collect()
}

#[test]
fn limits_keep_a_reserve_and_a_drop_chunk_within_bounds() {
    let gib = cfg(WhenFull::Refuse, 0);
    let l = Limits::new(&StoreConfig {
        max_bytes: 1 << 30,
        ..gib.clone()
    });
    assert_eq!(
        l.data_limit,
        (1 << 30) - (1 << 20),
        "reserve capped at 1 MiB"
    );
    assert_eq!(l.drop_chunk, (1 << 30) / 100);
    assert!(l.full_clear < l.data_limit - (1 << 30) / 20 + 1);
    let small = Limits::new(&StoreConfig {
        max_bytes: 64 * 1024,
        ..gib.clone()
    });
    assert_eq!(small.data_limit, 60 * 1024, "reserve at least 4 KiB");
    assert_eq!(small.drop_chunk, 4 * 1024);
    assert_eq!(small.full_clear, 52 * 1024, "two chunks below the limit");
    let disk = Limits::new(&StoreConfig {
        min_disk_free: 128 << 20,
        ..gib
    });
    assert_eq!(disk.disk_clear, 160 << 20);
    assert_eq!(Limits::new(&cfg(WhenFull::Refuse, 0)).disk_clear, 1 << 20);
}

#[test]
fn refuse_admits_until_the_limit_then_counts_and_alarms_once() {
    let mut cap = Capacity::new(&cfg(WhenFull::Refuse, 0), None);
    let limit = cap.limits().data_limit;
    assert!(cap.admit(Incoming::Data, queue(limit - 100, 10), 99, 1));
    assert!(events(&mut cap).is_empty());
    assert!(!cap.admit(Incoming::Data, queue(limit - 100, 10), 100, 1));
    assert!(!cap.admit(Incoming::Data, queue(limit, 10), 0, 2));
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["store-full"], "raised once");
    assert_eq!(alarms[0].1.policy.as_deref(), Some("refuse"));
    assert_eq!(alarms[0].1.max_bytes, Some(MAX));
    // Device alarms may use the reserve, up to max_bytes.
    assert!(cap.admit(Incoming::DeviceAlarm, queue(limit, 10), 0, 3));
    assert!(!cap.admit(Incoming::DeviceAlarm, queue(MAX, 10), 0, 3));
    // Nothing to drop changes nothing under refuse.
    assert_eq!(cap.drop_needed(queue(MAX, 10), 500), None);
    assert_eq!(cap.status().refused, 3);
    assert!(cap.status().full);

    // Draining: still raised just above the clear mark, cleared below it,
    // with the refusals of the episode.
    cap.evaluate(cap.limits().full_clear, 4);
    assert!(!names(&events(&mut cap)).contains(&"store-full-cleared"));
    cap.evaluate(cap.limits().full_clear - 1, 5);
    let alarms = events(&mut cap);
    let cleared = alarms
        .iter()
        .find(|(e, _)| *e == AlarmEvent::StoreFullCleared)
        .expect("store-full-cleared");
    assert_eq!((cleared.1.refused, cleared.1.dropped), (Some(3), Some(0)));
    assert!(!cap.status().full);
    assert_eq!(cap.status().refused, 3, "the status total stays");
}

#[test]
fn thresholds_raise_once_and_clear_with_hysteresis() {
    let mut cap = Capacity::new(&cfg(WhenFull::Refuse, 0), None);
    cap.evaluate(799_999, 1);
    assert!(events(&mut cap).is_empty());
    cap.evaluate(800_000, 2);
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["store-filling"]);
    assert_eq!(alarms[0].1.percent, Some(80));
    assert_eq!(alarms[0].1.bytes, Some(800_000));
    cap.evaluate(850_000, 3);
    cap.evaluate(760_000, 3);
    assert!(
        events(&mut cap).is_empty(),
        "no repeat, no clear above 75 %"
    );
    cap.evaluate(950_000, 4);
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["store-filling"]);
    assert_eq!(alarms[0].1.percent, Some(90));
    cap.evaluate(860_000, 5);
    assert!(events(&mut cap).is_empty());
    cap.evaluate(700_000, 6);
    let alarms = events(&mut cap);
    assert_eq!(
        names(&alarms),
        ["store-filling-cleared", "store-filling-cleared"]
    );
    let pcts: Vec<_> = alarms.iter().map(|(_, f)| f.percent).collect();
    assert_eq!(pcts, [Some(80), Some(90)]);
}

#[test]
fn raised_alarms_and_the_drop_total_survive_a_restart() {
    let mut cap = Capacity::new(&cfg(WhenFull::DropOldest, 0), None);
    cap.evaluate(900_000, 1);
    let plan = DropPlan {
        seqs: vec![1, 2, 4],
        sizes: vec![10_000; 3],
        bytes: 30_000,
    };
    cap.dropping(&plan, 2, queue(990_000, 100));
    let (key, value) = cap.state_write().expect("changed");
    assert_eq!(key, STATE_KEY);
    cap.committed();
    assert_eq!(cap.state_write(), None, "written once");
    let value = value.unwrap();

    let mut again = Capacity::new(&cfg(WhenFull::DropOldest, 0), Some(&value));
    assert_eq!(again.status().dropped, 3);
    assert!(again.status().full);
    again.evaluate(950_000, 3);
    assert!(events(&mut again).is_empty(), "nothing raised twice");
    again.dropping(&plan, 4, queue(990_000, 100));
    let alarms = events(&mut again);
    assert_eq!(alarms[0].1.dropped_total, Some(6), "the total continues");
    // A reload forgets what was not committed.
    again.reload(Some(&value), 5, queue(0, 0));
    assert_eq!(again.status().dropped, 3);
    assert!(events(&mut again).is_empty());
    // A full disk seen before the reload is raised again.
    again.on_disk_error(Instant::now(), 6, queue(0, 0));
    again.reload(Some(&value), 7, queue(0, 0));
    again.unblock();
    let alarms = events(&mut again);
    assert_eq!(names(&alarms), ["disk-full"]);
    assert_eq!(alarms.len(), 1);
    // Damaged state: alarms start cleared, nothing panics.
    let damaged = Capacity::new(&cfg(WhenFull::Refuse, 0), Some(b"{not json"));
    assert_eq!(damaged.status().dropped, 0);
}

#[test]
fn drop_oldest_frees_at_least_a_chunk_and_reports_the_seqs() {
    let mut cap = Capacity::new(&cfg(WhenFull::DropOldest, 0), None);
    let l = *cap.limits();
    assert_eq!(cap.drop_needed(queue(l.data_limit - 500, 10), 500), None);
    assert_eq!(
        cap.drop_needed(queue(l.data_limit - 500, 10), 600),
        Some(l.drop_chunk),
        "100 bytes over: a whole chunk"
    );
    assert_eq!(
        cap.drop_needed(queue(l.data_limit, 10), 3 * l.drop_chunk),
        Some(3 * l.drop_chunk)
    );
    assert_eq!(
        cap.drop_needed(queue(0, 0), 2 * MAX),
        None,
        "nothing to drop"
    );
    // Full, something to drop: admitted.
    assert!(cap.admit(Incoming::Data, queue(MAX, 10), 0, 1));
    // Full, nothing to drop: refused.
    assert!(!cap.admit(Incoming::Data, queue(MAX, 0), 0, 1));
    let plan = DropPlan {
        seqs: vec![3, 5, 9],
        sizes: vec![300; 3],
        bytes: 900,
    };
    cap.dropping(&plan, 2, queue(MAX, 10));
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["store-full", "records-dropped"]);
    let dropped = &alarms[1].1;
    assert_eq!(
        (
            dropped.first_seq,
            dropped.last_seq,
            dropped.count,
            dropped.bytes
        ),
        (Some(3), Some(9), Some(3), Some(900))
    );
    assert_eq!(dropped.dropped_total, Some(3));
    assert_eq!(cap.status().dropped, 3);
    cap.evaluate(0, 3);
    let alarms = events(&mut cap);
    let cleared = alarms
        .iter()
        .find(|(e, _)| *e == AlarmEvent::StoreFullCleared)
        .expect("cleared");
    assert_eq!((cleared.1.refused, cleared.1.dropped), (Some(1), Some(3)));
}

#[test]
fn low_disk_space_is_a_full_store_with_its_own_alarm() {
    let min = 10 << 20;
    let mut cap = Capacity::new(&cfg(WhenFull::Refuse, min), None);
    let space = |available| {
        Some(DiskSpace {
            available,
            total: 1 << 30,
        })
    };
    cap.observe_disk(space(min));
    assert!(cap.admit(Incoming::Data, queue(0, 0), 0, 1));
    cap.observe_disk(space(min - 1));
    assert!(!cap.admit(Incoming::Data, queue(0, 0), 0, 2));
    assert!(!cap.admit(Incoming::DeviceAlarm, queue(0, 0), 0, 2));
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["disk-full"]);
    assert_eq!(alarms[0].1.free_bytes, Some(min - 1));
    assert_eq!(alarms[0].1.min_free_bytes, Some(min));
    assert!(cap.status().disk_full && !cap.status().full);
    // Between the mark and the clear level: still full.
    cap.observe_disk(space(min + 1));
    cap.evaluate(0, 3);
    assert!(events(&mut cap).is_empty());
    assert!(!cap.has_room(Incoming::Data, queue(0, 0), 0));
    cap.observe_disk(space(cap.limits().disk_clear));
    cap.evaluate(0, 4);
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["disk-full-cleared"]);
    assert_eq!(alarms[0].1.refused, Some(2));
    assert!(cap.admit(Incoming::Data, queue(0, 0), 0, 5));

    // Under drop-oldest, a low disk drops what the batch adds.
    let mut cap = Capacity::new(&cfg(WhenFull::DropOldest, min), None);
    cap.observe_disk(space(0));
    assert_eq!(
        cap.drop_needed(queue(100, 1), 10),
        Some(cap.limits().drop_chunk)
    );
    assert!(cap.admit(Incoming::Data, queue(100, 1), 0, 1));
    assert!(!cap.admit(Incoming::Data, queue(0, 0), 0, 1));
}

#[test]
fn a_refused_commit_blocks_everything_until_the_backoff_or_the_space() {
    let mut cap = Capacity::new(&cfg(WhenFull::DropOldest, 0), None);
    let t0 = Instant::now();
    cap.on_disk_error(t0, 1, queue(500, 5));
    assert!(cap.is_blocked());
    assert!(!cap.admit(Incoming::DeviceAlarm, queue(500, 5), 0, 2));
    assert!(cap.take_outbox().is_empty(), "alarms wait while blocked");
    assert!(!cap.has_outbox());
    assert!(!cap.retry_due(t0, None));
    assert!(cap.retry_due(t0 + Duration::from_secs(1), None));
    let room = Some(DiskSpace {
        available: 1 << 20,
        total: 1 << 30,
    });
    assert!(cap.retry_due(t0, room), "space back: at once");
    cap.unblock();
    cap.observe_disk(Some(DiskSpace {
        available: 0,
        total: 1 << 30,
    }));
    cap.evaluate(500, 3);
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["disk-full"], "not cleared without space");
    // Failing again: the wait doubles.
    let t1 = t0 + Duration::from_secs(1);
    cap.on_disk_error(t1, 4, queue(500, 5));
    assert!(!cap.retry_due(t1 + Duration::from_millis(1999), None));
    assert!(cap.retry_due(t1 + Duration::from_secs(2), None));
    cap.unblock();
    cap.refused_after_failure(7, 0);
    cap.observe_disk(room);
    cap.evaluate(500, 5);
    let alarms = events(&mut cap);
    assert_eq!(names(&alarms), ["disk-full-cleared"]);
    assert_eq!(alarms[0].1.refused, Some(1 + 7));
    cap.committed();
    // A commit that succeeds resets the wait.
    cap.on_disk_error(t1, 6, queue(500, 5));
    assert!(cap.retry_due(t1 + Duration::from_secs(1), None));
}
