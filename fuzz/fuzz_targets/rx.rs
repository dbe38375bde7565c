//! The stub's packet receiver (`stub/src/rx.rs`) on arbitrary bytes, and the
//! output framing (`stub/src/framing.rs`) round-tripped through the bridge's
//! demultiplexer.
//!
//! Invariants: `Rx` never panics; every packet it passes on is `$body#xx`
//! with a valid checksum and fits its buffer (a checked packet's inner one
//! too, with its envelope; `ukdb_stub::checked`); every byte yields at most
//! one event. Half the inputs run with junk NAKs on. Console and debugger runs encoded by `framing::Encoder` (framed)
//! come out of `Demux` byte for byte, on each channel, in any chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukdb_bridge::demux::{Demux, Event as DemuxEvent};
use ukdb_stub::fuzzing::framing::{Encoder, Stream};
use ukdb_stub::fuzzing::rx::{checksum, Event, Rx};

/// Receive buffer sizes: degenerate, tiny, and the stub's own.
const SIZES: [usize; 5] = [0, 4, 7, 64, 0x4000];

fn hex(b: u8) -> u8 {
    (b as char).to_digit(16).expect("a checksum digit") as u8
}

fn receive(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else { return };
    let size = SIZES[usize::from(sel) % SIZES.len()];
    let mut buf = vec![0u8; size];
    let mut rx = Rx::new(&mut buf);
    rx.set_nak_junk(sel & 0x40 != 0);
    for (i, &byte) in stream.iter().enumerate() {
        // Now and then a silence: the partial packet is dropped.
        if sel & 0x80 != 0 && i % 97 == 96 && rx.in_packet() {
            rx.abandon();
            assert!(!rx.in_packet());
        }
        let mut envelope = None;
        let event = rx.push_checked(byte, &mut envelope);
        if envelope.is_some() {
            assert!(matches!(event, Some(Event::Packet { .. } | Event::Reject(_))));
        }
        if let Some(Event::Packet { bytes, .. }) = event {
            assert!(bytes.len() >= 4 && bytes.len() <= size, "{} bytes in {size}", bytes.len());
            assert_eq!(bytes[0], b'$');
            let (body, sum) = bytes.split_at(bytes.len() - 3);
            assert_eq!(sum[0], b'#');
            assert_eq!(checksum(&body[1..]), hex(sum[1]) << 4 | hex(sum[2]));
        }
    }
}

/// Encodes the runs `data` describes; returns (line bytes, console, debugger).
fn encode(data: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut line, mut console, mut debugger) = (Vec::new(), Vec::new(), Vec::new());
    let mut enc = Encoder::new();
    enc.set_framed(true, |b| line.extend_from_slice(b));
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let n = usize::from(op >> 2).min(tail.len());
        let (run, after) = tail.split_at(n);
        rest = after;
        match op & 3 {
            0 => {
                enc.write(Stream::Console, run, |b| line.extend_from_slice(b));
                console.extend_from_slice(run);
            }
            1 => {
                enc.write(Stream::Debug, run, |b| line.extend_from_slice(b));
                debugger.extend_from_slice(run);
            }
            // The switches take no bytes.
            2 => {
                enc.switch_to(Stream::Debug, |b| line.extend_from_slice(b));
                rest = tail;
            }
            _ => {
                enc.after_raw(|b| line.extend_from_slice(b));
                rest = tail;
            }
        }
    }
    (line, console, debugger)
}

fn demux(line: &[u8], chunk: usize) -> (Vec<u8>, Vec<u8>) {
    let mut d = Demux::new();
    let mut events = Vec::new();
    for piece in line.chunks(chunk.max(1)) {
        d.feed_into(piece, &mut events);
    }
    events.extend(d.finish());
    let (mut console, mut debugger) = (Vec::new(), Vec::new());
    for e in events {
        match e {
            DemuxEvent::Console(b) => console.extend(b),
            DemuxEvent::Debugger(b) => debugger.extend(b),
            DemuxEvent::Sync | DemuxEvent::Switch(_) => {}
            other => panic!("unexpected {other:?} in a framed stream"),
        }
    }
    (console, debugger)
}

fuzz_target!(|data: &[u8]| {
    receive(data);
    let (line, console, debugger) = encode(data);
    let chunk = data.first().map_or(1, |&b| usize::from(b % 17) + 1);
    for c in [usize::MAX, chunk] {
        let (c_out, d_out) = demux(&line, c);
        assert_eq!(c_out, console);
        assert_eq!(d_out, debugger);
    }
});
