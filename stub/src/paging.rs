//! Checking an address against the live page tables before the stub touches
//! it, so a debugger's bad address is an error reply and never a fault.
//! Pure logic: the caller supplies how to read a physical quadword.

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
/// Bits 12..52 of an entry: the next table or the page frame.
const FRAME: u64 = 0x000F_FFFF_FFFF_F000;

/// A mapped page that holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Writable at every level (stores need CR0.WP off when not).
    pub writable: bool,
    /// The first address past the page.
    pub page_end: u64,
}

/// A 48-bit virtual address sign-extended to 64 bits.
pub fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_ffff
}

/// Walks the 4-level tables rooted at `cr3` for `addr`. `read_phys` reads
/// the quadword at a physical address (tables only). `None`: not canonical
/// or not present.
pub fn translate(cr3: u64, addr: u64, read_phys: impl Fn(u64) -> u64) -> Option<Mapping> {
    if !is_canonical(addr) {
        return None;
    }
    let mut table = cr3 & FRAME;
    let mut writable = true;
    // (shift of the index, whether a large page may end the walk here)
    for (shift, large_ok) in [(39u32, false), (30, true), (21, true), (12, false)] {
        let index = (addr >> shift) & 0x1ff;
        let entry = read_phys(table + index * 8);
        if entry & PRESENT == 0 {
            return None;
        }
        writable &= entry & WRITABLE != 0;
        if shift == 12 || (large_ok && entry & HUGE != 0) {
            let size = 1u64 << shift;
            let page_end = (addr & !(size - 1)).saturating_add(size);
            return Some(Mapping { writable, page_end });
        }
        table = entry & FRAME;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tiny address space: tables at 0x1000.., a 4 KiB page at 0x40_0000
    /// (read-only), a 2 MiB page at 0x20_0000 and a 1 GiB page at 1 GiB.
    fn space() -> (u64, HashMap<u64, u64>) {
        let mut m = HashMap::new();
        let (pml4, pdpt, pd, pt) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        m.insert(pml4, pdpt | 3);
        m.insert(pdpt, pd | 3);
        m.insert(pdpt + 8, 0x4000_0000 | 3 | HUGE);
        m.insert(pd + 8, 0x20_0000 | 3 | HUGE);
        m.insert(pd + 2 * 8, pt | 3);
        m.insert(pt, 0x40_0000 | 1);
        (pml4, m)
    }

    fn walk(addr: u64) -> Option<Mapping> {
        let (cr3, m) = space();
        translate(cr3 | 0x18, addr, |pa| m.get(&pa).copied().unwrap_or(0))
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0000_0000));
    }

    #[test]
    fn pages_of_each_size() {
        assert_eq!(walk(0x40_0010), Some(Mapping { writable: false, page_end: 0x40_1000 }));
        assert_eq!(walk(0x20_0000), Some(Mapping { writable: true, page_end: 0x40_0000 }));
        assert_eq!(walk(0x7fff_fff8), Some(Mapping { writable: true, page_end: 0x8000_0000 }));
    }

    #[test]
    fn holes_and_non_canonical() {
        assert_eq!(walk(0), None);
        assert_eq!(walk(0x40_1000), None);
        assert_eq!(walk(0x8000_0000), None);
        assert_eq!(walk(0x0000_4000_0000_0000), None);
        assert_eq!(walk(0x8000_0000_0000_0000), None);
        assert_eq!(walk(u64::MAX), None);
    }
}
