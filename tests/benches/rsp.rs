//! RSP round trips on one VM: the ukdb stub through `ukdb bridge`, the ukdb
//! stub on the raw serial socket, and QEMU's own gdbstub as the anchor.
//!
//! `cargo bench -p ukdb-tests --bench rsp`. It reports; it asserts nothing
//! about speed. Every read has a deadline ([`READ_DEADLINE`]), so a stub that
//! stops answering fails the bench with the packet it was waiting for.
//!
//! Either stub halts the VM while a client is attached and stopped, so the
//! phases run one after the other, each ending with a detach and a check that
//! the unikernel prints again:
//!
//! 1. ukdb on the raw serial socket, before any bridge has switched the stub
//!    to framed mode (console text between packets is skipped);
//! 2. QEMU's gdbstub (`-gdb tcp:127.0.0.1:PORT`);
//! 3. ukdb through the bridge.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use ukdb_tests::{artifacts, free_port, root, symbols, Bridge, Vm, DEADLINE};

/// How long any one reply (or ack) may take.
const READ_DEADLINE: Duration = Duration::from_secs(30);
/// How often a blocked read wakes up to check its deadline.
const POLL: Duration = Duration::from_millis(500);
/// Iterations of each latency measurement.
const N: usize = 200;
/// Untimed round trips before each latency measurement.
const WARMUP: usize = 10;
/// Runs of the throughput measurement.
const RUNS: usize = 5;
/// Bytes each throughput run reads.
const READ_TOTAL: u64 = 256 * 1024;
/// The first packet of every session, as gdb sends it for x86_64.
const QSUPPORTED: &str = "qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386";
/// `rip` in the `g` reply: after the 16 general-purpose registers.
const RIP_OFFSET: usize = 16 * 8;

// ---------------------------------------------------------------------------
// A minimal RSP client.

/// A byte stream with a read timeout.
trait Wire: Read + Write {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()>;
}

impl Wire for TcpStream {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl Wire for UnixStream {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

/// One debugger connection: packets out, acks and replies in.
struct Client {
    /// The path's name, for messages.
    path: &'static str,
    wire: Box<dyn Wire>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Ack mode (until the stub accepts `QStartNoAckMode`).
    ack: bool,
    /// The latest bytes skipped outside packets (console text), for messages.
    skipped: Vec<u8>,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Undoes the escapes (`}` x) and the run-length encoding (`*` n) of a
/// packet body.
fn decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'}' if i + 1 < raw.len() => {
                out.push(raw[i + 1] ^ 0x20);
                i += 2;
            }
            b'*' if i + 1 < raw.len() && !out.is_empty() => {
                let last = *out.last().unwrap();
                let n = usize::from(raw[i + 1].saturating_sub(29));
                out.extend(std::iter::repeat_n(last, n));
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At most 60 characters of a packet, for messages.
fn short(body: &str) -> &str {
    &body[..body.len().min(60)]
}

impl Client {
    fn new(path: &'static str, wire: Box<dyn Wire>) -> Client {
        // Reads wake at least this often to check their deadline; set once,
        // not per read, to keep the client's own cost low.
        wire.set_timeout(POLL).unwrap_or_else(|e| panic!("{path}: cannot set a read timeout: {e}"));
        Client {
            path,
            wire,
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
            ack: true,
            skipped: Vec::new(),
        }
    }

    fn fail(&self, what: &str) -> ! {
        let tail = &self.skipped[self.skipped.len().saturating_sub(300)..];
        panic!(
            "{}: {what}\nlast bytes seen outside packets: {:?}",
            self.path,
            String::from_utf8_lossy(tail)
        );
    }

    fn skip(&mut self, b: u8) {
        self.skipped.push(b);
        if self.skipped.len() > 8192 {
            self.skipped.drain(..4096);
        }
    }

    /// The next byte, waiting until `deadline`; `what` names what we wait
    /// for, in the message if it does not come.
    fn byte(&mut self, deadline: Instant, what: &dyn Fn() -> String) -> u8 {
        while self.pos == self.len {
            let now = Instant::now();
            if now >= deadline {
                self.fail(&format!("timed out after {READ_DEADLINE:?} waiting for {}", what()));
            }
            match self.wire.read(&mut self.buf) {
                Ok(0) => self.fail(&format!("connection closed waiting for {}", what())),
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => self.fail(&format!("read error waiting for {}: {e}", what())),
            }
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        b
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.wire.write_all(bytes) {
            self.fail(&format!("write error: {e}"));
        }
    }

    /// Sends a packet; in ack mode waits for its `+` (resending on `-`).
    fn send(&mut self, body: &str) {
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.push(b'$');
        frame.extend_from_slice(body.as_bytes());
        write!(frame, "#{:02x}", checksum(body.as_bytes())).unwrap();
        for _ in 0..3 {
            self.write(&frame);
            if !self.ack {
                return;
            }
            let deadline = Instant::now() + READ_DEADLINE;
            loop {
                match self.byte(deadline, &|| format!("the ack of `{}`", short(body))) {
                    b'+' => return,
                    b'-' => break,
                    b => self.skip(b),
                }
            }
        }
        self.fail(&format!("`{}` was refused (`-`) three times", short(body)));
    }

    /// Receives one packet (skipping anything before its `$`), checks its
    /// checksum, acks it in ack mode and returns its decoded body. `request`
    /// names the packet it answers, for messages.
    fn recv(&mut self, request: &str) -> String {
        let deadline = Instant::now() + READ_DEADLINE;
        let what = || format!("the reply to `{}`", short(request));
        loop {
            loop {
                let b = self.byte(deadline, &what);
                if b == b'$' {
                    break;
                }
                self.skip(b);
            }
            let mut raw = Vec::new();
            loop {
                match self.byte(deadline, &what) {
                    b'#' => break,
                    // A new packet starts: drop the partial one, as gdb does.
                    b'$' => raw.clear(),
                    b => raw.push(b),
                }
            }
            let hi = self.byte(deadline, &what);
            let lo = self.byte(deadline, &what);
            let sum = hex_digit(hi).zip(hex_digit(lo)).map(|(h, l)| h << 4 | l);
            if sum != Some(checksum(&raw)) {
                if self.ack {
                    self.write(b"-");
                    continue;
                }
                self.fail(&format!(
                    "bad checksum {}{} on a reply to `{}`: {:?}",
                    hi as char,
                    lo as char,
                    short(request),
                    String::from_utf8_lossy(&raw[..raw.len().min(80)])
                ));
            }
            if self.ack {
                self.write(b"+");
            }
            return decode(&raw);
        }
    }

    /// Sends `body` and returns the reply.
    fn cmd(&mut self, body: &str) -> String {
        self.send(body);
        self.recv(body)
    }

    /// Sends a resume packet and returns the stop reply (console `O` packets
    /// skipped).
    fn resume(&mut self, body: &str) -> String {
        self.send(body);
        loop {
            let reply = self.recv(body);
            if reply.starts_with('O') && reply != "OK" {
                continue;
            }
            if !reply.starts_with(['T', 'S']) {
                self.fail(&format!("`{body}` answered {reply:?}, not a stop reply"));
            }
            return reply;
        }
    }

    /// Sends `body` and fails unless the reply is `OK`.
    fn ok(&mut self, body: &str) {
        let reply = self.cmd(body);
        if reply != "OK" {
            self.fail(&format!("`{}` answered {reply:?}, not OK", short(body)));
        }
    }

    /// Reads (outside packets) until `needle` has arrived.
    fn wait_for_text(&mut self, needle: &[u8], what: &str) {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while !seen.ends_with(needle) {
            let b = self.byte(deadline, &|| what.to_string());
            seen.push(b);
            self.skip(b);
        }
    }
}

// ---------------------------------------------------------------------------
// The image: where to read and where stepping is safe.

struct Image {
    /// `ukdemo::app::TICKS`.
    ticks: u64,
    /// The start of `.text` and its bytes.
    text_addr: u64,
    text: Vec<u8>,
    /// Where single steps start (the first instruction of
    /// `ukdemo::app::tick`) and the end of that function.
    step_from: u64,
    run_end: u64,
}

impl Image {
    fn load(path: &Path) -> Image {
        use object::{Object, ObjectSection, ObjectSymbol};
        let ticks = symbols(path)
            .into_iter()
            .find(|(n, _)| n.contains("3app5TICKS"))
            .expect("no ukdemo::app::TICKS in the image")
            .1;
        let data = std::fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let text = file.section_by_name(".text").expect("no .text");
        let text_addr = text.address();
        let text = text.data().unwrap().to_vec();
        let find = |needles: &[&str]| {
            file.symbols()
                .find(|s| s.name().is_ok_and(|n| needles.iter().all(|x| n.contains(x))))
                .unwrap_or_else(|| panic!("no symbol with {needles:?} in the image"))
        };
        // Steps run through `ukdemo::app::tick` from its first instruction:
        // straight-line code that calls nothing on its usual path (and no
        // stub code, which a step could not stop in).
        let tick = find(&["6ukdemo3app4tick"]);
        let step_from = tick.address();
        Image { ticks, text_addr, text, step_from, run_end: tick.address() + tick.size() }
    }
}

// ---------------------------------------------------------------------------
// Measurements.

/// What a path measured, and what its stub told us.
struct Report {
    m8: Vec<f64>,
    kib_s: Vec<f64>,
    step: Vec<f64>,
    g: Vec<f64>,
    packet_size: usize,
    chunk: u64,
    no_ack: bool,
    step_packet: &'static str,
    g_bytes: usize,
    window: usize,
}

/// An attached debugger session.
struct Session {
    c: Client,
    packet_size: usize,
    chunk: u64,
    multiprocess: bool,
    step: &'static str,
    cont: &'static str,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn rip(regs: &str) -> u64 {
    let hex = regs
        .get(2 * RIP_OFFSET..2 * RIP_OFFSET + 16)
        .unwrap_or_else(|| panic!("`g` reply too short for rip: {} chars", regs.len()));
    let mut bytes = [0u8; 8];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex in `g` reply");
    }
    u64::from_le_bytes(bytes)
}

impl Session {
    /// The handshake: `qSupported`, `QStartNoAckMode`, `?`, `vCont?`.
    fn attach(mut c: Client) -> Session {
        let supported = c.cmd(QSUPPORTED);
        let features: Vec<&str> = supported.split(';').collect();
        let packet_size = features
            .iter()
            .find_map(|f| f.strip_prefix("PacketSize="))
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| c.fail(&format!("no PacketSize in {supported:?}")));
        let multiprocess = features.contains(&"multiprocess+");
        if c.cmd("QStartNoAckMode") == "OK" {
            c.ack = false;
        }
        let stop = c.cmd("?");
        if !stop.starts_with(['T', 'S']) {
            c.fail(&format!("`?` answered {stop:?}"));
        }
        let vcont = c.cmd("vCont?");
        let actions: Vec<&str> = vcont.split(';').collect();
        let (step, cont) = if actions.contains(&"s") && actions.contains(&"c") {
            ("vCont;s", "vCont;c")
        } else {
            ("s", "c")
        };
        Session { c, packet_size, chunk: ((packet_size - 4) / 2) as u64, multiprocess, step, cont }
    }

    /// Round trips of `body`, each reply checked by `check`, in µs; after
    /// [`WARMUP`] untimed ones.
    fn latency(&mut self, body: &str, mut check: impl FnMut(&str) -> bool) -> Vec<f64> {
        let mut times = Vec::with_capacity(N);
        for i in 0..WARMUP + N {
            let t = Instant::now();
            let reply = self.c.cmd(body);
            let us = micros(t.elapsed());
            if !check(&reply) {
                self.c.fail(&format!("`{body}` answered {:?}", short(&reply)));
            }
            if i >= WARMUP {
                times.push(us);
            }
        }
        times
    }

    /// Reads `READ_TOTAL` bytes from the start of `.text` in the largest
    /// chunks the stub takes, `RUNS` times after an untimed first run whose
    /// bytes are checked against the image; KiB/s of each timed run.
    fn throughput(&mut self, image: &Image) -> Vec<f64> {
        let mut rates = Vec::new();
        for run in 0..=RUNS {
            let mut got = Vec::with_capacity(READ_TOTAL as usize);
            let t = Instant::now();
            let end = image.text_addr + READ_TOTAL;
            let mut addr = image.text_addr;
            while addr < end {
                let len = self.chunk.min(end - addr);
                let body = format!("m{addr:x},{len:x}");
                let reply = self.c.cmd(&body);
                let bytes = reply.as_bytes();
                if bytes.len() != 2 * len as usize {
                    self.c.fail(&format!(
                        "`{body}` answered {} hex digits, not {}: {:?}",
                        bytes.len(),
                        2 * len,
                        short(&reply)
                    ));
                }
                for pair in bytes.chunks_exact(2) {
                    match (hex_digit(pair[0]), hex_digit(pair[1])) {
                        (Some(h), Some(l)) => got.push(h << 4 | l),
                        _ => self.c.fail(&format!("`{body}`: not hex: {:?}", short(&reply))),
                    }
                }
                addr += len;
            }
            if run > 0 {
                rates.push(READ_TOTAL as f64 / 1024.0 / t.elapsed().as_secs_f64());
            } else {
                let n = image.text.len().min(got.len());
                if let Some(i) = (0..n).find(|&i| got[i] != image.text[i]) {
                    self.c.fail(&format!(
                        "memory at {:#x} reads {:#04x}, the image has {:#04x}",
                        image.text_addr + i as u64,
                        got[i],
                        image.text[i]
                    ));
                }
            }
        }
        rates
    }

    /// Single-step latency, in µs, and how many steps one window holds.
    ///
    /// Every path steps the same code: `ukdemo::app::tick` from its first
    /// instruction, reached through a breakpoint. The bench first finds how
    /// many steps stay in `tick` going forward (the window), then times
    /// steps window by window, restoring every register with `G` (untimed)
    /// between windows. The window only reads and writes `TICKS` and
    /// compares: the restore leaves the program as it was but for `TICKS`,
    /// which nothing checks here.
    fn step_latency(&mut self, image: &Image) -> (Vec<f64>, usize) {
        let at = image.step_from;
        self.c.ok(&format!("Z0,{at:x},1"));
        let cont = self.cont;
        self.c.resume(cont);
        self.c.ok(&format!("z0,{at:x},1"));
        let saved = self.c.cmd("g");
        if rip(&saved) != at {
            self.c.fail(&format!("stopped at {:#x}, not at the breakpoint {at:#x}", rip(&saved)));
        }
        let restore = format!("G{saved}");
        let step = self.step;
        let mut rips = Vec::new();
        let mut prev = at;
        for _ in 0..16 {
            self.c.resume(step);
            let now = rip(&self.c.cmd("g"));
            if now <= prev || now - prev > 15 || now >= image.run_end {
                break;
            }
            rips.push(now);
            prev = now;
        }
        self.c.ok(&restore);
        if rips.is_empty() {
            self.c.fail(&format!("no instruction to step at {at:#x}"));
        }
        let mut times = Vec::with_capacity(N);
        let mut strays = 0;
        while times.len() < N {
            let n = rips.len().min(N - times.len());
            let mut window = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                self.c.resume(step);
                window.push(micros(t.elapsed()));
            }
            let now = rip(&self.c.cmd("g"));
            self.c.ok(&restore);
            if now == rips[n - 1] {
                times.extend(window);
                continue;
            }
            // A step that went elsewhere (QEMU's gdbstub can deliver the
            // example's timer interrupt on a step): the window is not
            // counted, and measured again, a few times at most.
            strays += 1;
            if strays > 5 {
                self.c.fail(&format!(
                    "{n} steps from {at:#x} reached {now:#x}, not {:#x}",
                    rips[n - 1]
                ));
            }
        }
        (times, rips.len())
    }

    fn detach(&mut self) {
        let body = if self.multiprocess { "D;1" } else { "D" };
        self.c.ok(body);
    }

    /// Every measurement, then a detach.
    fn measure(mut self, image: &Image) -> (Report, Client) {
        let ticks = format!("m{:x},8", image.ticks);
        let m8 = self.latency(&ticks, |r| r.len() == 16);
        let kib_s = self.throughput(image);
        let mut g_bytes = 0;
        let g = self.latency("g", |r| {
            g_bytes = r.len() / 2;
            r.len() > 2 * RIP_OFFSET && !r.starts_with('E')
        });
        let (step, window) = self.step_latency(image);
        self.detach();
        let report = Report {
            m8,
            kib_s,
            step,
            g,
            packet_size: self.packet_size,
            chunk: self.chunk,
            no_ack: !self.c.ack,
            step_packet: self.step,
            g_bytes,
            window,
        };
        (report, self.c)
    }
}

// ---------------------------------------------------------------------------
// Statistics and the table.

/// The nearest-rank percentile `p` (0 < p <= 1).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Row {
    name: String,
    values: [f64; 3],
    digits: usize,
}

fn rows(bridge: &Report, raw: &Report, qemu: &Report) -> Vec<Row> {
    let all = [bridge, raw, qemu];
    let row = |name: String, digits: usize, f: &dyn Fn(&Report) -> f64| Row {
        name,
        values: all.map(f),
        digits,
    };
    vec![
        row(format!("m 8 B at TICKS, median (us), N={N}"), 1, &|r| percentile(&r.m8, 0.5)),
        row(format!("m 8 B at TICKS, p90 (us), N={N}"), 1, &|r| percentile(&r.m8, 0.9)),
        row(
            format!("read {} KiB of .text (KiB/s), median of {RUNS}", READ_TOTAL / 1024),
            1,
            &|r| percentile(&r.kib_s, 0.5),
        ),
        row(format!("stepi, median (us), N={N}"), 1, &|r| percentile(&r.step, 0.5)),
        row(format!("stepi, p90 (us), N={N}"), 1, &|r| percentile(&r.step, 0.9)),
        row(format!("g, median (us), N={N}"), 1, &|r| percentile(&r.g, 0.5)),
    ]
}

const HEADERS: [&str; 6] =
    ["measurement", "ukdb-bridge", "ukdb-raw", "qemu-gdbstub", "bridge/qemu", "raw/qemu"];

fn cells(row: &Row) -> [String; 6] {
    let [b, r, q] = row.values;
    let d = row.digits;
    [
        row.name.clone(),
        format!("{b:.d$}"),
        format!("{r:.d$}"),
        format!("{q:.d$}"),
        format!("{:.2}", b / q),
        format!("{:.2}", r / q),
    ]
}

fn plain_table(rows: &[Row]) -> String {
    let body: Vec<[String; 6]> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..6)
        .map(|i| body.iter().map(|c| c[i].len()).chain([HEADERS[i].len()]).max().unwrap())
        .collect();
    let line = |c: &[String]| {
        let mut s = format!("{:<w$}", c[0], w = widths[0]);
        for i in 1..6 {
            write!(s, "  {:>w$}", c[i], w = widths[i]).unwrap();
        }
        s.push('\n');
        s
    };
    let mut out = line(&HEADERS.map(String::from));
    out.push_str(&line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>()));
    for c in &body {
        out.push_str(&line(c));
    }
    out
}

fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADERS.join(" | "));
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for row in rows {
        out.push_str(&format!("| {} |\n", cells(row).join(" | ")));
    }
    out
}

fn facts(paths: &[(&str, &Report)], qemu_version: &str, image: &Image) -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = vec![
        format!(
            "machine: {qemu_version}, -machine q35 -accel tcg (TCG, no KVM), 1 vCPU, 128 MiB; \
             host: {cpu}, {threads} threads"
        ),
        "ukdb-bridge: client -TCP 127.0.0.1-> ukdb bridge -unix socket-> QEMU -serial \
         chardev (16550 COM1) -> stub, framed mode"
            .into(),
        "ukdb-raw: client -unix socket-> QEMU -serial chardev (16550 COM1) -> stub, raw \
         mode (console text between packets skipped)"
            .into(),
        "qemu-gdbstub: client -TCP 127.0.0.1-> QEMU -gdb tcp:127.0.0.1:PORT on the same VM".into(),
    ];
    for (name, r) in paths {
        out.push(format!(
            "{name}: PacketSize={:#x} -> m chunk {} B; no-ack mode {}; step packet `{}`; \
             g reply {} B",
            r.packet_size,
            r.chunk,
            if r.no_ack { "on" } else { "refused (ack mode)" },
            r.step_packet,
            r.g_bytes,
        ));
    }
    for (name, r) in paths {
        let runs: Vec<String> = r.kib_s.iter().map(|v| format!("{v:.0}")).collect();
        out.push(format!(
            "{name}: throughput runs (KiB/s) {}; m 8 B min {:.1} us; stepi min {:.1} us",
            runs.join(" "),
            percentile(&r.m8, 0.0),
            percentile(&r.step, 0.0),
        ));
    }
    let windows: Vec<String> = paths.iter().map(|(n, r)| format!("{n} {}", r.window)).collect();
    out.push(format!(
        "method: TCP_NODELAY on; one client, one request in flight; {WARMUP} untimed \
         round trips (one untimed read run) first; percentiles are nearest-rank; m 8 B at TICKS {:#x}; throughput reads {:#x}..{:#x}, checked \
         against the image; stepi steps ukdemo::app::tick from {:#x} \
         in windows of straight-line steps, the registers restored with G (untimed) \
         between windows; steps per window: {}",
        image.ticks,
        image.text_addr,
        image.text_addr + READ_TOTAL,
        image.step_from,
        windows.join(", "),
    ));
    out.push(
        "ratios are ukdb / qemu of the row's value: above 1 is slower for latencies, \
         below 1 is slower for throughput"
            .into(),
    );
    out
}

// ---------------------------------------------------------------------------
// The phases.

fn tcp(addr: &str) -> TcpStream {
    let end = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                return s;
            }
            Err(e) => {
                assert!(Instant::now() < end, "cannot connect to {addr}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn qemu_version() -> String {
    let out = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .expect("cannot run qemu-system-x86_64");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("QEMU");
    first.strip_prefix("QEMU emulator version ").map_or(first.to_string(), |v| format!("QEMU {v}"))
}

fn main() {
    let a = artifacts();
    let image = Image::load(&a.image);
    let gdb_port = free_port();
    let gdb_arg = format!("tcp:127.0.0.1:{gdb_port}");
    let vm = Vm::boot_with("q35", &a.image, "", &["-gdb", &gdb_arg]);

    // Phase 1: the stub on the raw serial socket. Wait until the app runs
    // (and so polls the stub) before the first packet.
    eprintln!("rsp bench: ukdb-raw (serial socket {})", vm.sock.display());
    let serial = ukdb_tests::connect_unix(&vm.sock);
    let mut serial = Client::new("ukdb-raw", Box::new(serial));
    serial.wait_for_text(b"\nline ", "the unikernel's console");
    let (raw, mut serial) = Session::attach(serial).measure(&image);
    serial.wait_for_text(b"\nline ", "console lines after ukdb-raw detached");

    // Phase 2: QEMU's gdbstub. The serial socket stays connected to see the
    // unikernel run again after the detach.
    eprintln!("rsp bench: qemu-gdbstub ({gdb_arg})");
    let qemu = Client::new("qemu-gdbstub", Box::new(tcp(&format!("127.0.0.1:{gdb_port}"))));
    let (qemu, qemu_client) = Session::attach(qemu).measure(&image);
    serial.wait_for_text(b"\nline ", "console lines after qemu-gdbstub detached");
    drop(qemu_client);
    drop(serial);

    // Phase 3: through the bridge.
    let mut bridge = Bridge::start(&vm);
    eprintln!("rsp bench: ukdb-bridge ({})", bridge.addr);
    let client = Client::new("ukdb-bridge", Box::new(tcp(&bridge.addr)));
    let (through, client) = Session::attach(client).measure(&image);
    bridge.wait_more_lines(2);
    drop(client);
    bridge.proc.signal(nix::sys::signal::Signal::SIGTERM);
    bridge.proc.wait_exit();
    drop(vm);

    let rows = rows(&through, &raw, &qemu);
    let paths = [("ukdb-bridge", &through), ("ukdb-raw", &raw), ("qemu-gdbstub", &qemu)];
    let facts = facts(&paths, &qemu_version(), &image);
    let mut text = plain_table(&rows);
    text.push('\n');
    for f in &facts {
        text.push_str(f);
        text.push('\n');
    }
    println!("\n{text}");

    let mut md = String::from("## RSP round trips: ukdb stub vs QEMU gdbstub\n\n");
    md.push_str(&markdown_table(&rows));
    md.push('\n');
    for f in &facts {
        md.push_str(&format!("- {f}\n"));
    }
    let path = root().join("target/bench-rsp.md");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, md).unwrap();
    println!("written to {}", path.display());
}
