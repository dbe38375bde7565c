//! The dump-only stub (`--no-default-features --features dump`): a panic
//! with `ukdb.crash=dump` streams a core on the raw serial line, checked
//! here byte by byte with a decoder of the test's own; and a debugger
//! finds no stub in that image.

use regex::Regex;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use ukdb_tests::capture::{self, Capture};
use ukdb_tests::*;

/// CRC-32/ISO-HDLC, bit by bit (the test's own, not the stub's crate).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One decoded record.
#[derive(Debug)]
struct Record {
    kind: u8,
    payload: Vec<u8>,
}

/// Decodes the stream that starts right after `DLE 'K'` in `line`:
/// un-escapes, checks every CRC, stops after `END`. Returns the records
/// and how many line bytes the body took.
fn decode(line: &[u8]) -> (Vec<Record>, usize) {
    let mut at = 0;
    let mut take = |n: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let b = *line.get(at).expect("the stream ends early");
            if b == 0x10 {
                assert_eq!(line.get(at + 1), Some(&0x10), "a lone DLE at {at}");
                at += 2;
            } else {
                at += 1;
            }
            out.push(b);
        }
        out
    };
    let mut records = Vec::new();
    loop {
        let head = take(5);
        let len = u32::from_le_bytes(head[1..5].try_into().unwrap()) as usize;
        assert!(len <= 64 * 1024 + 8, "record too long: {len}");
        let payload = take(len);
        let crc = u32::from_le_bytes(take(4).try_into().unwrap());
        let mut covered = head.clone();
        covered.extend_from_slice(&payload);
        assert_eq!(crc, crc32(&covered), "bad CRC in record {} ({})", records.len(), head[0]);
        let kind = head[0];
        assert!(b"HNRMDE".contains(&kind), "unknown record kind {kind}");
        records.push(Record { kind, payload });
        if kind == b'E' {
            break;
        }
    }
    (records, at)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn build_id(image: &Path) -> Vec<u8> {
    use object::Object;
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.build_id().unwrap().expect("the image has a build-id").to_vec()
}

#[test]
fn a_panic_streams_a_valid_core_on_the_raw_line() {
    let image = dumponly_image();
    let append = "ukdemo.rate=50 ukdemo.panic=3 ukdb.crash=dump,then=halt";
    let vm = Vm::boot("q35", image, append);
    let sock = connect_unix(&vm.sock);
    let line = Capture::spawn(sock);
    let sent = Regex::new(r"ukdb: crash: core sent \((\d+) pages, (\d+) bytes\)\n").unwrap();
    let started = Instant::now();
    let bytes = line.wait("the core and the line after it", |b, _| {
        b.windows(2).any(|w| w == b"\x10K") && sent.is_match(&String::from_utf8_lossy(b))
    });
    let took = started.elapsed();

    let k = bytes.windows(2).position(|w| w == b"\x10K").unwrap();
    let before = String::from_utf8_lossy(&bytes[..k]);
    assert!(!bytes[..k].contains(&0x10), "no hello, no framing before the stream: {before}");
    assert!(before.contains("ukdb: crash dumps on serial (dump-only stub)\n"), "{before}");
    assert!(before.contains("ukdemo: panicked at src/app.rs:"), "{before}");
    let mib = Regex::new(r"ukdb: crash: streaming a core \((\d+) MiB mapped\)\n$").unwrap();
    let mib: u64 = mib.captures(&before).expect(&before)[1].parse().unwrap();
    assert!((100..=128).contains(&mib), "128 MiB of RAM, less the holes: {mib}");

    let (records, body_len) = decode(&bytes[k + 2..]);
    let kinds: Vec<u8> = records.iter().map(|r| r.kind).collect();
    // HEADER, the notes, REGS, every MAP before the first DATA, END last.
    assert_eq!(&kinds[..5], b"HNNNR", "{:?}", String::from_utf8_lossy(&kinds));
    let first_data = kinds.iter().position(|&k| k == b'D').unwrap();
    assert!(kinds[5..first_data].iter().all(|&k| k == b'M'));
    assert!(kinds[first_data..kinds.len() - 1].iter().all(|&k| k == b'D'));
    assert_eq!(*kinds.last().unwrap(), b'E');

    let header = &records[0].payload;
    assert_eq!(&header[..8], b"UKDBCORE");
    assert_eq!(header[8..12], [1, 0, 1, 0], "version 1, cause panic");
    assert_eq!(header[12..16], 4096u32.to_le_bytes());

    let note = |kind: u8| {
        let r = records.iter().find(|r| r.kind == b'N' && r.payload[0] == kind).unwrap();
        r.payload[1..].to_vec()
    };
    let reason = String::from_utf8(note(1)).unwrap();
    assert!(reason.contains("tick 3 asked to panic"), "{reason}");
    let panic_line = line_of("src/app.rs", "asked to panic");
    assert!(reason.contains(&format!("app.rs:{panic_line}:")), "{reason}");
    assert_eq!(note(2), append.as_bytes());
    assert_eq!(note(3), build_id(image));

    // REGS: the frame of the panic's soft entry, in the image's code.
    let regs = &records[4].payload;
    assert_eq!(regs.len(), 8 + 22 * 8 + 7 * 8 + 512);
    let rip = u64_at(regs, 8 + 17 * 8);
    let text = symbol_address(image, "__text_start")..symbol_address(image, "__text_end");
    assert!(text.contains(&rip), "rip {rip:#x} outside .text {text:x?}");
    let cr3 = u64_at(regs, 8 + 22 * 8 + 4 * 8);
    assert_ne!(cr3, 0);

    // The pages: inside dumped MAP entries, and TICKS holds 4 (tick 3 is
    // the fourth call).
    let maps: Vec<(u64, u64, u64, u32)> = records
        .iter()
        .filter(|r| r.kind == b'M')
        .map(|r| {
            let p = &r.payload;
            let flags = u32::from_le_bytes(p[24..28].try_into().unwrap());
            (u64_at(p, 0), u64_at(p, 8), u64_at(p, 16), flags)
        })
        .collect();
    let dumped = |pa: u64| maps.iter().any(|&(_, p, l, f)| f & 28 == 0 && (p..p + l).contains(&pa));
    let mut pages = 0u64;
    let mut ticks = None;
    let ticks_at = symbols(image)
        .into_iter()
        .find(|(n, _)| n.contains("6ukdemo3app5TICKS"))
        .expect("TICKS in the image")
        .1;
    for r in records.iter().filter(|r| r.kind == b'D') {
        let pa = u64_at(&r.payload, 0);
        let data = &r.payload[8..];
        assert_eq!(pa % 4096, 0);
        assert_eq!(data.len() % 4096, 0);
        for (i, page) in data.chunks(4096).enumerate() {
            let at = pa + i as u64 * 4096;
            assert!(dumped(at), "page {at:#x} in no dumped range");
            assert!(page.iter().any(|&b| b != 0), "zero page {at:#x} sent");
        }
        pages += (data.len() / 4096) as u64;
        if (pa..pa + data.len() as u64).contains(&ticks_at) {
            ticks = Some(u64_at(data, (ticks_at - pa) as usize));
        }
    }
    assert_eq!(ticks, Some(4), "TICKS in the core");
    let end = &records.last().unwrap().payload;
    assert_eq!(end.len(), 12);
    assert_eq!(u32::from_le_bytes(end[..4].try_into().unwrap()) as usize, records.len() - 1);
    assert_eq!(u64_at(end, 4), pages);

    // The console line after the stream: the same pages, every byte of it.
    // The stream ends with an unescaped `DLE 'Z'`.
    assert_eq!(bytes[k + 2 + body_len..k + 4 + body_len], [0x10, b'Z']);
    let after = String::from_utf8_lossy(&bytes[k + 4 + body_len..]);
    let caps = sent.captures(&after).expect(&after);
    assert!(after.starts_with("ukdb: crash: core sent ("), "{after}");
    assert_eq!(caps[1].parse::<u64>().unwrap(), pages);
    assert_eq!(caps[2].parse::<usize>().unwrap(), 4 + body_len);
    println!(
        "crash stream: {} records, {pages} pages, {} bytes on the line, {mib} MiB mapped; \
         boot to 'core sent' {took:.1?}",
        records.len(),
        4 + body_len
    );
}

#[test]
fn a_debugger_finds_no_stub_in_the_dump_only_image() {
    let image = dumponly_image();
    let vm = Vm::boot("q35", image, "ukdemo.rate=50 ukdb.crash=dump");
    let mut sock = connect_unix(&vm.sock);
    let line = Capture::spawn(sock.try_clone().unwrap());
    line.wait("app lines", |b, _| app_lines(&String::from_utf8_lossy(b)).len() >= 3);
    // What gdb's `target remote` sends first.
    let from = line.bytes().len();
    sock.write_all(b"+$qSupported:multiprocess+;swbreak+;hwbreak+#6a$?#3f").unwrap();
    let lines_then = app_lines(&String::from_utf8_lossy(&line.bytes())).len();
    // 150 more lines at 50 a second: 3 s in which a stub would have
    // answered (the full stub answers in milliseconds).
    let started = Instant::now();
    let bytes = line.wait("3 s of console", |b, _| {
        app_lines(&String::from_utf8_lossy(b)).len() >= lines_then + 150
    });
    assert!(started.elapsed() >= Duration::from_millis(2500), "{:?}", started.elapsed());
    let answer = &bytes[from..];
    assert!(
        !answer.iter().any(|&b| b == b'+' || b == b'$' || b == 0x10),
        "a reply from a stub: {}",
        capture::show(answer)
    );
    let lines = app_lines(&String::from_utf8_lossy(&bytes));
    assert_gap_free(&lines, "the console flows on");
}
