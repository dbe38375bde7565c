//! Helpers for the end-to-end tests: the real `ukdb` binary, a fake stub on
//! the other end of its channel, and waiting with deadlines.

#![allow(dead_code)] // Not every test file uses every helper.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use ukdb_tests::capture::{show, Capture};
pub use ukdb_tests::raw::packet;
/// How long any single expected thing may take before a test fails.
pub use ukdb_tests::DEADLINE as TIMEOUT;

/// The interval at which conditions without a wake-up (process exit, a
/// non-blocking accept) are polled.
const POLL: Duration = Duration::from_millis(10);

pub const DLE: u8 = 0x10;
/// The stub's hello.
pub const HELLO: [u8; 2] = [DLE, b'H'];
/// The stub's acknowledgement of a `DLE 'X'`.
pub const ENDED: [u8; 2] = [DLE, b'E'];

/// `DLE channel` followed by `data` with every DLE doubled, as a stub in
/// framed mode writes it.
pub fn framed(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![DLE, channel];
    for &b in data {
        if b == DLE {
            out.push(DLE);
        }
        out.push(b);
    }
    out
}

/// The `ukdb` binary under test, with its stdout and stderr captured.
pub struct Bridge {
    pub child: Child,
    pub stdout: Capture,
    pub stderr: Capture,
    pub unread_stdout: Option<std::process::ChildStdout>,
}

impl Bridge {
    pub fn spawn(args: &[&str]) -> Self {
        let mut bridge = Self::spawn_unread_stdout(args);
        bridge.stdout = Capture::spawn(bridge.unread_stdout.take().unwrap());
        bridge
    }

    /// Like [`Bridge::spawn`], with a stdout pipe that nobody reads (until
    /// the test takes `unread_stdout`): a blocked terminal.
    pub fn spawn_unread_stdout(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ukdb"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ukdb");
        let unread_stdout = child.stdout.take();
        let stderr = Capture::spawn(child.stderr.take().unwrap());
        Bridge { child, stdout: Capture::default(), stderr, unread_stdout }
    }

    /// A `/proc/PID/status` field in kB, e.g. `VmHWM` (peak resident set).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in\n{status}"));
        line.trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// `ukdb bridge --target TARGET --listen 127.0.0.1:0 EXTRA...`
    pub fn start(target: &str, extra: &[&str]) -> Self {
        let mut args = vec!["bridge", "--target", target, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// The address from the stable `ukdb: listening on ADDR` line.
    pub fn listen_addr(&self) -> SocketAddr {
        let line = self.stderr.wait_line("ukdb: listening on ");
        let addr = line.strip_prefix("ukdb: listening on ").expect("line format");
        addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal ukdb");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the capture threads read the rest.
                self.stdout.wait_closed("stdout to close");
                self.stderr.wait_closed("stderr to close");
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ukdb did not exit; stderr:\n{}",
                self.stderr.text()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The unikernel's end of the channel, speaking protocol v2: what the bridge
/// sends is captured, what the test sends goes to the bridge, and every
/// `DLE 'X'` outside a packet is answered with `DLE 'E'` (unless
/// [`FakeStub::set_auto_ended`] turned that off).
pub struct FakeStub {
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    received: Capture,
    consumed: usize,
    auto_ended: Arc<std::sync::atomic::AtomicBool>,
    /// Closes the connection for good: the reader thread holds a second
    /// descriptor, so dropping the writer alone would not.
    closer: Option<Box<dyn FnOnce() + Send>>,
}

/// Follows the host's stream far enough to find control sequences: a `DLE`
/// between packets starts one.
#[derive(Default, Clone, Copy)]
enum HostStream {
    #[default]
    Idle,
    Dle,
    Packet,
    Checksum(u8),
}

impl HostStream {
    /// Returns the control byte when `byte` completes `DLE byte`.
    fn next(&mut self, byte: u8) -> Option<u8> {
        let (next, control) = match (*self, byte) {
            (HostStream::Idle, DLE) => (HostStream::Dle, None),
            (HostStream::Idle, b'$') => (HostStream::Packet, None),
            (HostStream::Idle, _) => (HostStream::Idle, None),
            (HostStream::Dle, b) => (HostStream::Idle, Some(b)),
            (HostStream::Packet, b'#') => (HostStream::Checksum(0), None),
            (HostStream::Packet, _) => (HostStream::Packet, None),
            (HostStream::Checksum(0), _) => (HostStream::Checksum(1), None),
            (HostStream::Checksum(_), _) => (HostStream::Idle, None),
        };
        *self = next;
        control
    }
}

/// The control sequences (their second bytes) that a stub finds in the
/// host's stream `bytes`, in order: `DLE x` between packets.
pub fn controls(bytes: &[u8]) -> Vec<u8> {
    let mut host = HostStream::default();
    bytes.iter().filter_map(|&b| host.next(b)).collect()
}

impl FakeStub {
    /// A v2 stub on `reader`/`writer` that has not said hello (yet).
    pub fn new(reader: impl Read + Send + 'static, writer: impl Write + Send + 'static) -> Self {
        let writer: Arc<Mutex<Box<dyn Write + Send>>> = Arc::new(Mutex::new(Box::new(writer)));
        let auto_ended = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut host = HostStream::default();
        let hook = {
            let writer = Arc::clone(&writer);
            let auto_ended = Arc::clone(&auto_ended);
            move |chunk: &[u8]| {
                for &b in chunk {
                    if host.next(b) == Some(b'X')
                        && auto_ended.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = w.write_all(&ENDED).and_then(|()| w.flush());
                    }
                }
            }
        };
        FakeStub {
            writer,
            received: Capture::spawn_with(reader, hook),
            consumed: 0,
            auto_ended,
            closer: None,
        }
    }

    /// Accepts the bridge's connection on `listener`, within [`TIMEOUT`],
    /// and says hello, as a stub does at init.
    pub fn accept(listener: &UnixListener) -> Self {
        let mut stub = Self::accept_silent(listener);
        stub.send(&HELLO);
        stub
    }

    /// Accepts the bridge's connection without saying hello: a stub that
    /// announced itself before the bridge connected, or no stub at all.
    pub fn accept_silent(listener: &UnixListener) -> Self {
        let stream = accept_unix(listener);
        let reader: UnixStream = stream.try_clone().unwrap();
        let closer = stream.try_clone().unwrap();
        let mut stub = Self::new(reader, stream);
        stub.closer = Some(Box::new(move || {
            let _ = closer.shutdown(std::net::Shutdown::Both);
        }));
        stub
    }

    /// Accepts the bridge's TCP connection on `listener`, within [`TIMEOUT`],
    /// and says hello.
    pub fn accept_tcp(listener: &std::net::TcpListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        let stream = accept_within_timeout(|| listener.accept().map(|(stream, _)| stream));
        stream.set_nonblocking(false).unwrap();
        let reader = stream.try_clone().unwrap();
        let closer = stream.try_clone().unwrap();
        let mut stub = Self::new(reader, stream);
        stub.closer = Some(Box::new(move || {
            let _ = closer.shutdown(std::net::Shutdown::Both);
        }));
        stub.send(&HELLO);
        stub
    }

    /// Whether each `DLE 'X'` is answered with `DLE 'E'` at once (the
    /// default). Off, the test sends `ENDED` itself.
    pub fn set_auto_ended(&self, on: bool) {
        self.auto_ended.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    /// Asserts that the next bytes from the bridge are exactly `expect`.
    pub fn expect(&mut self, expect: &[u8]) {
        let start = self.consumed;
        let what = format!("the stub to receive {}", show(expect));
        let got = self.received.wait(&what, |b, closed| b.len() >= start + expect.len() || closed);
        let end = got.len().min(start + expect.len());
        assert_eq!(show(&got[start..end]), show(expect), "bytes at the stub");
        self.consumed = end;
    }

    /// Waits until `needle` arrives; returns what came before it (after what
    /// was consumed already) and consumes both.
    pub fn skip_to(&mut self, needle: &[u8]) -> Vec<u8> {
        let start = self.consumed;
        let find =
            |b: &[u8]| b[start.min(b.len())..].windows(needle.len()).position(|w| w == needle);
        let got = self
            .received
            .wait(&format!("the stub to receive {}", show(needle)), |b, _| find(b).is_some());
        let at = start + find(&got).unwrap();
        self.consumed = at + needle.len();
        got[start..at].to_vec()
    }

    /// Everything received from the bridge so far, consumed or not.
    pub fn received(&self) -> &Capture {
        &self.received
    }

    /// Marks everything received so far as consumed.
    pub fn consume_all(&mut self) {
        self.consumed = self.received.bytes().len();
    }

    /// Asserts that the bridge closed the channel with nothing more sent.
    pub fn expect_closed(&mut self) {
        let got = self.received.wait_closed("the bridge to close the channel");
        assert_eq!(show(&got[self.consumed..]), "", "bytes at the stub before close");
    }

    /// Everything received and not yet expected.
    pub fn unexpected(&self) -> Vec<u8> {
        self.received.bytes()[self.consumed..].to_vec()
    }
}

/// Accepts one connection on `listener`, within [`TIMEOUT`], as a blocking
/// stream.
pub fn accept_unix(listener: &UnixListener) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let stream = accept_within_timeout(|| listener.accept().map(|(stream, _)| stream));
    stream.set_nonblocking(false).unwrap();
    stream
}

impl Drop for FakeStub {
    fn drop(&mut self) {
        if let Some(close) = self.closer.take() {
            close();
        }
    }
}

/// A debugger's connection, reading in the background.
pub struct Client {
    pub stream: std::net::TcpStream,
    pub received: Capture,
    consumed: usize,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).expect("connect to the bridge");
        stream.set_nodelay(true).unwrap();
        let received = Capture::spawn(stream.try_clone().unwrap());
        Client { stream, received, consumed: 0 }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Asserts that the next bytes from the bridge are exactly `expect`.
    pub fn expect(&mut self, expect: &[u8]) {
        let start = self.consumed;
        let what = format!("the client to receive {}", show(expect));
        let got = self.received.wait(&what, |b, closed| b.len() >= start + expect.len() || closed);
        let end = got.len().min(start + expect.len());
        assert_eq!(show(&got[start..end]), show(expect), "bytes at the client");
        self.consumed = end;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The reader thread holds a second descriptor: shut the connection
        // down so that the bridge sees it end.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Polls a non-blocking `accept` until the bridge connects, within [`TIMEOUT`].
fn accept_within_timeout<S>(mut accept: impl FnMut() -> std::io::Result<S>) -> S {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match accept() {
            Ok(stream) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the bridge did not connect");
                thread::sleep(POLL);
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}
