//! The host side of the Xen console ring model: plays xenconsoled on a
//! page shared with a guest (the first page of an `ivshmem-plain` device's
//! memory, a file QEMU maps with `memory-backend-file,share=on`).
//!
//! The page is laid out as Xen's `struct xencons_interface`; the ring logic
//! is the stub's own ([`ukdb_stub::xen::ring`]), backend side: consume
//! `out` (read `out_prod`, rmb, read bytes, mb, write `out_cons`), produce
//! `in` (write bytes, wmb, write `in_prod`). The backend polls: the model
//! has no event channel.
//!
//! [`Model::pump`] is one step; [`Model::run`] loops until told to stop,
//! writing the guest's bytes to a sink and feeding it what arrives on a
//! channel.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use memmap2::{MmapMut, MmapOptions};
use ukdb_stub::xen::ring::{Back, RawPage, RingError, XenconsInterface};

/// Bytes of the page the ring needs.
pub const RING_BYTES: usize = size_of::<XenconsInterface>();

/// What one [`Model::pump`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Guest to host bytes (`out`).
    pub out: usize,
    /// Host to guest bytes (`in`).
    pub input: usize,
    /// Whether `in` was filled to the brim: more input was queued than it
    /// could take.
    pub in_full: bool,
}

/// Totals over a [`Model::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Guest to host bytes.
    pub out: u64,
    /// Host to guest bytes.
    pub input: u64,
    /// Rings found corrupt (and reset) by the backend's checks.
    pub corrupt: u64,
    /// Pumps that found `in` full with input still queued.
    pub in_full: u64,
}

/// The backend of a console ring.
#[derive(Debug)]
pub struct Model {
    back: Back<RawPage>,
    /// Host to guest bytes not yet in the ring.
    queued: VecDeque<u8>,
    /// Keeps the mapping alive for `back`'s page.
    _map: Option<MmapMut>,
}

impl Model {
    /// Maps the first page of `path` (the file behind the guest's ivshmem
    /// memory) shared, and serves the ring in it. The indices it holds are
    /// taken as they are (a new file: all zero).
    pub fn open(path: &Path) -> io::Result<Model> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len < RING_BYTES as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {len} bytes, the ring needs {RING_BYTES}", path.display()),
            ));
        }
        // SAFETY: a shared mapping of a file another process (QEMU, the
        // guest) writes concurrently. The mapping is only ever accessed
        // through `RawPage` (atomics and volatile accesses), never as Rust
        // references to its bytes, so concurrent changes are expected, not
        // undefined behaviour; if the file is truncated meanwhile, accesses
        // fault (SIGBUS), which is outside this contract (the caller owns it).
        let mut map = unsafe { MmapOptions::new().len(4096.min(len as usize)).map_mut(&file) }?;
        let ptr = map.as_mut_ptr();
        // SAFETY: `ptr` is page-aligned and maps at least `RING_BYTES`
        // readable, writable bytes, kept alive by `_map` as long as the
        // model; only this model drives the backend side.
        let page = unsafe { RawPage::new(ptr) }
            .ok_or_else(|| io::Error::other("mapping is not aligned"))?;
        Ok(Model { back: Back::new(page), queued: VecDeque::new(), _map: Some(map) })
    }

    /// Serves the ring at `page` (shared memory the caller keeps mapped).
    ///
    /// # Safety
    /// As [`RawPage::new`]: `page` is a 4-byte aligned, mapped, writable
    /// `xencons_interface` for as long as the model lives, and nothing else
    /// drives its backend side.
    pub unsafe fn from_raw(page: *mut u8) -> Option<Model> {
        // SAFETY: per this function's contract.
        let page = unsafe { RawPage::new(page) }?;
        Some(Model { back: Back::new(page), queued: VecDeque::new(), _map: None })
    }

    /// Queues bytes for the guest (`in`); [`Model::pump`] moves them when
    /// there is room.
    pub fn queue_input(&mut self, data: &[u8]) {
        self.queued.extend(data);
    }

    /// Bytes queued for the guest and not yet in the ring.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// One step: the guest's output (at most `out_max` bytes at a time, to
    /// model slow backends) to `sink`, then queued input into `in` as room
    /// allows. A corrupt ring is reset by the ring code and reported as the
    /// error; the model stays usable.
    pub fn pump(
        &mut self,
        sink: &mut dyn Write,
        out_max: usize,
    ) -> io::Result<Result<Moved, RingError>> {
        let mut moved = Moved::default();
        let mut buf = [0u8; 2048];
        let want = out_max.clamp(1, buf.len());
        match self.back.read_out(buf.get_mut(..want).unwrap_or_default()) {
            Ok(n) => {
                sink.write_all(buf.get(..n).unwrap_or_default())?;
                moved.out = n;
            }
            Err(e) => return Ok(Err(e)),
        }
        while !self.queued.is_empty() {
            let (a, _) = self.queued.as_slices();
            match self.back.write_in(a) {
                Ok(0) => {
                    moved.in_full = true;
                    break;
                }
                Ok(n) => {
                    self.queued.drain(..n);
                    moved.input += n;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(moved))
    }

    /// Pumps until `stop` is set or `input`'s sender is gone and all of its
    /// bytes are in the ring: the guest's output to `sink` (flushed after
    /// each step that moved bytes), `input`'s chunks to the guest. Idle, it
    /// backs off from spinning to short sleeps (it is a polling backend).
    pub fn run(
        &mut self,
        sink: &mut dyn Write,
        input: &Receiver<Vec<u8>>,
        stop: &AtomicBool,
        out_max: usize,
    ) -> io::Result<Stats> {
        let mut stats = Stats::default();
        let mut idle = 0u32;
        let mut input_open = true;
        while !stop.load(Ordering::Relaxed) {
            while input_open {
                match input.try_recv() {
                    Ok(chunk) => self.queue_input(&chunk),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => input_open = false,
                }
            }
            match self.pump(sink, out_max)? {
                Ok(m) if m.out + m.input > 0 => {
                    stats.out += m.out as u64;
                    stats.input += m.input as u64;
                    stats.in_full += u64::from(m.in_full);
                    if m.out > 0 {
                        sink.flush()?;
                    }
                    idle = 0;
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    stats.corrupt += 1;
                    continue;
                }
            }
            if !input_open && self.queued.is_empty() {
                break;
            }
            idle = idle.saturating_add(1);
            match idle {
                0..=1000 => std::hint::spin_loop(),
                1001..=2000 => std::thread::yield_now(),
                _ => std::thread::sleep(Duration::from_micros(100)),
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Instant;
    use ukdb_stub::xen::ring::Front;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| ((i * 131) as u8) ^ seed).collect()
    }

    /// The guest: writes `out` in odd chunks while reading `in` until it
    /// has `expect_in` bytes.
    fn guest(page: RawPage, out: Vec<u8>, expect_in: usize) -> Vec<u8> {
        let mut front = Front::new(page);
        let mut got = Vec::new();
        let mut sent = 0;
        let chunks = [1usize, 5, 333, 2047, 4096, 17];
        let mut k = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 700];
        while sent < out.len() || got.len() < expect_in {
            assert!(Instant::now() < deadline, "guest stuck: sent {sent}, got {}", got.len());
            if sent < out.len() {
                let end = (sent + chunks[k % chunks.len()]).min(out.len());
                k += 1;
                sent += front.write_out(&out[sent..end]).unwrap();
            }
            let n = front.read_in(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    fn both_ways(
        make_guest_page: impl FnOnce() -> RawPage + Send,
        mut model: Model,
        out_max: usize,
    ) {
        let out = pattern(300_000, 0x5a);
        let input = pattern(100_000, 0xa5);
        let (tx, rx) = mpsc::channel();
        for chunk in input.chunks(997) {
            tx.send(chunk.to_vec()).unwrap();
        }
        drop(tx);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let expect_out = out.len();
        let backend = std::thread::spawn(move || {
            let mut sink = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut stats = Stats::default();
            // Runs until the guest's output is all here (the input channel is
            // closed, so `run` returns once input is in the ring; go on
            // draining `out` until everything arrived).
            while sink.len() < expect_out {
                assert!(Instant::now() < deadline, "backend stuck at {}", sink.len());
                let s = model.run(&mut sink, &rx, &stop2, out_max).unwrap();
                stats.out += s.out;
                stats.input += s.input;
                stats.corrupt += s.corrupt;
                stats.in_full += s.in_full;
            }
            (sink, stats)
        });
        let page = make_guest_page();
        let got_in = guest(page, out.clone(), input.len());
        let (got_out, stats) = backend.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(got_in, input);
        assert_eq!(got_out, out);
        assert_eq!(stats.out, out.len() as u64);
        assert_eq!(stats.input, input.len() as u64);
        assert_eq!(stats.corrupt, 0);
        // The guest reads `in` 700 bytes at a time: the backend, with 100 KB
        // to give, finds it full again and again.
        assert!(stats.in_full > 0, "`in` never filled to the brim");
    }

    #[test]
    fn model_and_stub_front_end_over_one_shared_buffer() {
        for out_max in [2048, 7] {
            // One shared Vec: the guest's page and the backend's.
            let mut shared = vec![0u64; 4096 / 8];
            let ptr = shared.as_mut_ptr().cast::<u8>() as usize;
            // SAFETY: `shared` outlives both threads (joined in `both_ways`)
            // and is only accessed through the two `RawPage`s.
            let model = unsafe { Model::from_raw(ptr as *mut u8) }.unwrap();
            // SAFETY: as above; the guest's side.
            both_ways(move || unsafe { RawPage::new(ptr as *mut u8) }.unwrap(), model, out_max);
            drop(shared);
        }
    }

    #[test]
    fn model_over_a_shared_file_as_qemu_maps_it() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let model = Model::open(file.path()).unwrap();
        // The "guest": a second shared mapping of the same file.
        // SAFETY: the file is this test's, not truncated while mapped; the
        // mapping is accessed only through a `RawPage`.
        let mut guest_map =
            unsafe { MmapOptions::new().len(4096).map_mut(file.as_file()) }.unwrap();
        let ptr = guest_map.as_mut_ptr() as usize;
        // SAFETY: `guest_map` outlives the guest (joined in `both_ways`) and
        // is accessed only through this `RawPage`.
        both_ways(move || unsafe { RawPage::new(ptr as *mut u8) }.unwrap(), model, 1000);
        drop(guest_map);
    }

    #[test]
    fn a_short_file_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(100).unwrap();
        let err = Model::open(file.path()).unwrap_err();
        assert!(err.to_string().contains("100 bytes, the ring needs 3088"), "{err}");
    }

    #[test]
    fn a_corrupt_guest_index_is_reset_and_counted() {
        let mut page = Box::new(XenconsInterface::zeroed());
        page.out_prod = 0x9000;
        let ptr: *mut XenconsInterface = &mut *page;
        // SAFETY: `page` outlives the model and is read only after it is gone.
        let mut model = unsafe { Model::from_raw(ptr.cast()) }.unwrap();
        let mut sink = Vec::new();
        assert!(model.pump(&mut sink, 2048).unwrap().is_err());
        assert_eq!(model.pump(&mut sink, 2048).unwrap(), Ok(Moved::default()));
        drop(model);
        assert_eq!(page.out_cons, 0x9000);
        assert!(sink.is_empty());
    }
}
