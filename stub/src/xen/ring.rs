//! The Xen PV console ring (`struct xencons_interface`), both sides.
//!
//! Pure logic over a small [`SharedPage`] abstraction, compiled in every
//! build (like [`crate::wire`]) so the bridge's backend model and the
//! host tests use the very code the stub runs.
//!
//! The layout was written by hand from Xen's public header
//! `xen/include/public/io/console.h` (MIT), not copied from it: two byte
//! rings, `in` (backend to guest, 1024 bytes) and `out` (guest to backend,
//! 2048 bytes), then four free-running `u32` indices. Newer headers add a
//! `connection` byte after the indices; the guest side never needs it, and
//! nothing here reads or writes it.
//!
//! Protocol (each index is written by one side only):
//! - producer: write data at `prod & (size - 1)` .., *wmb*, write `prod`;
//! - consumer: read `prod`, *rmb*, read data, *mb*, write `cons`.
//!
//! Indices are free-running and wrap at 2^32; `prod - cons` (wrapping) is the
//! number of bytes in the ring. A peer that makes it larger than the ring
//! (a hostile or broken peer) gets [`RingError::Corrupt`]; no access ever
//! leaves the ring's bytes, and nothing here panics.

use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// Bytes in the `in` ring (backend to guest).
pub const IN_SIZE: usize = 1024;
/// Bytes in the `out` ring (guest to backend).
pub const OUT_SIZE: usize = 2048;

/// `struct xencons_interface` from Xen's `public/io/console.h`.
#[repr(C)]
#[derive(Debug)]
pub struct XenconsInterface {
    /// Backend to guest bytes (`char in[1024]`).
    pub input: [u8; IN_SIZE],
    /// Guest to backend bytes (`char out[2048]`).
    pub output: [u8; OUT_SIZE],
    /// `in_cons`: written by the guest.
    pub in_cons: u32,
    /// `in_prod`: written by the backend.
    pub in_prod: u32,
    /// `out_cons`: written by the backend.
    pub out_cons: u32,
    /// `out_prod`: written by the guest.
    pub out_prod: u32,
}

/// Byte offset of `in_cons` in the page.
pub const IN_CONS_OFFSET: usize = 3072;
/// Byte offset of `in_prod` in the page.
pub const IN_PROD_OFFSET: usize = 3076;
/// Byte offset of `out_cons` in the page.
pub const OUT_CONS_OFFSET: usize = 3080;
/// Byte offset of `out_prod` in the page.
pub const OUT_PROD_OFFSET: usize = 3084;

const _: () = {
    assert!(core::mem::offset_of!(XenconsInterface, input) == 0);
    assert!(core::mem::offset_of!(XenconsInterface, output) == 1024);
    assert!(core::mem::offset_of!(XenconsInterface, in_cons) == IN_CONS_OFFSET);
    assert!(core::mem::offset_of!(XenconsInterface, in_prod) == IN_PROD_OFFSET);
    assert!(core::mem::offset_of!(XenconsInterface, out_cons) == OUT_CONS_OFFSET);
    assert!(core::mem::offset_of!(XenconsInterface, out_prod) == OUT_PROD_OFFSET);
    assert!(core::mem::size_of::<XenconsInterface>() == 3088);
    assert!(IN_SIZE.is_power_of_two() && OUT_SIZE.is_power_of_two());
};

impl XenconsInterface {
    /// An empty ring: all bytes and indices zero.
    pub const fn zeroed() -> Self {
        XenconsInterface {
            input: [0; IN_SIZE],
            output: [0; OUT_SIZE],
            in_cons: 0,
            in_prod: 0,
            out_cons: 0,
            out_prod: 0,
        }
    }
}

/// One of the four indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// `in_cons`.
    InCons,
    /// `in_prod`.
    InProd,
    /// `out_cons`.
    OutCons,
    /// `out_prod`.
    OutProd,
}

/// One of the two byte rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `in`: backend to guest.
    In,
    /// `out`: guest to backend.
    Out,
}

impl Area {
    /// Its size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Area::In => IN_SIZE,
            Area::Out => OUT_SIZE,
        }
    }
}

/// Access to a page laid out as [`XenconsInterface`] that another party
/// may change at any time (shared memory), or a fake of one.
///
/// `pos + len` is always within the area ([`Area::size`]) when the ring
/// code calls `read`/`write`; implementations still must not access
/// anything outside it when it is not (clamp, never panic).
pub trait SharedPage {
    /// Reads an index (one aligned 32-bit load).
    fn load(&self, index: Index) -> u32;
    /// Writes an index (one aligned 32-bit store).
    fn store(&mut self, index: Index, value: u32);
    /// Copies `buf.len()` bytes from `area` at `pos`.
    fn read(&self, area: Area, pos: usize, buf: &mut [u8]);
    /// Copies `data` into `area` at `pos`.
    fn write(&mut self, area: Area, pos: usize, data: &[u8]);
    /// Read barrier: loads before it complete before loads after it.
    fn rmb(&self) {
        fence(Ordering::Acquire);
    }
    /// Write barrier: stores before it are visible before stores after it.
    fn wmb(&self) {
        fence(Ordering::Release);
    }
    /// Full barrier.
    fn mb(&self) {
        fence(Ordering::SeqCst);
    }
}

impl<P: SharedPage + ?Sized> SharedPage for &mut P {
    fn load(&self, index: Index) -> u32 {
        (**self).load(index)
    }
    fn store(&mut self, index: Index, value: u32) {
        (**self).store(index, value)
    }
    fn read(&self, area: Area, pos: usize, buf: &mut [u8]) {
        (**self).read(area, pos, buf)
    }
    fn write(&mut self, area: Area, pos: usize, data: &[u8]) {
        (**self).write(area, pos, data)
    }
    fn rmb(&self) {
        (**self).rmb()
    }
    fn wmb(&self) {
        (**self).wmb()
    }
    fn mb(&self) {
        (**self).mb()
    }
}

/// A plain [`XenconsInterface`] is a page nobody else changes: the safe
/// fake for tests (both sides drive it in turn through `&mut`).
impl SharedPage for XenconsInterface {
    fn load(&self, index: Index) -> u32 {
        match index {
            Index::InCons => self.in_cons,
            Index::InProd => self.in_prod,
            Index::OutCons => self.out_cons,
            Index::OutProd => self.out_prod,
        }
    }
    fn store(&mut self, index: Index, value: u32) {
        match index {
            Index::InCons => self.in_cons = value,
            Index::InProd => self.in_prod = value,
            Index::OutCons => self.out_cons = value,
            Index::OutProd => self.out_prod = value,
        }
    }
    fn read(&self, area: Area, pos: usize, buf: &mut [u8]) {
        let ring: &[u8] = match area {
            Area::In => &self.input,
            Area::Out => &self.output,
        };
        if let Some(src) = pos.checked_add(buf.len()).and_then(|end| ring.get(pos..end)) {
            buf.copy_from_slice(src);
        }
    }
    fn write(&mut self, area: Area, pos: usize, data: &[u8]) {
        let ring: &mut [u8] = match area {
            Area::In => &mut self.input,
            Area::Out => &mut self.output,
        };
        if let Some(dst) = pos.checked_add(data.len()).and_then(|end| ring.get_mut(pos..end)) {
            dst.copy_from_slice(data);
        }
    }
}

/// A [`XenconsInterface`] in memory shared with another party (a Xen
/// backend, another process, another thread): indices through atomics,
/// bytes through volatile accesses, barriers as real fences.
#[derive(Debug)]
pub struct RawPage {
    base: NonNull<XenconsInterface>,
}

// SAFETY: the page is not tied to a thread; `RawPage::new`'s contract makes
// this handle the only one that drives its side of the ring.
unsafe impl Send for RawPage {}

impl RawPage {
    /// A page at `base`.
    ///
    /// Returns `None` for a null or not 4-byte aligned address.
    ///
    /// # Safety
    /// `base` points to at least `size_of::<XenconsInterface>()` bytes that
    /// stay mapped, readable and writable for as long as the `RawPage`
    /// lives; nothing in this program accesses them except through
    /// `RawPage`s (one per side of the ring, each driven by one user at a
    /// time), and the other party follows the ring protocol at worst by
    /// writing arbitrary values (never unmapping the page).
    pub unsafe fn new(base: *mut u8) -> Option<Self> {
        if !(base as usize).is_multiple_of(4) {
            return None;
        }
        NonNull::new(base.cast::<XenconsInterface>()).map(|base| RawPage { base })
    }

    /// The page's address (for [`crate::Pending`] contexts).
    pub fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    fn index_ptr(&self, index: Index) -> *mut u32 {
        let offset = match index {
            Index::InCons => IN_CONS_OFFSET,
            Index::InProd => IN_PROD_OFFSET,
            Index::OutCons => OUT_CONS_OFFSET,
            Index::OutProd => OUT_PROD_OFFSET,
        };
        // `offset` is inside the interface, which `new`'s contract says is
        // mapped (the pointer is only formed here, not dereferenced).
        self.base.as_ptr().cast::<u8>().wrapping_add(offset).cast::<u32>()
    }

    /// The index at `p` as an atomic.
    ///
    /// # Safety
    /// `p` is one of the four indices of a page as in [`RawPage::new`].
    unsafe fn atomic<'a>(p: *mut u32) -> &'a AtomicU32 {
        // SAFETY: per the function contract the index is mapped, 4-byte
        // aligned (the base is, the offset is a multiple of 4) and accessed
        // only atomically by this program.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// Whether the `in` ring holds bytes: the lock-free input check for a
    /// page at `addr` (both indices read, nothing written).
    ///
    /// # Safety
    /// `addr` is the address of a page as in [`RawPage::new`].
    pub unsafe fn input_waiting(addr: usize) -> bool {
        let base = addr as *mut u8;
        // SAFETY: per the function contract.
        let (prod, cons) = unsafe {
            (
                Self::atomic(base.wrapping_add(IN_PROD_OFFSET).cast()).load(Ordering::Relaxed),
                Self::atomic(base.wrapping_add(IN_CONS_OFFSET).cast()).load(Ordering::Relaxed),
            )
        };
        prod != cons
    }

    fn area_ptr(&self, area: Area) -> *mut u8 {
        let offset = match area {
            Area::In => 0,
            Area::Out => IN_SIZE,
        };
        self.base.as_ptr().cast::<u8>().wrapping_add(offset)
    }

    /// `pos..pos + len` clamped to the area.
    fn clamp(area: Area, pos: usize, len: usize) -> (usize, usize) {
        let pos = pos.min(area.size());
        (pos, len.min(area.size() - pos))
    }
}

impl SharedPage for RawPage {
    fn load(&self, index: Index) -> u32 {
        // SAFETY: `new`'s contract.
        unsafe { Self::atomic(self.index_ptr(index)) }.load(Ordering::Relaxed)
    }
    fn store(&mut self, index: Index, value: u32) {
        // SAFETY: `new`'s contract.
        unsafe { Self::atomic(self.index_ptr(index)) }.store(value, Ordering::Relaxed)
    }
    fn read(&self, area: Area, pos: usize, buf: &mut [u8]) {
        let (pos, len) = Self::clamp(area, pos, buf.len());
        let src = self.area_ptr(area).wrapping_add(pos);
        for (i, slot) in buf.iter_mut().take(len).enumerate() {
            // SAFETY: `pos + i < area.size()` (clamped): inside the mapped
            // page (`new`'s contract). Volatile: the other party writes it.
            *slot = unsafe { src.add(i).read_volatile() };
        }
    }
    fn write(&mut self, area: Area, pos: usize, data: &[u8]) {
        let (pos, len) = Self::clamp(area, pos, data.len());
        let dst = self.area_ptr(area).wrapping_add(pos);
        for (i, &b) in data.iter().take(len).enumerate() {
            // SAFETY: as in `read`.
            unsafe { dst.add(i).write_volatile(b) };
        }
    }
}

/// The peer left the ring in an impossible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// `prod - cons` is larger than the ring: the indices were corrupted.
    Corrupt {
        /// The ring.
        area: Area,
        /// The producer index read.
        prod: u32,
        /// The consumer index read.
        cons: u32,
    },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::Corrupt { area, prod, cons } => {
                write!(f, "{area:?} ring corrupt: prod {prod:#x}, cons {cons:#x}")
            }
        }
    }
}

/// The bytes between `cons` and `prod`, checked against the ring's size.
fn used(area: Area, prod: u32, cons: u32) -> Result<usize, RingError> {
    let n = prod.wrapping_sub(cons) as usize;
    if n > area.size() {
        Err(RingError::Corrupt { area, prod, cons })
    } else {
        Ok(n)
    }
}

/// Copies `data` into `area` starting at ring index `at` (wrapping).
fn copy_in<P: SharedPage>(page: &mut P, area: Area, at: u32, data: &[u8]) {
    let pos = at as usize & (area.size() - 1);
    let first = data.len().min(area.size() - pos);
    let (a, b) = data.split_at(first);
    page.write(area, pos, a);
    page.write(area, 0, b);
}

/// Copies `buf.len()` bytes out of `area` from ring index `at` (wrapping).
fn copy_out<P: SharedPage>(page: &P, area: Area, at: u32, buf: &mut [u8]) {
    let pos = at as usize & (area.size() - 1);
    let first = buf.len().min(area.size() - pos);
    let (a, b) = buf.split_at_mut(first);
    page.read(area, pos, a);
    page.read(area, 0, b);
}

/// The producer half of one ring: bytes are staged at a private index and
/// published (with the write barrier) by [`Producer::publish`].
#[derive(Debug)]
struct Producer {
    area: Area,
    prod: Index,
    cons: Index,
    /// Our producer index, ahead of the shared one by what is staged.
    next: u32,
}

impl Producer {
    fn new<P: SharedPage>(page: &P, area: Area, prod: Index, cons: Index) -> Self {
        Producer { area, prod, cons, next: page.load(prod) }
    }

    /// Copies as much of `data` as fits; returns how much that was.
    fn stage<P: SharedPage>(&mut self, page: &mut P, data: &[u8]) -> Result<usize, RingError> {
        let cons = page.load(self.cons);
        // The consumer's index, then our writes: a full barrier keeps the
        // stores below from moving before the load that made room for them.
        page.mb();
        let used = used(self.area, self.next, cons)?;
        let n = data.len().min(self.area.size() - used);
        let data = data.get(..n).unwrap_or_default();
        copy_in(page, self.area, self.next, data);
        self.next = self.next.wrapping_add(n as u32);
        Ok(n)
    }

    /// Makes the staged bytes visible: data, write barrier, index.
    fn publish<P: SharedPage>(&mut self, page: &mut P) -> bool {
        if page.load(self.prod) == self.next {
            return false;
        }
        page.wmb();
        page.store(self.prod, self.next);
        true
    }

    /// Staged bytes not yet published.
    fn staged<P: SharedPage>(&self, page: &P) -> usize {
        self.next.wrapping_sub(page.load(self.prod)) as usize
    }
}

/// Takes up to `buf.len()` bytes from a ring: read `prod`, rmb, read data,
/// mb, write `cons`. On a corrupt ring the consumer resets: it drops what
/// the ring claims to hold (`cons = prod`) and reports the error.
fn consume<P: SharedPage>(
    page: &mut P,
    area: Area,
    prod: Index,
    cons: Index,
    buf: &mut [u8],
) -> Result<usize, RingError> {
    let p = page.load(prod);
    page.rmb();
    let c = page.load(cons);
    let used = match used(area, p, c) {
        Ok(n) => n,
        Err(e) => {
            page.mb();
            page.store(cons, p);
            return Err(e);
        }
    };
    let n = used.min(buf.len());
    if n == 0 {
        return Ok(0);
    }
    let out = buf.get_mut(..n).unwrap_or_default();
    copy_out(page, area, c, out);
    page.mb();
    page.store(cons, c.wrapping_add(n as u32));
    Ok(n)
}

/// The guest's side: it produces `out` and consumes `in`.
#[derive(Debug)]
pub struct Front<P> {
    page: P,
    out: Producer,
}

impl<P: SharedPage> Front<P> {
    /// The guest side of `page`, continuing from the indices it holds.
    pub fn new(page: P) -> Self {
        let out = Producer::new(&page, Area::Out, Index::OutProd, Index::OutCons);
        Front { page, out }
    }

    /// The page.
    pub fn page(&self) -> &P {
        &self.page
    }

    /// Copies as much of `data` into `out` as fits, without publishing it
    /// (see [`Front::publish`]); returns how many bytes that was.
    pub fn stage_out(&mut self, data: &[u8]) -> Result<usize, RingError> {
        self.out.stage(&mut self.page, data)
    }

    /// Publishes the staged bytes (write barrier, then `out_prod`); `true`
    /// if there were any (the backend should be notified).
    pub fn publish(&mut self) -> bool {
        self.out.publish(&mut self.page)
    }

    /// Bytes staged and not yet published.
    pub fn staged(&self) -> usize {
        self.out.staged(&self.page)
    }

    /// Writes as much of `data` as fits into `out` and publishes it.
    pub fn write_out(&mut self, data: &[u8]) -> Result<usize, RingError> {
        let n = self.stage_out(data)?;
        self.publish();
        Ok(n)
    }

    /// Takes waiting bytes from `in` into `buf`. A corrupt `in` ring is
    /// reset (its contents dropped) and reported.
    pub fn read_in(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        consume(&mut self.page, Area::In, Index::InProd, Index::InCons, buf)
    }

    /// Whether `in` holds bytes.
    pub fn input_waiting(&self) -> bool {
        self.page.load(Index::InProd) != self.page.load(Index::InCons)
    }
}

/// The backend's side (xenconsoled, or the host model): it consumes `out`
/// and produces `in`.
#[derive(Debug)]
pub struct Back<P> {
    page: P,
    input: Producer,
}

impl<P: SharedPage> Back<P> {
    /// The backend side of `page`, continuing from the indices it holds.
    pub fn new(page: P) -> Self {
        let input = Producer::new(&page, Area::In, Index::InProd, Index::InCons);
        Back { page, input }
    }

    /// The page.
    pub fn page(&self) -> &P {
        &self.page
    }

    /// Takes the guest's bytes from `out` into `buf`. A corrupt `out` ring
    /// is reset (its contents dropped) and reported.
    pub fn read_out(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        consume(&mut self.page, Area::Out, Index::OutProd, Index::OutCons, buf)
    }

    /// Writes as much of `data` as fits into `in` and publishes it.
    pub fn write_in(&mut self, data: &[u8]) -> Result<usize, RingError> {
        let n = self.input.stage(&mut self.page, data)?;
        self.input.publish(&mut self.page);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_at(idx: u32) -> Box<XenconsInterface> {
        let mut p = Box::new(XenconsInterface::zeroed());
        p.in_cons = idx;
        p.in_prod = idx;
        p.out_cons = idx;
        p.out_prod = idx;
        p
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn empty_ring_reads_nothing() {
        let mut page = page_at(0);
        let mut buf = [0u8; 16];
        assert_eq!(Front::new(&mut *page).read_in(&mut buf), Ok(0));
        assert_eq!(Back::new(&mut *page).read_out(&mut buf), Ok(0));
        assert_eq!(page.in_cons, 0);
        assert_eq!(page.out_cons, 0);
    }

    #[test]
    fn out_round_trip_and_layout() {
        let mut page = page_at(0);
        assert_eq!(Front::new(&mut *page).write_out(b"hello"), Ok(5));
        assert_eq!(&page.output[..5], b"hello");
        assert_eq!((page.out_prod, page.out_cons), (5, 0));
        let mut buf = [0u8; 8];
        assert_eq!(Back::new(&mut *page).read_out(&mut buf), Ok(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!((page.out_prod, page.out_cons), (5, 5));
    }

    #[test]
    fn in_round_trip() {
        let mut page = page_at(7);
        assert_eq!(Back::new(&mut *page).write_in(b"$g#67"), Ok(5));
        assert_eq!(&page.input[7..12], b"$g#67");
        let mut front = Front::new(&mut *page);
        assert!(front.input_waiting());
        let mut buf = [0u8; 3];
        assert_eq!(front.read_in(&mut buf), Ok(3));
        assert_eq!(&buf, b"$g#");
        assert_eq!(front.read_in(&mut buf), Ok(2));
        assert_eq!(&buf[..2], b"67");
        assert!(!front.input_waiting());
        assert_eq!((page.in_prod, page.in_cons), (12, 12));
    }

    #[test]
    fn full_rings_take_exactly_their_size() {
        let mut page = page_at(0);
        let data = pattern(5000, 1);
        let mut front = Front::new(&mut *page);
        assert_eq!(front.write_out(&data), Ok(OUT_SIZE));
        assert_eq!(front.write_out(&data), Ok(0));
        assert_eq!(page.out_prod, OUT_SIZE as u32);
        let mut back = Back::new(&mut *page);
        assert_eq!(back.write_in(&data), Ok(IN_SIZE));
        assert_eq!(back.write_in(b"x"), Ok(0));
        let mut buf = vec![0u8; 5000];
        assert_eq!(back.read_out(&mut buf), Ok(OUT_SIZE));
        assert_eq!(buf[..OUT_SIZE], data[..OUT_SIZE]);
        assert_eq!(Front::new(&mut *page).read_in(&mut buf), Ok(IN_SIZE));
        assert_eq!(buf[..IN_SIZE], data[..IN_SIZE]);
    }

    #[test]
    fn indices_wrap_at_2_pow_32() {
        // Start 10 bytes before the indices wrap; move 3 rings' worth.
        let mut page = page_at(u32::MAX - 9);
        let data = pattern(3 * OUT_SIZE + 123, 9);
        let mut got = Vec::new();
        let mut sent = 0;
        let mut buf = [0u8; 700];
        while got.len() < data.len() {
            sent += Front::new(&mut *page).write_out(&data[sent..]).unwrap();
            let n = Back::new(&mut *page).read_out(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(page.out_prod, (u32::MAX - 9).wrapping_add(data.len() as u32));
        assert_eq!(page.out_cons, page.out_prod);
        // The ring position follows the low bits across the wrap.
        assert_eq!(page.out_prod, (data.len() - 10) as u32);
    }

    #[test]
    fn full_ring_across_the_wrap() {
        let mut page = page_at(u32::MAX - 100);
        let data = pattern(IN_SIZE, 3);
        assert_eq!(Back::new(&mut *page).write_in(&data), Ok(IN_SIZE));
        assert_eq!(page.in_prod.wrapping_sub(page.in_cons) as usize, IN_SIZE);
        assert_eq!(Back::new(&mut *page).write_in(b"more"), Ok(0));
        let mut buf = vec![0u8; IN_SIZE + 1];
        assert_eq!(Front::new(&mut *page).read_in(&mut buf), Ok(IN_SIZE));
        assert_eq!(buf[..IN_SIZE], data[..]);
    }

    #[test]
    fn slow_consumer_in_odd_chunks() {
        let mut page = page_at(0x1234_5678);
        let data = pattern(100_000, 5);
        let mut got = Vec::new();
        let mut sent = 0;
        let chunks = [1usize, 7, 3, 1023, 2047, 13, 2049, 5];
        let mut k = 0;
        while got.len() < data.len() {
            // The producer offers everything left each time; only what fits goes.
            let mut front = Front::new(&mut *page);
            sent += front.write_out(&data[sent..]).unwrap();
            let mut buf = vec![0u8; chunks[k % chunks.len()]];
            k += 1;
            let n = Back::new(&mut *page).read_out(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(sent, data.len());
    }

    #[test]
    fn staged_bytes_are_invisible_until_published() {
        let mut page = page_at(0);
        let mut front = Front::new(&mut *page);
        assert_eq!(front.stage_out(b"abc"), Ok(3));
        assert_eq!(front.stage_out(b"de"), Ok(2));
        assert_eq!(front.staged(), 5);
        let mut buf = [0u8; 8];
        assert_eq!(Back::new(&mut *front.page).read_out(&mut buf), Ok(0));
        assert!(front.publish());
        assert!(!front.publish());
        assert_eq!(Back::new(&mut *page).read_out(&mut buf), Ok(5));
        assert_eq!(&buf[..5], b"abcde");
    }

    #[test]
    fn staging_respects_room_left_by_staged_bytes() {
        let mut page = page_at(0);
        let mut front = Front::new(&mut *page);
        assert_eq!(front.stage_out(&pattern(OUT_SIZE - 1, 0)), Ok(OUT_SIZE - 1));
        assert_eq!(front.stage_out(b"xy"), Ok(1));
        assert_eq!(front.stage_out(b"z"), Ok(0));
    }

    #[test]
    fn corrupt_in_ring_is_reset_not_indexed() {
        // The backend claims more bytes than the ring holds.
        for (prod, cons) in [(2000u32, 0u32), (0, 1), (u32::MAX, 0), (5, 6)] {
            let mut page = page_at(0);
            page.in_prod = prod;
            page.in_cons = cons;
            let mut buf = [0u8; 4096];
            let err = Front::new(&mut *page).read_in(&mut buf);
            assert_eq!(err, Err(RingError::Corrupt { area: Area::In, prod, cons }));
            // Reset: the consumer caught up with the producer.
            assert_eq!(page.in_cons, prod);
            assert_eq!(Front::new(&mut *page).read_in(&mut buf), Ok(0));
        }
    }

    #[test]
    fn corrupt_out_ring_refuses_writes_and_backend_resets() {
        let mut page = page_at(0);
        page.out_cons = 4000; // the backend "consumed" what was never written
        let err = Front::new(&mut *page).write_out(b"abc");
        assert_eq!(err, Err(RingError::Corrupt { area: Area::Out, prod: 0, cons: 4000 }));
        assert_eq!(page.out_prod, 0);
        // The guest's out_prod is corrupt in the backend's eyes.
        let mut page = page_at(0);
        page.out_prod = 0x8000_0000;
        let mut buf = [0u8; 64];
        assert!(Back::new(&mut *page).read_out(&mut buf).is_err());
        assert_eq!(page.out_cons, 0x8000_0000);
        // The backend's own in_cons peer corrupted: write_in refuses.
        let mut page = page_at(0);
        page.in_cons = 3;
        assert!(Back::new(&mut *page).write_in(b"x").is_err());
    }

    #[test]
    fn fake_page_clamps_out_of_range_accesses() {
        let mut page = XenconsInterface::zeroed();
        let mut buf = [9u8; 4];
        page.read(Area::In, IN_SIZE - 2, &mut buf);
        assert_eq!(buf, [9; 4]);
        page.write(Area::Out, usize::MAX, b"ab");
        assert!(page.output.iter().all(|&b| b == 0));
    }

    #[test]
    fn raw_page_matches_the_layout() {
        let mut page = Box::new(XenconsInterface::zeroed());
        let ptr: *mut XenconsInterface = &mut *page;
        // SAFETY: `page` outlives `raw` and is accessed only through it
        // until `raw`'s last use.
        let mut raw = unsafe { RawPage::new(ptr.cast()) }.unwrap();
        {
            let mut front = Front::new(&mut raw);
            assert_eq!(front.write_out(b"xyz"), Ok(3));
        }
        raw.store(Index::InProd, 2);
        raw.write(Area::In, 0, b"ok");
        // Out-of-range positions are clamped, never written.
        raw.write(Area::In, IN_SIZE - 1, b"AB");
        // SAFETY: `raw.addr()` is the page above.
        assert!(unsafe { RawPage::input_waiting(raw.addr()) });
        let mut buf = [0u8; 4];
        assert_eq!(Front::new(&mut raw).read_in(&mut buf), Ok(2));
        // SAFETY: as above.
        assert!(!unsafe { RawPage::input_waiting(raw.addr()) });
        // `raw` is not used from here on: the page is read directly.
        assert_eq!(&page.output[..3], b"xyz");
        assert_eq!(page.out_prod, 3);
        assert_eq!((page.in_prod, page.in_cons), (2, 2));
        assert_eq!(page.input[IN_SIZE - 1], b'A');
        assert_eq!(page.output[0], b'x');
        // SAFETY: refused before anything is accessed.
        assert!(unsafe { RawPage::new(3 as *mut u8) }.is_none());
        // SAFETY: as above.
        assert!(unsafe { RawPage::new(core::ptr::null_mut()) }.is_none());
    }
}
