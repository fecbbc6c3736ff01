//! The command line: `run`, `check`, `probe`, `demo`, and the exit codes.
//!
//! Exit codes follow sysexits(3): 0 success, 64 invalid configuration
//! (the message names file, line, column and key), 69 a device could not be
//! reached (`probe`), 70 internal failure, 74 the store could not be opened
//! or made durable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;

/// Invalid configuration.
pub const EXIT_CONFIG: u8 = 64;
/// Internal failure (a task stopped unexpectedly).
pub const EXIT_SOFTWARE: u8 = 70;
/// The store could not be opened or made durable.
pub const EXIT_IOERR: u8 = 74;
/// A device could not be reached (`probe`).
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
    /// Run the real pipeline with a simulated scanner and an embedded MQTT
    /// broker; prints every message the MES receives, one line each.
    #[cfg(feature = "demo")]
    Demo(crate::app::demo::DemoArgs),
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
