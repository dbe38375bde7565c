//! ukdemo: a small PVH unikernel that embeds the ukdb debug stub.
//!
//! Boot: [`boot`] (32-bit PVH entry, long mode) → [`kmain`]: console (with
//! its loopback self-test), command line, page tables, IDT, legacy PICs
//! remapped and masked, time base, debug stub, periodic timer, interrupts on
//! → [`app::run`], which never returns.
//!
//! Command line (QEMU `-append`):
//! - `ukdemo.rate=HZ`: console lines per second (default 10);
//! - `ukdemo.panic=N`: panic in the N-th call of `tick`;
//! - `ukdemo.fault=N`: write through a null pointer in the N-th call of `tick`;
//! - `ukdemo.break=N`: stop in the debugger (`ukdb_stub::breakpoint()`) in the
//!   N-th call of `tick`;
//! - `ukdemo.busy`: spin between lines instead of polling and halting, so
//!   that only the timer interrupt's poll notices a debugger;
//! - `ukdemo.flags`: run the RFLAGS sequence of [`flags`] in every iteration;
//! - `ukdemo.dr`: arm a debug register of the app's own and check it in
//!   every iteration (see [`flags`]);
//! - `ukdb.*`: options of the debug stub (see docs/debugging.md).
#![no_std]
#![no_main]

mod apic;
mod app;
mod boot;
mod cpu;
mod flags;
mod idt;
mod paging;
mod pic;
mod port;
mod pvh;
mod serial;
mod time;
mod timer;

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
    let serial = serial::init();
    if let Err(failed) = serial {
        println!("ukdemo: {}", failed);
    }
    // SAFETY: start_info is what the PVH loader passed; called once, first.
    unsafe { pvh::init(start_info) };
    paging::init();
    idt::init();
    pic::remap_and_mask();
    let tsc = time::init();
    // SAFETY: COM1 is this unikernel's console line; once the stub has it,
    // the console writes only through `ukdb_stub::console_write`.
    let com1 = unsafe { ukdb_stub::Uart16550::new(ukdb_stub::COM1_BASE) };
    ukdb_stub::init(com1, pvh::cmdline());
    println!(
        "ukdemo: booted, stub {}, tsc {} MHz, cmdline '{}'",
        if ukdb_stub::ENABLED { "enabled" } else { "absent" },
        time::tsc_hz() / 1_000_000,
        pvh::cmdline()
    );
    match timer::start() {
        Ok(()) => {
            println!("ukdemo: timer: local APIC at {} Hz (tsc rate from {})", timer::HZ, tsc.name())
        }
        Err(e) => println!("ukdemo: no timer ({}): polling without hlt", e.reason()),
    }
    cpu::enable_interrupts();
    ukdb_stub::wait_for_debugger();
    app::run()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("ukdemo: {}", info);
    ukdb_stub::on_panic(info);
    halt()
}
