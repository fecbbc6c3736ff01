//! One station: its context, lot state and serials, and what each event
//! (scan, count, command, tick of the plant clock) does to them.
//!
//! Every change is emitted as records plus the durable state entries that
//! must commit with them, so a restart resumes exactly where the last commit
//! left off.

use super::Emitted;
use super::context::Context;
use super::lot::{LotState, OpenLot, Seen, lot_key};
use super::rules::{self, Captured};
use super::serials::Serials;
use super::state_key;
use crate::config::{DuplicateWindow, Rotate, RuleAction, ScanRule, StationConfig};
use crate::gs1::{self, Decoded};
use crate::numbering::{Calendar, Fields};
use crate::record::{
    AlarmEvent, Body, Boundary, ContextField, ContextSource, Gs1Reading, LotEvent, MAX_MESSAGE,
    Material, Part, Record, RejectReason, bounded,
};

/// Ticks further apart than this are a gap (downtime or a clock step).
const TICK_GAP_MS: u64 = 60_000;
/// A clock this far behind the last boundary seen re-baselines the plant
/// clock instead of waiting for it to catch up.
const CLOCK_BACK_REBASE_MS: u64 = 3_600_000;
/// An operator who badged in this shortly before a shift change belongs to
/// the new shift and is not logged out by it.
pub const EARLY_LOGIN_GRACE_MS: u64 = 15 * 60_000;

/// When and where an event happened.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub ts_ms: u64,
    pub synced: bool,
    pub device: Option<&'a str>,
}

/// Gateway-wide facts the lot engine needs.
pub struct Env<'a> {
    pub calendar: &'a Calendar,
    pub site: &'a str,
    pub line: &'a str,
}

pub struct Station {
    pub cfg: StationConfig,
    pub ctx: Context,
    pub lot: LotState,
    pub serials: Serials,
    /// Last scan, login or counted unit at the station (idle logout); not
    /// persisted: after a restart the idle time counts from the first tick.
    pub last_activity_ms: Option<u64>,
    /// Time of the last tick (to tell a gap from idleness).
    pub last_tick_ms: Option<u64>,
    /// The serial bound was hit (alarm raised once until the lot closes).
    pub serials_truncated: bool,
}

/// A scanned code: its bytes and its GS1 reading.
#[derive(Clone, Copy)]
struct Code<'a> {
    raw: &'a [u8],
    decoded: &'a Decoded,
}

/// The GS1 part of a record, from a decoded scan.
pub fn gs1_reading(d: &Decoded) -> Option<Gs1Reading> {
    match &d.gs1 {
        None => None,
        Some(Ok(elements)) => Some(Gs1Reading::Elements(elements.clone())),
        Some(Err(e)) => Some(Gs1Reading::Error {
            code: e.code().to_owned(),
            message: bounded(e.to_string(), MAX_MESSAGE),
        }),
    }
}

impl Station {
    pub fn record(&self, at: &At<'_>, body: Body) -> Record {
        Record {
            seq: 0,
            ts_ms: at.ts_ms,
            clock_synced: at.synced,
            station: Some(self.cfg.id.clone()),
            device: at.device.map(str::to_owned),
            lot: self.ctx.lot.clone(),
            order: self.ctx.order.clone(),
            operator: self.ctx.operator.clone(),
            body,
        }
    }

    pub fn persist_ctx(&self, out: &mut Emitted) {
        out.state
            .push((state_key(&self.cfg.id), Some(self.ctx.encode())));
    }

    pub fn persist_lot(&self, out: &mut Emitted) {
        out.state
            .push((lot_key(&self.cfg.id), Some(self.lot.encode())));
    }

    fn alarm(&self, at: &At<'_>, event: AlarmEvent, message: String, out: &mut Emitted) {
        out.records.push(self.record(
            at,
            Body::Alarm {
                event,
                message: Some(bounded(message, MAX_MESSAGE)),
                store: None,
            },
        ));
    }

    // ----- lots -------------------------------------------------------------

    /// Why lot numbers cannot be generated now: the numbering state was
    /// found unreadable while this template was in use, so its numbers could
    /// repeat. A changed template (e.g. a new prefix) lifts the block.
    pub fn numbering_blocked(&self) -> Option<String> {
        let blocked = self.lot.numbering_blocked.as_deref()?;
        let current = self.cfg.lot.numbering.as_ref()?.template_text.as_str();
        (blocked == current).then(|| {
            format!(
                "the lot numbering state of station {} was unreadable, so numbers from template \
                 {current} could repeat; change the template (e.g. a new prefix) to number lots again \
                 (named lots still open)",
                self.cfg.id
            )
        })
    }

    /// Whether `lot` is the lot open now.
    pub fn open_lot_is(&self, lot: &str) -> bool {
        self.lot.open.as_ref().is_some_and(|o| o.lot == lot)
    }

    /// Close the open lot, if any: a `closed` record carrying its totals,
    /// followed by `totals` records with the rest of its lists when they
    /// are longer than one record may carry (`totals_per_part`).
    pub fn close_lot(&mut self, at: &At<'_>, source: ContextSource, out: &mut Emitted) -> bool {
        let Some(open) = self.lot.open.take() else {
            return false;
        };
        let mut totals = open.totals;
        totals.closed_ms = at.ts_ms;
        let (first, rest) = totals.split(self.cfg.lot.totals_per_part);
        let parts = u32::try_from(rest.len() + 1).unwrap_or(u32::MAX);
        let records = std::iter::once((LotEvent::Closed, first))
            .chain(rest.into_iter().map(|t| (LotEvent::Totals, t)));
        for (part, (event, totals)) in (1..).zip(records) {
            // Stamped with the lot it closes: ctx.lot still names it.
            let rec = self.record(
                at,
                Body::Lot {
                    event,
                    source: source.clone(),
                    number_seq: open.number_seq,
                    totals: Some(Box::new(totals)),
                    part: Some(Part { part, parts }),
                },
            );
            out.records.push(rec);
        }
        self.ctx.lot = None;
        self.serials.lot_closed(&mut out.state);
        self.serials_truncated = false;
        self.persist_ctx(out);
        self.persist_lot(out);
        true
    }

    /// Open `lot`, closing the one open before.
    pub fn open_lot(
        &mut self,
        at: &At<'_>,
        lot: String,
        number_seq: Option<u64>,
        source: ContextSource,
        out: &mut Emitted,
    ) {
        self.close_lot(at, source.clone(), out);
        let mut open = OpenLot::new(lot.clone(), number_seq, at.ts_ms, &self.cfg.lot);
        if let Some(op) = &self.ctx.operator {
            open.operator(op);
        }
        if let Some(order) = &self.ctx.order {
            open.order(order);
        }
        self.lot.open = Some(open);
        self.ctx.lot = Some(lot);
        out.records.push(self.record(
            at,
            Body::Lot {
                event: LotEvent::Opened,
                source,
                number_seq,
                totals: None,
                part: None,
            },
        ));
        self.persist_ctx(out);
        self.persist_lot(out);
    }

    /// Open the next lot numbered from the template (closing the open one).
    /// `Err` says why no number could be made.
    pub fn open_next(
        &mut self,
        at: &At<'_>,
        env: &Env<'_>,
        source: ContextSource,
        out: &mut Emitted,
    ) -> Result<(), String> {
        let Some(n) = &self.cfg.lot.numbering else {
            return Err(format!(
                "station {} has no lot template ([station.lot] template)",
                self.cfg.id
            ));
        };
        if let Some(why) = self.numbering_blocked() {
            return Err(why);
        }
        let fields = Fields {
            site: env.site,
            line: env.line,
            station: &self.cfg.id,
        };
        let a = self
            .lot
            .alloc
            .next(&n.template, n.reset, env.calendar, fields, at.ts_ms);
        if a.clock_went_back {
            let message = format!(
                "the clock reads {} but lot numbers were already dated {}; lot {} is dated {} so no number repeats",
                crate::clock::rfc3339_ms(at.ts_ms),
                crate::clock::rfc3339_ms(a.stamp_ms),
                a.lot,
                crate::clock::rfc3339_ms(a.stamp_ms),
            );
            self.alarm(at, AlarmEvent::ClockWentBack, message, out);
        }
        self.open_lot(at, a.lot, Some(a.seq), source, out);
        Ok(())
    }

    /// Close the open lot on request; with `auto_open`, the next opens at once.
    pub fn close_on_request(
        &mut self,
        at: &At<'_>,
        env: &Env<'_>,
        source: ContextSource,
        out: &mut Emitted,
    ) {
        if self.cfg.lot.auto_open {
            self.open_or_alarm(at, env, source, out);
        } else {
            self.close_lot(at, source, out);
        }
    }

    /// Open the next generated lot; a failure becomes an alarm record.
    fn open_or_alarm(
        &mut self,
        at: &At<'_>,
        env: &Env<'_>,
        source: ContextSource,
        out: &mut Emitted,
    ) {
        if let Err(why) = self.open_next(at, env, source, out) {
            self.alarm(at, AlarmEvent::LotNotOpened, why, out);
        }
    }

    // ----- context ----------------------------------------------------------

    pub fn set_order(
        &mut self,
        at: &At<'_>,
        order: Option<String>,
        materials: Option<Vec<String>>,
        source: ContextSource,
        out: &mut Emitted,
    ) {
        let previous = self.ctx.set(ContextField::Order, order.clone());
        // The same order again (its sheet scanned twice, a retry) keeps the
        // material list the MES sent with it, unless a new list comes along.
        if materials.is_some() || previous != order {
            self.ctx.materials = materials;
        }
        if let (Some(open), Some(o)) = (&mut self.lot.open, &order) {
            open.order(o);
            self.persist_lot(out);
        }
        out.records.push(self.record(
            at,
            Body::Context {
                field: ContextField::Order,
                value: order,
                previous,
                source,
                material: None,
            },
        ));
        self.persist_ctx(out);
    }

    pub fn set_operator(
        &mut self,
        at: &At<'_>,
        operator: Option<String>,
        source: ContextSource,
        out: &mut Emitted,
    ) {
        let previous = self.ctx.set(ContextField::Operator, operator.clone());
        self.ctx.operator_since_ms = operator.as_ref().map(|_| at.ts_ms);
        if let Some(who) = &operator {
            self.last_activity_ms = Some(at.ts_ms);
            if let Some(open) = &mut self.lot.open {
                open.operator(who);
                self.persist_lot(out);
            }
        }
        out.records.push(self.record(
            at,
            Body::Context {
                field: ContextField::Operator,
                value: operator,
                previous,
                source,
                material: None,
            },
        ));
        self.persist_ctx(out);
    }

    fn reject(
        &mut self,
        at: &At<'_>,
        code: Code<'_>,
        reason: RejectReason,
        message: String,
        rule: Option<&str>,
        out: &mut Emitted,
    ) {
        let Code { raw, decoded } = code;
        if let Some(open) = &mut self.lot.open {
            open.totals.rejects = open.totals.rejects.saturating_add(1);
            self.persist_lot(out);
        }
        out.records.push(self.record(
            at,
            Body::Reject {
                reason,
                message: bounded(message, MAX_MESSAGE),
                rule: rule.map(str::to_owned),
                raw: raw.to_vec(),
                gs1: gs1_reading(decoded),
            },
        ));
    }

    // ----- scans ------------------------------------------------------------

    /// Apply a scan. Returns the operator who just logged in here, if any
    /// (the caller logs them out of other stations).
    pub fn on_scan(
        &mut self,
        at: &At<'_>,
        env: &Env<'_>,
        raw: &[u8],
        out: &mut Emitted,
    ) -> Option<String> {
        self.last_activity_ms = Some(at.ts_ms);
        let year = i32::from(env.calendar.at(at.ts_ms).year);
        let natural = gs1::decode(raw, year, false);
        let mut forced: Option<Decoded> = None;
        let mut found = None;
        for (i, rule) in self.cfg.scan_rules.iter().enumerate() {
            // A rule that asks for GS1 AIs reads a scan with no AIM id and
            // no GS1 marker as an element string anyway (scanners set up
            // without AIM ids send GS1-128 as bare digits).
            let decoded = if !rule.gs1.is_empty() && natural.gs1.is_none() && natural.aim.is_none()
            {
                &*forced.get_or_insert_with(|| gs1::decode(raw, year, true))
            } else {
                &natural
            };
            let text = rules::rule_text(raw, decoded);
            if let Some(cap) = rules::matches(rule, &text, decoded) {
                found = Some((i, cap, text.into_owned(), decoded.clone()));
                break;
            }
        }
        let Some((i, cap, text, decoded)) = found else {
            out.records.push(self.record(
                at,
                Body::Scan {
                    raw: raw.to_vec(),
                    gs1: gs1_reading(&natural),
                },
            ));
            return None;
        };
        let rule = self.cfg.scan_rules[i].clone();
        self.apply_rule(at, &rule, &cap, &text, raw, &decoded, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_rule(
        &mut self,
        at: &At<'_>,
        rule: &ScanRule,
        cap: &Captured,
        text: &str,
        raw: &[u8],
        decoded: &Decoded,
        out: &mut Emitted,
    ) -> Option<String> {
        let source = || ContextSource::Scan {
            rule: rule.name.clone(),
            raw: raw.to_vec(),
        };
        let name = Some(rule.name.as_str());
        match rule.action {
            RuleAction::Reject => {
                let reason = rule.reason.clone().unwrap_or_default();
                self.reject(
                    at,
                    Code { raw, decoded },
                    RejectReason::Rule,
                    reason,
                    name,
                    out,
                );
                None
            }
            RuleAction::ConsumeMaterial => {
                self.consume(at, rule, cap, raw, decoded, out);
                None
            }
            action => {
                let value =
                    rules::value_of(rule, cap, text, decoded).filter(|v| rules::valid_value(v));
                let Some(value) = value else {
                    let what = match action {
                        RuleAction::SetLot => "lot number",
                        RuleAction::SetOrder => "work order",
                        RuleAction::SetOperator => "operator",
                        _ => "serial number",
                    };
                    let message = format!(
                        "rule {} found no {what} of 1 to {} printable characters in the scan",
                        rule.name,
                        rules::MAX_VALUE_LEN
                    );
                    self.reject(
                        at,
                        Code { raw, decoded },
                        RejectReason::InvalidCode,
                        message,
                        name,
                        out,
                    );
                    return None;
                };
                match action {
                    RuleAction::SetLot => {
                        if self.open_lot_is(&value) {
                            // The open lot's label scanned again: nothing
                            // changes; the scan is still recorded.
                            out.records.push(self.record(
                                at,
                                Body::Scan {
                                    raw: raw.to_vec(),
                                    gs1: gs1_reading(decoded),
                                },
                            ));
                        } else {
                            self.open_lot(at, value, None, source(), out);
                        }
                        None
                    }
                    RuleAction::SetOrder => {
                        self.set_order(at, Some(value), None, source(), out);
                        None
                    }
                    RuleAction::SetOperator => {
                        // The same badge again logs out; another replaces.
                        if self.ctx.operator.as_deref() == Some(value.as_str()) {
                            self.set_operator(at, None, source(), out);
                            None
                        } else {
                            self.set_operator(at, Some(value.clone()), source(), out);
                            Some(value)
                        }
                    }
                    _ => {
                        self.product(at, rule, value, raw, decoded, out);
                        None
                    }
                }
            }
        }
    }

    fn product(
        &mut self,
        at: &At<'_>,
        rule: &ScanRule,
        serial: String,
        raw: &[u8],
        decoded: &Decoded,
        out: &mut Emitted,
    ) {
        let name = Some(rule.name.as_str());
        let Some(lot) = self.lot.open.as_ref().map(|o| o.lot.clone()) else {
            let message = format!("product {serial} scanned while no lot is open");
            self.reject(
                at,
                Code { raw, decoded },
                RejectReason::NoLotOpen,
                message,
                name,
                out,
            );
            return;
        };
        if self.serials.is_duplicate(&serial, &lot, at.ts_ms) {
            let message = match self.cfg.lot.duplicate_window {
                DuplicateWindow::Lot => {
                    format!("serial {serial} was already recorded in lot {lot}")
                }
                DuplicateWindow::Time(w) => format!(
                    "serial {serial} was already recorded within the last {}",
                    crate::config::fmt_duration(w)
                ),
            };
            self.reject(
                at,
                Code { raw, decoded },
                RejectReason::DuplicateSerial,
                message,
                name,
                out,
            );
            return;
        }
        self.serials.expire(at.ts_ms, &mut out.state);
        if self.serials.insert(&serial, &lot, at.ts_ms, &mut out.state) && !self.serials_truncated {
            self.serials_truncated = true;
            let message = format!(
                "more than {} serials held at station {}: the oldest are no longer checked for duplicates",
                self.serials.len(),
                self.cfg.id
            );
            self.alarm(at, AlarmEvent::SerialCheckTruncated, message, out);
        }
        if let Some(open) = &mut self.lot.open {
            open.totals.products = open.totals.products.saturating_add(1);
        }
        self.persist_lot(out);
        out.records.push(self.record(
            at,
            Body::Product {
                rule: rule.name.clone(),
                serial,
                gtin: decoded.get("01").map(str::to_owned),
                raw: raw.to_vec(),
                gs1: gs1_reading(decoded),
            },
        ));
    }

    fn consume(
        &mut self,
        at: &At<'_>,
        rule: &ScanRule,
        cap: &Captured,
        raw: &[u8],
        decoded: &Decoded,
        out: &mut Emitted,
    ) {
        let name = Some(rule.name.as_str());
        let pick = |ai: &str, group: &Option<String>| {
            decoded
                .get(ai)
                .map(str::to_owned)
                .or_else(|| group.clone())
                .filter(|v| rules::valid_value(v))
        };
        let material = Material {
            // A GTIN from a pattern group is padded to the 14 digits of AI
            // 01 (as the order's material list is), when it is one.
            gtin: pick("01", &cap.gtin).map(|g| gs1::normalize_gtin(&g).unwrap_or(g)),
            lot: pick("10", &cap.lot),
            serial: pick("21", &cap.serial),
            expiry: pick("17", &cap.expiry),
        };
        if material.gtin.is_none() && material.lot.is_none() {
            let message = format!(
                "rule {} found neither a GTIN (AI 01) nor a lot (AI 10) in the scan",
                rule.name
            );
            self.reject(
                at,
                Code { raw, decoded },
                RejectReason::InvalidCode,
                message,
                name,
                out,
            );
            return;
        }
        let shown = material
            .lot
            .clone()
            .or_else(|| material.gtin.clone())
            .unwrap_or_default();
        if self.lot.open.is_none() {
            let message = format!("material {shown} scanned while no lot is open");
            self.reject(
                at,
                Code { raw, decoded },
                RejectReason::NoLotOpen,
                message,
                name,
                out,
            );
            return;
        }
        if let Some(allowed) = &self.ctx.materials
            && !material.gtin.as_ref().is_some_and(|g| allowed.contains(g))
        {
            let message = format!(
                "material {} is not on the material list of order {}",
                material.gtin.as_deref().unwrap_or("without GTIN"),
                self.ctx.order.as_deref().unwrap_or("(none)")
            );
            self.reject(
                at,
                Code { raw, decoded },
                RejectReason::MaterialNotAllowed,
                message,
                name,
                out,
            );
            return;
        }
        if let Some(open) = &mut self.lot.open {
            open.material(&material);
        }
        self.persist_lot(out);
        out.records.push(self.record(
            at,
            Body::Context {
                field: ContextField::Material,
                value: Some(shown),
                previous: None,
                source: ContextSource::Scan {
                    rule: rule.name.clone(),
                    raw: raw.to_vec(),
                },
                material: Some(material),
            },
        ));
    }

    // ----- counters ---------------------------------------------------------

    /// A `count` record was made at this station: add it to the open lot and
    /// close the lot when its target is reached.
    pub fn on_count(
        &mut self,
        at: &At<'_>,
        env: &Env<'_>,
        name: &str,
        delta: u64,
        out: &mut Emitted,
    ) {
        if delta == 0 {
            return;
        }
        // The machine counting is the operator working.
        self.last_activity_ms = Some(at.ts_ms);
        let Some(open) = &mut self.lot.open else {
            return;
        };
        let lot_cfg = &self.cfg.lot;
        open.count(
            name,
            delta,
            lot_cfg.good.as_deref(),
            lot_cfg.scrap.as_deref(),
        );
        let reached = match (lot_cfg.target, &lot_cfg.good) {
            (Some(target), Some(good)) if good == name => open.totals.good.unwrap_or(0) >= target,
            _ => false,
        };
        self.persist_lot(out);
        if reached && self.numbering_blocked().is_none() {
            let source = ContextSource::Target {
                counter: lot_cfg.good.clone().unwrap_or_default(),
                target: lot_cfg.target.unwrap_or_default(),
            };
            self.open_or_alarm(at, env, source, out);
        }
    }

    // ----- the plant clock --------------------------------------------------

    /// Time passes: shift and day boundaries (lot rotation, logout at shift
    /// end), idle logout, auto-open, expiry of old serials.
    pub fn on_tick(&mut self, at: &At<'_>, env: &Env<'_>, out: &mut Emitted) {
        let now = at.ts_ms;
        if self.last_tick_ms.is_none()
            && let Some(why) = self.numbering_blocked()
        {
            self.alarm(at, AlarmEvent::LotNotOpened, why, out);
        }
        // A gap between ticks (downtime, or the clock stepped forward, e.g.
        // NTP after boot): idle time counts from now, not across the gap.
        if self
            .last_tick_ms
            .is_some_and(|t| now.saturating_sub(t) > TICK_GAP_MS)
        {
            self.last_activity_ms = Some(self.last_activity_ms.map_or(now, |a| a.max(now)));
        }
        self.last_tick_ms = Some(now);
        if let Some(open) = &mut self.lot.open
            && open.totals.opened_ms == 0
        {
            // A lot adopted from an older context: opened time unknown
            // until now.
            open.totals.opened_ms = now;
            self.persist_lot(out);
        }
        let moment = env.calendar.at(now);
        // With shifts, a day is a production day: it changes when the first
        // shift of the day starts, so a night shift stays one day.
        let day = if env.calendar.has_shifts() {
            moment.shift_day.key()
        } else {
            moment.day_key()
        };
        let shift = moment.shift_key.clone();
        let fresh = Seen {
            shift,
            day,
            ts_ms: now,
        };
        match &self.lot.seen {
            None => {
                self.lot.seen = Some(fresh);
                self.persist_lot(out);
            }
            // The clock went far back (it had run ahead, or an RTC reset):
            // start again from the time it shows now, and say so.
            Some(seen) if now.saturating_add(CLOCK_BACK_REBASE_MS) < seen.ts_ms => {
                let message = format!(
                    "the clock went back from {} to {}; shift and day boundaries count from now",
                    crate::clock::rfc3339_ms(seen.ts_ms),
                    crate::clock::rfc3339_ms(now)
                );
                self.lot.seen = Some(fresh);
                self.persist_lot(out);
                self.alarm(at, AlarmEvent::ClockWentBack, message, out);
            }
            // The clock went back a little behind the last boundary seen:
            // wait until it has passed it again rather than see it twice.
            Some(seen) if now < seen.ts_ms => {}
            Some(seen) => {
                let shift_changed = env.calendar.has_shifts() && seen.shift != fresh.shift;
                let day_changed = seen.day != fresh.day;
                if shift_changed || day_changed {
                    self.lot.seen = Some(fresh);
                    self.persist_lot(out);
                    // The leaving operator is logged out first, so the next
                    // shift's lot is not stamped with them. Someone who
                    // badged in just before the change is the next shift's.
                    let logged_in_early = self
                        .ctx
                        .operator_since_ms
                        .is_some_and(|t| now.saturating_sub(t) <= EARLY_LOGIN_GRACE_MS);
                    if shift_changed
                        && self.cfg.operator.logout_at_shift_end
                        && self.ctx.operator.is_some()
                        && !logged_in_early
                    {
                        let source = ContextSource::Boundary {
                            boundary: Boundary::Shift,
                        };
                        self.set_operator(at, None, source, out);
                    }
                    let rotate = match self.cfg.lot.rotate {
                        Rotate::Never => None,
                        Rotate::Shift => shift_changed.then_some(Boundary::Shift),
                        Rotate::Day => day_changed.then_some(Boundary::Day),
                    };
                    if let (Some(boundary), true) = (rotate, self.lot.open.is_some()) {
                        self.open_or_alarm(at, env, ContextSource::Boundary { boundary }, out);
                    }
                }
            }
        }
        if let (Some(idle), Some(_)) = (self.cfg.operator.idle_logout, &self.ctx.operator) {
            let last = *self.last_activity_ms.get_or_insert(now);
            if now.saturating_sub(last) >= idle.as_millis() as u64 {
                self.set_operator(at, None, ContextSource::Idle, out);
            }
        }
        if self.cfg.lot.auto_open && self.lot.open.is_none() && self.numbering_blocked().is_none() {
            self.open_or_alarm(at, env, ContextSource::Auto, out);
        }
        self.serials.expire(now, &mut out.state);
    }
}
