//! The IDT, built with the `x86_64` crate. Every exception the crate exposes
//! points at its assembly entry (`entry.rs`) through `set_handler_addr`,
//! which takes a plain address; the crate's typed `set_handler_fn` would
//! need `extern "x86-interrupt"` handlers, which cannot hand the stub a
//! register frame.
//!
//! Vectors the crate does not expose stay not present: 9 (coprocessor
//! segment overrun, never raised by x86_64 CPUs) and the reserved 15,
//! 22-27 and 31. If one of them fired anyway, the CPU would raise #NP
//! (vector 11, error code `vector * 8 + 2`), which the stub reports.
//!
//! Every gate is an interrupt gate (the crate's default: IF cleared on
//! entry), so no interrupt can arrive while the stub runs.

use crate::entry::{exception_entry, timer_entry};
use core::ptr::{addr_of, addr_of_mut};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

/// The timer's vector: the 8259 PIC's IRQ 0 remapped to 32, as blog_os
/// does with the `pic8259` crate.
pub const TIMER_VECTOR: u8 = 32;

static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

/// Fills and loads the IDT. Call once, with interrupts disabled, after
/// `gdt::init` (the gates take the current CS) and before `ukdb_stub::init`.
pub fn init() {
    // SAFETY: single-threaded boot with interrupts disabled: nothing else
    // references IDT while it is filled, and it is never written after
    // `load`. Each address is the assembly entry for exactly that vector,
    // which handles the CPU's frame for it (with or without error code);
    // the double fault's IST slot holds a stack (`gdt::init`).
    unsafe {
        let idt = &mut *addr_of_mut!(IDT);
        let at = |vector| VirtAddr::new(exception_entry(vector));
        idt.divide_error.set_handler_addr(at(0));
        idt.debug.set_handler_addr(at(1));
        idt.non_maskable_interrupt.set_handler_addr(at(2));
        idt.breakpoint.set_handler_addr(at(3));
        idt.overflow.set_handler_addr(at(4));
        idt.bound_range_exceeded.set_handler_addr(at(5));
        idt.invalid_opcode.set_handler_addr(at(6));
        idt.device_not_available.set_handler_addr(at(7));
        idt.double_fault
            .set_handler_addr(at(8))
            .set_stack_index(crate::gdt::DOUBLE_FAULT_IST_INDEX);
        idt.invalid_tss.set_handler_addr(at(10));
        idt.segment_not_present.set_handler_addr(at(11));
        idt.stack_segment_fault.set_handler_addr(at(12));
        idt.general_protection_fault.set_handler_addr(at(13));
        idt.page_fault.set_handler_addr(at(14));
        idt.x87_floating_point.set_handler_addr(at(16));
        idt.alignment_check.set_handler_addr(at(17));
        idt.machine_check.set_handler_addr(at(18));
        idt.simd_floating_point.set_handler_addr(at(19));
        idt.virtualization.set_handler_addr(at(20));
        idt.cp_protection_exception.set_handler_addr(at(21));
        idt.hv_injection_exception.set_handler_addr(at(28));
        idt.vmm_communication_exception.set_handler_addr(at(29));
        idt.security_exception.set_handler_addr(at(30));
        idt[TIMER_VECTOR].set_handler_addr(VirtAddr::new(timer_entry()));
        (*addr_of!(IDT)).load();
    }
}
