//! lldb through `ukdb bridge`: `gdb-remote`, a breakpoint by name, continue,
//! `bt`, `register read`, `memory read`, a step, detach.

use ukdb_tests::*;

/// lldb 14 from Debian prints a Python traceback at start-up when its
/// embedded interpreter module is missing; it is not part of the session.
fn without_python_noise(out: &str) -> String {
    let mut lines = Vec::new();
    let mut skipping = false;
    for line in out.lines() {
        if line.starts_with("Traceback (most recent call last):") {
            skipping = true;
            continue;
        }
        if skipping {
            if line.starts_with("ModuleNotFoundError") {
                skipping = false;
            }
            continue;
        }
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

#[test]
fn lldb_breaks_steps_reads_and_detaches() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    let out = Debugger::lldb(
        &a.image,
        &bridge.addr,
        &[
            "breakpoint set --name ukdemo::app::tick",
            "continue",
            "bt 3",
            "register read rip rdi",
            "memory read --format x --size 8 --count 2 $rsp",
            "thread step-inst",
            "register read rip",
            "process detach",
        ],
    )
    .finish();
    let out = without_python_noise(&out);
    let n: u64 = capture(&out, r"ukdemo::app::tick::h[0-9a-f]+\(n=(\d+)\)");
    let bp: String = capture(&out, r"address = (0x[0-9a-f]+)");
    let line = line_of("src/app.rs", "write_volatile(t)");
    let step = line_of("src/app.rs", "if n == panic_at");
    let rdtsc = line_of("src/time.rs", "asm!(\"rdtsc\"");
    // lldb lists 3 source lines either side of a stop; those come from the
    // example's sources, so the listing is matched line by line from them.
    let listing = |file: &str, at: usize| {
        let text = std::fs::read_to_string(root().join("examples/ukdemo/src").join(file)).unwrap();
        let src: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for l in at - 3..=at + 3 {
            let mark = if l == at { "->" } else { "  " };
            out.push_str(&format!("{mark} {l:>2}  \t{}\n", src[l - 1]));
            if l == at {
                out.push_str("    \t{*}^\n");
            }
        }
        out
    };
    let expected = format!(
        "(lldb) target create {image}\n\
         Current executable set to '{image}' (x86_64).\n\
         (lldb) gdb-remote {addr}\n\
         Process 1 stopped\n\
         * thread #1, stop reason = signal SIGTRAP\n\
         \x20   frame #0: {{hex}} ukdemo`ukdemo::app::run::h{{*}} at time.rs:{rdtsc}:9\n\
         {attach_listing}\
         (lldb) breakpoint set --name ukdemo::app::tick\n\
         Breakpoint 1: where = ukdemo`ukdemo::app::tick::h{{*}} + {{n}} [inlined] core::ptr::write_volatile::h{{*}} at mod.rs:{{n}}:{{n}}, address = {bp}\n\
         (lldb) continue\n\
         Process 1 resuming\n\
         Process 1 stopped\n\
         * thread #1, stop reason = breakpoint 1.1\n\
         \x20   frame #0: {bp} ukdemo`ukdemo::app::tick::h{{*}} [inlined] core::ptr::write_volatile::h{{*}}(src=<unavailable>) at mod.rs:{{n}}:{{n}}\n\
         (lldb) bt 3\n\
         * thread #1, stop reason = breakpoint 1.1\n\
         \x20 * frame #0: {bp} ukdemo`ukdemo::app::tick::h{{*}} [inlined] core::ptr::write_volatile::h{{*}}(src=<unavailable>) at mod.rs:{{n}}:{{n}}\n\
         \x20   frame #1: {bp} ukdemo`ukdemo::app::tick::h{{*}} [inlined] {{*}}::write_volatile::h{{*}}(val=<unavailable>) at mut_ptr.rs:{{n}}:{{n}}\n\
         \x20   frame #2: {bp} ukdemo`ukdemo::app::tick::h{{*}}(n={n}) at app.rs:{line}:{{n}}\n\
         (lldb) register read rip rdi\n\
         \x20    rip = {bp}  ukdemo`ukdemo::app::tick::h{{*}} + {{n}} [inlined] core::ptr::write_volatile::h{{*}} at mod.rs:{{n}}:{{n}}\n\
         ukdemo`ukdemo::app::tick::h{{*}} + {{n}} [inlined] {{*}}::write_volatile::h{{*}} at mut_ptr.rs:{{n}}:{{n}}\n\
         ukdemo`ukdemo::app::tick::h{{*}} + {{n}} at app.rs:{line}:{{n}}\n\
         \x20    rdi = {n:#018x}\n\
         (lldb) memory read --format x --size 8 --count 2 $rsp\n\
         {{hex}}: {{hex}} {{hex}}\n\
         (lldb) thread step-inst\n\
         Process 1 stopped\n\
         * thread #1, stop reason = instruction step into\n\
         \x20   frame #0: {{hex}} ukdemo`ukdemo::app::tick::h{{*}}(n={n}) at app.rs:{step}:{{n}}\n\
         {step_listing}\
         (lldb) register read rip\n\
         \x20    rip = {{hex}}  ukdemo`ukdemo::app::tick::h{{*}} + {{n}} at app.rs:{step}:{{n}}\n\
         (lldb) process detach\n\
         Process 1 detached\n",
        image = a.image.display(),
        addr = bridge.addr,
        attach_listing = listing("time.rs", rdtsc),
        step_listing = listing("app.rs", step),
    );
    assert_transcript(&out, &expected);
    bridge.wait_more_lines(2);
}
