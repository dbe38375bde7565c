//! The bridge's stub -> host demultiplexer (`bridge/src/demux.rs`), its RSP
//! packet tracker (`bridge/src/rsp.rs`) and its pacer (`bridge/src/pace.rs`)
//! on arbitrary input, in arbitrary chunks.
//!
//! Invariants: no panic; the events do not depend on the chunking (after
//! coalescing); without a crash stream (`DLE 'K'`) the console and debugger
//! bytes are what a straightforward reference of `docs/wire-protocol.md`
//! computes; the tracker's packets are whole and its partial packet bounded;
//! the noisy-line link (`bridge/src/reliable.rs`) and console scrubber take
//! anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use ukdb_bridge::demux::{Demux, Event};
use ukdb_bridge::pace::Pacer;
use ukdb_bridge::reliable::{Link, Scrubber, MAX_PIECE, MIN_PIECE};
use ukdb_bridge::rsp::{Event as RspEvent, Tracker};
use ukdb_bridge::wire::{CONSOLE, DEBUGGER, DLE, ENDED, HELLO, SYNC};
use ukdb_stub::checked;
use ukdb_stub::dumpwire::START as CRASH;

/// Console and debugger bytes of a stream without crash streams, by the
/// rules of `docs/wire-protocol.md`: `DLE 'H'`, `'E'`, `'F'` in every mode;
/// in raw mode any other `DLE` is console text and the byte after it starts
/// afresh; framed, `DLE 'C'`/`'D'` switch, `DLE DLE` is one `DLE`, and a
/// `DLE` with any other byte is both bytes as console text.
fn reference(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut console, mut debugger) = (Vec::new(), Vec::new());
    let (mut framed, mut to_debugger) = (false, false);
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        i += 1;
        if b != DLE {
            if framed && to_debugger {
                debugger.push(b)
            } else {
                console.push(b)
            }
            continue;
        }
        let Some(&next) = input.get(i) else {
            console.push(DLE);
            break;
        };
        i += 1;
        match next {
            HELLO => (framed, to_debugger) = (false, false),
            ENDED => {}
            SYNC => (framed, to_debugger) = (true, false),
            _ if !framed => {
                console.push(DLE);
                i -= 1;
            }
            CONSOLE => to_debugger = false,
            DEBUGGER => to_debugger = true,
            DLE if to_debugger => debugger.push(DLE),
            DLE => console.push(DLE),
            other => console.extend([DLE, other]),
        }
    }
    (console, debugger)
}

/// The events, with consecutive payload and crash bytes coalesced and the
/// progress reports (one per feed) left out.
fn normalise(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (_, Event::CrashProgress(_)) => {}
            (Some(Event::Console(a)), Event::Console(b)) => a.extend(b),
            (Some(Event::Debugger(a)), Event::Debugger(b)) => a.extend(b),
            (Some(Event::CrashBytes(a)), Event::CrashBytes(b)) => a.extend(b),
            (_, e) => out.push(e),
        }
    }
    out
}

fn run(input: &[u8], chunks: &[u8]) -> Vec<Event> {
    let mut d = Demux::new();
    let mut events = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().map_or(rest.len(), |&s| usize::from(s % 64) + 1).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        d.feed_into(piece, &mut events);
        rest = tail;
    }
    events.extend(d.finish());
    assert!(!d.has_pending() && !d.in_crash_stream());
    normalise(events)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let (chunks, input) = rest.split_at(usize::from(n % 8).min(rest.len()));
    let whole = run(input, &[]);
    assert_eq!(run(input, chunks), whole);
    if !input.windows(2).any(|w| w == [DLE, CRASH]) {
        let (mut console, mut debugger) = (Vec::new(), Vec::new());
        for e in &whole {
            match e {
                Event::Console(b) => console.extend(b),
                Event::Debugger(b) => debugger.extend(b),
                _ => {}
            }
        }
        assert_eq!((console, debugger), reference(input));
    }

    // The debugger's side of the line through the tracker and the pacer.
    let mut tracker = Tracker::new(usize::from(n) * 16 + 4);
    let mut pacer = Pacer::new(Duration::from_millis(100), 4096);
    let t0 = Instant::now();
    for (i, piece) in input.chunks(usize::from(n % 13) + 1).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 7);
        match tracker.feed(piece) {
            Ok(events) => {
                for e in events {
                    if let RspEvent::Packet(p) = e {
                        assert_eq!(p.first(), Some(&b'$'));
                        let _ = pacer.request(p, now);
                    }
                }
            }
            Err(_) => {
                let _ = tracker.reset();
            }
        }
        assert!(tracker.partial().len() <= usize::from(n) * 16 + 4);
        let _ = pacer.from_stub(piece, now);
        if let Some(deadline) = pacer.deadline() {
            let _ = pacer.expire(deadline);
        }
    }
    let _ = pacer.ended();

    // The stub's side of a noisy line (`--noisy-line`): its stream, in
    // pieces, into a link with a request outstanding, and into the console
    // scrubber: no panic, every request the link writes is a well-formed
    // checked one, the piece limit stays in its bounds, and the scrubber
    // loses no byte.
    let mut link = Link::new(u32::from(n));
    let mut scrubber = Scrubber::default();
    let (mut out, mut reply, mut text, mut packets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    link.send(b"$m1000,40#00", t0, &mut out);
    for (i, piece) in input.chunks(usize::from(n % 11) + 1).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 3);
        link.from_stub(piece, now, &mut out, &mut reply);
        scrubber.feed(piece, &mut text, &mut packets);
        if let Some(deadline) = link.deadline() {
            link.expire(deadline, &mut out);
        }
        if i % 5 == 4 {
            link.interrupted(now, &mut out);
        }
    }
    scrubber.release(&mut text);
    assert_eq!(text.len() + packets.len(), input.len());
    assert!(link.piece() >= MIN_PIECE && link.piece() <= MAX_PIECE);
    for_each_request(&out, |body| assert!(checked::parse_request(body).is_some()));
});

/// Calls `f` with the body of each `$...#xx` packet in `line`.
fn for_each_request(line: &[u8], mut f: impl FnMut(&[u8])) {
    let mut at = 0;
    while let Some(start) = line[at..].iter().position(|&b| b == b'$') {
        let start = at + start;
        let Some(hash) = line[start..].iter().position(|&b| b == b'#') else { break };
        let end = start + hash;
        f(&line[start + 1..end]);
        at = end + 3;
        if at > line.len() {
            break;
        }
    }
}
