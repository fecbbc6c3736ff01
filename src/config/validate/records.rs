//! The size of records against `mqtt.max_packet_size`: from what the config
//! lets vary (scanner frames, ids, rule and register names, counters,
//! topics), the largest record of every kind ([`crate::uplink::bound`]) must
//! fit one MQTT packet, or the config is refused, naming the key to change.
//! Also sets how many list entries a lot record carries, so a closed lot's
//! totals fit whatever their length.

use super::super::model::*;
use super::super::raw::{DeviceEntry, RawConfig};
use super::{Result, Validator};
use crate::station::MAX_TOTALS_LIST;
use crate::uplink::bound::{self, Kind, PUBLISH_OVERHEAD, Shape};

impl Validator<'_> {
    /// Prove every record fits `mqtt.max_packet_size`; set each station's
    /// `lot.totals_per_part`.
    pub(super) fn record_sizes(
        &self,
        raw: &RawConfig,
        gateway: &GatewayConfig,
        mqtt: &MqttConfig,
        stations: &mut [StationConfig],
        devices: &[DeviceConfig],
    ) -> Result<()> {
        let shape = shape(gateway, stations, devices);
        // The scanner with the largest frames, which a too-large record of
        // a kind carrying a scanned code is blamed on.
        let scanner = raw
            .devices
            .iter()
            .zip(devices)
            .filter_map(|(entry, d)| match &d.kind {
                DeviceKind::SerialScanner(sc) => Some((entry, sc.framing.max_len)),
                _ => None,
            })
            .max_by_key(|(_, len)| *len);
        let max = mqtt.max_packet_bytes;
        let mut per_part = MAX_TOTALS_LIST;
        for kind in Kind::ALL {
            let topic = longest_topic(&mqtt.topics, stations, kind);
            let room = max.saturating_sub(topic + PUBLISH_OVERHEAD);
            let worst = if kind == Kind::LotClosed {
                match bound::totals_per_part(&shape, room, MAX_TOTALS_LIST) {
                    Some(k) => {
                        per_part = k;
                        continue;
                    }
                    None => bound::record(kind, &shape, 1),
                }
            } else {
                bound::record(kind, &shape, per_part)
            };
            if worst <= room {
                continue;
            }
            let need = worst + topic + PUBLISH_OVERHEAD;
            return Err(self.too_small(raw, kind, need, max, scanner));
        }
        for station in stations.iter_mut() {
            station.lot.totals_per_part = per_part;
        }
        Ok(())
    }

    fn too_small(
        &self,
        raw: &RawConfig,
        kind: Kind,
        need: usize,
        max: usize,
        scanner: Option<(&DeviceEntry, usize)>,
    ) -> super::super::error::ConfigError {
        let what = match kind {
            Kind::LotClosed => "a lot record with one entry of each list".to_owned(),
            Kind::Audit | Kind::Alarm => format!("an {} record", kind.as_str()),
            kind => format!("a {} record", kind.as_str()),
        };
        match scanner {
            Some((entry, len)) if kind.carries_code() => self.err_plain(
                entry.span.clone(),
                &format!("device[{}].max_frame_len", entry.index),
                format!(
                    "a {len}-byte frame can make {what} of up to {need} bytes (topic included), larger than mqtt.max_packet_size ({max} bytes); lower max_frame_len or raise mqtt.max_packet_size to at least {need} bytes"
                ),
            ),
            _ => {
                let m = &raw.root.mqtt;
                let span = m
                    .get_ref()
                    .max_packet_size
                    .as_ref()
                    .map_or(m.span(), |v| v.span());
                self.err_plain(
                    span,
                    "mqtt.max_packet_size",
                    format!(
                        "{what} can be up to {need} bytes (topic included), larger than mqtt.max_packet_size ({max} bytes); raise it to at least {need} bytes"
                    ),
                )
            }
        }
    }
}

/// What the config lets vary in records.
fn shape(gateway: &GatewayConfig, stations: &[StationConfig], devices: &[DeviceConfig]) -> Shape {
    let longest = |it: &mut dyn Iterator<Item = usize>| it.max().unwrap_or(0);
    let registers = || devices.iter().flat_map(|d| d.registers());
    Shape {
        gateway_ids: gateway.id.len() + gateway.site.len() + gateway.line.len(),
        station_id: longest(&mut stations.iter().map(|s| s.id.len())),
        device_id: longest(&mut devices.iter().map(|d| d.id.len())),
        frame: longest(&mut devices.iter().filter_map(|d| match &d.kind {
            DeviceKind::SerialScanner(sc) => Some(sc.framing.max_len),
            _ => None,
        })),
        name: longest(
            &mut stations
                .iter()
                .flat_map(|s| s.scan_rules.iter().map(|r| r.name.len()))
                .chain(registers().map(|r| r.name.len())),
        ),
        counters: longest(
            &mut stations
                .iter()
                .map(|s| registers().filter(|r| r.station == s.id).count()),
        ),
    }
}

/// The longest topic a record of `kind` is published on.
fn longest_topic(topics: &Topics, stations: &[StationConfig], kind: Kind) -> usize {
    stations
        .iter()
        .map(|s| topics.record_topic(Some(&s.id), kind.as_str()).len())
        .chain(std::iter::once(
            topics.record_topic(None, kind.as_str()).len(),
        ))
        .max()
        .unwrap_or(0)
}
