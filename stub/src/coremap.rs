//! What a core holds of memory: the page walk's runs ([`crate::paging::Run`])
//! cut at the edges of the RAM the unikernel declared, and flagged the way
//! the crash stream and the `qUkdb.map` query describe them
//! (`crate::dumpwire::map`): device memory and what is not RAM are listed
//! but never read; a second mapping of pages already dumped is an alias.
//! Pure logic, no heap: fixed tables, host-tested.

// Used by the crash path and the core queries as they land (issue 7).
#![allow(dead_code)]

use crate::dumpwire::map::{ALIAS, DEVICE, EXEC, NOT_RAM, WRITE};
use crate::dumpwire::PAGE;
use crate::paging::Run;

/// How many RAM ranges the unikernel can declare.
pub const MAX_RAM: usize = 32;
/// How many dumped physical ranges alias detection remembers; past that a
/// second mapping is dumped again (a larger core, never a wrong one).
pub const MAX_SEEN: usize = 64;

/// One entry of the map: a run, or the part of one inside or outside RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The first virtual address.
    pub vaddr: u64,
    /// The physical address of its first byte.
    pub paddr: u64,
    /// Length in bytes.
    pub len: u64,
    /// `dumpwire::map` flags.
    pub flags: u32,
}

impl Entry {
    /// Whether its pages are read into a core (RAM, not a device, not an
    /// alias).
    pub fn dumped(&self) -> bool {
        self.flags & (DEVICE | NOT_RAM | ALIAS) == 0
    }
}

/// The physical RAM the unikernel declared (`ukdb_stub::set_ram`), as
/// sorted, merged `start..end` ranges. Empty: every cached page counts as
/// RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ram {
    ranges: [(u64, u64); MAX_RAM],
    len: usize,
}

impl Default for Ram {
    fn default() -> Self {
        Ram::none()
    }
}

impl Ram {
    /// Nothing declared.
    pub const fn none() -> Ram {
        Ram { ranges: [(0, 0); MAX_RAM], len: 0 }
    }

    /// Declares `ranges` (physical, `start..end`, any order, may overlap;
    /// empty ones are skipped). `false` when more than [`MAX_RAM`] remain
    /// after merging: the declaration is refused and nothing changes.
    pub fn set(&mut self, ranges: &[core::ops::Range<u64>]) -> bool {
        let mut new = Ram::none();
        // Only whole pages are RAM to a core: a range's partial pages at
        // either end (the PVH memory map's 0..0x9fc00) are left out.
        let pages = ranges
            .iter()
            .filter_map(|r| Some((r.start.checked_next_multiple_of(PAGE)?, r.end & !(PAGE - 1))));
        for (start, end) in pages.filter(|(s, e)| s < e) {
            if !new.add(start, end) {
                return false;
            }
        }
        *self = new;
        true
    }

    /// The declared ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        self.ranges.get(..self.len).unwrap_or_default()
    }

    /// Whether the physical address `pa` is in a declared range.
    pub fn contains(&self, pa: u64) -> bool {
        self.ranges().iter().any(|&(s, e)| s <= pa && pa < e)
    }

    /// Whether anything was declared.
    pub fn is_declared(&self) -> bool {
        self.len > 0
    }

    /// Inserts `start..end`, merging with what it touches.
    fn add(&mut self, mut start: u64, mut end: u64) -> bool {
        let mut kept = [(0u64, 0u64); MAX_RAM];
        let mut n = 0;
        for &(s, e) in self.ranges() {
            if e < start || s > end {
                kept[n] = (s, e);
                n += 1;
            } else {
                start = start.min(s);
                end = end.max(e);
            }
        }
        if n == MAX_RAM {
            return false;
        }
        let at = kept[..n].iter().position(|&(s, _)| s > start).unwrap_or(n);
        kept.copy_within(at..n, at + 1);
        kept[at] = (start, end);
        self.ranges = kept;
        self.len = n + 1;
        true
    }

    /// Splits `paddr..paddr+len` at the edges of RAM: calls `part(offset,
    /// len, in_ram)` for consecutive pieces, in order.
    fn split(&self, paddr: u64, len: u64, mut part: impl FnMut(u64, u64, bool)) {
        if !self.is_declared() {
            part(0, len, true);
            return;
        }
        let end = paddr.saturating_add(len);
        let mut at = paddr;
        while at < end {
            // The RAM range holding `at`, or the next one after it.
            let inside = self.ranges().iter().find(|&&(s, e)| s <= at && at < e);
            let (next, in_ram) = match inside {
                Some(&(_, e)) => (e.min(end), true),
                None => {
                    let next = self.ranges().iter().map(|&(s, _)| s).find(|&s| s > at);
                    (next.unwrap_or(end).min(end), false)
                }
            };
            part(at - paddr, next - at, in_ram);
            at = next;
        }
    }
}

/// The physical ranges dumped so far (for alias detection).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    ranges: [(u64, u64); MAX_SEEN],
    len: usize,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::new()
    }
}

impl Seen {
    /// Nothing yet.
    pub const fn new() -> Seen {
        Seen { ranges: [(0, 0); MAX_SEEN], len: 0 }
    }

    fn contains(&self, start: u64, end: u64) -> bool {
        let seen = self.ranges.get(..self.len).unwrap_or_default();
        seen.iter().any(|&(s, e)| s <= start && end <= e)
    }

    fn note(&mut self, start: u64, end: u64) {
        let seen = self.ranges.get_mut(..self.len).unwrap_or_default();
        // Extends a range it continues (the usual case: runs in order).
        if let Some(r) = seen.iter_mut().find(|r| r.1 == start) {
            r.1 = end;
            return;
        }
        if let Some(slot) = self.ranges.get_mut(self.len) {
            *slot = (start, end);
            self.len += 1;
        }
    }
}

/// The map entries of one `run`, in order: cut at the edges of `ram`,
/// flagged, and noted in `seen` when dumped.
pub fn classify(run: &Run, ram: &Ram, seen: &mut Seen, mut entry: impl FnMut(Entry)) {
    let mut rights = 0;
    if run.writable {
        rights |= WRITE;
    }
    if run.executable {
        rights |= EXEC;
    }
    if run.uncached {
        entry(Entry { vaddr: run.vaddr, paddr: run.paddr, len: run.len, flags: rights | DEVICE });
        return;
    }
    ram.split(run.paddr, run.len, |offset, len, in_ram| {
        let (vaddr, paddr) = (run.vaddr + offset, run.paddr + offset);
        let end = paddr.saturating_add(len);
        let flags = if !in_ram {
            rights | NOT_RAM
        } else if seen.contains(paddr, end) {
            rights | ALIAS
        } else {
            seen.note(paddr, end);
            rights
        };
        entry(Entry { vaddr, paddr, len, flags });
    });
}

/// The non-zero pages of a dumped entry, as runs of consecutive non-zero
/// pages of at most `buf.len() / 4096` pages: each page is read once into
/// `buf` with `read_page(vaddr, page)`, and `group(paddr, pages)` gets each
/// run. Pages only partly inside the entry (RAM that ends mid-page) are
/// left out.
pub fn nonzero_groups(
    e: &Entry,
    buf: &mut [u8],
    mut read_page: impl FnMut(u64, &mut [u8]),
    mut group: impl FnMut(u64, &[u8]),
) {
    const PAGE: u64 = crate::dumpwire::PAGE;
    let page = PAGE as usize;
    let most = buf.len() / page;
    let skip = e.paddr.next_multiple_of(PAGE) - e.paddr;
    let (vaddr, paddr) = (e.vaddr + skip, e.paddr + skip);
    let count = e.len.saturating_sub(skip) / PAGE;
    let mut at = 0u64;
    while at < count {
        let mut k = 0usize;
        let mut zero = false;
        while k < most && at + (k as u64) < count {
            let Some(slot) = buf.get_mut(k * page..(k + 1) * page) else { break };
            read_page(vaddr + (at + k as u64) * PAGE, slot);
            if slot.chunks_exact(8).all(|w| w == [0; 8]) {
                zero = true;
                break;
            }
            k += 1;
        }
        if k > 0 {
            group(paddr + at * PAGE, buf.get(..k * page).unwrap_or_default());
        }
        at += k as u64 + u64::from(zero);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vaddr: u64, paddr: u64, len: u64) -> Run {
        Run { vaddr, paddr, len, writable: true, executable: false, uncached: false }
    }

    fn entries(runs: &[Run], ram: &Ram) -> Vec<(u64, u64, u64, u32)> {
        let mut seen = Seen::new();
        let mut out = Vec::new();
        for r in runs {
            classify(r, ram, &mut seen, |e| out.push((e.vaddr, e.paddr, e.len, e.flags)));
        }
        out
    }

    const M: u64 = 1 << 20;

    #[test]
    fn ram_merges_sorts_and_refuses_too_many() {
        let mut ram = Ram::none();
        assert!(ram.set(&[10 * M..20 * M, 0..M, 15 * M..30 * M, 5 * M..5 * M, M..2 * M]));
        assert_eq!(ram.ranges(), &[(0, 2 * M), (10 * M, 30 * M)]);
        let many: Vec<_> = (0..=MAX_RAM as u64).map(|i| i * 2 * M..i * 2 * M + M).collect();
        assert!(!ram.set(&many));
        assert_eq!(ram.ranges(), &[(0, 2 * M), (10 * M, 30 * M)]);
        assert!(ram.set(&many[..MAX_RAM]));
        assert_eq!(ram.ranges().len(), MAX_RAM);
        // Partial pages are not RAM to a core; a range within one page is
        // nothing at all.
        assert!(ram.set(&[0..0x9fc00, 0x10_0001..0x10_2000, 0x20_0100..0x20_0200]));
        assert_eq!(ram.ranges(), &[(0, 0x9f000), (0x10_1000, 0x10_2000)]);
    }

    #[test]
    fn an_identity_map_past_the_end_of_ram_is_cut_there() {
        // The example: 1 GiB identity-mapped, 128 MiB of RAM (with the
        // usual hole below 1 MiB), then the same GiB again high up.
        let mut ram = Ram::none();
        assert!(ram.set(&[0..0xa0000, M..128 * M]));
        let alias = 0xffff_8000_0000_0000;
        let got = entries(&[run(0, 0, 1 << 30), run(alias, 0, 1 << 30)], &ram);
        assert_eq!(
            got,
            vec![
                (0, 0, 0xa0000, WRITE),
                (0xa0000, 0xa0000, M - 0xa0000, WRITE | NOT_RAM),
                (M, M, 127 * M, WRITE),
                (128 * M, 128 * M, (1 << 30) - 128 * M, WRITE | NOT_RAM),
                (alias, 0, 0xa0000, WRITE | ALIAS),
                (alias + 0xa0000, 0xa0000, M - 0xa0000, WRITE | NOT_RAM),
                (alias + M, M, 127 * M, WRITE | ALIAS),
                (alias + 128 * M, 128 * M, (1 << 30) - 128 * M, WRITE | NOT_RAM),
            ]
        );
    }

    #[test]
    fn without_declared_ram_every_cached_page_counts_and_devices_never() {
        let dev = Run { uncached: true, executable: true, ..run(0xfee0_0000, 0xfee0_0000, 0x1000) };
        let got = entries(&[run(0x1000, 0x1000, 0x1000), dev], &Ram::none());
        assert_eq!(
            got,
            vec![
                (0x1000, 0x1000, 0x1000, WRITE),
                (0xfee0_0000, 0xfee0_0000, 0x1000, WRITE | EXEC | DEVICE)
            ]
        );
    }

    #[test]
    fn nonzero_pages_are_grouped_by_runs_of_at_most_the_buffer() {
        // 40 pages from virtual 0x10000 (physical 0x200000): zero pages at
        // 3, 4 and 39; pages 5..39 make 16 + 16 + 2.
        let e = Entry { vaddr: 0x10000, paddr: 0x20_0000, len: 40 * 4096, flags: WRITE };
        let mut buf = vec![0u8; 16 * 4096];
        let mut reads = Vec::new();
        let mut groups = Vec::new();
        nonzero_groups(
            &e,
            &mut buf,
            |vaddr, page| {
                let i = (vaddr - 0x10000) / 4096;
                reads.push(i);
                page.fill(if matches!(i, 3 | 4 | 39) { 0 } else { i as u8 + 1 });
                if i == 7 {
                    page.fill(0);
                    page[4095] = 1; // one non-zero byte at the end counts
                }
            },
            |paddr, pages| {
                let first = pages.first().copied();
                groups.push(((paddr - 0x20_0000) / 4096, pages.len() / 4096, first));
            },
        );
        assert_eq!(reads, (0..40).collect::<Vec<_>>(), "each page read once");
        assert_eq!(
            groups,
            vec![(0, 3, Some(1)), (5, 16, Some(6)), (21, 16, Some(22)), (37, 2, Some(38))]
        );
        // An entry that starts and ends mid-page: only its whole pages.
        let odd = Entry { vaddr: 0x10800, paddr: 0x800, len: 3 * 4096, flags: WRITE };
        let mut got = Vec::new();
        nonzero_groups(&odd, &mut buf, |_, p| p.fill(7), |pa, p| got.push((pa, p.len())));
        assert_eq!(got, vec![(0x1000, 2 * 4096)]);
    }

    #[test]
    fn a_partial_overlap_is_dumped_again_not_called_an_alias() {
        let got = entries(&[run(0, 0x1000, 0x2000), run(0x10_0000, 0x2000, 0x2000)], &Ram::none());
        assert_eq!(got[1].3, WRITE);
        assert!(Entry { vaddr: 0, paddr: 0, len: 1, flags: got[1].3 }.dumped());
    }
}
