//! virtio-net over PCI: configuration space through ports 0xCF8/0xCFC, the
//! device's capabilities checked before virtio-drivers' `PciTransport`
//! reads them, and the queue notification address worked out once.
//!
//! virtio-drivers trusts the capability list: a capability near the end of
//! the 256-byte space overflows its `u8` offsets, a BAR index above 5 reads
//! other registers, `offset + length` may overflow, a list that loops never
//! ends, and a `queue_notify_off` past the notification region fails an
//! `unwrap`. [`check_caps`] refuses all of that first (pure, host-tested).

use super::hal::{self, StubHal};
use super::VirtioError;
use core::arch::asm;
use core::ptr::NonNull;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Configuration mechanism #1 (ports 0xCF8/0xCFC), bus 0..255.
pub struct PortCam;

impl PortCam {
    fn address(df: DeviceFunction, offset: u8) -> u32 {
        0x8000_0000
            | u32::from(df.bus) << 16
            | u32::from(df.device & 0x1f) << 11
            | u32::from(df.function & 0x7) << 8
            | u32::from(offset & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        let v: u32;
        // SAFETY: ports 0xCF8/0xCFC are the PCI configuration mechanism; the
        // stub uses them only during `dedicated`, in one sequence each.
        unsafe {
            asm!("out dx, eax", in("dx") CONFIG_ADDRESS, in("eax") Self::address(df, offset),
                 options(nomem, nostack, preserves_flags));
            asm!("in eax, dx", in("dx") CONFIG_DATA, out("eax") v,
                 options(nomem, nostack, preserves_flags));
        }
        v
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`; virtio-drivers writes only the command
        // register and the BARs (sizing them, then restoring them).
        unsafe {
            asm!("out dx, eax", in("dx") CONFIG_ADDRESS, in("eax") Self::address(df, offset),
                 options(nomem, nostack, preserves_flags));
            asm!("out dx, eax", in("dx") CONFIG_DATA, in("eax") data,
                 options(nomem, nostack, preserves_flags));
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// The first virtio-net function on bus 0.
pub fn find_first() -> Option<DeviceFunction> {
    PciRoot::new(PortCam)
        .enumerate_bus(0)
        .find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network))
        .map(|(df, _)| df)
}

/// Whether the function is a virtio-net device (`None`: nothing there).
pub fn is_net(df: DeviceFunction) -> Option<bool> {
    let id = PortCam.read_word(df, 0);
    if id == u32::MAX {
        return None;
    }
    let (vendor, device) = (id as u16, (id >> 16) as u16);
    // Transitional (0x1000) or modern (0x1040 + 1).
    Some(vendor == 0x1af4 && (device == 0x1000 || device == 0x1041))
}

/// A virtio structure in a BAR, from a vendor capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// BAR index, 0..=5.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length (at most [`MAX_REGION`]).
    pub length: u32,
}

/// Where the device's common configuration and notification registers
/// are, as virtio-drivers will find them (the first capability of each
/// type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `VIRTIO_PCI_CAP_COMMON_CFG`.
    pub common: Region,
    /// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
    pub notify: Region,
    /// Its `notify_off_multiplier`.
    pub multiplier: u32,
}

/// Why a device's capabilities were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// No capability list.
    NoList,
    /// More entries than fit in the space: the list loops.
    Loop,
    /// A vendor capability too close to the end of the space.
    Offset,
    /// A BAR index above 5.
    Bar,
    /// `offset + length` overflows, or a region longer than [`MAX_REGION`].
    Length,
    /// No common configuration or notification capability, or a region too
    /// short for its registers.
    Missing,
}

/// The longest register region accepted (QEMU's are 4 KiB).
pub const MAX_REGION: u32 = 1 << 20;
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
/// The size of `virtio_pci_common_cfg`.
pub const COMMON_LEN: u32 = 56;

/// Walks the capability list the way virtio-drivers does, refusing what
/// would make it overflow, read out of range or loop. `read(offset)` reads
/// a dword of configuration space.
pub fn check_caps(read: impl Fn(u8) -> u32) -> Result<Caps, CapError> {
    const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
    if read(0x04) & STATUS_CAP_LIST == 0 {
        return Err(CapError::NoList);
    }
    let mut next = Some((read(0x34) & 0xfc) as u8);
    let (mut common, mut notify, mut multiplier) = (None, None, 0);
    // At most 48 capabilities fit between 0x40 and 0x100.
    for _ in 0..48 {
        let Some(offset) = next else {
            let (common, notify) =
                (common.ok_or(CapError::Missing)?, notify.ok_or(CapError::Missing)?);
            return Ok(Caps { common, notify, multiplier });
        };
        let header = read(offset);
        let (id, link, cap_len, cfg_type) =
            (header as u8, (header >> 8) as u8, (header >> 16) as u8, (header >> 24) as u8);
        // The same rule as virtio-drivers' iterator.
        next = (link >= 64 && link & 3 == 0).then_some(link);
        if id != CAP_VENDOR || cap_len < 16 {
            continue;
        }
        // virtio-drivers reads up to offset + 16 (a u8 sum).
        if offset > 0xec {
            return Err(CapError::Offset);
        }
        let region = Region {
            bar: read(offset + 4) as u8,
            offset: read(offset + 8),
            length: read(offset + 12),
        };
        match cfg_type {
            CFG_COMMON if common.is_none() => common = Some(check_region(region, COMMON_LEN)?),
            CFG_NOTIFY if cap_len >= 20 && notify.is_none() => {
                notify = Some(check_region(region, 2)?);
                multiplier = read(offset + 16);
            }
            // The ISR and device regions are mapped by virtio-drivers too.
            3 | 4 => {
                check_region(region, 1)?;
            }
            _ => {}
        }
    }
    Err(CapError::Loop)
}

fn check_region(region: Region, min_len: u32) -> Result<Region, CapError> {
    if region.bar > 5 {
        return Err(CapError::Bar);
    }
    if region.offset.checked_add(region.length).is_none() || region.length > MAX_REGION {
        return Err(CapError::Length);
    }
    if region.length < min_len {
        return Err(CapError::Missing);
    }
    Ok(region)
}

/// The byte offset of a queue's notification register in the notification
/// region, when the register lies inside it.
pub fn notify_offset(queue_notify_off: u16, multiplier: u32, length: u32) -> Option<u32> {
    let at = u64::from(queue_notify_off) * u64::from(multiplier);
    (at + 2 <= u64::from(length) && multiplier.is_multiple_of(2)).then_some(at as u32)
}

/// The physical address a memory BAR was given (`None`: an I/O BAR, or a
/// 64-bit BAR in the last slot, or no address).
fn bar_address(df: DeviceFunction, bar: u8) -> Option<u64> {
    let reg = 0x10 + 4 * bar;
    let low = PortCam.read_word(df, reg);
    if low & 1 != 0 {
        return None;
    }
    let high = if low & 0b110 == 0b100 {
        if bar >= 5 {
            return None;
        }
        PortCam.read_word(df, reg + 4)
    } else {
        0
    };
    let addr = u64::from(low & !0xf) | u64::from(high) << 32;
    (addr != 0).then_some(addr)
}

fn region_virt(df: DeviceFunction, r: Region) -> Result<NonNull<u8>, VirtioError> {
    let pa = bar_address(df, r.bar)
        .and_then(|b| b.checked_add(u64::from(r.offset)))
        .ok_or(VirtioError::PciBar)?;
    hal::mmio_virt(pa, r.length as usize).ok_or(VirtioError::RegistersNotMapped)
}

/// Checks the function's capabilities and registers (the notification
/// register of queues 0 and 1 inside its region), then makes the transport.
pub fn open(df: DeviceFunction) -> Result<PciTransport, VirtioError> {
    let caps = check_caps(|offset| PortCam.read_word(df, offset)).map_err(VirtioError::PciCaps)?;
    let common = region_virt(df, caps.common)?;
    region_virt(df, caps.notify)?;
    for queue in 0u16..2 {
        // SAFETY: `common` maps `virtio_pci_common_cfg` (at least 56 bytes,
        // checked): queue_select is the u16 at 22, queue_notify_off the u16
        // at 30. Selecting a queue has no other effect; no transport exists
        // yet, so nothing else accesses these registers.
        let off = unsafe {
            common.as_ptr().add(22).cast::<u16>().write_volatile(queue);
            common.as_ptr().add(30).cast::<u16>().read_volatile()
        };
        // `PciTransport::notify` unwraps the register's index in the region.
        notify_offset(off, caps.multiplier, caps.notify.length)
            .ok_or(VirtioError::PciCaps(CapError::Length))?;
    }
    let mut root = PciRoot::new(PortCam);
    hal::take_mmio_refused();
    let transport =
        PciTransport::new::<StubHal, _>(&mut root, df).map_err(VirtioError::from_pci)?;
    if hal::take_mmio_refused() {
        // Points at scratch memory: dropping it (a reset) touches only that.
        drop(transport);
        return Err(VirtioError::RegistersNotMapped);
    }
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration space of 64 dwords.
    struct Space([u32; 64]);

    impl Space {
        fn new() -> Space {
            let mut s = Space([0; 64]);
            s.0[1] = 1 << 20; // status: capability list
            s.0[0x34 / 4] = 0x40;
            s
        }
        /// A vendor capability at `at` linking to `next`.
        fn cap(&mut self, at: u8, next: u8, len: u8, ty: u8, region: (u8, u32, u32)) -> &mut Self {
            let i = at as usize / 4;
            self.0[i] = 0x09 | u32::from(next) << 8 | u32::from(len) << 16 | u32::from(ty) << 24;
            self.0[i + 1] = u32::from(region.0);
            self.0[i + 2] = region.1;
            self.0[i + 3] = region.2;
            if len >= 20 && i + 4 < 64 {
                self.0[i + 4] = 4;
            }
            self
        }
        fn check(&self) -> Result<Caps, CapError> {
            check_caps(|o| self.0.get(o as usize / 4).copied().unwrap_or(u32::MAX))
        }
    }

    fn qemu() -> Space {
        let mut s = Space::new();
        s.cap(0x40, 0x50, 16, 1, (4, 0, 0x1000))
            .cap(0x50, 0x60, 16, 3, (4, 0x1000, 0x1000))
            .cap(0x60, 0x70, 16, 4, (4, 0x2000, 0x1000))
            .cap(0x70, 0, 20, 2, (4, 0x3000, 0x1000));
        s
    }

    #[test]
    fn accepts_qemus_layout() {
        assert_eq!(
            qemu().check(),
            Ok(Caps {
                common: Region { bar: 4, offset: 0, length: 0x1000 },
                notify: Region { bar: 4, offset: 0x3000, length: 0x1000 },
                multiplier: 4,
            })
        );
    }

    #[test]
    fn refuses_hostile_lists() {
        let mut s = Space::new();
        s.0[1] = 0;
        assert_eq!(s.check(), Err(CapError::NoList));
        // A loop.
        let mut s = qemu();
        s.cap(0x70, 0x40, 20, 2, (4, 0x3000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Loop));
        // A one-entry loop on a non-vendor capability.
        let mut s = Space::new();
        s.0[0x40 / 4] = 0x05 | 0x40 << 8;
        assert_eq!(s.check(), Err(CapError::Loop));
        // A vendor capability at the end of the space.
        let mut s = qemu();
        s.cap(0x70, 0xf0, 20, 2, (4, 0x3000, 0x1000)).cap(0xf0, 0, 16, 3, (4, 0, 16));
        assert_eq!(s.check(), Err(CapError::Offset));
        // A BAR index past 5.
        let mut s = qemu();
        s.cap(0x50, 0x60, 16, 3, (60, 0x1000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Bar));
        // offset + length overflows.
        let mut s = qemu();
        s.cap(0x40, 0x50, 16, 1, (4, 0xffff_f000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Length));
        let mut s = qemu();
        s.cap(0x40, 0x50, 16, 1, (4, 0, MAX_REGION + 1));
        assert_eq!(s.check(), Err(CapError::Length));
        // Too short for its registers, or absent.
        let mut s = qemu();
        s.cap(0x40, 0x50, 16, 1, (4, 0, 55));
        assert_eq!(s.check(), Err(CapError::Missing));
        let mut s = qemu();
        s.cap(0x60, 0, 16, 4, (4, 0x2000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Missing));
        // A notification capability too short for its multiplier is not one.
        let mut s = qemu();
        s.cap(0x70, 0, 16, 2, (4, 0x3000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Missing));
    }

    #[test]
    fn misaligned_or_low_links_end_the_list_as_in_virtio_drivers() {
        let mut s = qemu();
        s.cap(0x60, 0x71, 16, 4, (4, 0x2000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Missing));
        let mut s = qemu();
        s.cap(0x60, 0x3c, 16, 4, (4, 0x2000, 0x1000));
        assert_eq!(s.check(), Err(CapError::Missing));
    }

    #[test]
    fn notification_registers_must_lie_in_the_region() {
        assert_eq!(notify_offset(0, 4, 0x1000), Some(0));
        assert_eq!(notify_offset(1, 4, 0x1000), Some(4));
        assert_eq!(notify_offset(1, 0x1000, 0x2000), Some(0x1000));
        assert_eq!(notify_offset(1, 0x1000, 0x1000), None);
        assert_eq!(notify_offset(0x3ff, 4, 0x1000), Some(0xffc));
        assert_eq!(notify_offset(0x400, 4, 0x1000), None);
        assert_eq!(notify_offset(u16::MAX, u32::MAX, u32::MAX), None);
        assert_eq!(notify_offset(1, 3, 0x1000), None);
        assert_eq!(notify_offset(0, 0, 1), None);
    }
}
