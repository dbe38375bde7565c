//! The network transport's logic (pure, host-tested): which frames of a
//! shared NIC are the stub's ([`claim`]), smoltcp's device over the
//! stub's [`crate::Nic`] ([`device`]), and RSP over TCP ([`transport`]).
//! The statics, the clock and the entry points are in `imp/net*.rs`.

// Without `net` (host tests only) the parts used by `imp/net.rs` alone are
// unused.
#![cfg_attr(not(feature = "net"), allow(dead_code))]

pub mod claim;
pub mod device;
pub mod transport;

#[cfg(test)]
mod tests;

/// Frames a shared NIC's receive path can claim before the stub runs.
pub const CLAIM_SLOTS: usize = 32;
