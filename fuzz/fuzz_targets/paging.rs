//! The page walks (`stub/src/paging.rs`: `translate`, `for_each_chunk`,
//! `for_each_run`) over arbitrary page tables, and the core map
//! (`stub/src/coremap.rs`: `classify`) on the runs they yield.
//!
//! The fake physical memory: eight 4 KiB tables at physical 0..0x8000, all
//! zero but for the entries the input writes; every other address reads 0.
//! Invariants: no panic; the whole walk ends (at most `MAX_LEAVES` leaves);
//! runs are ascending, disjoint, page multiples, and agree with `translate`;
//! chunks tile the mapped prefix of a range; map entries tile their run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukdb_stub::fuzzing::coremap::{classify, Ram, Seen};
use ukdb_stub::fuzzing::paging::{
    for_each_chunk, for_each_run, frame_mask, translate, Run, Walk, MAX_LEAVES,
};

const TABLES: u64 = 8;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|[b]| b)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(flags), Some(maxphy), Some(cbit)) = (input.u8(), input.u8(), input.u8()) else {
        return;
    };
    let walk = Walk {
        cr3: u64::from(flags & 7) << 12 | u64::from(flags >> 3 & 3),
        frame_mask: frame_mask(maxphy, (flags & 0x20 != 0).then_some(cbit)),
        nxe: flags & 0x40 != 0,
    };
    // RAM ranges: up to four, from the input.
    let mut ranges = Vec::new();
    for _ in 0..(flags >> 7) * 4 {
        let (Some(a), Some(b)) = (input.u64(), input.u64()) else { break };
        ranges.push(a..b);
    }
    let mut ram = Ram::none();
    let _ = ram.set(&ranges);
    // Probe addresses for translate and for_each_chunk.
    let probes: Vec<u64> = (0..4).filter_map(|_| input.u64()).collect();
    // The rest: (table, index, entry) writes.
    // A flat array, not a map: a walk that reaches `MAX_LEAVES` reads it
    // millions of times, and those walks set the fuzzer's pace.
    let mut mem = vec![0u64; TABLES as usize * 512];
    while let (Some([t, i0, i1]), Some(entry)) = (input.bytes::<3>(), input.u64()) {
        let index = usize::from(u16::from_le_bytes([i0, i1]) & 0x1ff);
        mem[usize::from(t) % TABLES as usize * 512 + index] = entry;
    }
    let read_phys = |pa: u64| {
        if pa.is_multiple_of(8) {
            usize::try_from(pa / 8).ok().and_then(|i| mem.get(i)).copied().unwrap_or(0)
        } else {
            0
        }
    };

    for &addr in &probes {
        if let Some(m) = translate(&walk, addr, read_phys) {
            assert!(matches!(m.page_size, 0x1000 | 0x20_0000 | 0x4000_0000));
            assert!(m.page_start <= addr && addr - m.page_start < m.page_size);
            assert!(m.bytes_from(addr) >= 1);
        }
        let len = (addr >> 48) as usize & 0x3_ffff;
        let mut next = 0usize;
        let done = for_each_chunk(
            addr,
            len,
            |a| translate(&walk, a, read_phys),
            |c| {
                assert_eq!(c.offset, next);
                assert_eq!(c.addr, addr + c.offset as u64);
                assert!(c.len >= 1);
                next += c.len;
            },
        );
        assert_eq!(done, next);
        assert!(done <= len);
    }

    // The previous run and a count, not every run: a walk may yield
    // millions.
    let mut prev: Option<Run> = None;
    let mut count = 0u64;
    let mut seen = Seen::new();
    let complete = for_each_run(&walk, read_phys, |run| {
        assert!(run.len > 0 && run.len % 0x1000 == 0, "{run:?}");
        if let Some(prev) = prev {
            assert!(prev.end() <= run.vaddr, "{prev:?} then {run:?}");
        }
        if count < 256 {
            let m = translate(&walk, run.vaddr, read_phys).expect("a run's first page is mapped");
            assert_eq!(m.frame + (run.vaddr - m.page_start), run.paddr, "{run:?}");
            assert_eq!(
                (m.writable, m.executable, m.uncached),
                (run.writable, run.executable, run.uncached)
            );
            let mut at = run.vaddr;
            classify(&run, &ram, &mut seen, |e| {
                assert_eq!(e.vaddr, at);
                assert!(e.len > 0);
                at = at.saturating_add(e.len);
            });
            assert_eq!(at, run.end());
        }
        prev = Some(run);
        count += 1;
    });
    if complete {
        assert!(count <= MAX_LEAVES);
    }
});
