//! The kernel's own page tables, replacing the boot identity map:
//! - page 0 is not mapped, so null dereferences fault;
//! - `.text` is read-only and executable;
//! - `.rodata` is read-only, everything else read-write, both non-executable;
//! - the first GiB of physical memory is identity-mapped;
//! - the local APIC's registers are identity-mapped (one uncached 2 MiB
//!   page, non-executable), nothing else above the first GiB.

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
