//! A reliable serial hop (sans-I/O): the bridge keeps the stub in ack mode
//! and acknowledges, checks and retransmits on the line itself, whatever
//! mode the debugger asked for.
//!
//! The debugger's hop (TCP) never corrupts a byte; the serial line may. So
//! [`Link`] terminates RSP's acknowledgements on both hops:
//!
//! * **Debugger side.** A `QStartNoAckMode` is answered by the bridge (`OK`)
//!   and never reaches the stub, which stays in ack mode. While the debugger
//!   is in ack mode, each of its packets gets `+` (or `-` for a bad
//!   checksum, which is not forwarded) from the bridge at once; its own `+`
//!   and `-` are dropped (the bridge only hands it checked packets).
//! * **Stub side.** Each stub packet's checksum is checked: a good one gets
//!   `+` and, when it answers the outstanding request, goes to the
//!   debugger; a bad one gets `-` (the stub resends its last reply). A `-`
//!   from the stub makes the bridge retransmit the outstanding request.
//! * **Timeouts.** A request is sent again only when the stub cannot have
//!   acted on it (a step or a write must not happen twice). One that got
//!   neither `+` nor a reply within [`ACK_TIMEOUT`] of the last byte from the
//!   stub gets a probe, `-`: a stub that has the request answers with its
//!   reply to it; one that does not have it resends its previous reply,
//!   which tells the link to retransmit (after [`BLIND_PROBES`] unanswered
//!   probes it retransmits anyway: a stub with no previous reply says
//!   nothing). One acknowledged whose reply does not come within
//!   [`REPLY_TIMEOUT`] of silence gets `-` (reply again). A continue (`c`, `C`, `vCont;c`,
//!   `vCont;C`) is answered only when the unikernel stops, so it is neither
//!   retransmitted (a packet that reaches a running stub ends its session)
//!   nor asked again by timeout; a `#` seen outside a packet while one is
//!   outstanding means a reply lost its `$`, and gets `-` at once.
//! * **Short reads.** A reply of `n` bytes crosses a line that damages one
//!   byte in `k` whole with probability `(1 - 1/k)^n`, so long replies never
//!   would. The link caps the length of `m` reads and `qXfer` reads (both
//!   allow short answers: the debugger asks again for the rest) to a reply
//!   budget that adapts to the line: halved on each damaged reply, grown by
//!   1/16 on each clean first answer, between [`MIN_BUDGET`] and
//!   [`MAX_BUDGET`] bytes.
//! * **Confirmed replies.** RSP's checksum is a byte sum: two faults in one
//!   reply (a `0` dropped, another `0` doubled) pass it unseen. Once the
//!   line has shown damage, each reply is taken only when two copies agree:
//!   the first is kept and the stub is asked for it again (`-`; the stub
//!   resends the same bytes). Not for a detach or kill, after which the stub
//!   has no session to resend from.
//! * **Duplicates.** A packet arriving with no request outstanding is a
//!   duplicate (a resend the bridge asked for while the original was on its
//!   way) and is dropped, as is a packet identical to the previous reply
//!   that arrives before the stub acknowledged the current request (the
//!   stub writes its `+` before it reads further, so such a packet was sent
//!   before the request reached it).

use std::time::{Duration, Instant};

use crate::rsp::{self, Event, Tracker};

/// How long a request waits for the stub's `+` (or its reply) after the
/// last byte from the stub before it is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an acknowledged request waits in silence for its reply before
/// the bridge asks for it again with `-`.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// How many probes may go unanswered before a request is retransmitted.
pub const BLIND_PROBES: u32 = 3;

/// How many times one request is retried before the link gives up on it
/// (the pacer's own timeout then lets the next one through).
pub const MAX_TRIES: u32 = 200;

/// The smallest reply budget (bytes of reply data).
pub const MIN_BUDGET: u64 = 64;

/// The largest reply budget.
pub const MAX_BUDGET: u64 = 0x4000;

/// The first reply budget.
pub const FIRST_BUDGET: u64 = 0x400;

/// The bridge's answer to a debugger's `QStartNoAckMode`.
const OK: &[u8] = b"$OK#9a";

/// What the link has done so far (for logs and the test report).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent to the stub again (NAKed or timed out).
    pub retransmits: u64,
    /// `-` sent to the stub (a damaged or missing reply).
    pub naks: u64,
    /// Stub packets whose checksum was wrong.
    pub bad_replies: u64,
    /// Stub packets dropped as duplicates.
    pub duplicates: u64,
    /// Replies asked for again to confirm them.
    pub confirmations: u64,
}

#[derive(Debug, Clone)]
struct Outstanding {
    packet: Vec<u8>,
    /// The stub sent `+` for it.
    acked: bool,
    /// A continue: answered only by the next stop.
    resume: bool,
    /// The last time the stub sent anything (or the request was sent).
    since: Instant,
    tries: u32,
    /// Probes (`-` before the `+`) sent and not answered.
    probes: u32,
    /// For an `m` read: how many bytes it asked for (its reply is checked
    /// beyond the checksum, which misses one damage in 256 when a reply
    /// was hit twice).
    m_len: Option<u64>,
    /// A reply received and waiting for a second copy to agree.
    first: Option<Vec<u8>>,
    /// Its reply may be confirmed by a resend.
    confirmable: bool,
}

/// One debugger's acknowledgements and the stub's, terminated in the
/// bridge. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Link {
    debugger_ack: bool,
    stub: Tracker,
    outstanding: Option<Outstanding>,
    last_reply: Vec<u8>,
    stats: Stats,
    /// How many bytes of reply data a read may ask for.
    budget: u64,
    /// Replies are confirmed once the line has shown damage.
    confirm: bool,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

/// What to do with a debugger's packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromDebugger {
    /// Bytes for the debugger at once (its `+`/`-`, or `OK`).
    pub answer: Vec<u8>,
    /// The packet to send on to the stub (through the pacer), if any: the
    /// debugger's, or a read shortened to the line's budget.
    pub forward: Option<Vec<u8>>,
}

impl Link {
    /// A link for a new debugger (in ack mode) with nothing outstanding.
    pub fn new() -> Self {
        Self {
            debugger_ack: true,
            stub: Tracker::new(rsp::DEFAULT_MAX_PACKET),
            outstanding: None,
            last_reply: Vec::new(),
            stats: Stats::default(),
            budget: FIRST_BUDGET,
            confirm: true,
        }
    }

    /// The current reply budget (bytes of reply data a read may ask for).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// What the link has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A whole packet from the debugger.
    pub fn from_debugger(&mut self, packet: &[u8]) -> FromDebugger {
        let ack = self.debugger_ack;
        if rsp::checksum_ok(packet) != Some(true) {
            let answer = if ack { b"-".to_vec() } else { Vec::new() };
            return FromDebugger { answer, forward: None };
        }
        let mut answer = if ack { b"+".to_vec() } else { Vec::new() };
        if packet.starts_with(b"$QStartNoAckMode#") {
            answer.extend_from_slice(OK);
            self.debugger_ack = false;
            return FromDebugger { answer, forward: None };
        }
        let forward = Some(shorten(packet, self.budget).unwrap_or_else(|| packet.to_vec()));
        FromDebugger { answer, forward }
    }

    /// Whether a byte the debugger sent between packets goes to the stub:
    /// only `0x03` does (its acknowledgements are the bridge's business).
    pub fn forward_byte(byte: u8) -> bool {
        byte == 0x03
    }

    /// The request `packet` was written to the stub at `now`.
    pub fn sent(&mut self, packet: &[u8], now: Instant) {
        self.outstanding = Some(Outstanding {
            packet: packet.to_vec(),
            acked: false,
            resume: is_continue(packet),
            since: now,
            tries: 0,
            probes: 0,
            m_len: m_len(packet),
            first: None,
            confirmable: !matches!(packet.get(1), Some(b'D' | b'k'))
                && !packet.starts_with(b"$vKill"),
        });
    }

    /// Bytes of the stub's debugger stream at `now`: what the link sends the
    /// stub is appended to `to_stub`, the checked reply for the debugger to
    /// `to_client`.
    pub fn from_stub(
        &mut self,
        bytes: &[u8],
        now: Instant,
        to_stub: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
    ) {
        let mut events = Vec::new();
        if self.stub.push(bytes, &mut events).is_err() {
            self.stub.reset();
        }
        if let Some(o) = &mut self.outstanding {
            o.since = now;
        }
        for event in events {
            match event {
                Event::Byte(b'+') => {
                    if let Some(o) = &mut self.outstanding {
                        o.acked = true;
                    }
                }
                Event::Byte(b'-') => {
                    if let Some(o) = &mut self.outstanding {
                        o.acked = false;
                        o.tries += 1;
                        self.stats.retransmits += 1;
                        to_stub.extend_from_slice(&o.packet);
                    }
                }
                Event::Byte(b'#') if self.outstanding.is_some() => {
                    // The tail of a packet whose `$` was lost.
                    self.stats.naks += 1;
                    to_stub.push(b'-');
                }
                Event::Byte(_) | Event::Restarted(_) => {}
                Event::Packet(packet) => self.packet(packet, to_stub, to_client),
            }
        }
    }

    fn packet(&mut self, packet: Vec<u8>, to_stub: &mut Vec<u8>, to_client: &mut Vec<u8>) {
        let m_len = self.outstanding.as_ref().and_then(|o| o.m_len);
        let plausible =
            m_len.is_none_or(|len| m_reply_plausible(&packet, len)) || packet == self.last_reply;
        if rsp::checksum_ok(&packet) != Some(true) || !plausible {
            self.stats.bad_replies += 1;
            self.budget = (self.budget / 2).max(MIN_BUDGET);
            if self.outstanding.is_some() {
                self.stats.naks += 1;
                to_stub.push(b'-');
            }
            return;
        }
        to_stub.push(b'+');
        let Some(o) = &mut self.outstanding else {
            self.stats.duplicates += 1;
            return;
        };
        if !o.acked && packet == self.last_reply {
            self.stats.duplicates += 1;
            if o.probes > 0 {
                // The answer to a probe: the stub does not have the request.
                o.probes = 0;
                o.tries += 1;
                self.stats.retransmits += 1;
                to_stub.extend_from_slice(&o.packet);
            }
            return;
        }
        let noisy = self.stats.bad_replies > 0 || self.stats.naks > 0;
        if noisy && self.confirm && o.confirmable && o.first.as_ref() != Some(&packet) {
            // A first copy (or one that disagrees with the first): ask again.
            o.first = Some(packet);
            o.acked = true;
            self.stats.confirmations += 1;
            to_stub.push(b'-');
            return;
        }
        if o.tries == 0 && o.acked {
            self.budget = (self.budget + self.budget / 16 + 1).min(MAX_BUDGET);
        }
        self.outstanding = None;
        to_client.extend_from_slice(&packet);
        self.last_reply = packet;
    }

    /// When [`Link::expire`] has something to do, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        let o = self.outstanding.as_ref()?;
        match (o.acked, o.resume) {
            (_, true) => None,
            (false, false) => Some(o.since + ACK_TIMEOUT),
            (true, false) => Some(o.since + REPLY_TIMEOUT),
        }
    }

    /// Retries the outstanding request if its time has come at `now`:
    /// appends the retransmission (or a `-`) to `to_stub`.
    pub fn expire(&mut self, now: Instant, to_stub: &mut Vec<u8>) {
        let Some(deadline) = self.deadline() else { return };
        if now < deadline {
            return;
        }
        let Some(o) = &mut self.outstanding else { return };
        o.tries += 1;
        o.since = now;
        if o.tries > MAX_TRIES {
            self.outstanding = None;
            return;
        }
        if o.acked || o.probes < BLIND_PROBES {
            if !o.acked {
                o.probes += 1;
            }
            self.stats.naks += 1;
            to_stub.push(b'-');
        } else {
            o.probes = 0;
            self.stats.retransmits += 1;
            to_stub.extend_from_slice(&o.packet);
        }
    }

    /// The session ended or the stub restarted: nothing is outstanding and
    /// the next debugger starts in ack mode.
    pub fn reset(&mut self) {
        let (stats, budget, confirm) = (self.stats, self.budget, self.confirm);
        *self = Self::new();
        self.stats = stats;
        self.budget = budget;
        self.confirm = confirm;
    }
}

/// Keeps RSP packets out of the console on a noisy line: when a damaged
/// switch leaves a packet in the console channel, it is recognised and
/// handed to the debugger stream instead (where the link checks it).
/// Console text from a `$` on is held until it either ends a packet (`#`
/// and two hex digits, no line break: taken out) or cannot be one (a line
/// break, or [`SCRUB_LIMIT`] bytes: passed on).
#[derive(Debug, Default)]
pub struct Scrubber {
    held: Vec<u8>,
    /// Hex digits seen after the held `#` (0, 1), when one was seen.
    hash: Option<u8>,
    /// Packets taken out of the console so far.
    pub dropped: u64,
}

/// The longest text held as a possible packet.
pub const SCRUB_LIMIT: usize = 64 * 1024;

impl Scrubber {
    /// Console bytes in; the console text to print appended to `out`, the
    /// packets found in it to `packets`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>, packets: &mut Vec<u8>) {
        for &b in bytes {
            if self.held.is_empty() {
                if b == b'$' {
                    self.held.push(b);
                } else {
                    out.push(b);
                }
                continue;
            }
            if b == b'$' {
                // A new packet may start here.
                out.append(&mut self.held);
                self.hash = None;
                self.held.push(b);
                continue;
            }
            self.held.push(b);
            match self.hash {
                None if b == b'#' => self.hash = Some(0),
                None if b == b'\n' || self.held.len() >= SCRUB_LIMIT => self.release(out),
                None => {}
                Some(n) if b.is_ascii_hexdigit() => {
                    if n == 1 {
                        packets.append(&mut self.held);
                        self.hash = None;
                        self.dropped += 1;
                    } else {
                        self.hash = Some(n + 1);
                    }
                }
                Some(_) => self.release(out),
            }
        }
    }

    /// Passes on what is held (the stream ended, or it is not a packet).
    pub fn release(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.hash = None;
    }
}

/// `packet` (`$m ADDR,LEN#xx` or `$qXfer:...:read:ANNEX:OFF,LEN#xx`) with
/// its length cut so that the reply carries at most `budget` bytes of data;
/// `None` when it is not such a read or asks for no more than that.
fn shorten(packet: &[u8], budget: u64) -> Option<Vec<u8>> {
    let body = packet.strip_prefix(b"$")?;
    let body = &body[..body.len().checked_sub(3)?];
    let (head, len, max) = if let Some(rest) = body.strip_prefix(b"m") {
        let comma = rest.iter().position(|&b| b == b',')?;
        (&body[..comma + 2], &rest[comma + 1..], budget / 2)
    } else if body.starts_with(b"qXfer:") && body.windows(6).any(|w| w == b":read:") {
        let comma = body.iter().rposition(|&b| b == b',')?;
        (&body[..comma + 1], &body[comma + 1..], budget)
    } else {
        return None;
    };
    let len = u64::from_str_radix(std::str::from_utf8(len).ok()?, 16).ok()?;
    let max = max.max(1);
    if len <= max {
        return None;
    }
    let mut out = b"$".to_vec();
    out.extend_from_slice(head);
    out.extend_from_slice(format!("{max:x}").as_bytes());
    let sum = out[1..].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    out.extend_from_slice(format!("#{sum:02x}").as_bytes());
    Some(out)
}

/// How many bytes an `m` request asks for.
fn m_len(packet: &[u8]) -> Option<u64> {
    let body = packet.strip_prefix(b"$m")?;
    let body = &body[..body.len().checked_sub(3)?];
    let comma = body.iter().position(|&b| b == b',')?;
    u64::from_str_radix(std::str::from_utf8(&body[comma + 1..]).ok()?, 16).ok()
}

/// Whether `packet` can be the reply to an `m` read of `len` bytes: an
/// error (`E` and two hex digits), or an even number of hex digits, at
/// most `2 * len`.
fn m_reply_plausible(packet: &[u8], len: u64) -> bool {
    let Some(body) =
        packet.strip_prefix(b"$").and_then(|b| b.len().checked_sub(3).map(|n| &b[..n]))
    else {
        return false;
    };
    if let [b'E', a, b] = body {
        return a.is_ascii_hexdigit() && b.is_ascii_hexdigit();
    }
    body.len() % 2 == 0
        && (body.len() as u64) <= len.saturating_mul(2)
        && body.iter().all(|&b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `packet` resumes the unikernel until it stops by itself.
fn is_continue(packet: &[u8]) -> bool {
    let body = packet.strip_prefix(b"$").unwrap_or(packet);
    matches!(body.first(), Some(b'c' | b'C'))
        || body.starts_with(b"vCont;c")
        || body.starts_with(b"vCont;C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    fn unconfirmed() -> Link {
        Link { confirm: false, ..Link::new() }
    }

    /// Feeds `bytes` from the stub; returns (to stub, to client).
    fn stub(link: &mut Link, bytes: &[u8], now: Instant) -> (Vec<u8>, Vec<u8>) {
        let (mut s, mut c) = (Vec::new(), Vec::new());
        link.from_stub(bytes, now, &mut s, &mut c);
        (s, c)
    }

    #[test]
    fn no_ack_mode_is_answered_by_the_bridge() {
        let mut link = unconfirmed();
        let r = link.from_debugger(&pkt("QStartNoAckMode"));
        assert_eq!(r, FromDebugger { answer: b"+$OK#9a".to_vec(), forward: None });
        let r = link.from_debugger(&pkt("g"));
        assert_eq!(r, FromDebugger { answer: vec![], forward: Some(pkt("g")) });
        assert!(!Link::forward_byte(b'+') && !Link::forward_byte(b'-'));
        assert!(Link::forward_byte(0x03));
    }

    #[test]
    fn a_damaged_debugger_packet_is_naked_in_ack_mode_only() {
        let mut link = unconfirmed();
        let bad = FromDebugger { answer: b"-".to_vec(), forward: None };
        assert_eq!(link.from_debugger(b"$g#00"), bad);
        assert_eq!(link.from_debugger(&pkt("g")).answer, b"+");
    }

    #[test]
    fn a_good_reply_is_acked_and_forwarded_a_bad_one_naked() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("m0,4"), t);
        assert_eq!(stub(&mut link, b"+$0000000#00", t), (b"-".to_vec(), vec![]));
        let good = pkt("00000000");
        assert_eq!(stub(&mut link, &good, t), (b"+".to_vec(), good.clone()));
        // A resend arriving afterwards is a duplicate.
        assert_eq!(stub(&mut link, &good, t), (b"+".to_vec(), vec![]));
        assert_eq!(link.stats().duplicates, 1);
        assert_eq!(link.stats().bad_replies, 1);
    }

    #[test]
    fn a_nak_from_the_stub_retransmits_the_request() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("g"), t);
        assert_eq!(stub(&mut link, b"-", t), (pkt("g"), vec![]));
        assert_eq!(link.stats().retransmits, 1);
    }

    #[test]
    fn no_ack_in_time_retransmits_no_reply_in_time_naks() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("g"), t);
        assert_eq!(link.deadline(), Some(t + ACK_TIMEOUT));
        let mut out = Vec::new();
        link.expire(t + ACK_TIMEOUT / 2, &mut out);
        assert!(out.is_empty());
        // A probe, answered by a stub without a previous reply: nothing,
        // so after the blind probes the request goes again.
        let mut now = t;
        for _ in 0..BLIND_PROBES {
            now += ACK_TIMEOUT;
            link.expire(now, &mut out);
            assert_eq!(out, b"-");
            out.clear();
        }
        now += ACK_TIMEOUT;
        link.expire(now, &mut out);
        assert_eq!(out, pkt("g"));
        let t2 = now;
        stub(&mut link, b"+", t2);
        assert_eq!(link.deadline(), Some(t2 + REPLY_TIMEOUT));
        out.clear();
        link.expire(t2 + REPLY_TIMEOUT, &mut out);
        assert_eq!(out, b"-");
    }

    #[test]
    fn a_continue_is_never_retransmitted_by_timeout() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("vCont;c:p1.-1"), t);
        assert_eq!(link.deadline(), None);
        // But a reply whose `$` was lost is asked for again.
        assert_eq!(stub(&mut link, b"+T05thread:01;#ab", t).0, b"-");
        let stop = pkt("T05thread:01;");
        assert_eq!(stub(&mut link, &stop, t), (b"+".to_vec(), stop));
    }

    #[test]
    fn a_probe_answered_with_the_previous_reply_retransmits() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("m0,1"), t);
        assert_eq!(stub(&mut link, b"+", t), (vec![], vec![]));
        assert_eq!(stub(&mut link, &pkt("00"), t).1, pkt("00"));
        link.sent(&pkt("vCont;s:p1.-1"), t);
        let mut out = Vec::new();
        link.expire(t + ACK_TIMEOUT, &mut out);
        assert_eq!(out, b"-");
        let mut expected = b"+".to_vec();
        expected.extend(pkt("vCont;s:p1.-1"));
        assert_eq!(stub(&mut link, &pkt("00"), t), (expected, vec![]));
        // The step's stop reply, its `+` lost: taken.
        let stop = pkt("T05thread:01;");
        assert_eq!(stub(&mut link, &stop, t).1, stop);
    }

    #[test]
    fn a_stale_copy_of_the_previous_reply_is_dropped() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("Z0,1000,1"), t);
        let ok = pkt("OK");
        assert_eq!(stub(&mut link, &ok, t).1, ok);
        link.sent(&pkt("Z0,2000,1"), t);
        // Resends of the first OK, before the stub's `+` for the second.
        assert_eq!(stub(&mut link, &ok, t).1, b"");
        assert_eq!(stub(&mut link, &ok, t).1, b"");
        // The real answer, after its `+`: taken.
        assert_eq!(stub(&mut link, b"+", t).1, b"");
        assert_eq!(stub(&mut link, &ok, t).1, ok);
    }

    #[test]
    fn packets_in_the_console_are_scrubbed_text_is_not() {
        let mut scrub = Scrubber::default();
        let (mut out, mut packets) = (Vec::new(), Vec::new());
        scrub.feed(b"line 1 $5 #1\nD+$T05thread:01;#", &mut out, &mut packets);
        assert_eq!(out, b"line 1 $5 #1\nD+");
        scrub.feed(b"4fline 2 costs $3\n$", &mut out, &mut packets);
        assert_eq!(packets, b"$T05thread:01;#4f");
        assert_eq!(out, b"line 1 $5 #1\nD+line 2 costs $3\n");
        assert_eq!(scrub.dropped, 1);
        scrub.release(&mut out);
        assert!(out.ends_with(b"\n$"));
    }

    #[test]
    fn reads_are_shortened_to_a_budget_that_follows_the_line() {
        let t = Instant::now();
        let mut link = unconfirmed();
        assert_eq!(link.budget(), FIRST_BUDGET);
        assert_eq!(link.from_debugger(&pkt("m1000,4000")).forward, Some(pkt("m1000,200")));
        link.sent(&pkt("m1000,200"), t);
        stub(&mut link, b"+$00#00", t);
        assert_eq!(link.budget(), FIRST_BUDGET / 2);
        assert_eq!(link.from_debugger(&pkt("m1000,4000")).forward, Some(pkt("m1000,100")));
        let xfer = "qXfer:features:read:target.xml:0,1ff";
        assert_eq!(link.from_debugger(&pkt(xfer)).forward, Some(pkt(xfer)));
        assert_eq!(link.from_debugger(&pkt("m10,8")).forward, Some(pkt("m10,8")));
        // A clean first answer grows it again.
        stub(&mut link, &pkt("00"), t);
        link.sent(&pkt("m10,8"), t);
        stub(&mut link, b"+", t);
        stub(&mut link, &pkt("0011223344556677"), t);
        let grow = |b: u64| b + b / 16 + 1;
        assert_eq!(link.budget(), grow(grow(FIRST_BUDGET / 2)));
        for _ in 0..20 {
            stub(&mut link, b"$bad#00", t);
        }
        assert_eq!(link.budget(), MIN_BUDGET);
        assert_eq!(
            link.from_debugger(&pkt(xfer)).forward,
            Some(pkt("qXfer:features:read:target.xml:0,40"))
        );
    }

    #[test]
    fn a_memory_reply_that_cannot_be_one_is_naked() {
        let t = Instant::now();
        let mut link = unconfirmed();
        link.sent(&pkt("m1000,2"), t);
        // Good checksums, impossible replies: too long, odd, not hex.
        for bad in ["001122", "001", "0T1c"] {
            assert_eq!(stub(&mut link, &pkt(bad), t), (b"-".to_vec(), vec![]), "{bad}");
        }
        assert_eq!(stub(&mut link, &pkt("E0e"), t).1, pkt("E0e"));
        link.sent(&pkt("m1000,2"), t);
        assert_eq!(stub(&mut link, &pkt("0011"), t).1, pkt("0011"));
    }

    #[test]
    fn on_a_damaged_line_replies_are_taken_when_two_copies_agree() {
        let t = Instant::now();
        let mut link = Link::new();
        link.sent(&pkt("m0,2"), t);
        // Clean so far: taken at once.
        assert_eq!(stub(&mut link, b"+", t).1, b"");
        assert_eq!(stub(&mut link, &pkt("0011"), t).1, pkt("0011"));
        link.sent(&pkt("m2,2"), t);
        assert_eq!(stub(&mut link, b"+$2233#00", t), (b"-".to_vec(), vec![]));
        // Damage seen: a copy, then one that disagrees, then two that agree.
        assert_eq!(stub(&mut link, &pkt("2033"), t), (b"+-".to_vec(), vec![]));
        assert_eq!(stub(&mut link, &pkt("2233"), t), (b"+-".to_vec(), vec![]));
        assert_eq!(stub(&mut link, &pkt("2233"), t), (b"+".to_vec(), pkt("2233")));
        assert_eq!(link.stats().confirmations, 2);
        // Not for a detach.
        link.sent(&pkt("D"), t);
        assert_eq!(stub(&mut link, &pkt("OK"), t), (b"+".to_vec(), pkt("OK")));
    }

    #[test]
    fn continues_are_recognised() {
        for p in ["c", "C05", "vCont;c", "vCont;c:p1.-1", "vCont;C05"] {
            assert!(is_continue(&pkt(p)), "{p}");
        }
        for p in ["s", "vCont;s:p1.-1", "vCont?", "m0,1", "g"] {
            assert!(!is_continue(&pkt(p)), "{p}");
        }
    }
}
