//! The line to the debugger: the installed transport, its output framing,
//! and the console text that shares it.
//!
//! One rule keeps this sound without locks a trap could need: **only the
//! holder of [`LINE`] touches the transport and encodes framing.**
//! - The debug session holds it for each of its operations, with the world
//!   stopped.
//! - The unikernel's console writes push text into a lock-free ring
//!   ([`CONSOLE`]) and then try to become the holder to drain it. If a trap
//!   arrives while a drain holds the line (a single step or breakpoint in
//!   that code), the session finds the line busy and does not stop there
//!   (see `session::on_busy`): it is never used by two at once, and a
//!   framing escape is never split.
//! - `poll` asks the transport's lock-free [`Pending`] check only.

use crate::framing::{Encoder, Stream};
use crate::global::{Global, SetOnce};
use crate::link::{LinkEvent, Pending, Transport};
use crate::ring::ByteRing;
use crate::wire;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Console text waiting for the line: large enough that a burst printed
/// while the line is busy (from an interrupt handler that interrupted a
/// drain) is kept.
const CONSOLE_RING_BYTES: usize = 16 * 1024;

struct Line {
    transport: &'static mut dyn Transport,
    encoder: Encoder,
}

static LINE: Global<Option<Line>> = Global::new(None);
static PENDING: SetOnce<Pending> = SetOnce::new();
static CONSOLE_SHARED: AtomicBool = AtomicBool::new(false);
static CONSOLE: ByteRing<CONSOLE_RING_BYTES> = ByteRing::new();
/// The unikernel's raw console write, for the stub's own messages when the
/// line does not carry the console (see [`set_console`]).
static CONSOLE_HOOK: SetOnce<fn(&[u8])> = SetOnce::new();
/// Console bytes that found neither room in the ring nor a free line.
static CONSOLE_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Why a transport could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallError {
    /// `init` ran before.
    AlreadyInstalled,
}

/// Installs the transport (once) and, with `hello`, says hello on it
/// (`DLE 'H'`: a stub has just started, raw, no session). Without it the
/// line carries the console only (a stub that refused to start).
pub fn install(transport: &'static mut dyn Transport, hello: bool) -> Result<(), InstallError> {
    transport.init();
    let pending = transport.pending();
    let shared = transport.carries_console();
    let mut slot = LINE.lock().ok_or(InstallError::AlreadyInstalled)?;
    if slot.is_some() || !PENDING.set(pending) {
        return Err(InstallError::AlreadyInstalled);
    }
    let line = slot.insert(Line { transport, encoder: Encoder::new() });
    if hello {
        line.transport.write(&wire::HELLO_SEQ);
        line.transport.flush();
    }
    CONSOLE_SHARED.store(shared, Ordering::Release);
    Ok(())
}

/// Whether input waits (lock-free).
#[inline]
pub fn has_input() -> bool {
    PENDING.get().is_some_and(|p| p.input_waiting())
}

/// Whether the line is free for the session: not held by a console drain
/// that a trap interrupted, and its device not in the unikernel's use (a
/// shared NIC's driver: see `Transport::busy`).
pub fn available() -> bool {
    if LINE.is_held() {
        return false;
    }
    match LINE.lock() {
        Some(line) => !line.as_ref().is_some_and(|l| l.transport.busy()),
        None => false,
    }
}

/// Console text (lock-free for the caller: see the module docs). `false`
/// when the console does not share the stub's channel; the unikernel then
/// writes the text itself. Never inlined: one copy, one place to break.
#[inline(never)]
pub fn console_write(bytes: &[u8]) -> bool {
    if !CONSOLE_SHARED.load(Ordering::Acquire) {
        return false;
    }
    let mut rest = bytes;
    loop {
        let masked = irq_save();
        // SAFETY: the ring's one producer: interrupts are masked, the stub
        // itself never pushes (it writes through the line it holds), and
        // console writes from NMI handlers are not supported (documented).
        let n = unsafe { CONSOLE.push(rest) };
        irq_restore(masked);
        rest = rest.get(n..).unwrap_or_default();
        drain();
        if rest.is_empty() {
            return true;
        }
        if n == 0 && !available() {
            // Full, and the holder is a drain this write interrupted: it
            // cannot make room until we return.
            CONSOLE_DROPPED.fetch_add(rest.len() as u64, Ordering::Relaxed);
            return true;
        }
    }
}

/// Drains the console ring onto the line if nobody holds it; again if text
/// arrived while it was held.
fn drain() {
    loop {
        match LINE.lock() {
            Some(mut line) => {
                if let Some(line) = line.as_mut() {
                    line.drain_console();
                }
            }
            None => return,
        }
        if CONSOLE.is_empty() {
            return;
        }
    }
}

impl Line {
    fn drain_console(&mut self) {
        let Line { transport, encoder } = self;
        // SAFETY: the ring's one consumer is the holder of LINE, and the
        // caller holds it (we are reached only through its guard).
        let n = unsafe {
            CONSOLE.pop_with(|run| encoder.write(Stream::Console, run, |b| transport.write(b)))
        };
        if n > 0 {
            transport.flush();
        }
    }
}

/// Runs `f` on the line as its holder (the session, with the world
/// stopped). `None` when there is no line, or someone holds it.
fn with_line<R>(f: impl FnOnce(&mut Line) -> R) -> Option<R> {
    LINE.lock()?.as_mut().map(f)
}

/// Waiting input, into `buf` (session only).
pub fn read(buf: &mut [u8]) -> usize {
    with_line(|l| l.transport.read(buf)).unwrap_or(0)
}

/// A link event, on transports that have them (session only).
pub fn poll_event() -> Option<LinkEvent> {
    with_line(|l| l.transport.poll_event()).flatten()
}

/// RSP bytes for the debugger (session only). Console text printed before
/// them goes first.
pub fn write_debug(bytes: &[u8]) {
    with_line(|l| {
        l.drain_console();
        let Line { transport, encoder } = l;
        encoder.write(Stream::Debug, bytes, |b| transport.write(b));
    });
}

/// Sends what was written (session only; once per packet).
pub fn flush() {
    with_line(|l| l.transport.flush());
}

/// Stub messages as console text (session only, or before the session
/// starts). Pending console text goes first.
pub fn say(parts: &[&[u8]]) {
    let shared = CONSOLE_SHARED.load(Ordering::Acquire);
    let written = shared
        .then(|| {
            with_line(|l| {
                l.drain_console();
                let Line { transport, encoder } = l;
                for part in parts {
                    encoder.write(Stream::Console, part, |b| transport.write(b));
                }
                transport.flush();
            })
        })
        .flatten();
    if written.is_none() {
        // No line of ours, a busy one, or one without the console: the
        // unikernel's console path.
        for part in parts {
            if !console_write(part) {
                if let Some(hook) = CONSOLE_HOOK.get() {
                    hook(part);
                }
            }
        }
    }
}

/// Sets where the stub's messages go when the line does not carry the
/// console (once; later calls are ignored).
pub fn set_console(write: fn(&[u8])) {
    let _ = CONSOLE_HOOK.set(write);
}

/// Turns framing on (answering with the sync) or off (session only).
pub fn set_framed(on: bool) {
    with_line(|l| {
        l.drain_console();
        let Line { transport, encoder } = l;
        encoder.set_framed(on, |b| transport.write(b));
        transport.flush();
    });
}

/// Marks every console write (see `Encoder::set_remark`): on while a
/// debugger sends checked packets (a line that damages bytes).
pub fn set_remark(on: bool) {
    with_line(|l| l.encoder.set_remark(on));
}

/// Answers the host's `DLE 'X'` with `DLE 'E'` (session only). A control
/// sequence in both modes; it changes no stream selection.
pub fn session_ended() {
    with_line(|l| {
        l.transport.write(&wire::ENDED_SEQ);
        l.transport.flush();
    });
}

/// The line as the crash path sees it (`crate::crash`, session only): a
/// line that carries the console (serial) carries the stream too; the
/// network does not.
pub struct CrashLine;

impl crate::crash::Channel for CrashLine {
    fn streams(&mut self) -> bool {
        CONSOLE_SHARED.load(Ordering::Acquire)
    }

    fn say(&mut self, parts: &[&str]) {
        super::api::say(parts);
    }

    fn stream(&mut self, body: &mut dyn FnMut(crate::crash::Sink<'_>)) {
        with_line(|l| {
            l.drain_console();
            let Line { transport, encoder } = l;
            body(&mut |b| transport.write(b));
            encoder.after_raw(|b| transport.write(b));
            transport.flush();
        });
    }
}

/// Sends console text that waits, at the end of a stop (session only).
pub fn drain_console() {
    with_line(|l| l.drain_console());
}

/// How many console bytes were dropped (see [`console_write`]).
pub fn console_dropped() -> u64 {
    CONSOLE_DROPPED.load(Ordering::Relaxed)
}

const RFLAGS_IF: u64 = 1 << 9;

/// Masks interrupts; returns whether they were enabled.
#[inline(always)]
fn irq_save() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack and masks interrupts; the
    // matching `irq_restore` unmasks them only if they were enabled.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem)) };
    flags & RFLAGS_IF != 0
}

/// Unmasks interrupts if `irq_save` found them enabled.
#[inline(always)]
fn irq_restore(enabled: bool) {
    if enabled {
        // SAFETY: interrupts were enabled before the matching `irq_save`.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
}
