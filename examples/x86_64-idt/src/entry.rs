//! Assembly entries. The `x86_64` crate's `extern "x86-interrupt"` handlers
//! (nightly only) receive just the CPU's `InterruptStackFrame`: the
//! general-purpose registers are saved where the compiler likes and are not
//! in memory the stub can read or change. The stub needs a full
//! [`ukdb_stub::TrapFrame`] that the entry restores with `iretq`, so each
//! exception vector gets a small assembly entry instead, installed with
//! `Entry::set_handler_addr` (see `idt.rs`).
//!
//! Which vectors push an error code (the CPU pushes one for these only; the
//! entry pushes a 0 for the others so that every frame has the same shape):
//! 8 #DF, 10 #TS, 11 #NP, 12 #SS, 13 #GP, 14 #PF, 17 #AC, 21 #CP, 29 #VC,
//! 30 #SX.

use core::arch::global_asm;
use ukdb_stub::{TrapFrame, TRAP_FRAME_SIZE};

// The exception entries, 16 bytes apart from `exception_entries` (each is
// at most 9 bytes: push 0, push vector, jmp), as `vector
// error_code_pushed_by_cpu`. Each pushes a 0 error code where the CPU
// pushes none, then its vector, and joins `exception_common`, which pushes
// the general-purpose registers in TrapFrame order, calls
// `exception(frame)` on a 16-byte aligned stack, pops them (with the
// debugger's changes) and returns with `iretq`.
macro_rules! exception_entries {
    ($($v:literal $err:literal),* $(,)?) => {
        global_asm!(
            ".section .text.exception_entries, \"ax\"",
            ".p2align 4",
            ".global exception_entries",
            "exception_entries:",
            $(
                concat!(".p2align 4\n",
                        ".if ", stringify!($err), " == 0\n push 0\n .endif\n",
                        "push ", stringify!($v), "\n",
                        "jmp exception_common"),
            )*
        );
    };
}

exception_entries!(
    0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1, 15 0,
    16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1, 30 1, 31 0,
);

/// Distance between two exception entries.
pub const ENTRY_STRIDE: u64 = 16;

global_asm!(
    r#"
    .section .text.exception_entries, "ax"
    .p2align 4
exception_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    cld
    call exception
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
    "#
);

// 15 registers, vector, error code and the CPU's 5-word frame: exactly the
// stub's TrapFrame, in its order (see `ukdb_stub::TrapFrame`).
const _: () = assert!(TRAP_FRAME_SIZE == (15 + 2 + 5) * 8);

// The timer entry. Interrupts (vectors 32-255) are never offered to the
// stub; the timer only calls `ukdb_stub::poll`, which builds its own frame
// when a debugger is waiting. So this entry saves just the registers a C
// call may clobber. (On nightly, an `extern "x86-interrupt" fn` works as
// well for this one: it needs no register frame.)
global_asm!(
    r#"
    .section .text.timer_entry, "ax"
    .p2align 4
    .global timer_entry
timer_entry:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    /* 5 + 9 quadwords below the 16-byte aligned interrupt frame. */
    sub rsp, 8
    cld
    call timer_tick
    add rsp, 8
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
    "#
);

extern "C" {
    #[link_name = "exception_entries"]
    static EXCEPTION_ENTRIES: u8;
    #[link_name = "timer_entry"]
    static TIMER_ENTRY: u8;
}

/// The address of the entry for exception `vector` (0-31).
pub fn exception_entry(vector: u8) -> u64 {
    core::ptr::addr_of!(EXCEPTION_ENTRIES) as u64 + u64::from(vector) * ENTRY_STRIDE
}

/// The address of the timer's entry.
pub fn timer_entry() -> u64 {
    core::ptr::addr_of!(TIMER_ENTRY) as u64
}

/// Every exception, with the frame its entry saved: the stub first.
#[no_mangle]
extern "C" fn exception(frame: &mut TrapFrame) {
    if ukdb_stub::handle_trap(frame) {
        return;
    }
    // Not the debugger's: the kernel's own handling (blog_os prints the
    // frame and, for most vectors, halts).
    crate::halt()
}

/// The timer tick: let the stub look for a debugger, then end the
/// interrupt. With interrupts disabled (an interrupt gate).
#[no_mangle]
extern "C" fn timer_tick() {
    ukdb_stub::poll();
    crate::pic::end_of_interrupt(crate::idt::TIMER_VECTOR);
}
