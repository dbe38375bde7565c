//! End-to-end tests of `ukdb bridge`: the real binary between a fake stub
//! (a Unix socket or a pty that the test owns) and debugger clients on TCP.

mod support;

use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::signal::Signal;
use support::{framed, packet, show, Bridge, Client, FakeStub, DLE, ENDED, HELLO};

const SYNC: [u8; 2] = [DLE, b'F'];
const DETACH: [u8; 2] = [DLE, b'X'];
const RAW: [u8; 2] = [DLE, b'R'];

fn unix_target(path: &Path) -> String {
    format!("unix:{}", path.display())
}

/// Starts a bridge on a fresh Unix socket and completes the framing
/// handshake: returns the bridge, the fake stub and the socket path.
fn synced_bridge(dir: &Path, extra: &[&str]) -> (Bridge, FakeStub, String) {
    let path = dir.join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let target = unix_target(&path);
    let bridge = Bridge::start(&target, extra);
    let mut stub = FakeStub::accept(&listener);
    stub.expect(&SYNC);
    stub.send(&SYNC);
    bridge.stderr.wait_line("ukdb: stub answered; framing on");
    (bridge, stub, target)
}

/// A bridge on a line whose stub says hello and answers the framing
/// request, then reads nothing more (a slow or stuck line); the line's end
/// is returned to the test.
fn bridge_on_a_stalled_line(dir: &Path) -> (Bridge, std::os::unix::net::UnixStream) {
    use std::io::{Read, Write};
    let path = dir.join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let bridge = Bridge::start(&unix_target(&path), &[]);
    let mut line = support::accept_unix(&listener);
    line.write_all(&HELLO).unwrap();
    let mut sync = [0u8; 2];
    line.read_exact(&mut sync).unwrap();
    assert_eq!(sync, SYNC);
    line.write_all(&SYNC).unwrap();
    bridge.stderr.wait_line(FRAMING_ON);
    (bridge, line)
}

#[test]
fn console_and_rsp_share_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let log = dir.path().join("console.log");
    let listener = UnixListener::bind(&path).unwrap();
    let target = unix_target(&path);
    let mut bridge = Bridge::start(&target, &["--console-log", log.to_str().unwrap()]);
    let addr = bridge.listen_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    // The stub says hello; the bridge answers with its request for framing.
    // Until the stub answers that, all it sends is console text, DLE
    // sequences included.
    let mut stub = FakeStub::accept(&listener);
    stub.expect(&SYNC);
    stub.send(b"early boot\r\n\x10C raw\n");
    stub.send(&SYNC);
    stub.send(&framed(b'C', b"hello from the unikernel\n"));
    bridge.stderr.wait_line("ukdb: stub answered; framing on");

    // A debugger connects; its packet reaches the stub whole, even when it
    // arrives in two writes.
    let mut gdb = Client::connect(addr);
    bridge.stderr.wait_line("ukdb: debugger connected (127.0.0.1:");
    gdb.send(b"$qSupp");
    gdb.send(b"orted#37");
    stub.expect(b"$qSupported#37");

    // The stub's reply, interleaved with console text; a DLE inside the
    // reply (doubled on the wire), and a framing error kept as console text.
    let reply = packet(b"PacketSize=4000;QStartNoAckMode+");
    let binary = packet(b"b\x10\x10z");
    let mut wire = framed(b'D', b"+");
    wire.extend(framed(b'D', &reply[..10]));
    wire.extend(framed(b'C', b"console in between\n"));
    wire.extend(framed(b'D', &reply[10..]));
    wire.extend(framed(b'C', b"odd \x10"));
    wire.extend(b"\x10Zescape\n"); // DLE 'Z': not a known escape
    wire.extend(framed(b'D', &binary));
    stub.send(&wire);
    let mut expect_reply = b"+".to_vec();
    expect_reply.extend(&reply);
    expect_reply.extend(&binary);
    gdb.expect(&expect_reply);

    // Acks and Ctrl-C go through at once.
    gdb.send(b"+");
    stub.expect(b"+");
    gdb.send(&[0x03]);
    stub.expect(&[0x03]);

    // A second debugger is refused while the first is attached.
    let second = Client::connect(addr);
    second.received.wait_closed("the second client to be refused");
    bridge.stderr.wait_line("refused debugger 127.0.0.1:");
    assert_eq!(show(&second.received.bytes()), "");

    // The first leaves in the middle of a packet: the partial packet is
    // dropped and the stub is told the debugger is gone.
    gdb.send(b"$m1000");
    drop(gdb);
    stub.expect(&DETACH);
    bridge.stderr.wait_line("ukdb: debugger disconnected (127.0.0.1:");

    // Stub output for nobody is discarded, console text still shown. The
    // console line comes after the packet on the wire, so once it shows the
    // packet has been dealt with (before the next debugger can attach).
    stub.send(&framed(b'D', &packet(b"OK")));
    stub.send(&framed(b'C', b"nobody attached\n"));
    bridge.stdout.wait("the console line after the orphan packet", |b, _| {
        b.windows(16).any(|w| w == b"nobody attached\n")
    });

    // Debuggers may come back.
    let mut gdb = Client::connect(addr);
    bridge.stderr.wait_line("ukdb: debugger connected (127.0.0.1:");
    gdb.send(&packet(b"g"));
    stub.expect(&packet(b"g"));
    stub.send(&framed(b'D', &packet(b"E01")));
    gdb.expect(&packet(b"E01"));

    // The unikernel goes away: the bridge says so and exits with 3.
    stub.send(&framed(b'C', b"bye\n"));
    drop(stub);
    let status = bridge.wait_exit();
    assert_eq!(status.code(), Some(3), "stderr:\n{}", bridge.stderr.text());
    let closed_line = format!("ukdb: unikernel channel closed ({target})");
    assert!(
        bridge.stderr.text().lines().any(|l| l == closed_line),
        "stderr:\n{}",
        bridge.stderr.text()
    );
    gdb.received.wait_closed("the client to be closed");

    let console: &[u8] = b"early boot\r\n\x10C raw\nhello from the unikernel\n\
        console in between\nodd \x10\x10Zescape\nnobody attached\nbye\n";
    assert_eq!(show(&bridge.stdout.bytes()), show(console));
    assert_eq!(show(&std::fs::read(&log).unwrap()), show(console));
}

#[test]
fn sigint_detaches_the_debugger_then_switches_to_raw() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    let mut gdb = Client::connect(bridge.listen_addr());
    bridge.stderr.wait_line("ukdb: debugger connected");
    gdb.send(&packet(b"?"));
    stub.expect(&packet(b"?"));
    // Half a packet is never forwarded, not even on the way out: whether or
    // not the bridge has read it by the time of the signal, the stub must
    // see nothing of it. (The reply round trip gives the bridge's debugger
    // task a turn to read it.)
    gdb.send(b"$vCont;");
    stub.send(&framed(b'D', b"+"));
    gdb.expect(b"+");

    bridge.signal(Signal::SIGINT);
    stub.expect(&DETACH);
    stub.expect(&RAW);
    let status = bridge.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bridge.stderr.text());
    stub.expect_closed();
}

#[test]
fn sigterm_without_a_debugger_switches_to_raw() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    bridge.signal(Signal::SIGTERM);
    stub.expect(&RAW);
    let status = bridge.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bridge.stderr.text());
    stub.expect_closed();
}

#[test]
fn trace_logs_packets_and_control_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &["--trace"]);
    let mut gdb = Client::connect(bridge.listen_addr());
    gdb.send(b"+");
    gdb.send(&packet(b"m1000,8"));
    stub.expect(b"+");
    stub.expect(&packet(b"m1000,8"));
    let mut reply = framed(b'D', b"+");
    reply.extend(framed(b'D', &packet(b"\x10\x01")));
    stub.send(&reply);
    gdb.expect(b"+");
    gdb.expect(&packet(b"\x10\x01"));
    gdb.send(&[0x03]);
    stub.expect(&[0x03]);
    drop(gdb);
    stub.expect(&DETACH);

    let stderr = &bridge.stderr;
    stderr.wait_line("ukdb: stub -> bridge: DLE 'H' (hello)");
    stderr.wait_line("ukdb: bridge -> stub: DLE 'F' (answer to the stub's hello)");
    stderr.wait_line("ukdb: stub -> bridge: DLE 'F' (framing on)");
    stderr.wait_line("ukdb: gdb -> stub: + (ack)");
    stderr.wait_line("ukdb: gdb -> stub: $m1000,8#92");
    stderr.wait_line("ukdb: stub -> bridge: DLE 'D' (debugger)");
    stderr.wait_line("ukdb: stub -> gdb: + (ack)");
    stderr.wait_line("ukdb: stub -> gdb: $\\x10\\x01#11");
    stderr.wait_line("ukdb: gdb -> stub: ^C (interrupt)");
    stderr.wait_line("ukdb: bridge -> stub: DLE 'X' (debugger gone)");
    stderr.wait_line("ukdb: stub -> bridge: DLE 'E' (session ended)");
}

#[test]
fn waits_for_the_target_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let target = unix_target(&path);
    let bridge = Bridge::start(&target, &[]);
    // The bridge is retrying: now QEMU "starts".
    bridge.stderr.wait_line(&format!("ukdb: waiting for {target}"));
    let listener = UnixListener::bind(&path).unwrap();
    let mut stub = FakeStub::accept(&listener);
    stub.expect(&SYNC);
}

#[test]
fn gives_up_after_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let target = unix_target(&dir.path().join("never.sock"));
    let mut bridge = Bridge::start(&target, &["--connect-timeout", "0.3"]);
    let status = bridge.wait_exit();
    assert_eq!(status.code(), Some(1), "stderr:\n{}", bridge.stderr.text());
    bridge.stderr.wait_line(&format!("ukdb: error: cannot connect to {target}"));
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["bridge"][..],
        &["bridge", "--target", "/tmp/x"],
        &["bridge", "--target", "unix:/tmp/x", "--listen", "nonsense"],
        &["bridge", "--target", "unix:/tmp/x", "--connect-timeout", "-1"],
        &["frobnicate"],
    ] {
        let mut bridge = Bridge::spawn(args);
        let status = bridge.wait_exit();
        assert_eq!(status.code(), Some(2), "{args:?}: {}", bridge.stderr.text());
    }
}

#[test]
fn pty_target() {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    // Keep the test's slave descriptor open for the whole test, so that the
    // master never sees the slave side closed.
    let slave_path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    let master = std::fs::File::from(pty.master);
    let target = format!("pty:{}", slave_path.display());
    let mut bridge = Bridge::start(&target, &[]);
    let addr = bridge.listen_addr();

    let mut stub = FakeStub::new(master.try_clone().unwrap(), master);
    // Say hello once the bridge has opened the slave in raw mode (before,
    // the slave's line discipline would echo it).
    bridge.stderr.wait_line(&format!("ukdb: connected to {target}"));
    stub.send(&HELLO);
    stub.expect(&SYNC);
    // Raw mode: no echo of what the stub sends, no CR/LF translation.
    stub.send(b"raw\n");
    stub.send(&SYNC);
    stub.send(&framed(b'C', b"framed\r\n"));
    bridge.stderr.wait_line("ukdb: stub answered; framing on");
    bridge.stdout.wait_exact("the console", b"raw\nframed\r\n");

    let mut gdb = Client::connect(addr);
    gdb.send(&packet(b"qSupported"));
    stub.expect(b"$qSupported#37");
    stub.send(&framed(b'D', &packet(b"PacketSize=1000")));
    gdb.expect(&packet(b"PacketSize=1000"));

    bridge.signal(Signal::SIGTERM);
    stub.expect(&DETACH);
    stub.expect(&RAW);
    assert_eq!(bridge.wait_exit().code(), Some(0));
    assert_eq!(show(&stub.unexpected()), "");
    drop(pty.slave);
}

#[test]
fn debugger_on_a_unix_socket() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let gdb_path = dir.path().join("gdb.sock");
    let listen = format!("unix:{}", gdb_path.display());
    let serial = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&serial).unwrap();
    let mut bridge =
        Bridge::spawn(&["bridge", "--target", &unix_target(&serial), "--listen", &listen]);
    bridge.stderr.wait_line(&format!("ukdb: listening on {listen}"));
    let mut stub = FakeStub::accept(&listener);
    stub.expect(&SYNC);
    stub.send(&SYNC);

    let mut gdb = std::os::unix::net::UnixStream::connect(&gdb_path).unwrap();
    gdb.set_read_timeout(Some(support::TIMEOUT)).unwrap();
    gdb.write_all(&packet(b"qSupported")).unwrap();
    stub.expect(&packet(b"qSupported"));
    stub.send(&framed(b'D', &packet(b"OK")));
    let mut reply = vec![0; packet(b"OK").len()];
    gdb.read_exact(&mut reply).unwrap();
    assert_eq!(show(&reply), show(&packet(b"OK")));
    drop(gdb);
    stub.expect(&DETACH);

    bridge.signal(Signal::SIGTERM);
    stub.expect(&RAW);
    assert_eq!(bridge.wait_exit().code(), Some(0));
    assert!(!gdb_path.exists(), "the listening socket is removed on exit");
}

#[test]
fn non_loopback_listen_address_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let bridge =
        Bridge::spawn(&["bridge", "--target", &unix_target(&path), "--listen", "0.0.0.0:0"]);
    bridge.stderr.wait_line("which is not a loopback address");
    let line = bridge.stderr.wait_line("ukdb: listening on ");
    assert!(line.starts_with("ukdb: listening on 0.0.0.0:"), "{line}");
}

#[test]
fn tcp_target() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", listener.local_addr().unwrap());
    let mut bridge = Bridge::start(&target, &[]);
    let mut stub = FakeStub::accept_tcp(&listener);
    stub.expect(&SYNC);
    stub.send(&SYNC);
    stub.send(&framed(b'C', b"over tcp\n"));
    let mut gdb = Client::connect(bridge.listen_addr());
    gdb.send(&packet(b"qSupported"));
    stub.expect(&packet(b"qSupported"));
    stub.send(&framed(b'D', &packet(b"")));
    gdb.expect(&packet(b""));
    drop(stub);
    assert_eq!(bridge.wait_exit().code(), Some(3));
    bridge.stderr.wait_line(&format!("ukdb: unikernel channel closed ({target})"));
    assert_eq!(show(&bridge.stdout.bytes()), "over tcp\\n");
}

#[test]
fn oversized_packet_drops_the_debugger() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    let addr = bridge.listen_addr();
    let mut gdb = Client::connect(addr);
    gdb.send(&packet(b"?"));
    stub.expect(&packet(b"?"));
    // 1 MiB and a bit, never terminated. The bridge may close the
    // connection before all of it is written.
    let mut huge = vec![b'$'];
    huge.resize((1 << 20) + 16, b'a');
    let _ = gdb.stream.write_all(&huge);
    bridge.stderr.wait_line("RSP packet larger than 1048576 bytes; dropping it");
    gdb.received.wait_closed("the bridge to drop the debugger");
    // Nothing of the oversized packet reached the stub, only the detach.
    stub.expect(&DETACH);
    bridge.stderr.wait_line("ukdb: debugger disconnected");

    // A well-behaved debugger is welcome afterwards.
    let mut gdb = Client::connect(addr);
    gdb.send(&packet(b"g"));
    stub.expect(&packet(b"g"));
}

// ---- Protocol v2: hello, probes, restarts, acknowledged detaches, bounds ----

const FRAMING_ON: &str = "ukdb: stub answered; framing on";

/// How many times `needle` occurs in what was captured so far.
fn count(capture: &support::Capture, needle: &str) -> usize {
    capture.text().matches(needle).count()
}

/// Waits until `needle` occurs at least `n` times.
fn wait_count(capture: &support::Capture, needle: &str, n: usize) {
    capture.wait(&format!("{n} x {needle:?}"), |b, _| {
        String::from_utf8_lossy(b).matches(needle).count() >= n
    });
}

#[test]
fn probes_at_most_three_times_then_warns() {
    // No stub says hello (a production image, or a stub that announced
    // itself before the bridge connected): the bridge probes three times,
    // 2, 3 and 5 s after connecting, then warns and writes nothing more.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut bridge = Bridge::start(&unix_target(&path), &[]);
    let mut stub = FakeStub::accept_silent(&listener);
    let accepted = std::time::Instant::now();
    stub.send(b"plain \x10D console \x10\x10 $OK#9a\n");
    bridge.stdout.wait_exact("the console", b"plain \x10D console \x10\x10 $OK#9a\n");
    stub.expect(&SYNC);
    let first = accepted.elapsed();
    assert!(first >= std::time::Duration::from_millis(1500), "first probe after {first:?}");
    bridge.stderr.wait_line(
        "ukdb: warning: no ukdb stub announced itself or answered the bridge's probes within 7s",
    );
    assert_eq!(show(&stub.unexpected()), show(b"\x10F\x10F"), "bytes at the stub");
    stub.expect(b"\x10F\x10F");
    assert!(!bridge.stderr.text().contains(FRAMING_ON));

    // A stub that starts later says hello and is answered.
    stub.send(&HELLO);
    stub.expect(&SYNC);
    stub.send(&SYNC);
    bridge.stderr.wait_line(FRAMING_ON);
    drop(stub);
    assert_eq!(bridge.wait_exit().code(), Some(3));
}

#[test]
fn no_probe_writes_nothing_until_a_hello() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut bridge = Bridge::start(&unix_target(&path), &["--no-probe"]);
    let addr = bridge.listen_addr();
    let mut stub = FakeStub::accept_silent(&listener);
    stub.send(b"booting\n");
    bridge.stdout.wait_exact("the console", b"booting\n");
    bridge.stderr.wait_line("ukdb: warning: no ukdb stub announced itself within 7s");
    assert_eq!(show(&stub.unexpected()), "", "bytes at the stub");

    stub.send(&HELLO);
    stub.expect(&SYNC);
    stub.send(&SYNC);
    bridge.stderr.wait_line(FRAMING_ON);
    let mut gdb = Client::connect(addr);
    gdb.send(&packet(b"qSupported"));
    stub.expect(&packet(b"qSupported"));
    stub.send(&framed(b'D', &packet(b"OK")));
    gdb.expect(&packet(b"OK"));

    bridge.signal(Signal::SIGTERM);
    stub.expect(&DETACH);
    stub.expect(&RAW);
    assert_eq!(bridge.wait_exit().code(), Some(0));
}

#[test]
fn a_restarted_unikernel_is_resynchronised() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    let addr = bridge.listen_addr();
    let mut gdb = Client::connect(addr);
    bridge.stderr.wait_line("ukdb: debugger connected");
    gdb.send(&packet(b"?"));
    stub.expect(&packet(b"?"));

    // A guest reset: the stub starts afresh, in raw mode, and says hello.
    stub.send(b"\x10Hrebooting \x10D\n");
    gdb.received.wait_closed("the bridge to drop the debugger");
    bridge.stderr.wait_line("ukdb: the unikernel restarted; dropped debugger 127.0.0.1:");
    // No DLE 'X' (the new stub has no session): framing is requested again.
    stub.expect(&SYNC);
    bridge.stdout.wait_exact("the console after the reset", b"rebooting \x10D\n");
    stub.send(&SYNC);
    wait_count(&bridge.stderr, FRAMING_ON, 2);

    // A new debugger works.
    let mut gdb = Client::connect(addr);
    wait_count(&bridge.stderr, "ukdb: debugger connected", 2);
    gdb.send(&packet(b"g"));
    stub.expect(&packet(b"g"));
    stub.send(&framed(b'D', &packet(b"E01")));
    gdb.expect(&packet(b"E01"));
    assert_eq!(show(&stub.unexpected()), "");
}

#[test]
fn late_replies_never_reach_the_next_debugger() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    stub.set_auto_ended(false);
    let addr = bridge.listen_addr();
    let mut first = Client::connect(addr);
    first.send(&packet(b"m1000,4"));
    stub.expect(&packet(b"m1000,4"));
    drop(first);
    stub.expect(&DETACH);
    bridge.stderr.wait_line("ukdb: debugger disconnected");

    let mut second = Client::connect(addr);
    second.send(&packet(b"qSupported"));
    // The stub was still busy with the first debugger's request: its reply
    // comes late, before the stub's acknowledgement of the DLE 'X' (which
    // the second debugger's first request waits for).
    let mut wire = framed(b'D', b"+");
    wire.extend(framed(b'D', &packet(b"deadbeef")));
    wire.extend(ENDED);
    stub.send(&wire);
    stub.expect(&packet(b"qSupported"));
    let mut wire = framed(b'D', b"+");
    wire.extend(framed(b'D', &packet(b"PacketSize=4000")));
    wire.extend(framed(b'C', b"marker\n"));
    stub.send(&wire);
    let mut expect = b"+".to_vec();
    expect.extend(packet(b"PacketSize=4000"));
    second.expect(&expect);
    bridge.stdout.wait_exact("the console marker", b"marker\n");
    assert_eq!(show(&second.received.bytes()), show(&expect));
}

#[test]
fn a_debugger_that_leaves_before_the_stub_answers_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let bridge = Bridge::start(&unix_target(&path), &[]);
    let addr = bridge.listen_addr();
    let mut stub = FakeStub::accept_silent(&listener);

    // No stub has answered yet; a gdb connects, sends, and gives up.
    let mut first = Client::connect(addr);
    bridge.stderr.wait_line("ukdb: debugger connected");
    first.send(&packet(b"qSupported:first"));
    drop(first);
    bridge.stderr.wait_line("ukdb: debugger disconnected");

    // The next one gets the slot.
    let mut second = Client::connect(addr);
    wait_count(&bridge.stderr, "ukdb: debugger connected", 2);
    assert_eq!(count(&bridge.stderr, "refused debugger"), 0, "{}", bridge.stderr.text());

    stub.send(&HELLO);
    stub.skip_to(&SYNC);
    stub.send(&SYNC);
    bridge.stderr.wait_line(FRAMING_ON);
    second.send(&packet(b"g"));
    let before = stub.skip_to(&packet(b"g"));
    // Before it: framing requests only (probes, the answer to the hello).
    // Nothing of the first debugger, and no DLE 'X' for it: it never
    // reached the stub.
    assert!(before.chunks(2).all(|c| c == SYNC), "{}", show(&before));
    stub.send(&framed(b'D', &packet(b"OK")));
    second.expect(&packet(b"OK"));
}

#[test]
fn a_flooding_client_is_slowed_down_not_buffered() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (bridge, line) = bridge_on_a_stalled_line(dir.path());
    let addr = bridge.listen_addr();

    let mut gdb = Client::connect(addr);
    bridge.stderr.wait_line("ukdb: debugger connected");
    // Packets and stray bytes, as fast as the bridge takes them, for 3 s.
    let mut chunk = packet(&[b'a'; 16 * 1024]);
    chunk.extend([b'+'; 4096]);
    gdb.stream.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut sent = 0usize;
    while Instant::now() < until {
        if let Ok(n) = gdb.stream.write(&chunk) {
            sent += n;
        }
    }
    let peak_kb = bridge.status_kb("VmHWM");
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} kB after the client sent {sent} bytes");

    // Once the line drains the bridge carries on: the client leaves and its
    // DLE 'X' comes last.
    drop(gdb);
    let mut stub = FakeStub::new(line.try_clone().unwrap(), line);
    stub.skip_to(&DETACH);
    bridge.stderr.wait_line("ukdb: debugger disconnected");
    assert_eq!(show(&stub.unexpected()), "");
}

#[test]
fn requests_are_paced_one_at_a_time() {
    // A client that writes 3000 requests at once and leaves (hostile-inputs
    // row f, lifecycle.rs): only its first request reaches the stub (which is
    // slow: it answers nothing), the rest are dropped when it leaves. The
    // next client's first request goes once the stub has acknowledged the
    // DLE 'X', without waiting for thousands of answers.
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    stub.set_auto_ended(false);
    let addr = bridge.listen_addr();
    let mut burst = Vec::new();
    for i in 0..3000u32 {
        burst.extend(packet(format!("m{:x},40", 0x10_0000 + i % 64 * 0x40).as_bytes()));
    }
    let mut first = Client::connect(addr);
    first.send(&burst);
    // Its first request reaches the stub; the client leaves with the other
    // 2999 waiting in the bridge.
    stub.expect(&packet(b"m100000,40"));
    drop(first);
    bridge.stderr.wait_line("ukdb: debugger disconnected");
    stub.expect(&DETACH);
    assert_eq!(show(&stub.unexpected()), "");

    // Acks go at once; the first request waits for the DLE 'E' (an ack is
    // written after it, so once the ack is at the stub, the request has been
    // held, not forwarded).
    let mut second = Client::connect(addr);
    wait_count(&bridge.stderr, "ukdb: debugger connected", 2);
    second.send(&packet(b"qSupported"));
    second.send(b"+");
    stub.expect(b"+");
    // It waited long: gdb retransmits it (it saw no ack in time). The stub
    // gets it once, or it would answer twice.
    second.send(&packet(b"qSupported"));
    second.send(b"+");
    stub.expect(b"+");
    let mut wire = framed(b'D', b"+");
    wire.extend(framed(b'D', &packet(&[b'0'; 128])));
    wire.extend(ENDED);
    stub.send(&wire);
    stub.expect(&packet(b"qSupported"));

    // One request at a time: the second waits for the answer to the first.
    second.send(&packet(b"g"));
    second.send(&packet(b"?"));
    second.send(&[0x03]);
    stub.expect(&[0x03]);
    stub.send(&framed(b'D', &packet(b"PacketSize=4000")));
    stub.expect(&packet(b"g"));
    stub.send(&framed(b'D', &packet(b"0000")));
    stub.expect(&packet(b"?"));
    stub.send(&framed(b'D', &packet(b"S05")));
    let mut expect = packet(b"PacketSize=4000");
    expect.extend(packet(b"0000"));
    expect.extend(packet(b"S05"));
    second.expect(&expect);
    assert_eq!(show(&second.received.bytes()), show(&expect));
    assert_eq!(show(&stub.unexpected()), "");
}

#[test]
fn junk_from_a_client_does_not_wait_for_the_line() {
    // Hostile-inputs row 2 (random bytes, then close, then the next gdb at
    // once): bytes outside packets other than `+`, `-` and 0x03 are dropped
    // rather than queued for the line (the stub drops them anyway), so a
    // slow line does not keep the bridge from reading the client to its
    // end and freeing the slot.
    use std::io::Write;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (bridge, line) = bridge_on_a_stalled_line(dir.path());
    let addr = bridge.listen_addr();

    let mut junk = Client::connect(addr);
    bridge.stderr.wait_line("ukdb: debugger connected");
    let bytes: Vec<u8> = (0..4u32 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    junk.stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = junk.stream.write_all(&bytes);
    drop(junk);
    bridge.stderr.wait_line("ukdb: debugger disconnected");
    let mut next = Client::connect(addr);
    wait_count(&bridge.stderr, "ukdb: debugger connected", 2);
    assert_eq!(count(&bridge.stderr, "refused debugger"), 0);
    // Nothing of it went to the line: the next debugger's packet is the
    // first thing the stub reads.
    next.send(&packet(b"g"));
    let mut stub = FakeStub::new(line.try_clone().unwrap(), line);
    stub.expect(&packet(b"g"));
}

#[test]
fn a_blocked_stdout_does_not_stall_the_debugger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut bridge = Bridge::spawn_unread_stdout(&[
        "bridge",
        "--target",
        &unix_target(&path),
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr = bridge.listen_addr();
    let mut stub = FakeStub::accept(&listener);
    stub.expect(&SYNC);
    stub.send(&SYNC);
    bridge.stderr.wait_line(FRAMING_ON);
    let mut gdb = Client::connect(addr);
    gdb.send(&packet(b"?"));
    stub.expect(&packet(b"?"));

    // 1 MiB of console text that nobody reads from stdout (a pipe holds
    // 64 KiB), then the reply.
    const CONSOLE: usize = 1 << 20;
    let mut wire = framed(b'C', &vec![b'x'; CONSOLE]);
    wire.extend(framed(b'D', &packet(b"S05")));
    let writer = std::thread::spawn(move || {
        stub.send(&wire);
        stub
    });
    gdb.expect(&packet(b"S05"));
    let mut stub = writer.join().unwrap();

    // None of the console is lost, not even when the bridge is stopped
    // before stdout took it: once stdout is read, all of it arrives.
    bridge.signal(Signal::SIGTERM);
    stub.expect(&DETACH);
    stub.expect(&RAW);
    bridge.stdout = support::Capture::spawn(bridge.unread_stdout.take().unwrap());
    assert_eq!(bridge.wait_exit().code(), Some(0), "stderr:\n{}", bridge.stderr.text());
    let got = bridge.stdout.bytes();
    assert_eq!(got.len(), CONSOLE);
    assert!(got.iter().all(|&b| b == b'x'));
}

#[test]
fn a_listener_with_a_full_backlog_is_not_waited_for() {
    use nix::sys::socket::UnixAddr;
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let gdb_path = dir.path().join("gdb.sock");
    // A live listener with a backlog of 0: one pending connection fills
    // it, and a blocking connect would then wait forever.
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None).unwrap();
    bind(fd.as_raw_fd(), &UnixAddr::new(&gdb_path).unwrap()).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let _pending = std::os::unix::net::UnixStream::connect(&gdb_path).unwrap();

    let serial = dir.path().join("serial.sock");
    let _serial = UnixListener::bind(&serial).unwrap();
    let listen = format!("unix:{}", gdb_path.display());
    let mut bridge =
        Bridge::spawn(&["bridge", "--target", &unix_target(&serial), "--listen", &listen]);
    let status = bridge.wait_exit();
    assert_eq!(status.code(), Some(1), "stderr:\n{}", bridge.stderr.text());
    bridge.stderr.wait_line("another process is listening there");
}

// ---- Hostile inputs at the bridge (rows of /work/shared/hostile-inputs.md) ----

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn hostile_random_megabyte_then_close() {
    // Row 2: 1 MiB of random bytes from a client, then close; the stub is
    // still answering when the next debugger comes.
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    stub.set_auto_ended(false);
    let addr = bridge.listen_addr();
    let mut first = Client::connect(addr);
    first.send(&noise(1 << 20, 0x5eed));
    drop(first);
    bridge.stderr.wait_line("ukdb: debugger disconnected");
    // Whole packets and single bytes only: the one control sequence the
    // stub sees is the final DLE 'X' (a DLE from the client outside a
    // packet is never forwarded).
    stub.received().wait("the detach", |b, _| support::controls(b).contains(&b'X'));
    assert_eq!(support::controls(&stub.received().bytes()), b"FX".to_vec());
    assert!(stub.received().bytes().ends_with(&DETACH));
    stub.consume_all();

    let mut second = Client::connect(addr);
    second.send(&packet(b"qSupported"));
    // Late replies, then the acknowledgement: only then does the second
    // debugger's first request go to the stub.
    let mut wire = framed(b'D', &packet(b"E01"));
    wire.extend(framed(b'D', b"-"));
    wire.extend(ENDED);
    stub.send(&wire);
    stub.expect(&packet(b"qSupported"));
    stub.send(&framed(b'D', &packet(b"OK")));
    second.expect(&packet(b"OK"));
    assert_eq!(show(&second.received.bytes()), show(&packet(b"OK")));
}

#[test]
fn hostile_control_sequences_from_a_client() {
    // Rows 35-38: DLE 'X', DLE 'R', DLE 'F' from a client, outside packets
    // and inside one, split across writes: none reaches the stub as a
    // control sequence, and the session goes on.
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    let mut gdb = Client::connect(bridge.listen_addr());
    gdb.send(b"\x10X\x10");
    gdb.send(b"R\x10F$m\x10X");
    gdb.send(b"\x10R#00\x10");
    gdb.send(&packet(b"?"));
    // Bytes outside packets other than `+`, `-` and 0x03 are dropped (the
    // stub would drop them too).
    stub.expect(b"$m\x10X\x10R#00");
    stub.expect(&packet(b"?"));
    stub.send(&framed(b'D', &packet(b"S05")));
    gdb.expect(&packet(b"S05"));
    assert_eq!(support::controls(&stub.received().bytes()), b"F".to_vec());
    assert_eq!(count(&bridge.stderr, "debugger disconnected"), 0);
}

#[test]
fn hostile_connect_disconnect_cycles() {
    // Row 45: 200 connect/disconnect cycles, some sending, then a debugger
    // works.
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut stub, _) = synced_bridge(dir.path(), &[]);
    let addr = bridge.listen_addr();
    for i in 0..200 {
        let mut gdb = Client::connect(addr);
        if i % 2 == 0 {
            gdb.send(b"+");
        }
    }
    // Every one was accepted or refused, and every accepted one has left.
    bridge.stderr.wait("all debuggers to have come and gone", |b, _| {
        let text = String::from_utf8_lossy(b);
        let connected = text.matches("ukdb: debugger connected").count();
        let refused = text.matches("refused debugger").count();
        connected + refused == 200
            && text.matches("ukdb: debugger disconnected").count() == connected
    });
    let mut gdb = Client::connect(addr);
    gdb.send(&packet(b"g"));
    let before = stub.skip_to(&packet(b"g"));
    assert!(before.iter().all(|&b| b == b'+' || DETACH.contains(&b)), "{}", show(&before));
    stub.send(&framed(b'D', &packet(b"E01")));
    gdb.expect(&packet(b"E01"));
}

/// A framing request, or the stub's sync, lost on the line (a noisy serial
/// line loses either): the bridge asks again until the stub answers.
/// Before, it asked once per hello and waited for good.
#[test]
fn framing_is_requested_again_when_no_sync_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let bridge = Bridge::start(&unix_target(&path), &["--no-probe"]);
    let mut stub = FakeStub::accept_silent(&listener);
    stub.send(&HELLO);
    // The answer to the hello is "lost": the stub never saw it.
    stub.expect(&SYNC);
    // A second request comes without another hello.
    stub.expect(&SYNC);
    stub.send(&SYNC);
    bridge.stderr.wait_line("ukdb: stub answered; framing on");
}
