//! The plant calendar: an IANA time zone and a shift plan, turning an instant
//! (milliseconds since the epoch) into the local date, the running shift and
//! the keys that tell numbering periods apart, plus the next instant at which
//! a period ends.
//!
//! Zones are looked up with `jiff::tz::TimeZone::get`, that is in jiff's
//! global database: the host's zoneinfo (`TZDIR` or `/usr/share/zoneinfo`)
//! when there is one, otherwise the copy bundled into the binary
//! (`tzdb-bundle-always`), so a host without tzdata still knows every zone.
//!
//! **Shift starts on DST transition days.** Shift starts are local wall-clock
//! times. A start that does not exist (spring forward: 02:30 in Berlin on the
//! last Sunday of March) or that happens twice (fall back) is resolved with
//! jiff's *compatible* disambiguation, the rule of RFC 5545 (iCalendar): a
//! missing time moves forward by the length of the gap (02:30 becomes 03:30
//! summer time), a repeated time takes its first occurrence (02:30 summer
//! time). The running shift at an instant is the shift instance with the latest
//! start at or before it, so a shift is never entered twice and none panics or
//! vanishes silently; a shift whose start moves past the next one's on that day
//! simply runs for no time.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

use super::Reset;

/// Latest instant the calendar works with: 9999-12-01T00:00:00Z. Later
/// instants (a clock gone mad, `u64::MAX`) are clamped to it, which leaves
/// jiff room for the day before and after in every zone.
pub const MAX_MS: u64 = 253_399_622_400_000;

/// Longest shift name accepted (names go into lot numbers).
pub const MAX_SHIFT_NAME: usize = 16;

/// A shift: starts at `start_minute` after local midnight and runs until the
/// next shift starts (the last one wraps past midnight to the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub name: String,
    pub start_minute: u16,
}

/// The plant calendar: time zone and shift plan.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
    zone_name: String,
    /// Sorted by start minute; names and start minutes are unique.
    shifts: Vec<Shift>,
}

/// A local calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    pub year: i16,
    pub month: i8,
    pub day: i8,
    /// Day of the year, 1..=366.
    pub yday: i16,
}

impl Day {
    fn of(date: Date) -> Day {
        Day {
            year: date.year(),
            month: date.month(),
            day: date.day(),
            yday: date.day_of_year(),
        }
    }

    /// `2026-11-22`. Keys of later days sort after earlier ones.
    pub fn key(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A point in plant time, as lot numbers and boundaries need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    pub year: i16,
    pub month: i8,
    pub day: i8,
    /// Day of the year, 1..=366.
    pub yday: i16,
    /// The shift running at this moment (`None` when no shifts are configured).
    pub shift: Option<String>,
    /// Identifies the shift instance: local start date and name, e.g.
    /// `2026-11-21/C` for a night shift that started the evening before.
    /// Empty when no shifts are configured.
    pub shift_key: String,
    /// The local date the running shift instance started on (the production
    /// day of a night shift after midnight is the day before). Equals the
    /// calendar date when no shifts are configured.
    pub shift_day: Day,
}

impl Moment {
    /// The local calendar date.
    pub fn date(&self) -> Day {
        Day {
            year: self.year,
            month: self.month,
            day: self.day,
            yday: self.yday,
        }
    }

    /// The local date as a key, `2026-11-22`: two instants are on the same
    /// local day exactly when their day keys are equal.
    pub fn day_key(&self) -> String {
        self.date().key()
    }

    /// The numbering period this moment falls in under `reset`: `""` for
    /// [`Reset::Never`], `2026-11-22` daily, the shift key (`2026-11-21/C`)
    /// per shift, `2026-11` monthly, `2026` yearly. Two moments are in the
    /// same period exactly when their keys are equal; apart from the shift
    /// name, later periods have keys that sort after earlier ones.
    ///
    /// A per-shift reset without shifts configured falls back to the day key
    /// (configuration rejects that combination; this only avoids a panic).
    pub fn period(&self, reset: Reset) -> String {
        match reset {
            Reset::Never => String::new(),
            Reset::Daily => self.day_key(),
            Reset::Shift if self.shift_key.is_empty() => self.day_key(),
            Reset::Shift => self.shift_key.clone(),
            Reset::Monthly => format!("{:04}-{:02}", self.year, self.month),
            Reset::Yearly => format!("{:04}", self.year),
        }
    }

    /// This moment as a lot number under `reset` dates it. With a per-shift
    /// reset, the date tokens show the day the shift started (its production
    /// day), so a night shift keeps one date across midnight; otherwise two
    /// night shifts would both print the date between them and could issue
    /// the same number. Every other reset uses the calendar date.
    pub fn numbered(&self, reset: Reset) -> Moment {
        let mut m = self.clone();
        if reset == Reset::Shift {
            let d = self.shift_day;
            (m.year, m.month, m.day, m.yday) = (d.year, d.month, d.day, d.yday);
        }
        m
    }
}

/// A shift instance: the date it is scheduled on, its index in the plan and
/// the instant it starts.
#[derive(Debug, Clone, Copy)]
struct Instance {
    start: Timestamp,
    date: Date,
    index: usize,
}

impl Calendar {
    /// `tz` is an IANA zone name (`Europe/Berlin`) or `UTC`. Shifts need not
    /// be given in order; their start minutes and names must differ.
    pub fn new(tz: &str, mut shifts: Vec<Shift>) -> Result<Calendar, String> {
        let zone = TimeZone::get(tz).map_err(|_| {
            format!(
                "unknown time zone {tz:?}: expected an IANA time zone such as \"Europe/Berlin\" or \"UTC\""
            )
        })?;
        for s in &shifts {
            if s.name.is_empty()
                || s.name.chars().count() > MAX_SHIFT_NAME
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(format!(
                    "shift name {:?}: expected 1 to {MAX_SHIFT_NAME} characters from A-Z, a-z, 0-9 and `-` \
                     (it can appear in lot numbers)",
                    s.name
                ));
            }
            if s.start_minute >= 24 * 60 {
                return Err(format!(
                    "shift {:?} starts at minute {}: expected a start from 0 (00:00) to 1439 (23:59) minutes after local midnight",
                    s.name, s.start_minute
                ));
            }
        }
        shifts.sort_by_key(|s| s.start_minute);
        for pair in shifts.windows(2) {
            if pair[0].start_minute == pair[1].start_minute {
                return Err(format!(
                    "shifts {:?} and {:?} both start at {}: expected each shift to start at a different time",
                    pair[0].name,
                    pair[1].name,
                    hhmm(pair[0].start_minute)
                ));
            }
        }
        for (i, a) in shifts.iter().enumerate() {
            if shifts[i + 1..].iter().any(|b| b.name == a.name) {
                return Err(format!(
                    "shift name {:?} is used twice: expected each shift to have its own name",
                    a.name
                ));
            }
        }
        Ok(Calendar {
            tz: zone,
            zone_name: tz.to_string(),
            shifts,
        })
    }

    /// UTC without shifts.
    pub fn utc() -> Calendar {
        Calendar {
            tz: TimeZone::UTC,
            zone_name: "UTC".to_string(),
            shifts: Vec::new(),
        }
    }

    /// The zone name as configured.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The shift plan, sorted by start time.
    pub fn has_shifts(&self) -> bool {
        !self.shifts().is_empty()
    }

    pub fn shifts(&self) -> &[Shift] {
        &self.shifts
    }

    /// Length of the longest shift name (0 without shifts).
    pub fn longest_shift_name(&self) -> usize {
        self.shifts
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0)
    }

    /// Plant time at `ts_ms` (clamped to [`MAX_MS`]).
    pub fn at(&self, ts_ms: u64) -> Moment {
        let t = timestamp(ts_ms);
        let date = self.tz.to_datetime(t).date();
        let today = Day::of(date);
        match self.running(t, date) {
            Some(inst) => {
                let name = self.shifts[inst.index].name.clone();
                Moment {
                    year: today.year,
                    month: today.month,
                    day: today.day,
                    yday: today.yday,
                    shift_key: format!("{}/{}", Day::of(inst.date).key(), name),
                    shift: Some(name),
                    shift_day: Day::of(inst.date),
                }
            }
            None => Moment {
                year: today.year,
                month: today.month,
                day: today.day,
                yday: today.yday,
                shift: None,
                shift_key: String::new(),
                shift_day: today,
            },
        }
    }

    /// The first instant after `ts_ms` at which [`Moment::period`] of
    /// `reset` changes: the next local midnight (daily), the next shift start
    /// (per shift), the first of the next month or year at local midnight.
    /// `None` for [`Reset::Never`] and past the supported range.
    pub fn next_boundary(&self, ts_ms: u64, reset: Reset) -> Option<u64> {
        let t = timestamp(ts_ms);
        let date = self.tz.to_datetime(t).date();
        let next_date = match reset {
            Reset::Never => return None,
            Reset::Shift if !self.shifts.is_empty() => {
                let start = self
                    .instances(date, 2)
                    .filter(|i| i.start > t)
                    .map(|i| i.start)
                    .min()?;
                let b = millis(start);
                return (b > ts_ms).then_some(b);
            }
            Reset::Daily | Reset::Shift => date.tomorrow().ok()?,
            Reset::Monthly => date.last_of_month().tomorrow().ok()?,
            Reset::Yearly => date.last_of_year().tomorrow().ok()?,
        };
        // A midnight repeated by a fall-back transition counts from its
        // first occurrence, unless that is already past.
        let midnight = next_date.to_datetime(jiff::civil::Time::midnight());
        let start = match self.start_of(midnight) {
            Some(start) if start > t => start,
            _ => self.tz.to_ambiguous_timestamp(midnight).later().ok()?,
        };
        let b = millis(start);
        (start > t && b > ts_ms).then_some(b)
    }

    /// The running shift instance: the latest start at or before `t` among
    /// the instances scheduled the day before, on, and after `t`'s local date
    /// (the day after only matters where a transition puts local time back
    /// across midnight). Ties go to the later shift of the plan.
    fn running(&self, t: Timestamp, date: Date) -> Option<Instance> {
        if self.shifts.is_empty() {
            return None;
        }
        let best = self
            .instances(date, 1)
            .filter(|i| i.start <= t)
            .max_by_key(|i| (i.start, i.date, i.index));
        // Only reachable at the very edge of the supported range, where the
        // previous day cannot be computed: take the last shift of the plan.
        best.or_else(|| {
            Some(Instance {
                start: t,
                date: date.yesterday().unwrap_or(date),
                index: self.shifts.len() - 1,
            })
        })
    }

    /// Shift instances scheduled from the day before `date` to `after` days
    /// after it.
    fn instances(&self, date: Date, after: i64) -> impl Iterator<Item = Instance> + '_ {
        (-1..=after)
            .filter_map(move |k| date.checked_add(jiff::Span::new().days(k)).ok())
            .flat_map(move |d| {
                self.shifts
                    .iter()
                    .enumerate()
                    .filter_map(move |(index, s)| {
                        let h = (s.start_minute / 60) as i8;
                        let m = (s.start_minute % 60) as i8;
                        let start = self.start_of(d.at(h, m, 0, 0))?;
                        Some(Instance {
                            start,
                            date: d,
                            index,
                        })
                    })
            })
    }

    /// The instant a local wall-clock time happens, by compatible
    /// disambiguation (see the module docs).
    fn start_of(&self, dt: DateTime) -> Option<Timestamp> {
        self.tz.to_ambiguous_timestamp(dt).compatible().ok()
    }
}

fn hhmm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// `ts_ms` clamped to `[0, MAX_MS]` as a jiff timestamp.
fn timestamp(ts_ms: u64) -> Timestamp {
    let ms = ts_ms.min(MAX_MS) as i64;
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn millis(t: Timestamp) -> u64 {
    // Instants before the epoch can only come from the day before epoch
    // instants in zones west of UTC; callers never see them as boundaries
    // (boundaries lie after the given instant, which is at least 0).
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}
