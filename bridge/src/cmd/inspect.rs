//! `ukdb inspect`: what a core file holds, and whether it matches an image.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ukdb_bridge::core::elf::{self, hex, CoreInfo};
use ukdb_stub::dumpwire::cause;

use crate::Exit;

/// Show a core's reason, command line, build-id and memory; with IMAGE,
/// whether the build-ids match (exit 2 when they do not)
#[derive(Debug, clap::Args)]
pub struct Cmd {
    /// The core file (from `ukdb bridge --core-dir` or `ukdb core`).
    core: PathBuf,
    /// The unikernel's image, to check the core against.
    image: Option<PathBuf>,
}

/// Reads a core's information.
pub fn read_core(path: &Path) -> anyhow::Result<CoreInfo> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    elf::read_info(&data).with_context(|| format!("{} is not a core file", path.display()))
}

/// Reads an image's GNU build-id (`None`: it has none).
pub fn read_image_build_id(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF file", path.display()))?;
    Ok(elf::image_build_id(&data))
}

/// Whether the core and the image carry the same build-id: `Err` with
/// the message when they differ.
pub fn check_match(core: &CoreInfo, image: &Path) -> anyhow::Result<Result<(), String>> {
    let image_id = read_image_build_id(image)?;
    Ok(match image_id {
        Some(id) if !core.build_id.is_empty() && id != core.build_id => {
            Err(format!("ukdb: build-id mismatch: core {} image {}", hex(&core.build_id), hex(&id)))
        }
        _ => Ok(()),
    })
}

fn cause_name(cause: u8) -> &'static str {
    match cause {
        cause::PANIC => "panic",
        cause::EXCEPTION => "exception",
        cause::SNAPSHOT => "snapshot",
        _ => "unknown",
    }
}

/// Prints the core's summary; exit 2 on a build-id mismatch.
pub fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let info = read_core(&cmd.core)?;
    println!("core:     {}", cmd.core.display());
    if !info.ukdb_note {
        println!("(no ukdb note: not a core ukdb wrote)");
    }
    let mut reason = info.reason.lines();
    println!("reason:   {}", reason.next().unwrap_or(""));
    for line in reason {
        println!("          {line}");
    }
    println!("cmdline:  {}", info.cmdline);
    let id = if info.build_id.is_empty() { "(none)".into() } else { hex(&info.build_id) };
    println!("build-id: {id}");
    print!("cause:    {} ({})", info.cause, cause_name(info.cause));
    if info.cause == cause::EXCEPTION {
        print!(", vector {}, error code {:#x}", info.vector, info.error);
        if info.vector == 14 {
            print!(", cr2 {:#x}", info.cr2);
        }
    }
    println!();
    println!("signal:   {}, rip {:#x}", info.signal, info.rip);
    let stored: u64 = info.loads.iter().map(|l| l.filesz).sum();
    let mapped: u64 = info.loads.iter().map(|l| l.memsz).sum();
    println!(
        "memory:   {} segments, {} KiB mapped, {} KiB stored (the rest reads as zeros)",
        info.loads.len(),
        mapped / 1024,
        stored / 1024
    );
    for l in merged(&info) {
        println!(
            "  {:#018x}-{:#018x} {} phys {:#x} ({} KiB stored)",
            l.0,
            l.1,
            perms(l.3),
            l.2,
            l.4 / 1024
        );
    }
    if let Some(image) = &cmd.image {
        match check_match(&info, image)? {
            Ok(()) if info.build_id.is_empty() => {
                println!("image:    {} (the core has no build-id to check)", image.display())
            }
            Ok(()) => println!("image:    {} (build-id matches)", image.display()),
            Err(msg) => {
                eprintln!("{msg}");
                return Ok(Exit::Code(2));
            }
        }
    }
    Ok(Exit::Stopped)
}

fn perms(flags: u32) -> String {
    let f = |bit, c| if flags & bit != 0 { c } else { '-' };
    [f(object::elf::PF_R, 'r'), f(object::elf::PF_W, 'w'), f(object::elf::PF_X, 'x')]
        .iter()
        .collect()
}

/// The segments with the runs of one mapping merged back: (start, end,
/// paddr, flags, stored bytes).
fn merged(info: &CoreInfo) -> Vec<(u64, u64, u64, u32, u64)> {
    let mut out: Vec<(u64, u64, u64, u32, u64)> = Vec::new();
    for l in &info.loads {
        if let Some(last) = out.last_mut() {
            if last.1 == l.vaddr && last.3 == l.flags && last.2 + (last.1 - last.0) == l.paddr {
                last.1 += l.memsz;
                last.4 += l.filesz;
                continue;
            }
        }
        out.push((l.vaddr, l.vaddr + l.memsz, l.paddr, l.flags, l.filesz));
    }
    out
}
