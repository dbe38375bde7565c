//! Fixtures for the stub's target tests.
//!
//! `ukdemo.dr`: the unikernel arms a debug register of its own (see
//! [`setup`]) and reports on the console if it ever finds it changed, which
//! a debugger coming and going must not do.
//!
//! `ukdemo.flags`: instructions that read or write RFLAGS.IF and TF, for the
//! single-step tests. Each has a global label (`ukdemo_flags_*`) where a
//! debugger breaks and steps; the arithmetic flags are fixed (`xor eax, eax`:
//! ZF and PF) so every RFLAGS value along the way is known:
//!
//! | label | instruction | RFLAGS after | memory after |
//! |-------|-------------|--------------|--------------|
//! | `ukdemo_flags_sti` | `sti` (IF was clear) | `0x246` | |
//! | `ukdemo_flags_pushfq` | `pushfq` | `0x246` | `[rsp]` = `0x246` |
//! | `ukdemo_flags_pushfw` | `66 9C` (16-bit `pushf`) | `0x246` | `[rsp]` = `0x0246` (word) |
//! | `ukdemo_flags_rex_pushfq` | `48 9C` | `0x246` | `[rsp]` = `0x246` |
//! | `ukdemo_flags_cli` | `cli` (IF was set) | `0x46` | |
//! | `ukdemo_flags_popfq` | `popfq` of `0x246` | `0x246` | |
//! | `ukdemo_flags_cli2` | `cli` | `0x46` | |
//! | `ukdemo_flags_iretq` | `iretq` to the next label, image `0x246` | `0x246` | |
//! | `ukdemo_flags_done` | `cli` | `0x46` | |
//!
//! The caller's RFLAGS are saved first and restored last. While the
//! sequence runs with IF set, the legacy PIC is masked, so no interrupt
//! without a handler (the firmware's timer on vector 8) can arrive.

use core::arch::{asm, global_asm};

use core::sync::atomic::{AtomicBool, Ordering};

fn option(name: &str) -> bool {
    crate::pvh::cmdline().split_ascii_whitespace().any(|w| w == name)
}

static FLAGS: AtomicBool = AtomicBool::new(false);
static DEBUG_REGS: AtomicBool = AtomicBool::new(false);

/// The unikernel's own debug registers with `ukdemo.dr`: an instruction
/// breakpoint (slot 0, L0) at an address that never runs (page 1 holds no
/// code), so it never fires; the stub must leave it as it is.
const OWN_DR0: u64 = 0x1000;
const OWN_DR7: u64 = 0b01;
/// The DR7 bits of slot 0: L0, G0, RW0, LEN0.
const SLOT0_DR7: u64 = 0b11 | (0b1111 << 16);

/// Reads the command line (`ukdemo.flags`, `ukdemo.dr`) and prepares what
/// it asks for. Returns whether [`run`] has work in each iteration.
pub fn setup() -> bool {
    FLAGS.store(option("ukdemo.flags"), Ordering::Relaxed);
    if option("ukdemo.dr") {
        DEBUG_REGS.store(true, Ordering::Relaxed);
        // SAFETY: arms an instruction breakpoint on an address no code
        // lives at; the stub routes a #DB to the debugger in any case.
        unsafe {
            asm!("mov dr0, {}", in(reg) OWN_DR0, options(nomem, nostack, preserves_flags));
            asm!("mov dr7, {}", in(reg) OWN_DR7, options(nomem, nostack, preserves_flags));
        }
    }
    FLAGS.load(Ordering::Relaxed) || DEBUG_REGS.load(Ordering::Relaxed)
}

/// With `ukdemo.dr`: says once on the console if the debug registers no
/// longer hold what [`setup`] put there.
fn check_debug_regs() {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let (dr0, dr7): (u64, u64);
    // SAFETY: reading debug registers has no side effects (GD is not set).
    unsafe {
        asm!("mov {}, dr0", out(reg) dr0, options(nomem, nostack, preserves_flags));
        asm!("mov {}, dr7", out(reg) dr7, options(nomem, nostack, preserves_flags));
    }
    if (dr0 != OWN_DR0 || dr7 & SLOT0_DR7 != OWN_DR7) && !REPORTED.swap(true, Ordering::Relaxed) {
        crate::println!("ukdemo: debug registers changed: dr0 {:#x}, dr7 {:#x}", dr0, dr7);
    }
}

/// Reads a PIC mask register.
fn pic_mask(port: u16) -> u8 {
    let v: u8;
    // SAFETY: reading the legacy PIC's mask register (0x21/0xA1) has no side
    // effects.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a PIC mask register.
fn set_pic_mask(port: u16, mask: u8) {
    // SAFETY: only masks or unmasks legacy PIC lines; the value is either
    // all-masked or the value read before.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") mask, options(nomem, nostack, preserves_flags))
    };
}

// The sequence, as a function of its own (`extern "C"`: it clobbers rax and
// rcx only, which the C ABI leaves to the callee). It pops what it pushes,
// and the `iretq` returns to the next instruction on the same stack with
// this code's own cs and ss; RFLAGS are restored from the copy pushed first.
global_asm!(
    ".section .text.ukdemo_flags, \"ax\"",
    ".p2align 4",
    ".global ukdemo_flags_run",
    ".type ukdemo_flags_run, @function",
    "ukdemo_flags_run:",
    "pushfq",
    "cli",
    "xor eax, eax",
    ".global ukdemo_flags_sti",
    "ukdemo_flags_sti:",
    "sti",
    ".global ukdemo_flags_pushfq",
    "ukdemo_flags_pushfq:",
    "pushfq",
    ".global ukdemo_flags_pushfw",
    "ukdemo_flags_pushfw:",
    ".byte 0x66, 0x9c",
    ".global ukdemo_flags_rex_pushfq",
    "ukdemo_flags_rex_pushfq:",
    ".byte 0x48, 0x9c",
    ".global ukdemo_flags_cli",
    "ukdemo_flags_cli:",
    "cli",
    ".global ukdemo_flags_popfq",
    "ukdemo_flags_popfq:",
    "popfq",
    ".global ukdemo_flags_cli2",
    "ukdemo_flags_cli2:",
    "cli",
    // Drop the 16-bit and the first 64-bit image without touching the flags.
    "lea rsp, [rsp + 10]",
    // An iretq frame to the next label: ss, rsp, rflags, cs, rip.
    "mov rcx, rsp",
    "mov ax, ss",
    "movzx eax, ax",
    "push rax",
    "push rcx",
    "push 0x246",
    "mov ax, cs",
    "movzx eax, ax",
    "push rax",
    "lea rax, [rip + ukdemo_flags_done]",
    "push rax",
    "xor eax, eax",
    ".global ukdemo_flags_iretq",
    "ukdemo_flags_iretq:",
    "iretq",
    ".global ukdemo_flags_done",
    "ukdemo_flags_done:",
    "cli",
    "popfq",
    "ret",
    ".size ukdemo_flags_run, . - ukdemo_flags_run",
    ".text",
);

extern "C" {
    fn ukdemo_flags_run();
}

/// One iteration's work: checks the debug registers (`ukdemo.dr`) and runs
/// the RFLAGS sequence (`ukdemo.flags`).
pub fn run() {
    if DEBUG_REGS.load(Ordering::Relaxed) {
        check_debug_regs();
    }
    if FLAGS.load(Ordering::Relaxed) {
        run_sequence();
    }
}

/// Runs the sequence once, with the legacy PIC masked.
#[inline(never)]
fn run_sequence() {
    let (master, slave) = (pic_mask(0x21), pic_mask(0xA1));
    set_pic_mask(0x21, 0xff);
    set_pic_mask(0xA1, 0xff);
    // SAFETY: the sequence above changes only rax, rcx and the arithmetic
    // flags (restored with the rest of RFLAGS), and leaves the stack as it
    // found it; no interrupt can arrive while it sets IF (PIC masked).
    unsafe { ukdemo_flags_run() };
    set_pic_mask(0xA1, slave);
    set_pic_mask(0x21, master);
}
