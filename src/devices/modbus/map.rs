//! A register map ready to poll, shared by the TCP and RTU tasks: its block
//! plan, the register names shared by every sample, the stations its values
//! go to, and the decoding of one poll's replies into per-station samples.

use std::sync::Arc;

use super::decode::decode;
use super::plan::{Plan, plan};
use super::tcp::{BlockData, item_raw};
use crate::config::RegisterConfig;
use crate::devices::Sample;

pub(crate) struct RegisterMap {
    pub plan: Plan,
    registers: Vec<RegisterConfig>,
    /// Register names, by register index (shared by every sample).
    names: Vec<Arc<str>>,
    /// Distinct stations of the map, in order of first appearance.
    stations: Vec<Arc<str>>,
    /// Index into `stations`, by register index.
    station_of: Vec<usize>,
}

impl RegisterMap {
    pub fn new(registers: &[RegisterConfig], max_gap: u16) -> Self {
        let names = registers
            .iter()
            .map(|r| Arc::<str>::from(r.name.as_str()))
            .collect();
        let mut stations: Vec<Arc<str>> = Vec::new();
        let mut station_of = Vec::with_capacity(registers.len());
        for reg in registers {
            let i = match stations.iter().position(|s| **s == *reg.station) {
                Some(i) => i,
                None => {
                    stations.push(Arc::from(reg.station.as_str()));
                    stations.len() - 1
                }
            };
            station_of.push(i);
        }
        RegisterMap {
            plan: plan(registers, max_gap),
            registers: registers.to_vec(),
            names,
            stations,
            station_of,
        }
    }

    pub fn len(&self) -> usize {
        self.registers.len()
    }

    /// Decodes one poll's replies (one entry per planned block, `None` where
    /// the block was not read); by register index, `None` where unread. A
    /// register that cannot be decoded is reported once per `bad` flag through
    /// `report(register, why)`.
    pub fn decode_poll(
        &self,
        data: &[Option<BlockData>],
        bad: &mut [bool],
        mut report: impl FnMut(&RegisterConfig, String),
    ) -> Vec<Option<Sample>> {
        let mut by_reg: Vec<Option<Sample>> = vec![None; self.registers.len()];
        for (block, d) in self.plan.blocks.iter().zip(data) {
            let Some(d) = d else { continue };
            for item in &block.items {
                let (Some(reg), Some(name)) = (
                    self.registers.get(item.register),
                    self.names.get(item.register),
                ) else {
                    continue;
                };
                let decoded = match item_raw(d, item) {
                    Some(raw) => decode(reg, name, raw).map_err(|e| e.to_string()),
                    None => Err("value outside its block's reply".to_owned()),
                };
                match decoded {
                    Ok(s) => {
                        if let Some(slot) = by_reg.get_mut(item.register) {
                            *slot = Some(s);
                        }
                    }
                    Err(e) => {
                        if let Some(flag) = bad.get_mut(item.register).filter(|f| !**f) {
                            *flag = true;
                            report(reg, e);
                        }
                    }
                }
            }
        }
        by_reg
    }

    /// The decoded samples grouped by station (stations without values left
    /// out), each group in register-map order.
    pub fn by_station(&self, mut by_reg: Vec<Option<Sample>>) -> Vec<(Arc<str>, Vec<Sample>)> {
        let mut out = Vec::with_capacity(self.stations.len());
        for (s, station) in self.stations.iter().enumerate() {
            let samples: Vec<Sample> = by_reg
                .iter_mut()
                .zip(&self.station_of)
                .filter(|(_, of)| **of == s)
                .filter_map(|(sample, _)| sample.take())
                .collect();
            if !samples.is_empty() {
                out.push((station.clone(), samples));
            }
        }
        out
    }
}
