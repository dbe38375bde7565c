//! `ukdb core`: a core file of a live unikernel, taken over RSP.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};
use ukdb_bridge::addr::{ListenAddr, Target};
use ukdb_bridge::core::live::{self, Frame, MapReply, Reader, Span};
use ukdb_bridge::core::{elf, MapEntry, Snapshot, PAGE};
use ukdb_stub::dumpwire::cause;

use super::bridge::{self, Listener};
use crate::Exit;

/// How long any one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `?` may go unanswered before `ukdb core` sends a Ctrl-C (a
/// target that runs under a session answers only once it stops).
const STOP_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the in-process bridge (`--target`) may take to hear from the
/// stub: its probes go out 2, 3 and 5 seconds after it connected.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// The `--help` text of `ukdb core`.
const LONG_ABOUT: &str = "\
Write a core file of a live unikernel: attach as a debugger, stop it, read
its registers and the memory its page tables map, write an ELF core that
gdb and lldb open with the unikernel's image, and leave it as it was found.

    ukdb core --connect 127.0.0.1:1234 -o uk.core     (the network stub, or a
                                                      running `ukdb bridge`)
    ukdb core --target unix:/tmp/uk.sock -o uk.core   (the serial line itself)
    gdb kernel.elf uk.core

What is read: the stub's memory map (qUkdb.map: the page walk's runs), the
bitmap of non-zero pages of each RAM range (qUkdb.pages), then only those
pages, with binary `x` reads (`m` if the stub has no `x`) as large as the
stub's packet size allows. All-zero pages are not read nor stored. A stub
without the qUkdb queries is read through qXfer:memory-map:read, every
mapped byte (slow; physical addresses are then taken equal to virtual ones).

By default the unikernel is left as it was found: ukdb core ends its session
without resuming, so a unikernel that was running runs on, and one that was
held (ukdb.wait, a fault, a panic) stays held for a debugger. --resume
detaches with `D` instead, which lets a held unikernel go on too.

The core is written to FILE.partial-XXXXXX in FILE's directory, synced, and
renamed to FILE; on any failure (the channel closes, a reply takes more than
10 s) nothing is left under FILE.

With --target, the serial line is shared as `ukdb bridge` shares it (the
console goes to stdout meanwhile); the line must be free (no bridge on it).

A locked stub (ukdb.key= / ukdb.rokey=): --key-file FILE authenticates
before anything else is asked, with the read-only tier's key by default
(enough for a core) or, with --tier full, the full tier's. A refused key is
an error naming the tier (exit 1), and nothing is written. Through a running
`ukdb bridge --key-file`, the bridge has authenticated already: give no key.

Exit codes:
  0  the core was written
  1  error
  2  usage error
  3  the channel closed before the core was complete";

/// Write a core file of a live unikernel
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Cmd {
    /// The unikernel's serial line: unix:PATH, tcp:HOST:PORT or pty:PATH
    /// (as for `ukdb bridge --target`).
    #[arg(
        long,
        value_name = "unix:PATH|tcp:HOST:PORT|pty:PATH",
        required_unless_present = "connect",
        conflicts_with = "connect"
    )]
    target: Option<Target>,

    /// An RSP server: the network stub, or a running `ukdb bridge`'s
    /// debugger port.
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,

    /// The core file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,

    /// Resume the unikernel afterwards (detach with `D`), even one that was
    /// held; by default it is left as it was found.
    #[arg(long)]
    resume: bool,

    /// The unikernel's image: warn loudly when its GNU build-id differs
    /// from the running unikernel's.
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,

    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    quiet: bool,

    /// How long to keep trying to connect, in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    connect_timeout: Duration,

    /// The stub is locked (ukdb.key= / ukdb.rokey=): authenticate with the
    /// key in FILE (hex) first (see `ukdb auth`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// With --key-file: the tier the key opens, ro (read-only, enough for a
    /// core) or full.
    #[arg(long, value_name = "ro|full", default_value = "ro", value_parser = ["full", "ro"], requires = "key_file")]
    tier: String,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration in seconds"))
}

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
enum Fail {
    /// The connection ended.
    #[error("the channel closed after {}", mib(*.0))]
    Closed(u64),
    /// A reply did not come in time.
    #[error("no reply to `{0}` within {secs}s (after {after})", secs = REPLY_TIMEOUT.as_secs(), after = mib(*.1))]
    Timeout(String, u64),
    /// The stub said something unexpected.
    #[error("{0}")]
    Protocol(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// An RSP client on one connection.
struct Client {
    stream: TcpStream,
    reader: Reader,
    frames: VecDeque<Frame>,
    /// Packets that arrived while an acknowledgement was awaited.
    stash: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    ack: bool,
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            reader: Reader::new(),
            frames: VecDeque::new(),
            stash: VecDeque::new(),
            buf: vec![0; 64 * 1024],
            ack: true,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let total = self.reader.total;
        let written = match self.stream.write_all(bytes).await {
            Ok(()) => self.stream.flush().await,
            Err(err) => Err(err),
        };
        written.map_err(|err| {
            debug!("writing to the stub: {err}");
            Fail::Closed(total)
        })
    }

    async fn frame(&mut self, deadline: Instant, what: &[u8]) -> Result<Frame, Fail> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await;
            let n = match read {
                Err(_) => {
                    return Err(Fail::Timeout(
                        String::from_utf8_lossy(what).into_owned(),
                        self.reader.total,
                    ))
                }
                Ok(Ok(0)) => return Err(Fail::Closed(self.reader.total)),
                Ok(Ok(n)) => n,
                Ok(Err(err)) => {
                    debug!("reading from the stub: {err}");
                    return Err(Fail::Closed(self.reader.total));
                }
            };
            let mut out = Vec::new();
            self.reader.push(&self.buf[..n], &mut out);
            self.frames.extend(out);
        }
    }

    /// Sends a packet (and in ack mode waits for its `+`, resending on `-`).
    async fn send(&mut self, payload: &[u8]) -> Result<(), Fail> {
        let packet = live::packet(payload);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        for _ in 0..5 {
            self.write(&packet).await?;
            if !self.ack {
                return Ok(());
            }
            loop {
                match self.frame(deadline, payload).await? {
                    Frame::Ack => return Ok(()),
                    Frame::Nak => break,
                    Frame::Packet(p) => self.stash.push_back(p),
                    Frame::BadChecksum => self.write(b"-").await?,
                }
            }
        }
        Err(Fail::Protocol(format!(
            "the stub refused `{}` five times",
            String::from_utf8_lossy(payload)
        )))
    }

    /// The next packet within `timeout` (acknowledged in ack mode).
    async fn recv_within(&mut self, what: &[u8], timeout: Duration) -> Result<Vec<u8>, Fail> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = match self.stash.pop_front() {
                Some(p) => Frame::Packet(p),
                None => self.frame(deadline, what).await?,
            };
            match frame {
                Frame::Packet(p) => {
                    if self.ack {
                        self.write(b"+").await?;
                    }
                    return Ok(p);
                }
                Frame::BadChecksum if self.ack => self.write(b"-").await?,
                Frame::BadChecksum => {
                    return Err(Fail::Protocol(format!(
                        "a reply to `{}` with a bad checksum",
                        String::from_utf8_lossy(what)
                    )))
                }
                Frame::Ack | Frame::Nak => {}
            }
        }
    }

    async fn request(&mut self, payload: &[u8]) -> Result<Vec<u8>, Fail> {
        self.send(payload).await?;
        self.recv_within(payload, REPLY_TIMEOUT).await
    }

    /// The next stop reply, skipping console output.
    async fn stop_reply(&mut self, what: &[u8], timeout: Duration) -> Result<Vec<u8>, Fail> {
        loop {
            let reply = self.recv_within(what, timeout).await?;
            if !live::is_console_output(&reply) {
                return Ok(reply);
            }
        }
    }
}

impl crate::cmd::authclient::Exchange for Client {
    async fn ask(&mut self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.request(body).await.map_err(anyhow::Error::from)
    }
}

/// What `ukdb core` learnt and read.
struct Taken {
    snapshot: Snapshot,
    /// Bytes of RAM the map lists (the ranges read).
    ram: u64,
    /// Bytes of memory read.
    read: u64,
}

/// The in-process bridge of `--target`.
struct InProcess {
    stop: watch::Sender<Option<&'static str>>,
    task: JoinHandle<anyhow::Result<Exit>>,
}

impl InProcess {
    async fn start(
        target: Target,
        connect_timeout: Duration,
    ) -> anyhow::Result<(InProcess, String)> {
        let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".to_owned())).await?;
        let addr = listener.to_string();
        let (stop, mut stop_rx) = watch::channel(None::<&'static str>);
        let (synced_tx, mut synced) = watch::channel(false);
        let opts = bridge::Options {
            target,
            console_log: None,
            trace: false,
            connect_timeout,
            no_probe: false,
            credentials: None,
        };
        let mut task = tokio::spawn(async move {
            let stop = async move {
                match stop_rx.wait_for(Option::is_some).await {
                    Ok(why) => why.unwrap_or("stop"),
                    Err(_) => "stop",
                }
            };
            tokio::pin!(stop);
            bridge::serve(opts, listener, stop, synced_tx).await
        });
        let deadline = connect_timeout + SYNC_TIMEOUT;
        tokio::select! {
            synced = tokio::time::timeout(deadline, synced.wait_for(|&s| s)) => match synced {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    // The bridge ended (its sender is gone): say why.
                    let end = (&mut task).await;
                    anyhow::bail!("the serial line closed before the stub answered ({end:?})");
                }
                Err(_) => {
                    let _ = stop.send(Some("no stub"));
                    anyhow::bail!(
                        "no ukdb stub answered on the serial line within {}s",
                        deadline.as_secs()
                    );
                }
            },
            end = &mut task => {
                anyhow::bail!("the serial line closed before the stub answered ({end:?})")
            }
        }
        Ok((InProcess { stop, task }, addr))
    }

    async fn finish(self) {
        let _ = self.stop.send(Some("the core is taken"));
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(err))) => debug!("the in-process bridge: {err:#}"),
            Ok(Err(join)) => debug!("the in-process bridge: {join}"),
            Err(_) => warn!("the in-process bridge did not stop"),
        }
    }
}

async fn connect_tcp(addr: &str, timeout: Duration) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) if Instant::now() + backoff >= deadline => {
                return Err(anyhow::Error::from(err).context(format!(
                    "cannot connect to {addr} (gave up after {timeout:?}; see --connect-timeout)"
                )))
            }
            Err(err) => debug!("connecting to {addr}: {err}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// Takes the core and writes it.
pub async fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let image = match &cmd.image {
        Some(image) => Some(
            std::fs::read(image)
                .with_context(|| format!("cannot read the image {}", image.display()))?,
        ),
        None => None,
    };
    let dir = match cmd.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write {}: {} is not a directory",
            cmd.output.display(),
            dir.display()
        );
    }
    let credentials = crate::cmd::authclient::credentials(cmd.key_file.as_deref(), &cmd.tier)?;
    let start = std::time::Instant::now();
    let (bridge, addr) = match (&cmd.target, &cmd.connect) {
        (Some(target), _) => {
            let (bridge, addr) = InProcess::start(target.clone(), cmd.connect_timeout).await?;
            (Some(bridge), addr)
        }
        (None, Some(addr)) => (None, addr.clone()),
        (None, None) => anyhow::bail!("give --target or --connect"),
    };
    let taken = match connect_tcp(&addr, cmd.connect_timeout).await {
        Ok(stream) => take(Client::new(stream), &cmd, credentials.as_ref()).await,
        Err(err) => Err(Fail::Other(err)),
    };
    if let Some(bridge) = bridge {
        bridge.finish().await;
    }
    let mut taken = match taken {
        Ok(taken) => taken,
        Err(fail) => {
            eprintln!("ukdb core: {fail:#}; no core written");
            return Ok(match fail {
                Fail::Closed(_) => Exit::ChannelClosed,
                _ => Exit::Error,
            });
        }
    };
    if let (Some(path), Some(data)) = (&cmd.image, &image) {
        check_build_id(&cmd, elf::image_build_id(data).as_deref(), &taken.snapshot.build_id);
        // The image's name and entry point, for gdb's and lldb's sake.
        taken.snapshot.set_image(path, data);
    }
    let written = elf::write_core_file(&taken.snapshot, &cmd.output)
        .with_context(|| format!("cannot write the core {}", cmd.output.display()));
    let size = match written {
        Ok(size) => size,
        Err(err) => {
            eprintln!("ukdb core: {err:#}; no core written");
            return Ok(Exit::Error);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    if !cmd.quiet {
        let reason = taken.snapshot.reason.replace('\n', " ");
        eprintln!(
            "ukdb core: wrote {}: {} of {} RAM in {:.1} s ({:.1} MiB/s), {} pages, file {}, reason: {}",
            cmd.output.display(),
            mib(taken.read),
            mib(taken.ram),
            secs,
            taken.read as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
            taken.snapshot.pages.len(),
            mib(size),
            reason
        );
    }
    Ok(Exit::Stopped)
}

fn check_build_id(cmd: &Cmd, image: Option<&[u8]>, running: &[u8]) {
    let name = cmd.image.as_deref().map(Path::display);
    let name = name.map(|n| n.to_string()).unwrap_or_default();
    match image {
        None => eprintln!("ukdb core: warning: {name} has no GNU build-id; cannot check it"),
        Some(_) if running.is_empty() => {
            eprintln!("ukdb core: warning: the unikernel reports no build-id; cannot check {name}")
        }
        Some(id) if id != running => {
            eprintln!("ukdb core: WARNING: BUILD-ID MISMATCH: the core is NOT of {name}");
            eprintln!("ukdb core: WARNING:   the unikernel runs build-id {}", elf::hex(running));
            eprintln!("ukdb core: WARNING:   {name} has build-id {}", elf::hex(id));
            eprintln!("ukdb core: WARNING: gdb and lldb will show wrong symbols with this image");
        }
        Some(_) => debug!("build-id {} matches {name}", elf::hex(running)),
    }
}

/// The whole conversation: stop, registers, info, map, pages, memory,
/// leave.
async fn take(
    mut c: Client,
    cmd: &Cmd,
    credentials: Option<&crate::cmd::auth::Credentials>,
) -> Result<Taken, Fail> {
    if let Some(creds) = credentials {
        crate::cmd::authclient::authenticate_async(&mut c, creds).await.map_err(|err| match err
            .downcast::<Fail>()
        {
            Ok(fail) => fail,
            Err(err) => Fail::Other(err.context("cannot authenticate to the stub")),
        })?;
        debug!("authenticated to the stub ({} tier)", creds.tier);
    }
    let supported = c.request(b"qSupported:xmlRegisters=i386").await?;
    let features = live::parse_supported(&supported);
    debug!("stub features: {features:?}");
    if features.no_ack {
        let ok = c.request(b"QStartNoAckMode").await?;
        if ok == b"OK" {
            c.ack = false;
        }
    }
    c.send(b"?").await?;
    let stop = match c.stop_reply(b"?", STOP_QUERY_TIMEOUT).await {
        Ok(reply) => reply,
        Err(Fail::Timeout(..)) => {
            debug!("no answer to `?`: interrupting");
            c.write(&[0x03]).await?;
            c.stop_reply(b"Ctrl-C", REPLY_TIMEOUT).await?
        }
        Err(fail) => return Err(fail),
    };
    if !live::is_stop_reply(&stop) {
        return Err(Fail::Protocol(format!(
            "the stub did not report a stop (`{}`): has the unikernel exited?",
            String::from_utf8_lossy(&stop)
        )));
    }
    let g = live::parse_g(&c.request(b"g").await?).map_err(|e| Fail::Protocol(e.to_string()))?;
    let info = live::parse_info(&c.request(b"qUkdb.info").await?)
        .map_err(|e| Fail::Protocol(e.to_string()))?;
    let has_queries = info.is_some();
    let info = info.unwrap_or_else(|| live::Info {
        cause: cause::SNAPSHOT,
        why: "snapshot (the stub has no qUkdb queries)".into(),
        ..live::Info::default()
    });
    let cpu = live::cpu(&g, &info);

    let phase = std::time::Instant::now();
    let (map, spans) = if has_queries {
        let map = ukdb_map(&mut c).await?;
        debug!("map: {} entries in {:?}", map.len(), phase.elapsed());
        let phase = std::time::Instant::now();
        let spans = ukdb_spans(&mut c, &map, features.packet_size).await?;
        debug!("bitmaps: {} spans in {:?}", spans.len(), phase.elapsed());
        (map, spans)
    } else {
        if !features.memory_map {
            return Err(Fail::Protocol(
                "the stub answers neither qUkdb.info nor qXfer:memory-map:read: it cannot tell \
                 what is mapped (a stub older than ukdb core)"
                    .into(),
            ));
        }
        eprintln!(
            "ukdb core: warning: the stub has no qUkdb queries; reading every mapped byte \
             (qXfer:memory-map:read), which is slow"
        );
        let map = memory_map(&mut c, features.packet_size).await?;
        let spans = map
            .iter()
            .filter(|e| live::read_entry(e))
            .map(|e| Span { vaddr: e.vaddr, paddr: e.paddr, len: e.len })
            .collect();
        (map, spans)
    };
    let ram: u64 = map.iter().filter(|e| live::read_entry(e)).map(|e| e.len).sum();
    let total: u64 = spans.iter().map(|s| s.len).sum();
    let bar = progress(total, cmd.quiet);
    let phase = std::time::Instant::now();
    let pages = read_spans(&mut c, &spans, features.packet_size, &bar).await;
    bar.finish_and_clear();
    let pages = pages?;
    debug!("read {total} bytes in {:?}", phase.elapsed());

    // Leave: `D` resumes even a held unikernel; closing the connection ends
    // the session and lets it run unless a wait, fault or panic holds it.
    if cmd.resume {
        let reply = c.request(b"D").await?;
        if reply != b"OK" {
            warn!("the stub answered `{}` to the detach", String::from_utf8_lossy(&reply));
        }
    }
    let _ = c.stream.shutdown().await;
    drop(c);

    let reason = if info.why.is_empty() { "snapshot".to_owned() } else { info.why.clone() };
    Ok(Taken {
        snapshot: Snapshot {
            cause: info.cause,
            reason,
            cmdline: info.cmdline,
            build_id: info.build_id,
            cpu,
            map,
            pages,
            ..Snapshot::default()
        },
        ram,
        read: total,
    })
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "ukdb core: [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn protocol(e: live::ParseError) -> Fail {
    Fail::Protocol(e.to_string())
}

async fn ukdb_map(c: &mut Client) -> Result<Vec<MapEntry>, Fail> {
    let mut map = Vec::new();
    loop {
        let query = format!("qUkdb.map:{:x}", map.len());
        match live::parse_map(&c.request(query.as_bytes()).await?).map_err(protocol)? {
            MapReply::Entries(entries) => map.extend(entries),
            MapReply::End => return Ok(map),
        }
        if map.len() > 1 << 20 {
            return Err(Fail::Protocol("the stub's map does not end".into()));
        }
    }
}

async fn ukdb_spans(
    c: &mut Client,
    map: &[MapEntry],
    packet_size: usize,
) -> Result<Vec<Span>, Fail> {
    let per_query = live::pages_per_query(packet_size);
    let mut spans = Vec::new();
    for entry in map.iter().filter(|e| live::read_entry(e)) {
        let pages = entry.len / PAGE;
        let mut first = 0;
        while first < pages {
            let n = per_query.min(pages - first);
            let query = format!("qUkdb.pages:{:x},{:x}", entry.vaddr + first * PAGE, n * PAGE);
            let bits =
                live::parse_bitmap(&c.request(query.as_bytes()).await?, n).map_err(protocol)?;
            live::spans(entry, first, &bits, &mut spans);
            // It may cover fewer pages than asked (never none).
            first += bits.len() as u64;
        }
    }
    Ok(spans)
}

async fn memory_map(c: &mut Client, packet_size: usize) -> Result<Vec<MapEntry>, Fail> {
    let mut xml = Vec::new();
    let chunk = live::read_chunk(packet_size);
    loop {
        let query = format!("qXfer:memory-map:read::{:x},{:x}", xml.len(), chunk);
        let reply = c.request(query.as_bytes()).await?;
        let (last, data) = match reply.split_first() {
            Some((b'l', data)) => (true, data),
            Some((b'm', data)) => (false, data),
            _ => {
                return Err(Fail::Protocol(format!(
                    "qXfer:memory-map:read answered `{}`",
                    String::from_utf8_lossy(&reply)
                )))
            }
        };
        let data = live::unescape(data)
            .ok_or_else(|| Fail::Protocol("a malformed memory-map reply".into()))?;
        if !last && data.is_empty() {
            return Err(Fail::Protocol("an empty memory-map reply".into()));
        }
        xml.extend_from_slice(&data);
        if last {
            break;
        }
    }
    live::parse_memory_map(&String::from_utf8_lossy(&xml)).map_err(protocol)
}

/// Reads every span, keeps its non-zero pages by physical address.
async fn read_spans(
    c: &mut Client,
    spans: &[Span],
    packet_size: usize,
    bar: &ProgressBar,
) -> Result<BTreeMap<u64, Vec<u8>>, Fail> {
    let chunk = live::read_chunk(packet_size) as u64;
    let mut binary = true;
    let mut pages = BTreeMap::new();
    let mut data = Vec::new();
    for span in spans {
        data.clear();
        while (data.len() as u64) < span.len {
            let at = span.vaddr + data.len() as u64;
            let want = chunk.min(span.len - data.len() as u64);
            let kind = if binary { 'x' } else { 'm' };
            let query = format!("{kind}{at:x},{want:x}");
            let reply = c.request(query.as_bytes()).await?;
            if binary && reply.is_empty() {
                debug!("the stub has no `x`; reading with `m`");
                binary = false;
                continue;
            }
            let got = live::parse_read(&reply, binary, want as usize)
                .map_err(|e| Fail::Protocol(format!("reading {want:#x} bytes at {at:#x}: {e}")))?;
            if got.is_empty() {
                return Err(Fail::Protocol(format!("the stub read nothing at {at:#x}")));
            }
            bar.inc(got.len() as u64);
            data.extend_from_slice(&got);
        }
        for (i, page) in data.chunks_exact(PAGE as usize).enumerate() {
            if page.iter().any(|&b| b != 0) {
                pages.entry(span.paddr + i as u64 * PAGE).or_insert_with(|| page.to_vec());
            }
        }
    }
    Ok(pages)
}
