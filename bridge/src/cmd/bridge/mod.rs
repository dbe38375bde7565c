//! `ukdb bridge`: share a unikernel's serial line between its console and a
//! debugger.

mod channel;
pub mod cores;
mod listener;
pub mod net;
mod session;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use ukdb_bridge::addr::{ListenAddr, Target, DEFAULT_LISTEN};
use ukdb_bridge::demux::{self, Channel, Demux};
use ukdb_bridge::escape::{control_sequence, describe_rsp_byte, Escaped};
use ukdb_bridge::rsp;
use ukdb_bridge::wire;

use crate::Exit;
use channel::Stream;
use cores::{CoreOptions, Cores};
pub use listener::Listener;
use session::{Attached, Shared};

/// When the bridge probes for a stub with `DLE 'F'`, counted from the
/// moment it connected, unless a hello or a sync was seen before: a stub that
/// announced itself before the bridge connected does not say hello again.
/// Three probes at most, then the bridge writes into the guest only to answer
/// a hello.
const PROBES: [Duration; 3] =
    [Duration::from_secs(2), Duration::from_secs(3), Duration::from_secs(5)];

/// How often the bridge asks a stub it has seen for framing again while
/// no sync came back (a request or sync lost on a noisy line).
const FRAMING_RETRY: Duration = Duration::from_secs(1);

/// When the bridge warns that no stub announced itself, counted from the
/// moment it connected (two seconds after the last probe).
const NO_STUB_WARNING: Duration = Duration::from_secs(7);

/// How many bytes of console output may wait for stdout before the bridge
/// stops reading the channel (until stdout takes some): 16 MiB. Console
/// bytes are never dropped.
const CONSOLE_QUEUE_BYTES: usize = 16 << 20;

/// The size of the buffers that the channel and debugger sockets are read
/// into.
const READ_BUF: usize = 64 * 1024;

/// How long the bridge waits for stdout to take the last console output
/// once the channel has closed.
const CONSOLE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
to framed mode when it announces itself (or answers one of at most three
probes), prints the console on stdout and serves the debugger half on
--listen, for one gdb or lldb at a time:

    ukdb bridge --target unix:/tmp/uk.sock
    gdb -ex 'target remote 127.0.0.1:1234' kernel.elf

When a debugger disconnects the stub removes its breakpoints and lets the
unikernel run; another debugger can attach later. When the unikernel
restarts, the attached debugger is disconnected and framing is requested
again. Messages go to stderr,
one line each, starting with \"ukdb: \" (RUST_LOG selects them; default
info).

A unikernel that crashes with ukdb.crash=dump on its command line streams
its own core over the line; with --core-dir DIR the bridge writes it as
DIR/<name>-<build-id>-<UTC time>.core and prints the gdb command to open
it (a broken stream is kept as DIR/<name>-<time>.core.partial, never as a
.core). Without --core-dir a stream is reported and dropped. The console
goes on before and after a stream.

    ukdb bridge --target unix:/tmp/uk.sock --core-dir cores --image kernel.elf

With --net the target is the network stub (the stub listening on TCP in the
guest, e.g. a port QEMU forwards): no framing, no hello, no probes. Every
debugger that connects to --listen gets a TCP connection of its own to the
stub, and the bytes are passed through unchanged both ways (TCP_NODELAY on
both sockets); when either side closes, both are closed (a debugger that
leaves ends its session at the stub). The stub refuses a second debugger
itself. The console then comes from another channel, if any (--console),
usually the serial line:

    ukdb bridge --net --target tcp:127.0.0.1:5555 --console unix:/tmp/uk.sock

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

    /// Never probe for a stub: write into the guest only to answer a stub's
    /// hello (by default the bridge sends up to three probes, 2, 3 and 5
    /// seconds after connecting, when no stub announced itself).
    #[arg(long, conflicts_with = "net")]
    no_probe: bool,

    /// The serial line may corrupt, drop or duplicate bytes: keep the stub in
    /// ack mode whatever the debugger asks (the bridge answers its
    /// QStartNoAckMode and acknowledges for it), check every reply's
    /// checksum (NAK: the stub resends), retransmit requests that are NAKed
    /// or unanswered, and drop duplicates.
    #[arg(long, conflicts_with = "net")]
    noisy_line: bool,

    /// The target is the network stub (tcp:HOST:PORT): each debugger is
    /// passed through on a TCP connection of its own, without framing.
    #[arg(long, conflicts_with = "trace")]
    net: bool,

    /// With --net: show the console from this channel (raw, e.g. the serial
    /// line) on stdout and in --console-log; the bridge never writes to it.
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT|pty:PATH", requires = "net")]
    console: Option<Target>,

    /// Write the cores that crashing unikernels stream (ukdb.crash=dump)
    /// into DIR (created if missing).
    #[arg(long, value_name = "DIR", conflicts_with = "net")]
    core_dir: Option<PathBuf>,

    /// The unikernel's image: its build-id is checked against each core's
    /// (a loud warning when they differ), and it is named in the gdb
    /// command printed.
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,

    /// The first part of the core file names (default: the image's file
    /// name, or "unikernel").
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// The stub is locked (ukdb.key= / ukdb.rokey=): authenticate with the
    /// key in FILE (hex) before serving each debugger (see `ukdb auth`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// With --key-file: the tier the key opens, full or ro (read-only).
    #[arg(long, value_name = "full|ro", default_value = "full", value_parser = ["full", "ro"], requires = "key_file")]
    tier: String,
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
    /// The bridge is stopping.
    Stopped,
}

/// A future that resolves, with the reason, when the bridge should stop.
pub type StopFuture<'a> = std::pin::Pin<&'a mut (dyn Future<Output = &'static str> + Send)>;

/// Resolves with the name of the first of SIGINT, SIGTERM or SIGHUP.
async fn any_stop_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
            _ = sighup.recv() => "SIGHUP",
        }
    })
}

/// Opens the console log for appending, if one is asked for.
pub async fn open_console_log(path: Option<&std::path::Path>) -> anyhow::Result<Option<File>> {
    match path {
        Some(path) => Ok(Some(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("cannot open the console log {}", path.display()))?,
        )),
        None => Ok(None),
    }
}

/// Runs the bridge until a signal (exit 0) or the channel closes (exit 3).
pub async fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let stop = any_stop_signal().await?;
    tokio::pin!(stop);
    let console_log = open_console_log(cmd.console_log.as_deref()).await?;
    let credentials = crate::cmd::authclient::credentials(cmd.key_file.as_deref(), &cmd.tier)?;
    if cmd.net {
        let stub = match &cmd.target {
            Target::Tcp(addr) => addr.clone(),
            other => {
                anyhow::bail!("--net needs a tcp:HOST:PORT target (the network stub), not {other}")
            }
        };
        let listener = Listener::bind(&cmd.listen).await?;
        eprintln!("ukdb: listening on {listener}");
        let opts = net::Options {
            stub: Some((listener, stub)),
            console: cmd.console.clone(),
            console_log,
            connect_timeout: cmd.connect_timeout,
            credentials: credentials.clone(),
        };
        let (ready, _) = watch::channel(false);
        return net::serve(opts, stop, ready).await;
    }
    // Bind before connecting: a busy port should fail before anything is
    // written to the unikernel.
    let listener = Listener::bind(&cmd.listen).await?;
    eprintln!("ukdb: listening on {listener}");
    session::set_noisy_line(cmd.noisy_line);
    let opts = Options {
        target: cmd.target.clone(),
        console_log,
        trace: cmd.trace,
        connect_timeout: cmd.connect_timeout,
        no_probe: cmd.no_probe,
        credentials,
    };
    let cores = Cores::new(CoreOptions::new(cmd.core_dir, cmd.image, cmd.name))?;
    let (synced, _) = watch::channel(false);
    serve_with_cores(opts, cores, listener, stop, synced).await
}

/// What [`serve`] needs besides its listener.
pub struct Options {
    /// The unikernel's serial line.
    pub target: Target,
    /// Where the console goes besides stdout.
    pub console_log: Option<File>,
    /// Log every packet and control sequence.
    pub trace: bool,
    /// How long to keep trying to connect to the target.
    pub connect_timeout: Duration,
    /// Never probe for a stub.
    pub no_probe: bool,
    /// The stub is locked: authenticate each debugger's session with these
    /// before its first packet.
    pub credentials: Option<crate::cmd::auth::Credentials>,
}

/// Serves debuggers on `listener` through the serial line `opts.target`
/// until `stop` resolves (exit 0) or the channel closes (exit 3). `synced`
/// turns true each time the stub answers the framing request (a debugger
/// can attach from then on).
pub async fn serve(
    opts: Options,
    listener: Listener,
    stop: StopFuture<'_>,
    synced_tx: watch::Sender<bool>,
) -> anyhow::Result<Exit> {
    let cores = Cores::new(CoreOptions::default())?;
    serve_with_cores(opts, cores, listener, stop, synced_tx).await
}

/// [`serve`], with crash streams going to `cores`.
pub async fn serve_with_cores(
    opts: Options,
    cores: Cores,
    listener: Listener,
    mut stop: StopFuture<'_>,
    synced_tx: watch::Sender<bool>,
) -> anyhow::Result<Exit> {
    let channel = tokio::select! {
        channel = channel::connect(&opts.target, opts.connect_timeout) => channel?,
        _ = &mut stop => return Ok(Exit::Stopped),
    };
    let connected = Instant::now();
    info!("connected to {}", opts.target);

    let shared = Arc::new(Shared::new(opts.trace));
    let (channel_rd, channel_wr) = tokio::io::split(channel);
    let mut writer = tokio::spawn(pump_to_stub(channel_wr, Arc::clone(&shared)));
    let synced_rx = synced_tx.subscribe();
    let (console_tx, console_rx) = console_queue();
    let mut console = tokio::spawn(write_console(console_rx, Console::new(opts.console_log)));
    let (stop_reader, reader_stop) = watch::channel(false);
    let mut reader = tokio::spawn(pump_from_stub(
        channel_rd,
        Arc::clone(&shared),
        console_tx,
        synced_tx,
        reader_stop,
        cores,
    ));

    // The bridge writes nothing until a stub says hello (answered by the
    // reader) or, when none did, until the probes are due.
    let mut probes = if opts.no_probe { &[][..] } else { &PROBES[..] };
    let probe_timer = tokio::time::sleep_until(connected + PROBES[0]);
    tokio::pin!(probe_timer);
    let warning_timer = tokio::time::sleep_until(connected + NO_STUB_WARNING);
    tokio::pin!(warning_timer);
    let mut framing_retry = tokio::time::interval_at(connected + FRAMING_RETRY, FRAMING_RETRY);
    framing_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    let mut console_running = true;
    let mut signalled = None;
    let target = &opts.target;

    loop {
        tokio::select! {
            () = &mut probe_timer, if !probes.is_empty() => {
                probes = &probes[1..];
                if shared.probe() {
                    debug!("no stub has announced itself; probing with DLE 'F'");
                    if let Some(next) = probes.first() {
                        probe_timer.as_mut().reset(connected + *next);
                    }
                } else {
                    probes = &[];
                }
            }
            _ = framing_retry.tick(), if !*synced_rx.borrow() => {
                if shared.request_framing_again() {
                    debug!("no sync from the stub yet; asking for framing again");
                }
            }
            () = &mut warning_timer, if !warned => {
                warned = true;
                if !shared.stub_seen() {
                    let probed = if opts.no_probe { "" } else { " or answered the bridge's probes" };
                    warn!(
                        "no ukdb stub announced itself{probed} within {}s (a production image, \
                         or the unikernel does not poll its serial line yet); passing the line \
                         through as console text until a stub says hello",
                        NO_STUB_WARNING.as_secs()
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
                            opts.credentials.clone(),
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
            written = &mut console, if console_running => {
                console_running = false;
                let err = match written {
                    // The reader has ended (dropping the queue's sender) and
                    // stdout took everything: the reader's branch follows.
                    Ok(Ok(())) => continue,
                    Ok(Err(err)) => err,
                    Err(join) => io::Error::other(join),
                };
                let _ = stop_bridge(&shared, "error").await;
                return Err(anyhow::Error::from(err).context("cannot write the console to stdout"));
            }
            end = &mut reader => {
                let console = console_running.then_some(&mut console);
                return finish_after_reader(target, &shared, end, console).await;
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
                    Ok(end) => {
                        let console = console_running.then_some(&mut console);
                        return finish_after_reader(target, &shared, end, console).await;
                    }
                    Err(_) => {
                        reader.abort();
                        channel_closed(target, err.as_ref());
                        return Ok(Exit::ChannelClosed);
                    }
                }
            }
            why = &mut stop => signalled = Some(why),
        }
        if let Some(why) = signalled {
            let exit = stop_bridge(&shared, why).await;
            // The reader ends after the chunk it is handling, dropping the
            // console queue's sender; stdout then gets everything queued.
            let _ = stop_reader.send(true);
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut reader).await.is_err() {
                reader.abort();
            }
            if console_running {
                drain_console(&mut console).await;
            }
            return exit;
        }
    }
}

/// Waits (up to [`CONSOLE_DRAIN_TIMEOUT`]) until the console writer, whose
/// queue's sender is gone, has written everything to stdout.
pub(super) async fn drain_console(console: &mut JoinHandle<io::Result<()>>) {
    match tokio::time::timeout(CONSOLE_DRAIN_TIMEOUT, console).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => debug!("writing the last console output: {err}"),
        Ok(Err(join)) => debug!("the console writer failed: {join}"),
        Err(_) => warn!("stdout does not take the last console output; giving up"),
    }
}

async fn finish_after_reader(
    target: &Target,
    shared: &Shared,
    end: Result<ReaderEnd, tokio::task::JoinError>,
    console: Option<&mut JoinHandle<io::Result<()>>>,
) -> anyhow::Result<Exit> {
    match end {
        Ok(ReaderEnd::ChannelClosed(err)) => {
            // The reader has dropped its end of the console queue: the
            // console writer (unless it has ended already) ends once stdout
            // has taken everything.
            if let Some(console) = console {
                drain_console(console).await;
            }
            channel_closed(target, err.as_ref());
            Ok(Exit::ChannelClosed)
        }
        Ok(ReaderEnd::Stopped) => Ok(Exit::Stopped),
        Err(join) => {
            let _ = stop_bridge(shared, "error").await;
            Err(anyhow::Error::from(join).context("the channel reader failed"))
        }
    }
}

pub(super) fn channel_closed(target: &Target, err: Option<&io::Error>) {
    match err {
        None => eprintln!("ukdb: unikernel channel closed ({target})"),
        Some(err) => eprintln!("ukdb: unikernel channel closed ({target}): {err}"),
    }
}

/// Ends the session of an attached debugger, switches the stub back to raw
/// mode and waits (briefly) until that is written.
async fn stop_bridge(shared: &Shared, why: &str) -> anyhow::Result<Exit> {
    info!("stopping ({why})");
    let flushed = shared.shutdown();
    match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, flushed).await {
        Ok(Ok(())) => debug!("the last control sequences are written"),
        Ok(Err(_)) => debug!("the channel is closed; the stub was not switched back"),
        Err(_) => warn!("could not switch the stub back to raw mode: the channel is stuck"),
    }
    Ok(Exit::Stopped)
}

/// Writes everything queued for the stub, in order. Ends only on an error.
async fn pump_to_stub(mut channel: impl AsyncWrite + Unpin, shared: Arc<Shared>) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let flushes = shared.next_output(&mut buf).await;
        if !buf.is_empty() {
            channel.write_all(&buf).await?;
            channel.flush().await?;
            buf.clear();
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Where console text goes: stdout, and the console log if there is one.
pub(super) struct Console {
    stdout: tokio::io::Stdout,
    log: Option<File>,
}

impl Console {
    pub(super) fn new(log: Option<File>) -> Self {
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

/// The sending end of the console queue: holds [`CONSOLE_QUEUE_BYTES`] bytes
/// at most.
pub(super) struct ConsoleTx {
    tx: mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
}

/// The receiving end of the console queue; each chunk's permit returns its
/// bytes to the budget when dropped (after the chunk is written).
pub(super) type ConsoleRx = mpsc::UnboundedReceiver<(Vec<u8>, OwnedSemaphorePermit)>;

pub(super) fn console_queue() -> (ConsoleTx, ConsoleRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ConsoleTx { tx, budget: Arc::new(Semaphore::new(CONSOLE_QUEUE_BYTES)) }, rx)
}

impl ConsoleTx {
    /// Queues console bytes, waiting while the queue is full. Fails only
    /// when the console writer has ended.
    pub(super) async fn send(&self, bytes: Vec<u8>) -> Result<(), ConsoleGone> {
        // A chunk is one read of the channel: at most READ_BUF bytes, far
        // below both limits.
        let n = u32::try_from(bytes.len().min(CONSOLE_QUEUE_BYTES)).unwrap_or(u32::MAX);
        let permit =
            Arc::clone(&self.budget).acquire_many_owned(n).await.map_err(|_| ConsoleGone)?;
        self.tx.send((bytes, permit)).map_err(|_| ConsoleGone)
    }
}

/// The console writer has ended (stdout failed); the bridge is stopping.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConsoleGone;

/// Writes console output, in its own task so that a slow or blocked stdout
/// never stalls debugger traffic. Ends when the queue's sender is gone and
/// everything was written, or when stdout fails.
pub(super) async fn write_console(mut queue: ConsoleRx, mut console: Console) -> io::Result<()> {
    while let Some((bytes, _permit)) = queue.recv().await {
        console.write(&bytes).await?;
    }
    Ok(())
}

/// Reads the channel until it closes: console text to the console writer,
/// debugger bytes to the attached debugger, the stub's hello and
/// acknowledgements to [`Shared`], crash streams to `cores`.
///
/// When [`CONSOLE_QUEUE_BYTES`] of console output wait for stdout, this
/// stops reading the channel until stdout takes some (console bytes are
/// never dropped).
async fn pump_from_stub(
    mut channel: impl AsyncRead + Unpin,
    shared: Arc<Shared>,
    console: ConsoleTx,
    synced: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
    mut cores: Cores,
) -> ReaderEnd {
    let trace = shared.trace();
    let noisy = session::noisy_line();
    let mut demux = if noisy { Demux::resynchronising() } else { Demux::new() };
    let mut scrubber = noisy.then(ukdb_bridge::reliable::Scrubber::default);
    // Follows the stub's RSP stream for --trace only; nothing is held back.
    let mut replies = rsp::Tracker::new(usize::MAX);
    let mut framing_errors = 0u64;
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    loop {
        let read = tokio::select! {
            read = channel.read(&mut buf) => read,
            _ = stop.wait_for(|&stop| stop) => {
                // A crash stream cut short by the bridge stopping is kept.
                for event in demux.finish() {
                    if let demux::Event::CrashFailed(error) = event {
                        cores.failed(&error);
                    }
                }
                return ReaderEnd::Stopped;
            }
        };
        let (n, closed) = match read {
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
                demux::Event::Console(mut bytes) => {
                    if let Some(scrubber) = scrubber.as_mut() {
                        let mut text = Vec::with_capacity(bytes.len());
                        let mut packets = Vec::new();
                        scrubber.feed(&bytes, &mut text, &mut packets);
                        if closed.is_some() {
                            scrubber.release(&mut text);
                        }
                        if !packets.is_empty() {
                            debug!(
                                "RSP in the console channel (a damaged switch): {}",
                                Escaped(&packets)
                            );
                            shared.to_client(packets);
                        }
                        bytes = text;
                    }
                    // Fails only when the console writer has ended, and then
                    // the bridge is stopping with an error.
                    let _ = console.send(bytes).await;
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
                    shared.on_sync();
                    if !*synced.borrow() {
                        eprintln!("ukdb: stub answered; framing on");
                        let _ = synced.send(true);
                    } else {
                        debug!("the stub synchronised again");
                    }
                }
                demux::Event::Hello => {
                    if trace {
                        info!("stub -> bridge: {} (hello)", control_sequence(wire::HELLO));
                    }
                    let framed = synced.send_replace(false);
                    // Its RSP state is gone with the old stub.
                    replies.reset();
                    let restart = shared.on_hello(framed);
                    if framed {
                        let dropped = match restart.dropped {
                            Some(peer) => format!("dropped debugger {peer}; "),
                            None => String::new(),
                        };
                        info!("the unikernel restarted; {dropped}requesting framing again");
                    } else {
                        debug!("a stub said hello; requesting framing");
                    }
                }
                demux::Event::Ended => {
                    if trace {
                        info!("stub -> bridge: {} (session ended)", control_sequence(wire::ENDED));
                    }
                    shared.on_ended();
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
                demux::Event::CrashStart => cores.start(),
                demux::Event::CrashBytes(bytes) => cores.bytes(&bytes),
                demux::Event::CrashProgress(progress) => cores.progress(progress),
                demux::Event::CrashDone(snapshot) => cores.done(snapshot).await,
                demux::Event::CrashFailed(error) => cores.failed(&error),
                demux::Event::FramingError(byte) => {
                    framing_errors += 1;
                    let msg = format!(
                        "framing error from the stub: DLE followed by {}; {}",
                        Escaped(&[byte]),
                        if noisy {
                            "both bytes dropped, the channel kept (a noisy line)"
                        } else {
                            "kept as console text"
                        }
                    );
                    if framing_errors == 1 && !noisy {
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

/// Waits until `deadline`; forever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

/// Serves one debugger: its RSP stream to the stub, whole packets only and
/// one request at a time (the others wait in [`Shared`]'s pacer); the
/// stub's replies to it. It also runs the timeout of the outstanding
/// request. Nothing is forwarded before the stub has answered
/// the framing request (its replies would otherwise be taken for console
/// text); meanwhile what the debugger sends is held (one buffer's worth) and
/// its disconnecting frees the session at once. Reading from the debugger
/// pauses while the queue for the stub is full. Ends when it disconnects or
/// is dropped, and then ends its session (`DLE 'X'`).
/// Runs the authentication exchange in debugger `id`'s session before its
/// first packet (`cmd::authclient`; here the stub's replies come back on
/// `from_stub`).
async fn authenticate(
    shared: &Shared,
    id: u64,
    from_stub: &mut session::FromStub,
    creds: &crate::cmd::auth::Credentials,
) -> anyhow::Result<()> {
    let mut conn = InSession { shared, id, from_stub, pending: Vec::new() };
    crate::cmd::authclient::authenticate_async(&mut conn, creds).await
}

/// Debugger `id`'s session, as the authentication exchange uses it.
struct InSession<'a> {
    shared: &'a Shared,
    id: u64,
    from_stub: &'a mut session::FromStub,
    pending: Vec<u8>,
}

impl crate::cmd::authclient::Exchange for InSession<'_> {
    async fn ask(&mut self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        ask(self.shared, self.id, self.from_stub, &mut self.pending, body).await
    }
}

/// Sends one packet in debugger `id`'s session and returns the reply's
/// body, acknowledged.
async fn ask(
    shared: &Shared,
    id: u64,
    from_stub: &mut session::FromStub,
    pending: &mut Vec<u8>,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    if !shared.forward(id, rsp::Event::Packet(crate::cmd::auth::packet(body))) {
        anyhow::bail!("the session was taken away");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(reply) = crate::cmd::auth::take_packet(pending) {
            shared.forward(id, rsp::Event::Byte(b'+'));
            return Ok(reply);
        }
        // The outstanding request's timeouts run here too (on a noisy
        // line the link asks again for what was lost).
        let pace = shared.pace_deadline();
        tokio::select! {
            got = tokio::time::timeout_at(deadline, from_stub.recv()) => match got {
                Ok(Some(bytes)) => pending.extend_from_slice(&bytes),
                Ok(None) => anyhow::bail!("the session was taken away"),
                Err(_) => {
                    anyhow::bail!("the stub did not answer {}", String::from_utf8_lossy(body))
                }
            },
            () = sleep_until(pace) => shared.expire(),
        }
    }
}

async fn serve_debugger(
    shared: Arc<Shared>,
    attached: Attached,
    peer: String,
    stream: Box<dyn Stream>,
    mut synced: watch::Receiver<bool>,
    credentials: Option<crate::cmd::auth::Credentials>,
) {
    let Attached { id, mut from_stub } = attached;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; READ_BUF];
    let mut held = 0;
    loop {
        tokio::select! {
            on = synced.wait_for(|&on| on) => {
                if on.is_err() {
                    shared.detach(id);
                    return;
                }
                break;
            }
            read = rd.read(&mut buf[held..]), if held < buf.len() => match read {
                Ok(0) => {
                    debug!("debugger {peer} left before the stub answered");
                    shared.detach(id);
                    return;
                }
                Ok(n) => held += n,
                Err(err) => {
                    debug!("reading from debugger {peer}: {err}");
                    shared.detach(id);
                    return;
                }
            },
        }
    }
    if let Some(creds) = &credentials {
        if let Err(err) = authenticate(&shared, id, &mut from_stub, creds).await {
            warn!("debugger {peer}: cannot authenticate to the stub: {err:#}");
            eprintln!("ukdb: cannot authenticate to the stub: {err:#}");
            shared.detach(id);
            return;
        }
        info!("debugger {peer}: authenticated to the stub ({} tier)", creds.tier);
    }
    let mut tracker = rsp::Tracker::new(rsp::DEFAULT_MAX_PACKET);
    let mut events = Vec::new();
    let mut chunk = held;
    loop {
        if chunk > 0 {
            events.clear();
            let parsed = tracker.push(&buf[..chunk], &mut events);
            chunk = 0;
            for event in events.drain(..) {
                if !shared.forward(id, event) {
                    // The session was taken away (the bridge is stopping, or
                    // the unikernel restarted).
                    return;
                }
            }
            if let Err(err) = parsed {
                error!("debugger {peer}: {err}; dropping it");
                break;
            }
        }
        // Computed after this debugger's packets were forwarded or held
        // (see `Shared::pace_deadline`).
        let deadline = shared.pace_deadline();
        tokio::select! {
            () = sleep_until(deadline) => shared.expire(),
            read = async {
                shared.wait_room().await;
                rd.read(&mut buf).await
            } => match read {
                Ok(0) => break,
                Ok(n) => chunk = n,
                Err(err) => {
                    debug!("reading from debugger {peer}: {err}");
                    break;
                }
            },
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
