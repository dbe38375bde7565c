//! virtio-net over MMIO (QEMU `microvm`, Firecracker): the register block
//! at a physical address that the command line announces.

use super::hal;
use super::VirtioError;
use crate::nicaddr::MMIO_HEADER;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

const MAGIC: u32 = 0x7472_6976; // "virt"
const DEVICE_NET: u32 = 1;
/// The part of a block the stub maps: the header and the device's
/// configuration (virtio-net's is a few dozen bytes).
const MAPPED: u64 = 0x1000;

/// A mapped virtio-mmio register block.
#[derive(Clone, Copy)]
pub struct Block {
    header: core::ptr::NonNull<u8>,
    size: usize,
}

impl Block {
    /// The block of `size` bytes at physical `base`, if the page tables map
    /// it at `base + phys_offset` (only its first page is used).
    pub fn map(base: u64, size: u64) -> Result<Block, VirtioError> {
        let size = size.clamp(MMIO_HEADER, MAPPED) as usize;
        let header = hal::mmio_virt(base, size).ok_or(VirtioError::RegistersNotMapped)?;
        if !(header.as_ptr() as usize).is_multiple_of(4) {
            return Err(VirtioError::RegistersNotMapped);
        }
        Ok(Block { header, size })
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `offset` is below 0x100 (the header, which `map` found
        // mapped) and 4-byte aligned; reading these identification registers
        // has no side effect.
        unsafe { self.header.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }

    /// Whether a virtio-net device answers there (magic, version 1 or 2,
    /// device id 1).
    pub fn is_net(&self) -> bool {
        self.read(0) == MAGIC && matches!(self.read(4), 1 | 2) && self.read(8) == DEVICE_NET
    }

    /// The transport over this block.
    pub fn open(self) -> Result<MmioTransport<'static>, VirtioError> {
        // SAFETY: the block is mapped for `size` bytes (checked in `map`),
        // 4-byte aligned, and device registers stay valid for good; the stub
        // makes one transport per block (`dedicated` runs once).
        unsafe { MmioTransport::new(self.header.cast::<VirtIOHeader>(), self.size) }
            .map_err(|_| VirtioError::NotVirtioNet)
    }
}
