//! The host's bytes, assembled into whole packets and checked before
//! gdbstub sees them.
//!
//! gdbstub 0.7 ends the whole session (its state machine is consumed and
//! returns an error) when a packet's checksum is wrong, when the debugger
//! sends a NAK (`-`), when its command parser rejects a packet it knows
//! (`m-1`, `vContzz`: `PacketParseError::MalformedCommand`), and when a
//! handler meets arguments it cannot use (`Hg-1`, `T0`, a `vCont` with a
//! third action, a `G` block of the wrong size, a `qXfer` annex other than
//! `target.xml`). A debugger that types a bad command, or a line that
//! corrupts one byte, would cost the user every breakpoint. So [`Rx`]
//! assembles each packet in a buffer of its own and checks it first:
//!
//! - between packets only `+`, `-`, `0x03`, `$` and the host's control
//!   sequences (`DLE 'F'`, `DLE 'R'`, `DLE 'X'`) mean anything; every other
//!   byte is line noise and dropped. Inside a packet `DLE` is data, and a
//!   `$` starts the packet again (gdb resends a packet whole);
//! - a packet whose checksum is wrong is reported as
//!   [`Event::BadChecksum`], one longer than the buffer as
//!   [`Event::Overflow`] (after its checksum: it is dropped whole);
//! - a complete packet for a command the stub's target supports is checked
//!   field by field (see [`check`]). One that gdbstub would choke on
//!   becomes [`Event::Reject`] with the reply the stub sends instead, and
//!   the session goes on. The check is at least as strict as gdbstub: it
//!   also refuses oddities gdbstub accepts and acts on wrongly (an odd
//!   number of hex digits in `G`, `M`, `qRcmd`; an `X` or `M` whose length
//!   field differs from its data; a `G` block of any other size; numbers
//!   that are empty, longer than 16 digits or use gdb's `x` digit). It
//!   accepts the packets gdb and lldb send (those of the end-to-end tests,
//!   and the ones listed in the unit tests);
//! - an `m` asking for more than half the buffer (at least [`M_MAX`]) is
//!   rewritten to ask for that much (a short read: debuggers ask again for
//!   the rest), so no reply carries more than the packet size (`PacketSize`
//!   counts a packet's data, without `$` and `#xx`) and no request keeps
//!   the unikernel stopped for minutes;
//! - the packets that open a session (`qSupported`, `QStartNoAckMode`) and
//!   the handshake's `vMustReplyEmpty` are named ([`PacketClass`]), so the
//!   session can tell a new debugger from the current one.
//!
//! Every packet handed on as [`Event::Packet`] is whole (`$body#xx`, with a
//! valid checksum) and is handled by gdbstub without an error; the unit
//! tests prove it against a real gdbstub state machine with the stub's
//! target extensions, on a corpus of malformed packets and on pseudo-random
//! mutations of valid ones.
//!
//! Pure logic: no I/O, no heap; the caller supplies the buffer.

use crate::wire::{DLE, FRAME, GONE, RAW};

/// The longest `m` read passed on with the default packet size (0x4000):
/// half of it, so the hex reply fits in a packet. A receiver with a larger
/// buffer passes on reads of half its buffer ([`Rx::m_max`]).
pub const M_MAX: u64 = 0x2000;

/// The `G` block's sizes in hex digits: core + SSE registers (0x218 bytes),
/// optionally followed by `fs_base` and `gs_base` (0x228 bytes).
const G_HEX_LENS: [usize; 2] = [2 * 0x218, 2 * 0x228];

/// A control sequence from the host, between packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `DLE 'F'`: frame the output.
    Framed,
    /// `DLE 'R'`: raw output.
    Raw,
    /// `DLE 'X'`: the debugger is gone; end the session.
    DebuggerGone,
}

/// What a packet means for the session's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// `qSupported` or `QStartNoAckMode`: what a debugger sends first
    /// (gdb opens with `qSupported`, lldb with `QStartNoAckMode`).
    Opening,
    /// `vMustReplyEmpty`: part of gdb's opening handshake.
    Handshake,
    /// Anything else.
    Other,
}

/// The reply the stub sends for a packet it does not pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `E16` (EINVAL): the packet is malformed.
    Einval,
    /// The empty reply: a well-formed request this stub does not support
    /// (a `vCont` range step or stop action).
    Empty,
}

impl Reply {
    /// The whole reply packet, `$body#xx` (the stub acknowledges the
    /// request with `+` first in ack mode).
    pub const fn packet(self) -> &'static [u8] {
        match self {
            Reply::Einval => b"$E16#ac",
            Reply::Empty => b"$#00",
        }
    }
}

/// What the host's bytes mean: at most one event per byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'p> {
    /// A control sequence (never for gdbstub).
    Control(Control),
    /// `+` between packets.
    Ack,
    /// `-` between packets: the debugger wants the last reply again
    /// (gdbstub would end the session on it).
    Nak,
    /// `0x03` between packets: the debugger's Ctrl-C.
    Interrupt,
    /// A whole packet, `$body#xx`, with a valid checksum, that gdbstub
    /// handles without an error. An `m` longer than [`Rx::m_max`] has been
    /// rewritten to [`Rx::m_max`] (with its checksum).
    Packet {
        /// The packet's bytes, from `$` to the last checksum digit.
        bytes: &'p [u8],
        /// What the packet means for the session.
        class: PacketClass,
    },
    /// A whole packet with a valid checksum that is malformed (or asks for
    /// something this stub does not do): the stub sends this reply instead
    /// and keeps the session.
    Reject(Reply),
    /// A whole packet whose checksum is wrong (or not two hex digits).
    BadChecksum,
    /// A packet longer than the buffer, dropped whole after its checksum.
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between packets.
    Between,
    /// Between packets, after a `DLE`.
    Escape,
    /// In a packet's body.
    Body,
    /// After the `#`.
    Sum1,
    /// After the first checksum digit.
    Sum2,
    /// In the body of a packet too long for the buffer.
    Skip,
    /// After the `#` of a packet too long for the buffer.
    SkipSum1,
    /// After its first checksum digit.
    SkipSum2,
}

/// Splits the host's byte stream into [`Event`]s, assembling packets in a
/// buffer supplied by the caller (as long as gdbstub's, so every packet
/// passed on fits gdbstub's buffer too).
#[derive(Debug)]
pub struct Rx<'b> {
    buf: &'b mut [u8],
    /// Bytes of the packet in `buf`, from its `$`.
    len: usize,
    state: State,
    /// The longest `m` passed on.
    m_max: u64,
    /// Junk between packets that ends like a packet (`#` and two bytes) is
    /// reported as [`Event::BadChecksum`] (see [`Rx::set_nak_junk`]).
    nak_junk: bool,
    /// Junk bytes seen since a `#` between packets (`None`: no `#`).
    junk_hash: Option<u8>,
}

impl<'b> Rx<'b> {
    /// A receiver between packets. A packet longer than `buf` (`$`, body,
    /// `#` and two checksum digits) is dropped as [`Event::Overflow`]. An
    /// `m` is passed on for at most half of `buf` (at least [`M_MAX`]): its
    /// reply fits a buffer as large (with room for `$`, `#xx` and an ack).
    pub fn new(buf: &'b mut [u8]) -> Self {
        let m_max = M_MAX.max((buf.len() / 2) as u64);
        Rx { buf, len: 0, state: State::Between, m_max, nak_junk: false, junk_hash: None }
    }

    /// With `on`, junk between packets that ends like a packet (`#` and two
    /// more bytes: the rest of a packet whose `$` was damaged) is a
    /// [`Event::BadChecksum`], so the sender hears of the loss at once. For
    /// a debugger that sends checked packets ([`crate::checked`]), which
    /// sends nothing else between packets; a plain debugger would take a
    /// NAK for its last good packet and send it again.
    ///
    /// The session sets it after every byte; only a change of mode forgets
    /// the junk seen so far (setting it again must not, or the two bytes
    /// after a `#` are never counted).
    pub fn set_nak_junk(&mut self, on: bool) {
        if self.nak_junk != on {
            self.nak_junk = on;
            self.junk_hash = None;
        }
    }

    /// The longest memory read (`m`) passed on; longer ones are clamped.
    #[cfg(test)]
    pub fn m_max(&self) -> u64 {
        self.m_max
    }

    /// Whether a packet is partly received. A packet that stops arriving
    /// is dropped with [`Rx::abandon`] after a silence.
    pub fn in_packet(&self) -> bool {
        !matches!(self.state, State::Between | State::Escape)
    }

    /// Drops a partial packet: the receiver is between packets again.
    pub fn abandon(&mut self) {
        self.state = State::Between;
        self.len = 0;
    }

    /// Feeds one byte; returns the event it completes, if any.
    #[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
    pub fn push(&mut self, byte: u8) -> Option<Event<'_>> {
        self.push_checked(byte, &mut None)
    }

    /// [`Rx::push`] that also takes checked packets
    /// ([`crate::checked`]): when the event is for one (a packet, or the
    /// reply to send instead of one), its envelope is put in `envelope` and
    /// the event is for the debugger's packet inside, as if it had come
    /// plain. A checked packet whose CRC is wrong is a
    /// [`Event::BadChecksum`].
    pub fn push_checked(
        &mut self,
        byte: u8,
        envelope: &mut Option<crate::checked::Envelope>,
    ) -> Option<Event<'_>> {
        match self.state {
            State::Between => self.between(byte),
            State::Escape => {
                self.state = State::Between;
                match byte {
                    FRAME => Some(Event::Control(Control::Framed)),
                    RAW => Some(Event::Control(Control::Raw)),
                    GONE => Some(Event::Control(Control::DebuggerGone)),
                    // Not a control sequence: the DLE was noise; the byte
                    // after it counts as if the DLE had not been there.
                    _ => self.between(byte),
                }
            }
            _ if byte == b'$' => {
                // gdb resends a packet whole: start again.
                self.start();
                None
            }
            State::Body if byte == b'#' => {
                // `start` and the check below keep room for `#xx`.
                self.put(byte);
                self.state = State::Sum1;
                None
            }
            State::Body => {
                if self.len.saturating_add(3) < self.buf.len() {
                    self.put(byte);
                } else {
                    self.state = State::Skip;
                }
                None
            }
            State::Sum1 => {
                self.put(byte);
                self.state = State::Sum2;
                None
            }
            State::Sum2 => {
                self.put(byte);
                self.state = State::Between;
                Some(self.finish(envelope))
            }
            State::Skip => {
                if byte == b'#' {
                    self.state = State::SkipSum1;
                }
                None
            }
            State::SkipSum1 => {
                self.state = State::SkipSum2;
                None
            }
            State::SkipSum2 => {
                self.abandon();
                Some(Event::Overflow)
            }
        }
    }

    fn between(&mut self, byte: u8) -> Option<Event<'_>> {
        match byte {
            DLE => {
                self.state = State::Escape;
                None
            }
            b'$' => {
                self.junk_hash = None;
                self.start();
                None
            }
            b'+' => Some(Event::Ack),
            b'-' => Some(Event::Nak),
            0x03 => Some(Event::Interrupt),
            // Line noise, or the rest of a packet that was dropped.
            _ if !self.nak_junk => None,
            b'#' => {
                self.junk_hash = Some(0);
                None
            }
            _ => match self.junk_hash {
                Some(0) => {
                    self.junk_hash = Some(1);
                    None
                }
                Some(_) => {
                    self.junk_hash = None;
                    Some(Event::BadChecksum)
                }
                None => None,
            },
        }
    }

    fn start(&mut self) {
        self.len = 0;
        // A buffer too small for even `$#xx` takes no packet at all.
        self.state = if self.buf.len() >= 4 { State::Body } else { State::Skip };
        self.put(b'$');
    }

    fn put(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// A whole packet is in `buf[..len]`: `$`, body, `#`, two digits.
    fn finish(&mut self, envelope: &mut Option<crate::checked::Envelope>) -> Event<'_> {
        let mut len = core::mem::take(&mut self.len);
        let Some(packet) = self.buf.get_mut(..len) else {
            return Event::BadChecksum;
        };
        let Some((body, sum)) = split_packet(packet) else {
            return Event::BadChecksum;
        };
        if checksum(body) != sum {
            return Event::BadChecksum;
        }
        if crate::checked::is_checked(body) {
            let Some((env, inner)) = crate::checked::parse_request(body) else {
                return Event::BadChecksum;
            };
            // The debugger's packet, rebuilt in place: `$`, its body (moved
            // to the front; the body sits after `$`), `#xx`.
            let Some(n) = unwrap_in_place(packet, inner) else {
                return Event::BadChecksum;
            };
            *envelope = Some(env);
            len = n;
        }
        let Some(packet) = self.buf.get_mut(..len) else {
            return Event::BadChecksum;
        };
        let Some((body, _)) = split_packet(packet) else {
            return Event::BadChecksum;
        };
        match check_with(body, self.m_max) {
            Ok(Verdict::Pass(class)) => Event::Packet { bytes: packet, class },
            Ok(Verdict::ClampM { len_at }) => {
                match clamp_m(packet, len_at, self.m_max).and_then(|end| packet.get(..end)) {
                    Some(bytes) => Event::Packet { bytes, class: PacketClass::Other },
                    None => Event::Reject(Reply::Einval),
                }
            }
            Err(reply) => Event::Reject(reply),
        }
    }
}

/// Rewrites the checked packet in `packet` (`$@...#xx`) to the plain
/// packet whose body is at `inner` in the checked packet's body; returns
/// its length. The plain packet is shorter: it fits.
fn unwrap_in_place(packet: &mut [u8], inner: core::ops::Range<usize>) -> Option<usize> {
    // The checked body starts after `$`.
    let from = inner.start.checked_add(1)?..inner.end.checked_add(1)?;
    let n = from.len();
    packet.get(from.clone())?;
    packet.copy_within(from, 1);
    let sum = checksum(packet.get(1..1 + n)?);
    let [hi, lo] = [HEX[usize::from(sum >> 4)], HEX[usize::from(sum & 0xf)]];
    packet.get_mut(1 + n..4 + n)?.copy_from_slice(&[b'#', hi, lo]);
    Some(4 + n)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `$body#xx` -> (body, the checksum `xx` names), if `xx` is two hex digits.
fn split_packet(packet: &[u8]) -> Option<(&[u8], u8)> {
    let (head, sum) = packet.split_at_checked(packet.len().checked_sub(2)?)?;
    let body = head.strip_prefix(b"$")?.strip_suffix(b"#")?;
    let [hi, lo] = *sum else { return None };
    Some((body, hex_digit(hi)? << 4 | hex_digit(lo)?))
}

/// The RSP checksum: the sum of the body's bytes, modulo 256.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// Rewrites `$m<addr>,<len>#xx` in place to read `m_max` bytes;
/// `len_at` is where the length's digits start in the body. Returns the
/// new packet length. The length was above `m_max`, so it had at least as
/// many digits: the packet only shrinks.
fn clamp_m(packet: &mut [u8], len_at: usize, m_max: u64) -> Option<usize> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 16];
    let digits = (64 - m_max.leading_zeros()).div_ceil(4).max(1) as usize;
    let hex = hex.get_mut(..digits)?;
    for (i, slot) in hex.iter_mut().rev().enumerate() {
        *slot = DIGITS[((m_max >> (4 * i)) & 0xf) as usize];
    }
    // `$` comes before the body.
    let start = len_at.checked_add(1)?;
    let body_end = start.checked_add(hex.len())?;
    packet.get_mut(start..body_end)?.copy_from_slice(hex);
    let sum = checksum(packet.get(1..body_end)?);
    let tail = [b'#', DIGITS[usize::from(sum >> 4)], DIGITS[usize::from(sum & 0xf)]];
    let end = body_end.checked_add(tail.len())?;
    packet.get_mut(body_end..end)?.copy_from_slice(&tail);
    Some(end)
}

/// What [`check`] decided about a well-formed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on unchanged.
    Pass(PacketClass),
    /// An `m` longer than the limit: pass it on with its length clamped;
    /// `len_at` is the offset of the length's digits in the body.
    ClampM {
        /// Offset of the first length digit in the body.
        len_at: usize,
    },
}

fn einval<T>(ok: Option<T>) -> Result<T, Reply> {
    ok.ok_or(Reply::Einval)
}

/// Checks a packet body (between `$` and `#`) the way gdbstub 0.7 will
/// parse and handle it for the stub's target (single thread; registers,
/// single registers, memory, `X`; continue, step, `vCont`; software and
/// hardware breakpoints and watchpoints; `qRcmd`; `qXfer:features:read`;
/// `qXfer:memory-map:read`;
/// no-ack mode). Commands are recognised by prefix, as gdbstub does: every
/// body that starts with `m` is an `m` command. Bodies no supported
/// command claims pass (gdbstub gives them the empty reply). An `m` for
/// more than [`M_MAX`] bytes is to be clamped.
#[cfg(test)]
pub fn check(body: &[u8]) -> Result<Verdict, Reply> {
    check_with(body, M_MAX)
}

/// [`check`] with `m_max` as the longest `m` passed on unchanged.
pub fn check_with(body: &[u8], m_max: u64) -> Result<Verdict, Reply> {
    let other = Ok(Verdict::Pass(PacketClass::Other));
    let empty = |rest: &[u8]| if rest.is_empty() { other } else { Err(Reply::Einval) };
    // The same prefixes, in the same order, as gdbstub's `Command::from_packet`.
    if let Some(rest) = body.strip_prefix(b"?") {
        return empty(rest);
    }
    if let Some(rest) = body.strip_prefix(b"D") {
        return match rest {
            [] => other,
            [b';', pid @ ..] => einval(nonzero(pid)).and(other),
            _ => Err(Reply::Einval),
        };
    }
    if let Some(rest) = body.strip_prefix(b"g") {
        return empty(rest);
    }
    if let Some(rest) = body.strip_prefix(b"G") {
        let ok = G_HEX_LENS.contains(&rest.len()) && hex_data(rest);
        return if ok { other } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"H") {
        let (op, thread) = einval(rest.split_first())?;
        let (_, tid) = einval(thread_id(thread))?;
        return match (op, tid) {
            // Memory and registers of "all threads" make no sense.
            (b'g', Id::All) => Err(Reply::Einval),
            (b'g' | b'c', _) => other,
            _ => Err(Reply::Einval),
        };
    }
    if let Some(rest) = body.strip_prefix(b"k") {
        return empty(rest);
    }
    if let Some(rest) = body.strip_prefix(b"m") {
        let (addr, len) = einval(split_once(rest, b','))?;
        einval(number(addr))?;
        let n = einval(number(len))?;
        return if n > m_max {
            Ok(Verdict::ClampM { len_at: body.len() - len.len() })
        } else {
            other
        };
    }
    if let Some(rest) = body.strip_prefix(b"M") {
        let (addr, rest) = einval(split_once(rest, b','))?;
        let (len, data) = einval(split_once(rest, b':'))?;
        einval(number(addr))?;
        let n = einval(number(len))?;
        let ok = hex_data(data) && n == (data.len() / 2) as u64;
        return if ok { other } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"qAttached") {
        return match rest {
            [] => other,
            [b':', pid @ ..] => einval(nonzero(pid)).and(other),
            _ => Err(Reply::Einval),
        };
    }
    if let Some(rest) = body.strip_prefix(b"qfThreadInfo") {
        return empty(rest);
    }
    if let Some(rest) = body.strip_prefix(b"qsThreadInfo") {
        return empty(rest);
    }
    if let Some(rest) = body.strip_prefix(b"qSupported") {
        // gdbstub refuses an empty feature (`qSupported:`, `a;;b`).
        let features = einval(rest.strip_prefix(b":"))?;
        let ok = features.split(|&b| b == b';').all(|f| !f.is_empty());
        return if ok { Ok(Verdict::Pass(PacketClass::Opening)) } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"T") {
        return match einval(thread_id(rest))? {
            (_, Id::With) => other,
            _ => Err(Reply::Einval),
        };
    }
    if let Some(rest) = body.strip_prefix(b"vKill") {
        let pid = einval(rest.strip_prefix(b";"))?;
        return einval(nonzero(pid)).and(other);
    }
    if let Some(rest) = body.strip_prefix(b"qXfer:features:read") {
        let rest = einval(rest.strip_prefix(b":"))?;
        let (annex, range) = einval(split_once(rest, b':'))?;
        let (offset, length) = einval(split_once(range, b','))?;
        einval(number(offset))?;
        einval(number(length))?;
        // The stub's description is one document, without includes.
        return if annex == b"target.xml" { other } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"qXfer:memory-map:read") {
        // The target serves the memory map: gdbstub parses the read and
        // ends the session on a malformed one. Its annex is empty.
        let rest = einval(rest.strip_prefix(b":"))?;
        let (annex, range) = einval(split_once(rest, b':'))?;
        let (offset, length) = einval(split_once(range, b','))?;
        einval(number(offset))?;
        einval(number(length))?;
        return if annex.is_empty() { other } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"c") {
        return optional_addr(rest);
    }
    if let Some(rest) = body.strip_prefix(b"s") {
        return optional_addr(rest);
    }
    if let Some(rest) = body.strip_prefix(b"vCont") {
        return vcont(rest).and(other);
    }
    if let Some(rest) = body.strip_prefix(b"X") {
        let (addr, rest) = einval(split_once(rest, b','))?;
        let (len, data) = einval(split_once(rest, b':'))?;
        einval(number(addr))?;
        let n = einval(number(len))?;
        return if binary_len(data) == Some(n) { other } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"QStartNoAckMode") {
        return if rest.is_empty() {
            Ok(Verdict::Pass(PacketClass::Opening))
        } else {
            Err(Reply::Einval)
        };
    }
    if let Some(rest) = body.strip_prefix(b"p") {
        return einval(number(rest)).and(other);
    }
    if let Some(rest) = body.strip_prefix(b"P") {
        let (reg, val) = einval(split_once(rest, b'='))?;
        einval(number(reg))?;
        return if !val.is_empty() && hex_data(val) { other } else { Err(Reply::Einval) };
    }
    if let Some(rest) = body.strip_prefix(b"qRcmd") {
        return match rest {
            [] => other,
            [b',', cmd @ ..] if hex_data(cmd) => other,
            _ => Err(Reply::Einval),
        };
    }
    if let Some(rest) = body.strip_prefix(b"z").or_else(|| body.strip_prefix(b"Z")) {
        return breakpoint(rest).and(other);
    }
    if body == b"vMustReplyEmpty" {
        return Ok(Verdict::Pass(PacketClass::Handshake));
    }
    other
}

/// `c` and `s` take an optional resume address (which gdbstub ignores).
fn optional_addr(rest: &[u8]) -> Result<Verdict, Reply> {
    if !rest.is_empty() {
        einval(number(rest))?;
    }
    Ok(Verdict::Pass(PacketClass::Other))
}

/// `Z`/`z` after the letter: `type,addr,kind`, then optionally `;` and
/// conditions (which gdbstub ignores).
fn breakpoint(rest: &[u8]) -> Result<(), Reply> {
    let (kind, rest) = einval(split_once(rest, b','))?;
    let (addr, rest) = einval(split_once(rest, b','))?;
    let size = match split_once(rest, b';') {
        Some((size, _conditions)) => size,
        None => rest,
    };
    let kind = einval(number(kind))?;
    einval(number(addr))?;
    einval(number(size))?;
    // gdbstub reads the type into a byte.
    if kind > 0xff {
        return Err(Reply::Einval);
    }
    Ok(())
}

/// One `vCont` action's kind, as far as a single-thread target cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `c`: the only action allowed second.
    Continue,
    /// `Cxx`, `s`, `Sxx`: allowed first.
    Resume,
    /// `r` (range step) and `t` (stop): well-formed, not supported.
    Unsupported,
}

/// `vCont` after its name: `?`, or one action, or an action followed by a
/// plain continue (gdb's step: `;s:1;c`). gdbstub ends the session on
/// anything else.
fn vcont(rest: &[u8]) -> Result<(), Reply> {
    if rest == b"?" {
        return Ok(());
    }
    let actions = einval(rest.strip_prefix(b";"))?;
    let mut actions = actions.split(|&b| b == b';');
    let first = action(einval(actions.next())?)?;
    let second = actions.next().map(action).transpose()?;
    if actions.next().is_some() {
        return Err(Reply::Einval);
    }
    match (first, second) {
        (Action::Unsupported, _) => Err(Reply::Empty),
        (_, None | Some(Action::Continue)) => Ok(()),
        (_, Some(_)) => Err(Reply::Einval),
    }
}

fn action(s: &[u8]) -> Result<Action, Reply> {
    let (kind, thread) = match split_once(s, b':') {
        Some((kind, thread)) => (kind, Some(thread)),
        None => (s, None),
    };
    if let Some(thread) = thread {
        // A thread id of "any" (0) is taken as "all"; a process id of "any"
        // is refused.
        let (pid, _) = einval(thread_id(thread))?;
        if pid == Some(Id::Any) {
            return Err(Reply::Einval);
        }
    }
    let signal = |sig: &[u8]| einval(number(sig).filter(|&s| s <= 0xff));
    match kind {
        b"c" => Ok(Action::Continue),
        b"s" => Ok(Action::Resume),
        [b'C' | b'S', sig @ ..] => signal(sig).map(|_| Action::Resume),
        b"t" => Ok(Action::Unsupported),
        [b'r', range @ ..] => {
            let (start, end) = einval(split_once(range, b','))?;
            einval(number(start))?;
            einval(number(end))?;
            Ok(Action::Unsupported)
        }
        _ => Err(Reply::Einval),
    }
}

/// A thread or process id: `-1`, `0` or a positive number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    All,
    Any,
    With,
}

fn id(s: &[u8]) -> Option<Id> {
    match s {
        b"-1" => Some(Id::All),
        b"0" => Some(Id::Any),
        _ => nonzero(s).map(|_| Id::With),
    }
}

/// `tid` or `p<pid>.<tid>` or `p<pid>` (all of its threads).
fn thread_id(s: &[u8]) -> Option<(Option<Id>, Id)> {
    match s.strip_prefix(b"p") {
        Some(rest) => match split_once(rest, b'.') {
            Some((pid, tid)) => Some((Some(id(pid)?), id(tid)?)),
            None => Some((Some(id(rest)?), Id::All)),
        },
        None => Some((None, id(s)?)),
    }
}

/// A hex digit's value.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A number: 1 to 16 hex digits (so it fits 64 bits).
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |v, &b| Some(v << 4 | u64::from(hex_digit(b)?)))
}

fn nonzero(s: &[u8]) -> Option<u64> {
    number(s).filter(|&v| v != 0)
}

/// Hex-encoded bytes: an even number of hex digits, where gdb's `xx`
/// ("unavailable") counts as a byte, as gdbstub reads it.
fn hex_data(s: &[u8]) -> bool {
    s.len().is_multiple_of(2) && s.iter().all(|&b| hex_digit(b).is_some() || b == b'x' || b == b'X')
}

/// The length of `X` binary data after unescaping (`}` escapes the next
/// byte); `None` if an escape is cut short or a `*` (which must be escaped,
/// and unescaped would be run-length encoding) appears.
fn binary_len(s: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'}' => {
                bytes.next()?;
            }
            b'*' => return None,
            _ => {}
        }
        n += 1;
    }
    Some(n)
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

#[cfg(test)]
mod tests;
