//! The sequence allocator: one station's persisted numbering state and the
//! rule that picks the next lot number, so that a number is never issued
//! twice, even when the clock jumps backwards.
//!
//! **Stamp time.** A number is dated at `max(now, last stamp)`. When the
//! clock goes backwards (NTP correction, RTC reset after a power cut), the
//! numbering stays in the latest period it has reached instead of going back
//! into one whose numbers were already issued; the date in the number then
//! shows that later period until the clock catches up. Each [`Allocation`]
//! says whether this happened (`clock_went_back`), so the caller can raise an
//! alarm. A clock that jumps far ahead pins numbering to that future date in
//! the same way, and every later call reports it until real time catches up.
//!
//! **Restarts.** The sequence starts again at 1 when the stamp's period (see
//! [`Moment::period`](super::Moment::period)) is later than the stored one;
//! otherwise it counts on. With a fixed calendar and stamps that never go
//! back, "later" is the same as "different". The stored period only moves
//! forward, which also keeps numbers apart when a zone change moves plant
//! time back. A changed reset policy never restarts the sequence (it counts
//! on and adopts the new period), because the old policy's numbers of the
//! current period are not known. The rendered number is also compared with
//! the last one issued: if a template edit makes them equal, the sequence is
//! advanced until they differ.
//!
//! **Template edits.** The allocator keeps a mark (period and last sequence)
//! per template it has numbered with, the last [`MAX_MARKS`] of them. Going
//! back to an earlier template resumes that template's own sequence, so
//! switching `A` → `B` → `A` cannot reissue `A`'s numbers; a template never
//! seen before counts on from the current sequence.
//!
//! **Zone or shift-plan edits.** When plant time moves back behind the stored
//! period (a zone change makes the same instant an earlier local date), the
//! number is dated with the stored period's date, not the earlier one.
//!
//! The caller persists the allocator (serde JSON) in the same commit as the
//! record that carries the number, before printing it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::calendar::Day;
use super::{Calendar, Fields, Moment, Reset, Template};

/// How many earlier templates keep their own sequence mark.
pub const MAX_MARKS: usize = 16;

/// One issued lot number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub lot: String,
    /// The sequence number in the lot (restarts with the period).
    pub seq: u64,
    /// The instant the number is dated at: `max(ts_ms, last stamp)`.
    pub stamp_ms: u64,
    /// The given time was earlier than the last stamp: the number is dated
    /// at the last stamp instead (raise an alarm).
    pub clock_went_back: bool,
}

/// The persisted state of one station's lot numbering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocator {
    /// The reset policy `period` belongs to; `None` before the first number.
    reset: Option<Reset>,
    /// The latest period a number was issued in.
    period: String,
    /// The last sequence number issued (0 before the first number).
    seq: u64,
    /// The latest stamp time, milliseconds since the epoch.
    last_stamp_ms: u64,
    /// The last number issued.
    last_lot: String,
    /// The template (as written) the current period and seq belong to.
    #[serde(default)]
    template: String,
    /// The plant-time fields the last number was dated with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dated: Option<Dated>,
    /// Marks of earlier templates, most recent last.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    marks: VecDeque<Mark>,
}

/// Where an earlier template's numbering stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    template: String,
    reset: Option<Reset>,
    period: String,
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dated: Option<Dated>,
}

/// The date and shift a number was rendered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Dated {
    year: i16,
    month: i8,
    day: i8,
    yday: i16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shift: Option<String>,
}

impl Dated {
    fn of(m: &Moment) -> Dated {
        Dated {
            year: m.year,
            month: m.month,
            day: m.day,
            yday: m.yday,
            shift: m.shift.clone(),
        }
    }

    /// `base` dated as this number was.
    fn apply(&self, base: &Moment) -> Moment {
        let mut m = base.clone();
        (m.year, m.month, m.day, m.yday) = (self.year, self.month, self.day, self.yday);
        m.shift.clone_from(&self.shift);
        m.shift_day = Day {
            year: self.year,
            month: self.month,
            day: self.day,
            yday: self.yday,
        };
        m
    }
}

/// How often the sequence is advanced to get away from the last number
/// (once is always enough, since `{seq:N}` is never truncated).
const MAX_BUMPS: usize = 8;

impl Allocator {
    /// The next lot number at `ts_ms`. See the module docs for the rules.
    pub fn next(
        &mut self,
        template: &Template,
        reset: Reset,
        calendar: &Calendar,
        fields: Fields<'_>,
        ts_ms: u64,
    ) -> Allocation {
        let clock_went_back = ts_ms < self.last_stamp_ms;
        let stamp_ms = ts_ms.max(self.last_stamp_ms);
        let moment = calendar.at(stamp_ms);
        let period = moment.period(reset);
        self.switch_template(template.as_str());

        let mut dated_back = false;
        let mut seq = if self.reset != Some(reset) {
            self.reset = Some(reset);
            self.period = period;
            self.seq.saturating_add(1)
        } else if is_later(&period, &self.period) {
            self.period = period;
            1
        } else {
            // Same period, or plant time moved back behind it (zone edit):
            // stay in the stored period, dated as its numbers were.
            dated_back = period != self.period;
            self.seq.saturating_add(1)
        };

        let numbered = match (&self.dated, dated_back) {
            (Some(d), true) => d.apply(&moment.numbered(reset)),
            _ => moment.numbered(reset),
        };
        let mut lot = template.render(fields, &numbered, seq);
        for _ in 0..MAX_BUMPS {
            if lot != self.last_lot {
                break;
            }
            seq = seq.saturating_add(1);
            lot = template.render(fields, &numbered, seq);
        }

        self.seq = seq;
        self.last_stamp_ms = stamp_ms;
        self.last_lot.clone_from(&lot);
        self.dated = Some(Dated::of(&numbered));
        Allocation {
            lot,
            seq,
            stamp_ms,
            clock_went_back,
        }
    }

    /// Make `template` the current one: park the current template's mark
    /// and resume `template`'s own mark if it has one; a new template counts
    /// on from the current sequence.
    fn switch_template(&mut self, template: &str) {
        if self.template == template {
            return;
        }
        if self.reset.is_some() {
            let parked = Mark {
                template: std::mem::take(&mut self.template),
                reset: self.reset,
                period: self.period.clone(),
                seq: self.seq,
                dated: self.dated.clone(),
            };
            self.marks.retain(|m| m.template != parked.template);
            self.marks.push_back(parked);
            while self.marks.len() > MAX_MARKS {
                self.marks.pop_front();
            }
        }
        if let Some(i) = self.marks.iter().position(|m| m.template == template)
            && let Some(m) = self.marks.remove(i)
        {
            self.reset = m.reset;
            self.period = m.period;
            self.seq = m.seq;
            self.dated = m.dated;
        }
        self.template = template.to_owned();
    }

    /// The last sequence number issued (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The period of the last number (see [`Moment::period`](super::Moment::period)).
    pub fn period(&self) -> &str {
        &self.period
    }

    /// The last number issued (empty before the first).
    pub fn last_lot(&self) -> &str {
        &self.last_lot
    }

    /// The latest stamp time; numbers are never dated before it.
    pub fn last_stamp_ms(&self) -> u64 {
        self.last_stamp_ms
    }
}

/// Whether period key `new` is later than `old`. Keys are `YYYY`,
/// `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DD/shift`: the date parts sort by
/// time; on the same date another shift name counts as later (the next shift
/// of the day).
fn is_later(new: &str, old: &str) -> bool {
    let (new_date, new_shift) = new.split_once('/').unwrap_or((new, ""));
    let (old_date, old_shift) = old.split_once('/').unwrap_or((old, ""));
    new_date > old_date || (new_date == old_date && new_shift != old_shift)
}
