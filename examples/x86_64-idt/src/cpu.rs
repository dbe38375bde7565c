//! What the stub needs from the CPU's control registers. The stub saves and
//! restores the x87/SSE state with `fxsave`/`fxrstor` around every stop.
//! That needs CR4.OSFXSR (without it the SSE registers are not saved, and
//! gdb shows wrong xmm values), CR0.EM clear (with EM set `fxsave` raises
//! #UD) and CR0.TS clear while the stub runs (with TS set it raises #NM; a
//! kernel that switches FPU state lazily must clear TS before a stop can
//! happen, or handle #NM itself before offering it to the stub).

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// Enables SSE the way the stub (and Rust code using SSE) needs it.
pub fn enable_sse() {
    // SAFETY: turning on OSFXSR/OSXMMEXCPT and clearing EM/TS only enables
    // instructions (SSE, fxsave) on a CPU that has them (every x86_64 CPU);
    // no memory or paging setting changes.
    unsafe {
        Cr0::update(|cr0| {
            cr0.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            cr0.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|cr4| cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
}
