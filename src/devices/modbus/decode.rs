//! Register words (or a bit) → a typed [`Sample`]. Pure.
//!
//! # Word orders
//!
//! Modbus registers are 16-bit big-endian; how a PLC spreads a wider value
//! over several registers is vendor-defined. [`WordOrder`] names the byte
//! order of the value as it appears on the wire, register after register,
//! with `A` the most significant byte (domain-standards §4.5):
//!
//! | order | 32-bit value `A B C D` | 64-bit value `A B C D E F G H` |
//! |---|---|---|
//! | `ABCD` | `[AB] [CD]` | `[AB] [CD] [EF] [GH]` |
//! | `CDAB` | `[CD] [AB]` | `[GH] [EF] [CD] [AB]` |
//! | `BADC` | `[BA] [DC]` | `[BA] [DC] [FE] [HG]` |
//! | `DCBA` | `[DC] [BA]` | `[HG] [FE] [DC] [BA]` |
//!
//! That is, for any width: `CDAB` reverses the order of the words, `BADC`
//! swaps the two bytes inside each word, `DCBA` does both (the whole value
//! little-endian). For 64 bits "word-swapped" therefore means *all four
//! words reversed* (low word first), not pairwise swapped.
//!
//! Single-register values (`u16`, `i16`, and `bool` read from a register) are
//! not affected by the word order: a register is big-endian by the standard.
//!
//! Example: f32 123.45 = `0x42F6E666` arrives as `42F6 E666` (ABCD),
//! `E666 42F6` (CDAB), `F642 66E6` (BADC), `66E6 F642` (DCBA).

use std::sync::Arc;

use thiserror::Error;

use crate::config::{DataType, RegisterConfig, Role, WordOrder};
use crate::devices::Sample;

/// What a poll read for one register map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawValue<'a> {
    /// The words of a register-table value, in wire order.
    Words(&'a [u16]),
    /// One bit of a coil or discrete-input table.
    Bit(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("{data_type} needs {expected} register(s), got {got}")]
    WordCount {
        data_type: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0} cannot be read from a coil or discrete input (only bool can)")]
    NotABit(&'static str),
}

/// Joins `words` (1, 2 or 4 of them, wire order) into one integer, most
/// significant byte first, according to `order` (see the module docs).
/// More than 4 words keep only the last 64 bits of the result.
pub fn join_words(words: &[u16], order: WordOrder) -> u64 {
    let swap_bytes = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    let reverse_words = matches!(order, WordOrder::Cdab | WordOrder::Dcba);
    // One register is big-endian whatever the configured order.
    let (swap_bytes, reverse_words) = if words.len() == 1 {
        (false, false)
    } else {
        (swap_bytes, reverse_words)
    };
    let word = |w: u16| if swap_bytes { w.swap_bytes() } else { w };
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(word(*w));
    if reverse_words {
        words.iter().rev().fold(0, fold)
    } else {
        words.iter().fold(0, fold)
    }
}

/// The inverse of [`join_words`]: the `n` words (1, 2 or 4) that carry the
/// low `16·n` bits of `value` in `order`, in wire order.
pub fn split_words(value: u64, n: usize, order: WordOrder) -> Vec<u16> {
    let n = n.min(4);
    // Most significant word first (ABCD).
    let mut words: Vec<u16> = (0..n).rev().map(|i| (value >> (16 * i)) as u16).collect();
    if n > 1 {
        if matches!(order, WordOrder::Badc | WordOrder::Dcba) {
            for w in &mut words {
                *w = w.swap_bytes();
            }
        }
        if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
            words.reverse();
        }
    }
    words
}

/// Decodes one register map entry from what the poll read for it.
///
/// `raw` is the bit pattern zero-extended to 64 bits; `value` is the number
/// (sign-extended for i16/i32, IEEE 754 for f32; a NaN or infinite float is
/// passed through as read). For [`Role::Value`] `value` is then scaled:
/// `value · scale + offset`; counters and states are never scaled.
pub fn decode(
    reg: &RegisterConfig,
    name: &Arc<str>,
    raw: RawValue<'_>,
) -> Result<Sample, DecodeError> {
    let dt = reg.data_type;
    let (raw, value) = match raw {
        RawValue::Bit(bit) => {
            if dt != DataType::Bool {
                return Err(DecodeError::NotABit(dt.as_str()));
            }
            (u64::from(bit), f64::from(u8::from(bit)))
        }
        RawValue::Words(words) => {
            let expected = usize::from(dt.registers());
            if words.len() != expected {
                return Err(DecodeError::WordCount {
                    data_type: dt.as_str(),
                    expected,
                    got: words.len(),
                });
            }
            let joined = join_words(words, reg.word_order);
            match dt {
                // A bool kept in a register: any non-zero word is true.
                DataType::Bool => {
                    let bit = joined != 0;
                    (u64::from(bit), f64::from(u8::from(bit)))
                }
                DataType::U16 | DataType::U32 => (joined, joined as f64),
                DataType::U64 => (joined, joined as f64),
                DataType::I16 => (joined, f64::from(joined as u16 as i16)),
                DataType::I32 => (joined, f64::from(joined as u32 as i32)),
                DataType::F32 => (joined, f64::from(f32::from_bits(joined as u32))),
            }
        }
    };
    let value = match reg.role {
        Role::Value => value * reg.scale + reg.offset,
        Role::Counter | Role::State => value,
    };
    Ok(Sample {
        name: name.clone(),
        role: reg.role,
        raw,
        bits: dt.bits(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Table;

    fn reg(dt: DataType, order: WordOrder, role: Role) -> RegisterConfig {
        RegisterConfig {
            name: "x".into(),
            station: "s".into(),
            table: Table::Holding,
            address: 0,
            data_type: dt,
            word_order: order,
            scale: 1.0,
            offset: 0.0,
            role,
            max_rate: 1000.0,
        }
    }

    fn dec(dt: DataType, order: WordOrder, words: &[u16]) -> Sample {
        decode(
            &reg(dt, order, Role::State),
            &Arc::from("x"),
            RawValue::Words(words),
        )
        .expect("decodes")
    }

    const ORDERS: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    #[test]
    fn f32_123_45_in_all_orders() {
        // domain-standards §4.5.
        let table: [(WordOrder, [u16; 2]); 4] = [
            (WordOrder::Abcd, [0x42F6, 0xE666]),
            (WordOrder::Cdab, [0xE666, 0x42F6]),
            (WordOrder::Badc, [0xF642, 0x66E6]),
            (WordOrder::Dcba, [0x66E6, 0xF642]),
        ];
        for (order, words) in table {
            let s = dec(DataType::F32, order, &words);
            assert_eq!(s.raw, 0x42F6_E666, "{order:?}");
            assert_eq!(s.bits, 32);
            assert_eq!(s.value, f64::from(123.45f32), "{order:?}");
            assert_eq!(split_words(0x42F6_E666, 2, order), words, "{order:?}");
        }
    }

    #[test]
    fn u32_0x12345678_in_all_orders() {
        let table: [(WordOrder, [u16; 2]); 4] = [
            (WordOrder::Abcd, [0x1234, 0x5678]),
            (WordOrder::Cdab, [0x5678, 0x1234]),
            (WordOrder::Badc, [0x3412, 0x7856]),
            (WordOrder::Dcba, [0x7856, 0x3412]),
        ];
        for (order, words) in table {
            let s = dec(DataType::U32, order, &words);
            assert_eq!(s.raw, 0x1234_5678, "{order:?}");
            assert_eq!(s.value, f64::from(0x1234_5678u32), "{order:?}");
            assert_eq!(split_words(0x1234_5678, 2, order), words, "{order:?}");
        }
    }

    #[test]
    fn u64_in_all_orders() {
        let v = 0x0102_0304_0506_0708u64;
        let table: [(WordOrder, [u16; 4]); 4] = [
            (WordOrder::Abcd, [0x0102, 0x0304, 0x0506, 0x0708]),
            (WordOrder::Cdab, [0x0708, 0x0506, 0x0304, 0x0102]),
            (WordOrder::Badc, [0x0201, 0x0403, 0x0605, 0x0807]),
            (WordOrder::Dcba, [0x0807, 0x0605, 0x0403, 0x0201]),
        ];
        for (order, words) in table {
            let s = dec(DataType::U64, order, &words);
            assert_eq!(s.raw, v, "{order:?}");
            assert_eq!(s.bits, 64);
            assert_eq!(s.value, v as f64);
            assert_eq!(split_words(v, 4, order), words, "{order:?}");
        }
        // DCBA of 64 bits is the value's little-endian bytes.
        let le = v.to_le_bytes();
        let words = split_words(v, 4, WordOrder::Dcba);
        let wire: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(wire, le);
    }

    #[test]
    fn signed_values_sign_extend_and_keep_raw_bits() {
        let s = dec(DataType::I16, WordOrder::Abcd, &[0xFFFE]);
        assert_eq!((s.raw, s.bits, s.value), (0xFFFE, 16, -2.0));
        let s = dec(DataType::I16, WordOrder::Abcd, &[0x8000]);
        assert_eq!(s.value, -32768.0);
        for order in ORDERS {
            let words = split_words(u64::from((-100_000i32) as u32), 2, order);
            let s = dec(DataType::I32, order, &words);
            assert_eq!(s.raw, 0xFFFE_7960, "{order:?}");
            assert_eq!(s.value, -100_000.0, "{order:?}");
        }
        let s = dec(DataType::I32, WordOrder::Abcd, &[0x7FFF, 0xFFFF]);
        assert_eq!(s.value, f64::from(i32::MAX));
    }

    #[test]
    fn single_register_ignores_word_order() {
        for order in ORDERS {
            let s = dec(DataType::U16, order, &[0x1234]);
            assert_eq!((s.raw, s.value), (0x1234, 4660.0), "{order:?}");
        }
    }

    #[test]
    fn bools_from_bits_and_registers() {
        let r = reg(DataType::Bool, WordOrder::Abcd, Role::State);
        let name = Arc::from("b");
        let s = decode(&r, &name, RawValue::Bit(true)).expect("bit");
        assert_eq!((s.raw, s.bits, s.value), (1, 1, 1.0));
        let s = decode(&r, &name, RawValue::Bit(false)).expect("bit");
        assert_eq!((s.raw, s.value), (0, 0.0));
        let s = decode(&r, &name, RawValue::Words(&[0x0100])).expect("word");
        assert_eq!((s.raw, s.bits, s.value), (1, 1, 1.0));
    }

    #[test]
    fn value_role_is_scaled_others_are_not() {
        let mut r = reg(DataType::I16, WordOrder::Abcd, Role::Value);
        r.scale = 0.5;
        r.offset = -10.0;
        let name = Arc::from("t");
        let s = decode(&r, &name, RawValue::Words(&[0xFFFC])).expect("decodes");
        assert_eq!((s.raw, s.value), (0xFFFC, -12.0));
        r.role = Role::Counter;
        let s = decode(&r, &name, RawValue::Words(&[0xFFFC])).expect("decodes");
        assert_eq!(s.value, -4.0);
        assert_eq!(s.role, Role::Counter);
        assert_eq!(&*s.name, "t");
    }

    #[test]
    fn mismatches_are_errors_not_panics() {
        let name = Arc::from("x");
        let r = reg(DataType::U32, WordOrder::Abcd, Role::State);
        assert_eq!(
            decode(&r, &name, RawValue::Words(&[1])),
            Err(DecodeError::WordCount {
                data_type: "u32",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            decode(&r, &name, RawValue::Bit(true)),
            Err(DecodeError::NotABit("u32"))
        );
        assert!(decode(&r, &name, RawValue::Words(&[])).is_err());
    }
}
