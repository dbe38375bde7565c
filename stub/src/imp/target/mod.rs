//! gdbstub's `Target` for a stopped x86_64 unikernel: one file per
//! extension (base: registers and memory; resume; breakpoints; monitor).

mod base;
mod breakpoints;
mod monitor;
pub mod regs;
mod resume;

use super::arch::{self, FxArea};
use crate::config::TrapInsn;
use crate::debugregs::DebugRegs;
use crate::paging::{self, Mapping};
use crate::swbreak::SwBreakpoints;
use crate::TrapFrame;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::BreakpointsOps;
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::Target;

/// What the debugger asked for when it let the unikernel go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeKind {
    /// Run.
    Continue,
    /// Execute one instruction with interrupts masked.
    Step,
}

/// Why the unikernel is (or was last) stopped, for `monitor why`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Running, or never stopped.
    None,
    /// `ukdb.wait` at boot.
    Wait,
    /// A debugger attached or interrupted (Ctrl-C).
    Interrupt,
    /// A software breakpoint.
    Breakpoint,
    /// A hardware breakpoint or watchpoint.
    Hardware,
    /// A single step finished.
    Step,
    /// A compiled-in `int3` or [`crate::breakpoint`].
    Trap,
    /// A CPU exception: vector, error code, CR2.
    Exception(u64, u64, u64),
    /// A panic; the message is in [`UkTarget::panic_message`].
    Panic,
}

/// Longest panic message kept.
pub const PANIC_MESSAGE_MAX: usize = 256;

/// The stopped unikernel, as gdbstub sees it.
pub struct UkTarget {
    frame: *mut TrapFrame,
    fx: FxArea,
    pub bps: SwBreakpoints,
    pub hw: DebugRegs,
    pub trap: TrapInsn,
    pub resume: Option<ResumeKind>,
    /// Set while a single step is under way: the IF to restore after it.
    pub step_saved_if: Option<u64>,
    pub reason: Reason,
    pub panic_message: [u8; PANIC_MESSAGE_MAX],
    pub panic_len: usize,
}

impl UkTarget {
    pub const fn new(trap: TrapInsn) -> Self {
        UkTarget {
            frame: core::ptr::null_mut(),
            fx: FxArea::zeroed(),
            bps: SwBreakpoints::new(),
            hw: DebugRegs::new(),
            trap,
            resume: None,
            step_saved_if: None,
            reason: Reason::None,
            panic_message: [0; PANIC_MESSAGE_MAX],
            panic_len: 0,
        }
    }

    /// The world stops: remember the frame, save the x87/SSE state, take
    /// the breakpoints out (software and hardware), so that the stub's own
    /// code never runs over them. A single step in progress ends here,
    /// whatever stopped it.
    pub fn enter(&mut self, frame: &mut TrapFrame) {
        self.frame = frame;
        self.fx.save();
        arch::dr::load([0; 4], 0);
        self.bps.unplant_all(|addr, byte| {
            let _ = write_mem(addr, &[byte]);
        });
        if let Some(saved_if) = self.step_saved_if.take() {
            frame.rflags = (frame.rflags & !(arch::RFLAGS_TF | arch::RFLAGS_IF)) | saved_if;
        }
    }

    /// The world resumes: plant the breakpoints, put the x87/SSE state back
    /// and arm a single step if one was asked for. Returns what the
    /// debugger asked for.
    pub fn leave(&mut self) -> Option<ResumeKind> {
        let trap = self.trap.opcode();
        self.bps.plant_all(|addr| {
            let mut original = [0u8];
            (read_mem(addr, &mut original) == 1 && write_mem(addr, &[trap]).is_ok())
                .then_some(original[0])
        });
        let (addrs, dr7) = self.hw.encode();
        arch::dr::load(addrs, dr7);
        let resume = self.resume.take();
        let mut saved_if = None;
        if let Some(frame) = self.frame_mut() {
            // Resume flag: an instruction breakpoint at rip must not fire
            // again before the instruction runs.
            frame.rflags |= arch::RFLAGS_RF;
            if resume == Some(ResumeKind::Step) {
                saved_if = Some(frame.rflags & arch::RFLAGS_IF);
                frame.rflags = (frame.rflags | arch::RFLAGS_TF) & !arch::RFLAGS_IF;
            }
        }
        self.step_saved_if = saved_if;
        self.fx.restore();
        self.frame = core::ptr::null_mut();
        resume
    }

    /// The frame of the current stop.
    pub fn frame_mut(&mut self) -> Option<&mut TrapFrame> {
        // SAFETY: `frame` is set in `enter` from a live `&mut TrapFrame` on
        // the stopped unikernel's stack and cleared in `leave`; the session
        // uses the target only between the two, and holds no other
        // reference to the frame meanwhile.
        unsafe { self.frame.as_mut() }
    }

    pub fn panic_text(&self) -> &[u8] {
        &self.panic_message[..self.panic_len]
    }

    /// Forgets every breakpoint and watchpoint (none is planted while the
    /// stub runs).
    pub fn clear_breakpoints(&mut self) {
        self.bps.clear();
        self.hw.clear();
    }
}

/// The mapping that holds `addr` in the live page tables. The tables are
/// read at their physical addresses, which the unikernel identity-maps.
fn lookup(addr: u64) -> Option<Mapping> {
    paging::translate(arch::cr3(), addr, |pa| {
        // SAFETY: page-table pages are identity-mapped (a documented
        // requirement on the unikernel) and `pa` comes from a present entry.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    })
}

/// Reads as much of `data` as is mapped from `start` on. Returns the count;
/// 0 when `start` itself is not mapped.
pub fn read_mem(start: u64, data: &mut [u8]) -> usize {
    let mut done = 0;
    while done < data.len() {
        let Some(addr) = start.checked_add(done as u64) else {
            break;
        };
        let Some(m) = lookup(addr) else { break };
        let n = (data.len() - done).min((m.page_end - addr) as usize);
        for (i, b) in data[done..done + n].iter_mut().enumerate() {
            // SAFETY: the page walk found this page present.
            *b = unsafe { core::ptr::read_volatile((addr + i as u64) as *const u8) };
        }
        done += n;
    }
    done
}

/// Whether every byte of `start..start+len` is mapped; `Some(true)` when
/// all of it is also writable.
pub fn check_range(start: u64, len: usize) -> Option<bool> {
    let end = start.checked_add(len as u64)?;
    let mut writable = true;
    let mut addr = start;
    while addr < end {
        let m = lookup(addr)?;
        writable &= m.writable;
        addr = m.page_end;
    }
    Some(writable)
}

/// Writes all of `data` at `start`, or nothing if any byte is unmapped.
/// Read-only pages (code) are written with CR0.WP cleared for the store.
pub fn write_mem(start: u64, data: &[u8]) -> Result<(), ()> {
    let writable = check_range(start, data.len()).ok_or(())?;
    let cr0 = arch::cr0();
    if !writable {
        // SAFETY: interrupts are off and nothing else runs; WP is set back
        // right after the store, which touches only pages checked above.
        unsafe { arch::set_cr0(cr0 & !arch::CR0_WP) };
    }
    for (i, &b) in data.iter().enumerate() {
        // SAFETY: every page of the range is present (checked above).
        unsafe { core::ptr::write_volatile((start + i as u64) as *mut u8, b) };
    }
    if !writable {
        // SAFETY: restores the value read above.
        unsafe { arch::set_cr0(cr0) };
    }
    Ok(())
}

impl Target for UkTarget {
    type Arch = regs::X86_64Ukdb;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}
