//! The periodic timer: the local APIC timer, calibrated against the TSC.
//! It is the only interrupt source. The PIT is not used as a timer (Firecracker
//! and Cloud Hypervisor have none), and the legacy PICs are masked.
//!
//! Each tick lets the debug stub look for a debugger ([`ukdb_stub::poll`]),
//! so a Ctrl-C or an attaching debugger stops even a busy application
//! within a tick. When the tick woke the idle loop's `hlt`, the handler
//! leaves the poll to the idle loop, which polls before every `hlt`: the
//! stop is then reported in the application's own code, not in here.

use crate::apic::{self, Apic, ApicDisabled};
use crate::{cpu, time};
use core::sync::atomic::{AtomicU64, Ordering};

/// The timer's interrupt vector: above the exceptions (0-31) and the
/// remapped PICs (0x20-0x2f).
pub const VECTOR: u8 = 0x30;
/// Timer interrupts per second.
pub const HZ: u64 = 1000;

/// The APIC register page's address once the timer runs; 0 before.
static APIC_BASE: AtomicU64 = AtomicU64::new(0);

/// Why the timer could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerError {
    /// The local APIC is disabled.
    ApicDisabled,
    /// The APIC's registers are where `paging` could not map them.
    NotMapped,
    /// The APIC timer did not count during calibration.
    Stopped,
}

impl From<ApicDisabled> for TimerError {
    fn from(_: ApicDisabled) -> Self {
        TimerError::ApicDisabled
    }
}

impl TimerError {
    /// A short reason for the console.
    pub fn reason(self) -> &'static str {
        match self {
            TimerError::ApicDisabled => "local APIC disabled",
            TimerError::NotMapped => "local APIC registers not mapped",
            TimerError::Stopped => "APIC timer does not count",
        }
    }
}

/// Calibrates the APIC timer over 10 ms of TSC and starts it at [`HZ`].
/// Interrupts stay disabled; the caller enables them.
pub fn start() -> Result<(), TimerError> {
    let base = apic::base()?;
    if !crate::paging::apic_mapped() {
        return Err(TimerError::NotMapped);
    }
    // SAFETY: `paging::init` mapped the APIC's page (identity, uncached),
    // and this module is the APIC's only user.
    let apic = unsafe { Apic::new(base) };
    apic.enable();
    let per_10ms = u64::from(apic.measure_timer(time::tsc_hz() / 100));
    let count = u32::try_from(per_10ms * 100 / HZ).map_err(|_| TimerError::Stopped)?;
    if count == 0 {
        return Err(TimerError::Stopped);
    }
    apic.start_periodic(VECTOR, count);
    APIC_BASE.store(base, Ordering::Relaxed);
    Ok(())
}

/// Whether the timer runs (so that `hlt` is woken at least every tick).
pub fn running() -> bool {
    APIC_BASE.load(Ordering::Relaxed) != 0
}

fn apic() -> Option<Apic> {
    let base = APIC_BASE.load(Ordering::Relaxed);
    // SAFETY: a nonzero base was stored by `start`, after which the page is
    // mapped for good; interrupt handlers run one at a time (interrupt
    // gates) and the APIC has no other user.
    (base != 0).then(|| unsafe { Apic::new(base) })
}

/// Signals end-of-interrupt to the local APIC (for vectors it delivered).
pub fn eoi() {
    if let Some(apic) = apic() {
        apic.eoi();
    }
}

/// The tick: `rip` is where the interrupt came in. The EOI comes after the
/// poll, so a stop here shows this handler as the innermost frame (gdb
/// unwinds from it through the interrupt into the interrupted code).
pub fn on_interrupt(rip: u64) {
    if !cpu::interrupted_idle(rip) {
        ukdb_stub::poll();
    }
    eoi();
}
