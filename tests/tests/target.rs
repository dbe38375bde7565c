//! The stub's target side against real gdb: single-stepping the example's
//! RFLAGS sequence (`ukdemo.flags`, examples/ukdemo/src/flags.rs) leaves IF
//! and TF exactly as the program would have them without a debugger, and
//! what `pushf` pushes is the program's.

use ukdb_tests::*;

/// `info registers eflags` as gdb prints it.
fn eflags(value: &str, names: &str) -> String {
    format!("eflags         {value:<20}[ {names} ]\n")
}

const IF_ZF_PF: &str = "PF ZF IF";
const ZF_PF: &str = "PF ZF";

#[test]
fn stepping_instructions_that_use_if_and_tf_keeps_the_programs_flags() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdemo.flags");
    let bridge = Bridge::start(&vm);
    bridge.wait_more_lines(1);
    let sym = |name: &str| format!("*{:#x}", symbol_address(&a.image, name));
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            &format!("break {}", sym("ukdemo_flags_sti")),
            "continue",
            "info registers eflags",
            // sti with IF clear: IF set after it.
            "stepi",
            "info registers eflags",
            // pushfq with IF set: pushes IF, not the stub's TF.
            "stepi",
            "info registers eflags",
            "x/gx $rsp",
            // 16-bit pushf (66 9C).
            "stepi",
            "x/hx $rsp",
            // pushfq with a REX.W prefix (48 9C).
            "stepi",
            "x/gx $rsp",
            // Run on: popfq pops that image; a TF in it would trap here.
            &format!("tbreak {}", sym("ukdemo_flags_cli2")),
            "continue",
            "info registers eflags",
            // The next iteration: cli with IF set, popfq, cli, iretq.
            "continue",
            &format!("tbreak {}", sym("ukdemo_flags_cli")),
            "continue",
            "info registers eflags",
            "stepi",
            "info registers eflags",
            "stepi",
            "info registers eflags",
            "stepi",
            "info registers eflags",
            &format!("tbreak {}", sym("ukdemo_flags_iretq")),
            "continue",
            "info registers eflags",
            "stepi",
            "info registers eflags",
            "stepi",
            "info registers eflags",
            // No stray TF anywhere: the next stop is the breakpoint again.
            "continue",
            "delete",
            "detach",
        ],
    )
    .finish();
    let attach = capture::<String>(&out, r"(?s)^(.*?)Breakpoint 1 at ");
    // gdb names every pc in the sequence after the function; the labels
    // give the exact addresses.
    let pc = |label: &str, offset: u64| {
        format!("{:#018x} in ukdemo_flags_run ()", symbol_address(&a.image, label) + offset)
    };
    let at_plus = |label: &str, offset: u64| format!("{}\n", pc(label, offset));
    let at = |label: &str| at_plus(label, 0);
    let hit = |num: &str, label: &str| format!("\n{num}, {}\n", pc(label, 0));
    let expected = format!(
        "{attach}\
         Breakpoint 1 at {{hex}}\n\
         {hit_sti}\
         {flags_0x46}\
         {at_pushfq}\
         {flags_0x246}\
         {at_pushfw}\
         {flags_0x246}\
         {{hex}}:\t0x0000000000000246\n\
         {at_rex}\
         {{hex}}:\t0x0246\n\
         {at_cli}\
         {{hex}}:\t0x0000000000000246\n\
         Temporary breakpoint 2 at {{hex}}\n\
         {hit_cli2}\
         {flags_0x246}\
         {hit_sti}\
         Temporary breakpoint 3 at {{hex}}\n\
         {hit_cli}\
         {flags_0x246}\
         {at_popfq}\
         {flags_0x46}\
         {at_cli2}\
         {flags_0x246}\
         {at_lea}\
         {flags_0x46}\
         Temporary breakpoint 4 at {{hex}}\n\
         {hit_iretq}\
         {flags_0x46}\
         {at_done}\
         {flags_0x246}\
         {at_after}\
         {flags_0x46}\
         {hit_sti}\
         [Inferior 1 (process 1) detached]\n",
        hit_sti = hit("Breakpoint 1", "ukdemo_flags_sti"),
        hit_cli2 = hit("Temporary breakpoint 2", "ukdemo_flags_cli2"),
        hit_cli = hit("Temporary breakpoint 3", "ukdemo_flags_cli"),
        hit_iretq = hit("Temporary breakpoint 4", "ukdemo_flags_iretq"),
        at_pushfq = at("ukdemo_flags_pushfq"),
        at_pushfw = at("ukdemo_flags_pushfw"),
        at_rex = at("ukdemo_flags_rex_pushfq"),
        at_cli = at("ukdemo_flags_cli"),
        at_popfq = at("ukdemo_flags_popfq"),
        at_cli2 = at("ukdemo_flags_cli2"),
        at_lea = at_plus("ukdemo_flags_cli2", 1),
        at_done = at("ukdemo_flags_done"),
        at_after = at_plus("ukdemo_flags_done", 1),
        flags_0x46 = eflags("0x46", ZF_PF),
        flags_0x246 = eflags("0x246", IF_ZF_PF),
    );
    assert_transcript(&out, &expected);
    bridge.wait_more_lines(2);
}

#[test]
fn segment_selectors_cannot_change_but_may_be_written_back() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdemo.flags");
    let bridge = Bridge::start(&vm);
    bridge.wait_more_lines(1);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            &format!("break *{:#x}", symbol_address(&a.image, "ukdemo_flags_sti")),
            "continue",
            "info registers cs ss ds",
            "set $ds = $ds",
            "set $cs = $cs + 8",
            "set $ds = 0x28",
            "set $rax = 0x1234",
            "info registers cs ss ds rax",
            "delete",
            "detach",
        ],
    )
    .finish();
    let attach = capture::<String>(&out, r"(?s)^(.*?)Breakpoint 1 at ");
    let sti = symbol_address(&a.image, "ukdemo_flags_sti");
    let expected = format!(
        "{attach}\
         Breakpoint 1 at {sti:#x}\n\
         \n\
         Breakpoint 1, {sti:#018x} in ukdemo_flags_run ()\n\
         cs             0x8                 8\n\
         ss             0x10                16\n\
         ds             0x10                16\n\
         Could not write register \"cs\"; remote failure reply 'E16'\n\
         Could not write register \"ds\"; remote failure reply 'E16'\n\
         cs             0x8                 8\n\
         ss             0x10                16\n\
         ds             0x10                16\n\
         rax            0x1234              4660\n\
         [Inferior 1 (process 1) detached]\n"
    );
    assert_transcript(&out, &expected);
    bridge.wait_more_lines(2);
}

#[test]
fn no_software_breakpoint_in_a_data_page() {
    // The example maps its data non-executable (NX, EFER.NXE): an int3
    // there would never run, and planting it would corrupt the data.
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "");
    let bridge = Bridge::start(&vm);
    bridge.wait_more_lines(1);
    let ticks = symbols(&a.image)
        .into_iter()
        .find(|(name, _)| name.starts_with("_ZN6ukdemo3app5TICKS"))
        .expect("ukdemo::app::TICKS")
        .1;
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            &format!("break *{ticks:#x}"),
            "continue",
            "delete",
            "hbreak ukdemo::app::tick",
            "continue",
            "delete",
            "detach",
        ],
    )
    .finish();
    let attach = capture::<String>(&out, r"(?s)^(.*?)Breakpoint 1 at ");
    let line = line_of("src/app.rs", "write_volatile(t)");
    let expected = format!(
        "{attach}\
         Breakpoint 1 at {ticks:#x}\n\
         Warning:\n\
         Cannot insert breakpoint 1.\n\
         Cannot access memory at address {ticks:#x}\n\
         \n\
         Command aborted.\n\
         Hardware assisted breakpoint 2 at {{hex}}: file src/app.rs, line {line}.\n\
         \n\
         Breakpoint 2, ukdemo::app::tick (n={{n}}) at src/app.rs:{line}\n\
         {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n\
         [Inferior 1 (process 1) detached]\n"
    );
    assert_transcript(&out, &expected);
    // The counter was not touched: each line's count is one more.
    let lines = bridge.wait_more_lines(2);
    assert!(lines.iter().all(|&(n, t)| t == n + 1), "{lines:?}");
}

#[test]
fn a_phys_offset_that_maps_no_page_tables_keeps_the_stub_out_with_a_reason() {
    // Nothing is mapped above 1 GiB in the example: every page-table read
    // at pa + 1 GiB faults, and the stub's guarded reads turn that into a
    // refusal at init instead of a fault. The unikernel runs on without it.
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.phys_offset=0x40000000");
    let bridge = Bridge::start_unsynced(&vm, &[]);
    bridge.wait_more_lines(3);
    let console = bridge.console.text();
    let first: Vec<&str> = console.lines().take(2).collect();
    assert_eq!(
        first,
        [
            "ukdb: stub not started: the page walk cannot find the stub's own data: \
             page tables are not mapped at phys_offset",
            "ukdemo: booted, stub enabled, tsc {n} MHz, cmdline 'ukdb.phys_offset=0x40000000'"
                .replace("{n}", &capture::<String>(&console, r"tsc (\d+) MHz"))
                .as_str(),
        ]
    );
}

#[test]
fn page_tables_read_through_a_physical_memory_offset() {
    // The example maps its first GiB a second time at 0xffff800000000000
    // (as the `bootloader` crate maps physical memory): told so, the stub
    // reads the page tables there, and debugging works as with the identity
    // map.
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdb.phys_offset=0xffff800000000000");
    let bridge = Bridge::start(&vm);
    let console = bridge.console.wait("the stub", |t| t.contains("ukdb: stub ready"));
    assert!(!console.contains("stub not started"), "{console}");
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "break ukdemo::app::tick",
            "continue",
            "p ukdemo::app::TICKS == n",
            "x/1bx 0",
            "delete",
            "detach",
        ],
    )
    .finish();
    assert!(out.contains("\nBreakpoint 1, ukdemo::app::tick (n="), "{out}");
    assert!(out.contains("\n$1 = true\n"), "{out}");
    assert!(out.contains("Cannot access memory at address 0x0\n"), "{out}");
    assert!(out.ends_with("[Inferior 1 (process 1) detached]\n"), "{out}");
    bridge.wait_more_lines(2);
}

#[test]
fn the_unikernels_own_debug_registers_survive_debuggers() {
    // `ukdemo.dr` arms DR0 (an instruction breakpoint that never fires) and
    // prints a line if it finds DR0 or DR7 changed. A debugger that attaches
    // and detaches, or sets and removes a hardware breakpoint, leaves them.
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdemo.dr");
    let bridge = Bridge::start(&vm);
    bridge.wait_more_lines(1);
    let out = Debugger::gdb(&a.image, &bridge.addr, &["monitor why", "detach"]).finish();
    assert!(out.ends_with("interrupted by the debugger\n[Inferior 1 (process 1) detached]\n"));
    bridge.wait_more_lines(2);
    let out = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &["hbreak ukdemo::app::tick", "continue", "delete", "detach"],
    )
    .finish();
    assert!(out.ends_with("[Inferior 1 (process 1) detached]\n"), "{out}");
    bridge.wait_more_lines(2);
    assert!(
        !bridge.console.text().contains("debug registers changed"),
        "{}",
        bridge.console.text()
    );
}
