//! Authenticated sessions (issue 8, section 1) on the network stub: a
//! locked session is answered only the handshake and the exchange and does
//! not hold the unikernel; the read-only tier reads but does not write; the
//! full tier writes; wrong answers are refused and delay the next attempt;
//! stock gdb works through `ukdb bridge --net --key-file`; the key never
//! reaches the command line a core keeps.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use ukdb_tests::raw::{hex, unhex, Raw};
use ukdb_tests::{app_lines, artifacts, symbols, Debugger, NetVm, Output, DEADLINE};

const FULL_KEY: &str = "00112233445566778899aabbccddeeff";
const RO_KEY: &str = "0badc0de";

fn append() -> String {
    format!("ukdb.key={FULL_KEY} ukdb.rokey={RO_KEY}")
}

/// A q35 VM with both keys on its command line, its network stub up: with
/// a key, the stub listens without `ukdb.net=` (DHCP).
fn locked_vm() -> NetVm {
    let vm = NetVm::boot_exact("q35", &artifacts().image, &append(), &[], 1234);
    let ready = vm.wait_stub_ready();
    assert!(ready.contains("(dhcp)"), "{ready}");
    assert!(!vm.console.text().contains("network stub off"));
    vm
}

fn key_file(dir: &Path, name: &str, key: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path.display().to_string()
}

/// `ukdb auth`: the response to `nonce` for `tier` with the key in `file`.
fn ukdb_auth(file: &str, tier: &str, nonce: &str) -> String {
    let out = Command::new(&artifacts().ukdb)
        .args(["auth", "--key-file", file, "--tier", tier, "--nonce", nonce])
        .output()
        .unwrap();
    assert!(out.status.success(), "ukdb auth: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(text.len(), 64, "{text}");
    text
}

/// Challenge and answer with the key in `file` for `tier`; the reply.
fn authenticate(raw: &mut Raw, file: &str, tier: &str) -> String {
    let nonce = raw.request(b"qUkdb.challenge");
    assert_eq!(nonce.len(), 64, "{nonce}");
    let mac = ukdb_auth(file, tier, &nonce);
    raw.request(format!("qUkdb.auth:{tier},{mac}").as_bytes())
}

fn tick_address() -> u64 {
    symbols(&artifacts().image).into_iter().find(|(n, _)| n.contains("6ukdemo3app4tick")).unwrap().1
}

/// Waits for `n` more app lines: the unikernel runs.
fn runs(vm: &NetVm, n: usize, what: &str) {
    let have = app_lines(&vm.console.text()).len();
    vm.console.wait(&format!("{n} more app lines {what}"), |t| app_lines(t).len() >= have + n);
}

#[test]
fn tiers_over_the_network_stub() {
    let dir = tempfile::tempdir().unwrap();
    let full = key_file(dir.path(), "full.key", FULL_KEY);
    let ro = key_file(dir.path(), "ro.key", RO_KEY);
    let vm = locked_vm();
    let mut raw = Raw::connect(&vm.debug);
    let tick = tick_address();
    let read = format!("m{tick:x},10");
    // Locked: the handshake is answered, nothing else, and the unikernel
    // runs between the client's packets.
    let stop = raw.attach();
    assert!(stop.starts_with('S') || stop.starts_with('T'), "{stop}");
    for refused in [read.as_str(), "g", "p10", "c", "s", "Z1,1000,1", "qUkdb.info"] {
        assert_eq!(raw.request(refused.as_bytes()), "E01", "{refused} while locked");
    }
    assert_eq!(raw.request(format!("M{tick:x},1:90").as_bytes()), "E01");
    // Ctrl-C from a locked client does not stop it either.
    raw.send(b"\x03");
    runs(&vm, 3, "while a locked client is attached");
    // Read-only: reads, no writes, no software breakpoints.
    assert_eq!(authenticate(&mut raw, &ro, "ro"), "OK");
    let bytes = raw.request(read.as_bytes());
    let original = unhex(bytes.as_bytes()).unwrap_or_else(|| panic!("m: {bytes}"));
    assert_eq!(original.len(), 16);
    assert!(raw.request(b"g").len() > 100);
    let first = hex(&original[..1]);
    for refused in [
        format!("M{tick:x},1:{first}"),
        format!("X{tick:x},0:"),
        format!("Z0,{tick:x},1"),
        "P10=0000000000000000".to_string(),
        "qRcmd,756e736166652d777269746573206f6e".to_string(), // "unsafe-writes on"
    ] {
        assert_eq!(raw.request(refused.as_bytes()), "E01", "{refused} read-only");
    }
    assert_eq!(raw.request(format!("Z1,{tick:x},1").as_bytes()), "OK");
    assert_eq!(raw.request(format!("z1,{tick:x},1").as_bytes()), "OK");
    // The read-only key does not open the full tier.
    assert_eq!(authenticate(&mut raw, &ro, "full"), "E01");
    // Full (after the delay the failure set: retried until accepted).
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut too_soon = 0;
    loop {
        match authenticate(&mut raw, &full, "full").as_str() {
            "OK" => break,
            "E0b" if std::time::Instant::now() < deadline => too_soon += 1,
            other => panic!("full: {other}"),
        }
    }
    assert!(too_soon >= 1, "the answer right after a failure is refused");
    assert_eq!(raw.request(format!("M{tick:x},1:{first}").as_bytes()), "OK");
    assert_eq!(raw.request(read.as_bytes()), bytes);
    raw.send_packet(b"D");
    assert_eq!(raw.reply(), "OK");
    raw.close();
    // A new connection starts locked again.
    let mut raw = Raw::connect(&vm.debug);
    raw.attach();
    assert_eq!(raw.request(read.as_bytes()), "E01");
    raw.close();
    runs(&vm, 2, "after the sessions");
}

#[test]
fn wrong_answers_are_refused_and_delay_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let full = key_file(dir.path(), "full.key", FULL_KEY);
    let wrong = key_file(dir.path(), "wrong.key", "ffff");
    let vm = locked_vm();
    let mut raw = Raw::connect(&vm.debug);
    raw.attach();
    // No challenge yet: refused (and not counted).
    assert_eq!(raw.request(format!("qUkdb.auth:full,{}", "0".repeat(64)).as_bytes()), "E01");
    assert_eq!(authenticate(&mut raw, &full, "full"), "OK");
    raw.send_packet(b"D");
    assert_eq!(raw.reply(), "OK");
    raw.close();
    let mut raw = Raw::connect(&vm.debug);
    raw.attach();
    // Malformed answers are wrong ones.
    raw.request(b"qUkdb.challenge");
    assert_eq!(raw.request(b"qUkdb.auth:full,zz"), "E01");
    for failures in 2..=3 {
        // Right after a failure even the right answer is not checked.
        assert_eq!(
            authenticate(&mut raw, &full, "full"),
            "E0b",
            "after {} failure(s)",
            failures - 1
        );
        let deadline = std::time::Instant::now() + DEADLINE;
        // Wait it out (a wrong answer each time it is checked again).
        loop {
            match authenticate(&mut raw, &wrong, "full").as_str() {
                "E0b" if std::time::Instant::now() < deadline => continue,
                "E01" => break,
                other => panic!("{other}"),
            }
        }
    }
    assert_eq!(raw.request(b"m0,1"), "E01");
    runs(&vm, 2, "while failing");
    raw.close();
}

#[test]
fn monitor_auth_for_a_plain_client_and_no_key_on_the_kept_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ro = key_file(dir.path(), "ro.key", RO_KEY);
    let vm = locked_vm();
    let mut raw = Raw::connect(&vm.debug);
    raw.attach();
    let rcmd = |cmd: &str| format!("qRcmd,{}", hex(cmd.as_bytes()));
    let text = |reply: String| {
        String::from_utf8(unhex(reply.as_bytes()).unwrap_or_else(|| panic!("not hex: {reply}")))
            .unwrap()
    };
    assert_eq!(raw.request(rcmd("why").as_bytes()), "E01");
    let said = text(raw.request(rcmd("auth").as_bytes()));
    let nonce = said
        .lines()
        .find_map(|l| l.strip_prefix("ukdb: challenge "))
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    eprintln!("{said}");
    assert!(said.starts_with("ukdb: nonce from "), "{said}");
    let mac = ukdb_auth(&ro, "ro", &nonce);
    let said = text(raw.request(rcmd(&format!("auth ro {mac}")).as_bytes()));
    assert_eq!(said, "ukdb: authenticated: read-only access\n");
    // gdbstub answers `monitor why` with console output, then OK.
    let mut why = String::new();
    let mut reply = raw.request(rcmd("why").as_bytes());
    while reply != "OK" {
        let o = reply.strip_prefix('O').unwrap_or_else(|| panic!("{reply}"));
        why += &text(o.to_string());
        reply = raw.reply();
    }
    assert_eq!(reply, "OK");
    assert!(why.starts_with("interrupted by the debugger"), "{why}");
    // The core queries' command line (what a core keeps) has no key.
    let info = raw.request(b"qUkdb.info");
    let cmdline = info.split(';').find_map(|f| f.strip_prefix("cmdline:")).expect(&info);
    let cmdline = String::from_utf8(unhex(cmdline.as_bytes()).unwrap()).unwrap();
    assert!(cmdline.contains("ukdb.key=* ukdb.rokey=*"), "{cmdline}");
    assert!(!cmdline.contains(FULL_KEY) && !cmdline.contains(RO_KEY), "{cmdline}");
    raw.send_packet(b"D");
    assert_eq!(raw.reply(), "OK");
    // Nor does the console: not the stub, and not the example's own boot
    // line with its command line (which once printed the keys).
    let console = vm.console.text();
    let leaks: Vec<&str> =
        console.lines().filter(|l| l.contains(FULL_KEY) || l.contains(RO_KEY)).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    let booted = console.lines().find(|l| l.starts_with("ukdemo: booted")).expect(&console);
    assert!(booted.contains("ukdb.key=* ukdb.rokey=*"), "{booted}");
}

/// `ukdb bridge --net --key-file FILE --tier TIER` for the stub at `stub`.
fn bridge(stub: &str, key_file: &str, tier: &str) -> (ukdb_tests::Proc, String, Arc<Output>) {
    let mut child = Command::new(&artifacts().ukdb)
        .args(["bridge", "--net", "--target", &format!("tcp:{stub}"), "--listen", "127.0.0.1:0"])
        .args(["--key-file", key_file, "--tier", tier])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Output::default());
    stderr.spawn_reader(child.stderr.take().unwrap());
    let text = stderr.wait("the bridge to listen", |t| t.contains("ukdb: listening on "));
    let addr = text.lines().find_map(|l| l.strip_prefix("ukdb: listening on ")).unwrap();
    (ukdb_tests::Proc(child), addr.to_string(), stderr)
}

#[test]
fn stock_gdb_through_the_bridge_on_a_locked_stub() {
    let dir = tempfile::tempdir().unwrap();
    let full = key_file(dir.path(), "full.key", FULL_KEY);
    let ro = key_file(dir.path(), "ro.key", RO_KEY);
    let a = artifacts();
    let vm = locked_vm();
    // Full: a software breakpoint, a backtrace, a memory write.
    let (_bridge, addr, _) = bridge(&vm.debug, &full, "full");
    let gdb = Debugger::gdb(
        &a.image,
        &addr,
        &["break ukdemo::app::tick", "continue", "bt", "set var $rax = 5", "p $rax", "detach"],
    );
    let out = gdb.finish();
    assert!(out.contains("Breakpoint 1, ukdemo::app::tick"), "{out}");
    assert!(out.contains("$1 = 5"), "{out}");
    drop(_bridge);
    runs(&vm, 2, "after the full session");
    // Read-only: reads work, a register write is refused, and gdb says so.
    let (_bridge, addr, _) = bridge(&vm.debug, &ro, "ro");
    let gdb = Debugger::gdb(
        &a.image,
        &addr,
        &[
            "x/4xb ukdemo::app::tick",
            "set var $rax = 5",
            "hbreak ukdemo::app::tick",
            "continue",
            "detach",
        ],
    );
    let out = gdb.finish();
    assert!(out.contains("app4tick") && out.contains(">:\t0x55"), "{out}");
    assert!(out.contains("E01") || out.contains("Could not write register"), "{out}");
    assert!(out.contains("Hardware assisted breakpoint 1 at"), "{out}");
    assert!(out.contains("Breakpoint 1, ukdemo::app::tick"), "{out}");
    // A wrong key: the bridge says so and gdb gets no session.
    let wrong = key_file(dir.path(), "wrong.key", "ffff");
    let (_bridge, addr, stderr) = bridge(&vm.debug, &wrong, "full");
    let _ = std::net::TcpStream::connect(&addr).unwrap();
    stderr.wait("the refusal", |t| t.contains("ukdb: cannot authenticate to the stub"));
}

#[test]
fn stock_gdb_through_the_serial_bridge_on_a_locked_stub() {
    let dir = tempfile::tempdir().unwrap();
    let ro = key_file(dir.path(), "ro.key", RO_KEY);
    let a = artifacts();
    let vm = ukdb_tests::Vm::boot("q35", &a.image, &append());
    let bridge = ukdb_tests::Bridge::start_with(&vm, &["--key-file", &ro, "--tier", "ro"]);
    // Read-only over the serial line: reads and a hardware breakpoint work,
    // a register write is refused.
    let gdb = Debugger::gdb(
        &a.image,
        &bridge.addr,
        &[
            "x/4xb ukdemo::app::tick",
            "set var $rax = 5",
            "hbreak ukdemo::app::tick",
            "continue",
            "bt 1",
            "detach",
        ],
    );
    let out = gdb.finish();
    assert!(out.contains("app4tick") && out.contains(">:\t0x55"), "{out}");
    assert!(out.contains("Could not write register \"rax\"; remote failure reply 'E01'"), "{out}");
    assert!(out.contains("Breakpoint 1, ukdemo::app::tick"), "{out}");
    bridge.wait_more_lines(2);
    // Without the key, gdb's session stays locked: its register read is
    // refused.
    drop(bridge);
    let plain = ukdb_tests::Bridge::start(&vm);
    let gdb = Debugger::gdb(&a.image, &plain.addr, &["info registers rip"]);
    gdb.out.wait("gdb refused", |t| t.contains("remote failure reply 'E01'"));
    plain.wait_more_lines(2);
}
