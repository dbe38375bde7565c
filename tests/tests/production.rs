//! The production image: built with `--no-default-features`, it boots and
//! runs, and contains no stub code at all.

use std::io::Read;
use std::time::{Duration, Instant};
use ukdb_tests::*;

/// Names that only stub code carries: the stub crate and its dependencies.
const STUB_NAMES: &[&str] = &["ukdb_stub", "gdbstub", "7managed"];

#[test]
fn production_image_has_no_stub_and_runs() {
    let a = artifacts();
    let with_stub: Vec<String> = symbols(&a.image)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| STUB_NAMES.iter().any(|x| n.contains(x)))
        .collect();
    assert!(with_stub.len() > 50, "the debug image should carry the stub: {with_stub:?}");
    let leaked: Vec<String> = symbols(&a.production)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !is_stub_marker(n) && STUB_NAMES.iter().any(|x| n.contains(x)))
        .collect();
    assert_eq!(leaked, Vec::<String>::new(), "stub symbols in the production image");
    // The linker script's markers around the stub's sections are there,
    // with nothing between them; in the debug image they hold the stub.
    let sizes = stub_section_sizes(&a.production);
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    for (section, size) in sizes {
        assert_eq!(size, 0, "{size} bytes of stub {section} in the production image");
    }
    for (section, size) in stub_section_sizes(&a.image) {
        println!("  the stub's {section} (linker-script markers): {size} bytes");
        assert!(size > 0, "no stub {section} in the debug image");
    }

    let debug = image_size(&a.image);
    let prod = image_size(&a.production);
    let stub_text = code_size_of(&a.image, STUB_NAMES);
    println!("image sizes (bytes):      file   loaded    .text");
    println!("  with stub        {:>10} {:>8} {:>8}", debug.file, debug.loaded, debug.text);
    println!("  production       {:>10} {:>8} {:>8}", prod.file, prod.loaded, prod.text);
    println!("  stub functions (ukdb_stub, gdbstub, managed): {stub_text} bytes of .text");
    assert!(prod.loaded < debug.loaded);

    // It boots and runs, with its console straight on the serial line.
    let vm = Vm::boot("q35", &a.production, "ukdemo.rate=50");
    let mut sock = connect_unix(&vm.sock);
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let end = Instant::now() + DEADLINE;
    let mut console = Vec::new();
    while app_lines(&String::from_utf8_lossy(&console)).len() < 3 {
        assert!(Instant::now() < end, "no app lines: {}", String::from_utf8_lossy(&console));
        let mut buf = [0u8; 4096];
        match sock.read(&mut buf) {
            Ok(0) => panic!("qemu closed the serial line"),
            Ok(n) => console.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&console);
    // Consecutive lines, and no framing bytes: nothing but the console.
    let lines = app_lines(&text);
    for w in lines.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "{text}");
    }
    assert!(!console.contains(&0x10), "{text}");
}

#[test]
fn bridge_logs_the_console_and_reports_the_channel_closing() {
    let a = artifacts();
    let vm = Vm::boot("q35", &a.image, "ukdemo.rate=50");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("console.log");
    let mut bridge = Bridge::start_with(&vm, &["--console-log", log.to_str().unwrap()]);
    bridge.wait_more_lines(3);
    // QEMU goes away: the bridge says so and exits with 3.
    drop(vm);
    let status = bridge.proc.wait_exit();
    assert_eq!(status.code(), Some(3), "{}", bridge.stderr.text());
    let stderr = bridge.stderr.wait_closed("the bridge's messages");
    assert!(stderr.contains("ukdb: unikernel channel closed (unix:"), "{stderr}");
    // The log holds exactly what the bridge printed.
    let printed = bridge.console.wait_closed("the bridge's console");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), printed);
    assert!(app_lines(&printed).len() >= 3);
}
