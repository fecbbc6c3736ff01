//! The store's epoch: a random id made once with a store, so that a store
//! that was wiped or replaced is announced, not mistaken for the old one.
//! `seq` counts within an epoch; `(gateway, epoch, seq)` is the idempotency
//! key at the MES (docs/mqtt.md, "Delivery semantics").
//!
//! It is kept twice: in the store (state key [`STATE_KEY`], so a salvage
//! carries it with the other state) and in the seq floor (`seq.floor`, so a
//! store rebuilt from nothing above the floor keeps it: the floor keeps seq
//! monotonic there, so the epoch can stay). A data directory that lost both
//! starts a new epoch at seq 1, announced by a `store-created` alarm that
//! [`created_alarm`] makes.

use std::fmt;
use std::io::Read as _;
use std::str::FromStr;

use crate::record::{AlarmEvent, Record};

/// The state key the epoch is kept under in the store.
pub const STATE_KEY: &str = "store/epoch";

/// 128 random bits, shown as a UUID (version 4):
/// `6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f60`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; 16]);

impl Epoch {
    /// A new epoch from the kernel's random source.
    pub fn generate() -> std::io::Result<Epoch> {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        // UUID version 4, RFC 9562 variant.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(Epoch(bytes))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Epoch {
    type Err = String;

    fn from_str(s: &str) -> Result<Epoch, String> {
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return Err(format!("not an epoch: {s:?}"));
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            bytes[i] = u8::from_str_radix(text, 16).map_err(|e| format!("epoch: {e}"))?;
        }
        let epoch = Epoch(bytes);
        // Only the canonical form (lowercase, dashes in place).
        if epoch.to_string() != s {
            return Err(format!("not an epoch: {s:?}"));
        }
        Ok(epoch)
    }
}

/// Why a store got a new epoch at this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Neither a store with records nor a seq floor was there: a first
    /// start, or the data directory was wiped or replaced.
    New,
    /// A store made by a linegate without epochs: it gets one, and its
    /// seq goes on.
    Upgrade,
}

/// The `store-created` alarm for a new epoch (committed with it, as the
/// store's first record in that epoch).
pub fn created_alarm(epoch: Epoch, why: Why, data_dir: &std::path::Path) -> Record {
    let message = match why {
        Why::New => format!(
            "a new store was created in {} with epoch {epoch}: the first start of this gateway, \
             or its previous store is gone (data directory deleted or replaced, a new card). seq \
             starts again at 1 in this epoch. Every station's lot numbering starts afresh: \
             numbers of the current period (any, for a template that never resets) may repeat",
            data_dir.display()
        ),
        Why::Upgrade => format!(
            "the store in {} had no epoch (made by an earlier linegate) and now has epoch \
             {epoch}; seq goes on and the lot numbering is unchanged",
            data_dir.display()
        ),
    };
    store_alarm(AlarmEvent::StoreCreated, message)
}

/// The `store-lost` alarm: the data directory went away under the running
/// gateway (committed into the store still open, for the uplink to deliver
/// if it can before the gateway stops).
pub fn lost_alarm(what: &str, epoch: Option<Epoch>) -> Record {
    let epoch = epoch.map_or("-".to_owned(), |e| e.to_string());
    store_alarm(
        AlarmEvent::StoreLost,
        format!(
            "the data directory was deleted, moved or replaced while the gateway ran ({what}): \
             records of epoch {epoch} not delivered by now are lost with it. The gateway stops \
             (exit 74); restarted, it starts a new store with a new epoch"
        ),
    )
}

/// An alarm the store makes itself.
pub(super) fn store_alarm(event: AlarmEvent, message: String) -> Record {
    Record::gateway_alarm(crate::clock::now_ms(), event, message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_random_uuids_that_round_trip() {
        let a = Epoch::generate().unwrap();
        let b = Epoch::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert!("89ab".contains(&text[19..20]), "variant: {text}");
        assert_eq!(text.parse::<Epoch>(), Ok(a));
        for bad in [
            "",
            "6f1c2a9e0b4d4c3f9a7e2d5b8c1e4f60",
            "6F1C2A9E-0B4D-4C3F-9A7E-2D5B8C1E4F60",
            "6f1c2a9e-0b4d-4c3f-9a7e-2d5b8c1e4f6g",
            "6f1c2a9e0-b4d-4c3f-9a7e-2d5b8c1e4f60",
        ] {
            assert!(bad.parse::<Epoch>().is_err(), "{bad:?}");
        }
    }
}
