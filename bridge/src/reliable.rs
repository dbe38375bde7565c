//! A reliable serial hop (sans-I/O) for `ukdb bridge --noisy-line`: every
//! request crosses the line as a checked packet and every reply comes back
//! in checked pieces (`ukdb_stub::checked`, `docs/wire-protocol.md`
//! "Checked packets"), whatever the line does to single bytes.
//!
//! * **Debugger side.** The debugger's hop (TCP) never damages a byte. A
//!   `QStartNoAckMode` is answered here (`OK`) and never reaches the stub;
//!   while the debugger is in ack mode its packets get `+` from the bridge
//!   at once, and its own `+`/`-` are dropped: the bridge hands it only
//!   whole, checked replies.
//! * **Requests.** Each request gets the next number and goes out as
//!   `$@SEQ,LIMIT,0:BODY CRC#xx`. The stub acts on a number once and keeps
//!   its reply, so a request is sent again whenever its answer is late or
//!   damaged: it can never be acted on twice (a step, a write, a continue).
//! * **Replies.** The stub answers with the first piece of its reply (at
//!   most `LIMIT` bytes); the bridge asks for each further piece with the
//!   same number and an empty body. A damaged piece (RSP checksum or CRC-32)
//!   is asked for again at once; so is a request the stub NAKed. When the
//!   reply is whole it goes to the debugger as the stub wrote it.
//! * **Timeouts.** An unanswered request or piece is asked for again after
//!   a retransmission timeout that follows the measured round trip (four
//!   times the smoothed round trip, at least [`MIN_RTO`]), doubling with
//!   each timeout in a row up to [`MAX_RTO`]. A request that resumed the
//!   unikernel is answered `running` and then asked again every
//!   [`POLL`] until the stop reply comes (a stop reply lost on the line is
//!   fetched that way); a Ctrl-C from the debugger is repeated with each
//!   poll until then.
//! * **Piece size.** A piece of `n` bytes crosses a line that damages one
//!   byte in `k` whole with probability `(1 - 1/k)^n`; the most reply text
//!   per byte sent comes with pieces of about `k` bytes, which arrive damaged
//!   about 60% of the time. So the piece limit shrinks by a tenth on each
//!   damaged piece and grows by a sixth on each clean one (settling where
//!   about 60% are damaged), between [`MIN_PIECE`] and [`MAX_PIECE`].
//!   Lost requests do not count: they say nothing about the piece size.
//! * **Damage seen.** The stub writes only checked packets and `-` to a
//!   debugger that sends checked packets, so anything else on its stream
//!   (the rest of a packet whose `$` was damaged) means an answer was lost:
//!   it is asked for again when that packet's `#xx` has passed, without
//!   waiting for the timeout.
//!
//! [`Scrubber`] keeps checked packets out of the console: a damaged
//! channel switch can leave one there.

use std::time::{Duration, Instant};

use ukdb_stub::checked::{self, Answer, Envelope};

/// The smallest piece limit (bytes of reply text).
pub const MIN_PIECE: u32 = 24;

/// The largest piece limit.
pub const MAX_PIECE: u32 = 0x4000;

/// The first piece limit.
pub const FIRST_PIECE: u32 = 512;

/// The shortest retransmission timeout.
pub const MIN_RTO: Duration = Duration::from_millis(4);

/// The longest retransmission timeout.
pub const MAX_RTO: Duration = Duration::from_secs(2);

/// How long a running stub may take to read each byte of a request, on
/// top of the round trip: it polls its UART from a 1 kHz timer and takes
/// what the 16-byte FIFO holds, 16 bytes a millisecond. A request is not
/// given up on (and sent again) before it can have been read: a shorter
/// timeout sent a long request again and again while the stub was still
/// reading it, and the copies queued up.
pub const INTAKE_PER_BYTE: Duration = Duration::from_micros(63);

/// How often a request that resumed the unikernel is asked for its stop
/// reply.
pub const POLL: Duration = Duration::from_millis(500);

/// How many times one request (or piece) is sent before the link gives up
/// on it (the pacer's own timeout then lets the next request through).
pub const MAX_TRIES: u32 = 1000;

/// The longest checked packet the bridge takes from the stub: a piece of
/// [`MAX_PIECE`] bytes, every one escaped, and its envelope.
pub const MAX_FRAME: usize = 2 * MAX_PIECE as usize + 64;

/// The body of a checked Ctrl-C (see [`Link::interrupted`]).
pub const INTERRUPT: &[u8] = b"vCtrlC";

/// The bridge's answer to a debugger's `QStartNoAckMode`.
const OK: &[u8] = b"$OK#9a";

/// What the link has done so far (for logs and the test report).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered whole.
    pub requests: u64,
    /// Pieces received whole.
    pub pieces: u64,
    /// Requests and pieces asked for again after a timeout.
    pub timeouts: u64,
    /// Checked packets from the stub that failed their checks.
    pub damaged: u64,
    /// NAKs from the stub (a request it received damaged).
    pub naks: u64,
    /// Answers for another request or piece (late duplicates).
    pub stale: u64,
    /// Requests given up after [`MAX_TRIES`].
    pub abandoned: u64,
}

/// What a request does to the unikernel, for how its answer is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Answered at once.
    Plain,
    /// Resumes the unikernel: answered `running`, then by the next stop.
    Resume,
    /// Answered by nothing (`k`): `running` or any piece ends it.
    NoReply,
}

fn kind(body: &[u8]) -> Kind {
    match body.first() {
        Some(b'c' | b'C' | b's' | b'S') => Kind::Resume,
        Some(b'k') => Kind::NoReply,
        _ if body.starts_with(b"vCont;") => Kind::Resume,
        _ => Kind::Plain,
    }
}

#[derive(Debug, Clone)]
struct Outstanding {
    seq: u32,
    /// The debugger's packet body, as on the wire.
    body: Vec<u8>,
    kind: Kind,
    /// The reply text so far.
    text: Vec<u8>,
    /// The stub answered (a piece or `running`): it has the request.
    answered: bool,
    /// The stub said `running`.
    running: bool,
    /// When the last request or piece request went out.
    asked: Instant,
    /// When to ask again.
    deadline: Instant,
    /// Times asked for the current piece.
    tries: u32,
    /// Timeouts in a row.
    backoff: u32,
}

/// One debugger's requests over the noisy hop. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Link {
    debugger_ack: bool,
    next_seq: u32,
    outstanding: Option<Outstanding>,
    /// A checked packet from the stub being received.
    frame: Option<Vec<u8>>,
    /// Bytes outside a packet since the last `#` there (`None`: no `#`
    /// seen): the tail of a packet whose `$` was damaged.
    junk_hash: Option<u8>,
    piece: u32,
    srtt: Option<Duration>,
    /// The debugger sent Ctrl-C while a resume was outstanding.
    interrupt: bool,
    stats: Stats,
}

/// What to do with a debugger's packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromDebugger {
    /// Bytes for the debugger at once (its `+`/`-`, or `OK`).
    pub answer: Vec<u8>,
    /// Whether the packet goes on to the stub (through the pacer, then
    /// [`Link::send`]).
    pub forward: bool,
}

impl Link {
    /// A link for a new debugger (in ack mode) with nothing outstanding;
    /// its request numbers start at `first_seq` (a bridge starts at a
    /// random one, so that a stub that kept the last number of an earlier
    /// bridge does not take a new request for a retransmission).
    pub fn new(first_seq: u32) -> Self {
        Self {
            debugger_ack: true,
            next_seq: first_seq,
            outstanding: None,
            frame: None,
            junk_hash: None,
            piece: FIRST_PIECE,
            srtt: None,
            interrupt: false,
            stats: Stats::default(),
        }
    }

    /// The current piece limit.
    pub fn piece(&self) -> u32 {
        self.piece
    }

    /// What the link has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A whole packet from the debugger.
    pub fn from_debugger(&mut self, packet: &[u8]) -> FromDebugger {
        let ack = self.debugger_ack;
        if crate::rsp::checksum_ok(packet) != Some(true) {
            let answer = if ack { b"-".to_vec() } else { Vec::new() };
            return FromDebugger { answer, forward: false };
        }
        let mut answer = if ack { b"+".to_vec() } else { Vec::new() };
        if packet.starts_with(b"$QStartNoAckMode#") {
            answer.extend_from_slice(OK);
            self.debugger_ack = false;
            return FromDebugger { answer, forward: false };
        }
        FromDebugger { answer, forward: true }
    }

    /// Whether a byte the debugger sent between packets goes to the stub:
    /// only `0x03` does (acknowledgements are the bridge's business).
    pub fn forward_byte(byte: u8) -> bool {
        byte == 0x03
    }

    /// The debugger's Ctrl-C (`0x03`, which is not sent on as it is: line
    /// noise can make that byte, so the stub ignores it from a debugger that
    /// sends checked packets). While a resume the stub has is outstanding,
    /// it goes to the stub as the resume's number with the body `vCtrlC`,
    /// at once and with each poll until the stop reply.
    pub fn interrupted(&mut self, now: Instant, out: &mut Vec<u8>) {
        let Some(o) = self.outstanding.as_mut() else { return };
        if o.kind != Kind::Resume {
            return;
        }
        self.interrupt = true;
        if o.answered {
            self.ask(now, out);
        }
    }

    /// Sends the debugger's request `packet` (`$body#xx`) to the stub:
    /// appends its checked form to `out`.
    pub fn send(&mut self, packet: &[u8], now: Instant, out: &mut Vec<u8>) {
        let body = packet
            .strip_prefix(b"$")
            .and_then(|b| b.get(..b.len().saturating_sub(3)))
            .unwrap_or_default()
            .to_vec();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.interrupt = false;
        self.outstanding = Some(Outstanding {
            seq,
            kind: kind(&body),
            body,
            text: Vec::new(),
            answered: false,
            running: false,
            asked: now,
            deadline: now,
            tries: 1,
            backoff: 0,
        });
        self.ask_after(now, 0, out);
    }

    /// The retransmission timeout after `backoff` timeouts in a row, with
    /// the time the stub may take to read the outstanding request (while
    /// it is still sent whole).
    fn rto(&self, backoff: u32) -> Duration {
        let base = self.srtt.map_or(Duration::from_millis(200), |s| s * 4).max(MIN_RTO);
        let intake = self
            .outstanding
            .as_ref()
            .filter(|o| !o.answered)
            .map_or(0, |o| u32::try_from(o.body.len()).unwrap_or(u32::MAX));
        base.saturating_mul(1 << backoff.min(8)).min(MAX_RTO)
            + INTAKE_PER_BYTE.saturating_mul(intake)
    }

    /// Asks the stub for the outstanding request's next piece (the whole
    /// request while the stub may not have it).
    fn ask(&mut self, now: Instant, out: &mut Vec<u8>) {
        let piece = self.piece;
        let Some(o) = self.outstanding.as_mut() else { return };
        let env = Envelope {
            seq: o.seq,
            limit: piece,
            offset: u32::try_from(o.text.len()).unwrap_or(u32::MAX),
        };
        let body: &[u8] = match (o.answered, self.interrupt) {
            (false, _) => &o.body,
            (true, true) => INTERRUPT,
            (true, false) => b"",
        };
        checked::write_request(env, body, |b| out.extend_from_slice(b));
        o.asked = now;
    }

    /// When [`Link::expire`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }

    /// Asks again for what is overdue at `now` (into `out`).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<u8>) {
        let Some(o) = self.outstanding.as_mut() else { return };
        if now < o.deadline {
            return;
        }
        if o.running {
            // A poll: the stop reply, once there is one (and the Ctrl-C
            // again, if the debugger sent one).
            o.deadline = now + POLL;
            self.ask(now, out);
            return;
        }
        o.backoff += 1;
        let backoff = o.backoff;
        self.stats.timeouts += 1;
        self.retry(now, backoff, out);
    }

    /// Debugger-stream bytes from the stub; requests for further pieces go
    /// to `out`, whole replies to `reply` (for the debugger).
    pub fn from_stub(
        &mut self,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) {
        for &b in bytes {
            if b == b'$' {
                self.frame = Some(vec![b]);
                self.junk_hash = None;
                continue;
            }
            let Some(frame) = self.frame.as_mut() else {
                match (b, self.junk_hash) {
                    (b'-', None) => {
                        // The stub received a damaged request: send it
                        // again.
                        self.stats.naks += 1;
                        self.again(now, out);
                    }
                    (b'+', None) => {}
                    (b'#', _) => self.junk_hash = Some(0),
                    (_, Some(0)) => self.junk_hash = Some(1),
                    (_, Some(_)) => {
                        // The end of a packet that lost its `$`.
                        self.junk_hash = None;
                        self.damaged(now, out);
                    }
                    (_, None) => {}
                }
                continue;
            };
            frame.push(b);
            let n = frame.len();
            if n > MAX_FRAME {
                self.frame = None;
                self.damaged(now, out);
            } else if n >= 4 && frame[n - 3] == b'#' {
                let frame = self.frame.take().unwrap_or_default();
                self.on_frame(&frame, now, out, reply);
            }
        }
    }

    /// A damaged answer: a smaller piece, asked for again at once.
    fn damaged(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.stats.damaged += 1;
        self.piece = (self.piece - self.piece / 10).max(MIN_PIECE);
        self.again(now, out);
    }

    /// Asks again at once for what is outstanding (not while the
    /// unikernel runs: polls do that).
    fn again(&mut self, now: Instant, out: &mut Vec<u8>) {
        if self.outstanding.as_ref().is_some_and(|o| !o.running) {
            self.retry(now, 0, out);
        }
    }

    /// One more try for the outstanding request, due again after the
    /// round-trip timeout backed off `backoff` times; after [`MAX_TRIES`] it
    /// is given up.
    fn retry(&mut self, now: Instant, backoff: u32, out: &mut Vec<u8>) {
        let Some(o) = self.outstanding.as_mut() else { return };
        o.tries += 1;
        if o.tries > MAX_TRIES {
            self.stats.abandoned += 1;
            self.outstanding = None;
            return;
        }
        self.ask_after(now, backoff, out);
    }

    /// Asks for the outstanding request's next piece, due after the
    /// round-trip timeout backed off `backoff` times.
    fn ask_after(&mut self, now: Instant, backoff: u32, out: &mut Vec<u8>) {
        let rto = self.rto(backoff);
        if let Some(o) = self.outstanding.as_mut() {
            o.deadline = now + rto;
        }
        self.ask(now, out);
    }

    fn on_frame(&mut self, frame: &[u8], now: Instant, out: &mut Vec<u8>, reply: &mut Vec<u8>) {
        let answer = (crate::rsp::checksum_ok(frame) == Some(true))
            .then(|| frame.get(1..frame.len() - 3))
            .flatten()
            .and_then(checked::parse_answer);
        let Some(answer) = answer else {
            self.damaged(now, out);
            return;
        };
        let Some(o) = self.outstanding.as_mut() else {
            self.stats.stale += 1;
            return;
        };
        match answer {
            Answer::Running { seq } if seq == o.seq => {
                o.answered = true;
                if o.kind == Kind::NoReply {
                    self.complete(reply);
                    return;
                }
                if !o.running {
                    o.running = true;
                    o.deadline = now + POLL;
                }
            }
            Answer::Piece { seq, offset, total, escaped } if seq == o.seq => {
                let at = usize::try_from(offset).unwrap_or(usize::MAX);
                if at != o.text.len() {
                    self.stats.stale += 1;
                    return;
                }
                let before = o.text.len();
                if checked::unescape(escaped, |b| o.text.push(b)).is_none()
                    || o.text.len() > usize::try_from(total).unwrap_or(usize::MAX)
                {
                    o.text.truncate(before);
                    self.damaged(now, out);
                    return;
                }
                self.stats.pieces += 1;
                let clean = o.tries == 1;
                o.answered = true;
                o.running = false;
                o.tries = 1;
                o.backoff = 0;
                let asked = o.asked;
                let whole = o.text.len() == usize::try_from(total).unwrap_or(usize::MAX);
                let grew = o.text.len() > before;
                if clean {
                    self.sample(now.saturating_duration_since(asked));
                    self.piece = (self.piece + self.piece / 6).min(MAX_PIECE);
                }
                if whole {
                    self.complete(reply);
                } else if grew {
                    self.ask_after(now, 0, out);
                } else {
                    // An empty piece of an unfinished reply: ask again.
                    self.again(now, out);
                }
            }
            _ => self.stats.stale += 1,
        }
    }

    /// The outstanding request is answered: its reply text goes to the
    /// debugger.
    fn complete(&mut self, reply: &mut Vec<u8>) {
        if let Some(o) = self.outstanding.take() {
            reply.extend_from_slice(&o.text);
            self.stats.requests += 1;
        }
        self.interrupt = false;
    }

    /// A round-trip sample.
    fn sample(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
    }

    /// Forgets the outstanding request (the session ended or the stub
    /// restarted); statistics, the piece limit and the round trip stay.
    pub fn reset(&mut self) {
        self.outstanding = None;
        self.frame = None;
        self.junk_hash = None;
        self.interrupt = false;
        self.debugger_ack = true;
    }
}

/// Keeps checked packets out of the console: when a damaged switch leaves
/// one in the console channel, it is taken out and handed to the debugger
/// stream (where the link checks it). Console text from `$@` on is held
/// until it ends such a packet (`#` and two hex digits: taken out, whole
/// or damaged) or cannot be one ([`MAX_FRAME`] bytes: passed on).
#[derive(Debug, Default)]
pub struct Scrubber {
    held: Vec<u8>,
    /// Hex digits seen after the held `#` (0, 1), when one was seen.
    hash: Option<u8>,
    /// Checked packets taken out of the console so far.
    pub taken: u64,
}

impl Scrubber {
    /// Console bytes in; the console text to print appended to `out`, the
    /// checked packets found in it to `packets`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>, packets: &mut Vec<u8>) {
        for &b in bytes {
            match self.held.len() {
                0 if b == b'$' => self.held.push(b),
                0 => out.push(b),
                1 if b == checked::MARK => self.held.push(b),
                1 => {
                    self.release(out);
                    self.feed(&[b], out, packets);
                }
                _ if b == b'$' => {
                    // A new packet may start here.
                    self.release(out);
                    self.held.push(b);
                }
                _ => {
                    self.held.push(b);
                    match self.hash {
                        None if b == b'#' => self.hash = Some(0),
                        None if self.held.len() >= MAX_FRAME => self.release(out),
                        None => {}
                        Some(0) => self.hash = Some(1),
                        Some(_) => {
                            packets.append(&mut self.held);
                            self.hash = None;
                            self.taken += 1;
                        }
                    }
                }
            }
        }
    }

    /// Passes on what is held (the stream ended, or it is not a packet).
    pub fn release(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.hash = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    /// A stub that acts on checked requests (`ukdb_stub::checked`): the
    /// reply text to each new request is `reply(body)`; resumes are
    /// answered `running` until [`FakeStub::stop`].
    struct FakeStub {
        last: Option<u32>,
        kept: Option<Vec<u8>>,
        acted: Vec<Vec<u8>>,
        reply: fn(&[u8]) -> Option<Vec<u8>>,
    }

    impl FakeStub {
        fn new(reply: fn(&[u8]) -> Option<Vec<u8>>) -> Self {
            Self { last: None, kept: None, acted: Vec::new(), reply }
        }

        /// The stub's answers to the bytes the bridge wrote.
        fn receive(&mut self, line: &[u8]) -> Vec<u8> {
            let mut answers = Vec::new();
            for packet in split(line) {
                let body = &packet[1..packet.len() - 3];
                if crate::rsp::checksum_ok(&packet) != Some(true) {
                    answers.push(b'-');
                    continue;
                }
                let Some((env, range)) = checked::parse_request(body) else {
                    answers.push(b'-');
                    continue;
                };
                if self.last != Some(env.seq) {
                    self.last = Some(env.seq);
                    self.acted.push(body[range.clone()].to_vec());
                    self.kept = (self.reply)(&body[range]);
                }
                match &self.kept {
                    Some(text) => checked::write_piece(env, text, |b| answers.extend_from_slice(b)),
                    None => checked::write_running(env.seq, |b| answers.extend_from_slice(b)),
                }
            }
            answers
        }
    }

    /// The `$...#xx` packets in `line`.
    fn split(line: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        for &b in line {
            if b == b'$' {
                cur = Some(vec![b]);
            } else if let Some(c) = cur.as_mut() {
                c.push(b);
                if c.len() >= 4 && c[c.len() - 3] == b'#' {
                    out.push(cur.take().unwrap());
                }
            }
        }
        out
    }

    fn memory_reply(body: &[u8]) -> Option<Vec<u8>> {
        if body.starts_with(b"c") {
            return None;
        }
        let hex: String = (0..300).map(|i| format!("{:02x}", i as u8)).collect();
        Some(if body.starts_with(b"m") { pkt(&hex) } else { pkt("OK") })
    }

    /// Runs one request through the link and the fake stub over a line
    /// that damages what `damage` says (by round), until the reply is
    /// whole; returns it.
    fn exchange(
        link: &mut Link,
        stub: &mut FakeStub,
        request: &[u8],
        mut damage: impl FnMut(usize, &mut Vec<u8>),
    ) -> Vec<u8> {
        let mut now = Instant::now();
        let mut out = Vec::new();
        link.send(request, now, &mut out);
        let mut reply = Vec::new();
        for round in 0..10_000 {
            if !reply.is_empty() {
                return reply;
            }
            if out.is_empty() {
                now = link.deadline().expect("something outstanding");
                link.expire(now, &mut out);
                continue;
            }
            let mut to_stub = std::mem::take(&mut out);
            damage(round * 2, &mut to_stub);
            let mut answers = stub.receive(&to_stub);
            damage(round * 2 + 1, &mut answers);
            now += Duration::from_millis(1);
            link.from_stub(&answers, now, &mut out, &mut reply);
        }
        panic!("no reply");
    }

    #[test]
    fn a_reply_longer_than_a_piece_comes_in_pieces() {
        let mut link = Link::new(5);
        let mut stub = FakeStub::new(memory_reply);
        let reply = exchange(&mut link, &mut stub, &pkt("m1000,12c"), |_, _| {});
        assert_eq!(reply, memory_reply(b"m").unwrap());
        assert_eq!(stub.acted, vec![b"m1000,12c".to_vec()]);
        assert_eq!(link.stats().pieces, 2, "{:?}", link.stats());
    }

    #[test]
    fn damaged_requests_and_pieces_are_asked_again_and_acted_on_once() {
        let mut link = Link::new(1);
        let mut stub = FakeStub::new(memory_reply);
        // Damage every third crossing: a flipped bit in its middle.
        let reply = exchange(&mut link, &mut stub, &pkt("M1000,1:cc"), |round, bytes| {
            if round % 3 == 0 && !bytes.is_empty() {
                let at = bytes.len() / 2;
                bytes[at] ^= 4;
            }
        });
        assert_eq!(reply, pkt("OK"));
        assert_eq!(stub.acted, vec![b"M1000,1:cc".to_vec()]);
        let reply = exchange(&mut link, &mut stub, &pkt("m1000,12c"), |round, bytes| {
            if round % 3 == 1 && bytes.len() > 10 {
                bytes.remove(7);
            }
        });
        assert_eq!(reply, memory_reply(b"m").unwrap());
        assert_eq!(stub.acted.len(), 2);
        assert!(link.stats().damaged > 0);
        assert!(link.piece() < FIRST_PIECE);
    }

    #[test]
    fn a_long_request_is_given_the_time_a_running_stub_takes_to_read_it() {
        let mut link = Link::new(1);
        let mut stub = FakeStub::new(memory_reply);
        // A quick round trip first: the timeout's base is a few ms.
        exchange(&mut link, &mut stub, &pkt("s"), |_, _| {});
        let now = Instant::now();
        let mut out = Vec::new();
        let long = format!("qSupported:{}", "multiprocess+;".repeat(12));
        link.send(&pkt(&long), now, &mut out);
        let wait = link.deadline().unwrap() - now;
        // 16 bytes a millisecond: 11 ms for these 179 bytes, not the 4 ms
        // that the round trip alone gives.
        let intake = Duration::from_millis(long.len() as u64 / 16);
        assert!(wait >= intake, "{wait:?} for {} bytes", long.len());
    }

    #[test]
    fn a_lost_answer_times_out_and_the_retransmission_is_not_acted_on() {
        let mut link = Link::new(1);
        let mut stub = FakeStub::new(memory_reply);
        let reply = exchange(&mut link, &mut stub, &pkt("s"), |round, bytes| {
            // The first answer vanishes.
            if round == 1 {
                bytes.clear();
            }
        });
        assert_eq!(reply, pkt("OK"));
        assert_eq!(stub.acted, vec![b"s".to_vec()]);
        assert_eq!(link.stats().timeouts, 1);
    }

    #[test]
    fn a_resume_is_polled_until_the_stop_and_ctrl_c_is_repeated() {
        let mut link = Link::new(1);
        let mut stub = FakeStub::new(memory_reply);
        let t0 = Instant::now();
        let mut out = Vec::new();
        link.send(&pkt("c"), t0, &mut out);
        let answers = stub.receive(&out);
        out.clear();
        let mut reply = Vec::new();
        link.from_stub(&answers, t0, &mut out, &mut reply);
        assert!(out.is_empty() && reply.is_empty());
        assert_eq!(link.deadline(), Some(t0 + POLL));
        // A poll carries no body: the stub has the request.
        link.expire(t0 + POLL, &mut out);
        let polls = split(&out);
        let body = &polls[0][1..polls[0].len() - 3];
        let (env, range) = checked::parse_request(body).unwrap();
        assert_eq!((env.offset, &body[range]), (0, &b""[..]));
        out.clear();
        // A Ctrl-C goes at once, and with every poll, as the resume's
        // number with the body vCtrlC.
        link.interrupted(t0 + POLL, &mut out);
        link.expire(t0 + POLL * 2, &mut out);
        let polls = split(&out);
        assert_eq!(polls.len(), 2);
        for p in &polls {
            let body = &p[1..p.len() - 3];
            let (env, range) = checked::parse_request(body).unwrap();
            assert_eq!((env.seq, &body[range]), (stub.last.unwrap(), INTERRUPT));
        }
        // The unikernel stopped; the poll fetches the stop reply.
        stub.kept = Some(pkt("T02"));
        let answers = stub.receive(&out);
        out.clear();
        out.clear();
        link.from_stub(&answers, t0 + POLL * 2, &mut out, &mut reply);
        assert_eq!(reply, pkt("T02"));
        assert_eq!(stub.acted, vec![b"c".to_vec()]);
        assert_eq!(link.deadline(), None);
    }

    #[test]
    fn the_debugger_hop_is_acknowledged_here() {
        let mut link = Link::new(1);
        let got = link.from_debugger(&pkt("QStartNoAckMode"));
        assert_eq!(got, FromDebugger { answer: b"+$OK#9a".to_vec(), forward: false });
        assert_eq!(link.from_debugger(&pkt("g")), FromDebugger { answer: vec![], forward: true });
        assert!(Link::forward_byte(3) && !Link::forward_byte(b'+'));
    }

    #[test]
    fn checked_packets_are_taken_out_of_the_console() {
        let mut s = Scrubber::default();
        let (mut out, mut packets) = (Vec::new(), Vec::new());
        s.feed(b"tick 1\n$@1,0,6:$OK#9a", &mut out, &mut packets);
        s.feed(b"01234567#ab tick 2 $5 and $", &mut out, &mut packets);
        s.feed(b"x\n", &mut out, &mut packets);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "tick 1\n$@1,0,6:$OK#9a01234567#ab tick 2 $5 and $x\n"
        );
        assert!(packets.is_empty(), "the inner `$` restarted it");
        let mut out = Vec::new();
        s.feed(b"a$@1,0,2:}\x04x01234567#abb", &mut out, &mut packets);
        assert_eq!(out, b"ab");
        assert_eq!(packets, b"$@1,0,2:}\x04x01234567#ab");
        assert_eq!(s.taken, 1);
    }
}
