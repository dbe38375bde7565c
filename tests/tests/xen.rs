//! The Xen console ring in a real VM, through the backend model: gdb →
//! `ukdb bridge` → `ukdb xen-model` → the ring in an ivshmem-plain device's
//! shared memory → the stub in the example unikernel (`ukdb.xenring=ivshmem`).
//! What only real Xen runs (CPUID detection, the hypercall page,
//! `HVMOP_get_param`, `EVTCHNOP_send`) is not covered here.

use nix::sys::signal::Signal;
use ukdb_tests::xen::{fake_xen_tools, XenVm};
use ukdb_tests::*;

/// Every console line is the app's, the stub's, or the boot banner, and
/// the app's lines are numbered without a gap from 0.
fn assert_console_intact(console: &str) {
    for line in console.lines() {
        let known =
            line.starts_with("line ") || line.starts_with("ukdb: ") || line.starts_with("ukdemo: ");
        assert!(known && !line.contains('\u{10}'), "foreign console line {line:?} in:\n{console}");
    }
    let numbers: Vec<u64> = app_lines(console).iter().map(|&(n, _)| n).collect();
    assert!(!numbers.is_empty(), "no app lines:\n{console}");
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "{console}");
}

#[test]
fn break_bt_print_stepi_ctrl_c_detach_and_reattach_over_the_ring() {
    let a = artifacts();
    let mut xvm = XenVm::boot("", None, &[]);
    let mut bridge = xvm.bridge();
    bridge.wait_more_lines(2);
    let console = bridge.console.text();
    assert!(
        console.contains("ukdb: stub ready on xen-ring-model, breakpoints use int3\n"),
        "{console}"
    );
    let tick_line = line_of("src/app.rs", "write_volatile(t)");
    let gdb = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break ukdemo::app::tick",
            "continue",
            "bt 2",
            "p n",
            "stepi",
            "delete",
            "continue",
            "bt 1",
            "detach",
        ],
    );
    // Interrupt once the unikernel runs freely again.
    gdb.out.wait("stepi", |t| t.contains("if n == panic_at"));
    bridge.wait_more_lines(2);
    gdb.proc.signal(Signal::SIGINT);
    let out = gdb.finish();
    let n = hit_n(&out);
    let expected = format!(
        "{brk}{hit}\
         #0  ukdemo::app::tick (n={n}) at src/app.rs:{tick_line}\n\
         #1  {{hex}} in ukdemo::app::run () at src/app.rs:{call_line}\n\
         $1 = {n}\n\
         {panic_check}\t    if n == panic_at {{\n\
         {sigint}\
         [Inferior 1 (process 1) detached]\n",
        sigint = sigint_in_run(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
        call_line = line_of("src/app.rs", "tick(n);"),
        panic_check = line_of("src/app.rs", "if n == panic_at"),
    );
    assert_transcript(from_break(&out), &expected);
    bridge.wait_more_lines(2);
    // A second session on the same bridge.
    let m = hit_n(&break_print_detach(&a.image, &bridge.addr));
    assert!(m > n, "{m} after {n}");
    bridge.wait_more_lines(3);
    bridge.assert_up("after two sessions");
    xvm.assert_model_up();
    assert_console_intact(&bridge.console.text());
}

/// Reads `len` bytes at `addr` with gdb's `dump binary memory` from `remote`.
fn gdb_dump(remote: &str, addr: u64, len: u64, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.bin");
    let dump = format!("dump binary memory {} {addr:#x} {:#x}", file.display(), addr + len);
    let mut cmds: Vec<&str> = extra.to_vec();
    cmds.push(&dump);
    cmds.push("detach");
    let out = Debugger::gdb(&artifacts().image, remote, &cmds).finish();
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("no dump ({e}):\n{out}"));
    assert_eq!(bytes.len() as u64, len, "{out}");
    bytes
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

/// Writes a pattern at `at` over the ring (`restore`), reads it back, and
/// returns what was read.
fn write_and_read_back(remote: &str, at: u64, len: usize) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let pattern = pattern(len);
    let file = dir.path().join("pattern.bin");
    std::fs::write(&file, &pattern).unwrap();
    let restore = format!("restore {} binary {at:#x}", file.display());
    (gdb_dump(remote, at, len as u64, &[&restore]), pattern)
}

fn differ(x: &[u8], y: &[u8]) -> Option<usize> {
    x.iter().zip(y).position(|(p, q)| p != q)
}

#[test]
fn a_mebibyte_over_the_ring_equals_qemus_gdbstub() {
    let qemu_port = free_port();
    let gdbstub = format!("tcp:127.0.0.1:{qemu_port}");
    let xvm = XenVm::boot("", None, &["-gdb", &gdbstub]);
    let bridge = xvm.bridge();
    bridge.wait_more_lines(1);
    // Free RAM above the image, which nothing else writes.
    let at: u64 = 0x100_0000;
    let started = std::time::Instant::now();
    let (ours, pattern) = write_and_read_back(&bridge.addr, at, 1 << 20);
    eprintln!("1 MiB written and read back over the ring in {:?}", started.elapsed());
    let theirs = gdb_dump(&format!("127.0.0.1:{qemu_port}"), at, 1 << 20, &[]);
    assert_eq!(differ(&ours, &pattern), None, "the stub read back something else");
    assert_eq!(differ(&ours, &theirs), None, "the stub and QEMU's gdbstub read differently");
    bridge.wait_more_lines(2);
    assert_console_intact(&bridge.console.text());
    drop(bridge);
    // The writes came faster than the stub took them: the model filled
    // `in` to the brim, and not a byte was lost (the read back equals).
    let (input, brim) = xvm.after_client();
    eprintln!("the model: {input} bytes into the guest, `in` filled to the brim {brim} times");
    assert!(input > 1 << 20, "{input} bytes in");
    assert!(brim > 0, "`in` never filled to the brim");
}

#[test]
fn the_console_is_gap_free_without_a_debugger() {
    let xvm = XenVm::boot("ukdemo.rate=50", None, &[]);
    let bridge = xvm.bridge();
    bridge.assert_runs_gap_free(100, "no debugger");
    assert_console_intact(&bridge.console.text());
}

#[test]
fn a_slow_backend_in_odd_chunks_loses_nothing() {
    let xvm = XenVm::boot("ukdemo.rate=50", Some(61), &[]);
    let bridge = xvm.bridge();
    bridge.wait_more_lines(5);
    let started = std::time::Instant::now();
    let (ours, pattern) = write_and_read_back(&bridge.addr, 0x100_0000, 256 << 10);
    eprintln!("256 KiB written and read back, --slow 61, in {:?}", started.elapsed());
    assert_eq!(differ(&ours, &pattern), None, "the stub read back something else");
    break_print_detach(&artifacts().image, &bridge.addr);
    bridge.assert_runs_gap_free(50, "slow backend");
    assert_console_intact(&bridge.console.text());
}

#[test]
fn a_panic_stops_into_gdb_over_the_ring() {
    let xvm = XenVm::boot("ukdb.wait ukdemo.panic=2", None, &[]);
    let bridge = xvm.bridge();
    let out = Debugger::gdb(
        &artifacts().image,
        &bridge.addr,
        &["continue", "bt", "monitor why", "continue", "detach"],
    )
    .finish();
    assert_transcript(&out, &panic_stop_transcript());
    assert!(bridge.console.text().contains("ukdemo: panicked at src/app.rs"));
}

/// The whole of `--target xen:NAME` as on a Xen host, with only xenstore
/// faked: the model serves the ring on a pty as xenconsoled does, a fake
/// `xl`/`xenstore-read` name that pty, and `ukdb bridge` and `ukdb core`
/// find it from the domain's name.
#[test]
fn xen_target_finds_the_console_pty_for_bridge_and_core() {
    let mut xvm = XenVm::boot_pty("");
    let tty = xvm.target.strip_prefix("pty:").unwrap().to_owned();
    let (_tools, path) = fake_xen_tools("ukdemo", 7, &tty);
    let a = artifacts();
    let bridge = Bridge::start_target("xen:ukdemo", &[("PATH", &path)]);
    assert!(bridge.stderr.text().contains(&format!("xen:ukdemo: console is {tty}")));
    bridge.wait_more_lines(2);
    break_print_detach(&a.image, &bridge.addr);
    bridge.assert_runs_gap_free(3, "bridge on xen:ukdemo");
    drop(bridge);

    // `ukdb core` alone on the domain's console.
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("uk.core");
    let out = std::process::Command::new(&a.ukdb)
        .args(["core", "--target", "xen:ukdemo", "-o"])
        .arg(&core)
        .env("PATH", &path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ukdb core failed:\n{err}");
    assert!(err.contains(&format!("ukdb core: wrote {}: ", core.display())), "{err}");
    let bt = std::process::Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "bt 1"])
        .arg(&a.image)
        .arg(&core)
        .output()
        .unwrap();
    let bt = String::from_utf8_lossy(&bt.stdout);
    assert!(bt.contains("#0  ") && bt.contains(" at src/"), "gdb on the core:\n{bt}");
    xvm.assert_model_up();
}

/// Without a ring, the example says why and the stub stays on the UART.
fn assert_uart_fallback(append: &str, why: &str) {
    let vm = Vm::boot("q35", &artifacts().image, append);
    let bridge = Bridge::start(&vm);
    let message = format!("ukdemo: no Xen console ring ({why}): the stub stays on COM1\n");
    bridge.console.wait("the fallback message", |t| t.contains(&message));
    bridge.console.wait("the UART stub", |t| t.contains("ukdb: stub ready on serial,"));
    break_print_detach(&artifacts().image, &bridge.addr);
    bridge.assert_runs_gap_free(3, append);
}

#[test]
fn without_the_device_the_stub_stays_on_the_uart() {
    assert_uart_fallback("ukdb.xenring=ivshmem", "no ivshmem-plain device (1af4:1110)");
}

/// `ukdb.xenring=xen` off Xen: the CPUID scan finds no Xen leaves (QEMU's
/// TCG has none), and the stub stays on the UART.
#[test]
fn xen_ring_off_xen_keeps_the_uart() {
    assert_uart_fallback("ukdb.xenring=xen", "not running on Xen");
}
