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

/// gdb's report of the breakpoint in `tick` (inserted as breakpoint `num`).
fn tick_hit(num: u32, n: u64) -> String {
    let line = line_of("src/app.rs", "write_volatile(t)");
    format!(
        "\nBreakpoint {num}, ukdemo::app::tick (n={n}) at src/app.rs:{line}\n\
         {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n"
    )
}

fn break_tick(num: u32) -> String {
    let line = line_of("src/app.rs", "write_volatile(t)");
    format!("Breakpoint {num} at {{hex}}: file src/app.rs, line {line}.\n")
}

fn hit_n(out: &str) -> u64 {
    capture(out, r"ukdemo::app::tick \(n=(\d+)\)")
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
    assert_transcript(&out, &expected);
    // The breakpoint is gone and the unikernel runs on.
    bridge.wait_more_lines(3);
}

#[test]
fn stepi_next_finish_then_interrupt() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    let mut gdb = Debugger::gdb(
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
    gdb.out
        .wait("finish to return", |t| t.contains("println!("));
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
         \n\
         Program received signal SIGINT, Interrupt.\n\
         ukdemo::app::run () at src/app.rs:{wait_line}\n\
         {wait_line}\t        while time::rdtsc() < next {{\n\
         #0  ukdemo::app::run () at src/app.rs:{wait_line}\n\
         #1  {{hex}} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run_line}\n\
         [Inferior 1 (process 1) detached]\n",
        attach = attach_frame(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
        panic_check = line_of("src/app.rs", "if n == panic_at"),
        fault_check = line_of("src/app.rs", "if n == fault_at"),
        println_line = line_of("src/app.rs", "println!(\"line {} ticks {}\""),
        wait_line = line_of("src/app.rs", "while time::rdtsc() < next"),
        run_line = line_of("src/main.rs", "app::run()"),
    );
    assert_transcript(&out, &expected);
    bridge.wait_more_lines(2);
}
