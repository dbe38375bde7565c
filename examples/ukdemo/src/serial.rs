//! COM1 console output. When the debug stub shares the line it takes the
//! bytes (so console text never lands inside a debugger packet); otherwise
//! they go straight to the UART.

use crate::port::{inb, outb};
use core::fmt::{self, Write};

/// COM1's I/O base. Its eight ports (`COM1..COM1 + 8`) belong to this
/// module, and, once `ukdb_stub::init` has run, to the stub, which shares
/// the line with the console through `ukdb_stub::console_write`.
const COM1: u16 = 0x3f8;
const DATA: u16 = COM1;
const INT_ENABLE: u16 = COM1 + 1;
const FIFO_CTRL: u16 = COM1 + 2;
const LINE_CTRL: u16 = COM1 + 3;
const MODEM_CTRL: u16 = COM1 + 4;
const LINE_STATUS: u16 = COM1 + 5;

/// Modem control: DTR, RTS, OUT2 (normal operation).
const MCR_NORMAL: u8 = 0x0B;
/// Modem control: RTS, OUT1, OUT2 and LOOP (transmitter wired to receiver).
const MCR_LOOPBACK: u8 = 0x1E;
/// The byte the loopback self-test sends.
pub const SELF_TEST_BYTE: u8 = 0xAE;

/// The loopback self-test read back something other than [`SELF_TEST_BYTE`]:
/// typically a byte that arrived on the line before the test (a host tool
/// that wrote into a guest that had not asked for anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfTestFailed {
    /// The byte read back.
    pub read: u8,
}

// The message avoids `+`, `-`, `$` and `#`: printed before the stub starts,
// it can reach a debugger that is already on the raw line (gdb straight on
// the serial socket), which would take a `-` for a NAK and resend.
impl fmt::Display for SelfTestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serial self test failed (read {:#04x} expected {:#04x})",
            self.read, SELF_TEST_BYTE
        )
    }
}

/// 115200 8N1, interrupts off, a loopback self-test as the `uart_16550`
/// crate's initialisation runs one, then FIFOs on. In loopback mode the
/// transmitter is wired to the receiver and the line is cut off, so the
/// first byte the receiver gives back must be the one written. A byte that
/// the line delivered before (a host tool that wrote into a guest that had
/// not asked for anything) comes first and fails the test. The UART is left
/// in normal mode with empty FIFOs either way, so the caller can report a
/// failure on the console and carry on.
pub fn init() -> Result<(), SelfTestFailed> {
    // SAFETY: COM1's ports belong to this module (see `COM1`); the stub has
    // not started yet, and this is the 16550's documented init sequence.
    let waiting = unsafe {
        outb(INT_ENABLE, 0x00);
        outb(LINE_CTRL, 0x80);
        outb(DATA, 0x01);
        outb(INT_ENABLE, 0x00);
        outb(LINE_CTRL, 0x03);
        outb(MODEM_CTRL, MCR_LOOPBACK);
        inb(LINE_STATUS) & 0x01 != 0
    };
    if !waiting {
        // SAFETY: as above: the test byte goes to the receiver only.
        unsafe { outb(DATA, SELF_TEST_BYTE) };
        // The byte is back at once on real and emulated 16550s; a bounded
        // number of status reads keeps a missing UART from hanging boot.
        for _ in 0..1000 {
            // SAFETY: as above (reading the line status has no side effect).
            if unsafe { inb(LINE_STATUS) } & 0x01 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
    // SAFETY: as above; reading the data port pops one received byte,
    // writing MCR leaves loopback mode, and FCR 0xC7 enables the FIFOs and
    // empties them (14-byte receive threshold).
    let read = unsafe {
        let read = inb(DATA);
        outb(MODEM_CTRL, MCR_NORMAL);
        outb(FIFO_CTRL, 0xC7);
        read
    };
    if read == SELF_TEST_BYTE {
        Ok(())
    } else {
        Err(SelfTestFailed { read })
    }
}

/// Writes console bytes straight to the UART: the console itself, and the
/// stub's own messages when its channel is the network
/// (`ukdb_stub::set_console`).
pub fn write_raw(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: COM1 belongs to this module; without a stub on the line
        // (`console_write` returned false) nothing else drives it. A stub on
        // the network writes its messages through this function too, with
        // the world stopped: a stopped writer's line is merely interleaved
        // (each byte is a status read, then one data write).
        while unsafe { inb(LINE_STATUS) } & 0x20 == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: as above; the transmitter is empty.
        unsafe { outb(DATA, b) };
    }
}

/// Writes console bytes, through the stub when it owns the line.
pub fn write_bytes(bytes: &[u8]) {
    if !ukdb_stub::console_write(bytes) {
        write_raw(bytes);
    }
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
