//! The proof that [`Rx`]'s checks are complete: a target with the same
//! extensions as the stub's `UkTarget` (single thread, single registers,
//! resume and step, software and hardware breakpoints and watchpoints,
//! monitor commands; the stub's own register set and target description),
//! driven through a real `GdbStubStateMachine`. Every packet `Rx` passes on
//! must be handled without an error (an error ends the session), on a
//! corpus of malformed packets and on pseudo-random mutations of valid ones.

use super::*;
use crate::imp::target::regs::{RegIdUkdb, Regs, X86_64Ukdb};
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
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};

/// What the fake target was asked to do, to see what reaches it.
#[derive(Default)]
struct Fake {
    /// Memory writes: (address, bytes).
    writes: Vec<(u64, Vec<u8>)>,
    /// Register blocks written.
    regs: Vec<Regs>,
    /// Sizes of memory reads.
    reads: Vec<usize>,
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
}

/// Fails the way `UkTarget` does for an unmapped address.
const UNMAPPED: u64 = 0x7f00_0000_1000;

impl SingleThreadBase for Fake {
    fn read_registers(&mut self, regs: &mut Regs) -> TargetResult<(), Self> {
        *regs = Regs::default();
        Ok(())
    }

    fn write_registers(&mut self, regs: &Regs) -> TargetResult<(), Self> {
        self.regs.push(regs.clone());
        Ok(())
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        self.reads.push(data.len());
        if start_addr == UNMAPPED {
            return Err(TargetError::Errno(14));
        }
        data.fill(0xa5);
        Ok(data.len())
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        if start_addr == UNMAPPED {
            return Err(TargetError::Errno(14));
        }
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
        buf.get_mut(..n).ok_or(TargetError::NonFatal)?.fill(0x5a);
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
        Ok(addr != UNMAPPED)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(addr != UNMAPPED)
    }
}

impl HwBreakpoint for Fake {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(addr != UNMAPPED)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(addr != UNMAPPED)
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
        outputln!(out, "{} bytes", cmd.len());
        Ok(())
    }
}

/// The debugger's side of the connection.
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

/// A gdbstub session behind an [`Rx`], as the stub runs it.
struct Session<'a> {
    machine: Option<Machine<'a>>,
    target: Fake,
    passed: usize,
    rejected: usize,
    /// Report a stop as soon as gdbstub resumes the target (else the
    /// next packets reach gdbstub while it runs).
    stop_at_once: bool,
}

impl<'a> Session<'a> {
    fn new(packet_buffer: &'a mut [u8]) -> Self {
        let mut target = Fake::default();
        let stub = GdbStubBuilder::new(Sink::default())
            .with_packet_buffer(packet_buffer)
            .build()
            .expect("gdbstub builds");
        let machine = stub.run_state_machine(&mut target).expect("gdbstub starts");
        Session { machine: Some(machine), target, passed: 0, rejected: 0, stop_at_once: true }
    }

    /// Bytes of the debugger's reply so far; clears them.
    fn take_output(&mut self) -> Vec<u8> {
        match self.machine.as_mut() {
            Some(GdbStubStateMachine::Idle(m)) => core::mem::take(&mut m.borrow_conn().0),
            Some(GdbStubStateMachine::Running(m)) => core::mem::take(&mut m.borrow_conn().0),
            _ => Vec::new(),
        }
    }

    /// Feeds gdbstub bytes `Rx` passed on; panics if it ends the session.
    fn gdbstub(&mut self, bytes: &[u8], what: &[u8]) {
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

    /// Feeds the host's bytes through `rx` and what it passes on to gdbstub.
    fn feed(&mut self, rx: &mut Rx<'_>, bytes: &[u8]) {
        for &b in bytes {
            match rx.push(b) {
                Some(Event::Packet { bytes, .. }) => {
                    self.passed += 1;
                    let packet = bytes.to_vec();
                    self.gdbstub(&packet, &packet);
                }
                Some(Event::Ack) => self.gdbstub(b"+", b"+"),
                Some(Event::Interrupt) => self.gdbstub(b"\x03", b"\x03"),
                Some(Event::Reject(_)) => self.rejected += 1,
                // The stub answers these itself; gdbstub never sees them.
                Some(Event::Nak | Event::BadChecksum | Event::Overflow | Event::Control(_))
                | None => {}
            }
        }
    }
}

#[test]
fn gdbstub_handles_every_valid_and_hostile_packet() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    let mut bodies = valid_bodies();
    bodies.extend(hostile_bodies());
    for body in &bodies {
        session.feed(&mut rx, &pkt(body));
        session.take_output();
    }
    assert_eq!((session.passed, session.rejected), (bodies.len(), 0));
}

/// The bodies of the reply packets in `out` (`$body#xx` each).
fn reply_bodies(out: &[u8]) -> Vec<&[u8]> {
    out.split(|&b| b == b'$')
        .skip(1)
        .map(|p| p.split(|&b| b == b'#').next().unwrap_or_default())
        .collect()
}

#[test]
fn replies_fit_the_packet_size() {
    // PacketSize counts a packet's data, without `$` and `#xx`: the clamped
    // `m` and the whole target description each come back in one reply of
    // at most that.
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    session.feed(&mut rx, &pkt(b"QStartNoAckMode"));
    session.take_output();
    for body in [
        // Longer reads would only take longer without the clamp: this
        // one fails rather than hangs if the clamp goes.
        &b"m100000,10000"[..],
        b"m100000,2000",
        b"qXfer:features:read:target.xml:0,ffffffffffffffff",
        b"qRcmd,68656c70",
    ] {
        session.feed(&mut rx, &pkt(body));
        let out = session.take_output();
        let replies = reply_bodies(&out);
        assert!(!replies.is_empty());
        for reply in replies {
            assert!(
                reply.len() <= SIZE,
                "{} bytes for {}",
                reply.len(),
                String::from_utf8_lossy(body)
            );
        }
    }
    session.feed(&mut rx, &pkt(b"m100000,4001"));
    let out = session.take_output();
    assert_eq!(
        reply_bodies(&out),
        vec![&b"a5".repeat(M_MAX as usize)[..]],
        "a short read, in full"
    );
}

#[test]
fn gdbstub_survives_the_malformed_corpus() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    for body in malformed_bodies() {
        session.feed(&mut rx, &pkt(&body));
        // The session is still there: it answers.
        session.feed(&mut rx, &pkt(b"?"));
        assert!(session.take_output().ends_with(&pkt(b"T05thread:01;")));
    }
    assert_eq!(
        (session.passed, session.rejected),
        (malformed_bodies().len(), malformed_bodies().len())
    );
}

/// Without `Rx`, gdbstub ends the session on these (each was a lost
/// session, and every breakpoint with it, before the stub checked packets).
#[test]
fn gdbstub_alone_ends_the_session_on_malformed_packets() {
    for body in [
        &b"m-1"[..],
        b"mzz",
        b"vContzz",
        b"vCont;;;",
        b"vCont;s:p1.-2",
        b"vCont;x",
        b"Hg-1",
        b"T0",
        b"G00",
        b"qXfer:features:read:foo.xml:0,10",
        b"X100000,1:}",
        b"Z0,1,zz",
        b"qSupported:",
    ] {
        let mut packet_buffer = vec![0u8; SIZE];
        let mut target = Fake::default();
        let stub = GdbStubBuilder::new(Sink::default())
            .with_packet_buffer(&mut packet_buffer)
            .build()
            .unwrap();
        let mut machine = stub.run_state_machine(&mut target).unwrap();
        let mut ended = false;
        for &b in &pkt(body) {
            machine = match machine {
                GdbStubStateMachine::Idle(m) => match m.incoming_data(&mut target, b) {
                    Ok(m) => m,
                    Err(_) => {
                        ended = true;
                        break;
                    }
                },
                other => other,
            };
        }
        assert!(ended, "{}", String::from_utf8_lossy(body));
        let mut rx_buf = vec![0u8; SIZE];
        assert_eq!(run_with(&mut rx_buf, &pkt(body)), vec![Ev::Reject(Reply::Einval)]);
    }
}

fn run_with(buf: &mut [u8], bytes: &[u8]) -> Vec<Ev> {
    feed(&mut Rx::new(buf), bytes)
}

/// Without `Rx`, gdbstub does harm with these: it writes registers shifted
/// by a digit, writes more memory than asked, reads gigabytes.
#[test]
fn gdbstub_alone_acts_on_inconsistent_packets() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut target = Fake::default();
    let stub = GdbStubBuilder::new(Sink::default())
        .with_packet_buffer(&mut packet_buffer)
        .build()
        .unwrap();
    let mut machine = stub.run_state_machine(&mut target).unwrap();
    let odd_g = format!("G{}", "1".repeat(0x218 * 2 - 1));
    let mut input = pkt(odd_g.as_bytes());
    input.extend(pkt(b"X121000,2:abcdefgh"));
    input.extend(pkt(b"m100000,10000"));
    for &b in &input {
        machine = match machine {
            GdbStubStateMachine::Idle(m) => m.incoming_data(&mut target, b).unwrap(),
            _ => unreachable!(),
        };
    }
    assert_eq!(target.regs.len(), 1, "the odd G was applied");
    assert_eq!(target.regs[0].core.regs[0], 0x1111_1111_1111_1101, "shifted by a digit");
    assert_eq!(target.writes, vec![(0x121000, b"abcdefgh".to_vec())], "8 bytes for 2");
    assert_eq!(target.reads.iter().sum::<usize>(), 0x10000, "all 64 KiB read");
    // Through Rx: the first two are refused, the read is clamped.
    let mut rx_buf = vec![0u8; SIZE];
    assert_eq!(
        run_with(&mut rx_buf, &input),
        vec![
            Ev::Reject(Reply::Einval),
            Ev::Reject(Reply::Einval),
            Ev::Packet(pkt(b"m100000,2000"), PacketClass::Other)
        ]
    );
}

/// Bytes that matter to the parsers.
const INTERESTING: &[u8] = b"0123456789abcdefABCDEFxX,:;=.-p}*#$+\x03\x10?cCsSrtgGmMzZ0";

/// Extreme numbers and ids.
const NUMBERS: [&[u8]; 8] =
    [b"ffffffffffffffff", b"10000000000000000", b"-1", b"0", b"00", b"2001", b"218", b""];

fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(body.len() + 1);
        match rng.below(9) {
            0 | 1 if !body.is_empty() => {
                let at = at.min(body.len() - 1);
                body[at] = *rng.pick(INTERESTING);
            }
            2 => body.insert(at, *rng.pick(INTERESTING)),
            3 if at < body.len() => {
                body.remove(at);
            }
            4 => body.truncate(at),
            5 if !body.is_empty() => {
                // Repeat a slice (long lists of actions, features, digits).
                let start = rng.below(body.len());
                let len = 1 + rng.below((body.len() - start).min(16));
                let piece = body[start..start + len].to_vec();
                for _ in 0..1 + rng.below(64) {
                    body.splice(at..at, piece.iter().copied());
                }
            }
            6 => body.insert(at, rng.next() as u8),
            7 => {
                // A number made longer, or replaced with an extreme one.
                let n = *rng.pick(&NUMBERS);
                body.splice(at..at, n.iter().copied());
            }
            _ => {
                if let Some(pos) = body.iter().position(|&b| b == b',' || b == b':' || b == b';') {
                    body.remove(pos);
                }
            }
        }
    }
}

#[test]
fn gdbstub_survives_100k_mutated_packets() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    let mut seeds = valid_bodies();
    seeds.extend(hostile_bodies());
    seeds.extend(malformed_bodies());
    let mut rng = Rng(0x5eed_f00d_dba1_1a55);
    for _ in 0..100_000 {
        let mut body = rng.pick(&seeds).clone();
        mutate(&mut rng, &mut body);
        let mut bytes = pkt(&body);
        match rng.below(20) {
            // A corrupted checksum.
            0 => {
                let last = bytes.len() - 1;
                bytes[last] = *rng.pick(INTERESTING);
            }
            // Noise, a control or an ack before it.
            1 => {
                bytes.splice(0..0, [*rng.pick(INTERESTING), *rng.pick(INTERESTING)]).for_each(drop)
            }
            _ => {}
        }
        session.stop_at_once = rng.below(4) != 0;
        session.feed(&mut rx, &bytes);
        session.take_output();
        // Whatever came before, a packet that stopped arriving is dropped.
        if rx.in_packet() {
            rx.abandon();
        }
    }
    // Both sides of the check are exercised.
    assert!(session.passed > 30_000, "passed {}", session.passed);
    assert!(session.rejected > 30_000, "rejected {}", session.rejected);
}
