//! A raw RSP client for hostile-input tests: it writes exactly the bytes a
//! test gives it (well-formed or not) to the bridge's listener or straight to
//! the serial socket, and reads replies with deadlines.
//!
//! Reading skips everything that is not part of an RSP reply (`+`, `-`, or a
//! `$...#xx` packet), so on the raw serial line the console text between
//! packets is ignored, as gdb ignores it.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long a reply the spec promises may take to arrive.
pub const REPLY: Duration = Duration::from_secs(15);

/// The RSP checksum: the sum of the body's bytes, modulo 256.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// `$body#xx` with the right checksum.
pub fn packet(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(b'$');
    out.extend_from_slice(body);
    out.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string; `None` if it is not one.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok()).collect()
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failing run can be
/// repeated byte for byte.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// One thing the stub sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+`.
    Ack,
    /// `-`.
    Nak,
    /// A packet's body (checksum verified, run-length encoding expanded).
    Packet(Vec<u8>),
    /// A packet whose checksum did not match: the raw body.
    BadChecksum(Vec<u8>),
}

impl Reply {
    /// The body of a packet as text (lossy), or `+`/`-`.
    pub fn text(&self) -> String {
        match self {
            Reply::Ack => "+".into(),
            Reply::Nak => "-".into(),
            Reply::Packet(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::BadChecksum(b) => format!("<bad checksum>{}", String::from_utf8_lossy(b)),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection speaking (or abusing) RSP.
pub struct Raw {
    stream: Stream,
    pending: Vec<u8>,
    closed: bool,
    /// Whether replies are acknowledged (until `QStartNoAckMode`).
    pub ack: bool,
}

impl Raw {
    /// Connects to `addr`: `unix:PATH`, a path starting with `/`, or
    /// `HOST:PORT`.
    pub fn connect(addr: &str) -> Raw {
        let stream = if let Some(path) = addr.strip_prefix("unix:") {
            Stream::Unix(crate::connect_unix(std::path::Path::new(path)))
        } else if addr.starts_with('/') {
            Stream::Unix(crate::connect_unix(std::path::Path::new(addr)))
        } else {
            let s = TcpStream::connect(addr).expect("connect tcp");
            s.set_nodelay(true).unwrap();
            Stream::Tcp(s)
        };
        Raw { stream, pending: Vec::new(), closed: false, ack: true }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(bytes),
            Stream::Unix(s) => s.write_all(bytes),
        };
        r.expect("write to the debugger connection");
    }

    /// Writes `bytes`; returns false if the peer closed or reset.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(bytes),
            Stream::Unix(s) => s.write_all(bytes),
        };
        r.is_ok()
    }

    /// Writes `$body#xx`.
    pub fn send_packet(&mut self, body: &[u8]) {
        self.send(&packet(body));
    }

    /// Sets a write timeout (for clients that must not block forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) {
        match &self.stream {
            Stream::Tcp(s) => s.set_write_timeout(t).unwrap(),
            Stream::Unix(s) => s.set_write_timeout(t).unwrap(),
        }
    }

    fn fill(&mut self, until: Instant) -> bool {
        let now = Instant::now();
        if now >= until || self.closed {
            return false;
        }
        let t = (until - now).min(Duration::from_millis(100)).max(Duration::from_millis(1));
        let mut buf = [0u8; 65536];
        let r = match &mut self.stream {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(t)).unwrap();
                s.read(&mut buf)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(t)).unwrap();
                s.read(&mut buf)
            }
        };
        match r {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    fn parse(&mut self) -> Option<Reply> {
        loop {
            let first = *self.pending.first()?;
            match first {
                b'+' => {
                    self.pending.remove(0);
                    return Some(Reply::Ack);
                }
                b'-' => {
                    self.pending.remove(0);
                    return Some(Reply::Nak);
                }
                b'$' => {
                    let hash = self.pending.iter().position(|&b| b == b'#')?;
                    if self.pending.len() < hash + 3 {
                        return None;
                    }
                    let body = self.pending[1..hash].to_vec();
                    let sum = std::str::from_utf8(&self.pending[hash + 1..hash + 3])
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok());
                    self.pending.drain(..hash + 3);
                    if sum != Some(checksum(&body)) {
                        return Some(Reply::BadChecksum(body));
                    }
                    return Some(Reply::Packet(expand_rle(&body)));
                }
                _ => {
                    self.pending.remove(0);
                }
            }
        }
    }

    /// The next reply, or `None` if none came within `within` (or the
    /// connection closed).
    pub fn next_within(&mut self, within: Duration) -> Option<Reply> {
        let until = Instant::now() + within;
        loop {
            if let Some(r) = self.parse() {
                return Some(r);
            }
            if !self.fill(until) {
                return self.parse();
            }
        }
    }

    /// The next packet (skipping `+`/`-`), acknowledged if in ack mode, or
    /// `None` within `within`.
    pub fn packet_within(&mut self, within: Duration) -> Option<Reply> {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.next_within(left)? {
                Reply::Ack | Reply::Nak => continue,
                p @ Reply::Packet(_) => {
                    if self.ack {
                        self.send(b"+");
                    }
                    return Some(p);
                }
                bad => return Some(bad),
            }
        }
    }

    /// Sends `body` and returns the reply packet's body as text, or
    /// `"<none>"` if none came within [`REPLY`].
    pub fn request(&mut self, body: &[u8]) -> String {
        self.send_packet(body);
        self.reply()
    }

    /// The next reply packet's body as text, or `"<none>"`.
    pub fn reply(&mut self) -> String {
        match self.packet_within(REPLY) {
            Some(r) => r.text(),
            None => "<none>".into(),
        }
    }

    /// Reads and drops everything for `within` (or until the peer closes).
    pub fn drain(&mut self, within: Duration) -> usize {
        let until = Instant::now() + within;
        let mut n = 0;
        while self.fill(until) {
            n += self.pending.len();
            self.pending.clear();
        }
        n + std::mem::take(&mut self.pending).len()
    }

    /// Starts a session: `qSupported`, then `?`; returns the stop reply.
    pub fn attach(&mut self) -> String {
        let q = self.request(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386");
        assert!(q.contains("PacketSize="), "qSupported reply: {q}");
        self.request(b"?")
    }

    /// Whether the peer closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Ends the writing side only, then reads (and drops) until the peer
    /// closes: QEMU's serial socket reads only as fast as the guest's UART
    /// takes bytes, and a full close would make it drop what it has not read
    /// yet. Panics if the peer does not close within [`crate::DEADLINE`].
    pub fn close_after_delivery(mut self) {
        match &self.stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
        self.drain(crate::DEADLINE);
        assert!(self.closed, "the peer did not close after reading everything");
    }

    /// Shuts the connection down both ways.
    pub fn close(self) {
        match &self.stream {
            Stream::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Stream::Unix(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Expands RSP run-length encoding (`X*n`: `n - 29` more copies of `X`).
fn expand_rle(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'*' && i + 1 < body.len() && !out.is_empty() {
            let n = body[i + 1].saturating_sub(29) as usize;
            let last = *out.last().unwrap();
            out.extend(std::iter::repeat_n(last, n));
            i += 2;
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

/// Reads memory through `m` in one request; `Err(reply)` if it is not hex.
pub fn read_mem(raw: &mut Raw, addr: u64, len: usize) -> Result<Vec<u8>, String> {
    let r = raw.request(format!("m{addr:x},{len:x}").as_bytes());
    unhex(r.as_bytes()).ok_or(r)
}

/// A TCP listener on 127.0.0.1 that relays its first connection to the unix
/// socket `path` (lldb's `gdb-remote` takes only `HOST:PORT`); returns the
/// address. The relay ends when either side closes.
pub fn tcp_relay(path: &std::path::Path) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else { return };
        let Ok(unix) = UnixStream::connect(&path) else { return };
        let pipe = |mut from: Box<dyn Read + Send>,
                    mut to: Box<dyn Write + Send>,
                    end: Box<dyn Fn() + Send>| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                end();
            })
        };
        let (t2, u2) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
        let (t3, u3) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
        let end = move || {
            let _ = t3.shutdown(std::net::Shutdown::Both);
            let _ = u3.shutdown(std::net::Shutdown::Both);
        };
        let (t4, u4) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
        let end2 = move || {
            let _ = t4.shutdown(std::net::Shutdown::Both);
            let _ = u4.shutdown(std::net::Shutdown::Both);
        };
        pipe(Box::new(tcp), Box::new(u2), Box::new(end));
        pipe(Box::new(unix), Box::new(t2), Box::new(end2));
    });
    addr
}

/// A unix socket at `at` that relays its first connection to the unix
/// socket `target` and records every byte written towards `target` (what
/// a bridge writes into the guest).
pub fn recording_relay(
    at: &std::path::Path,
    target: &std::path::Path,
) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::os::unix::net::UnixListener;
    let listener = UnixListener::bind(at).unwrap();
    let target = target.to_path_buf();
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&written);
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else { return };
        let Ok(guest) = UnixStream::connect(&target) else { return };
        let (mut from_guest, mut to_client) =
            (guest.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_guest, &mut to_client);
        });
        let (mut from_client, mut to_guest) = (client, guest);
        let mut buf = [0u8; 4096];
        loop {
            match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to_guest.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_guest.shutdown(std::net::Shutdown::Both);
    });
    written
}
