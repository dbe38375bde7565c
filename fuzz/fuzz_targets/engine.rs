//! The protocol engine on the host: the stub's `Rx` in front of gdbstub's
//! `GdbStubStateMachine`, as the stub's session runs it, with a fake target
//! (a memory image and registers; base ops, single registers, resume and
//! step, breakpoints and watchpoints, monitor commands and the memory map,
//! like `stub/src/imp/target/`), fed arbitrary packet streams. Every packet
//! goes through `memreply::parse` and `ukquery::parse` first, as in the stub.
//!
//! Invariant: gdbstub never ends the session with an error on a packet `Rx`
//! passed on (the stub's contract in `rx.rs`), and nothing panics.
#![no_main]

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
use libfuzzer_sys::fuzz_target;
use ukdb_stub::fuzzing::memreply;
use ukdb_stub::fuzzing::regs::{RegIdUkdb, Regs, X86_64Ukdb};
use ukdb_stub::fuzzing::rx::{Event, Rx};
use ukdb_stub::fuzzing::ukquery::{self, map_region, Window, MAP_HEAD, MAP_TAIL};

/// The stub's packet size.
const SIZE: usize = 0x4000;
/// Where the fake memory image starts.
const BASE: u64 = 0x10_0000;

/// A memory image at [`BASE`] and a register file.
struct Fake {
    mem: Vec<u8>,
    regs: Regs,
    breakpoints: Vec<u64>,
}

impl Fake {
    fn range(&self, addr: u64, len: usize) -> Option<std::ops::Range<usize>> {
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
        Ok(())
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
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
        if self.range(addr, 1).is_none() || self.breakpoints.len() >= 64 {
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

impl HwWatchpoint for Fake {
    fn add_hw_watchpoint(&mut self, _: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        Ok(kind != WatchKind::Read && matches!(len, 1 | 2 | 4 | 8))
    }

    fn remove_hw_watchpoint(
        &mut self,
        _: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(kind != WatchKind::Read && matches!(len, 1 | 2 | 4 | 8))
    }
}

impl MonitorCmd for Fake {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        outputln!(out, "{:?}", String::from_utf8_lossy(cmd));
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

/// The connection: replies are collected and dropped.
#[derive(Default)]
struct Sink(Vec<u8>);

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

type Machine<'a> = GdbStubStateMachine<'a, Fake, Sink>;

/// Feeds gdbstub `bytes`; after a resume the target stops at once (or keeps
/// running, when `run` says so, to receive the next bytes while running).
fn gdbstub<'a>(mut m: Machine<'a>, target: &mut Fake, bytes: &[u8], run: bool) -> Machine<'a> {
    for &byte in bytes {
        m = match m {
            GdbStubStateMachine::Idle(s) => s.incoming_data(target, byte),
            GdbStubStateMachine::Running(s) => s.incoming_data(target, byte),
            other => Ok(other),
        }
        .unwrap_or_else(|e| {
            panic!("gdbstub ended the session on {:?}: {e:?}", String::from_utf8_lossy(bytes))
        });
        m = match m {
            GdbStubStateMachine::Running(s) if !run => {
                s.report_stop(target, SingleThreadStopReason::<u64>::DoneStep)
            }
            GdbStubStateMachine::CtrlCInterrupt(s) => s.interrupt_handled(
                target,
                Some(SingleThreadStopReason::<u64>::Signal(Signal::SIGINT)),
            ),
            GdbStubStateMachine::Disconnected(s) => Ok(s.return_to_idle()),
            other => Ok(other),
        }
        .unwrap_or_else(|e| {
            panic!("gdbstub failed to stop after {:?}: {e:?}", String::from_utf8_lossy(bytes))
        });
        if let GdbStubStateMachine::Idle(s) = &mut m {
            s.borrow_conn().0.clear();
        }
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else { return };
    let mut target = Fake {
        mem: vec![0x5a; usize::from(sel) * 64],
        regs: Regs::default(),
        breakpoints: Vec::new(),
    };
    let mut packet_buffer = vec![0u8; SIZE];
    let stub = GdbStubBuilder::new(Sink::default())
        .with_packet_buffer(&mut packet_buffer)
        .build()
        .expect("gdbstub builds");
    let mut machine = Some(stub.run_state_machine(&mut target).expect("gdbstub starts"));
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    let run = sel & 1 != 0;
    for &byte in stream {
        let forward: Option<Vec<u8>> = match rx.push(byte) {
            Some(Event::Packet { bytes, .. }) => {
                // The stub answers these itself (memreply, ukquery).
                if let Some(read) = memreply::parse(bytes) {
                    assert!(read.len > 0 || read.binary);
                    None
                } else if ukquery::parse(bytes).is_some() {
                    None
                } else {
                    Some(bytes.to_vec())
                }
            }
            Some(Event::Ack) => Some(b"+".to_vec()),
            Some(Event::Interrupt) => Some(b"\x03".to_vec()),
            Some(
                Event::Nak
                | Event::BadChecksum
                | Event::Overflow
                | Event::Control(_)
                | Event::Reject(_),
            )
            | None => None,
        };
        if let Some(bytes) = forward {
            let m = machine.take().expect("a machine");
            machine = Some(gdbstub(m, &mut target, &bytes, run));
        }
    }
});
