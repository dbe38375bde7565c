//! The shared line: the transport, owned by the debugger session, and the
//! console, which writes from running code. Neither side takes a lock the
//! other could be holding when a trap stops the unikernel:
//! - the session reaches the transport through [`TRANSPORT`], which only
//!   the stop path locks;
//! - the console and `poll` use the transport's lock-free [`Probe`];
//! - the framing state is two atomics, and a stop puts the stream selection
//!   back as it found it, so a console write interrupted by a stop (a
//!   single step through it, say) carries on in the right stream.

use super::global::{Global, SetOnce};
use super::transport::{Probe, Transport};
use crate::framing::{self, FrameState, Stream};
use core::sync::atomic::{AtomicBool, Ordering};

static TRANSPORT: Global<Option<Transport>> = Global::new(None);
static PROBE: SetOnce<Probe> = SetOnce::new();

struct Atomics {
    framed: AtomicBool,
    debug: AtomicBool,
}

impl FrameState for Atomics {
    fn framed(&self) -> bool {
        self.framed.load(Ordering::Relaxed)
    }
    fn set_framed(&self, on: bool) {
        self.debug.store(false, Ordering::Relaxed);
        self.framed.store(on, Ordering::Relaxed);
    }
    fn select(&self, stream: Stream) -> bool {
        let debug = stream == Stream::Debug;
        self.debug.swap(debug, Ordering::Relaxed) == debug
    }
}

static STATE: Atomics = Atomics { framed: AtomicBool::new(false), debug: AtomicBool::new(false) };

/// Installs the transport (once). `false` if one is installed already.
pub fn install(transport: Transport) -> bool {
    let probe = transport.probe();
    let Some(mut slot) = TRANSPORT.lock() else {
        return false;
    };
    if slot.is_some() || !PROBE.set(probe) {
        return false;
    }
    *slot = Some(transport);
    true
}

/// Whether input waits (lock-free).
pub fn has_input() -> bool {
    PROBE.get().is_some_and(|p| p.has_input())
}

/// Writes console text if the console shares the channel (lock-free).
pub fn console_write(bytes: &[u8]) -> bool {
    match PROBE.get() {
        Some(&probe) if probe.carries_console() => {
            framing::write(&STATE, Stream::Console, bytes, |b| probe.console_write(b));
            true
        }
        _ => false,
    }
}

/// Runs `f` on the installed transport (stop path only); `None` when there
/// is none, or on re-entry.
fn with_transport<R>(f: impl FnOnce(&mut Transport) -> R) -> Option<R> {
    TRANSPORT.lock()?.as_mut().map(f)
}

/// A byte from the debugger, if one waits (stop path only).
pub fn try_read() -> Option<u8> {
    with_transport(|t| t.try_read()).flatten()
}

/// Writes RSP bytes (stop path only).
pub fn write_debug(bytes: &[u8]) -> Result<(), ()> {
    with_transport(|t| framing::write(&STATE, Stream::Debug, bytes, |b| t.write(b))).ok_or(())
}

/// Turns framing on (answering with the sync) or off (stop path only).
pub fn set_framed(on: bool) {
    with_transport(|t| framing::set_framed(&STATE, on, |b| t.write(b)));
}

/// The stream the host reads now; a stop saves it on entry.
pub fn selection() -> Stream {
    if STATE.debug.load(Ordering::Relaxed) {
        Stream::Debug
    } else {
        Stream::Console
    }
}

/// Selects `stream` again at the end of a stop, writing the switch marker
/// if the stop left the other one selected.
pub fn restore_selection(stream: Stream) {
    with_transport(|t| framing::switch_to(&STATE, stream, |b| t.write(b)));
}
