//! Data-driven tests of station logic: rules, context stamping, commands,
//! the lot engine, operators, serials and genealogy totals.
//!
//! `Rig` keeps the durable state the way the store would (every emitted
//! state write applied in order), so restarts are tested by rebuilding the
//! stations from it; dropping an `Emitted` without applying it is a crash
//! before the commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{
    DuplicateWindow, LotConfig, LotNumbering, OperatorConfig, Rotate, RuleAction, ScanRule,
    StationConfig,
};
use crate::numbering::{Calendar, Reset, Shift, Template};
use crate::record::{Boundary, ContextField, LotEvent, Material, RejectReason};

fn rule(name: &str, pattern: &str, action: RuleAction) -> ScanRule {
    ScanRule {
        name: name.into(),
        pattern: Some(regex::Regex::new(pattern).unwrap()),
        symbology: vec![],
        gs1: vec![],
        action,
        value_ai: None,
        reason: None,
    }
}

fn gs1_rule(name: &str, ais: &[&str], action: RuleAction) -> ScanRule {
    ScanRule {
        name: name.into(),
        pattern: None,
        symbology: vec![],
        gs1: ais.iter().map(|a| a.to_string()).collect(),
        action,
        value_ai: None,
        reason: None,
    }
}

fn station_cfg() -> StationConfig {
    StationConfig {
        id: "st10".into(),
        scan_rules: vec![
            rule(
                "lot-label",
                r"^LOT:(?P<value>[A-Z0-9-]+)$",
                RuleAction::SetLot,
            ),
            rule("order", r"^WO[0-9]{6}$", RuleAction::SetOrder),
        ],
        lot: LotConfig::default(),
        operator: OperatorConfig::default(),
    }
}

/// A station with the whole traceability setup: badges, orders, GS1
/// materials and products, a reject rule, numbered lots.
fn full_cfg() -> StationConfig {
    let mut reject = rule("no-test-labels", r"^TEST", RuleAction::Reject);
    reject.reason = Some("test label scanned in production".into());
    let mut cfg = station_cfg();
    cfg.scan_rules = vec![
        reject,
        rule("badge", r"^OP(?P<value>[0-9]{4})$", RuleAction::SetOperator),
        rule("order", r"^WO[0-9]{6}$", RuleAction::SetOrder),
        rule(
            "lot-label",
            r"^LOT:(?P<value>[A-Z0-9-]+)$",
            RuleAction::SetLot,
        ),
        gs1_rule("part", &["01", "21"], RuleAction::Product),
        gs1_rule("material", &["01", "10"], RuleAction::ConsumeMaterial),
        rule("serial", r"^SN(?P<value>[0-9]+)$", RuleAction::Product),
    ];
    cfg.lot = LotConfig {
        numbering: Some(LotNumbering {
            template: Template::parse("{station}-{seq:3}").unwrap(),
            template_text: "{station}-{seq:3}".into(),
            reset: Reset::Never,
        }),
        good: Some("good".into()),
        scrap: Some("scrap".into()),
        ..LotConfig::default()
    };
    cfg
}

fn scan(raw: &[u8]) -> Reading {
    scan_at(42, raw)
}

fn scan_at(ts_ms: u64, raw: &[u8]) -> Reading {
    Reading {
        device: Arc::from("scanner-1"),
        station: Arc::from("st10"),
        ts_ms,
        event: DeviceEvent::Scan(raw.to_vec()),
    }
}

fn build(
    stations: &[StationConfig],
    devices: &[DeviceConfig],
    calendar: &Calendar,
    disk: &mut BTreeMap<String, Vec<u8>>,
) -> Stations {
    Stations::new(
        Setup {
            site: "plant1",
            line: "line3",
            calendar,
            stations,
            devices,
        },
        disk,
    )
}

fn stations() -> Stations {
    build(
        &[station_cfg()],
        &[],
        &Calendar::utc(),
        &mut BTreeMap::new(),
    )
}

fn cmd(id: &str, station: &str, action: CommandAction) -> Command {
    Command {
        name: "set-lot".into(),
        id: id.into(),
        station: station.into(),
        action,
        payload: "{}".into(),
        origin: CommandOrigin::Mes,
        remember_until_ms: None,
    }
}

/// Stations plus the durable state a store would hold.
struct Rig {
    stations: Vec<StationConfig>,
    devices: Vec<DeviceConfig>,
    calendar: Calendar,
    disk: BTreeMap<String, Vec<u8>>,
    s: Stations,
    next_id: u32,
}

impl Rig {
    fn new(stations: Vec<StationConfig>, devices: Vec<DeviceConfig>, calendar: Calendar) -> Rig {
        let mut disk = BTreeMap::new();
        let s = build(&stations, &devices, &calendar, &mut disk);
        Rig {
            stations,
            devices,
            calendar,
            disk,
            s,
            next_id: 0,
        }
    }

    fn full() -> Rig {
        Rig::new(vec![full_cfg()], vec![], Calendar::utc())
    }

    /// Commit: apply the state writes, return the records.
    fn commit(&mut self, e: Emitted) -> Vec<Record> {
        for (k, v) in e.state {
            match v {
                Some(v) => self.disk.insert(k, v),
                None => self.disk.remove(&k),
            };
        }
        e.records
    }

    fn restart(&mut self) {
        self.s = build(
            &self.stations,
            &self.devices,
            &self.calendar,
            &mut self.disk,
        );
    }

    fn scan(&mut self, ts_ms: u64, raw: &[u8]) -> Vec<Record> {
        let e = self.s.on_reading(&scan_at(ts_ms, raw), true);
        self.commit(e)
    }

    fn command(
        &mut self,
        ts_ms: u64,
        action: CommandAction,
    ) -> (Result<(), Rejection>, Vec<Record>) {
        self.next_id += 1;
        let c = cmd(&format!("c{}", self.next_id), "st10", action);
        let (verdict, e) = self.s.on_command(&c, ts_ms, true);
        (verdict, self.commit(e))
    }

    fn command_ok(&mut self, ts_ms: u64, action: CommandAction) -> Vec<Record> {
        let (verdict, records) = self.command(ts_ms, action);
        assert_eq!(verdict, Ok(()));
        records
    }

    fn tick(&mut self, ts_ms: u64) -> Vec<Record> {
        let e = self.s.on_tick(ts_ms, true);
        self.commit(e)
    }

    fn ctx(&self) -> Context {
        self.s.context("st10").unwrap().clone()
    }
}

fn kinds(records: &[Record]) -> Vec<&'static str> {
    records.iter().map(|r| r.body.kind()).collect()
}

fn lot_event(r: &Record) -> (LotEvent, Option<&str>) {
    match &r.body {
        Body::Lot { event, .. } => (*event, r.lot.as_deref()),
        other => panic!("not a lot record: {other:?}"),
    }
}

fn totals(r: &Record) -> &crate::record::LotTotals {
    match &r.body {
        Body::Lot {
            totals: Some(t), ..
        } => t,
        other => panic!("not a closing lot record: {other:?}"),
    }
}

fn reject_reason(r: &Record) -> RejectReason {
    match &r.body {
        Body::Reject { reason, .. } => *reason,
        other => panic!("not a reject: {other:?}"),
    }
}

#[test]
fn scans_are_stamped_with_current_context_and_absent_when_unknown() {
    let mut s = stations();
    let first = s.on_reading(&scan(b"]d2010950600013435210ABC\x1d21X"), false);
    assert_eq!(first.records.len(), 1);
    let r = &first.records[0];
    assert_eq!((r.lot.as_deref(), r.order.as_deref()), (None, None));
    match &r.body {
        Body::Scan { raw, gs1 } => {
            assert_eq!(raw, b"]d2010950600013435210ABC\x1d21X");
            assert!(gs1.is_some(), "a GS1 scan carries its reading");
        }
        other => panic!("unexpected {other:?}"),
    }
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
    // (scan, kinds emitted, lot after, order after)
    type Case<'a> = (&'a [u8], &'a [&'a str], Option<&'a str>, Option<&'a str>);
    let cases: &[Case] = &[
        (b"LOT:A1", &["lot"], Some("A1"), None),
        (b"LOT:", &["scan"], None, None), // pattern needs a value: no match
        (b"lot:a1", &["scan"], None, None), // case matters
        (b"WO000001", &["context"], None, Some("WO000001")),
        (b"WO00001", &["scan"], None, None),
        (b"xLOT:A1", &["scan"], None, None),
        (b"]C0LOT:A2", &["lot"], Some("A2"), None), // AIM id is not part of the text
    ];
    for (raw, expected, lot, order) in cases {
        let mut s = stations();
        let out = s.on_reading(&scan(raw), false);
        assert_eq!(
            kinds(&out.records),
            *expected,
            "scan {:?}",
            String::from_utf8_lossy(raw)
        );
        let ctx = s.context("st10").unwrap();
        assert_eq!((ctx.lot.as_deref(), ctx.order.as_deref()), (*lot, *order));
        assert_eq!(out.state.is_empty(), expected == &["scan"]);
    }
}

#[test]
fn full_rule_table() {
    // Each case starts from an open lot L1 and order WO000001.
    // (scan, kinds emitted)
    let cases: &[(&[u8], &[&str])] = &[
        (b"TEST-123", &["reject"]),
        (b"OP0042", &["context"]),
        (b"]d2010950600013435221SN000123", &["product"]),
        (b"]d20109506000134352\x1d21SN000124", &["product"]),
        (b"]d2010950600013435210B7781\x1d21SN9", &["product"]), // 01+21 wins over 01+10: order
        (b"]d20109506000134352172612311 0B7781", &["scan"]),    // bad GS1: no rule
        (b"]d2010950600013435217261231 10B7781", &["scan"]),
        (b"]d201095060001343521726123110B7781", &["context"]), // material (01, 17, 10)
        (b"010950600013435210B7782", &["context"]),            // no AIM: gs1 rules force GS1
        (b"SN77", &["product"]),
        (b"SN", &["scan"]),
        (b"random", &["scan"]),
    ];
    for (raw, expected) in cases {
        let mut rig = Rig::full();
        rig.command_ok(1, CommandAction::OpenLot(Some("L1".into())));
        rig.scan(2, b"WO000001");
        let out = rig.scan(3, raw);
        assert_eq!(
            kinds(&out),
            *expected,
            "scan {:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(out.iter().all(|r| r.lot.as_deref() == Some("L1")));
    }
}

#[test]
fn a_scanned_lot_label_closes_the_open_lot_and_opens_it() {
    let mut rig = Rig::full();
    let out = rig.scan(10, b"LOT:A");
    assert_eq!(kinds(&out), ["lot"]);
    assert_eq!(lot_event(&out[0]), (LotEvent::Opened, Some("A")));
    let out = rig.scan(20, b"LOT:B");
    assert_eq!(kinds(&out), ["lot", "lot"]);
    assert_eq!(lot_event(&out[0]), (LotEvent::Closed, Some("A")));
    assert_eq!(lot_event(&out[1]), (LotEvent::Opened, Some("B")));
    assert_eq!(totals(&out[0]).opened_ms, 10);
    assert_eq!(totals(&out[0]).closed_ms, 20);
    match &out[1].body {
        Body::Lot {
            source: ContextSource::Scan { rule, .. },
            number_seq: None,
            ..
        } => assert_eq!(rule, "lot-label"),
        other => panic!("unexpected {other:?}"),
    }
    // The same label again changes nothing but is still recorded.
    assert_eq!(kinds(&rig.scan(30, b"LOT:B")), ["scan"]);
    rig.restart();
    assert_eq!(rig.ctx().lot.as_deref(), Some("B"));
}

#[test]
fn products_need_an_open_lot_and_unique_serials() {
    let mut rig = Rig::full();
    let out = rig.scan(1, b"SN1");
    assert_eq!(reject_reason(&out[0]), RejectReason::NoLotOpen);
    assert!(
        matches!(&out[0].body, Body::Reject { message, .. } if message.contains("no lot is open"))
    );

    rig.command_ok(2, CommandAction::OpenLot(Some("L1".into())));
    assert_eq!(kinds(&rig.scan(3, b"SN1")), ["product"]);
    let dup = rig.scan(4, b"SN1");
    assert_eq!(reject_reason(&dup[0]), RejectReason::DuplicateSerial);
    assert!(
        matches!(&dup[0].body, Body::Reject { message, .. } if message.contains("SN") || message.contains("1"))
    );

    // A restart keeps the serials of the open lot.
    rig.restart();
    assert_eq!(
        reject_reason(&rig.scan(5, b"SN1")[0]),
        RejectReason::DuplicateSerial
    );

    // The lot window: a new lot accepts the serial again, and the old
    // lot's serials are gone from the disk.
    rig.command_ok(6, CommandAction::OpenLot(Some("L2".into())));
    assert!(!rig.disk.keys().any(|k| k.starts_with("ser/")));
    assert_eq!(kinds(&rig.scan(7, b"SN1")), ["product"]);
}

#[test]
fn a_time_window_refuses_serials_across_lots_until_they_age_out() {
    let mut cfg = full_cfg();
    cfg.lot.duplicate_window = DuplicateWindow::Time(Duration::from_secs(60));
    let mut rig = Rig::new(vec![cfg], vec![], Calendar::utc());
    rig.command_ok(0, CommandAction::OpenLot(Some("L1".into())));
    assert_eq!(kinds(&rig.scan(1_000, b"SN1")), ["product"]);
    rig.command_ok(2_000, CommandAction::OpenLot(Some("L2".into())));
    assert_eq!(
        reject_reason(&rig.scan(3_000, b"SN1")[0]),
        RejectReason::DuplicateSerial
    );
    rig.restart();
    assert_eq!(
        reject_reason(&rig.scan(60_999, b"SN1")[0]),
        RejectReason::DuplicateSerial
    );
    assert_eq!(kinds(&rig.scan(61_000, b"SN1")), ["product"]);
    rig.tick(200_000);
    assert_eq!(
        rig.disk.keys().filter(|k| k.starts_with("ser/")).count(),
        0,
        "aged out"
    );
}

#[test]
fn materials_bind_to_the_lot_and_respect_the_order_material_list() {
    let mut rig = Rig::full();
    let material = b"]d201095060001343521726123110B7781\x1d21SN5";
    assert_eq!(
        reject_reason(&rig.scan(1, material)[0]),
        RejectReason::NoLotOpen
    );
    rig.command_ok(2, CommandAction::OpenLot(Some("L1".into())));
    let out = rig.scan(3, b"]d2010950600013435217261231");
    assert_eq!(kinds(&out), ["scan"], "01+17 alone matches no rule");
    let out = rig.scan(4, b"]d201095060001343521726123110B7781");
    match &out[0].body {
        Body::Context {
            field: ContextField::Material,
            value,
            material: Some(m),
            ..
        } => {
            assert_eq!(value.as_deref(), Some("B7781"));
            assert_eq!(
                m,
                &Material {
                    gtin: Some("09506000134352".into()),
                    lot: Some("B7781".into()),
                    serial: None,
                    expiry: Some("261231".into()),
                }
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The MES sends the order with its material list: another GTIN is refused.
    let (ok, _) = rig.command(
        5,
        CommandAction::SetOrder {
            order: Some("WO000002".into()),
            materials: Some(vec!["04150000021126".into()]),
        },
    );
    assert_eq!(ok, Ok(()));
    let out = rig.scan(6, b"]d201095060001343521726123110B7781");
    assert_eq!(reject_reason(&out[0]), RejectReason::MaterialNotAllowed);
    assert!(
        matches!(&out[0].body, Body::Reject { message, .. } if message.contains("09506000134352") && message.contains("WO000002"))
    );
    assert_eq!(
        kinds(&rig.scan(7, b"]d20104150000021126\x1d10X1")),
        ["context"]
    );
    // A plain order scan clears the list.
    rig.scan(8, b"WO000003");
    assert_eq!(
        kinds(&rig.scan(9, b"]d201095060001343521726123110B7781")),
        ["context"]
    );
}

#[test]
fn badges_log_in_log_out_and_replace() {
    let mut rig = Rig::full();
    let out = rig.scan(1, b"OP0001");
    assert_eq!(out[0].operator.as_deref(), Some("0001"));
    assert_eq!(rig.ctx().operator.as_deref(), Some("0001"));
    assert_eq!(rig.scan(2, b"random")[0].operator.as_deref(), Some("0001"));
    // Another badge replaces.
    let out = rig.scan(3, b"OP0002");
    match &out[0].body {
        Body::Context {
            field: ContextField::Operator,
            value,
            previous,
            ..
        } => {
            assert_eq!(
                (value.as_deref(), previous.as_deref()),
                (Some("0002"), Some("0001"))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The same badge again logs out.
    let out = rig.scan(4, b"OP0002");
    assert_eq!(out[0].operator, None);
    assert_eq!(rig.scan(5, b"random")[0].operator, None);
    rig.scan(6, b"OP0003");
    rig.restart();
    assert_eq!(rig.scan(7, b"random")[0].operator.as_deref(), Some("0003"));
}

#[test]
fn an_operator_logging_in_elsewhere_is_logged_out_here() {
    let mut other = full_cfg();
    other.id = "st20".into();
    let mut rig = Rig::new(vec![full_cfg(), other], vec![], Calendar::utc());
    rig.scan(1, b"OP0001");
    let mut at_st20 = scan_at(2, b"OP0001");
    at_st20.station = Arc::from("st20");
    let e = rig.s.on_reading(&at_st20, true);
    let out = rig.commit(e);
    assert_eq!(kinds(&out), ["context", "context"]);
    assert_eq!(out[0].station.as_deref(), Some("st20"));
    assert_eq!(out[1].station.as_deref(), Some("st10"));
    assert!(
        matches!(&out[1].body, Body::Context { value: None, source: ContextSource::Moved { station }, .. } if station == "st20")
    );
    assert_eq!(rig.ctx().operator, None);
}

fn berlin_shifts() -> Calendar {
    Calendar::new(
        "Europe/Berlin",
        vec![
            Shift {
                name: "A".into(),
                start_minute: 6 * 60,
            },
            Shift {
                name: "B".into(),
                start_minute: 14 * 60,
            },
            Shift {
                name: "C".into(),
                start_minute: 22 * 60,
            },
        ],
    )
    .unwrap()
}

/// 2026-11-23 at `h:m` Berlin time (UTC+1 in November), as ms since the epoch.
fn berlin(h: u64, m: u64) -> u64 {
    // 2026-11-23T00:00:00Z
    const DAY: u64 = 1_795_392_000_000;
    DAY + ((h * 60 + m) * 60_000) - 3_600_000
}

#[test]
fn operators_are_logged_out_at_shift_end_and_when_idle() {
    let mut cfg = full_cfg();
    cfg.operator = OperatorConfig {
        logout_at_shift_end: true,
        idle_logout: Some(Duration::from_secs(30 * 60)),
    };
    let mut rig = Rig::new(vec![cfg.clone()], vec![], berlin_shifts());
    rig.tick(berlin(12, 0));
    rig.scan(berlin(13, 40), b"OP0001");
    assert!(rig.tick(berlin(13, 59)).is_empty());
    let out = rig.tick(berlin(14, 0));
    assert_eq!(kinds(&out), ["context"]);
    assert!(
        matches!(&out[0].body, Body::Context { value: None, previous: Some(p), source: ContextSource::Boundary { boundary: Boundary::Shift }, .. } if p == "0001")
    );

    // Badged in 10 minutes before the change: the next shift's operator.
    let mut early = Rig::new(vec![cfg], vec![], berlin_shifts());
    early.tick(berlin(12, 0));
    early.scan(berlin(13, 50), b"OP0003");
    early.restart();
    early.tick(berlin(13, 59));
    assert!(early.tick(berlin(14, 0)).is_empty());
    assert_eq!(early.ctx().operator.as_deref(), Some("0003"));

    rig.scan(berlin(15, 0), b"OP0002");
    for m in 1..=49 {
        if m == 20 {
            rig.scan(berlin(15, 20), b"random");
        }
        assert!(rig.tick(berlin(15, m)).is_empty(), "15:{m}");
    }
    let out = rig.tick(berlin(15, 50));
    assert!(matches!(
        &out[0].body,
        Body::Context {
            value: None,
            source: ContextSource::Idle,
            ..
        }
    ));

    // A clock step forward (NTP after boot) is a gap, not idleness.
    rig.scan(berlin(16, 0), b"OP0004");
    rig.tick(berlin(16, 1));
    assert!(rig.tick(berlin(18, 0)).is_empty());
    assert_eq!(rig.ctx().operator.as_deref(), Some("0004"));
}

#[test]
fn lots_rotate_at_the_shift_boundary_in_plant_time_and_across_a_restart() {
    let mut cfg = full_cfg();
    cfg.lot.rotate = Rotate::Shift;
    let mut rig = Rig::new(vec![cfg], vec![], berlin_shifts());
    rig.tick(berlin(5, 0));
    rig.command_ok(berlin(5, 1), CommandAction::OpenLot(None));
    assert_eq!(rig.ctx().lot.as_deref(), Some("st10-001"));
    assert!(
        rig.tick(berlin(5, 59)).is_empty(),
        "05:59 local is still shift C"
    );
    let out = rig.tick(berlin(6, 0));
    assert_eq!(kinds(&out), ["lot", "lot"]);
    assert_eq!(lot_event(&out[0]), (LotEvent::Closed, Some("st10-001")));
    assert_eq!(lot_event(&out[1]), (LotEvent::Opened, Some("st10-002")));
    assert!(matches!(
        &out[1].body,
        Body::Lot {
            source: ContextSource::Boundary {
                boundary: Boundary::Shift
            },
            number_seq: Some(2),
            ..
        }
    ));
    // Down over the next boundary: the rotation happens at the first tick after.
    rig.restart();
    let out = rig.tick(berlin(14, 30));
    assert_eq!(lot_event(&out[1]), (LotEvent::Opened, Some("st10-003")));
    // The clock going back a little over the boundary does not rotate again.
    assert!(rig.tick(berlin(13, 45)).is_empty());
    assert!(rig.tick(berlin(14, 31)).is_empty());
    // Far back (it had run ahead): re-baselined, with an alarm, so shift
    // handling does not stop until the clock catches up again.
    let out = rig.tick(berlin(12, 0));
    assert!(
        matches!(&out[..], [r] if matches!(r.body, Body::Alarm { event: AlarmEvent::ClockWentBack, .. }))
    );
    let out = rig.tick(berlin(14, 0));
    assert_eq!(
        lot_event(out.last().unwrap()),
        (LotEvent::Opened, Some("st10-004"))
    );
}

#[test]
fn a_day_rotation_with_shifts_follows_the_production_day() {
    let mut cfg = full_cfg();
    cfg.lot.rotate = Rotate::Day;
    let mut rig = Rig::new(vec![cfg], vec![], berlin_shifts());
    rig.tick(berlin(21, 0));
    rig.command_ok(berlin(21, 1), CommandAction::OpenLot(None));
    assert!(
        rig.tick(berlin(22, 0)).is_empty(),
        "shift C starts, same day"
    );
    // Midnight is inside the night shift: no new day yet.
    assert!(rig.tick(berlin(24, 0)).is_empty());
    let out = rig.tick(berlin(24 + 6, 0));
    assert_eq!(kinds(&out), ["lot", "lot"]);
    assert!(matches!(
        &out[1].body,
        Body::Lot {
            source: ContextSource::Boundary {
                boundary: Boundary::Day
            },
            ..
        }
    ));
}

#[test]
fn commands_open_and_close_lots() {
    let mut rig = Rig::full();
    let (v, out) = rig.command(1, CommandAction::CloseLot);
    assert_eq!(v, Err(Rejection::NoLotOpen("st10".into())));
    assert_eq!(kinds(&out), ["audit"]);
    let (v, out) = rig.command(2, CommandAction::OpenLot(None));
    assert_eq!(v, Ok(()));
    assert_eq!(kinds(&out), ["audit", "lot"]);
    assert_eq!(lot_event(&out[1]), (LotEvent::Opened, Some("st10-001")));
    let (_, out) = rig.command(3, CommandAction::OpenLot(None));
    assert_eq!(kinds(&out), ["audit", "lot", "lot"]);
    assert_eq!(lot_event(&out[2]), (LotEvent::Opened, Some("st10-002")));
    let (v, out) = rig.command(4, CommandAction::CloseLot);
    assert_eq!(v, Ok(()));
    assert_eq!(lot_event(&out[1]), (LotEvent::Closed, Some("st10-002")));
    assert_eq!(rig.ctx().lot, None);

    // Without a template only named lots open.
    let mut plain = Rig::new(vec![station_cfg()], vec![], Calendar::utc());
    let (v, _) = plain.command(1, CommandAction::OpenLot(None));
    assert_eq!(v, Err(Rejection::NoTemplate("st10".into())));
    let (v, _) = plain.command(2, CommandAction::OpenLot(Some("L7".into())));
    assert_eq!(v, Ok(()));
}

#[test]
fn auto_open_keeps_a_lot_open() {
    let mut cfg = full_cfg();
    cfg.lot.auto_open = true;
    let mut rig = Rig::new(vec![cfg], vec![], Calendar::utc());
    let out = rig.tick(1);
    assert!(matches!(
        &out[0].body,
        Body::Lot {
            event: LotEvent::Opened,
            source: ContextSource::Auto,
            ..
        }
    ));
    assert!(rig.tick(2).is_empty());
    let (_, out) = rig.command(3, CommandAction::CloseLot);
    assert_eq!(kinds(&out), ["audit", "lot", "lot"]);
    assert_eq!(rig.ctx().lot.as_deref(), Some("st10-002"));
}

#[test]
fn a_lot_number_is_never_issued_twice_nor_skipped_across_crashes() {
    let mut rig = Rig::full();
    rig.command_ok(1, CommandAction::OpenLot(None));
    // Allocated but the commit never happened (SIGKILL): the number is not issued.
    let c = cmd("lost", "st10", CommandAction::OpenLot(None));
    let (_, lost) = rig.s.on_command(&c, 2, true);
    assert_eq!(
        lot_event(&lost.records[2]),
        (LotEvent::Opened, Some("st10-002"))
    );
    drop(lost);
    rig.restart();
    assert_eq!(rig.ctx().lot.as_deref(), Some("st10-001"));
    let (_, out) = rig.command(3, CommandAction::OpenLot(None));
    assert_eq!(
        lot_event(&out[2]),
        (LotEvent::Opened, Some("st10-002")),
        "not skipped"
    );
    rig.restart();
    let (_, out) = rig.command(4, CommandAction::OpenLot(None));
    assert_eq!(
        lot_event(&out[2]),
        (LotEvent::Opened, Some("st10-003")),
        "not repeated"
    );
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
            message: Some("EIO".into()),
            store: None,
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
    assert_eq!(kinds(&out.records), ["audit", "lot"]);
    assert_eq!(out.records[1].lot.as_deref(), Some("L9"));

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
        &cmd(
            "c2",
            "nowhere",
            CommandAction::SetOrder {
                order: None,
                materials: None,
            },
        ),
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
        "a null value closes the lot"
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
                    register("scrap", Role::Counter, DataType::U16),
                    register("run", Role::State, DataType::U16),
                    register("temp", Role::Value, DataType::F32),
                ],
            }),
        }
    }

    fn with_plc(device: DeviceConfig, disk: &mut BTreeMap<String, Vec<u8>>) -> Stations {
        build(&[station_cfg()], &[device], &Calendar::utc(), disk)
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
        let mut s = with_plc(plc(None), &mut BTreeMap::new());
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
        let persisted = out.state[0].1.clone().unwrap();
        let mut disk = BTreeMap::from([("ctr/plc/good".to_owned(), persisted)]);
        let mut restarted = with_plc(plc(None), &mut disk);
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
        let mut s = with_plc(plc(None), &mut BTreeMap::new());
        let out = poll(&mut s, 1000, count(100));
        let persisted = out.state[0].1.clone().unwrap();
        let mut disk = BTreeMap::from([("ctr/plc/good".to_owned(), persisted)]);

        // Same mapping after a restart: the delta counts from the mark.
        let mut same = with_plc(plc(None), &mut disk.clone());
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
        let mut remapped = with_plc(remapped_cfg, &mut disk);
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
        let mut s = with_plc(plc(Some(Duration::from_secs(10))), &mut BTreeMap::new());
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
        let mut s = with_plc(plc(None), &mut BTreeMap::new());
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

    #[test]
    fn a_count_target_closes_the_lot_with_its_totals_and_opens_the_next() {
        let mut cfg = full_cfg();
        cfg.lot.target = Some(10);
        let mut rig = Rig::new(vec![cfg], vec![plc(None)], Calendar::utc());
        let counts = |good: u64, scrap: u64| {
            vec![
                sample("good", Role::Counter, good, good as f64),
                sample("scrap", Role::Counter, scrap, scrap as f64),
            ]
        };
        rig.scan(1, b"OP0001");
        rig.scan(2, b"WO000001");
        rig.command_ok(3, CommandAction::OpenLot(None));
        let e = poll(&mut rig.s, 4, counts(100, 5));
        rig.commit(e);
        rig.scan(5, b"]d201095060001343521726123110B7781");
        rig.scan(6, b"]d201095060001343521726123110B7781");
        rig.scan(7, b"SN1");
        rig.scan(8, b"SN2");
        rig.scan(9, b"TEST-1");
        let e = poll(&mut rig.s, 10, counts(104, 6));
        rig.commit(e);
        // Totals so far survive a restart.
        rig.restart();
        let e = poll(&mut rig.s, 11, counts(111, 6));
        let out = rig.commit(e);
        assert_eq!(kinds(&out), ["count", "lot", "lot"]);
        assert_eq!(
            out[0].lot.as_deref(),
            Some("st10-001"),
            "the count belongs to the closing lot"
        );
        assert_eq!(lot_event(&out[1]), (LotEvent::Closed, Some("st10-001")));
        let t = totals(&out[1]);
        assert_eq!((t.good, t.scrap), (Some(11), Some(1)));
        assert_eq!(t.counts.get("good"), Some(&11));
        assert_eq!((t.products, t.rejects), (2, 1));
        assert_eq!(t.materials.len(), 1);
        assert_eq!(t.materials[0].count, 2);
        assert_eq!(t.materials[0].lot.as_deref(), Some("B7781"));
        assert_eq!(t.operators, ["0001"]);
        assert_eq!(t.orders, ["WO000001"]);
        assert_eq!((t.opened_ms, t.closed_ms), (3, 11));
        assert_eq!(lot_event(&out[2]), (LotEvent::Opened, Some("st10-002")));
        assert!(
            matches!(&out[2].body, Body::Lot { source: ContextSource::Target { counter, target: 10 }, .. } if counter == "good")
        );
        assert_eq!(
            out[2].operator.as_deref(),
            Some("0001"),
            "context carries over"
        );
        // The next lot counts from zero.
        let e = poll(&mut rig.s, 12, counts(115, 6));
        rig.commit(e);
        let (_, out) = rig.command(13, CommandAction::CloseLot);
        assert_eq!(totals(&out[1]).good, Some(4));
    }
}

#[test]
fn named_groups_give_the_serial_and_the_usual_ai_beats_a_narrowing_pattern() {
    let mut cfg = full_cfg();
    cfg.scan_rules = vec![
        rule("p-serial", r"^P(?P<serial>[0-9]+)X$", RuleAction::Product),
        {
            // A GS1 part rule narrowed to one GTIN by a pattern.
            let mut r = gs1_rule("gtin-part", &["01", "21"], RuleAction::Product);
            r.pattern = Some(regex::Regex::new("^0109506000").unwrap());
            r
        },
        {
            let mut r = rule(
                "m",
                r"^M(?P<gtin>[0-9]{13}):(?P<lot>[A-Z0-9]+)$",
                RuleAction::ConsumeMaterial,
            );
            r.gs1 = vec![];
            r
        },
    ];
    let mut rig = Rig::new(vec![cfg], vec![], Calendar::utc());
    rig.command_ok(1, CommandAction::OpenLot(Some("L1".into())));
    let serial = |r: &Record| match &r.body {
        Body::Product { serial, .. } => serial.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(serial(&rig.scan(2, b"P123X")[0]), "123");
    assert_eq!(
        serial(&rig.scan(3, b"]d20109506000134352\x1d21A1")[0]),
        "A1"
    );
    assert_eq!(
        serial(&rig.scan(4, b"]d20109506000134352\x1d21A2")[0]),
        "A2"
    );
    // A 13-digit GTIN from a group is padded like the order's list.
    rig.command_ok(
        5,
        CommandAction::SetOrder {
            order: Some("WO1".into()),
            materials: Some(vec!["09506000134352".into()]),
        },
    );
    let out = rig.scan(6, b"M9506000134352:B1");
    assert!(
        matches!(&out[0].body, Body::Context { material: Some(m), .. } if m.gtin.as_deref() == Some("09506000134352"))
    );
}

#[test]
fn naming_the_open_lot_again_changes_nothing() {
    let mut rig = Rig::full();
    rig.command_ok(1, CommandAction::OpenLot(Some("L1".into())));
    rig.scan(2, b"SN1");
    let (v, out) = rig.command(3, CommandAction::SetLot(Some("L1".into())));
    assert_eq!((v, kinds(&out)), (Ok(()), vec!["audit"]));
    assert_eq!(
        reject_reason(&rig.scan(4, b"SN1")[0]),
        RejectReason::DuplicateSerial
    );
}

#[test]
fn the_same_order_again_keeps_its_material_list() {
    let mut rig = Rig::full();
    rig.command_ok(1, CommandAction::OpenLot(Some("L1".into())));
    rig.command_ok(
        2,
        CommandAction::SetOrder {
            order: Some("WO000001".into()),
            materials: Some(vec!["04150000021126".into()]),
        },
    );
    rig.scan(3, b"WO000001");
    let out = rig.scan(4, b"]d201095060001343521726123110B7781");
    assert_eq!(reject_reason(&out[0]), RejectReason::MaterialNotAllowed);
}

#[test]
fn good_and_scrap_are_zero_not_null_when_nothing_was_counted() {
    let mut rig = Rig::full();
    rig.command_ok(1, CommandAction::OpenLot(None));
    let (_, out) = rig.command(2, CommandAction::CloseLot);
    let t = totals(&out[1]);
    assert_eq!((t.good, t.scrap), (Some(0), Some(0)));
    let mut plain = Rig::new(vec![station_cfg()], vec![], Calendar::utc());
    plain.command_ok(1, CommandAction::OpenLot(Some("L".into())));
    let (_, out) = plain.command(2, CommandAction::CloseLot);
    assert_eq!((totals(&out[1]).good, totals(&out[1]).scrap), (None, None));
}

#[test]
fn a_lot_named_by_an_older_context_is_adopted_at_start() {
    let mut rig = Rig::full();
    // What an earlier version left: a context with a lot, no lot state.
    rig.disk
        .insert("ctx/st10".into(), br#"{"lot":"OLD-1"}"#.to_vec());
    rig.restart();
    assert_eq!(kinds(&rig.scan(1, b"SN1")), ["product"]);
    assert_eq!(
        kinds(&rig.scan(2, b"LOT:OLD-1")),
        ["scan"],
        "same label: no change"
    );
    rig.tick(5_000);
    let (v, out) = rig.command(6_000, CommandAction::CloseLot);
    assert_eq!(v, Ok(()));
    assert_eq!(lot_event(&out[1]), (LotEvent::Closed, Some("OLD-1")));
    assert_eq!(
        (totals(&out[1]).opened_ms, totals(&out[1]).products),
        (5_000, 1)
    );
}

#[test]
fn unreadable_numbering_state_stops_generated_numbers_until_the_template_changes() {
    let mut rig = Rig::full();
    rig.command_ok(1, CommandAction::OpenLot(None));
    rig.disk.insert("lot/st10".into(), b"{damaged".to_vec());
    rig.restart();
    let out = rig.tick(2);
    assert!(out.iter().any(|r| matches!(&r.body, Body::Alarm { event: AlarmEvent::LotNotOpened, message: Some(m), .. } if m.contains("unreadable"))));
    let (v, _) = rig.command(3, CommandAction::OpenLot(None));
    assert!(matches!(v, Err(Rejection::NumberingBlocked(_))), "{v:?}");
    // Named lots still open; the block survives a restart.
    rig.command_ok(4, CommandAction::OpenLot(Some("HAND-1".into())));
    rig.restart();
    assert!(matches!(
        rig.command(5, CommandAction::OpenLot(None)).0,
        Err(Rejection::NumberingBlocked(_))
    ));
    // A new template lifts it.
    rig.stations[0].lot.numbering = Some(LotNumbering {
        template: Template::parse("N{station}-{seq:3}").unwrap(),
        template_text: "N{station}-{seq:3}".into(),
        reset: Reset::Never,
    });
    rig.restart();
    let out = rig.command_ok(6, CommandAction::OpenLot(None));
    assert_eq!(lot_event(out.last().unwrap()).1, Some("Nst10-001"));
}

#[test]
fn command_ids_are_remembered_across_a_restart() {
    let mut rig = Rig::full();
    let c = cmd("mes-77", "st10", CommandAction::OpenLot(None));
    let (v, e) = rig.s.on_command(&c, 1, true);
    assert_eq!(v, Ok(()));
    rig.commit(e);
    rig.restart();
    let (v, e) = rig.s.on_command(&c, 2, true);
    assert_eq!(v, Err(Rejection::Duplicate("mes-77".into())));
    assert_eq!(kinds(&rig.commit(e)), ["audit"], "no second lot number");
}

/// A lot closed after more materials, operators and orders than one record
/// may list: the `closed` record is followed by `totals` records, numbered
/// part/parts, each listing at most `totals_per_part` entries; put together
/// they hold every list entry, and the material counts plus
/// `materials_untallied` add up to every material scanned.
#[test]
fn long_lot_lists_continue_in_totals_records_that_add_up() {
    let mut cfg = full_cfg();
    cfg.lot.totals_per_part = 10;
    let mut rig = Rig::new(vec![cfg], vec![], Calendar::utc());
    rig.command_ok(1, CommandAction::OpenLot(Some("L-BIG".into())));
    let scans = MAX_TOTALS_LIST + 44;
    for i in 0..scans {
        let raw = format!("]d2010950600013435210B{i:05}");
        let out = rig.scan(2, raw.as_bytes());
        assert_eq!(kinds(&out), ["context"], "{raw}");
    }
    // One material scanned twice more: counted, not listed again.
    rig.scan(3, b"]d2010950600013435210B00000");
    for i in 0..70 {
        rig.command_ok(4, CommandAction::SetOperator(Some(format!("OP{i}"))));
    }
    for i in 0..25 {
        let order = CommandAction::SetOrder {
            order: Some(format!("WO{i}")),
            materials: None,
        };
        rig.command_ok(5, order);
    }
    let out = rig.command_ok(6, CommandAction::CloseLot);
    let lots: Vec<&Record> = out
        .iter()
        .filter(|r| matches!(r.body, Body::Lot { .. }))
        .collect();
    let parts = MAX_TOTALS_LIST.div_ceil(10);
    assert_eq!(lots.len(), parts);
    let first = totals(lots[0]);
    let listed = first
        .listed
        .expect("the closed record says how long its lists are");
    assert_eq!(
        (listed.materials, listed.operators, listed.orders),
        (MAX_TOTALS_LIST as u64, 64, 25)
    );
    assert!(first.materials_truncated && first.operators_truncated && !first.orders_truncated);
    assert_eq!(first.materials_untallied, 44);
    let (mut materials, mut operators, mut orders) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in lots.iter().enumerate() {
        let Body::Lot { event, part, .. } = &r.body else {
            unreachable!()
        };
        let want = if i == 0 {
            LotEvent::Closed
        } else {
            LotEvent::Totals
        };
        assert_eq!(*event, want);
        assert_eq!(
            r.lot.as_deref(),
            Some("L-BIG"),
            "stamped with the closed lot"
        );
        let part = part.expect("numbered");
        assert_eq!((part.part as usize, part.parts as usize), (i + 1, parts));
        let t = totals(r);
        assert!(t.materials.len() <= 10 && t.operators.len() <= 10 && t.orders.len() <= 10);
        materials.extend(t.materials.iter().cloned());
        operators.extend(t.operators.iter().cloned());
        orders.extend(t.orders.iter().cloned());
    }
    // Every part follows the closed record directly.
    let at = out.iter().position(|r| std::ptr::eq(r, lots[0])).unwrap();
    assert!(
        out[at..at + parts]
            .iter()
            .all(|r| matches!(r.body, Body::Lot { .. }))
    );
    assert_eq!(materials.len(), MAX_TOTALS_LIST);
    assert_eq!(operators.len(), 64);
    assert_eq!(orders.len(), 25);
    let counted: u64 = materials.iter().map(|m| m.count).sum();
    assert_eq!(counted + first.materials_untallied, scans as u64 + 1);
}
