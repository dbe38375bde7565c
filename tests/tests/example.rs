//! The example unikernel itself: its timer-driven poll (a busy unikernel
//! still stops) and its UART self-test (a byte written into the guest before
//! the stub announced itself is seen). gdb talks to the serial socket
//! directly here, without the bridge.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use ukdb_tests::*;

/// A VM that is created stopped (`-S`), so that the test connects to its
/// serial line before the first byte of its console, and then started.
struct PausedVm {
    vm: Vm,
    qmp: tempfile::TempDir,
}

impl PausedVm {
    fn boot(machine: &str, append: &str) -> PausedVm {
        let qmp = tempfile::tempdir().unwrap();
        let [flag, arg] = qmp::args(&qmp.path().join("qmp.sock"));
        let vm = Vm::boot_with(machine, &artifacts().image, append, &["-S", &flag, &arg]);
        PausedVm { vm, qmp }
    }

    /// The serial line, connected while the VM is still stopped.
    fn serial(&self) -> UnixStream {
        connect_unix(&self.vm.sock)
    }

    /// Starts the VM (QMP `cont`).
    fn start(&self) {
        let path = self.qmp.path().join("qmp.sock");
        // QEMU may create the socket file a moment before it listens.
        drop(connect_unix(&path));
        qmp::execute(&path, "cont");
    }
}

/// The raw console until `line N` of the app appears; the connection is
/// closed afterwards, so a debugger can have the socket.
fn console_until_line(sock: UnixStream, n: u64) -> String {
    let console = Arc::new(Output::default());
    console.spawn_reader(sock.try_clone().unwrap());
    let marker = format!("line {n} ticks ");
    let text = console.wait("app lines", |t| t.contains(&marker));
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    console.wait_closed("the raw console");
    text
}

#[test]
fn an_untouched_line_passes_the_serial_self_test() {
    let vm = PausedVm::boot("q35", "");
    let sock = vm.serial();
    vm.start();
    let text = console_until_line(sock, 1);
    let first: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
    assert_transcript(
        &first,
        "\u{10}Hukdb: stub ready on serial, breakpoints use int3\n\
         ukdemo: booted, stub enabled, tsc {n} MHz, cmdline ''\n\
         ukdemo: timer: local APIC at 1000 Hz (tsc rate from pit)\n\
         line 0 ticks 1\n\
         line 1 ticks 2\n",
    );
}

#[test]
fn the_serial_self_test_sees_a_byte_written_before_the_stub_announced_itself() {
    let vm = PausedVm::boot("q35", "");
    // What a bridge that probes an unannounced guest writes: DLE 'F'. The
    // guest has not started, so the bytes wait for its UART.
    let mut sock = vm.serial();
    sock.write_all(&[0x10, b'F']).unwrap();
    vm.start();
    let text = console_until_line(sock, 1);
    assert!(
        text.starts_with("ukdemo: serial self test failed (read 0x10 expected 0xae)\n"),
        "{text:?}"
    );
    // It carries on: the stub starts and the app runs.
    assert!(
        text.contains("ukdb: stub ready on serial") && text.contains("\nline 0 ticks 1\n"),
        "{text:?}"
    );
}

#[test]
fn a_busy_unikernel_stops_in_its_timer_interrupt() {
    let a = artifacts();
    // `ukdemo.busy`: the app spins between lines and never polls the stub
    // itself; only the timer interrupt's poll can notice the debugger.
    let vm = PausedVm::boot("q35", "ukdemo.busy");
    let sock = vm.serial();
    vm.start();
    console_until_line(sock, 2);
    let out =
        Debugger::gdb(&a.image, vm.vm.sock.to_str().unwrap(), &["bt", "monitor why", "detach"])
            .finish();
    // The stop is in the timer handler's poll; gdb unwinds through the
    // interrupt (a signal frame in the entry's CFI) into the busy loop.
    let (head, tail) = out.split_once("<signal handler called>\n").expect(&out);
    let on_interrupt = line_of("src/timer.rs", "ukdb_stub::poll();");
    let dispatch = line_of("src/idt.rs", "=> crate::timer::on_interrupt(rip)");
    assert_transcript(
        head,
        &format!(
            "{{hex}} in ukdb_stub::imp::api::poll () at {{*}}\n\
             {{n}}\t{{*}}\n\
             #0  {{hex}} in ukdb_stub::imp::api::poll () at {{*}}\n\
             #1  ukdemo::timer::on_interrupt (rip=<optimized out>) at src/timer.rs:{on_interrupt}\n\
             #2  ukdemo::idt::irq_dispatch (vector=48, rip={{n}}) at src/idt.rs:{dispatch}\n\
             #3  \n"
        ),
    );
    // Where the tick came in varies: the TSC read or the pause of the spin
    // loop, which gdb shows as inline frames above `busy_until`.
    let busy = tail.find("ukdemo::app::busy_until (until=").expect(tail);
    let (inline, rest) = tail.split_at(tail[..busy].rfind('#').expect(tail));
    for frame in inline.lines() {
        let known = ["ukdemo::time::rdtsc ()", "core::hint::spin_loop ()", "_mm_pause ()"];
        assert!(known.iter().any(|k| frame.contains(k)), "unexpected frame {frame:?} in:\n{out}");
    }
    assert_transcript(
        rest,
        &format!(
            "#{{n}}  ukdemo::app::busy_until (until={{n}}) at src/app.rs:{{n}}\n\
             #{{n}}  {{hex}} in ukdemo::app::run () at src/app.rs:{run}\n\
             #{{n}}  {{hex}} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{kmain}\n\
             #{{n}}  {{hex}} in _start64 ()\n\
             interrupted by the debugger\n\
             [Inferior 1 (process 1) detached]\n",
            run = line_of("src/app.rs", "busy_until(next);"),
            kmain = line_of("src/main.rs", "app::run()"),
        ),
    );
}

/// The first lines of the raw console of `machine` (until `line 1`).
fn boot_banner(machine: &str) -> String {
    let vm = PausedVm::boot(machine, "");
    let sock = vm.serial();
    vm.start();
    let text = console_until_line(sock, 1);
    text.lines().take(5).map(|l| format!("{l}\n")).collect()
}

#[test]
fn microvm_calibrates_the_tsc_on_the_pit_counter() {
    // microvm has a PIT but no port 0x61 (no channel 2 gate).
    assert_transcript(
        &boot_banner("microvm"),
        "\u{10}Hukdb: stub ready on serial, breakpoints use int3\n\
         ukdemo: booted, stub enabled, tsc {n} MHz, cmdline ''\n\
         ukdemo: timer: local APIC at 1000 Hz (tsc rate from pit counter)\n\
         line 0 ticks 1\n\
         line 1 ticks 2\n",
    );
}

#[test]
fn without_pit_and_pic_the_apic_timer_still_runs() {
    // Like Firecracker and Cloud Hypervisor: no PIT at all, no legacy PICs.
    assert_transcript(
        &boot_banner("microvm,pit=off,pic=off"),
        "\u{10}Hukdb: stub ready on serial, breakpoints use int3\n\
         ukdemo: booted, stub enabled, tsc 1000 MHz, cmdline ''\n\
         ukdemo: timer: local APIC at 1000 Hz (tsc rate from nothing: 1 GHz assumed)\n\
         line 0 ticks 1\n\
         line 1 ticks 2\n",
    );
}
