//! The transports the stub brings, and where an installed transport lives.
//! A unikernel's own transports implement [`Transport`] the same way.

use crate::arch;
use crate::link::{Pending, Transport};
use crate::uart::{Uart, UartRegs};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

/// A 16550 UART reached through I/O ports. The console may share it with
/// the debugger (see [`crate::console_write`]).
#[derive(Debug)]
pub struct Uart16550 {
    uart: Uart<PortRegs>,
}

/// The usual I/O base of the first PC serial port.
pub const COM1_BASE: u16 = 0x3f8;

impl Uart16550 {
    /// A UART at I/O port `base`.
    ///
    /// # Safety
    /// Ports `base..base + 8` are a 16550-compatible UART that nothing else
    /// drives once the stub has it (the unikernel's console writes go
    /// through [`crate::console_write`]).
    pub const unsafe fn new(base: u16) -> Self {
        Uart16550 { uart: Uart::new(PortRegs(base)) }
    }
}

/// The registers of a port-mapped UART.
#[derive(Debug)]
pub(crate) struct PortRegs(u16);

impl UartRegs for PortRegs {
    fn read(&mut self, offset: u16) -> u8 {
        // SAFETY: `Uart16550::new`'s contract: these eight ports are a UART
        // that is the stub's to drive.
        unsafe { arch::inb(self.0.wrapping_add(offset)) }
    }
    fn write(&mut self, offset: u16, value: u8) {
        // SAFETY: as in `read`.
        unsafe { arch::outb(self.0.wrapping_add(offset), value) }
    }
}

/// The lock-free input check: the line status register's data-ready bit.
fn uart_input_waiting(base: usize) -> bool {
    // `Pending` contexts are made only by `Uart16550::pending`, from a port
    // number, so the cast back is lossless.
    let mut uart = Uart::new(PortRegs(base as u16));
    uart.has_input()
}

impl Transport for Uart16550 {
    fn init(&mut self) {
        self.uart.init();
    }

    fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        for slot in buf.iter_mut() {
            match self.uart.try_read() {
                Some(b) => *slot = b,
                None => break,
            }
            n += 1;
        }
        n
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.uart.write(b);
        }
    }

    fn carries_console(&self) -> bool {
        true
    }

    fn pending(&self) -> Pending {
        Pending::new(uart_input_waiting, usize::from(self.uart.regs().0))
    }

    fn name(&self) -> &'static str {
        "serial"
    }
}

/// Room for one transport handed to `init` by value: no heap, so it lives
/// in this static. A transport larger than this is kept by the unikernel in
/// a static of its own and handed over as `&'static mut`.
pub const INLINE_TRANSPORT_BYTES: usize = 256;

#[repr(C, align(16))]
struct Slot(UnsafeCell<MaybeUninit<[u8; INLINE_TRANSPORT_BYTES]>>);

// SAFETY: written once, by the one caller that wins `TAKEN`; afterwards only
// reached through the `&'static mut` that `store` hands out.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot(UnsafeCell::new(MaybeUninit::uninit()));
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Moves `transport` into the static slot; `None` if the slot is taken.
pub(crate) fn store<T: Transport + 'static>(transport: T) -> Option<&'static mut dyn Transport> {
    const {
        assert!(
            size_of::<T>() <= INLINE_TRANSPORT_BYTES && align_of::<T>() <= 16,
            "transport too large for the inline slot: keep it in a static and use init_static"
        )
    };
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    let p = SLOT.0.get().cast::<T>();
    // SAFETY: the slot is large and aligned enough for T (checked above at
    // compile time), and `TAKEN` admitted only this caller, once: nothing
    // else reads or writes the slot, and the reference handed out is the
    // only one.
    unsafe {
        p.write(transport);
        Some(&mut *p)
    }
}
