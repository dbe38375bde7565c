//! The public entry points (feature `enabled`). The no-op build in
//! `noop.rs` has the same signatures.

use super::session::{self, Why};
use super::target::mem::{check_layout, check_platform};
use super::{line, stack, transport};
use crate::config::Config;
use crate::entry::soft_entry;
use crate::global::Global;
use crate::link::Transport;
use crate::TrapFrame;

pub use super::session::Buffers;
pub use super::transport::{Uart16550, COM1_BASE, INLINE_TRANSPORT_BYTES};

/// Writes a stub message to the console, if the console shares the line.
pub(crate) fn say(parts: &[&str]) {
    let mut bytes: [&[u8]; 8] = [&[]; 8];
    for (slot, part) in bytes.iter_mut().zip(parts) {
        *slot = part.as_bytes();
    }
    line::say(&bytes);
}

/// Starts the stub on `transport`, with the `ukdb.*` options of `cmdline`
/// (see docs/debugging.md: `ukdb.wait`, `ukdb.trap=int3|ud`, `ukdb.off`).
/// Call once, after the IDT routes exceptions to [`handle_trap`] and before
/// [`wait_for_debugger`]. The transport is kept in a static slot of
/// [`INLINE_TRANSPORT_BYTES`] (checked when compiling); a larger one is
/// kept by the unikernel and handed over with [`init_static`].
///
/// ```ignore
/// // SAFETY: COM1 is this unikernel's console and debug line, driven by nothing else.
/// ukdb_stub::init(unsafe { ukdb_stub::Uart16550::new(ukdb_stub::COM1_BASE) }, cmdline);
/// ```
pub fn init<T: Transport + 'static>(transport: T, cmdline: &str) {
    crate::info::keep_cmdline(cmdline);
    let (config, bad) = Config::from_cmdline(cmdline);
    init_with_bad(transport, config, bad.map(|b| b.0));
}

/// [`init`] with a [`Config`] built in code (kernels without a command
/// line, or a physical-memory offset: see docs/debugging.md). Options on a
/// command line can still be merged with [`Config::with_cmdline`].
pub fn init_with<T: Transport + 'static>(transport: T, config: Config) {
    init_with_bad(transport, config, None);
}

fn init_with_bad<T: Transport + 'static>(transport: T, config: Config, bad: Option<&str>) {
    if config.off {
        return;
    }
    match transport::store(transport) {
        Some(t) => start(t, config, bad),
        None => say(&["ukdb: init called twice; the stub keeps its first transport\n"]),
    }
}

/// [`init`] with a transport that the unikernel keeps in a static of its
/// own (any size), and its own packet buffers (`N` is the `PacketSize`
/// debuggers are told).
pub fn init_static<const N: usize>(
    transport: &'static mut dyn Transport,
    config: Config,
    buffers: &'static mut Buffers<N>,
) {
    if !config.off {
        start_with(transport, config, None, buffers);
    }
}

fn start(transport: &'static mut dyn Transport, config: Config, bad: Option<&str>) {
    static BUFFERS: Global<Buffers<{ session::PACKET_SIZE }>> = Global::new(Buffers::new());
    // Taken once and never given back: the guard is leaked on purpose.
    let Some(buffers) = BUFFERS.lock() else {
        say(&["ukdb: init called twice; the stub keeps its first transport\n"]);
        return;
    };
    start_with(transport, config, bad, buffers.leak());
}

fn start_with<const N: usize>(
    transport: &'static mut dyn Transport,
    config: Config,
    bad: Option<&str>,
    buffers: &'static mut Buffers<N>,
) {
    // The checks come first: a stub that cannot work says why on the
    // console and does not announce itself to a bridge.
    let refused = check_platform().err().map(|e| e.message());
    let refused = refused.or_else(|| check_layout(config.phys_offset).err().map(|e| e.message()));
    let name = transport.name();
    let hello = refused.is_none();
    if line::install(transport, hello).is_err() {
        say(&["ukdb: init called twice; the stub keeps its first transport\n"]);
        return;
    }
    if let Some(why) = refused {
        say(&["ukdb: stub not started: ", why, "\n"]);
        return;
    }
    stack::paint();
    if !session::init(config, buffers) {
        say(&["ukdb: init called twice; the stub keeps its first transport\n"]);
        return;
    }
    crate::crash::configure(&config);
    let trap = match config.trap {
        crate::config::TrapInsn::Int3 => "int3",
        crate::config::TrapInsn::Ud => "ud",
    };
    say(&["ukdb: stub ready on ", name, ", breakpoints use ", trap, "\n"]);
    if let Some(bad) = bad {
        say(&["ukdb: ignoring unknown option '", bad, "'\n"]);
    }
}

/// Offers an exception to the debugger. Call it first in the handler of
/// every vector 0-31 with the frame the entry code saved. Returns `true` when
/// the stub handled it: the handler then returns and the entry code restores
/// the (possibly changed) frame and executes `iretq`. Returns `false` when the
/// unikernel should handle it (stub not started, NMI, machine check, or a
/// trap inside the stub itself).
pub fn handle_trap(frame: &mut TrapFrame) -> bool {
    session::on_trap(frame)
}

/// Lets the stub notice a debugger while the unikernel runs: a Ctrl-C, a new
/// debugger connecting, or the bridge's control bytes. Call it from the idle
/// loop or a timer; it costs one status-register read when nothing waits,
/// and takes no lock.
#[inline]
pub fn poll() {
    if line::has_input() {
        soft_entry(Why::Poll as u64);
    }
}

/// With `ukdb.wait` on the command line, stops here until a debugger
/// attaches and continues. Call it just before the application starts.
pub fn wait_for_debugger() {
    if session::wants_wait() {
        say(&["ukdb: waiting for a debugger (ukdb.wait)\n"]);
        soft_entry(Why::Wait as u64);
    }
}

/// Stops into the debugger with the panic message (sent to gdb, kept for
/// `monitor why`). Call it from the panic handler. It returns only when the
/// stub is not running; otherwise every `continue` stops here again, and a
/// new debugger can attach at any time.
pub fn on_panic(info: &core::panic::PanicInfo<'_>) {
    if !session::record_panic(info) {
        return;
    }
    loop {
        soft_entry(Why::Panic as u64);
    }
}

/// Writes console text. On a channel shared with the console the stub
/// writes it (framed when the bridge asked for framing) and returns `true`;
/// otherwise (no stub, or another transport) it returns `false` and the
/// unikernel writes the bytes itself. The text goes into a lock-free ring
/// first, so a trap anywhere in this path can be served; do not call it
/// from an NMI handler.
pub fn console_write(bytes: &[u8]) -> bool {
    line::console_write(bytes)
}

/// Stops into the debugger here, like a compiled-in breakpoint (kgdb's
/// `kgdb_breakpoint`). Does nothing when the stub is not running.
pub fn breakpoint() {
    if session::is_running() {
        soft_entry(Why::Break as u64);
    }
}

/// Starts the stub on a NIC the unikernel lends (shared) or gives it
/// (dedicated), with the `ukdb.net=`, `ukdb.port=` and other `ukdb.*`
/// options of `cmdline`: RSP over TCP, gdb and lldb connect straight to
/// it. `false`: not started (a bad option, no address, or built without
/// the `net` feature); the reason is on the console (see [`set_console`]).
/// Call it instead of [`init`], once, before the unikernel's receive path
/// calls [`net_claim`]. With `ukdb.net=dhcp` (the default) it asks DHCP
/// synchronously (about 5 s at most), taking the DHCP replies from the NIC
/// and handing every other frame back with `Nic::not_mine`. On success the
/// console says `ukdb: stub ready on NIC IP:PORT (dhcp|static), ...`.
/// Debuggers are told `PacketSize=10000` (64 KiB: a 32 KiB memory read per
/// round trip). Pass the TSC rate with [`Config::tsc_hz`] through
/// [`init_net_with`] when the kernel knows it (CPUID often does not).
pub fn init_net(nic: &'static mut dyn crate::Nic, cmdline: &str) -> bool {
    crate::info::keep_cmdline(cmdline);
    let (config, bad) = Config::from_cmdline(cmdline);
    super::net_api::init_net(nic, config, bad.map(|b| b.0))
}

/// [`init_net`] with a [`Config`] built in code.
pub fn init_net_with(nic: &'static mut dyn crate::Nic, config: Config) -> bool {
    super::net_api::init_net(nic, config, None)
}

/// Starts the stub on a virtio-net device that it drives alone: the one
/// `ukdb.nic=` names on `cmdline` (`pci:BUS:DEV.FN` or `mmio:ADDR`), or
/// else the first it finds (PCI, then `virtio_mmio.device=` entries).
/// `false`: not started; the reason is on the console.
pub fn init_net_dedicated(cmdline: &str) -> bool {
    crate::info::keep_cmdline(cmdline);
    super::net_api::init_net_dedicated(cmdline)
}

/// A shared NIC's receive path offers every frame it receives while the
/// unikernel runs: `true` when the frame is the stub's (TCP to its port),
/// which keeps a copy and stops the world at the next [`poll`]; ARP
/// frames are copied and left to the unikernel too (`false`).
#[inline]
pub fn net_claim(frame: &[u8]) -> bool {
    super::net_api::net_claim(frame)
}

/// Where the stub writes its own messages when its channel does not carry
/// the console (the network): the unikernel's raw console write.
pub fn set_console(write: fn(&[u8])) {
    line::set_console(write);
}
