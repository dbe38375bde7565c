//! The IDT. Exceptions (vectors 0-31) save the full register state into a
//! [`TrapFrame`] and hand it to [`trap_dispatch`], which offers it to the
//! debug stub first. Interrupts (vectors 32-255) save the registers the C
//! ABI lets a call clobber and go to [`irq_dispatch`]: the stub never sees
//! them (it handles vectors 0-31 only); the timer handler calls
//! `ukdb_stub::poll` instead.

use core::arch::{asm, global_asm};
use core::ptr::addr_of;
use ukdb_stub::{TrapFrame, TRAP_FRAME_SIZE};

// One entry stub per vector: push a zero error code where the CPU pushes none,
// push the vector, and join the common path, which saves the general-purpose
// registers in TrapFrame order, calls `trap_dispatch(frame)` on a 16-byte
// aligned stack, restores them (with whatever the debugger changed) and irets.
macro_rules! vectors {
    ($($v:literal $err:literal),* $(,)?) => {
        global_asm!(
            concat!($(
                ".section .text.trap, \"ax\"\n",
                ".p2align 4\n",
                "trap_vector_", stringify!($v), ":\n",
                ".if ", stringify!($err), " == 0\n push 0\n .endif\n",
                "push ", stringify!($v), "\n",
                "jmp trap_common\n",
            )*),
            ".section .rodata.trap_table, \"a\"\n",
            ".p2align 3\n",
            "trap_vector_table:\n",
            $(concat!(".quad trap_vector_", stringify!($v), "\n"),)*
        );
    };
}

vectors!(
    0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1, 15 0,
    16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1, 30 1, 31 0,
);

global_asm!(
    r#"
    .section .text.trap, "ax"
    .p2align 4
trap_common:
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
    call trap_dispatch
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

// One entry per interrupt vector 32-255, 16 bytes apart (so the IDT can
// compute the address): push the vector and join `irq_common`, which saves
// the caller-saved registers and calls `irq_dispatch(vector, rip)` with the
// interrupted instruction pointer. The CFI marks `irq_common` as a signal
// frame whose caller's rip and rsp are in the hardware frame, so gdb and
// lldb unwind from a stop in a handler into the interrupted code.
global_asm!(
    r#"
    .section .text.irq, "ax"
    .p2align 4
    .global irq_vector_32
irq_vector_32:
    .set irq_vector, 32
    .rept 224
    .p2align 4
    /* push imm32 (0x68): the vector, written as bytes because Intel
       syntax would read a bare symbol as a memory operand. */
    .byte 0x68
    .long irq_vector
    jmp irq_common
    .set irq_vector, irq_vector + 1
    .endr

    .p2align 4
irq_common:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa rsp, 48
    .cfi_offset rip, -40
    .cfi_offset rsp, -16
    push rax
    .cfi_adjust_cfa_offset 8
    push rcx
    .cfi_adjust_cfa_offset 8
    push rdx
    .cfi_adjust_cfa_offset 8
    push rsi
    .cfi_adjust_cfa_offset 8
    push rdi
    .cfi_adjust_cfa_offset 8
    push r8
    .cfi_adjust_cfa_offset 8
    push r9
    .cfi_adjust_cfa_offset 8
    push r10
    .cfi_adjust_cfa_offset 8
    push r11
    .cfi_adjust_cfa_offset 8
    /* 15 quadwords below the 16-byte aligned hardware frame: align. */
    sub rsp, 8
    .cfi_adjust_cfa_offset 8
    mov rdi, [rsp + 80]
    mov rsi, [rsp + 88]
    cld
    call irq_dispatch
    add rsp, 8
    .cfi_adjust_cfa_offset -8
    pop r11
    .cfi_adjust_cfa_offset -8
    pop r10
    .cfi_adjust_cfa_offset -8
    pop r9
    .cfi_adjust_cfa_offset -8
    pop r8
    .cfi_adjust_cfa_offset -8
    pop rdi
    .cfi_adjust_cfa_offset -8
    pop rsi
    .cfi_adjust_cfa_offset -8
    pop rdx
    .cfi_adjust_cfa_offset -8
    pop rcx
    .cfi_adjust_cfa_offset -8
    pop rax
    .cfi_adjust_cfa_offset -8
    add rsp, 8
    .cfi_adjust_cfa_offset -8
    iretq
    .cfi_endproc
    "#
);

/// Distance between two interrupt entries in the assembly above.
const IRQ_ENTRY_SIZE: u64 = 16;
/// Number of interrupt vectors (32-255).
const IRQ_VECTORS: usize = 256 - 32;

// The frame the assembly builds is exactly TrapFrame: 15 registers, vector,
// error code and the 5-word hardware frame.
const _: () = assert!(TRAP_FRAME_SIZE == (15 + 2 + 5) * 8);

extern "C" {
    static trap_vector_table: [u64; 32];
    static irq_vector_32: u8;
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// A present 64-bit interrupt gate (IF cleared on entry) to `handler`.
    const fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: 0x08,
            ist: 0,
            attributes: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

static mut IDT: [Gate; 256] = [Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256];

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fills and loads the IDT: interrupt gates (IF cleared on entry) for all
/// 256 vectors, so that no interrupt can find a missing gate.
pub fn init() {
    // SAFETY: single-threaded boot, interrupts disabled; the IDT is written
    // before it is loaded and never again; trap_vector_table and the
    // interrupt entries are what the assembly above defines.
    unsafe {
        let table = &*addr_of!(trap_vector_table);
        let irq_base = addr_of!(irq_vector_32) as u64;
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let (exceptions, interrupts) = idt.split_at_mut(32);
        for (gate, &handler) in exceptions.iter_mut().zip(table.iter()) {
            *gate = Gate::interrupt(handler);
        }
        for (i, gate) in interrupts.iter_mut().enumerate().take(IRQ_VECTORS) {
            *gate = Gate::interrupt(irq_base + i as u64 * IRQ_ENTRY_SIZE);
        }
        let ptr = Pointer {
            limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
            base: addr_of!(IDT) as u64,
        };
        asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if ukdb_stub::handle_trap(frame) {
        return;
    }
    let name = ukdb_stub::vectors::name(frame.vector);
    crate::println!(
        "fatal: {} (vector {}, error {:#x}) at rip {:#x}, rsp {:#x}",
        name,
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.rsp
    );
    crate::halt();
}

/// Interrupts (vectors 32-255), with interrupts disabled: `rip` is where the
/// interrupt came in.
#[no_mangle]
extern "C" fn irq_dispatch(vector: u64, rip: u64) {
    match u8::try_from(vector) {
        Ok(crate::timer::VECTOR) => crate::timer::on_interrupt(rip),
        // The APIC's spurious vector: no EOI.
        Ok(crate::apic::SPURIOUS_VECTOR) => {}
        Ok(v) if (crate::pic::BASE..crate::pic::BASE + 16).contains(&v) => crate::pic::on_vector(v),
        _ => {
            crate::println!("ukdemo: unexpected interrupt vector {} at rip {:#x}", vector, rip);
            crate::timer::eoi();
        }
    }
}
