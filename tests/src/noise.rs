//! A fault-injecting relay for the serial line: it sits between QEMU's
//! serial socket and the bridge and, per byte and in both directions, flips
//! one bit of it, drops it or sends it twice, at a set rate, from a seeded
//! generator (the same seed and the same bytes give the same faults).
//!
//! [`NoiseProxy::start`] listens on a unix socket of its own, accepts one
//! client (the bridge), connects it to the VM's socket and relays until
//! either side closes. [`Counters`] count what it did, per direction.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A deterministic pseudo-random generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What the relay did to one direction's bytes.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from the sender.
    pub bytes: AtomicU64,
    /// Bytes passed on with one bit flipped.
    pub flipped: AtomicU64,
    /// Bytes not passed on.
    pub dropped: AtomicU64,
    /// Bytes passed on twice.
    pub duplicated: AtomicU64,
}

impl Counters {
    /// All faults injected so far.
    pub fn faults(&self) -> u64 {
        self.flipped.load(Ordering::Relaxed)
            + self.dropped.load(Ordering::Relaxed)
            + self.duplicated.load(Ordering::Relaxed)
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, {} flipped, {} dropped, {} duplicated",
            self.bytes.load(Ordering::Relaxed),
            self.flipped.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.duplicated.load(Ordering::Relaxed)
        )
    }
}

/// Injects faults into one direction of the line: each byte is damaged with
/// probability `1 / one_in` (`0`: never), the kind of damage (flip, drop,
/// duplicate) chosen uniformly.
#[derive(Debug)]
pub struct Injector {
    rng: Rng,
    one_in: u64,
    counters: Arc<Counters>,
}

impl Injector {
    /// An injector damaging one byte in `one_in`, seeded with `seed`.
    pub fn new(one_in: u64, seed: u64, counters: Arc<Counters>) -> Self {
        Self { rng: Rng::new(seed), one_in, counters }
    }

    /// Appends `input`, damaged, to `out`.
    pub fn apply(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.counters.bytes.fetch_add(input.len() as u64, Ordering::Relaxed);
        for &byte in input {
            let r = self.rng.next_u64();
            if self.one_in == 0 || !r.is_multiple_of(self.one_in) {
                out.push(byte);
                continue;
            }
            match (r >> 32) % 3 {
                0 => {
                    self.counters.flipped.fetch_add(1, Ordering::Relaxed);
                    out.push(byte ^ (1 << ((r >> 40) % 8)));
                }
                1 => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(&[byte, byte]);
                }
            }
        }
    }
}

/// A running fault-injecting relay.
pub struct NoiseProxy {
    /// Where the bridge connects (`--target unix:PATH`).
    pub sock: PathBuf,
    /// What was done to the bytes from the bridge to the VM.
    pub to_vm: Arc<Counters>,
    /// What was done to the bytes from the VM to the bridge.
    pub to_host: Arc<Counters>,
    accept: Option<JoinHandle<()>>,
}

impl NoiseProxy {
    /// Listens on `dir/noise.sock`; relays its first client to the VM's
    /// serial socket `vm_sock`, damaging one byte in `one_in` each way
    /// (seeded with `seed`, and `seed + 1` for the other direction).
    pub fn start(vm_sock: &Path, dir: &Path, one_in: u64, seed: u64) -> NoiseProxy {
        let sock = dir.join("noise.sock");
        let listener = UnixListener::bind(&sock).expect("bind the noise relay's socket");
        let to_vm = Arc::new(Counters::default());
        let to_host = Arc::new(Counters::default());
        let vm_sock = vm_sock.to_path_buf();
        let (up, down) = (Arc::clone(&to_vm), Arc::clone(&to_host));
        let accept = std::thread::spawn(move || {
            let Ok((host, _)) = listener.accept() else { return };
            let vm = crate::connect_unix(&vm_sock);
            let (host2, vm2) = (host.try_clone().unwrap(), vm.try_clone().unwrap());
            let a = std::thread::spawn(move || {
                relay(host, vm, Injector::new(one_in, seed, up));
            });
            let b = std::thread::spawn(move || {
                relay(vm2, host2, Injector::new(one_in, seed.wrapping_add(1), down));
            });
            let _ = a.join();
            let _ = b.join();
        });
        NoiseProxy { sock, to_vm, to_host, accept: Some(accept) }
    }

    /// Both directions' counters, for a report.
    pub fn summary(&self) -> String {
        format!("bridge->vm: {}; vm->bridge: {}", self.to_vm, self.to_host)
    }
}

impl Drop for NoiseProxy {
    fn drop(&mut self) {
        // The relay threads end when either side closes (the VM or the
        // bridge goes away first); do not wait for them here.
        drop(self.accept.take());
    }
}

/// Copies `from` to `to` through `injector` until either end closes; then
/// shuts both down so the other direction ends too.
fn relay(mut from: UnixStream, mut to: UnixStream, mut injector: Injector) {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(8192);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.clear();
        injector.apply(&buf[..n], &mut out);
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults_at_the_set_rate() {
        let input: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let run = |seed| {
            let counters = Arc::new(Counters::default());
            let mut out = Vec::new();
            Injector::new(100, seed, Arc::clone(&counters)).apply(&input, &mut out);
            (out, counters.faults())
        };
        let (a, faults) = run(7);
        assert_eq!(run(7).0, a);
        assert_ne!(run(8).0, a);
        assert!((800..1200).contains(&faults), "{faults} faults in 100000 bytes at 1/100");
    }

    #[test]
    fn rate_zero_passes_everything() {
        let counters = Arc::new(Counters::default());
        let mut out = Vec::new();
        Injector::new(0, 1, Arc::clone(&counters)).apply(b"$g#67", &mut out);
        assert_eq!(out, b"$g#67");
        assert_eq!(counters.faults(), 0);
    }
}
