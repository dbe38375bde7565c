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
//! * [`pace`] holds a debugger's requests while one is outstanding at the
//!   stub, as gdb itself speaks;
//! * [`escape`] renders bytes for `--trace` logs;
//! * [`core`] holds core files: the snapshot model, the ELF writer and the
//!   crash stream decoder;
//! * [`addr`] parses the `--target` and `--listen` addresses;
//! * [`ready`] finds the network stub's announcement in console text;
//! * [`xenmodel`] plays the Xen console backend on a shared page (the model).
//!
//! The I/O (sockets, pty, signals) lives in the `ukdb` binary.

pub mod addr;
pub mod core;
pub mod demux;
pub mod escape;
pub mod pace;
pub mod ready;
pub mod reliable;
pub mod rsp;
pub mod xenmodel;

/// Bytes of the wire protocol shared by the stub and the bridge: the stub
/// crate's [`ukdb_stub::wire`], the one source of truth.
pub use ukdb_stub::wire;
