//! On-disk encoding of records: a format version byte followed by JSON.
//!
//! This is the store's private format, not the MQTT wire format. The version
//! byte lets a later release read records written by an earlier one.

use crate::record::Record;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty entry")]
    Empty,
    #[error("unknown record format version {0}")]
    Version(u8),
    #[error("undecodable record: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn encode(record: &Record) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(160);
    out.push(VERSION);
    serde_json::to_writer(&mut out, record)?;
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Record, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, json)) => Ok(serde_json::from_slice(json)?),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

/// Whether the encoded record is one drop-oldest keeps (a store alarm):
/// decoded only when it can be an alarm at all.
pub fn kept_by_drop_oldest(bytes: &[u8]) -> bool {
    const ALARM: &[u8] = br#""kind":"alarm""#;
    bytes.windows(ALARM.len()).any(|w| w == ALARM)
        && decode(bytes).is_ok_and(|r| r.kept_by_drop_oldest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Body;

    fn scan(raw: &[u8]) -> Record {
        Record {
            seq: 7,
            ts_ms: 1_795_000_000_000,
            clock_synced: true,
            station: Some("st10".into()),
            device: Some("scanner-1".into()),
            lot: Some("L1".into()),
            order: None,
            operator: None,
            body: Body::Scan {
                raw: raw.to_vec(),
                gs1: None,
            },
        }
    }

    #[test]
    fn round_trips_raw_bytes_exactly() {
        let raw = b"]d20109506000134352\x1d21SN\xff\x00".to_vec();
        let rec = scan(&raw);
        assert_eq!(decode(&encode(&rec).unwrap()).unwrap(), rec);
    }

    #[test]
    fn rejects_damaged_entries() {
        let mut bytes = encode(&scan(b"x")).unwrap();
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(CodecError::Version(9))));
        bytes[0] = VERSION;
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(decode(&bytes), Err(CodecError::Json(_))));
    }

    /// Property: damaged stored entries never panic the decoder.
    #[test]
    fn arbitrary_entries_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let good = encode(&scan(b"]C1010950600013435210L1\x1d3103000250")).unwrap();
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(0..bytes.len());
                bytes[at] = rng.u8(..);
            }
            bytes.truncate(rng.usize(0..=bytes.len()));
            let _ = decode(&bytes);
        }
    }
}
