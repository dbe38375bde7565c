//! The bytes of the shared-line protocol (`docs/wire-protocol.md`), the one
//! source of truth for the stub and the `ukdb bridge`.
//!
//! Every control sequence is `DLE` followed by one byte. The two directions
//! have their own meanings for the second byte; the arrays are the complete
//! sequences as written on the line. This module is compiled in every
//! configuration (with or without the `enabled` feature), so the host side
//! can depend on the stub crate for these constants without any stub code.

/// Data link escape (`0x10`): starts every control sequence and channel
/// switch; `DLE DLE` is one literal `0x10` in framed mode.
pub const DLE: u8 = 0x10;

// Stub -> host.

/// `DLE 'F'` (stub -> host): sync, the answer to the host's [`FRAME`]
/// request: framing is on and the console is selected.
pub const SYNC: u8 = b'F';
/// `DLE 'C'` (stub -> host, framed mode): the following bytes are console
/// text.
pub const CONSOLE: u8 = b'C';
/// `DLE 'D'` (stub -> host, framed mode): the following bytes are RSP for
/// the debugger.
pub const DEBUGGER: u8 = b'D';
/// `DLE 'H'` (stub -> host): hello. Written once by the stub at `init`, in
/// raw mode: a stub has just started (raw mode, no session). After a guest
/// reset the stub initialises again and says hello again.
pub const HELLO: u8 = b'H';
/// `DLE 'E'` (stub -> host): the session ended. The stub's answer to every
/// [`GONE`] it receives (raw or framed, session or not); it does not change
/// the selected stream. Every debugger byte written before it belongs to the
/// ended session.
pub const ENDED: u8 = b'E';

// Host -> stub (recognised by the stub only between RSP packets).

/// `DLE 'F'` (host -> stub): switch to framed mode; the stub answers with
/// [`SYNC`].
pub const FRAME: u8 = b'F';
/// `DLE 'R'` (host -> stub): switch back to raw mode.
pub const RAW: u8 = b'R';
/// `DLE 'X'` (host -> stub): the debugger is gone: end the session (the
/// stub answers with [`ENDED`]).
pub const GONE: u8 = b'X';

/// The host's request to switch to framed mode: `DLE 'F'`.
pub const REQUEST_FRAMING: [u8; 2] = [DLE, FRAME];
/// The host's request to switch back to raw mode: `DLE 'R'`.
pub const REQUEST_RAW: [u8; 2] = [DLE, RAW];
/// The host's notice that the debugger is gone: `DLE 'X'`.
pub const DEBUGGER_GONE: [u8; 2] = [DLE, GONE];
/// The stub's hello: `DLE 'H'`.
pub const HELLO_SEQ: [u8; 2] = [DLE, HELLO];
/// The stub's notice that a session ended: `DLE 'E'`.
pub const ENDED_SEQ: [u8; 2] = [DLE, ENDED];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_dle_and_their_byte() {
        assert_eq!(REQUEST_FRAMING, *b"\x10F");
        assert_eq!(REQUEST_RAW, *b"\x10R");
        assert_eq!(DEBUGGER_GONE, *b"\x10X");
        assert_eq!(HELLO_SEQ, *b"\x10H");
        assert_eq!(ENDED_SEQ, *b"\x10E");
    }

    #[test]
    fn stub_to_host_bytes_are_distinct_and_not_dle() {
        let bytes = [SYNC, CONSOLE, DEBUGGER, HELLO, ENDED];
        for (i, a) in bytes.iter().enumerate() {
            assert_ne!(*a, DLE);
            for b in &bytes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
