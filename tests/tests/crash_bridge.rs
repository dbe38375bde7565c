//! Crash streams through `ukdb bridge --core-dir`, and the cores it writes
//! in real gdb and lldb.
//!
//! These tests need no guest: the test plays the unikernel's serial line (a
//! unix socket the bridge connects to) and writes a crash stream it builds
//! itself, as `docs/wire-protocol.md` ("Crash stream") defines it, with
//! memory taken from the example image (its text and rodata) plus a stack
//! and a global it makes up. The CRC is computed here bit by bit, a
//! reference independent of the crate the stub and the bridge share.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSegment};
use ukdb_tests::{artifacts, symbols, Bridge};

const DLE: u8 = 0x10;
const PAGE: u64 = 4096;
const MAP_EXEC: u32 = 2;
const MAP_WRITE: u32 = 1;
const MAP_DEVICE: u32 = 4;

/// CRC-32/ISO-HDLC, bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// A crash stream (`DLE 'K'` included) being built.
struct Stream {
    line: Vec<u8>,
    records: u32,
    pages: u64,
}

impl Stream {
    fn new() -> Self {
        Stream { line: vec![DLE, b'K'], records: 0, pages: 0 }
    }

    fn record(&mut self, kind: u8, payload: &[u8]) {
        let mut rec = vec![kind];
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(payload);
        let crc = crc32(&rec);
        rec.extend_from_slice(&crc.to_le_bytes());
        for b in rec {
            self.line.push(b);
            if b == DLE {
                self.line.push(DLE);
            }
        }
        self.records += 1;
        if kind == b'D' {
            self.pages += (payload.len() as u64 - 8) / PAGE;
        }
    }

    fn end(mut self) -> Vec<u8> {
        let mut end = self.records.to_le_bytes().to_vec();
        end.extend_from_slice(&self.pages.to_le_bytes());
        self.record(b'E', &end);
        // The stream's end on the line, never escaped.
        self.line.extend_from_slice(&[DLE, b'Z']);
        self.line
    }
}

fn note(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut n = vec![kind];
    n.extend_from_slice(bytes);
    n
}

fn map(vaddr: u64, paddr: u64, len: u64, flags: u32) -> Vec<u8> {
    let mut m = vaddr.to_le_bytes().to_vec();
    m.extend_from_slice(&paddr.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m
}

fn symbol(image: &Path, needle: &str) -> u64 {
    symbols(image)
        .into_iter()
        .find(|(n, _)| n.contains(needle))
        .unwrap_or_else(|| panic!("no symbol like {needle}"))
        .1
}

/// What the synthetic crash is made of.
struct Crash {
    stream: Vec<u8>,
    rip: u64,
    rsp: u64,
    ticks: u64,
    build_id: Vec<u8>,
}

const RAX: u64 = 0x1122_3344_5566_7788;
const TICKS_VALUE: u64 = 0x0123_4567_89ab_cdef;
/// The stack: one page at a made-up virtual address, physical 0x80_0000.
const STACK_VADDR: u64 = 0xffff_8000_0000_0000;
const STACK_PADDR: u64 = 0x80_0000;

/// A page fault in `ukdemo::app::tick`, called from `ukdemo::app::run`,
/// with `TICKS` set, as the stub would stream it.
fn crash(image: &Path, build_id: &[u8]) -> Crash {
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let rip = symbol(image, "3app4tick");
    let caller = symbol(image, "3app3run") + 0x40;
    let ticks = symbol(image, "3app5TICKS");
    let rsp = STACK_VADDR + 0xf00;

    let mut s = Stream::new();
    let mut header = b"UKDBCORE".to_vec();
    header.extend_from_slice(&[1, 0, 2, 0]);
    header.extend_from_slice(&(PAGE as u32).to_le_bytes());
    s.record(b'H', &header);
    s.record(b'N', &note(1, b"page fault at 0xdead0000 (write)"));
    s.record(b'N', &note(2, b"ukdb.crash=dump console=ttyS0"));
    s.record(b'N', &note(3, build_id));
    // The trap frame: r15 .. rax, vector, error, rip, cs, rflags, rsp, ss.
    let mut frame = [0u64; 22];
    frame[14] = RAX;
    frame[8] = rsp + 0x80; // rbp
    (frame[15], frame[16], frame[17], frame[18]) = (14, 2, rip, 8);
    (frame[19], frame[20], frame[21]) = (0x46, rsp, 0x10);
    let mut regs = vec![0u8; 8];
    for q in frame {
        regs.extend_from_slice(&q.to_le_bytes());
    }
    for q in [0u64, 0, 0x8000_0011, 0xdead_0000, 0x1000, 0x20, 0x500] {
        regs.extend_from_slice(&q.to_le_bytes());
    }
    regs.extend_from_slice(&[0; 512]);
    s.record(b'R', &regs);

    // Memory: the image's loadable segments (identity mapped), the stack,
    // and a device page that is listed but not dumped.
    let mut pages: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut entries = Vec::new();
    for seg in file.segments() {
        let (addr, size) = (seg.address(), seg.size());
        if size == 0 {
            continue;
        }
        let start = addr & !(PAGE - 1);
        let end = (addr + size).next_multiple_of(PAGE);
        let mut mem = vec![0u8; (end - start) as usize];
        let bytes = seg.data().unwrap();
        let at = (addr - start) as usize;
        mem[at..at + bytes.len()].copy_from_slice(bytes);
        if (start..end).contains(&ticks) {
            let at = (ticks - start) as usize;
            mem[at..at + 8].copy_from_slice(&TICKS_VALUE.to_le_bytes());
        }
        let flags = seg.flags();
        let exec = matches!(flags, object::SegmentFlags::Elf { p_flags } if p_flags & 1 != 0);
        let write = matches!(flags, object::SegmentFlags::Elf { p_flags } if p_flags & 2 != 0);
        let f = if exec { MAP_EXEC } else { 0 } | if write { MAP_WRITE } else { 0 };
        entries.push((start, start, end - start, f));
        for (i, page) in mem.chunks(PAGE as usize).enumerate() {
            pages.push((start + i as u64 * PAGE, page.to_vec()));
        }
    }
    let mut stack = vec![0u8; PAGE as usize];
    stack[0xf00..0xf08].copy_from_slice(&caller.to_le_bytes());
    pages.push((STACK_PADDR, stack));
    entries.push((STACK_VADDR, STACK_PADDR, PAGE, MAP_WRITE));
    entries.push((STACK_VADDR + 0x10_0000, 0xfee0_0000, PAGE, MAP_DEVICE | MAP_WRITE));
    entries.sort();
    for (v, p, l, f) in entries {
        s.record(b'M', &map(v, p, l, f));
    }
    for (paddr, page) in pages {
        if page.iter().any(|&b| b != 0) {
            let mut d = paddr.to_le_bytes().to_vec();
            d.extend_from_slice(&page);
            s.record(b'D', &d);
        }
    }
    Crash { stream: s.end(), rip, rsp, ticks, build_id: build_id.to_vec() }
}

/// The image's build-id, or a made-up one while the example has none.
fn build_id_of(image: &Path) -> Vec<u8> {
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    match file.build_id().unwrap() {
        Some(id) => id.to_vec(),
        None => vec![0xc0, 0xff, 0xee, 0x10, 0x10, 0x42, 0x01, 0x02],
    }
}

/// The serial line the bridge connects to, and the bridge.
struct Line {
    dir: tempfile::TempDir,
    bridge: Bridge,
    serial: UnixStream,
}

fn bridge(extra: &[&str]) -> Line {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let cores = dir.path().join("cores");
    let cores = cores.to_str().unwrap().to_string();
    let mut args = vec!["--no-probe"];
    let with_dir = !extra.contains(&"--no-core-dir");
    if with_dir {
        args.extend(["--core-dir", &cores]);
    }
    args.extend(extra.iter().filter(|a| **a != "--no-core-dir"));
    let bridge = Bridge::start_unsynced_at(&sock, &args);
    let (serial, _) = listener.accept().unwrap();
    Line { dir, bridge, serial }
}

fn core_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("cores"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn run(cmd: &mut Command) -> (String, i32) {
    let out = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text, out.status.code().unwrap_or(-1))
}

#[test]
fn a_crash_stream_becomes_a_core_that_gdb_and_lldb_open() {
    let image = &artifacts().image;
    let c = crash(image, &build_id_of(image));
    let image_arg = image.to_str().unwrap();
    let mut line = bridge(&["--image", image_arg]);
    line.serial.write_all(b"before the crash\r\n").unwrap();
    line.serial.write_all(&c.stream).unwrap();
    line.serial.write_all(b"after the crash\r\n").unwrap();
    let err = line.bridge.stderr.wait("the core", |t| t.contains("ukdb: open it with: gdb "));
    line.bridge.console.wait("the console after the stream", |t| t.contains("after the crash"));
    assert_eq!(line.bridge.console.text(), "before the crash\r\nafter the crash\r\n");

    let files = core_files(line.dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let core = &files[0];
    let id: String = c.build_id.iter().map(|b| format!("{b:02x}")).collect();
    let name = core.file_name().unwrap().to_str().unwrap();
    let re = format!(r"^ukdemo-{}-\d{{8}}T\d{{6}}Z\.core$", &id[..12]);
    assert!(regex::Regex::new(&re).unwrap().is_match(name), "{name}");
    assert!(err.contains(&format!("ukdb: core written: {} (", core.display())));
    assert!(err.contains("MiB, reason: page fault at 0xdead0000 (write))\n"), "{err}");
    assert!(err.contains(&format!("ukdb: open it with: gdb {image_arg} {}\n", core.display())));
    assert!(!err.contains("mismatch"), "{err}");

    // gdb: the signal, the frames, the registers, the global; a read that
    // starts in a run of zero pages inside .bss (not in the file) and goes
    // on into the stored page of TICKS.
    let (bss_start, _) = bss(image);
    let ticks_page = c.ticks & !(PAGE - 1);
    assert!(ticks_page > bss_start, "the page before TICKS' is not in .bss");
    let dump = line.dir.path().join("dump.bin");
    let (out, code) = run(Command::new("gdb").args(["-batch", "-nx", image_arg]).arg(core).args([
        "-ex",
        "bt 2",
        "-ex",
        "info registers rip rsp rax",
        "-ex",
        &format!("x/gx {:#x}", c.ticks),
        "-ex",
        &format!(
            "dump binary memory {} {:#x} {:#x}",
            dump.display(),
            ticks_page - PAGE,
            ticks_page + PAGE
        ),
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("may not match"), "{out}");
    assert!(
        out.contains("Core was generated by `ukdemo ukdb.crash=dump console=ttyS0'.\n"),
        "{out}"
    );
    assert!(out.contains("Program terminated with signal SIGSEGV, Segmentation fault."), "{out}");
    let dumped = std::fs::read(&dump).unwrap();
    let mut expected = vec![0u8; 2 * PAGE as usize];
    let at = (c.ticks - ticks_page + PAGE) as usize;
    expected[at..at + 8].copy_from_slice(&TICKS_VALUE.to_le_bytes());
    assert!(dumped == expected, "gdb's dump across a zero run differs");
    assert!(regex::Regex::new(r"(?m)^#0 .*ukdemo::app::tick").unwrap().is_match(&out), "{out}");
    assert!(regex::Regex::new(r"(?m)^#1 .*ukdemo::app::run").unwrap().is_match(&out), "{out}");
    assert!(out.contains(&format!("rip            {:#x}", c.rip)), "{out}");
    assert!(out.contains(&format!("rsp            {:#x}", c.rsp)), "{out}");
    assert!(out.contains(&format!("rax            {RAX:#x}")), "{out}");
    assert!(out.contains(&format!(":\t{TICKS_VALUE:#018x}")), "{out}");

    // lldb 14, with the image and with the core alone (the image is found
    // through the core's NT_FILE): named frames with file:line, the
    // registers, the global.
    for target in [
        format!("target create {image_arg} --core {}", core.display()),
        format!("target create --core {}", core.display()),
    ] {
        let out = lldb_core(&target, &c);
        assert!(out.contains("stop reason = signal SIGSEGV"), "{out}");
        assert!(out.contains(&format!("rip = {:#018x}", c.rip)), "{out}");
        assert!(out.contains(&format!("rax = {RAX:#018x}")), "{out}");
    }

    // ukdb inspect: the notes, and the build-ids match.
    let ukdb = &artifacts().ukdb;
    let (out, code) = run(Command::new(ukdb).arg("inspect").arg(core).arg(image));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reason:   page fault at 0xdead0000 (write)\n"), "{out}");
    assert!(out.contains("cmdline:  ukdb.crash=dump console=ttyS0\n"), "{out}");
    assert!(out.contains(&format!("build-id: {id}\n")), "{out}");
    assert!(out.contains("cause:    2 (exception), vector 14, error code 0x2, cr2 0xdead0000\n"));
    assert!(out.contains(" (build-id matches)\n"), "{out}");
}

/// lldb on a core of [`crash`]: `bt 2`, the registers, TICKS read as
/// memory and as a variable; asserts the frames and the global.
fn lldb_core(target: &str, c: &Crash) -> String {
    let (out, code) = run(Command::new("lldb").args(["-b", "-o", target]).args([
        "-o",
        "bt 2",
        "-o",
        "register read rip rsp rax",
        "-o",
        &format!("memory read -s8 -fx -c1 {:#x}", c.ticks),
        "-o",
        "p ukdemo::app::TICKS",
    ]));
    assert_eq!(code, 0, "{out}");
    assert_lldb_frames_and_ticks(&out, c);
    out
}

/// lldb's `bt 2` and TICKS in `out`: frame #0 `ukdemo::app::tick` with
/// file:line, frame #1 `ukdemo::app::run`, TICKS as memory (when read)
/// and as a variable.
fn assert_lldb_frames_and_ticks(out: &str, c: &Crash) {
    let frame0 =
        r"frame #0: 0x0*([0-9a-f]+) ukdemo`ukdemo::app::tick::h[0-9a-f]+\(n=0\) at app\.rs:\d+";
    let caps = regex::Regex::new(frame0).unwrap().captures(out).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(u64::from_str_radix(&caps[1], 16).unwrap(), c.rip);
    let frame1 = r"frame #1: 0x0*[0-9a-f]+ ukdemo`ukdemo::app::run::h[0-9a-f]+ at app\.rs:\d+";
    assert!(regex::Regex::new(frame1).unwrap().is_match(out), "{out}");
    if out.contains("memory read") {
        let memory = format!(r"(?m)^0x0*{:x}: {TICKS_VALUE:#018x}$", c.ticks);
        assert!(regex::Regex::new(&memory).unwrap().is_match(out), "{out}");
    }
    let variable = format!(r"(?m)^\(unsigned long\) \$0 = {TICKS_VALUE}$");
    assert!(regex::Regex::new(&variable).unwrap().is_match(out), "{out}");
}

/// The address range of the image's `.bss`.
fn bss(image: &Path) -> (u64, u64) {
    use object::ObjectSection;
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let s = file.section_by_name(".bss").unwrap();
    (s.address(), s.address() + s.size())
}

#[test]
fn a_core_without_the_image_opens_in_lldb_through_ukdb_open() {
    // No --image: the core has no AT_ENTRY, and the process is named
    // after --name; `ukdb open --lldb` loads the image itself.
    let image = &artifacts().image;
    let c = crash(image, &build_id_of(image));
    let mut line = bridge(&["--name", "ukdemo"]);
    line.serial.write_all(&c.stream).unwrap();
    line.bridge.stderr.wait("the core", |t| t.contains("ukdb: open it with:"));
    let core = &core_files(line.dir.path())[0];
    let mut open = Command::new(&artifacts().ukdb);
    open.args(["open", "--lldb"]).arg(image).arg(core);
    let input = b"bt 2\np ukdemo::app::TICKS\n";
    let out = run_with_input(&mut open, input);
    assert!(
        out.contains(&format!("target modules load --file {} --slide 0\n", image.display())),
        "{out}"
    );
    assert_lldb_frames_and_ticks(&out, &c);

    // gdb: no image known, so no file mappings; the name still matches.
    let (out, code) = run(Command::new("gdb").args(["-batch", "-nx"]).arg(image).arg(core));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("may not match"), "{out}");
    assert!(
        out.contains("Core was generated by `ukdemo ukdb.crash=dump console=ttyS0'.\n"),
        "{out}"
    );
}

/// Runs `cmd` with `input` on its stdin; its stdout and stderr.
fn run_with_input(cmd: &mut Command, input: &[u8]) -> String {
    use std::process::Stdio;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn a_core_of_another_image_is_refused() {
    let image = &artifacts().image;
    // /bin/true has a GNU build-id of its own (Debian links with one).
    let other = Path::new("/bin/true");
    let mut line = bridge(&["--image", "/bin/true", "--name", "uk"]);
    let c = crash(image, &[0xaa; 20]);
    line.serial.write_all(&c.stream).unwrap();
    let err = line.bridge.stderr.wait("the core", |t| t.contains("ukdb: open it with:"));
    assert!(err.contains("ukdb: WARNING: build-id mismatch: core aaaaaaaa"), "{err}");
    let core = &core_files(line.dir.path())[0];
    let ukdb = &artifacts().ukdb;
    let (out, code) = run(Command::new(ukdb).arg("inspect").arg(core).arg(other));
    assert_eq!(code, 2, "{out}");
    let mismatch =
        regex::Regex::new(r"ukdb: build-id mismatch: core (a{40}) image ([0-9a-f]+)\n").unwrap();
    let caps = mismatch.captures(&out).unwrap_or_else(|| panic!("{out}"));
    assert_ne!(&caps[2], &caps[1]);
    let (out, code) = run(Command::new(ukdb).arg("open").arg(other).arg(core));
    assert_eq!(code, 2, "{out}");
    assert!(mismatch.is_match(&out), "{out}");
    assert!(out.contains("ukdb: refusing to open it (--force opens it anyway)\n"), "{out}");
}

#[test]
fn a_truncated_stream_is_kept_as_partial_and_never_as_a_core() {
    let image = &artifacts().image;
    let c = crash(image, &[1, 2, 3]);
    let mut line = bridge(&[]);
    let half = c.stream.len() / 2;
    line.serial.write_all(b"boot\r\n").unwrap();
    line.serial.write_all(&c.stream[..half]).unwrap();
    drop(line.serial);
    let err = line.bridge.stderr.wait("the partial", |t| t.contains("ukdb: crash stream broken"));
    let files = core_files(line.dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let partial = &files[0];
    let name = partial.file_name().unwrap().to_str().unwrap();
    assert!(regex::Regex::new(r"^unikernel-\d{8}T\d{6}Z\.core\.partial$").unwrap().is_match(name));
    assert!(
        regex::Regex::new(&format!(
            r"ukdb: crash stream broken \(truncated after \d+ records\); kept {}\n",
            regex::escape(&partial.display().to_string())
        ))
        .unwrap()
        .is_match(&err),
        "{err}"
    );
    assert_eq!(std::fs::read(partial).unwrap(), c.stream[..half]);
    assert_eq!(line.bridge.console.wait_closed("the console"), "boot\r\n");
}

#[test]
fn a_corrupted_byte_is_detected_and_the_console_goes_on() {
    let image = &artifacts().image;
    let mut c = crash(image, &[1, 2, 3]);
    // A byte in the middle of the registers record.
    let at = 200;
    assert_ne!(c.stream[at], DLE);
    assert_ne!(c.stream[at] ^ 0x01, DLE);
    c.stream[at] ^= 0x01;
    let mut line = bridge(&[]);
    line.serial.write_all(&c.stream).unwrap();
    line.serial.write_all(b"\r\nstill here\r\n").unwrap();
    let err = line.bridge.stderr.wait("the error", |t| t.contains("ukdb: crash stream broken"));
    assert!(
        regex::Regex::new(
            r"ukdb: crash stream broken \(bad CRC in record 4\); kept .*\.core\.partial\n"
        )
        .unwrap()
        .is_match(&err),
        "{err}"
    );
    line.bridge.console.wait("the console", |t| t.contains("still here"));
    assert!(core_files(line.dir.path()).iter().all(|f| !f.to_str().unwrap().ends_with(".core")));
}

#[test]
fn without_core_dir_a_stream_is_reported_not_written_nor_shown() {
    let image = &artifacts().image;
    let c = crash(image, &[1, 2, 3]);
    let mut line = bridge(&["--no-core-dir"]);
    line.serial.write_all(b"a\r\n").unwrap();
    line.serial.write_all(&c.stream).unwrap();
    line.serial.write_all(b"b\r\n").unwrap();
    let err = line.bridge.stderr.wait("the report", |t| t.contains("a crash core arrived"));
    assert!(err.contains(
        "ukdb: a crash core arrived (reason: page fault at 0xdead0000 (write)); run the bridge \
         with --core-dir DIR to keep it\n"
    ), "{err}");
    line.bridge.console.wait("the console", |t| t.contains("b\r\n"));
    assert_eq!(line.bridge.console.text(), "a\r\nb\r\n");
    assert!(core_files(line.dir.path()).is_empty());
}
