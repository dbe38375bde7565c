//! Naming a trap: what gdb is told, what `monitor why` says, and whether the
//! stop holds without a debugger. A single step that completed gets its
//! flags fixed up here (see `step`).

use super::{Reason, UkTarget};
use crate::debugregs::{SlotKind, DR6_BD, DR6_BS};
use crate::imp::arch;
use crate::TrapFrame;
use gdbstub::common::Signal;
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::breakpoints::WatchKind;

/// What gdb is told about a stop.
pub type StopReason = SingleThreadStopReason<u64>;

/// A stop to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The stop reply for gdb.
    pub reason: StopReason,
    /// The reason for `monitor why`.
    pub note: Reason,
    /// The stop holds until a debugger resumes it (a wait, a fault, a
    /// panic): resuming without a debugger would only repeat it.
    pub hold: bool,
}

impl Stop {
    /// A stop that does not hold.
    pub const fn new(reason: StopReason, note: Reason) -> Stop {
        Stop { reason, note, hold: false }
    }

    /// A stop that holds.
    pub const fn holding(reason: StopReason, note: Reason) -> Stop {
        Stop { reason, note, hold: true }
    }
}

/// A #DB raised by the stub's own save of the debug registers because the
/// unikernel set DR7.GD: the CPU cleared GD on the way in, so returning
/// runs the access again, and it succeeds. Call before anything else
/// (before any lock) for every trap. `true`: handled, return at once.
///
/// Also a fault in the stub's guarded read of a page table
/// (`arch::probe_read_u64`): resumed at its fix-up, so the read fails.
pub fn recover_own_trap(frame: &mut TrapFrame) -> bool {
    if let Some(fixup) = arch::probe_fixup(frame.vector, frame.rip) {
        frame.rip = fixup;
        return true;
    }
    if frame.vector == 1 && arch::dr::in_save(frame.rip) {
        // The unikernel's GD is put back when the stub leaves.
        super::GD_TRAPPED.store(true, core::sync::atomic::Ordering::Relaxed);
        arch::dr::clear_dr6();
        return true;
    }
    false
}

impl UkTarget {
    /// Names the exception in `frame`; rewinds `rip` onto a planted `int3`;
    /// finishes a single step (fix-ups included).
    pub fn classify(&mut self, frame: &mut TrapFrame) -> Stop {
        let exception = Reason::Exception(frame.vector, frame.error_code, arch::cr2());
        let sigtrap = StopReason::Signal(Signal::SIGTRAP);
        match frame.vector {
            1 => {
                let dr6 = arch::dr::dr6();
                arch::dr::clear_dr6();
                let stepped = dr6 & DR6_BS != 0 && self.finish_step(frame);
                if dr6 & DR6_BD != 0 {
                    // The unikernel touched a debug register with DR7.GD set;
                    // the CPU cleared GD, so continuing runs the access.
                    return Stop::new(sigtrap, Reason::GeneralDetect);
                }
                match self.hw.fired(dr6) {
                    Some(slot) => {
                        let reason = match slot.kind {
                            SlotKind::Exec => StopReason::HwBreak(()),
                            SlotKind::Write => StopReason::Watch {
                                tid: (),
                                kind: WatchKind::Write,
                                addr: slot.addr,
                            },
                            SlotKind::ReadWrite => StopReason::Watch {
                                tid: (),
                                kind: WatchKind::ReadWrite,
                                addr: slot.addr,
                            },
                        };
                        Stop::new(reason, Reason::Hardware)
                    }
                    None if stepped => Stop::new(StopReason::DoneStep, Reason::Step),
                    None => Stop::new(sigtrap, Reason::Trap),
                }
            }
            3 => {
                let addr = frame.rip.wrapping_sub(1);
                if self.trap.vector() == 3 && self.bps.contains(addr) {
                    // int3 is a trap: the CPU is past the byte. gdb was told
                    // `swbreak+`, so the stub reports the breakpoint address.
                    frame.rip = addr;
                    Stop::new(StopReason::SwBreak(()), Reason::Breakpoint)
                } else {
                    Stop::new(sigtrap, Reason::Trap)
                }
            }
            6 if self.trap.vector() == 6 && self.bps.contains(frame.rip) => {
                Stop::new(StopReason::SwBreak(()), Reason::Breakpoint)
            }
            6 => Stop::holding(StopReason::Signal(Signal::SIGILL), exception),
            0 | 16 | 19 => Stop::holding(StopReason::Signal(Signal::SIGFPE), exception),
            17 => Stop::holding(StopReason::Signal(Signal::SIGBUS), exception),
            _ => Stop::holding(StopReason::Signal(Signal::SIGSEGV), exception),
        }
    }

    /// A single step's #DB (DR6.BS): gives the program the flags it would
    /// have had, and fixes up what `pushf` pushed. `false` when no step was
    /// under way.
    fn finish_step(&mut self, frame: &mut TrapFrame) -> bool {
        let Some(step) = self.step.take() else {
            return false;
        };
        frame.rflags = step.completed(frame.rflags);
        let pushed_at = frame.rsp;
        let mut image = [0u8; 8];
        if let Some((_, width)) = step.pushed_fixup(0) {
            let width = usize::from(width);
            if let Some(buf) = image.get_mut(..width) {
                if self.mem.read(pushed_at, buf) == width {
                    let pushed = u64::from_le_bytes(image);
                    if let Some((fixed, _)) = step.pushed_fixup(pushed) {
                        let bytes = fixed.to_le_bytes();
                        if let Some(out) = bytes.get(..width) {
                            // The stack is writable: pushf just wrote there.
                            let _ = self.mem.write(pushed_at, out);
                        }
                    }
                }
            }
        }
        true
    }
}
