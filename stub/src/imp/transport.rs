//! Transports: the byte channels the stub can talk over. Each is polled: the
//! stub reads and writes them with the world stopped, and from [`crate::poll`]
//! only asks whether input is waiting. New transports (virtio-net, Xen
//! console ring, vsock) are new variants of [`Transport`].

use super::arch;
use crate::uart::{Uart, UartRegs};

/// A 16550 UART reached through I/O ports.
#[derive(Debug, Clone, Copy)]
pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// The first PC serial port (I/O base 0x3f8).
    pub const COM1: Uart16550 = Uart16550 { base: 0x3f8 };

    /// A UART at I/O port `base`.
    pub const fn new(base: u16) -> Self {
        Uart16550 { base }
    }
}

/// The registers of a port-mapped UART.
pub(crate) struct PortRegs(u16);

impl UartRegs for PortRegs {
    fn read(&mut self, offset: u16) -> u8 {
        // SAFETY: the unikernel named this UART as the stub's transport, so
        // its eight ports are the stub's to drive.
        unsafe { arch::inb(self.0 + offset) }
    }
    fn write(&mut self, offset: u16, value: u8) {
        // SAFETY: as in `read`.
        unsafe { arch::outb(self.0 + offset, value) }
    }
}

/// The channel the stub talks to the debugger over: made from one of the
/// transport types (`Uart16550::COM1.into()`).
pub struct Transport(Inner);

enum Inner {
    /// A 16550 UART. The console may share it (see [`crate::console_write`]).
    Uart16550(Uart<PortRegs>),
}

impl From<Uart16550> for Transport {
    fn from(u: Uart16550) -> Self {
        Transport(Inner::Uart16550(Uart::new(PortRegs(u.base))))
    }
}

/// The parts of a transport that work without owning it, while the
/// unikernel runs: is input waiting (for `poll`), and writing console text
/// when the console shares the channel. Copied out of the transport at
/// `init`; lock-free, so single-stepping through them cannot deadlock the
/// stub.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Probe {
    Uart16550(u16),
}

impl Probe {
    /// Whether input is waiting.
    pub fn has_input(self) -> bool {
        match self {
            Probe::Uart16550(base) => Uart::new(PortRegs(base)).has_input(),
        }
    }

    /// Writes a console byte, if the console shares the channel.
    pub fn console_write(self, byte: u8) {
        match self {
            Probe::Uart16550(base) => Uart::new(PortRegs(base)).write(byte),
        }
    }

    /// Whether the console shares this channel.
    pub fn carries_console(self) -> bool {
        match self {
            Probe::Uart16550(_) => true,
        }
    }
}

impl Transport {
    /// The lock-free parts.
    pub(crate) fn probe(&self) -> Probe {
        match &self.0 {
            Inner::Uart16550(u) => Probe::Uart16550(u.regs().0),
        }
    }

    /// Prepares the device.
    pub(crate) fn init(&mut self) {
        match &mut self.0 {
            Inner::Uart16550(u) => u.init(),
        }
    }

    /// A waiting byte, if any.
    pub(crate) fn try_read(&mut self) -> Option<u8> {
        match &mut self.0 {
            Inner::Uart16550(u) => u.try_read(),
        }
    }

    /// Sends one byte.
    pub(crate) fn write(&mut self, byte: u8) {
        match &mut self.0 {
            Inner::Uart16550(u) => u.write(byte),
        }
    }

    /// A short name for messages.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.0 {
            Inner::Uart16550(_) => "serial",
        }
    }
}
