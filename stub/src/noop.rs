//! The API with the `enabled` feature off: every function is an inlined
//! no-op, so a unikernel calls the same functions in every build and the
//! production image holds no stub code at all.

use crate::TrapFrame;

/// A 16550 UART at an I/O port base (no-op build: holds nothing).
#[derive(Debug, Clone, Copy)]
pub struct Uart16550;

impl Uart16550 {
    /// The first PC serial port.
    pub const COM1: Uart16550 = Uart16550;

    /// A UART at I/O port `base`.
    #[inline(always)]
    pub const fn new(_base: u16) -> Self {
        Uart16550
    }
}

/// The channel the stub talks to the debugger over (no-op build: holds nothing).
#[derive(Debug, Clone, Copy)]
pub struct Transport;

impl From<Uart16550> for Transport {
    #[inline(always)]
    fn from(_: Uart16550) -> Self {
        Transport
    }
}

/// See the enabled build: does nothing here.
#[inline(always)]
pub fn init(_transport: impl Into<Transport>, _cmdline: &str) {}

/// Never handles a trap: the unikernel's own handler runs.
#[inline(always)]
pub fn handle_trap(_frame: &mut TrapFrame) -> bool {
    false
}

/// Does nothing.
#[inline(always)]
pub fn poll() {}

/// Returns at once.
#[inline(always)]
pub fn wait_for_debugger() {}

/// Returns at once: the unikernel's panic handler goes on as it would.
#[inline(always)]
pub fn on_panic(_info: &core::panic::PanicInfo<'_>) {}

/// Never takes the bytes: the unikernel writes its console itself.
#[inline(always)]
pub fn console_write(_bytes: &[u8]) -> bool {
    false
}

/// Does nothing.
#[inline(always)]
pub fn breakpoint() {}
