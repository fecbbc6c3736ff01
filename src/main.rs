//! The `linegate` binary: everything lives in the library; see `app::cli`.

fn main() -> std::process::ExitCode {
    linegate::app::cli::main()
}
