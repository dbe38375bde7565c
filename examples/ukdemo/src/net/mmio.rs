//! virtio-mmio: the devices the hypervisor announces on the kernel command
//! line as `virtio_mmio.device=SIZE@ADDR:IRQ` (QEMU's microvm and
//! Firecracker do), probed for the first network device.

use super::Location;
use crate::paging;
use core::ptr::NonNull;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

/// One `virtio_mmio.device=` entry: its register window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Physical address of the registers.
    pub addr: u64,
    /// Size of the window in bytes.
    pub size: u64,
}

/// A number as Linux's `memparse` reads it: decimal, or hexadecimal after
/// `0x`, with an optional `K`, `M` or `G` suffix.
fn number(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'k' | b'K' => (text.get(..text.len() - 1)?, 10),
        b'm' | b'M' => (text.get(..text.len() - 1)?, 20),
        b'g' | b'G' => (text.get(..text.len() - 1)?, 30),
        _ => (text, 0),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    value.checked_mul(1 << shift)
}

/// The window of a `SIZE@ADDR:IRQ` value (the IRQ is not used: the
/// example polls).
pub fn parse(value: &str) -> Option<Window> {
    let (size, rest) = value.split_once('@')?;
    let addr = rest.split(':').next()?;
    Some(Window { addr: number(addr)?, size: number(size)? })
}

/// The windows the command line announces, in order.
pub fn windows(cmdline: &str) -> impl Iterator<Item = Window> + '_ {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("virtio_mmio.device="))
        .filter_map(parse)
}

/// The first announced virtio-mmio network device other than `skip`.
pub fn find(cmdline: &str, skip: Option<Location>) -> Option<(SomeTransport<'static>, Location)> {
    for window in windows(cmdline) {
        let here = Location::Mmio(window.addr);
        if skip == Some(here) || window.addr % 4 != 0 {
            continue;
        }
        // SAFETY: the hypervisor announced a device's register window
        // there (not RAM the kernel uses: the loader's memory map keeps it
        // out); boot runs on one CPU with interrupts off and nothing else
        // changes the page tables.
        if let Err(e) = unsafe { paging::map_mmio(window.addr, window.size) } {
            crate::println!(
                "ukdemo: net: virtio-mmio at {:#x} not mapped: {}",
                window.addr,
                e.reason()
            );
            continue;
        }
        let header = NonNull::new(window.addr as usize as *mut VirtIOHeader);
        let size = usize::try_from(window.size).unwrap_or(0);
        // SAFETY: the window is mapped (identity, uncached) for good unless
        // it is given back below, 4-byte aligned, and it is only used
        // through this transport from now on.
        let transport = header.and_then(|h| unsafe { MmioTransport::new(h, size) }.ok());
        match transport {
            Some(t) if t.device_type() == DeviceType::Network => {
                return Some((SomeTransport::Mmio(t), here));
            }
            other => {
                // Not ours: forgotten rather than dropped, since dropping
                // resets the device (which someone else may drive).
                core::mem::forget(other);
                // SAFETY: mapped just above; the transport is gone.
                unsafe { paging::unmap_mmio(window.addr, window.size) };
            }
        }
    }
    None
}
