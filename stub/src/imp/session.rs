//! The debug session: gdbstub's state machine, driven with the world
//! stopped.
//!
//! The unikernel reaches the stub in two ways. A trap (breakpoint, step,
//! watchpoint, fault) or a stub-made stop (wait, panic, [`crate::breakpoint`])
//! *halts* it: the stub reports the stop to an attached debugger and serves
//! packets until the debugger resumes it. A poll finds bytes waiting: the
//! stub reads what is there (Ctrl-C, control sequences, a new debugger's
//! first packet) and returns unless that halted the unikernel.
//!
//! Debuggers come and go without notice. A session starts with a debugger's
//! first packet and ends when it detaches, when the bridge reports it gone
//! (`DLE 'X'`), when its successor sends `qSupported`, when a packet arrives
//! while the unikernel runs (only a new debugger does that), or on a protocol
//! error. Ending a session removes every breakpoint and starts a fresh
//! gdbstub state machine, so each debugger begins in ack mode with a clean
//! slate, and the unikernel runs on unless a fault or panic holds it.

use super::global::Global;
use super::line;
use super::target::stop::{self, Stop, StopReason};
use super::target::{Reason, UkTarget, PANIC_MESSAGE_MAX};
use crate::config::Config;
use crate::framing::{Control, RxEvent, RxParser};
use crate::TrapFrame;
use core::fmt::Write;
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::GdbStubBuilder;

/// Why the stub entered itself through `soft_entry`.
#[repr(u64)]
pub enum Why {
    Poll = 0,
    Wait = 1,
    Panic = 2,
    Break = 3,
}

/// The packet buffer, advertised to debuggers as `PacketSize`: gdb reads
/// memory in chunks of up to half of it.
pub const PACKET_SIZE: usize = 16 * 1024;

/// Borrowed by the current state machine only (see `fresh_machine`).
static mut PACKET_BUFFER: [u8; PACKET_SIZE] = [0; PACKET_SIZE];

type Machine = GdbStubStateMachine<'static, UkTarget, Conn>;
type Step = Result<Machine, gdbstub::stub::GdbStubError<&'static str, ()>>;

/// gdbstub's connection: RSP bytes onto the line, framed as debugger bytes.
pub struct Conn;

impl Connection for Conn {
    type Error = ();

    fn write(&mut self, byte: u8) -> Result<(), ()> {
        self.write_all(&[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), ()> {
        line::write_debug(buf)
    }

    fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

struct Session {
    target: UkTarget,
    machine: Option<Machine>,
    /// A debugger has spoken since the session last ended.
    active: bool,
    /// The unikernel must not run: serve until the debugger resumes it.
    halted: bool,
    /// The stop holds until a debugger resumes it: `ukdb.wait`, or an
    /// exception or panic that resuming without a debugger only repeats.
    hold: bool,
    rx: RxParser,
    wait: bool,
}

static SESSION: Global<Option<Session>> = Global::new(None);

pub fn init(config: Config) {
    if let Some(mut s) = SESSION.lock() {
        let session = s.insert(Session {
            target: UkTarget::new(&config),
            machine: None,
            active: false,
            halted: false,
            hold: false,
            rx: RxParser::new(),
            wait: config.wait,
        });
        session.fresh_machine();
    }
}

pub fn wants_wait() -> bool {
    SESSION.lock().is_some_and(|s| s.as_ref().is_some_and(|s| s.wait))
}

pub fn is_running() -> bool {
    SESSION.lock().is_some_and(|s| s.is_some())
}

/// Keeps the panic message for the debugger. `false`: no stub to stop in.
pub fn record_panic(info: &core::panic::PanicInfo<'_>) -> bool {
    // Format before taking the lock: formatting runs shared code (a
    // debugger may have a breakpoint in `core::fmt`), and a trap while the
    // lock is held could not be served.
    let mut message = [0u8; PANIC_MESSAGE_MAX];
    let mut w = Truncating { buf: &mut message, len: 0 };
    let _ = write!(w, "{}", info);
    let len = w.len;
    let Some(mut guard) = SESSION.lock() else {
        return false;
    };
    let Some(s) = guard.as_mut() else {
        return false;
    };
    s.target.panic_message = message;
    s.target.panic_len = len;
    true
}

struct Truncating<'a> {
    buf: &'a mut [u8; PANIC_MESSAGE_MAX],
    len: usize,
}

impl Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// An exception from the unikernel's handler.
pub fn on_trap(frame: &mut TrapFrame) -> bool {
    if stop::recover_own_trap(frame) {
        return true;
    }
    // NMI and machine checks are the platform's business.
    if frame.vector == 2 || frame.vector == 18 || frame.vector >= 32 {
        return false;
    }
    enter_stub(frame, |s, frame| Some(s.target.classify(frame)))
}

/// The stub entered itself (see `api::soft_entry`).
pub fn on_soft_entry(frame: &mut TrapFrame, why: u64) {
    enter_stub(frame, |_, _| match why {
        w if w == Why::Wait as u64 => {
            Some(Stop::holding(StopReason::Signal(Signal::SIGTRAP), Reason::Wait))
        }
        w if w == Why::Panic as u64 => {
            Some(Stop::holding(StopReason::Signal(Signal::SIGABRT), Reason::Panic))
        }
        w if w == Why::Break as u64 => {
            Some(Stop::new(StopReason::Signal(Signal::SIGTRAP), Reason::Trap))
        }
        _ => None,
    });
}

/// Every way into the stub: `decide` names the stop from the frame before
/// the world is stopped (`None`: a poll, which halts only if the debugger
/// asks). Then the stop is served, and the unikernel resumed with the
/// console selection it had. `false`: no stub to enter (not started, or
/// re-entered from inside itself).
fn enter_stub(
    frame: &mut TrapFrame,
    decide: impl FnOnce(&mut Session, &mut TrapFrame) -> Option<Stop>,
) -> bool {
    let Some(mut guard) = SESSION.lock() else {
        return false;
    };
    let Some(s) = guard.as_mut() else {
        return false;
    };
    let stop = decide(s, frame);
    let selection = line::selection();
    s.target.enter(frame);
    match stop {
        Some(stop) => s.stop(stop.reason, stop.note, stop.hold),
        None => {
            s.target.reason = Reason::None;
            s.halted = false;
            s.hold = false;
            s.serve();
        }
    }
    while let Some(stop) = s.target.emulated_step() {
        s.stop(stop.reason, stop.note, stop.hold);
    }
    s.target.leave();
    line::restore_selection(selection);
    true
}

impl Session {
    /// Drops the current state machine and starts a new one (idle, ack mode).
    fn fresh_machine(&mut self) {
        self.machine = None;
        // SAFETY: the buffer's only borrower was the machine dropped above,
        // and SESSION's lock makes this the only code running here, so this
        // is the one live reference.
        let buffer: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(PACKET_BUFFER) };
        let Ok(stub) = GdbStubBuilder::new(Conn).with_packet_buffer(buffer).build() else {
            return;
        };
        self.machine = stub.run_state_machine(&mut self.target).ok();
    }

    fn end_session(&mut self) {
        self.target.clear_breakpoints();
        self.target.resume = None;
        self.fresh_machine();
        self.active = false;
    }

    /// Halts: reports the stop to a debugger waiting for one, then serves.
    fn stop(&mut self, reason: StopReason, note: Reason, hold: bool) {
        self.target.reason = note;
        self.hold = hold;
        self.halted = true;
        match self.machine.take() {
            Some(GdbStubStateMachine::Running(mut running)) => {
                if note == Reason::Panic {
                    send_console_packet(running.borrow_conn(), self.target.panic_text());
                }
                let next = running.report_stop(&mut self.target, reason);
                self.settle(next);
            }
            other => self.machine = other,
        }
        self.serve();
    }

    /// Reads and handles bytes: all that arrive while halted, and while
    /// running only those already waiting.
    fn serve(&mut self) {
        loop {
            let byte = if self.halted {
                read_blocking()
            } else {
                match line::try_read() {
                    Some(b) => b,
                    None => return,
                }
            };
            let mut rx = core::mem::take(&mut self.rx);
            rx.push(byte, |event| self.on_event(event));
            self.rx = rx;
        }
    }

    fn on_event(&mut self, event: RxEvent) {
        match event {
            RxEvent::Control(Control::Framed) => line::set_framed(true),
            RxEvent::Control(Control::Raw) => line::set_framed(false),
            RxEvent::Control(Control::DebuggerGone) => {
                if self.active {
                    self.end_session();
                    self.halted = false;
                }
            }
            RxEvent::PacketStart { new_session } => {
                let running = matches!(self.machine, Some(GdbStubStateMachine::Running(_)));
                if self.active && (new_session || running) {
                    self.end_session();
                }
                if !self.active {
                    self.active = true;
                    self.halted = true;
                    if self.target.reason == Reason::None {
                        self.target.reason = Reason::Interrupt;
                    }
                }
            }
            RxEvent::Byte(byte) => {
                let next = match self.machine.take() {
                    Some(GdbStubStateMachine::Idle(idle)) => {
                        idle.incoming_data(&mut self.target, byte)
                    }
                    Some(GdbStubStateMachine::Running(running)) => {
                        running.incoming_data(&mut self.target, byte)
                    }
                    Some(other) => Ok(other),
                    None => return,
                };
                self.settle(next);
            }
        }
    }

    /// Follows the state machine to its next resting state.
    fn settle(&mut self, next: Step) {
        match next {
            Ok(GdbStubStateMachine::Idle(idle)) => {
                self.machine = Some(GdbStubStateMachine::Idle(idle));
                if self.active {
                    self.halted = true;
                }
            }
            Ok(GdbStubStateMachine::Running(running)) => {
                self.machine = Some(GdbStubStateMachine::Running(running));
                if self.target.resume.is_some() {
                    self.halted = false;
                }
            }
            Ok(GdbStubStateMachine::CtrlCInterrupt(interrupt)) => {
                self.target.reason = Reason::Interrupt;
                self.halted = true;
                let next = interrupt
                    .interrupt_handled(&mut self.target, Some(StopReason::Signal(Signal::SIGINT)));
                self.settle(next);
            }
            Ok(GdbStubStateMachine::Disconnected(_)) => {
                self.end_session();
                self.halted = false;
            }
            Err(_) => {
                // A protocol or connection error: the session cannot go on.
                // A wait, fault or panic keeps the unikernel halted for the
                // next debugger; anything else lets it run.
                self.end_session();
                self.halted = self.hold;
            }
        }
    }
}

fn read_blocking() -> u8 {
    loop {
        if let Some(b) = line::try_read() {
            return b;
        }
        core::hint::spin_loop();
    }
}

/// Sends `text` to the debugger's console as an `O` packet (valid while it
/// waits for a stop reply).
fn send_console_packet(conn: &mut Conn, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut sum = b'O';
    let _ = conn.write_all(b"$O");
    for &b in text.iter().chain(b"\n") {
        let pair = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
        sum = sum.wrapping_add(pair[0]).wrapping_add(pair[1]);
        let _ = conn.write_all(&pair);
    }
    let _ = conn.write_all(&[b'#', HEX[usize::from(sum >> 4)], HEX[usize::from(sum & 15)]]);
}
