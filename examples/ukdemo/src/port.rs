//! Port I/O for the devices the example drives itself: the COM1 console, the
//! PIT with the system control port (TSC calibration only), and the legacy
//! PICs (remapped and masked at boot). Each caller names the port it owns in
//! its `// SAFETY:` comment.

use core::arch::asm;

/// Writes `value` to I/O port `port`.
///
/// # Safety
/// The port must belong to a device that the caller owns (no other code, and
/// no other driver, programs it concurrently), and the write must be one that
/// device expects: a port write can reconfigure hardware, start DMA or raise
/// interrupts, none of which the compiler can see.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: `out` touches no memory the compiler knows about; the caller
    // guarantees the device-level contract above.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from I/O port `port`.
///
/// # Safety
/// As for [`outb`]: the port must belong to a device the caller owns. Reads
/// have side effects on many devices (they pop a UART's receive FIFO, clear
/// a latch), so they are no safer than writes.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 32-bit `value` to I/O port `port`.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads 32 bits from I/O port `port`.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}
