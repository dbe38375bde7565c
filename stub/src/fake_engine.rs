//! gdbstub's protocol engine on the host, with a fake target: the one
//! harness behind the host tests that prove `Rx`'s checks complete
//! (`rx/tests/against_gdbstub.rs`) and the `engine` fuzz target (`fuzz/`).
//!
//! The fake has the extensions of the stub's `UkTarget` (single thread,
//! single registers, resume and step, software and hardware breakpoints and
//! watchpoints, monitor commands, the memory map) and its register set and
//! target description; its memory is an image at [`BASE`]. Compiled for
//! the full stub's tests and for the `fuzzing` feature only.

#[cfg(not(feature = "enabled"))]
use crate::fuzzing_regs::{RegIdUkdb, Regs, X86_64Ukdb};
#[cfg(feature = "enabled")]
use crate::imp::target::regs::{RegIdUkdb, Regs, X86_64Ukdb};
use crate::ukquery::{map_region, Window, MAP_HEAD, MAP_TAIL};
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::outputln;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{GdbStubBuilder, SingleThreadStopReason};
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::memory_map::{MemoryMap, MemoryMapOps};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use std::string::String;
use std::vec;
use std::vec::Vec;

/// Where the fake's memory image starts.
pub const BASE: u64 = 0x10_0000;

/// Software breakpoints the fake holds at most, like the stub's table.
const BREAKPOINTS: usize = 64;

/// A memory image at [`BASE`] and a register file; it records what reaches
/// it, to show what gdbstub acted on.
pub struct Fake {
    /// The memory image.
    pub mem: Vec<u8>,
    /// The register file.
    pub regs: Regs,
    /// Software breakpoints set.
    pub breakpoints: Vec<u64>,
    /// Memory writes: (address, bytes).
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Register blocks written (`G`).
    pub written_regs: Vec<Regs>,
    /// Sizes of memory reads.
    pub reads: Vec<usize>,
}

impl Fake {
    /// A fake with `len` bytes of memory, each `fill`.
    pub fn new(len: usize, fill: u8) -> Self {
        Fake {
            mem: vec![fill; len],
            regs: Regs::default(),
            breakpoints: Vec::new(),
            writes: Vec::new(),
            written_regs: Vec::new(),
            reads: Vec::new(),
        }
    }

    fn range(&self, addr: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(addr.checked_sub(BASE)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.mem.len()).then_some(start..end)
    }
}

impl Target for Fake {
    type Arch = X86_64Ukdb;
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

    fn support_memory_map(&mut self) -> Option<MemoryMapOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for Fake {
    fn read_registers(&mut self, regs: &mut Regs) -> TargetResult<(), Self> {
        *regs = self.regs.clone();
        Ok(())
    }

    fn write_registers(&mut self, regs: &Regs) -> TargetResult<(), Self> {
        self.regs = regs.clone();
        self.written_regs.push(regs.clone());
        Ok(())
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        self.reads.push(data.len());
        // Reads stop at the end of the image, as the stub's stop at a hole.
        let Some(start) = start_addr.checked_sub(BASE).and_then(|s| usize::try_from(s).ok()) else {
            return Err(TargetError::Errno(14));
        };
        let avail = self.mem.get(start..).unwrap_or_default();
        if avail.is_empty() && !data.is_empty() {
            return Err(TargetError::Errno(14));
        }
        let n = avail.len().min(data.len());
        data[..n].copy_from_slice(&avail[..n]);
        Ok(n)
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        let range = self.range(start_addr, data.len()).ok_or(TargetError::Errno(14))?;
        self.mem[range].copy_from_slice(data);
        self.writes.push((start_addr, data.to_vec()));
        Ok(())
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<()> for Fake {
    fn read_register(
        &mut self,
        _: (),
        reg: RegIdUkdb,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let n = reg.span().len();
        buf.get_mut(..n).ok_or(TargetError::NonFatal)?.fill(reg.0 as u8);
        Ok(n)
    }

    fn write_register(&mut self, _: (), reg: RegIdUkdb, val: &[u8]) -> TargetResult<(), Self> {
        if val.len() != reg.span().len() {
            return Err(TargetError::NonFatal);
        }
        Ok(())
    }
}

impl SingleThreadResume for Fake {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Fake {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl Breakpoints for Fake {
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

impl SwBreakpoint for Fake {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        // Like the stub: a bounded table, an int3 only where memory is.
        if self.range(addr, 1).is_none() || self.breakpoints.len() >= BREAKPOINTS {
            return Ok(false);
        }
        self.breakpoints.push(addr);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let before = self.breakpoints.len();
        self.breakpoints.retain(|&a| a != addr);
        Ok(self.breakpoints.len() != before)
    }
}

impl HwBreakpoint for Fake {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(addr.is_multiple_of(2))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(addr.is_multiple_of(2))
    }
}

/// Watchpoints as the stub's debug registers take them.
fn watchable(len: u64, kind: WatchKind) -> bool {
    kind != WatchKind::Read && matches!(len, 1 | 2 | 4 | 8)
}

impl HwWatchpoint for Fake {
    fn add_hw_watchpoint(&mut self, _: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        Ok(watchable(len, kind))
    }

    fn remove_hw_watchpoint(
        &mut self,
        _: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(watchable(len, kind))
    }
}

impl MonitorCmd for Fake {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        outputln!(out, "{} bytes: {:?}", cmd.len(), String::from_utf8_lossy(cmd));
        Ok(())
    }
}

impl MemoryMap for Fake {
    fn memory_map_xml(
        &self,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let room = length.min(buf.len());
        let mut w = Window::new(buf.get_mut(..room).unwrap_or_default(), offset);
        w.put(MAP_HEAD);
        map_region(&mut w, BASE, self.mem.len() as u64);
        w.put(MAP_TAIL);
        Ok(w.written())
    }
}

/// The debugger's side of the connection: the replies, collected.
#[derive(Default)]
pub struct Sink(pub Vec<u8>);

impl Connection for Sink {
    type Error = ();

    fn write(&mut self, byte: u8) -> Result<(), ()> {
        self.0.push(byte);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// gdbstub's state machine over the fake.
pub type Machine<'a> = GdbStubStateMachine<'a, Fake, Sink>;

/// A gdbstub session over a [`Fake`], driven byte by byte as the stub's
/// session drives it.
pub struct Engine<'a> {
    machine: Option<Machine<'a>>,
    /// The target.
    pub target: Fake,
    /// Report a stop as soon as gdbstub resumes the target; else the next
    /// packets reach gdbstub while the target runs.
    pub stop_at_once: bool,
}

impl<'a> Engine<'a> {
    /// A session over `target` with gdbstub's packet buffer.
    pub fn new(packet_buffer: &'a mut [u8], mut target: Fake) -> Self {
        let stub = GdbStubBuilder::new(Sink::default())
            .with_packet_buffer(packet_buffer)
            .build()
            .expect("gdbstub builds");
        let machine = stub.run_state_machine(&mut target).expect("gdbstub starts");
        Engine { machine: Some(machine), target, stop_at_once: true }
    }

    /// The replies so far; clears them.
    pub fn take_output(&mut self) -> Vec<u8> {
        match self.machine.as_mut() {
            Some(GdbStubStateMachine::Idle(m)) => core::mem::take(&mut m.borrow_conn().0),
            Some(GdbStubStateMachine::Running(m)) => core::mem::take(&mut m.borrow_conn().0),
            _ => Vec::new(),
        }
    }

    /// Feeds gdbstub `bytes` (what `Rx` passed on, from the packet `what`).
    ///
    /// # Panics
    /// When gdbstub ends the session: the stub's contract is that it never
    /// does on a packet `Rx` passed on.
    pub fn gdbstub(&mut self, bytes: &[u8], what: &[u8]) {
        for &byte in bytes {
            let next = match self.machine.take().expect("a machine") {
                GdbStubStateMachine::Idle(m) => m.incoming_data(&mut self.target, byte),
                GdbStubStateMachine::Running(m) => m.incoming_data(&mut self.target, byte),
                other => Ok(other),
            };
            let next = next.unwrap_or_else(|e| {
                panic!("gdbstub ended the session on {:?}: {e:?}", String::from_utf8_lossy(what))
            });
            self.machine = Some(self.settle(next, what));
        }
    }

    /// Back to idle, as the stub is after a stop.
    fn settle(&mut self, m: Machine<'a>, what: &[u8]) -> Machine<'a> {
        let next = match m {
            GdbStubStateMachine::Running(m) if self.stop_at_once => {
                m.report_stop(&mut self.target, SingleThreadStopReason::<u64>::DoneStep)
            }
            GdbStubStateMachine::CtrlCInterrupt(m) => m.interrupt_handled(
                &mut self.target,
                Some(SingleThreadStopReason::<u64>::Signal(Signal::SIGINT)),
            ),
            GdbStubStateMachine::Disconnected(m) => Ok(m.return_to_idle()),
            idle => Ok(idle),
        };
        next.unwrap_or_else(|e| {
            panic!("gdbstub failed to stop after {:?}: {e:?}", String::from_utf8_lossy(what))
        })
    }
}
