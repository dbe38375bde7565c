//! The network transport against a fake NIC: the test side is a smoltcp
//! interface with TCP clients, wired back to back with the stub's.

use super::claim::{classify, Claim, ClaimQueue};
use super::device::Share;
use super::transport::{Addressing, Memory, NetTransport, RX_BYTES, SILENT_GRACE, TX_BYTES};
use super::CLAIM_SLOTS;
use crate::link::{LinkEvent, Pending, Transport};
use crate::nic::{Nic, MAX_FRAME};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv4Repr, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const PORT: u16 = 1234;
const STUB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const STUB_IP: [u8; 4] = [10, 0, 0, 2];
const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];

thread_local! {
    static NOW: Cell<i64> = const { Cell::new(1_000_000) };
    /// How far each reading of the clock moves it (time passing while the
    /// stub spins on its own, as the TSC does).
    static TICK: Cell<i64> = const { Cell::new(0) };
}

fn clock() -> Instant {
    let tick = TICK.with(Cell::get);
    Instant::from_micros(NOW.with(|n| {
        n.set(n.get() + tick);
        n.get()
    }))
}

fn advance(d: Duration) {
    NOW.with(|n| n.set(n.get() + d.total_micros() as i64));
}

fn leak<T>(v: T) -> &'static mut T {
    Box::leak(Box::new(v))
}

fn leak_bytes(n: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; n].into_boxed_slice())
}

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// The stub's NIC: frames from the client in `inbox`, to it in `outbox`.
struct FakeNic {
    inbox: Queue,
    outbox: Queue,
    /// When set, frames sent are lost (a vanished peer).
    cut: Arc<AtomicBool>,
    returned: Arc<Mutex<Vec<Vec<u8>>>>,
    busy: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl Nic for FakeNic {
    fn mac(&self) -> [u8; 6] {
        STUB_MAC
    }
    fn receive(&mut self, buf: &mut [u8]) -> usize {
        match self.inbox.lock().unwrap().pop_front() {
            Some(f) if f.len() <= buf.len() => {
                buf[..f.len()].copy_from_slice(&f);
                f.len()
            }
            Some(_) => 0,
            None => 0,
        }
    }
    fn transmit(&mut self, frame: &[u8]) -> bool {
        assert!(frame.len() <= MAX_FRAME);
        self.sent.fetch_add(1, Ordering::Relaxed);
        if !self.cut.load(Ordering::Relaxed) {
            self.outbox.lock().unwrap().push_back(frame.to_vec());
        }
        true
    }
    fn not_mine(&mut self, frame: &[u8]) {
        self.returned.lock().unwrap().push(frame.to_vec());
    }
    fn pending(&self) -> Pending {
        Pending::never()
    }
    fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }
    fn name(&self) -> &'static str {
        "fake-net"
    }
}

/// The client's side of the wire.
struct ClientDev {
    to_stub: Queue,
    from_stub: Queue,
    cut: Arc<AtomicBool>,
}

struct ClientRx(Vec<u8>);
struct ClientTx<'a>(&'a Queue, bool);

impl phy::RxToken for ClientRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for ClientTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        if !self.1 {
            self.0.lock().unwrap().push_back(frame);
        }
        r
    }
}

impl Device for ClientDev {
    type RxToken<'a> = ClientRx;
    type TxToken<'a> = ClientTx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(ClientRx, ClientTx<'_>)> {
        let frame = self.from_stub.lock().unwrap().pop_front()?;
        let cut = self.cut.load(Ordering::Relaxed);
        Some((ClientRx(frame), ClientTx(&self.to_stub, cut)))
    }
    fn transmit(&mut self, _: Instant) -> Option<ClientTx<'_>> {
        Some(ClientTx(&self.to_stub, self.cut.load(Ordering::Relaxed)))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

struct Net {
    stub: NetTransport<'static>,
    claims: &'static ClaimQueue<CLAIM_SLOTS>,
    iface: Interface,
    dev: ClientDev,
    sockets: SocketSet<'static>,
    to_stub: Queue,
    cut: Arc<AtomicBool>,
    returned: Arc<Mutex<Vec<Vec<u8>>>>,
    busy: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    events: Vec<LinkEvent>,
    next_port: u16,
}

impl Net {
    fn new(share: Share) -> Net {
        let to_stub: Queue = Arc::default();
        let from_stub: Queue = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let returned: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let busy = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let nic = leak(FakeNic {
            inbox: to_stub.clone(),
            outbox: from_stub.clone(),
            cut: cut.clone(),
            returned: returned.clone(),
            busy: busy.clone(),
            sent: sent.clone(),
        });
        let claims: &'static ClaimQueue<CLAIM_SLOTS> = leak(ClaimQueue::new());
        let memory = Memory {
            sockets: leak([SocketStorage::EMPTY; 3]),
            rx: [leak_bytes(RX_BYTES), leak_bytes(RX_BYTES)],
            tx: [leak_bytes(TX_BYTES), leak_bytes(TX_BYTES)],
        };
        let mut stub = NetTransport::new(nic, claims, share, PORT, memory, clock, 7).unwrap();
        stub.set_address(Addressing { addr: STUB_IP, prefix: 24, gateway: None });
        let mut dev = ClientDev { to_stub: to_stub.clone(), from_stub, cut: cut.clone() };
        let mut config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(CLIENT_MAC)));
        config.random_seed = 99;
        let mut iface = Interface::new(config, &mut dev, clock());
        let [a, b, c, d] = CLIENT_IP;
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), 24)).unwrap();
        });
        let storage: &'static mut [SocketStorage<'static>] = leak([SocketStorage::EMPTY; 8]);
        Net {
            stub,
            claims,
            iface,
            dev,
            sockets: SocketSet::new(storage),
            to_stub,
            cut,
            returned,
            busy,
            sent,
            events: Vec::new(),
            next_port: 40000,
        }
    }

    /// A client socket connecting to the stub.
    fn connect(&mut self) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(leak_bytes(256 * 1024)),
            tcp::SocketBuffer::new(leak_bytes(256 * 1024)),
        );
        s.set_ack_delay(None);
        let [a, b, c, d] = STUB_IP;
        self.next_port += 1;
        s.connect(self.iface.context(), (IpAddress::v4(a, b, c, d), PORT), self.next_port).unwrap();
        self.sockets.add(s)
    }

    fn client(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// One millisecond: the client's interface, then the stub's (as the
    /// session does it: link events first, then a read that polls).
    fn step(&mut self, read: &mut Vec<u8>) {
        advance(Duration::from_millis(1));
        self.iface.poll(clock(), &mut self.dev, &mut self.sockets);
        if let Some(e) = self.stub.poll_event() {
            self.events.push(e);
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = self.stub.read(&mut buf);
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        if let Some(e) = self.stub.poll_event() {
            self.events.push(e);
        }
    }

    /// Steps until `done` or a simulated minute has passed.
    fn run_until(&mut self, read: &mut Vec<u8>, mut done: impl FnMut(&mut Net, &[u8]) -> bool) {
        for _ in 0..60_000 {
            if done(self, read) {
                return;
            }
            self.step(read);
        }
        panic!("condition not reached; events {:?}", self.events);
    }

    fn established(&mut self, h: SocketHandle) {
        let mut sink = Vec::new();
        self.run_until(&mut sink, |n, _| n.client(h).state() == tcp::State::Established);
        self.run_until(&mut sink, |n, _| n.events.contains(&LinkEvent::Connected));
        assert!(sink.is_empty());
    }
}

#[test]
fn connect_exchange_a_64k_packet_and_close() {
    let mut net = Net::new(Share::Dedicated);
    let c = net.connect();
    net.established(c);
    assert_eq!(net.events, [LinkEvent::Connected]);
    // Debugger -> stub: 64 KiB.
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    net.run_until(&mut got, |n, got| {
        if sent < big.len() {
            sent += n.client(c).send_slice(&big[sent..]).unwrap();
        }
        got.len() == big.len()
    });
    assert_eq!(got, big);
    // Stub -> debugger: a 64 KiB reply, in one write and one flush.
    let reply: Vec<u8> = (0..64 * 1024 + 4).map(|i| (i * 13 % 253) as u8).collect();
    net.stub.write(&reply);
    net.stub.flush();
    let mut back = Vec::new();
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| {
        let mut buf = [0u8; 8192];
        while let Ok(k @ 1..) = n.client(c).recv_slice(&mut buf) {
            back.extend_from_slice(&buf[..k]);
        }
        back.len() == reply.len()
    });
    assert_eq!(back, reply);
    // The debugger closes: gone, and a new one is taken.
    net.client(c).close();
    net.run_until(&mut sink, |n, _| n.events.contains(&LinkEvent::Gone));
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Gone]);
    net.run_until(&mut sink, |n, _| {
        n.client(c).state() == tcp::State::TimeWait || n.client(c).state() == tcp::State::Closed
    });
    let d = net.connect();
    net.established(d);
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Gone, LinkEvent::Connected]);
}

#[test]
fn small_writes_are_gathered_into_one_segment() {
    let mut net = Net::new(Share::Dedicated);
    let c = net.connect();
    net.established(c);
    let before = net.sent.load(Ordering::Relaxed);
    for &b in b"$OK#9a" {
        net.stub.write(&[b]);
    }
    assert_eq!(net.sent.load(Ordering::Relaxed), before, "write sends nothing by itself");
    net.stub.flush();
    assert_eq!(net.sent.load(Ordering::Relaxed), before + 1, "flush sends one segment now");
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| n.client(c).recv_queue() == 6);
    let mut buf = [0u8; 16];
    assert_eq!(net.client(c).recv_slice(&mut buf), Ok(6));
    assert_eq!(&buf[..6], b"$OK#9a");
}

#[test]
fn a_second_client_is_refused_and_the_first_goes_on() {
    let mut net = Net::new(Share::Dedicated);
    let a = net.connect();
    net.established(a);
    // The first has spoken.
    net.client(a).send_slice(b"$?#3f").unwrap();
    let mut got = Vec::new();
    net.run_until(&mut got, |_, got| got == b"$?#3f");
    // Long after, a second one: reset at once.
    advance(Duration::from_secs(30));
    let b = net.connect();
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| n.client(b).state() == tcp::State::Closed);
    assert_eq!(net.events, [LinkEvent::Connected]);
    assert_eq!(net.client(a).state(), tcp::State::Established);
    // The first still talks both ways.
    net.client(a).send_slice(b"$g#67").unwrap();
    net.run_until(&mut sink, |_, got| got == b"$g#67");
    net.stub.write(b"+");
    net.stub.flush();
    net.run_until(&mut sink, |n, _| n.client(a).recv_queue() == 1);
    // And a third, later, is refused too.
    let c = net.connect();
    net.run_until(&mut sink, |n, _| n.client(c).state() == tcp::State::Closed);
    assert_eq!(net.events, [LinkEvent::Connected]);
}

#[test]
fn a_silent_client_gives_way_after_the_grace_only() {
    let mut net = Net::new(Share::Dedicated);
    let a = net.connect();
    net.established(a);
    // Within the grace: the newcomer is refused.
    let b = net.connect();
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| n.client(b).state() == tcp::State::Closed);
    assert_eq!(net.client(a).state(), tcp::State::Established);
    assert_eq!(net.events, [LinkEvent::Connected]);
    // After it: the silent one is reset and the newcomer kept.
    advance(SILENT_GRACE);
    let c = net.connect();
    net.run_until(&mut sink, |n, _| n.client(a).state() == tcp::State::Closed);
    net.run_until(&mut sink, |n, _| n.events.len() == 2);
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Connected]);
    assert_eq!(net.client(c).state(), tcp::State::Established);
    net.client(c).send_slice(b"$?#3f").unwrap();
    net.run_until(&mut sink, |_, got| got == b"$?#3f");
}

#[test]
fn a_reset_is_gone() {
    let mut net = Net::new(Share::Dedicated);
    let a = net.connect();
    net.established(a);
    net.client(a).abort();
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| n.events.len() == 2);
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Gone]);
    // Writing to nobody drops the bytes and returns.
    net.stub.write(&[b'x'; 200_000]);
    net.stub.flush();
}

#[test]
fn a_vanished_debugger_times_out_even_when_the_stub_only_listens() {
    let mut net = Net::new(Share::Dedicated);
    let a = net.connect();
    net.established(a);
    net.client(a).send_slice(b"$?#3f").unwrap();
    let mut sink = Vec::new();
    net.run_until(&mut sink, |_, got| !got.is_empty());
    net.cut.store(true, Ordering::Relaxed);
    let start = clock();
    net.run_until(&mut sink, |n, _| n.events.len() == 2);
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Gone]);
    let took = clock() - start;
    assert!(took >= Duration::from_secs(9) && took <= Duration::from_secs(13), "{took}");
}

#[test]
fn a_full_send_buffer_waits_for_room_and_gives_up_when_the_link_dies() {
    let mut net = Net::new(Share::Dedicated);
    let a = net.connect();
    net.established(a);
    // More than the socket's buffer and the client's window: write polls
    // until the peer acknowledges; here the peer is gone, so the write
    // ends with the connection (its timeout), without taking every byte.
    net.cut.store(true, Ordering::Relaxed);
    TICK.with(|t| t.set(1000));
    net.stub.write(&vec![b'x'; 2 * TX_BYTES]);
    TICK.with(|t| t.set(0));
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| n.events.len() == 2);
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Gone]);
}

#[test]
fn the_unikernels_frames_go_back_and_arp_goes_to_both() {
    let mut net = Net::new(Share::Shared);
    // Something for the unikernel (UDP to port 53) is handed back as is.
    let udp = udp_frame(53, b"dns?");
    net.to_stub.lock().unwrap().push_back(udp.clone());
    let mut sink = Vec::new();
    net.step(&mut sink);
    assert_eq!(*net.returned.lock().unwrap(), vec![udp.clone()]);
    // A connection works; the client's ARP request is answered by the
    // stub and handed back too.
    let a = net.connect();
    net.established(a);
    let returned = net.returned.lock().unwrap().clone();
    assert_eq!(returned.len(), 2);
    assert!(matches!(classify(&returned[1], PORT, Some(STUB_IP)), Claim::Arp));
    // Frames claimed while the unikernel ran are read first.
    net.client(a).send_slice(b"$?#3f").unwrap();
    net.iface.poll(clock(), &mut net.dev, &mut net.sockets);
    let frames: Vec<_> = net.to_stub.lock().unwrap().drain(..).collect();
    for f in &frames {
        assert_eq!(classify(f, PORT, Some(STUB_IP)), Claim::Stub);
        assert!(net.claims.push(f));
    }
    assert!(!net.claims.is_empty());
    let mut got = Vec::new();
    net.run_until(&mut got, |_, got| got == b"$?#3f");
    assert!(net.claims.is_empty());
    assert_eq!(net.returned.lock().unwrap().len(), 2);
    // The NIC's busy flag is the transport's.
    assert!(!net.stub.busy());
    net.busy.store(true, Ordering::Relaxed);
    assert!(net.stub.busy());
    assert!(!net.stub.carries_console());
}

// ---- the classifier ----

fn eth(ethertype: EthernetProtocol, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(CLIENT_MAC),
        dst_addr: EthernetAddress(STUB_MAC),
        ethertype,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    repr.emit(&mut frame);
    fill(frame.payload_mut());
    buf
}

fn ipv4(
    proto: IpProtocol,
    dst: [u8; 4],
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: Ipv4Address::from(CLIENT_IP),
        dst_addr: Ipv4Address::from(dst),
        next_header: proto,
        payload_len,
        hop_limit: 64,
    };
    eth(EthernetProtocol::Ipv4, repr.buffer_len() + payload_len, |b| {
        let mut p = Ipv4Packet::new_unchecked(b);
        repr.emit(&mut p, &smoltcp::phy::ChecksumCapabilities::default());
        fill(p.payload_mut());
    })
}

fn tcp_frame(dst: [u8; 4], port: u16) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: 40000,
        dst_port: port,
        control: smoltcp::wire::TcpControl::Syn,
        seq_number: TcpSeqNumber(1),
        ack_number: None,
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    ipv4(IpProtocol::Tcp, dst, repr.buffer_len(), |b| {
        let mut p = TcpPacket::new_unchecked(b);
        repr.emit(
            &mut p,
            &IpAddress::from(Ipv4Address::from(CLIENT_IP)),
            &IpAddress::from(Ipv4Address::from(dst)),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
    })
}

fn udp_frame(port: u16, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr { src_port: 5000, dst_port: port };
    let len = repr.header_len() + payload.len();
    ipv4(IpProtocol::Udp, STUB_IP, len, |b| {
        let mut p = UdpPacket::new_unchecked(b);
        repr.emit(
            &mut p,
            &IpAddress::from(Ipv4Address::from(CLIENT_IP)),
            &IpAddress::from(Ipv4Address::from(STUB_IP)),
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
    })
}

fn arp_frame() -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(CLIENT_MAC),
        source_protocol_addr: Ipv4Address::from(CLIENT_IP),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::from(STUB_IP),
    };
    eth(EthernetProtocol::Arp, repr.buffer_len(), |b| {
        repr.emit(&mut ArpPacket::new_unchecked(b));
    })
}

#[test]
fn classifier_on_hand_built_frames() {
    let mine = tcp_frame(STUB_IP, PORT);
    assert_eq!(classify(&mine, PORT, Some(STUB_IP)), Claim::Stub);
    assert_eq!(classify(&mine, PORT, None), Claim::Stub);
    assert_eq!(classify(&tcp_frame(STUB_IP, 8080), PORT, Some(STUB_IP)), Claim::Other);
    assert_eq!(classify(&tcp_frame([10, 0, 0, 9], PORT), PORT, Some(STUB_IP)), Claim::Other);
    assert_eq!(classify(&mine, 0, None), Claim::Other);
    assert_eq!(classify(&arp_frame(), PORT, Some(STUB_IP)), Claim::Arp);
    assert_eq!(classify(&udp_frame(68, b"offer"), PORT, Some(STUB_IP)), Claim::Dhcp);
    assert_eq!(classify(&udp_frame(53, b"x"), PORT, Some(STUB_IP)), Claim::Other);
    let icmp = ipv4(IpProtocol::Icmp, STUB_IP, 8, |_| {});
    assert_eq!(classify(&icmp, PORT, Some(STUB_IP)), Claim::Other);
    let ipv6 = eth(EthernetProtocol::Ipv6, 60, |_| {});
    assert_eq!(classify(&ipv6, PORT, Some(STUB_IP)), Claim::Other);
    // A fragment (more fragments set) carries no header to check.
    let mut frag = mine.clone();
    frag[14 + 6] |= 0x20;
    assert_eq!(classify(&frag, PORT, Some(STUB_IP)), Claim::Other);
    // An IP total length beyond the frame, or a header length below 20.
    let mut long = mine.clone();
    long[14 + 2] = 0xff;
    assert_eq!(classify(&long, PORT, Some(STUB_IP)), Claim::Other);
    let mut short_hdr = mine.clone();
    short_hdr[14] = 0x44;
    assert_eq!(classify(&short_hdr, PORT, Some(STUB_IP)), Claim::Other);
}

#[test]
fn classifier_on_truncated_and_hostile_frames() {
    let mine = tcp_frame(STUB_IP, PORT);
    // Every truncation: never the stub's once a header is cut (the TCP
    // header is the last 20 bytes), never a panic.
    for n in 0..mine.len() {
        assert_eq!(classify(&mine[..n], PORT, Some(STUB_IP)), Claim::Other, "{n}");
    }
    for n in 0..arp_frame().len() {
        let _ = classify(&arp_frame()[..n], PORT, None);
    }
    // Pseudo-random bytes and mutations: total.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut f =
            if next() % 2 == 0 { mine.clone() } else { vec![0u8; (next() % 1600) as usize] };
        let len = f.len();
        for _ in 0..(next() % 8) {
            if len > 0 {
                f[(next() as usize) % len] = next() as u8;
            }
        }
        let _ = classify(&f, PORT, Some(STUB_IP));
    }
}

// ---- the claim queue ----

#[test]
fn claim_queue_keeps_order_drops_when_full_and_refuses_giants() {
    let q: Box<ClaimQueue<4>> = Box::default();
    let mut buf = [0u8; MAX_FRAME];
    assert!(q.is_empty());
    assert_eq!(q.pop(&mut buf), None);
    for i in 0..4u8 {
        assert!(q.push(&[i; 10]));
    }
    assert!(!q.push(&[9; 10]), "full");
    assert_eq!(q.dropped(), 1);
    assert_eq!(q.pop(&mut buf), Some(10));
    assert_eq!(buf[..10], [0; 10]);
    assert!(q.push(&[4; 3]));
    for want in [1u8, 2, 3] {
        assert_eq!(q.pop(&mut buf), Some(10));
        assert_eq!(buf[..10], [want; 10]);
    }
    assert_eq!(q.pop(&mut buf), Some(3));
    assert_eq!(buf[..3], [4; 3]);
    assert!(q.is_empty());
    assert!(!q.push(&vec![1u8; MAX_FRAME + 1]));
    assert!(q.push(&vec![1u8; MAX_FRAME]));
    // A buffer too small for the frame: dropped, reported as 0.
    assert_eq!(q.pop(&mut [0u8; 100]), Some(0));
    assert!(q.is_empty());
}

#[test]
fn claim_queue_with_concurrent_producers() {
    let q: &'static ClaimQueue<32> = leak(ClaimQueue::new());
    let producers: Vec<_> = (0..4u8)
        .map(|p| {
            std::thread::spawn(move || {
                let mut kept = 0;
                for i in 0..2000u32 {
                    let mut f = vec![p; 64];
                    f[..4].copy_from_slice(&i.to_le_bytes());
                    while !q.push(&f) {
                        std::hint::spin_loop();
                    }
                    kept += 1;
                }
                kept
            })
        })
        .collect();
    let mut last = [None::<u32>; 4];
    let mut got = 0;
    let mut buf = [0u8; MAX_FRAME];
    while got < 8000 {
        if let Some(n) = q.pop(&mut buf) {
            assert_eq!(n, 64);
            let p = buf[4] as usize;
            assert!(buf[4..64].iter().all(|&b| b == buf[4]), "a frame is never torn");
            let i = u32::from_le_bytes(buf[..4].try_into().unwrap());
            // Each producer's frames come out in its order.
            assert!(last[p].is_none_or(|l| i > l), "order {p}: {last:?} then {i}");
            last[p] = Some(i);
            got += 1;
        }
    }
    let kept: u32 = producers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(kept, 8000);
    assert!(q.is_empty());
}

#[test]
fn a_long_run_without_polls_does_not_time_the_debugger_out() {
    let mut net = Net::new(Share::Dedicated);
    let a = net.connect();
    net.established(a);
    net.client(a).send_slice(b"$c#63").unwrap();
    let mut got = Vec::new();
    net.run_until(&mut got, |_, got| got == b"$c#63");
    // The unikernel runs a minute without calling poll; then it stops.
    advance(Duration::from_secs(60));
    net.stub.write(b"$S05#b8");
    net.stub.flush();
    let mut sink = Vec::new();
    net.run_until(&mut sink, |n, _| n.client(a).recv_queue() == 7);
    for _ in 0..3000 {
        net.step(&mut sink);
    }
    assert_eq!(net.events, [LinkEvent::Connected]);
    assert_eq!(net.client(a).state(), tcp::State::Established);
}

thread_local! {
    static WAKE: Cell<Option<Duration>> = const { Cell::new(None) };
}

#[test]
fn timers_asked_for_fire_on_time_while_the_unikernel_runs() {
    let mut net = Net::new(Share::Dedicated);
    net.stub.set_wake(|d| WAKE.with(|w| w.set(d)));
    let a = net.connect();
    net.established(a);
    net.client(a).send_slice(b"$c#63").unwrap();
    let mut got = Vec::new();
    net.run_until(&mut got, |_, got| got == b"$c#63");
    // The debugger vanishes while the unikernel runs: the stub is entered
    // only when its wake time comes (keep-alives), and notices in time.
    net.cut.store(true, Ordering::Relaxed);
    let start = clock();
    let mut entries = 0;
    while net.events.len() < 2 {
        let delay = WAKE.with(Cell::get).expect("a keep-alive is due");
        advance(delay.max(Duration::from_millis(1)));
        net.stub.poll();
        if let Some(e) = net.stub.poll_event() {
            net.events.push(e);
        }
        entries += 1;
        assert!(entries < 100, "{entries} entries");
    }
    assert_eq!(net.events, [LinkEvent::Connected, LinkEvent::Gone]);
    let took = clock() - start;
    assert!(took >= Duration::from_secs(9) && took <= Duration::from_secs(13), "{took}");
    assert!(entries <= 10, "{entries} entries");
}
