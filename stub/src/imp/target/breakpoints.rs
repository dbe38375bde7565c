//! Software breakpoints (a trap byte planted in code, hidden from reads) and
//! hardware breakpoints and watchpoints (the four debug registers).

use super::{read_mem, write_mem, UkTarget};
use crate::debugregs::{Slot, SlotKind};
use crate::imp::arch;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::TargetResult;

impl Breakpoints for UkTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for UkTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.bps.contains(addr) {
            return Ok(true);
        }
        let mut original = [0u8];
        if read_mem(addr, &mut original) != 1 {
            return Ok(false);
        }
        if !self.bps.insert(addr, original[0]) {
            return Ok(false);
        }
        if write_mem(addr, &[self.trap.opcode()]).is_err() {
            self.bps.remove(addr);
            return Ok(false);
        }
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.bps.remove(addr) {
            Some(original) => Ok(write_mem(addr, &[original]).is_ok()),
            None => Ok(false),
        }
    }
}

impl UkTarget {
    fn load_debug_regs(&self) {
        let (addrs, dr7) = self.hw.encode();
        arch::dr::load(addrs, dr7);
    }

    fn arm(&mut self, slot: Slot) -> bool {
        let ok = self.hw.add(slot).is_ok();
        self.load_debug_regs();
        ok
    }

    fn disarm(&mut self, slot: Slot) -> bool {
        let ok = self.hw.remove(slot);
        self.load_debug_regs();
        ok
    }
}

fn watch_slot(addr: u64, len: u64, kind: WatchKind) -> Option<Slot> {
    let kind = match kind {
        WatchKind::Write => SlotKind::Write,
        WatchKind::ReadWrite => SlotKind::ReadWrite,
        // x86 debug registers cannot trigger on reads alone.
        WatchKind::Read => return None,
    };
    Some(Slot { addr, len, kind })
}

impl HwBreakpoint for UkTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.arm(Slot {
            addr,
            len: 1,
            kind: SlotKind::Exec,
        }))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.disarm(Slot {
            addr,
            len: 1,
            kind: SlotKind::Exec,
        }))
    }
}

impl HwWatchpoint for UkTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(watch_slot(addr, len, kind).is_some_and(|s| self.arm(s)))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(watch_slot(addr, len, kind).is_some_and(|s| self.disarm(s)))
    }
}
