//! The example's virtio-net driver meets what Firecracker checks and QEMU
//! does not (issue 10; measured on Firecracker v1.16.1, see
//! docs/debugging.md, "Cloud Hypervisor and Firecracker"):
//! - the device status is set one bit at a time, in the spec's order
//!   (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK): Firecracker refuses
//!   `0 -> ACKNOWLEDGE | DRIVER`, which virtio-drivers 0.13 writes;
//! - the receive buffers it posts add up to at least 65562 bytes: below
//!   that, Firecracker never reads its tap.
//!
//! The stub's dedicated NIC (`ukdb.nic=`, its own driver in
//! stub/src/imp/virtio/) is held to the same two rules: its status writes in
//! QEMU's trace, and the receive buffers it posts as QEMU reads them from
//! the queue (QMP `x-query-virtio-queue-element`).

use object::{Object, ObjectSymbol};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Instant;
use ukdb_tests::*;

/// Firecracker's `MAX_BUFFER_SIZE`: a 64 KiB frame and its virtio-net header.
const FIRECRACKER_RX_MIN: u64 = 65562;

/// The values QEMU's `virtio_set_status` trace shows for the device, in
/// order.
fn status_writes(trace: &str) -> Vec<u8> {
    trace
        .lines()
        .filter(|l| l.starts_with("virtio_set_status "))
        .filter_map(|l| l.rsplit_once(" val ").and_then(|(_, v)| v.trim().parse().ok()))
        .collect()
}

#[test]
fn status_bits_are_set_one_at_a_time_in_the_spec_order() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.log");
    let vm = Vm::boot_with(
        "microvm,acpi=off",
        &a.image,
        "ukdb.net=off",
        &[
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-device,netdev=n0",
            "-trace",
            "virtio_set_status",
            "-D",
            trace.to_str().unwrap(),
        ],
    );
    let console = capture::Capture::spawn(connect_unix(&vm.sock));
    console.wait_line("ukdemo: net: virtio-net (mmio");
    // The driver is up (DRIVER_OK, 15) once the app has its address.
    console.wait_line("ukdemo: booted");
    assert_status_set_in_order(&trace);
}

/// Waits until QEMU's status trace at `trace` shows the driver up
/// (DRIVER_OK, 15; QEMU may not have flushed its log yet), then asserts
/// that from the last reset on the bits came one at a time, in the spec's
/// order (consecutive repeats folded).
fn assert_status_set_in_order(trace: &Path) {
    let end = Instant::now() + DEADLINE;
    let writes = loop {
        let writes = status_writes(&std::fs::read_to_string(trace).unwrap_or_default());
        if writes.contains(&15) {
            break writes;
        }
        assert!(Instant::now() < end, "no DRIVER_OK in the trace: {writes:?}");
        std::thread::yield_now();
    };
    let last_reset = writes.iter().rposition(|&v| v == 0).expect("no reset in the trace");
    let mut steps = writes[last_reset..].to_vec();
    steps.dedup();
    assert_eq!(steps, [0, 1, 3, 11, 15], "status writes: {writes:?}");
}

#[test]
fn posted_receive_buffers_hold_a_firecracker_frame() {
    let image = &artifacts().image;
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let buffers = file
        .symbols()
        .find(|s| s.name().is_ok_and(|n| n.contains("ukdemo3net6virtio7BUFFERS")))
        .expect("no ukdemo::net::virtio::BUFFERS symbol");
    // `Buffers { rx, tx }`: two arrays of the same size; every rx buffer is
    // posted.
    let rx = buffers.size() / 2;
    assert!(rx >= FIRECRACKER_RX_MIN, "{rx} bytes of receive buffers, below {FIRECRACKER_RX_MIN}");
}

/// QEMU running the example with only the stub's dedicated NIC (q35, PCI
/// 00:05.0, QOM id `dbg`), held in `ukdb.wait` once the NIC is up; QEMU's
/// status trace in `trace.log` and QMP on `qmp.sock`, both in `dir`.
fn dedicated_nic(dir: &Path) -> Vm {
    let trace = dir.join("trace.log");
    let [flag, arg] = qmp::args(&dir.join("qmp.sock"));
    let vm = Vm::boot_with(
        "q35",
        &artifacts().image,
        "ukdb.nic=pci:00:05.0 ukdb.net=10.0.2.15/24,gw=10.0.2.2 ukdb.wait",
        &[
            "-netdev",
            "user,id=n1",
            "-device",
            "virtio-net-pci,netdev=n1,addr=0x5,id=dbg",
            "-trace",
            "virtio_set_status",
            "-D",
            trace.to_str().unwrap(),
            &flag,
            &arg,
        ],
    );
    let console = capture::Capture::spawn(connect_unix(&vm.sock));
    console.wait_line("ukdb: stub ready on virtio-net 10.0.2.15:1234 (static)");
    console.wait_line("ukdb: waiting for a debugger (ukdb.wait)");
    vm
}

#[test]
fn the_stubs_dedicated_nic_sets_status_bits_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _vm = dedicated_nic(dir.path());
    // One device: the stub's, up before the stub says it is ready.
    assert_status_set_in_order(&dir.path().join("trace.log"));
}

/// A QMP command with arguments (a JSON object's text); QEMU's `return`.
fn qmp_call(sock: &Path, cmd: &str, args: &str) -> String {
    let stream = connect_unix(sock);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut answer = |line: String| {
        writer.write_all(line.as_bytes()).unwrap();
        loop {
            let mut got = String::new();
            assert!(reader.read_line(&mut got).unwrap() > 0, "QMP closed");
            if got.contains("\"return\"") || got.contains("\"error\"") {
                assert!(got.contains("\"return\""), "QMP {line}: {got}");
                return got;
            }
        }
    };
    answer("{\"execute\": \"qmp_capabilities\"}\n".into());
    answer(format!("{{\"execute\": \"{cmd}\", \"arguments\": {args}}}\n"))
}

#[test]
fn the_stubs_dedicated_nic_posts_a_firecracker_frame() {
    let dir = tempfile::tempdir().unwrap();
    let _vm = dedicated_nic(dir.path());
    let sock = dir.path().join("qmp.sock");
    let queue = r#""path": "/machine/peripheral/dbg/virtio-backend", "queue": 0"#;
    let status = qmp_call(&sock, "x-query-virtio-queue-status", &format!("{{{queue}}}"));
    let num: u16 = capture(&status, r#""vring-num": (\d+)"#);
    // The receive queue's rings as in guest memory: the buffers posted and
    // not yet used are those from the used index to the available one.
    let head = qmp_call(&sock, "x-query-virtio-queue-element", &format!("{{{queue}}}"));
    let avail: u16 = capture(&head, r#""avail": \{"idx": (\d+)"#);
    let used: u16 = capture(&head, r#""used": \{"idx": (\d+)"#);
    let count = avail.wrapping_sub(used);
    let len_re = regex::Regex::new(r#""len": (\d+)"#).unwrap();
    let mut posted = 0u64;
    for k in 0..count {
        let element = qmp_call(
            &sock,
            "x-query-virtio-queue-element",
            &format!("{{{queue}, \"index\": {}}}", used.wrapping_add(k) % num),
        );
        // `"descs": [{"flags": [...], "len": N, "addr": A}, ...], "avail": ...`
        let descs =
            element.split(r#""descs": "#).nth(1).unwrap().split(r#""avail""#).next().unwrap();
        for len in len_re.captures_iter(descs) {
            posted += len[1].parse::<u64>().unwrap();
        }
    }
    assert!(
        posted >= FIRECRACKER_RX_MIN,
        "{count} receive buffers, {posted} bytes, below {FIRECRACKER_RX_MIN}"
    );
    // All of them: 48 slots of 2 KiB.
    assert_eq!((count, posted), (48, 48 * 2048));
}
