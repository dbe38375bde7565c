//! `ukdb-stub`: a GDB Remote Serial Protocol stub for x86_64 unikernels.
//!
//! The unikernel calls a handful of functions, in every build:
//!
//! | call | where | what the stub does |
//! |------|-------|--------------------|
//! | [`init`] | once, early in boot | takes the transport, reads `ukdb.*` options from the command line |
//! | [`handle_trap`] | the exception handler, for every vector 0-31 | breakpoints, single-step, watchpoints, faults: stops and serves the debugger; returns `true` when it handled the trap |
//! | [`poll`] | the idle loop or a timer | notices a debugger's Ctrl-C or a new debugger and stops there |
//! | [`wait_for_debugger`] | before the app starts | with `ukdb.wait`, stops until a debugger attaches and continues |
//! | [`on_panic`] | the panic handler | stops with the panic message and the panic site on the stack |
//! | [`console_write`] | the console | on a line shared with the debugger, writes console text so it never splits a packet |
//!
//! Three builds, one API:
//! - `enabled`: the full stub (a debugger session over serial, or the
//!   network with `net`), crash dumps included.
//! - `dump` without `enabled`: crash dumps only, for production images
//!   (`ukdb.crash=dump` streams a core on a panic or fatal exception; no
//!   session, no breakpoints, no memory writes, no gdbstub).
//! - neither: each of these is an inlined no-op ([`handle_trap`] returns
//!   `false`, [`console_write`] returns `false`), so the production image
//!   needs no `cfg` and contains no stub code.
//!
//! See `ARCHITECTURE.md` at the repository root for the design and
//! `docs/debugging.md` for integrating the stub into a unikernel.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

mod frame;
pub use frame::{TrapFrame, SOFT_ENTRY_VECTOR, TRAP_FRAME_SIZE};

mod link;
pub use link::{LinkEvent, Pending, Transport};

mod nic;
pub use nic::{Nic, MAX_FRAME};

pub mod wire;

pub mod xen;
pub use xen::{Platform, XenConsole, XenError};

pub mod checked;
pub mod dumpwire;

#[cfg(feature = "dump")]
mod arch;
#[cfg(feature = "dump")]
mod crash;
#[cfg(feature = "dump")]
mod entry;
#[cfg(any(feature = "enabled", feature = "dump"))]
mod livemem;
#[cfg(feature = "dump")]
mod transport;

#[cfg(feature = "enabled")]
mod imp;
#[cfg(feature = "enabled")]
pub use config::{BadOption, Config, Crash, Key, NetMode, Then, TrapInsn, XenRing};
#[cfg(feature = "enabled")]
pub use imp::api::*;
#[cfg(feature = "dump")]
pub use info::{set_build_id, set_ram};

#[cfg(all(feature = "dump", not(feature = "enabled")))]
mod dumponly;
#[cfg(all(feature = "dump", not(feature = "enabled")))]
pub use dumponly::*;

#[cfg(not(feature = "dump"))]
mod noop;
#[cfg(not(feature = "dump"))]
pub use noop::*;

pub mod vectors;

/// `true` when the stub is compiled in.
pub const ENABLED: bool = cfg!(feature = "enabled");
/// `true` when crash dumps are compiled in (`dump`, or the full stub).
pub const DUMP: bool = cfg!(feature = "dump");

// The parts that are pure logic are compiled for host unit tests in every
// configuration, so `cargo test -p ukdb-stub` exercises them without hardware.
#[cfg(any(test, feature = "enabled"))]
pub(crate) mod auth;
#[cfg(any(test, feature = "dump", feature = "fuzzing"))]
pub(crate) mod config;
#[cfg(any(test, feature = "dump", feature = "fuzzing"))]
pub(crate) mod coremap;
#[cfg(any(test, feature = "enabled"))]
pub(crate) mod debugregs;
#[cfg(any(test, feature = "enabled", feature = "fuzzing"))]
pub(crate) mod framing;
#[cfg(feature = "dump")]
// The dump-only build uses part of it.
#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
pub(crate) mod global;
#[cfg(any(test, feature = "enabled"))]
pub(crate) mod guard;
#[cfg(any(test, feature = "dump"))]
pub(crate) mod info;
#[cfg(any(test, feature = "enabled", feature = "fuzzing"))]
pub(crate) mod memreply;
#[cfg(any(test, feature = "net"))]
pub(crate) mod net;
#[cfg(any(test, feature = "net", feature = "fuzzing"))]
pub(crate) mod nicaddr;
#[cfg(any(test, feature = "dump", feature = "fuzzing"))]
// The dump-only build uses part of it.
#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
pub(crate) mod paging;
#[cfg(any(test, feature = "enabled"))]
pub(crate) mod ring;
#[cfg(any(test, feature = "enabled", feature = "fuzzing"))]
pub(crate) mod rx;
#[cfg(any(test, feature = "enabled"))]
pub(crate) mod swbreak;
#[cfg(any(test, feature = "dump"))]
pub(crate) mod uart;
#[cfg(any(test, feature = "enabled", feature = "fuzzing"))]
pub(crate) mod ukquery;

// The register set gdbstub sees, for the fuzz targets' host-only target
// (the full stub compiles it as `imp::target::regs`).
#[cfg(feature = "fuzzing")]
#[path = "imp/target/regs.rs"]
mod fuzzing_regs;

// The fuzz targets' host-only harness (`fake_engine`) allocates.
#[cfg(all(feature = "fuzzing", not(test)))]
extern crate std;

// gdbstub over a fake target: the harness of the `Rx` proof tests and the
// `engine` fuzz target.
#[cfg(any(all(test, feature = "enabled"), feature = "fuzzing"))]
pub(crate) mod fake_engine;

/// The stub's pure parsers, for the cargo-fuzz targets in `fuzz/` only
/// (feature `fuzzing`): not an API, and absent from every other build.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// The host's packet receiver ([`rx::Rx`]).
    pub mod rx {
        pub use crate::rx::*;
    }
    /// The output framing encoder.
    pub mod framing {
        pub use crate::framing::*;
    }
    /// `ukdb.*` command-line options.
    pub mod config {
        pub use crate::config::*;
    }
    /// The NIC address and virtio-mmio device parsers.
    pub mod nicaddr {
        pub use crate::nicaddr::*;
    }
    /// The page-table walks.
    pub mod paging {
        pub use crate::paging::*;
    }
    /// The crash dump's core map.
    pub mod coremap {
        pub use crate::coremap::*;
    }
    /// `m`/`x` requests and their replies.
    pub mod memreply {
        pub use crate::memreply::*;
    }
    /// The `qUkdb` queries.
    pub mod ukquery {
        pub use crate::ukquery::*;
    }
    /// The register set and target description gdbstub sees.
    pub mod regs {
        pub use crate::fuzzing_regs::*;
    }
    /// gdbstub over a fake target.
    pub mod engine {
        pub use crate::fake_engine::*;
    }
}
