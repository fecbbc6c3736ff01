//! Validation of where the gateway reaches things: host names (`mqtt.host`,
//! `mqtt.brokers`, a modbus-tcp device's `host`) and the data directory,
//! whose control socket path must fit a Unix socket address.

use std::path::PathBuf;

use toml::Spanned;

use super::super::model::{Broker, CONTROL_SOCKET, CONTROL_SOCKET_BINDING, MAX_SOCKET_PATH};
use super::super::raw::MqttRaw;
use super::{Result, Validator};

/// Longest host name (RFC 1035: 253 characters without the trailing dot).
const MAX_HOST: usize = 253;
/// Longest label of a host name.
const MAX_LABEL: usize = 63;
/// Characters of a value quoted in a message, at most.
const QUOTED_CHARS: usize = 40;

/// `value` quoted for a message, escaped (control characters visible) and cut.
pub(super) fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!(
            "{:?}… ({} characters)",
            &value[..cut],
            value.chars().count()
        ),
    }
}

/// Brokers in `mqtt.brokers`, at most.
const MAX_BROKERS: usize = 16;

impl Validator<'_> {
    /// The brokers: `host` (and `port`), or the `brokers` list, whose
    /// entries without a port take `port`.
    pub(super) fn brokers(&self, raw: &Spanned<MqttRaw>, port: u16) -> Result<Vec<Broker>> {
        let m = raw.get_ref();
        let list = match (&m.host, &m.brokers) {
            (Some(host), None) => {
                return Ok(vec![Broker {
                    host: self.host(host, "mqtt.host", false)?,
                    port,
                }]);
            }
            (Some(_), Some(list)) => {
                return Err(self.err_plain(
                    list.span(),
                    "mqtt.brokers",
                    "both host and brokers are set: give host (one broker) or brokers (several), not both",
                ));
            }
            (None, None) => {
                return Err(self.err(
                    raw.span(),
                    "mqtt",
                    "neither host nor brokers is set: the gateway needs a broker",
                ));
            }
            (None, Some(list)) => list,
        };
        let entries = list.get_ref();
        if entries.is_empty() || entries.len() > MAX_BROKERS {
            return Err(self.err(
                list.span(),
                "mqtt.brokers",
                format!("{} brokers listed; give 1 to {MAX_BROKERS}", entries.len()),
            ));
        }
        let mut brokers: Vec<Broker> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let key = format!("mqtt.brokers[{i}]");
            let text = entry.get_ref();
            // "host", "host:port", "[v6]", "[v6]:port"; a bare IPv6 address has no port.
            let (host, port_text) = if let Some(rest) = text.strip_prefix('[') {
                match rest.split_once(']') {
                    Some((h, "")) => (h, None),
                    Some((h, p)) if p.starts_with(':') => (h, Some(&p[1..])),
                    _ => {
                        return Err(self.err(
                            entry.span(),
                            &key,
                            format!("{} has an unclosed [ or text after ]", quoted(text)),
                        ));
                    }
                }
            } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
                (text.as_str(), None)
            } else {
                match text.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (text.as_str(), None),
                }
            };
            let port = match port_text {
                None => port,
                Some(p) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => {
                        return Err(self.err(
                            entry.span(),
                            &key,
                            format!(
                                "{} has the port {}, not one from 1 to 65535",
                                quoted(text),
                                quoted(p)
                            ),
                        ));
                    }
                },
            };
            let host = self.host(&Spanned::new(entry.span(), host.to_owned()), &key, false)?;
            let broker = Broker { host, port };
            if brokers.contains(&broker) {
                return Err(self.err_plain(
                    entry.span(),
                    &key,
                    format!("{broker} is listed twice"),
                ));
            }
            brokers.push(broker);
        }
        Ok(brokers)
    }

    /// A host name or an IP address (IPv6 without brackets). `device` adds
    /// the hint that the port has its own key.
    pub(super) fn host(&self, v: &Spanned<String>, key: &str, device: bool) -> Result<String> {
        let host = self.non_empty(v, key)?;
        let refuse = |why: String| Err(self.err(v.span(), key, why));
        if let Some(c) = host.chars().find(|c| c.is_control()) {
            return refuse(format!(
                "{} contains the control character {c:?}: a host name has none",
                quoted(&host)
            ));
        }
        if host.len() > MAX_HOST {
            return refuse(format!(
                "{} is {} bytes long; a host name has at most {MAX_HOST}",
                quoted(&host),
                host.len()
            ));
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(host);
        }
        let form = host.contains("://")
            || host.chars().any(char::is_whitespace)
            || host.contains('/')
            || host.contains(':');
        if form {
            let port = if device {
                " (the port goes in `port`)"
            } else {
                ""
            };
            return refuse(format!(
                "{} is not a host name: write only the host or IP address, \
                 without scheme, port or spaces{port}",
                quoted(&host)
            ));
        }
        if let Some(why) = hostname_fault(&host) {
            return refuse(format!("{} is not a host name: {why}", quoted(&host)));
        }
        Ok(host)
    }

    /// `gateway.data_dir`: a path whose control socket, `<data_dir>/control.sock`
    /// (bound first as `<data_dir>/.control.tmp`), fits a Unix socket address.
    pub(super) fn data_dir(&self, v: &Spanned<String>) -> Result<PathBuf> {
        let key = "gateway.data_dir";
        let dir = self.path(v, key)?;
        let longest = CONTROL_SOCKET.len().max(CONTROL_SOCKET_BINDING.len());
        let socket = dir.join(CONTROL_SOCKET);
        let bytes = dir.as_os_str().len() + 1 + longest;
        if bytes > MAX_SOCKET_PATH {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "the control socket {} would be {bytes} bytes long; a Unix socket path \
                     holds at most {MAX_SOCKET_PATH}, so the data directory may be at most {} \
                     bytes (as an absolute path; it is {})",
                    quoted(&socket.to_string_lossy()),
                    MAX_SOCKET_PATH - 1 - longest,
                    dir.as_os_str().len()
                ),
            ));
        }
        Ok(dir)
    }
}

/// Why `host` (no IP address, no scheme, port, space or slash) is not a
/// host name: labels of letters, digits, `-` and `_`, 1 to 63 characters,
/// not starting or ending with `-`, separated by dots (one trailing dot
/// allowed).
fn hostname_fault(host: &str) -> Option<String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        if label.is_empty() {
            return Some("an empty label (two dots in a row, or a leading dot)".to_owned());
        }
        if label.len() > MAX_LABEL {
            return Some(format!(
                "a label of {} characters (at most {MAX_LABEL})",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Some(format!(
                "the character {c:?} (letters, digits, `-`, `_` and dots only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label {label:?} starts or ends with `-`"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for ok in ["plc-1", "PLC_7.line3.example.com", "localhost", "a.b.", "x"] {
            assert_eq!(hostname_fault(ok), None, "{ok}");
        }
        for bad in [
            "a..b",
            ".a",
            "-a",
            "a-",
            "a.-b",
            "ä.com",
            "a*b",
            &"x".repeat(64),
        ] {
            assert!(hostname_fault(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn quoted_values_are_escaped_and_cut() {
        assert_eq!(quoted("plc\0x"), "\"plc\\0x\"");
        let long = quoted(&"a".repeat(5000));
        assert!(
            long.ends_with("… (5000 characters)") && long.len() < 70,
            "{long}"
        );
    }
}
