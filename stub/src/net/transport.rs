//! RSP over TCP: a [`Transport`] on smoltcp, over the stub's [`Nic`].
//!
//! Two TCP sockets on the stub's port, so a connection can always be
//! accepted while another is served: the first to establish is the
//! debugger's; while it lasts, a second one is refused at once with a
//! reset (the first is not disturbed), unless the first has said nothing
//! at all for [`SILENT_GRACE`] since it connected: then the silent one is
//! reset and the new one is kept. The debugger's socket has Nagle and
//! delayed ACKs off, keep-alives every [`KEEP_ALIVE`] and a [`TIMEOUT`], so
//! a debugger that vanishes is noticed while the stub runs
//! ([`LinkEvent::Gone`]), as is one that resets or closes its connection.
//!
//! Time is passed in smoltcp's style: the transport asks its clock (a plain
//! function) whenever it polls, and tells its `wake` hook when it next
//! needs polling (a keep-alive, a retransmission), so the unikernel's
//! `poll` can enter the stub then. smoltcp's timers run on the time the
//! stub spends polling: a gap between two polls counts as at most the
//! delay the transport asked for plus [`MAX_GAP`], so a unikernel that runs
//! a minute without calling `poll` does not find its debugger timed out at
//! the next stop (the debugger's keep-alive answers were simply not read
//! meanwhile), while timers asked for fire on time. Pure logic over the [`Nic`] trait:
//! host-tested against a smoltcp client on a back-to-back link.

use super::device::{NicDevice, Share};
use super::CLAIM_SLOTS;
use crate::link::{LinkEvent, Pending, Transport};
use crate::net::claim::ClaimQueue;
use crate::nic::Nic;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// A client that connected and has sent nothing for this long gives way to
/// the next one.
pub const SILENT_GRACE: Duration = Duration::from_secs(3);
/// The debugger's socket sends a keep-alive after this much silence.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// The debugger is gone when it has not answered for this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Each socket's receive buffer: a 64 KiB packet and some slack.
pub const RX_BYTES: usize = 72 * 1024;
/// Each socket's send buffer: a whole 64 KiB reply twice over, so the
/// stub rarely waits for room.
pub const TX_BYTES: usize = 128 * 1024;
/// The longest gap between two polls that smoltcp's timers see.
pub const MAX_GAP: Duration = Duration::from_millis(100);
/// Socket slots: two TCP sockets, and the DHCP client while it runs.
pub const SOCKET_SLOTS: usize = 3;

/// The memory a [`NetTransport`] works in (statics in the stub; no heap).
pub struct Memory<'a> {
    /// smoltcp's socket slots.
    pub sockets: &'a mut [SocketStorage<'a>; SOCKET_SLOTS],
    /// Receive buffers of the two TCP sockets, [`RX_BYTES`] or more each.
    pub rx: [&'a mut [u8]; 2],
    /// Send buffers of the two TCP sockets, [`TX_BYTES`] or more each.
    pub tx: [&'a mut [u8]; 2],
}

/// An IPv4 address with its prefix, and the default gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// The address.
    pub addr: [u8; 4],
    /// The prefix length (0-32).
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<[u8; 4]>,
}

/// RSP over TCP on a NIC.
pub struct NetTransport<'a> {
    iface: Interface,
    device: NicDevice<'a, CLAIM_SLOTS>,
    sockets: SocketSet<'a>,
    tcp: [SocketHandle; 2],
    port: u16,
    /// The debugger's socket (index into `tcp`).
    active: Option<usize>,
    /// When it connected (the clock's time), and whether it has sent
    /// anything since.
    since: Instant,
    heard: bool,
    /// A link event the session has not taken yet.
    event: Option<LinkEvent>,
    clock: fn() -> Instant,
    /// The clock at the last poll, and smoltcp's time then (see
    /// [`MAX_GAP`]).
    last_clock: Instant,
    time: Instant,
    /// The longest gap smoltcp's time takes whole: the delay last asked
    /// for, plus [`MAX_GAP`].
    gap: Duration,
    wake: fn(Option<Duration>),
    pending: Pending,
    name: &'static str,
}

impl<'a> NetTransport<'a> {
    /// A transport on `nic` (the frames claimed for it arrive in
    /// `claims`), listening on TCP `port`, without an address yet (see
    /// [`NetTransport::set_address`], [`NetTransport::dhcp`]). `clock` is
    /// the time now; `seed` seeds smoltcp's random numbers (TCP sequence
    /// numbers). Fails on a MAC that is not unicast or port 0.
    pub fn new(
        nic: &'a mut dyn Nic,
        claims: &'a ClaimQueue<CLAIM_SLOTS>,
        share: Share,
        port: u16,
        memory: Memory<'a>,
        clock: fn() -> Instant,
        seed: u64,
    ) -> Result<Self, &'static str> {
        let mac = EthernetAddress(nic.mac());
        if !mac.is_unicast() {
            return Err("the NIC's MAC address is not a unicast address");
        }
        if port == 0 {
            return Err("port 0");
        }
        let mut device = NicDevice::new(nic, claims, share);
        device.port = port;
        let mut config = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        config.random_seed = seed;
        let start = clock();
        let iface = Interface::new(config, &mut device, start);
        let Memory { sockets, rx: [rx0, rx1], tx: [tx0, tx1] } = memory;
        let sockets: &'a mut [SocketStorage<'a>] = sockets;
        let mut set = SocketSet::new(sockets);
        let mut add = |rx: &'a mut [u8], tx: &'a mut [u8]| {
            let mut socket =
                tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
            socket.set_nagle_enabled(false);
            socket.set_ack_delay(None);
            socket.set_keep_alive(Some(KEEP_ALIVE));
            socket.set_timeout(Some(TIMEOUT));
            // `port` is not 0 (checked above): listening succeeds.
            let _ = socket.listen(port);
            set.add(socket)
        };
        let tcp = [add(rx0, tx0), add(rx1, tx1)];
        Ok(NetTransport {
            iface,
            device,
            sockets: set,
            tcp,
            port,
            active: None,
            since: start,
            heard: false,
            event: None,
            clock,
            last_clock: start,
            time: start,
            gap: MAX_GAP,
            wake: |_| {},
            pending: Pending::never(),
            name: "network",
        })
    }

    /// The lock-free input check [`Transport::pending`] returns.
    pub fn set_pending(&mut self, pending: Pending) {
        self.pending = pending;
    }

    /// What [`Transport::name`] returns.
    pub fn set_name(&mut self, name: &'static str) {
        self.name = name;
    }

    /// Told after every poll how soon the transport next needs one (`None`:
    /// only when a frame arrives; zero: now).
    pub fn set_wake(&mut self, wake: fn(Option<Duration>)) {
        self.wake = wake;
    }

    /// The stub's address, once it has one.
    pub fn address(&self) -> Option<[u8; 4]> {
        self.device.addr
    }

    /// Uses `a` as the stub's address (and its gateway as the default
    /// route).
    pub fn set_address(&mut self, a: Addressing) {
        let [x, y, z, w] = a.addr;
        let cidr = Ipv4Cidr::new(Ipv4Address::new(x, y, z, w), a.prefix.min(32));
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(cidr));
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some([x, y, z, w]) = a.gateway {
            let _ = self.iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(x, y, z, w));
        }
        self.device.addr = Some(a.addr);
    }

    /// Asks DHCPv4 for an address for up to `wait`, and uses it. The
    /// lease is not renewed (the stub polls only while the world is
    /// stopped): the address is kept as if static.
    pub fn dhcp(&mut self, wait: Duration) -> Option<Addressing> {
        let handle = self.sockets.add(dhcpv4::Socket::new());
        self.device.dhcp = true;
        let mut got = None;
        let deadline = self.now().1 + wait;
        loop {
            let (now, real) = self.now();
            if got.is_some() || real >= deadline {
                break;
            }
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            if let Some(dhcpv4::Event::Configured(config)) =
                self.sockets.get_mut::<dhcpv4::Socket>(handle).poll()
            {
                got = Some(Addressing {
                    addr: config.address.address().octets(),
                    prefix: config.address.prefix_len(),
                    gateway: config.router.map(|r| r.octets()),
                });
            }
            core::hint::spin_loop();
        }
        self.sockets.remove(handle);
        self.device.dhcp = false;
        if let Some(a) = got {
            self.set_address(a);
        }
        got
    }

    /// Polls the interface (frames in and out, timers), then looks at the
    /// sockets: new connections, the debugger's gone.
    pub fn poll(&mut self) {
        // A refusal or a reset queued by `service` goes out in the next
        // round; three rounds settle any change.
        for _ in 0..3 {
            let (now, real) = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            if !self.service(real) {
                break;
            }
        }
        self.tell_wake();
    }

    /// Takes in every frame waiting, sending nothing (a reset for a stray
    /// segment aside): whether any arrived.
    fn ingress(&mut self) -> bool {
        let (now, _) = self.now();
        let mut any = false;
        while self.iface.poll_ingress_single(now, &mut self.device, &mut self.sockets)
            != smoltcp::iface::PollIngressSingleResult::None
        {
            any = true;
        }
        any
    }

    /// Whether smoltcp wants polling now (something to send, or a timer).
    fn due(&mut self) -> bool {
        let (now, _) = self.now();
        self.iface.poll_at(now, &self.sockets).is_some_and(|at| at <= now)
    }

    /// smoltcp's time and the clock's, now (see [`MAX_GAP`]).
    fn now(&mut self) -> (Instant, Instant) {
        let real = (self.clock)();
        let step = real - self.last_clock;
        self.time += if step > self.gap { self.gap } else { step };
        self.gap = MAX_GAP;
        self.last_clock = real;
        (self.time, real)
    }

    fn tell_wake(&mut self) {
        let delay = if self.event.is_some() {
            Some(Duration::ZERO)
        } else {
            let now = self.time;
            self.iface.poll_delay(now, &self.sockets)
        };
        self.gap = delay.map_or(MAX_GAP, |d| d + MAX_GAP);
        (self.wake)(delay);
    }

    fn socket(&mut self, i: usize) -> &mut tcp::Socket<'a> {
        let handle = if i == 0 { self.tcp[0] } else { self.tcp[1] };
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// The sockets' states after a poll (`now` is the clock's time):
    /// `true` when something changed that needs another round (a reset to
    /// send).
    fn service(&mut self, now: Instant) -> bool {
        let mut changed = false;
        if let Some(i) = self.active {
            let s = self.socket(i);
            let alive = match s.state() {
                tcp::State::Established => true,
                // Closed by the debugger: first what it sent before.
                tcp::State::CloseWait => s.can_recv(),
                _ => false,
            };
            if !alive {
                if s.state() == tcp::State::CloseWait {
                    s.close();
                } else if s.is_open() {
                    s.abort();
                }
                self.active = None;
                self.event = Some(LinkEvent::Gone);
                changed = true;
            }
        }
        for i in 0..2 {
            if self.active == Some(i) {
                continue;
            }
            let port = self.port;
            let s = self.socket(i);
            match s.state() {
                tcp::State::Established | tcp::State::CloseWait => {
                    match self.active {
                        None => self.accept(i, now),
                        Some(old) if !self.heard && now - self.since >= SILENT_GRACE => {
                            // The first said nothing: it gives way.
                            self.socket(old).abort();
                            self.accept(i, now);
                        }
                        Some(_) => self.socket(i).abort(),
                    }
                    changed = true;
                }
                // Free once its reset (if any) went out.
                tcp::State::Closed if s.remote_endpoint().is_none() => {
                    let _ = s.listen(port);
                }
                _ => {}
            }
        }
        changed
    }

    fn accept(&mut self, i: usize, now: Instant) {
        self.active = Some(i);
        self.since = now;
        self.heard = false;
        self.event = Some(LinkEvent::Connected);
    }

    /// What the debugger sent, from the socket's buffer.
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let Some(i) = self.active else {
            return 0;
        };
        let n = self.socket(i).recv_slice(buf).unwrap_or(0);
        if n > 0 {
            self.heard = true;
        }
        n
    }
}

impl Transport for NetTransport<'_> {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        // A new connection's bytes only after the session took its event.
        if self.event.is_some() {
            return 0;
        }
        let n = self.recv(buf);
        if n > 0 {
            return n;
        }
        // Frames in first, nothing out: the ACK of a request then rides on
        // its reply (sent by `flush`) instead of going alone before it.
        let arrived = self.ingress();
        if arrived {
            let n = self.recv(buf);
            if n > 0 {
                return n;
            }
        }
        // The whole round (timers, ACKs, new connections) only when a frame
        // came or smoltcp has something due: the session calls this in a
        // tight loop while the world is stopped, and under TCG a full poll
        // costs more than the wait for the next frame.
        if !arrived && !self.due() {
            return 0;
        }
        self.poll();
        if self.event.is_some() {
            return 0;
        }
        self.recv(buf)
    }

    fn write(&mut self, bytes: &[u8]) {
        let Some(i) = self.active else {
            // Nobody to send to: dropped.
            return;
        };
        let mut rest = bytes;
        while !rest.is_empty() && self.active == Some(i) {
            let s = self.socket(i);
            if !s.may_send() {
                return;
            }
            let n = s.send_slice(rest).unwrap_or(0);
            rest = rest.get(n..).unwrap_or_default();
            if n == 0 {
                // Full: send and take ACKs until there is room (or the
                // debugger is gone: its timeout ends this).
                self.poll();
            }
        }
    }

    fn flush(&mut self) {
        self.poll();
    }

    fn poll_event(&mut self) -> Option<LinkEvent> {
        let event = self.event.take();
        if event.is_some() {
            self.tell_wake();
        }
        event
    }

    fn carries_console(&self) -> bool {
        false
    }

    fn pending(&self) -> Pending {
        self.pending
    }

    fn busy(&self) -> bool {
        self.device.nic().busy()
    }

    fn name(&self) -> &'static str {
        self.name
    }
}
