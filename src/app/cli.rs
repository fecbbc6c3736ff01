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
    /// Read a Modbus device once and print each mapped value decoded, with
    /// the raw registers beside it: the check of a register map.
    Probe {
        #[arg(value_name = "FILE")]
        config: PathBuf,
        /// The device id in the config.
        #[arg(value_name = "DEVICE")]
        device: String,
    },
    /// Act on the running daemon as a local operator: open and close lots,
    /// log operators in and out, set the work order, show every station.
    /// Goes through the control socket in the config's data_dir.
    Lot {
        #[command(subcommand)]
        action: LotCommand,
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
    let cli = Cli::parse();
    init_logging(&cli.command);
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", config::summary(&cfg));
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
        Command::Probe { config, device } => probe(&config, &device),
        Command::Lot { action } => lot(action),
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime_result(crate::app::demo::run(args)),
    }
}

fn probe(path: &std::path::Path, device: &str) -> ExitCode {
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
    let (heading, rows) = match &dev.kind {
        config::DeviceKind::ModbusTcp(m) => (
            format!(
                "{device}: modbus-tcp {}:{} unit {}",
                m.host, m.port, m.unit_id
            ),
            rt.block_on(crate::devices::modbus::probe(m)),
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
                rt.block_on(crate::devices::modbus::rtu::probe(bus)),
            )
        }
        config::DeviceKind::SerialScanner(_) => {
            eprintln!(
                "error: `{device}` is a {}; probe reads Modbus devices",
                dev.kind.type_name()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match rows {
        Ok(rows) => {
            println!("{heading}");
            print!("{}", crate::devices::modbus::render_probe(&rows));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {device}: {err}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
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
    let cfg = match config::load(&config) {
        Ok(cfg) => cfg,
        Err(err) => return config_error(&err),
    };
    let socket = crate::app::control::socket_path(&cfg.gateway.data_dir);
    let reply = match crate::app::control::call(&socket, &request) {
        Ok(reply) => reply,
        Err(err) => {
            eprintln!("error: {err}");
            return match err {
                crate::app::control::ClientError::PermissionDenied { .. } => {
                    ExitCode::from(EXIT_NOPERM)
                }
                crate::app::control::ClientError::BadReply { .. } => ExitCode::from(EXIT_SOFTWARE),
                _ => ExitCode::from(EXIT_UNAVAILABLE),
            };
        }
    };
    if reply["ok"] != true {
        let error = reply["error"].as_str().unwrap_or("no reason given");
        match reply["id"].as_str() {
            Some(id) => eprintln!("error: refused (command {id}): {error}"),
            None => eprintln!("error: refused: {error}"),
        }
        return if reply["kind"] == "unavailable" {
            ExitCode::from(EXIT_UNAVAILABLE)
        } else {
            ExitCode::from(EXIT_DATAERR)
        };
    }
    if json {
        println!("{reply}");
    } else {
        print!("{}", render_lot_reply(&request, &reply));
    }
    ExitCode::SUCCESS
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
    eprintln!("error: invalid configuration\n{err}");
    ExitCode::from(EXIT_CONFIG)
}

fn runtime_result(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
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
    rt.block_on(crate::app::gateway::run_until(cfg, shutdown_signal()))
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stop requested");
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
