//! The API with the `dump` feature and without `enabled`: crash dumps only,
//! for production images. No debugger session, no gdbstub, no breakpoints,
//! no memory writes, no resume, and nothing on the line until a crash (no
//! hello: a bridge or debugger finds no stub). With `ukdb.crash=dump` a
//! panic ([`on_panic`]) or a fatal exception offered to [`handle_trap`]
//! streams a core over the transport given to [`init`] (see
//! `crate::crash`); then `then=halt` halts, `then=reboot` resets, and
//! `then=wait` (the default) returns to the unikernel's own handling.
//! The signatures are the full stub's, so a unikernel needs no `cfg`.

use crate::crash::{self, Cause, Channel, Text};
use crate::entry::{soft_entry, Why};
use crate::global::{Global, SetOnce};
use crate::link::Transport;
use crate::{arch, Nic, TrapFrame};

pub use crate::config::{BadOption, Config, Crash, NetMode, Then, TrapInsn};
pub use crate::transport::{Uart16550, COM1_BASE, INLINE_TRANSPORT_BYTES};

/// The transport a crash stream goes out on.
static LINE: Global<Option<&'static mut dyn Transport>> = Global::new(None);
/// Where the stub's messages go without a transport of its own (a NIC was
/// offered: see [`init_net`]).
static CONSOLE_HOOK: SetOnce<fn(&[u8])> = SetOnce::new();
/// The panic message with its location, kept for the core.
static PANIC: Global<Text<256>> = Global::new(Text::new());

/// The stub's packet buffers (dump-only build: no session, no bytes).
#[derive(Debug, Default)]
pub struct Buffers<const N: usize>;

impl<const N: usize> Buffers<N> {
    /// Nothing (for a `static`).
    pub const fn new() -> Self {
        Buffers
    }
}

/// Keeps `transport` for crash dumps and reads the `ukdb.*` options of
/// `cmdline` (`ukdb.crash=dump[,then=...]`). The transport is touched only
/// when `ukdb.crash=dump` is on (its `init` at once, then nothing until a
/// crash).
pub fn init<T: Transport + 'static>(transport: T, cmdline: &str) {
    crate::info::keep_cmdline(cmdline);
    let (config, bad) = Config::from_cmdline(cmdline);
    if let Some(t) = crate::transport::store(transport) {
        start(t, config, bad.map(|b| b.0));
    }
}

/// [`init`] with a [`Config`] built in code.
pub fn init_with<T: Transport + 'static>(transport: T, config: Config) {
    if let Some(t) = crate::transport::store(transport) {
        start(t, config, None);
    }
}

/// [`init`] with a transport that the unikernel keeps in a static of its
/// own (the buffers are not needed: no session).
pub fn init_static<const N: usize>(
    transport: &'static mut dyn Transport,
    config: Config,
    _buffers: &'static mut Buffers<N>,
) {
    start(transport, config, None);
}

fn start(transport: &'static mut dyn Transport, config: Config, bad: Option<&str>) {
    if config.off || config.crash == Crash::Off {
        return;
    }
    let Some(mut line) = LINE.lock() else { return };
    if line.is_some() {
        return;
    }
    transport.init();
    let name = transport.name();
    let line = line.insert(transport);
    crash::configure(&config);
    let mut say = |parts: &[&str]| {
        for part in parts {
            line.write(part.as_bytes());
        }
        line.flush();
    };
    say(&["ukdb: crash dumps on ", name, " (dump-only stub)\n"]);
    if let Some(bad) = bad {
        say(&["ukdb: ignoring unknown option '", bad, "'\n"]);
    }
}

/// With `ukdb.crash=dump`, a fatal exception (not #DB, #BP, NMI or a
/// machine check) streams a core, then halts, resets, or (`then=wait`)
/// returns `false` so that the unikernel's own handler runs. Always
/// `false` otherwise, except for a fault in the dump's own guarded reads
/// of page tables (resumed at its fix-up: `true`). Call it first in the
/// handler of every vector 0-31.
pub fn handle_trap(frame: &mut TrapFrame) -> bool {
    if let Some(fixup) = arch::probe_fixup(frame.vector, frame.rip) {
        frame.rip = fixup;
        return true;
    }
    if crash::fatal(frame.vector) && crash::armed() {
        let cr2 = arch::cr2();
        crash::on_crash(frame, Cause::Exception { cr2 }, &mut Line);
    }
    false
}

/// Does nothing (no debugger can attach).
#[inline(always)]
pub fn poll() {}

/// Returns at once (no debugger can attach).
#[inline(always)]
pub fn wait_for_debugger() {}

/// With `ukdb.crash=dump`, streams a core with the panic message and the
/// registers of the caller, then halts, resets, or returns (`then=wait`)
/// so the panic handler goes on.
pub fn on_panic(info: &core::panic::PanicInfo<'_>) {
    if !crash::armed() {
        return;
    }
    {
        let Some(mut text) = PANIC.lock() else { return };
        let mut message = Text::<256>::new();
        let _ = core::fmt::write(&mut message, format_args!("{}", info));
        *text = message;
    }
    soft_entry(Why::Panic as u64);
}

/// The soft entry's handler (see `crate::entry`): a panic's core.
pub(crate) fn on_soft_entry(frame: &mut TrapFrame, why: u64) {
    if why != Why::Panic as u64 {
        return;
    }
    if let Some(text) = PANIC.lock() {
        crash::on_crash(frame, Cause::Panic(text.as_bytes()), &mut Line);
    }
}

/// Never takes the bytes: the unikernel writes its console itself.
#[inline(always)]
pub fn console_write(_bytes: &[u8]) -> bool {
    false
}

/// Does nothing (no debugger).
#[inline(always)]
pub fn breakpoint() {}

/// No network stub in the dump-only build: keeps the command line and the
/// crash settings (a crash then says on the console that no core can be
/// streamed there) and returns `false`; the NIC stays the unikernel's.
pub fn init_net(_nic: &'static mut dyn Nic, cmdline: &str) -> bool {
    crate::info::keep_cmdline(cmdline);
    crash::configure(&Config::from_cmdline(cmdline).0);
    false
}

/// As [`init_net`], with a [`Config`] built in code.
pub fn init_net_with(_nic: &'static mut dyn Nic, config: Config) -> bool {
    crash::configure(&config);
    false
}

/// As [`init_net`]: no network stub; `false`.
pub fn init_net_dedicated(cmdline: &str) -> bool {
    crate::info::keep_cmdline(cmdline);
    crash::configure(&Config::from_cmdline(cmdline).0);
    false
}

/// Never takes a frame: every frame is the unikernel's.
#[inline(always)]
pub fn net_claim(_frame: &[u8]) -> bool {
    false
}

/// Where the stub's messages go when it has no line of its own.
pub fn set_console(write: fn(&[u8])) {
    CONSOLE_HOOK.set(write);
}

/// The crash path's view of the transport.
struct Line;

impl Channel for Line {
    fn streams(&mut self) -> bool {
        LINE.lock().is_some_and(|l| l.as_ref().is_some_and(|t| t.carries_console()))
    }

    fn say(&mut self, parts: &[&str]) {
        if let Some(mut line) = LINE.lock() {
            if let Some(t) = line.as_mut() {
                for part in parts {
                    t.write(part.as_bytes());
                }
                t.flush();
                return;
            }
        }
        if let Some(hook) = CONSOLE_HOOK.get() {
            for part in parts {
                hook(part.as_bytes());
            }
        }
    }

    fn stream(&mut self, body: &mut dyn FnMut(crate::crash::Sink<'_>)) {
        if let Some(mut line) = LINE.lock() {
            if let Some(t) = line.as_mut() {
                body(&mut |b| t.write(b));
                t.flush();
            }
        }
    }
}
