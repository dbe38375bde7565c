//! The example's PVH entry relies on the PVH boot contract only
//! (xen/docs/misc/pvh.pandoc): `ebx` holds `hvm_start_info`, CR0 has PE,
//! CR4 is clear, the segments are flat, and *every other register is
//! unspecified*. QEMU's PVH option ROM enters with a usable stack pointer;
//! Cloud Hypervisor and Firecracker enter with `esp = 0`, where a push
//! after paging is on faults with no IDT: a triple fault (issue 10).
//!
//! These tests stop QEMU at the entry point with QEMU's own gdbstub, poison
//! what the contract leaves unspecified the way those VMMs do (`esp = 0`)
//! and worse (garbage in the other general-purpose registers, the
//! direction flag set), and check that the image still boots.

use std::path::Path;
use ukdb_tests::capture::Capture;
use ukdb_tests::*;

/// Boots `image` stopped at reset, poisons the state at the PVH entry
/// through QEMU's gdbstub, lets it run, and returns the console once the
/// whole boot line has appeared (or the serial line closed: QEMU runs with
/// `-no-reboot`, so a triple fault ends it).
fn boot_poisoned(image: &Path, booted: &str) -> String {
    let port = free_port();
    let gdbstub = format!("tcp:127.0.0.1:{port}");
    let vm = Vm::boot_with("q35", image, "ukdemo.rate=50", &["-S", "-gdb", &gdbstub]);
    let console = Capture::spawn(connect_unix(&vm.sock));
    let entry = symbol_address(image, "_start32");
    let gdb = Debugger::gdb(
        image,
        &format!("127.0.0.1:{port}"),
        &[
            // A hardware breakpoint: the loader copies the image over a
            // software one.
            &format!("hbreak *{entry:#x}"),
            "continue",
            "printf \"entry rip=%#x ebx=%#x\\n\", $pc, $rbx",
            "set $rsp = 0",
            "set $rax = 0xdeadbeef",
            "set $rcx = 0xdeadbeef",
            "set $rdx = 0xdeadbeef",
            "set $rsi = 0xdeadbeef",
            "set $rdi = 0xdeadbeef",
            "set $rbp = 0xdeadbeef",
            // DF set; IF stays clear, as the contract promises.
            "set $eflags = 0x402",
            "detach",
        ],
    );
    let transcript = gdb.finish();
    assert!(
        transcript.contains(&format!("entry rip={entry:#x} ebx=0x")),
        "gdb did not stop at the PVH entry:\n{transcript}"
    );
    // The whole boot line (it goes on with the clock and the command line):
    // text that stops inside it would fail the callers' checks by chance.
    let whole_line = |text: &str| text.find(booted).is_some_and(|at| text[at..].contains('\n'));
    let bytes = console.wait(&format!("{booted:?} or the end of the line"), |b, closed| {
        closed || whole_line(&String::from_utf8_lossy(b))
    });
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        whole_line(&text),
        "no {booted:?} after a PVH entry with esp = 0 (QEMU log: {}):\n{text}",
        std::fs::read_to_string(&vm.log).unwrap_or_default()
    );
    text
}

#[test]
fn stub_image_boots_with_unspecified_entry_state() {
    let console = boot_poisoned(&artifacts().image, "ukdemo: booted, stub enabled");
    assert!(console.contains("cmdline 'ukdemo.rate=50'"), "{console}");
}

#[test]
fn production_image_boots_with_unspecified_entry_state() {
    boot_poisoned(&artifacts().production, "ukdemo: booted, stub absent");
}
