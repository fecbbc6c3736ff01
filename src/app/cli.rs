//! The command line: `run`, `check`, `probe`, `lot`, `demo`, and the exit
//! codes.
//!
//! Exit codes follow sysexits(3): 0 success, 2 usage error (clap's: an
//! unknown subcommand or option, a missing argument), 64 invalid configuration
//! (the message names file, line, column and key), 65 the daemon refused a
//! `lot` command (the reason is printed), 69 a device could not be reached
//! (`probe`) or the daemon is not running (`lot`), 70 internal failure, 74
//! the store could not be opened or made durable, 77 no permission to use
//! the control socket (`lot`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;

/// Invalid configuration.
pub const EXIT_CONFIG: u8 = 64;
/// The daemon refused a `lot` command.
pub const EXIT_DATAERR: u8 = 65;
/// No permission to use the control socket (`lot`).
pub const EXIT_NOPERM: u8 = 77;
/// Internal failure (a task stopped unexpectedly).
pub const EXIT_SOFTWARE: u8 = 70;
/// The store could not be opened or made durable.
pub const EXIT_IOERR: u8 = 74;
/// A device could not be reached (`probe`), or the daemon is not running
/// or did not answer (`lot`).
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "linegate",
    version,
    about = "Edge gateway for factory lines: scanners to a durable queue to MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        /// Path to the TOML configuration (e.g. /etc/linegate/linegate.toml).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary; exit 64 when invalid.
    Check {
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a device without the gateway: a serial scanner's frames as
    /// they arrive (for 10 s, or --for); a Modbus device's mapped values,
    /// decoded beside their raw registers (once, or every poll interval
    /// for --for). Exits 69 when nothing could be read.
    Probe {
        #[arg(value_name = "FILE")]
        config: PathBuf,
        /// The device id in the config.
        #[arg(value_name = "DEVICE")]
        device: String,
        /// How long to listen (a scanner; default 10s) or to keep polling
        /// (Modbus; default: one read), e.g. "30s".
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Make the running daemon read its configuration file again and apply
    /// it (as SIGHUP does). FILE must be the file it was started with: it
    /// is checked here first (exit 64 when invalid, nothing sent), then the
    /// daemon, found through the control socket in its data_dir, applies
    /// it; exit 65 when the daemon refuses it (keys that need a restart).
    Reload {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Act on the running daemon as a local operator: open and close lots,
    /// log operators in and out, set the work order, show every station.
    /// Goes through the control socket in the config's data_dir.
    Lot {
        #[command(subcommand)]
        action: LotCommand,
    },
    /// Show the running daemon's status: devices and their health, the
    /// queue, the uplink's state and last error, the store's epoch. Works
    /// while the broker is unreachable (it asks the daemon, not the broker).
    Status {
        /// Path to the daemon's TOML configuration (for its data_dir).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print the status JSON (the MQTT status message's fields) instead.
        #[arg(long)]
        json: bool,
    },
    /// Run the real pipeline with a simulated scanner and an embedded MQTT
    /// broker; prints every message the MES receives, one line each.
    #[cfg(feature = "demo")]
    Demo(crate::app::demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum LotCommand {
    /// Open a lot at a station (closing the one open there).
    Open {
        #[command(flatten)]
        at: StationArgs,
        /// The lot number; without it, the next number from the station's
        /// lot template.
        #[arg(long, value_name = "LOT")]
        lot: Option<String>,
    },
    /// Close the lot open at a station.
    Close {
        #[command(flatten)]
        at: StationArgs,
    },
    /// Log an operator in at a station, or log the operator out.
    Operator {
        #[command(flatten)]
        at: StationArgs,
        #[command(flatten)]
        who: OperatorArg,
    },
    /// Set the work order at a station, or clear it.
    Order {
        #[command(flatten)]
        at: StationArgs,
        #[command(flatten)]
        order: OrderArg,
    },
    /// Show every station: lot, order, operator and the open lot's totals.
    Show {
        /// Path to the daemon's TOML configuration.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print the daemon's JSON reply instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct StationArgs {
    /// Path to the daemon's TOML configuration (for its data_dir).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// The station id.
    #[arg(short, long, value_name = "STATION")]
    station: String,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct OperatorArg {
    /// The operator's id.
    #[arg(long, value_name = "ID")]
    operator: Option<String>,
    /// Log the operator out.
    #[arg(long)]
    logout: bool,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct OrderArg {
    /// The work order.
    #[arg(long, value_name = "WO")]
    order: Option<String>,
    /// Clear the work order.
    #[arg(long)]
    clear: bool,
}

/// The command line's definition, for what is rendered from it (the man
/// pages and shell completions of the package, examples/docgen.rs).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parse the command line, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    // Everything the gateway creates is its own: the data directory is
    // private to the service user (store::private).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        crate::store::private::UMASK,
    ));
    let cli = Cli::parse();
    init_logging(&cli.command);
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", config::summary(&cfg));
                for warning in &cfg.mqtt.warnings {
                    eprintln!("warning: {warning}");
                }
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(err) => config_error(&err),
        },
        Command::Run { config } => {
            let cfg = match config::load(&config) {
                Ok(cfg) => cfg,
                Err(err) => return config_error(&err),
            };
            runtime_result(run_with_signals(cfg))
        }
        Command::Probe {
            config,
            device,
            duration,
        } => probe(&config, &device, duration),
        Command::Lot { action } => lot(action),
        Command::Status { config, json } => status(&config, json),
        Command::Reload { config } => reload(&config),
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime_result(crate::app::demo::run(args)),
    }
}

/// How long `probe` listens to a scanner without `--for`.
const SCANNER_PROBE: std::time::Duration = std::time::Duration::from_secs(10);

fn probe(path: &std::path::Path, device: &str, duration: Option<std::time::Duration>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(err) => return config_error(&err),
    };
    let Some(dev) = cfg.devices.iter().find(|d| d.id == device) else {
        let known: Vec<&str> = cfg.devices.iter().map(|d| d.id.as_str()).collect();
        eprintln!(
            "error: no device `{device}` in {}; devices: {}",
            path.display(),
            known.join(", ")
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    let (heading, interval) = match &dev.kind {
        config::DeviceKind::ModbusTcp(m) => (
            format!(
                "{device}: modbus-tcp {}:{} unit {}",
                m.host, m.port, m.unit_id
            ),
            m.poll.interval,
        ),
        config::DeviceKind::ModbusRtu(bus) => {
            let units: Vec<String> = bus.units.iter().map(|u| u.unit_id.to_string()).collect();
            (
                format!(
                    "{device}: modbus-rtu {} {} baud, units {}",
                    bus.path.display(),
                    bus.line.baud,
                    units.join(", ")
                ),
                bus.poll.interval,
            )
        }
        config::DeviceKind::SerialScanner(s) => {
            return rt.block_on(probe_scanner(device, s, duration.unwrap_or(SCANNER_PROBE)));
        }
    };
    println!("{heading}");
    let deadline = duration.map(|d| std::time::Instant::now() + d);
    let mut any_read = false;
    let mut round = 0u32;
    loop {
        round += 1;
        let rows = rt.block_on(async {
            match &dev.kind {
                config::DeviceKind::ModbusTcp(m) => crate::devices::modbus::probe(m).await,
                config::DeviceKind::ModbusRtu(bus) => crate::devices::modbus::rtu::probe(bus).await,
                config::DeviceKind::SerialScanner(_) => Ok(Vec::new()),
            }
        });
        if deadline.is_some() {
            println!(
                "-- read {round} at {}",
                crate::clock::rfc3339_ms(crate::clock::now_ms())
            );
        }
        match rows {
            Ok(rows) => {
                any_read |= rows.iter().any(|r| r.value.is_ok());
                print!("{}", crate::devices::modbus::render_probe(&rows));
                if !rows.iter().any(|r| r.value.is_ok()) {
                    eprintln!("error: {device}: no register could be read");
                }
            }
            Err(err) => eprintln!("error: {device}: {err}"),
        }
        match deadline {
            Some(at) if std::time::Instant::now() + interval < at => std::thread::sleep(interval),
            _ => break,
        }
    }
    if any_read {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNAVAILABLE)
    }
}

/// `linegate probe` on a serial scanner: every frame as it arrives, for
/// `duration`; exit 69 when the port cannot be opened or no frame the
/// gateway would accept arrived.
async fn probe_scanner(
    device: &str,
    cfg: &config::SerialScannerConfig,
    duration: std::time::Duration,
) -> ExitCode {
    use crate::devices::scanner::ProbeEvent;
    use std::io::Write as _;
    let line = &cfg.line;
    println!(
        "{device}: serial-scanner {} {} baud; listening for {}: scan something",
        cfg.path.display(),
        line.baud,
        humantime::format_duration(duration)
    );
    let _ = std::io::stdout().flush();
    let (mut frames, mut rejected) = (0u64, 0u64);
    let done = crate::devices::scanner::probe(cfg, duration, |ts_ms, event| {
        let at = crate::clock::rfc3339_ms(ts_ms);
        match event {
            ProbeEvent::Frame(bytes) => {
                frames += 1;
                println!(
                    "{at}  frame ({} bytes): {}",
                    bytes.len(),
                    shown_bytes(&bytes)
                );
            }
            ProbeEvent::Rejected(reason) => {
                rejected += 1;
                println!("{at}  rejected: {reason}");
            }
            ProbeEvent::Ended(why) => println!("{at}  port closed: {why}"),
        }
        let _ = std::io::stdout().flush();
    })
    .await;
    if let Err(err) = done {
        eprintln!("error: {device}: {err}");
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    println!("{frames} frames, {rejected} rejected");
    if frames == 0 {
        eprintln!("error: {device}: no frame the gateway would accept arrived");
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    ExitCode::SUCCESS
}

/// Scanned bytes for a terminal: printable text as is, the GS1 separator
/// as `<GS>`, other control bytes and invalid UTF-8 as `<0xNN>`.
fn shown_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\u{1d}' => out.push_str("<GS>"),
                c if c.is_control() => out.push_str(&format!("<0x{:02X}>", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("<0x{b:02X}>"));
        }
    }
    out
}

/// `linegate reload`: check the file, then ask the daemon to apply it.
fn reload(path: &std::path::Path) -> ExitCode {
    match call_daemon(path, &crate::app::control::Request::Reload {}) {
        Ok(reply) => {
            println!(
                "configuration reloaded: generation {}",
                reply["config"].as_u64().unwrap_or(0)
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `linegate lot …`: one request to the daemon's control socket.
fn lot(action: LotCommand) -> ExitCode {
    use crate::app::control::Request;
    let (config, request, json) = match action {
        LotCommand::Open { at, lot } => (
            at.config,
            Request::OpenLot {
                station: at.station,
                lot,
            },
            false,
        ),
        LotCommand::Close { at } => (
            at.config,
            Request::CloseLot {
                station: at.station,
            },
            false,
        ),
        // The group makes `--logout` / `--clear` the only way to leave the
        // value out.
        LotCommand::Operator { at, who } => (
            at.config,
            Request::SetOperator {
                station: at.station,
                operator: who.operator,
            },
            false,
        ),
        LotCommand::Order { at, order } => (
            at.config,
            Request::SetOrder {
                station: at.station,
                order: order.order,
            },
            false,
        ),
        LotCommand::Show { config, json } => (config, Request::Show {}, json),
    };
    let reply = match call_daemon(&config, &request) {
        Ok(reply) => reply,
        Err(code) => return code,
    };
    if json {
        println!("{reply}");
    } else {
        print!("{}", render_lot_reply(&request, &reply));
    }
    ExitCode::SUCCESS
}

/// `linegate status`: the daemon's status, as a table or as its JSON.
fn status(config: &std::path::Path, json: bool) -> ExitCode {
    let reply = match call_daemon(config, &crate::app::control::Request::Status {}) {
        Ok(reply) => reply,
        Err(code) => return code,
    };
    if json {
        println!("{}", reply["status"]);
    } else {
        print!("{}", render_status(&reply["status"]));
    }
    ExitCode::SUCCESS
}

/// Send `request` to the control socket of the daemon `config` describes:
/// its successful reply, or the exit code of the failure (already printed).
fn call_daemon(
    config: &std::path::Path,
    request: &crate::app::control::Request,
) -> Result<serde_json::Value, ExitCode> {
    let cfg = config::load(config).map_err(|err| config_error(&err))?;
    let socket = crate::app::control::socket_path(&cfg.gateway.data_dir);
    let reply = crate::app::control::call(&socket, request).map_err(|err| {
        eprintln!("error: {err}");
        match err {
            crate::app::control::ClientError::PermissionDenied { .. } => {
                ExitCode::from(EXIT_NOPERM)
            }
            crate::app::control::ClientError::BadReply { .. } => ExitCode::from(EXIT_SOFTWARE),
            _ => ExitCode::from(EXIT_UNAVAILABLE),
        }
    })?;
    if reply["ok"] != true {
        let error = reply["error"].as_str().unwrap_or("no reason given");
        match reply["id"].as_str() {
            Some(id) => eprintln!("error: refused (command {id}): {error}"),
            None => eprintln!("error: refused: {error}"),
        }
        return Err(if reply["kind"] == "unavailable" {
            ExitCode::from(EXIT_UNAVAILABLE)
        } else {
            ExitCode::from(EXIT_DATAERR)
        });
    }
    Ok(reply)
}

/// `linegate status` for a person: one block per part of the status.
fn render_status(st: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gateway   {}   linegate {}   epoch {}",
        text(&st["gateway"]),
        text(&st["version"]),
        text(&st["epoch"])
    );
    let b = &st["broker"];
    let e = &b["last_error"];
    let state = if b["connected"] == true {
        let tls = if b["tls"] == true { ", TLS" } else { "" };
        format!("connected to {}{tls}", text(&b["address"]))
    } else if e.is_null() {
        "disconnected".to_owned()
    } else {
        format!(
            "disconnected ({}, {}: {})",
            text(&e["kind"]),
            text(&e["broker"]),
            text(&e["message"])
        )
    };
    let _ = writeln!(
        out,
        "uplink    {state}; connects {}, records published {}, refused by the broker {}",
        text(&b["connects"]),
        text(&b["published"]),
        text(&b["refused"])
    );
    let q = &st["queue"];
    let _ = writeln!(
        out,
        "queue     {} records, {} bytes, oldest {} s, last seq {}{}{}",
        text(&q["depth"]),
        text(&q["bytes"]),
        text(&q["oldest_age_s"]),
        text(&q["last_seq"]),
        if q["full"] == true { ", FULL" } else { "" },
        if q["disk_full"] == true {
            ", DISK FULL"
        } else {
            ""
        },
    );
    let c = &st["commands"];
    let _ = writeln!(
        out,
        "commands  received {}, accepted {}, refused {}, busy {}",
        text(&c["received"]),
        text(&c["accepted"]),
        text(&c["refused"]),
        text(&c["busy"])
    );
    let devices = st["devices"].as_object();
    let _ = writeln!(out, "devices   {}", devices.map_or(0, |d| d.len()));
    for (id, d) in devices.into_iter().flatten() {
        let online = if d["online"] == true {
            "online"
        } else {
            "OFFLINE"
        };
        let _ = write!(
            out,
            "  {id}  {online}  frames {} rejects {} connects {}",
            text(&d["frames"]),
            text(&d["rejects"]),
            text(&d["connects"])
        );
        if !d["last_error"].is_null() {
            let _ = write!(out, "  last error: {}", text(&d["last_error"]));
        }
        out.push('\n');
    }
    out
}

/// The human line (or, for `show`, the table) of a successful reply.
fn render_lot_reply(request: &crate::app::control::Request, reply: &serde_json::Value) -> String {
    use crate::app::control::Request;
    let id = reply["id"].as_str().unwrap_or("?");
    match request {
        Request::OpenLot { station, lot } => {
            let lot = reply["lot"].as_str().or(lot.as_deref()).unwrap_or("?");
            format!("lot {lot} opened at {station} (command {id})\n")
        }
        Request::CloseLot { station } => {
            format!("lot closed at {station} (command {id})\n")
        }
        Request::SetOperator {
            station,
            operator: Some(who),
        } => format!("operator {who} logged in at {station} (command {id})\n"),
        Request::SetOperator {
            station,
            operator: None,
        } => format!("operator logged out at {station} (command {id})\n"),
        Request::SetOrder {
            station,
            order: Some(order),
        } => format!("order {order} set at {station} (command {id})\n"),
        Request::SetOrder {
            station,
            order: None,
        } => format!("order cleared at {station} (command {id})\n"),
        Request::Show {} => render_stations(&reply["stations"]),
        Request::Status {} => render_status(&reply["status"]),
        Request::Reload {} => String::new(),
    }
}

/// `linegate lot show`: a small table per station.
fn render_stations(stations: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let number = |v: &serde_json::Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    let mut out = String::new();
    let list = stations.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        out.push_str("no stations\n");
    }
    for (i, st) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let ctx = &st["context"];
        let _ = writeln!(out, "station   {}", text(&st["station"]));
        let _ = writeln!(out, "  lot       {}", text(&ctx["lot"]));
        let _ = writeln!(out, "  order     {}", text(&ctx["order"]));
        let _ = writeln!(out, "  operator  {}", text(&ctx["operator"]));
        let totals = &st["open_lot"]["totals"];
        if totals.is_object() {
            let opened = totals["opened_ms"]
                .as_u64()
                .map_or("-".to_owned(), crate::clock::rfc3339_ms);
            let _ = writeln!(out, "  opened    {opened}");
            let _ = writeln!(out, "  products  {}", number(&totals["products"]));
            let _ = writeln!(
                out,
                "  good      {}   scrap {}",
                number(&totals["good"]),
                number(&totals["scrap"])
            );
            let _ = writeln!(out, "  rejects   {}", number(&totals["rejects"]));
        } else {
            let _ = writeln!(out, "  (no lot open)");
        }
    }
    out
}

fn config_error(err: &config::ConfigError) -> ExitCode {
    crate::app::journal::eprint_error(&format!("error: invalid configuration\n{err}"));
    ExitCode::from(EXIT_CONFIG)
}

fn runtime_result(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::app::journal::eprint_error(&format!("error: {err:#}"));
            if err.downcast_ref::<crate::store::StoreError>().is_some() {
                ExitCode::from(EXIT_IOERR)
            } else {
                ExitCode::from(EXIT_SOFTWARE)
            }
        }
    }
}

fn run_with_signals(cfg: config::Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // Listening from the start: a SIGHUP during the start is a reload
        // once it is done, never the default action (exit 129).
        let stop = shutdown_signal();
        let (tx, rx) = crate::app::gateway::reload_queue();
        reload_signal(tx.clone())?;
        crate::app::gateway::run(cfg, stop, Some((tx, rx))).await
    })
}

/// SIGHUP (`systemctl reload`, `kill -HUP`) as reload requests on `tx`.
/// Several arriving while the queue is full make none more.
fn reload_signal(
    tx: tokio::sync::mpsc::Sender<crate::app::gateway::ReloadRequest>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if tx.try_send(None).is_err() && tx.is_closed() {
                return;
            }
        }
    });
    Ok(())
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C). The handlers
/// are installed at the call, not at the first poll: a SIGTERM right after
/// `READY=1` must stop the gateway cleanly, not by the default action.
/// Call it within the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM or SIGINT; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("stop requested");
    }
}

fn init_logging(command: &Command) {
    use tracing_subscriber::EnvFilter;
    // The demo prints MES messages on stdout; keep its logs to warnings.
    let default = match command {
        #[cfg(feature = "demo")]
        Command::Demo(_) => "warn,rumqttd=off",
        _ => "info",
    };
    let filter =
        EnvFilter::try_from_env("LINEGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if crate::app::journal::stderr_is_journal() {
        // Priorities for journald, and its own timestamps.
        let format = tracing_subscriber::fmt::format().without_time();
        let _ = builder
            .with_ansi(false)
            .event_format(crate::app::journal::Prefixed(format))
            .try_init();
    } else {
        let _ = builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
}
