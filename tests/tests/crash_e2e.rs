//! Crash dumps end to end: the real example under QEMU (TCG) crashes with
//! `ukdb.crash=dump`, its stub streams a core on the serial line, `ukdb
//! bridge --core-dir` writes it, and real gdb and lldb open it with the
//! image. Also: QEMU killed in the middle of a stream, one byte corrupted on
//! the line (a relay between QEMU and the bridge flips it), the dump-only
//! image, and a core checked against an image it does not come from.

use regex::Regex;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use ukdb_tests::*;

const DLE: u8 = 0x10;

/// A VM that is going to crash, the bridge in front of its serial line
/// with `--core-dir`, and that directory. The bridge goes first on drop.
struct Crash {
    bridge: Bridge,
    vm: Vm,
    dir: tempfile::TempDir,
    image: PathBuf,
}

impl Crash {
    /// Boots `image` with `append` (and `extra` QEMU arguments), and starts
    /// the bridge on its serial line, or on `relay` (a socket the test
    /// serves in front of it), with `--core-dir` and `--image`. The bridge
    /// does not wait for the stub (the dump-only stub never answers).
    fn start(image: &Path, append: &str, extra: &[&str], relay: Option<&Path>) -> Crash {
        let vm = Vm::boot_with("q35", image, append, extra);
        let dir = tempfile::tempdir().unwrap();
        let cores = dir.path().join("cores");
        let args = ["--core-dir", cores.to_str().unwrap(), "--image", image.to_str().unwrap()];
        let bridge = Bridge::start_unsynced_at(relay.unwrap_or(&vm.sock), &args);
        Crash { bridge, vm, dir, image: image.to_path_buf() }
    }

    /// The files in the core directory, sorted.
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("cores"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Waits for the bridge's `open it with` line; asserts the two lines
    /// the bridge prints for a core, that the core is the one file in the
    /// directory, and returns it with the reason's first line.
    fn core(&self) -> (PathBuf, String) {
        let err = self.bridge.stderr.wait("the core", |t| t.contains("ukdb: open it with: gdb "));
        let written =
            Regex::new(r"(?m)^ukdb: core written: (\S+) \(([0-9.]+) MiB, reason: (.*)\)$").unwrap();
        let caps = written.captures(&err).unwrap_or_else(|| panic!("{err}"));
        let core = PathBuf::from(&caps[1]);
        let mib: f64 = caps[2].parse().unwrap();
        let len = std::fs::metadata(&core).unwrap().len();
        assert!((len as f64 / 1048576.0 - mib).abs() < 0.06, "{mib} MiB printed, {len} bytes");
        assert!(
            err.contains(&format!(
                "ukdb: open it with: gdb {} {}\n",
                self.image.display(),
                core.display()
            )),
            "{err}"
        );
        assert!(!err.contains("mismatch"), "{err}");
        assert!(!err.contains("broken"), "{err}");
        assert_eq!(self.files(), vec![core.clone()], "the core and nothing else");
        let name = core.file_name().unwrap().to_str().unwrap();
        assert!(Regex::new(r"^ukdemo-[0-9a-f]{12}-\d{8}T\d{6}Z\.core$").unwrap().is_match(name));
        (core, caps[3].to_string())
    }
}

/// Runs a command; its stdout and stderr, and its exit code.
fn run(cmd: &mut Command) -> (String, i32) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text, out.status.code().unwrap_or(-1))
}

/// `gdb -batch IMAGE CORE -ex CMD...`: what it printed.
fn gdb_core(image: &Path, core: &Path, cmds: &[&str]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx"]).arg(image).arg(core);
    for c in cmds {
        cmd.args(["-ex", c]);
    }
    let (out, code) = run(&mut cmd);
    assert_eq!(code, 0, "{out}");
    out
}

/// The frames of gdb's `bt` (the last one in `out`): each with the address
/// gdb prints, and the rest. gdb prints none for a frame inlined into the
/// one below it, nor for frame #0 when the pc is at the start of a line.
fn gdb_frames(out: &str) -> Vec<(Option<u64>, String)> {
    let frame = Regex::new(r"^#\d+ +(?:0x([0-9a-f]+) in )?(.*)$").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let start = lines.iter().rposition(|l| l.starts_with("#0 ")).unwrap_or_else(|| panic!("{out}"));
    lines[start..]
        .iter()
        .map_while(|l| frame.captures(l))
        .map(|c| {
            let addr = c.get(1).map(|m| u64::from_str_radix(m.as_str(), 16).unwrap());
            (addr, c[2].to_string())
        })
        .collect()
}

/// The index of the frame of `tick (n=3)` at `app.rs:line`; asserts that
/// the frames inside it are inlined into it (the pc is in `tick`'s code)
/// and that `run` called it.
fn tick_frame(out: &str, line: usize) -> usize {
    let frames = gdb_frames(out);
    let want = format!("ukdemo::app::tick (n=3) at src/app.rs:{line}");
    let at = frames.iter().position(|(_, f)| *f == want).unwrap_or_else(|| panic!("{want}: {out}"));
    assert!(
        frames.get(at + 1).is_some_and(|(a, f)| a.is_some() && f.starts_with("ukdemo::app::run ")),
        "{out}"
    );
    at
}

/// The image's GNU build-id, in hex.
fn build_id(image: &Path) -> String {
    use object::Object;
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let id = file.build_id().unwrap().expect("the image has a build-id");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `ukdb inspect CORE IMAGE`: the summary, and the build-ids match.
fn inspect(core: &Path, image: &Path) -> String {
    let (out, code) = run(Command::new(&artifacts().ukdb).arg("inspect").arg(core).arg(image));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("build-id: {}\n", build_id(image))), "{out}");
    assert!(out.contains(&format!("image:    {} (build-id matches)\n", image.display())), "{out}");
    out
}

/// `ukdb inspect` and `ukdb open` of `core` with `other`, an image the
/// core does not come from: both say so and exit 2.
fn assert_refused(core: &Path, core_image: &Path, other: &Path) {
    let (core_id, other_id) = (build_id(core_image), build_id(other));
    assert_ne!(core_id, other_id, "{} and {}", core_image.display(), other.display());
    let mismatch = format!("ukdb: build-id mismatch: core {core_id} image {other_id}");
    let ukdb = &artifacts().ukdb;
    let (out, code) = run(Command::new(ukdb).arg("inspect").arg(core).arg(other));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&mismatch), "{out}");
    let (out, code) = run(Command::new(ukdb).arg("open").arg(other).arg(core));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&mismatch), "{out}");
    assert!(out.contains("ukdb: refusing to open it (--force opens it anyway)\n"), "{out}");
}

/// 1. A panic with no debugger: the bridge writes the core; gdb and lldb
///    show the panic in `tick`, `ukdb inspect` the reason, and a gdb that
///    attaches afterwards through the same bridge finds the unikernel held
///    in the panic (`then=wait`, the default). A core of the example is
///    refused with the production image.
#[test]
fn a_panic_streams_a_core_that_gdb_and_lldb_open() {
    let a = artifacts();
    let image = &a.image;
    let c = Crash::start(image, "ukdemo.panic=3 ukdb.crash=dump", &[], None);
    let (core, reason) = c.core();
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    assert_eq!(reason, format!("panicked at src/app.rs:{panic_line}:9:"));

    let out = gdb_core(image, &core, &["bt", "p/x $pc"]);
    assert!(out.contains("Program terminated with signal SIGABRT, Aborted.\n"), "{out}");
    let tick = tick_frame(&out, panic_line);
    // The panic machinery above it: real frames of their own.
    assert!(gdb_frames(&out)[tick].0.is_some(), "{out}");
    let pc: String = capture(&out, r"(?m)^\$1 = 0x([0-9a-f]+)$");

    let gdb_out = out;
    let out = inspect(&core, image);
    assert!(out.contains(&format!("reason:   panicked at src/app.rs:{panic_line}:9:\n")), "{out}");
    assert!(out.contains("          tick 3 asked to panic\n"), "{out}");
    assert!(out.contains("cmdline:  ukdemo.panic=3 ukdb.crash=dump\n"), "{out}");

    let (out, code) = run(Command::new("lldb")
        .args(["--no-lldbinit", "-b", "-o"])
        .arg(format!("target create {} --core {}", image.display(), core.display()))
        .args(["-o", "bt"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stop reason = signal SIGABRT"), "{out}");
    lldb_frames(&out, &gdb_frames(&gdb_out), u64::from_str_radix(&pc, 16).unwrap(), panic_line);

    // The session goes on after the dump: a debugger through the same
    // bridge finds it held in the panic.
    let out = Debugger::gdb(image, &c.bridge.addr, &["monitor why", "detach"]).finish();
    assert!(
        out.contains(&format!(
            "panic: panicked at src/app.rs:{panic_line}:9:\ntick 3 asked to panic\n"
        )),
        "{out}"
    );
    let console = c.bridge.console.text();
    assert!(console.contains("ukdb: crash: streaming a core ("), "{console}");
    assert!(console.contains("ukdb: crash: core sent ("), "{console}");

    // 6. The production image (no stub) is another build.
    assert_refused(&core, image, &a.production);
}

/// lldb's `bt` of the panic shows the frames gdb shows, by name: `tick`
/// at the panic's line, called from `run` (lldb finds the image's module
/// through the core's auxv note). The pcs of the frames gdb gives an
/// address are lldb's too.
fn lldb_frames(out: &str, gdb: &[(Option<u64>, String)], pc: u64, panic_line: usize) {
    let named = Regex::new(&format!(
        r"frame #\d+: 0x[0-9a-f]+ ukdemo`ukdemo::app::tick(::h[0-9a-f]+)?\(n=3\) at app.rs:{panic_line}:"
    ))
    .unwrap();
    assert!(named.is_match(out), "{out}");
    assert!(
        Regex::new(r"frame #\d+: 0x[0-9a-f]+ ukdemo`ukdemo::app::run(::h[0-9a-f]+)? at app.rs:\d+")
            .unwrap()
            .is_match(out),
        "{out}"
    );
    let frame = Regex::new(r"(?m)^ +(?:\* )?frame #\d+: 0x([0-9a-f]+) ").unwrap();
    let lldb: Vec<u64> =
        frame.captures_iter(out).map(|c| u64::from_str_radix(&c[1], 16).unwrap()).collect();
    let mut real = vec![pc];
    real.extend(gdb.iter().skip(1).filter_map(|(addr, _)| *addr));
    for addr in &real {
        assert!(lldb.contains(addr), "gdb's frame at {addr:#x} not in lldb's bt:\n{out}");
    }
}

/// 2. A page fault and a divide error: gdb's `bt` has `tick` on top at
///    the faulting line, the signal, and `x/i $pc` is the faulting
///    instruction.
#[test]
fn a_page_fault_and_a_divide_error_dump_with_the_faulting_instruction_on_top() {
    let image = &artifacts().image;
    let cases = [
        (
            "ukdemo.fault=3",
            "SIGSEGV, Segmentation fault",
            "null_mut::<u64>().write_volatile(n)",
            r"mov +%r[a-z0-9]+,0x0$",
        ),
        (
            "ukdemo.div0=3",
            "SIGFPE, Arithmetic exception",
            "core::arch::asm!(\"div",
            r"div +%r[a-z0-9]+$",
        ),
    ];
    // Both VMs at once.
    let crashes: Vec<Crash> = cases
        .iter()
        .map(|(opt, ..)| Crash::start(image, &format!("{opt} ukdb.crash=dump"), &[], None))
        .collect();
    for (c, (opt, signal, snippet, insn)) in crashes.iter().zip(cases) {
        let (core, _) = c.core();
        let line = line_of("src/app.rs", snippet);
        let out = gdb_core(image, &core, &["set print asm-demangle on", "bt", "x/i $pc"]);
        assert!(
            out.contains(&format!("Program terminated with signal {signal}.\n")),
            "{opt}: {out}"
        );
        // `tick` is the innermost real frame: the frames above it are
        // inlined into it (`write_volatile`), at the same pc.
        let tick = tick_frame(&out, line);
        assert!(gdb_frames(&out)[1..=tick].iter().all(|(a, _)| a.is_none()), "{opt}: {out}");
        let pc =
            Regex::new(&format!(r"(?m)^=> 0x[0-9a-f]+ <ukdemo::app::tick\+\d+>:\t{insn}")).unwrap();
        assert!(pc.is_match(&out), "{opt}: {out}");
    }
}

/// The byte flipped on the line: in which record.
type Flipped = Arc<Mutex<Option<u32>>>;

/// Follows the bytes from the stub to the bridge and, once a crash stream
/// is `after` bytes in, flips one byte of a DATA record's page data that is
/// not DLE, does not become one, and has no DLE next to it on the line.
#[derive(Default)]
struct Corrupter {
    after: usize,
    /// The previous line byte was a DLE not yet paired.
    dle: bool,
    streaming: bool,
    /// Stream bytes so far (un-escaped), and in the current record.
    at: usize,
    in_record: usize,
    head: [u8; 5],
    len: usize,
    record: u32,
    prev: u8,
    flipped: Flipped,
}

impl Corrupter {
    fn chunk(&mut self, buf: &mut [u8]) {
        for i in 0..buf.len() {
            let b = buf[i];
            let next = buf.get(i + 1).copied();
            buf[i] = self.byte(b, next);
            self.prev = b;
        }
    }

    fn byte(&mut self, b: u8, next: Option<u8>) -> u8 {
        if !self.streaming {
            if self.dle {
                self.dle = false;
                if b == b'K' {
                    (self.streaming, self.at, self.in_record, self.record) = (true, 0, 0, 0);
                }
            } else if b == DLE {
                self.dle = true;
            }
            return b;
        }
        if self.dle {
            self.dle = false;
            assert_eq!(b, DLE, "a DLE not doubled in the stream");
            self.take(DLE);
            return b;
        }
        if b == DLE {
            self.dle = true;
            return b;
        }
        let mut flipped = self.flipped.lock().unwrap();
        let out = if flipped.is_none()
            && self.head[0] == b'D'
            && self.in_record >= 5 + 8
            && self.in_record < 5 + self.len
            && self.at >= self.after
            && b != DLE
            && b != DLE ^ 1
            && self.prev != DLE
            && next.is_some_and(|n| n != DLE)
        {
            *flipped = Some(self.record);
            b ^ 1
        } else {
            b
        };
        drop(flipped);
        self.take(b);
        out
    }

    /// One un-escaped stream byte.
    fn take(&mut self, b: u8) {
        if self.in_record < 5 {
            self.head[self.in_record] = b;
            if self.in_record == 4 {
                self.len = u32::from_le_bytes(self.head[1..5].try_into().unwrap()) as usize;
            }
        }
        self.in_record += 1;
        self.at += 1;
        if self.in_record >= 5 && self.in_record == 5 + self.len + 4 {
            if self.head[0] == b'E' {
                self.streaming = false;
            }
            self.record += 1;
            self.in_record = 0;
        }
    }
}

/// Serves `at` (for the bridge) in front of QEMU's serial socket `qemu`,
/// corrupting as [`Corrupter`] says.
fn relay(qemu: &Path, at: &Path, after: usize) -> Flipped {
    let listener = UnixListener::bind(at).unwrap();
    let qemu = connect_unix(qemu);
    let flipped = Flipped::default();
    let mut corrupter = Corrupter { after, flipped: Arc::clone(&flipped), ..Default::default() };
    std::thread::spawn(move || {
        let (mut bridge, _) = listener.accept().unwrap();
        let (mut to_qemu, mut from_bridge) =
            (qemu.try_clone().unwrap(), bridge.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_bridge, &mut to_qemu);
            let _ = to_qemu.shutdown(std::net::Shutdown::Write);
        });
        let mut from_qemu: UnixStream = qemu;
        let mut buf = [0u8; 4096];
        loop {
            let n = from_qemu.read(&mut buf).unwrap_or(0);
            if n == 0 {
                let _ = bridge.shutdown(std::net::Shutdown::Write);
                return;
            }
            corrupter.chunk(&mut buf[..n]);
            if bridge.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    flipped
}

/// 4. One byte flipped in the middle of the stream: the bridge names the
///    record with the bad CRC and keeps the bytes as a `.core.partial`,
///    never as a core.
#[test]
fn a_corrupted_byte_in_the_stream_is_detected() {
    let image = &artifacts().image;
    let vm = Vm::boot("q35", image, "ukdemo.panic=3 ukdb.crash=dump");
    let dir = tempfile::tempdir().unwrap();
    let relay_sock = dir.path().join("relay.sock");
    let flipped = relay(&vm.sock, &relay_sock, 16 * 1024);
    let cores = dir.path().join("cores");
    let args = ["--core-dir", cores.to_str().unwrap(), "--image", image.to_str().unwrap()];
    let bridge = Bridge::start_unsynced_at(&relay_sock, &args);
    let err = bridge.stderr.wait("the broken stream", |t| t.contains("ukdb: crash stream broken"));
    let record = flipped.lock().unwrap().expect("a byte was flipped");
    let broken = Regex::new(&format!(
        r"(?m)^ukdb: crash stream broken \(bad CRC in record {record}\); kept (\S+\.core\.partial)$"
    ))
    .unwrap();
    let caps = broken.captures(&err).unwrap_or_else(|| panic!("record {record}: {err}"));
    let partial = PathBuf::from(&caps[1]);
    let files: Vec<PathBuf> =
        std::fs::read_dir(&cores).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files, vec![partial.clone()]);
    let name = partial.file_name().unwrap().to_str().unwrap();
    assert!(Regex::new(r"^ukdemo-\d{8}T\d{6}Z\.core\.partial$").unwrap().is_match(name), "{name}");
    assert!(!err.contains("ukdb: core written"), "{err}");
    // The console goes on after the stream, and nothing of the broken
    // stream reaches it (the rest of it once did, as binary console text).
    let console = bridge.console.wait("the console", |t| t.contains("ukdb: crash: core sent ("));
    let at = console.find("ukdb: crash: streaming a core (").unwrap();
    let end = console.find("ukdb: crash: core sent (").unwrap();
    let between = &console[at..end];
    assert!(
        Regex::new(r"^ukdb: crash: streaming a core \(\d+ MiB mapped\)\n$")
            .unwrap()
            .is_match(between),
        "console between the stream's lines: {} bytes",
        between.len()
    );
    drop(bridge);
    drop(vm);
}

/// 3. QEMU killed while the stub streams a 1 GiB VM's core: a
///    `.core.partial`, no core, and the bridge says the stream broke.
#[test]
fn qemu_killed_in_the_middle_of_a_stream_leaves_a_partial() {
    let image = &artifacts().image;
    let c = Crash::start(image, "ukdemo.panic=3 ukdb.crash=dump", &["-m", "1G"], None);
    c.bridge.stderr.wait("the stream", |t| t.contains("ukdb: a crash core is arriving\n"));
    c.bridge.console.wait("the stream", |t| t.contains("ukdb: crash: streaming a core ("));
    // Into the pages: the bridge's temporary file holds 64 KiB of the
    // stream (of about 800 KiB).
    let end = std::time::Instant::now() + DEADLINE;
    let streamed = || {
        std::fs::read_dir(c.dir.path().join("cores"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".ukdb-stream-"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    while streamed() < 64 * 1024 {
        assert!(std::time::Instant::now() < end, "the stream did not reach 64 KiB");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let Crash { bridge, vm, dir, .. } = c;
    drop(vm);
    let err = bridge.stderr.wait("the broken stream", |t| t.contains("ukdb: crash stream broken"));
    let broken = Regex::new(
        r"(?m)^ukdb: crash stream broken \(truncated after (\d+) records\); kept (\S+\.core\.partial)$",
    )
    .unwrap();
    let caps = broken.captures(&err).unwrap_or_else(|| panic!("{err}"));
    // HEADER, 3 NOTEs, REGS, the MAPs and some DATA had arrived.
    let records: u32 = caps[1].parse().unwrap();
    assert!(records > 5, "{err}");
    let partial = PathBuf::from(&caps[2]);
    let files: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("cores")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files, vec![partial.clone()]);
    assert!(!err.contains("ukdb: core written"), "{err}");
    let kept = std::fs::read(&partial).unwrap();
    assert!(
        kept.starts_with(&[DLE, b'K']),
        "{} bytes: {:x?}",
        kept.len(),
        &kept[..kept.len().min(16)]
    );
    println!("killed after {records} records, {} bytes kept", kept.len());
}

/// 5. The dump-only image (no debugger stub): the core arrives through
///    the bridge and gdb shows the panic in `tick`; the full example image
///    is another build.
#[test]
fn the_dump_only_image_streams_a_core_through_the_bridge() {
    let image = dumponly_image();
    let c = Crash::start(image, "ukdemo.panic=3 ukdb.crash=dump,then=halt", &[], None);
    let (core, reason) = c.core();
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    assert_eq!(reason, format!("panicked at src/app.rs:{panic_line}:9:"));
    let out = gdb_core(image, &core, &["bt"]);
    assert!(out.contains("Program terminated with signal SIGABRT, Aborted.\n"), "{out}");
    tick_frame(&out, panic_line);
    inspect(&core, image);
    // 6. Against the full example image.
    assert_refused(&core, image, &artifacts().image);
}

/// `then=reboot`: after the core, the stub resets the machine; QEMU, run
/// with `-no-reboot`, exits on the reset, so the bridge sees the line close
/// right after writing the core (with `then=wait` the unikernel would stay
/// stopped and the line open).
#[test]
fn then_reboot_resets_the_machine_after_the_core() {
    let image = &artifacts().image;
    let c = Crash::start(image, "ukdemo.div0=3 ukdb.crash=dump,then=reboot", &[], None);
    let (core, reason) = c.core();
    assert!(reason.starts_with("divide error at rip 0x"), "{reason}");
    let err = c.bridge.stderr.wait("the reset", |t| t.contains("ukdb: unikernel channel closed"));
    let written = err.find("ukdb: core written").unwrap();
    assert!(written < err.find("ukdb: unikernel channel closed").unwrap(), "{err}");
    let out = gdb_core(image, &core, &["x/i $pc"]);
    assert!(
        Regex::new(r"=> 0x[0-9a-f]+ <[^>]*tick[^>]*>:\s+div ").unwrap().is_match(&out),
        "{out}"
    );
}
