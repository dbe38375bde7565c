//! The local APIC, through its memory-mapped registers (xAPIC mode, which
//! every x86_64 machine and hypervisor offers, QEMU's TCG included; TCG in
//! QEMU 7 has no x2APIC). `paging::init` maps its page uncached.

use crate::cpu::rdmsr;
use core::ptr::{read_volatile, write_volatile};

const IA32_APIC_BASE: u32 = 0x1B;
const BASE_ENABLE: u64 = 1 << 11;
const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Register offsets.
const TPR: usize = 0x80;
const EOI: usize = 0xB0;
const SVR: usize = 0xF0;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_CURRENT: usize = 0x390;
const TIMER_DIVIDE: usize = 0x3E0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration 0b0011: the timer counts at the bus clock / 16.
const DIVIDE_BY_16: u32 = 0x3;

/// The vector the APIC delivers spurious interrupts on. Its low four bits
/// are ones, as older APICs require.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// The local APIC is disabled in IA32_APIC_BASE (the firmware turned it
/// off, or the machine has none): no timer interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicDisabled;

/// The physical address of the local APIC's registers, if it is enabled.
pub fn base() -> Result<u64, ApicDisabled> {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let msr = unsafe { rdmsr(IA32_APIC_BASE) };
    if msr & BASE_ENABLE == 0 {
        return Err(ApicDisabled);
    }
    Ok(msr & BASE_MASK)
}

/// The local APIC's register page. Built only by [`Apic::new`], after
/// `paging::init` mapped the page.
#[derive(Clone, Copy)]
pub struct Apic {
    base: usize,
}

impl Apic {
    /// The local APIC at `base`.
    ///
    /// # Safety
    /// `base` is [`base`]'s address, mapped (identity, uncached) by the
    /// current page tables, and the caller is the APIC's only user.
    pub unsafe fn new(base: u64) -> Apic {
        Apic { base: base as usize }
    }

    fn read(self, reg: usize) -> u32 {
        // SAFETY: `new`'s contract: the register page is mapped; `reg` is
        // one of the aligned register offsets above, inside the page.
        unsafe { read_volatile((self.base + reg) as *const u32) }
    }

    fn write(self, reg: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + reg) as *mut u32, value) }
    }

    /// Software-enables the APIC with [`SPURIOUS_VECTOR`] and accepts all
    /// priorities.
    pub fn enable(self) {
        self.write(TPR, 0);
        self.write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    }

    /// Counts of the timer (bus clock / 16) in `tsc_ticks` TSC ticks,
    /// measured with the timer masked.
    pub fn measure_timer(self, tsc_ticks: u64) -> u32 {
        self.write(TIMER_DIVIDE, DIVIDE_BY_16);
        self.write(LVT_TIMER, LVT_MASKED);
        self.write(TIMER_INITIAL, u32::MAX);
        crate::time::spin(tsc_ticks);
        let left = self.read(TIMER_CURRENT);
        self.write(TIMER_INITIAL, 0);
        u32::MAX - left
    }

    /// Starts the timer in periodic mode: `vector` every `count` counts.
    pub fn start_periodic(self, vector: u8, count: u32) {
        self.write(TIMER_DIVIDE, DIVIDE_BY_16);
        self.write(LVT_TIMER, LVT_PERIODIC | u32::from(vector));
        self.write(TIMER_INITIAL, count);
    }

    /// Signals the end of the interrupt being handled.
    pub fn eoi(self) {
        self.write(EOI, 0);
    }
}
