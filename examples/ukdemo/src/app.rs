//! The application: a loop that calls [`tick`] once per iteration, counts the
//! calls in [`TICKS`] and prints one numbered console line per iteration at a
//! steady rate. It runs with interrupts enabled. While it waits for the next
//! line it polls the debug stub and then sleeps with `sti; hlt` until the
//! next timer tick (1 ms), so a debugger's Ctrl-C stops it within a tick;
//! the timer handler polls too, for when the application is busy. The
//! network stack (the HTTP server, [`crate::net`]) is polled from this loop
//! as well, before every poll of the stub and between lines when busy.

use crate::{cpu, println, pvh, time, timer};
use core::ptr::{addr_of, addr_of_mut};

/// How many times `tick` ran. Read and written volatile, so a debugger's
/// `set var ukdemo::app::TICKS = ...` shows in the next console line.
pub static mut TICKS: u64 = 0;

/// Iteration at which `tick` panics (`ukdemo.panic=N`), or `u64::MAX`.
static mut PANIC_AT: u64 = u64::MAX;
/// Iteration at which `tick` writes through a null pointer (`ukdemo.fault=N`).
static mut FAULT_AT: u64 = u64::MAX;
/// Iteration at which `tick` divides by zero (`ukdemo.div0=N`).
static mut DIV0_AT: u64 = u64::MAX;
/// Whether [`busy_until`] polls the network (a NIC is up). A plain static,
/// read without a call, so that a stop in the busy loop shows only
/// `busy_until` and what it inlines from `time`.
static mut BUSY_NET: bool = false;
/// Iteration at which `tick` stops in the debugger with
/// `ukdb_stub::breakpoint()` (`ukdemo.break=N`).
static mut BREAK_AT: u64 = u64::MAX;

/// [`TICKS`], read as a debugger may have left it.
pub fn ticks() -> u64 {
    // SAFETY: single CPU, no interrupt handler touches TICKS; volatile because a
    // debugger may change it while the program is stopped.
    unsafe { addr_of!(TICKS).read_volatile() }
}

/// One unit of work: counts itself and honours the panic and fault options.
#[inline(never)]
pub fn tick(n: u64) {
    let t = ticks() + 1;
    // SAFETY: as in `ticks`.
    unsafe { addr_of_mut!(TICKS).write_volatile(t) };
    // SAFETY: written once before the loop starts.
    let (panic_at, fault_at) = unsafe { (PANIC_AT, FAULT_AT) };
    if n == panic_at {
        panic!("tick {} asked to panic", n);
    }
    if n == fault_at {
        // SAFETY: none: this write faults on purpose (page 0 is not mapped),
        // to show a page fault stopping in the debugger.
        unsafe { core::ptr::null_mut::<u64>().write_volatile(n) };
    }
    // SAFETY: written once before the loop starts.
    if n == unsafe { DIV0_AT } {
        // A `div` by zero: a #DE (Rust's `/` would panic first).
        // SAFETY: the divide error is the point (like `ukdemo.fault`);
        // `div` touches only the registers named.
        unsafe {
            core::arch::asm!("div {d}", d = in(reg) 0u64, inout("rax") n => _, inout("rdx") 0u64 => _, options(nomem, nostack))
        };
    }
    // SAFETY: written once before the loop starts.
    if n == unsafe { BREAK_AT } {
        ukdb_stub::breakpoint();
    }
}

/// Computes (spins) until the TSC reaches `until`, without polling the stub
/// or halting: with `ukdemo.busy`, only the timer interrupt's poll can
/// notice a debugger.
#[inline(never)]
fn busy_until(until: u64) {
    // SAFETY: written once before the loop starts.
    let net = unsafe { BUSY_NET };
    let mut next_net = 0;
    while time::rdtsc() < until {
        if net && time::rdtsc() >= next_net {
            crate::net::poll();
            next_net = time::rdtsc() + time::tsc_hz() / 1000;
        }
        core::hint::spin_loop();
    }
}

fn option_u64(key: &str) -> Option<u64> {
    pvh::option(key)?.parse().ok()
}

/// Runs forever.
pub fn run() -> ! {
    let rate = option_u64("ukdemo.rate").filter(|&r| r > 0).unwrap_or(10);
    // SAFETY: written before the loop, read only by `tick`.
    unsafe {
        PANIC_AT = option_u64("ukdemo.panic").unwrap_or(u64::MAX);
        FAULT_AT = option_u64("ukdemo.fault").unwrap_or(u64::MAX);
        BREAK_AT = option_u64("ukdemo.break").unwrap_or(u64::MAX);
        DIV0_AT = option_u64("ukdemo.div0").unwrap_or(u64::MAX);
        BUSY_NET = crate::net::up();
    }
    let period = time::tsc_hz() / rate;
    let timer_running = timer::running();
    let busy = pvh::cmdline().split_ascii_whitespace().any(|w| w == "ukdemo.busy");
    let mut next = time::rdtsc();
    let mut n: u64 = 0;
    let flags = crate::flags::setup();
    loop {
        if flags {
            crate::flags::run();
        }
        tick(n);
        println!("line {} ticks {}", n, ticks());
        n += 1;
        next += period;
        let now = time::rdtsc();
        if now > next + period {
            // We were stopped (in a debugger): restart the cadence from now
            // rather than printing a burst of lines to catch up.
            next = now;
        }
        if busy {
            busy_until(next);
            continue;
        }
        // Poll before every `hlt` (the UART raises no interrupt: bytes that
        // arrived while the line was printed would otherwise wait for the
        // timer), then sleep until the next tick. The timer handler leaves
        // polling to this loop when it woke the `hlt`, so an idle stop lands
        // here, in the application.
        crate::net::poll();
        ukdb_stub::poll();
        while time::rdtsc() < next {
            if timer_running {
                cpu::wait_for_interrupt();
            }
            crate::net::poll();
            ukdb_stub::poll();
        }
    }
}
