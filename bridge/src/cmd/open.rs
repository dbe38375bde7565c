//! `ukdb open`: a core in gdb or lldb, once its build-id matches the image.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use ukdb_bridge::core::elf::CoreInfo;

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

/// lldb's arguments for `core` (read as `info`) with `image`: `IMAGE -c
/// CORE`. lldb 14 loads the image at its addresses only when the core's
/// `NT_AUXV` has `AT_ENTRY` (cores written with the image known: `ukdb
/// bridge --image`, `ukdb core --image`); for a core without it, `-o
/// "target modules load --file IMAGE --slide 0"` loads it at its link
/// addresses (the unikernel runs where it is linked).
pub fn lldb_args(image: &Path, core: &Path, info: &CoreInfo) -> Vec<OsString> {
    let mut args = vec![image.into(), "-c".into(), core.into()];
    if info.entry.is_none() {
        let mut load = OsString::from("target modules load --file ");
        load.push(image);
        load.push(" --slide 0");
        args.extend(["-o".into(), load]);
    }
    args
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
        c.args(lldb_args(&cmd.image, &cmd.core, &info));
        c
    } else {
        let mut c = Command::new("gdb");
        c.arg(&cmd.image).arg(&cmd.core);
        c
    };
    let err = debugger.exec();
    Err(err).context(if cmd.lldb { "cannot run lldb" } else { "cannot run gdb" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lldb_loads_the_image_itself_only_without_at_entry() {
        let (image, core) = (Path::new("/i/ukdemo"), Path::new("c.core"));
        let with = CoreInfo { entry: Some(0x10_0000), ..CoreInfo::default() };
        assert_eq!(lldb_args(image, core, &with), ["/i/ukdemo", "-c", "c.core"]);
        assert_eq!(
            lldb_args(image, core, &CoreInfo::default()),
            ["/i/ukdemo", "-c", "c.core", "-o", "target modules load --file /i/ukdemo --slide 0"]
        );
    }
}
