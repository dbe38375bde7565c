//! Software breakpoints (a trap byte planted in code while the unikernel
//! runs) and hardware breakpoints and watchpoints (the four debug
//! registers, loaded while it runs).

use super::UkTarget;
use crate::debugregs::{Slot, SlotError, SlotKind};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::{TargetError, TargetResult};

/// "No space left": all four debug registers are in use.
const ENOSPC: u8 = 28;
/// "Invalid argument": a length or alignment the debug registers cannot watch.
const EINVAL: u8 = 22;

/// A slot that could not be armed: gdb says it cannot insert it, and the
/// error reply names why.
fn slot_errno<E>(e: SlotError) -> TargetError<E> {
    match e {
        SlotError::Full => TargetError::Errno(ENOSPC),
        SlotError::Unsupported => TargetError::Errno(EINVAL),
    }
}

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
    /// Refused (gdb: "Cannot insert breakpoint") where no mapped byte is, in
    /// a page that forbids execution (NX), and in read-only code while CET
    /// keeps CR0.WP set (a hardware breakpoint still works there). In the
    /// stub's data, the IDT or a page table: `E0d` (EACCES), as for a
    /// write there (see `protect`); the stub's code takes them.
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        // The stub's own code takes software breakpoints: they are armed
        // only while the unikernel runs, so the stub never meets its own,
        // and one in code the unikernel calls (`console_write`, `poll`)
        // stops it like any other. Its data, the IDT and the page tables
        // do not.
        match self.guard_write(addr, 1) {
            Ok(()) | Err(crate::guard::Refusal::Protected(crate::guard::Kind::Code)) => {}
            Err(_) => return Err(TargetError::Errno(super::mem::EACCES)),
        }
        Ok(self.mem.check_breakpoint(addr).is_ok() && self.bps.insert(addr))
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
        let busy = self.program_dr.enabled();
        self.hw
            .add_avoiding(Slot { addr, len: 1, kind: SlotKind::Exec }, busy)
            .map_err(slot_errno)?;
        Ok(true)
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
        let Some(slot) = watch_slot(addr, len, kind) else {
            return Ok(false);
        };
        let busy = self.program_dr.enabled();
        self.hw.add_avoiding(slot, busy).map_err(slot_errno)?;
        Ok(true)
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
