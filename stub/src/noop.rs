//! The API with neither `enabled` nor `dump`: every function is an inlined
//! no-op, so a unikernel calls the same functions in every build and the
//! production image holds no stub code at all.

use crate::{Nic, Pending, Transport, TrapFrame};

/// A 16550 UART at an I/O port base (no-op build: holds nothing).
#[derive(Debug)]
pub struct Uart16550;

/// The usual I/O base of the first PC serial port.
pub const COM1_BASE: u16 = 0x3f8;

/// See the enabled build (no-op build: 0).
pub const INLINE_TRANSPORT_BYTES: usize = 0;

impl Uart16550 {
    /// A UART at I/O port `base` (no-op build: touches nothing).
    ///
    /// # Safety
    /// As in the enabled build: ports `base..base + 8` are a UART that
    /// nothing else drives.
    #[inline(always)]
    pub const unsafe fn new(_base: u16) -> Self {
        Uart16550
    }
}

impl Transport for Uart16550 {
    #[inline(always)]
    fn read(&mut self, _buf: &mut [u8]) -> usize {
        0
    }
    #[inline(always)]
    fn write(&mut self, _bytes: &[u8]) {}
    #[inline(always)]
    fn carries_console(&self) -> bool {
        false
    }
    #[inline(always)]
    fn pending(&self) -> Pending {
        Pending::never()
    }
    #[inline(always)]
    fn name(&self) -> &'static str {
        "none"
    }
}

/// The stub's packet buffers (no-op build: no bytes at all).
#[derive(Debug, Default)]
pub struct Buffers<const N: usize>;

impl<const N: usize> Buffers<N> {
    /// Nothing (for a `static`).
    #[inline(always)]
    pub const fn new() -> Self {
        Buffers
    }
}

/// Does nothing (the transport is dropped unused).
#[inline(always)]
pub fn init<T: Transport + 'static>(_transport: T, _cmdline: &str) {}

/// Does nothing (the transport is dropped unused).
#[inline(always)]
pub fn init_with<T: Transport + 'static>(_transport: T, _config: Config) {}

/// Does nothing.
#[inline(always)]
pub fn init_static<const N: usize>(
    _transport: &'static mut dyn Transport,
    _config: Config,
    _buffers: &'static mut Buffers<N>,
) {
}

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

/// How the network stub gets its IPv4 address (no-op build: unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// `ukdb.net=` not given.
    Unset,
    /// DHCPv4.
    Dhcp,
    /// A static address.
    Static {
        /// The address.
        addr: [u8; 4],
        /// The prefix length (0-32).
        prefix: u8,
        /// The default gateway, if any.
        gateway: Option<[u8; 4]>,
    },
    /// No network stub.
    Off,
    /// A value the parser did not take.
    Invalid,
}

/// What a crash with no debugger attached does (no-op build: unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// No crash dump.
    Off,
    /// A crash dump, then `Then`.
    Dump(Then),
}

/// What the stub does once a crash dump is sent (no-op build: unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Halt.
    Halt,
    /// Reset the machine.
    Reboot,
    /// Go on.
    Wait,
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

    /// See the enabled build.
    pub const FALLBACK_TSC_HZ: u64 = 2_000_000_000;

    /// The network stub's mode (no-op build: off).
    pub const fn net_mode(&self) -> NetMode {
        NetMode::Off
    }

    /// Off only for want of a key and `ukdb.net=` (no-op build: `false`).
    pub const fn net_off_by_default(&self) -> bool {
        false
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn net(self, _mode: NetMode) -> Config {
        self
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn crash(self, _crash: Crash) -> Config {
        self
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn port(self, _port: u16) -> Config {
        self
    }

    /// Does nothing.
    #[inline(always)]
    pub const fn tsc_hz(self, _hz: u64) -> Config {
        self
    }

    /// Does nothing (no stub, no key).
    #[inline(always)]
    pub const fn key(self, _key: &'static [u8]) -> Config {
        self
    }

    /// Does nothing (no stub, no key).
    #[inline(always)]
    pub const fn rokey(self, _key: &'static [u8]) -> Config {
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

/// Does nothing; `false`: no network stub (the NIC is the unikernel's).
#[inline(always)]
pub fn init_net(_nic: &'static mut dyn Nic, _cmdline: &str) -> bool {
    false
}

/// Does nothing; `false`: no network stub.
#[inline(always)]
pub fn init_net_with(_nic: &'static mut dyn Nic, _config: Config) -> bool {
    false
}

/// Does nothing; `false`: no network stub.
#[inline(always)]
pub fn init_net_dedicated(_cmdline: &str) -> bool {
    false
}

/// Never takes a frame: every frame is the unikernel's.
#[inline(always)]
pub fn net_claim(_frame: &[u8]) -> bool {
    false
}

/// Does nothing.
#[inline(always)]
pub fn set_console(_write: fn(&[u8])) {}

/// Does nothing (no stub, no cores): `true`.
#[inline(always)]
pub fn set_ram(_ranges: &[core::ops::Range<u64>]) -> bool {
    true
}

/// Does nothing (no stub, no cores): `true`.
#[inline(always)]
pub fn set_build_id(_note: &'static [u8]) -> bool {
    true
}
