//! The shared serial line (see `docs/wire-protocol.md`): console text and RSP
//! on one channel. Pure state machines, no I/O, host-tested.
//!
//! - [`Encoder`]: what the stub writes. Raw until the host asks for framing,
//!   then every switch between console and debugger bytes is marked. Only
//!   the transport's holder encodes, so an escape is never split.
//!
//! What the host writes is read by [`crate::rx`].

use crate::wire::{self, DLE};

/// Which side of the line bytes belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Console text.
    Console,
    /// RSP bytes for the debugger.
    Debug,
}

/// The stub's output framing: raw or framed, and which stream the host
/// reads now. Owned by whoever holds the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    framed: bool,
    selected: Stream,
    /// Every console write is marked, selected or not (see
    /// [`Encoder::set_remark`]).
    remark: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// Raw, console selected.
    pub const fn new() -> Self {
        Encoder { framed: false, selected: Stream::Console, remark: false }
    }

    /// On a line that damages bytes a lost `DLE 'C'` would leave console
    /// text in the debugger's stream until the next switch, which may not
    /// come for as long as the unikernel runs. With `on`, every console
    /// write is marked `DLE 'C'` when framed, so a damaged switch costs at
    /// most one write's text.
    pub fn set_remark(&mut self, on: bool) {
        self.remark = on;
    }

    /// Turns framing on (writing the `DLE 'F'` sync, after which the console
    /// is selected) or off.
    pub fn set_framed(&mut self, on: bool, mut out: impl FnMut(&[u8])) {
        self.framed = on;
        self.selected = Stream::Console;
        if on {
            out(&[DLE, wire::SYNC]);
        }
    }

    /// Selects `stream`, writing the switch marker when framed and the other
    /// stream was selected.
    pub fn switch_to(&mut self, stream: Stream, mut out: impl FnMut(&[u8])) {
        let remark = self.remark && stream == Stream::Console;
        if self.framed && (self.selected != stream || remark) {
            self.selected = stream;
            out(&[
                DLE,
                match stream {
                    Stream::Debug => wire::DEBUGGER,
                    Stream::Console => wire::CONSOLE,
                },
            ]);
        }
    }

    /// Bytes went out behind the encoder (a crash stream, which the host
    /// recognises in both modes): when framed, the console is selected
    /// again explicitly (`DLE 'C'`), whatever the host's reader made of the
    /// selection meanwhile.
    pub fn after_raw(&mut self, mut out: impl FnMut(&[u8])) {
        if self.framed {
            self.selected = Stream::Console;
            out(&[DLE, wire::CONSOLE]);
        }
    }

    /// Writes `bytes` of `stream`: as they are when raw; when framed, after
    /// a switch marker if the other stream was selected, with `DLE` doubled.
    /// `out` gets runs of bytes (an escape is always one run).
    pub fn write(&mut self, stream: Stream, bytes: &[u8], mut out: impl FnMut(&[u8])) {
        if !self.framed {
            if !bytes.is_empty() {
                out(bytes);
            }
            return;
        }
        if bytes.is_empty() {
            return;
        }
        self.switch_to(stream, &mut out);
        for run in bytes.split_inclusive(|&b| b == DLE) {
            out(run);
            if run.last() == Some(&DLE) {
                out(&[DLE]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_raw_bytes_the_console_is_selected_again_when_framed() {
        let mut out = Vec::new();
        let mut e = Encoder::new();
        e.after_raw(|b| out.extend_from_slice(b));
        assert!(out.is_empty(), "raw: nothing to mark");
        e.set_framed(true, |b| out.extend_from_slice(b));
        e.write(Stream::Debug, b"$OK#9a", |b| out.extend_from_slice(b));
        e.after_raw(|b| out.extend_from_slice(b));
        e.write(Stream::Console, b"hi", |b| out.extend_from_slice(b));
        assert_eq!(out, b"\x10F\x10D$OK#9a\x10Chi");
    }

    use super::*;

    #[test]
    fn remarking_marks_every_console_write() {
        let mut out = Vec::new();
        let mut e = Encoder::new();
        e.set_framed(true, |b| out.extend_from_slice(b));
        e.set_remark(true);
        for (stream, bytes) in [
            (Stream::Console, &b"a"[..]),
            (Stream::Console, b"b"),
            (Stream::Debug, b"+"),
            (Stream::Debug, b"-"),
        ] {
            e.write(stream, bytes, |b| out.extend_from_slice(b));
        }
        assert_eq!(out, b"\x10F\x10Ca\x10Cb\x10D+-");
    }

    fn frame(f: &mut Encoder, stream: Stream, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        f.write(stream, bytes, |b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn raw_mode_passes_everything_through() {
        let f = &mut Encoder::new();
        assert_eq!(frame(f, Stream::Console, b"a\x10b"), b"a\x10b");
        assert_eq!(frame(f, Stream::Debug, b"$OK#9a"), b"$OK#9a");
    }

    #[test]
    fn framed_mode_marks_switches_and_escapes_dle() {
        let f = &mut Encoder::new();
        let mut sync = Vec::new();
        f.set_framed(true, |b| sync.extend_from_slice(b));
        assert_eq!(sync, b"\x10F");
        assert_eq!(frame(f, Stream::Console, b"hi\n"), b"hi\n");
        assert_eq!(frame(f, Stream::Debug, b"$OK#9a"), b"\x10D$OK#9a");
        assert_eq!(frame(f, Stream::Debug, b"+"), b"+");
        assert_eq!(frame(f, Stream::Console, b"\x10x"), b"\x10C\x10\x10x");
        assert_eq!(frame(f, Stream::Console, b"a\x10\x10"), b"a\x10\x10\x10\x10");
        assert_eq!(frame(f, Stream::Console, b""), b"");
        assert_eq!(frame(f, Stream::Debug, b""), b"");
        let mut none = Vec::new();
        f.set_framed(false, |b| none.extend_from_slice(b));
        assert!(none.is_empty());
        assert_eq!(frame(f, Stream::Debug, b"\x10"), b"\x10");
    }

    #[test]
    fn an_escape_is_one_run() {
        // The doubled DLE must reach the transport in one piece: a stop
        // between two halves would pair it with the session's marker.
        let f = &mut Encoder::new();
        f.set_framed(true, |_| {});
        let mut runs = Vec::new();
        f.write(Stream::Console, b"a\x10b\x10", |r| runs.push(r.to_vec()));
        assert_eq!(
            runs,
            vec![b"a\x10".to_vec(), b"\x10".to_vec(), b"b\x10".to_vec(), b"\x10".to_vec()]
        );
    }

    #[test]
    fn switching_back_after_a_stop() {
        let f = &mut Encoder::new();
        let mut out = Vec::new();
        f.switch_to(Stream::Debug, |b| out.extend_from_slice(b));
        assert!(out.is_empty(), "raw mode has no markers");
        f.set_framed(true, |_| {});
        f.switch_to(Stream::Console, |b| out.extend_from_slice(b));
        assert!(out.is_empty(), "the console is selected already");
        frame(f, Stream::Debug, b"$OK#9a");
        f.switch_to(Stream::Console, |b| out.extend_from_slice(b));
        assert_eq!(out, b"\x10C");
        assert_eq!(frame(f, Stream::Console, b"x"), b"x");
    }

    #[test]
    fn resync_selects_console_again() {
        let f = &mut Encoder::new();
        f.set_framed(true, |_| {});
        frame(f, Stream::Debug, b"+");
        let mut sync = Vec::new();
        f.set_framed(true, |b| sync.extend_from_slice(b));
        assert_eq!(sync, b"\x10F");
        assert_eq!(frame(f, Stream::Console, b"c"), b"c");
    }

    #[test]
    fn every_byte_value_survives_framing() {
        let all: Vec<u8> = (0..=255).collect();
        let f = &mut Encoder::new();
        f.set_framed(true, |_| {});
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
