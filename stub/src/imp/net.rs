//! The network transport's statics and clock (feature `net`): the claim
//! queue that `net_claim` fills, the TCP and packet buffers, the TSC clock
//! smoltcp's timers run on, and the lock-free input check that `poll`
//! makes while the unikernel runs.

use super::arch;
use super::session::{rdtsc, Buffers};
use crate::config::Config;
use crate::global::{Global, SetOnce};
use crate::link::Pending;
use crate::net::claim::{classify, Claim, ClaimQueue};
use crate::net::device::Share;
use crate::net::transport::{Addressing, Memory, NetTransport, RX_BYTES, SOCKET_SLOTS, TX_BYTES};
use crate::net::CLAIM_SLOTS;
use crate::Nic;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use smoltcp::iface::SocketStorage;
use smoltcp::time::{Duration, Instant};

/// The network transport's packet size (advertised as `PacketSize`): a
/// 32 KiB memory read per round trip.
pub const NET_PACKET_SIZE: usize = 64 * 1024;

/// Frames a shared NIC claimed for the stub while the unikernel ran.
static CLAIMS: ClaimQueue<CLAIM_SLOTS> = ClaimQueue::new();
/// The stub's port for `net_claim` (0: no network stub, nothing claimed).
static CLAIM_PORT: AtomicU16 = AtomicU16::new(0);
/// The stub's IPv4 address for `net_claim` (big-endian).
static CLAIM_ADDR: AtomicU32 = AtomicU32::new(0);
/// The NIC's own lock-free check (a dedicated NIC's receive ring).
static NIC_PENDING: SetOnce<Pending> = SetOnce::new();
/// The TSC value at which smoltcp next wants polling (a keep-alive, a
/// retransmission); `u64::MAX`: not before a frame arrives.
static WAKE_TSC: AtomicU64 = AtomicU64::new(u64::MAX);
/// TSC ticks per microsecond (set at init).
static TSC_PER_US: AtomicU64 = AtomicU64::new(Config::FALLBACK_TSC_HZ / 1_000_000);

#[allow(clippy::declare_interior_mutable_const)]
const NO_SOCKET: SocketStorage<'static> = SocketStorage::EMPTY;
static SOCKETS: Global<[SocketStorage<'static>; SOCKET_SLOTS]> =
    Global::new([NO_SOCKET; SOCKET_SLOTS]);
static RX0: Global<[u8; RX_BYTES]> = Global::new([0; RX_BYTES]);
static RX1: Global<[u8; RX_BYTES]> = Global::new([0; RX_BYTES]);
static TX0: Global<[u8; TX_BYTES]> = Global::new([0; TX_BYTES]);
static TX1: Global<[u8; TX_BYTES]> = Global::new([0; TX_BYTES]);
static TRANSPORT: Global<Option<NetTransport<'static>>> = Global::new(None);
static BUFFERS: Global<Buffers<NET_PACKET_SIZE>> = Global::new(Buffers::new());
/// The transport's name in messages: "virtio-net 10.0.2.15:1234 (dhcp)".
static NAME: Global<Name> = Global::new(Name { text: [0; NAME_BYTES], len: 0 });
const NAME_BYTES: usize = 80;

struct Name {
    text: [u8; NAME_BYTES],
    len: usize,
}

impl core::fmt::Write for Name {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            // Only ASCII goes in (the NIC's name is cut at a non-ASCII
            // byte), so the text stays valid UTF-8 whatever is cut.
            if !b.is_ascii() {
                return Err(core::fmt::Error);
            }
            let slot = self.text.get_mut(self.len).ok_or(core::fmt::Error)?;
            *slot = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// The time now, from the TSC.
fn clock() -> Instant {
    let per_us = TSC_PER_US.load(Ordering::Relaxed).max(1);
    Instant::from_micros((rdtsc() / per_us).min(i64::MAX as u64) as i64)
}

/// When smoltcp next wants polling, as a TSC value for [`net_pending`].
fn wake(delay: Option<Duration>) {
    let tsc = match delay {
        None => u64::MAX,
        Some(d) => {
            let ticks = d.total_micros().saturating_mul(TSC_PER_US.load(Ordering::Relaxed).max(1));
            rdtsc().saturating_add(ticks)
        }
    };
    WAKE_TSC.store(tsc, Ordering::Relaxed);
}

/// The lock-free input check `poll` makes: a claimed frame, the NIC's own
/// check, or a smoltcp timer due.
fn net_pending(_: usize) -> bool {
    !CLAIMS.is_empty()
        || NIC_PENDING.get().is_some_and(|p| p.input_waiting())
        || rdtsc() >= WAKE_TSC.load(Ordering::Relaxed)
}

/// The TSC rate: the configured one, else CPUID's (leaf 0x15: crystal
/// and ratio; leaf 0x16: base MHz), else [`Config::FALLBACK_TSC_HZ`].
fn tsc_hz(config: &Config) -> u64 {
    if config.tsc_hz != 0 {
        return config.tsc_hz;
    }
    let max_leaf = arch::cpuid(0)[0];
    if max_leaf >= 0x15 {
        let [den, num, crystal, _] = arch::cpuid(0x15);
        if den != 0 && num != 0 && crystal != 0 {
            return u64::from(crystal) * u64::from(num) / u64::from(den);
        }
    }
    if max_leaf >= 0x16 {
        let mhz = arch::cpuid(0x16)[0] & 0xffff;
        if mhz != 0 {
            return u64::from(mhz) * 1_000_000;
        }
    }
    Config::FALLBACK_TSC_HZ
}

/// `net_claim`: lock-free, any context.
pub fn claim(frame: &[u8]) -> bool {
    let port = CLAIM_PORT.load(Ordering::Acquire);
    if port == 0 {
        return false;
    }
    let addr = CLAIM_ADDR.load(Ordering::Relaxed).to_be_bytes();
    match classify(frame, port, Some(addr)) {
        Claim::Stub => {
            // Kept or dropped (full), the frame is the stub's: TCP sends
            // it again if it was dropped.
            CLAIMS.push(frame);
            true
        }
        Claim::Arp => {
            CLAIMS.push(frame);
            false
        }
        Claim::Dhcp | Claim::Other => false,
    }
}

/// How the address was found, for the ready message.
#[derive(Clone, Copy)]
pub enum How {
    Dhcp,
    Static,
}

/// The transport, built and addressed: ready for `init_static`. `Err`
/// carries the console message.
pub fn build(
    nic: &'static mut dyn Nic,
    share: Share,
    config: &Config,
    addressing: Option<Addressing>,
) -> Result<(&'static mut NetTransport<'static>, &'static mut Buffers<NET_PACKET_SIZE>), &'static str>
{
    const TWICE: &str = "init called twice; the stub keeps its first transport";
    let hz = tsc_hz(config);
    TSC_PER_US.store((hz / 1_000_000).max(1), Ordering::Relaxed);
    let nic_pending = nic.pending();
    let nic_name = nic.name();
    let (Some(sockets), Some(rx0), Some(rx1), Some(tx0), Some(tx1), Some(slot), Some(buffers)) = (
        SOCKETS.lock(),
        RX0.lock(),
        RX1.lock(),
        TX0.lock(),
        TX1.lock(),
        TRANSPORT.lock(),
        BUFFERS.lock(),
    ) else {
        return Err(TWICE);
    };
    if !NIC_PENDING.set(nic_pending) {
        return Err(TWICE);
    }
    // Taken once and never given back: the guards are leaked on purpose.
    let memory = Memory {
        sockets: sockets.leak(),
        rx: [&mut rx0.leak()[..], &mut rx1.leak()[..]],
        tx: [&mut tx0.leak()[..], &mut tx1.leak()[..]],
    };
    let mut t = NetTransport::new(nic, &CLAIMS, share, config.port, memory, clock, rdtsc())?;
    let how = match addressing {
        Some(a) => {
            t.set_address(a);
            How::Static
        }
        None => {
            if t.dhcp(DHCP_WAIT).is_none() {
                return Err(
                    "no DHCP answer within 5 s (ukdb.net=IP/PREFIX[,gw=IP] sets an address); network stub not started",
                );
            }
            How::Dhcp
        }
    };
    t.set_pending(Pending::new(net_pending, 0));
    t.set_wake(wake);
    if let Some(name) = NAME.lock() {
        let name = name.leak();
        let _ = write_name(name, nic_name, t.address(), config.port, how);
        let text = name.text.get(..name.len).unwrap_or_default();
        t.set_name(core::str::from_utf8(text).unwrap_or("network"));
    }
    let slot = slot.leak();
    let t = slot.insert(t);
    Ok((t, buffers.leak()))
}

/// How long `init` waits for a DHCP answer.
const DHCP_WAIT: Duration = Duration::from_secs(5);

fn write_name(
    name: &mut Name,
    nic: &str,
    addr: Option<[u8; 4]>,
    port: u16,
    how: How,
) -> core::fmt::Result {
    use core::fmt::Write;
    let [a, b, c, d] = addr.unwrap_or_default();
    let how = match how {
        How::Dhcp => "dhcp",
        How::Static => "static",
    };
    write!(name, "{nic} {a}.{b}.{c}.{d}:{port} ({how})")
}

/// Frames for the stub are claimed from now on (after the stub started).
pub fn start_claiming(addr: [u8; 4], port: u16) {
    CLAIM_ADDR.store(u32::from_be_bytes(addr), Ordering::Relaxed);
    CLAIM_PORT.store(port, Ordering::Release);
}
