//! gdbstub's `Target` for a stopped x86_64 unikernel: one file per
//! extension (base: registers and memory; resume; breakpoints; monitor),
//! and the machinery under them: `stop` (naming a trap), `step` (single
//! steps that leave IF and TF as the program has them), `mem` (checked
//! memory through the page tables, the platform and layout checks).
//!
//! Between [`UkTarget::enter`] and [`UkTarget::leave`] the unikernel is
//! stopped with nothing of the debugger's in it: no `int3` planted, the
//! debug registers off. `leave` puts the debugger's breakpoints in, and the
//! unikernel's own debug registers back.

mod base;
mod breakpoints;
pub mod mem;
mod memmap;
mod monitor;
mod protect;
pub mod regs;
mod resume;
pub mod step;
pub mod stop;

use super::arch::{self, FxArea};
use crate::config::{Config, TrapInsn};
use crate::debugregs::{DebugRegs, SavedDebugRegs, DR7_GD};
use crate::swbreak::SwBreakpoints;
use crate::TrapFrame;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::BreakpointsOps;
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::Target;
use mem::Memory;
use step::PendingStep;

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
    /// The unikernel accessed a debug register with DR7.GD set (#DB with
    /// DR6.BD); the CPU cleared GD.
    GeneralDetect,
}

/// Longest panic message kept.
pub const PANIC_MESSAGE_MAX: usize = 256;

/// The stub's save of the debug registers trapped on the unikernel's
/// DR7.GD (see `stop::recover_own_trap`): GD is set again on leaving.
static GD_TRAPPED: AtomicBool = AtomicBool::new(false);

/// The stopped unikernel, as gdbstub sees it.
pub struct UkTarget {
    /// The frame of the current stop, between `enter` and `leave`.
    frame: Option<NonNull<TrapFrame>>,
    fx: FxArea,
    pub bps: SwBreakpoints,
    pub hw: DebugRegs,
    /// The unikernel's own debug registers, saved on entry.
    pub program_dr: SavedDebugRegs,
    pub trap: TrapInsn,
    pub mem: Memory,
    pub resume: Option<ResumeKind>,
    /// A single step under way.
    step: Option<PendingStep>,
    pub reason: Reason,
    pub panic_message: [u8; PANIC_MESSAGE_MAX],
    pub panic_len: usize,
    /// What the debugger may not write (see `protect`).
    guard: crate::guard::Guard,
    /// `monitor unsafe-writes on`: the guard is lifted until the session ends.
    pub unsafe_writes: bool,
}

impl UkTarget {
    pub fn new(config: &Config) -> Self {
        UkTarget {
            frame: None,
            fx: FxArea::zeroed(),
            bps: SwBreakpoints::new(),
            hw: DebugRegs::new(),
            program_dr: SavedDebugRegs { addrs: [0; 4], dr7: 0 },
            trap: config.trap,
            mem: Memory::new(config.phys_offset),
            resume: None,
            step: None,
            reason: Reason::None,
            panic_message: [0; PANIC_MESSAGE_MAX],
            panic_len: 0,
            guard: protect::initial(),
            unsafe_writes: false,
        }
    }

    /// The world stops: save the unikernel's debug registers and x87/SSE
    /// state, take the breakpoints out (software and hardware), so that the
    /// stub's own code never runs over them. A single step that `classify`
    /// did not finish ends here: the instruction did not complete, so the
    /// program gets its flags back as they were.
    ///
    /// `frame` is the stop's frame; the target keeps a pointer to it until
    /// [`UkTarget::leave`], and the caller must not use it meanwhile.
    pub fn enter(&mut self, frame: &mut TrapFrame) {
        if let Some(step) = self.step.take() {
            frame.rflags = step.abandoned(frame.rflags);
        }
        // The stub sets RF itself when it resumes; it is not the program's.
        frame.rflags &= !arch::RFLAGS_RF;
        self.program_dr = self.hw.program_view(&arch::dr::save(), &self.program_dr);
        arch::dr::load([0; 4], 0);
        self.fx.save();
        let mem = self.mem;
        self.bps.unplant_all(|addr, byte| {
            let _ = mem.write(addr, &[byte]);
        });
        // Last: from here on the frame is reached only through this pointer.
        self.frame = Some(NonNull::from(frame));
    }

    /// Whether a single step is under way (armed when the unikernel last
    /// resumed, not finished yet).
    pub fn step_pending(&self) -> bool {
        self.step.is_some()
    }

    /// A single step that the stub carries out without running the
    /// unikernel (`sti`, `hlt`: see the `step` module): done here, with the stop to
    /// report. The session reports it and serves on, as for a step's trap.
    pub fn emulated_step(&mut self) -> Option<stop::Stop> {
        if self.resume != Some(ResumeKind::Step) {
            return None;
        }
        let mem = self.mem;
        let frame = self.frame_mut()?;
        let mut bytes = [0u8; 15];
        let n = mem.read(frame.rip, &mut bytes);
        let (insn, len) = step::decode_len(bytes.get(..n).unwrap_or(&[]));
        match insn {
            step::StepInsn::Sti => frame.rflags |= arch::RFLAGS_IF,
            // As if an interrupt had woken it at once.
            step::StepInsn::Hlt => {}
            _ => return None,
        }
        frame.rip = frame.rip.wrapping_add(len as u64);
        self.resume = None;
        Some(stop::Stop::new(stop::StopReason::DoneStep, Reason::Step))
    }

    /// The world resumes: plant the breakpoints, load the debug registers
    /// (the debugger's slots over the unikernel's, see
    /// [`DebugRegs::merge`]), put the x87/SSE state back and arm a single
    /// step if one was asked for. Returns what the debugger asked for.
    pub fn leave(&mut self) -> Option<ResumeKind> {
        let mem = self.mem;
        let resume = self.resume.take();
        let mut step = None;
        if resume == Some(ResumeKind::Step) {
            if let Some(frame) = self.frame_mut() {
                // Decoded before the breakpoints go in: the original bytes.
                let (rip, rflags) = (frame.rip, frame.rflags);
                let mut insn = [0u8; 15];
                let n = mem.read(rip, &mut insn);
                let insn = step::decode(insn.get(..n).unwrap_or(&[]));
                step = Some(PendingStep { insn, rflags });
            }
        }
        let trap = self.trap.opcode();
        self.bps.plant_all(|addr| {
            let mut original = [0u8];
            (mem.read(addr, &mut original) == 1 && mem.write(addr, &[trap]).is_ok())
                .then_some(original[0])
        });
        if let Some(frame) = self.frame_mut() {
            // Resume flag: an instruction breakpoint at rip must not fire
            // again before the instruction runs.
            frame.rflags |= arch::RFLAGS_RF;
            if let Some(step) = step {
                frame.rflags = step.armed_rflags() | arch::RFLAGS_RF;
            }
        }
        self.step = step;
        self.fx.restore();
        self.frame = None;
        let (addrs, mut dr7) = self.hw.merge(&self.program_dr);
        if GD_TRAPPED.swap(false, Ordering::Relaxed) {
            dr7 |= DR7_GD;
        }
        // Last debug register access: with GD set, any later one would trap.
        arch::dr::load(addrs, dr7);
        resume
    }

    /// The frame of the current stop.
    /// rbp, rsp and rip of the stopped program, for a stop reply.
    pub fn expedited(&mut self) -> Option<[u64; 3]> {
        self.frame_mut().map(|f| [f.rbp, f.rsp, f.rip])
    }

    pub fn frame_mut(&mut self) -> Option<&mut TrapFrame> {
        // SAFETY: `frame` is set at the end of `enter` from a live
        // `&mut TrapFrame` on the stopped unikernel's stack, after the last
        // use of that reference, and cleared in `leave`; the caller of
        // `enter` does not touch the frame until `leave` returns, so the
        // pointer is the only way to it, and `&mut self` makes the returned
        // borrow unique.
        self.frame.map(|mut f| unsafe { f.as_mut() })
    }

    pub fn panic_text(&self) -> &[u8] {
        self.panic_message.get(..self.panic_len).unwrap_or(&[])
    }

    /// Forgets every breakpoint and watchpoint (none is planted while the
    /// stub runs).
    pub fn clear_breakpoints(&mut self) {
        self.bps.clear();
        self.hw.clear();
    }
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

    fn support_memory_map(
        &mut self,
    ) -> Option<gdbstub::target::ext::memory_map::MemoryMapOps<'_, Self>> {
        Some(self)
    }
}
