//! The register frame that a unikernel's trap entry hands to the stub.
//!
//! This is the one piece of layout the stub and the unikernel share. The trap
//! entry code (one small stub per vector, then a common path) builds it on the
//! stack like this, from high to low addresses:
//!
//! ```text
//!   ss, rsp, rflags, cs, rip     pushed by the CPU on every exception
//!   error_code                   pushed by the CPU (vectors 8, 10-14, 17, 21,
//!                                29, 30) or a 0 pushed by the per-vector stub
//!   vector                       pushed by the per-vector stub
//!   rax, rbx, rcx, rdx, rsi, rdi, rbp, r8 .. r15   pushed by the common path
//! ```
//!
//! and passes a pointer to the lowest address (`r15`) as `&mut TrapFrame`.
//! Everything the stub changes here (registers written by the debugger, the
//! trap flag for single-step) takes effect when the common path pops the
//! registers and executes `iretq`.

/// Interrupt-time register state, laid out exactly as the trap entry pushes it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The exception vector (0-31), or [`SOFT_ENTRY_VECTOR`] when the stub
    /// entered itself (poll, wait, panic, [`crate::breakpoint`]).
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The `vector` value of frames that the stub builds itself rather than the CPU.
pub const SOFT_ENTRY_VECTOR: u64 = 0x100;

/// The size of [`TrapFrame`] in bytes: 22 quadwords. Assembly that builds the
/// frame can check itself against this.
pub const TRAP_FRAME_SIZE: usize = 22 * 8;

const _: () = assert!(core::mem::size_of::<TrapFrame>() == TRAP_FRAME_SIZE);

// The push order above, as offsets: the general-purpose registers are pushed
// rax first (so at the highest of them) down to r15 (at the frame's start),
// by both the example's `trap_common` and the stub's `soft_entry`; below the
// CPU's five words sit the error code and then the vector, which
// `soft_entry` stores at `[rsp + 8]` and `[rsp + 0]` of its 56-byte block.
const _: () = {
    use core::mem::offset_of;
    let gprs = [
        offset_of!(TrapFrame, r15),
        offset_of!(TrapFrame, r14),
        offset_of!(TrapFrame, r13),
        offset_of!(TrapFrame, r12),
        offset_of!(TrapFrame, r11),
        offset_of!(TrapFrame, r10),
        offset_of!(TrapFrame, r9),
        offset_of!(TrapFrame, r8),
        offset_of!(TrapFrame, rbp),
        offset_of!(TrapFrame, rdi),
        offset_of!(TrapFrame, rsi),
        offset_of!(TrapFrame, rdx),
        offset_of!(TrapFrame, rcx),
        offset_of!(TrapFrame, rbx),
        offset_of!(TrapFrame, rax),
    ];
    let mut i = 0;
    while i < gprs.len() {
        assert!(gprs[i] == 8 * i);
        i += 1;
    }
    assert!(offset_of!(TrapFrame, vector) == 15 * 8);
    assert!(offset_of!(TrapFrame, error_code) == 16 * 8);
    // The hardware frame, as the CPU pushes it.
    assert!(offset_of!(TrapFrame, rip) == 17 * 8);
    assert!(offset_of!(TrapFrame, cs) == 18 * 8);
    assert!(offset_of!(TrapFrame, rflags) == 19 * 8);
    assert!(offset_of!(TrapFrame, rsp) == 20 * 8);
    assert!(offset_of!(TrapFrame, ss) == 21 * 8);
};
