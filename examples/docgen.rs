//! Renders the Debian package's man pages and shell completions from the
//! command line's definition (`linegate::app::cli::command`), so they never
//! drift from `--help`: `cargo run --example docgen -- OUT_DIR` writes
//! `OUT_DIR/man/linegate.1` (and `linegate-SUBCOMMAND.1` for each
//! subcommand) and `OUT_DIR/completions/` for bash, zsh and fish.
//!
//! An example rather than a hidden subcommand or a build step: the gateway
//! binary carries neither clap_mangen nor clap_complete, and the build of
//! the crate does not render documents nobody asked for. The package is
//! built without the `demo` feature, so the `demo` subcommand is left out of
//! what is rendered here whichever features this example was built with.
//! `.ci/package` checks the result (no `demo`, a page per subcommand).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: docgen OUT_DIR");
        return ExitCode::from(2);
    };
    match render(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}: {err}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn render(out: &Path) -> std::io::Result<()> {
    let mut cmd = packaged_command();
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "linegate", &completions)?;
    }
    Ok(())
}

/// The command line of the packaged binary: the same, less the demo (clap
/// has no way to drop a subcommand, and a hidden one would still be
/// completed, so the top level is built anew around the others).
fn packaged_command() -> clap::Command {
    let full = linegate::app::cli::command();
    let about = full.get_about().cloned().unwrap_or_default();
    let subcommands: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|sub| sub.get_name() != "demo")
        .cloned()
        .collect();
    clap::Command::new("linegate")
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommands(subcommands)
}
