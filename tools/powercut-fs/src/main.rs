//! `powercut-fs [--torn-seed N] BACKING MOUNTPOINT`: mounts BACKING on
//! MOUNTPOINT until SIGINT, SIGTERM or SIGHUP, then unmounts (dropping what
//! is unsynced). Control: `echo cut > MOUNTPOINT/.powercut-ctl`.

use std::path::PathBuf;
use std::process::ExitCode;

use powercut_fs::{CONTROL_FILE, Mount, Options};

const USAGE: &str = "usage: powercut-fs [--torn-seed N] BACKING MOUNTPOINT

Mounts BACKING on MOUNTPOINT. Writes stay in memory until fsync/fdatasync
(files) or fsync of the directory (entries). Control file:
  echo cut  > MOUNTPOINT/.powercut-ctl   drop everything unsynced (power cut)
  echo sync > MOUNTPOINT/.powercut-ctl   make everything durable
  cat MOUNTPOINT/.powercut-ctl           counters
Stops on SIGINT, SIGTERM or SIGHUP and unmounts; unsynced data is dropped.
--torn-seed N: at a cut each file keeps a random prefix of its unsynced writes.";

fn parse() -> Result<(Options, PathBuf, PathBuf), String> {
    let mut options = Options::default();
    let mut paths = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Err(String::new()),
            Some("--torn-seed") => {
                let value = args.next().ok_or("--torn-seed needs a number")?;
                let seed = value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--torn-seed needs a number")?;
                options.torn_seed = Some(seed);
            }
            Some(a) if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    match <[PathBuf; 2]>::try_from(paths) {
        Ok([backing, mountpoint]) => Ok((options, backing, mountpoint)),
        Err(_) => Err("expected BACKING and MOUNTPOINT".into()),
    }
}

/// Blocks the stop signals in this thread and every thread started after
/// it, so `wait_for_stop` receives them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_stop(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: valid set and out pointer; the signals are blocked.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn main() -> ExitCode {
    let (options, backing, mountpoint) = match parse() {
        Ok(parsed) => parsed,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("powercut-fs: {msg}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let signals = block_stop_signals();
    let mount = match Mount::start_with(&backing, &mountpoint, options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("powercut-fs: {e}");
            return ExitCode::from(if matches!(e, powercut_fs::Error::FuseUnavailable(_)) {
                69
            } else {
                1
            });
        }
    };
    println!(
        "powercut-fs: {} mounted on {}; control file {}",
        backing.display(),
        mountpoint.display(),
        mountpoint.join(CONTROL_FILE).display()
    );
    let sig = wait_for_stop(&signals);
    eprintln!("powercut-fs: signal {sig}, unmounting");
    match mount.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("powercut-fs: {e}");
            ExitCode::FAILURE
        }
    }
}
