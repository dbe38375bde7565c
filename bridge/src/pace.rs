//! Request pacing (sans-I/O): at most one debugger request outstanding at
//! the stub.
//!
//! gdb and lldb in all-stop mode send one request packet and wait for its
//! answer before they send the next. A client that does not (a flood of
//! requests, then a close) would otherwise fill the serial line with requests
//! that the stub must answer, one by one and slowly, before it reads the
//! `DLE 'X'` that ends the session; the next debugger would wait seconds for
//! its first reply. [`Pacer`] makes the bridge speak to the stub as gdb does:
//!
//! * a debugger's `$...#xx` packet goes to the stub only while no earlier one
//!   is outstanding; otherwise it is held (in order) in the pacer, up to a
//!   bound: a client that has that much waiting does not speak RSP as a
//!   debugger does, and its further packets are dropped (the bridge keeps
//!   reading it, so that it notices when the client leaves: a client's end
//!   of stream comes after everything it sent, and a stub that answers
//!   nothing would otherwise keep its session forever);
//! * the outstanding request is *released* by the next whole `$` packet on the
//!   stub's debugger stream (its reply; an `O` console-output packet counts
//!   too, which is harmless: gdb sends nothing while it waits), by a `-` from
//!   the stub between packets (it wants the request again; the debugger
//!   resends it), or by [`Pacer::expire`] once it has been outstanding for
//!   the timeout (a resume is answered only by the next stop, which may never
//!   come while gdb sends nothing but `0x03`). A packet whose checksum is
//!   wrong has a short timeout ([`BAD_CHECKSUM_TIMEOUT`]): in no-ack mode the
//!   stub drops it without a word;
//! * a packet identical to the last one the debugger sent, while that one
//!   is still unanswered, is the debugger retransmitting it (in ack mode gdb
//!   resends a request whose `+` did not come within its `remotetimeout`,
//!   which happens while its request waits here): it is dropped, since the
//!   stub answers the original (answering both would make the debugger take
//!   the second answer for the reply to its next request);
//! * a release forwards the next held packet, if any. A chunk of stub output
//!   releases at most once: all of it was sent before the packet that the
//!   release forwards, so none of it can be that packet's answer;
//! * when the debugger leaves, its held packets are dropped
//!   ([`Pacer::ended`]); a request of its that is still outstanding stays
//!   outstanding until the stub has acknowledged the end of the session
//!   ([`Pacer::acknowledged`], the stub's `DLE 'E'`: every reply written
//!   before it belongs to the ended session), so the next debugger's first
//!   packet does not queue up behind it at the stub.
//!
//! Only packets are paced: acks (`+`, `-`) and `0x03` never wait (Ctrl-C
//! must reach a running unikernel whose stop reply is outstanding), so the
//! caller forwards them itself. The pacer only sees the stub output that the
//! current debugger gets: late replies to an ended session are discarded
//! before they reach it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rsp;

/// How long a request may stay outstanding before the next one is forwarded
/// anyway: 10 s (gdb's own `remotetimeout` is 2 s, and it gives up after
/// three of them).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a packet with a wrong checksum stays outstanding at most: 1 s.
/// In ack mode the stub answers it with `-`, in no-ack mode not at all.
pub const BAD_CHECKSUM_TIMEOUT: Duration = Duration::from_secs(1);

/// How many bytes of packets [`Pacer::default`] holds before it drops
/// further ones: 64 KiB (gdb and lldb never have more than one waiting).
pub const HELD_LIMIT: usize = 64 * 1024;

/// What became of a debugger's request packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// It goes to the stub now, and is outstanding from now on.
    Forward(Vec<u8>),
    /// It waits for the outstanding one to be answered.
    Held,
    /// The held packets have reached the limit: it was dropped.
    Dropped,
    /// The same as the debugger's last packet, which is unanswered: a
    /// retransmission, dropped.
    Retransmission,
}

/// Why the outstanding request no longer holds the next one back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The stub sent a whole `$` packet: the answer (or an `O` packet).
    Reply,
    /// The stub sent `-`: it wants the request again.
    Nak,
    /// The stub acknowledged the end of the session the request belonged
    /// to.
    Acknowledged,
    /// The request was outstanding for the timeout.
    TimedOut,
}

/// A request stopped being outstanding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Why.
    pub why: Release,
    /// The held packet to forward now; it is outstanding from now on.
    pub next: Option<Vec<u8>>,
}

/// A request that the stub has (or will have) and has not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    /// When it was forwarded.
    since: Instant,
    /// Whether the debugger that sent it has left (only the stub's
    /// acknowledgement of the session's end, or the timeout, releases it).
    ended: bool,
    /// How long it may stay outstanding.
    timeout: Duration,
}

/// Where the stub's debugger stream is, as far as releases go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// Between packets.
    Idle,
    /// After `$`, before `#`.
    Body,
    /// After `#`; holds the number of checksum characters seen (0 or 1).
    Checksum(u8),
}

/// Holds a debugger's requests while one is outstanding at the stub. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Pacer {
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    outstanding: Option<Outstanding>,
    /// The outstanding packet (its bytes; empty when it is not known).
    last: Vec<u8>,
    stream: Stream,
    timeout: Duration,
    held_limit: usize,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new(REPLY_TIMEOUT, HELD_LIMIT)
    }
}

impl Pacer {
    /// A pacer with nothing outstanding whose requests time out after
    /// `timeout`, and that holds packets while fewer than `held_limit` bytes
    /// are held (it can exceed that by one packet).
    pub fn new(timeout: Duration, held_limit: usize) -> Self {
        Self {
            held: VecDeque::new(),
            held_bytes: 0,
            outstanding: None,
            last: Vec::new(),
            stream: Stream::Idle,
            timeout,
            held_limit,
        }
    }

    /// A whole request packet from the debugger, at `now`: forwarded when
    /// nothing is outstanding, otherwise held behind the ones held already;
    /// dropped when it repeats the debugger's last, unanswered packet, or
    /// when the held ones have reached the limit.
    pub fn request(&mut self, packet: Vec<u8>, now: Instant) -> Request {
        let Some(outstanding) = self.outstanding else {
            debug_assert!(self.held.is_empty(), "held packets wait for an outstanding one");
            self.forwarding(&packet, now);
            return Request::Forward(packet);
        };
        // The debugger's last packet: the last held one, or else the
        // outstanding one if it is this debugger's.
        let last = match self.held.back() {
            Some(held) => Some(held),
            None if !outstanding.ended => Some(&self.last),
            None => None,
        };
        if last.is_some_and(|last| *last == packet) {
            return Request::Retransmission;
        }
        if self.held_bytes >= self.held_limit {
            return Request::Dropped;
        }
        self.held_bytes += packet.len();
        self.held.push_back(packet);
        Request::Held
    }

    /// Stub output on the debugger stream, as the current debugger gets it,
    /// at `now`. Returns the release it caused, if any (at most one per
    /// chunk).
    pub fn from_stub(&mut self, bytes: &[u8], now: Instant) -> Option<Released> {
        let mut release = None;
        for &byte in bytes {
            let answer = match self.stream {
                Stream::Idle => match byte {
                    b'$' => {
                        self.stream = Stream::Body;
                        None
                    }
                    b'-' => Some(Release::Nak),
                    _ => None,
                },
                // A `$` in a body starts the packet anew, as gdb reads it.
                Stream::Body => {
                    if byte == b'#' {
                        self.stream = Stream::Checksum(0);
                    }
                    None
                }
                Stream::Checksum(0) => {
                    self.stream = Stream::Checksum(1);
                    None
                }
                Stream::Checksum(_) => {
                    self.stream = Stream::Idle;
                    Some(Release::Reply)
                }
            };
            if release.is_none() && self.outstanding.is_some() {
                release = answer;
            }
        }
        release.map(|why| self.release(why, now))
    }

    /// The debugger has left (or was dropped): its held packets are dropped
    /// and their number returned. A request of its that is outstanding stays
    /// so until [`Pacer::acknowledged`] or the timeout.
    pub fn ended(&mut self) -> usize {
        if let Some(outstanding) = &mut self.outstanding {
            outstanding.ended = true;
        }
        self.stream = Stream::Idle;
        self.drop_held()
    }

    /// The stub has acknowledged the end of every session the bridge ended:
    /// it has answered whatever those debuggers had outstanding. Releases a
    /// request of an ended session.
    pub fn acknowledged(&mut self, now: Instant) -> Option<Released> {
        match self.outstanding {
            Some(Outstanding { ended: true, .. }) => Some(self.release(Release::Acknowledged, now)),
            _ => None,
        }
    }

    /// When the outstanding request times out, if one is outstanding.
    pub fn deadline(&self) -> Option<Instant> {
        self.outstanding.map(|o| o.since + o.timeout)
    }

    /// Releases the outstanding request if it has timed out at `now`.
    pub fn expire(&mut self, now: Instant) -> Option<Released> {
        match self.deadline() {
            Some(deadline) if deadline <= now => Some(self.release(Release::TimedOut, now)),
            _ => None,
        }
    }

    /// The stub restarted: nothing is outstanding any more. The held packets
    /// are dropped and their number returned.
    pub fn reset(&mut self) -> usize {
        self.outstanding = None;
        self.last.clear();
        self.stream = Stream::Idle;
        self.drop_held()
    }

    /// How many bytes of packets are held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// How many packets are held.
    pub fn held_packets(&self) -> usize {
        self.held.len()
    }

    /// Whether a request is outstanding.
    pub fn is_outstanding(&self) -> bool {
        self.outstanding.is_some()
    }

    fn drop_held(&mut self) -> usize {
        let dropped = self.held.len();
        self.held.clear();
        self.held_bytes = 0;
        dropped
    }

    /// Records that `packet` goes to the stub at `now`.
    fn forwarding(&mut self, packet: &[u8], now: Instant) {
        let timeout = if rsp::checksum_ok(packet) == Some(true) {
            self.timeout
        } else {
            self.timeout.min(BAD_CHECKSUM_TIMEOUT)
        };
        self.outstanding = Some(Outstanding { since: now, ended: false, timeout });
        // Reuses the allocation: no allocation per packet.
        self.last.clear();
        self.last.extend_from_slice(packet);
    }

    fn release(&mut self, why: Release, now: Instant) -> Released {
        self.outstanding = None;
        self.last.clear();
        let next = self.held.pop_front();
        if let Some(packet) = &next {
            self.held_bytes -= packet.len();
            self.forwarding(packet, now);
        }
        Released { why, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bytes: &[u8]) -> Vec<u8> {
        bytes.to_vec()
    }

    fn released(why: Release, next: Option<&[u8]>) -> Option<Released> {
        Some(Released { why, next: next.map(<[u8]>::to_vec) })
    }

    #[test]
    fn one_request_at_a_time_in_order() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(pacer.request(p(b"$m0,1#fa"), t0), Request::Forward(p(b"$m0,1#fa")));
        assert_eq!(pacer.request(p(b"$m1,1#fb"), t0), Request::Held);
        assert_eq!(pacer.request(p(b"$m2,1#fc"), t0), Request::Held);
        assert_eq!((pacer.held_packets(), pacer.held_bytes()), (2, 16));
        // The ack is not an answer; the reply is, once complete.
        assert_eq!(pacer.from_stub(b"+$00#", t0), None);
        assert_eq!(pacer.from_stub(b"6", t0), None);
        assert_eq!(pacer.from_stub(b"0", t0), released(Release::Reply, Some(b"$m1,1#fb")));
        assert_eq!(pacer.from_stub(b"+$01#61", t0), released(Release::Reply, Some(b"$m2,1#fc")));
        assert_eq!(pacer.from_stub(b"+$02#62", t0), released(Release::Reply, None));
        assert!(!pacer.is_outstanding());
        assert_eq!((pacer.held_packets(), pacer.held_bytes()), (0, 0));
        // Nothing outstanding: a stray reply releases nothing, and the next
        // request goes at once.
        assert_eq!(pacer.from_stub(b"$OK#9a-", t0), None);
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Forward(p(b"$g#67")));
    }

    #[test]
    fn a_chunk_releases_at_most_once() {
        // An `O` packet and the stop reply in one read: both were written
        // before the next request, so only one request is released.
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$c#63"), t0), Request::Forward(_)));
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Held);
        assert_eq!(pacer.request(p(b"$?#3f"), t0), Request::Held);
        assert_eq!(
            pacer.from_stub(b"$O6869#00$T05#b9", t0),
            released(Release::Reply, Some(b"$g#67"))
        );
        assert_eq!(pacer.held_packets(), 1);
        // The stream state carried on across the chunk.
        assert_eq!(pacer.from_stub(b"$E01#", t0), None);
        assert_eq!(pacer.from_stub(b"a6", t0), released(Release::Reply, Some(b"$?#3f")));
    }

    #[test]
    fn a_nak_from_the_stub_releases() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$g#00"), t0), Request::Forward(_)));
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Held);
        assert_eq!(pacer.from_stub(b"-", t0), released(Release::Nak, Some(b"$g#67")));
        // A `-` inside a packet is data.
        assert_eq!(pacer.from_stub(b"$E-1", t0), None);
        assert_eq!(pacer.from_stub(b"#00", t0), released(Release::Reply, None));
    }

    #[test]
    fn dollar_and_hash_framing_of_replies() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$?#3f"), t0), Request::Forward(_)));
        // A `$` inside a body restarts the packet (as gdb reads it); the
        // checksum characters may be anything, `$` and `-` included.
        assert_eq!(pacer.from_stub(b"junk$S0$S05#", t0), None);
        assert_eq!(pacer.from_stub(b"$", t0), None);
        assert!(pacer.is_outstanding());
        assert_eq!(pacer.from_stub(b"-", t0), released(Release::Reply, None));
    }

    #[test]
    fn a_request_times_out() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3);
        let mut pacer = Pacer::new(Duration::from_secs(10), HELD_LIMIT);
        assert_eq!(pacer.deadline(), None);
        assert_eq!(pacer.expire(t0 + Duration::from_secs(60)), None);
        assert!(matches!(pacer.request(p(b"$c#63"), t0), Request::Forward(_)));
        assert_eq!(pacer.deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(pacer.request(p(b"$g#67"), later), Request::Held);
        assert_eq!(pacer.expire(t0 + Duration::from_millis(9999)), None);
        let at = t0 + Duration::from_secs(10);
        assert_eq!(pacer.expire(at), released(Release::TimedOut, Some(b"$g#67")));
        // The released packet's own clock starts now.
        assert_eq!(pacer.deadline(), Some(at + Duration::from_secs(10)));
        assert_eq!(pacer.expire(at + Duration::from_secs(10)), released(Release::TimedOut, None));
        assert_eq!(pacer.deadline(), None);
    }

    #[test]
    fn a_packet_with_a_wrong_checksum_times_out_sooner() {
        // In no-ack mode the stub drops it silently.
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$?#00"), t0), Request::Forward(_)));
        assert_eq!(pacer.deadline(), Some(t0 + BAD_CHECKSUM_TIMEOUT));
        assert_eq!(pacer.request(p(b"$m0,1#fa"), t0), Request::Held);
        let at = t0 + BAD_CHECKSUM_TIMEOUT;
        assert_eq!(pacer.expire(at), released(Release::TimedOut, Some(b"$m0,1#fa")));
        assert_eq!(pacer.deadline(), Some(at + REPLY_TIMEOUT));
        // Not hex: as wrong.
        assert_eq!(pacer.from_stub(b"$00#60", at), released(Release::Reply, None));
        assert!(matches!(pacer.request(p(b"$?#zz"), at), Request::Forward(_)));
        assert_eq!(pacer.deadline(), Some(at + BAD_CHECKSUM_TIMEOUT));
    }

    #[test]
    fn a_departed_debuggers_request_waits_for_the_acknowledgement() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$m0,40#fd"), t0), Request::Forward(_)));
        for i in 0..2999 {
            assert_eq!(pacer.request(format!("$m{i:x},40#00").into_bytes(), t0), Request::Held);
        }
        assert_eq!(pacer.ended(), 2999);
        assert_eq!((pacer.held_packets(), pacer.held_bytes()), (0, 0));
        // The next debugger's first packet waits behind the old request...
        assert_eq!(pacer.request(p(b"$qSupported#37"), t0), Request::Held);
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Held);
        // ...until the stub has acknowledged the end of the old session.
        assert_eq!(
            pacer.acknowledged(t0),
            released(Release::Acknowledged, Some(b"$qSupported#37"))
        );
        // Then as usual: an acknowledgement does not release the new
        // debugger's own request, its reply does.
        assert_eq!(pacer.acknowledged(t0), None);
        assert_eq!(pacer.from_stub(b"+$#00", t0), released(Release::Reply, Some(b"$g#67")));
    }

    #[test]
    fn an_ended_request_times_out_too() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(Duration::from_secs(1), HELD_LIMIT);
        assert!(matches!(pacer.request(p(b"$c#63"), t0), Request::Forward(_)));
        assert_eq!(pacer.ended(), 0);
        assert_eq!(pacer.request(p(b"$?#3f"), t0), Request::Held);
        assert_eq!(
            pacer.expire(t0 + Duration::from_secs(1)),
            released(Release::TimedOut, Some(b"$?#3f"))
        );
    }

    #[test]
    fn ending_forgets_a_partial_reply() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$g#67"), t0), Request::Forward(_)));
        assert_eq!(pacer.from_stub(b"$0000#", t0), None);
        pacer.ended();
        assert_eq!(pacer.acknowledged(t0), released(Release::Acknowledged, None));
        assert!(matches!(pacer.request(p(b"$?#3f"), t0), Request::Forward(_)));
        // The stream starts between packets: the first two bytes are not
        // taken for the old packet's checksum.
        assert_eq!(pacer.from_stub(b"+-", t0), released(Release::Nak, None));
    }

    #[test]
    fn held_packets_are_bounded() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(REPLY_TIMEOUT, 10);
        assert_eq!(pacer.request(p(b"$c#63"), t0), Request::Forward(p(b"$c#63")));
        assert_eq!(pacer.request(p(b"$m0,1#fa"), t0), Request::Held);
        // Below the limit: held, even though it goes beyond.
        assert_eq!(pacer.request(p(b"$m10,1#2b"), t0), Request::Held);
        assert_eq!(pacer.held_bytes(), 17);
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Dropped);
        assert_eq!(pacer.held_packets(), 2);
        // Room again once one is released.
        assert_eq!(pacer.from_stub(b"$T05#b9", t0), released(Release::Reply, Some(b"$m0,1#fa")));
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Held);
        assert_eq!(pacer.request(p(b"$s#73"), t0), Request::Dropped);
    }

    #[test]
    fn retransmissions_of_an_unanswered_request_are_dropped() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        let qs = p(b"$qSupported:multiprocess+#c6");
        assert_eq!(pacer.request(qs.clone(), t0), Request::Forward(qs.clone()));
        assert_eq!(pacer.request(qs.clone(), t0), Request::Retransmission);
        // Answered: the same request again is a new one.
        assert_eq!(pacer.from_stub(b"+$PacketSize=4000#00", t0), released(Release::Reply, None));
        assert_eq!(pacer.request(qs.clone(), t0), Request::Forward(qs.clone()));
        // Behind held ones, the last held one counts.
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Held);
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Retransmission);
        assert_eq!(pacer.request(qs.clone(), t0), Request::Held);
        assert_eq!(pacer.held_packets(), 2);
        // A NAK releases: the debugger's resend goes to the stub.
        assert_eq!(pacer.from_stub(b"-", t0), released(Release::Nak, Some(b"$g#67")));
        assert_eq!(pacer.from_stub(b"-", t0), released(Release::Nak, Some(&qs)));
        assert_eq!(pacer.from_stub(b"-", t0), released(Release::Nak, None));
        assert_eq!(pacer.request(qs.clone(), t0), Request::Forward(qs.clone()));
        // A departed debugger's outstanding request is not the next one's.
        pacer.ended();
        assert_eq!(pacer.request(qs.clone(), t0), Request::Held);
        assert_eq!(pacer.request(qs.clone(), t0), Request::Retransmission);
        assert_eq!(pacer.acknowledged(t0), released(Release::Acknowledged, Some(&qs)));
        assert_eq!(pacer.request(qs, t0), Request::Retransmission);
    }

    #[test]
    fn a_reset_forgets_everything() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(matches!(pacer.request(p(b"$c#63"), t0), Request::Forward(_)));
        assert_eq!(pacer.request(p(b"$g#67"), t0), Request::Held);
        assert_eq!(pacer.from_stub(b"$T0", t0), None);
        assert_eq!(pacer.reset(), 1);
        assert!(!pacer.is_outstanding());
        assert_eq!(pacer.deadline(), None);
        assert_eq!(pacer.request(p(b"$?#3f"), t0), Request::Forward(p(b"$?#3f")));
    }
}
