//! The dedicated debug NIC: a virtio-net device the stub drives alone, with
//! virtio-drivers' `VirtIONetRaw` (no heap) over PCI or MMIO.
//!
//! - [`dedicated`] finds the device (`ukdb.nic=`, else the first virtio-net
//!   function on PCI bus 0, else the first `virtio_mmio.device=` entry that
//!   is one), checks what the device reports before virtio-drivers trusts it
//!   (`pci::check_caps`), and starts it with static DMA memory
//!   (`hal`: queues and frame buffers in one static region that the stub's
//!   own page walk translated).
//! - [`VirtioNic`] is the [`Nic`]: frames are copied in and out of static
//!   slots with the world stopped; [`RX_SLOTS`] receive buffers stay queued.
//! - Its [`Nic::pending`] check reads the receive queue's used-ring index
//!   from DMA memory and compares it with the count of frames taken, without
//!   touching the driver object (see [`frames_waiting`]).
//!
//! Nothing the device reports can make it panic: a used-ring entry that
//! names no buffer the stub queued marks the NIC broken (it then neither
//! receives nor sends, and `pending` stays quiet), lengths are clamped, and
//! the PCI capabilities are validated before use.

mod hal;
mod inorder;
mod mmio;
mod pci;

use crate::link::Pending;
use crate::nic::{Nic, MAX_FRAME};
use crate::nicaddr::{self, BadNic, NicAddr};
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use hal::{StubHal, QUEUE, RX_SLOTS, SLOT, TX_SLOTS};
use inorder::InOrder;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::DeviceFunction;
use virtio_drivers::transport::pci::VirtioPciError;
use virtio_drivers::transport::SomeTransport;

const _: () = assert!(QUEUE == 64, "VirtioError::QueueTooSmall's message names the size");

/// Reclaim rounds a transmit waits for a free buffer before it gives up
/// (the stub's TCP retransmits).
const TX_SPINS: usize = 200_000;

/// Why the dedicated NIC did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// [`dedicated`] ran before.
    Twice,
    /// A bad `ukdb.nic=` value.
    BadNic(BadNic),
    /// No virtio-net device on PCI bus 0 or on the command line.
    NoDevice,
    /// Nothing answers where `ukdb.nic=` points.
    Absent,
    /// The device there is not virtio-net (or not one virtio-drivers knows).
    NotVirtioNet,
    /// A PCI device without the virtio 1.x capabilities.
    NotModern,
    /// The device's registers are not mapped at `pa + phys_offset`.
    RegistersNotMapped,
    /// The PCI capability list is malformed.
    PciCaps(pci::CapError),
    /// The registers are not in an assigned memory BAR.
    PciBar,
    /// The stub's DMA region is not mapped writable.
    DmaNotMapped,
    /// The device's virtqueues are smaller than [`QUEUE`].
    QueueTooSmall,
    /// The DMA pool could not give physically contiguous pages.
    DmaPool,
    /// The device has no configuration space (no MAC address).
    NoConfig,
    /// Another error starting the device.
    Driver,
    /// The device took no receive buffers.
    NoRxBuffers,
}

impl VirtioError {
    /// A sentence for the console (after `ukdb: `).
    pub fn message(self) -> &'static str {
        match self {
            VirtioError::Twice => "init_net_dedicated runs once per boot",
            VirtioError::BadNic(bad) => bad.message(),
            VirtioError::NoDevice => {
                "no virtio-net device found (PCI bus 0, virtio_mmio.device= entries)"
            }
            VirtioError::Absent => "no device where ukdb.nic= points",
            VirtioError::NotVirtioNet => "the device ukdb.nic= names is not virtio-net",
            VirtioError::NotModern => {
                "the virtio-net PCI device has no virtio 1.x capabilities (a legacy-only device)"
            }
            VirtioError::RegistersNotMapped => {
                "the virtio-net device's registers are not mapped at phys_offset"
            }
            VirtioError::PciCaps(_) => "the virtio-net PCI device's capability list is malformed",
            VirtioError::PciBar => {
                "the virtio-net PCI device's registers are not in an assigned memory BAR"
            }
            VirtioError::DmaNotMapped => {
                "the stub's DMA buffers are not mapped writable by the page tables"
            }
            VirtioError::QueueTooSmall => "the virtio-net device's queues are too small (< 64)",
            // (the message names hal::QUEUE)
            VirtioError::DmaPool => "the stub's DMA pages are not physically contiguous",
            VirtioError::NoConfig => "the virtio-net device has no configuration space",
            VirtioError::Driver => "the virtio-net device failed to start",
            VirtioError::NoRxBuffers => "the virtio-net device took no receive buffers",
        }
    }

    fn from_pci(e: VirtioPciError) -> VirtioError {
        match e {
            VirtioPciError::InvalidDeviceId(_) | VirtioPciError::InvalidVendorId(_) => {
                VirtioError::NotVirtioNet
            }
            VirtioPciError::MissingCommonConfig
            | VirtioPciError::MissingNotifyConfig
            | VirtioPciError::MissingIsrConfig => VirtioError::NotModern,
            VirtioPciError::InvalidNotifyOffMultiplier(_) => {
                VirtioError::PciCaps(pci::CapError::Length)
            }
            _ => VirtioError::PciBar,
        }
    }

    fn from_driver(e: virtio_drivers::Error) -> VirtioError {
        match e {
            virtio_drivers::Error::InvalidParam => VirtioError::QueueTooSmall,
            virtio_drivers::Error::DmaError => VirtioError::DmaPool,
            virtio_drivers::Error::ConfigSpaceMissing
            | virtio_drivers::Error::ConfigSpaceTooSmall => VirtioError::NoConfig,
            _ => VirtioError::Driver,
        }
    }
}

/// Starts the virtio-net device `cmdline` names (or the first found) and
/// returns it as the stub's NIC. `phys_offset`: where physical memory is
/// mapped (device registers are reached at `pa + phys_offset`, and only
/// where the page walk finds them mapped). Call once.
pub(crate) fn dedicated(
    cmdline: &str,
    phys_offset: u64,
) -> Result<&'static mut dyn Nic, &'static str> {
    start(cmdline, phys_offset).map_err(VirtioError::message)
}

fn start(cmdline: &str, phys_offset: u64) -> Result<&'static mut dyn Nic, VirtioError> {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::AcqRel) {
        return Err(VirtioError::Twice);
    }
    hal::prepare(phys_offset)?;
    let transport = open(cmdline)?;
    let net = Raw::new(InOrder(transport)).map_err(VirtioError::from_driver)?;
    // virtio-drivers 0.13 sets up the transmit queue, then the receive
    // queue (`VirtIONetRaw::new`): the last used ring the pool handed out
    // is the receive queue's.
    let used_idx = hal::last_used_ring()
        .and_then(hal::virt_of)
        .map(|used| used as usize + 2)
        .filter(|a| a % 2 == 0)
        .ok_or(VirtioError::DmaPool)?;
    let mut nic = VirtioNic {
        net,
        rx: [None; RX_SLOTS],
        tx: [None; TX_SLOTS],
        seen: 0,
        broken: false,
        used_idx,
    };
    // The stub polls; with VIRTIO_F_EVENT_IDX this is a no-op and the
    // device may raise its interrupt line, which the stub never unmasks.
    nic.net.disable_interrupts();
    nic.refill();
    if nic.rx.iter().all(Option::is_none) {
        return Err(VirtioError::NoRxBuffers);
    }
    static NIC: crate::global::Global<Option<VirtioNic>> = crate::global::Global::new(None);
    let slot = NIC.lock().ok_or(VirtioError::Twice)?.leak();
    let nic = slot.insert(nic);
    PENDING_AT.store(used_idx, Ordering::Release);
    Ok(nic)
}

/// The device's transport, by `ukdb.nic=` or the first found.
fn open(cmdline: &str) -> Result<SomeTransport<'static>, VirtioError> {
    match nicaddr::nic_option(cmdline).map_err(VirtioError::BadNic)? {
        Some(NicAddr::Pci { bus, device, function }) => {
            let df = DeviceFunction { bus, device, function };
            match pci::is_net(df) {
                None => Err(VirtioError::Absent),
                Some(false) => Err(VirtioError::NotVirtioNet),
                Some(true) => open_pci(df),
            }
        }
        Some(NicAddr::Mmio(base)) => {
            // The size the command line announces for that block, if any.
            let size = nicaddr::mmio_devices(cmdline)
                .flatten()
                .find(|d| d.base == base)
                .map_or(0x200, |d| d.size);
            let block = mmio::Block::map(base, size)?;
            if !block.is_net() {
                return Err(VirtioError::NotVirtioNet);
            }
            Ok(SomeTransport::Mmio(block.open()?))
        }
        None => {
            if let Some(df) = pci::find_first() {
                return open_pci(df);
            }
            let mut unmapped = false;
            for device in nicaddr::mmio_devices(cmdline).flatten() {
                match mmio::Block::map(device.base, device.size) {
                    Ok(block) if block.is_net() => return Ok(SomeTransport::Mmio(block.open()?)),
                    Ok(_) => {}
                    Err(_) => unmapped = true,
                }
            }
            Err(if unmapped { VirtioError::RegistersNotMapped } else { VirtioError::NoDevice })
        }
    }
}

fn open_pci(df: DeviceFunction) -> Result<SomeTransport<'static>, VirtioError> {
    pci::open(df).map(SomeTransport::Pci)
}
/// Receive completions the driver has taken (its `last_used_idx` of the
/// receive queue), for [`frames_waiting`].
static SEEN: AtomicU16 = AtomicU16::new(0);
/// The address of the receive used ring's `idx` (0: no NIC, or broken).
static PENDING_AT: AtomicUsize = AtomicUsize::new(0);

/// The lock-free check for [`crate::poll`]: the device has completed more
/// receive buffers than the driver took.
///
/// Sound without the driver: it reads two words and makes no reference to
/// the [`VirtioNic`] (which the stub holds as `&mut` while it runs). The
/// used ring's `idx` lies in the stub's static DMA region, which lives for
/// good and is never referenced as a whole; virtio-drivers itself reads
/// that field only through `&AtomicU16`, and the device writes it by DMA,
/// so another shared atomic load of it is fine. [`SEEN`] is a static
/// atomic that the driver updates after each frame it takes. On one CPU
/// `poll` never runs inside the driver (the stub runs with interrupts off).
fn frames_waiting(_context: usize) -> bool {
    let at = PENDING_AT.load(Ordering::Acquire);
    if at == 0 {
        return false;
    }
    // SAFETY: `at` is the 2-aligned address of the used ring's `idx` in the
    // static DMA region (checked in `start`); see above for why a shared
    // atomic access there is sound.
    let idx = unsafe { &*(at as *const AtomicU16) }.load(Ordering::Acquire);
    idx != SEEN.load(Ordering::Relaxed)
}

/// The driver: virtio-drivers' device on its transport, status writes in
/// the spec's order (Firecracker checks them: see [`InOrder`]).
type Raw = VirtIONetRaw<StubHal, InOrder<SomeTransport<'static>>, QUEUE>;

/// The dedicated virtio-net device.
pub struct VirtioNic {
    net: Raw,
    /// Per receive slot: the token of the queued buffer.
    rx: [Option<u16>; RX_SLOTS],
    /// Per transmit slot: the token and length of the frame in flight.
    tx: [Option<(u16, usize)>; TX_SLOTS],
    /// Receive completions taken (mirrors the queue's `last_used_idx`).
    seen: u16,
    /// The device reported something impossible: the NIC is not used again.
    broken: bool,
    /// The address of the receive used ring's `idx`, for `pending`.
    used_idx: usize,
}

/// Slot `i` of the DMA region as a byte slice of `len <= SLOT` bytes.
///
/// # Safety
/// No other reference to the slot may be live, and the device must not own
/// it (not queued, or completed) unless the slice is only handed to the
/// driver to queue or complete it.
unsafe fn slot_bytes<'a>(i: usize, len: usize) -> Option<&'a mut [u8]> {
    let ptr = hal::slot(i)?;
    // SAFETY: the slot holds SLOT bytes (`hal::slot`); exclusivity is the
    // caller's contract.
    Some(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len.min(SLOT)) })
}

impl VirtioNic {
    fn fail(&mut self) {
        self.broken = true;
        PENDING_AT.store(0, Ordering::Release);
    }

    /// Queues every receive slot the device does not hold.
    fn refill(&mut self) {
        for i in 0..RX_SLOTS {
            let Some(state) = self.rx.get_mut(i) else { break };
            if state.is_some() {
                continue;
            }
            // SAFETY: the slot is not queued (state None) and no slice of it
            // is live; the driver only shares it with the device.
            let Some(buf) = (unsafe { slot_bytes(i, SLOT) }) else { break };
            // SAFETY: the buffer is a static slot that nothing touches until
            // `receive_complete` returns it (`receive`).
            match unsafe { self.net.receive_begin(buf) } {
                Ok(token) => *state = Some(token),
                Err(_) => break,
            }
        }
    }

    /// Takes back every transmit buffer the device has finished with.
    fn reclaim(&mut self) {
        while let Some(token) = self.net.poll_transmit() {
            let Some(j) = self.tx.iter().position(|t| matches!(t, Some((k, _)) if *k == token))
            else {
                // A completion for a buffer the stub did not queue.
                return self.fail();
            };
            let len = self.tx.get(j).copied().flatten().map_or(0, |(_, len)| len);
            // SAFETY: slot RX_SLOTS + j is the buffer queued with `token`, and
            // nothing else references it.
            let Some(buf) = (unsafe { slot_bytes(RX_SLOTS + j, len) }) else { return };
            // SAFETY: the same buffer (slot and length) that `transmit_begin`
            // returned `token` for.
            match unsafe { self.net.transmit_complete(token, buf) } {
                Ok(_) => {
                    if let Some(t) = self.tx.get_mut(j) {
                        *t = None;
                    }
                }
                Err(_) => return self.fail(),
            }
        }
    }

    fn free_tx_slot(&mut self) -> Option<usize> {
        for _ in 0..TX_SPINS {
            self.reclaim();
            if self.broken {
                return None;
            }
            if let Some(j) = self.tx.iter().position(Option::is_none) {
                return Some(j);
            }
            core::hint::spin_loop();
        }
        None
    }
}

impl Nic for VirtioNic {
    fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    fn receive(&mut self, buf: &mut [u8]) -> usize {
        // Frames that do not fit `buf` are dropped: look at most at every
        // slot once.
        for _ in 0..RX_SLOTS {
            if self.broken {
                return 0;
            }
            let Some(token) = self.net.poll_receive() else { return 0 };
            let Some(i) = self.rx.iter().position(|t| *t == Some(token)) else {
                // The device returned a buffer the stub did not queue.
                self.fail();
                return 0;
            };
            // SAFETY: slot i is the buffer queued with `token`; no other
            // reference to it is live.
            let Some(slot) = (unsafe { slot_bytes(i, SLOT) }) else { return 0 };
            // SAFETY: the same buffer `receive_begin` returned `token` for.
            let taken = match unsafe { self.net.receive_complete(token, slot) } {
                Ok((header, len)) => Some((header, len)),
                // Popped, but shorter than a header: dropped.
                Err(virtio_drivers::Error::IoError) => None,
                // The entry changed under the driver: not popped.
                Err(_) => {
                    self.fail();
                    return 0;
                }
            };
            self.seen = self.seen.wrapping_add(1);
            SEEN.store(self.seen, Ordering::Release);
            if let Some(state) = self.rx.get_mut(i) {
                *state = None;
            }
            let mut n = 0;
            if let Some((header, len)) = taken {
                // SAFETY: the device gave the slot back; this is the only
                // reference to it until `refill` queues it again.
                let frame = unsafe { slot_bytes(i, SLOT) }
                    .and_then(|s| s.get(header..header.checked_add(len)?))
                    .filter(|f| f.len() <= MAX_FRAME);
                if let Some(out) = frame.and_then(|f| buf.get_mut(..f.len()).zip(Some(f))) {
                    out.0.copy_from_slice(out.1);
                    n = out.1.len();
                }
            }
            self.refill();
            if n > 0 {
                return n;
            }
        }
        0
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        if self.broken || frame.is_empty() || frame.len() > MAX_FRAME {
            return false;
        }
        let Some(j) = self.free_tx_slot() else { return false };
        // SAFETY: slot RX_SLOTS + j is free (not in flight); this is the
        // only reference to it.
        let Some(slot) = (unsafe { slot_bytes(RX_SLOTS + j, SLOT) }) else { return false };
        let Ok(header) = self.net.fill_buffer_header(slot) else { return false };
        let len = header + frame.len();
        let Some(body) = slot.get_mut(header..len) else { return false };
        body.copy_from_slice(frame);
        let Some(buf) = slot.get(..len) else { return false };
        // SAFETY: the slot is not touched again until `reclaim` completes
        // the token with the same slot and length.
        match unsafe { self.net.transmit_begin(buf) } {
            Ok(token) => {
                if let Some(t) = self.tx.get_mut(j) {
                    *t = Some((token, len));
                }
                true
            }
            Err(_) => false,
        }
    }

    fn pending(&self) -> Pending {
        Pending::new(frames_waiting, self.used_idx)
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }
}
