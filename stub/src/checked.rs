//! Checked packets: the envelope that `ukdb bridge --noisy-line` puts around
//! each request on a serial line that damages bytes, and that the stub puts
//! around each piece of its reply (`docs/wire-protocol.md`, "Checked
//! packets"). The one definition for both ends, compiled in every
//! configuration (no stub code: pure functions over bytes).
//!
//! RSP alone cannot survive such a line: its checksum is a byte sum (two
//! faults in one packet pass it unseen), a lost acknowledgement leaves the
//! sender unable to tell whether a request was acted on (a step or a write
//! must not happen twice), and a reply of `n` bytes crosses a line that
//! damages one byte in `k` whole only with probability `(1 - 1/k)^n`, so
//! long replies never would. So the bridge numbers each request and the
//! stub answers each number once, keeps the answer, and hands it out in
//! pieces as small as the bridge asks for, each with a CRC-32:
//!
//! ```text
//! request   $@SEQ,LIMIT,OFFSET:BODY CRC#xx     bridge -> stub
//! piece     $@SEQ,OFFSET,TOTAL:PIECE CRC#xx    stub -> bridge
//! running   $@SEQ! CRC#xx                      stub -> bridge
//! ```
//!
//! (without the spaces). `SEQ`, `LIMIT`, `OFFSET` and `TOTAL` are 1 to 8
//! lowercase hex digits; `CRC` is exactly 8: CRC-32/ISO-HDLC (zlib's) of
//! every byte from `@` up to it; `#xx` is RSP's checksum of the whole body.
//! `BODY` is the body of the RSP packet the debugger sent, as it was on the
//! wire. The stub's answer to a request is its *reply text*: the RSP
//! packets (`$...#xx`, one or more) it would have sent without the
//! envelope. A piece carries the reply text's bytes `OFFSET..` (at most
//! `LIMIT` of them) escaped as in RSP binary data: `$`, `#` and `}` are
//! sent as `}` followed by the byte XOR `0x20`. `TOTAL` is the reply text's
//! length.
//!
//! The stub acts on a request only when its `SEQ` differs from the last
//! one's; for the same `SEQ` it sends the piece at `OFFSET` of the reply it
//! kept (the bridge's retransmissions and its requests for further pieces,
//! which carry an empty `BODY`), or, when the request resumed the unikernel
//! and it has not stopped yet, `running`. A request whose CRC is wrong is
//! treated as a bad checksum.

/// The byte that starts a checked packet's body.
pub const MARK: u8 = b'@';

/// How many hex digits a CRC takes.
pub const CRC_DIGITS: usize = 8;

/// The CRC of checked packets: CRC-32/ISO-HDLC.
static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// A checked request's envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// The request's number.
    pub seq: u32,
    /// The most reply-text bytes one piece may carry (0: no limit).
    pub limit: u32,
    /// Where in the reply text the piece asked for starts.
    pub offset: u32,
}

impl Envelope {
    /// The piece limit as a length (0 means no limit).
    pub fn piece_len(&self) -> usize {
        match self.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

/// A checked packet from the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// A piece of the reply text, still escaped (see [`unescape`]).
    Piece {
        /// The request it answers.
        seq: u32,
        /// Where the piece starts in the reply text.
        offset: u32,
        /// The reply text's whole length.
        total: u32,
        /// The piece, escaped.
        escaped: &'a [u8],
    },
    /// The request resumed the unikernel, which has not stopped yet.
    Running {
        /// The request.
        seq: u32,
    },
}

fn hex_digit(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'f' => Some(u32::from(b - b'a' + 10)),
        _ => None,
    }
}

/// A number of 1 to 8 lowercase hex digits.
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &b| Some(n << 4 | hex_digit(b)?))
}

/// Splits `@...CRC` into what the CRC covers (from `@`) and checks it.
fn checked_part(body: &[u8]) -> Option<&[u8]> {
    if body.first() != Some(&MARK) {
        return None;
    }
    let (covered, crc) = body.split_at_checked(body.len().checked_sub(CRC_DIGITS)?)?;
    let want = crc.iter().try_fold(0u32, |n, &b| Some(n << 4 | hex_digit(b)?))?;
    (CRC.checksum(covered) == want).then_some(covered)
}

/// Whether an RSP packet body is a checked packet (it starts with
/// [`MARK`]; no RSP command does).
pub fn is_checked(body: &[u8]) -> bool {
    body.first() == Some(&MARK)
}

/// Parses a checked request's body (between `$` and `#`, RSP checksum
/// already verified): its envelope and where the debugger's body lies in
/// `body`. `None`: not a checked request, malformed, or its CRC is wrong.
pub fn parse_request(body: &[u8]) -> Option<(Envelope, core::ops::Range<usize>)> {
    let covered = checked_part(body)?;
    let rest = covered.get(1..)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let head = rest.get(..colon)?;
    let mut fields = head.split(|&b| b == b',');
    let seq = number(fields.next()?)?;
    let limit = number(fields.next()?)?;
    let offset = number(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    // `@`, the head, `:`.
    let start = colon + 2;
    Some((Envelope { seq, limit, offset }, start..covered.len()))
}

/// Parses a checked packet from the stub (its body between `$` and `#`,
/// RSP checksum already verified). `None`: not one, malformed, or its CRC
/// is wrong.
pub fn parse_answer(body: &[u8]) -> Option<Answer<'_>> {
    let covered = checked_part(body)?;
    let rest = covered.get(1..)?;
    let Some(colon) = rest.iter().position(|&b| b == b':') else {
        // `SEQ!`: no colon. (A piece may end in `!`: it is reply text.)
        let seq = rest.strip_suffix(b"!")?;
        return Some(Answer::Running { seq: number(seq)? });
    };
    let mut fields = rest.get(..colon)?.split(|&b| b == b',');
    let seq = number(fields.next()?)?;
    let offset = number(fields.next()?)?;
    let total = number(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    let escaped = rest.get(colon + 1..)?;
    Some(Answer::Piece { seq, offset, total, escaped })
}

/// Passes the bytes of an escaped piece to `push`; `None` when the piece
/// ends in the middle of an escape.
pub fn unescape(escaped: &[u8], mut push: impl FnMut(u8)) -> Option<()> {
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        push(if b == b'}' { *bytes.next()? ^ 0x20 } else { b });
    }
    Some(())
}

/// Writes a checked packet in pieces to `sink`, keeping its CRC and RSP
/// checksum as it goes.
struct Writer<'s, S: FnMut(&[u8])> {
    sink: &'s mut S,
    crc: crc::Digest<'static, u32>,
    sum: u8,
}

impl<'s, S: FnMut(&[u8])> Writer<'s, S> {
    fn start(sink: &'s mut S) -> Self {
        sink(b"$");
        Writer { sink, crc: CRC.digest(), sum: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.sum = bytes.iter().fold(self.sum, |a, &b| a.wrapping_add(b));
        (self.sink)(bytes);
    }

    fn hex(&mut self, n: u32) {
        let mut digits = [0u8; 8];
        let len = put_hex(&mut digits, n);
        self.put(digits.get(..len).unwrap_or_default());
    }

    fn end(self) {
        let Writer { sink, crc, mut sum } = self;
        let crc = crc.finalize();
        let mut tail = [0u8; CRC_DIGITS + 3];
        for (i, slot) in tail.iter_mut().take(CRC_DIGITS).enumerate() {
            *slot = DIGITS[((crc >> (28 - 4 * i)) & 0xf) as usize];
        }
        sum = tail.iter().take(CRC_DIGITS).fold(sum, |a, &b| a.wrapping_add(b));
        if let Some(t) = tail.get_mut(CRC_DIGITS..) {
            t.copy_from_slice(&[
                b'#',
                DIGITS[usize::from(sum >> 4)],
                DIGITS[usize::from(sum & 0xf)],
            ]);
        }
        sink(&tail);
    }
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `n` in lowercase hex without leading zeros (at least one digit); returns
/// how many digits it wrote.
fn put_hex(out: &mut [u8; 8], n: u32) -> usize {
    let len = ((32 - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..len {
        if let Some(slot) = out.get_mut(len - 1 - i) {
            *slot = DIGITS[((n >> (4 * i)) & 0xf) as usize];
        }
    }
    len
}

/// Writes the checked request `$@SEQ,LIMIT,OFFSET:BODY CRC#xx` to `sink`;
/// `body` is an RSP packet's body as on the wire.
pub fn write_request(env: Envelope, body: &[u8], mut sink: impl FnMut(&[u8])) {
    let mut w = Writer::start(&mut sink);
    w.put(&[MARK]);
    w.hex(env.seq);
    w.put(b",");
    w.hex(env.limit);
    w.put(b",");
    w.hex(env.offset);
    w.put(b":");
    w.put(body);
    w.end();
}

/// Writes the piece of `text` (a reply text) that `env` asks for to
/// `sink`: at most `env.limit` bytes from `env.offset` (none when the
/// offset is at or past the end).
pub fn write_piece(env: Envelope, text: &[u8], mut sink: impl FnMut(&[u8])) {
    let total = u32::try_from(text.len()).unwrap_or(u32::MAX);
    let from = usize::try_from(env.offset).unwrap_or(usize::MAX).min(text.len());
    let to = from.saturating_add(env.piece_len()).min(text.len());
    let mut w = Writer::start(&mut sink);
    w.put(&[MARK]);
    w.hex(env.seq);
    w.put(b",");
    w.hex(u32::try_from(from).unwrap_or(u32::MAX));
    w.put(b",");
    w.hex(total);
    w.put(b":");
    let mut run = text.get(from..to).unwrap_or_default();
    while !run.is_empty() {
        let plain = run.iter().position(|b| matches!(b, b'$' | b'#' | b'}')).unwrap_or(run.len());
        let (head, rest) = run.split_at(plain);
        w.put(head);
        if let Some((&b, rest)) = rest.split_first() {
            w.put(&[b'}', b ^ 0x20]);
            run = rest;
        } else {
            run = rest;
        }
    }
    w.end();
}

/// Writes `$@SEQ! CRC#xx` (the unikernel runs; no reply yet) to `sink`.
pub fn write_running(seq: u32, mut sink: impl FnMut(&[u8])) {
    let mut w = Writer::start(&mut sink);
    w.put(&[MARK]);
    w.hex(seq);
    w.put(b"!");
    w.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(f: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut |b: &[u8]| out.extend_from_slice(b));
        out
    }

    /// `$body#xx` -> body, checking the RSP checksum.
    fn body(packet: &[u8]) -> &[u8] {
        let (head, sum) = packet.split_at(packet.len() - 2);
        let body = head.strip_prefix(b"$").unwrap().strip_suffix(b"#").unwrap();
        let want = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        assert_eq!(format!("{want:02x}").as_bytes(), sum);
        body
    }

    fn unescaped(escaped: &[u8]) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        unescape(escaped, |b| v.push(b))?;
        Some(v)
    }

    #[test]
    fn a_request_is_written_and_parsed_back() {
        let env = Envelope { seq: 0x1234, limit: 0x40, offset: 0 };
        let wire = collect(|s| write_request(env, b"m1000,10", s));
        let crc = CRC.checksum(b"@1234,40,0:m1000,10");
        assert_eq!(
            wire,
            format!("$@1234,40,0:m1000,10{crc:08x}#{:02x}", {
                let b = format!("@1234,40,0:m1000,10{crc:08x}");
                b.bytes().fold(0u8, |a, c| a.wrapping_add(c))
            })
            .into_bytes()
        );
        let b = body(&wire);
        let (got, range) = parse_request(b).unwrap();
        assert_eq!(got, env);
        assert_eq!(&b[range], b"m1000,10");
    }

    #[test]
    fn an_empty_body_and_big_numbers_parse() {
        let env = Envelope { seq: u32::MAX, limit: 0, offset: 0x1_0000 };
        let wire = collect(|s| write_request(env, b"", s));
        let (got, range) = parse_request(body(&wire)).unwrap();
        assert_eq!((got, range.len()), (env, 0));
    }

    #[test]
    fn every_single_byte_fault_in_a_request_is_caught() {
        let env = Envelope { seq: 7, limit: 0x80, offset: 0 };
        let wire = collect(|s| write_request(env, b"M1000,2:cc90", s));
        let b = body(&wire).to_vec();
        for at in 0..b.len() {
            for bit in 0..8 {
                let mut bad = b.clone();
                bad[at] ^= 1 << bit;
                assert_eq!(parse_request(&bad), None, "flip at {at} bit {bit}");
            }
            let mut dropped = b.clone();
            dropped.remove(at);
            assert_eq!(parse_request(&dropped), None, "drop at {at}");
            let mut doubled = b.clone();
            doubled.insert(at, b[at]);
            assert_eq!(parse_request(&doubled), None, "double at {at}");
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            &b""[..],
            b"@",
            b"@1,2,3:",
            b"@1,2:x00000000",
            b"m1000,10",
            b"@123456789,1,1:00000000",
            b"@1,2,3,4:00000000",
            b"@1,2,3:xyz0000000g",
            b"@1,2,3:xyz0000000",
            b"@A,2,3:x00000000",
        ] {
            assert_eq!(parse_request(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(is_checked(b"@x"));
        assert!(!is_checked(b"qSupported"));
    }

    #[test]
    fn pieces_escape_and_cut_the_reply_text() {
        let text = b"$O41#a4$T05}#x#00";
        let mut joined = Vec::new();
        let mut offset = 0u32;
        loop {
            let env = Envelope { seq: 3, limit: 4, offset };
            let wire = collect(|s| write_piece(env, text, s));
            let Some(Answer::Piece { seq, offset: at, total, escaped }) = parse_answer(body(&wire))
            else {
                panic!("not a piece: {}", String::from_utf8_lossy(&wire));
            };
            assert_eq!((seq, at, total as usize), (3, offset, text.len()));
            assert!(!escaped.iter().any(|b| matches!(b, b'$' | b'#')));
            let piece = unescaped(escaped).unwrap();
            assert!(piece.len() <= 4);
            joined.extend_from_slice(&piece);
            offset += piece.len() as u32;
            if piece.is_empty() {
                break;
            }
        }
        assert_eq!(joined, text);
    }

    #[test]
    fn a_piece_past_the_end_is_empty_and_no_limit_is_everything() {
        let text = b"$OK#9a";
        let wire = collect(|s| write_piece(Envelope { seq: 1, limit: 2, offset: 99 }, text, s));
        assert_eq!(
            parse_answer(body(&wire)),
            Some(Answer::Piece { seq: 1, offset: 6, total: 6, escaped: b"" })
        );
        let wire = collect(|s| write_piece(Envelope { seq: 1, limit: 0, offset: 0 }, text, s));
        let Some(Answer::Piece { escaped, .. }) = parse_answer(body(&wire)) else { panic!() };
        assert_eq!(unescaped(escaped).unwrap(), text);
    }

    #[test]
    fn a_piece_that_ends_in_a_bang_is_a_piece() {
        // Found on a noisy line: the piece `... 8000fee0*!` (run-length
        // encoded reply text) was taken for `running`.
        let text = b"$x*!#00";
        let env = Envelope { seq: 5, limit: 4, offset: 0 };
        let wire = collect(|s| write_piece(env, text, s));
        let Some(Answer::Piece { escaped, .. }) = parse_answer(body(&wire)) else {
            panic!("not a piece: {}", String::from_utf8_lossy(&wire));
        };
        assert_eq!(unescaped(escaped).unwrap(), b"$x*!");
    }

    #[test]
    fn running_is_written_and_parsed_back() {
        let wire = collect(|s| write_running(0xab, s));
        assert_eq!(parse_answer(body(&wire)), Some(Answer::Running { seq: 0xab }));
        let mut bad = body(&wire).to_vec();
        bad[1] = b'c';
        assert_eq!(parse_answer(&bad), None);
    }

    #[test]
    fn a_cut_escape_is_refused() {
        assert_eq!(unescaped(b"ab}"), None);
        assert_eq!(unescaped(b"a}\x04b").unwrap(), b"a$b");
    }
}
