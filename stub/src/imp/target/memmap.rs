//! `qXfer:memory-map:read`: gdb's memory map, made from the live page
//! tables each time it is read (every mapped page, merged into regions).
//! gdb reads it once per connection and then refuses, without asking, any
//! address outside it (`set mem inaccessible-by-default off` lifts that).

use super::UkTarget;
use crate::ukquery::{map_region, Regions, Window, MAP_HEAD, MAP_TAIL};
use gdbstub::target::ext::memory_map::MemoryMap;
use gdbstub::target::TargetResult;

impl MemoryMap for UkTarget {
    fn memory_map_xml(
        &self,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let room = length.min(buf.len());
        let mut w = Window::new(buf.get_mut(..room).unwrap_or_default(), offset);
        w.put(MAP_HEAD);
        let mut regions = Regions::default();
        crate::imp::query::for_each_run(&self.mem, |run| {
            if let Some((start, len)) = regions.push(run.vaddr, run.len) {
                map_region(&mut w, start, len);
            }
        });
        if let Some((start, len)) = regions.finish() {
            map_region(&mut w, start, len);
        }
        w.put(MAP_TAIL);
        Ok(w.written())
    }
}
