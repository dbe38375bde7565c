//! `ukdb`: debug unikernels with gdb or lldb, over their serial line or the
//! network.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod cmd;
mod logging;

/// Exit codes, as documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: stopped by a signal (Ctrl-C, SIGTERM, SIGHUP), or `ukdb run`'s
    /// debugger quit cleanly.
    Stopped,
    /// 1: an error (bad path, connection refused past the timeout, ...).
    Error,
    // 2 is clap's exit code for usage errors.
    /// 3: the unikernel's channel closed (the unikernel or QEMU exited).
    ChannelClosed,
    /// `ukdb run`: the debugger's own exit code.
    Code(u8),
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Stopped => 0,
            Exit::Error => 1,
            Exit::ChannelClosed => 3,
            Exit::Code(code) => code,
        })
    }
}

const EXIT_CODES: &str = "\
Exit codes:
  0  stopped by a signal (Ctrl-C, SIGTERM, SIGHUP)
  1  error
  2  usage error
  3  the unikernel's channel closed (the unikernel or QEMU exited)";

/// ukdb: debug unikernels with gdb or lldb, over their serial line or the network.
#[derive(Debug, Parser)]
#[command(name = "ukdb", version, after_long_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(cmd::run::Cmd),
    Bridge(cmd::bridge::Cmd),
    Core(cmd::core::Cmd),
    Inspect(cmd::inspect::Cmd),
    Open(cmd::open::Cmd),
    Auth(cmd::auth::Cmd),
    #[command(hide = true)]
    XenModel(cmd::xenmodel::Cmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    // The commands that only read files need no runtime.
    let result = match cli.command {
        Command::Inspect(cmd) => cmd::inspect::run(cmd),
        Command::Open(cmd) => cmd::open::run(cmd),
        Command::Auth(cmd) => cmd::auth::run(cmd),
        Command::XenModel(cmd) => cmd::xenmodel::run(cmd),
        command => return run_async(command),
    };
    exit_code(result)
}

fn exit_code(result: anyhow::Result<Exit>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("ukdb: error: {err:#}");
            Exit::Error.into()
        }
    }
}

fn run_async(command: Command) -> ExitCode {
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("ukdb: error: cannot start the async runtime: {err}");
                return Exit::Error.into();
            }
        };
    let result = runtime.block_on(async {
        match command {
            Command::Run(cmd) => cmd::run::run(cmd).await,
            Command::Bridge(cmd) => cmd::bridge::run(cmd).await,
            Command::Core(cmd) => cmd::core::run(cmd).await,
            Command::Inspect(_) | Command::Open(_) | Command::Auth(_) | Command::XenModel(_) => {
                Ok(Exit::Error)
            }
        }
    });
    // Blocking stdout writes may still be in flight; don't wait for them forever.
    runtime.shutdown_timeout(Duration::from_millis(500));
    exit_code(result)
}
