//! A GDT with a TSS, so that the double fault runs on a stack of its own
//! (interrupt stack table entry [`DOUBLE_FAULT_IST_INDEX`]), as blog_os does.
//!
//! The stub serves a stop on its own stack and needs from the interrupted
//! one only the trap frame the entry pushes. A stack overflow, though,
//! faults again while the CPU pushes the page fault's frame: without an IST
//! stack that becomes a triple fault (a reset), with one it is a double
//! fault that reaches the stub, and gdb shows where the stack ran out.

use core::ptr::{addr_of, addr_of_mut};
use x86_64::instructions::segmentation::{Segment, CS, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// The IST slot of the double fault's stack (`set_stack_index` in `idt.rs`).
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;
/// The double fault's stack: the entry's frame and the call into the stub,
/// which then switches to its own stack.
const DOUBLE_FAULT_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; DOUBLE_FAULT_STACK_BYTES]);

static mut DOUBLE_FAULT_STACK: Stack = Stack([0; DOUBLE_FAULT_STACK_BYTES]);
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

/// Loads the GDT and the TSS and reloads CS and SS. Call once, first, with
/// interrupts disabled (the IDT's gates take CS from here).
pub fn init() {
    // SAFETY: single-threaded boot with interrupts disabled: TSS and GDT are
    // written before they are loaded and never again, and the stack is used
    // only by the CPU, through the IST. The selectors loaded into CS and SS
    // are the 64-bit code and data segments of the GDT just loaded, and the
    // TSS descriptor points at the TSS above.
    unsafe {
        let top =
            VirtAddr::from_ptr(addr_of!(DOUBLE_FAULT_STACK)) + DOUBLE_FAULT_STACK_BYTES as u64;
        (*addr_of_mut!(TSS)).interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] = top;
        let gdt = &mut *addr_of_mut!(GDT);
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(&*addr_of!(TSS)));
        (*addr_of!(GDT)).load();
        CS::set_reg(code);
        SS::set_reg(data);
        load_tss(tss);
    }
}
