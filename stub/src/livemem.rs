//! The live page tables, as the full stub (memory access, the core
//! queries) and the crash path (the dump) walk them: one definition of
//! where the walk starts and how a table is read.

use crate::arch;
use crate::coremap::{classify, Entry, Ram, Seen};
use crate::paging::{self, Run, Walk};

/// The tables the CPU uses now: CR3, `frame_mask` (see
/// [`paging::frame_mask`]), and whether EFER.NXE makes bit 63 mean
/// no-execute.
pub fn walk(frame_mask: u64) -> Walk {
    Walk { cr3: arch::cr3(), frame_mask, nxe: arch::efer() & arch::EFER_NXE != 0 }
}

/// The table quadword at physical `pa`, read at `pa + phys_offset`. A
/// table that cannot be read (a wrong `phys_offset`, a corrupt entry)
/// reads as 0, "not present": a refusal, never a fault.
pub fn read_table(phys_offset: u64, pa: u64) -> u64 {
    pa.checked_add(phys_offset)
        .filter(|&va| paging::is_canonical(va))
        .and_then(arch::probe_read_u64)
        .unwrap_or(0)
}

/// Every run of the live tables, in virtual order (see
/// [`paging::for_each_run`]).
pub fn for_each_run(walk: &Walk, phys_offset: u64, visit: impl FnMut(Run)) -> bool {
    paging::for_each_run(walk, |pa| read_table(phys_offset, pa), visit)
}

/// The entries of a core's map, in order, from a fresh walk (each pass
/// sees the same while the world is stopped): the runs cut at the edges of
/// `ram` and flagged (see [`classify`]).
pub fn each_entry(walk: &Walk, phys_offset: u64, ram: &Ram, mut visit: impl FnMut(Entry)) {
    let mut seen = Seen::new();
    for_each_run(walk, phys_offset, |run| classify(&run, ram, &mut seen, &mut visit));
}
