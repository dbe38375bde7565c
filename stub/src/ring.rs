//! A single-producer, single-consumer byte ring without locks: the console
//! text that the unikernel writes, drained by whoever holds the transport.
//! Free-running indices (wrapping `usize`), a power-of-two capacity. Pure
//! logic, host-tested.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A byte ring of `N` bytes (`N` a power of two).
pub struct ByteRing<const N: usize> {
    buf: UnsafeCell<[u8; N]>,
    /// Bytes ever pushed (written by the producer only).
    head: AtomicUsize,
    /// Bytes ever popped (written by the consumer only).
    tail: AtomicUsize,
}

// SAFETY: the producer writes only slots in `head..tail + N` and then
// publishes them with a Release store of `head`; the consumer reads only
// slots in `tail..head` (seen with Acquire) and then frees them with a
// Release store of `tail`. The two never touch the same slot at once, as
// long as there is one producer and one consumer at a time, which the
// `unsafe` contracts of `push` and `pop_with` put on the callers.
unsafe impl<const N: usize> Sync for ByteRing<N> {}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    const POWER_OF_TWO: () = assert!(N.is_power_of_two());

    /// Empty.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::POWER_OF_TWO;
        ByteRing {
            buf: UnsafeCell::new([0; N]),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        head.wrapping_sub(tail).min(N)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends as much of `bytes` as fits; returns how many were taken.
    ///
    /// # Safety
    /// No other `push` on this ring runs at the same time (the one producer:
    /// the caller masks interrupts, and the ring is not written from NMIs).
    pub unsafe fn push(&self, bytes: &[u8]) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let free = N - head.wrapping_sub(tail).min(N);
        let n = bytes.len().min(free);
        let buf = self.buf.get().cast::<u8>();
        for (i, &b) in bytes[..n].iter().enumerate() {
            let slot = head.wrapping_add(i) & (N - 1);
            // SAFETY: `slot < N`; the slot is free (between head and
            // tail + N), so the consumer does not read it, and the caller
            // is the only producer.
            unsafe { buf.add(slot).write(b) };
        }
        self.head.store(head.wrapping_add(n), Ordering::Release);
        n
    }

    /// Hands the waiting bytes to `out` in at most two runs (the ring may
    /// wrap), then frees them. Returns how many there were.
    ///
    /// # Safety
    /// No other `pop_with` on this ring runs at the same time (the one
    /// consumer: the transport's holder).
    pub unsafe fn pop_with(&self, mut out: impl FnMut(&[u8])) -> usize {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let n = head.wrapping_sub(tail).min(N);
        if n == 0 {
            return 0;
        }
        let start = tail & (N - 1);
        let first = n.min(N - start);
        let buf = self.buf.get().cast::<u8>().cast_const();
        // SAFETY: `start + first <= N` and `second <= start`: both runs lie
        // in the buffer, and hold published bytes (tail..head) that the
        // producer does not write until `tail` moves past them below.
        let (a, b) = unsafe {
            (
                core::slice::from_raw_parts(buf.add(start), first),
                core::slice::from_raw_parts(buf, n - first),
            )
        };
        out(a);
        if !b.is_empty() {
            out(b);
        }
        self.tail.store(tail.wrapping_add(n), Ordering::Release);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<const N: usize>(r: &ByteRing<N>) -> Vec<u8> {
        let mut out = Vec::new();
        // SAFETY: one consumer (this test).
        unsafe { r.pop_with(|b| out.extend_from_slice(b)) };
        out
    }

    #[test]
    fn fifo_order_and_capacity() {
        let r = ByteRing::<8>::new();
        // SAFETY: one producer (this test).
        assert_eq!(unsafe { r.push(b"hello") }, 5);
        // SAFETY: as above.
        assert_eq!(unsafe { r.push(b"world") }, 3);
        assert_eq!(r.len(), 8);
        assert_eq!(drain(&r), b"hellowor");
        assert!(r.is_empty());
        assert_eq!(drain(&r), b"");
    }

    #[test]
    fn wraps_around_in_two_runs() {
        let r = ByteRing::<8>::new();
        // SAFETY: one producer.
        unsafe { r.push(b"123456") };
        assert_eq!(drain(&r), b"123456");
        // SAFETY: one producer.
        assert_eq!(unsafe { r.push(b"abcdefgh") }, 8);
        let mut runs = Vec::new();
        // SAFETY: one consumer.
        unsafe { r.pop_with(|b| runs.push(b.to_vec())) };
        assert_eq!(runs, vec![b"ab".to_vec(), b"cdefgh".to_vec()]);
    }

    #[test]
    fn indices_wrap_at_usize_max() {
        let r = ByteRing::<4>::new();
        r.head.store(usize::MAX - 1, Ordering::Relaxed);
        r.tail.store(usize::MAX - 1, Ordering::Relaxed);
        // SAFETY: one producer.
        assert_eq!(unsafe { r.push(b"wxyz!") }, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(drain(&r), b"wxyz");
        assert_eq!(r.head.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_long_run_of_pushes_and_pops_keeps_every_byte() {
        let r = ByteRing::<16>::new();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut x = 7u32;
        for i in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (x >> 16) as usize % 11;
            let chunk: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            // SAFETY: one producer.
            let n = unsafe { r.push(&chunk) };
            sent.extend_from_slice(&chunk[..n]);
            if x & 1 == 0 {
                got.extend(drain(&r));
            }
        }
        got.extend(drain(&r));
        assert_eq!(got, sent);
    }
}
