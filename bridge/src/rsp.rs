//! RSP packet framing tracker (sans-I/O).
//!
//! The bridge must never forward part of an RSP packet to the stub: the stub
//! recognises the host's control sequences (`DLE 'X'`, `DLE 'R'`) only
//! between packets, so a client that disconnects in the middle of a packet
//! would otherwise leave the stub waiting for the rest of it and read the
//! `DLE 'X'` as packet data. [`Tracker`] follows the framing of a byte stream
//! and returns whole packets and the single bytes between them.
//!
//! Framing: a packet is `$`, a body, `#` and two checksum characters. The
//! body of a well-formed packet never contains a raw `$` or `#` (gdb escapes
//! them in binary data), so `#` always ends the body. A `$` inside a body
//! starts a new packet and the partial one is discarded, as gdb's own reader
//! does ("saw new packet start in middle of old one"). Bytes outside packets
//! (`+`, `-`, `0x03` and anything else) are returned one at a time, in order.
//! The checksum characters are not checked here; the stub checks them.

/// The default cap on a packet's size, `$` to the checksum included: 1 MiB.
pub const DEFAULT_MAX_PACKET: usize = 1 << 20;

/// A packet grew beyond the tracker's cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RSP packet larger than {limit} bytes")]
pub struct PacketTooLarge {
    /// The cap that was exceeded.
    pub limit: usize,
}

/// What a stretch of the stream means, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole packet, from `$` to the second checksum character, exactly as
    /// received.
    Packet(Vec<u8>),
    /// One byte outside any packet: `+`, `-`, `0x03` (interrupt) or other.
    Byte(u8),
    /// A `$` arrived inside a packet; these bytes (the partial packet so far)
    /// were discarded and a new packet started.
    Restarted(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between packets.
    Idle,
    /// After `$`, before `#`.
    Body,
    /// After `#`; holds the number of checksum characters seen (0 or 1).
    Checksum(u8),
}

/// Follows RSP framing across chunks. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Tracker {
    state: State,
    packet: Vec<u8>,
    max: usize,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET)
    }
}

impl Tracker {
    /// A tracker that refuses packets longer than `max` bytes (`$` to the
    /// checksum included).
    pub fn new(max: usize) -> Self {
        Self { state: State::Idle, packet: Vec::new(), max }
    }

    /// `true` while a packet has started and not yet ended.
    pub fn in_packet(&self) -> bool {
        self.state != State::Idle
    }

    /// The partial packet held so far (empty between packets).
    pub fn partial(&self) -> &[u8] {
        &self.packet
    }

    /// Forgets any partial packet, returning it.
    pub fn reset(&mut self) -> Vec<u8> {
        self.state = State::Idle;
        std::mem::take(&mut self.packet)
    }

    /// Parses the next chunk of the stream and returns its events.
    ///
    /// On [`PacketTooLarge`] the tracker has discarded the oversized partial
    /// packet and the rest of the chunk; events before it are lost with the
    /// error, as the connection should be dropped anyway. Use
    /// [`Tracker::push`] to keep them.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Event>, PacketTooLarge> {
        let mut out = Vec::new();
        self.push(input, &mut out)?;
        Ok(out)
    }

    /// Like [`Tracker::feed`], appending the events to `out`. On error, `out`
    /// holds the events of the chunk that came before the oversized packet.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<(), PacketTooLarge> {
        for &byte in input {
            match self.state {
                State::Idle if byte != b'$' => {
                    out.push(Event::Byte(byte));
                    continue;
                }
                State::Idle => self.state = State::Body,
                State::Body if byte == b'$' => {
                    out.push(Event::Restarted(std::mem::take(&mut self.packet)));
                }
                _ => {}
            }
            self.packet.push(byte);
            if self.packet.len() > self.max {
                self.reset();
                return Err(PacketTooLarge { limit: self.max });
            }
            match self.state {
                State::Body if byte == b'#' => self.state = State::Checksum(0),
                State::Checksum(0) => self.state = State::Checksum(1),
                State::Checksum(_) => {
                    self.state = State::Idle;
                    out.push(Event::Packet(std::mem::take(&mut self.packet)));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Checks a whole packet's checksum: `Some(true)` when the two characters
/// after `#` are the hex modulo-256 sum of the body, `Some(false)` when they
/// are hex but wrong, `None` when `packet` is not `$...#xx` with hex digits.
pub fn checksum_ok(packet: &[u8]) -> Option<bool> {
    let [b'$', rest @ ..] = packet else {
        return None;
    };
    let [body @ .., b'#', hi, lo] = rest else {
        return None;
    };
    let hex = |c: u8| (c as char).to_digit(16);
    let expected = hex(*hi)? * 16 + hex(*lo)?;
    let sum = body.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    Some(u32::from(sum) == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(bytes: &[u8]) -> Event {
        Event::Packet(bytes.to_vec())
    }

    fn feed_chunks(tracker: &mut Tracker, chunks: &[&[u8]]) -> Vec<Event> {
        let mut out = Vec::new();
        for chunk in chunks {
            tracker.push(chunk, &mut out).expect("no packet too large");
        }
        out
    }

    #[test]
    fn whole_packet() {
        let mut t = Tracker::default();
        assert_eq!(t.feed(b"$qSupported#37").unwrap(), vec![packet(b"$qSupported#37")]);
        assert!(!t.in_packet());
    }

    #[test]
    fn packet_split_at_every_point() {
        let input: &[u8] = b"+$qSupported:multiprocess+;swbreak+#1b+";
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let mut t = Tracker::default();
            let first = t.feed(a).unwrap();
            // Nothing of the packet comes out before its last checksum char.
            let packet_done = split >= input.len() - 1;
            assert_eq!(
                first.iter().any(|e| matches!(e, Event::Packet(_))),
                packet_done,
                "split at {split}"
            );
            let mut all = first;
            all.extend(t.feed(b).unwrap());
            assert_eq!(
                all,
                vec![
                    Event::Byte(b'+'),
                    packet(b"$qSupported:multiprocess+;swbreak+#1b"),
                    Event::Byte(b'+'),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn byte_by_byte() {
        let input: &[u8] = b"$m1000,8#92+\x03$c#63";
        let singles: Vec<&[u8]> = input.chunks(1).collect();
        let mut t = Tracker::default();
        let events = feed_chunks(&mut t, &singles);
        assert_eq!(
            events,
            vec![packet(b"$m1000,8#92"), Event::Byte(b'+'), Event::Byte(0x03), packet(b"$c#63"),]
        );
    }

    #[test]
    fn partial_packet_is_held_until_both_checksum_chars() {
        let mut t = Tracker::default();
        assert_eq!(t.feed(b"$g").unwrap(), vec![]);
        assert!(t.in_packet());
        assert_eq!(t.partial(), b"$g");
        assert_eq!(t.feed(b"#").unwrap(), vec![]);
        assert_eq!(t.feed(b"6").unwrap(), vec![]);
        assert_eq!(t.partial(), b"$g#6");
        assert_eq!(t.feed(b"7").unwrap(), vec![packet(b"$g#67")]);
        assert_eq!(t.partial(), b"");
    }

    #[test]
    fn every_byte_value_outside_packets_is_a_single_byte() {
        for b in (0..=255u8).filter(|&b| b != b'$') {
            let mut t = Tracker::default();
            assert_eq!(t.feed(&[b, b]).unwrap(), vec![Event::Byte(b), Event::Byte(b)]);
            assert!(!t.in_packet());
        }
    }

    #[test]
    fn every_byte_value_inside_a_body_is_data() {
        for b in (0..=255u8).filter(|&b| b != b'$' && b != b'#') {
            let mut t = Tracker::default();
            let input = [b'$', b, 0x10, b, b'#', b'0', b'0'];
            assert_eq!(t.feed(&input).unwrap(), vec![packet(&input)], "byte {b:#04x}");
        }
    }

    #[test]
    fn checksum_chars_may_be_anything() {
        // Even `$` and `#` are taken as checksum characters: the stub will
        // reject the checksum, but the framing stays in step.
        let mut t = Tracker::default();
        assert_eq!(t.feed(b"$x#$#+").unwrap(), vec![packet(b"$x#$#"), Event::Byte(b'+')]);
    }

    #[test]
    fn ctrl_c_and_acks_between_packets_in_order() {
        let mut t = Tracker::default();
        assert_eq!(
            t.feed(b"-\x03+$vCont;c#a8\x03").unwrap(),
            vec![
                Event::Byte(b'-'),
                Event::Byte(0x03),
                Event::Byte(b'+'),
                packet(b"$vCont;c#a8"),
                Event::Byte(0x03),
            ]
        );
    }

    #[test]
    fn ctrl_c_inside_a_packet_is_data() {
        let mut t = Tracker::default();
        assert_eq!(t.feed(b"$X0,1:\x03#00").unwrap(), vec![packet(b"$X0,1:\x03#00")]);
    }

    #[test]
    fn dollar_inside_a_body_restarts() {
        let mut t = Tracker::default();
        assert_eq!(
            t.feed(b"$qSup$g#67").unwrap(),
            vec![Event::Restarted(b"$qSup".to_vec()), packet(b"$g#67")]
        );
        // Across chunks too.
        assert_eq!(t.feed(b"$m10").unwrap(), vec![]);
        assert_eq!(
            t.feed(b"$$c#63").unwrap(),
            vec![
                Event::Restarted(b"$m10".to_vec()),
                Event::Restarted(b"$".to_vec()),
                packet(b"$c#63"),
            ]
        );
    }

    #[test]
    fn binary_data_with_escapes() {
        // `}` escapes: `}\x03` is an escaped `#` (0x23 ^ 0x20), `}\x04` an
        // escaped `$`. Neither ends nor restarts the packet.
        let input: &[u8] = b"$X1000,4:}\x03}\x04}]\x10#ff";
        let mut t = Tracker::default();
        assert_eq!(t.feed(input).unwrap(), vec![packet(input)]);
    }

    #[test]
    fn reset_discards_the_partial_packet() {
        let mut t = Tracker::default();
        t.feed(b"+$m1000").unwrap();
        assert_eq!(t.reset(), b"$m1000".to_vec());
        assert!(!t.in_packet());
        // The rest of the old packet is now outside any packet.
        assert_eq!(
            t.feed(b",8#92").unwrap(),
            b",8#92".iter().map(|&b| Event::Byte(b)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn packet_size_cap() {
        let mut t = Tracker::new(8);
        // Exactly 8 bytes is fine.
        assert_eq!(t.feed(b"$abcd#00").unwrap(), vec![packet(b"$abcd#00")]);
        let mut out = Vec::new();
        assert_eq!(t.push(b"+$abcde#00", &mut out), Err(PacketTooLarge { limit: 8 }));
        assert_eq!(out, vec![Event::Byte(b'+')]);
        assert!(!t.in_packet());
        // Too large across chunks.
        let mut t = Tracker::new(8);
        t.feed(b"$abc").unwrap();
        t.feed(b"de").unwrap();
        assert_eq!(t.feed(b"f#0"), Err(PacketTooLarge { limit: 8 }));
    }

    #[test]
    fn default_cap_is_one_mebibyte() {
        let mut t = Tracker::default();
        let mut big = vec![b'$'];
        big.resize(DEFAULT_MAX_PACKET - 3, b'a');
        big.extend_from_slice(b"#00");
        assert_eq!(big.len(), DEFAULT_MAX_PACKET);
        assert_eq!(t.feed(&big).unwrap(), vec![Event::Packet(big.clone())]);
        big.insert(1, b'a');
        assert!(t.feed(&big).is_err());
    }

    #[test]
    fn checksums() {
        assert_eq!(checksum_ok(b"$qSupported#37"), Some(true));
        assert_eq!(checksum_ok(b"$OK#9a"), Some(true));
        assert_eq!(checksum_ok(b"$OK#9A"), Some(true));
        assert_eq!(checksum_ok(b"$#00"), Some(true));
        assert_eq!(checksum_ok(b"$OK#00"), Some(false));
        assert_eq!(checksum_ok(b"$OK#zz"), None);
        assert_eq!(checksum_ok(b"OK#9a"), None);
        assert_eq!(checksum_ok(b"$OK9a"), None);
        assert_eq!(checksum_ok(b"+"), None);
    }
}
