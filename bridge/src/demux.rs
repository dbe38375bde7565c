//! The stub -> host demultiplexer (sans-I/O).
//!
//! Feed it the bytes read from the unikernel's serial line, in order and in
//! chunks of any size; it returns what they mean. Its state persists across
//! chunks, so a `DLE` at the end of one read and its second byte at the start
//! of the next are understood as one sequence.
//!
//! The rules, from `docs/wire-protocol.md`:
//!
//! * before the stub's first `DLE 'F'` every byte is console text (the stub is
//!   still in raw mode), except the two sequences below that the stub writes
//!   in raw mode too;
//! * `DLE 'H'` is the stub's hello, recognised in every state: a stub has just
//!   started (or restarted, after a guest reset) in raw mode, so the parser
//!   goes back to raw mode;
//! * `DLE 'E'` is the stub's "session ended", the answer to the host's
//!   `DLE 'X'`, recognised in every state; it does not change the channel;
//! * `DLE 'K'` starts a crash stream (`docs/wire-protocol.md`, "Crash
//!   stream"), recognised in every state: the bytes that follow are the
//!   stream's ([`crate::core::stream::Decoder`]) until its `END` record or
//!   an error, reported as [`Event::CrashBytes`] (raw, as on the line),
//!   [`Event::CrashProgress`] and finally [`Event::CrashDone`] or
//!   [`Event::CrashFailed`]; then the parser goes on in the state it was in
//!   (a `DLE` and another byte that broke the stream are parsed again, so a
//!   hello that cut a stream short is still a hello);
//!   After a record fails its check the rest of the stream is skipped up to
//!   its `DLE 'Z'`, which ends every stream and is never escaped; a `DLE 'Z'`
//!   right after a stream's END record is taken, anywhere else it is an
//!   unknown escape like any other;
//! * `DLE 'F'` is the stub's sync: framing is on and the channel is the console;
//! * `DLE 'C'` / `DLE 'D'` switch to the console / debugger channel;
//! * `DLE DLE` is one literal `0x10` in the current channel;
//! * a `DLE` followed by any other byte is a framing error and both bytes are
//!   kept as console text, so that nothing is lost;
//! * any other byte is payload of the current channel.
//!
//! Payload bytes are never dropped or reordered: concatenating the payloads of
//! the returned [`Event::Console`] (or [`Event::Debugger`]) events gives exactly
//! the console (or debugger) byte stream. The only byte ever held back is a
//! `DLE` waiting for its second byte; [`Demux::finish`] releases it at the end
//! of the stream. Crash streams never reach the console or the debugger.

use crate::core::stream::{Decoder, Fed, Progress, StreamError};
use crate::core::Snapshot;
use crate::wire::{CONSOLE, DEBUGGER, DLE, ENDED, HELLO, SYNC};
use ukdb_stub::dumpwire::{START as CRASH, STOP as CRASH_STOP};

/// The two logical channels of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Console text, for the user.
    Console,
    /// RSP, for the debugger.
    Debugger,
}

/// What a stretch of the stub's stream means, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Console text. Consecutive console bytes are coalesced into one event.
    Console(Vec<u8>),
    /// RSP bytes for the debugger. Consecutive debugger bytes are coalesced.
    Debugger(Vec<u8>),
    /// The stub's `DLE 'F'`: framing is on (again); the channel is the console.
    Sync,
    /// The stub's `DLE 'H'`: a stub has just started, in raw mode with no
    /// session. The parser is back in raw mode (every following byte is
    /// console text until the next [`Event::Sync`]).
    Hello,
    /// The stub's `DLE 'E'`: it has ended a session, in answer to a
    /// `DLE 'X'`. Every debugger byte before it belongs to the ended session.
    Ended,
    /// A `DLE 'C'` or `DLE 'D'` channel switch.
    Switch(Channel),
    /// `DLE` followed by this byte, which has no meaning in framed mode. Both
    /// bytes are kept as console text, in a [`Event::Console`] right after.
    FramingError(u8),
    /// The stub's `DLE 'K'`: a crash stream starts.
    CrashStart,
    /// Bytes of the crash stream as they came on the line (escaped; the
    /// first ones are `DLE 'K'`), for keeping a broken stream.
    /// Consecutive ones are coalesced.
    CrashBytes(Vec<u8>),
    /// How far the crash stream has come: at most one per
    /// [`Demux::feed`], after its bytes.
    CrashProgress(Progress),
    /// The crash stream is complete.
    CrashDone(Box<Snapshot>),
    /// The crash stream broke (or the line closed in it,
    /// [`StreamError::Truncated`] from [`Demux::finish`]).
    CrashFailed(StreamError),
}

/// The stub -> host framed-stream parser. See the [module docs](self).
#[derive(Debug)]
pub struct Demux {
    framed: bool,
    channel: Channel,
    pending_dle: bool,
    crash: Option<Decoder>,
    /// The rest of a crash stream whose check failed, skipped up to its
    /// `DLE 'Z'`.
    skim: Option<Skim>,
    /// A crash stream's END record came last: the stream's `DLE 'Z'` is
    /// due (anywhere else a `DLE 'Z'` is an unknown escape).
    stop_due: bool,
    /// On a noisy line a framing error's two bytes are dropped
    /// ([`Demux::resynchronising`]).
    resync: bool,
}

impl Default for Demux {
    fn default() -> Self {
        Self::new()
    }
}

impl Demux {
    /// A parser for a fresh connection: raw mode, nothing pending.
    pub fn new() -> Self {
        Self {
            framed: false,
            channel: Channel::Console,
            pending_dle: false,
            crash: None,
            skim: None,
            stop_due: false,
            resync: false,
        }
    }

    /// A parser for a line that may damage bytes: a framing error in framed
    /// mode (a `DLE` and a byte that means nothing, most likely a damaged
    /// byte) is reported and both bytes are dropped; the channel stays as it
    /// was (the stub marks only changes of channel, so a stop's whole RSP
    /// traffic may follow one `DLE 'D'`). RSP that a damaged switch left in
    /// the console is the caller's to recognise
    /// ([`crate::reliable::Scrubber`]).
    pub fn resynchronising() -> Self {
        Self { resync: true, ..Self::new() }
    }

    /// `true` once the stub's sync (`DLE 'F'`) has been seen.
    pub fn is_framed(&self) -> bool {
        self.framed
    }

    /// The channel that payload bytes currently belong to.
    pub fn channel(&self) -> Channel {
        if self.framed {
            self.channel
        } else {
            Channel::Console
        }
    }

    /// `true` when a `DLE` at the end of the input so far is waiting for its
    /// second byte.
    pub fn has_pending(&self) -> bool {
        self.pending_dle
    }

    /// Parses the next chunk of the stream and returns its events.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        self.feed_into(input, &mut out);
        out
    }

    /// `true` while a crash stream is being received.
    pub fn in_crash_stream(&self) -> bool {
        self.crash.is_some() || self.skim.is_some()
    }

    /// Like [`Demux::feed`], appending the events to `out`.
    pub fn feed_into(&mut self, mut input: &[u8], out: &mut Vec<Event>) {
        let mut progressed = false;
        while let Some((&byte, rest)) = input.split_first() {
            if let Some(skim) = &mut self.skim {
                let (used, end) = skim.feed(input);
                let (stream, rest) = input.split_at(used);
                crash_bytes(out, stream);
                input = rest;
                if let Some(broken) = end {
                    let skim = self.skim.take().expect("skimming");
                    out.push(Event::CrashFailed(skim.error));
                    // The DLE it took is parsed again with the byte after.
                    self.pending_dle = broken;
                }
                continue;
            }
            let Some(decoder) = &mut self.crash else {
                self.byte(byte, out);
                input = rest;
                continue;
            };
            progressed = true;
            match decoder.feed(input) {
                Fed::More => {
                    crash_bytes(out, input);
                    input = &[];
                }
                Fed::Done { used } => {
                    let (stream, rest) = input.split_at(used);
                    crash_bytes(out, stream);
                    let snapshot = decoder.take_snapshot().unwrap_or_default();
                    self.crash = None;
                    self.stop_due = true;
                    out.push(Event::CrashDone(Box::new(snapshot)));
                    input = rest;
                }
                Fed::Failed { used, error } => {
                    let (stream, rest) = input.split_at(used);
                    crash_bytes(out, stream);
                    self.crash = None;
                    input = rest;
                    match error {
                        // The line broke (the DLE it took is parsed again
                        // with the byte after it) or ended: nothing follows.
                        StreamError::Broken(_) | StreamError::Truncated { .. } => {
                            self.pending_dle = matches!(error, StreamError::Broken(_));
                            // A stream that stopped early: its own end.
                            self.stop_due = error == StreamError::Broken(CRASH_STOP);
                            out.push(Event::CrashFailed(error));
                        }
                        // A record failed its check, but the stub goes on
                        // sending the rest: skip it up to its `DLE 'Z'`, so
                        // that it never reaches the console; the failure
                        // is reported at its end.
                        StreamError::BadCrc { .. } | StreamError::Malformed(_) => {
                            self.skim = Some(Skim::new(error));
                        }
                    }
                }
            }
        }
        if let (true, Some(decoder)) = (progressed, &self.crash) {
            out.push(Event::CrashProgress(decoder.progress()));
        }
    }

    /// Ends the stream: a crash stream in progress is truncated, and a `DLE`
    /// still waiting for its second byte is released as console text
    /// (nothing is lost).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(decoder) = self.crash.take() {
            let error = decoder.finish().unwrap_or(StreamError::Truncated { records: 0 });
            out.push(Event::CrashFailed(error));
        }
        if let Some(skim) = self.skim.take() {
            out.push(Event::CrashFailed(skim.error));
        }
        if std::mem::take(&mut self.pending_dle) {
            payload(&mut out, Channel::Console, DLE);
        }
        out
    }

    fn byte(&mut self, byte: u8, out: &mut Vec<Event>) {
        let stop_due = std::mem::take(&mut self.stop_due);
        if !std::mem::take(&mut self.pending_dle) {
            if byte == DLE {
                self.pending_dle = true;
                self.stop_due = stop_due;
            } else {
                payload(out, self.channel(), byte);
            }
            return;
        }
        // `byte` is the second byte of a DLE sequence.
        match byte {
            SYNC => {
                self.framed = true;
                self.channel = Channel::Console;
                out.push(Event::Sync);
                return;
            }
            HELLO => {
                self.framed = false;
                self.channel = Channel::Console;
                out.push(Event::Hello);
                return;
            }
            ENDED => {
                out.push(Event::Ended);
                return;
            }
            // The end of a crash stream, right after its END record.
            CRASH_STOP if stop_due => return,
            CRASH => {
                self.crash = Some(Decoder::new());
                out.push(Event::CrashStart);
                crash_bytes(out, &[DLE, CRASH]);
                return;
            }
            _ => {}
        }
        if !self.framed {
            // Raw mode: the DLE was console text, and `byte` starts afresh (it
            // may itself be a DLE, e.g. the first of `DLE DLE 'F'`).
            payload(out, Channel::Console, DLE);
            self.byte(byte, out);
            return;
        }
        match byte {
            CONSOLE => {
                self.channel = Channel::Console;
                out.push(Event::Switch(Channel::Console));
            }
            DEBUGGER => {
                self.channel = Channel::Debugger;
                out.push(Event::Switch(Channel::Debugger));
            }
            DLE => payload(out, self.channel, DLE),
            other if self.resync => out.push(Event::FramingError(other)),
            other => {
                out.push(Event::FramingError(other));
                payload(out, Channel::Console, DLE);
                payload(out, Channel::Console, other);
            }
        }
    }
}

/// The rest of a crash stream after a record failed its check: skipped
/// up to the stream's unescaped `DLE 'Z'` (or any other control sequence,
/// which is parsed again), so that it never reaches the console.
#[derive(Debug)]
struct Skim {
    error: StreamError,
    /// A `DLE` waiting for its second byte.
    dle: bool,
}

impl Skim {
    fn new(error: StreamError) -> Self {
        Skim { error, dle: false }
    }

    /// Takes bytes of `input`; returns how many belong to the stream, and
    /// `Some(broken)` once it ended: `false` at its `DLE 'Z'` (taken),
    /// `true` at a `DLE` and another byte (the `DLE` taken, not the byte).
    fn feed(&mut self, input: &[u8]) -> (usize, Option<bool>) {
        for (i, &b) in input.iter().enumerate() {
            if std::mem::take(&mut self.dle) {
                match b {
                    DLE => {}
                    CRASH_STOP => return (i + 1, Some(false)),
                    _ => return (i, Some(true)),
                }
            } else if b == DLE {
                self.dle = true;
            }
        }
        (input.len(), None)
    }
}

/// Appends raw crash stream bytes, coalescing with a directly preceding
/// [`Event::CrashBytes`].
fn crash_bytes(out: &mut Vec<Event>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Event::CrashBytes(raw)) => raw.extend_from_slice(bytes),
        _ => out.push(Event::CrashBytes(bytes.to_vec())),
    }
}

/// Appends one payload byte, coalescing with a directly preceding payload
/// event of the same channel.
fn payload(out: &mut Vec<Event>, channel: Channel, byte: u8) {
    match (out.last_mut(), channel) {
        (Some(Event::Console(bytes)), Channel::Console)
        | (Some(Event::Debugger(bytes)), Channel::Debugger) => bytes.push(byte),
        (_, Channel::Console) => out.push(Event::Console(vec![byte])),
        (_, Channel::Debugger) => out.push(Event::Debugger(vec![byte])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u8 = DLE;

    fn console(bytes: &[u8]) -> Event {
        Event::Console(bytes.to_vec())
    }

    fn debugger(bytes: &[u8]) -> Event {
        Event::Debugger(bytes.to_vec())
    }

    /// The console and debugger byte streams that `events` carry.
    fn streams(events: &[Event]) -> (Vec<u8>, Vec<u8>) {
        let (mut c, mut d) = (Vec::new(), Vec::new());
        for event in events {
            match event {
                Event::Console(bytes) => c.extend_from_slice(bytes),
                Event::Debugger(bytes) => d.extend_from_slice(bytes),
                _ => {}
            }
        }
        (c, d)
    }

    /// The non-payload events, in order (crash stream bytes and progress,
    /// which depend on how the input is cut, left out).
    fn controls(events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| {
                !matches!(
                    e,
                    Event::Console(_)
                        | Event::Debugger(_)
                        | Event::CrashBytes(_)
                        | Event::CrashProgress(_)
                )
            })
            .cloned()
            .collect()
    }

    /// The crash stream bytes `events` carry.
    fn crash_raw(events: &[Event]) -> Vec<u8> {
        let mut raw = Vec::new();
        for event in events {
            if let Event::CrashBytes(bytes) = event {
                raw.extend_from_slice(bytes);
            }
        }
        raw
    }

    /// Feeds `input` in the given chunks, then finishes.
    fn run_chunks(chunks: &[&[u8]]) -> Vec<Event> {
        let mut demux = Demux::new();
        let mut out = Vec::new();
        for chunk in chunks {
            demux.feed_into(chunk, &mut out);
        }
        out.extend(demux.finish());
        out
    }

    fn run(input: &[u8]) -> Vec<Event> {
        run_chunks(&[input])
    }

    fn run_bytewise(input: &[u8]) -> Vec<Event> {
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        run_chunks(&chunks)
    }

    /// Asserts that every way of splitting `input` into two chunks, and
    /// feeding it one byte at a time, gives the same streams and control
    /// events as feeding it whole.
    fn assert_chunking_invariant(input: &[u8]) {
        let whole = run(input);
        let expect = (streams(&whole), controls(&whole));
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let got = run_chunks(&[a, b]);
            assert_eq!((streams(&got), controls(&got)), expect, "split at {split}");
        }
        let singles: Vec<&[u8]> = input.chunks(1).collect();
        let got = run_chunks(&singles);
        assert_eq!((streams(&got), controls(&got)), expect, "byte by byte");
        assert_eq!(crash_raw(&got), crash_raw(&whole));
    }

    #[test]
    fn before_sync_every_byte_is_console() {
        for b in 0..=255u8 {
            let mut demux = Demux::new();
            let mut events = demux.feed(&[b]);
            events.extend(demux.finish());
            assert_eq!(events, vec![console(&[b])], "byte {b:#04x}");
            assert!(!demux.is_framed());
        }
    }

    #[test]
    fn before_sync_dle_pairs_are_console() {
        // Every DLE pair other than DLE 'F' is two console bytes in raw mode,
        // including the framed-mode escapes C, D, R, X and DLE DLE.
        for b in (0..=255u8).filter(|&b| ![SYNC, HELLO, ENDED, CRASH, D].contains(&b)) {
            assert_eq!(run(&[D, b]), vec![console(&[D, b])], "DLE {b:#04x}");
        }
        // DLE DLE: the second DLE waits for its successor, then is released
        // by finish().
        let mut demux = Demux::new();
        assert_eq!(demux.feed(&[D, D]), vec![console(&[D])]);
        assert_eq!(demux.finish(), vec![console(&[D])]);
        assert_eq!(run(b"a\x10Cb\x10Dc"), vec![console(b"a\x10Cb\x10Dc")]);
    }

    #[test]
    fn sync_turns_framing_on() {
        let mut demux = Demux::new();
        assert_eq!(
            demux.feed(b"boot\r\n\x10Fhello"),
            vec![console(b"boot\r\n"), Event::Sync, console(b"hello")]
        );
        assert!(demux.is_framed());
        assert_eq!(demux.channel(), Channel::Console);
    }

    #[test]
    fn hello_is_recognised_in_every_state_and_means_raw_mode() {
        // Raw mode (before any sync).
        assert_eq!(run(b"boot\x10Hx"), vec![console(b"boot"), Event::Hello, console(b"x")]);
        // Framed, in the debugger channel: back to raw mode, so what follows
        // is console text and framed-mode escapes are plain bytes again.
        let mut demux = Demux::new();
        assert_eq!(
            demux.feed(b"\x10F\x10D$T05\x10Hreboot\x10Dz"),
            vec![
                Event::Sync,
                Event::Switch(Channel::Debugger),
                debugger(b"$T05"),
                Event::Hello,
                console(b"reboot\x10Dz"),
            ]
        );
        assert!(!demux.is_framed());
        assert_eq!(demux.channel(), Channel::Console);
        // Split across chunks, and after a doubled DLE.
        assert_eq!(run_chunks(&[b"\x10", b"H"]), vec![Event::Hello]);
        assert_eq!(run(b"\x10\x10H"), vec![console(&[D]), Event::Hello]);
        assert_chunking_invariant(b"a\x10Hb\x10F\x10Dc\x10Hd\x10Fe");
    }

    #[test]
    fn ended_is_recognised_in_every_state_and_keeps_the_channel() {
        assert_eq!(run(b"a\x10Eb"), vec![console(b"a"), Event::Ended, console(b"b")]);
        let mut demux = Demux::new();
        assert_eq!(
            demux.feed(b"\x10F\x10D$OK#9a\x10E+"),
            vec![
                Event::Sync,
                Event::Switch(Channel::Debugger),
                debugger(b"$OK#9a"),
                Event::Ended,
                debugger(b"+"),
            ]
        );
        assert!(demux.is_framed());
        assert_eq!(demux.channel(), Channel::Debugger);
        assert_chunking_invariant(b"\x10E\x10F\x10D\x10E\x10\x10E");
    }

    #[test]
    fn sync_after_dle_in_raw_mode() {
        // DLE DLE 'F' in raw mode: the first DLE is console text, the second
        // starts the sync.
        assert_eq!(run(b"x\x10\x10Fy"), vec![console(b"x\x10"), Event::Sync, console(b"y")]);
    }

    #[test]
    fn after_sync_every_plain_byte_is_payload_of_current_channel() {
        for b in (0..=255u8).filter(|&b| b != D) {
            assert_eq!(run(&[D, SYNC, b]), vec![Event::Sync, console(&[b])], "console {b:#04x}");
            assert_eq!(
                run(&[D, SYNC, D, DEBUGGER, b]),
                vec![Event::Sync, Event::Switch(Channel::Debugger), debugger(&[b])],
                "debugger {b:#04x}"
            );
        }
    }

    #[test]
    fn every_escape_after_sync() {
        for b in 0..=255u8 {
            let got = run(&[D, SYNC, D, DEBUGGER, D, b]);
            let mut expect = vec![Event::Sync, Event::Switch(Channel::Debugger)];
            match b {
                SYNC => expect.push(Event::Sync),
                HELLO => expect.push(Event::Hello),
                ENDED => expect.push(Event::Ended),
                CONSOLE => expect.push(Event::Switch(Channel::Console)),
                DEBUGGER => expect.push(Event::Switch(Channel::Debugger)),
                CRASH => {
                    expect.push(Event::CrashStart);
                    expect.push(Event::CrashBytes(vec![D, CRASH]));
                    expect.push(Event::CrashFailed(StreamError::Truncated { records: 0 }));
                }
                D => expect.push(debugger(&[D])),
                other => {
                    expect.push(Event::FramingError(other));
                    expect.push(console(&[D, other]));
                }
            }
            assert_eq!(got, expect, "DLE {b:#04x}");
        }
    }

    #[test]
    fn dle_dle_is_a_literal_in_each_channel() {
        assert_eq!(
            run(b"\x10F\x10\x10\x10D\x10\x10"),
            vec![Event::Sync, console(&[D]), Event::Switch(Channel::Debugger), debugger(&[D]),]
        );
        // Four DLEs are two literals; three are one literal and a held DLE.
        assert_eq!(run(b"\x10F\x10\x10\x10\x10"), vec![Event::Sync, console(&[D, D])]);
        let mut demux = Demux::new();
        assert_eq!(demux.feed(b"\x10F\x10\x10\x10"), vec![Event::Sync, console(&[D])]);
        assert!(demux.has_pending());
        assert_eq!(demux.feed(b"\x10"), vec![console(&[D])]);
        assert!(!demux.has_pending());
    }

    #[test]
    fn sync_resets_channel_to_console() {
        assert_eq!(
            run(b"\x10F\x10Dab\x10Fcd"),
            vec![
                Event::Sync,
                Event::Switch(Channel::Debugger),
                debugger(b"ab"),
                Event::Sync,
                console(b"cd"),
            ]
        );
    }

    #[test]
    fn unknown_escape_is_kept_as_console_in_place() {
        // In the debugger channel, the two bytes go to the console and the
        // channel stays the debugger's.
        assert_eq!(
            run(b"\x10F\x10D$O\x10Zk#00"),
            vec![
                Event::Sync,
                Event::Switch(Channel::Debugger),
                debugger(b"$O"),
                Event::FramingError(b'Z'),
                console(&[D, b'Z']),
                debugger(b"k#00"),
            ]
        );
        // In the console channel, order is kept.
        let got = run(b"\x10Fab\x10Xcd");
        assert_eq!(streams(&got).0, b"ab\x10Xcd".to_vec());
        assert!(got.contains(&Event::FramingError(b'X')));
    }

    #[test]
    fn dle_at_chunk_boundary() {
        let mut demux = Demux::new();
        assert_eq!(demux.feed(b"abc\x10"), vec![console(b"abc")]);
        assert!(demux.has_pending());
        assert_eq!(demux.feed(b"F"), vec![Event::Sync]);
        assert_eq!(demux.feed(b"x\x10"), vec![console(b"x")]);
        assert_eq!(
            demux.feed(b"D$OK#9a\x10"),
            vec![Event::Switch(Channel::Debugger), debugger(b"$OK#9a")]
        );
        assert_eq!(demux.feed(b"\x10"), vec![debugger(&[D])]);
        assert_eq!(demux.feed(b"\x10"), vec![]);
        assert_eq!(demux.feed(b"C\n"), vec![Event::Switch(Channel::Console), console(b"\n")]);
        assert_eq!(demux.feed(b""), vec![]);
        assert!(!demux.has_pending());
    }

    #[test]
    fn dle_at_boundary_before_sync() {
        let mut demux = Demux::new();
        assert_eq!(demux.feed(b"\x10"), vec![]);
        assert_eq!(demux.feed(b"x"), vec![console(b"\x10x")]);
        assert_eq!(demux.feed(b"\x10"), vec![]);
        assert_eq!(demux.feed(b"F"), vec![Event::Sync]);
        assert!(demux.is_framed());
    }

    #[test]
    fn a_resynchronising_parser_drops_a_damaged_escape_and_keeps_the_channel() {
        let mut demux = Demux::resynchronising();
        let mut line = vec![D, SYNC];
        line.extend_from_slice(b"con");
        line.extend_from_slice(&[D, b'd']);
        line.extend_from_slice(b"+$OK#9a");
        line.extend_from_slice(&[D, DEBUGGER]);
        line.extend_from_slice(b"$g#");
        line.extend_from_slice(&[D, b'x']);
        line.extend_from_slice(b"67");
        let events = demux.feed(&line);
        assert_eq!(streams(&events), (b"con+$OK#9a".to_vec(), b"$g#67".to_vec()));
        assert!(events.contains(&Event::FramingError(b'd')));
        assert!(events.contains(&Event::FramingError(b'x')));
        // The default parser keeps it as console text.
        let (console, _) = streams(&run(&line));
        assert_eq!(console, b"con\x10d+$OK#9a\x10x".to_vec());
    }

    #[test]
    fn finish_releases_a_held_dle() {
        let mut demux = Demux::new();
        assert_eq!(demux.feed(b"tail\x10"), vec![console(b"tail")]);
        assert_eq!(demux.finish(), vec![console(&[D])]);
        assert_eq!(demux.finish(), vec![]);

        let mut demux = Demux::new();
        demux.feed(b"\x10F\x10D\x10");
        // Even in the debugger channel: an unfinished escape is a framing
        // error, kept as console text.
        assert_eq!(demux.finish(), vec![console(&[D])]);
    }

    #[test]
    fn interleaved_console_and_rsp() {
        let input: &[u8] =
            b"early boot\n\x10F\x10Cline 1\n\x10D+$qSupported:multi\x10\x10#xx\x10Cline 2\n\x10D$OK#9a\x10C";
        let events = run(input);
        assert_eq!(
            events,
            vec![
                console(b"early boot\n"),
                Event::Sync,
                Event::Switch(Channel::Console),
                console(b"line 1\n"),
                Event::Switch(Channel::Debugger),
                debugger(b"+$qSupported:multi\x10#xx"),
                Event::Switch(Channel::Console),
                console(b"line 2\n"),
                Event::Switch(Channel::Debugger),
                debugger(b"$OK#9a"),
                Event::Switch(Channel::Console),
            ]
        );
        assert_chunking_invariant(input);
    }

    #[test]
    fn chunking_never_changes_the_result() {
        let inputs: [&[u8]; 7] = [
            b"",
            b"\x10",
            b"\x10\x10\x10",
            b"a\x10\x10Fb\x10Dc\x10\x10d\x10Ze\x10Cf\x10",
            b"\x10F\x10D\x10\x10\x10\x10\x10C\x10\x10\x10F\x10D",
            b"raw \x10C \x10D \x10\x10 \x10F framed \x10Q \x10\x10",
            &[0x10, 0x46, 0x10, 0x44, 0x00, 0xff, 0x10, 0x10, 0x7f, 0x10, 0x43, 0x80],
        ];
        for input in inputs {
            assert_chunking_invariant(input);
        }
        // All byte values, each preceded by a DLE, in both channels.
        let mut all = b"\x10F".to_vec();
        for b in 0..=255u8 {
            all.extend_from_slice(&[b, D, b, D, DEBUGGER, b, D, b]);
        }
        assert_chunking_invariant(&all);
    }

    /// A complete crash stream, `DLE 'K'` included: with memory, or (for
    /// the tests that split it everywhere) small.
    fn crash_stream_with(memory: bool) -> (Vec<u8>, Snapshot) {
        use ukdb_stub::dumpwire::{self, cause, note, Encoder, HEADER, NOTE};
        if memory {
            let (body, snapshot) = crate::core::stream::tests::sample_stream();
            let mut line = vec![D, CRASH];
            line.extend(body);
            return (line, snapshot);
        }
        let mut line = Vec::new();
        let mut e = Encoder::start(|b: &[u8]| line.extend_from_slice(b));
        e.record(HEADER, &[&dumpwire::header(cause::PANIC)]);
        e.record(NOTE, &[&[note::REASON], b"boom \x10"]);
        for _ in 0..8 {
            e.record(NOTE, &[&[note::CMDLINE], b"a=b"]);
        }
        e.end();
        // The records alone: the tests of the stream's `DLE 'Z'` add it.
        assert_eq!(line.split_off(line.len() - 2), ukdb_stub::dumpwire::STOP_SEQ);
        let snapshot = Snapshot {
            cause: cause::PANIC,
            reason: "boom \x10".into(),
            cmdline: "a=b".into(),
            ..Snapshot::default()
        };
        (line, snapshot)
    }

    fn crash_stream() -> (Vec<u8>, Snapshot) {
        crash_stream_with(false)
    }

    fn done(snapshot: &Snapshot) -> Event {
        Event::CrashDone(Box::new(snapshot.clone()))
    }

    #[test]
    fn the_streams_dle_z_is_taken_only_right_after_it() {
        use ukdb_stub::dumpwire::STOP_SEQ;
        let (stream, snapshot) = crash_stream();
        // Right after the END record (raw and framed mode): taken.
        for prefix in [&b"x"[..], b"\x10Fx"] {
            let input = [prefix, &stream, &STOP_SEQ, b"y\x10Zz"].concat();
            let got = run(&input);
            let mut want = vec![Event::CrashStart, done(&snapshot)];
            if prefix.len() > 1 {
                want.insert(0, Event::Sync);
                want.push(Event::FramingError(CRASH_STOP));
            }
            assert_eq!(controls(&got), want);
            // Anywhere else a DLE 'Z' is kept, as any unknown escape.
            assert_eq!(streams(&got).0, b"xy\x10Zz");
            assert_eq!(crash_raw(&got), stream);
            assert_chunking_invariant(&input);
        }
    }

    #[test]
    fn a_crash_stream_in_raw_mode_is_taken_whole_and_the_console_goes_on() {
        let (big, snapshot) = crash_stream_with(true);
        let got = run(&[b"x".as_slice(), &big, b"y"].concat());
        assert_eq!(controls(&got), vec![Event::CrashStart, done(&snapshot)]);
        assert_eq!(streams(&got).0, b"xy");
        let (stream, snapshot) = crash_stream();
        let mut input = b"boot\n".to_vec();
        input.extend_from_slice(&stream);
        input.extend_from_slice(b"after\x10Fframed");
        let got = run(&input);
        assert_eq!(controls(&got), vec![Event::CrashStart, done(&snapshot), Event::Sync]);
        assert_eq!(streams(&got), (b"boot\nafterframed".to_vec(), vec![]));
        assert_eq!(crash_raw(&got), stream);
        assert_chunking_invariant(&input);
    }

    #[test]
    fn a_crash_stream_in_framed_mode_keeps_the_channel() {
        let (stream, snapshot) = crash_stream();
        let mut input = b"\x10F\x10Dab".to_vec();
        input.extend_from_slice(&stream);
        input.extend_from_slice(b"cd\x10Ce");
        let mut demux = Demux::new();
        let got = demux.feed(&input);
        assert_eq!(
            controls(&got),
            vec![
                Event::Sync,
                Event::Switch(Channel::Debugger),
                Event::CrashStart,
                done(&snapshot),
                Event::Switch(Channel::Console)
            ]
        );
        assert_eq!(streams(&got), (b"e".to_vec(), b"abcd".to_vec()));
        assert!(!demux.in_crash_stream());
        assert_chunking_invariant(&input);
    }

    #[test]
    fn progress_comes_once_per_feed_while_a_stream_goes_on() {
        let (stream, _) = crash_stream_with(true);
        let mut demux = Demux::new();
        let got = demux.feed(&stream[..100]);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(got[2], Event::CrashProgress(p) if p.bytes == 98));
        assert!(demux.in_crash_stream());
        let got = demux.feed(&stream[100..]);
        assert!(matches!(got.last(), Some(Event::CrashDone(_))));
    }

    #[test]
    fn a_hello_breaks_a_crash_stream_and_is_still_a_hello() {
        let (stream, _) = crash_stream();
        let mut input = stream[..60].to_vec();
        input.extend_from_slice(b"\x10Hrebooted");
        let got = run(&input);
        assert_eq!(
            controls(&got),
            vec![Event::CrashStart, Event::CrashFailed(StreamError::Broken(HELLO)), Event::Hello]
        );
        assert_eq!(streams(&got).0, b"rebooted");
        // The raw bytes kept end with the DLE that broke the stream.
        assert_eq!(crash_raw(&got), input[..61]);
        assert_chunking_invariant(&input);
    }

    #[test]
    fn a_corrupt_stream_fails_and_the_rest_is_console() {
        let (mut stream, _) = crash_stream_with(true);
        let last = stream.len() - 1;
        stream[last] ^= 1; // END's CRC
        stream.extend_from_slice(&ukdb_stub::dumpwire::STOP_SEQ);
        stream.extend_from_slice(b"more");
        let got = run(&stream);
        assert_eq!(
            controls(&got),
            vec![Event::CrashStart, Event::CrashFailed(StreamError::BadCrc { record: 10 })]
        );
        assert_eq!(streams(&got).0, b"more");
    }

    #[test]
    fn the_records_after_a_bad_one_never_reach_the_console() {
        // Once went to the console as binary: everything after the first
        // record that failed its check. Every byte of the stream's records
        // (not its start) corrupted in turn: the console gets exactly what
        // came before and after the stream, fed whole and byte by byte.
        let (mut stream, _) = crash_stream_with(true);
        stream.extend_from_slice(&ukdb_stub::dumpwire::STOP_SEQ);
        for at in 2..stream.len() - 2 {
            if stream[at] == DLE || stream[at - 1] == DLE || stream.get(at + 1) == Some(&DLE) {
                continue;
            }
            let mut line = b"before\n".to_vec();
            let mut bad = stream.clone();
            bad[at] ^= 0x41;
            if bad[at] == DLE {
                continue;
            }
            line.extend_from_slice(&bad);
            line.extend_from_slice(b"after\n");
            let runs =
                if at % 97 == 0 { vec![run(&line), run_bytewise(&line)] } else { vec![run(&line)] };
            for got in runs {
                assert_eq!(streams(&got).0, b"before\nafter\n", "byte {at}");
                let failed = got.iter().filter(|e| matches!(e, Event::CrashFailed(_))).count();
                assert_eq!(failed, 1, "byte {at}");
            }
        }
    }

    #[test]
    fn a_line_that_closes_in_a_stream_truncates_it() {
        let (stream, _) = crash_stream_with(true);
        let mut demux = Demux::new();
        demux.feed(&stream[..stream.len() - 1]);
        assert_eq!(
            demux.finish(),
            vec![Event::CrashFailed(StreamError::Truncated { records: 10 })]
        );
        assert!(!demux.in_crash_stream());
    }

    #[test]
    fn no_byte_is_dropped_or_reordered() {
        // Build a framed stream from known channel contents and check that
        // the demultiplexer gives them back exactly.
        let console_parts: [&[u8]; 3] =
            [b"hello \x10 world\n", &[0u8, 1, 2, 0x10, 0xff], b"$#+-\x03"];
        let debugger_parts: [&[u8]; 3] =
            [b"+$qSupported#37", &[0x10, 0x10, 0x7d, 0x10], b"$T05#b9"];
        let escape = |bytes: &[u8]| -> Vec<u8> {
            bytes.iter().flat_map(|&b| if b == D { vec![D, D] } else { vec![b] }).collect()
        };
        let mut wire = b"pre\x10sync ".to_vec();
        wire.extend_from_slice(&[D, SYNC]);
        for (c, d) in console_parts.iter().zip(debugger_parts) {
            wire.extend_from_slice(&[D, CONSOLE]);
            wire.extend(escape(c));
            wire.extend_from_slice(&[D, DEBUGGER]);
            wire.extend(escape(d));
        }
        let (c, d) = streams(&run(&wire));
        let mut expect_c = b"pre\x10sync ".to_vec();
        expect_c.extend(console_parts.concat());
        assert_eq!(c, expect_c);
        assert_eq!(d, debugger_parts.concat());
        assert_chunking_invariant(&wire);
    }
}
