//! The network transport: gdb and lldb straight to the stub over TCP on a
//! virtio-net device (QEMU user networking, the stub's port forwarded), on
//! q35 (PCI) and microvm (MMIO), with the example's HTTP server sharing the
//! NIC. Each test boots its own VM and asserts exact transcripts.

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use ukdb_tests::*;

/// The app's console lines so far.
fn lines(vm: &NetVm) -> usize {
    app_lines(&vm.console.text()).len()
}

/// Waits for `n` more app lines on the console.
fn more_lines(vm: &NetVm, n: usize) {
    let have = lines(vm);
    vm.console.wait(&format!("{n} more app lines"), |t| app_lines(t).len() >= have + n);
}

/// A q35 VM booted with `append`, its network stub up.
fn q35_stub(append: &str) -> NetVm {
    let vm = NetVm::boot("q35", &artifacts().image, append, &[]);
    vm.wait_stub_ready();
    vm
}

/// gdb straight to the stub, stopped at a breakpoint in `tick`, then running
/// `then`.
fn gdb_held_in_tick(vm: &NetVm, then: &[&str]) -> Debugger {
    let mut cmds = vec!["break ukdemo::app::tick", "continue"];
    cmds.extend_from_slice(then);
    let gdb = Debugger::gdb(&artifacts().image, &vm.debug, &cmds);
    gdb.out.wait("the breakpoint", |t| t.contains("Breakpoint 1, ukdemo::app::tick"));
    gdb
}

/// gdb straight to the stub: break, bt, print, stepi, Ctrl-C, detach.
fn gdb_session(machine: &str) {
    let a = artifacts();
    let vm = NetVm::boot(machine, &a.image, "", &[]);
    vm.wait_stub_ready();
    more_lines(&vm, 1);
    let gdb = Debugger::gdb(
        &a.image,
        &vm.debug,
        &[
            "break ukdemo::app::tick",
            "continue",
            "bt 3",
            "p n == ukdemo::app::TICKS", // the breakpoint is before the count
            "stepi",
            "info symbol $pc",
            "delete",
            "continue",
            "bt 1",
            "detach",
        ],
    );
    // Interrupt once the unikernel runs freely again after the last continue.
    gdb.out.wait("the stepi", |t| t.contains(" in section .text"));
    more_lines(&vm, 2);
    gdb.proc.signal(Signal::SIGINT);
    let out = gdb.finish();
    let n = hit_n(&out);
    let rdtsc = line_of("src/time.rs", "asm!(\"rdtsc\"");
    // Attaching stops the app where it polled: its idle loop's TSC read.
    let expected = format!(
        "ukdemo::time::rdtsc () at src/time.rs:{rdtsc}\n\
         {rdtsc}\t{{*}}\n\
         {brk}{hit}\
         #0  ukdemo::app::tick (n={n}) at src/app.rs:{tick_line}\n\
         #1  {{hex}} in ukdemo::app::run () at src/app.rs:{call_line}\n\
         #2  {{hex}} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run_line}\n\
         $1 = true\n\
         {panic_check}\t    if n == panic_at {{\n\
         ukdemo::app::tick::h{{*}} + {{n}} in section .text\n\
         {sigint}\
         [Inferior 1 (process 1) detached]\n",
        sigint = sigint_in_run(),
        brk = break_tick(1),
        hit = tick_hit(1, n),
        tick_line = line_of("src/app.rs", "write_volatile(t)"),
        call_line = line_of("src/app.rs", "tick(n);"),
        run_line = line_of("src/main.rs", "app::run()"),
        panic_check = line_of("src/app.rs", "if n == panic_at"),
    );
    assert_transcript(&out, &expected);
    more_lines(&vm, 3);
}

#[test]
fn gdb_over_tcp_on_q35_pci() {
    gdb_session("q35");
}

#[test]
fn gdb_over_tcp_on_microvm_mmio() {
    gdb_session("microvm");
}

#[test]
fn lldb_over_tcp() {
    let a = artifacts();
    let vm = q35_stub("");
    let out = Debugger::lldb(
        &a.image,
        &vm.debug,
        &[
            "breakpoint set --name ukdemo::app::tick",
            "continue",
            "register read rip",
            "memory read --format x --size 8 --count 1 &ukdemo::app::TICKS",
            "thread step-inst",
            "breakpoint delete --force",
            "process detach",
        ],
    )
    .finish();
    let bp: String = capture(&out, r"Breakpoint 1: where = .* address = (0x[0-9a-f]+)");
    let ticks = symbols(&a.image).into_iter().find(|(n, _)| n.contains("3app5TICKS")).unwrap().1;
    assert!(out.contains("* thread #1, stop reason = breakpoint 1.1\n"), "{out}");
    assert!(out.contains(&format!("     rip = {bp}  ukdemo`")), "{out}");
    assert!(out.contains(&format!("{ticks:#010x}: 0x")), "{out}");
    assert!(out.contains("* thread #1, stop reason = instruction step into\n"), "{out}");
    assert!(out.contains("Process 1 detached\n"), "{out}");
    more_lines(&vm, 3);
}

/// Reads `len` bytes at `addr` with gdb's `dump binary memory` from `remote`.
fn gdb_dump(image: &std::path::Path, remote: &str, addr: u64, len: u64, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.bin");
    let dump = format!("dump binary memory {} {addr:#x} {:#x}", file.display(), addr + len);
    let mut cmds: Vec<&str> = extra.to_vec();
    cmds.push(&dump);
    cmds.push("detach");
    let out = Debugger::gdb(image, remote, &cmds).finish();
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("no dump ({e}):\n{out}"));
    assert_eq!(bytes.len() as u64, len, "{out}");
    bytes
}

#[test]
fn a_mebibyte_over_tcp_equals_qemus_gdbstub_byte_for_byte() {
    let a = artifacts();
    let qemu_port = free_port();
    let gdbstub = format!("tcp:127.0.0.1:{qemu_port}");
    let vm = NetVm::boot("q35", &a.image, "ukdb.wait", &["-gdb", &gdbstub]);
    vm.wait_stub_ready();
    // 1 MiB of free RAM above the image gets a pattern written over TCP
    // (`restore`, binary and hex writes), then both stubs read it back:
    // memory nothing else writes, unlike the image's data and the stub's
    // own state.
    let at: u64 = 0x100_0000;
    let dir = tempfile::tempdir().unwrap();
    let pattern: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = dir.path().join("pattern.bin");
    std::fs::write(&file, &pattern).unwrap();
    let restore = format!("restore {} binary {at:#x}", file.display());
    let ours = gdb_dump(&a.image, &vm.debug, at, 1 << 20, &[&restore]);
    let theirs = gdb_dump(&a.image, &format!("127.0.0.1:{qemu_port}"), at, 1 << 20, &[]);
    let differ = |x: &[u8], y: &[u8]| x.iter().zip(y).position(|(p, q)| p != q);
    assert_eq!(differ(&ours, &pattern), None, "the stub read back something else");
    assert_eq!(differ(&ours, &theirs), None, "the stub and QEMU's gdbstub read differently");
}

#[test]
fn the_apps_http_server_answers_before_during_and_after_a_session() {
    let vm = q35_stub("");
    vm.wait_http_ready();
    let before = http_get(&vm.http, DEADLINE).unwrap();
    assert!(before.starts_with("HTTP/1.0 200 OK\r\n"), "{before}");
    let t0: u64 = capture(&before, r"TICKS (\d+)\n");
    // A connection opened before the stop, used during it.
    let mut early = TcpStream::connect(&vm.http).unwrap();
    early.set_read_timeout(Some(DEADLINE)).unwrap();

    // A debugger stops the world in `tick` and holds it for 10 s.
    let gdb = gdb_held_in_tick(&vm, &["shell sleep 10", "delete", "detach"]);
    // A request on the early connection, and one on a new connection, made
    // while the world is stopped: both are answered once it resumes (frames
    // the stub read meanwhile were handed to the app; TCP retransmits the
    // rest).
    let started = Instant::now();
    early.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let during = http_get(&vm.http, DEADLINE).unwrap();
    let waited = started.elapsed();
    let mut early_reply = String::new();
    early.read_to_string(&mut early_reply).unwrap();
    gdb.finish();
    assert!(early_reply.starts_with("HTTP/1.0 200 OK\r\n"), "{early_reply}");
    assert!(during.starts_with("HTTP/1.0 200 OK\r\n"), "{during}");
    let t1: u64 = capture(&during, r"TICKS (\d+)\n");
    assert!(t1 >= t0, "{t0} then {t1}");
    assert!(waited >= Duration::from_secs(5), "answered while stopped? {waited:?}");

    more_lines(&vm, 2);
    let after = http_get(&vm.http, DEADLINE).unwrap();
    let t2: u64 = capture(&after, r"TICKS (\d+)\n");
    assert!(t2 > t1, "{t1} then {t2}");
}

#[test]
fn a_killed_gdb_then_a_new_one_attaches() {
    let a = artifacts();
    let vm = q35_stub("");
    let gdb = gdb_held_in_tick(&vm, &["shell sleep 600"]);
    gdb.proc.signal(Signal::SIGKILL);
    // The kernel resets the connection: the stub ends the session, removes
    // the breakpoint and lets the unikernel run.
    more_lines(&vm, 3);
    let out = Debugger::gdb(&a.image, &vm.debug, &["info breakpoints", "detach"]).finish();
    assert!(out.contains("No breakpoints or watchpoints."), "{out}");
    assert!(out.contains("[Inferior 1 (process 1) detached]"), "{out}");
    more_lines(&vm, 2);
}

/// Reads from `sock` until it is closed or reset, or `deadline` passes:
/// whether it was closed.
fn closed_within(sock: &mut TcpStream, deadline: Duration) -> bool {
    sock.set_read_timeout(Some(deadline)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_second_client_is_refused_and_the_first_goes_on() {
    let vm = q35_stub("");
    let gdb = gdb_held_in_tick(&vm, &["shell sleep 3", "p n", "delete", "detach"]);
    // While gdb holds the session, a second client is turned away.
    let mut second = TcpStream::connect(&vm.debug).unwrap();
    second.write_all(b"+$qSupported#37").unwrap();
    assert!(closed_within(&mut second, Duration::from_secs(30)), "second client not refused");
    let out = gdb.finish();
    let n = hit_n(&out);
    assert!(out.contains(&format!("$1 = {n}\n")), "{out}");
    assert!(out.ends_with("[Inferior 1 (process 1) detached]\n"), "{out}");
    more_lines(&vm, 2);
}

#[test]
fn a_silent_client_does_not_block_the_next_one() {
    let a = artifacts();
    let vm = q35_stub("");
    let silent = TcpStream::connect(&vm.debug).unwrap();
    // It connected and says nothing; a debugger after it gets the stub.
    let started = Instant::now();
    let end = started + DEADLINE;
    loop {
        let gdb = Debugger::gdb(&a.image, &vm.debug, &["p ukdemo::app::TICKS > 0", "detach"]);
        let out = gdb.out.wait_closed("gdb");
        if out.contains("$1 = true") {
            assert!(out.contains("[Inferior 1 (process 1) detached]"), "{out}");
            break;
        }
        assert!(Instant::now() < end, "the silent client still blocks the stub:\n{out}");
    }
    drop(silent);
    more_lines(&vm, 2);
}

/// Boots with `append`, waits for exactly `ready`, and a gdb reads memory
/// through the stub.
fn configured(append: &str, stub_port: u16, ready: &str) {
    let a = artifacts();
    let vm = NetVm::boot_port("q35", &a.image, append, &[], stub_port);
    assert_eq!(vm.wait_stub_ready(), ready);
    let out = Debugger::gdb(&a.image, &vm.debug, &["p ukdemo::app::TICKS > 0", "detach"]).finish();
    assert!(out.contains("$1 = true\n[Inferior 1 (process 1) detached]\n"), "{out}");
    more_lines(&vm, 2);
}

#[test]
fn static_configuration_on_another_port() {
    configured(
        "ukdb.net=10.0.2.15/24,gw=10.0.2.2 ukdb.port=4321",
        4321,
        "ukdb: stub ready on virtio-net 10.0.2.15:4321 (static), breakpoints use int3",
    );
}

#[test]
fn dhcp_configuration() {
    configured(
        "ukdb.net=dhcp",
        1234,
        "ukdb: stub ready on virtio-net 10.0.2.15:1234 (dhcp), breakpoints use int3",
    );
}

#[test]
fn a_bad_net_option_says_so_and_the_unikernel_runs_on() {
    let a = artifacts();
    let vm = NetVm::boot("q35", &a.image, "ukdb.net=10.0.2.300/99", &[]);
    vm.console.wait("the complaint", |t| t.contains("ukdb: bad ukdb.net value '10.0.2.300/99'"));
    more_lines(&vm, 3);
    vm.wait_http_ready();
    let reply = http_get(&vm.http, DEADLINE).unwrap();
    assert!(reply.contains("TICKS "), "{reply}");
    let text = vm.console.text();
    assert!(!text.contains("ukdb: stub ready"), "{text}");
}

#[test]
fn the_production_image_keeps_its_http_server_and_has_no_stub() {
    let a = artifacts();
    let names: Vec<String> = symbols(&a.production).into_iter().map(|(n, _)| n).collect();
    let stub: Vec<&String> = names
        .iter()
        .filter(|n| !is_stub_marker(n) && (n.contains("ukdb_stub") || n.contains("gdbstub")))
        .collect();
    assert_eq!(stub, Vec::<&String>::new(), "stub symbols in the production image");
    for (section, size) in stub_section_sizes(&a.production) {
        assert_eq!(size, 0, "{size} bytes of stub {section} in the production image");
    }
    assert!(names.iter().any(|n| n.contains("smoltcp")), "no TCP/IP stack in production");
    assert!(names.iter().any(|n| n.contains("virtio_drivers")), "no NIC driver in production");
    let vm = NetVm::boot("q35", &a.production, "", &[]);
    vm.wait_http_ready();
    let reply = http_get(&vm.http, DEADLINE).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    assert!(reply.contains("TICKS "), "{reply}");
    let text = vm.console.text();
    assert!(!text.contains("ukdb:"), "{text}");
}

#[test]
fn a_dedicated_debug_nic_beside_the_apps() {
    // Two NICs: the app's (HTTP) and, at 00:05.0, one the stub drives alone.
    let a = artifacts();
    let (debug, http) = (free_port(), free_port());
    let app = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{http}-:8080");
    let stub = format!("user,id=n1,hostfwd=tcp:127.0.0.1:{debug}-:1234");
    let vm = Vm::boot_with(
        "q35",
        &a.image,
        "ukdb.nic=pci:00:05.0 ukdb.net=10.0.2.15/24,gw=10.0.2.2",
        &[
            "-netdev",
            &app,
            "-device",
            "virtio-net-pci,netdev=n0",
            "-netdev",
            &stub,
            "-device",
            "virtio-net-pci,netdev=n1,addr=0x5",
        ],
    );
    let console = std::sync::Arc::new(Output::default());
    console.spawn_reader(connect_unix(&vm.sock));
    let text = console.wait("the stub on its own NIC", |t| t.contains("ukdb: stub ready on "));
    assert!(text.contains("ukdb: stub ready on virtio-net 10.0.2.15:1234 (static)"), "{text}");
    // `ukdb.nic=` is understood, not called unknown.
    assert!(!text.contains("ignoring unknown option"), "{text}");
    console.wait("the app's HTTP server", |t| t.contains("http on port 8080"));
    let gdb = Debugger::gdb(
        &a.image,
        &format!("127.0.0.1:{debug}"),
        &["break ukdemo::app::tick", "continue", "p n == ukdemo::app::TICKS", "detach"],
    )
    .finish();
    assert!(gdb.contains("Breakpoint 1, ukdemo::app::tick (n="), "{gdb}");
    assert!(gdb.contains("$1 = true\n"), "{gdb}");
    assert!(gdb.ends_with("[Inferior 1 (process 1) detached]\n"), "{gdb}");
    let reply = http_get(&format!("127.0.0.1:{http}"), DEADLINE).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
}

/// The bytes of the image's loaded section that holds `addr`.
fn image_bytes(image: &std::path::Path, addr: u64, len: usize) -> Vec<u8> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let section = file
        .sections()
        .find(|s| s.address() <= addr && addr + len as u64 <= s.address() + s.size())
        .expect("no section holds the range");
    let bytes = section.data().unwrap();
    let at = (addr - section.address()) as usize;
    bytes[at..at + len].to_vec()
}

/// The address of `ukdemo::app::tick`.
fn tick_address() -> u64 {
    let image = &artifacts().image;
    symbols(image).into_iter().find(|(n, _)| n.contains("6ukdemo3app4tick")).unwrap().1
}

/// A q35 VM with the network stub up and a raw client attached to it.
fn raw_session(append: &str) -> (NetVm, ukdb_tests::raw::Raw) {
    let vm = q35_stub(append);
    let mut raw = ukdb_tests::raw::Raw::connect(&vm.debug);
    raw.attach();
    (vm, raw)
}

#[test]
fn memory_reads_in_hex_and_binary_over_tcp() {
    use ukdb_tests::raw::unhex;
    let (_vm, mut raw) = raw_session("ukdb.wait");
    let tick = tick_address();
    let want = image_bytes(&artifacts().image, tick, 64);
    // `m`: hex; `x`: binary (escaped), which lldb asks for with `x0,0`.
    let m = raw.request(format!("m{tick:x},40").as_bytes());
    assert_eq!(unhex(m.as_bytes()), Some(want.clone()), "{m}");
    assert_eq!(raw.request(b"x0,0"), "OK");
    raw.send_packet(format!("x{tick:x},40").as_bytes());
    match raw.packet_within(DEADLINE) {
        Some(ukdb_tests::raw::Reply::Packet(body)) => {
            // `}` escapes the next byte (xor 0x20).
            let mut data = Vec::new();
            let mut bytes = body.iter();
            while let Some(&b) = bytes.next() {
                data.push(if b == b'}' { bytes.next().unwrap() ^ 0x20 } else { b });
            }
            assert!(body.contains(&b'}'), "the range has a byte to escape");
            assert_eq!(data, want);
        }
        other => panic!("x reply: {:?}", other.map(|r| r.text())),
    }
    // Nothing mapped at all: EFAULT; a read that runs off the mapped
    // memory answers the part before (the first GiB is all that is mapped).
    assert_eq!(raw.request(b"m7fff00000000,10"), "E0e");
    assert_eq!(raw.request(b"x7fff00000000,10"), "E0e");
    let edge = raw.request(b"m3ffffff8,10");
    assert_eq!(edge.len(), 16, "{edge}");
    // A 32 KiB read in one packet (the network stub's buffers are 64 KiB).
    let big = raw.request(format!("m{tick:x},8000").as_bytes());
    assert_eq!(big.len(), 0x10000);
    assert_eq!(unhex(&big.as_bytes()[..128]), Some(want));
    raw.send_packet(b"D");
}

#[test]
fn stop_replies_carry_pc_sp_fp_and_the_thread() {
    let (vm, mut raw) = raw_session("");
    let tick = tick_address();
    let le = |v: u64| v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(raw.request(format!("Z0,{tick:x},1").as_bytes()), "OK");
    let hit = raw.request(b"vCont;c:p1.-1");
    let re = regex::Regex::new(
        r"^T05thread:p01\.01;swbreak:;06:([0-9a-f]{16});07:([0-9a-f]{16});10:([0-9a-f]{16});$",
    )
    .unwrap();
    let caps = re.captures(&hit).unwrap_or_else(|| panic!("stop reply {hit:?}"));
    assert_eq!(&caps[3], le(tick), "{hit}");
    assert_eq!(raw.request(format!("z0,{tick:x},1").as_bytes()), "OK");
    // A step: `S05` from gdbstub becomes a T reply with the thread.
    let step = raw.request(b"vCont;s:p1.1");
    let re = regex::Regex::new(
        r"^T05thread:p01\.01;06:[0-9a-f]{16};07:[0-9a-f]{16};10:([0-9a-f]{16});$",
    )
    .unwrap();
    let caps = re.captures(&step).unwrap_or_else(|| panic!("step reply {step:?}"));
    assert_ne!(&caps[1], le(tick), "{step}");
    // The expedited values are the registers `g` reports.
    let g = raw.request(b"g");
    assert_eq!(&g[256..272], &caps[1][..], "{g}");
    raw.send_packet(b"D");
    more_lines(&vm, 2);
}

/// The stub still serves: a fresh gdb breaks in `tick` and detaches, and
/// the app prints on.
fn still_serves(vm: &NetVm, what: &str) {
    let a = artifacts();
    let out = Debugger::gdb(
        &a.image,
        &vm.debug,
        &["break ukdemo::app::tick", "continue", "delete", "detach"],
    )
    .finish();
    assert!(out.contains("Breakpoint 1, ukdemo::app::tick (n="), "{what}:\n{out}");
    assert!(out.ends_with("[Inferior 1 (process 1) detached]\n"), "{what}:\n{out}");
    more_lines(vm, 2);
}

/// Hostile clients on the stub's TCP port (rows of the hostile-input
/// catalogue that apply to a network stub): after each, the unikernel runs
/// on and a fresh gdb gets the stub.
#[test]
fn hostile_clients_on_the_tcp_port() {
    use ukdb_tests::raw::{packet, random_bytes, Raw};
    let vm = q35_stub("ukdemo.rate=50");
    more_lines(&vm, 2);

    // Row 2: a random mebibyte, then the connection drops.
    let mut c = Raw::connect(&vm.debug);
    c.set_write_timeout(Some(DEADLINE));
    let _ = c.try_send(&random_bytes(2, 1 << 20));
    c.close();
    more_lines(&vm, 2);
    still_serves(&vm, "after a random MiB");

    // Row 3: a packet longer than PacketSize (valid checksum): dropped whole,
    // `E16`-style error or none, and the session goes on.
    let mut c = Raw::connect(&vm.debug);
    c.attach();
    let body = vec![b'q'; 70_000];
    c.send(&packet(&body));
    let tick = tick_address();
    let mut reply = c.request(format!("m{tick:x},1").as_bytes());
    if reply.starts_with('E') {
        reply = c.reply();
    }
    assert_eq!(reply.len(), 2, "the session after an oversize packet: {reply}");
    // Row 9: `m` of 0xffffffff bytes: a short read of what one reply holds.
    let short = c.request(format!("m{tick:x},ffffffff").as_bytes());
    assert_eq!(short.len(), 0x10000, "m 0xffffffff");
    c.send_packet(b"D");
    c.close();
    more_lines(&vm, 2);

    // Row 33: a 0x03 storm while the unikernel runs, from an attached client.
    let mut c = Raw::connect(&vm.debug);
    c.attach();
    c.send_packet(b"vCont;c:p1.-1");
    c.send(&[0x03; 4096]);
    let stop = c.reply();
    assert!(stop.starts_with('T') || stop.starts_with('S'), "after the storm: {stop}");
    c.drain(Duration::from_millis(200));
    c.send_packet(b"D");
    c.close();
    more_lines(&vm, 2);

    // Row 45: connect/disconnect cycles. QEMU's user networking takes a
    // few of these a second (its listening socket's backlog fills while it
    // connects to the guest, and the host retries a SYN after 1 s), so
    // fewer than through the bridge.
    for _ in 0..30 {
        drop(TcpStream::connect(&vm.debug).unwrap());
    }
    more_lines(&vm, 2);
    still_serves(&vm, "after 30 connects");

    // Row 8: an unterminated packet, then the client vanishes (reset).
    let mut c = Raw::connect(&vm.debug);
    c.send(b"$m100000,10");
    drop(c);
    more_lines(&vm, 2);

    // Row 46: a client sending valid requests at full speed, never reading.
    let mut c = TcpStream::connect(&vm.debug).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let request = packet(format!("m{tick:x},8000").as_bytes());
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && c.write_all(&request).is_ok() {}
    drop(c);
    more_lines(&vm, 2);
    still_serves(&vm, "after a client that never read");
}

/// A breakpoint inside the app's own driver for the NIC it lends the stub:
/// the stub cannot stop there (the app holds the device), so the trap is
/// passed over and counted, and the session and the app go on. The dev
/// image keeps the driver's functions out of line.
#[test]
fn a_breakpoint_in_the_shared_nics_driver_is_passed_over() {
    let image = dev_image();
    let vm = NetVm::boot("q35", image, "", &[]);
    vm.wait_stub_ready();
    let out = Debugger::gdb(
        image,
        &vm.debug,
        &[
            "break ukdemo::net::virtio::NetDevice::receive",
            "break ukdemo::net::poll",
            "continue",
            "continue",
            "monitor stats",
            "delete",
            "detach",
        ],
    )
    .finish();
    let poll = line_of("src/net/mod.rs", "stack::poll();");
    let hit = format!(
        "\nBreakpoint 2, ukdemo::net::poll () at src/net/mod.rs:{poll}\n{poll}\t    stack::poll();\n"
    );
    assert_eq!(out.matches(&hit).count(), 2, "{out}");
    assert!(!out.contains("Breakpoint 1, "), "stopped inside the shared driver:\n{out}");
    let skipped: u64 = capture(&out, r"traps passed over while the stub was busy: (\d+)");
    assert!(skipped >= 1, "{out}");
    assert!(out.ends_with("[Inferior 1 (process 1) detached]\n"), "{out}");
    more_lines(&vm, 2);
}

/// Neither a key nor `ukdb.net=`: the network stub does not listen (and
/// says why), the app's network runs, and the stub is on the serial line.
#[test]
fn without_a_key_or_ukdb_net_the_stub_stays_off_the_network() {
    let a = artifacts();
    let (debug, http) = (free_port(), free_port());
    let netdev = format!(
        "user,id=n0,hostfwd=tcp:127.0.0.1:{debug}-:1234,hostfwd=tcp:127.0.0.1:{http}-:8080"
    );
    let qmp_dir = tempfile::tempdir().unwrap();
    let qmp_sock = qmp_dir.path().join("qmp.sock");
    let [flag, arg] = qmp::args(&qmp_sock);
    // Stopped (-S) until the console is connected: not a byte is missed.
    let extra = ["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0", "-S", &flag, &arg];
    let vm = Vm::boot_with("q35", &a.image, "", &extra);
    let serial = connect_unix(&vm.sock);
    let console = std::sync::Arc::new(Output::default());
    console.spawn_reader(serial.try_clone().unwrap());
    drop(connect_unix(&qmp_sock));
    qmp::execute(&qmp_sock, "cont");
    let text = console.wait("the app's HTTP server", |t| t.contains("http on port 8080"));
    assert!(
        text.contains("ukdb: network stub off: no key and no ukdb.net= (see docs: Security)"),
        "{text}"
    );
    assert!(text.contains("ukdb: stub ready on serial, breakpoints use int3"), "{text}");
    assert!(!text.contains("ukdb: stub ready on virtio"), "{text}");
    let reply = http_get(&format!("127.0.0.1:{http}"), DEADLINE).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    // Nothing listens on the stub's port: the connection ends unanswered.
    let mut sock = TcpStream::connect(format!("127.0.0.1:{debug}")).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = sock.write_all(b"$?#3f");
    let mut got = Vec::new();
    match sock.read_to_end(&mut got) {
        Ok(_) => assert_eq!(got, b"", "a reply on the stub's port"),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    // The serial stub answers, through the bridge.
    serial.shutdown(std::net::Shutdown::Both).unwrap();
    console.wait_closed("the raw console");
    let bridge = Bridge::start(&vm);
    let out =
        Debugger::gdb(&a.image, &bridge.addr, &["p ukdemo::app::TICKS > 0", "detach"]).finish();
    assert!(out.contains("$1 = true\n[Inferior 1 (process 1) detached]\n"), "{out}");
}
