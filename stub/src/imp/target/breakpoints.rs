//! Software breakpoints (a trap byte planted in code while the unikernel
//! runs) and hardware breakpoints and watchpoints (the four debug
//! registers, loaded while it runs).

use super::{check_range, UkTarget};
use crate::debugregs::{Slot, SlotKind};
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
    /// Records the breakpoint; it is planted when the unikernel resumes.
    /// Refused (gdb: "Cannot insert breakpoint") where no mapped byte is.
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(check_range(addr, 1).is_some() && self.bps.insert(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.bps.remove(addr))
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
        Ok(self.hw.add(Slot { addr, len: 1, kind: SlotKind::Exec }).is_ok())
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.hw.remove(Slot { addr, len: 1, kind: SlotKind::Exec }))
    }
}

impl HwWatchpoint for UkTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(watch_slot(addr, len, kind).is_some_and(|s| self.hw.add(s).is_ok()))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(watch_slot(addr, len, kind).is_some_and(|s| self.hw.remove(s)))
    }
}
