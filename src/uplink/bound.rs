//! The largest payload each record kind can make: an upper bound computed
//! from the config, part by part, with JSON escaping counted (a control
//! byte becomes `\u00XX`, 6 bytes; `"` and `\` 2; a byte that is not UTF-8
//! the 3 bytes of U+FFFD; base64 4 bytes per 3). `linegate check` refuses
//! an `mqtt.max_packet_size` too small to carry the largest, and the lot
//! engine splits a closed lot's lists so each lot record fits
//! ([`totals_per_part`]). The bound holds because every variable part of a
//! record is bounded where the record is made:
//!
//! - scanned codes by the scanner's `max_frame_len`, GS1 data by the code
//!   it was read from, GS1 errors, reject and alarm messages and refusal
//!   reasons by [`MAX_MESSAGE`];
//! - lot, order, operator, serial and material values by the rules of scans
//!   (64 bytes) and commands (64 characters, no control characters);
//! - an audit's command echo by [`AUDIT_PAYLOAD_MAX`], its name and id by
//!   the command rules;
//! - a closed lot's lists by [`totals_per_part`] entries per record;
//! - ids, rule and register names by the config itself.
//!
//! The tests below build worst-case records of every kind and check their
//! encoded size against the bound.

use crate::record::MAX_MESSAGE;
use crate::station::AUDIT_PAYLOAD_MAX;

/// Fixed header, topic length and packet id of an MQTT PUBLISH, at most.
pub const PUBLISH_OVERHEAD: usize = 16;

/// Longest lot, order, operator, serial, material value or command id, in
/// characters (commands) and bytes (scans).
const VALUE_CHARS: usize = 64;

/// Keys, numbers, the timestamp, `v`, `epoch` (46 bytes with its key),
/// `seq`, `kind`, `clock_synced` and room for further fixed-size envelope
/// fields.
const ENVELOPE_FIXED: usize = 384;

/// What the config says about the variable parts of records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// `gateway.id`, `site` and `line`, in bytes, together.
    pub gateway_ids: usize,
    /// The longest station id and device id, in bytes.
    pub station_id: usize,
    pub device_id: usize,
    /// The largest frame a scanner may deliver (`max_frame_len`), 0 when
    /// there is no scanner.
    pub frame: usize,
    /// The longest scan rule or register name, in bytes.
    pub name: usize,
    /// The most counters a station's lot can count (`totals.counts`).
    pub counters: usize,
}

/// The record kinds, as the bound tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scan,
    Product,
    Reject,
    Context,
    LotOpened,
    /// A `closed` record, or a `totals` continuation, with `per_part`
    /// entries in each list.
    LotClosed,
    Count,
    Alarm,
    Audit,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Scan,
        Kind::Product,
        Kind::Reject,
        Kind::Context,
        Kind::LotOpened,
        Kind::LotClosed,
        Kind::Count,
        Kind::Alarm,
        Kind::Audit,
    ];

    /// The record kind as named in topics and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scan => "scan",
            Kind::Product => "product",
            Kind::Reject => "reject",
            Kind::Context => "context",
            Kind::LotOpened | Kind::LotClosed => "lot",
            Kind::Count => "count",
            Kind::Alarm => "alarm",
            Kind::Audit => "audit",
        }
    }

    /// Whether a scanned code (up to `max_frame_len` bytes) is part of it.
    pub fn carries_code(self) -> bool {
        matches!(
            self,
            Kind::Scan
                | Kind::Product
                | Kind::Reject
                | Kind::Context
                | Kind::LotOpened
                | Kind::LotClosed
        )
    }
}

/// A JSON string of `bytes` arbitrary bytes, quotes included.
fn any_text(bytes: usize) -> usize {
    6 * bytes + 2
}

/// A JSON string of a value: at most 64 characters (4 bytes each) with no
/// control character, or 64 bytes (each escaped to at most 2).
fn value() -> usize {
    4 * VALUE_CHARS + 2
}

/// A config name (rule, register): any text of its length.
fn name(shape: &Shape) -> usize {
    any_text(shape.name)
}

/// A free text bounded by [`MAX_MESSAGE`].
fn message() -> usize {
    any_text(MAX_MESSAGE)
}

/// The fields of a scanned code of up to `frame` bytes (`code`, `utf8`,
/// `raw_b64`, `symbology`) and its GS1 reading (`gs1` elements: values are
/// GS1 characters, each escaped to at most 2 bytes, every element at least
/// 3 bytes of the code with at most 10 bytes of key and punctuation, and an
/// EAN/UPC padded to 14 digits; or `gs1_error`).
fn code(frame: usize) -> usize {
    let fields = 96 + any_text(frame) + 4 * frame.div_ceil(3) + 2;
    let elements = 16 + 2 * frame + 10 * frame.div_ceil(3) + 64;
    let error = 48 + any_text(32) + message();
    fields + elements.max(error)
}

/// Why a context change or lot event happened (`source` and its fields).
fn source(shape: &Shape) -> usize {
    let scan = 16 + name(shape) + code(shape.frame);
    let command = 16 + value();
    let moved = 16 + any_text(shape.station_id);
    let target = 32 + name(shape) + 20;
    48 + scan.max(command).max(moved).max(target)
}

/// The envelope: everything but `data`.
fn envelope(shape: &Shape) -> usize {
    ENVELOPE_FIXED + shape.gateway_ids + shape.station_id + shape.device_id + 3 * value()
}

/// One material of a lot's list: `{"gtin":…,"lot":…,"count":…},` (values
/// from scans: 64 bytes, no control characters).
const MATERIAL_ITEM: usize = 48 + 2 * (2 * VALUE_CHARS + 2) + 20;

/// One operator and one order of a lot's lists.
fn names_item() -> usize {
    2 * (value() + 1)
}

/// What one more entry in each list of a lot record adds.
fn per_entry() -> usize {
    MATERIAL_ITEM + names_item()
}

/// A lot record with no list entries: event, source, number, part, the
/// scalar totals and the counts map.
fn lot_base(shape: &Shape) -> usize {
    let scalars = 512;
    let counts = 4 + shape.counters * (name(shape) + 24);
    64 + source(shape) + scalars + counts
}

/// The largest `data` a record of `kind` can have; `per_part` is the
/// entries of each list a lot record carries.
fn data(kind: Kind, shape: &Shape, per_part: usize) -> usize {
    let code = code(shape.frame);
    match kind {
        Kind::Scan => 16 + code,
        Kind::Product => 64 + name(shape) + 2 * value() + code,
        Kind::Reject => 96 + message() + name(shape) + code,
        Kind::Context => 96 + 2 * value() + source(shape) + 48 + 4 * value(),
        Kind::LotOpened => 64 + source(shape),
        Kind::LotClosed => lot_base(shape) + per_part * per_entry(),
        Kind::Count => 256 + name(shape),
        Kind::Alarm => 640 + message(),
        Kind::Audit => 160 + value() + value() + message() + any_text(AUDIT_PAYLOAD_MAX),
    }
}

/// The largest payload (JSON bytes) a record of `kind` can have.
pub fn record(kind: Kind, shape: &Shape, per_part: usize) -> usize {
    envelope(shape) + data(kind, shape, per_part)
}

/// The most list entries per lot record that keep every lot record within
/// `room` bytes of payload (at most `max`, at least 1); `None` when not
/// even one fits.
pub fn totals_per_part(shape: &Shape, room: usize, max: usize) -> Option<usize> {
    let base = record(Kind::LotClosed, shape, 0);
    let fit = room.checked_sub(base)? / per_entry();
    (fit >= 1).then_some(fit.min(max.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use crate::gs1;
    use crate::record::{
        AlarmEvent, Body, CommandOrigin, ContextField, ContextSource, Gs1Reading, LotEvent,
        LotTotals, Material, MaterialTally, Part, Record, RejectReason, StoreFigures, bounded,
    };
    use crate::uplink::payload;

    /// Text that escapes worst: control characters, quotes, backslashes
    /// and 4-byte characters, at random.
    fn nasty(rng: &mut fastrand::Rng, bytes: usize) -> String {
        let mut s = String::new();
        loop {
            let c = match rng.u8(0..5) {
                0 => char::from(rng.u8(0..0x20)),
                1 => '"',
                2 => '\\',
                3 => '\u{1F600}',
                _ => 'é',
            };
            if s.len() + c.len_utf8() > bytes {
                return s;
            }
            s.push(c);
        }
    }

    /// A value as the rules let one through: 64 characters, none a
    /// control character, 4-byte characters and backslashes.
    fn value_text(rng: &mut fastrand::Rng) -> String {
        (0..VALUE_CHARS)
            .map(|_| ['\u{1F600}', '"', '\\'][rng.usize(0..3)])
            .collect()
    }

    /// A scanned frame of `n` bytes: worst-escaping bytes (GS, other
    /// control bytes, bytes that are not UTF-8), or a long GS1 element
    /// string with quotes, so both GS1 outcomes are covered.
    fn frame(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
        match rng.u8(0..3) {
            0 => (0..n)
                .map(|_| [0x1d, 0x04, 0xff, b'"'][rng.usize(0..4)])
                .collect(),
            1 => {
                // AIs 91 to 99: company internal, up to 90 characters of
                // set 82 (quotes included), separated by GS.
                let mut f = b"]d2".to_vec();
                for ai in 91..=99 {
                    let len = 90.min(n.saturating_sub(f.len() + 3));
                    if len == 0 {
                        break;
                    }
                    f.extend_from_slice(ai.to_string().as_bytes());
                    f.extend(std::iter::repeat_n(b'"', len));
                    f.push(0x1d);
                }
                f
            }
            _ => {
                let mut f = b"]d201095060001343522".to_vec();
                f.extend(std::iter::repeat_n(b'"', n.saturating_sub(f.len())));
                f.truncate(n);
                f
            }
        }
    }

    fn reading(raw: &[u8]) -> Option<Gs1Reading> {
        let d = gs1::decode(raw, 2026, true);
        crate::station::gs1_reading(&d).map(|r| match r {
            Gs1Reading::Error { code, message } => Gs1Reading::Error {
                code,
                message: bounded(message, MAX_MESSAGE),
            },
            other => other,
        })
    }

    fn source(rng: &mut fastrand::Rng, shape: &Shape, rule: &str) -> ContextSource {
        match rng.u8(0..4) {
            0 => ContextSource::Scan {
                rule: rule.to_owned(),
                raw: frame(rng, shape.frame),
            },
            1 => ContextSource::Command {
                id: value_text(rng),
            },
            2 => ContextSource::Moved {
                station: "s".repeat(shape.station_id),
            },
            _ => ContextSource::Target {
                counter: rule.to_owned(),
                target: u64::MAX,
            },
        }
    }

    /// A worst-case record of `kind` for `shape`.
    fn worst(rng: &mut fastrand::Rng, kind: Kind, shape: &Shape, per_part: usize) -> Record {
        let rule = nasty(rng, shape.name);
        let raw = frame(rng, shape.frame);
        let gs1 = reading(&raw);
        let material = || MaterialTally {
            gtin: Some("\"".repeat(VALUE_CHARS)),
            lot: Some("\\".repeat(VALUE_CHARS)),
            count: u64::MAX,
        };
        let body = match kind {
            Kind::Scan => Body::Scan { raw, gs1 },
            Kind::Product => Body::Product {
                rule,
                serial: value_text(rng),
                gtin: Some(value_text(rng)),
                raw,
                gs1,
            },
            Kind::Reject => Body::Reject {
                reason: RejectReason::MaterialNotAllowed,
                message: bounded(nasty(rng, 4 * MAX_MESSAGE), MAX_MESSAGE),
                rule: Some(rule),
                raw,
                gs1,
            },
            Kind::Context => Body::Context {
                field: ContextField::Material,
                value: Some(value_text(rng)),
                previous: Some(value_text(rng)),
                source: source(rng, shape, &rule),
                material: Some(Material {
                    gtin: Some(value_text(rng)),
                    lot: Some(value_text(rng)),
                    serial: Some(value_text(rng)),
                    expiry: Some(value_text(rng)),
                }),
            },
            Kind::LotOpened => Body::Lot {
                event: LotEvent::Opened,
                source: source(rng, shape, &rule),
                number_seq: Some(u64::MAX),
                totals: None,
                part: None,
            },
            Kind::LotClosed => {
                let totals = LotTotals {
                    opened_ms: u64::MAX / 4,
                    closed_ms: u64::MAX / 2,
                    good: Some(u64::MAX),
                    scrap: Some(u64::MAX),
                    counts: (0..shape.counters)
                        .map(|i| (format!("{i:0>w$}", w = shape.name), u64::MAX))
                        .collect(),
                    products: u64::MAX,
                    rejects: u64::MAX,
                    materials: (0..per_part * 3).map(|_| material()).collect(),
                    materials_truncated: true,
                    materials_untallied: u64::MAX,
                    operators: (0..per_part * 3).map(|_| value_text(rng)).collect(),
                    operators_truncated: true,
                    orders: (0..per_part * 3).map(|_| value_text(rng)).collect(),
                    orders_truncated: true,
                    listed: None,
                };
                let (first, rest) = totals.split(per_part);
                let (event, totals) = match rng.bool() {
                    true => (LotEvent::Closed, first),
                    false => (
                        LotEvent::Totals,
                        rest.into_iter().next().unwrap_or_default(),
                    ),
                };
                Body::Lot {
                    event,
                    source: source(rng, shape, &rule),
                    number_seq: Some(u64::MAX),
                    totals: Some(Box::new(totals)),
                    part: Some(Part {
                        part: u32::MAX,
                        parts: u32::MAX,
                    }),
                }
            }
            Kind::Count => Body::Count {
                name: rule,
                raw: u64::MAX,
                delta: u64::MAX,
                wrapped: true,
                reset: true,
                baseline: true,
                since_ms: Some(u64::MAX / 2),
            },
            Kind::Alarm => Body::Alarm {
                event: AlarmEvent::RecordUndeliverable,
                message: Some(bounded(nasty(rng, 4 * MAX_MESSAGE), MAX_MESSAGE)),
                store: Some(Box::new(StoreFigures {
                    percent: Some(u8::MAX),
                    bytes: Some(u64::MAX),
                    max_bytes: Some(u64::MAX),
                    policy: Some("drop-oldest".into()),
                    free_bytes: Some(u64::MAX),
                    min_free_bytes: Some(u64::MAX),
                    refused: Some(u64::MAX),
                    dropped: Some(u64::MAX),
                    first_seq: Some(u64::MAX),
                    last_seq: Some(u64::MAX),
                    count: Some(u64::MAX),
                    dropped_total: Some(u64::MAX),
                    seq: Some(u64::MAX),
                    record_kind: Some("context".into()),
                    record_bytes: Some(u64::MAX),
                    max_packet_size: Some(u64::MAX),
                })),
            },
            Kind::Audit => {
                let payload =
                    String::from_utf8_lossy(&frame(rng, 4 * AUDIT_PAYLOAD_MAX)).into_owned();
                Body::Audit {
                    command: crate::uplink::command::shown_name(&nasty(rng, 1024)),
                    id: Some(value_text(rng)),
                    accepted: false,
                    reason: Some(bounded(nasty(rng, 4 * MAX_MESSAGE), MAX_MESSAGE)),
                    payload: bounded(payload, AUDIT_PAYLOAD_MAX),
                    origin: CommandOrigin::Local,
                }
            }
        };
        Record {
            seq: u64::MAX,
            ts_ms: u64::MAX / 2,
            clock_synced: false,
            station: Some("s".repeat(shape.station_id)),
            device: Some("d".repeat(shape.device_id)),
            lot: Some(value_text(rng)),
            order: Some(value_text(rng)),
            operator: Some(value_text(rng)),
            body,
        }
    }

    /// Property: for shapes from the smallest to the largest config, no
    /// record of any kind, filled with the worst-escaping content, encodes
    /// larger than its bound.
    #[test]
    fn worst_case_records_stay_within_the_bound() {
        let mut rng = fastrand::Rng::with_seed(0x0b0d);
        let shapes = [
            (1, 1, 1, 16, 1, 0, 1),
            (192, 64, 64, 512, 64, 8, 32),
            (192, 64, 64, 4096, 200, 40, 8),
            (30, 10, 10, 0, 10, 2, 256),
        ];
        for (gateway_ids, station_id, device_id, frame, name, counters, per_part) in shapes {
            let shape = Shape {
                gateway_ids,
                station_id,
                device_id,
                frame,
                name,
                counters,
            };
            let gw = GatewayConfig {
                id: "g".repeat(gateway_ids / 3),
                site: "s".repeat(gateway_ids / 3),
                line: "l".repeat(gateway_ids - 2 * (gateway_ids / 3)),
                data_dir: "/tmp".into(),
            };
            for kind in Kind::ALL {
                let bound = record(kind, &shape, per_part);
                for _ in 0..40 {
                    let rec = worst(&mut rng, kind, &shape, per_part);
                    let epoch = "6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60".parse().ok();
                    let len = payload::record(&gw, epoch, &rec).len();
                    assert!(
                        len <= bound,
                        "{kind:?} with {shape:?}: {len} bytes > bound {bound}"
                    );
                }
            }
        }
    }

    #[test]
    fn lot_lists_are_split_to_fit_the_room() {
        let shape = Shape {
            gateway_ids: 30,
            station_id: 8,
            device_id: 8,
            frame: 512,
            name: 16,
            counters: 4,
        };
        let room = 64 * 1024 - 100;
        let k = totals_per_part(&shape, room, 256).expect("fits");
        assert!(record(Kind::LotClosed, &shape, k) <= room);
        assert!(k == 256 || record(Kind::LotClosed, &shape, k + 1) > room);
        // Too small a packet carries not even one entry.
        assert_eq!(totals_per_part(&shape, 2048, 256), None);
        // The cap holds when the room is vast.
        assert_eq!(totals_per_part(&shape, 1 << 30, 256), Some(256));
    }
}
