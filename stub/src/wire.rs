//! The bytes of the shared-line protocol (see `docs/wire-protocol.md`),
//! the one definition used by the stub and by the `ukdb` bridge. Compiled in
//! every configuration.

/// Data link escape: starts every control sequence and stream switch.
pub const DLE: u8 = 0x10;

/// Stub -> host: framing is on (answer to [`FRAME`]); console selected.
pub const SYNC: u8 = b'F';
/// Stub -> host: the following bytes are console text.
pub const CONSOLE: u8 = b'C';
/// Stub -> host: the following bytes are RSP for the debugger.
pub const DEBUGGER: u8 = b'D';
/// Stub -> host: a stub has just started (raw mode, no session).
pub const HELLO: u8 = b'H';
/// Stub -> host: the session ended (answer to every [`GONE`]).
pub const ENDED: u8 = b'E';

/// Host -> stub: switch to framed mode.
pub const FRAME: u8 = b'F';
/// Host -> stub: switch back to raw mode.
pub const RAW: u8 = b'R';
/// Host -> stub: the debugger is gone; end its session.
pub const GONE: u8 = b'X';

/// The host's request for framing.
pub const REQUEST_FRAMING: [u8; 2] = [DLE, FRAME];
/// The host's request for raw mode.
pub const REQUEST_RAW: [u8; 2] = [DLE, RAW];
/// The host's notice that the debugger is gone.
pub const DEBUGGER_GONE: [u8; 2] = [DLE, GONE];
/// The stub's hello.
pub const HELLO_SEQ: [u8; 2] = [DLE, HELLO];
/// The stub's answer to [`DEBUGGER_GONE`].
pub const ENDED_SEQ: [u8; 2] = [DLE, ENDED];
