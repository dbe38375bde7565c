//! gdb through `ukdb bridge`, against the example unikernel under QEMU (TCG).
//! Each test boots its own VM and asserts gdb's exact transcript; `{hex}`
//! and `{n}` stand for addresses and counts that vary from run to run, and
//! source lines are looked up in the example's source.

use nix::sys::signal::Signal;
use ukdb_tests::*;

/// The frame gdb prints when it attaches to the running unikernel: the idle
/// loop's call to `ukdb_stub::poll` returned into the TSC read.
fn attach_frame() -> String {
    let rdtsc = line_of("src/time.rs", "asm!(\"rdtsc\"");
    format!(
        "ukdemo::time::rdtsc () at src/time.rs:{rdtsc}\n\
         {rdtsc}\t        asm!(\"rdtsc\", out(\"eax\") lo, out(\"edx\") hi, options(nomem, nostack, preserves_flags))\n"
    )
}

/// Where gdb finds the unikernel when it attaches, in its idle loop
/// (`attach_frame`, the usual: the timer leaves polling to the loop when it
/// woke the `hlt`) or, when the timer interrupt came while the loop was
/// awake (printing a line; more often on a loaded machine), in the timer
/// handler's poll. The second is rewritten to the first, so a transcript
/// asserts one of the two exactly.
fn attach_normalised(out: &str) -> String {
    let poll = line_of("../../stub/src/imp/api.rs", "soft_entry(Why::Poll as u64)");
    let mut lines = out.splitn(3, '\n');
    let (first, second, rest) =
        (lines.next().unwrap_or(""), lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let in_poll = first.starts_with("0x")
        && first
            .ends_with(&format!(" in ukdb_stub::imp::api::poll () at {}:{poll}", stub_api_path()))
        && second.starts_with(&format!("{poll}\t"));
    if in_poll {
        format!("{}{rest}", attach_frame())
    } else {
        out.to_owned()
    }
}

/// `stub/src/imp/api.rs` as gdb names it (an absolute path: the stub is
/// another crate).
fn stub_api_path() -> String {
    root().join("stub/src/imp/api.rs").display().to_string()
}

/// [`assert_transcript`] on a transcript that starts at the attach stop.
fn assert_attached(out: &str, expected: &str) {
    assert_transcript(&attach_normalised(out), expected);
}

#[test]
fn break_at_tick_backtrace_registers_memory() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    bridge.wait_more_lines(1);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break ukdemo::app::tick",
            "continue",
            "bt",
            "info registers rip",
            "p n",
            "p ukdemo::app::TICKS",
            "x/4gx $rsp",
            "info symbol $pc",
            "detach",
        ],
    )
    .finish();
    let n = hit_n(&out);
    let bp: String = capture(&out, r"Breakpoint 1 at (0x[0-9a-f]+):");
    let expected = format!(
        "{attach}{brk}{hit}\
         #0  ukdemo::app::tick (n={n}) at src/app.rs:{tick_line}\n\
         #1  {{hex}} in ukdemo::app::run () at src/app.rs:{call_line}\n\
         #2  {{hex}} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run_line}\n\
         #3  {{hex}} in _start64 ()\n\
         rip            {bp}            {bp} <ukdemo::app::tick+{{n}}>\n\
         $1 = {n}\n\
         $2 = {n}\n\
         {{hex}}:\t{{hex}}\t{{hex}}\n\
         {{hex}}:\t{{hex}}\t{{hex}}\n\
         ukdemo::app::tick::h{{*}} + {{n}} in section .text\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
        tick_line = line_of("src/app.rs", "write_volatile(t)"),
        call_line = line_of("src/app.rs", "tick(n);"),
        run_line = line_of("src/main.rs", "app::run()"),
    );
    assert_attached(&out, &expected);
    // The breakpoint is gone and the unikernel runs on.
    bridge.wait_more_lines(3);
}

#[test]
fn stepi_next_finish_then_interrupt() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    let gdb = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break ukdemo::app::tick",
            "continue",
            "stepi",
            "next",
            "finish",
            "delete",
            "continue",
            "bt 2",
            "detach",
        ],
    );
    // Interrupt only once the unikernel runs freely again: `finish` has
    // stopped it, so console lines after that come from the last `continue`.
    gdb.out.wait("finish to return", |t| t.contains("println!("));
    bridge.wait_more_lines(2);
    gdb.proc.signal(Signal::SIGINT);
    let out = gdb.finish();
    let n = hit_n(&out);
    let expected = format!(
        "{attach}{brk}{hit}\
         {panic_check}\t    if n == panic_at {{\n\
         {fault_check}\t    if n == fault_at {{\n\
         ukdemo::app::run () at src/app.rs:{println_line}\n\
         {println_line}\t        println!(\"line {{}} ticks {{}}\", n, ticks());\n\
         {sigint}\
         #1  {{hex}} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run_line}\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        sigint = sigint_in_run(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
        panic_check = line_of("src/app.rs", "if n == panic_at"),
        fault_check = line_of("src/app.rs", "if n == fault_at"),
        println_line = line_of("src/app.rs", "println!(\"line {} ticks {}\""),
        run_line = line_of("src/main.rs", "app::run()"),
    );
    assert_attached(&out, &expected);
    bridge.wait_more_lines(2);
}

#[test]
fn set_var_changes_what_the_unikernel_prints() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break ukdemo::app::tick",
            "continue",
            "finish",
            "set var ukdemo::app::TICKS = 100000",
            "p ukdemo::app::TICKS",
            "delete",
            "detach",
        ],
    )
    .finish();
    let n = hit_n(&out);
    let println_line = line_of("src/app.rs", "println!(\"line {} ticks {}\"");
    let expected = format!(
        "{attach}{brk}{hit}\
         ukdemo::app::run () at src/app.rs:{println_line}\n\
         {println_line}\t        println!(\"line {{}} ticks {{}}\", n, ticks());\n\
         $1 = 100000\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
    );
    assert_attached(&out, &expected);
    // The line for iteration n prints the value gdb wrote, and the next
    // call of `tick` counts on from it.
    let lines = bridge.wait_more_lines(2);
    let at = lines.iter().position(|&(line, _)| line == n).expect("line n");
    assert_eq!(lines[at..at + 2], [(n, 100_000), (n + 1, 100_001)]);
}

#[test]
fn bad_addresses_are_errors_and_the_unikernel_runs_on() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "x/2gx 0",
            "x/2gx 0x8000000000000000",
            "x/2gx 0x40000000",
            "x/2gx 0xffffffffffffff00",
            "set language c",
            "set var *(char *)0x8 = 1",
            "set var *(char *)0x7ffffffffff8 = 1",
            "p *(int *)0x8000000000000000",
            // A read that starts mapped and runs into the hole above 1 GiB
            // returns the mapped part.
            "x/2bx 0x3fffffff",
            "detach",
        ],
    )
    .finish();
    let expected = format!(
        "{attach}\
         0x0:\tCannot access memory at address 0x0\n\
         0x8000000000000000:\tCannot access memory at address 0x8000000000000000\n\
         0x40000000:\tCannot access memory at address 0x40000000\n\
         0xffffffffffffff00:\tCannot access memory at address 0xffffffffffffff00\n\
         Warning: the current language does not match this frame.\n\
         Cannot access memory at address 0x8\n\
         Cannot access memory at address 0x7ffffffffff8\n\
         Cannot access memory at address 0x8000000000000000\n\
         0x3fffffff:\t0x00\tCannot access memory at address 0x40000000\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
    );
    assert_attached(&out, &expected);
    bridge.wait_more_lines(3);
}

#[test]
fn killed_gdb_leaves_it_running_and_a_new_gdb_attaches() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);

    // gdb 1 plants a breakpoint and lets the unikernel run past it (the
    // condition never holds, so gdb resumes it at every hit), then dies.
    let mut gdb1 = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &["break ukdemo::app::tick if ukdemo::app::TICKS == 1000000", "continue"],
    );
    gdb1.out.wait("the breakpoint", |t| t.contains("Breakpoint 1 at"));
    bridge.wait_more_lines(3);
    gdb1.proc.signal(Signal::SIGKILL);
    gdb1.proc.wait_exit();
    bridge.stderr.wait("the bridge to see gdb go", |t| {
        t.matches("ukdb: debugger disconnected").count() == 1
    });
    bridge.wait_more_lines(3);

    // gdb 2 finds gdb 1's breakpoint gone, then dies while the unikernel is
    // stopped at its own breakpoint, which gdb keeps set while stopped.
    let mut gdb2 = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "monitor breakpoints",
            "set breakpoint always-inserted on",
            "break ukdemo::app::tick",
            "continue",
            "monitor breakpoints",
            "python import time; time.sleep(600)",
        ],
    );
    let text =
        gdb2.out.wait("the breakpoint hit", |t| t.contains("1 software breakpoint(s) set\n"));
    assert!(text.contains(&format!("{}0 software breakpoint(s) set\n", attach_frame())), "{text}");
    gdb2.proc.signal(Signal::SIGKILL);
    gdb2.proc.wait_exit();
    bridge.wait_more_lines(3);

    // gdb 3 finds no breakpoint left and stops at its own (which gdb takes
    // out while the unikernel is stopped).
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "monitor breakpoints",
            "break ukdemo::app::tick",
            "continue",
            "monitor breakpoints",
            "detach",
        ],
    )
    .finish();
    let n = hit_n(&out);
    let expected = format!(
        "{attach}0 software breakpoint(s) set\n{brk}{hit}0 software breakpoint(s) set\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
    );
    assert_attached(&out, &expected);

    // Not one console line went missing through all of that.
    let lines = bridge.wait_more_lines(2);
    let numbers: Vec<u64> = lines.iter().map(|&(line, _)| line).collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
    assert_eq!(bridge.stderr.text().matches("ukdb: debugger connected").count(), 3);
}

#[test]
fn hardware_breakpoint_and_watchpoint() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "hbreak ukdemo::app::tick",
            "continue",
            "delete",
            "watch ukdemo::app::TICKS",
            "continue",
            "delete",
            "detach",
        ],
    )
    .finish();
    let n = hit_n(&out);
    let line = line_of("src/app.rs", "write_volatile(t)");
    let expected = format!(
        "{attach}Hardware assisted breakpoint 1 at {{hex}}: file src/app.rs, line {line}.\n\
         \n\
         Breakpoint 1, ukdemo::app::tick (n={n}) at src/app.rs:{line}\n\
         {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n\
         Hardware watchpoint 2: ukdemo::app::TICKS\n\
         \n\
         Hardware watchpoint 2: ukdemo::app::TICKS\n\
         \n\
         Old value = {n}\n\
         New value = {next}\n\
         {{*}}\n\
         {{*}}\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        next = n + 1,
    );
    assert_attached(&out, &expected);
    bridge.wait_more_lines(2);
}

#[test]
fn ud_breakpoints_for_hypervisors_without_int3() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.trap=ud");
    let bridge = Bridge::start(&vm);
    assert!(bridge.console.text().contains("ukdb: stub ready on serial, breakpoints use ud\n"));
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break ukdemo::app::tick",
            "continue",
            "continue",
            "x/1bx $pc",
            "delete",
            "x/1bx $pc",
            "detach",
        ],
    )
    .finish();
    let n = hit_n(&out);
    // While stopped, memory shows the original byte, never the 0x06.
    let byte: String = capture(&out, r":\t(0x[0-9a-f]{2})\n");
    let expected = format!(
        "{attach}{brk}{hit1}{hit2}\
         {{hex}} <{{*}}4tick{{*}}+{{n}}>:\t{byte}\n\
         {{hex}} <{{*}}4tick{{*}}+{{n}}>:\t{byte}\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        brk = break_tick(1),
        hit1 = tick_hit(1, n),
        hit2 = tick_hit(1, n + 1),
    );
    assert_attached(&out, &expected);
    assert_ne!(byte, "0x06");
    bridge.wait_more_lines(2);
}

/// gdb on `remote` breaks in `tick`, prints its argument and detaches,
/// having attached where the example idles.
fn assert_breaks_at_tick(remote: &str) {
    let out = break_print_detach(&artifacts().image, remote);
    let attach = &out[..out.find("Breakpoint 1 at ").unwrap()];
    assert_attached(attach, &attach_frame());
}

#[test]
fn microvm_boots_and_breaks() {
    let vm = Vm::boot("microvm", &artifacts().image, "");
    let bridge = Bridge::start(&vm);
    assert_breaks_at_tick(&bridge.addr);
}

#[test]
fn plain_gdb_on_the_serial_socket_without_the_bridge() {
    let vm = Vm::boot("q35", &artifacts().image, "");
    assert_breaks_at_tick(vm.sock.to_str().unwrap());
}

/// Every console line the bridge printed is the app's, the stub's, or the
/// boot banner, and the app's lines are consecutive: no byte of the console
/// was lost to, or mixed with, the debugger's packets.
fn assert_console_intact(console: &str) {
    for line in console.lines() {
        let known =
            line.starts_with("line ") || line.starts_with("ukdb: ") || line.starts_with("ukdemo: ");
        assert!(known && !line.contains('\u{10}'), "foreign console line {line:?} in:\n{console}");
    }
    let numbers: Vec<u64> = app_lines(console).iter().map(|&(n, _)| n).collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "{console}");
}

#[test]
fn stepping_through_the_idle_poll() {
    let a = artifacts();
    // One line a second: the unikernel spends nearly all its time in the
    // idle loop, so 60 instructions from the attach take it through
    // `ukdb_stub::poll` (the UART status read) several times.
    let vm = Vm::boot("q35", &a.image, "ukdemo.rate=1");
    let bridge = Bridge::start(&vm);
    let out =
        Debugger::gdb(&a.image, &bridge.addr, &["stepi 60", "monitor why", "detach"]).finish();
    assert!(out.starts_with(&attach_frame()), "{out}");
    assert!(out.ends_with("single step\n[Inferior 1 (process 1) detached]\n"), "{out}");
    let lines = bridge.wait_more_lines(3);
    assert!(!lines.is_empty());
    assert_console_intact(&bridge.console.text());
}

#[test]
fn stopping_and_stepping_inside_a_console_write() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    // A breakpoint in the stub's own console path, which runs in the
    // unikernel's context; then single steps through its UART writes. The
    // debugger's packets and the console's bytes share the line throughout.
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break *ukdb_stub::imp::line::console_write",
            "continue",
            "stepi 200",
            "delete",
            "monitor why",
            "detach",
        ],
    )
    .finish();
    assert!(out.contains("\nBreakpoint 1, ukdb_stub::imp::line::console_write ("), "{out}");
    assert!(out.ends_with("single step\n[Inferior 1 (process 1) detached]\n"), "{out}");
    bridge.wait_more_lines(3);
    assert_console_intact(&bridge.console.text());
}

#[test]
fn the_bridge_serves_gdb_on_a_unix_socket() {
    let vm = Vm::boot("q35", &artifacts().image, "");
    let path = vm.dir().join("gdb.sock");
    let listen = format!("unix:{}", path.display());
    let bridge = Bridge::start_with(&vm, &["--listen", &listen]);
    assert_eq!(bridge.addr, listen);
    assert_breaks_at_tick(path.to_str().unwrap());
    bridge.wait_more_lines(2);
}

#[test]
fn an_attach_in_the_timer_handlers_poll_reads_as_the_idle_loop() {
    let poll = line_of("../../stub/src/imp/api.rs", "soft_entry(Why::Poll as u64)");
    let rest = "Breakpoint 1 at 0x13b46c: file src/app.rs, line 43.\n";
    let got = format!(
        "0x000000000014053d in ukdb_stub::imp::api::poll () at {}:{poll}\n\
         {poll}\t        soft_entry(Why::Poll as u64);\n{rest}",
        stub_api_path()
    );
    assert_eq!(attach_normalised(&got), format!("{}{rest}", attach_frame()));
    // Anything else is left as it is, for the transcript to judge.
    let other = format!("0x0000000000100000 in ukdemo::kmain ()\n1\tx\n{rest}");
    assert_eq!(attach_normalised(&other), other);
}
