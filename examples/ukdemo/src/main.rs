//! ukdemo: a small PVH unikernel that embeds the ukdb debug stub.
//!
//! Boot: [`boot`] (32-bit PVH entry, long mode) → [`kmain`]: console, command
//! line, page tables, IDT, time base, debug stub → [`app::run`], which never
//! returns.
//!
//! Command line (QEMU `-append`):
//! - `ukdemo.rate=HZ`: console lines per second (default 10);
//! - `ukdemo.panic=N`: panic in the N-th call of `tick`;
//! - `ukdemo.fault=N`: write through a null pointer in the N-th call of `tick`;
//! - `ukdemo.flags`: run the RFLAGS sequence of [`flags`] in every iteration;
//! - `ukdemo.dr`: arm a debug register of the app's own and check it in
//!   every iteration (see [`flags`]);
//! - `ukdb.*`: options of the debug stub (see docs/debugging.md).
#![no_std]
#![no_main]

mod app;
mod boot;
mod flags;
mod idt;
mod paging;
mod port;
mod pvh;
mod serial;
mod time;

/// Stops the CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Rust entry, called by the boot code with the physical address of
/// `hvm_start_info`.
#[no_mangle]
extern "C" fn kmain(start_info: u64) -> ! {
    serial::init();
    // SAFETY: start_info is what the PVH loader passed; called once, first.
    unsafe { pvh::init(start_info) };
    paging::init();
    idt::init();
    time::init();
    ukdb_stub::init(ukdb_stub::Uart16550::COM1, pvh::cmdline());
    println!(
        "ukdemo: booted, stub {}, tsc {} MHz, cmdline '{}'",
        if ukdb_stub::ENABLED { "enabled" } else { "absent" },
        time::tsc_hz() / 1_000_000,
        pvh::cmdline()
    );
    ukdb_stub::wait_for_debugger();
    app::run()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("ukdemo: {}", info);
    ukdb_stub::on_panic(info);
    halt()
}
