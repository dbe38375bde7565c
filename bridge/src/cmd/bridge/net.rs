//! The bridge in front of the network stub (`ukdb bridge --net`): each
//! debugger is spliced to a TCP connection of its own to the stub, and the
//! console, if any, comes from another channel.
//!
//! The splice does no per-byte work: it reads up to [`SPLICE_BUF`] bytes and
//! writes them whole, with `TCP_NODELAY` on both sockets. When either side
//! ends (end of stream or an error), the other side's write half is shut down
//! and both sockets are closed: a debugger that leaves ends its session at
//! the stub, and a stub that closes (or refuses a second debugger) closes
//! the debugger's connection.

use std::io;
use std::time::Duration;

use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
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
}

/// Runs until `stop` resolves (exit 0) or the console channel closes (exit
/// 3). `ready` turns true when the console shows the network stub's
/// announcement (see [`ukdb_bridge::ready`]).
pub async fn serve(
    opts: Options,
    mut stop: StopFuture<'_>,
    ready: watch::Sender<bool>,
) -> anyhow::Result<Exit> {
    let mut splices = JoinSet::new();
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
                Some((listener, stub)) => (listener.accept().await, stub),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (accepted, stub) = accept => match accepted {
                Ok((stream, peer)) => {
                    let stub = stub.clone();
                    splices.spawn(async move {
                        splice_to_stub(stream, &peer, &stub, connect_timeout).await;
                    });
                }
                Err(err) => {
                    warn!("accepting a debugger failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = splices.join_next(), if !splices.is_empty() => {}
            end = &mut reader => {
                splices.abort_all();
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
                splices.abort_all();
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

/// Connects to the stub for one debugger and splices the two connections.
async fn splice_to_stub(debugger: Box<dyn Stream>, peer: &str, stub: &str, timeout: Duration) {
    let connected = tokio::time::timeout(timeout, TcpStream::connect(stub)).await;
    let stub_conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            warn!("debugger {peer}: cannot reach the stub at {stub}: {err}");
            return;
        }
        Err(_) => {
            warn!("debugger {peer}: cannot reach the stub at {stub}: timed out after {timeout:?}");
            return;
        }
    };
    if let Err(err) = stub_conn.set_nodelay(true) {
        warn!("cannot set TCP_NODELAY on the connection to the stub: {err}");
    }
    info!("debugger {peer} connected to the stub at {stub}");
    let (up, down) = splice(debugger, stub_conn).await;
    info!("debugger {peer} disconnected ({up} bytes to the stub, {down} from it)");
}

/// Passes bytes both ways between `a` and `b` until either side ends; then
/// shuts down the other side's sending direction and closes both. Returns
/// the bytes passed from `a` to `b` and from `b` to `a`.
pub async fn splice(a: impl Stream, b: impl Stream) -> (u64, u64) {
    let (mut a_rd, mut a_wr) = tokio::io::split(a);
    let (mut b_rd, mut b_wr) = tokio::io::split(b);
    let mut up = 0;
    let mut down = 0;
    let ended = tokio::select! {
        end = pump(&mut a_rd, &mut b_wr, &mut up) => ("a", end),
        end = pump(&mut b_rd, &mut a_wr, &mut down) => ("b", end),
    };
    if let (side, Err(err)) = ended {
        debug!("splice: {side} side: {err}");
    }
    // Whatever was written is delivered before the end of stream.
    let _ = a_wr.shutdown().await;
    let _ = b_wr.shutdown().await;
    (up, down)
}

/// Copies from `rd` to `wr` until the end of `rd`'s stream, counting bytes.
async fn pump(
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
    count: &mut u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; SPLICE_BUF];
    loop {
        let n = rd.read(&mut buf).await?;
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        wr.write_all(bytes).await?;
        *count += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of TCP sockets on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .expect("in time")
            .unwrap();
        buf
    }

    async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("end of stream in time")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_a_closed_debugger_closes_the_stub() {
        let (mut gdb, bridge_side) = pair().await;
        let (stub_side, mut stub) = pair().await;
        let spliced = tokio::spawn(splice(bridge_side, stub_side));

        // Every byte value, and more than one read's worth, unchanged.
        let big: Vec<u8> = (0..3 * SPLICE_BUF).map(|i| (i * 7 % 256) as u8).collect();
        gdb.write_all(b"$g#67").await.unwrap();
        assert_eq!(read_exactly(&mut stub, 5).await, b"$g#67");
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                stub.write_all(&big).await.unwrap();
                stub
            })
        };
        assert_eq!(read_exactly(&mut gdb, big.len()).await, big);
        let mut stub = writer.await.unwrap();

        // The debugger leaves: the stub sees the end of the stream.
        drop(gdb);
        assert_eq!(read_to_end(&mut stub).await, b"");
        let (up, down) = spliced.await.unwrap();
        assert_eq!((up, down), (5, big.len() as u64));
    }

    #[tokio::test]
    async fn a_stub_that_closes_closes_the_debugger_after_its_last_bytes() {
        let (mut gdb, bridge_side) = pair().await;
        let (stub_side, mut stub) = pair().await;
        let spliced = tokio::spawn(splice(bridge_side, stub_side));
        stub.write_all(b"$OK#9a").await.unwrap();
        drop(stub);
        assert_eq!(read_to_end(&mut gdb).await, b"$OK#9a");
        assert_eq!(spliced.await.unwrap(), (0, 6));
    }

    #[tokio::test]
    async fn the_console_is_shown_and_the_ready_line_seen() {
        let (mut guest, host) = pair().await;
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
