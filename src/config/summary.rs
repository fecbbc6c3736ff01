//! The short plain-text summary `linegate check` prints for a technician:
//! who the gateway is, where it stores and publishes, stations with their
//! rules, devices with their type, station and port (for Modbus devices, the
//! register map with both address forms). Never shows secrets.

use std::fmt::Write;

use super::model::*;
use super::validate::{fmt_duration, fmt_size};

/// Human summary of a validated config (several lines, ends with a newline).
pub fn summary(cfg: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut out, cfg);
    out
}

fn write_summary(out: &mut String, cfg: &Config) -> std::fmt::Result {
    let g = &cfg.gateway;
    let m = &cfg.mqtt;
    let s = &cfg.store;
    writeln!(out, "config:   {}", cfg.source.display())?;
    writeln!(out, "gateway:  {} (site {}, line {})", g.id, g.site, g.line)?;
    writeln!(out, "data dir: {}", g.data_dir.display())?;
    writeln!(
        out,
        "store:    {} (group commits of at most {} records, {}, cache {})",
        s.engine
            .map_or("the existing store's engine, else redb", StoreEngine::name),
        s.commit_max_records,
        if s.commit_interval.is_zero() {
            "at once when idle".to_owned()
        } else {
            format!("at least {} apart", fmt_duration(s.commit_interval))
        },
        fmt_size(s.cache_bytes)
    )?;
    writeln!(
        out,
        "capacity: {} of records, then {}; full below {} free on disk",
        fmt_size(s.max_bytes),
        s.when_full.name(),
        fmt_size(s.min_disk_free)
    )?;
    let auth = match (&m.username, &m.password) {
        (Some(u), Some(_)) => format!("user {u}, password from file"),
        (Some(u), None) => format!("user {u}, no password"),
        (None, _) => "anonymous".to_owned(),
    };
    let brokers: Vec<String> = m.brokers.iter().map(ToString::to_string).collect();
    let failback = match (brokers.len(), m.return_to_first.is_zero()) {
        (1, _) => String::new(),
        (_, true) => " (back to the first at a reconnect)".to_owned(),
        (_, false) => format!(
            " (back to the first once up for {})",
            fmt_duration(m.return_to_first)
        ),
    };
    writeln!(
        out,
        "broker:   {}{failback} (keepalive {}, {auth}, up to {} in flight)",
        brokers.join(", then "),
        fmt_duration(m.keepalive),
        m.max_inflight
    )?;
    match &m.tls {
        None => writeln!(out, "tls:      off (plaintext MQTT)")?,
        Some(t) => writeln!(
            out,
            "tls:      on, trusting {}{}{}",
            t.ca_file
                .as_ref()
                .map_or("the system trust store".to_owned(), |p| p
                    .display()
                    .to_string()),
            t.cert_file
                .as_ref()
                .map(|p| format!(", client certificate {}", p.display()))
                .unwrap_or_default(),
            t.server_name
                .as_ref()
                .map(|n| format!(", broker certificate checked for {n}"))
                .unwrap_or_default(),
        )?,
    }
    if let Some(st) = cfg.stations.first() {
        writeln!(
            out,
            "packets:  up to {}, which every record fits; a closed lot's lists continue past {} entries in further lot records",
            fmt_size(m.max_packet_bytes as u64),
            st.lot.totals_per_part
        )?;
    }
    let t = &m.topics;
    let first_station = cfg.stations.first().map(|st| st.id.as_str());
    let records = match first_station {
        Some(id) => t.record.replace("{station}", id),
        None => t.record.clone(),
    };
    writeln!(out, "topics:")?;
    writeln!(out, "  records:  {records}")?;
    writeln!(out, "  status:   {}", t.status())?;
    writeln!(out, "  commands: {}", t.command_filter())?;
    let c = &cfg.commands;
    let window = super::validate::fmt_duration(std::time::Duration::from_millis(c.window_ms));
    match (&c.key, c.required) {
        (None, _) => writeln!(out, "  signed commands: no key, unsigned commands obeyed")?,
        (Some(_), true) => writeln!(out, "  signed commands: required; replay window {window}")?,
        (Some(_), false) => writeln!(
            out,
            "  signed commands: verified when signed, unsigned obeyed; replay window {window}"
        )?,
    }
    match cfg.metrics {
        Some(addr) => writeln!(out, "metrics:  http://{addr}/metrics")?,
        None => writeln!(out, "metrics:  off")?,
    }

    let shifts = cfg.calendar.shifts();
    if shifts.is_empty() {
        writeln!(out, "plant time: {} (no shifts)", cfg.calendar.zone_name())?;
    } else {
        let plan: Vec<String> = shifts
            .iter()
            .map(|s| {
                format!(
                    "{} from {:02}:{:02}",
                    s.name,
                    s.start_minute / 60,
                    s.start_minute % 60
                )
            })
            .collect();
        writeln!(
            out,
            "plant time: {}, shifts {}",
            cfg.calendar.zone_name(),
            plan.join(", ")
        )?;
    }

    writeln!(out, "stations: {}", cfg.stations.len())?;
    for st in &cfg.stations {
        let n = st.scan_rules.len();
        let rules = if n == 1 { "rule" } else { "rules" };
        writeln!(out, "  {} ({n} scan {rules})", st.id)?;
        for (i, r) in st.scan_rules.iter().enumerate() {
            let mut when = Vec::new();
            if !r.symbology.is_empty() {
                when.push(format!("symbology is {}", r.symbology.join(" or ")));
            }
            if !r.gs1.is_empty() {
                when.push(format!("GS1 AIs {} are present", r.gs1.join(", ")));
            }
            if let Some(p) = &r.pattern {
                when.push(format!("it matches {}", p.as_str()));
            }
            let value = r
                .value_ai
                .as_ref()
                .map(|ai| format!(" (value from AI {ai})"))
                .unwrap_or_default();
            writeln!(
                out,
                "    {}. {}: {}{value} when {}",
                i + 1,
                r.name,
                r.action.as_str(),
                when.join(" and ")
            )?;
        }
        let lot = &st.lot;
        match &lot.numbering {
            Some(n) => {
                let reset = match n.reset {
                    Reset::Never => "never",
                    Reset::Daily => "daily",
                    Reset::Shift => "each shift",
                    Reset::Monthly => "monthly",
                    Reset::Yearly => "yearly",
                };
                writeln!(
                    out,
                    "    lots: numbered {} (sequence resets {reset})",
                    n.template_text
                )?;
            }
            None => writeln!(out, "    lots: from scanned labels and commands only")?,
        }
        let mut closes = Vec::new();
        if let (Some(t), Some(good)) = (lot.target, &lot.good) {
            closes.push(format!("at {t} units of {good}"));
        }
        match lot.rotate {
            Rotate::Never => {}
            Rotate::Shift => closes.push("at each shift change".into()),
            Rotate::Day => closes.push("at midnight".into()),
        }
        if !closes.is_empty() {
            writeln!(out, "    next lot opens {}", closes.join(" and "))?;
        }
        let dup = match lot.duplicate_window {
            DuplicateWindow::Lot => "within the lot".to_owned(),
            DuplicateWindow::Time(d) => format!("within {}", fmt_duration(d)),
        };
        writeln!(out, "    serials unique {dup}")?;
        let mut logout = Vec::new();
        if st.operator.logout_at_shift_end {
            logout.push("at shift end".to_owned());
        }
        if let Some(idle) = st.operator.idle_logout {
            logout.push(format!("after {} idle", fmt_duration(idle)));
        }
        if !logout.is_empty() {
            writeln!(out, "    operators logged out {}", logout.join(" and "))?;
        }
    }

    writeln!(out, "devices:  {}", cfg.devices.len())?;
    for d in &cfg.devices {
        match &d.kind {
            DeviceKind::ModbusTcp(mb) => {
                writeln!(
                    out,
                    "  {} ({}) at station {}: {} unit {}",
                    d.id,
                    d.kind.type_name(),
                    d.station,
                    host_port(&mb.host, mb.port),
                    mb.unit_id
                )?;
                writeln!(out, "    {}", poll_text(&mb.poll))?;
                for r in &mb.registers {
                    writeln!(out, "    {}", register_line(r))?;
                }
            }
            DeviceKind::ModbusRtu(bus) => {
                writeln!(
                    out,
                    "  {} ({}) at station {}: {}",
                    d.id,
                    d.kind.type_name(),
                    d.station,
                    bus.path.display()
                )?;
                writeln!(
                    out,
                    "    {}, silent interval {}",
                    line_text(&bus.line),
                    millis(bus.silent_interval)
                )?;
                writeln!(out, "    {}", poll_text(&bus.poll))?;
                for u in &bus.units {
                    writeln!(
                        out,
                        "    unit {} as device {} at station {}",
                        u.unit_id,
                        u.device_id(&d.id),
                        u.station
                    )?;
                    for r in &u.registers {
                        writeln!(out, "      {}", register_line(r))?;
                    }
                }
            }
            DeviceKind::SerialScanner(sc) => {
                let f = &sc.framing;
                let mut framing = format!("suffix {}", bytes_name(&f.suffix));
                if !f.prefix.is_empty() {
                    framing.push_str(&format!(", prefix {}", bytes_name(&f.prefix)));
                }
                if let Some(idle) = f.idle_timeout {
                    framing.push_str(&format!(", idle timeout {}", fmt_duration(idle)));
                }
                writeln!(
                    out,
                    "  {} ({}) at station {}: {}",
                    d.id,
                    d.kind.type_name(),
                    d.station,
                    sc.path.display()
                )?;
                writeln!(out, "    {}, {framing}", line_text(&sc.line))?;
            }
        }
    }
    Ok(())
}

/// `2.005ms`: sub-millisecond precision for bus timings.
fn millis(d: std::time::Duration) -> String {
    let ms = format!("{:.3}", d.as_secs_f64() * 1000.0);
    format!("{}ms", ms.trim_end_matches('0').trim_end_matches('.'))
}

/// `19200 8E1, flow control none`.
fn line_text(l: &SerialLine) -> String {
    let data_bits = match l.data_bits {
        DataBits::Seven => 7,
        DataBits::Eight => 8,
    };
    let parity = match l.parity {
        Parity::None => 'N',
        Parity::Even => 'E',
        Parity::Odd => 'O',
    };
    let stop_bits = match l.stop_bits {
        StopBits::One => 1,
        StopBits::Two => 2,
    };
    let flow = match l.flow_control {
        FlowControl::None => "none",
        FlowControl::Software => "software",
        FlowControl::Hardware => "hardware",
    };
    format!(
        "{} {data_bits}{parity}{stop_bits}, flow control {flow}",
        l.baud
    )
}

/// `poll every 1s, timeout 1s, max gap 8[, heartbeat 1m]`.
fn poll_text(p: &PollConfig) -> String {
    let heartbeat = match p.heartbeat {
        Some(hb) => format!(", heartbeat {}", fmt_duration(hb)),
        None => String::new(),
    };
    format!(
        "poll every {}, timeout {}, max gap {}{heartbeat}",
        fmt_duration(p.interval),
        fmt_duration(p.timeout),
        p.max_gap
    )
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `good_count: holding 0 (40001) u32 CDAB counter → st10`: the word order
/// only for multi-register types; scale, offset and a counter's max_rate
/// only when they differ from their defaults.
fn register_line(r: &RegisterConfig) -> String {
    let mut s = format!(
        "{}: {} {} ({}) {}",
        r.name,
        r.table.as_str(),
        r.address,
        r.modicon(),
        r.data_type.as_str()
    );
    if r.width() > 1 {
        s.push(' ');
        s.push_str(r.word_order.as_str());
    }
    s.push(' ');
    s.push_str(r.role.as_str());
    if r.scale != 1.0 {
        s.push_str(&format!(" scale {}", r.scale));
    }
    if r.offset != 0.0 {
        s.push_str(&format!(" offset {}", r.offset));
    }
    if r.role == Role::Counter && r.max_rate != 1000.0 {
        s.push_str(&format!(" (max {}/s)", r.max_rate));
    }
    s.push_str(&format!(" → {}", r.station));
    s
}

/// `\r\n` → `CRLF`, other bytes → `hex:…`, nothing → `none`.
fn bytes_name(bytes: &[u8]) -> String {
    match bytes {
        b"" => "none".to_owned(),
        b"\r" => "CR".to_owned(),
        b"\n" => "LF".to_owned(),
        b"\r\n" => "CRLF".to_owned(),
        b"\t" => "TAB".to_owned(),
        other => {
            let hex: String = other.iter().map(|b| format!("{b:02X}")).collect();
            format!("hex:{hex}")
        }
    }
}
