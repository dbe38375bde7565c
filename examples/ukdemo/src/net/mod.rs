//! The example's network: a virtio-net device (PCI on q35, virtio-mmio on
//! microvm and Firecracker) driven with `virtio-drivers`, the app's own
//! smoltcp interface on it with a tiny HTTP server ([`stack`]), and the
//! same device lent to the debug stub (a *shared NIC*, docs/debugging.md).
//!
//! Sharing: the device and a small queue of frames sit behind one try-lock
//! ([`Shared`]). The app takes it for each frame it receives or sends, from
//! its main loop only (never from an interrupt). The stub uses the device
//! through [`SharedNic`] (`ukdb_stub::Nic`) only while the world is stopped;
//! [`SharedNic::busy`] tells it when the app holds the lock, so it does not
//! stop there. The app offers every frame it receives to
//! `ukdb_stub::net_claim` (the stub keeps its own); frames the stub receives
//! while stopped that are not its own come back through
//! [`ukdb_stub::Nic::not_mine`] into the queue, which the app reads first.

mod hal;
mod inorder;
mod mmio;
mod pci;
pub mod stack;
mod virtio;

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};
use ukdb_stub::{Nic, Pending, MAX_FRAME};
use virtio::NetDevice;

/// Where a virtio-net device sits (as `ukdb.nic=` names one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A PCI function.
    Pci {
        /// Bus number.
        bus: u8,
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// A virtio-mmio window at this physical address.
    Mmio(u64),
}

impl Location {
    /// `pci:BB:DD.F` (hexadecimal bus and device) or `mmio:ADDR`.
    pub fn parse(text: &str) -> Option<Location> {
        if let Some(pci) = text.strip_prefix("pci:") {
            let (bus, rest) = pci.split_once(':')?;
            let (device, function) = rest.split_once('.')?;
            let device = u8::from_str_radix(device, 16).ok().filter(|&d| d < 32)?;
            let function = function.parse().ok().filter(|&f: &u8| f < 8)?;
            return Some(Location::Pci {
                bus: u8::from_str_radix(bus, 16).ok()?,
                device,
                function,
            });
        }
        let addr = text.strip_prefix("mmio:")?;
        let addr = match addr.strip_prefix("0x").or_else(|| addr.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => addr.parse().ok()?,
        };
        Some(Location::Mmio(addr))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Pci { bus, device, function } => {
                write!(f, "pci {bus:02x}:{device:02x}.{function}")
            }
            Location::Mmio(addr) => write!(f, "mmio {addr:#x}"),
        }
    }
}

/// Frames the stub handed back while the world was stopped, for the app.
const QUEUED: usize = 16;

struct FrameQueue {
    frames: [[u8; MAX_FRAME]; QUEUED],
    lens: [usize; QUEUED],
    head: usize,
    len: usize,
}

impl FrameQueue {
    const fn new() -> Self {
        FrameQueue { frames: [[0; MAX_FRAME]; QUEUED], lens: [0; QUEUED], head: 0, len: 0 }
    }

    /// Queues a copy of `frame`; dropped when the queue is full (TCP
    /// retransmits) or the frame too long.
    fn push(&mut self, frame: &[u8]) {
        if self.len >= QUEUED {
            return;
        }
        let at = (self.head + self.len) % QUEUED;
        let (Some(dst), Some(len)) = (self.frames.get_mut(at), self.lens.get_mut(at)) else {
            return;
        };
        let Some(dst) = dst.get_mut(..frame.len()) else { return };
        dst.copy_from_slice(frame);
        *len = frame.len();
        self.len += 1;
    }

    /// Moves the oldest frame into `out`; its length, 0 when none.
    fn pop(&mut self, out: &mut [u8]) -> usize {
        if self.len == 0 {
            return 0;
        }
        let at = self.head;
        self.head = (self.head + 1) % QUEUED;
        self.len -= 1;
        let len = self.lens.get(at).copied().unwrap_or(0);
        let frame = self.frames.get(at).and_then(|f| f.get(..len));
        match (frame, out.get_mut(..len)) {
            (Some(src), Some(dst)) => {
                dst.copy_from_slice(src);
                len
            }
            _ => 0,
        }
    }
}

/// The device and the frame queue, behind a try-lock.
pub struct Shared {
    locked: AtomicBool,
    device: UnsafeCell<Option<NetDevice>>,
    queue: &'static Queue,
}

/// The frame queue, in a static of its own: all zeros, so it takes no room
/// in the image (`.bss`).
struct Queue(UnsafeCell<FrameQueue>);

// SAFETY: `device` and `queue` are reached only through `Guard`, which
// exists only while `locked` was taken by it (a compare-exchange).
unsafe impl Sync for Shared {}
// SAFETY: reached only through `SHARED` (see above).
unsafe impl Sync for Queue {}

static QUEUE: Queue = Queue(UnsafeCell::new(FrameQueue::new()));
static SHARED: Shared =
    Shared { locked: AtomicBool::new(false), device: UnsafeCell::new(None), queue: &QUEUE };

/// Holds [`SHARED`]'s lock.
struct Guard {
    shared: &'static Shared,
}

impl Shared {
    fn try_lock(&'static self) -> Option<Guard> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Guard { shared: self })
    }
}

impl Guard {
    /// The device and the queue.
    fn parts(&mut self) -> (Option<&mut NetDevice>, &mut FrameQueue) {
        // SAFETY: this guard holds the lock (see `Shared`'s Sync), and
        // `&mut self` keeps the two borrows unique for their lifetime.
        unsafe { ((*self.shared.device.get()).as_mut(), &mut *self.shared.queue.0.get()) }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.locked.store(false, Ordering::Release);
    }
}

/// The station address of the device ([`probe`] sets it).
static mut MAC: [u8; 6] = [0; 6];

/// The stub's handle on the shared device.
pub struct SharedNic;

impl Nic for SharedNic {
    fn mac(&self) -> [u8; 6] {
        // SAFETY: written once in `probe`, before the handle exists.
        unsafe { MAC }
    }

    fn receive(&mut self, buf: &mut [u8]) -> usize {
        let Some(mut guard) = SHARED.try_lock() else { return 0 };
        match guard.parts() {
            (Some(device), _) => device.receive(buf),
            (None, _) => 0,
        }
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        let Some(mut guard) = SHARED.try_lock() else { return false };
        match guard.parts() {
            (Some(device), _) => device.transmit(frame),
            (None, _) => false,
        }
    }

    fn not_mine(&mut self, frame: &[u8]) {
        if let Some(mut guard) = SHARED.try_lock() {
            guard.parts().1.push(frame);
        }
    }

    fn pending(&self) -> Pending {
        Pending::never()
    }

    fn busy(&self) -> bool {
        SHARED.locked.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }
}

/// The app's receive path: the next frame for the app's stack, from the
/// queue the stub filled or else from the device, skipping frames the stub
/// claims. Its length, 0 when none waits.
fn receive_for_app(buf: &mut [u8]) -> usize {
    let Some(mut guard) = SHARED.try_lock() else { return 0 };
    let (device, queue) = guard.parts();
    // Already offered to the stub, which handed them back.
    let n = queue.pop(buf);
    if n > 0 {
        return n;
    }
    let Some(device) = device else { return 0 };
    loop {
        let n = device.receive(buf);
        let Some(frame) = buf.get(..n).filter(|_| n > 0) else { return 0 };
        if !ukdb_stub::net_claim(frame) {
            return n;
        }
    }
}

/// The app's transmit path.
fn transmit_for_app(frame: &[u8]) -> bool {
    let Some(mut guard) = SHARED.try_lock() else { return false };
    match guard.parts() {
        (Some(device), _) => device.transmit(frame),
        (None, _) => false,
    }
}

static HANDLE_TAKEN: AtomicBool = AtomicBool::new(false);
static mut HANDLE: SharedNic = SharedNic;

/// Finds and starts the app's virtio-net device: the first on PCI, else
/// the first `virtio_mmio.device=` of `cmdline`, other than the one
/// `ukdb.nic=` gives to the stub. Prints it; sets up the app's network
/// stack. Returns the handle to lend to the stub (once), or `None` when
/// there is no device (then nothing is printed).
///
/// Call once during boot, after `paging::init` and `time::init`, with
/// interrupts off.
pub fn probe(cmdline: &str) -> Option<&'static mut SharedNic> {
    let skip = crate::pvh::option("ukdb.nic").and_then(Location::parse);
    let (transport, at) = pci::find(skip).or_else(|| mmio::find(cmdline, skip))?;
    let device = match NetDevice::start(transport) {
        Ok(device) => device,
        Err(why) => {
            crate::println!("ukdemo: net: virtio-net ({}) not started: {}", at, why);
            return None;
        }
    };
    let mac = device.mac();
    crate::println!(
        "ukdemo: net: virtio-net ({}) mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        at,
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    let guard = SHARED.try_lock()?;
    // SAFETY: the lock is held (no other user), and `MAC` is written here
    // once, before any reader (the handle does not exist yet).
    unsafe {
        *guard.shared.device.get() = Some(device);
        MAC = mac;
    }
    drop(guard);
    stack::start(mac);
    if HANDLE_TAKEN.swap(true, Ordering::Acquire) {
        return None;
    }
    // SAFETY: handed out once (the flag above), so the reference is unique.
    Some(unsafe { &mut *addr_of_mut!(HANDLE) })
}

/// Maps the registers of the device `ukdb.nic=` gives to the stub (which
/// cannot change the page tables itself). Call it after [`probe`] (which
/// may unmap pages of devices it does not take) and before the stub
/// starts. `false` when the option names no device that could be mapped.
pub fn map_for_stub(cmdline: &str) -> bool {
    match crate::pvh::option("ukdb.nic").and_then(Location::parse) {
        Some(Location::Pci { bus, device, function }) => pci::map_for_stub(bus, device, function),
        Some(Location::Mmio(addr)) => mmio::map_for_stub(cmdline, addr),
        None => false,
    }
}

/// Whether a device was found and started.
pub fn up() -> bool {
    HANDLE_TAKEN.load(Ordering::Relaxed)
}

/// Runs the app's network stack once: frames in and out, DHCP, the HTTP
/// server. Call it from the main loop (not from an interrupt). Does
/// nothing without a device.
#[inline(never)]
pub fn poll() {
    stack::poll();
}
