//! Product serials already seen at a station, to refuse duplicates: within
//! the open lot (default) or within a time window across lots.
//!
//! Each serial is persisted under `ser/<station>/<serial>` in the commit of
//! its `product` record, so the check survives restarts; entries are deleted
//! when their lot closes (lot window) or when they age out (time window).
//! Memory: about 100 bytes per serial held, at most [`MAX_SERIALS`] per
//! station; beyond that the oldest serials are dropped from the check (and
//! the caller raises an alarm).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::DuplicateWindow;

/// Most serials one station holds for the duplicate check (about 20 MiB).
pub const MAX_SERIALS: usize = 200_000;

/// Prefix of a station's serial entries.
pub fn serial_prefix(station: &str) -> String {
    format!("ser/{station}/")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    lot: String,
    ts_ms: u64,
}

/// State writes: `(key, Some(value))` upserts, `(key, None)` deletes.
pub type Writes = Vec<(String, Option<Vec<u8>>)>;

#[derive(Debug)]
pub struct Serials {
    prefix: String,
    window: DuplicateWindow,
    seen: HashMap<String, Seen>,
    /// Serials in the order they were seen, oldest first.
    by_time: VecDeque<(u64, String)>,
    cap: usize,
}

impl Serials {
    /// Rebuild from persisted entries (`ser/<station>/…`).
    pub fn restore(
        station: &str,
        window: DuplicateWindow,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Self {
        let prefix = serial_prefix(station);
        let mut s = Serials {
            prefix,
            window,
            seen: HashMap::new(),
            by_time: VecDeque::new(),
            cap: MAX_SERIALS,
        };
        let mut restored: Vec<(String, Seen)> = entries
            .into_iter()
            .filter_map(|(key, bytes)| {
                let serial = key.strip_prefix(&s.prefix)?.to_owned();
                match serde_json::from_slice::<Seen>(&bytes) {
                    Ok(seen) => Some((serial, seen)),
                    Err(err) => {
                        tracing::error!(key, error = %err, "persisted serial unreadable; ignored");
                        None
                    }
                }
            })
            .collect();
        restored.sort_by_key(|(_, seen)| seen.ts_ms);
        for (serial, seen) in restored {
            s.by_time.push_back((seen.ts_ms, serial.clone()));
            s.seen.insert(serial, seen);
        }
        s
    }

    /// The same with another bound (tests).
    #[cfg(test)]
    pub fn with_cap(mut self, cap: usize) -> Self {
        self.cap = cap.max(1);
        self
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether `serial` was already seen in `lot` (lot window) or within the
    /// time window before `now_ms`.
    pub fn is_duplicate(&self, serial: &str, lot: &str, now_ms: u64) -> bool {
        match (self.seen.get(serial), self.window) {
            (None, _) => false,
            (Some(seen), DuplicateWindow::Lot) => seen.lot == lot,
            (Some(seen), DuplicateWindow::Time(w)) => {
                now_ms.saturating_sub(seen.ts_ms) < w.as_millis() as u64
            }
        }
    }

    /// Remember `serial`; returns whether older serials had to be dropped
    /// from the check to stay within the bound.
    pub fn insert(&mut self, serial: &str, lot: &str, now_ms: u64, writes: &mut Writes) -> bool {
        let seen = Seen {
            lot: lot.to_owned(),
            ts_ms: now_ms,
        };
        writes.push((
            format!("{}{serial}", self.prefix),
            Some(serde_json::to_vec(&seen).unwrap_or_default()),
        ));
        self.by_time.push_back((now_ms, serial.to_owned()));
        self.seen.insert(serial.to_owned(), seen);
        let mut dropped = false;
        while self.seen.len() > self.cap {
            let Some((ts, old)) = self.by_time.pop_front() else {
                break;
            };
            if self.seen.get(&old).is_some_and(|s| s.ts_ms == ts) {
                self.seen.remove(&old);
                writes.push((format!("{}{old}", self.prefix), None));
                dropped = true;
            }
        }
        dropped
    }

    /// The lot closed: with the lot window, forget (and delete) its serials.
    pub fn lot_closed(&mut self, writes: &mut Writes) {
        if self.window != DuplicateWindow::Lot {
            return;
        }
        for (serial, _) in self.seen.drain() {
            writes.push((format!("{}{serial}", self.prefix), None));
        }
        self.by_time.clear();
    }

    /// With the time window, forget (and delete) serials older than it.
    pub fn expire(&mut self, now_ms: u64, writes: &mut Writes) {
        let DuplicateWindow::Time(w) = self.window else {
            return;
        };
        let horizon = now_ms.saturating_sub(w.as_millis() as u64);
        while let Some((ts, _)) = self.by_time.front() {
            if *ts >= horizon {
                break;
            }
            let Some((ts, serial)) = self.by_time.pop_front() else {
                break;
            };
            // Only if not seen again later (a re-insert after expiry).
            if self.seen.get(&serial).is_some_and(|s| s.ts_ms == ts) {
                self.seen.remove(&serial);
                writes.push((format!("{}{serial}", self.prefix), None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_serials_leave_the_check_at_the_bound() {
        let mut s = Serials::restore("st", DuplicateWindow::Lot, vec![]).with_cap(2);
        let mut writes = Writes::new();
        assert!(!s.insert("A", "L1", 1, &mut writes));
        assert!(!s.insert("B", "L1", 2, &mut writes));
        assert!(s.insert("C", "L1", 3, &mut writes));
        assert_eq!(s.len(), 2);
        assert!(!s.is_duplicate("A", "L1", 4), "dropped from the check");
        assert!(s.is_duplicate("B", "L1", 4) && s.is_duplicate("C", "L1", 4));
        assert_eq!(writes.last(), Some(&("ser/st/A".to_owned(), None)));
        // Restored in time order, the bound holds the newest.
        let entries = vec![
            ("ser/st/X".to_owned(), br#"{"lot":"L1","ts_ms":9}"#.to_vec()),
            ("ser/st/Y".to_owned(), br#"{"lot":"L1","ts_ms":8}"#.to_vec()),
            ("ser/st/Z".to_owned(), b"damaged".to_vec()),
        ];
        let s = Serials::restore("st", DuplicateWindow::Lot, entries);
        assert_eq!(s.len(), 2);
        assert!(s.is_duplicate("X", "L1", 10) && !s.is_duplicate("X", "L2", 10));
    }
}
