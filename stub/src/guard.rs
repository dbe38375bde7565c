//! What the stub keeps the debugger from writing: its own code, data and
//! stack, the IDT, and every page table reachable from CR3. Pure logic,
//! host-tested with fake tables; the full stub asks [`check`] before a
//! debugger's `M`/`X` write or software breakpoint (`imp/target/protect.rs`)
//! and refuses with `E0d` (EACCES) when it says no. Memory reads are not
//! checked: they change nothing.
//!
//! A write is refused when, for any byte of it:
//! - its virtual address lies in a protected range (the table of
//!   [`Guard`], plus the IDT that the caller reads with SIDT at check time), or
//! - its physical address lies in a protected range's physical pages (so an
//!   alias mapping of the stub's data, e.g. the kernel's direct map, is
//!   caught too), or
//! - its physical address lies in a page-table frame: the PML4 at CR3 and
//!   every PDPT, PD and PT that a present entry of the level above points to
//!   (checked through the physical address the write lands on, so a table
//!   written through any mapping is caught).
//!
//! The work is bounded: at most [`MAX_TABLES_READ`] tables are read per
//! check (a PT is never read, only its frame compared). A walk that would
//! read more refuses the write ([`Refusal::TooManyTables`]): without the
//! whole walk the stub cannot tell that a write misses every table.

use crate::paging::{for_each_chunk, Mapping, Walk};

const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
const TABLE_BYTES: u64 = 4096;

/// How many ranges [`Guard`] holds.
pub const MAX_RANGES: usize = 16;

/// At most this many tables (PML4, PDPTs, PDs) are read by one check
/// (512 quadwords each).
pub const MAX_TABLES_READ: usize = 4096;

/// A half-open range of addresses, `start..end` (`end > start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first address.
    pub start: u64,
    /// The address after the last byte.
    pub end: u64,
}

impl Range {
    /// `start..start+len`; `None` when `len` is 0 or the range would wrap.
    pub fn new(start: u64, len: u64) -> Option<Range> {
        let end = start.checked_add(len)?;
        (len > 0).then_some(Range { start, end })
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// What the protected range is, for the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The stub's own code.
    Code,
    /// The stub's own data: statics, buffers, its stack.
    Data,
    /// The interrupt descriptor table.
    Idt,
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It touches a protected range (by virtual address or through an alias
    /// of its physical pages).
    Protected(Kind),
    /// It lands on a page-table frame.
    PageTable,
    /// The walk reached [`MAX_TABLES_READ`] before it could tell.
    TooManyTables,
}

/// The fixed table of protected ranges (no heap).
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    ranges: [(Range, Kind); MAX_RANGES],
    len: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new()
    }
}

impl Guard {
    /// An empty table.
    pub const fn new() -> Guard {
        Guard { ranges: [(Range { start: 0, end: 0 }, Kind::Data); MAX_RANGES], len: 0 }
    }

    /// Protects `start..start+len`. `false`: empty or wrapping (ignored), or
    /// the table is full.
    pub fn add(&mut self, start: u64, len: u64, kind: Kind) -> bool {
        let Some(range) = Range::new(start, len) else {
            return false;
        };
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = (range, kind);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The protected ranges.
    pub fn ranges(&self) -> &[(Range, Kind)] {
        self.ranges.get(..self.len).unwrap_or_default()
    }
}

/// A stretch of physical memory.
type Phys = Range;

/// The physical stretches a mapped virtual range lands on, in order, given
/// to `visit` (unmapped parts are skipped).
fn physical(range: &Range, lookup: &impl Fn(u64) -> Option<Mapping>, mut visit: impl FnMut(Phys)) {
    let mut at = range.start;
    while at < range.end {
        let len = usize::try_from(range.end - at).unwrap_or(usize::MAX);
        let done = for_each_chunk(at, len, lookup, |c| {
            let pa = c.mapping.frame.wrapping_add(c.addr - c.mapping.page_start);
            if let Some(p) = Range::new(pa, c.len as u64) {
                visit(p);
            }
        });
        // Past a hole: on to the next page.
        let step = if done > 0 { done as u64 } else { 4096 - (at & 0xfff) };
        match at.checked_add(step) {
            Some(next) => at = next,
            None => break,
        }
    }
}

/// Whether a write to `write` may go ahead. `protected` is the guard's
/// table (plus the IDT, read at check time); `lookup` translates a virtual
/// address through the live tables; `walk` and `read_phys` reach the
/// tables themselves (a table that cannot be read reads as 0).
pub fn check(
    write: Range,
    protected: &[(Range, Kind)],
    lookup: impl Fn(u64) -> Option<Mapping>,
    walk: &Walk,
    read_phys: impl Fn(u64) -> u64,
) -> Result<(), Refusal> {
    if let Some((_, kind)) = protected.iter().find(|(r, _)| r.overlaps(&write)) {
        return Err(Refusal::Protected(*kind));
    }
    // The write's physical stretches, a few at a time: each batch costs one
    // walk of the tables.
    const BATCH: usize = 8;
    let mut batch = [Range { start: 0, end: 0 }; BATCH];
    let mut n = 0;
    let mut result = Ok(());
    let flush = |batch: &[Phys]| -> Result<(), Refusal> {
        for (r, kind) in protected {
            let mut hit = false;
            physical(r, &lookup, |p| hit |= batch.iter().any(|w| w.overlaps(&p)));
            if hit {
                return Err(Refusal::Protected(*kind));
            }
        }
        tables_touched(batch, walk, &read_phys)
    };
    physical(&write, &lookup, |p| {
        if result.is_err() {
            return;
        }
        if let Some(slot) = batch.get_mut(n) {
            *slot = p;
            n += 1;
        }
        if n == BATCH {
            result = flush(&batch);
            n = 0;
        }
    });
    result?;
    flush(batch.get(..n).unwrap_or_default())
}

/// Whether any of `stretches` lies in a table reachable from the walk's
/// root.
fn tables_touched(
    stretches: &[Phys],
    walk: &Walk,
    read_phys: &impl Fn(u64) -> u64,
) -> Result<(), Refusal> {
    if stretches.is_empty() {
        return Ok(());
    }
    let hits = |table: u64| {
        let frame = Range { start: table, end: table.saturating_add(TABLE_BYTES) };
        stretches.iter().any(|s| s.overlaps(&frame))
    };
    let mut read = 0usize;
    // (table, level): 3 is the PML4, 1 a PD; a PT (level 0) is compared, not read.
    let root = walk.cr3 & walk.frame_mask;
    visit_table(root, 3, walk, read_phys, &hits, &mut read)
}

fn visit_table(
    table: u64,
    level: u32,
    walk: &Walk,
    read_phys: &impl Fn(u64) -> u64,
    hits: &impl Fn(u64) -> bool,
    read: &mut usize,
) -> Result<(), Refusal> {
    if hits(table) {
        return Err(Refusal::PageTable);
    }
    if level == 0 {
        return Ok(());
    }
    *read += 1;
    if *read > MAX_TABLES_READ {
        return Err(Refusal::TooManyTables);
    }
    for index in 0..512u64 {
        let entry = read_phys(table | (index * 8));
        // A large page (PDPT or PD level) maps memory, not a table.
        if entry & PRESENT == 0 || (level < 3 && entry & HUGE != 0) {
            continue;
        }
        visit_table(entry & walk.frame_mask, level - 1, walk, read_phys, hits, read)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::translate;
    use std::collections::HashMap;

    const MASK: u64 = 0x000F_FFFF_FFFF_F000;
    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;

    /// Tables at 0x1000..0x5000. Virtual 0x40_0000.. (PT index 0..4) maps
    /// 4 KiB pages: 0x40_0000 -> 0x10_0000 (data), 0x40_1000 -> 0x4000
    /// (an alias of the PT itself), 0x40_2000 -> 0x1000 (an alias of the
    /// PML4), 0x40_3000 -> 0x11_0000 (another alias of the data page).
    /// Virtual 0x20_0000 is a 2 MiB page at physical 0x80_0000 (huge: no
    /// table under it).
    fn space() -> HashMap<u64, u64> {
        let mut m = HashMap::new();
        m.insert(PML4, PDPT | 3);
        m.insert(PDPT, PD | 3);
        m.insert(PD + 8, 0x80_0000 | 3 | HUGE);
        m.insert(PD + 2 * 8, PT | 3);
        m.insert(PT, 0x10_0000 | 3);
        m.insert(PT + 8, PT | 3);
        m.insert(PT + 2 * 8, PML4 | 3);
        m.insert(PT + 3 * 8, 0x10_0000 | 3);
        m
    }

    fn walk() -> Walk {
        Walk { cr3: PML4, frame_mask: MASK, nxe: false }
    }

    fn run(
        m: &HashMap<u64, u64>,
        write: (u64, u64),
        protected: &[(Range, Kind)],
    ) -> Result<(), Refusal> {
        let read = |pa: u64| m.get(&pa).copied().unwrap_or(0);
        let w = walk();
        check(
            Range::new(write.0, write.1).unwrap(),
            protected,
            |a| translate(&w, a, read),
            &w,
            read,
        )
    }

    #[test]
    fn ordinary_writes_pass() {
        let m = space();
        assert_eq!(run(&m, (0x40_0000, 16), &[]), Ok(()));
        assert_eq!(run(&m, (0x20_0000, 0x1000), &[]), Ok(()));
        // Unmapped: not this module's business (the page walk refuses it).
        assert_eq!(run(&m, (0x7000_0000, 8), &[]), Ok(()));
    }

    #[test]
    fn page_tables_are_refused_through_any_mapping() {
        let m = space();
        // The PT through its alias, the PML4 through its alias.
        assert_eq!(run(&m, (0x40_1000, 1), &[]), Err(Refusal::PageTable));
        assert_eq!(run(&m, (0x40_2ff8, 8), &[]), Err(Refusal::PageTable));
        // A write that starts in data and runs into a table: the whole write.
        assert_eq!(run(&m, (0x40_0ff0, 0x20), &[]), Err(Refusal::PageTable));
    }

    #[test]
    fn a_large_page_over_the_tables_is_refused_there_only() {
        // A 2 MiB page at physical 0: it holds the tables (0x1000..0x5000).
        let mut m = space();
        m.insert(PD + 8, 3 | HUGE);
        assert_eq!(run(&m, (0x20_1000, 8), &[]), Err(Refusal::PageTable));
        assert_eq!(run(&m, (0x20_0ff8, 0x10), &[]), Err(Refusal::PageTable));
        assert_eq!(run(&m, (0x20_0000, 8), &[]), Ok(()));
        assert_eq!(run(&m, (0x20_8000, 8), &[]), Ok(()));
    }

    #[test]
    fn protected_ranges_by_address_and_by_alias() {
        let m = space();
        let data = [(Range::new(0x40_0100, 0x10).unwrap(), Kind::Data)];
        assert_eq!(run(&m, (0x40_0108, 1), &data), Err(Refusal::Protected(Kind::Data)));
        assert_eq!(run(&m, (0x40_00f0, 0x11), &data), Err(Refusal::Protected(Kind::Data)));
        // Beside it: fine.
        assert_eq!(run(&m, (0x40_00f0, 0x10), &data), Ok(()));
        assert_eq!(run(&m, (0x40_0110, 0x10), &data), Ok(()));
        // The alias at 0x40_3000 reaches the same physical bytes.
        assert_eq!(run(&m, (0x40_3100, 4), &data), Err(Refusal::Protected(Kind::Data)));
        assert_eq!(run(&m, (0x40_3200, 4), &data), Ok(()));
        let idt = [(Range::new(0x20_1000, 0x1000).unwrap(), Kind::Idt)];
        assert_eq!(run(&m, (0x20_1ff8, 0x10), &idt), Err(Refusal::Protected(Kind::Idt)));
    }

    #[test]
    fn long_writes_are_checked_in_batches() {
        // 2 MiB page, 0x20_0000 ..: a protected range near its end is found
        // by alias only through the last batch; here by address.
        let m = space();
        let code = [(Range::new(0x3f_f000, 0x1000).unwrap(), Kind::Code)];
        assert_eq!(run(&m, (0x20_0000, 0x20_0000), &code), Err(Refusal::Protected(Kind::Code)));
        assert_eq!(run(&m, (0x20_0000, 0x1f_f000), &code), Ok(()));
    }

    #[test]
    fn the_walk_is_bounded() {
        // Every entry of every table points back at the PML4: 512^3 tables
        // if followed. The check gives up after MAX_TABLES_READ reads.
        let read = |pa: u64| if pa & !0xfff == PML4 { PML4 | 3 } else { 0 };
        let w = walk();
        let stretch = [Range::new(0x9000_0000, 8).unwrap()];
        assert_eq!(tables_touched(&stretch, &w, &read), Err(Refusal::TooManyTables));
        // And finds a table at once when the stretch is the root.
        let root = [Range::new(PML4 + 8, 8).unwrap()];
        assert_eq!(tables_touched(&root, &w, &read), Err(Refusal::PageTable));
    }

    #[test]
    fn the_table_is_fixed_and_rejects_nonsense() {
        let mut g = Guard::new();
        assert!(!g.add(0x1000, 0, Kind::Data));
        assert!(!g.add(u64::MAX, 2, Kind::Data));
        for i in 0..MAX_RANGES as u64 {
            assert!(g.add(i * 0x1000, 0x10, Kind::Code));
        }
        assert!(!g.add(0x9999_0000, 1, Kind::Data));
        assert_eq!(g.ranges().len(), MAX_RANGES);
        assert_eq!(g.ranges()[1].0, Range { start: 0x1000, end: 0x1010 });
    }
}
