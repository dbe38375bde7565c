//! The crash stream decoder (sans-I/O): the bytes that follow `DLE 'K'` on
//! the line, still escaped, in pieces of any size, to a [`Snapshot`].
//!
//! Every record is checked as it completes: its kind, its length against
//! [`MAX_PAYLOAD`] and its kind's size, its CRC, its place (`HEADER` first,
//! `MAP`s before the first `DATA`, `END` last with the counts of what came
//! before), and that a `DATA` record's pages lie in a dumped map entry.
//! Records are numbered from 0 (the `HEADER`) in messages.
//!
//! [`Decoder::feed`] says how many input bytes it took. After an error it
//! has taken exactly the bytes up to the offending one: through the byte
//! that made a record wrong (its kind, its length's last byte, its CRC's
//! last byte), and for [`StreamError::Broken`] through the `DLE` but not
//! the byte after it (so whoever demultiplexes the line sees `DLE` and that
//! byte again: a stub's hello ends a crash stream and is still a hello).
//! After the `END` record the rest of the input is not the stream's.

use std::collections::BTreeMap;

use ukdb_stub::dumpwire::{
    cause, map, note, CRC, DATA, END, HEADER, MAGIC, MAP, MAP_LEN, MAX_PAYLOAD, NOTE, PAGE, REGS,
    REGS_LEN, VERSION,
};
use ukdb_stub::wire::DLE;

use super::{Cpu, MapEntry, Snapshot};

/// Why a crash stream was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream stopped before its `END` record (the line closed).
    #[error("truncated after {records} records")]
    Truncated {
        /// Complete records received.
        records: u32,
    },
    /// A record's CRC does not match.
    #[error("bad CRC in record {record}")]
    BadCrc {
        /// The record's number (0: the header).
        record: u32,
    },
    /// A `DLE` followed by this byte instead of a second `DLE`: the stub
    /// restarted or the line lost bytes.
    #[error("DLE followed by {0:#04x} in the stream")]
    Broken(u8),
    /// A record that is not what the format allows there.
    #[error("{0}")]
    Malformed(String),
}

/// How far a stream has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Line bytes taken (escaped), `DLE 'K'` not counted.
    pub bytes: u64,
    /// Complete records.
    pub records: u32,
    /// Pages received in `DATA` records.
    pub pages: u64,
    /// Pages of the dumped map entries that are not aliases: at most this
    /// many pages will come (zero pages are not sent). 0 before the map.
    pub mapped_pages: u64,
}

/// What [`Decoder::feed`] did with a piece of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// All input taken; the stream goes on.
    More,
    /// The stream is complete after `used` bytes of this input; the rest
    /// is not the stream's.
    Done {
        /// Input bytes that belonged to the stream.
        used: usize,
    },
    /// The stream is broken; `used` bytes of this input were taken (see
    /// the [module docs](self) for which).
    Failed {
        /// Input bytes taken.
        used: usize,
        /// Why.
        error: StreamError,
    },
}

/// Which part of a record the next byte belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Head,
    Payload,
    Crc,
}

/// The crash stream decoder. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Decoder {
    pending_dle: bool,
    part: Option<Part>,
    head: Vec<u8>,
    payload: Vec<u8>,
    crc: Vec<u8>,
    len: usize,
    progress: Progress,
    snapshot: Snapshot,
    /// Physical ranges of dumped, non-alias entries, merged: start -> end.
    dumped: BTreeMap<u64, u64>,
    seen_data: bool,
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Going,
    Done,
    Failed,
}

impl Decoder {
    /// A decoder for a stream whose `DLE 'K'` was just seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// How far the stream has come.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Whether the `END` record was decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of the stream. Once it returned
    /// [`Fed::Done`] or [`Fed::Failed`] it takes nothing more (`Done {
    /// used: 0 }` or the same failure with `used: 0`).
    pub fn feed(&mut self, input: &[u8]) -> Fed {
        match self.state {
            State::Done => return Fed::Done { used: 0 },
            State::Failed => {
                return Fed::Failed {
                    used: 0,
                    error: StreamError::Malformed("already failed".into()),
                }
            }
            State::Going => {}
        }
        for (i, &byte) in input.iter().enumerate() {
            self.progress.bytes += 1;
            if std::mem::take(&mut self.pending_dle) {
                if byte != DLE {
                    self.progress.bytes -= 1;
                    self.state = State::Failed;
                    return Fed::Failed { used: i, error: StreamError::Broken(byte) };
                }
            } else if byte == DLE {
                self.pending_dle = true;
                continue;
            }
            match self.byte(byte) {
                Ok(false) => {}
                Ok(true) => {
                    self.state = State::Done;
                    return Fed::Done { used: i + 1 };
                }
                Err(error) => {
                    self.state = State::Failed;
                    return Fed::Failed { used: i + 1, error };
                }
            }
        }
        Fed::More
    }

    /// The stream ended (the line closed, or the caller gives up): the
    /// error to report when it was not complete.
    pub fn finish(&self) -> Option<StreamError> {
        (self.state == State::Going)
            .then_some(StreamError::Truncated { records: self.progress.records })
    }

    /// The decoded snapshot, once [`Fed::Done`] was returned.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.is_done().then(|| std::mem::take(&mut self.snapshot))
    }

    fn record(&self) -> u32 {
        self.progress.records
    }

    fn malformed(&self, why: impl std::fmt::Display) -> StreamError {
        StreamError::Malformed(format!("record {}: {why}", self.record()))
    }

    /// One unescaped byte; `Ok(true)` after the `END` record.
    fn byte(&mut self, byte: u8) -> Result<bool, StreamError> {
        match self.part.unwrap_or(Part::Head) {
            Part::Head => {
                if self.head.is_empty() {
                    self.check_kind(byte)?;
                }
                self.head.push(byte);
                self.part = Some(Part::Head);
                if self.head.len() == 5 {
                    let mut len = [0u8; 4];
                    len.copy_from_slice(&self.head[1..5]);
                    self.len = u32::from_le_bytes(len) as usize;
                    self.check_len(self.head[0], self.len)?;
                    self.payload.clear();
                    self.payload.reserve(self.len);
                    self.part = Some(if self.len == 0 { Part::Crc } else { Part::Payload });
                }
            }
            Part::Payload => {
                self.payload.push(byte);
                if self.payload.len() == self.len {
                    self.part = Some(Part::Crc);
                }
            }
            Part::Crc => {
                self.crc.push(byte);
                if self.crc.len() == 4 {
                    let mut digest = CRC.digest();
                    digest.update(&self.head);
                    digest.update(&self.payload);
                    let mut got = [0u8; 4];
                    got.copy_from_slice(&self.crc);
                    if u32::from_le_bytes(got) != digest.finalize() {
                        return Err(StreamError::BadCrc { record: self.record() });
                    }
                    let kind = self.head[0];
                    let payload = std::mem::take(&mut self.payload);
                    let done = self.apply(kind, &payload)?;
                    self.payload = payload;
                    self.head.clear();
                    self.crc.clear();
                    self.part = None;
                    self.progress.records += 1;
                    return Ok(done);
                }
            }
        }
        Ok(false)
    }

    fn check_kind(&self, kind: u8) -> Result<(), StreamError> {
        let first = self.record() == 0;
        match kind {
            HEADER if first => Ok(()),
            _ if first => Err(self.malformed(format_args!("starts with {kind:#04x}, not HEADER"))),
            HEADER => Err(self.malformed("a second HEADER")),
            MAP if self.seen_data => Err(self.malformed("MAP after DATA")),
            NOTE | REGS | MAP | DATA | END => Ok(()),
            other => Err(self.malformed(format_args!("unknown record kind {other:#04x}"))),
        }
    }

    fn check_len(&self, kind: u8, len: usize) -> Result<(), StreamError> {
        if len > MAX_PAYLOAD {
            return Err(self.malformed(format_args!("length {len} over the limit {MAX_PAYLOAD}")));
        }
        let ok = match kind {
            HEADER => len == 16,
            END => len == 12,
            MAP => len == MAP_LEN,
            REGS => len == REGS_LEN,
            NOTE => len >= 1,
            DATA => len > 8 && (len - 8).is_multiple_of(PAGE as usize),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.malformed(format_args!("kind {:?} with length {len}", kind as char)))
        }
    }

    /// Applies a checked record; `Ok(true)` for `END`.
    fn apply(&mut self, kind: u8, p: &[u8]) -> Result<bool, StreamError> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&p[at..at + 4]);
            u32::from_le_bytes(b)
        };
        // Lengths were checked against the kind in `check_len`.
        match kind {
            HEADER => {
                if p[..8] != MAGIC {
                    return Err(self.malformed("bad magic"));
                }
                let version = u16::from_le_bytes([p[8], p[9]]);
                if version != VERSION {
                    return Err(self.malformed(format_args!("version {version}, not {VERSION}")));
                }
                if ![cause::PANIC, cause::EXCEPTION, cause::SNAPSHOT].contains(&p[10]) {
                    return Err(self.malformed(format_args!("unknown cause {}", p[10])));
                }
                if u32_at(12) as u64 != PAGE {
                    return Err(self.malformed("page size is not 4096"));
                }
                self.snapshot.cause = p[10];
            }
            NOTE => {
                let text = || String::from_utf8_lossy(&p[1..]).into_owned();
                match p[0] {
                    note::REASON => self.snapshot.reason = text(),
                    note::CMDLINE => self.snapshot.cmdline = text(),
                    note::BUILD_ID => self.snapshot.build_id = p[1..].to_vec(),
                    // Notes of a later version: skipped.
                    _ => {}
                }
            }
            REGS => {
                let mut cpu = Cpu::default();
                for (i, reg) in cpu.frame.iter_mut().enumerate() {
                    *reg = u64_at(8 + 8 * i);
                }
                let at = 8 + 22 * 8;
                cpu.fs_base = u64_at(at);
                cpu.gs_base = u64_at(at + 8);
                cpu.cr0 = u64_at(at + 16);
                cpu.cr2 = u64_at(at + 24);
                cpu.cr3 = u64_at(at + 32);
                cpu.cr4 = u64_at(at + 40);
                cpu.efer = u64_at(at + 48);
                cpu.fxsave.copy_from_slice(&p[at + 56..at + 56 + 512]);
                self.snapshot.cpu = cpu;
            }
            MAP => {
                let e = MapEntry {
                    vaddr: u64_at(0),
                    paddr: u64_at(8),
                    len: u64_at(16),
                    flags: u32_at(24),
                };
                let aligned = e.vaddr.is_multiple_of(PAGE)
                    && e.paddr.is_multiple_of(PAGE)
                    && e.len.is_multiple_of(PAGE);
                if !aligned || e.len == 0 {
                    return Err(self.malformed("a MAP entry that is not whole pages"));
                }
                if e.vaddr.checked_add(e.len).is_none() || e.paddr.checked_add(e.len).is_none() {
                    return Err(self.malformed("a MAP entry that wraps"));
                }
                if let Some(last) = self.snapshot.map.last() {
                    if e.vaddr < last.vaddr + last.len {
                        return Err(self.malformed("MAP entries out of order"));
                    }
                }
                if e.dumped() && e.flags & map::ALIAS == 0 {
                    self.progress.mapped_pages += e.len / PAGE;
                    self.add_dumped(e.paddr, e.paddr + e.len);
                }
                self.snapshot.map.push(e);
            }
            DATA => {
                self.seen_data = true;
                let paddr = u64_at(0);
                let n = (p.len() - 8) as u64;
                if paddr % PAGE != 0 || !self.is_dumped(paddr, n) {
                    return Err(self.malformed(format_args!(
                        "DATA at {paddr:#x} ({n} bytes) outside the dumped map"
                    )));
                }
                for (i, page) in p[8..].chunks_exact(PAGE as usize).enumerate() {
                    let at = paddr + i as u64 * PAGE;
                    if page.iter().any(|&b| b != 0) {
                        self.snapshot.pages.insert(at, page.to_vec());
                    } else {
                        self.snapshot.pages.remove(&at);
                    }
                }
                self.progress.pages += n / PAGE;
            }
            END => {
                let (records, pages) = (u32_at(0), u64_at(4));
                if records != self.record() || pages != self.progress.pages {
                    return Err(self.malformed(format_args!(
                        "END counts {records} records and {pages} pages, the stream had {} and {}",
                        self.record(),
                        self.progress.pages
                    )));
                }
                return Ok(true);
            }
            _ => unreachable!("kinds are checked when a record starts"),
        }
        Ok(false)
    }

    fn add_dumped(&mut self, mut start: u64, mut end: u64) {
        // Merge with an overlapping or touching range before and after.
        if let Some((&s, &e)) = self.dumped.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.dumped.remove(&s);
            }
        }
        while let Some((&s, &e)) = self.dumped.range(start..=end).next() {
            end = end.max(e);
            self.dumped.remove(&s);
        }
        self.dumped.insert(start, end);
    }

    fn is_dumped(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else { return false };
        self.dumped.range(..=start).next_back().is_some_and(|(_, &e)| e >= end)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ukdb_stub::dumpwire::{self, Encoder};

    /// A stream as the stub writes it (after `DLE 'K'`), with DLEs in the
    /// data, an alias and a device entry.
    pub(crate) fn sample_stream() -> (Vec<u8>, Snapshot) {
        sample(true)
    }

    /// The sample with one DATA record of one page (every 64th byte a DLE),
    /// for the tests that decode it once per byte.
    fn small_stream() -> (Vec<u8>, Snapshot) {
        sample(false)
    }

    fn sample(big: bool) -> (Vec<u8>, Snapshot) {
        let mut line = Vec::new();
        let mut e = Encoder::start(|b: &[u8]| line.extend_from_slice(b));
        assert!(e.record(HEADER, &[&dumpwire::header(cause::PANIC)]));
        assert!(e.record(NOTE, &[&[note::REASON], b"panicked at src/main.rs:10:5:\nboom"]));
        assert!(e.record(NOTE, &[&[note::CMDLINE], b"ukdb.crash=dump"]));
        assert!(e.record(NOTE, &[&[note::BUILD_ID], &[0x10, 0x10, 0xab]]));
        let mut regs = vec![0u8; REGS_LEN];
        for i in 0..29 {
            regs[8 + 8 * i..16 + 8 * i].copy_from_slice(&(0x1000 + i as u64).to_le_bytes());
        }
        regs[8 + 29 * 8] = 0x10;
        assert!(e.record(REGS, &[&regs]));
        let entries = [
            (0xffff_8000_0000_0000u64, 0x1000u64, 0x3000u64, map::EXEC),
            (0xffff_8000_0001_0000, 0x1000, 0x1000, map::ALIAS),
            (0xffff_8000_0002_0000, 0xfee0_0000, 0x1000, map::DEVICE | map::WRITE),
        ];
        for (v, p, l, f) in entries {
            assert!(e.record(MAP, &[&dumpwire::map_entry(v, p, l, f)]));
        }
        let mut two = vec![0x10u8; 2 * PAGE as usize];
        two[PAGE as usize..].fill(0);
        two[PAGE as usize + 5] = 1;
        let mut one = vec![0u8; PAGE as usize];
        for (i, b) in one.iter_mut().enumerate() {
            *b = if i % 64 == 0 { 0x10 } else { i as u8 };
        }
        if big {
            assert!(e.record(DATA, &[&0x1000u64.to_le_bytes(), &two]));
            assert!(e.record(DATA, &[&0x3000u64.to_le_bytes(), &[0u8; PAGE as usize]]));
        } else {
            assert!(e.record(DATA, &[&0x2000u64.to_le_bytes(), &one]));
        }
        e.end();
        assert_eq!(line[..2], dumpwire::START_SEQ);
        line.drain(..2);
        // The records alone: `DLE 'Z'` after them is the demultiplexer's.
        assert_eq!(line.split_off(line.len() - 2), dumpwire::STOP_SEQ);

        let mut cpu = Cpu::default();
        for (i, r) in cpu.frame.iter_mut().enumerate() {
            *r = 0x1000 + i as u64;
        }
        (cpu.fs_base, cpu.gs_base, cpu.cr0, cpu.cr2) = (0x1016, 0x1017, 0x1018, 0x1019);
        (cpu.cr3, cpu.cr4, cpu.efer) = (0x101a, 0x101b, 0x101c);
        cpu.fxsave[0] = 0x10;
        let mut pages = BTreeMap::new();
        if big {
            pages.insert(0x1000, vec![0x10; PAGE as usize]);
            let mut p2 = vec![0; PAGE as usize];
            p2[5] = 1;
            pages.insert(0x2000, p2);
        } else {
            pages.insert(0x2000, one);
        }
        let snapshot = Snapshot {
            cause: cause::PANIC,
            reason: "panicked at src/main.rs:10:5:\nboom".into(),
            cmdline: "ukdb.crash=dump".into(),
            build_id: vec![0x10, 0x10, 0xab],
            cpu,
            map: entries
                .iter()
                .map(|&(vaddr, paddr, len, flags)| MapEntry { vaddr, paddr, len, flags })
                .collect(),
            pages,
            ..Snapshot::default()
        };
        (line, snapshot)
    }

    fn decode(chunks: &[&[u8]]) -> Result<(Snapshot, usize), (StreamError, usize)> {
        let mut d = Decoder::new();
        let mut total = 0;
        for chunk in chunks {
            match d.feed(chunk) {
                Fed::More => total += chunk.len(),
                Fed::Done { used } => return Ok((d.take_snapshot().unwrap(), total + used)),
                Fed::Failed { used, error } => return Err((error, total + used)),
            }
        }
        Err((d.finish().unwrap(), total))
    }

    #[test]
    fn round_trip_with_the_stubs_encoder() {
        let (line, expect) = sample_stream();
        let (got, used) = decode(&[&line]).unwrap();
        assert_eq!(got, expect);
        assert_eq!(used, line.len());
        // What follows END is not taken.
        let mut more = line.clone();
        more.extend_from_slice(b"console");
        assert_eq!(decode(&[&more]).unwrap().1, line.len());
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let (line, expect) = small_stream();
        for at in 0..=line.len() {
            let (a, b) = line.split_at(at);
            assert_eq!(decode(&[a, b]).unwrap().0, expect, "split at {at}");
        }
        let singles: Vec<&[u8]> = line.chunks(1).collect();
        assert_eq!(decode(&singles).unwrap().0, expect);
    }

    #[test]
    fn progress_counts_records_pages_and_bytes() {
        let (line, _) = sample_stream();
        let mut d = Decoder::new();
        assert_eq!(d.feed(&line), Fed::Done { used: line.len() });
        let p = d.progress();
        assert_eq!((p.records, p.pages, p.mapped_pages, p.bytes), (11, 3, 3, line.len() as u64));
    }

    #[test]
    fn every_corrupted_byte_is_detected() {
        let (line, _) = small_stream();
        for at in 0..line.len() {
            // A bit flip, and a byte turned into a DLE.
            for flip in [0x01u8, 0x80, 0x10 ^ line[at]] {
                let mut bad = line.clone();
                bad[at] ^= flip;
                if bad[at] == line[at] {
                    continue;
                }
                let (_, used) = decode(&[&bad]).expect_err(&format!("byte {at} ^ {flip:#x}"));
                assert!(used <= bad.len());
            }
        }
    }

    #[test]
    fn truncation_at_every_length_is_reported() {
        let (line, _) = small_stream();
        for len in 0..line.len() {
            let (err, used) = decode(&[&line[..len]]).unwrap_err();
            assert!(matches!(err, StreamError::Truncated { .. }), "length {len}: {err:?}");
            assert_eq!(used, len);
        }
    }

    /// The escaped length of a HEADER record (its page size has a DLE).
    fn header_len() -> usize {
        let mut len = 0;
        let mut e = Encoder::start(|b: &[u8]| len += b.len());
        e.record(HEADER, &[&dumpwire::header(cause::PANIC)]);
        let _ = e;
        len - 2
    }

    #[test]
    fn a_bad_crc_stops_at_its_last_byte() {
        let (line, _) = sample_stream();
        let mut bad = line.clone();
        bad[8] ^= 0xff; // in the magic (after the kind and the escaped length)
        assert_eq!(decode(&[&bad]).unwrap_err(), (StreamError::BadCrc { record: 0 }, header_len()));
    }

    #[test]
    fn a_dle_and_another_byte_break_the_stream_before_that_byte() {
        let (line, _) = sample_stream();
        let mut bad = line[..30].to_vec();
        bad.extend_from_slice(&[DLE, b'H', b'x']);
        assert_eq!(decode(&[&bad]).unwrap_err(), (StreamError::Broken(b'H'), 31));
        // Split between the DLE and the byte: nothing of the second chunk.
        let mut d = Decoder::new();
        assert_eq!(d.feed(&bad[..31]), Fed::More);
        assert_eq!(d.feed(&bad[31..]), Fed::Failed { used: 0, error: StreamError::Broken(b'H') });
    }

    #[test]
    fn order_and_lengths_are_checked() {
        fn stream(f: impl FnOnce(&mut Encoder<&mut dyn FnMut(&[u8])>)) -> Vec<u8> {
            let mut out = Vec::new();
            let mut sink = |b: &[u8]| out.extend_from_slice(b);
            let mut e = Encoder::start(&mut sink as &mut dyn FnMut(&[u8]));
            f(&mut e);
            e.end();
            out.drain(..2);
            out
        }
        let header = dumpwire::header(cause::EXCEPTION);
        let page = [1u8; PAGE as usize];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (stream(|_| {}), "record 0: starts with 0x45, not HEADER"),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(HEADER, &[&header]);
                }),
                "record 1: a second HEADER",
            ),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(DATA, &[&0u64.to_le_bytes(), &page]);
                }),
                "record 1: DATA at 0x0 (4096 bytes) outside the dumped map",
            ),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(MAP, &[&dumpwire::map_entry(0, 0x1000, 0x1000, map::ALIAS)]);
                    e.record(DATA, &[&0x1000u64.to_le_bytes(), &page]);
                }),
                "record 2: DATA at 0x1000 (4096 bytes) outside the dumped map",
            ),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(MAP, &[&dumpwire::map_entry(0, 0, 0x1000, 0)]);
                    e.record(DATA, &[&0u64.to_le_bytes(), &page]);
                    e.record(MAP, &[&dumpwire::map_entry(0x1000, 0x1000, 0x1000, 0)]);
                }),
                "record 3: MAP after DATA",
            ),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(MAP, &[&dumpwire::map_entry(0x2000, 0, 0x1000, 0)]);
                    e.record(MAP, &[&dumpwire::map_entry(0x1000, 0x1000, 0x1000, 0)]);
                }),
                "record 2: MAP entries out of order",
            ),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(DATA, &[&0u64.to_le_bytes(), &[1, 2, 3]]);
                }),
                "record 1: kind 'D' with length 11",
            ),
            (
                stream(|e| {
                    e.record(HEADER, &[&header]);
                    e.record(b'Z', &[&[1]]);
                }),
                "record 1: unknown record kind 0x5a",
            ),
        ];
        for (line, why) in cases {
            let (err, _) = decode(&[&line]).unwrap_err();
            assert_eq!(err, StreamError::Malformed(why.into()));
        }
        // A length over the limit stops at its last byte.
        let mut line = stream(|e| {
            e.record(HEADER, &[&header]);
        });
        let at = header_len();
        line.truncate(at);
        line.extend_from_slice(&[DATA, 0, 0, 2, 0]);
        let (err, used) = decode(&[&line, &[0; 100]]).unwrap_err();
        assert_eq!(
            err,
            StreamError::Malformed("record 1: length 131072 over the limit 65544".into())
        );
        assert_eq!(used, at + 5);
        // END's counts must match.
        let mut out = Vec::new();
        let mut e = Encoder::start(|b: &[u8]| out.extend_from_slice(b));
        e.record(HEADER, &[&header]);
        e.record(END, &[&5u32.to_le_bytes(), &0u64.to_le_bytes()]);
        let (err, _) = decode(&[&out[2..]]).unwrap_err();
        assert_eq!(
            err,
            StreamError::Malformed(
                "record 1: END counts 5 records and 0 pages, the stream had 1 and 0".into()
            )
        );
    }
}
