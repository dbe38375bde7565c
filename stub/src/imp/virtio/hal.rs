//! The DMA memory of the dedicated NIC and virtio-drivers' [`Hal`] over it.
//!
//! Everything the device reads or writes lives in one static, page-aligned
//! region of the stub: the virtqueues (handed out by [`Hal::dma_alloc`]
//! from the first [`POOL_PAGES`] pages) and the frame buffers (the rest,
//! [`SLOT`]-byte slots that never cross a page). [`prepare`] translates
//! every page of it once with the stub's own page walk and keeps the
//! physical addresses, so sharing a buffer with the device is a table
//! look-up, and a region the page tables do not map is refused at init.

use super::VirtioError;
use crate::imp::target::mem::Memory;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The x86_64 (and virtio) page size.
pub const PAGE: usize = 4096;
/// Pages for the virtqueues: two queues need four (the modern layout
/// takes one page for descriptors and the available ring, one for the used
/// ring; the legacy layout the same two in one block); two spare.
pub const POOL_PAGES: usize = 6;
/// Descriptors per virtqueue (a power of two, at least [`RX_SLOTS`] and
/// [`TX_SLOTS`]: one descriptor per frame).
pub const QUEUE: usize = 64;
const _: () = assert!(QUEUE >= RX_SLOTS && QUEUE >= TX_SLOTS && QUEUE.is_power_of_two());
// Each part of a queue fits one page (descriptors, 16 bytes each, and the
// available ring; the used ring, 8 bytes an entry), so two queues take
// four pool pages in either layout.
const _: () = assert!(16 * QUEUE + 2 * (3 + QUEUE) <= PAGE && 6 + 8 * QUEUE <= PAGE);
const _: () = assert!(2 * 2 <= POOL_PAGES);
/// Receive buffers kept queued at the device: 48 x 2 KiB, 96 KiB.
/// Firecracker (v1.16) reads its tap only while the posted receive buffers
/// hold its largest frame, [`FIRECRACKER_RX_MIN`] bytes; with 16 (32 KiB)
/// the stub never received a frame there. 48 leave room for a burst of
/// frames the stub has not taken yet (each taken one is posted again).
/// The .bss cost of the dedicated NIC: 6 pool pages and
/// (48 + 16) / 2 = 32 buffer pages, 152 KiB (88 KiB with 16 slots).
pub const RX_SLOTS: usize = 48;
/// Firecracker's `MAX_BUFFER_SIZE` (a 64 KiB frame and its virtio-net
/// header): the receive buffer space it wants posted before it reads its
/// tap.
pub const FIRECRACKER_RX_MIN: usize = 65562;
const _: () = assert!(RX_SLOTS * SLOT >= FIRECRACKER_RX_MIN);
/// Transmit buffers (frames in flight).
pub const TX_SLOTS: usize = 16;
/// One frame buffer: the virtio-net header (10 or 12 bytes) and the
/// largest Ethernet frame fit, and two slots share a page exactly.
pub const SLOT: usize = 2048;
const SLOTS_PER_PAGE: usize = PAGE / SLOT;
const BUFFER_PAGES: usize = (RX_SLOTS + TX_SLOTS).div_ceil(SLOTS_PER_PAGE);
const PAGES: usize = POOL_PAGES + BUFFER_PAGES;

#[repr(C, align(4096))]
struct Region(UnsafeCell<[[u8; PAGE]; PAGES]>);

// SAFETY: the region is only reached through raw pointers: the pool pages
// by the virtqueues they were handed to (one owner each, see `dma_alloc`),
// the slots by the one `VirtioNic` (and by the device). No reference to the
// whole region is ever made.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new([[0; PAGE]; PAGES]));

/// The physical address of each page of [`REGION`] (0: not prepared).
static PHYS: [AtomicU64; PAGES] = [const { AtomicU64::new(0) }; PAGES];
/// Pool pages handed out so far.
static POOL_USED: AtomicUsize = AtomicUsize::new(0);
/// Where physical memory is mapped, and the frame bits of a page-table
/// entry on this CPU (for the page walk in `mmio_phys_to_virt`).
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);
static FRAME_MASK: AtomicU64 = AtomicU64::new(0);
/// The physical address of the used ring of the queue set up last.
static LAST_USED_RING: AtomicU64 = AtomicU64::new(0);
/// `mmio_phys_to_virt` was asked for a region that is not mapped.
static MMIO_REFUSED: AtomicBool = AtomicBool::new(false);

/// Harmless memory that a refused MMIO region points to until the
/// transport is dropped (its drop writes and reads the status register).
#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; PAGE]>);
// SAFETY: only reached through raw pointers, by volatile MMIO accessors
// of a transport that is dropped right after it was made.
unsafe impl Sync for Scratch {}
static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; PAGE]));

fn region_base() -> *mut u8 {
    REGION.0.get().cast::<u8>()
}

/// Translates every page of the region with the page walk at
/// `phys_offset`. Call once, before the driver is made.
pub fn prepare(phys_offset: u64) -> Result<(), VirtioError> {
    let mem = Memory::new(phys_offset);
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
    FRAME_MASK.store(mem.frame_mask, Ordering::Relaxed);
    for (i, phys) in PHYS.iter().enumerate() {
        let addr = region_base() as u64 + (i * PAGE) as u64;
        let m = mem.lookup(addr).ok_or(VirtioError::DmaNotMapped)?;
        if !m.writable {
            return Err(VirtioError::DmaNotMapped);
        }
        phys.store(m.frame | (addr - m.page_start), Ordering::Relaxed);
    }
    Ok(())
}

fn page_phys(page: usize) -> Option<u64> {
    PHYS.get(page).map(|p| p.load(Ordering::Relaxed)).filter(|&p| p != 0)
}

/// The physical address of `len` bytes at `ptr` when they lie in one page
/// of the region.
fn phys_of(ptr: *const u8, len: usize) -> Option<u64> {
    let offset = (ptr as usize).checked_sub(region_base() as usize)?;
    let (page, in_page) = (offset / PAGE, offset % PAGE);
    if len == 0 || in_page + len > PAGE {
        return None;
    }
    Some(page_phys(page)? + in_page as u64)
}

/// The virtual address in the region of physical `pa` (the used ring the
/// device writes), when the region holds it.
pub fn virt_of(pa: u64) -> Option<*mut u8> {
    let page = PHYS.iter().position(|p| {
        let p = p.load(Ordering::Relaxed);
        p != 0 && pa >= p && pa - p < PAGE as u64
    })?;
    let in_page = (pa % PAGE as u64) as usize;
    // SAFETY: `page < PAGES` and `in_page < PAGE`: inside the region.
    Some(unsafe { region_base().add(page * PAGE + in_page) })
}

/// virtio-drivers 0.13 allocates a queue's used ring alone
/// (`DeviceToDriver`, modern layout) or as part of one block (`Both`,
/// legacy layout: after the descriptors and the available ring, at the next
/// page boundary, computed as its `align_up` does).
fn note_used_ring(pa: u64, direction: BufferDirection) {
    let used = match direction {
        BufferDirection::DeviceToDriver => pa,
        BufferDirection::Both => {
            let (desc, avail) = (16 * QUEUE, 2 * (3 + QUEUE));
            pa + ((desc + avail + PAGE) & !(PAGE - 1)) as u64
        }
        BufferDirection::DriverToDevice => return,
    };
    LAST_USED_RING.store(used, Ordering::Relaxed);
}

/// The physical address of the used ring of the queue set up last.
pub fn last_used_ring() -> Option<u64> {
    Some(LAST_USED_RING.load(Ordering::Relaxed)).filter(|&pa| pa != 0)
}

/// Frame slot `i` (receive slots first, then transmit slots): its address
/// in the region, [`SLOT`] bytes within one page.
pub fn slot(i: usize) -> Option<NonNull<u8>> {
    if i >= RX_SLOTS + TX_SLOTS {
        return None;
    }
    // SAFETY: slot `i` lies in the buffer pages of the region: offset
    // POOL_PAGES * PAGE + i * SLOT + SLOT <= PAGES * PAGE.
    NonNull::new(unsafe { region_base().add(POOL_PAGES * PAGE + i * SLOT) })
}

/// Whether `mmio_phys_to_virt` refused a region since the last call (and
/// clears the flag).
pub fn take_mmio_refused() -> bool {
    MMIO_REFUSED.swap(false, Ordering::Relaxed)
}

/// The virtual address of `size` bytes of device registers at physical
/// `pa`, if the page tables map all of them at `pa + phys_offset`.
pub fn mmio_virt(pa: u64, size: usize) -> Option<NonNull<u8>> {
    let va = pa.checked_add(PHYS_OFFSET.load(Ordering::Relaxed))?;
    let mem = Memory {
        phys_offset: PHYS_OFFSET.load(Ordering::Relaxed),
        frame_mask: FRAME_MASK.load(Ordering::Relaxed),
    };
    mem.check(va, size.max(1)).ok()?;
    NonNull::new(va as *mut u8)
}

/// virtio-drivers' platform interface for the stub.
pub struct StubHal;

// SAFETY: `dma_alloc` hands out zeroed, page-aligned, physically contiguous
// pages of the static region that are never handed out twice (a bump
// allocator that only takes back the most recent block); `mmio_phys_to_virt`
// returns a mapped device region or, when the walk refuses it, a private
// scratch page (and the caller drops the transport); `share` returns the
// physical address the page walk found for the buffer.
unsafe impl Hal for StubHal {
    fn dma_alloc(pages: usize, direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let failed = (0, NonNull::dangling());
        let first = POOL_USED.load(Ordering::Relaxed);
        let Some(end) = first.checked_add(pages).filter(|&e| pages > 0 && e <= POOL_PAGES) else {
            return failed;
        };
        // The device sees one block: the pages must be contiguous in
        // physical memory too.
        let Some(pa) = page_phys(first) else { return failed };
        for (n, page) in (first..end).enumerate() {
            if page_phys(page) != Some(pa + (n * PAGE) as u64) {
                return failed;
            }
        }
        // SAFETY: `first < end <= POOL_PAGES <= PAGES`: inside the region.
        let va = unsafe { region_base().add(first * PAGE) };
        // SAFETY: these pages are not handed out (they are past
        // `POOL_USED`), so nothing else reaches them.
        unsafe { core::ptr::write_bytes(va, 0, pages * PAGE) };
        POOL_USED.store(end, Ordering::Relaxed);
        note_used_ring(pa, direction);
        match NonNull::new(va) {
            Some(va) => (pa, va),
            None => failed,
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // A driver that failed to start gives its queues back in reverse
        // order; anything else stays allocated (the stub starts one NIC).
        let used = POOL_USED.load(Ordering::Relaxed);
        let end = (vaddr.as_ptr() as usize).wrapping_add(pages * PAGE);
        if used >= pages && end == region_base() as usize + used * PAGE {
            POOL_USED.store(used - pages, Ordering::Relaxed);
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        match mmio_virt(paddr, size) {
            Some(va) => va,
            None => {
                MMIO_REFUSED.store(true, Ordering::Relaxed);
                // Aligned for any register type, and the transport made
                // with it is dropped before any other use.
                NonNull::new(SCRATCH.0.get().cast::<u8>()).unwrap_or(NonNull::dangling())
            }
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // The driver only shares slots of the region (`slot`), which lie
        // in one page each and were translated by `prepare`; 0 for anything
        // else (never reached: nothing else is given to the queues).
        phys_of(buffer.as_ptr().cast::<u8>(), buffer.len()).unwrap_or(0)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
