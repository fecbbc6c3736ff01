//! The read plan: a device's register map coalesced into block reads. Pure.
//!
//! Per table, the mapped values are sorted by address and merged greedily
//! into one request while
//!
//! - the unmapped gap between the block so far and the next value is at most
//!   `max_gap` registers (or bits), and
//! - the block, including that value, stays within one request's limit:
//!   125 registers (FC 3/4) or 2000 bits (FC 1/2), domain-standards §4.1.
//!
//! A value is never split across two requests (a u64 at a block boundary
//! starts the next block), so every value is read atomically in one reply.
//! Overlapping entries (two names on one register) share the words.

use crate::config::{RegisterConfig, Table};

/// Most registers one FC 3/4 request may read.
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one FC 1/2 request may read.
pub const MAX_READ_BITS: u16 = 2000;

/// One read request and the register map entries it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: Table,
    /// 0-based address of the first register (or bit) read.
    pub start: u16,
    /// Registers (or bits) read, 1..=the table's limit.
    pub count: u16,
    /// The entries served, by address.
    pub items: Vec<Item>,
}

/// A register map entry within a [`Block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Index into the device's register map (config order).
    pub register: usize,
    /// Position of its first register (or bit) in the block's reply.
    pub offset: u16,
    /// Registers (or bits) it occupies.
    pub width: u16,
}

/// A device's read plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Block reads, ordered by table (coil, discrete, input, holding) then address.
    pub blocks: Vec<Block>,
    /// Entries that cannot be read at all: they run past address 65535, or
    /// occupy zero registers. Validation should make this empty.
    pub unreadable: Vec<usize>,
}

/// The read limit of one request to `table`.
pub fn limit(table: Table) -> u16 {
    if table.is_bits() {
        MAX_READ_BITS
    } else {
        MAX_READ_REGISTERS
    }
}

/// Plans the block reads for `registers` (a device's register map).
pub fn plan(registers: &[RegisterConfig], max_gap: u16) -> Plan {
    let mut out = Plan::default();
    let mut entries: Vec<(Table, u32, u32, usize)> = Vec::with_capacity(registers.len());
    for (i, reg) in registers.iter().enumerate() {
        let start = u32::from(reg.address);
        let end = start + u32::from(reg.width());
        if reg.width() == 0 || end > 0x1_0000 {
            out.unreadable.push(i);
        } else {
            entries.push((reg.table, start, end, i));
        }
    }
    entries.sort_by_key(|&(table, start, end, i)| (table, start, end, i));

    let mut current: Option<Building> = None;
    for (table, start, end, i) in entries {
        if let Some(b) = &mut current {
            let gap = start.saturating_sub(b.end);
            let new_end = b.end.max(end);
            if b.table == table
                && gap <= u32::from(max_gap)
                && new_end - b.start <= u32::from(limit(table))
            {
                b.end = new_end;
                b.items.push((i, start, end));
                continue;
            }
        }
        if let Some(done) = current.take() {
            out.blocks.push(done.finish());
        }
        current = Some(Building {
            table,
            start,
            end,
            items: vec![(i, start, end)],
        });
    }
    if let Some(done) = current {
        out.blocks.push(done.finish());
    }
    out
}

/// A block being built; bounds in `u32` so `end` may be 65536.
struct Building {
    table: Table,
    start: u32,
    /// Exclusive.
    end: u32,
    /// (register index, start, end) of each entry served.
    items: Vec<(usize, u32, u32)>,
}

impl Building {
    fn finish(self) -> Block {
        // All bounds were checked against 0x1_0000 and the table limit, so
        // the narrowing below cannot truncate.
        let start = self.start;
        Block {
            table: self.table,
            start: start as u16,
            count: (self.end - start) as u16,
            items: self
                .items
                .into_iter()
                .map(|(register, s, e)| Item {
                    register,
                    offset: (s - start) as u16,
                    width: (e - s) as u16,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataType, Role, WordOrder};

    fn reg(table: Table, address: u16, data_type: DataType) -> RegisterConfig {
        RegisterConfig {
            name: format!("{}{address}", table.as_str()),
            station: "s".into(),
            table,
            address,
            data_type,
            word_order: WordOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            role: Role::State,
            max_rate: 1000.0,
        }
    }

    /// (table, start, count, [(register, offset)]) per block.
    type Shape = (Table, u16, u16, Vec<(usize, u16)>);

    fn shape(p: &Plan) -> Vec<Shape> {
        p.blocks
            .iter()
            .map(|b| {
                (
                    b.table,
                    b.start,
                    b.count,
                    b.items.iter().map(|i| (i.register, i.offset)).collect(),
                )
            })
            .collect()
    }

    use DataType::*;
    use Table::*;

    #[test]
    fn contiguous_values_are_one_request() {
        let regs = [
            reg(Holding, 0, U32),
            reg(Holding, 2, U16),
            reg(Holding, 3, F32),
        ];
        let p = plan(&regs, 0);
        assert_eq!(
            shape(&p),
            vec![(Holding, 0, 5, vec![(0, 0), (1, 2), (2, 3)])]
        );
        assert!(p.unreadable.is_empty());
    }

    #[test]
    fn unsorted_config_is_sorted_by_address() {
        let regs = [reg(Holding, 10, U16), reg(Holding, 4, U32)];
        let p = plan(&regs, 8);
        assert_eq!(shape(&p), vec![(Holding, 4, 7, vec![(1, 0), (0, 6)])]);
    }

    #[test]
    fn gaps_up_to_max_gap_merge_larger_ones_split() {
        // u16 at 0 ends at 1; the next starts at 1 + gap.
        let table = [
            (0u16, 8u16, true),
            (8, 8, true),
            (9, 8, false),
            (0, 0, true),
            (1, 0, false),
        ];
        for (gap, max_gap, merged) in table {
            let regs = [reg(Input, 0, U16), reg(Input, 1 + gap, U16)];
            let p = plan(&regs, max_gap);
            let expect = if merged {
                vec![(Input, 0, 2 + gap, vec![(0, 0), (1, 1 + gap)])]
            } else {
                vec![
                    (Input, 0, 1, vec![(0, 0)]),
                    (Input, 1 + gap, 1, vec![(1, 0)]),
                ]
            };
            assert_eq!(shape(&p), expect, "gap {gap}, max_gap {max_gap}");
        }
    }

    #[test]
    fn splits_at_125_registers() {
        let regs: Vec<_> = (0..130).map(|a| reg(Holding, a, U16)).collect();
        let p = plan(&regs, 8);
        assert_eq!(p.blocks.len(), 2);
        assert_eq!((p.blocks[0].start, p.blocks[0].count), (0, 125));
        assert_eq!((p.blocks[1].start, p.blocks[1].count), (125, 5));
        assert_eq!(
            p.blocks[1].items[0],
            Item {
                register: 125,
                offset: 0,
                width: 1
            }
        );
        assert!(p.blocks.iter().all(|b| b.count <= MAX_READ_REGISTERS));
    }

    #[test]
    fn splits_at_2000_bits() {
        let regs: Vec<_> = (0..2001).map(|a| reg(Coil, a, Bool)).collect();
        let p = plan(&regs, 8);
        let counts: Vec<_> = p.blocks.iter().map(|b| (b.start, b.count)).collect();
        assert_eq!(counts, vec![(0, 2000), (2000, 1)]);
    }

    #[test]
    fn u64_at_a_block_boundary_is_never_split() {
        // 122 single registers fill 0..122; a u64 at 122 would end at 126 > 125.
        let mut regs: Vec<_> = (0..122).map(|a| reg(Holding, a, U16)).collect();
        regs.push(reg(Holding, 122, U64));
        let p = plan(&regs, 8);
        assert_eq!(p.blocks.len(), 2);
        assert_eq!((p.blocks[0].start, p.blocks[0].count), (0, 122));
        assert_eq!(shape(&p)[1], (Holding, 122, 4, vec![(122, 0)]));
        // Every item lies wholly inside its block.
        for b in &p.blocks {
            for i in &b.items {
                assert!(i.offset + i.width <= b.count);
            }
        }
    }

    #[test]
    fn tables_are_planned_separately() {
        let regs = [
            reg(Holding, 0, U16),
            reg(Input, 0, U16),
            reg(Coil, 0, Bool),
            reg(Discrete, 1, Bool),
            reg(Holding, 1, U16),
            reg(Coil, 3, Bool),
        ];
        let p = plan(&regs, 8);
        assert_eq!(
            shape(&p),
            vec![
                (Coil, 0, 4, vec![(2, 0), (5, 3)]),
                (Discrete, 1, 1, vec![(3, 0)]),
                (Input, 0, 1, vec![(1, 0)]),
                (Holding, 0, 2, vec![(0, 0), (4, 1)]),
            ]
        );
    }

    #[test]
    fn overlapping_entries_share_words() {
        let regs = [reg(Holding, 0, U32), reg(Holding, 1, U16)];
        let p = plan(&regs, 0);
        assert_eq!(shape(&p), vec![(Holding, 0, 2, vec![(0, 0), (1, 1)])]);
    }

    #[test]
    fn values_past_the_address_space_are_unreadable() {
        let regs = [reg(Holding, 65535, U32), reg(Holding, 65535, U16)];
        let p = plan(&regs, 8);
        assert_eq!(p.unreadable, vec![0]);
        assert_eq!(shape(&p), vec![(Holding, 65535, 1, vec![(1, 0)])]);
        assert_eq!(plan(&[], 8), Plan::default());
    }
}
