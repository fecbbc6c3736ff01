//! Modbus TCP devices: PLC registers → [`Sample`](crate::devices::Sample) readings.
//!
//! - [`plan`]: the register map coalesced into block reads (pure);
//! - [`decode`]: register words (or a bit) → a typed sample, word orders (pure);
//! - [`tcp`]: the device task ([`run`]) and the one-shot [`probe`];
//! - [`sim`]: [`SimPlc`](sim::SimPlc), a simulated PLC on 127.0.0.1 for tests
//!   and `linegate demo`.
//!
//! This module also renders a probe for a technician ([`render_probe`]).

pub mod decode;
mod map;
pub mod plan;
pub mod rtu;
pub mod sim;
pub mod tcp;

use std::fmt::Write as _;

use thiserror::Error;

use crate::config::{DataType, Role, Table, WordOrder};

pub use tcp::{probe, run};

/// What [`probe`] found for one register map entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// The RTU unit (slave address) the entry belongs to; `None` for a TCP
    /// device (one unit per device).
    pub unit: Option<u8>,
    pub name: String,
    pub table: Table,
    /// 0-based PDU address.
    pub address: u16,
    /// The Modicon form, e.g. `40001` (holding 0) or `400001`-style beyond 9999.
    pub modicon: String,
    pub data_type: DataType,
    pub word_order: WordOrder,
    pub role: Role,
    pub station: String,
    /// The register words (wire order) or bit read for this entry.
    pub raw: ProbeRaw,
    /// The decoded value (scaled for the `value` role), or why there is none
    /// (the Modbus exception, a malformed reply, a lost connection).
    pub value: Result<f64, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeRaw {
    Words(Vec<u16>),
    Bit(bool),
    /// Nothing was read for this entry.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeError {
    #[error("{0}")]
    Connect(String),
}

fn value_str(value: f64, data_type: DataType) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if data_type == DataType::F32 {
        // The f32 as the PLC holds it, without f64 widening noise.
        format!("{}", value as f32)
    } else {
        format!("{value}")
    }
}

/// A plain, aligned table of probe rows: where each value lives, the raw
/// registers as hex words in wire order (or the bit), and the decoded value.
///
/// ```text
/// NAME     TABLE    ADDR  MODICON  TYPE  ORDER  ROLE     STATION  RAW            VALUE
/// good     holding  0     40001    u32   CDAB   counter  st1      0x5678 0x1234  305419896
/// ```
///
/// Rows of an RTU bus (with a `unit`) get a leading `UNIT` column.
pub fn render_probe(rows: &[ProbeRow]) -> String {
    let table = render_table(rows);
    if rows.iter().all(|r| r.unit.is_none()) {
        return table;
    }
    let units: Vec<String> = std::iter::once("UNIT".to_owned())
        .chain(
            rows.iter()
                .map(|r| r.unit.map_or_else(|| "-".to_owned(), |u| u.to_string())),
        )
        .collect();
    let width = units.iter().map(String::len).max().unwrap_or(4);
    table
        .lines()
        .zip(&units)
        .map(|(line, unit)| format!("{unit:<width$}  {line}\n"))
        .collect()
}

fn render_table(rows: &[ProbeRow]) -> String {
    const HEADER: [&str; 10] = [
        "NAME", "TABLE", "ADDR", "MODICON", "TYPE", "ORDER", "ROLE", "STATION", "RAW", "VALUE",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let order = if r.data_type.registers() > 1 && !r.table.is_bits() {
                WordOrder::as_str(r.word_order)
            } else {
                "-"
            };
            let raw = match &r.raw {
                ProbeRaw::Words(words) => words
                    .iter()
                    .map(|w| format!("0x{w:04X}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                ProbeRaw::Bit(b) => u8::from(*b).to_string(),
                ProbeRaw::Missing => "-".to_owned(),
            };
            let value = match &r.value {
                Ok(v) => value_str(*v, r.data_type),
                Err(e) => format!("error: {e}"),
            };
            [
                r.name.clone(),
                r.table.as_str().to_owned(),
                r.address.to_string(),
                r.modicon.clone(),
                r.data_type.as_str().to_owned(),
                order.to_owned(),
                r.role.as_str().to_owned(),
                r.station.clone(),
                raw,
                value,
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &cells {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&refs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, table: Table, address: u16, data_type: DataType) -> ProbeRow {
        ProbeRow {
            unit: None,
            name: name.into(),
            table,
            address,
            modicon: table.modicon(address),
            data_type,
            word_order: WordOrder::Cdab,
            role: Role::State,
            station: "st1".into(),
            raw: ProbeRaw::Missing,
            value: Err("not read".into()),
        }
    }

    #[test]
    fn renders_an_aligned_table() {
        let mut counter = row("good_parts", Table::Holding, 0, DataType::U32);
        counter.role = Role::Counter;
        counter.raw = ProbeRaw::Words(vec![0x5678, 0x1234]);
        counter.value = Ok(305_419_896.0);
        let mut state = row("state", Table::Holding, 2, DataType::U16);
        state.raw = ProbeRaw::Words(vec![0x0002]);
        state.value = Ok(2.0);
        let mut temp = row("temp", Table::Input, 10, DataType::F32);
        temp.word_order = WordOrder::Abcd;
        temp.role = Role::Value;
        temp.station = "oven".into();
        temp.raw = ProbeRaw::Words(vec![0x42F6, 0xE666]);
        temp.value = Ok(f64::from(123.45f32));
        let mut door = row("door", Table::Coil, 0, DataType::Bool);
        door.raw = ProbeRaw::Bit(true);
        door.value = Ok(1.0);
        let missing = row("spare", Table::Holding, 200, DataType::I16);
        let mut exc = row("fault", Table::Holding, 300, DataType::U16);
        exc.value = Err("exception: Illegal data address (0x02)".into());
        let out = render_probe(&[counter, state, temp, door, missing, exc]);
        let want = "\
NAME        TABLE    ADDR  MODICON  TYPE  ORDER  ROLE     STATION  RAW            VALUE
good_parts  holding  0     40001    u32   CDAB   counter  st1      0x5678 0x1234  305419896
state       holding  2     40003    u16   -      state    st1      0x0002         2
temp        input    10    30011    f32   ABCD   value    oven     0x42F6 0xE666  123.45
door        coil     0     00001    bool  -      state    st1      1              1
spare       holding  200   40201    i16   -      state    st1      -              error: not read
fault       holding  300   40301    u16   -      state    st1      -              error: exception: Illegal data address (0x02)
";
        assert_eq!(out, want);
    }

    #[test]
    fn renders_just_the_header_for_no_rows() {
        assert_eq!(
            render_probe(&[]),
            "NAME  TABLE  ADDR  MODICON  TYPE  ORDER  ROLE  STATION  RAW  VALUE\n"
        );
    }
}
