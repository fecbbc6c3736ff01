//! The MES wire format (docs/mqtt.md): record payloads, the retained status,
//! the last will and command results. Version `v` = 1.
//!
//! This is the only place that knows how a [`Record`] looks on the wire.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::clock::rfc3339_ms;
use crate::config::GatewayConfig;
use crate::devices::health::HealthSnapshot;
use crate::record::{Body, ContextSource, Gs1Reading, LotEvent, LotTotals, Record};
use crate::store::{CapacityStatus, Epoch, StoreStats};

/// Version of the payload contract.
pub const VERSION: u32 = 2;

/// The JSON payload of one record.
pub fn record(gw: &GatewayConfig, epoch: Option<Epoch>, r: &Record) -> Vec<u8> {
    let envelope = Envelope {
        clock_synced: r.clock_synced,
        data: data(&r.body),
        device: r.device.as_deref(),
        epoch: epoch.map(|e| e.to_string()),
        gateway: &gw.id,
        kind: r.body.kind(),
        line: &gw.line,
        lot: r.lot.as_deref(),
        operator: r.operator.as_deref(),
        order: r.order.as_deref(),
        seq: r.seq,
        site: &gw.site,
        station: r.station.as_deref(),
        ts: rfc3339_ms(r.ts_ms),
        v: VERSION,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// A record's fields around its `data`, serialized straight from the
/// record (one per published record: no intermediate JSON map). The fields
/// are in alphabetical order, the order a `serde_json::Map` writes them in,
/// so the bytes are those of earlier releases.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    clock_synced: bool,
    data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    gateway: &'a str,
    kind: &'static str,
    line: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lot: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a str>,
    seq: u64,
    site: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    station: Option<&'a str>,
    ts: String,
    v: u32,
}

/// The fields of a scanned code, shared by `scan`, `product`, `reject` and
/// by `context`/`lot` data that came from a scan.
fn code_fields(raw: &[u8], m: &mut Map<String, Value>) {
    let text = std::str::from_utf8(raw);
    m.insert("code".into(), json!(String::from_utf8_lossy(raw)));
    m.insert("utf8".into(), json!(text.is_ok()));
    m.insert("raw_b64".into(), json!(STANDARD.encode(raw)));
    if let [b']', c, d, ..] = raw
        && c.is_ascii_alphabetic()
        && d.is_ascii_alphanumeric()
    {
        m.insert(
            "symbology".into(),
            json!(format!("]{}{}", *c as char, *d as char)),
        );
    }
}

/// The GS1 reading of a code: `gs1` {AI: value} or `gs1_error`.
fn gs1_fields(gs1: &Option<Gs1Reading>, m: &mut Map<String, Value>) {
    match gs1 {
        None => {}
        Some(Gs1Reading::Elements(elements)) => {
            let ais: Map<String, Value> = elements
                .iter()
                .map(|e| (e.ai.clone(), json!(e.value)))
                .collect();
            m.insert("gs1".into(), Value::Object(ais));
        }
        Some(Gs1Reading::Error { code, message }) => {
            m.insert(
                "gs1_error".into(),
                json!({"code": code, "message": message}),
            );
        }
    }
}

/// Why a context change or a lot event happened.
fn source_fields(source: &ContextSource, m: &mut Map<String, Value>) {
    let name = match source {
        ContextSource::Scan { rule, raw } => {
            m.insert("rule".into(), json!(rule));
            code_fields(raw, m);
            "scan"
        }
        ContextSource::Command { id } => {
            m.insert("command_id".into(), json!(id));
            "command"
        }
        ContextSource::Local { id } => {
            m.insert("command_id".into(), json!(id));
            "local"
        }
        ContextSource::Target { counter, target } => {
            m.insert("counter".into(), json!(counter));
            m.insert("target".into(), json!(target));
            "target"
        }
        ContextSource::Boundary { boundary } => boundary.as_str(),
        ContextSource::Idle => "idle",
        ContextSource::Auto => "auto",
        ContextSource::Moved { station } => {
            m.insert("to_station".into(), json!(station));
            "moved"
        }
    };
    m.insert("source".into(), json!(name));
}

/// The fields of a `state` or `value` change.
fn change_fields(m: &mut Map<String, Value>, name: &str, value: Value, previous: Value) {
    m.insert("name".into(), json!(name));
    m.insert("value".into(), value);
    m.insert("previous".into(), previous);
}

fn totals_json(t: &LotTotals) -> Value {
    let mut m = Map::new();
    m.insert("opened".into(), json!(rfc3339_ms(t.opened_ms)));
    m.insert("closed".into(), json!(rfc3339_ms(t.closed_ms)));
    m.insert(
        "duration_s".into(),
        json!(t.closed_ms.saturating_sub(t.opened_ms) as f64 / 1000.0),
    );
    m.insert("good".into(), json!(t.good));
    m.insert("scrap".into(), json!(t.scrap));
    m.insert("counts".into(), json!(t.counts));
    m.insert("products".into(), json!(t.products));
    m.insert("rejects".into(), json!(t.rejects));
    lists_json(t, &mut m);
    m.insert("materials_truncated".into(), json!(t.materials_truncated));
    m.insert("materials_untallied".into(), json!(t.materials_untallied));
    m.insert("operators_truncated".into(), json!(t.operators_truncated));
    m.insert("orders_truncated".into(), json!(t.orders_truncated));
    if let Some(listed) = &t.listed {
        m.insert("materials_listed".into(), json!(listed.materials));
        m.insert("operators_listed".into(), json!(listed.operators));
        m.insert("orders_listed".into(), json!(listed.orders));
    }
    Value::Object(m)
}

/// The three lists of a lot's totals (a `closed` record's first part, or
/// a `totals` record's next part).
fn lists_json(t: &LotTotals, m: &mut Map<String, Value>) {
    let materials: Vec<Value> = t
        .materials
        .iter()
        .map(|mt| json!({"gtin": mt.gtin, "lot": mt.lot, "count": mt.count}))
        .collect();
    m.insert("materials".into(), Value::Array(materials));
    m.insert("operators".into(), json!(t.operators));
    m.insert("orders".into(), json!(t.orders));
}

/// A `totals` continuation: the next entries of the closed lot's lists.
fn totals_part_json(t: &LotTotals) -> Value {
    let mut m = Map::new();
    lists_json(t, &mut m);
    Value::Object(m)
}

fn data(body: &Body) -> Value {
    let mut m = Map::new();
    match body {
        Body::Scan { raw, gs1 } => {
            code_fields(raw, &mut m);
            gs1_fields(gs1, &mut m);
        }
        Body::Context {
            field,
            value,
            previous,
            source,
            material,
        } => {
            m.insert("field".into(), json!(field.as_str()));
            m.insert("value".into(), json!(value));
            m.insert("previous".into(), json!(previous));
            source_fields(source, &mut m);
            if let Some(mat) = material {
                m.insert("material".into(), json!(mat));
            }
        }
        Body::Lot {
            event,
            source,
            number_seq,
            totals,
            part,
        } => {
            m.insert("event".into(), json!(event.as_str()));
            let continued = *event == LotEvent::Totals;
            // A continuation carries only the lists: its `closed` record
            // already says why and how the lot closed.
            if !continued {
                source_fields(source, &mut m);
            }
            if let Some(n) = number_seq {
                m.insert("number_seq".into(), json!(n));
            }
            if let Some(p) = part {
                m.insert("part".into(), json!(p.part));
                m.insert("parts".into(), json!(p.parts));
            }
            if let Some(t) = totals {
                let t = if continued {
                    totals_part_json(t)
                } else {
                    totals_json(t)
                };
                m.insert("totals".into(), t);
            }
        }
        Body::Product {
            rule,
            serial,
            gtin,
            raw,
            gs1,
        } => {
            m.insert("rule".into(), json!(rule));
            m.insert("serial".into(), json!(serial));
            if let Some(g) = gtin {
                m.insert("gtin".into(), json!(g));
            }
            code_fields(raw, &mut m);
            gs1_fields(gs1, &mut m);
        }
        Body::Reject {
            reason,
            message,
            rule,
            raw,
            gs1,
        } => {
            m.insert("reason".into(), json!(reason.as_str()));
            m.insert("message".into(), json!(message));
            if let Some(r) = rule {
                m.insert("rule".into(), json!(r));
            }
            code_fields(raw, &mut m);
            gs1_fields(gs1, &mut m);
        }
        Body::Count {
            name,
            raw,
            delta,
            wrapped,
            reset,
            baseline,
            since_ms,
        } => {
            m.insert("name".into(), json!(name));
            m.insert("raw".into(), json!(raw));
            m.insert("delta".into(), json!(delta));
            m.insert("wrapped".into(), json!(wrapped));
            m.insert("reset".into(), json!(reset));
            m.insert("baseline".into(), json!(baseline));
            if let Some(since) = since_ms {
                m.insert("since".into(), json!(rfc3339_ms(*since)));
            }
        }
        Body::State {
            name,
            value,
            previous,
        } => change_fields(&mut m, name, json!(value), json!(previous)),
        Body::Value {
            name,
            value,
            previous,
        } => change_fields(&mut m, name, json!(value), json!(previous)),
        Body::Alarm {
            event,
            message,
            store,
        } => {
            m.insert("event".into(), json!(event.as_str()));
            if let Some(msg) = message {
                m.insert("message".into(), json!(msg));
            }
            if let Some(figures) = store
                && let Ok(Value::Object(fields)) = serde_json::to_value(figures)
            {
                m.extend(fields);
            }
        }
        Body::Audit {
            command,
            id,
            accepted,
            reason,
            payload,
            origin,
        } => {
            m.insert("command".into(), json!(command));
            m.insert("id".into(), json!(id));
            m.insert("accepted".into(), json!(accepted));
            if let Some(reason) = reason {
                m.insert("reason".into(), json!(reason));
            }
            m.insert("payload".into(), json!(payload));
            m.insert("origin".into(), json!(origin.as_str()));
        }
    }
    Value::Object(m)
}

/// The retained birth/status message.
pub fn status(
    gw: &GatewayConfig,
    now_ms: u64,
    stats: &StoreStats,
    capacity: &CapacityStatus,
    devices: &BTreeMap<String, HealthSnapshot>,
    uplink: &super::UplinkStats,
    config_generation: u64,
) -> Vec<u8> {
    let oldest_age_s = stats
        .oldest_ts_ms
        .map(|ts| now_ms.saturating_sub(ts) as f64 / 1000.0);
    let body = json!({
        "v": VERSION,
        "gateway": gw.id,
        "online": true,
        "ts": rfc3339_ms(now_ms),
        "version": env!("CARGO_PKG_VERSION"),
        "epoch": stats.epoch.map(|e| e.to_string()),
        "config": config_generation,
        "queue": {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "oldest_age_s": oldest_age_s,
            "last_seq": stats.last_seq,
            "corrupt": stats.corrupt,
            "max_bytes": capacity.max_bytes,
            "when_full": capacity.when_full,
            "full": capacity.full,
            "disk_full": capacity.disk_full,
            "disk_free_bytes": capacity.disk_free_bytes,
            "refused": capacity.refused,
            "dropped": capacity.dropped,
        },
        "devices": devices,
        "commands": {
            "received": uplink.commands_received,
            "accepted": uplink.commands_accepted,
            "refused": uplink.commands_refused,
            "busy": uplink.commands_busy,
            "unanswered": uplink.commands_unanswered,
        },
        "broker": {
            "connected": uplink.connected,
            "address": uplink.broker,
            "tls": uplink.tls,
            "connects": uplink.connects,
            "last_error": uplink.last_error.as_ref().map(|e| json!({
                "kind": e.kind,
                "broker": e.broker,
                "message": e.message,
                "ts": rfc3339_ms(e.ts_ms),
            })),
            "published": uplink.records_published,
            "refused": uplink.records_refused,
            "last_refusal": uplink.last_refusal,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The last will (and the message published on clean shutdown).
pub fn offline(gw: &GatewayConfig) -> Vec<u8> {
    serde_json::to_vec(&json!({"v": VERSION, "gateway": gw.id, "online": false}))
        .unwrap_or_default()
}

/// The result of a command, published on `…/cmd/{name}/result`.
pub fn command_result(
    gw: &GatewayConfig,
    name: &str,
    id: Option<&str>,
    outcome: &Result<(), String>,
    now_ms: u64,
) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("v".into(), json!(VERSION));
    m.insert("gateway".into(), json!(gw.id));
    m.insert("command".into(), json!(name));
    m.insert("id".into(), json!(id));
    m.insert("accepted".into(), json!(outcome.is_ok()));
    if let Err(reason) = outcome {
        m.insert("reason".into(), json!(reason));
    }
    m.insert("ts".into(), json!(rfc3339_ms(now_ms)));
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayConfig {
        GatewayConfig {
            id: "press-01".into(),
            site: "plant1".into(),
            line: "line3".into(),
            data_dir: "/tmp".into(),
        }
    }

    #[test]
    fn scan_payload_keeps_raw_bytes_and_names_the_symbology() {
        let raw = b"]d20109506000134352\x1d21SN1".to_vec();
        let rec = Record {
            seq: 9,
            ts_ms: 0,
            clock_synced: false,
            station: Some("st10".into()),
            device: Some("sc".into()),
            lot: None,
            order: Some("WO1".into()),
            operator: None,
            body: Body::Scan {
                raw: raw.clone(),
                gs1: None,
            },
        };
        let epoch: Epoch = "6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60".parse().unwrap();
        let v: Value = serde_json::from_slice(&record(&gw(), Some(epoch), &rec)).unwrap();
        assert_eq!(v["seq"], 9);
        assert_eq!(v["epoch"], "6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60");
        assert_eq!(v["kind"], "scan");
        assert_eq!(v["order"], "WO1");
        assert!(
            v.get("lot").is_none(),
            "unknown context is absent, not null"
        );
        assert_eq!(v["data"]["code"], "]d20109506000134352\u{1d}21SN1");
        assert_eq!(v["data"]["symbology"], "]d2");
        assert_eq!(v["data"]["utf8"], true);
        let b64 = v["data"]["raw_b64"].as_str().unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), raw);
    }

    #[test]
    fn record_bytes_have_their_keys_in_alphabetical_order() {
        // Earlier releases built the payload as a JSON map, which writes its
        // keys sorted: the bytes on the wire stay the same.
        let full = Record {
            seq: 12,
            ts_ms: 1_795_000_000_123,
            clock_synced: true,
            station: Some("st10".into()),
            device: Some("plc-1".into()),
            lot: Some("L1".into()),
            order: Some("WO1".into()),
            operator: Some("op7".into()),
            body: Body::Scan {
                raw: b"CODE-1".to_vec(),
                gs1: None,
            },
        };
        let bare = Record {
            station: None,
            device: None,
            lot: None,
            order: None,
            operator: None,
            ..full.clone()
        };
        let epoch: Epoch = "6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60".parse().unwrap();
        for (rec, epoch) in [(full, Some(epoch)), (bare, None)] {
            let bytes = record(&gw(), epoch, &rec);
            let as_map: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                serde_json::to_string(&as_map).unwrap()
            );
        }
    }
}

/// The published JSON Schema (docs/mqtt-record.schema.json) and the payloads
/// built here must not drift apart.
#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::gs1::Element;
    use crate::record::{
        AlarmEvent, Boundary, CommandOrigin, ContextField, Listed, Material, MaterialTally, Part,
        RejectReason, StoreFigures,
    };

    const SCHEMA: &str = include_str!("../../docs/mqtt-record.schema.json");

    fn sample(body: Body) -> Record {
        Record {
            seq: 1,
            ts_ms: 1,
            clock_synced: true,
            station: Some("st10".into()),
            device: Some("scanner-1".into()),
            lot: Some("L1".into()),
            order: Some("WO1".into()),
            operator: Some("op".into()),
            body,
        }
    }

    /// Required keys present, no key the schema does not list, enum values
    /// listed, nested objects checked the same way.
    fn check_object(value: &Value, schema: &Value, what: &str) {
        let obj = value.as_object().unwrap();
        let props = schema["properties"].as_object().unwrap();
        for req in schema["required"].as_array().into_iter().flatten() {
            assert!(
                obj.contains_key(req.as_str().unwrap()),
                "{what}: required `{req}` missing"
            );
        }
        for (key, v) in obj {
            let Some(prop) = props.get(key) else {
                panic!("{what}: `{key}` not in the schema");
            };
            if let Some(allowed) = prop["enum"].as_array() {
                assert!(allowed.contains(v), "{what}.{key}: {v} not in {allowed:?}");
            }
            if v.is_object() && prop["properties"].is_object() {
                check_object(v, prop, &format!("{what}.{key}"));
            }
        }
    }

    #[test]
    fn every_kind_matches_the_published_schema() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let elements = vec![
            Element {
                ai: "01".into(),
                value: "09506000134352".into(),
            },
            Element {
                ai: "10".into(),
                value: "B1".into(),
            },
        ];
        let bodies = [
            Body::Scan {
                raw: b"]d2010".to_vec(),
                gs1: Some(Gs1Reading::Error {
                    code: "too-short".into(),
                    message: "AI 01 is too short".into(),
                }),
            },
            Body::Scan {
                raw: b"]d20109506000134352".to_vec(),
                gs1: Some(Gs1Reading::Elements(elements.clone())),
            },
            Body::Context {
                field: ContextField::Operator,
                value: Some("OP1".into()),
                previous: None,
                source: ContextSource::Scan {
                    rule: "r".into(),
                    raw: b"OP1".to_vec(),
                },
                material: None,
            },
            Body::Context {
                field: ContextField::Order,
                value: None,
                previous: Some("WO1".into()),
                source: ContextSource::Command { id: "c1".into() },
                material: None,
            },
            Body::Context {
                field: ContextField::Material,
                value: Some("B1".into()),
                previous: None,
                source: ContextSource::Scan {
                    rule: "m".into(),
                    raw: b"]d2010950600013435210B1".to_vec(),
                },
                material: Some(Material {
                    gtin: Some("09506000134352".into()),
                    lot: Some("B1".into()),
                    serial: None,
                    expiry: Some("261231".into()),
                }),
            },
            Body::Context {
                field: ContextField::Operator,
                value: None,
                previous: Some("OP1".into()),
                source: ContextSource::Moved {
                    station: "st20".into(),
                },
                material: None,
            },
            Body::Context {
                field: ContextField::Operator,
                value: None,
                previous: Some("OP1".into()),
                source: ContextSource::Idle,
                material: None,
            },
            Body::Lot {
                event: LotEvent::Opened,
                source: ContextSource::Local {
                    id: "local-1".into(),
                },
                number_seq: Some(7),
                totals: None,
                part: None,
            },
            Body::Lot {
                event: LotEvent::Opened,
                source: ContextSource::Auto,
                number_seq: Some(8),
                totals: None,
                part: None,
            },
            Body::Lot {
                event: LotEvent::Closed,
                source: ContextSource::Target {
                    counter: "good".into(),
                    target: 500,
                },
                number_seq: Some(7),
                totals: Some(Box::new(LotTotals {
                    opened_ms: 1,
                    closed_ms: 2,
                    good: Some(500),
                    scrap: Some(3),
                    counts: [("good".to_owned(), 500)].into(),
                    products: 2,
                    rejects: 1,
                    materials: vec![MaterialTally {
                        gtin: Some("09506000134352".into()),
                        lot: Some("B1".into()),
                        count: 1,
                    }],
                    materials_truncated: true,
                    materials_untallied: 4,
                    operators: vec!["OP1".into()],
                    operators_truncated: true,
                    orders: vec!["WO1".into()],
                    orders_truncated: false,
                    listed: Some(Listed {
                        materials: 2,
                        operators: 1,
                        orders: 1,
                    }),
                })),
                part: Some(Part { part: 1, parts: 2 }),
            },
            Body::Lot {
                event: LotEvent::Totals,
                source: ContextSource::Target {
                    counter: "good".into(),
                    target: 500,
                },
                number_seq: Some(7),
                totals: Some(Box::new(LotTotals {
                    materials: vec![MaterialTally {
                        gtin: Some("09506000134352".into()),
                        lot: Some("B2".into()),
                        count: 3,
                    }],
                    ..LotTotals::default()
                })),
                part: Some(Part { part: 2, parts: 2 }),
            },
            Body::Lot {
                event: LotEvent::Closed,
                source: ContextSource::Boundary {
                    boundary: Boundary::Shift,
                },
                number_seq: None,
                totals: Some(Box::default()),
                part: Some(Part { part: 1, parts: 1 }),
            },
            Body::Product {
                rule: "part".into(),
                serial: "SN1".into(),
                gtin: Some("09506000134352".into()),
                raw: b"]d201095060001343522 1SN1".to_vec(),
                gs1: Some(Gs1Reading::Elements(elements)),
            },
            Body::Reject {
                reason: RejectReason::DuplicateSerial,
                message: "serial SN1 was already recorded in lot L1".into(),
                rule: Some("part".into()),
                raw: b"SN1".to_vec(),
                gs1: None,
            },
            Body::Count {
                name: "good".into(),
                raw: 7,
                delta: 2,
                wrapped: false,
                reset: false,
                baseline: false,
                since_ms: Some(1),
            },
            Body::State {
                name: "run".into(),
                value: 1,
                previous: None,
            },
            Body::Value {
                name: "temp".into(),
                value: 21.5,
                previous: Some(21.0),
            },
            Body::Alarm {
                event: AlarmEvent::DeviceOffline,
                message: Some("EIO".into()),
                store: None,
            },
            Body::Alarm {
                event: AlarmEvent::LotNotOpened,
                message: Some("no template".into()),
                store: None,
            },
            Body::Alarm {
                event: AlarmEvent::StoreFilling,
                message: Some("the store is 80 % full".into()),
                store: Some(Box::new(StoreFigures {
                    percent: Some(80),
                    bytes: Some(800),
                    max_bytes: Some(1000),
                    policy: Some("refuse".into()),
                    ..StoreFigures::default()
                })),
            },
            Body::Alarm {
                event: AlarmEvent::DiskFullCleared,
                message: Some("room again".into()),
                store: Some(Box::new(StoreFigures {
                    free_bytes: Some(1 << 30),
                    min_free_bytes: Some(1 << 27),
                    refused: Some(3),
                    dropped: Some(0),
                    ..StoreFigures::default()
                })),
            },
            Body::Alarm {
                event: AlarmEvent::RecordsDropped,
                message: Some("dropped".into()),
                store: Some(Box::new(StoreFigures {
                    first_seq: Some(1),
                    last_seq: Some(9),
                    count: Some(8),
                    bytes: Some(2400),
                    dropped_total: Some(8),
                    ..StoreFigures::default()
                })),
            },
            Body::Alarm {
                event: AlarmEvent::StoreDamaged,
                message: Some("the store was damaged …".into()),
                store: Some(Box::new(StoreFigures {
                    first_seq: Some(1001),
                    last_seq: Some(100_000),
                    count: Some(99_000),
                    ..StoreFigures::default()
                })),
            },
            Body::Alarm {
                event: AlarmEvent::RecordUndeliverable,
                message: Some("record 9 cannot be delivered".into()),
                store: Some(Box::new(StoreFigures {
                    seq: Some(9),
                    record_kind: Some("lot".into()),
                    record_bytes: Some(70_000),
                    max_packet_size: Some(65_536),
                    ..StoreFigures::default()
                })),
            },
            Body::Audit {
                command: "set-lot".into(),
                id: None,
                accepted: false,
                reason: Some("bad".into()),
                payload: "{}".into(),
                origin: CommandOrigin::Local,
            },
        ];
        let kinds: Vec<&str> = schema["properties"]["kind"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let gw = GatewayConfig {
            id: "gw".into(),
            site: "s".into(),
            line: "l".into(),
            data_dir: "/tmp".into(),
        };
        for body in bodies {
            let kind = body.kind();
            assert!(kinds.contains(&kind), "kind {kind} not in the schema");
            let epoch = "6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60".parse().ok();
            let v: Value = serde_json::from_slice(&record(&gw, epoch, &sample(body))).unwrap();
            check_object(&v, &schema, kind);
            check_object(&v["data"], &schema["$defs"][kind], &format!("{kind}.data"));
        }
    }
}
