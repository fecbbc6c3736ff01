//! The ids of signed MES commands seen within their replay window: a signed
//! command whose id is here is refused as a replay, whatever became of the
//! first one (applied or refused by its station).
//!
//! Each id is persisted as `cmd/seen/<id>`, holding until when it is kept
//! (the command's timestamp plus twice the window, see `uplink::signed`), in the same commit as the
//! command's audit record, so a restart still refuses the replay. The
//! plant-clock tick forgets ids whose time has passed: from then on their
//! timestamp alone refuses them. The memory is bounded: beyond
//! [`MAX_SEEN`] ids within the window, signed commands are refused until
//! older ones expire (never forgotten early, which would let one through).

use std::collections::HashMap;

use super::{Emitted, Rejection};

/// Key prefix of a remembered id in the store's state.
pub const SEEN_PREFIX: &str = "cmd/seen/";
/// Most signed command ids remembered at once.
pub const MAX_SEEN: usize = 10_000;

#[derive(Debug, Default)]
pub struct Seen {
    /// Command id → until when (ms since the Unix epoch) it is refused.
    until: HashMap<String, u64>,
}

impl Seen {
    /// The ids persisted by earlier commits (`Restore::scan(SEEN_PREFIX)`).
    /// An entry that cannot be read is kept until the next tick, which
    /// deletes it.
    pub fn restore(entries: Vec<(String, Vec<u8>)>) -> Self {
        let until = entries
            .into_iter()
            .filter_map(|(key, value)| {
                let id = key.strip_prefix(SEEN_PREFIX)?.to_owned();
                let until = <[u8; 8]>::try_from(value.as_slice()).map_or(0, u64::from_be_bytes);
                Some((id, until))
            })
            .collect();
        Seen { until }
    }

    /// Whether a signed command with this id may be applied.
    pub fn check(&self, id: &str) -> Result<(), Rejection> {
        if self.until.contains_key(id) {
            return Err(Rejection::Replayed(id.to_owned()));
        }
        if self.until.len() >= MAX_SEEN {
            return Err(Rejection::TooManySigned(MAX_SEEN));
        }
        Ok(())
    }

    /// Remember `id` until `until_ms`, in the commit of `out`.
    pub fn remember(&mut self, id: &str, until_ms: u64, out: &mut Emitted) {
        self.until.insert(id.to_owned(), until_ms);
        out.state.push((
            format!("{SEEN_PREFIX}{id}"),
            Some(until_ms.to_be_bytes().to_vec()),
        ));
    }

    /// Forget the ids whose time has passed at `now_ms`.
    pub fn expire(&mut self, now_ms: u64, out: &mut Emitted) {
        self.until.retain(|id, until| {
            let keep = *until >= now_ms;
            if !keep {
                out.state.push((format!("{SEEN_PREFIX}{id}"), None));
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_refused_until_their_time_then_forgotten_and_the_memory_is_bounded() {
        let mut seen = Seen::default();
        let mut out = Emitted::default();
        seen.remember("c1", 1_000, &mut out);
        assert_eq!(
            out.state,
            vec![(
                "cmd/seen/c1".to_owned(),
                Some(1_000u64.to_be_bytes().to_vec())
            )]
        );
        assert_eq!(seen.check("c1"), Err(Rejection::Replayed("c1".into())));
        assert_eq!(seen.check("c2"), Ok(()));

        // Restored from what was committed.
        let mut restored = Seen::restore(vec![
            ("cmd/seen/c1".into(), 1_000u64.to_be_bytes().to_vec()),
            ("cmd/seen/bad".into(), b"x".to_vec()),
        ]);
        assert!(restored.check("c1").is_err());
        let mut out = Emitted::default();
        restored.expire(1_000, &mut out);
        assert!(restored.check("c1").is_err(), "kept up to its time");
        assert_eq!(out.state, vec![("cmd/seen/bad".to_owned(), None)]);
        let mut out = Emitted::default();
        restored.expire(1_001, &mut out);
        assert_eq!(restored.check("c1"), Ok(()));
        assert_eq!(out.state, vec![("cmd/seen/c1".to_owned(), None)]);

        let mut full = Seen::default();
        let mut out = Emitted::default();
        for i in 0..MAX_SEEN {
            full.remember(&format!("c{i}"), 5_000, &mut out);
        }
        assert_eq!(full.check("new"), Err(Rejection::TooManySigned(MAX_SEEN)));
        full.expire(5_001, &mut out);
        assert_eq!(full.check("new"), Ok(()));
    }
}
