//! The app's own network stack on the shared device: a smoltcp interface
//! configured by DHCP (or `ukdemo.ip=IP/PREFIX[,gw=IP]`) and a tiny HTTP
//! server on port 8080: `GET /` answers `TICKS <n>` (n =
//! [`crate::app::TICKS`]) and closes the connection. A few sockets serve
//! clients at the same time. Everything runs from [`poll`], called by the
//! app's main loop.

use super::{receive_for_app, transmit_for_app};
use crate::{println, pvh, time};
use core::fmt::Write;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use ukdb_stub::MAX_FRAME;

/// The HTTP server's port.
pub const HTTP_PORT: u16 = 8080;
/// Connections served at the same time.
const SOCKETS: usize = 4;
/// Receive and transmit buffer of each HTTP socket.
const TCP_BUF: usize = 1024;
/// A connection still open after this long is aborted (a client that
/// connects and sends nothing, or never acknowledges the close). Longer
/// than a debugger stop of a few seconds: the world, and this clock's
/// view of a connection, stops with it.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The app's view of the shared device, for smoltcp: one frame at a time
/// through [`receive_for_app`] and [`transmit_for_app`].
struct AppDevice {
    rx: [u8; MAX_FRAME],
    tx: [u8; MAX_FRAME],
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut [u8; MAX_FRAME]);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp asks for at most the MTU below, the buffer's size.
        let buf = &mut self.0[..len.min(MAX_FRAME)];
        let result = f(buf);
        transmit_for_app(buf);
        result
    }
}

impl Device for AppDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let n = receive_for_app(&mut self.rx);
        let frame = self.rx.get(..n).filter(|_| n > 0)?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

/// One HTTP connection's progress.
#[derive(Clone, Copy)]
struct Conn {
    handle: SocketHandle,
    /// When the connection was first seen active.
    since: Option<Instant>,
    /// The start of the request line.
    start: [u8; 8],
    start_len: usize,
    /// The last bytes received, to find the blank line that ends the
    /// request headers across segments.
    tail: [u8; 4],
    replied: bool,
}

impl Conn {
    fn new(handle: SocketHandle) -> Conn {
        Conn { handle, since: None, start: [0; 8], start_len: 0, tail: [0; 4], replied: false }
    }

    /// Takes request bytes; whether the headers are complete.
    fn take(&mut self, data: &[u8]) -> bool {
        let mut done = false;
        for &b in data {
            if let Some(slot) = self.start.get_mut(self.start_len) {
                *slot = b;
                self.start_len += 1;
            }
            self.tail = [self.tail[1], self.tail[2], self.tail[3], b];
            done |= self.tail == *b"\r\n\r\n" || self.tail[2..] == *b"\n\n";
        }
        done
    }
}

/// How the address was configured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Dhcp,
    Static,
}

struct Net {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: AppDevice,
    dhcp: Option<SocketHandle>,
    conns: [Conn; SOCKETS],
    mode: Mode,
    /// Whether the address is configured (a lease lost is said once).
    configured: bool,
}

/// Socket storage and TCP buffers, taken once by [`start`].
struct Memory {
    storage: [SocketStorage<'static>; SOCKETS + 1],
    rx: [[u8; TCP_BUF]; SOCKETS],
    tx: [[u8; TCP_BUF]; SOCKETS],
}

static mut MEMORY: Memory = Memory {
    storage: [SocketStorage::EMPTY; SOCKETS + 1],
    rx: [[0; TCP_BUF]; SOCKETS],
    tx: [[0; TCP_BUF]; SOCKETS],
};
static MEMORY_TAKEN: AtomicBool = AtomicBool::new(false);

/// The stack, once [`start`] has run. Used only from the main loop (and
/// `start` during boot); [`IN_USE`] keeps any reentry out.
static mut NET: Option<Net> = None;
static IN_USE: AtomicBool = AtomicBool::new(false);

fn now() -> Instant {
    let per_ms = (time::tsc_hz() / 1000).max(1);
    Instant::from_millis((time::rdtsc() / per_ms) as i64)
}

/// `IP/PREFIX[,gw=IP]`, a unicast address.
fn parse_static(text: &str) -> Option<(Ipv4Cidr, Option<Ipv4Address>)> {
    let (cidr, gw) = match text.split_once(',') {
        Some((cidr, gw)) => (cidr, Some(gw.strip_prefix("gw=")?.parse().ok()?)),
        None => (text, None),
    };
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: Ipv4Address = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|&p| p <= 32)?;
    IpAddress::Ipv4(addr).is_unicast().then_some((Ipv4Cidr::new(addr, prefix), gw))
}

/// Sets the address (and default route) and says so.
fn configure(iface: &mut Interface, cidr: Ipv4Cidr, gw: Option<Ipv4Address>, mode: Mode) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(cidr));
    });
    match gw {
        Some(gw) => {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        None => {
            iface.routes_mut().remove_default_ipv4_route();
        }
    }
    let how = if mode == Mode::Dhcp { "dhcp" } else { "static" };
    match gw {
        Some(gw) => {
            println!("ukdemo: net: {} gw {} ({}), http on port {}", cidr, gw, how, HTTP_PORT)
        }
        None => println!("ukdemo: net: {} ({}), http on port {}", cidr, how, HTTP_PORT),
    }
}

/// Builds the interface and the sockets for the device with `mac`.
pub(super) fn start(mac: [u8; 6]) {
    if MEMORY_TAKEN.swap(true, Ordering::Acquire) || IN_USE.swap(true, Ordering::Acquire) {
        return;
    }
    // SAFETY: taken once (the flag above): the only reference, for good.
    let memory = unsafe { &mut *addr_of_mut!(MEMORY) };
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = time::rdtsc();
    let mut device = AppDevice { rx: [0; MAX_FRAME], tx: [0; MAX_FRAME] };
    let mut iface = Interface::new(config, &mut device, now());
    let mut sockets = SocketSet::new(&mut memory.storage[..]);
    let conns = {
        let mut bufs = memory.rx.iter_mut().zip(memory.tx.iter_mut());
        core::array::from_fn(|_| {
            let (rx, tx) = match bufs.next() {
                Some((rx, tx)) => (&mut rx[..], &mut tx[..]),
                None => (&mut [][..], &mut [][..]),
            };
            let socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
            Conn::new(sockets.add(socket))
        })
    };
    let (mode, dhcp) = match pvh::option("ukdemo.ip").map(|v| (v, parse_static(v))) {
        Some((_, Some((cidr, gw)))) => {
            configure(&mut iface, cidr, gw, Mode::Static);
            (Mode::Static, None)
        }
        other => {
            if let Some((bad, None)) = other {
                println!("ukdemo: net: bad ukdemo.ip={} (IP/PREFIX[,gw=IP]): using dhcp", bad);
            }
            (Mode::Dhcp, Some(sockets.add(dhcpv4::Socket::new())))
        }
    };
    // SAFETY: `IN_USE` is held: nothing else touches NET.
    unsafe {
        *addr_of_mut!(NET) = Some(Net {
            iface,
            sockets,
            device,
            dhcp,
            conns,
            mode,
            configured: mode == Mode::Static,
        })
    };
    IN_USE.store(false, Ordering::Release);
}

/// Runs the stack once (see the module docs). Does nothing before
/// [`start`], or when called again from inside itself.
pub fn poll() {
    if IN_USE.swap(true, Ordering::Acquire) {
        return;
    }
    // SAFETY: `IN_USE` is held: this is the only reference to NET.
    if let Some(net) = unsafe { (*addr_of_mut!(NET)).as_mut() } {
        net.poll();
    }
    IN_USE.store(false, Ordering::Release);
}

impl Net {
    fn poll(&mut self) {
        let now = now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.dhcp();
        if self.serve(now) {
            // Send the replies now rather than at the next poll.
            self.iface.poll(now, &mut self.device, &mut self.sockets);
        }
    }

    fn dhcp(&mut self) {
        let Some(handle) = self.dhcp else { return };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(config)) => Some((config.address, config.router)),
            Some(dhcpv4::Event::Deconfigured) => None,
            None => return,
        };
        match event {
            Some((cidr, gw)) if IpAddress::Ipv4(cidr.address()).is_unicast() => {
                configure(&mut self.iface, cidr, gw, self.mode);
                self.configured = true;
            }
            _ => {
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                if core::mem::take(&mut self.configured) {
                    println!("ukdemo: net: dhcp lease lost");
                }
            }
        }
    }

    /// Serves the HTTP connections; whether anything was sent.
    fn serve(&mut self, now: Instant) -> bool {
        let mut sent = false;
        for conn in self.conns.iter_mut() {
            let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
            if !socket.is_open() {
                *conn = Conn::new(conn.handle);
                let _ = socket.listen(HTTP_PORT);
                continue;
            }
            if !socket.is_active() {
                continue;
            }
            let since = *conn.since.get_or_insert(now);
            if now - since > CONNECTION_LIFETIME {
                socket.abort();
                continue;
            }
            let mut complete = false;
            while socket.can_recv() {
                match socket.recv(|data| (data.len(), conn.take(data))) {
                    Ok(done) => complete |= done,
                    Err(_) => break,
                }
            }
            // A client that half-closed after its request is served too.
            complete |= conn.start_len > 0 && !socket.may_recv();
            if complete && !conn.replied {
                conn.replied = true;
                reply(socket, conn.start.get(..conn.start_len).unwrap_or(&[]));
                socket.close();
                sent = true;
            }
        }
        sent
    }
}

/// A byte buffer that `write!` fills (and truncates when full).
struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn new() -> Self {
        Text { buf: [0; N], len: 0 }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.get_mut(self.len..).unwrap_or(&mut []);
        let n = s.len().min(room.len());
        if let (Some(dst), Some(src)) = (room.get_mut(..n), s.as_bytes().get(..n)) {
            dst.copy_from_slice(src);
        }
        self.len += n;
        Ok(())
    }
}

/// Answers a request that starts with `start`: `GET /` gets the tick
/// count, other paths 404, other methods 400.
fn reply(socket: &mut tcp::Socket<'_>, start: &[u8]) {
    let mut body = Text::<64>::new();
    let status = if start.starts_with(b"GET / ") || start.starts_with(b"GET /\r") {
        let _ = writeln!(body, "TICKS {}", crate::app::ticks());
        "200 OK"
    } else if start.starts_with(b"GET ") {
        let _ = writeln!(body, "not found");
        "404 Not Found"
    } else {
        let _ = writeln!(body, "bad request");
        "400 Bad Request"
    };
    let mut head = Text::<160>::new();
    let _ = write!(
        head,
        "HTTP/1.0 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status, body.len
    );
    let _ = socket.send_slice(head.bytes());
    let _ = socket.send_slice(body.bytes());
}
