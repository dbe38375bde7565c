//! `ukdb core`: a live snapshot over the network stub, over the serial line
//! (`--target`) and through a running bridge (`--connect`), checked against
//! what a live gdb reads at the same stop, and the unikernel left as it was
//! found (or resumed with `--resume`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use ukdb_tests::*;

/// `ukdb core ARGS -o DIR/NAME`: the core's path and what ukdb printed on
/// stderr; panics unless it succeeded.
fn ukdb_core(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, String) {
    let core = dir.join(name);
    let mut child = Command::new(&artifacts().ukdb)
        .arg("core")
        .args(args)
        .arg("-o")
        .arg(&core)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start ukdb core");
    let stdout = Arc::new(Output::default());
    let stderr = Arc::new(Output::default());
    stdout.spawn_reader(child.stdout.take().unwrap());
    stderr.spawn_reader(child.stderr.take().unwrap());
    let mut proc = Proc(child);
    let status = proc.wait_exit_or(|| format!("ukdb core did not finish:\n{}", stderr.text()));
    let err = stderr.wait_closed("ukdb core's stderr");
    assert!(status.success(), "ukdb core failed ({status}):\n{err}");
    assert!(core.exists(), "no core at {}:\n{err}", core.display());
    // Nothing but the core in its directory: the temporary file is gone.
    let partial: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
    (core, err)
}

/// The summary line's figures: (MiB read, MiB of RAM).
fn summary(err: &str, core: &Path) -> (f64, f64) {
    let line = err
        .lines()
        .find(|l| l.starts_with(&format!("ukdb core: wrote {}: ", core.display())))
        .unwrap_or_else(|| panic!("no summary line:\n{err}"));
    let read: f64 = capture(line, r": ([0-9.]+) MiB of ");
    let ram: f64 = capture(line, r" of ([0-9.]+) MiB RAM in ");
    (read, ram)
}

/// What `object` sees in a core: the notes' (name, type) and the
/// `PT_LOAD`s' (vaddr, filesz, memsz).
/// A core's notes (name, type) and loads (vaddr, filesz, memsz).
type Layout = (Vec<(String, u32)>, Vec<(u64, u64, u64)>);

fn core_layout(core: &Path) -> Layout {
    use object::read::elf::{ElfFile64, ProgramHeader};
    use object::Endianness;
    let data = std::fs::read(core).unwrap();
    let file = ElfFile64::<Endianness>::parse(&*data).unwrap();
    let endian = file.endian();
    assert_eq!(file.elf_header().e_type.get(endian), object::elf::ET_CORE);
    assert_eq!(file.elf_header().e_machine.get(endian), object::elf::EM_X86_64);
    let mut notes = Vec::new();
    let mut loads = Vec::new();
    for ph in file.elf_program_headers() {
        match ph.p_type(endian) {
            object::elf::PT_NOTE => {
                let mut it = ph.notes(endian, &*data).unwrap().unwrap();
                while let Some(note) = it.next().unwrap() {
                    notes.push((
                        String::from_utf8_lossy(note.name()).into_owned(),
                        note.n_type(endian),
                    ));
                }
            }
            object::elf::PT_LOAD => {
                loads.push((ph.p_vaddr(endian), ph.p_filesz(endian), ph.p_memsz(endian)))
            }
            _ => {}
        }
    }
    (notes, loads)
}

fn assert_core_layout(core: &Path, addrs: &[u64]) {
    let (notes, loads) = core_layout(core);
    for want in [("CORE", 1), ("CORE", 2), ("GNU", 3)] {
        let found = notes.iter().any(|(n, t)| n == want.0 && *t == want.1);
        // The GNU build-id note is there only when the image has one.
        assert!(found || want.0 == "GNU", "no {want:?} note in {notes:?}");
    }
    assert!(notes.iter().any(|(n, _)| n == "UKDB"), "no UKDB note in {notes:?}");
    for &addr in addrs {
        assert!(
            loads.iter().any(|&(v, f, _)| v <= addr && addr < v + f),
            "{addr:#x} is not in a PT_LOAD with file data: {loads:x?}"
        );
    }
}

/// gdb commands that read what a core and a live session must agree on,
/// with the memory dumped to `DIR/PREFIX-*.bin`.
fn probe_cmds(dir: &Path, prefix: &str, stack_top: u64, data: u64) -> Vec<String> {
    let mut cmds: Vec<String> = vec![
        "info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip eflags cs ss"
            .into(),
        "info registers fs_base gs_base".into(),
        "p ukdemo::app::TICKS".into(),
        "p/x $xmm0.uint128".into(),
        "p/x $mxcsr".into(),
        "bt 3".into(),
    ];
    // The data range: the two pages from TICKS's on (the next one holds the
    // NIC's DMA pool, which a new TCP connection changes).
    // One page per dump: gdb 13 reads zeros for part of a range that spans
    // an all-zero PT_LOAD (no file data) and the next one.
    for (what, start, pages) in [("stack", stack_top - 0x10000, 16), ("data", data, 2)] {
        for i in 0..pages {
            let file = dir.join(format!("{prefix}-{what}-{i}.bin"));
            let at = start + i * 0x1000;
            cmds.push(format!("dump binary memory {} {at:#x} {:#x}", file.display(), at + 0x1000));
        }
    }
    cmds
}

/// The pages a probe dumped, one after another.
fn dumped(dir: &Path, prefix: &str, what: &str) -> Vec<u8> {
    let pages = if what == "stack" { 16 } else { 2 };
    (0..pages)
        .flat_map(|i| std::fs::read(dir.join(format!("{prefix}-{what}-{i}.bin"))).unwrap())
        .collect()
}

/// The lines of a gdb transcript from the first `rax` on (what the probe
/// printed), without the banner that differs between a core and a remote.
fn probed(out: &str) -> String {
    let at = out.find("\nrax ").map(|i| i + 1).unwrap_or_else(|| panic!("no registers:\n{out}"));
    // gdb 13 warns that a core "may not match" an image whose name is not
    // the core's (the core has no NT_FILE); that is not what is compared.
    out[at..]
        .lines()
        .filter(|l| !l.starts_with("[Inferior") && !l.is_empty())
        .filter(|l| !l.starts_with("warning: core file may not match"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn gdb_core(image: &Path, core: &Path, cmds: &[String]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx", "-ex", "set pagination off"]).arg(image).arg(core);
    for c in cmds {
        cmd.args(["-ex", c]);
    }
    let out = cmd.output().expect("cannot run gdb");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "gdb on the core failed:\n{text}");
    text
}

fn compare_with_live(image: &Path, core: &Path, remote: &str, dir: &Path, detach: &str) {
    let stack_top = symbol_address(image, "boot_stack_top");
    let data = symbols(image)
        .into_iter()
        .find(|(n, _)| n.contains("3app5TICKS"))
        .expect("the symbol of ukdemo::app::TICKS")
        .1
        & !0xfff;
    assert_core_layout(core, &[stack_top - 8, data]);
    let from_core = gdb_core(image, core, &probe_cmds(dir, "core", stack_top, data));
    let mut live_cmds = probe_cmds(dir, "live", stack_top, data);
    live_cmds.push(detach.into());
    let refs: Vec<&str> = live_cmds.iter().map(String::as_str).collect();
    let live = Debugger::gdb(image, remote, &refs).finish();
    assert_eq!(probed(&from_core), probed(&live), "core:\n{from_core}\nlive:\n{live}");
    for what in ["stack", "data"] {
        let c = dumped(dir, "core", what);
        let l = dumped(dir, "live", what);
        assert_eq!(c.len(), l.len(), "{what}");
        let diff: Vec<usize> = (0..c.len()).filter(|&i| c[i] != l[i]).collect();
        assert!(
            diff.is_empty(),
            "the {what} range differs between the core and the live unikernel at {} offsets, \
             {:#x?} .. {:#x?}; core {:02x?} live {:02x?}",
            diff.len(),
            diff.first(),
            diff.last(),
            &c[diff[0]..(diff[0] + 16).min(c.len())],
            &l[diff[0]..(diff[0] + 16).min(l.len())]
        );
        if what == "stack" {
            assert!(c.iter().any(|&b| b != 0), "an empty stack");
        }
    }
}

/// Over the network stub: a unikernel held in a panic. The core agrees
/// with a live gdb afterwards (the default leaves it held there), and gdb
/// on the core shows the panic site.
#[test]
fn net_core_of_a_panic_equals_what_a_live_gdb_reads() {
    let a = artifacts();
    let vm = NetVm::boot("q35", &a.image, "ukdemo.panic=7", &[]);
    vm.console.wait("the panic", |t| t.contains("tick 7 asked to panic\n"));
    let dir = tempfile::tempdir().unwrap();
    let image = a.image.to_str().unwrap();
    let (core, err) =
        ukdb_core(dir.path(), "net.core", &["--connect", &vm.debug, "--image", image]);
    let (read, ram) = summary(&err, &core);
    assert!(read > 0.1 && read < 16.0, "{err}");
    assert!(ram >= 64.0, "{err}");
    assert!(err.contains("reason: panic: panicked at src/app.rs:"), "{err}");
    // gdb on the core alone: the panic with its site.
    let bt = gdb_core(&a.image, &core, &["bt".into()]);
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    assert!(
        bt.contains(&format!(" in ukdemo::app::tick (n=7) at src/app.rs:{panic_line}\n")),
        "{bt}"
    );
    // Live: the same stop (it was left held, and detaching keeps a panic).
    compare_with_live(&a.image, &core, &vm.debug, dir.path(), "detach");
}

/// Over the serial line (`--target`): the unikernel held by `ukdb.wait`
/// stays held by default (a second core shows the same stop, a live gdb
/// reads the same), and `--resume` lets it go: the console then runs on.
#[test]
fn serial_target_leaves_it_held_and_resume_lets_it_run() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.wait");
    let dir = tempfile::tempdir().unwrap();
    let target = format!("unix:{}", vm.sock.display());
    // An attach that comes before the unikernel reaches its wait stops it
    // wherever it is (still booting), and ending that session lets it go
    // on to the wait: take cores until one shows the wait (once a race of
    // this test under load).
    let deadline = std::time::Instant::now() + ukdb_tests::DEADLINE;
    let first = loop {
        let (core, err) = ukdb_core(dir.path(), "first.core", &["--target", &target]);
        assert!(err.contains("reason: "), "{err}");
        if err.contains("reason: waiting for a debugger at boot (ukdb.wait)") {
            break core;
        }
        assert!(std::time::Instant::now() < deadline, "never held in the wait: {err}");
    };
    let (second, _) = ukdb_core(dir.path(), "second.core", &["--target", &target]);
    let rip = |core: &Path| {
        let out = gdb_core(&a.image, core, &["p/x $rip".into(), "p ukdemo::app::TICKS".into()]);
        out.lines().rev().take(2).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(rip(&first), rip(&second), "the unikernel moved between two cores");
    // A live gdb at the same stop; `disconnect` leaves it held.
    {
        let bridge = Bridge::start(&vm);
        compare_with_live(&a.image, &first, &bridge.addr, dir.path(), "disconnect");
    }
    let (_, err) = ukdb_core(dir.path(), "resumed.core", &["--target", &target, "--resume"]);
    assert!(err.contains("ukdb core: wrote "), "{err}");
    let bridge = Bridge::start(&vm);
    bridge.assert_runs_gap_free(5, "after --resume");
}

/// Through a running bridge (`--connect` to its debugger port): a running
/// unikernel is stopped, snapshotted and left running; the console goes on
/// without a gap.
#[test]
fn bridge_connect_snapshot_of_a_running_unikernel_keeps_the_console_gap_free() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let mut bridge = Bridge::start(&vm);
    bridge.wait_more_lines(3);
    let dir = tempfile::tempdir().unwrap();
    let (core, err) = ukdb_core(dir.path(), "bridge.core", &["--connect", &bridge.addr]);
    let ticks = gdb_core(&a.image, &core, &["p ukdemo::app::TICKS".into()]);
    let in_core: u64 = capture(&ticks, r"\$1 = (\d+)");
    assert!(in_core > 0, "{ticks}");
    assert!(err.contains("reason: "), "{err}");
    bridge.assert_runs_gap_free(5, "after the snapshot");
    bridge.assert_up("after the snapshot");
    let lines = app_lines(&bridge.console.text());
    assert!(lines.last().unwrap().1 > in_core, "the ticks did not go on: {lines:?}");
}

/// `ukdb core ARGS -o DIR/NAME` that must fail: its exit code and stderr;
/// panics if it wrote anything into `dir`.
fn ukdb_core_fails(dir: &Path, name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(&artifacts().ukdb)
        .arg("core")
        .args(args)
        .arg("-o")
        .arg(dir.join(name))
        .stdin(Stdio::null())
        .output()
        .expect("cannot start ukdb core");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).collect();
    assert!(
        left.iter().all(
            |e| e.file_name() != name && !e.file_name().to_string_lossy().contains(".partial-")
        ),
        "written: {left:?}\n{err}"
    );
    (out.status.code().unwrap_or(-1), err)
}

const FULL_KEY: &str = "00112233445566778899aabbccddeeff";
const RO_KEY: &str = "0badc0de";

fn key_files(dir: &Path) -> (String, String, String) {
    let write = |name: &str, key: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        path.display().to_string()
    };
    (write("full.key", FULL_KEY), write("ro.key", RO_KEY), write("wrong.key", "ffff"))
}

/// A locked network stub (a key, no `ukdb.net=`: it listens): `--key-file`
/// with the read-only key (the default tier) or the full key with `--tier
/// full` takes the core; a wrong key, or a full key for the read-only
/// tier, is an error naming the tier, exit 1, nothing written.
#[test]
fn key_files_for_a_locked_network_stub() {
    let a = artifacts();
    let append = format!("ukdb.key={FULL_KEY} ukdb.rokey={RO_KEY}");
    let vm = NetVm::boot_exact("q35", &a.image, &append, &[], 1234);
    vm.wait_stub_ready();
    let keys = tempfile::tempdir().unwrap();
    let (full, ro, wrong) = key_files(keys.path());
    let dir = tempfile::tempdir().unwrap();
    let (core, err) =
        ukdb_core(dir.path(), "ro.core", &["--connect", &vm.debug, "--key-file", &ro]);
    summary(&err, &core);
    let bt = gdb_core(&a.image, &core, &["p ukdemo::app::TICKS > 0".into()]);
    assert!(bt.contains("$1 = true"), "{bt}");
    let (core, err) = ukdb_core(
        dir.path(),
        "full.core",
        &["--connect", &vm.debug, "--key-file", &full, "--tier", "full"],
    );
    summary(&err, &core);
    for (key, tier, name) in [(&wrong, "full", "wrong.core"), (&full, "ro", "mixed.core")] {
        let (code, err) = ukdb_core_fails(
            dir.path(),
            name,
            &["--connect", &vm.debug, "--key-file", key, "--tier", tier],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("the stub refused the key for the {tier} tier")), "{err}");
        assert!(err.contains("no core written"), "{err}");
    }
    // No key: the locked stub answers no read.
    let (code, err) = ukdb_core_fails(dir.path(), "nokey.core", &["--connect", &vm.debug]);
    assert_ne!(code, 0, "{err}");
    // The unikernel runs on.
    let have = app_lines(&vm.console.text()).len();
    vm.console.wait("more app lines", |t| app_lines(t).len() >= have + 2);
}

/// A locked serial stub (`--target`): the read-only key takes the core
/// through the in-process bridge; a wrong one is refused, nothing written.
#[test]
fn key_files_for_a_locked_serial_stub() {
    let a = artifacts();
    let append = format!("ukdb.key={FULL_KEY} ukdb.rokey={RO_KEY}");
    let vm = Vm::boot("q35", &a.image, &append);
    let keys = tempfile::tempdir().unwrap();
    let (_, ro, wrong) = key_files(keys.path());
    let dir = tempfile::tempdir().unwrap();
    let target = format!("unix:{}", vm.sock.display());
    let (code, err) =
        ukdb_core_fails(dir.path(), "wrong.core", &["--target", &target, "--key-file", &wrong]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the stub refused the key for the ro tier"), "{err}");
    let (core, err) = ukdb_core(dir.path(), "ro.core", &["--target", &target, "--key-file", &ro]);
    summary(&err, &core);
    let bridge = Bridge::start_with(&vm, &["--key-file", &ro, "--tier", "ro"]);
    bridge.assert_runs_gap_free(3, "after the cores");
}
