//! The transport boundary: what the stub needs from a channel to the
//! debugger. Serial is one implementation ([`crate::Uart16550`]); rings and
//! network devices are others, written by the stub or by the unikernel,
//! without any change to the debug session.
//!
//! The stub drives a transport only with the world stopped (the session) or
//! from [`crate::console_write`] while it holds the transport exclusively,
//! polling, with no interrupts. While the unikernel runs, [`crate::poll`]
//! asks only the lock-free [`Pending`] check whether input waits.
//!
//! This module is compiled in every configuration (it is only definitions),
//! so a unikernel's own transport needs no `cfg` for production builds.

/// A change of the link to the debugger, on channels that know about it (a
/// TCP connection opening or closing). Serial lines have none: there the
/// bridge says the same in-band (see `docs/wire-protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// A debugger connected: a new session starts with its first packet.
    Connected,
    /// The debugger is gone: its session ends (breakpoints removed).
    Gone,
}

/// A lock-free check for waiting input, made once at `init` and called from
/// [`crate::poll`] while the unikernel runs: a plain function and one word
/// of context (an I/O port, the address of a ring index), so it can be
/// called from any context, including a timer interrupt.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    check: fn(usize) -> bool,
    context: usize,
}

impl Pending {
    /// `check(context)` answers whether input waits. It must not block, take
    /// a lock, or change the device's state in a way the transport would
    /// notice (reading a status register or a ring index is typical).
    pub const fn new(check: fn(usize) -> bool, context: usize) -> Self {
        Pending { check, context }
    }

    /// Never any input (a transport that is only polled while stopped).
    pub const fn never() -> Self {
        fn no(_: usize) -> bool {
            false
        }
        Pending { check: no, context: 0 }
    }

    /// Whether input waits.
    #[inline]
    pub fn input_waiting(&self) -> bool {
        (self.check)(self.context)
    }
}

/// A channel to the debugger.
///
/// # Implementation notes
/// - `read` and `write` are called with the world stopped (interrupts off,
///   one CPU) or from a console write that holds the transport exclusively;
///   they poll and must not rely on interrupts.
/// - `write` may wait for room (a UART waits for its FIFO) but must take
///   every byte; `flush` publishes what was written (a ring updates its
///   producer index and notifies; a TCP socket sends a segment). The stub
///   flushes once per packet and once per console drain.
/// - Implementations never panic on what the other side sends.
pub trait Transport: Send {
    /// Prepares the device; called once by `init` before anything else.
    fn init(&mut self) {}

    /// Moves waiting input into `buf` and returns how many bytes that was
    /// (0: nothing waits now). Never blocks.
    fn read(&mut self, buf: &mut [u8]) -> usize;

    /// Takes all of `bytes` for sending.
    fn write(&mut self, bytes: &[u8]);

    /// Sends what `write` took.
    fn flush(&mut self) {}

    /// A link event, on channels that have them.
    fn poll_event(&mut self) -> Option<LinkEvent> {
        None
    }

    /// Whether console text shares this channel with the debugger (a serial
    /// line does; a network socket does not).
    fn carries_console(&self) -> bool;

    /// The lock-free input check for [`crate::poll`].
    fn pending(&self) -> Pending;

    /// The device is in use by the unikernel right now (a shared NIC whose
    /// driver lock is held): the stub does not stop there, as for a trap
    /// in its own I/O. Called with the line held, from any context; it must
    /// not block.
    fn busy(&self) -> bool {
        false
    }

    /// A short name for messages ("serial", "virtio-net").
    fn name(&self) -> &'static str;
}
