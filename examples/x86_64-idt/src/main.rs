//! How to integrate ukdb-stub into a kernel built on the `x86_64` crate, the
//! shape of the blog_os kernel: an IDT from `x86_64::structures::idt` whose
//! exception gates point at assembly entries (`entry.rs`, `idt.rs`), a
//! double fault on its own stack (`gdt.rs`), SSE
//! enabled for the stub's `fxsave` (`cpu.rs`), `poll` from the timer and
//! before every `hlt` (`kernel_main`, `entry::timer_tick`).
//!
//! CI compiles and lints it for x86_64-unknown-none (scripts/test.sh); it is
//! not booted. docs/debugging.md quotes it.
#![no_std]
#![no_main]

mod cpu;
mod entry;
mod gdt;
mod idt;
mod pic;

use x86_64::instructions::interrupts;

/// Where this kernel maps physical memory (its page tables included).
const PHYSICAL_MEMORY_OFFSET: u64 = 0;

/// The kernel's entry. A kernel loaded by the `bootloader` crate has
/// `entry_point!(kernel_main)` instead and gets `&'static mut BootInfo`.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    kernel_main()
}

fn kernel_main() -> ! {
    cpu::enable_sse();
    gdt::init();
    idt::init();
    // SAFETY: COM1 is this kernel's console and debug line: nothing else
    // drives it, and the console writes through `ukdb_stub::console_write`.
    let com1 = unsafe { ukdb_stub::Uart16550::new(ukdb_stub::COM1_BASE) };
    // A kernel loaded by the `bootloader` crate passes
    // `boot_info.physical_memory_offset` here (docs/debugging.md); this one
    // identity-maps its page tables, so the offset is 0.
    let config = ukdb_stub::Config::new().phys_offset(PHYSICAL_MEMORY_OFFSET);
    ukdb_stub::init_with(com1, config);
    ukdb_stub::wait_for_debugger();
    // The idle loop: poll before every `hlt`. With interrupts disabled
    // between the poll and the `hlt` (`enable_and_hlt` is `sti; hlt`, and
    // `sti` takes effect after the next instruction), no tick is lost; the
    // timer handler polls as well, for when the kernel is busy.
    loop {
        interrupts::disable();
        ukdb_stub::poll();
        interrupts::enable_and_hlt();
    }
}

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        interrupts::disable();
        x86_64::instructions::hlt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    ukdb_stub::on_panic(info);
    halt()
}
