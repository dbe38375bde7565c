//! Core dumps of the example under TCG: `cargo bench -p ukdb-tests --bench core`.
//!
//! For `-m 128M` and `-m 1G` on q35:
//! - `ukdb core --connect` straight to the network stub (and, on the same
//!   connection kind, the raw bulk-read rate: back-to-back `x` reads of the
//!   largest size the stub's PacketSize allows, 8 MiB in all);
//! - `ukdb core --target` on the serial line (a VM booted with `ukdb.net=off`);
//! - QEMU's own `dump-guest-memory` (QMP, ELF, no paging) on the net VM;
//! - the crash stream: `ukdemo.panic=3 ukdb.crash=dump` on the serial line
//!   into `ukdb bridge --core-dir`, with the full stub and with the
//!   dump-only stub (`--no-default-features --features dump`), timed from
//!   the console's `ukdb: crash: streaming a core` line to the bridge's
//!   `ukdb: core written` line.
//!
//! `cargo bench -p ukdb-tests --bench core -- WORD` runs only the rows
//! whose path contains WORD (`net`, `QEMU`, `serial`, `crash`).
//!
//! Reported: seconds, core size, the memory captured per second (the RAM
//! the map lists over the wall time), and for the network the read phase's
//! rate (pages read over the time spent reading them, from `ukdb core`'s
//! debug log) against the raw bulk-read rate. It asserts only that every
//! dump succeeds.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ukdb_tests::raw::{Raw, Reply};
use ukdb_tests::*;

/// Where the raw bulk read reads (RAM, inside 128 MiB, away from the image).
const READ_AT: u64 = 0x100_0000;
const READ_LEN: u64 = 8 << 20;

struct Row {
    path: String,
    ram: String,
    secs: f64,
    core_mib: f64,
    captured_mib_s: f64,
    note: String,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `ukdb core ARGS -o core` with debug logging; (seconds, core bytes,
/// stderr).
fn ukdb_core(core: &Path, args: &[&str]) -> (f64, u64, String) {
    let start = Instant::now();
    let out = Command::new(&artifacts().ukdb)
        .arg("core")
        .args(args)
        .arg("-o")
        .arg(core)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run ukdb core");
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ukdb core failed:\n{err}");
    (secs, std::fs::metadata(core).unwrap().len(), err)
}

/// MiB of RAM the summary line names.
fn ram_mib(err: &str) -> f64 {
    capture(err, r" of ([0-9.]+) MiB RAM in ")
}

/// The read phase's rate from the debug log, MiB/s.
fn read_phase(err: &str) -> f64 {
    let line = err.lines().find(|l| l.contains("debug: read ")).expect("the read phase's line");
    let bytes: f64 = capture(line, r"read (\d+) bytes in ");
    let re = regex::Regex::new(r"in ([0-9.]+)(ms|s|µs)").unwrap();
    let c = re.captures(line).expect("a duration");
    let v: f64 = c[1].parse().unwrap();
    let secs = match &c[2] {
        "ms" => v / 1e3,
        "µs" => v / 1e6,
        _ => v,
    };
    bytes / 1048576.0 / secs
}

/// The bitmaps phase's seconds from the debug log.
fn bitmap_secs(err: &str) -> f64 {
    let line = err.lines().find(|l| l.contains("debug: bitmaps: ")).expect("the bitmaps line");
    let re = regex::Regex::new(r"in ([0-9.]+)(ms|s|µs)").unwrap();
    let c = re.captures(line).expect("a duration");
    let v: f64 = c[1].parse().unwrap();
    match &c[2] {
        "ms" => v / 1e3,
        "µs" => v / 1e6,
        _ => v,
    }
}

/// Back-to-back `x` reads of the largest size PacketSize allows: MiB/s.
fn raw_bulk_read(addr: &str) -> f64 {
    let mut raw = Raw::connect(addr);
    let q = raw.request(b"qSupported:xmlRegisters=i386");
    let size: usize = q
        .split(';')
        .find_map(|f| f.strip_prefix("PacketSize="))
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .expect("PacketSize");
    assert_eq!(raw.request(b"QStartNoAckMode"), "OK");
    raw.ack = false;
    raw.request(b"?");
    let chunk = ((size - 5) / 2) as u64;
    let start = Instant::now();
    let mut at = READ_AT;
    while at < READ_AT + READ_LEN {
        let n = chunk.min(READ_AT + READ_LEN - at);
        raw.send_packet(format!("x{at:x},{n:x}").as_bytes());
        match raw.packet_within(Duration::from_secs(10)) {
            Some(Reply::Packet(body)) => assert!(!body.is_empty(), "an empty x reply"),
            other => panic!("x reply: {:?}", other.map(|r| r.text())),
        }
        at += n;
    }
    let rate = mib(READ_LEN) / start.elapsed().as_secs_f64();
    raw.close();
    rate
}

/// QMP `dump-guest-memory` (ELF, no paging) to `file`: seconds.
fn qmp_dump(qmp: &Path, file: &Path) -> f64 {
    let stream = connect_unix(qmp);
    stream.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut answer = |cmd: &str| {
        writer.write_all(cmd.as_bytes()).unwrap();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "QMP closed");
            if line.contains("\"return\"") || line.contains("\"error\"") {
                assert!(line.contains("\"return\""), "QMP: {line}");
                return;
            }
        }
    };
    answer("{\"execute\": \"qmp_capabilities\"}\n");
    let start = Instant::now();
    answer(&format!(
        "{{\"execute\": \"dump-guest-memory\", \"arguments\": {{\"paging\": false, \"protocol\": \"file:{}\"}}}}\n",
        file.display()
    ));
    start.elapsed().as_secs_f64()
}

/// A panic's crash stream on the serial line into `ukdb bridge
/// --core-dir`: the row.
fn crash_stream(image: &Path, stub: &str, mem: &str, dir: &Path) -> Row {
    let append = "ukdemo.panic=3 ukdb.crash=dump,then=halt";
    let vm = Vm::boot_with("q35", image, append, &["-m", mem]);
    let cores = dir.join(format!("cores-{}-{mem}", stub.replace(' ', "-")));
    let args = ["--core-dir", cores.to_str().unwrap(), "--image", image.to_str().unwrap()];
    let bridge = Bridge::start_unsynced(&vm, &args);
    let console =
        bridge.console.wait("the crash stream", |t| t.contains("ukdb: crash: streaming a core ("));
    let start = Instant::now();
    let err = bridge.stderr.wait("the core", |t| {
        t.contains("ukdb: core written: ") || t.contains("ukdb: crash stream broken")
    });
    let secs = start.elapsed().as_secs_f64();
    assert!(err.contains("ukdb: core written: "), "{err}");
    let core: String = capture(&err, r"ukdb: core written: (\S+) \(");
    let size = std::fs::metadata(&core).unwrap().len();
    let mapped: f64 = capture(&console, r"ukdb: crash: streaming a core \((\d+) MiB mapped\)");
    let sent =
        bridge.console.wait("the stub's last line", |t| t.contains("ukdb: crash: core sent ("));
    let pages: u64 = capture(&sent, r"ukdb: crash: core sent \((\d+) pages, ");
    let line: u64 = capture(&sent, r"ukdb: crash: core sent \(\d+ pages, (\d+) bytes\)");
    Row {
        path: format!("crash stream, serial, {stub}"),
        ram: mem.into(),
        secs,
        core_mib: mib(size),
        captured_mib_s: mapped / secs,
        note: format!(
            "map {mapped:.0} MiB; {pages} pages ({:.1} MiB) in {:.1} MiB on the line, {:.2} MiB/s",
            mib(pages * 4096),
            mib(line),
            mib(line) / secs
        ),
    }
}

fn measure(mem: &str, rows: &mut Vec<Row>, only: &dyn Fn(&str) -> bool) {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    // The network stub, QEMU's dump on the same VM.
    if only("ukdb core, net") || only("QEMU dump-guest-memory") {
        let qmp = dir.path().join("qmp.sock");
        let [q1, q2] = ukdb_tests::qmp::args(&qmp);
        let vm = NetVm::boot("q35", &a.image, "", &["-m", mem, &q1, &q2]);
        vm.wait_stub_ready();
        vm.console.wait("the app", |t| app_lines(t).len() >= 2);
        let core = dir.path().join("net.core");
        let (secs, size, err) = ukdb_core(&core, &["--connect", &vm.debug]);
        let ram = ram_mib(&err);
        let reading = read_phase(&err);
        let raw = raw_bulk_read(&vm.debug);
        rows.push(Row {
            path: "ukdb core, net".into(),
            ram: mem.into(),
            secs,
            core_mib: mib(size),
            captured_mib_s: ram / secs,
            note: format!(
                "map {ram:.0} MiB; bitmaps {:.1} s; read phase {reading:.2} MiB/s = {:.0}% of raw x {raw:.2} MiB/s",
                bitmap_secs(&err),
                100.0 * reading / raw
            ),
        });
        let dump = dir.path().join("qemu.dump");
        let secs = qmp_dump(&qmp, &dump);
        let size = std::fs::metadata(&dump).unwrap().len();
        rows.push(Row {
            path: "QEMU dump-guest-memory".into(),
            ram: mem.into(),
            secs,
            core_mib: mib(size),
            captured_mib_s: mib(size) / secs,
            note: "QMP, ELF, paging off".into(),
        });
    }
    // The serial line.
    if only("ukdb core, serial") {
        let vm = Vm::boot_with("q35", &a.image, "ukdb.net=off", &["-m", mem]);
        let target = format!("unix:{}", vm.sock.display());
        let core = dir.path().join("serial.core");
        let (secs, size, err) = ukdb_core(&core, &["--target", &target]);
        let ram = ram_mib(&err);
        rows.push(Row {
            path: "ukdb core, serial".into(),
            ram: mem.into(),
            secs,
            core_mib: mib(size),
            captured_mib_s: ram / secs,
            note: format!(
                "map {ram:.0} MiB; bitmaps {:.1} s; read phase {:.2} MiB/s",
                bitmap_secs(&err),
                read_phase(&err)
            ),
        });
    }
    // The crash stream, both stubs.
    if only("crash stream, serial, full stub") {
        rows.push(crash_stream(&a.image, "full stub", mem, dir.path()));
    }
    if only("crash stream, serial, dump-only stub") {
        rows.push(crash_stream(dumponly_image(), "dump-only stub", mem, dir.path()));
    }
}

fn main() {
    // `cargo bench` passes --bench; a word after it picks rows.
    let word = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let only = |path: &str| word.as_deref().is_none_or(|w| path.contains(w));
    let mut rows = Vec::new();
    for mem in ["128M", "1G"] {
        measure(mem, &mut rows, &only);
    }
    println!(
        "\n| path | -m | seconds | core MiB | memory captured MiB/s | notes |\n|---|---|---|---|---|---|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            r.path, r.ram, r.secs, r.core_mib, r.captured_mib_s, r.note
        );
    }
}
