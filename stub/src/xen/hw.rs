//! The privileged half of the Xen console: finding the ring and notifying
//! the backend, on Xen (CPUID, the hypercall page, `HVMOP_get_param`,
//! `EVTCHNOP_send`) and on the ivshmem model (PCI configuration space).
//!
//! The `xen-sys` crate (0.0.0-pre2) was evaluated and not used: it has none
//! of `HVMOP_get_param`, the `HVM_PARAM_*` indices or `xencons_interface`,
//! its hypercall wrappers need the image to define a `HYPERCALL_PAGE` symbol
//! and declare `call` with `nostack`, and it pins `cty = "=0.2.0"`. The few
//! definitions needed are written here by hand from Xen's public headers
//! (MIT), each named below.

use super::ring::RawPage;
use super::{Platform, XenConsole, XenError};
use core::arch::{asm, global_asm};

// --- xen/include/public/xen.h -------------------------------------------
/// `__HYPERVISOR_event_channel_op`.
const HYPERVISOR_EVENT_CHANNEL_OP: usize = 32;
/// `__HYPERVISOR_hvm_op`.
const HYPERVISOR_HVM_OP: usize = 34;
/// `DOMID_SELF`.
const DOMID_SELF: u16 = 0x7FF0;

// --- xen/include/public/hvm/hvm_op.h -------------------------------------
/// `HVMOP_get_param`.
const HVMOP_GET_PARAM: u64 = 1;

/// `struct xen_hvm_param`: `domid_t domid; uint32_t index; uint64_t value`.
#[repr(C)]
struct XenHvmParam {
    domid: u16,
    _pad: u16,
    index: u32,
    value: u64,
}
const _: () = {
    assert!(core::mem::offset_of!(XenHvmParam, index) == 4);
    assert!(core::mem::offset_of!(XenHvmParam, value) == 8);
    assert!(core::mem::size_of::<XenHvmParam>() == 16);
};

// --- xen/include/public/hvm/params.h -------------------------------------
/// `HVM_PARAM_CONSOLE_PFN`: the frame of the console ring.
const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`: the console's event channel.
const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

// --- xen/include/public/event_channel.h ----------------------------------
/// `EVTCHNOP_send`.
const EVTCHNOP_SEND: u64 = 4;

/// `struct evtchn_send { evtchn_port_t port; }`.
#[repr(C)]
struct EvtchnSend {
    port: u32,
}
const _: () = assert!(core::mem::size_of::<EvtchnSend>() == 4);

// --- CPUID leaves (xen/include/public/arch-x86/cpuid.h) --------------------
/// Where Xen's leaves may start: 0x40000000, then every 0x100 (Xen moves
/// them up when it also presents Viridian leaves).
const CPUID_FIRST: u32 = 0x4000_0000;
const CPUID_LAST: u32 = 0x4001_0000;
/// "XenVMMXenVMM" in ebx, ecx, edx.
const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x65584d4d, 0x4d4d566e];

/// Guest-physical to virtual for an identity-mapped unikernel.
pub fn identity_phys_to_virt(phys: u64) -> *mut u8 {
    phys as usize as *mut u8
}

/// Virtual to guest-physical for an identity-mapped unikernel.
pub fn identity_virt_to_phys(virt: *const u8) -> u64 {
    virt as usize as u64
}

// The hypercall page: Xen writes 32-byte entry stubs into it (through its
// physical address, whatever the guest's page tables say), so it lives in
// an executable section and is never read or written by Rust code.
global_asm!(
    ".pushsection .text.ukdb_xen_hypercall_page,\"ax\",@progbits",
    ".balign 4096",
    // Global (hidden): the `lea` below may land in another codegen unit.
    ".globl ukdb_xen_hypercall_page",
    ".hidden ukdb_xen_hypercall_page",
    "ukdb_xen_hypercall_page:",
    ".fill 4096, 1, 0xcc",
    ".popsection",
);

fn hypercall_page() -> *const u8 {
    let p: *const u8;
    // SAFETY: only takes the address of the page defined above.
    unsafe {
        asm!("lea {}, [rip + ukdb_xen_hypercall_page]", out(reg) p,
             options(nomem, nostack, preserves_flags))
    };
    p
}

/// A two-argument hypercall through the hypercall page.
///
/// # Safety
/// The hypercall page has been filled in by Xen ([`Xen::detect`]), and the
/// arguments are valid for hypercall `nr` (pointers to live structures of
/// the header's layout).
unsafe fn hypercall2(nr: usize, a1: u64, a2: u64) -> i64 {
    let entry = hypercall_page().wrapping_add(nr * 32);
    let ret: i64;
    // SAFETY: per the function contract; the entry preserves what the
    // 64-bit hypercall ABI preserves, and every caller-saved register is
    // declared clobbered. `call` uses the stack (no red zone on this target).
    unsafe {
        asm!("call {entry}", entry = in(reg) entry,
             inlateout("rdi") a1 => _, inlateout("rsi") a2 => _, lateout("rax") ret,
             clobber_abi("C"))
    };
    ret
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The first Xen CPUID leaf, if running on Xen (and it has base+2).
fn xen_cpuid_base() -> Option<u32> {
    (CPUID_FIRST..CPUID_LAST).step_by(0x100).find(|&base| {
        let [max, b, c, d] = cpuid(base);
        [b, c, d] == XEN_SIGNATURE && max >= base + 2
    })
}

/// Real Xen: the console's event channel, notified with `EVTCHNOP_send`.
#[derive(Debug)]
pub struct Xen {
    evtchn: u32,
}

impl Xen {
    /// Detects Xen and sets up the hypercall page (idempotent: Xen rewrites
    /// the same page).
    ///
    /// # Safety
    /// `virt_to_phys` translates the stub's own code addresses correctly.
    unsafe fn detect(virt_to_phys: fn(*const u8) -> u64) -> Result<(), XenError> {
        let base = xen_cpuid_base().ok_or(XenError::NotXen)?;
        let [pages, msr, _, _] = cpuid(base + 2);
        if pages == 0 {
            return Err(XenError::NoHypercallPage);
        }
        let phys = virt_to_phys(hypercall_page());
        // SAFETY: Xen named this MSR for exactly this: writing a page's
        // guest-physical address makes Xen fill it with hypercall entries.
        // The page is ours (defined above), executable and unused otherwise.
        unsafe {
            asm!("wrmsr", in("ecx") msr, in("eax") phys as u32, in("edx") (phys >> 32) as u32,
                 options(nostack, preserves_flags))
        };
        Ok(())
    }

    fn get_param(index: u32) -> Result<u64, XenError> {
        let mut p = XenHvmParam { domid: DOMID_SELF, _pad: 0, index, value: 0 };
        // SAFETY: called after `detect`; `p` is a live `xen_hvm_param` (Xen
        // takes guest-virtual addresses from HVM and PVH guests).
        let rc =
            unsafe { hypercall2(HYPERVISOR_HVM_OP, HVMOP_GET_PARAM, &raw mut p as usize as u64) };
        if rc < 0 {
            return Err(XenError::Hypercall(rc));
        }
        Ok(p.value)
    }
}

impl Platform for Xen {
    fn notify(&mut self) {
        let mut send = EvtchnSend { port: self.evtchn };
        // SAFETY: a `Xen` exists only after `detect`; `send` is a live
        // `evtchn_send`. A failure only means the backend is not told now;
        // it polls the ring on its next event.
        let _ = unsafe {
            hypercall2(HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_SEND, &raw mut send as usize as u64)
        };
    }

    fn name(&self) -> &'static str {
        "xen-console"
    }
}

impl XenConsole<Xen> {
    /// The domain's PV console on Xen (PVH or HVM): detects Xen by CPUID,
    /// sets up the hypercall page, reads the ring's frame and event channel.
    ///
    /// # Safety
    /// Call with interrupts off or before they are on, once. `phys_to_virt`
    /// maps the console frame (Xen puts it among the special pages at the
    /// top of low memory) readable and writable; `virt_to_phys` translates
    /// the stub's code addresses. The unikernel itself does not drive the
    /// console ring (its console writes go through
    /// [`crate::console_write`]).
    pub unsafe fn xen(
        phys_to_virt: fn(u64) -> *mut u8,
        virt_to_phys: fn(*const u8) -> u64,
    ) -> Result<Self, XenError> {
        // SAFETY: per this function's contract.
        unsafe { Xen::detect(virt_to_phys) }?;
        let pfn = Xen::get_param(HVM_PARAM_CONSOLE_PFN)?;
        if pfn == 0 {
            return Err(XenError::NoConsole);
        }
        let evtchn = Xen::get_param(HVM_PARAM_CONSOLE_EVTCHN)? as u32;
        let phys = pfn.checked_mul(4096).ok_or(XenError::BadAddress)?;
        // SAFETY: Xen's console frame, mapped by the caller (contract); the
        // backend follows the ring protocol or at worst writes bad indices.
        let page = unsafe { RawPage::new(phys_to_virt(phys)) }.ok_or(XenError::BadAddress)?;
        Ok(XenConsole::from_parts(page, Xen { evtchn }))
    }
}

// --- the ivshmem model -------------------------------------------------------

const PCI_CONFIG_ADDRESS: u16 = 0xCF8;
const PCI_CONFIG_DATA: u16 = 0xCFC;
/// Red Hat, Inc. (virtio and QEMU's own devices).
const IVSHMEM_VENDOR: u16 = 0x1af4;
/// `ivshmem-plain` (and the older `ivshmem`).
const IVSHMEM_DEVICE: u16 = 0x1110;
/// BAR2: the shared memory.
const BAR2: u8 = 0x18;
const COMMAND: u8 = 0x04;
const COMMAND_MEMORY: u32 = 1 << 1;

fn pci_address(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    0x8000_0000
        | u32::from(bus) << 16
        | u32::from(dev & 0x1f) << 11
        | u32::from(func & 0x7) << 8
        | u32::from(offset & 0xfc)
}

fn pci_read(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    let v: u32;
    // SAFETY: ports 0xCF8/0xCFC are PCI configuration mechanism #1; a read
    // of configuration space changes no device state. Called only while
    // the stub is being set up, before the unikernel's drivers run or with
    // the world stopped.
    unsafe {
        asm!("out dx, eax", in("dx") PCI_CONFIG_ADDRESS, in("eax") pci_address(bus, dev, func, offset),
             options(nomem, nostack, preserves_flags));
        asm!("in eax, dx", in("dx") PCI_CONFIG_DATA, out("eax") v,
             options(nomem, nostack, preserves_flags));
    }
    v
}

fn pci_write(bus: u8, dev: u8, func: u8, offset: u8, v: u32) {
    // SAFETY: as in `pci_read`; the only write is the ivshmem device's
    // command register (memory decoding on), a device the stub owns.
    unsafe {
        asm!("out dx, eax", in("dx") PCI_CONFIG_ADDRESS, in("eax") pci_address(bus, dev, func, offset),
             options(nomem, nostack, preserves_flags));
        asm!("out dx, eax", in("dx") PCI_CONFIG_DATA, in("eax") v,
             options(nomem, nostack, preserves_flags));
    }
}

/// The backend model: the ring is the first page of an ivshmem-plain
/// device's BAR2; the backend polls, so notifying does nothing.
#[derive(Debug)]
pub struct IvshmemModel {
    bar2: u64,
}

impl IvshmemModel {
    /// The guest-physical address of the shared memory (BAR2).
    pub fn bar2(&self) -> u64 {
        self.bar2
    }

    /// The first ivshmem device's BAR2 on buses 0-255 (function 0 of
    /// each device), with memory decoding turned on.
    fn find() -> Result<u64, XenError> {
        for bus in 0..=255u8 {
            for dev in 0..32u8 {
                let id = pci_read(bus, dev, 0, 0);
                if id as u16 != IVSHMEM_VENDOR || (id >> 16) as u16 != IVSHMEM_DEVICE {
                    continue;
                }
                let low = pci_read(bus, dev, 0, BAR2);
                if low & 1 != 0 {
                    return Err(XenError::BadBar);
                }
                let high = if low & 0b110 == 0b100 { pci_read(bus, dev, 0, BAR2 + 4) } else { 0 };
                let addr = u64::from(low & !0xf) | u64::from(high) << 32;
                if addr == 0 {
                    return Err(XenError::BadBar);
                }
                let cmd = pci_read(bus, dev, 0, COMMAND);
                if cmd & COMMAND_MEMORY == 0 {
                    pci_write(bus, dev, 0, COMMAND, (cmd & 0xffff) | COMMAND_MEMORY);
                }
                return Ok(addr);
            }
        }
        Err(XenError::NoIvshmem)
    }
}

impl Platform for IvshmemModel {
    fn notify(&mut self) {}

    fn name(&self) -> &'static str {
        "xen-ring-model"
    }
}

impl XenConsole<IvshmemModel> {
    /// The console ring of the backend model: the first page of the first
    /// ivshmem-plain device's shared memory (PCI 1af4:1110, BAR2).
    ///
    /// # Safety
    /// Call once, before the unikernel's drivers could touch PCI devices or
    /// with the world stopped. `phys_to_virt` maps the BAR's first page
    /// readable, writable and uncached-or-write-back (it is RAM on the host
    /// side). Nothing else in the guest drives the device.
    pub unsafe fn ivshmem(phys_to_virt: fn(u64) -> *mut u8) -> Result<Self, XenError> {
        let bar2 = IvshmemModel::find()?;
        // SAFETY: the BAR is the shared memory, mapped by the caller
        // (contract); the host backend follows the ring protocol or at worst
        // writes bad indices.
        let page = unsafe { RawPage::new(phys_to_virt(bar2)) }.ok_or(XenError::BadAddress)?;
        Ok(XenConsole::from_parts(page, IvshmemModel { bar2 }))
    }
}
