//! CPU instructions the example needs beyond port I/O: model-specific
//! registers, CPUID, and the idle wait.

use core::arch::{asm, global_asm};

/// Reads model-specific register `msr`.
///
/// # Safety
/// `msr` must exist on this CPU (reading an absent MSR raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; rdmsr only reads it.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// `msr` must exist on this CPU and accept `value` (otherwise #GP), and
/// whatever the write sets in motion must be safe: a write that makes the
/// hypervisor or the CPU write to memory (the KVM clock's MSR) needs that
/// memory to be the caller's.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the function contract. Not `nomem`: an MSR write can make
    // the hypervisor write guest memory.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// `cpuid` leaf `leaf`, sub-leaf 0, as `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Enables maskable interrupts (`sti`).
pub fn enable_interrupts() {
    // SAFETY: the IDT has a gate for every vector (see `idt::init`), so any
    // interrupt that arrives from now on has a handler.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

global_asm!(
    r#"
    .section .text.idle_halt, "ax"
    .p2align 4
    .global idle_halt
idle_halt:
    .cfi_startproc
    sti
    hlt
    .global idle_halt_resume
idle_halt_resume:
    ret
    .cfi_endproc
    "#
);

extern "C" {
    fn idle_halt();
    static idle_halt_resume: u8;
}

/// Sleeps until the next interrupt with `sti; hlt` (the `sti` shadow makes
/// the pair atomic: an interrupt that is already pending wakes the `hlt`
/// rather than slipping in before it). Returns with interrupts enabled.
pub fn wait_for_interrupt() {
    // SAFETY: `idle_halt` is the assembly above: it enables interrupts and
    // halts until one has been handled, touching no memory and no register
    // the C ABI does not let it clobber.
    unsafe { idle_halt() }
}

/// Whether `rip`, the interrupted instruction pointer of an interrupt, is the
/// idle wait's: the interrupt woke [`wait_for_interrupt`].
pub fn interrupted_idle(rip: u64) -> bool {
    rip == core::ptr::addr_of!(idle_halt_resume) as u64
}
