//! What a configuration reload (SIGHUP, `linegate reload`) changes: the
//! difference between the running config and the new one, as a plain value
//! the gateway then applies (`app::gateway`). Pure.
//!
//! - keys that need a restart (the data directory, every `[store]` key,
//!   the gateway's id): the reload is refused whole, the message names
//!   them, and the running config stays;
//! - devices added, removed or changed: each restarted alone, the others
//!   untouched;
//! - stations, their rules, templates and targets, the calendar, the site
//!   and line: the station context is rebuilt with the new config from the
//!   store's durable state, so open lots, orders and operators stay;
//! - `[mqtt]`: the uplink reconnects with the new settings.
//!
//! Sections are compared in their validated form (what the gateway runs
//! on), so a reordered or reformatted file changes nothing.

use crate::config::{Config, DeviceConfig};

/// The difference between the running config and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Keys whose change needs a restart; not empty: the reload is refused.
    pub needs_restart: Vec<&'static str>,
    pub devices_added: Vec<String>,
    pub devices_removed: Vec<String>,
    pub devices_changed: Vec<String>,
    /// The station context is rebuilt with the new stations and calendar.
    pub stations: bool,
    /// The uplink reconnects with the new `[mqtt]` (or `[commands]`)
    /// settings.
    pub mqtt: bool,
}

impl Difference {
    /// Whether the new config changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        *self == Difference::default()
    }

    /// One line for the log: what is applied.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let list = |what: &str, ids: &[String]| format!("{what} {}", ids.join(", "));
        if !self.devices_added.is_empty() {
            parts.push(list("devices added:", &self.devices_added));
        }
        if !self.devices_removed.is_empty() {
            parts.push(list("devices removed:", &self.devices_removed));
        }
        if !self.devices_changed.is_empty() {
            parts.push(list("devices restarted:", &self.devices_changed));
        }
        if self.stations {
            parts.push("stations updated, their context kept".into());
        }
        if self.mqtt {
            parts.push("MQTT reconnects".into());
        }
        if parts.is_empty() {
            "nothing changed".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The validated form of a section, for comparison (`Debug` shows every
/// field; secrets compare separately, as their `Debug` hides them).
fn form(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

/// The difference from `old` (running) to `new` (just validated).
pub fn difference(old: &Config, new: &Config) -> Difference {
    let mut d = Difference::default();
    if old.gateway.data_dir != new.gateway.data_dir {
        d.needs_restart.push("gateway.data_dir");
    }
    if old.gateway.id != new.gateway.id {
        d.needs_restart.push("gateway.id");
    }
    let (o, n) = (&old.store, &new.store);
    let store_keys: [(&'static str, bool); 7] = [
        ("store.engine", o.engine != n.engine),
        (
            "store.commit_interval",
            o.commit_interval != n.commit_interval,
        ),
        (
            "store.commit_max_records",
            o.commit_max_records != n.commit_max_records,
        ),
        ("store.cache_size", o.cache_bytes != n.cache_bytes),
        ("store.max_bytes", o.max_bytes != n.max_bytes),
        ("store.when_full", o.when_full != n.when_full),
        ("store.min_disk_free", o.min_disk_free != n.min_disk_free),
    ];
    if old.metrics != new.metrics {
        d.needs_restart.push("metrics.listen");
    }
    d.needs_restart.extend(
        store_keys
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| k),
    );
    let find = |list: &[DeviceConfig], id: &str| list.iter().position(|x| x.id == id);
    for dev in &new.devices {
        match find(&old.devices, &dev.id) {
            None => d.devices_added.push(dev.id.clone()),
            Some(i) if form(&old.devices[i]) != form(dev) => d.devices_changed.push(dev.id.clone()),
            Some(_) => {}
        }
    }
    for dev in &old.devices {
        if find(&new.devices, &dev.id).is_none() {
            d.devices_removed.push(dev.id.clone());
        }
    }
    d.stations = form(&old.stations) != form(&new.stations)
        || form(&old.calendar) != form(&new.calendar)
        || old.gateway.site != new.gateway.site
        || old.gateway.line != new.gateway.line
        // A station's view of its devices (counters, states) changes with them.
        || !(d.devices_added.is_empty()
            && d.devices_removed.is_empty()
            && d.devices_changed.is_empty());
    d.mqtt = form(&old.mqtt) != form(&new.mqtt)
        || old.mqtt.password != new.mqtt.password
        // The uplink verifies signed commands with these.
        || form(&old.commands) != form(&new.commands)
        || old.gateway.site != new.gateway.site
        || old.gateway.line != new.gateway.line;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[gateway]
id = "gw1"
site = "plant1"
line = "line3"
data_dir = "/tmp/linegate-reload-test"

[mqtt]
host = "127.0.0.1"

[[station]]
id = "st10"

[[station]]
id = "st20"

[[device]]
id = "scanner-1"
type = "serial-scanner"
station = "st10"
path = "/dev/ttyUSB0"

[[device]]
id = "scanner-2"
type = "serial-scanner"
station = "st20"
path = "/dev/ttyUSB1"
"#;

    fn parse(text: &str) -> Config {
        crate::config::parse(std::path::Path::new("linegate.toml"), text)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn diff(edit: impl Fn(&str) -> String) -> Difference {
        difference(&parse(BASE), &parse(&edit(BASE)))
    }

    #[test]
    fn the_same_file_reformatted_changes_nothing() {
        let d = diff(|s| s.replace("id = \"st20\"", "id    =    \"st20\"  # again"));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.summary(), "nothing changed");
    }

    #[test]
    fn a_device_changed_added_or_removed_is_named_alone() {
        let d = diff(|s| s.replace("/dev/ttyUSB1", "/dev/ttyUSB9"));
        assert_eq!(d.devices_changed, ["scanner-2"]);
        assert!(d.devices_added.is_empty() && d.devices_removed.is_empty());
        assert!(d.needs_restart.is_empty() && !d.mqtt);

        let d = diff(|s| {
            format!(
                "{s}\n[[device]]\nid = \"scanner-3\"\ntype = \"serial-scanner\"\nstation = \"st20\"\npath = \"/dev/ttyUSB2\"\n"
            )
        });
        assert_eq!(d.devices_added, ["scanner-3"]);
        assert!(d.devices_changed.is_empty());

        let d = diff(|s| {
            let cut = s.find("[[device]]\nid = \"scanner-2\"").unwrap();
            s[..cut].to_owned()
        });
        assert_eq!(d.devices_removed, ["scanner-2"]);
        assert!(d.devices_changed.is_empty() && d.devices_added.is_empty());
        assert!(d.summary().contains("devices removed: scanner-2"));
    }

    #[test]
    fn station_rules_change_the_station_context_only() {
        let d = diff(|s| {
            s.replace(
                "id = \"st10\"\n",
                "id = \"st10\"\n  [[station.scan_rule]]\n  name = \"wo\"\n  pattern = '^WO[0-9]{6}$'\n  action = \"set-order\"\n",
            )
        });
        assert!(d.stations, "{d:?}");
        assert!(!d.mqtt && d.needs_restart.is_empty() && d.devices_changed.is_empty());
    }

    #[test]
    fn mqtt_settings_reconnect_the_uplink() {
        let d = diff(|s| s.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nport = 1884"));
        assert!(d.mqtt && !d.stations, "{d:?}");
        assert!(d.needs_restart.is_empty());
    }

    #[test]
    fn command_signing_restarts_the_uplink_and_the_metrics_address_needs_a_restart() {
        let d = diff(|s| s.replace("[mqtt]", "[commands]\nreplay_window = \"1m\"\n\n[mqtt]"));
        assert!(d.mqtt && d.needs_restart.is_empty(), "{d:?}");
        let d = diff(|s| s.replace("[mqtt]", "[metrics]\nlisten = \"127.0.0.1:9464\"\n\n[mqtt]"));
        assert_eq!(d.needs_restart, ["metrics.listen"]);
    }

    #[test]
    fn data_dir_store_keys_and_the_id_need_a_restart() {
        let d = diff(|s| {
            s.replace("/tmp/linegate-reload-test", "/tmp/elsewhere")
                .replace("id = \"gw1\"", "id = \"gw2\"")
                .replace(
                    "[mqtt]",
                    "[store]\nengine = \"sled\"\nmax_bytes = \"64MiB\"\n\n[mqtt]",
                )
        });
        assert_eq!(
            d.needs_restart,
            [
                "gateway.data_dir",
                "gateway.id",
                "store.engine",
                "store.max_bytes"
            ]
        );
    }
}
