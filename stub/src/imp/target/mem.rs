//! The unikernel's memory as the debugger reaches it: every access checked
//! against the live page tables first (read at `pa + phys_offset`), so a
//! bad address is an error reply and never a fault inside the stub.

use crate::imp::arch;
use crate::paging::{self, Mapping, Walk};

/// Why a memory access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The address is not canonical or not mapped.
    InvalidGuestAddress(u64),
    /// The page is read-only and CR0.WP cannot be cleared (CR4.CET is on:
    /// clearing WP would be a #GP).
    ReadOnly(u64),
    /// The page forbids instruction fetches (NX with EFER.NXE): a software
    /// breakpoint there would never run.
    NotExecutable(u64),
}

impl MemError {
    /// The errno of the error reply (`Exx`).
    pub fn errno(self) -> u8 {
        match self {
            MemError::InvalidGuestAddress(_) => EFAULT,
            MemError::ReadOnly(_) | MemError::NotExecutable(_) => EACCES,
        }
    }
}

/// "Bad address": gdb prints "Cannot access memory at address ...".
pub const EFAULT: u8 = 14;
/// "Permission denied".
pub const EACCES: u8 = 13;

/// How the stub reaches the page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Where physical memory is mapped: table `pa` is read at `pa + phys_offset`.
    pub phys_offset: u64,
    /// The frame bits of an entry on this CPU (see [`paging::frame_mask`]).
    pub frame_mask: u64,
}

/// A range that [`Memory::check`] found mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Every page is writable.
    pub writable: bool,
    /// Every page may be executed.
    pub executable: bool,
}

impl Memory {
    /// Reads the CPU's physical address width (and memory-encryption bit).
    pub fn new(phys_offset: u64) -> Memory {
        Memory { phys_offset, frame_mask: arch::cpu_frame_mask() }
    }

    /// The live tables, for [`crate::livemem`]'s walks.
    pub fn walk(&self) -> Walk {
        crate::livemem::walk(self.frame_mask)
    }

    /// The mapping that holds `addr` in the live page tables.
    pub fn lookup(&self, addr: u64) -> Option<Mapping> {
        let walk = self.walk();
        paging::translate(&walk, addr, |pa| crate::livemem::read_table(self.phys_offset, pa))
    }

    /// Reads as much of `data` as is mapped from `start` on. Returns the
    /// count; 0 when `start` itself is not mapped.
    pub fn read(&self, start: u64, data: &mut [u8]) -> usize {
        paging::for_each_chunk(
            start,
            data.len(),
            |a| self.lookup(a),
            |chunk| {
                let Some(out) = data.get_mut(chunk.offset..chunk.offset + chunk.len) else {
                    return;
                };
                if chunk.mapping.uncached {
                    // Device memory: one byte at a time, each access made.
                    for (addr, b) in (chunk.addr..).zip(out.iter_mut()) {
                        // SAFETY: the page walk found this page present.
                        unsafe { *b = core::ptr::read_volatile(addr as *const u8) };
                    }
                } else {
                    // SAFETY: the page walk found `chunk.len` bytes from
                    // `chunk.addr` present in one page (ordinary, cached
                    // memory), and `out` is the stub's own buffer, which the
                    // debugger's range cannot overlap while it is being
                    // written (reads of the stub's own buffers copy what
                    // is there, like any other memory).
                    unsafe {
                        core::ptr::copy(chunk.addr as *const u8, out.as_mut_ptr(), chunk.len)
                    };
                }
            },
        )
    }

    /// Whether every byte of `start..start+len` is mapped, and how.
    pub fn check(&self, start: u64, len: usize) -> Result<Access, MemError> {
        let mut access = Access { writable: true, executable: true };
        let n = paging::for_each_chunk(
            start,
            len,
            |a| self.lookup(a),
            |chunk| {
                access.writable &= chunk.mapping.writable;
                access.executable &= chunk.mapping.executable;
            },
        );
        if n < len {
            let bad = u64::try_from(n).ok().and_then(|n| start.checked_add(n)).unwrap_or(start);
            return Err(MemError::InvalidGuestAddress(bad));
        }
        Ok(access)
    }

    /// Writes all of `data` at `start`, or nothing. Read-only pages (code)
    /// are written with CR0.WP cleared for the store, except under CET,
    /// where that is refused.
    pub fn write(&self, start: u64, data: &[u8]) -> Result<(), MemError> {
        let access = self.check(start, data.len())?;
        let cr0 = arch::cr0();
        let lift_wp = write_policy(start, access, cr0, arch::cr4())?;
        if lift_wp {
            // SAFETY: interrupts are off and nothing else runs; CET is off so
            // clearing WP is allowed, and WP is set back right after the
            // store, which touches only pages checked above.
            unsafe { arch::set_cr0(cr0 & !arch::CR0_WP) };
        }
        for (addr, &b) in (start..).zip(data.iter()) {
            // SAFETY: every page of the range is present (checked above).
            unsafe { core::ptr::write_volatile(addr as *mut u8, b) };
        }
        if lift_wp {
            // SAFETY: restores the value read above.
            unsafe { arch::set_cr0(cr0) };
        }
        Ok(())
    }

    /// Whether a software breakpoint can go at `addr`: mapped, executable,
    /// and writable by the stub.
    pub fn check_breakpoint(&self, addr: u64) -> Result<(), MemError> {
        breakpoint_policy(addr, self.check(addr, 1)?, arch::cr0(), arch::cr4())
    }
}

/// Whether a write to a range with `access` needs CR0.WP cleared (`true`),
/// or cannot be done: under CET (CR4.CET) clearing WP is a #GP, so a
/// read-only page stays read-only.
fn write_policy(addr: u64, access: Access, cr0: u64, cr4: u64) -> Result<bool, MemError> {
    let lift_wp = !access.writable && cr0 & arch::CR0_WP != 0;
    if lift_wp && cr4 & arch::CR4_CET != 0 {
        return Err(MemError::ReadOnly(addr));
    }
    Ok(lift_wp)
}

/// Whether a software breakpoint may go into a byte with `access`: the
/// page must allow instruction fetches and the stub must be able to write
/// it (see [`write_policy`]).
fn breakpoint_policy(addr: u64, access: Access, cr0: u64, cr4: u64) -> Result<(), MemError> {
    if !access.executable {
        return Err(MemError::NotExecutable(addr));
    }
    write_policy(addr, access, cr0, cr4).map(|_| ())
}

/// Why the stub cannot run on this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformError {
    /// CR4.LA57: 5-level paging, which the stub's page walk does not know.
    FiveLevelPaging,
}

impl PlatformError {
    /// A sentence for the console.
    pub fn message(self) -> &'static str {
        match self {
            PlatformError::FiveLevelPaging => {
                "5-level paging (CR4.LA57) is on; the stub walks 4-level page tables only"
            }
        }
    }
}

/// Checks the CPU state the stub relies on. Call at `init`; on an error the
/// stub must not start.
pub fn check_platform() -> Result<(), PlatformError> {
    platform_from(arch::cr4())
}

fn platform_from(cr4: u64) -> Result<(), PlatformError> {
    if cr4 & arch::CR4_LA57 != 0 {
        return Err(PlatformError::FiveLevelPaging);
    }
    Ok(())
}

/// Why the page tables cannot be reached the way the configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The walk found no mapping for the stub's own static data: the tables
    /// are not where `pa + phys_offset` says.
    StubNotMapped {
        /// The static's address.
        addr: u64,
    },
    /// The static's physical page is not mapped at `pa + phys_offset`.
    PhysNotMapped {
        /// The static's physical address.
        pa: u64,
    },
    /// Read through `pa + phys_offset`, the static holds other bytes.
    Mismatch {
        /// What it holds.
        expected: u64,
        /// What was read.
        found: u64,
    },
}

impl LayoutError {
    /// A sentence for the console.
    pub fn message(self) -> &'static str {
        match self {
            LayoutError::StubNotMapped { .. } => {
                "the page walk cannot find the stub's own data: page tables are not mapped at phys_offset"
            }
            LayoutError::PhysNotMapped { .. } => {
                "physical memory is not mapped at phys_offset (set Config::phys_offset to the kernel's physical memory offset)"
            }
            LayoutError::Mismatch { .. } => {
                "memory read at phys_offset differs from the stub's own data: wrong phys_offset"
            }
        }
    }
}

/// A value the layout check finds through both mappings.
static LAYOUT_PROBE: u64 = 0x6761_702d_6264_6b75; // "ukdb-pag"

/// Verifies that the page tables can be read at `pa + phys_offset`: walks
/// the address of a static of the stub, then reads its physical address
/// through the offset and compares the bytes. Call at `init`, before the
/// first stop, once the unikernel's exception handlers offer #PF and #GP to
/// [`crate::handle_trap`]: the walk's reads are guarded, so a root table
/// that is not mapped at `cr3 + phys_offset` is an error here, not a fault.
pub fn check_layout(phys_offset: u64) -> Result<(), LayoutError> {
    let mem = Memory::new(phys_offset);
    let addr = core::ptr::addr_of!(LAYOUT_PROBE) as u64;
    let m = mem.lookup(addr).ok_or(LayoutError::StubNotMapped { addr })?;
    let pa = m.frame | (addr - m.page_start);
    let via = pa.checked_add(phys_offset).ok_or(LayoutError::PhysNotMapped { pa })?;
    mem.lookup(via).ok_or(LayoutError::PhysNotMapped { pa })?;
    let mut bytes = [0u8; 8];
    if mem.read(via, &mut bytes) != bytes.len() {
        return Err(LayoutError::PhysNotMapped { pa });
    }
    let found = u64::from_le_bytes(bytes);
    // SAFETY: a static, read through its own address.
    let expected = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(LAYOUT_PROBE)) };
    if found != expected {
        return Err(LayoutError::Mismatch { expected, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RO_CODE: Access = Access { writable: false, executable: true };
    const RW_DATA: Access = Access { writable: true, executable: true };
    const NX_DATA: Access = Access { writable: true, executable: false };
    const WP: u64 = arch::CR0_WP;
    const CET: u64 = arch::CR4_CET;

    #[test]
    fn writes_lift_wp_only_where_needed_and_allowed() {
        assert_eq!(write_policy(0x10, RW_DATA, WP, CET), Ok(false));
        assert_eq!(write_policy(0x10, RO_CODE, WP, 0), Ok(true));
        assert_eq!(write_policy(0x10, RO_CODE, 0, CET), Ok(false));
        assert_eq!(write_policy(0x10, RO_CODE, WP, CET), Err(MemError::ReadOnly(0x10)));
    }

    #[test]
    fn breakpoints_need_executable_writable_code() {
        assert_eq!(breakpoint_policy(0x20, RO_CODE, WP, 0), Ok(()));
        assert_eq!(breakpoint_policy(0x20, RO_CODE, WP, CET), Err(MemError::ReadOnly(0x20)));
        assert_eq!(breakpoint_policy(0x20, NX_DATA, WP, 0), Err(MemError::NotExecutable(0x20)));
        assert_eq!(MemError::ReadOnly(0).errno(), EACCES);
        assert_eq!(MemError::InvalidGuestAddress(0).errno(), EFAULT);
    }

    #[test]
    fn five_level_paging_is_refused() {
        assert_eq!(platform_from(0x20 | arch::CR4_LA57), Err(PlatformError::FiveLevelPaging));
        assert_eq!(platform_from(0x20 | CET), Ok(()));
    }
}
