//! Stops the unikernel makes itself: `ukdb.wait` at boot, a panic, a fault.

use std::sync::Arc;
use ukdb_tests::*;

#[test]
fn wait_stops_before_the_app_and_gdb_breaks_in_its_first_call() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.wait");
    let bridge = Bridge::start(&vm);
    bridge
        .console
        .wait("the wait message", |t| t.contains("ukdb: waiting for a debugger (ukdb.wait)\n"));
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "monitor why",
            "break ukdemo::app::tick",
            "continue",
            "p n",
            "p ukdemo::app::TICKS",
            "detach",
        ],
    )
    .finish();
    let line = line_of("src/app.rs", "write_volatile(t)");
    let run = line_of("src/main.rs", "app::run()");
    // Stopped in kmain, just before it calls the app.
    let expected = format!(
        "ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run}\n\
         {run}\t    app::run()\n\
         waiting for a debugger at boot (ukdb.wait)\n\
         Breakpoint 1 at {{hex}}: file src/app.rs, line {line}.\n\
         \n\
         Breakpoint 1, ukdemo::app::tick (n=0) at src/app.rs:{line}\n\
         {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n\
         $1 = 0\n\
         $2 = 0\n\
         [Inferior 1 (process 1) detached]\n"
    );
    assert_transcript(&out, &expected);
    // Nothing of the app ran before gdb let it go.
    let lines = bridge.wait_more_lines(2);
    assert_eq!(lines[0], (0, 1));
}

fn panic_backtrace(out: &str, n: u64) {
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    assert!(
        out.contains(&format!(" in ukdemo::app::tick (n={n}) at src/app.rs:{panic_line}\n")),
        "the panic site is not in the backtrace:\n{out}"
    );
}

#[test]
fn panic_stops_into_an_attached_gdb_with_the_message() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.wait ukdemo.panic=2");
    let bridge = Bridge::start(&vm);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &["continue", "bt", "monitor why", "continue", "detach"],
    )
    .finish();
    let expected = panic_stop_transcript();
    assert_transcript(&out, &expected);
    panic_backtrace(&out, 2);
    assert!(bridge.console.text().contains("ukdemo: panicked at src/app.rs"));
}

#[test]
fn gdb_attaching_after_a_panic_finds_it_stopped_there() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdemo.panic=1");
    let bridge = Bridge::start(&vm);
    bridge.console.wait("the panic", |t| t.contains("tick 1 asked to panic\n"));
    let out = Debugger::gdb(&a.image, &bridge.addr, &["bt", "monitor why", "detach"]).finish();
    panic_backtrace(&out, 1);
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    assert!(out.ends_with(&format!(
        "panic: panicked at src/app.rs:{panic_line}:9:\ntick 1 asked to panic\n[Inferior 1 (process 1) detached]\n"
    )));
    // Detached, it stays stopped in the panic for the next debugger.
    let out = Debugger::gdb(&a.image, &bridge.addr, &["monitor why", "detach"]).finish();
    assert!(out.contains("panic: panicked at"), "{out}");
}

#[test]
fn page_fault_stops_at_the_faulting_instruction() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.wait ukdemo.fault=1");
    let bridge = Bridge::start(&vm);
    let out = Debugger::gdb(&a.image, &bridge.addr, &["continue", "bt 2", "monitor why", "detach"])
        .finish();
    let line = line_of("src/app.rs", "null_mut::<u64>().write_volatile(n)");
    let expected = format!(
        "{{*}}\n\
         {{*}}\n\
         \n\
         Program received signal SIGSEGV, Segmentation fault.\n\
         ukdemo::app::tick (n=1) at src/app.rs:{line}\n\
         {line}\t        unsafe {{ core::ptr::null_mut::<u64>().write_volatile(n) }};\n\
         #0  ukdemo::app::tick (n=1) at src/app.rs:{line}\n\
         #1  {{hex}} in ukdemo::app::run () at src/app.rs:{call}\n\
         page fault (vector 14, error 0x2) at address 0x0\n\
         [Inferior 1 (process 1) detached]\n",
        call = line_of("src/app.rs", "tick(n);"),
    );
    assert_transcript(&out, &expected);
}

#[test]
fn a_breakpoint_in_code_the_stub_shares_does_not_break_the_panic_path() {
    // The panic message is formatted with core::fmt, like the app's console
    // lines; with a breakpoint there, every call traps into the stub (gdb
    // steps past it, ignoring the hits), including the stub's own
    // formatting of the message.
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.wait ukdemo.panic=0");
    let bridge = Bridge::start(&vm);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &["break core::fmt::write", "ignore 1 100000", "continue", "monitor why", "detach"],
    )
    .finish();
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    let expected = format!(
        "{{*}}\n\
         {{*}}\n\
         Breakpoint 1 at {{hex}}: file library/core/src/fmt/mod.rs, line {{n}}.\n\
         panicked at src/app.rs:{panic_line}:9:\n\
         tick 0 asked to panic\n\
         \n\
         Program received signal SIGABRT, Aborted.\n\
         {{*}}ukdb_stub::imp::api::on_panic{{*}}\n\
         {{*}}\n\
         panic: panicked at src/app.rs:{panic_line}:9:\n\
         tick 0 asked to panic\n\
         [Inferior 1 (process 1) detached]\n"
    );
    assert_transcript(&out, &expected);
    assert!(bridge.console.text().contains("ukdemo: panicked at src/app.rs"));
}

#[test]
fn a_corrupt_packet_does_not_release_the_boot_wait() {
    use std::io::Write;
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.wait");
    // Once it waits, a packet with a wrong checksum, straight onto the
    // serial line: the session ends on the protocol error, and the
    // unikernel keeps waiting.
    let mut sock = connect_unix(&vm.sock);
    let console = Arc::new(Output::default());
    console.spawn_reader(sock.try_clone().unwrap());
    console.wait("the wait", |t| t.contains("ukdb: waiting for a debugger (ukdb.wait)\n"));
    sock.write_all(b"$qSupported:multiprocess+#00").unwrap();
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    console.wait_closed("the raw console");
    drop(sock);
    let sock = vm.sock.display().to_string();
    let out =
        Debugger::gdb(&a.image, &sock, &["monitor why", "p ukdemo::app::TICKS", "detach"]).finish();
    let run = line_of("src/main.rs", "app::run()");
    let expected = format!(
        "ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run}\n\
         {run}\t    app::run()\n\
         waiting for a debugger at boot (ukdb.wait)\n\
         $1 = 0\n\
         [Inferior 1 (process 1) detached]\n"
    );
    assert_transcript(&out, &expected);
}
