//! smoltcp's `Device` over the stub's [`Nic`]: frames from the claim queue
//! first (a shared NIC's frames claimed while the unikernel ran), then from
//! [`Nic::receive`]; on a shared NIC the frames that are not the stub's go
//! back to the unikernel with [`Nic::not_mine`] (ARP goes to both).

use super::claim::{classify, Claim, ClaimQueue};
use crate::nic::{Nic, MAX_FRAME};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// How many frames one `receive` looks at before it says "nothing" (on a
/// shared NIC busy with the unikernel's traffic, the stub still gets to
/// send).
const RECEIVE_BUDGET: usize = 64;

/// The frames the stub takes from a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The stub drives the NIC alone: every frame is its own.
    Dedicated,
    /// The unikernel shares its NIC: TCP to the stub's port and ARP only.
    Shared,
}

/// The stub's NIC as smoltcp sees it.
pub struct NicDevice<'a, const SLOTS: usize> {
    nic: &'a mut dyn Nic,
    claims: &'a ClaimQueue<SLOTS>,
    share: Share,
    /// The stub's TCP port and address, for telling its frames apart.
    pub port: u16,
    /// The stub's address, once it has one.
    pub addr: Option<[u8; 4]>,
    /// DHCP replies are the stub's too (while it asks for an address).
    pub dhcp: bool,
    rx: [u8; MAX_FRAME],
    tx: [u8; MAX_FRAME],
}

impl<'a, const SLOTS: usize> NicDevice<'a, SLOTS> {
    /// A device over `nic`, with the frames claimed for it in `claims`.
    pub fn new(nic: &'a mut dyn Nic, claims: &'a ClaimQueue<SLOTS>, share: Share) -> Self {
        NicDevice {
            nic,
            claims,
            share,
            port: 0,
            addr: None,
            dhcp: false,
            rx: [0; MAX_FRAME],
            tx: [0; MAX_FRAME],
        }
    }

    /// The NIC.
    pub fn nic(&self) -> &dyn Nic {
        &*self.nic
    }

    /// The next frame for the stub, in `self.rx`: its length.
    fn next_frame(&mut self) -> Option<usize> {
        for _ in 0..RECEIVE_BUDGET {
            if let Some(n) = self.claims.pop(&mut self.rx) {
                if n > 0 {
                    return Some(n);
                }
                continue;
            }
            let n = self.nic.receive(&mut self.rx);
            if n == 0 {
                return None;
            }
            let Some(frame) = self.rx.get(..n) else {
                // A NIC that claims more than the buffer: nothing usable.
                continue;
            };
            if self.share == Share::Dedicated {
                return Some(n);
            }
            match classify(frame, self.port, self.addr) {
                Claim::Stub => return Some(n),
                Claim::Dhcp if self.dhcp => return Some(n),
                Claim::Arp => {
                    self.nic.not_mine(frame);
                    return Some(n);
                }
                Claim::Dhcp | Claim::Other => self.nic.not_mine(frame),
            }
        }
        None
    }
}

/// A received frame, lent to smoltcp.
pub struct Rx<'b> {
    frame: &'b [u8],
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send.
pub struct Tx<'b> {
    nic: &'b mut dyn Nic,
    buf: &'b mut [u8; MAX_FRAME],
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU below; a longer request
        // gets a scratch slice of the right length that is not sent.
        match self.buf.get_mut(..len) {
            Some(frame) => {
                let r = f(frame);
                self.nic.transmit(frame);
                r
            }
            None => {
                let mut scratch = [0u8; 0];
                f(&mut scratch)
            }
        }
    }
}

impl<const SLOTS: usize> Device for NicDevice<'_, SLOTS> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let n = self.next_frame()?;
        let frame = self.rx.get(..n)?;
        Some((Rx { frame }, Tx { nic: &mut *self.nic, buf: &mut self.tx }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Tx<'_>> {
        Some(Tx { nic: &mut *self.nic, buf: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = None;
        caps
    }
}
