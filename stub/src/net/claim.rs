//! Which frames of a shared NIC are the stub's, and the lock-free queue
//! that keeps them until the stub runs.
//!
//! A shared NIC's receive path offers every frame to `net_claim` while the
//! unikernel runs, in any context (a driver's interrupt handler included).
//! [`classify`] decides with smoltcp's checked wire types (a truncated or
//! hostile frame is simply not the stub's), and [`ClaimQueue::push`] copies
//! the stub's frames into fixed slots without locks; the stub takes them
//! out with [`ClaimQueue::pop`] when it polls its interface.

use crate::nic::MAX_FRAME;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

/// What a received frame is to the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// TCP to the stub's port (and address, once it has one): the stub's
    /// alone.
    Stub,
    /// ARP: both the stub and the unikernel need it.
    Arp,
    /// A DHCP reply (UDP to port 68), wanted only while the stub asks for
    /// its address.
    Dhcp,
    /// Anything else: the unikernel's.
    Other,
}

/// The DHCP client's port.
const DHCP_CLIENT_PORT: u16 = 68;

/// Classifies `frame` (Ethernet header first) for a stub listening on TCP
/// `port` at `addr` (`None`: no address yet, any destination). Never
/// panics: every header is length-checked by smoltcp before it is read.
pub fn classify(frame: &[u8], port: u16, addr: Option<[u8; 4]>) -> Claim {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Claim::Other;
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => return Claim::Arp,
        EthernetProtocol::Ipv4 => {}
        _ => return Claim::Other,
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Claim::Other;
    };
    // A fragment carries no transport header the stub could check (and
    // the stub's peers send none: TCP segments fit the MTU).
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Claim::Other;
    }
    match ip.next_header() {
        IpProtocol::Tcp => {
            let to_us = addr.is_none_or(|a| ip.dst_addr().octets() == a);
            match TcpPacket::new_checked(ip.payload()) {
                Ok(tcp) if to_us && port != 0 && tcp.dst_port() == port => Claim::Stub,
                _ => Claim::Other,
            }
        }
        IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
            Ok(udp) if udp.dst_port() == DHCP_CLIENT_PORT => Claim::Dhcp,
            _ => Claim::Other,
        },
        _ => Claim::Other,
    }
}

const FREE: u8 = 0;
/// A producer copies a frame in.
const WRITING: u8 = 1;
/// A frame waits.
const READY: u8 = 2;
/// The consumer copies it out.
const READING: u8 = 3;

struct Slot {
    state: AtomicU8,
    /// Arrival order (wrapping), to hand frames out oldest first.
    ticket: AtomicU32,
    len: AtomicUsize,
    data: UnsafeCell<[u8; MAX_FRAME]>,
}

/// A fixed number of frame slots, filled by any number of producers in any
/// context (interrupts included) and emptied by the stub, without locks:
/// each slot's state is claimed with a compare-and-swap, so a slot's bytes
/// have one owner at a time. A frame that finds no free slot is dropped
/// (TCP sends it again).
pub struct ClaimQueue<const SLOTS: usize> {
    slots: [Slot; SLOTS],
    next_ticket: AtomicU32,
    /// Frames that wait (READY slots), for the lock-free pending check.
    ready: AtomicUsize,
    dropped: AtomicU32,
}

// SAFETY: a slot's `data` is written only by the producer that moved its
// state FREE -> WRITING and read only by the consumer that moved it
// READY -> READING (both compare-and-swaps, so exactly one party owns the
// bytes in each state); the Release stores that publish READY and FREE
// order the bytes before the next owner's Acquire.
unsafe impl<const SLOTS: usize> Sync for ClaimQueue<SLOTS> {}

impl<const SLOTS: usize> ClaimQueue<SLOTS> {
    /// An empty queue (for a `static`).
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const EMPTY: Slot = Slot {
            state: AtomicU8::new(FREE),
            ticket: AtomicU32::new(0),
            len: AtomicUsize::new(0),
            data: UnsafeCell::new([0; MAX_FRAME]),
        };
        ClaimQueue {
            slots: [EMPTY; SLOTS],
            next_ticket: AtomicU32::new(0),
            ready: AtomicUsize::new(0),
            dropped: AtomicU32::new(0),
        }
    }

    /// Whether a frame waits (lock-free, one load).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ready.load(Ordering::Acquire) == 0
    }

    /// Frames dropped because every slot was taken, or too long.
    #[cfg(test)]
    pub fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Copies `frame` into a free slot; `false` when none is free or the
    /// frame is longer than [`MAX_FRAME`] (it is dropped).
    pub fn push(&self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        for slot in &self.slots {
            if slot
                .state
                .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: this producer moved the slot to WRITING, so it owns
            // the bytes until it publishes READY (see the `Sync` impl).
            let data = unsafe { &mut *slot.data.get() };
            if let Some(dst) = data.get_mut(..frame.len()) {
                dst.copy_from_slice(frame);
            }
            slot.len.store(frame.len(), Ordering::Relaxed);
            slot.ticket.store(ticket, Ordering::Relaxed);
            slot.state.store(READY, Ordering::Release);
            self.ready.fetch_add(1, Ordering::Release);
            return true;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Moves the oldest waiting frame into `buf` and returns its length;
    /// `None` when none waits. A frame longer than `buf` is dropped (0).
    pub fn pop(&self, buf: &mut [u8]) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        // The oldest: the smallest ticket, in wrapping order (the tickets
        // alive at once are far closer than 2^31 apart).
        let ticket = |slot: &Slot| slot.ticket.load(Ordering::Relaxed);
        let oldest = self
            .slots
            .iter()
            .filter(|slot| slot.state.load(Ordering::Acquire) == READY)
            .min_by(|a, b| (ticket(a).wrapping_sub(ticket(b)) as i32).cmp(&0))?;
        if oldest
            .state
            .compare_exchange(READY, READING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Another consumer took it: the caller polls again.
            return Some(0);
        }
        self.ready.fetch_sub(1, Ordering::AcqRel);
        // SAFETY: this consumer moved the slot to READING, so it owns the
        // bytes until it publishes FREE (see the `Sync` impl).
        let data = unsafe { &*oldest.data.get() };
        let len = oldest.len.load(Ordering::Relaxed);
        let n = match (data.get(..len), buf.get_mut(..len)) {
            (Some(src), Some(dst)) => {
                dst.copy_from_slice(src);
                len
            }
            _ => 0,
        };
        oldest.state.store(FREE, Ordering::Release);
        Some(n)
    }
}

impl<const SLOTS: usize> Default for ClaimQueue<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}
