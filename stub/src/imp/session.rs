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
//! Packets are assembled and checked by [`Rx`] before gdbstub sees them, so
//! line noise or a malformed packet gets a NAK or an error reply and the
//! session goes on (gdbstub itself would end it).
//!
//! Debuggers come and go without notice. A session starts with a debugger's
//! first packet (or a lone Ctrl-C) and ends when it detaches, when the
//! bridge reports it gone (`DLE 'X'`, answered with `DLE 'E'`), when the
//! transport reports the link gone, when an opening packet (`qSupported`,
//! `QStartNoAckMode`) arrives after the session got going (a new debugger),
//! or on a protocol error. Ending a session removes every breakpoint and
//! starts a fresh gdbstub state machine; the unikernel runs on unless a
//! wait, fault or panic holds it.
//!
//! Nothing here runs in the unikernel's context with a lock held: a trap
//! that finds the stub busy (its own code, or a console drain holding the
//! line) is handled without locks by [`on_busy`] and never stops there.

use super::arch;
use super::line;
use super::target::mem::Memory;
use super::target::stop::{self, Stop, StopReason};
use super::target::{Reason, UkTarget, PANIC_MESSAGE_MAX};
use crate::auth::{Auth, Pool, Request, Tier, Verdict};
use crate::config::Config;
use crate::global::{Global, SetOnce};
use crate::link::LinkEvent;
use crate::rx::{Control, Event, PacketClass, Reply, Rx};
use crate::swbreak::MAX_SW_BREAKPOINTS;
use crate::TrapFrame;
use core::convert::Infallible;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::GdbStubBuilder;

pub use crate::entry::Why;

/// The default packet size (see [`Buffers`]).
pub const PACKET_SIZE: usize = 16 * 1024;

/// How long a packet may pause mid-way before it is dropped, in TSC ticks:
/// 2^31 is 0.5 s at 4 GHz and 2 s at 1 GHz.
const PACKET_SILENCE_TICKS: u64 = 1 << 31;

/// The stub's packet buffers, supplied by the caller of `init_static` (or
/// the stub's own, `PACKET_SIZE` bytes each, with `init`): `N` (at least
/// 16 KiB) is advertised to debuggers as `PacketSize`. Three buffers of `N`
/// bytes: where a packet is assembled and checked, gdbstub's own, and where
/// a reply is gathered (and kept for a retransmission), with a few bytes
/// more for the reply's `$`, `#xx` and ack. A memory read answers up to
/// `N / 2` bytes per packet (its hex fills `N`), so a debugger that reads
/// as much as `PacketSize` allows needs one round trip per packet.
#[repr(C)]
pub struct Buffers<const N: usize> {
    rx: [u8; N],
    packet: [u8; N],
    tx: [u8; N],
    /// Directly after `tx` (`repr(C)`, byte arrays: no padding): the reply
    /// buffer is `tx` and this together.
    tx_slack: [u8; TX_SLACK],
}

/// Room in the reply buffer beyond `N`: an ack, `$`, `#` and two checksum
/// digits around a reply of `N` hex digits, rounded up.
const TX_SLACK: usize = 8;

impl<const N: usize> Buffers<N> {
    /// Zeroed buffers (for a `static`).
    pub const fn new() -> Self {
        const {
            assert!(
                N as u64 >= 2 * crate::rx::M_MAX,
                "ukdb_stub::Buffers: N must be at least 16 KiB (a whole memory-read reply)"
            )
        };
        Buffers { rx: [0; N], packet: [0; N], tx: [0; N], tx_slack: [0; TX_SLACK] }
    }

    /// The three buffers: receive, gdbstub's packet buffer, and the reply
    /// buffer (`tx` with the slack after it).
    fn split(&'static mut self) -> (&'static mut [u8], &'static mut [u8], &'static mut [u8]) {
        let this: *mut Self = self;
        // SAFETY: `this` comes from a `&'static mut Self`, so every field
        // is valid for `'static` and borrowed by nobody else. The three
        // slices do not overlap: `rx` and `packet` are fields of their own,
        // and the reply slice covers `tx` and `tx_slack`, which `repr(C)`
        // lays out back to back (byte arrays, alignment 1: no padding), all
        // inside the one struct the pointer was derived from.
        unsafe {
            let rx = &mut *core::ptr::addr_of_mut!((*this).rx);
            let packet = &mut *core::ptr::addr_of_mut!((*this).packet);
            let tx = core::ptr::addr_of_mut!((*this).tx).cast::<u8>();
            let tx = core::slice::from_raw_parts_mut(tx, N + TX_SLACK);
            (&mut rx[..], &mut packet[..], tx)
        }
    }
}

impl<const N: usize> Default for Buffers<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A buffer handed over for good, re-borrowed by each new state machine.
struct Chunk {
    ptr: *mut u8,
    len: usize,
}

impl Chunk {
    fn new(buf: &'static mut [u8]) -> Self {
        Chunk { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// # Safety
    /// The previous borrow (the state machine that had it) is gone.
    unsafe fn borrow(&mut self) -> &'static mut [u8] {
        // SAFETY: made from a `&'static mut [u8]` given to the stub for
        // good; the caller guarantees no other borrow is alive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

type Machine = GdbStubStateMachine<'static, UkTarget, Conn>;
type Step = Result<Machine, gdbstub::stub::GdbStubError<&'static str, Infallible>>;

/// gdbstub's connection: gathers what gdbstub writes and sends it as one
/// run of debugger bytes per packet (see [`Conn::send`]). The last reply is
/// kept, so a NAK can be answered with it again.
pub struct Conn {
    buf: &'static mut [u8],
    len: usize,
    /// Where the last reply packet starts in `buf`, once sent.
    reply: Option<usize>,
    /// The reply did not fit: it went out in pieces and cannot be resent.
    spilled: bool,
    /// rbp, rsp and rip for the next stop reply (see [`Conn::expedite`]).
    expedite: Option<[u64; 3]>,
    /// The debugger speaks the multiprocess dialect (thread ids `pP.T`).
    multiprocess: bool,
    /// The envelope of the checked request being answered
    /// ([`crate::checked`]): replies go out as its pieces. `None`: plain.
    checked: Option<crate::checked::Envelope>,
    /// Where the reply text to the checked request is kept in `buf`, once
    /// sent (further pieces and retransmissions come from it).
    kept: Option<(usize, usize)>,
}

impl Conn {
    /// Sends what was gathered; it is the last reply until more is written.
    /// For a checked request, what was gathered (from its first `$`) is the
    /// reply text: it is kept, and the piece the request asked for is sent.
    fn send(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Some(regs) = self.expedite.take() {
            self.expedite_into(regs);
        }
        let gathered = self.buf.get(..self.len).unwrap_or_default();
        if let (Some(env), false) = (self.checked, self.spilled) {
            // Bytes before the first packet (an ack) are not part of it;
            // without a packet there is no reply (yet).
            self.kept = gathered.iter().position(|&b| b == b'$').map(|start| (start, self.len));
            self.reply = None;
            self.len = 0;
            self.send_piece(env);
            return;
        }
        line::write_debug(gathered);
        line::flush();
        self.reply = if self.spilled { None } else { gathered.iter().position(|&b| b == b'$') };
        self.len = 0;
        self.spilled = false;
    }

    /// Answers `read` from `mem` (see [`Session::fast_read`]): the bytes
    /// are read into the end of the buffer and encoded in place. An address
    /// that cannot be read at all gets `E0e` (EFAULT), as from gdbstub; a
    /// read that runs into an unmapped page answers the part before it.
    fn mem_reply(&mut self, ack: bool, read: crate::memreply::Read, mem: &Memory) {
        // The reply is the whole send: nothing is gathered while gdbstub
        // waits for a command.
        self.len = 0;
        self.spilled = false;
        if read.len == 0 {
            // lldb's probe (`x0,0`): binary reads are answered.
            let _ = self.write_all(if ack { b"+$OK#9a" } else { b"$OK#9a" });
            self.send();
            return;
        }
        let limit = crate::memreply::max_len(self.buf.len());
        let n = usize::try_from(read.len).map_or(limit, |n| n.min(limit));
        // The bytes are read into the end of the buffer and encoded from
        // there to its start, after the ack.
        let from = self.buf.len() - n;
        let got = self.buf.get_mut(from..).map_or(0, |tail| mem.read(read.addr, tail));
        let at = usize::from(ack);
        if let (true, Some(first)) = (ack, self.buf.first_mut()) {
            *first = b'+';
        }
        let end = if got == 0 {
            self.buf.get_mut(at..at + 7).map(|out| {
                out.copy_from_slice(b"$E0e#da");
                at + 7
            })
        } else {
            crate::memreply::encode(self.buf, at, from, got, read.binary)
        };
        self.len = end.unwrap_or(0);
        self.send();
    }

    /// Sends a packet whose body `body` writes (hex and plain ASCII: no
    /// character needs escaping), acknowledged first in ack mode. The body
    /// gets the whole buffer but the packet's framing.
    fn reply_with(&mut self, ack: bool, body: impl FnOnce(&mut crate::ukquery::Window<'_>)) {
        self.len = 0;
        self.spilled = false;
        let at = usize::from(ack);
        let Some(head) = self.buf.get_mut(..=at) else { return };
        head[0] = b'+';
        head[at] = b'$';
        let end = self.buf.len().saturating_sub(3);
        let Some(room) = self.buf.get_mut(at + 1..end) else { return };
        let mut w = crate::ukquery::Window::new(room, 0);
        body(&mut w);
        let n = w.written();
        let Some(sent) = self.buf.get_mut(at + 1..at + 1 + n) else { return };
        let [hi, lo] = crate::memreply::hex_pair(sent.iter().fold(0u8, |a, &b| a.wrapping_add(b)));
        let Some(tail) = self.buf.get_mut(at + 1 + n..at + 4 + n) else { return };
        tail.copy_from_slice(&[b'#', hi, lo]);
        self.len = at + 4 + n;
        self.send();
    }

    /// Adds rbp, rsp and rip to the stop reply gathered (gdbstub cannot for
    /// this architecture: gdbstub_arch's register ids have no raw numbers),
    /// and a thread to an `S` reply, which becomes a `T` reply: the debugger
    /// then needs no `g` and no thread list after a step or a breakpoint.
    /// Register numbers are the target description's (rbp 6, rsp 7, rip 16).
    /// Anything but one whole `S`/`T` packet is left alone.
    fn expedite_into(&mut self, [rbp, rsp, rip]: [u64; 3]) {
        use crate::memreply::hex_pair;
        let gathered = self.buf.get(..self.len).unwrap_or_default();
        let Some(start) = gathered.iter().position(|&b| b == b'$') else { return };
        let Some(hash) = gathered.iter().rposition(|&b| b == b'#') else { return };
        if hash + 3 != self.len || hash < start + 3 {
            return;
        }
        let mut extra = [0u8; 96];
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            for &b in bytes {
                if let Some(slot) = extra.get_mut(n) {
                    *slot = b;
                    n += 1;
                }
            }
        };
        match gathered.get(start + 1) {
            Some(b'S') if hash == start + 4 => {
                put(if self.multiprocess { b"thread:p01.01;" } else { b"thread:01;" });
            }
            Some(b'T') => {}
            _ => return,
        }
        for (num, value) in [(b"06", rbp), (b"07", rsp), (b"10", rip)] {
            put(num);
            put(b":");
            for byte in value.to_le_bytes() {
                put(&hex_pair(byte));
            }
            put(b";");
        }
        let Some(out) = self.buf.get_mut(start..hash + n + 3) else { return };
        out[1] = b'T';
        out[hash - start..hash - start + n].copy_from_slice(&extra[..n]);
        let body_end = hash - start + n;
        let sum = out[1..body_end].iter().fold(0u8, |a, &b| a.wrapping_add(b));
        let [hi, lo] = hex_pair(sum);
        out[body_end..body_end + 3].copy_from_slice(&[b'#', hi, lo]);
        self.len = hash + n + 3;
    }

    /// Sends the piece `env` asks for of the kept reply text; `false`: no
    /// reply is kept (none sent yet for the checked request).
    fn send_piece(&mut self, env: crate::checked::Envelope) -> bool {
        let Some(text) = self.kept.and_then(|(start, end)| self.buf.get(start..end)) else {
            return false;
        };
        crate::checked::write_piece(env, text, line::write_debug);
        line::flush();
        true
    }

    /// Answers the checked request `env`: its piece of the kept reply, or
    /// `running` while it has none (it resumed the unikernel).
    fn answer_checked(&mut self, env: crate::checked::Envelope) {
        if !self.send_piece(env) {
            crate::checked::write_running(env.seq, line::write_debug);
            line::flush();
        }
    }

    /// Sends the last reply again (the debugger NAKed it).
    fn resend(&mut self) {
        if let Some(env) = self.checked {
            self.send_piece(crate::checked::Envelope { offset: 0, ..env });
            return;
        }
        if let Some(start) = self.reply {
            if let Some(packet) = self.buf.get(start..) {
                let end = packet.iter().position(|&b| b == b'#').map(|i| i + 3);
                if let Some(packet) = end.and_then(|end| packet.get(..end)) {
                    line::write_debug(packet);
                    line::flush();
                }
            }
        }
    }
}

impl Connection for Conn {
    type Error = Infallible;

    fn write(&mut self, byte: u8) -> Result<(), Infallible> {
        self.write_all(&[byte])
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        if self.len == 0 {
            self.reply = None;
            self.kept = None;
        }
        for &b in bytes {
            if self.len == self.buf.len() {
                // Too long to keep: send what is here and go on.
                let full = self.buf.get(..self.len).unwrap_or_default();
                line::write_debug(full);
                self.len = 0;
                self.spilled = true;
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        // A checked request's reply text is everything the request makes
        // the stub write (console packets and a reply, say): the session
        // sends it once the request is handled.
        if self.checked.is_none() {
            self.send();
        }
        Ok(())
    }
}

struct Session {
    target: UkTarget,
    machine: Option<Machine>,
    /// gdbstub's packet buffer and the reply buffer, lent to each machine.
    packet: Chunk,
    tx: Chunk,
    rx: Rx<'static>,
    /// A debugger has spoken since the session last ended.
    active: bool,
    /// The session handled a packet beyond the opening handshake: another
    /// opening packet is a new debugger.
    opened: bool,
    /// The last packet of the opening handshake handled (its length and
    /// checksum): the same again before the session got going is the
    /// debugger retransmitting it (it did not see the ack in time).
    last_handshake: Option<(usize, u16)>,
    /// The debugger switched acknowledgements off.
    no_ack: bool,
    /// The unikernel must not run: serve until the debugger resumes it.
    halted: bool,
    /// The stop holds until a debugger resumes it: `ukdb.wait`, or an
    /// exception or panic that resuming without a debugger only repeats.
    hold: bool,
    /// TSC at the last byte received.
    last_byte: u64,
    /// The keys, this session's tier, the open challenge and the failures
    /// (see `crate::auth`).
    auth: Auth,
    /// Where nonces come from.
    nonces: Pool,
    /// The number of the last checked request acted on
    /// ([`crate::checked`]): the same number again is a retransmission.
    checked_seq: Option<u32>,
}

// SAFETY: the session is reached only through SESSION's lock. Its
// non-`Send` parts are raw pointers: the target's pointer to the trap frame,
// set when a stop begins and cleared before it ends (so it never outlives
// the stop that made it), and the two `Chunk`s, which stand for `'static`
// buffers given to the stub for good.
unsafe impl Send for Session {}

static SESSION: Global<Option<Session>> = Global::new(None);
/// Read without a lock by the unikernel's context.
static CONFIG: SetOnce<Config> = SetOnce::new();
/// The outermost entry is running (set before the stack switch).
static ENTERED: AtomicBool = AtomicBool::new(false);

/// The panic message, kept apart from the session: recorded in the
/// unikernel's context, read by the session only after `record_panic`
/// returned.
struct PanicMessage {
    text: [u8; PANIC_MESSAGE_MAX],
    len: usize,
}
static PANIC: Global<PanicMessage> =
    Global::new(PanicMessage { text: [0; PANIC_MESSAGE_MAX], len: 0 });

/// Where software breakpoints are planted, for [`on_busy`], which runs
/// without the session: a lock-free copy of the table while the unikernel
/// runs.
struct Planted {
    addr: AtomicU64,
    original: AtomicU8,
    live: AtomicBool,
}
#[allow(clippy::declare_interior_mutable_const)]
const UNPLANTED: Planted =
    Planted { addr: AtomicU64::new(0), original: AtomicU8::new(0), live: AtomicBool::new(false) };
static PLANTED: [Planted; MAX_SW_BREAKPOINTS] = [UNPLANTED; MAX_SW_BREAKPOINTS];
/// Traps that arrived while the stub was busy and were passed over.
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Figures for `monitor stats`.
pub struct Stats {
    /// Deepest use of the stub's stack, in bytes.
    pub stack_used: usize,
    /// Traps passed over because the stub was busy (see [`on_busy`]).
    pub skipped: u64,
    /// Console bytes that found no room (see `line::console_write`).
    pub console_dropped: u64,
}

/// The figures now.
pub fn stats() -> Stats {
    Stats {
        stack_used: super::stack::high_water(),
        skipped: SKIPPED.load(Ordering::Relaxed),
        console_dropped: line::console_dropped(),
    }
}

/// Starts the session on `buffers`. `false` when it runs already.
pub fn init<const N: usize>(config: Config, buffers: &'static mut Buffers<N>) -> bool {
    if !CONFIG.set(config) {
        return false;
    }
    let Some(mut s) = SESSION.lock() else {
        return false;
    };
    let buffers_span = (core::ptr::from_ref(buffers) as u64, size_of::<Buffers<N>>() as u64);
    let (rx, packet, tx) = buffers.split();
    let session = s.insert(Session {
        target: UkTarget::new(&config),
        machine: None,
        packet: Chunk::new(packet),
        tx: Chunk::new(tx),
        rx: Rx::new(rx),
        active: false,
        opened: false,
        last_handshake: None,
        no_ack: false,
        halted: false,
        hold: false,
        last_byte: 0,
        auth: Auth::new(config.key, config.rokey),
        nonces: Pool::new(),
        checked_seq: None,
    });
    session.fresh_machine();
    // Kept from the debugger's writes (see `crate::guard`).
    for (start, len) in [buffers_span, span(&SESSION), span(&CONFIG), span(&PANIC), span(&PLANTED)]
    {
        session.target.protect(start, len);
    }
    true
}

/// Where a static is and how long.
fn span<T>(value: &T) -> (u64, u64) {
    (core::ptr::from_ref(value) as u64, size_of_val(value) as u64)
}

/// Lock-free.
pub fn wants_wait() -> bool {
    CONFIG.get().is_some_and(|c| c.wait)
}

/// Lock-free.
pub fn is_running() -> bool {
    CONFIG.get().is_some()
}

/// Keeps the panic message for the debugger. `false`: no stub to stop in.
pub fn record_panic(info: &core::panic::PanicInfo<'_>) -> bool {
    if !is_running() {
        return false;
    }
    // Formatting runs shared code (a debugger may have a breakpoint in
    // `core::fmt` or `memcpy`); no lock a trap needs is held meanwhile.
    let mut message = [0u8; PANIC_MESSAGE_MAX];
    let mut w = Truncating { buf: &mut message, len: 0 };
    let _ = write!(w, "{}", info);
    let len = w.len;
    if let Some(mut p) = PANIC.lock() {
        p.text = message;
        p.len = len;
    }
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
    if frame.vector == 2 || frame.vector == 18 || frame.vector >= 32 || !is_running() {
        return false;
    }
    if frame.vector == 1 && frame.rip == crate::entry::soft_entry_address() {
        let dr6 = arch::dr::dr6();
        if dr6 & DR6_BS != 0 && dr6 & 0xf == 0 {
            // A single step into the stub's own entry (`breakpoint()`, or a
            // `poll` that found input): the entry runs whole, without TF,
            // and makes the stop itself; the step stays pending, so a poll
            // that would not stop reports the step done there instead.
            arch::dr::clear_dr6();
            frame.rflags &= !arch::RFLAGS_TF;
            return true;
        }
    }
    match outermost(frame, 0, trap_on_stub_stack) {
        Some(handled) => handled != 0,
        None => on_busy(frame),
    }
}

/// Runs `f(frame, arg)` on the stub's stack if this is the outermost entry
/// (the one owner of that stack, see `stack`); `None` when the stub is
/// entered already.
fn outermost(frame: &mut TrapFrame, arg: u64, f: super::stack::OnStack) -> Option<u64> {
    if ENTERED.swap(true, Ordering::Acquire) {
        return None;
    }
    let result = super::stack::call(frame, arg, f);
    ENTERED.store(false, Ordering::Release);
    Some(result)
}

extern "C" fn trap_on_stub_stack(frame: *mut TrapFrame, _: u64) -> u64 {
    // SAFETY: `stack::call` passes the `&mut TrapFrame` that `on_trap` was
    // given, unused by anyone else until this returns.
    let frame = unsafe { &mut *frame };
    u64::from(enter_stub(frame, |s, frame| Some(s.target.classify(frame))))
}

/// The stub entered itself (see `api::soft_entry`).
pub fn on_soft_entry(frame: &mut TrapFrame, why: u64) {
    if is_running() {
        outermost(frame, why, soft_on_stub_stack);
    }
}

extern "C" fn soft_on_stub_stack(frame: *mut TrapFrame, why: u64) -> u64 {
    // SAFETY: as in `trap_on_stub_stack`.
    let frame = unsafe { &mut *frame };
    enter_stub(frame, |s, _| match why {
        // A step that led into a poll ends here, just past the call.
        w if w == Why::Poll as u64 && s.target.step_pending() => {
            Some(Stop::new(StopReason::DoneStep, Reason::Step))
        }
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
    0
}

/// A trap while the stub is busy: in its own code (entered already), or in
/// a console drain that holds the line. It cannot stop here, and takes no
/// lock: a planted software breakpoint is taken out (the byte put back;
/// planted again at the next stop) and passed over; a hardware breakpoint
/// resumes past itself; a single step goes on stepping silently until the
/// stub is free again, and is reported there. Anything else (a fault) is
/// the unikernel's.
fn on_busy(frame: &mut TrapFrame) -> bool {
    let handled = match frame.vector {
        1 => {
            let dr6 = arch::dr::dr6();
            arch::dr::clear_dr6();
            if dr6 & 0xf != 0 {
                frame.rflags |= arch::RFLAGS_RF;
            }
            true
        }
        3 => {
            let at = frame.rip.wrapping_sub(1);
            if unplant(at) {
                frame.rip = at;
            }
            true
        }
        6 => unplant(frame.rip),
        _ => false,
    };
    if handled {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
    handled
}

/// Puts back the original byte of a breakpoint planted at `addr`.
fn unplant(addr: u64) -> bool {
    for p in &PLANTED {
        if p.live.load(Ordering::Acquire) && p.addr.load(Ordering::Relaxed) == addr {
            if let Some(config) = CONFIG.get() {
                let _ = Memory::new(config.phys_offset)
                    .write(addr, &[p.original.load(Ordering::Relaxed)]);
            }
            p.live.store(false, Ordering::Release);
            return true;
        }
    }
    false
}

/// Every way into the stub, on the stub's stack: `decide` names the stop
/// from the frame before the world is stopped (`None`: a poll, which halts
/// only if the debugger asks). Then the stop is served, pending console text
/// sent, and the breakpoints planted last, just before the unikernel
/// resumes. `false`: no stub to enter, or it is busy (see [`on_busy`]).
fn enter_stub(
    frame: &mut TrapFrame,
    decide: impl FnOnce(&mut Session, &mut TrapFrame) -> Option<Stop>,
) -> bool {
    let busy = |frame: &mut TrapFrame| frame.vector != crate::SOFT_ENTRY_VECTOR && on_busy(frame);
    if !line::available() {
        return busy(frame);
    }
    let Some(mut guard) = SESSION.lock() else {
        return busy(frame);
    };
    let Some(s) = guard.as_mut() else {
        return false;
    };
    // While the world is stopped, no interrupt is to be taken (IF is clear):
    // the highest task priority keeps the local APIC from even raising them,
    // so a periodic timer does not make every instruction of the stub a
    // check for a pending interrupt (under TCG that halved the stub's
    // speed with a 1 kHz timer). The unikernel's priority comes back last.
    let priority = arch::cr8();
    // SAFETY: 15 only holds interrupts back; the saved value is put back
    // below, before the unikernel runs.
    unsafe { arch::set_cr8(15) };
    let stop = decide(s, frame);
    s.target.enter(frame);
    if let Some(stop) = stop.filter(|stop| stop.hold && !s.active) {
        crash(frame, stop.note);
    }
    for p in &PLANTED {
        p.live.store(false, Ordering::Release);
    }
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
    line::drain_console();
    s.target.leave();
    let mut planted = s.target.bps.planted();
    for p in &PLANTED {
        if let Some((addr, original)) = planted.next() {
            p.addr.store(addr, Ordering::Relaxed);
            p.original.store(original, Ordering::Relaxed);
            p.live.store(true, Ordering::Release);
        }
    }
    // SAFETY: the unikernel's own value, read above.
    unsafe { arch::set_cr8(priority) };
    true
}

impl Session {
    /// Drops the current state machine and starts a new one (idle, ack mode).
    fn fresh_machine(&mut self) {
        // The reply to a checked request stays in the reply buffer, which
        // the new connection reuses: a retransmission of the request (its
        // reply was lost; a detach, say) is answered from it.
        // What it gathered goes out first (a detach's `OK`).
        let (checked, kept) = self.conn().map_or((None, None), |c| {
            c.send();
            (c.checked, c.kept)
        });
        self.machine = None;
        // SAFETY: the buffers' only borrowers were the machine dropped above
        // (and its Conn), and SESSION's lock makes this the only code running
        // here, so these are the one live references.
        let (buffer, tx) = unsafe { (self.packet.borrow(), self.tx.borrow()) };
        let conn = Conn {
            buf: tx,
            len: 0,
            reply: None,
            spilled: false,
            expedite: None,
            multiprocess: false,
            checked,
            kept,
        };
        let Ok(stub) = GdbStubBuilder::new(conn).with_packet_buffer(buffer).build() else {
            return;
        };
        self.machine = stub.run_state_machine(&mut self.target).ok();
    }

    fn start_session(&mut self) {
        self.active = true;
        self.opened = false;
        self.last_handshake = None;
        self.no_ack = false;
        self.halted = true;
        if self.target.reason == Reason::None {
            self.target.reason = Reason::Interrupt;
        }
    }

    fn end_session(&mut self) {
        // `checked_seq` stays: a retransmitted detach is answered from the
        // kept reply (a new session would be locked, with a key, and refuse
        // it). The debugger leaving (`DLE 'X'`) ends checked mode.
        self.auth.end_session();
        self.target.unsafe_writes = false;
        self.target.clear_breakpoints();
        self.target.resume = None;
        self.fresh_machine();
        self.active = false;
        self.opened = false;
        self.last_handshake = None;
        self.no_ack = false;
    }

    /// The session ends without the debugger resuming: a wait, fault or
    /// panic still holds the unikernel; anything else lets it run.
    fn abandon_session(&mut self) {
        if self.active {
            self.end_session();
        }
        self.halted = self.hold;
    }

    fn conn(&mut self) -> Option<&mut Conn> {
        Some(match self.machine.as_mut()? {
            GdbStubStateMachine::Idle(m) => m.borrow_conn(),
            GdbStubStateMachine::Running(m) => m.borrow_conn(),
            GdbStubStateMachine::CtrlCInterrupt(m) => m.borrow_conn(),
            GdbStubStateMachine::Disconnected(m) => m.borrow_conn(),
        })
    }

    /// Halts: reports the stop to a debugger waiting for one, then serves.
    fn stop(&mut self, reason: StopReason, note: Reason, hold: bool) {
        self.target.reason = note;
        self.hold = hold;
        self.halted = true;
        match self.machine.take() {
            Some(GdbStubStateMachine::Running(mut running)) => {
                if note == Reason::Panic {
                    if let Some(p) = PANIC.lock() {
                        send_console_packet(running.borrow_conn(), p.text.get(..p.len));
                    }
                }
                running.borrow_conn().expedite = self.target.expedited();
                let next = running.report_stop(&mut self.target, reason);
                self.settle(next);
                // A checked request's reply text (console packets and the
                // stop reply) is gathered until here.
                if let Some(conn) = self.conn() {
                    conn.send();
                }
            }
            other => self.machine = other,
        }
        if note == Reason::Panic {
            if let Some(p) = PANIC.lock() {
                self.target.panic_message = p.text;
                self.target.panic_len = p.len;
            }
        }
        self.serve();
    }

    /// Reads and handles bytes: all that arrive while halted, and while
    /// running only those already waiting.
    fn serve(&mut self) {
        let mut buf = [0u8; 512];
        loop {
            if let Some(event) = line::poll_event() {
                self.on_link(event);
            }
            let n = line::read(&mut buf);
            if n == 0 {
                if !self.halted {
                    // A link event the last read noticed (a network
                    // transport polls its interface there) is handled
                    // now, not at the next entry.
                    match line::poll_event() {
                        Some(event) => {
                            self.on_link(event);
                            continue;
                        }
                        None => return,
                    }
                }
                if self.rx.in_packet()
                    && rdtsc().wrapping_sub(self.last_byte) > PACKET_SILENCE_TICKS
                {
                    self.rx.abandon();
                }
                core::hint::spin_loop();
                continue;
            }
            let now = rdtsc();
            if self.rx.in_packet() && now.wrapping_sub(self.last_byte) > PACKET_SILENCE_TICKS {
                // The rest of that packet never came: drop it, so that what
                // follows (a control sequence, a new debugger) is read.
                self.rx.abandon();
            }
            self.last_byte = now;
            for &byte in buf.get(..n).unwrap_or_default() {
                self.on_byte(byte);
            }
        }
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => {
                self.checked_seq = None;
                if self.active {
                    self.end_session();
                }
                self.rx.abandon();
            }
            LinkEvent::Gone => {
                self.checked_seq = None;
                self.rx.abandon();
                self.abandon_session();
            }
        }
    }

    fn on_byte(&mut self, byte: u8) {
        // The event borrows the receive buffer; a packet is copied out into
        // gdbstub byte by byte, so take the receiver out meanwhile.
        let mut rx = core::mem::replace(&mut self.rx, Rx::new(&mut []));
        let mut envelope = None;
        if let Some(event) = rx.push_checked(byte, &mut envelope) {
            let request = matches!(event, Event::Packet { .. } | Event::Reject(_));
            match envelope {
                Some(env) => {
                    let interrupt = matches!(
                        event,
                        Event::Packet { bytes, .. } if bytes.starts_with(b"$vCtrlC#")
                    );
                    if !self.checked_duplicate(env, interrupt) {
                        self.on_event(event);
                        self.checked_handled();
                    }
                }
                None => {
                    // From a debugger that sends checked packets a plain
                    // one is line noise that RSP's checksum let through (a
                    // damaged byte that became `$` starts a packet in the
                    // middle of another, whose checksum matches one time in
                    // 256): dropped. Only a new debugger's opening packet is
                    // taken (or any packet once `DLE 'X'` ended the
                    // session).
                    let opening =
                        matches!(event, Event::Packet { class: PacketClass::Opening, .. });
                    let noise = request && self.checked_seq.is_some() && !opening;
                    if !noise {
                        if request {
                            self.plain_request();
                        }
                        self.on_event(event);
                    }
                }
            }
        }
        rx.set_nak_junk(self.checked_seq.is_some());
        self.rx = rx;
    }

    /// A checked request ([`crate::checked`]): `true` when it is the last
    /// one again (a retransmission, or the bridge asking for a further
    /// piece), answered here from the kept reply (or with `running` while
    /// the unikernel runs on its behalf) and not acted on again. Otherwise
    /// replies to it will be its pieces.
    ///
    /// The debugger's Ctrl-C comes the same way: the running request's
    /// number with the body `vCtrlC` (`interrupt`). A bare `0x03` is
    /// ignored from a debugger that sends checked packets: line noise
    /// makes that byte.
    fn checked_duplicate(&mut self, env: crate::checked::Envelope, interrupt: bool) -> bool {
        let again = self.checked_seq == Some(env.seq);
        self.checked_seq = Some(env.seq);
        let running = matches!(self.machine, Some(GdbStubStateMachine::Running(_)));
        if again && interrupt && running && !self.halted {
            if let Some(conn) = self.conn() {
                conn.checked = Some(env);
            }
            self.feed(&[0x03]);
            self.checked_handled();
            return true;
        }
        let Some(conn) = self.conn() else { return again };
        if !again {
            conn.checked = Some(env);
            conn.kept = None;
            line::set_remark(true);
            return false;
        }
        conn.checked = Some(env);
        conn.answer_checked(env);
        true
    }

    /// A checked request was handled: its reply goes out (gathered until
    /// now), or, when it has none yet (it resumed the unikernel), `running`.
    fn checked_handled(&mut self) {
        let Some(conn) = self.conn() else { return };
        conn.send();
        if let (Some(env), None) = (conn.checked, conn.kept) {
            conn.answer_checked(env);
        }
    }

    /// A plain request: replies are plain again.
    fn plain_request(&mut self) {
        if self.checked_seq.take().is_some() {
            line::set_remark(false);
        }
        if let Some(conn) = self.conn() {
            conn.checked = None;
            conn.kept = None;
        }
    }

    fn on_event(&mut self, event: Event<'_>) {
        match event {
            Event::Control(Control::Framed) => line::set_framed(true),
            Event::Control(Control::Raw) => line::set_framed(false),
            Event::Control(Control::DebuggerGone) => {
                self.checked_seq = None;
                line::session_ended();
                self.abandon_session();
            }
            Event::Ack => {}
            Event::Nak => {
                if let Some(conn) = self.conn() {
                    conn.resend();
                }
            }
            Event::Interrupt => {
                if self.auth.tier() == Tier::Locked || self.checked_seq.is_some() {
                    // A locked client cannot stop the unikernel; one that
                    // sends checked packets interrupts with a checked one
                    // (see `checked_duplicate`).
                    return;
                }
                if !self.active {
                    // A Ctrl-C from nobody attached yet: stop, as a debugger
                    // would expect; a disconnect lets the unikernel go on.
                    self.start_session();
                    self.target.reason = Reason::Interrupt;
                } else {
                    self.feed(&[0x03]);
                }
                // Past the handshake: a debugger opening after this is a
                // new one (its session must not inherit this interrupt).
                self.opened = true;
            }
            Event::Packet { bytes, class } => {
                let running =
                    matches!(self.machine, Some(GdbStubStateMachine::Running(_))) && !self.halted;
                if self.active && ((class == PacketClass::Opening && self.opened) || running) {
                    // A new debugger: the old one vanished without a word.
                    self.end_session();
                }
                if !self.active {
                    self.start_session();
                }
                let exchange = crate::auth::parse(bytes);
                if class == PacketClass::Other {
                    // The bridge authenticates before the debugger's
                    // opening packets, which must not end the session.
                    if exchange.is_none() {
                        self.opened = true;
                    }
                } else if !self.opened {
                    let id = handshake_id(bytes);
                    if self.last_handshake == Some(id) {
                        // A retransmission (a slow line delayed our ack):
                        // acknowledge it, but do not answer twice, or the
                        // debugger takes the second answer for the reply to
                        // its next packet.
                        if !self.no_ack {
                            line::write_debug(b"+");
                            line::flush();
                        }
                        return;
                    }
                    self.last_handshake = Some(id);
                }
                if let Some(request) = exchange {
                    self.on_auth(request);
                    self.release_if_locked();
                    return;
                }
                if !crate::auth::allowed(self.auth.tier(), bytes) {
                    self.reply_raw(REFUSED);
                    self.release_if_locked();
                    return;
                }
                if self.fast_read(bytes) || self.ukdb_query(bytes) {
                    return;
                }
                if bytes.starts_with(b"$qSupported") {
                    let multiprocess = bytes.windows(13).any(|w| w == b"multiprocess+");
                    if let Some(conn) = self.conn() {
                        conn.multiprocess = multiprocess;
                    }
                }
                let no_ack = bytes.starts_with(b"$QStartNoAckMode#");
                self.feed(bytes);
                if no_ack {
                    self.no_ack = true;
                }
                self.release_if_locked();
            }
            Event::Reject(reply) => {
                if !self.active {
                    self.start_session();
                }
                self.opened = true;
                self.reply_raw(reply.packet());
                self.release_if_locked();
            }
            Event::BadChecksum => {
                if !self.no_ack {
                    line::write_debug(b"-");
                    line::flush();
                }
            }
            Event::Overflow => {
                if !self.active {
                    self.start_session();
                }
                self.opened = true;
                self.reply_raw(Reply::Einval.packet());
                self.release_if_locked();
            }
        }
    }

    /// A locked session does not hold the unikernel: the stop its packet
    /// made ends with the reply, unless a wait, fault or panic holds it.
    fn release_if_locked(&mut self) {
        if self.auth.tier() == Tier::Locked && !self.hold {
            self.halted = false;
        }
    }

    /// Answers the authentication exchange (see `crate::auth`).
    fn on_auth(&mut self, request: Request) {
        let now = rdtsc();
        match request {
            Request::Challenge => {
                let nonce = self.new_challenge();
                let mut hex = [0u8; 2 * crate::auth::NONCE_LEN];
                put_hex(&mut hex, &nonce);
                self.reply_body(&hex);
            }
            Request::Answer { tier, mac, len } => {
                let verdict = self.auth.answer(tier.get(), mac.get(..len).unwrap_or_default(), now);
                self.granted(verdict);
                self.reply_raw(match verdict {
                    Verdict::Granted(_) => b"$OK#9a",
                    Verdict::TooSoon => TOO_SOON,
                    Verdict::Wrong | Verdict::NoChallenge => REFUSED,
                });
            }
            Request::MonitorChallenge => {
                let (words, source) = crate::auth::entropy();
                let nonce = self.nonces.mix(&words, source);
                self.auth.challenge(nonce);
                let mut hex = [0u8; 2 * crate::auth::NONCE_LEN];
                put_hex(&mut hex, &nonce);
                let hex = core::str::from_utf8(&hex).unwrap_or_default();
                let source = match source {
                    crate::auth::Source::Rdseed => "RDSEED",
                    crate::auth::Source::Rdrand => "RDRAND",
                    crate::auth::Source::Tsc => "TSC readings (no RDRAND on this CPU: weak)",
                };
                let mut text = Text::new();
                let _ = writeln!(text, "ukdb: nonce from {source}");
                let _ = write!(
                    text,
                    "ukdb: challenge {hex}\nukdb: answer with: monitor auth TIER $(ukdb auth --key-file KEY --tier TIER --nonce {hex}), TIER ro or full\n"
                );
                self.reply_output(text.get());
            }
            Request::MonitorAnswer { tier, mac, len } => {
                let verdict = self.auth.answer(tier.get(), mac.get(..len).unwrap_or_default(), now);
                self.granted(verdict);
                match verdict {
                    Verdict::Granted(tier) => {
                        let name = if tier == Tier::Full { "full" } else { "read-only" };
                        let mut text = Text::new();
                        let _ = writeln!(text, "ukdb: authenticated: {name} access");
                        self.reply_output(text.get());
                    }
                    Verdict::TooSoon => self.reply_raw(TOO_SOON),
                    Verdict::Wrong | Verdict::NoChallenge => self.reply_raw(REFUSED),
                }
            }
        }
    }

    /// A fresh nonce, now the open challenge.
    fn new_challenge(&mut self) -> [u8; crate::auth::NONCE_LEN] {
        let (words, source) = crate::auth::entropy();
        let nonce = self.nonces.mix(&words, source);
        self.auth.challenge(nonce);
        nonce
    }

    /// An authenticated session holds the unikernel as any session does.
    fn granted(&mut self, verdict: Verdict) {
        if let Verdict::Granted(_) = verdict {
            self.halted = true;
            if self.target.reason == Reason::None {
                self.target.reason = Reason::Interrupt;
            }
        }
    }

    /// Sends a reply whose body is `body` (no byte needing an escape).
    fn reply_body(&mut self, body: &[u8]) {
        let ack = !self.no_ack;
        let sum = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        let [hi, lo] = crate::memreply::hex_pair(sum);
        if let Some(conn) = self.conn() {
            if ack {
                let _ = conn.write(b'+');
            }
            let _ = conn.write(b'$');
            let _ = conn.write_all(body);
            let _ = conn.write_all(&[b'#', hi, lo]);
            conn.send();
        }
    }

    /// Answers a `qRcmd` with `text` for the debugger's console.
    fn reply_output(&mut self, text: &[u8]) {
        let mut hex = [0u8; 2 * TEXT_MAX];
        let n = put_hex(&mut hex, text);
        self.reply_body(hex.get(..n).unwrap_or_default());
    }

    /// Answers a memory read (`m`, or lldb's binary `x`) itself when gdbstub
    /// waits for a command (see [`crate::memreply`]); `false`: not a read,
    /// or not now, and gdbstub gets the packet.
    fn fast_read(&mut self, bytes: &[u8]) -> bool {
        let Some(read) = crate::memreply::parse(bytes) else {
            return false;
        };
        let ack = !self.no_ack;
        let mem = &self.target.mem;
        let Some(GdbStubStateMachine::Idle(idle)) = self.machine.as_mut() else {
            return false;
        };
        idle.borrow_conn().mem_reply(ack, read, mem);
        true
    }

    /// Answers one of ukdb's own queries (`qUkdb.*`: see
    /// [`super::query`]) when gdbstub waits for a command; `false`: not
    /// one, or not now, and gdbstub gets the packet.
    fn ukdb_query(&mut self, bytes: &[u8]) -> bool {
        let Some(query) = crate::ukquery::parse(bytes) else {
            return false;
        };
        let ack = !self.no_ack;
        let target = &mut self.target;
        let Some(GdbStubStateMachine::Idle(idle)) = self.machine.as_mut() else {
            return false;
        };
        idle.borrow_conn().reply_with(ack, |w| super::query::answer(query, target, w));
        true
    }

    /// Sends a reply of the stub's own (acknowledged first in ack mode).
    fn reply_raw(&mut self, packet: &[u8]) {
        let ack = !self.no_ack;
        if let Some(conn) = self.conn() {
            if ack {
                let _ = conn.write(b'+');
            }
            let _ = conn.write_all(packet);
            conn.send();
        }
    }

    /// Passes checked bytes to gdbstub, then sends what it wrote.
    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let next = match self.machine.take() {
                Some(GdbStubStateMachine::Idle(idle)) => idle.incoming_data(&mut self.target, byte),
                Some(GdbStubStateMachine::Running(running)) => {
                    running.incoming_data(&mut self.target, byte)
                }
                Some(other) => Ok(other),
                None => return,
            };
            self.settle(next);
        }
        if let Some(conn) = self.conn() {
            conn.send();
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
                    // The debugger let the stop go: it no longer holds.
                    self.halted = false;
                    self.hold = false;
                }
            }
            Ok(GdbStubStateMachine::CtrlCInterrupt(interrupt)) => {
                self.target.reason = Reason::Interrupt;
                self.halted = true;
                let mut interrupt = interrupt;
                interrupt.borrow_conn().expedite = self.target.expedited();
                let next = interrupt
                    .interrupt_handled(&mut self.target, Some(StopReason::Signal(Signal::SIGINT)));
                self.settle(next);
            }
            Ok(GdbStubStateMachine::Disconnected(gone)) => {
                // Detached (or killed) by the debugger: the stop is let go,
                // also for the `DLE 'X'` that follows on the line. (The
                // machine is kept until the new one replaces it: its reply
                // to a checked request goes out then.)
                self.machine = Some(GdbStubStateMachine::Disconnected(gone));
                self.end_session();
                self.halted = false;
                self.hold = false;
            }
            Err(_) => {
                // Something the receiver's checks let through and gdbstub
                // could not take: this session cannot go on.
                self.abandon_session();
            }
        }
    }
}

/// A fault or panic that holds, with no debugger attached: the crash dump
/// (`ukdb.crash=dump`; see `crate::crash`), with the debugger's breakpoints
/// out of memory. Returns for `then=wait` (the stop goes on as without it).
fn crash(frame: &TrapFrame, note: Reason) {
    use crate::crash::{on_crash, Cause};
    match note {
        Reason::Exception(_, _, cr2) => {
            on_crash(frame, Cause::Exception { cr2 }, &mut line::CrashLine);
        }
        Reason::Panic => {
            if let Some(p) = PANIC.lock() {
                let text = p.text.get(..p.len).unwrap_or_default();
                on_crash(frame, Cause::Panic(text), &mut line::CrashLine);
            }
        }
        _ => {}
    }
}

/// The reply to a packet the session's tier does not allow, and to a wrong
/// answer: EPERM.
const REFUSED: &[u8] = b"$E01#a6";
/// The reply to an answer too soon after a failure: EAGAIN.
const TOO_SOON: &[u8] = b"$E0b#d7";

/// The longest console text of an exchange reply.
const TEXT_MAX: usize = 384;

/// A bounded text buffer (extra text is dropped).
struct Text {
    buf: [u8; TEXT_MAX],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text { buf: [0; TEXT_MAX], len: 0 }
    }

    fn get(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Write for Text {
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

/// Writes `bytes` in hex into `out` (as much as fits); returns the digits
/// written.
fn put_hex(out: &mut [u8], bytes: &[u8]) -> usize {
    let mut n = 0;
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&crate::memreply::hex_pair(b));
        n += 2;
    }
    n
}

/// A packet's length and checksum digits, to recognise it again.
fn handshake_id(packet: &[u8]) -> (usize, u16) {
    let n = packet.len();
    let sum = packet.get(n.saturating_sub(2)..).unwrap_or_default();
    let sum = sum.iter().fold(0u16, |a, &b| a << 8 | u16::from(b));
    (n, sum)
}

/// DR6.BS: the #DB is a single step.
const DR6_BS: u64 = 1 << 14;

/// The time-stamp counter.
pub(super) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter; it has no side effects.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Sends `text` to the debugger's console as an `O` packet (valid while it
/// waits for a stop reply).
fn send_console_packet(conn: &mut Conn, text: Option<&[u8]>) {
    use crate::memreply::hex_pair;
    let mut sum = b'O';
    let _ = conn.write_all(b"$O");
    for &b in text.unwrap_or_default().iter().chain(b"\n") {
        let pair = hex_pair(b);
        sum = sum.wrapping_add(pair[0]).wrapping_add(pair[1]);
        let _ = conn.write_all(&pair);
    }
    let [hi, lo] = hex_pair(sum);
    let _ = conn.write_all(&[b'#', hi, lo]);
    // For a checked request it is part of the reply text, sent with the
    // stop reply.
    if conn.checked.is_none() {
        conn.send();
    }
}
