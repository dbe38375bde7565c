//! A time base: the TSC, whose rate comes from the first source that works:
//! 1. CPUID leaf 0x15 (crystal clock times the TSC ratio): recent Intel CPUs,
//!    and hypervisors that pass it through;
//! 2. CPUID leaf 0x40000010 (hypervisor timing leaf, TSC in kHz): offered by
//!    some hypervisors (VMware, QEMU/KVM with `vmware-cpuid-freq`);
//!    Cloud Hypervisor sets it (from KVM's TSC rate) when the host's TSC is
//!    invariant;
//! 3. the KVM clock (`pvclock`): the hypervisor's TSC-to-nanoseconds
//!    multiplier and shift, published in a page of ours through
//!    `MSR_KVM_SYSTEM_TIME_NEW` when CPUID says "KVMKVMKVM" with
//!    `KVM_FEATURE_CLOCKSOURCE2`: every KVM VMM (Firecracker, whose CPUID
//!    has neither leaf above; Cloud Hypervisor without an invariant TSC;
//!    QEMU with KVM). No PIT needed, no waiting;
//! 4. the PIT, channel 2 gated through port 0x61 (10 ms): QEMU q35 (as
//!    here, under TCG, where nothing above is set), Xen HVM;
//! 5. the PIT's channel 0 counter, read back (10 ms): machines with a PIT
//!    but no port 0x61, such as QEMU microvm. Cloud Hypervisor has no PIT
//!    at all (its ports read as all ones, and both PIT methods give up
//!    within milliseconds); Firecracker has KVM's in-kernel PIT, but the
//!    KVM clock answers first;
//! 6. otherwise an assumed 1 GHz, said on the console.
//!
//! The periodic timer (`timer.rs`) is then calibrated against the TSC, so no
//! interrupt source depends on the PIT.

use crate::cpu::{cpuid, wrmsr};
use crate::port::{inb, outb};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(1_000_000_000);

/// Where the TSC rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscSource {
    /// CPUID leaf 0x15.
    CpuidCrystal,
    /// CPUID leaf 0x40000010.
    HypervisorLeaf,
    /// The KVM clock's TSC-to-nanoseconds scale.
    KvmClock,
    /// Measured against the PIT's channel 2 (port 0x61 gate).
    Pit,
    /// Measured against the PIT's channel 0 counter.
    PitCounter,
    /// Nothing worked: 1 GHz assumed.
    Assumed,
}

impl TscSource {
    /// A short name for the boot banner.
    pub fn name(self) -> &'static str {
        match self {
            TscSource::CpuidCrystal => "cpuid 0x15",
            TscSource::HypervisorLeaf => "cpuid 0x40000010",
            TscSource::KvmClock => "kvm clock",
            TscSource::Pit => "pit",
            TscSource::PitCounter => "pit counter",
            TscSource::Assumed => "nothing: 1 GHz assumed",
        }
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Busy-waits for `ticks` TSC ticks.
pub fn spin(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

fn from_cpuid_crystal() -> Option<u64> {
    if cpuid(0)[0] < 0x15 {
        return None;
    }
    let [denominator, numerator, crystal_hz, _] = cpuid(0x15);
    if denominator == 0 || numerator == 0 || crystal_hz == 0 {
        return None;
    }
    Some(u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator))
}

fn from_hypervisor_leaf() -> Option<u64> {
    // CPUID.1:ECX bit 31: running under a hypervisor.
    if cpuid(1)[2] & (1 << 31) == 0 || cpuid(0x4000_0000)[0] < 0x4000_0010 {
        return None;
    }
    let khz = cpuid(0x4000_0010)[0];
    (khz != 0).then(|| u64::from(khz) * 1000)
}

/// `MSR_KVM_SYSTEM_TIME_NEW`: the guest physical address of a
/// `pvclock_vcpu_time_info`, bit 0 set to enable.
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// `KVM_FEATURE_CLOCKSOURCE2` in CPUID 0x40000001 EAX.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

/// `struct pvclock_vcpu_time_info` (Linux `include/uapi/.../pvclock-abi.h`,
/// 32 bytes, written by the hypervisor). Only `version`,
/// `tsc_to_system_mul` and `tsc_shift` are read.
#[repr(C, align(32))]
struct PvclockTimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

/// The KVM clock's page while [`from_kvm_clock`] reads it; the hypervisor
/// writes it only between enabling and disabling the MSR there.
static mut KVM_CLOCK: PvclockTimeInfo = PvclockTimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
};

/// Whether CPUID's hypervisor leaves say KVM with the new clock MSRs.
fn has_kvm_clock() -> bool {
    if cpuid(1)[2] & (1 << 31) == 0 {
        return false;
    }
    let [max, b, c, d] = cpuid(0x4000_0000);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&b.to_le_bytes());
    sig[4..8].copy_from_slice(&c.to_le_bytes());
    sig[8..].copy_from_slice(&d.to_le_bytes());
    &sig == b"KVMKVMKVM\0\0\0"
        && max >= 0x4000_0001
        && cpuid(0x4000_0001)[0] & KVM_FEATURE_CLOCKSOURCE2 != 0
}

/// The TSC rate from the KVM clock's scale: nanoseconds are
/// `((tsc << shift) * mul) >> 32` (a right shift when `shift` is negative),
/// so the TSC runs at `10^9 * 2^32 / mul`, shifted the other way.
fn kvm_clock_hz(mul: u32, shift: i8) -> Option<u64> {
    if mul == 0 || !(-32..=32).contains(&shift) {
        return None;
    }
    let base = (1_000_000_000u128 << 32) / u128::from(mul);
    let hz = if shift < 0 { base << shift.unsigned_abs() } else { base >> shift };
    u64::try_from(hz).ok().filter(|&hz| hz >= 10_000_000)
}

/// Reads the TSC rate off the KVM clock: enables it on a page of ours,
/// reads a consistent copy (even version, the same before and after), and
/// disables it again.
fn from_kvm_clock() -> Option<u64> {
    if !has_kvm_clock() {
        return None;
    }
    let info = core::ptr::addr_of_mut!(KVM_CLOCK);
    // The image is identity-mapped (boot.rs, paging.rs): the static's
    // address is its physical address.
    let paddr = info as u64;
    // SAFETY: CPUID says the MSR exists; KVM_CLOCK is this function's, 32
    // bytes aligned to 32 (inside one page), and KVM writes only it.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, paddr | 1) };
    let mut scale = None;
    // KVM publishes the page before the guest runs on after the write;
    // a bounded number of reads copes with an update in progress.
    for _ in 0..1000 {
        // SAFETY: KVM_CLOCK is valid for reads; the hypervisor writes it
        // concurrently, hence volatile reads and the version check.
        let (v1, mul, shift, v2) = unsafe {
            let v1 = core::ptr::addr_of!((*info).version).read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            let mul = core::ptr::addr_of!((*info).tsc_to_system_mul).read_volatile();
            let shift = core::ptr::addr_of!((*info).tsc_shift).read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            (v1, mul, shift, core::ptr::addr_of!((*info).version).read_volatile())
        };
        if v1 == v2 && v1 & 1 == 0 && mul != 0 {
            scale = Some((mul, shift));
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: as above; writing 0 disables the clock, KVM stops writing.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    let (mul, shift) = scale?;
    kvm_clock_hz(mul, shift)
}

/// Measures the TSC over 10 ms of PIT channel 2.
fn from_pit() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    const LATCH: u64 = PIT_HZ / 100;
    // SAFETY: port 0x61 (system control port B: channel 2 gate and output)
    // and ports 0x42/0x43 (channel 2 and the mode register) belong to this
    // function: nothing else in the example uses the PIT, and channel 2 only
    // drives the PC speaker. Without a PIT the ports read as all ones.
    let start = unsafe {
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        outb(0x43, 0xB0);
        outb(0x42, LATCH as u8);
        outb(0x42, (LATCH >> 8) as u8);
        rdtsc()
    };
    // SAFETY: as above (reading the gate's output bit).
    while unsafe { inb(0x61) } & 0x20 == 0 {
        // Give up after 2^32 ticks (1-4 s): the output never rises.
        if rdtsc().wrapping_sub(start) > 1 << 32 {
            return None;
        }
    }
    let hz = rdtsc().wrapping_sub(start) * 100;
    // An output that is high at once means no working PIT.
    (hz >= 10_000_000).then_some(hz)
}

/// Reads PIT channel 0's counter (latch command, then low and high byte).
fn pit_channel0() -> u16 {
    // SAFETY: ports 0x40 (channel 0) and 0x43 (mode register) belong to this
    // module during calibration; nothing else in the example uses the PIT.
    // The latch command freezes the count for the two reads.
    unsafe {
        outb(0x43, 0x00);
        let lo = inb(0x40);
        let hi = inb(0x40);
        u16::from_le_bytes([lo, hi])
    }
}

/// Measures the TSC over 10 ms of PIT channel 0 counting down (mode 0,
/// one-shot: its single IRQ 0 edge is masked at the PICs and the I/O APIC).
fn from_pit_counter() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    const TICKS: u16 = (PIT_HZ / 100) as u16;
    // SAFETY: as in `pit_channel0`: channel 0, lobyte/hibyte, mode 0,
    // binary, counting down from 0xffff.
    unsafe {
        outb(0x43, 0x30);
        outb(0x40, 0xFF);
        outb(0x40, 0xFF);
    }
    // Without a PIT the counter reads 0xffff for good: give up within about
    // a millisecond rather than waiting for it.
    let probe = rdtsc();
    let first = loop {
        let count = pit_channel0();
        if count != 0xFFFF {
            break count;
        }
        if rdtsc().wrapping_sub(probe) > 1 << 22 {
            return None;
        }
    };
    let start = rdtsc();
    loop {
        let elapsed = first.wrapping_sub(pit_channel0());
        if (TICKS..0x8000).contains(&elapsed) {
            let hz = rdtsc().wrapping_sub(start) * PIT_HZ / u64::from(elapsed);
            return (hz >= 10_000_000).then_some(hz);
        }
        if rdtsc().wrapping_sub(start) > 1 << 32 {
            return None;
        }
    }
}

/// Finds the TSC rate (see the module documentation for the sources).
pub fn init() -> TscSource {
    let (hz, source) = if let Some(hz) = from_cpuid_crystal() {
        (hz, TscSource::CpuidCrystal)
    } else if let Some(hz) = from_hypervisor_leaf() {
        (hz, TscSource::HypervisorLeaf)
    } else if let Some(hz) = from_kvm_clock() {
        (hz, TscSource::KvmClock)
    } else if let Some(hz) = from_pit() {
        (hz, TscSource::Pit)
    } else if let Some(hz) = from_pit_counter() {
        (hz, TscSource::PitCounter)
    } else {
        return TscSource::Assumed;
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    source
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}
