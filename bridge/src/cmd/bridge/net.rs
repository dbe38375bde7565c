//! The bridge in front of the network stub (`ukdb bridge --net`): each
//! debugger is spliced to a TCP connection of its own to the stub, and the
//! console, if any, comes from another channel.
//!
//! The splice does no per-byte work: it reads up to [`SPLICE_BUF`] bytes and
//! writes them whole, with `TCP_NODELAY` on both sockets. It runs on two
//! threads of its own per debugger, with blocking I/O: a byte that arrives
//! wakes the thread that forwards it, and nothing else the bridge does (the
//! console, accepting) shares those threads. When either direction ends
//! (end of stream or an error), its destination is shut down both ways,
//! which sends the end of stream after the bytes written and ends the other
//! direction too: a debugger that leaves ends its session at the stub, and a
//! stub that closes (or refuses a second debugger) closes the debugger's
//! connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, ToSocketAddrs};
use std::time::Duration;

use tokio::fs::File;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use ukdb_bridge::addr::Target;
use ukdb_bridge::demux::{self, Demux};
use ukdb_bridge::ready::ReadyScanner;

use super::channel::{self, Stream};
use super::listener::Listener;
use super::{
    channel_closed, console_queue, drain_console, write_console, Console, ConsoleTx, StopFuture,
};
use crate::Exit;

/// The size of one read of a spliced socket: a whole 64 KiB RSP packet.
pub const SPLICE_BUF: usize = 64 * 1024;

/// What [`serve`] runs.
pub struct Options {
    /// Where debuggers connect, and the stub's `HOST:PORT` they are spliced
    /// to. `None`: the console alone (`ukdb run --net`, whose debugger goes
    /// to the stub's forwarded port directly).
    pub stub: Option<(Listener, String)>,
    /// The console's channel, read only.
    pub console: Option<Target>,
    /// Where the console goes besides stdout.
    pub console_log: Option<File>,
    /// How long to keep trying to connect to the console's channel, and to
    /// the stub for each debugger.
    pub connect_timeout: Duration,
    /// The stub is locked: authenticate each connection with these first.
    pub credentials: Option<crate::cmd::auth::Credentials>,
}

/// Runs until `stop` resolves (exit 0) or the console channel closes (exit
/// 3). `ready` turns true when the console shows the network stub's
/// announcement (see [`ukdb_bridge::ready`]).
pub async fn serve(
    opts: Options,
    mut stop: StopFuture<'_>,
    ready: watch::Sender<bool>,
) -> anyhow::Result<Exit> {
    // The splices run on threads of their own, which end with the process.
    // Without a console the reader is a task that never ends.
    let (mut reader, mut writer) = match &opts.console {
        Some(target) => {
            let stream = tokio::select! {
                stream = channel::connect(target, opts.connect_timeout) => stream?,
                _ = &mut stop => return Ok(Exit::Stopped),
            };
            info!("console: connected to {target}");
            let (tx, rx) = console_queue();
            let writer = tokio::spawn(write_console(rx, Console::new(opts.console_log)));
            (tokio::spawn(read_console(stream, tx, ready)), Some(writer))
        }
        None => (tokio::spawn(std::future::pending()), None),
    };
    let connect_timeout = opts.connect_timeout;
    loop {
        let accept = async {
            match &opts.stub {
                Some((listener, stub)) => (accept_blocking(listener).await, stub),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (accepted, stub) = accept => match accepted {
                Ok((stream, peer)) => {
                    let stub = stub.clone();
                    let creds = opts.credentials.clone();
                    let spawned = std::thread::Builder::new().name("ukdb-splice".into()).spawn(
                        move || splice_to_stub(stream, &peer, &stub, connect_timeout, creds),
                    );
                    if let Err(err) = spawned {
                        warn!("cannot start a thread for a debugger: {err}");
                    }
                }
                Err(err) => {
                    warn!("accepting a debugger failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            end = &mut reader => {
                let err = match end {
                    Ok(Ok(())) => None,
                    Ok(Err(err)) => Some(err),
                    Err(join) => Some(io::Error::other(join)),
                };
                if let Some(writer) = &mut writer {
                    drain_console(writer).await;
                }
                if let Some(target) = &opts.console {
                    channel_closed(target, err.as_ref());
                }
                return Ok(Exit::ChannelClosed);
            }
            why = &mut stop => {
                info!("stopping ({why})");
                reader.abort();
                let _ = (&mut reader).await;
                if let Some(writer) = &mut writer {
                    drain_console(writer).await;
                }
                return Ok(Exit::Stopped);
            }
        }
    }
}

/// Reads the console channel until it closes; shows its text (control
/// sequences of a stub on it are left out) and reports the network stub's
/// announcement.
async fn read_console(
    mut channel: Box<dyn Stream>,
    console: ConsoleTx,
    ready: watch::Sender<bool>,
) -> io::Result<()> {
    let mut demux = Demux::new();
    let mut scanner = ReadyScanner::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; super::READ_BUF];
    loop {
        let n = channel.read(&mut buf).await?;
        events.clear();
        demux.feed_into(buf.get(..n).unwrap_or_default(), &mut events);
        if n == 0 {
            events.extend(demux.finish());
        }
        for event in events.drain(..) {
            if let demux::Event::Console(bytes) = event {
                if scanner.feed(&bytes) && !*ready.borrow() {
                    let _ = ready.send(true);
                }
                if console.send(bytes).await.is_err() {
                    return Err(io::Error::other("cannot write the console to stdout"));
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// A blocking byte stream that a splice can use from two threads.
pub trait Duplex: Read + Write + Send + 'static {
    /// A second handle to the same connection.
    fn try_clone_box(&self) -> io::Result<Box<dyn Duplex>>;
    /// Shuts the connection down both ways: the peer gets the end of the
    /// stream after everything written, and a read blocked on it returns.
    fn shutdown_both(&self);
}

impl Duplex for std::net::TcpStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Duplex for std::os::unix::net::UnixStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// Accepts the next debugger as a blocking stream (TCP_NODELAY on TCP);
/// returns it and a name for messages.
async fn accept_blocking(listener: &Listener) -> io::Result<(Box<dyn Duplex>, String)> {
    match listener {
        Listener::Tcp(listener, _) => {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            Ok((Box::new(stream), peer.to_string()))
        }
        Listener::Unix(listener, path) => {
            let (stream, _) = listener.accept().await?;
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            Ok((Box::new(stream), format!("unix:{}", path.display())))
        }
    }
}

/// Connects to the stub for one debugger and splices the two connections
/// (blocking: runs on a thread of its own).
fn splice_to_stub(
    debugger: Box<dyn Duplex>,
    peer: &str,
    stub: &str,
    timeout: Duration,
    credentials: Option<crate::cmd::auth::Credentials>,
) {
    let mut stub_conn = match connect_blocking(stub, timeout) {
        Ok(conn) => conn,
        Err(err) => {
            warn!("debugger {peer}: cannot reach the stub at {stub}: {err}");
            debugger.shutdown_both();
            return;
        }
    };
    if let Some(creds) = &credentials {
        // Before the debugger's first byte: the stub's session then starts
        // authenticated, and the debugger's handshake goes on in it.
        if let Err(err) = crate::cmd::auth::authenticate(&mut stub_conn, creds) {
            warn!("debugger {peer}: cannot authenticate to the stub: {err:#}");
            eprintln!("ukdb: cannot authenticate to the stub: {err:#}");
            debugger.shutdown_both();
            return;
        }
        info!("debugger {peer}: authenticated to the stub ({} tier)", creds.tier);
    }
    info!("debugger {peer} connected to the stub at {stub}");
    match splice(debugger, Box::new(stub_conn)) {
        Ok((up, down)) => {
            info!("debugger {peer} disconnected ({up} bytes to the stub, {down} from it)")
        }
        Err(err) => warn!("debugger {peer}: cannot splice it to the stub: {err}"),
    }
}

/// Connects to `HOST:PORT` (its first address that answers) with TCP_NODELAY.
fn connect_blocking(addr: &str, timeout: Duration) -> io::Result<std::net::TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in addr.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(conn) => {
                conn.set_nodelay(true)?;
                return Ok(conn);
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Passes bytes both ways between `a` and `b` (this thread one way, a new
/// one the other) until either direction ends; then both connections are
/// shut down. Returns the bytes passed from `a` to `b` and from `b` to `a`.
pub fn splice(a: Box<dyn Duplex>, b: Box<dyn Duplex>) -> io::Result<(u64, u64)> {
    let (a2, b2) = (a.try_clone_box()?, b.try_clone_box()?);
    let down = std::thread::Builder::new()
        .name("ukdb-splice".into())
        .spawn(move || copy_until_end(b2, a2))?;
    let up = copy_until_end(a, b);
    let down = down.join().unwrap_or(0);
    Ok((up, down))
}

/// Copies `src` to `dst` until `src` ends or either fails; then shuts `dst`
/// down both ways (which ends the copy in the other direction, reading
/// `dst`). Returns the bytes copied.
fn copy_until_end(mut src: Box<dyn Duplex>, mut dst: Box<dyn Duplex>) -> u64 {
    let mut buf = vec![0u8; SPLICE_BUF];
    let mut copied = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                debug!("splice: read: {err}");
                break;
            }
        };
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            break;
        };
        if let Err(err) = dst.write_all(bytes) {
            debug!("splice: write: {err}");
            break;
        }
        copied += n as u64;
    }
    dst.shutdown_both();
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A connected pair of TCP sockets on loopback.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        (a, b)
    }

    fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("the end of the stream in time");
        buf
    }

    #[test]
    fn bytes_pass_both_ways_and_a_closed_debugger_closes_the_stub() {
        let (mut gdb, bridge_side) = pair();
        let (stub_side, mut stub) = pair();
        let spliced =
            std::thread::spawn(move || splice(Box::new(bridge_side), Box::new(stub_side)));

        // Every byte value, and more than one read's worth, unchanged.
        let big: Vec<u8> = (0..3 * SPLICE_BUF).map(|i| (i * 7 % 256) as u8).collect();
        gdb.write_all(b"$g#67").unwrap();
        let mut got = [0u8; 5];
        stub.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"$g#67");
        let writer = {
            let big = big.clone();
            std::thread::spawn(move || {
                stub.write_all(&big).unwrap();
                stub
            })
        };
        let mut back = vec![0u8; big.len()];
        gdb.read_exact(&mut back).unwrap();
        assert_eq!(back, big);
        let mut stub = writer.join().unwrap();

        // The debugger leaves: the stub sees the end of the stream.
        drop(gdb);
        assert_eq!(read_to_end(&mut stub), b"");
        let (up, down) = spliced.join().unwrap().unwrap();
        assert_eq!((up, down), (5, big.len() as u64));
    }

    #[test]
    fn a_stub_that_closes_closes_the_debugger_after_its_last_bytes() {
        let (mut gdb, bridge_side) = pair();
        let (stub_side, mut stub) = pair();
        let spliced =
            std::thread::spawn(move || splice(Box::new(bridge_side), Box::new(stub_side)));
        stub.write_all(b"$OK#9a").unwrap();
        drop(stub);
        assert_eq!(read_to_end(&mut gdb), b"$OK#9a");
        assert_eq!(spliced.join().unwrap().unwrap(), (0, 6));
    }

    #[tokio::test]
    async fn the_console_is_shown_and_the_ready_line_seen() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (guest, host) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut guest, host) = (guest.unwrap(), host.unwrap().0);
        let (tx, mut rx) = console_queue();
        let (ready_tx, mut ready) = watch::channel(false);
        let reader = tokio::spawn(read_console(Box::new(host), tx, ready_tx));
        guest
            .write_all(b"\x10Hboot\nukdb: stub ready on serial\nukdb: stub ready on net\n")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|&r| r))
            .await
            .expect("ready in time")
            .unwrap();
        drop(guest);
        reader.await.unwrap().unwrap();
        let mut shown = Vec::new();
        while let Some((bytes, _permit)) = rx.recv().await {
            shown.extend(bytes);
        }
        assert_eq!(shown, b"boot\nukdb: stub ready on serial\nukdb: stub ready on net\n");
    }
}
