//! The stub itself (feature `enabled`).
//!
//! - [`api`]: the public entry points, and the assembly that lets the stub
//!   stop the unikernel from ordinary code (poll, wait, panic).
//! - [`session`]: the debug session: drives gdbstub's state machine with the
//!   world stopped, handles new and vanished debuggers.
//! - [`target`]: gdbstub's `Target`: registers from the trap frame, checked
//!   memory, breakpoints, resume, monitor commands (one file per extension).
//! - [`line`]: the installed transport and the console sharing it, without
//!   locks a trap could need.
//! - [`transport`]: the transports the stub brings (16550) and where an
//!   installed transport lives; [`stack`]: the stub's own stack;
//!   [`arch`]: every privileged instruction.

pub(crate) mod api;
mod arch;
mod line;
#[cfg(feature = "net")]
mod net;
mod net_api;
pub(crate) mod query;
pub(crate) mod session;
pub(crate) mod stack;
pub(crate) mod target;
mod transport;
#[cfg(feature = "net")]
pub(crate) mod virtio;
