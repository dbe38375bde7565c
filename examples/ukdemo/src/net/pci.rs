//! PCI: configuration space through the legacy I/O ports (0xCF8/0xCFC,
//! which q35 and i440fx have), a scan of bus 0 and the buses behind its
//! bridges for a virtio-net function, and its virtio structures mapped.

use super::hal::Hal;
use super::Location;
use crate::paging;
use crate::port::{inl, outl};
use virtio_drivers::transport::pci::bus::{
    Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
    PCI_CAP_ID_VNDR,
};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::{DeviceType, SomeTransport};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// The transitional (legacy-capable) virtio-net device ID.
const TRANSITIONAL_NET: u16 = 0x1000;
/// Virtio device type of a network card (a transitional device's subsystem ID).
const VIRTIO_NET_TYPE: u32 = 1;
/// Where a virtio capability names its BAR, offset and length.
const CAP_BAR: u8 = 4;
const CAP_OFFSET: u8 = 8;
const CAP_LENGTH: u8 = 12;
/// At most this many buses are scanned (bus 0 and those behind bridges).
const MAX_BUSES: usize = 16;
/// At most this many virtio structures are mapped for one device.
const MAX_REGIONS: usize = 8;

/// PCI configuration mechanism #1 through I/O ports 0xCF8 (address) and
/// 0xCFC (data). The ports belong to this module: nothing else in the
/// example uses them, and the probe runs during boot on one CPU.
pub struct PortCam;

fn address(df: DeviceFunction, offset: u8) -> u32 {
    0x8000_0000
        | u32::from(df.bus) << 16
        | u32::from(df.device & 0x1f) << 11
        | u32::from(df.function & 0x7) << 8
        | u32::from(offset & 0xfc)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: the configuration ports belong to this module (see
        // `PortCam`); an address write followed by a data read is the
        // mechanism's protocol, and reads of configuration space have no
        // side effects.
        unsafe {
            outl(CONFIG_ADDRESS, address(df, offset));
            inl(CONFIG_DATA)
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`; virtio-drivers writes the command
        // register and sizes BARs (restoring them) of the device it probes.
        unsafe {
            outl(CONFIG_ADDRESS, address(df, offset));
            outl(CONFIG_DATA, data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// Whether `info` is a virtio network function: modern (0x1041) or
/// transitional (0x1000, with the network type as its subsystem ID).
fn is_virtio_net(df: DeviceFunction, info: &DeviceFunctionInfo) -> bool {
    if virtio_device_type(info) != Some(DeviceType::Network) {
        return false;
    }
    info.device_id != TRANSITIONAL_NET || read(df, 0x2c) >> 16 == VIRTIO_NET_TYPE
}

/// A configuration-space read beside `PciRoot` (the ports are stateless
/// between an address write and its data access, and boot is one CPU).
fn read(df: DeviceFunction, offset: u8) -> u32 {
    PortCam.read_word(df, offset)
}

/// The first virtio-net function on bus 0 or behind its bridges, other
/// than `skip`, opened as a transport.
pub fn find(skip: Option<Location>) -> Option<(SomeTransport<'static>, Location)> {
    let mut root = PciRoot::new(PortCam);
    let mut buses = [0u8; MAX_BUSES];
    let mut count = 1;
    let mut next = 0;
    while let Some(&bus) = buses.get(next).filter(|_| next < count) {
        next += 1;
        for (df, info) in root.enumerate_bus(bus) {
            if info.header_type == HeaderType::PciPciBridge {
                let secondary = (read(df, 0x18) >> 8) as u8;
                let known = buses.get(..count).is_some_and(|b| b.contains(&secondary));
                if secondary != 0 && !known && count < MAX_BUSES {
                    if let Some(slot) = buses.get_mut(count) {
                        *slot = secondary;
                        count += 1;
                    }
                }
                continue;
            }
            let here = Location::Pci { bus: df.bus, device: df.device, function: df.function };
            if !is_virtio_net(df, &info) || skip == Some(here) {
                continue;
            }
            match open(&mut root, df) {
                Ok(transport) => return Some((transport, here)),
                Err(why) => {
                    crate::println!("ukdemo: net: virtio-net (pci {}) not usable: {}", df, why)
                }
            }
        }
    }
    None
}

/// A region mapped for the device, to undo when it cannot be used.
#[derive(Clone, Copy, Default)]
struct Region {
    addr: u64,
    len: u64,
}

/// Maps the device's virtio structures (only those, page by page), turns
/// on memory decoding and bus mastering, and opens the transport.
fn open(
    root: &mut PciRoot<PortCam>,
    df: DeviceFunction,
) -> Result<SomeTransport<'static>, &'static str> {
    let mut regions = [Region::default(); MAX_REGIONS];
    let mut mapped = 0;
    let caps: [Option<(u8, u32, u32)>; MAX_REGIONS] = {
        let mut caps = [None; MAX_REGIONS];
        let vendor = root.capabilities(df).filter(|c| c.id == PCI_CAP_ID_VNDR);
        for (slot, cap) in caps.iter_mut().zip(vendor) {
            let bar = read(df, cap.offset.wrapping_add(CAP_BAR)) as u8;
            let offset = read(df, cap.offset.wrapping_add(CAP_OFFSET));
            let length = read(df, cap.offset.wrapping_add(CAP_LENGTH));
            *slot = Some((bar, offset, length));
        }
        caps
    };
    let mut result = Ok(());
    for (bar, offset, length) in caps.into_iter().flatten() {
        if bar >= 6 || length == 0 {
            continue;
        }
        let Ok(Some(info)) = root.bar_info(df, bar) else { continue };
        let Some((base, size)) = info.memory_address_size() else { continue };
        if base == 0 || u64::from(offset) + u64::from(length) > size {
            continue;
        }
        let region = Region { addr: base + u64::from(offset), len: u64::from(length) };
        // SAFETY: the region lies in a memory BAR the firmware assigned to
        // this device (device registers, not RAM); boot runs on one CPU
        // with interrupts off and nothing else changes the page tables.
        if let Err(e) = unsafe { paging::map_mmio(region.addr, region.len) } {
            result = Err(e.reason());
            break;
        }
        if let Some(slot) = regions.get_mut(mapped) {
            *slot = region;
            mapped += 1;
        }
    }
    let opened = result.and_then(|()| {
        let (_, command) = root.get_status_command(df);
        root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
        PciTransport::new::<Hal, PortCam>(root, df).map_err(|_| "no usable virtio structures")
    });
    match opened {
        Ok(transport) => Ok(SomeTransport::Pci(transport)),
        Err(why) => {
            for region in regions.iter().take(mapped) {
                // SAFETY: mapped above for this device, which is not used.
                unsafe { paging::unmap_mmio(region.addr, region.len) };
            }
            Err(why)
        }
    }
}
