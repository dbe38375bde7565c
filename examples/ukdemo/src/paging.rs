//! The kernel's own page tables, replacing the boot identity map:
//! - page 0 is not mapped, so null dereferences fault;
//! - `.text` is read-only and executable;
//! - `.rodata` is read-only, everything else read-write, both non-executable;
//! - the first GiB of physical memory is identity-mapped;
//! - the local APIC's registers are identity-mapped (one uncached 2 MiB
//!   page, non-executable);
//! - device registers (a NIC's BAR or MMIO window) are identity-mapped
//!   later, uncached and non-executable, page by page, with [`map_mmio`];
//!   nothing else above the first GiB (a debugger's read of device memory
//!   can have side effects, so no more is mapped than the drivers use).

use core::arch::asm;
use core::ptr::addr_of_mut;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const NO_EXECUTE: u64 = 1 << 63;
const GIB: u64 = 1 << 30;
/// Where the first GiB of physical memory is mapped a second time.
pub const PHYS_ALIAS: u64 = 0xffff_8000_0000_0000;
/// The PML4 slot of [`PHYS_ALIAS`].
const PHYS_ALIAS_SLOT: usize = ((PHYS_ALIAS >> 39) & 0x1ff) as usize;

const PAGE: u64 = 4096;
const LARGE: u64 = 2 * 1024 * 1024;
/// 4 KiB-granular mapping for the first 8 MiB, which holds the image.
const SMALL_TABLES: usize = 4;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
static mut PD: Table = Table([0; 512]);
/// The page directory for the GiB that holds the local APIC.
static mut APIC_PD: Table = Table([0; 512]);
static mut PT: [Table; SMALL_TABLES] = [const { Table([0; 512]) }; SMALL_TABLES];

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

static mut APIC_MAPPED: bool = false;

/// Page tables for device mappings, taken by [`map_mmio`] as needed.
const MMIO_TABLES: usize = 8;
static mut MMIO_POOL: [Table; MMIO_TABLES] = [const { Table([0; 512]) }; MMIO_TABLES];
static mut MMIO_POOL_USED: usize = 0;
/// The address bits of a page-table entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Identity mappings end where the lower canonical half does.
const LOWER_HALF_END: u64 = 1 << 47;

/// Whether [`init`] mapped the local APIC's registers.
pub fn apic_mapped() -> bool {
    // SAFETY: written once in `init`, during single-threaded boot, before
    // any reader.
    unsafe { APIC_MAPPED }
}

/// Builds the tables and switches CR3 to them.
pub fn init() {
    // SAFETY: single-threaded boot; these statics are touched only here, the
    // linker symbols are addresses only, and the new tables map the running
    // code, the stack and the tables themselves (identity) before CR3 changes.
    unsafe {
        let text = sym(&__text_start)..sym(&__text_end);
        let rodata = sym(&__rodata_start)..sym(&__rodata_end);
        assert!(sym(&__image_end) < SMALL_TABLES as u64 * LARGE);

        let pml4 = &mut *addr_of_mut!(PML4);
        let pdpt = &mut *addr_of_mut!(PDPT);
        let pd = &mut *addr_of_mut!(PD);
        let pt = &mut *addr_of_mut!(PT);

        pml4.0[0] = addr_of_mut!(PDPT) as u64 | PRESENT | WRITABLE;
        // The same first GiB again at PHYS_ALIAS (the upper half), the way
        // kernels built on the `bootloader` crate map physical memory at an
        // offset: `ukdb.phys_offset=0xffff800000000000` makes the stub read
        // the page tables there (tests/tests/target.rs).
        pml4.0[PHYS_ALIAS_SLOT] = addr_of_mut!(PDPT) as u64 | PRESENT | WRITABLE;
        pdpt.0[0] = addr_of_mut!(PD) as u64 | PRESENT | WRITABLE;
        for (i, entry) in pd.0.iter_mut().enumerate() {
            *entry = if i < SMALL_TABLES {
                &pt[i] as *const Table as u64 | PRESENT | WRITABLE
            } else {
                (i as u64 * LARGE) | PRESENT | WRITABLE | HUGE | NO_EXECUTE
            };
        }
        for (t, table) in pt.iter_mut().enumerate() {
            for (i, entry) in table.0.iter_mut().enumerate() {
                let addr = t as u64 * LARGE + i as u64 * PAGE;
                *entry = if addr == 0 {
                    0
                } else if text.contains(&addr) {
                    addr | PRESENT
                } else if rodata.contains(&addr) {
                    addr | PRESENT | NO_EXECUTE
                } else {
                    addr | PRESENT | WRITABLE | NO_EXECUTE
                };
            }
        }
        // The local APIC (usually 0xfee00000): its 2 MiB page, uncached, in
        // its own page directory. Not mapped when the APIC is off or sits in
        // the first GiB (already mapped, cached: then the timer stays off)
        // or beyond the PDPT's 512 GiB.
        if let Ok(apic) = crate::apic::base() {
            let slot = (apic / GIB) as usize;
            if (1..512).contains(&slot) {
                let apic_pd = &mut *addr_of_mut!(APIC_PD);
                pdpt.0[slot] = addr_of_mut!(APIC_PD) as u64 | PRESENT | WRITABLE;
                apic_pd.0[((apic % GIB) / LARGE) as usize] = (apic & !(LARGE - 1))
                    | PRESENT
                    | WRITABLE
                    | WRITE_THROUGH
                    | CACHE_DISABLE
                    | HUGE
                    | NO_EXECUTE;
                APIC_MAPPED = true;
            }
        }
        asm!("mov cr3, {}", in(reg) addr_of_mut!(PML4) as u64, options(nostack, preserves_flags));
    }
}

/// Why [`map_mmio`] could not map a device region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The region is empty or does not fit in the lower half.
    OutOfRange,
    /// The region overlaps memory mapped as RAM (cached).
    Overlaps,
    /// No page tables left for device mappings.
    NoTables,
}

impl MapError {
    /// A short reason for the console.
    pub fn reason(self) -> &'static str {
        match self {
            MapError::OutOfRange => "region out of range",
            MapError::Overlaps => "region overlaps RAM",
            MapError::NoTables => "no page tables left",
        }
    }
}

/// The page-aligned range of pages that `[phys, phys + len)` touches.
fn page_range(phys: u64, len: u64) -> Result<core::ops::Range<u64>, MapError> {
    let end = phys.checked_add(len).ok_or(MapError::OutOfRange)?;
    if len == 0 || end > LOWER_HALF_END {
        return Err(MapError::OutOfRange);
    }
    Ok(phys & !(PAGE - 1)..end.next_multiple_of(PAGE))
}

/// The table an entry points to; with `alloc`, a new one from the pool when
/// the entry is empty. `Ok(None)`: the entry maps a huge page.
///
/// # Safety
/// `entry` is an entry of the live tables of a level above the last, and
/// the caller has exclusive access to the tables (see [`map_mmio`]).
unsafe fn next_table(entry: &mut u64, alloc: bool) -> Result<Option<&'static mut Table>, MapError> {
    if *entry & PRESENT == 0 {
        if !alloc {
            return Err(MapError::OutOfRange);
        }
        // SAFETY: the caller's exclusive access covers the pool; each
        // table is handed out once.
        let table = unsafe {
            let used = &mut *addr_of_mut!(MMIO_POOL_USED);
            let pool = &mut *addr_of_mut!(MMIO_POOL);
            let table = pool.get_mut(*used).ok_or(MapError::NoTables)?;
            *used += 1;
            table
        };
        *entry = table as *mut Table as u64 | PRESENT | WRITABLE;
        return Ok(Some(table));
    }
    if *entry & HUGE != 0 {
        return Ok(None);
    }
    // SAFETY: every table in the live hierarchy is a static of this module
    // (in the image, which is identity-mapped), so the entry's address is
    // the table's; the caller has exclusive access to it.
    Ok(Some(unsafe { &mut *((*entry & ADDR_MASK) as *mut Table) }))
}

/// The last-level entry for `page`, or `Ok(None)` when a huge page maps it
/// (uncached: a device mapping already; otherwise [`MapError::Overlaps`]).
///
/// # Safety
/// As for [`next_table`].
unsafe fn leaf(page: u64, alloc: bool) -> Result<Option<&'static mut u64>, MapError> {
    let index = |shift: u32| ((page >> shift) & 0x1ff) as usize;
    // SAFETY: PML4 is the live top-level table; exclusive access is the
    // caller's promise.
    let mut table = unsafe { &mut *addr_of_mut!(PML4) };
    for shift in [39, 30, 21] {
        let entry = &mut table.0[index(shift)];
        // SAFETY: an entry of a live upper-level table; the caller's promise.
        match unsafe { next_table(entry, alloc) }? {
            Some(next) => table = next,
            None if *entry & CACHE_DISABLE != 0 => return Ok(None),
            None => return Err(MapError::Overlaps),
        }
    }
    Ok(Some(&mut table.0[index(12)]))
}

fn invlpg(page: u64) {
    // SAFETY: invalidating a TLB entry has no effect beyond the next access
    // to that page reading the tables again.
    unsafe { asm!("invlpg [{}]", in(reg) page, options(nostack, preserves_flags)) };
}

/// Identity-maps the device registers at `[phys, phys + len)`, uncached
/// and non-executable, in 4 KiB pages (only the pages the range touches).
/// Pages already mapped for a device stay as they are.
///
/// # Safety
/// The range is device memory, not RAM, and nothing else changes the page
/// tables meanwhile (call it during boot, before interrupts are enabled).
pub unsafe fn map_mmio(phys: u64, len: u64) -> Result<(), MapError> {
    for page in page_range(phys, len)?.step_by(PAGE as usize) {
        // SAFETY: the caller's exclusive access to the tables.
        let Some(entry) = (unsafe { leaf(page, true) })? else { continue };
        if *entry & PRESENT != 0 {
            if *entry & ADDR_MASK == page && *entry & CACHE_DISABLE != 0 {
                continue;
            }
            return Err(MapError::Overlaps);
        }
        *entry = page | PRESENT | WRITABLE | WRITE_THROUGH | CACHE_DISABLE | NO_EXECUTE;
        invlpg(page);
    }
    Ok(())
}

/// Removes the device mappings [`map_mmio`] made in `[phys, phys + len)`
/// (a device that was probed and not taken). RAM mappings stay.
///
/// # Safety
/// Nothing uses the region any more, and nothing else changes the page
/// tables meanwhile.
pub unsafe fn unmap_mmio(phys: u64, len: u64) {
    let Ok(pages) = page_range(phys, len) else { return };
    for page in pages.step_by(PAGE as usize) {
        // SAFETY: the caller's exclusive access to the tables.
        if let Ok(Some(entry)) = unsafe { leaf(page, false) } {
            if *entry & PRESENT != 0 && *entry & CACHE_DISABLE != 0 {
                *entry = 0;
                invlpg(page);
            }
        }
    }
}
