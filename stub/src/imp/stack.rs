//! The stub's own stack. The stub serves the debugger on it rather than on
//! the interrupted one, so a stop needs nothing from the unikernel's stack
//! beyond the trap frame its entry code pushed (a nearly full stack can be
//! debugged; an overflowed one can too if the unikernel gives `#PF`/`#DF` an
//! IST stack, see docs/debugging.md).
//!
//! Only the outermost entry switches (`session::ENTERED`), so the stack is
//! never used twice at once.

use crate::TrapFrame;
use core::arch::naked_asm;
use core::cell::UnsafeCell;

/// Bytes of the stub's stack. Measured (`monitor stats` prints the figure):
/// about 4 KiB in an optimised build, about 45 KiB unoptimised (a dev build
/// of the unikernel compiles gdbstub without optimisation), so 128 KiB
/// leaves a dev build more than half of it spare.
pub const STUB_STACK_BYTES: usize = 128 * 1024;

/// Filled in at `init`, so that `high_water` can tell how deep it went.
const PAINT: u8 = 0xa5;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STUB_STACK_BYTES]>);

// SAFETY: used only by the outermost stub entry (see the module docs): one
// user at a time.
unsafe impl Sync for Stack {}

static STACK: Stack = Stack(UnsafeCell::new([0; STUB_STACK_BYTES]));

/// The stub's entry, run on its stack: `f(frame, arg)`.
pub type OnStack = extern "C" fn(*mut TrapFrame, u64) -> u64;

/// Calls `f(frame, arg)` on the stub's stack and returns what it returns.
/// Only the outermost entry calls this (the caller sets `ENTERED`).
pub fn call(frame: &mut TrapFrame, arg: u64, f: OnStack) -> u64 {
    let top = STACK.0.get().cast::<u8>().wrapping_add(STUB_STACK_BYTES);
    // SAFETY: `top` is the 16-byte aligned end of a stack nobody else uses
    // now (see the module docs); `switch` returns on the original stack
    // with every callee-saved register intact.
    unsafe { switch(frame, arg, f, top) }
}

/// Where the stack is: its lowest address and its size (protected from
/// the debugger's writes, see `crate::guard`).
pub fn span() -> (u64, u64) {
    (STACK.0.get() as u64, STUB_STACK_BYTES as u64)
}

/// Paints the stack (once, at `init`, before any entry can use it).
pub fn paint() {
    let base = STACK.0.get().cast::<u8>();
    for i in 0..STUB_STACK_BYTES {
        // SAFETY: `i` is inside the stack, which no entry uses before `init`
        // has finished.
        unsafe { base.add(i).write_volatile(PAINT) };
    }
}

/// How many bytes of the stack were ever used.
pub fn high_water() -> usize {
    let base = STACK.0.get().cast::<u8>().cast_const();
    let untouched = (0..STUB_STACK_BYTES)
        // SAFETY: `i` is inside the stack; reading a byte of it while the
        // stub runs on its upper part is a plain read of static memory.
        .take_while(|&i| unsafe { base.add(i).read_volatile() } == PAINT)
        .count();
    STUB_STACK_BYTES - untouched
}

/// `f(frame, arg)` with `rsp = top`; back on the caller's stack after.
///
/// # Safety
/// `top` is the 16-byte aligned top of a stack that nothing else uses.
#[unsafe(naked)]
unsafe extern "C" fn switch(frame: *mut TrapFrame, arg: u64, f: OnStack, top: *mut u8) -> u64 {
    naked_asm!(
        // rdi = frame, rsi = arg (f's arguments already), rdx = f, rcx = top.
        "push rbp",
        "mov rbp, rsp",
        "mov rsp, rcx",
        "call rdx",
        "mov rsp, rbp",
        "pop rbp",
        "ret",
    );
}
