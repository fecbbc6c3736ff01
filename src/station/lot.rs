//! The lot state of one station: the open lot with its running totals, the
//! numbering allocator, and the plant-time keys last seen (to notice shift
//! and day boundaries, also across a restart). Persisted as one small JSON
//! value under `lot/<station>`, committed with the records that change it.

use serde::{Deserialize, Serialize};

use crate::config::LotConfig;
use crate::numbering::Allocator;
use crate::record::{LotTotals, Material, MaterialTally};

/// Distinct materials listed in a lot's totals, at most.
pub const MAX_MATERIALS: usize = 256;
/// Distinct operators or orders listed in a lot's totals, at most.
pub const MAX_NAMES: usize = 64;

/// Key under which a station's lot state is persisted.
pub fn lot_key(station: &str) -> String {
    format!("lot/{station}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LotState {
    #[serde(default)]
    pub alloc: Allocator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenLot>,
    /// Plant-time keys at the last tick, and that tick's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Seen>,
    /// The template that was in use when the numbering state was found
    /// unreadable: numbers from it are not generated again (they could
    /// repeat) until the template is changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbering_blocked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub shift: String,
    pub day: String,
    pub ts_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenLot {
    pub lot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_seq: Option<u64>,
    pub totals: LotTotals,
}

impl OpenLot {
    /// A lot opened at `ts_ms`; its good and scrap totals start at 0 when
    /// the station has those counters (`None`: not counted).
    pub fn new(lot: String, number_seq: Option<u64>, ts_ms: u64, cfg: &LotConfig) -> Self {
        OpenLot {
            lot,
            number_seq,
            totals: LotTotals {
                opened_ms: ts_ms,
                good: cfg.good.as_ref().map(|_| 0),
                scrap: cfg.scrap.as_ref().map(|_| 0),
                ..LotTotals::default()
            },
        }
    }

    /// Count `delta` units of counter `name`; `good`/`scrap` name the
    /// station's good and scrap counters.
    pub fn count(&mut self, name: &str, delta: u64, good: Option<&str>, scrap: Option<&str>) {
        let t = &mut self.totals;
        let slot = t.counts.entry(name.to_owned()).or_default();
        *slot = slot.saturating_add(delta);
        if good == Some(name) {
            t.good = Some(t.good.unwrap_or(0).saturating_add(delta));
        }
        if scrap == Some(name) {
            t.scrap = Some(t.scrap.unwrap_or(0).saturating_add(delta));
        }
    }

    pub fn material(&mut self, m: &Material) {
        let t = &mut self.totals;
        if let Some(tally) = t
            .materials
            .iter_mut()
            .find(|x| x.gtin == m.gtin && x.lot == m.lot)
        {
            tally.count = tally.count.saturating_add(1);
        } else if t.materials.len() < MAX_MATERIALS {
            t.materials.push(MaterialTally {
                gtin: m.gtin.clone(),
                lot: m.lot.clone(),
                count: 1,
            });
        } else {
            t.materials_truncated = true;
            t.materials_untallied = t.materials_untallied.saturating_add(1);
        }
    }

    pub fn operator(&mut self, who: &str) {
        let t = &mut self.totals;
        push_name(&mut t.operators, &mut t.operators_truncated, who);
    }

    pub fn order(&mut self, order: &str) {
        let t = &mut self.totals;
        push_name(&mut t.orders, &mut t.orders_truncated, order);
    }
}

/// Add `name` to a list of distinct names; one that no longer fits sets
/// `truncated`.
fn push_name(list: &mut Vec<String>, truncated: &mut bool, name: &str) {
    if list.iter().any(|n| n == name) {
        return;
    }
    if list.len() < MAX_NAMES {
        list.push(name.to_owned());
    } else {
        *truncated = true;
    }
}

impl LotState {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decode persisted lot state; a damaged value is logged and dropped: the
    /// station starts with no open lot. The allocator then starts again, so a
    /// damaged value is reported loudly: numbers could repeat.
    pub fn decode(station: &str, bytes: &[u8]) -> Option<LotState> {
        match serde_json::from_slice(bytes) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::error!(station, error = %err, "persisted lot state unreadable; starting with no open lot and a fresh lot sequence");
                None
            }
        }
    }
}
