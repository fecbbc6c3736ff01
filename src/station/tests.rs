//! Data-driven tests of station logic: rules, context stamping, commands.

use std::sync::Arc;

use super::*;
use crate::config::{RuleAction, ScanRule, StationConfig};

fn station_cfg() -> StationConfig {
    StationConfig {
        id: "st10".into(),
        scan_rules: vec![
            ScanRule {
                name: "lot-label".into(),
                pattern: regex::Regex::new(r"^LOT:(?P<value>[A-Z0-9-]+)$").unwrap(),
                action: RuleAction::SetLot,
            },
            ScanRule {
                name: "order".into(),
                pattern: regex::Regex::new(r"^WO[0-9]{6}$").unwrap(),
                action: RuleAction::SetOrder,
            },
        ],
    }
}

fn scan(raw: &[u8]) -> Reading {
    Reading {
        device: Arc::from("scanner-1"),
        station: Arc::from("st10"),
        ts_ms: 42,
        event: DeviceEvent::Scan(raw.to_vec()),
    }
}

fn stations() -> Stations {
    Stations::new(&[station_cfg()], &[], |_| None)
}

fn cmd(id: &str, station: &str, action: CommandAction) -> Command {
    Command {
        name: "set-lot".into(),
        id: id.into(),
        station: station.into(),
        action,
        payload: "{}".into(),
    }
}

#[test]
fn scans_are_stamped_with_current_context_and_absent_when_unknown() {
    let mut s = stations();
    let first = s.on_reading(&scan(b"]d2010950600013435210ABC\x1d21X"), false);
    assert_eq!(first.records.len(), 1);
    let r = &first.records[0];
    assert_eq!((r.lot.as_deref(), r.order.as_deref()), (None, None));
    assert_eq!(
        r.body,
        Body::Scan {
            raw: b"]d2010950600013435210ABC\x1d21X".to_vec()
        }
    );
    assert!(first.state.is_empty());

    s.on_reading(&scan(b"LOT:L-7"), false);
    s.on_reading(&scan(b"WO123456"), false);
    let after = s.on_reading(&scan(b"PART-1"), true);
    let r = &after.records[0];
    assert_eq!(
        (r.lot.as_deref(), r.order.as_deref()),
        (Some("L-7"), Some("WO123456"))
    );
    assert_eq!(r.station.as_deref(), Some("st10"));
    assert_eq!(r.device.as_deref(), Some("scanner-1"));
    assert!(r.clock_synced);
}

#[test]
fn rule_table() {
    // (scan, expected kind, expected lot after, expected order after)
    type Case<'a> = (&'a [u8], &'a str, Option<&'a str>, Option<&'a str>);
    let cases: &[Case] = &[
        (b"LOT:A1", "context", Some("A1"), None),
        (b"LOT:", "scan", None, None),   // empty value: no match
        (b"lot:a1", "scan", None, None), // case matters
        (b"WO000001", "context", None, Some("WO000001")),
        (b"WO00001", "scan", None, None),
        (b"xLOT:A1", "scan", None, None),
    ];
    for (raw, kind, lot, order) in cases {
        let mut s = stations();
        let out = s.on_reading(&scan(raw), false);
        let r = &out.records[0];
        assert_eq!(
            r.body.kind(),
            *kind,
            "scan {:?}",
            String::from_utf8_lossy(raw)
        );
        let ctx = s.context("st10").unwrap();
        assert_eq!((ctx.lot.as_deref(), ctx.order.as_deref()), (*lot, *order));
        assert_eq!(out.state.is_empty(), *kind == "scan");
    }
}

#[test]
fn context_change_records_previous_value_and_persists() {
    let mut s = stations();
    s.on_reading(&scan(b"LOT:A"), false);
    let out = s.on_reading(&scan(b"LOT:B"), false);
    match &out.records[0].body {
        Body::Context {
            field,
            value,
            previous,
            source,
        } => {
            assert_eq!(*field, ContextField::Lot);
            assert_eq!(value.as_deref(), Some("B"));
            assert_eq!(previous.as_deref(), Some("A"));
            assert!(matches!(source, ContextSource::Scan { rule, .. } if rule == "lot-label"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(out.records[0].lot.as_deref(), Some("B"));
    let (key, bytes) = &out.state[0];
    assert_eq!(key, "ctx/st10");
    let restored = Stations::new(&[station_cfg()], &[], |k| {
        assert_eq!(k, "ctx/st10");
        Some(bytes.clone())
    });
    assert_eq!(restored.context("st10").unwrap().lot.as_deref(), Some("B"));
}

#[test]
fn damaged_persisted_context_starts_unknown() {
    assert_eq!(Context::decode("st10", b"{garbage"), None);
}

#[test]
fn device_events_become_alarms() {
    let mut s = stations();
    let mut r = scan(b"");
    r.event = DeviceEvent::Offline("EIO".into());
    let out = s.on_reading(&r, false);
    assert_eq!(
        out.records[0].body,
        Body::Alarm {
            event: AlarmEvent::DeviceOffline,
            message: Some("EIO".into())
        }
    );
}

#[test]
fn commands_apply_audit_and_refuse_replays() {
    let mut s = stations();
    let (verdict, out) = s.on_command(
        &cmd("c1", "st10", CommandAction::SetLot(Some("L9".into()))),
        5,
        false,
    );
    assert_eq!(verdict, Ok(()));
    let kinds: Vec<_> = out.records.iter().map(|r| r.body.kind()).collect();
    assert_eq!(kinds, ["audit", "context"]);
    assert_eq!(out.records[1].lot.as_deref(), Some("L9"));
    assert_eq!(out.state.len(), 1);

    let (verdict, out) = s.on_command(&cmd("c1", "st10", CommandAction::SetLot(None)), 6, false);
    assert_eq!(verdict, Err(Rejection::Duplicate("c1".into())));
    assert_eq!(out.records.len(), 1);
    assert!(matches!(
        out.records[0].body,
        Body::Audit {
            accepted: false,
            ..
        }
    ));
    assert_eq!(
        s.context("st10").unwrap().lot.as_deref(),
        Some("L9"),
        "rejected command changed nothing"
    );

    let (verdict, out) = s.on_command(
        &cmd("c2", "nowhere", CommandAction::SetOrder(None)),
        7,
        false,
    );
    assert_eq!(verdict, Err(Rejection::UnknownStation("nowhere".into())));
    assert_eq!(
        out.records[0].station, None,
        "audit of an unknown station is gateway-level"
    );

    let (verdict, _) = s.on_command(&cmd("c3", "st10", CommandAction::SetLot(None)), 8, false);
    assert_eq!(verdict, Ok(()));
    assert_eq!(
        s.context("st10").unwrap().lot,
        None,
        "a null value clears the lot"
    );
}

#[test]
fn audit_payload_is_bounded() {
    let long = "é".repeat(AUDIT_PAYLOAD_MAX);
    let rec = rejected_command_audit("set-lot", None, "too big", &long, 1, false);
    match rec.body {
        Body::Audit { payload, .. } => assert!(payload.len() <= AUDIT_PAYLOAD_MAX),
        other => panic!("unexpected {other:?}"),
    }
}

mod plc {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{
        BackoffConfig, DataType, DeviceConfig, DeviceKind, ModbusTcpConfig, PollConfig,
        RegisterConfig, Role, Table, WordOrder,
    };
    use crate::devices::Sample;

    fn register(name: &str, role: Role, data_type: DataType) -> RegisterConfig {
        RegisterConfig {
            name: name.into(),
            station: "st10".into(),
            table: Table::Holding,
            address: 0,
            data_type,
            word_order: WordOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            role,
            max_rate: 10.0,
        }
    }

    fn plc(heartbeat: Option<Duration>) -> DeviceConfig {
        DeviceConfig {
            id: "plc".into(),
            station: "st10".into(),
            kind: DeviceKind::ModbusTcp(ModbusTcpConfig {
                host: "127.0.0.1".into(),
                port: 502,
                unit_id: 1,
                poll: PollConfig {
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    reconnect: BackoffConfig {
                        min: Duration::from_millis(100),
                        max: Duration::from_secs(1),
                    },
                    max_gap: 8,
                    heartbeat,
                },
                registers: vec![
                    register("good", Role::Counter, DataType::U16),
                    register("run", Role::State, DataType::U16),
                    register("temp", Role::Value, DataType::F32),
                ],
            }),
        }
    }

    fn sample(name: &str, role: Role, raw: u64, value: f64) -> Sample {
        Sample {
            name: Arc::from(name),
            role,
            raw,
            bits: 16,
            value,
        }
    }

    fn poll(s: &mut Stations, ts_ms: u64, samples: Vec<Sample>) -> Emitted {
        let reading = Reading {
            device: Arc::from("plc"),
            station: Arc::from("st10"),
            ts_ms,
            event: DeviceEvent::Sample(samples),
        };
        s.on_reading(&reading, false)
    }

    fn count(good: u64) -> Vec<Sample> {
        vec![sample("good", Role::Counter, good, good as f64)]
    }

    #[test]
    fn counters_record_deltas_stamped_with_context_and_persist_their_mark() {
        let mut s = Stations::new(&[station_cfg()], &[plc(None)], |_| None);
        s.on_reading(&scan(b"LOT:L1"), false);
        let first = poll(&mut s, 1000, count(100));
        assert!(matches!(
            first.records[0].body,
            Body::Count {
                delta: 0,
                baseline: true,
                ..
            }
        ));
        assert!(
            poll(&mut s, 2000, count(100)).records.is_empty(),
            "no change, no record"
        );
        let out = poll(&mut s, 3000, count(107));
        let r = &out.records[0];
        assert_eq!(r.lot.as_deref(), Some("L1"));
        assert!(matches!(
            r.body,
            Body::Count {
                raw: 107,
                delta: 7,
                wrapped: false,
                reset: false,
                baseline: false,
                since_ms: Some(1000),
                ..
            }
        ));
        assert_eq!(out.state[0].0, "ctr/plc/good");

        // A restart restores the mark: the next delta counts from 107, not from scratch.
        let persisted = out.state[0].1.clone();
        let mut restarted = Stations::new(&[station_cfg()], &[plc(None)], |k| {
            (k == "ctr/plc/good").then(|| persisted.clone())
        });
        let out = poll(&mut restarted, 60_000, count(130));
        assert!(matches!(
            out.records[0].body,
            Body::Count {
                delta: 23,
                baseline: false,
                ..
            }
        ));
    }

    #[test]
    fn a_remapped_counter_register_starts_a_new_baseline() {
        let mut s = Stations::new(&[station_cfg()], &[plc(None)], |_| None);
        let out = poll(&mut s, 1000, count(100));
        let persisted = out.state[0].1.clone();
        let restore = |k: &str| (k == "ctr/plc/good").then(|| persisted.clone());

        // Same mapping after a restart: the delta counts from the mark.
        let mut same = Stations::new(&[station_cfg()], &[plc(None)], restore);
        assert!(matches!(
            poll(&mut same, 2000, count(103)).records[0].body,
            Body::Count {
                delta: 3,
                baseline: false,
                ..
            }
        ));

        // The register was remapped (word order fixed on site): never compare
        // a value read one way with one read another way.
        let mut remapped_cfg = plc(None);
        if let DeviceKind::ModbusTcp(m) = &mut remapped_cfg.kind {
            m.registers[0].address = 10;
        }
        let mut remapped = Stations::new(&[station_cfg()], &[remapped_cfg], restore);
        assert!(matches!(
            poll(&mut remapped, 2000, count(103)).records[0].body,
            Body::Count {
                delta: 0,
                baseline: true,
                ..
            }
        ));
    }

    #[test]
    fn heartbeat_emits_without_change() {
        let mut s = Stations::new(
            &[station_cfg()],
            &[plc(Some(Duration::from_secs(10)))],
            |_| None,
        );
        poll(&mut s, 0, count(5));
        assert!(poll(&mut s, 5_000, count(5)).records.is_empty());
        let hb = poll(&mut s, 10_000, count(5));
        assert!(matches!(
            hb.records[0].body,
            Body::Count {
                delta: 0,
                baseline: false,
                ..
            }
        ));
    }

    #[test]
    fn states_and_values_are_recorded_on_change_only() {
        let mut s = Stations::new(&[station_cfg()], &[plc(None)], |_| None);
        let state = |v: u64| {
            vec![
                sample("run", Role::State, v, v as f64),
                sample("temp", Role::Value, 0, 21.5),
            ]
        };
        let first = poll(&mut s, 0, state(1));
        assert_eq!(first.records.len(), 2);
        assert!(matches!(
            first.records[0].body,
            Body::State {
                value: 1,
                previous: None,
                ..
            }
        ));
        assert!(poll(&mut s, 1000, state(1)).records.is_empty());
        let change = poll(&mut s, 2000, state(3));
        assert_eq!(change.records.len(), 1);
        assert!(matches!(
            change.records[0].body,
            Body::State {
                value: 3,
                previous: Some(1),
                ..
            }
        ));
        assert!(change.state.is_empty(), "states are not persisted");
    }
}
