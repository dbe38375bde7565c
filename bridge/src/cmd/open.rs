//! `ukdb open`: a core in gdb or lldb, once its build-id matches the image.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use super::inspect::{check_match, read_core};
use crate::Exit;

/// Open a core with its image in gdb (or lldb), after checking that the
/// build-ids match
#[derive(Debug, clap::Args)]
pub struct Cmd {
    /// The unikernel's image (with its debug information).
    image: PathBuf,
    /// The core file.
    core: PathBuf,
    /// Use lldb (`lldb IMAGE -c CORE`) instead of gdb (`gdb IMAGE CORE`).
    #[arg(long)]
    lldb: bool,
    /// Open the core even when its build-id differs from the image's.
    #[arg(long)]
    force: bool,
}

/// Checks the build-ids, then replaces this process with the debugger.
pub fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let info = read_core(&cmd.core)?;
    if let Err(msg) = check_match(&info, &cmd.image)? {
        eprintln!("{msg}");
        if !cmd.force {
            eprintln!("ukdb: refusing to open it (--force opens it anyway)");
            return Ok(Exit::Code(2));
        }
    }
    let mut debugger = if cmd.lldb {
        let mut c = Command::new("lldb");
        c.arg(&cmd.image).arg("-c").arg(&cmd.core);
        c
    } else {
        let mut c = Command::new("gdb");
        c.arg(&cmd.image).arg(&cmd.core);
        c
    };
    let err = debugger.exec();
    Err(err).context(if cmd.lldb { "cannot run lldb" } else { "cannot run gdb" })
}
