//! The network boundary: raw Ethernet frame I/O that the stub's TCP/IP
//! stack (smoltcp, feature `net`) runs on. Like [`crate::Transport`], this
//! module is only definitions and is compiled in every configuration, so a
//! unikernel's own NIC code needs no `cfg` for production builds.
//!
//! Two ways a unikernel gives the stub a NIC (docs/debugging.md):
//! - **dedicated**: the stub drives a virtio-net device alone
//!   ([`crate::init_net_dedicated`]); nothing else to integrate;
//! - **shared**: the unikernel keeps its driver and network stack and lends
//!   the stub frame I/O through this trait ([`crate::init_net`]). While the
//!   unikernel runs, its receive path offers every frame to
//!   [`crate::net_claim`], which keeps those for the stub (TCP to the stub's
//!   port; a copy of ARP); while the world is stopped the stub calls
//!   [`Nic::receive`] and [`Nic::transmit`] itself and hands frames that are
//!   not its own back through [`Nic::not_mine`].

use crate::link::Pending;

/// The largest Ethernet frame the stub sends or accepts (no FCS, no VLAN
/// tag): 1500 bytes of payload and a 14-byte header.
pub const MAX_FRAME: usize = 1514;

/// Raw Ethernet frame I/O for the stub.
///
/// # Implementation notes
/// - Every method is called with the world stopped (interrupts off, one
///   CPU), except [`Nic::pending`]'s check, which is made once at init and
///   called lock-free from [`crate::poll`].
/// - Nothing here may block for long or panic on what arrives.
pub trait Nic: Send {
    /// The station (MAC) address.
    fn mac(&self) -> [u8; 6];

    /// Moves one received frame (Ethernet header first, no virtio header,
    /// no FCS) into `buf` and returns its length; 0 when none waits. A
    /// frame longer than `buf` is dropped.
    fn receive(&mut self, buf: &mut [u8]) -> usize;

    /// Sends one frame (Ethernet header first). May wait briefly for room;
    /// `false` when it could not be sent (the stub's TCP retransmits).
    fn transmit(&mut self, frame: &[u8]) -> bool;

    /// A frame [`Nic::receive`] returned that is not the stub's (shared NIC
    /// only: the unikernel queues it for its own stack). The default drops
    /// it; TCP recovers by retransmission.
    fn not_mine(&mut self, frame: &[u8]) {
        let _ = frame;
    }

    /// The lock-free check for received frames, for [`crate::poll`]. A
    /// shared NIC returns [`Pending::never`]: its frames reach the stub
    /// through [`crate::net_claim`], which the stub checks itself.
    fn pending(&self) -> Pending;

    /// The unikernel is inside its own driver for this device right now (a
    /// shared NIC's lock is held): the stub cannot use the device, so it
    /// does not stop there (a breakpoint in the driver is passed over,
    /// like one in the stub's own I/O).
    fn busy(&self) -> bool {
        false
    }

    /// A short name for messages ("virtio-net").
    fn name(&self) -> &'static str;
}
