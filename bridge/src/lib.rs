//! `ukdb-bridge`: the host side of ukdb's shared serial line.
//!
//! A unikernel usually has one serial port. The ukdb stub puts the console and
//! the GDB Remote Serial Protocol (RSP) on it at once; in *framed mode* (see
//! `docs/wire-protocol.md`) every byte the stub writes is tagged with the
//! channel it belongs to. The `ukdb bridge` command connects to that line,
//! switches the stub to framed mode, prints console text on stdout and serves
//! the debugger half on a local port that gdb or lldb connects to.
//!
//! The protocol logic is sans-I/O and lives in this library:
//!
//! * [`demux`] splits the stub's framed stream into console and debugger bytes;
//! * [`rsp`] follows RSP packet framing so that the bridge only ever forwards
//!   whole packets to the stub;
//! * [`escape`] renders bytes for `--trace` logs;
//! * [`addr`] parses the `--target` and `--listen` addresses.
//!
//! The I/O (sockets, pty, signals) lives in the `ukdb` binary.

pub mod addr;
pub mod demux;
pub mod escape;
pub mod rsp;

/// Bytes of the wire protocol shared by the stub and the bridge.
pub mod wire {
    /// Data link escape: introduces every control sequence and channel switch.
    pub const DLE: u8 = 0x10;
    /// `DLE 'F'`: host -> stub "switch to framed mode"; stub -> host "framing is on".
    pub const SYNC: u8 = b'F';
    /// `DLE 'C'` (stub -> host): the following bytes are console text.
    pub const CONSOLE: u8 = b'C';
    /// `DLE 'D'` (stub -> host): the following bytes are RSP for the debugger.
    pub const DEBUGGER: u8 = b'D';
    /// `DLE 'R'` (host -> stub): switch back to raw mode.
    pub const RAW: u8 = b'R';
    /// `DLE 'X'` (host -> stub): the debugger is gone; end the session and resume.
    pub const DETACH: u8 = b'X';

    /// The host's request to switch to framed mode.
    pub const REQUEST_FRAMING: [u8; 2] = [DLE, SYNC];
    /// The host's request to switch back to raw mode.
    pub const REQUEST_RAW: [u8; 2] = [DLE, RAW];
    /// The host's notice that the debugger is gone.
    pub const DEBUGGER_GONE: [u8; 2] = [DLE, DETACH];
}
