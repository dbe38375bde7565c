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
//! - [`stack`]: the stub's own stack. The transports the stub brings
//!   (`crate::transport`), every privileged instruction (`crate::arch`)
//!   and the soft entry (`crate::entry`) are shared with the dump-only
//!   build.

pub(crate) mod api;
pub(crate) use crate::arch;
mod line;
#[cfg(feature = "net")]
mod net;
mod net_api;
pub(crate) mod query;
pub(crate) mod session;
pub(crate) mod stack;
pub(crate) mod target;
use crate::transport;
#[cfg(feature = "net")]
pub(crate) mod virtio;
