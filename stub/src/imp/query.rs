//! Answers ukdb's own queries (`qUkdb.info`, `qUkdb.map`, `qUkdb.pages`;
//! parsed in [`crate::ukquery`]) with the world stopped: what `ukdb core`
//! needs to write a core of a live unikernel without reading every mapped
//! byte over the line.

use super::arch;
use super::target::mem::Memory;
use super::target::{Reason, UkTarget};
use crate::coremap;
use crate::dumpwire::{cause, map_entry, MAP_LEN};
use crate::livemem;
use crate::paging::Run;
use crate::ukquery::{Query, Window, PAGE};

/// Every run of the live page tables, in virtual order.
pub fn for_each_run(mem: &Memory, visit: impl FnMut(Run)) -> bool {
    livemem::for_each_run(&mem.walk(), mem.phys_offset, visit)
}

/// Every entry of the core's map (runs cut at RAM's edges, flagged).
fn for_each_entry(mem: &Memory, visit: impl FnMut(coremap::Entry)) {
    livemem::each_entry(&mem.walk(), mem.phys_offset, &crate::info::ram(), visit);
}

/// Writes the reply body to `query` into `w`.
pub fn answer(query: Query, target: &mut UkTarget, w: &mut Window<'_>) {
    match query {
        Query::Info => info(target, w),
        Query::Map(first) => map(&target.mem, first, w),
        Query::Pages { addr, pages } => nonzero_pages(&target.mem, addr, pages, w),
        Query::Invalid => w.put(b"E16"),
    }
}

fn info(target: &mut UkTarget, w: &mut Window<'_>) {
    let (vector, error) = target.frame_mut().map_or((0, 0), |f| (f.vector, f.error_code));
    let (stop_cause, cr2) = match target.reason {
        Reason::Panic => (cause::PANIC, arch::cr2()),
        Reason::Exception(_, _, cr2) => (cause::EXCEPTION, cr2),
        _ => (cause::SNAPSHOT, arch::cr2()),
    };
    let numbers = [
        (&b"cause:"[..], u64::from(stop_cause)),
        (b";vector:", vector),
        (b";error:", error),
        (b";cr0:", arch::cr0()),
        (b";cr2:", cr2),
        (b";cr3:", arch::cr3()),
        (b";cr4:", arch::cr4()),
        (b";efer:", arch::efer()),
    ];
    for (key, value) in numbers {
        w.put(key);
        w.put_hex(value);
    }
    w.put(b";build-id:");
    w.put_hex_bytes(crate::info::build_id());
    w.put(b";why:");
    let _ = target.write_why(&mut HexText(w));
    w.put(b";cmdline:");
    w.put_hex_bytes(crate::info::cmdline());
}

/// Text written as hex bytes.
struct HexText<'w, 'a>(&'w mut Window<'a>);

impl core::fmt::Write for HexText<'_, '_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.put_hex_bytes(s.as_bytes());
        Ok(())
    }
}

fn map(mem: &Memory, first: u64, w: &mut Window<'_>) {
    let mut index = 0u64;
    let mut started = false;
    for_each_entry(mem, |e| {
        // An entry goes in whole, after the `m` it may need first.
        if index >= first && w.room() >= 2 * MAP_LEN + usize::from(!started) {
            if !started {
                w.put(b"m");
                started = true;
            }
            w.put_hex_bytes(&map_entry(e.vaddr, e.paddr, e.len, e.flags));
        }
        index += 1;
    });
    if !started {
        w.put(b"l");
    }
}

/// The bitmap of non-zero pages from `addr` on: as many pages as the reply
/// holds (8 per two hex digits), at most `pages`.
fn nonzero_pages(mem: &Memory, addr: u64, pages: u64, w: &mut Window<'_>) {
    let ram = crate::info::ram();
    let bytes = pages.div_ceil(8).min((w.room() / 2) as u64);
    for byte in 0..bytes {
        let mut bits = 0u8;
        for bit in 0..8u64 {
            let index = byte * 8 + bit;
            let page = index.checked_mul(PAGE).and_then(|o| addr.checked_add(o));
            if index < pages && page.is_some_and(|p| page_has_data(mem, &ram, p)) {
                bits |= 1 << bit;
            }
        }
        w.put_hex_bytes(&[bits]);
    }
}

/// Whether the 4 KiB page at `page` is mapped, ordinary RAM, and not all
/// zero.
fn page_has_data(mem: &Memory, ram: &coremap::Ram, page: u64) -> bool {
    let Some(m) = mem.lookup(page) else { return false };
    let pa = m.frame + (page - m.page_start);
    if m.uncached || (ram.is_declared() && !ram.contains(pa)) {
        return false;
    }
    // SAFETY: the page walk found the 4 KiB page at `page` (page-aligned:
    // the query checked) present, cached and in RAM; reading it has no side
    // effects and it stays mapped while the world is stopped.
    let words = unsafe { core::slice::from_raw_parts(page as *const u64, (PAGE / 8) as usize) };
    words.iter().any(|&q| q != 0)
}
