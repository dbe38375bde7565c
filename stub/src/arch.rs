//! The x86_64 boundary: every privileged instruction the stub executes is a
//! function here, so the rest of the stub is plain logic. Shared by the
//! full stub and the dump-only build (which uses the control registers,
//! `fxsave`, the segment bases, port I/O and the guarded read); the debug
//! registers ([`dr`]) are the full stub's.
//!
//! # Safety
//! The stub runs in ring 0 with interrupts off and the rest of the world
//! stopped. Each function documents what it needs beyond that.

// The dump-only build uses part of it (the rest is the full stub's).
#![cfg_attr(not(feature = "enabled"), allow(dead_code))]

use core::arch::{asm, global_asm};

/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// RFLAGS.TF: trap after the next instruction.
pub const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.RF: suppress instruction breakpoints for one instruction.
pub const RFLAGS_RF: u64 = 1 << 16;

const MSR_EFER: u32 = 0xC000_0080;
const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;

/// Reads CR0.
pub fn cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The caller changes only bits whose effect it controls (here: WP, around
/// a write the page walk already approved).
pub unsafe fn set_cr0(v: u64) {
    // SAFETY: per the function contract.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.CET: control-flow enforcement; CR0.WP cannot be cleared while set.
pub const CR4_CET: u64 = 1 << 23;
/// EFER.NXE: the page tables' execute-disable bit is honoured.
pub const EFER_NXE: u64 = 1 << 11;

/// Reads CR4.
pub fn cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads EFER.
pub fn efer() -> u64 {
    rdmsr(MSR_EFER)
}

/// The frame bits of a page-table entry on this CPU: MAXPHYADDR from CPUID
/// 0x8000_0008, less the SME/SEV encryption bit when CPUID 0x8000_001F
/// reports one (see [`crate::paging::frame_mask`]).
pub fn cpu_frame_mask() -> u64 {
    let max_ext = cpuid(0x8000_0000)[0];
    let maxphyaddr = if max_ext >= 0x8000_0008 { cpuid(0x8000_0008)[0] as u8 } else { 36 };
    let c_bit = if max_ext >= 0x8000_001F {
        let [eax, ebx, _, _] = cpuid(0x8000_001F);
        // SME or SEV: EBX[5:0] is the C-bit's position.
        (eax & 0b11 != 0).then_some((ebx & 0x3f) as u8)
    } else {
        None
    };
    crate::paging::frame_mask(maxphyaddr, c_bit)
}

/// `cpuid` with `leaf` (subleaf 0): eax, ebx, ecx, edx.
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Reads CR2 (the address of the last page fault).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3 (the page-table root).
pub fn cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR8 (the local APIC's task priority, TPR bits 7:4).
pub fn cr8() -> u64 {
    let v: u64;
    // SAFETY: reading CR8 has no side effects.
    unsafe { asm!("mov {}, cr8", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR8.
///
/// # Safety
/// `v` is 0-15. Raising it only holds back interrupts the CPU would
/// otherwise take; the caller puts the unikernel's value back before the
/// unikernel runs again.
pub unsafe fn set_cr8(v: u64) {
    // SAFETY: per the function contract.
    unsafe { asm!("mov cr8, {}", in(reg) v & 0xf, options(nomem, nostack, preserves_flags)) };
}

/// Reads an MSR the CPU is known to have.
fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with architectural MSRs every x86_64 CPU has.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR the CPU is known to have.
///
/// # Safety
/// The value must be valid for that MSR (canonical, for the segment bases).
unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: per the function contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

/// FS.base and GS.base.
pub fn segment_bases() -> (u64, u64) {
    (rdmsr(MSR_FS_BASE), rdmsr(MSR_GS_BASE))
}

/// A segment base the CPU would not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonCanonical(pub u64);

/// Sets FS.base and GS.base; non-canonical values are refused.
pub fn set_segment_bases(fs: u64, gs: u64) -> Result<(), NonCanonical> {
    for base in [fs, gs] {
        if !crate::paging::is_canonical(base) {
            return Err(NonCanonical(base));
        }
    }
    // SAFETY: both values are canonical, which is all these MSRs require.
    unsafe {
        wrmsr(MSR_FS_BASE, fs);
        wrmsr(MSR_GS_BASE, gs);
    }
    Ok(())
}

/// The data segment selectors: ds, es, fs, gs.
pub fn data_selectors() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, options(nomem, nostack, preserves_flags));
    }
    [ds, es, fs, gs]
}

/// The x87/SSE state, as `fxsave` stores it.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// All zero.
    pub const fn zeroed() -> Self {
        FxArea([0; 512])
    }

    /// Saves the live x87/SSE state here.
    pub fn save(&mut self) {
        // SAFETY: self is a 512-byte, 16-byte aligned buffer; fxsave only writes it.
        unsafe {
            asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack, preserves_flags))
        };
    }

    /// Loads the state back. A debugger may have written reserved MXCSR
    /// bits, which would make `fxrstor` fault: those are cleared first.
    pub fn restore(&mut self) {
        let mxcsr = u32::from_le_bytes([self.0[24], self.0[25], self.0[26], self.0[27]]) & 0xffff;
        self.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        // SAFETY: a 512-byte aligned area that `save` filled, with MXCSR made valid.
        unsafe {
            asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, preserves_flags))
        };
    }
}

// Reads the quadword at rdi into [rsi]; eax = 1. Should the load fault
// (#PF, or #GP for a non-canonical address), the stub's trap hook moves rip
// to the fix-up (see `probe_fixup`), which returns eax = 0: an exception
// table of one entry, as Linux's `copy_from_kernel_nofault`.
global_asm!(
    ".section .text.ukdb_probe, \"ax\"",
    ".p2align 4",
    ".globl ukdb_probe_read",
    ".hidden ukdb_probe_read",
    "ukdb_probe_read:",
    ".globl ukdb_probe_load",
    ".hidden ukdb_probe_load",
    "ukdb_probe_load:",
    "mov rax, [rdi]",
    "mov [rsi], rax",
    "mov eax, 1",
    "ret",
    ".globl ukdb_probe_fixup",
    ".hidden ukdb_probe_fixup",
    "ukdb_probe_fixup:",
    "xor eax, eax",
    "ret",
    ".text",
);

extern "C" {
    fn ukdb_probe_read(addr: u64, out: *mut u64) -> u32;
    static ukdb_probe_load: u8;
    static ukdb_probe_fixup: u8;
}

/// Reads the quadword at `addr`, or `None` if that faults. Needs the
/// unikernel's handler to offer #PF and #GP to the stub (as it does every
/// vector 0-31); before `init` that holds as well, since the hook runs
/// before the stub looks at its own state.
pub fn probe_read_u64(addr: u64) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: the load at `ukdb_probe_load` either succeeds or faults into
    // `probe_fixup`, which resumes at the fix-up; either way the function
    // writes only `value` and clobbers only rax (C ABI).
    let ok = unsafe { ukdb_probe_read(addr, &mut value) };
    (ok == 1).then_some(value)
}

/// For a #PF or #GP at the probe's load: the rip to resume at (the
/// fix-up), so the probe returns `None`.
pub fn probe_fixup(vector: u64, rip: u64) -> Option<u64> {
    let load = core::ptr::addr_of!(ukdb_probe_load) as u64;
    let fixup = core::ptr::addr_of!(ukdb_probe_fixup) as u64;
    (matches!(vector, 13 | 14) && rip == load).then_some(fixup)
}

/// The debug registers.
#[cfg(feature = "enabled")]
pub mod dr {
    use crate::debugregs::SavedDebugRegs;
    use core::arch::{asm, global_asm};

    // Reads DR0-DR3 and DR7 into a `SavedDebugRegs` at rdi. When the
    // unikernel set DR7.GD, the first access raises #DB (DR6.BD) with rip on
    // it; the CPU clears GD on the way in, so the stub's trap hook lets the
    // access run again (see `in_save`).
    global_asm!(
        ".section .text.ukdb_dr_save, \"ax\"",
        ".p2align 4",
        ".globl ukdb_dr_save",
        ".hidden ukdb_dr_save",
        "ukdb_dr_save:",
        ".globl ukdb_dr_save_access",
        ".hidden ukdb_dr_save_access",
        "ukdb_dr_save_access:",
        "mov rax, dr7",
        "mov [rdi + 32], rax",
        "mov rax, dr0",
        "mov [rdi], rax",
        "mov rax, dr1",
        "mov [rdi + 8], rax",
        "mov rax, dr2",
        "mov [rdi + 16], rax",
        "mov rax, dr3",
        "mov [rdi + 24], rax",
        ".globl ukdb_dr_save_end",
        ".hidden ukdb_dr_save_end",
        "ukdb_dr_save_end:",
        "ret",
        ".text",
    );

    extern "C" {
        fn ukdb_dr_save(out: *mut SavedDebugRegs);
        static ukdb_dr_save_access: u8;
        static ukdb_dr_save_end: u8;
    }

    const _: () = assert!(core::mem::offset_of!(SavedDebugRegs, dr7) == 32);
    const _: () = assert!(core::mem::offset_of!(SavedDebugRegs, addrs) == 0);

    /// Saves the unikernel's DR0-DR3 and DR7.
    pub fn save() -> SavedDebugRegs {
        let mut saved = SavedDebugRegs::default();
        // SAFETY: `ukdb_dr_save` writes 40 bytes at the pointer (the
        // `#[repr(C)]` layout asserted above) and clobbers only rax, which
        // the C ABI lets it.
        unsafe { ukdb_dr_save(&mut saved) };
        saved
    }

    /// Whether `rip` is a debug register access of [`save`]: a #DB there is
    /// the unikernel's DR7.GD, not a stop.
    pub fn in_save(rip: u64) -> bool {
        let (start, end) = (
            core::ptr::addr_of!(ukdb_dr_save_access) as u64,
            core::ptr::addr_of!(ukdb_dr_save_end) as u64,
        );
        (start..end).contains(&rip)
    }

    /// Reads DR6 (what triggered a #DB).
    pub fn dr6() -> u64 {
        let v: u64;
        // SAFETY: reading DR6 has no side effects.
        unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// Clears DR6's sticky status bits.
    pub fn clear_dr6() {
        // SAFETY: writing the architectural reset value to DR6.
        unsafe {
            asm!("mov dr6, {}", in(reg) 0xFFFF_0FF0u64, options(nomem, nostack, preserves_flags))
        };
    }

    /// Loads the four address registers and DR7.
    pub fn load(addrs: [u64; 4], dr7: u64) {
        // SAFETY: debug registers only arm breakpoints; DR7 is written last so
        // no slot is live with a stale address, and reserved bits are kept
        // clear by the caller's encoding. Should DR7 hold GD, it is the last
        // access.
        unsafe {
            asm!("mov dr7, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags));
            asm!("mov dr0, {}", in(reg) addrs[0], options(nomem, nostack, preserves_flags));
            asm!("mov dr1, {}", in(reg) addrs[1], options(nomem, nostack, preserves_flags));
            asm!("mov dr2, {}", in(reg) addrs[2], options(nomem, nostack, preserves_flags));
            asm!("mov dr3, {}", in(reg) addrs[3], options(nomem, nostack, preserves_flags));
            asm!("mov dr7, {}", in(reg) dr7, options(nomem, nostack, preserves_flags));
        }
    }
}

/// One byte from an I/O port.
///
/// # Safety
/// `port` belongs to a device the caller drives.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: per the function contract.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// One byte to an I/O port.
///
/// # Safety
/// `port` belongs to a device the caller drives.
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: per the function contract.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}
