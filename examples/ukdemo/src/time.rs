//! A time base: the TSC, calibrated once against the PIT.

use crate::port::{inb, outb};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(1_000_000_000);

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Measures the TSC over 10 ms of PIT channel 2. Keeps the 1 GHz default when
/// there is no PIT (the gate output never rises, or is high at once).
pub fn init() {
    const PIT_HZ: u64 = 1_193_182;
    const LATCH: u64 = PIT_HZ / 100;
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xB0);
    outb(0x42, LATCH as u8);
    outb(0x42, (LATCH >> 8) as u8);
    let start = rdtsc();
    while inb(0x61) & 0x20 == 0 {
        if rdtsc() - start > 1u64 << 36 {
            return;
        }
    }
    let hz = (rdtsc() - start) * 100;
    // A gate that is high at once means no working PIT: keep the default.
    if hz >= 10_000_000 {
        TSC_HZ.store(hz, Ordering::Relaxed);
    }
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}
