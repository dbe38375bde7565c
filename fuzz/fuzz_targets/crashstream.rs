//! The crash stream decoder (`bridge/src/core/stream.rs`) on arbitrary
//! input and on valid streams built from the input with the stub's
//! `dumpwire::Encoder` (records with correct lengths and CRCs, so that the
//! fuzzer reaches the record checks), optionally mutated; then
//! `core::elf::write_core` on every decoded snapshot.
//!
//! Invariants: no panic; the decoder takes no more than it was given and
//! takes nothing after it finished; a decoded snapshot's pages are whole
//! pages; its core is written (into a counting sink) and is no larger than
//! its headers, notes and pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::Cell;
use std::io::{self, Write};
use ukdb_bridge::core::elf::write_core;
use ukdb_bridge::core::stream::{Decoder, Fed};
use ukdb_stub::dumpwire::{
    self, cause, map_entry, note, Encoder, DATA, END, HEADER, MAP, NOTE, PAGE, REGS, REGS_LEN,
};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).first().copied()
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let got = self.take(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }
}

/// Streams stop growing at this many bytes (a few records of pages).
const MAX_BUILT: usize = 32 << 10;

/// A stream (after `DLE 'K'`, up to its END record's CRC) built from `data`.
fn build(data: &[u8]) -> Vec<u8> {
    let mut input = Input(data);
    let mut line = Vec::new();
    let built = Cell::new(0usize);
    let mut e = Encoder::start(|b: &[u8]| {
        built.set(built.get() + b.len());
        line.extend_from_slice(b)
    });
    let mut ended = false;
    // A byte of input can make two pages of stream; past `MAX_BUILT` the
    // rest of the input is mutations. Longer streams only repeat records
    // and would set the fuzzer's pace (a 512-byte input made 4 MiB).
    while let Some(op) = input.u8().filter(|_| built.get() < MAX_BUILT) {
        let ok = match op % 8 {
            0 => e.record(HEADER, &[&dumpwire::header(input.u8().unwrap_or(cause::PANIC))]),
            1 => {
                let kind =
                    [note::REASON, note::CMDLINE, note::BUILD_ID, 0][usize::from(op >> 3 & 3)];
                let len = usize::from(op >> 5) * 3;
                let text = input.take(len).to_vec();
                e.record(NOTE, &[&[kind], &text])
            }
            2 => {
                let mut regs = vec![0u8; REGS_LEN];
                let got = input.take(64);
                regs[..got.len()].copy_from_slice(got);
                e.record(REGS, &[&regs])
            }
            3 => {
                let (v, p) = (input.u64(), input.u64());
                let len = if op & 0x80 != 0 { input.u64() } else { u64::from(op >> 3) * PAGE };
                let flags = u32::from(input.u8().unwrap_or(0));
                e.record(MAP, &[&map_entry(v, p, len, flags)])
            }
            4 => {
                let addr =
                    if op & 0x80 != 0 { input.u64() } else { u64::from(op >> 3 & 0xf) * PAGE };
                let pages = usize::from(op >> 3 & 3);
                let fill = input.u8().unwrap_or(0);
                let mut bytes = vec![fill; pages * PAGE as usize + usize::from(op >> 5 & 1)];
                if let Some(b) = bytes.get_mut(usize::from(fill)) {
                    *b = 0x10;
                }
                e.record(DATA, &[&addr.to_le_bytes(), &bytes])
            }
            5 => {
                ended = true;
                break;
            }
            6 => {
                // A record of any kind and length, checksummed.
                let kind = input.u8().unwrap_or(0);
                let len = usize::from(input.u8().unwrap_or(0));
                let payload = input.take(len).to_vec();
                e.record(kind, &[&payload])
            }
            _ => e.record(END, &[&input.u64().to_le_bytes()[..4], &input.u64().to_le_bytes()]),
        };
        assert!(ok);
    }
    // Without END the stream stops short (the line broke).
    if ended {
        e.end();
    }
    // Mutations: (position, xor) pairs from what is left.
    while let (Some(a), Some(b), Some(x)) = (input.u8(), input.u8(), input.u8()) {
        let at = usize::from(u16::from_le_bytes([a, b]));
        if let Some(slot) = line.get_mut(at) {
            *slot ^= x;
        }
    }
    line.drain(..2.min(line.len()));
    line
}

/// Counts what it is given.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn decode(stream: &[u8], chunk: usize) {
    let mut d = Decoder::new();
    let mut taken = 0usize;
    let mut finished = false;
    for piece in stream.chunks(chunk.max(1)) {
        match d.feed(piece) {
            Fed::More => {
                assert!(!finished);
                taken += piece.len();
            }
            Fed::Done { used } | Fed::Failed { used, .. } => {
                assert!(used <= piece.len());
                if finished {
                    assert_eq!(used, 0);
                }
                taken += used;
                finished = true;
            }
        }
    }
    assert!(taken <= stream.len());
    if d.finish().is_some() {
        assert!(!d.is_done());
    }
    let Some(snapshot) = d.take_snapshot() else { return };
    let mut stored = 0u64;
    for (pa, page) in &snapshot.pages {
        assert_eq!(pa % PAGE, 0);
        assert_eq!(page.len() as u64, PAGE);
        stored += PAGE;
    }
    let mut out = Count(0);
    if let Ok(n) = write_core(&snapshot, &mut out) {
        assert_eq!(n, out.0);
        // Headers and notes are small; the data is the pages (each at
        // most once per map entry that covers it).
        let bound = (1 << 20) + stored * (snapshot.map.len() as u64 + 1) + stream.len() as u64 * 64;
        assert!(n <= bound, "{n} bytes of core for {} bytes of stream", stream.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let chunk = usize::from(sel >> 1) + 1;
    if sel & 1 == 0 {
        decode(rest, usize::MAX);
        decode(rest, chunk);
    } else {
        let stream = build(rest);
        decode(&stream, usize::MAX);
        decode(&stream, chunk);
    }
});
