//! The virtio-net device: virtio-drivers' `VirtIONetRaw` with the buffer
//! management it leaves to its user. Every receive buffer is posted to the
//! device; a frame is copied out and its buffer posted again. Frames to
//! send are copied into a free transmit buffer; buffers come back when the
//! device reports them used. No interrupts: everything is polled.

use super::hal::Hal;
use super::inorder::InOrder;
use crate::time;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::SomeTransport;

/// Entries of each virtqueue (receive and transmit). Every receive buffer
/// is posted, and Firecracker reads its tap only while the posted receive
/// buffers add up to 64 KiB + a header (65562 bytes, its largest frame):
/// 32 buffers (48 KiB) never got a frame there; 64 (96 KiB) do.
pub const QUEUE_SIZE: usize = 64;
/// One buffer: the virtio-net header (10 or 12 bytes) and a frame of up to
/// [`ukdb_stub::MAX_FRAME`] bytes.
const BUF: usize = 1536;
/// How long [`NetDevice::transmit`] waits for a transmit buffer to come
/// back, in microseconds.
const TX_WAIT_US: u64 = 2_000;
/// No receive buffer has this token.
const NO_SLOT: u8 = u8::MAX;

/// The device on its transport, status writes in the spec's order
/// (Firecracker checks them: see [`InOrder`]).
type Raw = VirtIONetRaw<Hal, InOrder<SomeTransport<'static>>, QUEUE_SIZE>;

/// The buffers the device reads and writes: statics in the image, so their
/// addresses are their physical addresses and never move.
struct Buffers {
    rx: [[u8; BUF]; QUEUE_SIZE],
    tx: [[u8; BUF]; QUEUE_SIZE],
}

static mut BUFFERS: Buffers = Buffers { rx: [[0; BUF]; QUEUE_SIZE], tx: [[0; BUF]; QUEUE_SIZE] };
static BUFFERS_TAKEN: AtomicBool = AtomicBool::new(false);

/// A started virtio-net device.
pub struct NetDevice {
    raw: Raw,
    buffers: &'static mut Buffers,
    /// The receive buffer of each descriptor token ([`NO_SLOT`]: none).
    rx_slot: [u8; QUEUE_SIZE],
    /// The token and length of each transmit buffer the device holds.
    tx_busy: [Option<(u16, usize)>; QUEUE_SIZE],
}

/// Why a device could not be started.
pub type StartError = &'static str;

impl NetDevice {
    /// Negotiates features, sets up the queues and posts every receive
    /// buffer. Only one device can be started (the buffers are static).
    pub fn start(transport: SomeTransport<'static>) -> Result<NetDevice, StartError> {
        if BUFFERS_TAKEN.swap(true, Ordering::Acquire) {
            return Err("buffers already in use");
        }
        let mut raw = Raw::new(InOrder(transport)).map_err(|_| "device setup failed")?;
        raw.disable_interrupts();
        // SAFETY: taken once (the flag above), so this is the only
        // reference to the buffers for the rest of the run.
        let buffers = unsafe { &mut *addr_of_mut!(BUFFERS) };
        let mut dev =
            NetDevice { raw, buffers, rx_slot: [NO_SLOT; QUEUE_SIZE], tx_busy: [None; QUEUE_SIZE] };
        for slot in 0..QUEUE_SIZE {
            dev.post(slot);
        }
        Ok(dev)
    }

    /// The station address.
    pub fn mac(&self) -> [u8; 6] {
        self.raw.mac_address()
    }

    /// Gives receive buffer `slot` to the device.
    fn post(&mut self, slot: usize) {
        let Some(buf) = self.buffers.rx.get_mut(slot) else { return };
        // SAFETY: the buffer is a static that only this device uses, and it
        // is not touched again until the device returns it (its token maps
        // back to it in `receive`).
        if let Ok(token) = unsafe { self.raw.receive_begin(buf) } {
            if let Some(entry) = self.rx_slot.get_mut(usize::from(token)) {
                *entry = slot as u8;
            }
        }
    }

    /// Copies the next received frame into `out` and returns its length;
    /// 0 when none waits. Frames that do not fit are dropped.
    pub fn receive(&mut self, out: &mut [u8]) -> usize {
        while let Some(token) = self.raw.poll_receive() {
            let entry = self.rx_slot.get_mut(usize::from(token));
            let Some(slot) = entry.map(|e| core::mem::replace(e, NO_SLOT)) else { return 0 };
            let Some(buf) = self.buffers.rx.get_mut(usize::from(slot)) else { return 0 };
            // SAFETY: `buf` is the buffer posted with this token.
            let done = unsafe { self.raw.receive_complete(token, buf) };
            let frame = done.ok().and_then(|(hdr, len)| buf.get(hdr..hdr.checked_add(len)?));
            let copied = match frame.and_then(|f| Some((out.get_mut(..f.len())?, f))) {
                Some((dst, src)) if !src.is_empty() => {
                    dst.copy_from_slice(src);
                    src.len()
                }
                _ => 0,
            };
            self.post(usize::from(slot));
            if copied > 0 {
                return copied;
            }
        }
        0
    }

    /// Takes back the transmit buffers the device has sent.
    fn reclaim(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let busy = self.tx_busy.iter().position(|b| matches!(b, Some((t, _)) if *t == token));
            let Some(slot) = busy else { return };
            let len = self.tx_busy.get_mut(slot).and_then(Option::take).map_or(0, |(_, len)| len);
            let Some(buf) = self.buffers.tx.get(slot).and_then(|b| b.get(..len)) else { return };
            // SAFETY: `buf` is the slice sent with this token.
            let _ = unsafe { self.raw.transmit_complete(token, buf) };
        }
    }

    /// Sends one Ethernet frame, waiting up to 2 ms for a free buffer.
    /// `false` when it could not be sent.
    pub fn transmit(&mut self, frame: &[u8]) -> bool {
        let deadline = time::rdtsc() + time::tsc_hz() / 1_000_000 * TX_WAIT_US;
        let slot = loop {
            self.reclaim();
            if let Some(slot) = self.tx_busy.iter().position(Option::is_none) {
                break slot;
            }
            if time::rdtsc() > deadline {
                return false;
            }
            core::hint::spin_loop();
        };
        let Some(buf) = self.buffers.tx.get_mut(slot) else { return false };
        let Ok(hdr) = self.raw.fill_buffer_header(buf) else { return false };
        let Some(len) = hdr.checked_add(frame.len()) else { return false };
        let Some(body) = buf.get_mut(hdr..len) else { return false };
        body.copy_from_slice(frame);
        let Some(sent) = buf.get(..len) else { return false };
        // SAFETY: the buffer is a static that only this device uses; it is
        // not written again until `reclaim` has taken it back.
        match unsafe { self.raw.transmit_begin(sent) } {
            Ok(token) => {
                if let Some(busy) = self.tx_busy.get_mut(slot) {
                    *busy = Some((token, len));
                }
                true
            }
            Err(_) => false,
        }
    }
}
