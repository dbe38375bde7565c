//! gdb and lldb on every transport, one VM configuration, side by side with
//! QEMU's gdbstub: `cargo bench -p ukdb-tests --bench transports`.
//!
//! Every path uses the same image on q35 (TCG) with a virtio-net device on
//! QEMU's user networking and QEMU's own gdbstub enabled:
//! - `qemu-gdbstub`: gdb to QEMU's gdbstub (the anchor);
//! - `net`: gdb straight to the stub over TCP;
//! - `net+bridge`: gdb to `ukdb bridge` in front of the stub's TCP port;
//! - `serial+bridge`: the same VM booted with `ukdb.net=off`, gdb to
//!   `ukdb bridge` on the serial line;
//! - `xen-ring+bridge`: the same VM with an ivshmem-plain device, the stub
//!   on the Xen console ring in its shared memory (`ukdb.xenring=ivshmem`),
//!   gdb to `ukdb bridge` on `ukdb xen-model`'s socket.
//!
//! Measured by the debuggers themselves (gdb's and lldb's Python, wall
//! clock around the command): a 1 MiB `dump binary memory` (gdb) and
//! `memory read` (lldb) of RAM, `stepi` per second, breakpoint hits per
//! second on the 1 kHz timer interrupt, and `maint packet g` round trips.
//! It reports; it asserts nothing about speed, but fails if a debugger does.

use std::path::Path;
use std::process::Command;
use ukdb_tests::*;

/// RAM the reads cover: 16 MiB up, 1 MiB, inside the 128 MiB guest and
/// away from the image (gdb's code and stack caches are off as well).
const READ_AT: u64 = 0x100_0000;
const READ_LEN: u64 = 1 << 20;
const STEPS: usize = 200;
const HITS: usize = 200;
const GS: usize = 200;
const RUNS: usize = 3;
const ROUNDS: usize = 2;

const GDB_SCRIPT: &str = r#"
import gdb, time, os
def best(f, runs):
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)
at, n = int(os.environ["READ_AT"]), int(os.environ["READ_LEN"])
out = os.environ["DUMP"]
gdb.execute("set code-cache off")
gdb.execute("set stack-cache off")
t = best(lambda: gdb.execute("dump binary memory %s %d %d" % (out, at, at + n)), int(os.environ["RUNS"]))
print("RESULT read_mib_s %.3f" % (n / t / 1048576))
def gs():
    for _ in range(int(os.environ["GS"])):
        gdb.execute("maint packet g", to_string=True)
t = best(gs, 1)
print("RESULT g_us %.1f" % (t / int(os.environ["GS"]) * 1e6))
gdb.execute("break ukdemo::timer::on_interrupt")
gdb.execute("continue", to_string=True)
def hits():
    for _ in range(int(os.environ["HITS"])):
        gdb.execute("continue", to_string=True)
t = best(hits, 1)
print("RESULT hits_s %.1f" % (int(os.environ["HITS"]) / t))
gdb.execute("delete")
def steps():
    for _ in range(int(os.environ["STEPS"])):
        gdb.execute("stepi", to_string=True)
t = best(steps, 1)
print("RESULT stepi_s %.1f" % (int(os.environ["STEPS"]) / t))
"#;

/// What one path measured.
#[derive(Default, Clone)]
struct Row {
    read: f64,
    lldb_read: Option<f64>,
    stepi: f64,
    hits: f64,
    g: f64,
}

fn result(out: &str, key: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("RESULT {key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in the debugger's output:\n{out}"))
}

fn gdb_measure(image: &Path, remote: &str) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bench.py");
    std::fs::write(&script, GDB_SCRIPT).unwrap();
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"])
        .arg(image)
        .args(["-ex", &format!("target remote {remote}"), "-x"])
        .arg(&script)
        .args(["-ex", "detach"])
        .env("READ_AT", READ_AT.to_string())
        .env("READ_LEN", READ_LEN.to_string())
        .env("DUMP", dir.path().join("dump.bin"))
        .env("RUNS", RUNS.to_string())
        .env("GS", GS.to_string())
        .env("HITS", HITS.to_string())
        .env("STEPS", STEPS.to_string())
        .output()
        .expect("cannot run gdb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gdb failed on {remote}:\n{text}");
    Row {
        read: result(&text, "read_mib_s"),
        stepi: result(&text, "stepi_s"),
        hits: result(&text, "hits_s"),
        g: result(&text, "g_us"),
        lldb_read: None,
    }
}

/// lldb 14's Python is broken on Debian 12 (`lldb.embedded_interpreter`
/// is missing), so lldb's own packet log times the read: from its first
/// request for the range to the last reply (`log enable -T`), the fastest of
/// [`RUNS`] reads. `None` when lldb cannot attach.
fn lldb_read(image: &Path, remote: &str) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lldb.bin");
    let log = dir.path().join("lldb.log");
    let read = format!(
        "memory read --force --binary --outfile {} {READ_AT:#x} {:#x}",
        file.display(),
        READ_AT + READ_LEN
    );
    let mut cmd = Command::new("lldb");
    cmd.args(["--no-lldbinit", "--batch", "-o"])
        .arg(format!("target create {}", image.display()))
        .args(["-o", &format!("gdb-remote {remote}")])
        .args(["-o", &format!("log enable -T -f {} gdb-remote packets", log.display())]);
    for _ in 0..RUNS {
        cmd.args(["-o", &read]);
    }
    cmd.args(["-o", "process detach"]);
    let out = cmd.output().expect("cannot run lldb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("failed to get reply to handshake packet") {
        return None;
    }
    assert!(
        out.status.success() && text.contains("Process 1 detached"),
        "lldb on {remote}:\n{text}"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), READ_LEN, "lldb's read:\n{text}");
    // `SECONDS.NANOS <  LEN> send packet: $xADDR,...` / `read packet: ...`:
    // a read starts with a request for READ_AT and ends with the reply
    // after the last request inside the range.
    // Binary replies (`x`) make the log no UTF-8.
    let log = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let (x, m) = (format!("send packet: $x{READ_AT:x},"), format!("send packet: $m{READ_AT:x},"));
    let mut best = f64::MAX;
    let mut start: Option<f64> = None;
    let mut last_reply = None;
    for line in log.lines().filter(|l| !l.contains("history[")) {
        let Some(t) = line.split_whitespace().next().and_then(|t| t.parse::<f64>().ok()) else {
            continue;
        };
        if line.contains(&x) || line.contains(&m) {
            if let (Some(s), Some(e)) = (start, last_reply) {
                best = best.min(e - s);
            }
            start = Some(t);
            last_reply = None;
        } else if start.is_some() && line.contains("read packet: $") {
            last_reply = Some(t);
        } else if line.contains("send packet: $D") || line.contains("send packet: $vCont") {
            break;
        }
    }
    if let (Some(s), Some(e)) = (start, last_reply) {
        best = best.min(e - s);
    }
    assert!(best < f64::MAX, "no read in lldb's packet log:\n{log}");
    Some(READ_LEN as f64 / best / 1048576.0)
}

/// lldb's read, tried up to three times: lldb 14 fails its handshake with
/// QEMU 7.2's gdbstub about every other time, and QEMU then leaves the VM
/// stopped until a debugger attaches and detaches (gdb does that here).
fn lldb_read_retrying(image: &Path, remote: &str) -> Option<f64> {
    for _ in 0..3 {
        if let Some(r) = lldb_read(image, remote) {
            return Some(r);
        }
        let status = Command::new("gdb")
            .args(["-batch", "-nx", "-ex", &format!("target remote {remote}"), "-ex", "detach"])
            .output()
            .expect("cannot run gdb");
        assert!(status.status.success(), "gdb could not resume the VM on {remote}");
    }
    None
}

/// The best of [`ROUNDS`] runs of each measurement: the machine's noise
/// only ever slows a run down.
fn measure(image: &Path, remote: &str) -> Row {
    let mut best = gdb_measure(image, remote);
    best.lldb_read = lldb_read_retrying(image, remote);
    for _ in 1..ROUNDS {
        let r = gdb_measure(image, remote);
        best.read = best.read.max(r.read);
        best.stepi = best.stepi.max(r.stepi);
        best.hits = best.hits.max(r.hits);
        best.g = best.g.min(r.g);
        best.lldb_read = match (best.lldb_read, lldb_read_retrying(image, remote)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    best
}

/// Whether to measure `path`: all by default, or those named in
/// `UKDB_BENCH_PATHS` (comma-separated; the anchor always runs).
fn wanted(path: &str) -> bool {
    path == "qemu-gdbstub"
        || std::env::var("UKDB_BENCH_PATHS").map_or(true, |v| v.split(',').any(|p| p == path))
}

/// The row of `path`, if it was measured.
fn row<'a>(rows: &'a [(&str, Row)], path: &str) -> Option<&'a Row> {
    rows.iter().find(|(name, _)| *name == path).map(|(_, r)| r)
}

fn main() {
    let a = artifacts();
    let mut rows: Vec<(&str, Row)> = Vec::new();

    let qemu_port = free_port();
    let gdbstub = format!("tcp:127.0.0.1:{qemu_port}");
    let vm = NetVm::boot("q35", &a.image, "", &["-gdb", &gdbstub]);
    vm.wait_stub_ready();
    eprintln!("transports bench: qemu-gdbstub");
    rows.push(("qemu-gdbstub", measure(&a.image, &format!("127.0.0.1:{qemu_port}"))));
    if wanted("net") {
        eprintln!("transports bench: net ({})", vm.debug);
        rows.push(("net", measure(&a.image, &vm.debug)));
    }
    if wanted("net+bridge") {
        let bridge = Bridge::start_net(&vm.debug);
        eprintln!("transports bench: net+bridge ({})", bridge.addr);
        rows.push(("net+bridge", measure(&a.image, &bridge.addr)));
    }
    drop(vm);

    // The same VM configuration (NIC included), the stub told to stay on
    // the serial line; nothing else reads the serial socket.
    let nic = format!("{},netdev=n0", nic_device("q35"));
    let extra = ["-netdev", "user,id=n0", "-device", &nic, "-gdb", &gdbstub];
    if wanted("serial+bridge") {
        let vm = Vm::boot_with("q35", &a.image, "ukdb.net=off", &extra);
        let serial = Bridge::start(&vm);
        eprintln!("transports bench: serial+bridge ({})", serial.addr);
        rows.push(("serial+bridge", measure(&a.image, &serial.addr)));
    }

    // The same again with the stub on the Xen console ring, in an
    // ivshmem-plain device's shared memory served by `ukdb xen-model`.
    if wanted("xen-ring+bridge") {
        let xvm = ukdb_tests::xen::XenVm::boot("ukdb.net=off", None, &extra);
        let ring = xvm.bridge();
        eprintln!("transports bench: xen-ring+bridge ({})", ring.addr);
        rows.push(("xen-ring+bridge", measure(&a.image, &ring.addr)));
    }

    let anchor = rows[0].1.clone();
    let mut md = String::from(
        "## gdb and lldb per transport (q35, TCG, one VM configuration)\n\n\
         | path | gdb read 1 MiB (MiB/s) | lldb read 1 MiB (MiB/s) | gdb stepi/s | bp hits/s | `g` (µs) |\n\
         |---|---|---|---|---|---|\n",
    );
    for (name, r) in &rows {
        md.push_str(&format!(
            "| {name} | {:.2} ({:.2}x) | {} | {:.0} ({:.2}x) | {:.0} ({:.2}x) | {:.0} ({:.2}x) |\n",
            r.read,
            r.read / anchor.read,
            match (r.lldb_read, anchor.lldb_read) {
                (Some(x), Some(q)) => format!("{x:.2} ({:.2}x)", x / q),
                (Some(x), None) => format!("{x:.2}"),
                (None, _) => "lldb cannot attach".to_string(),
            },
            r.stepi,
            r.stepi / anchor.stepi,
            r.hits,
            r.hits / anchor.hits,
            r.g,
            anchor.g / r.g,
        ));
    }
    if let (Some(net), Some(through)) = (row(&rows, "net"), row(&rows, "net+bridge")) {
        md.push_str(&format!(
            "\nRatios are to qemu-gdbstub (for `g`: its latency over ours, higher is faster). \
             Bridge overhead on net: read {:+.1}%, stepi {:+.1}%, hits {:+.1}%, g {:+.1}%.\n",
            (net.read / through.read - 1.0) * 100.0,
            (net.stepi / through.stepi - 1.0) * 100.0,
            (net.hits / through.hits - 1.0) * 100.0,
            (through.g / net.g - 1.0) * 100.0,
        ));
    }
    if let (Some(serial), Some(ring)) = (row(&rows, "serial+bridge"), row(&rows, "xen-ring+bridge"))
    {
        md.push_str(&format!(
            "\nThe Xen console ring (model) against the serial line: read {:.1}x, stepi {:.1}x, \
             hits {:.1}x, g {:.1}x.\n",
            ring.read / serial.read,
            ring.stepi / serial.stepi,
            ring.hits / serial.hits,
            serial.g / ring.g,
        ));
    }
    println!("\n{md}");
    let path = root().join("target/bench-transports.md");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, md).unwrap();
    println!("written to {}", path.display());
}
