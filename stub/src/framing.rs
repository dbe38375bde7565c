//! The shared serial line (see `docs/wire-protocol.md`): console text and RSP
//! on one channel. Pure state machines, no I/O, host-tested.
//!
//! - [`write`] and [`set_framed`]: what the stub writes. Raw until the host asks for framing,
//!   then every switch between console and debugger bytes is marked.
//! - [`RxParser`]: what the host writes. RSP plus control sequences between
//!   packets, and the start of each packet, with a lookahead that recognises
//!   `qSupported` (a new debugger) before gdbstub sees the packet.

/// The escape byte of the framed line.
pub const DLE: u8 = 0x10;

/// Which side of the line bytes belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Console text.
    Console,
    /// RSP bytes for the debugger.
    Debug,
}

/// Where the framing state lives: framed or raw, and which stream the host
/// currently reads. The stub keeps it in atomics, because the console
/// writes it from running code and the debugger session from a stop that
/// may have interrupted a console write.
pub trait FrameState {
    /// Whether output is framed.
    fn framed(&self) -> bool;
    /// Turns framing on or off, with the console selected.
    fn set_framed(&self, on: bool);
    /// Selects a stream; returns whether it was selected already.
    fn select(&self, stream: Stream) -> bool;
}

/// Turns framing on (writing the `DLE 'F'` sync, after which the console
/// is selected) or off.
pub fn set_framed(state: &impl FrameState, on: bool, mut out: impl FnMut(u8)) {
    state.set_framed(on);
    if on {
        out(DLE);
        out(b'F');
    }
}

/// Selects `stream`, writing the switch marker when framed and the other
/// stream was selected.
pub fn switch_to(state: &impl FrameState, stream: Stream, mut out: impl FnMut(u8)) {
    if state.framed() && !state.select(stream) {
        out(DLE);
        out(match stream {
            Stream::Debug => b'D',
            Stream::Console => b'C',
        });
    }
}

/// Writes `bytes` of `stream`: as they are when raw; when framed, after a
/// switch marker if the other stream was selected, with `DLE` doubled.
pub fn write(state: &impl FrameState, stream: Stream, bytes: &[u8], mut out: impl FnMut(u8)) {
    if !state.framed() {
        bytes.iter().for_each(|&b| out(b));
        return;
    }
    if bytes.is_empty() {
        return;
    }
    switch_to(state, stream, &mut out);
    for &b in bytes {
        if b == DLE {
            out(DLE);
        }
        out(b);
    }
}

/// A control sequence from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `DLE 'F'`: frame the output.
    Framed,
    /// `DLE 'R'`: raw output.
    Raw,
    /// `DLE 'X'`: the debugger is gone; end the session.
    DebuggerGone,
}

/// What the host's bytes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxEvent {
    /// A byte for gdbstub.
    Byte(u8),
    /// A control sequence (never passed to gdbstub).
    Control(Control),
    /// A packet begins; its bytes follow as [`RxEvent::Byte`]s.
    /// `new_session` is set for `qSupported`, the first packet of every debugger.
    PacketStart {
        /// The packet is `qSupported`.
        new_session: bool,
    },
}

const NEW_SESSION: &[u8] = b"$qSupported";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    Between,
    Escape,
    Lookahead,
    Body,
    Checksum1,
    Checksum2,
}

/// Splits the host's byte stream into [`RxEvent`]s.
#[derive(Debug)]
pub struct RxParser {
    state: RxState,
    look: [u8; NEW_SESSION.len()],
    look_len: usize,
}

impl Default for RxParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RxParser {
    /// A parser between packets.
    pub const fn new() -> Self {
        RxParser { state: RxState::Between, look: [0; NEW_SESSION.len()], look_len: 0 }
    }

    /// Feeds one byte; calls `out` for each event it completes, in order.
    pub fn push(&mut self, byte: u8, mut out: impl FnMut(RxEvent)) {
        match self.state {
            RxState::Between => match byte {
                DLE => self.state = RxState::Escape,
                b'$' => {
                    self.look[0] = b'$';
                    self.look_len = 1;
                    self.state = RxState::Lookahead;
                }
                // Acks and the interrupt byte are all gdbstub takes between
                // packets; anything else (line noise, a half-cleared control
                // sequence) is dropped, as gdb drops junk between packets.
                b'+' | b'-' | 0x03 => out(RxEvent::Byte(byte)),
                _ => {}
            },
            RxState::Escape => {
                self.state = RxState::Between;
                match byte {
                    b'F' => out(RxEvent::Control(Control::Framed)),
                    b'R' => out(RxEvent::Control(Control::Raw)),
                    b'X' => out(RxEvent::Control(Control::DebuggerGone)),
                    // Not a control sequence: the DLE is junk; the byte after
                    // it is read as if the DLE had not been there.
                    _ => self.push(byte, out),
                }
            }
            RxState::Lookahead => {
                let n = self.look_len;
                let matches = byte == NEW_SESSION[n];
                self.look[n] = byte;
                self.look_len = n + 1;
                if matches && self.look_len < NEW_SESSION.len() {
                    return;
                }
                out(RxEvent::PacketStart { new_session: matches });
                let (look, len) = (self.look, self.look_len);
                self.state = RxState::Body;
                for &b in &look[..len - 1] {
                    out(RxEvent::Byte(b));
                }
                // The last byte may already end the body.
                self.body(byte, out);
            }
            RxState::Body => self.body(byte, out),
            RxState::Checksum1 => {
                self.state = RxState::Checksum2;
                out(RxEvent::Byte(byte));
            }
            RxState::Checksum2 => {
                self.state = RxState::Between;
                out(RxEvent::Byte(byte));
            }
        }
    }

    fn body(&mut self, byte: u8, mut out: impl FnMut(RxEvent)) {
        if byte == b'#' {
            self.state = RxState::Checksum1;
        }
        out(RxEvent::Byte(byte));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RxEvent::Control as Ctl;
    use RxEvent::{Byte, PacketStart};

    use std::cell::Cell;

    /// The framing state in plain cells.
    #[derive(Default)]
    struct Cells {
        framed: Cell<bool>,
        debug: Cell<bool>,
    }

    impl FrameState for Cells {
        fn framed(&self) -> bool {
            self.framed.get()
        }
        fn set_framed(&self, on: bool) {
            self.framed.set(on);
            self.debug.set(false);
        }
        fn select(&self, stream: Stream) -> bool {
            let debug = stream == Stream::Debug;
            self.debug.replace(debug) == debug
        }
    }

    fn frame(f: &Cells, stream: Stream, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(f, stream, bytes, |b| out.push(b));
        out
    }

    fn parse(p: &mut RxParser, bytes: &[u8]) -> Vec<RxEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            p.push(b, |e| events.push(e));
        }
        events
    }

    fn bytes(s: &[u8]) -> Vec<RxEvent> {
        s.iter().map(|&b| Byte(b)).collect()
    }

    #[test]
    fn raw_mode_passes_everything_through() {
        let f = &Cells::default();
        assert_eq!(frame(f, Stream::Console, b"a\x10b"), b"a\x10b");
        assert_eq!(frame(f, Stream::Debug, b"$OK#9a"), b"$OK#9a");
    }

    #[test]
    fn framed_mode_marks_switches_and_escapes_dle() {
        let f = &Cells::default();
        let mut sync = Vec::new();
        set_framed(f, true, |b| sync.push(b));
        assert_eq!(sync, b"\x10F");
        assert_eq!(frame(f, Stream::Console, b"hi\n"), b"hi\n");
        assert_eq!(frame(f, Stream::Debug, b"$OK#9a"), b"\x10D$OK#9a");
        assert_eq!(frame(f, Stream::Debug, b"+"), b"+");
        assert_eq!(frame(f, Stream::Console, b"\x10x"), b"\x10C\x10\x10x");
        assert_eq!(frame(f, Stream::Console, b""), b"");
        assert_eq!(frame(f, Stream::Debug, b""), b"");
        let mut none = Vec::new();
        set_framed(f, false, |b| none.push(b));
        assert!(none.is_empty());
        assert_eq!(frame(f, Stream::Debug, b"\x10"), b"\x10");
    }

    #[test]
    fn switching_back_after_a_stop() {
        let f = &Cells::default();
        let mut out = Vec::new();
        switch_to(f, Stream::Debug, |b| out.push(b));
        assert!(out.is_empty(), "raw mode has no markers");
        set_framed(f, true, |_| {});
        switch_to(f, Stream::Console, |b| out.push(b));
        assert!(out.is_empty(), "the console is selected already");
        frame(f, Stream::Debug, b"$OK#9a");
        switch_to(f, Stream::Console, |b| out.push(b));
        assert_eq!(out, b"\x10C");
        assert_eq!(frame(f, Stream::Console, b"x"), b"x");
    }

    #[test]
    fn resync_selects_console_again() {
        let f = &Cells::default();
        set_framed(f, true, |_| {});
        frame(f, Stream::Debug, b"+");
        let mut sync = Vec::new();
        set_framed(f, true, |b| sync.push(b));
        assert_eq!(sync, b"\x10F");
        assert_eq!(frame(f, Stream::Console, b"c"), b"c");
    }

    #[test]
    fn controls_between_packets() {
        let mut p = RxParser::new();
        assert_eq!(parse(&mut p, b"\x10F"), vec![Ctl(Control::Framed)]);
        assert_eq!(
            parse(&mut p, b"\x10R\x10X"),
            vec![Ctl(Control::Raw), Ctl(Control::DebuggerGone)]
        );
        assert_eq!(parse(&mut p, b"+\x03-"), bytes(b"+\x03-"));
    }

    #[test]
    fn junk_between_packets_is_dropped() {
        let mut p = RxParser::new();
        assert_eq!(parse(&mut p, b"\x10q"), vec![]);
        assert_eq!(parse(&mut p, b"F\x10\x10F"), vec![Ctl(Control::Framed)]);
        assert_eq!(parse(&mut p, b"hello\r\n\x00\xff"), vec![]);
        assert_eq!(parse(&mut p, b"\x10+"), bytes(b"+"));
        let mut events = parse(&mut p, b"\x10$m0,1#");
        events.truncate(1);
        assert_eq!(events, vec![PacketStart { new_session: false }]);
    }

    #[test]
    fn packets_start_and_dle_inside_is_data() {
        let mut p = RxParser::new();
        let mut expect = vec![PacketStart { new_session: false }];
        expect.extend(bytes(b"$X0,1:\x10#aa"));
        assert_eq!(parse(&mut p, b"$X0,1:\x10#aa"), expect);
        assert_eq!(parse(&mut p, b"\x10X"), vec![Ctl(Control::DebuggerGone)]);
    }

    #[test]
    fn checksum_bytes_are_not_controls() {
        let mut p = RxParser::new();
        let events = parse(&mut p, b"$g#\x10X");
        assert_eq!(events.last(), Some(&Byte(b'X')));
        assert!(!events.contains(&Ctl(Control::DebuggerGone)));
    }

    #[test]
    fn qsupported_is_a_new_session() {
        let mut p = RxParser::new();
        let pkt = b"$qSupported:multiprocess+;swbreak+#xx";
        let mut expect = vec![PacketStart { new_session: true }];
        expect.extend(bytes(pkt));
        assert_eq!(parse(&mut p, pkt), expect);
        // Prefixes that diverge, and a packet shorter than the lookahead.
        for pkt in [&b"$qSymbol::#5b"[..], b"$qS#b4", b"$?#3f", b"$#00", b"$qSupporte#xx"] {
            let mut expect = vec![PacketStart { new_session: false }];
            expect.extend(bytes(pkt));
            assert_eq!(parse(&mut p, pkt), expect, "{}", String::from_utf8_lossy(pkt));
        }
    }

    #[test]
    fn byte_at_a_time_equals_bulk() {
        // The parser keeps state across calls: feeding one byte per call is
        // what the stub does.
        let input = b"+$qSupported:x#00\x10F\x03$m10,4#aa\x10X";
        let mut a = RxParser::new();
        let bulk = parse(&mut a, input);
        let mut b = RxParser::new();
        let mut single = Vec::new();
        for &byte in input.iter() {
            single.extend(parse(&mut b, &[byte]));
        }
        assert_eq!(bulk, single);
        assert_eq!(bulk.iter().filter(|e| matches!(e, PacketStart { .. })).count(), 2);
    }

    #[test]
    fn every_byte_value_survives_framing() {
        let all: Vec<u8> = (0..=255).collect();
        let f = &Cells::default();
        set_framed(f, true, |_| {});
        let out = frame(f, Stream::Console, &all);
        // Decode: DLE DLE -> DLE.
        let mut decoded = Vec::new();
        let mut it = out.iter();
        while let Some(&b) = it.next() {
            if b == DLE {
                assert_eq!(it.next(), Some(&DLE));
            }
            decoded.push(b);
        }
        assert_eq!(decoded, all);
    }
}
