//! Product serials already seen at a station, to refuse duplicates: within
//! the open lot (default) or within a time window across lots.
//!
//! Each serial is persisted under `ser/<station>/<serial>` in the commit of
//! its `product` record, so the check survives restarts; entries are deleted
//! when their lot closes (lot window) or when they age out (time window).
//! Memory: about 100 bytes per serial held.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::DuplicateWindow;

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
    /// Time window only: serials by the time they were seen, oldest first.
    by_time: VecDeque<(u64, String)>,
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
            if matches!(s.window, DuplicateWindow::Time(_)) {
                s.by_time.push_back((seen.ts_ms, serial.clone()));
            }
            s.seen.insert(serial, seen);
        }
        s
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

    pub fn insert(&mut self, serial: &str, lot: &str, now_ms: u64, writes: &mut Writes) {
        let seen = Seen {
            lot: lot.to_owned(),
            ts_ms: now_ms,
        };
        writes.push((
            format!("{}{serial}", self.prefix),
            Some(serde_json::to_vec(&seen).unwrap_or_default()),
        ));
        if matches!(self.window, DuplicateWindow::Time(_)) {
            self.by_time.push_back((now_ms, serial.to_owned()));
        }
        self.seen.insert(serial.to_owned(), seen);
    }

    /// The lot closed: with the lot window, forget (and delete) its serials.
    pub fn lot_closed(&mut self, writes: &mut Writes) {
        if self.window != DuplicateWindow::Lot {
            return;
        }
        for (serial, _) in self.seen.drain() {
            writes.push((format!("{}{serial}", self.prefix), None));
        }
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
