//! End-to-end tests of `ukdb bridge --net`: the real binary between a fake
//! network stub (a TCP listener the test owns) and debugger clients, with
//! the console on a Unix socket.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;

use nix::sys::signal::Signal;
use support::{packet, show, Bridge, Capture, Client};

/// Accepts the bridge's connection to the fake stub, within the deadline.
fn accept_stub(listener: &TcpListener) -> (TcpStream, Capture) {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + support::TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "the bridge did not connect");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let received = Capture::spawn(stream.try_clone().unwrap());
    (stream, received)
}

#[test]
fn each_debugger_gets_its_own_connection_to_the_stub() {
    let stub = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", stub.local_addr().unwrap());
    let mut bridge = Bridge::start(&target, &["--net"]);
    let addr = bridge.listen_addr();

    // Nothing is written to the stub before a debugger connects, and the
    // bytes pass unchanged (no framing, no probes).
    let mut gdb = Client::connect(addr);
    let (mut conn, at_stub) = accept_stub(&stub);
    gdb.send(b"+$qSupported:multiprocess+#c6");
    at_stub.wait("the packet", |b, _| b.len() >= 29);
    assert_eq!(show(&at_stub.bytes()), "+$qSupported:multiprocess+#c6");
    let reply: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    conn.write_all(&reply).unwrap();
    gdb.expect(&reply);

    // A second debugger gets a connection of its own (the stub decides).
    let mut lldb = Client::connect(addr);
    let (conn2, at_stub2) = accept_stub(&stub);
    lldb.send(b"\x03");
    at_stub2.wait("the interrupt", |b, _| !b.is_empty());
    assert_eq!(show(&at_stub2.bytes()), "\\x03");
    // The stub refuses it: the debugger's connection closes (the capture
    // thread holds a second descriptor, so shut the socket down).
    conn2.shutdown(std::net::Shutdown::Both).unwrap();
    lldb.received.wait_closed("the refused debugger to be closed");

    // The first one is undisturbed; when it leaves, its stub connection ends.
    gdb.send(&packet(b"g"));
    at_stub.wait("the second packet", |b, _| b.ends_with(b"$g#67"));
    drop(gdb);
    let got = at_stub.wait_closed("the stub connection to close");
    assert_eq!(show(&got), "+$qSupported:multiprocess+#c6$g#67");
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0);

    bridge.stderr.wait_line("ukdb: debugger 127.0.0.1:");
    bridge.signal(Signal::SIGTERM);
    assert_eq!(bridge.wait_exit().code(), Some(0));
    assert_eq!(show(&bridge.stdout.bytes()), "");
}

#[test]
fn an_unreachable_stub_closes_the_debugger() {
    let stub = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", stub.local_addr().unwrap());
    drop(stub);
    let bridge = Bridge::start(&target, &["--net"]);
    let gdb = Client::connect(bridge.listen_addr());
    gdb.received.wait_closed("the debugger to be closed");
    bridge.stderr.wait_line(&format!(
        "ukdb: warning: debugger {}: cannot reach the stub at {}",
        gdb.stream.local_addr().unwrap(),
        &target["tcp:".len()..]
    ));
}

#[test]
fn the_console_comes_from_its_own_channel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let log = dir.path().join("console.log");
    let serial = UnixListener::bind(&path).unwrap();
    let console = format!("unix:{}", path.display());
    let mut bridge = Bridge::start(
        "tcp:127.0.0.1:9",
        &["--net", "--console", &console, "--console-log", log.to_str().unwrap()],
    );
    let mut line = support::accept_unix(&serial);
    // A stub's hello on the serial line is not console text; the rest is.
    line.write_all(b"\x10Hboot\nukdb: stub ready on net\n").unwrap();
    bridge.stdout.wait("the console", |b, _| b.ends_with(b"ready on net\n"));
    drop(line);
    assert_eq!(bridge.wait_exit().code(), Some(3));
    bridge.stderr.wait_line(&format!("ukdb: unikernel channel closed ({console})"));
    assert_eq!(show(&bridge.stdout.bytes()), "boot\\nukdb: stub ready on net\\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "boot\nukdb: stub ready on net\n");
}

#[test]
fn net_usage_errors() {
    let mut bridge = Bridge::spawn(&["bridge", "--target", "unix:/x", "--net"]);
    assert_eq!(bridge.wait_exit().code(), Some(1));
    bridge.stderr.wait_line("ukdb: error: --net needs a tcp:HOST:PORT target");
    for args in [
        &["bridge", "--target", "tcp:h:1", "--console", "unix:/x"][..],
        &["bridge", "--target", "tcp:h:1", "--net", "--trace"],
        &["bridge", "--target", "tcp:h:1", "--net", "--no-probe"],
    ] {
        let mut bridge = Bridge::spawn(args);
        assert_eq!(bridge.wait_exit().code(), Some(2), "{args:?}");
    }
}
