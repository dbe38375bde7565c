//! Checking an address against the live page tables before the stub touches
//! it, so a debugger's bad address is an error reply and never a fault.
//! Pure logic: the caller supplies how to read a physical quadword (at
//! `pa + phys_offset` for kernels that map physical memory at an offset).

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
/// Page-level write-through and cache disable.
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
/// Execute-disable (honoured only with EFER.NXE).
const NO_EXECUTE: u64 = 1 << 63;

/// Physical address bits 12..52 at most: the architectural limit.
const MAX_PHYS_BITS: u8 = 52;

/// How to walk the tables: the root, which bits of an entry hold the frame,
/// and whether the NX bit means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// CR3 (flags in the low bits are ignored).
    pub cr3: u64,
    /// The bits of an entry that are the physical frame: 12..MAXPHYADDR,
    /// without a memory-encryption bit (see [`frame_mask`]).
    pub frame_mask: u64,
    /// EFER.NXE: bit 63 of an entry forbids instruction fetches.
    pub nxe: bool,
}

/// The frame bits of a page-table entry on a CPU with `maxphyaddr`
/// physical address bits (CPUID 0x8000_0008 EAX\[7:0\]), with the memory
/// encryption bit `c_bit` (AMD SME/SEV, CPUID 0x8000_001F EBX\[5:0\]) left out
/// when there is one: that bit marks the page encrypted, it is not part of
/// the address.
pub fn frame_mask(maxphyaddr: u8, c_bit: Option<u8>) -> u64 {
    let bits = maxphyaddr.clamp(13, MAX_PHYS_BITS);
    let mut mask = ((1u64 << bits) - 1) & !0xfff;
    if let Some(c) = c_bit.filter(|&c| c < 64) {
        mask &= !(1u64 << c);
    }
    mask
}

/// A mapped page that holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Writable at every level (stores need CR0.WP off when not).
    pub writable: bool,
    /// Instruction fetches allowed at every level (no NX bit, or NX off).
    pub executable: bool,
    /// The first address of the page.
    pub page_start: u64,
    /// The page size: 4 KiB, 2 MiB or 1 GiB.
    pub page_size: u64,
    /// The physical address of the page's first byte.
    pub frame: u64,
    /// The leaf entry disables caching (PCD) or asks for write-through
    /// (PWT): device memory, read and written one byte at a time.
    pub uncached: bool,
}

impl Mapping {
    /// How many bytes of the page lie at and after `addr` (which the page
    /// holds). Never overflows, also for the last page of the address space.
    pub fn bytes_from(&self, addr: u64) -> u64 {
        self.page_size - (addr - self.page_start)
    }
}

/// A 48-bit virtual address sign-extended to 64 bits.
pub fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_ffff
}

/// Walks the 4-level tables for `addr`. `read_phys` reads the quadword at a
/// physical address (tables only). `None`: not canonical or not present.
pub fn translate(walk: &Walk, addr: u64, read_phys: impl Fn(u64) -> u64) -> Option<Mapping> {
    if !is_canonical(addr) {
        return None;
    }
    let mut table = walk.cr3 & walk.frame_mask;
    let mut writable = true;
    let mut executable = true;
    // (shift of the index, whether a large page may end the walk here)
    for (shift, large_ok) in [(39u32, false), (30, true), (21, true), (12, false)] {
        let index = (addr >> shift) & 0x1ff;
        let entry = read_phys(table | (index * 8));
        if entry & PRESENT == 0 {
            return None;
        }
        writable &= entry & WRITABLE != 0;
        executable &= !(walk.nxe && entry & NO_EXECUTE != 0);
        if shift == 12 || (large_ok && entry & HUGE != 0) {
            let page_size = 1u64 << shift;
            let page_start = addr & !(page_size - 1);
            let frame = entry & walk.frame_mask & !(page_size - 1);
            let uncached = entry & (PCD | PWT) != 0;
            return Some(Mapping { writable, executable, page_start, page_size, frame, uncached });
        }
        table = entry & walk.frame_mask;
    }
    None
}

/// One stretch of a range that lies in a single mapped page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Its first address.
    pub addr: u64,
    /// Its offset from the start of the range.
    pub offset: usize,
    /// Its length (at least 1).
    pub len: usize,
    /// The page it lies in.
    pub mapping: Mapping,
}

/// Splits `start..start+len` into page-sized chunks while the pages are
/// mapped (`lookup`), calling `visit` for each in order. Returns how many
/// bytes from `start` on are mapped (less than `len` at the first hole, or
/// at the end of the address space: a range never wraps around).
pub fn for_each_chunk(
    start: u64,
    len: usize,
    mut lookup: impl FnMut(u64) -> Option<Mapping>,
    mut visit: impl FnMut(Chunk),
) -> usize {
    let mut done = 0usize;
    while done < len {
        let Some(addr) = u64::try_from(done).ok().and_then(|d| start.checked_add(d)) else {
            break;
        };
        let Some(mapping) = lookup(addr) else { break };
        let in_page = usize::try_from(mapping.bytes_from(addr)).unwrap_or(usize::MAX);
        let n = (len - done).min(in_page);
        if n == 0 {
            break;
        }
        visit(Chunk { addr, offset: done, len: n, mapping });
        done += n;
    }
    done
}

// Used by the crash path and the core queries as they land (issue 7).
#[allow(dead_code)]
/// A stretch of virtual memory mapped to contiguous physical memory with
/// the same permissions: what the page walk of the whole address space
/// ([`for_each_run`]) yields, merged from leaf entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The first virtual address.
    pub vaddr: u64,
    /// The physical address of its first byte.
    pub paddr: u64,
    /// Its length in bytes (a multiple of 4 KiB).
    pub len: u64,
    /// Writable at every level.
    pub writable: bool,
    /// Executable at every level.
    pub executable: bool,
    /// Device memory (PCD or PWT on the leaf).
    pub uncached: bool,
}

// Used by the crash path and the core queries as they land (issue 7).
#[allow(dead_code)]
impl Run {
    /// The address after its last byte, saturated at the top of the
    /// address space (the top page's run ends at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.len)
    }

    fn from_leaf(m: &Mapping) -> Run {
        Run {
            vaddr: m.page_start,
            paddr: m.frame,
            len: m.page_size,
            writable: m.writable,
            executable: m.executable,
            uncached: m.uncached,
        }
    }

    /// Extends `self` by `next` when it continues it virtually and
    /// physically with the same permissions.
    fn absorb(&mut self, next: &Run) -> bool {
        let joins = self.vaddr.checked_add(self.len) == Some(next.vaddr)
            && self.paddr.checked_add(self.len) == Some(next.paddr)
            && (self.writable, self.executable, self.uncached)
                == (next.writable, next.executable, next.uncached);
        if joins {
            self.len += next.len;
        }
        joins
    }
}

// Used by the crash path and the core queries as they land (issue 7).
#[allow(dead_code)]
/// At most this many leaf entries are visited by one [`for_each_run`]: a
/// table that points back at itself or at a shared table many times could
/// otherwise make the walk last for hours (2^36 leaves). 2^22 leaves is
/// 16 GiB of 4 KiB pages.
///
/// Under `cargo fuzz` (`cfg(fuzzing)`) the budget is 2^16: a walk that
/// reaches it runs the same code as one that reaches 2^22, and at 2^22 such
/// walks (0.3 s each, instrumented) would take most of the fuzzer's time.
/// The unit test `a_table_that_points_at_itself_ends_at_the_leaf_budget`
/// walks to the real budget.
#[cfg(not(fuzzing))]
pub const MAX_LEAVES: u64 = 1 << 22;
/// The leaf budget under `cargo fuzz`; see the other definition.
#[cfg(fuzzing)]
pub const MAX_LEAVES: u64 = 1 << 16;

// Used by the crash path and the core queries as they land (issue 7).
#[allow(dead_code)]
/// Walks every present leaf of the 4-level tables in ascending virtual
/// order (the lower canonical half, then the upper) and calls `visit` with
/// the merged [`Run`]s. `read_phys` reads a table quadword (a table that
/// cannot be read reads as 0: not present). Returns `false` when the walk
/// stopped at [`MAX_LEAVES`] (what was visited is still exact).
pub fn for_each_run(
    walk: &Walk,
    read_phys: impl Fn(u64) -> u64,
    mut visit: impl FnMut(Run),
) -> bool {
    let mut pending: Option<Run> = None;
    let mut leaves = 0u64;
    let mut emit = |leaf: Run| {
        if let Some(run) = pending.as_mut() {
            if run.absorb(&leaf) {
                return;
            }
            visit(*run);
        }
        pending = Some(leaf);
    };
    let complete = walk_level(
        walk,
        &read_phys,
        walk.cr3 & walk.frame_mask,
        39,
        0,
        (true, true),
        &mut leaves,
        &mut emit,
    );
    if let Some(run) = pending {
        visit(run);
    }
    complete
}

// Used by the crash path and the core queries as they land (issue 7).
#[allow(dead_code)]
/// One table of the walk: `base` is the virtual address its first entry
/// maps (before sign extension), `rights` the (writable, executable) of
/// the levels above. `false`: the leaf budget ran out.
#[allow(clippy::too_many_arguments)]
fn walk_level(
    walk: &Walk,
    read_phys: &impl Fn(u64) -> u64,
    table: u64,
    shift: u32,
    base: u64,
    rights: (bool, bool),
    leaves: &mut u64,
    emit: &mut impl FnMut(Run),
) -> bool {
    for index in 0..512u64 {
        let entry = read_phys(table | (index * 8));
        if entry & PRESENT == 0 {
            continue;
        }
        let mut vaddr = base | (index << shift);
        if shift == 39 && index >= 256 {
            // The upper half: bits 63..48 copy bit 47.
            vaddr |= 0xffff_0000_0000_0000;
        }
        let writable = rights.0 && entry & WRITABLE != 0;
        let executable = rights.1 && !(walk.nxe && entry & NO_EXECUTE != 0);
        let leaf = shift == 12 || (matches!(shift, 30 | 21) && entry & HUGE != 0);
        if leaf {
            *leaves += 1;
            if *leaves > MAX_LEAVES {
                return false;
            }
            let page_size = 1u64 << shift;
            let m = Mapping {
                writable,
                executable,
                page_start: vaddr,
                page_size,
                frame: entry & walk.frame_mask & !(page_size - 1),
                uncached: entry & (PCD | PWT) != 0,
            };
            emit(Run::from_leaf(&m));
        } else if !walk_level(
            walk,
            read_phys,
            entry & walk.frame_mask,
            shift - 9,
            vaddr,
            (writable, executable),
            leaves,
            emit,
        ) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MASK: u64 = 0x000F_FFFF_FFFF_F000;

    /// A tiny address space: tables at 0x1000.., a 4 KiB page at 0x40_0000
    /// (read-only), a 2 MiB page at 0x20_0000, a 1 GiB page at 1 GiB (NX),
    /// and the top page of the address space (0xffff_ffff_ffff_f000).
    fn space() -> (u64, HashMap<u64, u64>) {
        let mut m = HashMap::new();
        let (pml4, pdpt, pd, pt) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        m.insert(pml4, pdpt | 3);
        m.insert(pdpt, pd | 3);
        m.insert(pdpt + 8, 0x4000_0000 | 3 | HUGE | NO_EXECUTE);
        m.insert(pd + 8, 0x20_0000 | 3 | HUGE);
        m.insert(pd + 2 * 8, pt | 3);
        m.insert(pt, 0x40_0000 | 1);
        // The top page: index 511 at every level.
        let (hp, hd, ht) = (0x5000u64, 0x6000u64, 0x7000u64);
        m.insert(pml4 + 511 * 8, hp | 3);
        m.insert(hp + 511 * 8, hd | 3);
        m.insert(hd + 511 * 8, ht | 3);
        m.insert(ht + 511 * 8, 0x8000 | 3);
        (pml4, m)
    }

    fn walk_with(addr: u64, nxe: bool) -> Option<Mapping> {
        let (cr3, m) = space();
        let w = Walk { cr3: cr3 | 0x18, frame_mask: MASK, nxe };
        translate(&w, addr, |pa| m.get(&pa).copied().unwrap_or(0))
    }

    fn walk(addr: u64) -> Option<Mapping> {
        walk_with(addr, true)
    }

    fn page(start: u64, size: u64, writable: bool, executable: bool) -> Option<Mapping> {
        let frame = if start == 0xffff_ffff_ffff_f000 { 0x8000 } else { start };
        Some(Mapping {
            writable,
            executable,
            page_start: start,
            page_size: size,
            frame,
            uncached: false,
        })
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
        assert_eq!(walk(0x40_0010), page(0x40_0000, 0x1000, false, true));
        assert_eq!(walk(0x20_0000), page(0x20_0000, 0x20_0000, true, true));
        assert_eq!(walk(0x7fff_fff8), page(0x4000_0000, 0x4000_0000, true, false));
        assert_eq!(walk(u64::MAX), page(0xffff_ffff_ffff_f000, 0x1000, true, true));
        assert_eq!(walk(0x40_0010).unwrap().bytes_from(0x40_0010), 0xff0);
        assert_eq!(walk(u64::MAX).unwrap().bytes_from(u64::MAX), 1);
    }

    #[test]
    fn nx_counts_only_with_efer_nxe() {
        assert_eq!(walk_with(0x4000_0000, false), page(0x4000_0000, 0x4000_0000, true, true));
    }

    #[test]
    fn holes_and_non_canonical() {
        assert_eq!(walk(0), None);
        assert_eq!(walk(0x40_1000), None);
        assert_eq!(walk(0x8000_0000), None);
        assert_eq!(walk(0x0000_4000_0000_0000), None);
        assert_eq!(walk(0x8000_0000_0000_0000), None);
        assert_eq!(walk(0xffff_ffff_ffff_e000), None);
    }

    #[test]
    fn frame_masks() {
        assert_eq!(frame_mask(52, None), MASK);
        assert_eq!(frame_mask(39, None), 0x0000_007F_FFFF_F000);
        // SME with the C-bit at 47 on a 48-bit CPU: bit 47 is not address.
        assert_eq!(frame_mask(48, Some(47)), 0x0000_7FFF_FFFF_F000);
        assert_eq!(frame_mask(0, None), 0x1000);
        assert_eq!(frame_mask(255, Some(200)), MASK);
    }

    #[test]
    fn bits_above_maxphyaddr_are_not_followed() {
        // The PML4 entry carries a C-bit (bit 47): masked, the walk still
        // finds the PDPT at 0x2000; unmasked it would read 0x8000_0000_2000.
        let (cr3, mut m) = space();
        *m.get_mut(&cr3).unwrap() |= 1 << 47;
        let w = Walk { cr3, frame_mask: frame_mask(48, Some(47)), nxe: true };
        let read = |pa: u64| m.get(&pa).copied().unwrap_or(0);
        assert_eq!(translate(&w, 0x40_0010, read), page(0x40_0000, 0x1000, false, true));
        let unmasked = Walk { frame_mask: MASK, ..w };
        assert_eq!(translate(&unmasked, 0x40_0010, read), None);
    }

    fn chunks(start: u64, len: usize) -> (usize, Vec<(u64, usize, usize)>) {
        let mut seen = Vec::new();
        let n = for_each_chunk(start, len, walk, |c| seen.push((c.addr, c.offset, c.len)));
        (n, seen)
    }

    #[test]
    fn chunking_stops_at_holes() {
        assert_eq!(chunks(0x40_0ff0, 0x20), (0x10, vec![(0x40_0ff0, 0, 0x10)]));
        assert_eq!(
            chunks(0x3f_fff0, 0x20),
            (0x20, vec![(0x3f_fff0, 0, 0x10), (0x40_0000, 0x10, 0x10)])
        );
        assert_eq!(chunks(0, 0x10), (0, vec![]));
        assert_eq!(chunks(0x20_0000, 0), (0, vec![]));
    }

    #[test]
    fn chunking_ends_at_the_top_of_the_address_space() {
        // Once looped forever: the end of the top page saturated to
        // u64::MAX, one byte short, and the next lookup found the same page.
        assert_eq!(
            chunks(0xffff_ffff_ffff_f000, 0x1000),
            (0x1000, vec![(0xffff_ffff_ffff_f000, 0, 0x1000)])
        );
        assert_eq!(
            chunks(0xffff_ffff_ffff_ff00, 0x200),
            (0x100, vec![(0xffff_ffff_ffff_ff00, 0, 0x100)])
        );
        assert_eq!(chunks(u64::MAX, 8), (1, vec![(u64::MAX, 0, 1)]));
    }

    fn runs(cr3: u64, m: &HashMap<u64, u64>) -> (bool, Vec<Run>) {
        let w = Walk { cr3, frame_mask: MASK, nxe: true };
        let mut seen = Vec::new();
        let done = for_each_run(&w, |pa| m.get(&pa).copied().unwrap_or(0), |r| seen.push(r));
        (done, seen)
    }

    fn run(vaddr: u64, paddr: u64, len: u64, w: bool, x: bool) -> Run {
        Run { vaddr, paddr, len, writable: w, executable: x, uncached: false }
    }

    #[test]
    fn the_whole_space_in_order_with_both_halves() {
        let (cr3, m) = space();
        let (done, seen) = runs(cr3, &m);
        assert!(done);
        assert_eq!(
            seen,
            vec![
                run(0x20_0000, 0x20_0000, 0x20_0000, true, true),
                run(0x40_0000, 0x40_0000, 0x1000, false, true),
                run(0x4000_0000, 0x4000_0000, 0x4000_0000, true, false),
                run(0xffff_ffff_ffff_f000, 0x8000, 0x1000, true, true),
            ]
        );
        assert_eq!(seen[3].end(), u64::MAX);
    }

    #[test]
    fn contiguous_pages_merge_and_breaks_split() {
        let mut m = HashMap::new();
        let (pml4, pdpt, pd, pt) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        m.insert(pml4, pdpt | 3);
        m.insert(pdpt, pd | 3);
        m.insert(pd, pt | 3);
        // 0..3 contiguous (physical 0x10_0000..), 4 jumps physically, 5
        // follows 4 but read-only, 6 is uncached.
        for i in 0..4u64 {
            m.insert(pt + i * 8, (0x10_0000 + i * 0x1000) | 3);
        }
        m.insert(pt + 4 * 8, 0x50_0000 | 3);
        m.insert(pt + 5 * 8, 0x50_1000 | 1);
        m.insert(pt + 6 * 8, 0x50_2000 | 1 | PCD);
        // The next 2 MiB page continues the last 4 KiB physically but is a
        // new permission set: its own run.
        m.insert(pd + 8, 0x60_0000 | 3 | HUGE);
        let (done, seen) = runs(pml4, &m);
        assert!(done);
        let dev = Run { uncached: true, ..run(0x6000, 0x50_2000, 0x1000, false, true) };
        assert_eq!(
            seen,
            vec![
                run(0, 0x10_0000, 0x4000, true, true),
                run(0x4000, 0x50_0000, 0x1000, true, true),
                run(0x5000, 0x50_1000, 0x1000, false, true),
                dev,
                run(0x20_0000, 0x60_0000, 0x20_0000, true, true),
            ]
        );
    }

    #[test]
    fn a_table_that_points_at_itself_ends_at_the_leaf_budget() {
        // Every PML4, PDPT and PD entry points at the one table, whose
        // entries are also 4 KiB leaves at the last level: 2^36 leaves
        // without the budget.
        let mut m = HashMap::new();
        for i in 0..512u64 {
            m.insert(0x1000 + i * 8, 0x1000 | 3);
        }
        let (done, seen) = runs(0x1000, &m);
        assert!(!done);
        let total: u64 = seen.iter().map(|r| r.len / 0x1000).sum();
        assert_eq!(total, MAX_LEAVES);
    }
}
