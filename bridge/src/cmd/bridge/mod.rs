//! `ukdb bridge`: share a unikernel's serial line between its console and a
//! debugger.

mod channel;
mod listener;
mod session;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};
use ukdb_bridge::addr::{ListenAddr, Target, DEFAULT_LISTEN};
use ukdb_bridge::demux::{self, Channel, Demux};
use ukdb_bridge::escape::{control_sequence, describe_rsp_byte, Escaped};
use ukdb_bridge::rsp;
use ukdb_bridge::wire;

use crate::Exit;
use channel::Stream;
use listener::Listener;
use session::{Attached, Shared, ToStub};

/// How long after connecting the bridge waits for the stub's sync before it
/// warns that no stub answered.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the bridge repeats its request for framing until the stub
/// answers: a request that arrives while the unikernel is still booting can
/// be lost (a UART reset clears its receive FIFO).
const SYNC_RETRY: Duration = Duration::from_millis(250);

/// How long the bridge waits for its last bytes (`DLE 'X'`, `DLE 'R'`) to be
/// written when it stops.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the bridge keeps reading console output after it failed to write
/// to the channel, before it reports the channel closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The `--help` text of `ukdb bridge`.
const LONG_ABOUT: &str = "\
Share a unikernel's serial line between its console and a debugger.

Connects to the unikernel's serial line (--target), switches the ukdb stub
to framed mode, prints the console on stdout and serves the debugger half
on --listen, for one gdb or lldb at a time:

    ukdb bridge --target unix:/tmp/uk.sock
    gdb -ex 'target remote 127.0.0.1:1234' kernel.elf

When a debugger disconnects the stub removes its breakpoints and lets the
unikernel run; another debugger can attach later. Messages go to stderr,
one line each, starting with \"ukdb: \" (RUST_LOG selects them; default
info).

Exit codes:
  0  stopped by a signal (Ctrl-C, SIGTERM, SIGHUP): the stub is told that
     the debugger is gone and switched back to raw mode
  1  error
  2  usage error
  3  the unikernel's channel closed (the unikernel or QEMU exited)";

/// Share a unikernel's serial line between its console and a debugger
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Cmd {
    /// The unikernel's serial line: unix:PATH or tcp:HOST:PORT (QEMU's
    /// -serial unix:PATH,server,nowait or tcp::PORT,server,nowait), or
    /// pty:PATH (the pty slave that QEMU's -serial pty prints).
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT|pty:PATH")]
    target: Target,

    /// Where the debugger connects: HOST:PORT or unix:PATH. Port 0 picks a
    /// free port; the address bound is printed as "ukdb: listening on ADDR".
    /// An address that is not loopback lets anyone who can reach it control
    /// the unikernel.
    #[arg(long, value_name = "HOST:PORT|unix:PATH", default_value = DEFAULT_LISTEN)]
    listen: ListenAddr,

    /// Also append the console output to FILE.
    #[arg(long, value_name = "FILE")]
    console_log: Option<PathBuf>,

    /// Log every RSP packet and control sequence, in both directions, on
    /// stderr.
    #[arg(long)]
    trace: bool,

    /// How long to keep trying to connect to the target (QEMU may still be
    /// starting), in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    connect_timeout: Duration,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration in seconds"))
}

/// Why [`pump_from_stub`] ended.
#[derive(Debug)]
enum ReaderEnd {
    /// End of stream, or a read error.
    ChannelClosed(Option<io::Error>),
    /// Writing the console to stdout failed.
    Stdout(io::Error),
}

/// Runs the bridge until a signal (exit 0) or the channel closes (exit 3).
pub async fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let console_log = match &cmd.console_log {
        Some(path) => Some(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("cannot open the console log {}", path.display()))?,
        ),
        None => None,
    };

    // Bind before connecting: a busy port should fail before the stub is
    // switched to framed mode.
    let listener = Listener::bind(&cmd.listen).await?;
    eprintln!("ukdb: listening on {listener}");

    let channel = tokio::select! {
        channel = channel::connect(&cmd.target, cmd.connect_timeout) => channel?,
        _ = sigint.recv() => return Ok(Exit::Stopped),
        _ = sigterm.recv() => return Ok(Exit::Stopped),
        _ = sighup.recv() => return Ok(Exit::Stopped),
    };
    info!("connected to {}", cmd.target);

    let (to_stub_tx, to_stub_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(to_stub_tx, cmd.trace));
    shared.request_framing();

    let (channel_rd, channel_wr) = tokio::io::split(channel);
    let mut writer = tokio::spawn(pump_to_stub(channel_wr, to_stub_rx));
    let (synced_tx, synced_rx) = watch::channel(false);
    let console = Console::new(console_log);
    let mut reader =
        tokio::spawn(pump_from_stub(channel_rd, Arc::clone(&shared), console, synced_tx));

    let sync_deadline = tokio::time::sleep(SYNC_TIMEOUT);
    tokio::pin!(sync_deadline);
    let mut sync_checked = false;
    let mut resync = tokio::time::interval(SYNC_RETRY);
    resync.tick().await;

    loop {
        tokio::select! {
            _ = resync.tick(), if !*synced_rx.borrow() => {
                shared.request_framing();
            }
            () = &mut sync_deadline, if !sync_checked => {
                sync_checked = true;
                if !*synced_rx.borrow() {
                    warn!(
                        "no ukdb stub answered within {}s (a production image, or the \
                         unikernel does not poll its serial line yet); passing the line \
                         through as console text",
                        SYNC_TIMEOUT.as_secs()
                    );
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match shared.attach(&peer) {
                    Ok(attached) => {
                        tokio::spawn(serve_debugger(
                            Arc::clone(&shared),
                            attached,
                            peer,
                            stream,
                            synced_rx.clone(),
                        ));
                    }
                    Err(why) => {
                        warn!("refused debugger {peer}: {why}");
                        drop(stream);
                    }
                },
                Err(err) => {
                    // E.g. out of file descriptors: don't spin.
                    warn!("accepting a debugger failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            end = &mut reader => {
                return finish_after_reader(&cmd.target, &shared, end).await;
            }
            written = &mut writer => {
                let err = match written {
                    Ok(Ok(())) => None,
                    Ok(Err(err)) => Some(err),
                    Err(join) => Some(io::Error::other(join)),
                };
                debug!("writing to the channel failed: {err:?}");
                // The read side still holds whatever the unikernel printed
                // last; show it before reporting the channel closed.
                match tokio::time::timeout(DRAIN_TIMEOUT, &mut reader).await {
                    Ok(end) => return finish_after_reader(&cmd.target, &shared, end).await,
                    Err(_) => {
                        reader.abort();
                        channel_closed(&cmd.target, err.as_ref());
                        return Ok(Exit::ChannelClosed);
                    }
                }
            }
            _ = sigint.recv() => return stop(&shared, "SIGINT").await,
            _ = sigterm.recv() => return stop(&shared, "SIGTERM").await,
            _ = sighup.recv() => return stop(&shared, "SIGHUP").await,
        }
    }
}

async fn finish_after_reader(
    target: &Target,
    shared: &Shared,
    end: Result<ReaderEnd, tokio::task::JoinError>,
) -> anyhow::Result<Exit> {
    match end {
        Ok(ReaderEnd::ChannelClosed(err)) => {
            channel_closed(target, err.as_ref());
            Ok(Exit::ChannelClosed)
        }
        Ok(ReaderEnd::Stdout(err)) => {
            let _ = stop(shared, "error").await;
            Err(anyhow::Error::from(err).context("cannot write the console to stdout"))
        }
        Err(join) => {
            let _ = stop(shared, "error").await;
            Err(anyhow::Error::from(join).context("the channel reader failed"))
        }
    }
}

fn channel_closed(target: &Target, err: Option<&io::Error>) {
    match err {
        None => eprintln!("ukdb: unikernel channel closed ({target})"),
        Some(err) => eprintln!("ukdb: unikernel channel closed ({target}): {err}"),
    }
}

/// Ends the session of an attached debugger, switches the stub back to raw
/// mode and waits (briefly) until that is written.
async fn stop(shared: &Shared, why: &str) -> anyhow::Result<Exit> {
    info!("stopping ({why})");
    let flushed = shared.shutdown();
    match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, flushed).await {
        Ok(Ok(())) => debug!("stub switched back to raw mode"),
        Ok(Err(_)) => debug!("the channel is closed; the stub was not switched back"),
        Err(_) => warn!("could not switch the stub back to raw mode: the channel is stuck"),
    }
    Ok(Exit::Stopped)
}

/// Writes everything queued for the stub, in order. Ends only on an error
/// (or when every sender is gone).
async fn pump_to_stub(
    mut channel: impl AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<ToStub>,
) -> io::Result<()> {
    while let Some(msg) = queue.recv().await {
        match msg {
            ToStub::Bytes(bytes) => {
                channel.write_all(&bytes).await?;
                channel.flush().await?;
            }
            ToStub::Flush(done) => {
                channel.flush().await?;
                let _ = done.send(());
            }
        }
    }
    Ok(())
}

/// Where console text goes: stdout, and the console log if there is one.
struct Console {
    stdout: tokio::io::Stdout,
    log: Option<File>,
}

impl Console {
    fn new(log: Option<File>) -> Self {
        Self { stdout: tokio::io::stdout(), log }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stdout.write_all(bytes).await?;
        self.stdout.flush().await?;
        if let Some(log) = &mut self.log {
            let written = match log.write_all(bytes).await {
                Ok(()) => log.flush().await,
                Err(err) => Err(err),
            };
            if let Err(err) = written {
                error!("cannot write the console log, no longer writing it: {err}");
                self.log = None;
            }
        }
        Ok(())
    }
}

/// Reads the channel until it closes: console text to [`Console`], debugger
/// bytes to the attached debugger.
async fn pump_from_stub(
    mut channel: impl AsyncRead + Unpin,
    shared: Arc<Shared>,
    mut console: Console,
    synced: watch::Sender<bool>,
) -> ReaderEnd {
    let trace = shared.trace();
    let mut demux = Demux::new();
    // Follows the stub's RSP stream for --trace only; nothing is held back.
    let mut replies = rsp::Tracker::new(usize::MAX);
    let mut framing_errors = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    loop {
        let (n, closed) = match channel.read(&mut buf).await {
            Ok(0) => (0, Some(None)),
            Ok(n) => (n, None),
            Err(err) => (0, Some(Some(err))),
        };
        events.clear();
        demux.feed_into(&buf[..n], &mut events);
        if closed.is_some() {
            events.extend(demux.finish());
        }
        for event in events.drain(..) {
            match event {
                demux::Event::Console(bytes) => {
                    if let Err(err) = console.write(&bytes).await {
                        return ReaderEnd::Stdout(err);
                    }
                }
                demux::Event::Debugger(bytes) => {
                    if trace {
                        trace_replies(&mut replies, &bytes);
                    }
                    shared.to_client(bytes);
                }
                demux::Event::Sync => {
                    if trace {
                        info!("stub -> bridge: {} (framing on)", control_sequence(wire::SYNC));
                    }
                    if !*synced.borrow() {
                        eprintln!("ukdb: stub answered; framing on");
                        let _ = synced.send(true);
                    } else {
                        debug!("the stub synchronised again");
                    }
                }
                demux::Event::Switch(channel) => {
                    if trace {
                        let (byte, name) = match channel {
                            Channel::Console => (wire::CONSOLE, "console"),
                            Channel::Debugger => (wire::DEBUGGER, "debugger"),
                        };
                        info!("stub -> bridge: {} ({name})", control_sequence(byte));
                    }
                }
                demux::Event::FramingError(byte) => {
                    framing_errors += 1;
                    let msg = format!(
                        "framing error from the stub: DLE followed by {}; kept as console text",
                        Escaped(&[byte])
                    );
                    if framing_errors == 1 {
                        warn!("{msg} (further ones are logged at debug level)");
                    } else {
                        debug!("{msg}");
                    }
                }
            }
        }
        if let Some(err) = closed {
            return ReaderEnd::ChannelClosed(err);
        }
    }
}

fn trace_replies(replies: &mut rsp::Tracker, bytes: &[u8]) {
    let Ok(events) = replies.feed(bytes) else {
        return;
    };
    for event in events {
        match event {
            rsp::Event::Packet(packet) => info!("stub -> gdb: {}", Escaped(&packet)),
            rsp::Event::Byte(byte) => info!("stub -> gdb: {}", describe_rsp_byte(byte)),
            rsp::Event::Restarted(partial) => {
                info!("stub -> gdb: incomplete packet {}", Escaped(&partial))
            }
        }
    }
}

/// Serves one debugger: its RSP stream to the stub, whole packets only; the
/// stub's replies to it. Nothing is forwarded before the stub has answered
/// the framing request (its replies would otherwise be taken for console
/// text). Ends when it disconnects or is dropped, and then ends its session
/// (`DLE 'X'`).
async fn serve_debugger(
    shared: Arc<Shared>,
    attached: Attached,
    peer: String,
    stream: Box<dyn Stream>,
    mut synced: watch::Receiver<bool>,
) {
    if synced.wait_for(|&on| on).await.is_err() {
        shared.detach(attached.id);
        return;
    }
    let Attached { id, mut from_stub } = attached;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut tracker = rsp::Tracker::new(rsp::DEFAULT_MAX_PACKET);
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(err) => {
                        debug!("reading from debugger {peer}: {err}");
                        break;
                    }
                };
                events.clear();
                let parsed = tracker.push(&buf[..n], &mut events);
                for event in events.drain(..) {
                    if !shared.forward(id, event) {
                        // The session was taken away (the bridge is stopping).
                        return;
                    }
                }
                if let Err(err) = parsed {
                    error!("debugger {peer}: {err}; dropping it");
                    break;
                }
            }
            reply = from_stub.recv() => match reply {
                Some(bytes) => {
                    let written = match wr.write_all(&bytes).await {
                        Ok(()) => wr.flush().await,
                        Err(err) => Err(err),
                    };
                    if let Err(err) = written {
                        debug!("writing to debugger {peer}: {err}");
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let partial = tracker.reset();
    if !partial.is_empty() {
        debug!("discarding the incomplete packet {}", Escaped(&partial));
    }
    shared.detach(id);
}
