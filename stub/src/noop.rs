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

/// The software breakpoint instruction (no-op build: recorded nowhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapInsn {
    /// `int3`.
    Int3,
    /// The invalid opcode `0x06`.
    Ud,
}

/// A `ukdb.*` option the parser did not take (no-op build: never produced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOption<'a>(pub &'a str);

/// The stub's settings (no-op build: holds nothing; the builder methods
/// have the enabled build's signatures and do nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config;

impl Config {
    /// The defaults.
    #[inline(always)]
    pub const fn new() -> Config {
        Config
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn wait(self, _on: bool) -> Config {
        self
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn trap(self, _trap: TrapInsn) -> Config {
        self
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn phys_offset(self, _offset: u64) -> Config {
        self
    }

    /// Reads nothing.
    #[inline(always)]
    pub fn from_cmdline(_cmdline: &str) -> (Config, Option<BadOption<'_>>) {
        (Config, None)
    }

    /// Reads nothing.
    #[inline(always)]
    pub fn with_cmdline(self, _cmdline: &str) -> (Config, Option<BadOption<'_>>) {
        (self, None)
    }
}
