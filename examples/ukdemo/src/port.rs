//! Port I/O for the devices the example drives itself: the COM1 console and
//! the PIT (with the system control port). Callers name only those ports.

use core::arch::asm;

/// Writes a byte to an I/O port of one of the example's devices.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects; callers use only the COM1,
    // PIT and system control ports, which the example owns.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port of one of the example's devices.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}
