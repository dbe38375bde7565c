//! The Xen PV console as a transport: the `xencons_interface` ring
//! ([`ring`]) behind a small platform boundary, "where is the ring, how do I
//! notify the backend" ([`Platform`]).
//!
//! Two platforms:
//! - [`Xen`]: the real one. Xen is found by CPUID, the hypercall page set
//!   up through the MSR Xen names, the ring's frame and event channel read
//!   with `HVMOP_get_param`, the backend notified with `EVTCHNOP_send`.
//! - [`IvshmemModel`]: the model. The ring is the first page of an
//!   `ivshmem-plain` device's shared memory (PCI 1af4:1110, BAR2), laid out
//!   exactly as `struct xencons_interface`; a host process plays the backend
//!   (`ukdb_bridge::xenmodel`). Notifying is a no-op: the backend polls.
//!
//! [`XenConsole`] is the [`Transport`] over either: polled like the UART, no
//! interrupts; the console shares it with RSP exactly as on a serial line.
//!
//! The ring and the transport are pure and compiled in every build; the
//! discovery (CPUID, MSRs, hypercalls, PCI port I/O) only with `enabled`.

pub mod ring;

#[cfg(feature = "enabled")]
mod hw;
#[cfg(feature = "enabled")]
pub use hw::{identity_phys_to_virt, identity_virt_to_phys, IvshmemModel, Xen};
#[cfg(not(feature = "enabled"))]
mod off;
#[cfg(not(feature = "enabled"))]
pub use off::{identity_phys_to_virt, identity_virt_to_phys, IvshmemModel, Xen};

use crate::link::{Pending, Transport};
use ring::{Front, RawPage};

/// What differs between Xen and the model: how the backend is told that
/// the ring changed. (Where the ring is is the platform's constructor's
/// business.)
pub trait Platform: Send {
    /// Tells the backend that the ring changed (an event channel on Xen;
    /// nothing for a polling backend).
    fn notify(&mut self);
    /// A short name for messages.
    fn name(&self) -> &'static str;
}

/// Why no Xen console ring was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenError {
    /// CPUID has no "XenVMMXenVMM" leaf: not running on Xen.
    NotXen,
    /// Xen offers no hypercall page.
    NoHypercallPage,
    /// A hypercall failed (Xen's negative errno).
    Hypercall(i64),
    /// `HVM_PARAM_CONSOLE_PFN` is 0: the domain has no PV console.
    NoConsole,
    /// No ivshmem-plain device (PCI 1af4:1110) was found.
    NoIvshmem,
    /// The device's BAR2 is not a memory BAR with an address.
    BadBar,
    /// The ring's address is null or misaligned.
    BadAddress,
}

impl core::fmt::Display for XenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XenError::NotXen => f.write_str("not running on Xen"),
            XenError::NoHypercallPage => f.write_str("Xen offers no hypercall page"),
            XenError::Hypercall(e) => write!(f, "hypercall failed ({e})"),
            XenError::NoConsole => f.write_str("the domain has no PV console"),
            XenError::NoIvshmem => f.write_str("no ivshmem-plain device (1af4:1110)"),
            XenError::BadBar => f.write_str("ivshmem BAR2 has no memory address"),
            XenError::BadAddress => f.write_str("the console ring's address is unusable"),
        }
    }
}

/// The Xen console ring as the stub's transport.
#[derive(Debug)]
pub struct XenConsole<P> {
    front: Front<RawPage>,
    platform: P,
    dropped: u64,
}

impl<P: Platform> XenConsole<P> {
    /// The guest side of the ring in `page`, notifying through `platform`.
    pub fn from_parts(page: RawPage, platform: P) -> Self {
        XenConsole { front: Front::new(page), platform, dropped: 0 }
    }

    /// Output bytes dropped because the backend corrupted `out_cons`.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }
}

/// The lock-free input check: `in_prod != in_cons` of the page at `addr`.
fn ring_input_waiting(addr: usize) -> bool {
    // SAFETY: `Pending` contexts for this check are made only by
    // `XenConsole::pending`, from the address of its `RawPage`, which stays
    // mapped (`RawPage::new`'s contract) while the transport is installed
    // (forever).
    unsafe { RawPage::input_waiting(addr) }
}

impl<P: Platform> Transport for XenConsole<P> {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        // A corrupt `in` ring has been reset by `read_in`: nothing to read.
        let n = self.front.read_in(buf).unwrap_or(0);
        if n > 0 {
            // Room in `in`: a backend waiting for it may go on.
            self.platform.notify();
        }
        n
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.front.stage_out(rest) {
                Ok(n) => {
                    rest = rest.get(n..).unwrap_or_default();
                    if n == 0 {
                        // Full: publish what is staged and wait for the
                        // backend, as the UART waits for its FIFO.
                        if self.front.publish() {
                            self.platform.notify();
                        }
                        core::hint::spin_loop();
                    }
                }
                Err(_) => {
                    // The backend corrupted `out_cons`: nothing can be
                    // written safely until it puts it right.
                    self.dropped = self.dropped.saturating_add(rest.len() as u64);
                    return;
                }
            }
        }
    }

    fn flush(&mut self) {
        if self.front.publish() {
            self.platform.notify();
        }
    }

    fn carries_console(&self) -> bool {
        true
    }

    fn pending(&self) -> Pending {
        Pending::new(ring_input_waiting, self.front.page().addr())
    }

    fn name(&self) -> &'static str {
        self.platform.name()
    }
}

#[cfg(test)]
mod tests {
    use super::ring::{Back, XenconsInterface, OUT_SIZE};
    use super::*;

    #[derive(Default)]
    struct Counting(usize);
    impl Platform for Counting {
        fn notify(&mut self) {
            self.0 += 1;
        }
        fn name(&self) -> &'static str {
            "fake"
        }
    }

    fn console(page: &mut XenconsInterface) -> XenConsole<Counting> {
        let ptr: *mut XenconsInterface = page;
        // SAFETY: the tests keep `page` alive and untouched while the console
        // lives (they read it back only after dropping the console, or
        // through a second `RawPage`, as the other side of the ring).
        let raw = unsafe { RawPage::new(ptr.cast()) }.unwrap();
        XenConsole::from_parts(raw, Counting::default())
    }

    fn backend(page: &mut XenconsInterface) -> Back<RawPage> {
        let ptr: *mut XenconsInterface = page;
        // SAFETY: as in `console`: the backend's side of the same page.
        Back::new(unsafe { RawPage::new(ptr.cast()) }.unwrap())
    }

    #[test]
    fn writes_are_published_on_flush_with_one_notify() {
        let mut page = Box::new(XenconsInterface::zeroed());
        let mut con = console(&mut page);
        let mut back = backend(&mut page);
        con.write(b"$OK#9a");
        let mut buf = [0u8; 16];
        assert_eq!(back.read_out(&mut buf), Ok(0));
        con.flush();
        con.flush();
        assert_eq!(con.platform().0, 1);
        assert_eq!(back.read_out(&mut buf), Ok(6));
        assert_eq!(&buf[..6], b"$OK#9a");
        assert_eq!(con.name(), "fake");
        assert!(con.carries_console());
    }

    #[test]
    fn reads_and_pending() {
        let mut page = Box::new(XenconsInterface::zeroed());
        let mut con = console(&mut page);
        let mut back = backend(&mut page);
        let pending = con.pending();
        assert!(!pending.input_waiting());
        assert_eq!(back.write_in(b"\x03"), Ok(1));
        assert!(pending.input_waiting());
        let mut buf = [0u8; 4];
        assert_eq!(con.read(&mut buf), 1);
        assert_eq!(buf[0], 3);
        assert!(!pending.input_waiting());
        assert_eq!(con.read(&mut buf), 0);
    }

    #[test]
    fn a_write_larger_than_the_ring_waits_for_the_backend() {
        let mut page = Box::new(XenconsInterface::zeroed());
        let mut con = console(&mut page);
        let data: Vec<u8> = (0..3 * OUT_SIZE + 17).map(|i| (i * 7) as u8).collect();
        let ptr = std::ptr::addr_of_mut!(*page) as usize;
        let reader = std::thread::spawn(move || {
            // SAFETY: the page outlives this thread (joined below); this is
            // the backend's side only.
            let mut back = Back::new(unsafe { RawPage::new(ptr as *mut u8) }.unwrap());
            let mut got = Vec::new();
            let mut buf = [0u8; 333];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while got.len() < 3 * OUT_SIZE + 17 {
                assert!(std::time::Instant::now() < deadline, "backend starved");
                let n = back.read_out(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        con.write(&data);
        con.flush();
        let got = reader.join().unwrap();
        assert_eq!(got, data);
        assert!(con.platform().0 >= 1);
        assert_eq!(con.dropped(), 0);
    }

    #[test]
    fn a_corrupt_backend_costs_output_not_a_hang() {
        let mut page = Box::new(XenconsInterface::zeroed());
        page.out_cons = 0x4000;
        let mut con = console(&mut page);
        con.write(b"lost");
        con.flush();
        assert_eq!(con.dropped(), 4);
        assert_eq!(con.platform().0, 0);
    }

    #[test]
    fn a_corrupt_in_ring_reads_nothing_and_recovers() {
        let mut page = Box::new(XenconsInterface::zeroed());
        page.in_prod = 5000;
        let mut con = console(&mut page);
        let mut buf = [0u8; 8];
        assert_eq!(con.read(&mut buf), 0);
        let mut back = backend(&mut page);
        assert_eq!(back.write_in(b"ok"), Ok(2));
        assert_eq!(con.read(&mut buf), 2);
        assert_eq!(&buf[..2], b"ok");
    }
}
