//! The virtio-drivers HAL: DMA memory from a static, page-aligned pool in
//! the image (identity-mapped, so a buffer's physical address is its
//! virtual address), never given back; device registers identity-mapped by
//! the probe ([`crate::paging::map_mmio`]) before the driver asks for them.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, PhysAddr, PAGE_SIZE};

/// Pages for virtqueues: two queues of [`super::virtio::QUEUE_SIZE`]
/// entries take 2-4 pages per device; room for a device that failed to
/// start and one that did.
const POOL_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_PAGES * PAGE_SIZE]>);

// SAFETY: the pool is only reached through `dma_alloc`, which hands each
// page out once (an atomic bump index).
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([0; POOL_PAGES * PAGE_SIZE]));
/// Pages of [`POOL`] handed out.
static USED: AtomicUsize = AtomicUsize::new(0);

/// The example's [`virtio_drivers::Hal`].
pub struct Hal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned pages of the static pool
// that nothing else uses (each page once, never freed, zero since boot);
// the pool is in the identity-mapped image, so its physical address is its
// address; `mmio_phys_to_virt` and `share` return identity addresses, which
// is what the page tables map (device regions by `paging::map_mmio`).
unsafe impl virtio_drivers::Hal for Hal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = USED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(pages).filter(|&end| end <= POOL_PAGES)
        });
        let Ok(first) = first else {
            // virtio-drivers turns a zero address into `Error::DmaError`.
            return (0, NonNull::dangling());
        };
        let addr = POOL.0.get() as usize + first * PAGE_SIZE;
        match NonNull::new(addr as *mut u8) {
            Some(ptr) => (addr as PhysAddr, ptr),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Never reused: a queue is freed only when a device fails to start.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // The PCI transport never asks for address 0 (an unassigned BAR is
        // an error before this); a dangling pointer would fault on page 0.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
