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
//! The caller persists the allocator (serde JSON) in the same commit as the
//! record that carries the number, before printing it.

use serde::{Deserialize, Serialize};

use super::{Calendar, Fields, Reset, Template};

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

        let mut seq = if self.reset != Some(reset) {
            self.reset = Some(reset);
            self.period = period;
            self.seq.saturating_add(1)
        } else if is_later(&period, &self.period) {
            self.period = period;
            1
        } else {
            self.seq.saturating_add(1)
        };

        let numbered = moment.numbered(reset);
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
        Allocation {
            lot,
            seq,
            stamp_ms,
            clock_went_back,
        }
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
