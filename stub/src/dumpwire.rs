//! The crash stream: how a crashing unikernel sends its own core over its
//! channel (`docs/wire-protocol.md`, "Crash stream"), the one definition the
//! stub (which writes it) and the `ukdb bridge` (which reads it) share.
//! Compiled in every configuration, like [`crate::wire`]; only a build with
//! the `dump` feature calls the [`Encoder`].
//!
//! On the line: `DLE 'K'`, then a body in which every `DLE` byte is sent
//! twice, made of records:
//!
//! ```text
//! kind: u8 | len: u32 LE | payload: len bytes | crc: u32 LE
//! ```
//!
//! `crc` is CRC-32 (ISO-HDLC, as zlib's `crc32`) of `kind`, `len` and the
//! payload. The first record is [`HEADER`], the last [`END`], and
//! `DLE 'Z'` follows it; a `DLE` followed by anything but `DLE` before the
//! end breaks the stream (the unikernel restarted, or the line lost bytes).

use crate::wire::DLE;

/// `DLE 'K'` (stub -> host): a crash stream starts.
pub const START: u8 = b'K';
/// The whole start sequence as written on the line.
pub const START_SEQ: [u8; 2] = [DLE, START];
/// `DLE 'Z'` (stub -> host): the stream is over, written after its
/// [`END`] record. Never escaped, so a reader that lost the records'
/// framing (a corrupted length) still finds where the stream stops.
pub const STOP: u8 = b'Z';
/// The whole stop sequence as written on the line.
pub const STOP_SEQ: [u8; 2] = [DLE, STOP];

/// The header's magic.
pub const MAGIC: [u8; 8] = *b"UKDBCORE";
/// The version of the stream this crate writes.
pub const VERSION: u16 = 1;
/// Largest payload of one record: a [`DATA`] record of 64 KiB and its
/// address.
pub const MAX_PAYLOAD: usize = 64 * 1024 + 8;
/// The page size the stream counts in.
pub const PAGE: u64 = 4096;

/// Record kinds.
/// `HEADER`: magic (8), version u16, cause u8 ([`cause`]), reserved u8,
/// page size u32: 16 bytes. Always the first record.
pub const HEADER: u8 = b'H';
/// `NOTE`: kind u8 ([`note`]), then its bytes.
pub const NOTE: u8 = b'N';
/// `REGS`: cpu u32, reserved u32, the 22 quadwords of a
/// [`crate::TrapFrame`] in its order (r15 .. rax, vector, error code, rip,
/// cs, rflags, rsp, ss), then fs_base, gs_base, cr0, cr2, cr3, cr4, efer,
/// then the 512-byte FXSAVE area: [`REGS_LEN`] bytes.
pub const REGS: u8 = b'R';
/// `MAP`: vaddr u64, paddr u64, len u64, flags u32 ([`map`]): 28 bytes. One
/// per run of the page walk, in ascending virtual order, all before the
/// first [`DATA`].
pub const MAP: u8 = b'M';
/// `DATA`: paddr u64, then the bytes of physical memory from there (whole
/// pages, at most 64 KiB). Pages of a dumped range that no `DATA` covers
/// are zero.
pub const DATA: u8 = b'D';
/// `END`: records u32 (how many came before, the header included), pages
/// u64 (how many pages the `DATA` records carried): 12 bytes. The stream is
/// complete only with it.
pub const END: u8 = b'E';

/// Length of a [`REGS`] payload.
pub const REGS_LEN: usize = 8 + 22 * 8 + 7 * 8 + 512;
/// Length of a [`MAP`] payload.
pub const MAP_LEN: usize = 28;

/// What made the core ([`HEADER`]'s cause byte).
pub mod cause {
    /// A panic (`on_panic`).
    pub const PANIC: u8 = 1;
    /// A CPU exception that nobody handled (the vector is in the frame).
    pub const EXCEPTION: u8 = 2;
    /// Taken on request from a running unikernel.
    pub const SNAPSHOT: u8 = 3;
}

/// [`NOTE`] kinds.
pub mod note {
    /// Why: the panic message with its location, or the exception.
    pub const REASON: u8 = 1;
    /// The kernel command line.
    pub const CMDLINE: u8 = 2;
    /// The image's GNU build-id (raw bytes).
    pub const BUILD_ID: u8 = 3;
}

/// [`MAP`] flags.
pub mod map {
    /// Writable.
    pub const WRITE: u32 = 1;
    /// Executable.
    pub const EXEC: u32 = 2;
    /// Device memory (uncached): listed, never read.
    pub const DEVICE: u32 = 4;
    /// Not RAM the unikernel declared (`set_ram`): listed, never read.
    pub const NOT_RAM: u32 = 8;
    /// Its physical pages were sent for an earlier range: no `DATA` of its
    /// own (an alias, such as a second mapping of physical memory).
    pub const ALIAS: u32 = 16;
}

/// The CRC of records: CRC-32/ISO-HDLC.
pub const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The table behind [`Encoder`]'s checksums (a static, so a record can be
/// written in pieces: see [`Encoder::begin`]).
static CRC_TABLE: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Writes a crash stream to `sink`, escaping `DLE` and adding each record's
/// length and CRC. Pure: the caller supplies the bytes and the sink.
pub struct Encoder<S: FnMut(&[u8])> {
    sink: S,
    records: u32,
    pages: u64,
    /// The record being written with [`Encoder::begin`]: its checksum so
    /// far and the payload bytes still to come.
    open: Option<(crc::Digest<'static, u32>, usize)>,
}

impl<S: FnMut(&[u8])> Encoder<S> {
    /// Writes [`START_SEQ`] and returns the encoder.
    pub fn start(mut sink: S) -> Self {
        sink(&START_SEQ);
        Encoder { sink, records: 0, pages: 0, open: None }
    }

    /// One record of `kind` whose payload is `parts` one after another.
    /// `false` (and nothing written) when the payload exceeds
    /// [`MAX_PAYLOAD`] or a record begun with [`Encoder::begin`] is open.
    pub fn record(&mut self, kind: u8, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !self.begin(kind, len) {
            return false;
        }
        for part in parts {
            self.feed(part);
        }
        self.finish()
    }

    /// Starts a record of `kind` with a payload of `len` bytes, given in
    /// pieces with [`Encoder::feed`] and closed with [`Encoder::finish`]
    /// (the bytes are checksummed as they are written, so they are read
    /// once: memory that changes meanwhile still makes a valid record).
    /// `false` (nothing written) when `len` exceeds [`MAX_PAYLOAD`] or a
    /// record is open.
    pub fn begin(&mut self, kind: u8, len: usize) -> bool {
        let Ok(len32) = u32::try_from(len) else { return false };
        if len > MAX_PAYLOAD || self.open.is_some() {
            return false;
        }
        let mut digest = CRC_TABLE.digest();
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&len32.to_le_bytes());
        digest.update(&head);
        self.escaped(&head);
        self.open = Some((digest, len));
        if kind == DATA {
            self.pages += (len.saturating_sub(8) as u64).div_ceil(PAGE);
        }
        true
    }

    /// Payload bytes of the open record; what goes beyond its length, or
    /// comes with no record open, is dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        let Some((mut digest, left)) = self.open.take() else { return };
        let bytes = bytes.get(..left).unwrap_or(bytes);
        digest.update(bytes);
        self.escaped(bytes);
        self.open = Some((digest, left - bytes.len()));
    }

    /// Closes the open record with its CRC. `false` when none is open, or
    /// fewer bytes came than it announced (then the stream is broken: the
    /// reader finds a bad CRC).
    pub fn finish(&mut self) -> bool {
        let Some((digest, left)) = self.open.take() else { return false };
        self.escaped(&digest.finalize().to_le_bytes());
        self.records += 1;
        left == 0
    }

    /// The [`END`] record, then [`STOP_SEQ`]; the stream is complete.
    /// Returns how many pages the `DATA` records carried.
    pub fn end(mut self) -> u64 {
        let (records, pages) = (self.records, self.pages);
        self.record(END, &[&records.to_le_bytes(), &pages.to_le_bytes()]);
        (self.sink)(&STOP_SEQ);
        pages
    }

    /// Writes `bytes` with every `DLE` doubled, in as few sink calls as
    /// the `DLE`s allow.
    fn escaped(&mut self, mut bytes: &[u8]) {
        while let Some(i) = bytes.iter().position(|&b| b == DLE) {
            let (run, rest) = bytes.split_at(i + 1);
            (self.sink)(run);
            (self.sink)(&[DLE]);
            bytes = rest;
        }
        if !bytes.is_empty() {
            (self.sink)(bytes);
        }
    }
}

/// The [`HEADER`] payload for `cause`.
pub fn header(cause: u8) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10] = cause;
    h[12..16].copy_from_slice(&(PAGE as u32).to_le_bytes());
    h
}

/// The [`MAP`] payload of one range.
pub fn map_entry(vaddr: u64, paddr: u64, len: u64, flags: u32) -> [u8; MAP_LEN] {
    let mut m = [0u8; MAP_LEN];
    m[..8].copy_from_slice(&vaddr.to_le_bytes());
    m[8..16].copy_from_slice(&paddr.to_le_bytes());
    m[16..24].copy_from_slice(&len.to_le_bytes());
    m[24..28].copy_from_slice(&flags.to_le_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Encoder<&mut dyn FnMut(&[u8])>)) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.extend_from_slice(b);
        let mut e = Encoder::start(&mut sink as &mut dyn FnMut(&[u8]));
        f(&mut e);
        e.end();
        out
    }

    /// The records of a whole stream, unescaped: between `DLE 'K'` and
    /// `DLE 'Z'`.
    fn body(line: &[u8]) -> Vec<u8> {
        assert_eq!(line[..2], START_SEQ);
        assert_eq!(line[line.len() - 2..], STOP_SEQ);
        unescape(&line[2..line.len() - 2]).unwrap()
    }

    /// Undoes the escaping; `None` at a lone DLE.
    fn unescape(line: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut it = line.iter();
        while let Some(&b) = it.next() {
            if b == DLE && it.next() != Some(&DLE) {
                return None;
            }
            out.push(b);
        }
        Some(out)
    }

    #[test]
    fn records_are_framed_escaped_and_checked() {
        let line = encode(|e| {
            assert!(e.record(HEADER, &[&header(cause::PANIC)]));
            assert!(e.record(NOTE, &[&[note::REASON], b"boom \x10 here"]));
            assert!(e.record(DATA, &[&0x1000u64.to_le_bytes(), &[0x10; 4096]]));
        });
        let body = body(&line);
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < body.len() {
            let kind = body[at];
            let len = u32::from_le_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(body[at + 5 + len..at + 9 + len].try_into().unwrap());
            assert_eq!(crc, CRC.checksum(&body[at..at + 5 + len]));
            kinds.push((kind, len));
            at += 9 + len;
        }
        assert_eq!(kinds, vec![(HEADER, 16), (NOTE, 12), (DATA, 4104), (END, 12)]);
        // END counts the three records and the one page.
        let end = &body[body.len() - 16..body.len() - 4];
        assert_eq!(end, [3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        // The known CRC-32 check value: the crate is the one zlib agrees with.
        assert_eq!(CRC.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_record_in_pieces_is_the_same_record() {
        let whole = encode(|e| {
            assert!(e.record(DATA, &[&0x2000u64.to_le_bytes(), &[0x10; 8192]]));
        });
        let pieces = encode(|e| {
            assert!(e.begin(DATA, 8 + 8192));
            assert!(!e.begin(NOTE, 1), "one record at a time");
            assert!(!e.record(NOTE, &[b"x"]), "one record at a time");
            e.feed(&0x2000u64.to_le_bytes());
            e.feed(&[0x10; 4096]);
            e.feed(&[0x10; 4096]);
            e.feed(&[0x99; 10]); // beyond the announced length: dropped
            assert!(e.finish());
            assert!(!e.finish());
        });
        assert_eq!(whole, pieces);
        // A short record is written but reported.
        let short = encode(|e| {
            assert!(e.begin(NOTE, 4));
            e.feed(b"ab");
            assert!(!e.finish());
        });
        let body = body(&short);
        assert_eq!(&body[..7], &[NOTE, 4, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn an_oversized_record_is_refused_and_not_written() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let line = encode(|e| assert!(!e.record(DATA, &[&big])));
        let body = body(&line);
        assert_eq!(body[0], END);
    }

    #[test]
    fn payload_helpers_lay_out_their_fields() {
        let h = header(cause::EXCEPTION);
        assert_eq!(&h[..8], b"UKDBCORE");
        assert_eq!(h[8..12], [1, 0, 2, 0]);
        assert_eq!(h[12..], [0, 0x10, 0, 0]);
        let m = map_entry(0x1000, 0x2000, 0x3000, map::WRITE | map::EXEC);
        assert_eq!(m[16], 0);
        assert_eq!(m[17], 0x30);
        assert_eq!(m[24], 3);
    }
}
