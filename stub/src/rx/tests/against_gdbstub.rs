//! The proof that [`Rx`]'s checks are complete: a target with the same
//! extensions as the stub's `UkTarget` (single thread, single registers,
//! resume and step, software and hardware breakpoints and watchpoints,
//! monitor commands; the stub's own register set and target description),
//! driven through a real `GdbStubStateMachine`. Every packet `Rx` passes on
//! must be handled without an error (an error ends the session), on a
//! corpus of malformed packets and on pseudo-random mutations of valid ones.

use super::*;
use crate::fake_engine::{Engine, Fake, Sink};
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::GdbStubBuilder;

/// The fake's memory: enough for every address the corpora name.
fn fake() -> Fake {
    Fake::new(0x4_0000, 0xa5)
}

/// A gdbstub session behind an [`Rx`], as the stub runs it.
struct Session<'a> {
    engine: Engine<'a>,
    passed: usize,
    rejected: usize,
}

impl<'a> Session<'a> {
    fn new(packet_buffer: &'a mut [u8]) -> Self {
        Session { engine: Engine::new(packet_buffer, fake()), passed: 0, rejected: 0 }
    }

    fn take_output(&mut self) -> Vec<u8> {
        self.engine.take_output()
    }

    /// Feeds the host's bytes through `rx` and what it passes on to gdbstub.
    fn feed(&mut self, rx: &mut Rx<'_>, bytes: &[u8]) {
        for &b in bytes {
            match rx.push(b) {
                Some(Event::Packet { bytes, .. }) => {
                    self.passed += 1;
                    let packet = bytes.to_vec();
                    self.engine.gdbstub(&packet, &packet);
                }
                Some(Event::Ack) => self.engine.gdbstub(b"+", b"+"),
                Some(Event::Interrupt) => self.engine.gdbstub(b"\x03", b"\x03"),
                Some(Event::Reject(_)) => self.rejected += 1,
                // The stub answers these itself; gdbstub never sees them.
                Some(Event::Nak | Event::BadChecksum | Event::Overflow | Event::Control(_))
                | None => {}
            }
        }
    }
}

#[test]
fn gdbstub_handles_every_valid_and_hostile_packet() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    let mut bodies = valid_bodies();
    bodies.extend(hostile_bodies());
    for body in &bodies {
        session.feed(&mut rx, &pkt(body));
        session.take_output();
    }
    assert_eq!((session.passed, session.rejected), (bodies.len(), 0));
}

/// The bodies of the reply packets in `out` (`$body#xx` each).
fn reply_bodies(out: &[u8]) -> Vec<&[u8]> {
    out.split(|&b| b == b'$')
        .skip(1)
        .map(|p| p.split(|&b| b == b'#').next().unwrap_or_default())
        .collect()
}

#[test]
fn replies_fit_the_packet_size() {
    // PacketSize counts a packet's data, without `$` and `#xx`: the clamped
    // `m` and the whole target description each come back in one reply of
    // at most that.
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    session.feed(&mut rx, &pkt(b"QStartNoAckMode"));
    session.take_output();
    for body in [
        // Longer reads would only take longer without the clamp: this
        // one fails rather than hangs if the clamp goes.
        &b"m100000,10000"[..],
        b"m100000,2000",
        b"qXfer:features:read:target.xml:0,ffffffffffffffff",
        b"qRcmd,68656c70",
    ] {
        session.feed(&mut rx, &pkt(body));
        let out = session.take_output();
        let replies = reply_bodies(&out);
        assert!(!replies.is_empty());
        for reply in replies {
            assert!(
                reply.len() <= SIZE,
                "{} bytes for {}",
                reply.len(),
                String::from_utf8_lossy(body)
            );
        }
    }
    session.feed(&mut rx, &pkt(b"m100000,4001"));
    let out = session.take_output();
    assert_eq!(
        reply_bodies(&out),
        vec![&b"a5".repeat(M_MAX as usize)[..]],
        "a short read, in full"
    );
}

#[test]
fn gdbstub_survives_the_malformed_corpus() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    for body in malformed_bodies() {
        session.feed(&mut rx, &pkt(&body));
        // The session is still there: it answers.
        session.feed(&mut rx, &pkt(b"?"));
        assert!(session.take_output().ends_with(&pkt(b"T05thread:01;")));
    }
    assert_eq!(
        (session.passed, session.rejected),
        (malformed_bodies().len(), malformed_bodies().len())
    );
}

/// Without `Rx`, gdbstub ends the session on these (each was a lost
/// session, and every breakpoint with it, before the stub checked packets).
#[test]
fn gdbstub_alone_ends_the_session_on_malformed_packets() {
    for body in [
        &b"m-1"[..],
        b"mzz",
        b"vContzz",
        b"vCont;;;",
        b"vCont;s:p1.-2",
        b"vCont;x",
        b"Hg-1",
        b"T0",
        b"G00",
        b"qXfer:features:read:foo.xml:0,10",
        b"X100000,1:}",
        b"Z0,1,zz",
        b"qSupported:",
    ] {
        let mut packet_buffer = vec![0u8; SIZE];
        let mut target = fake();
        let stub = GdbStubBuilder::new(Sink::default())
            .with_packet_buffer(&mut packet_buffer)
            .build()
            .unwrap();
        let mut machine = stub.run_state_machine(&mut target).unwrap();
        let mut ended = false;
        for &b in &pkt(body) {
            machine = match machine {
                GdbStubStateMachine::Idle(m) => match m.incoming_data(&mut target, b) {
                    Ok(m) => m,
                    Err(_) => {
                        ended = true;
                        break;
                    }
                },
                other => other,
            };
        }
        assert!(ended, "{}", String::from_utf8_lossy(body));
        let mut rx_buf = vec![0u8; SIZE];
        assert_eq!(run_with(&mut rx_buf, &pkt(body)), vec![Ev::Reject(Reply::Einval)]);
    }
}

fn run_with(buf: &mut [u8], bytes: &[u8]) -> Vec<Ev> {
    feed(&mut Rx::new(buf), bytes)
}

/// Without `Rx`, gdbstub does harm with these: it writes registers shifted
/// by a digit, writes more memory than asked, reads gigabytes.
#[test]
fn gdbstub_alone_acts_on_inconsistent_packets() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut target = fake();
    let stub = GdbStubBuilder::new(Sink::default())
        .with_packet_buffer(&mut packet_buffer)
        .build()
        .unwrap();
    let mut machine = stub.run_state_machine(&mut target).unwrap();
    let odd_g = format!("G{}", "1".repeat(0x218 * 2 - 1));
    let mut input = pkt(odd_g.as_bytes());
    input.extend(pkt(b"X121000,2:abcdefgh"));
    input.extend(pkt(b"m100000,10000"));
    for &b in &input {
        machine = match machine {
            GdbStubStateMachine::Idle(m) => m.incoming_data(&mut target, b).unwrap(),
            _ => unreachable!(),
        };
    }
    assert_eq!(target.written_regs.len(), 1, "the odd G was applied");
    assert_eq!(target.written_regs[0].core.regs[0], 0x1111_1111_1111_1101, "shifted by a digit");
    assert_eq!(target.writes, vec![(0x121000, b"abcdefgh".to_vec())], "8 bytes for 2");
    assert_eq!(target.reads.iter().sum::<usize>(), 0x10000, "all 64 KiB read");
    // Through Rx: the first two are refused, the read is clamped.
    let mut rx_buf = vec![0u8; SIZE];
    assert_eq!(
        run_with(&mut rx_buf, &input),
        vec![
            Ev::Reject(Reply::Einval),
            Ev::Reject(Reply::Einval),
            Ev::Packet(pkt(b"m100000,2000"), PacketClass::Other)
        ]
    );
}

/// Bytes that matter to the parsers.
const INTERESTING: &[u8] = b"0123456789abcdefABCDEFxX,:;=.-p}*#$+\x03\x10?cCsSrtgGmMzZ0";

/// Extreme numbers and ids.
const NUMBERS: [&[u8]; 8] =
    [b"ffffffffffffffff", b"10000000000000000", b"-1", b"0", b"00", b"2001", b"218", b""];

fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(body.len() + 1);
        match rng.below(9) {
            0 | 1 if !body.is_empty() => {
                let at = at.min(body.len() - 1);
                body[at] = *rng.pick(INTERESTING);
            }
            2 => body.insert(at, *rng.pick(INTERESTING)),
            3 if at < body.len() => {
                body.remove(at);
            }
            4 => body.truncate(at),
            5 if !body.is_empty() => {
                // Repeat a slice (long lists of actions, features, digits).
                let start = rng.below(body.len());
                let len = 1 + rng.below((body.len() - start).min(16));
                let piece = body[start..start + len].to_vec();
                for _ in 0..1 + rng.below(64) {
                    body.splice(at..at, piece.iter().copied());
                }
            }
            6 => body.insert(at, rng.next() as u8),
            7 => {
                // A number made longer, or replaced with an extreme one.
                let n = *rng.pick(&NUMBERS);
                body.splice(at..at, n.iter().copied());
            }
            _ => {
                if let Some(pos) = body.iter().position(|&b| b == b',' || b == b':' || b == b';') {
                    body.remove(pos);
                }
            }
        }
    }
}

#[test]
fn gdbstub_survives_100k_mutated_packets() {
    let mut packet_buffer = vec![0u8; SIZE];
    let mut session = Session::new(&mut packet_buffer);
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    let mut seeds = valid_bodies();
    seeds.extend(hostile_bodies());
    seeds.extend(malformed_bodies());
    let mut rng = Rng(0x5eed_f00d_dba1_1a55);
    for _ in 0..100_000 {
        let mut body = rng.pick(&seeds).clone();
        mutate(&mut rng, &mut body);
        let mut bytes = pkt(&body);
        match rng.below(20) {
            // A corrupted checksum.
            0 => {
                let last = bytes.len() - 1;
                bytes[last] = *rng.pick(INTERESTING);
            }
            // Noise, a control or an ack before it.
            1 => {
                bytes.splice(0..0, [*rng.pick(INTERESTING), *rng.pick(INTERESTING)]).for_each(drop)
            }
            _ => {}
        }
        session.engine.stop_at_once = rng.below(4) != 0;
        session.feed(&mut rx, &bytes);
        session.take_output();
        // Whatever came before, a packet that stopped arriving is dropped.
        if rx.in_packet() {
            rx.abandon();
        }
    }
    // Both sides of the check are exercised.
    assert!(session.passed > 30_000, "passed {}", session.passed);
    assert!(session.rejected > 30_000, "rejected {}", session.rejected);
}
