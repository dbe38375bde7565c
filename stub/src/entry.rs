//! The soft entry: how the stub stops the unikernel from ordinary code
//! (a poll that found input, `ukdb.wait`, a panic, `breakpoint()`) with the
//! same [`TrapFrame`] an exception would have made. Shared by the full stub
//! and the dump-only build (a panic's registers for its core).

use crate::TrapFrame;
use core::arch::naked_asm;

/// Why the stub entered itself through [`soft_entry`].
#[repr(u64)]
pub enum Why {
    /// A poll found input waiting.
    #[cfg_attr(not(feature = "enabled"), allow(dead_code))]
    Poll = 0,
    /// `ukdb.wait`.
    #[cfg_attr(not(feature = "enabled"), allow(dead_code))]
    Wait = 1,
    /// A panic.
    Panic = 2,
    /// `breakpoint()`.
    #[cfg_attr(not(feature = "enabled"), allow(dead_code))]
    Break = 3,
}

/// Where [`soft_entry`] begins: a single step that lands there is a step
/// into the stub's own entry (see `session::on_trap`).
#[cfg(feature = "enabled")]
pub(crate) fn soft_entry_address() -> u64 {
    soft_entry as *const () as u64
}

/// Enters the stub from ordinary code with a full [`TrapFrame`], as if an
/// exception had been taken right after the `call`: `rip` is the return
/// address and `rsp` the caller's stack pointer after the return, so the
/// debugger sees the caller. Restores everything (with the debugger's
/// changes, and the trap flag for a single step) with `iretq`.
#[unsafe(naked)]
pub(crate) extern "C" fn soft_entry(why: u64) {
    naked_asm!(
        // On entry [rsp] is the return address. Build the hardware-style
        // part of the frame below it: vector, error code, rip, cs, rflags,
        // rsp, ss, at [rsp+0] .. [rsp+48] after the `sub`.
        "pushfq",
        "cli",
        // Clear TF (and keep IF clear) for the stub's own code: a single
        // step that led here stops at most on the instructions up to this
        // popfq (no lock is held yet); the caller's flags, TF and IF
        // included, are in the frame.
        "push qword ptr [rsp]",
        "and qword ptr [rsp], -769",
        "popfq",
        "sub rsp, 56",
        "mov [rsp + 8], rax",
        "mov rax, [rsp + 64]",
        "mov [rsp + 16], rax",
        "xor eax, eax",
        "mov ax, cs",
        "mov [rsp + 24], rax",
        "mov rax, [rsp + 56]",
        "mov [rsp + 32], rax",
        "lea rax, [rsp + 72]",
        "mov [rsp + 40], rax",
        "xor eax, eax",
        "mov ax, ss",
        "mov [rsp + 48], rax",
        "mov qword ptr [rsp], {vector}",
        "mov rax, [rsp + 8]",
        "mov qword ptr [rsp + 8], 0",
        // The general-purpose registers, in TrapFrame order.
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov rsi, rdi",
        "mov rdi, rsp",
        "mov rbx, rsp",
        "and rsp, -16",
        "call {handler}",
        "mov rsp, rbx",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
        vector = const crate::SOFT_ENTRY_VECTOR,
        handler = sym soft_trap,
    );
}

extern "C" fn soft_trap(frame: &mut TrapFrame, why: u64) {
    #[cfg(feature = "enabled")]
    crate::imp::session::on_soft_entry(frame, why);
    #[cfg(not(feature = "enabled"))]
    crate::dumponly::on_soft_entry(frame, why);
}
