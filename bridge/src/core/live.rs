//! A live snapshot over RSP, the sans-I/O half of `ukdb core`: RSP framing
//! as a client speaks it, and the parsers that turn the stub's replies
//! (`qSupported`, `g`, `qUkdb.info`, `qUkdb.map`, `qUkdb.pages`,
//! `qXfer:memory-map:read`, memory reads) into a [`Snapshot`]'s parts.
//!
//! The I/O (sockets, timeouts, the progress bar, the file) is in the
//! binary's `cmd/core.rs`.

use super::{Cpu, MapEntry, PAGE};
use ukdb_stub::dumpwire::{self, map};

/// A reply that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not hex where hex was expected.
    #[error("{0}: not hex")]
    Hex(&'static str),
    /// Too short or of a wrong length.
    #[error("{0}: wrong length {1}")]
    Length(&'static str, usize),
    /// The stub answered with an error (`Exx`).
    #[error("{0}: the stub answered {1}")]
    Error(&'static str, String),
    /// Anything else malformed.
    #[error("{0}: malformed reply {1:?}")]
    Malformed(&'static str, String),
}

fn shown(reply: &[u8]) -> String {
    let end = reply.len().min(60);
    String::from_utf8_lossy(reply.get(..end).unwrap_or_default()).into_owned()
}

/// Whether `reply` is an error reply (`E` and two hex digits, or `E.text`).
pub fn is_error(reply: &[u8]) -> bool {
    match reply {
        [b'E', a, b] => a.is_ascii_hexdigit() && b.is_ascii_hexdigit(),
        [b'E', b'.', ..] => true,
        _ => false,
    }
}

fn hex_digit(d: u8) -> Option<u8> {
    (d as char).to_digit(16).map(|v| v as u8)
}

/// Hex pairs to bytes.
pub fn unhex(what: &'static str, hex: &[u8]) -> Result<Vec<u8>, ParseError> {
    if !hex.len().is_multiple_of(2) {
        return Err(ParseError::Length(what, hex.len()));
    }
    hex.chunks_exact(2)
        .map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or(ParseError::Hex(what))
}

/// A hex number (at most 16 digits).
pub fn hex_u64(what: &'static str, digits: &[u8]) -> Result<u64, ParseError> {
    if digits.is_empty() || digits.len() > 16 {
        return Err(ParseError::Hex(what));
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| Some(n << 4 | u64::from(hex_digit(d)?)))
        .ok_or(ParseError::Hex(what))
}

// ---------------------------------------------------------------- framing

/// `$payload#cs`, with `$ # } *` in the payload escaped.
pub fn packet(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    let mut sum = 0u8;
    for &b in payload {
        if matches!(b, b'$' | b'#' | b'}' | b'*') {
            out.extend_from_slice(&[b'}', b ^ 0x20]);
            sum = sum.wrapping_add(b'}').wrapping_add(b ^ 0x20);
        } else {
            out.push(b);
            sum = sum.wrapping_add(b);
        }
    }
    out.push(b'#');
    out.extend_from_slice(format!("{sum:02x}").as_bytes());
    out
}

/// What arrives from the stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+`.
    Ack,
    /// `-`: resend.
    Nak,
    /// A packet with a good checksum: its payload, run-length encoding
    /// expanded, binary escapes left in (see [`unescape`]).
    Packet(Vec<u8>),
    /// A packet whose checksum is wrong.
    BadChecksum,
}

/// Splits the stub's byte stream into [`Frame`]s. Bytes outside packets
/// other than `+` and `-` are skipped.
#[derive(Debug, Default)]
pub struct Reader {
    state: ReadState,
    body: Vec<u8>,
    sum: u8,
    check: [u8; 2],
    /// Bytes taken so far (for "the channel closed after N MiB").
    pub total: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    #[default]
    Idle,
    Body,
    Check(usize),
}

impl Reader {
    /// A reader at the start of a stream.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Takes `bytes`; appends the frames they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        self.total += bytes.len() as u64;
        for &b in bytes {
            match self.state {
                ReadState::Idle => match b {
                    b'+' => out.push(Frame::Ack),
                    b'-' => out.push(Frame::Nak),
                    b'$' => {
                        self.body.clear();
                        self.sum = 0;
                        self.state = ReadState::Body;
                    }
                    _ => {}
                },
                ReadState::Body => match b {
                    b'#' => self.state = ReadState::Check(0),
                    // A new packet start: the old one was cut off.
                    b'$' => {
                        self.body.clear();
                        self.sum = 0;
                    }
                    _ => {
                        self.sum = self.sum.wrapping_add(b);
                        self.body.push(b);
                    }
                },
                ReadState::Check(i) => {
                    if let Some(slot) = self.check.get_mut(i) {
                        *slot = b;
                    }
                    if i == 0 {
                        self.state = ReadState::Check(1);
                        continue;
                    }
                    self.state = ReadState::Idle;
                    let good = match (hex_digit(self.check[0]), hex_digit(self.check[1])) {
                        (Some(h), Some(l)) => h << 4 | l == self.sum,
                        _ => false,
                    };
                    let body = std::mem::take(&mut self.body);
                    out.push(if good {
                        match expand_rle(&body) {
                            Some(body) => Frame::Packet(body),
                            None => Frame::BadChecksum,
                        }
                    } else {
                        Frame::BadChecksum
                    });
                }
            }
        }
    }
}

/// Expands `X*n` runs (n - 29 more copies of X); `None` when malformed.
fn expand_rle(body: &[u8]) -> Option<Vec<u8>> {
    if !body.contains(&b'*') {
        return Some(body.to_vec());
    }
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        if b == b'*' {
            let count = usize::from(*body.get(i + 1)?).checked_sub(29)?;
            let last = *out.last()?;
            out.extend(std::iter::repeat_n(last, count));
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Undoes the binary escapes (`}` then the byte xor 0x20); `None` when the
/// payload ends in a lone `}`.
pub fn unescape(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len());
    let mut it = payload.iter();
    while let Some(&b) = it.next() {
        if b == b'}' {
            out.push(it.next()? ^ 0x20);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- replies

/// What `qSupported` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `PacketSize` (bytes of a packet's payload the stub takes and sends).
    pub packet_size: usize,
    /// `QStartNoAckMode+`.
    pub no_ack: bool,
    /// `qXfer:memory-map:read+`.
    pub memory_map: bool,
}

/// The packet size assumed when `qSupported` names none (gdb's default).
pub const DEFAULT_PACKET_SIZE: usize = 400;

/// Parses a `qSupported` reply.
pub fn parse_supported(reply: &[u8]) -> Features {
    let mut f = Features { packet_size: DEFAULT_PACKET_SIZE, no_ack: false, memory_map: false };
    for item in reply.split(|&b| b == b';') {
        if let Some(size) = item.strip_prefix(b"PacketSize=") {
            if let Ok(size) = hex_u64("PacketSize", size) {
                f.packet_size = usize::try_from(size).unwrap_or(usize::MAX).clamp(64, 1 << 20);
            }
        } else if item == b"QStartNoAckMode+" {
            f.no_ack = true;
        } else if item == b"qXfer:memory-map:read+" {
            f.memory_map = true;
        }
    }
    f
}

/// The most bytes of memory one `x`/`m` read asks for with a packet size
/// of `packet_size`: a reply carries at most half of it (the stub's
/// limit, `memreply::max_len`, which is also the worst case of binary
/// escaping).
pub fn read_chunk(packet_size: usize) -> usize {
    (packet_size.saturating_sub(5) / 2).max(1)
}

/// Whether a reply is a stop reply (`S`, `T`); `W`/`X` (exited) are not.
pub fn is_stop_reply(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'S' | b'T'))
        && reply.get(1..3).is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit))
}

/// Whether a packet is console output (`O` and hex), which may come while
/// the target runs.
pub fn is_console_output(reply: &[u8]) -> bool {
    reply.len() >= 3
        && reply[0] == b'O'
        && reply.len() % 2 == 1
        && reply[1..].iter().all(u8::is_ascii_hexdigit)
}

/// The registers of a `g` reply (the stub's `regs.rs` layout: gdb's
/// x86_64 core + SSE, then fs_base and gs_base).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GRegs {
    /// rax rbx rcx rdx rsi rdi rbp rsp r8 .. r15.
    pub gpr: [u64; 16],
    /// rip.
    pub rip: u64,
    /// eflags.
    pub eflags: u32,
    /// cs ss ds es fs gs.
    pub seg: [u32; 6],
    /// st0 .. st7, 10 bytes each.
    pub st: [[u8; 10]; 8],
    /// fctrl fstat ftag fiseg fioff foseg fooff fop.
    pub fpu: [u32; 8],
    /// xmm0 .. xmm15.
    pub xmm: [[u8; 16]; 16],
    /// mxcsr.
    pub mxcsr: u32,
    /// FS.base (0 when the reply has only the core block).
    pub fs_base: u64,
    /// GS.base.
    pub gs_base: u64,
}

/// Length of the core + SSE block of `g`.
pub const G_CORE_LEN: usize = 0x218;
/// Length of the whole `g` block (with fs_base, gs_base).
pub const G_LEN: usize = G_CORE_LEN + 16;

/// Parses a `g` reply (hex; `xx` for an unavailable byte reads as 0).
pub fn parse_g(reply: &[u8]) -> Result<GRegs, ParseError> {
    if is_error(reply) {
        return Err(ParseError::Error("g", shown(reply)));
    }
    let zeroed: Vec<u8> = reply.iter().map(|&b| if b == b'x' { b'0' } else { b }).collect();
    let bytes = unhex("g", &zeroed)?;
    if bytes.len() != G_CORE_LEN && bytes.len() != G_LEN {
        return Err(ParseError::Length("g", bytes.len()));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(b)
    };
    let mut r = GRegs::default();
    for (i, g) in r.gpr.iter_mut().enumerate() {
        *g = u64_at(8 * i);
    }
    r.rip = u64_at(128);
    r.eflags = u32_at(136);
    for (i, s) in r.seg.iter_mut().enumerate() {
        *s = u32_at(140 + 4 * i);
    }
    for (i, st) in r.st.iter_mut().enumerate() {
        st.copy_from_slice(&bytes[164 + 10 * i..174 + 10 * i]);
    }
    for (i, f) in r.fpu.iter_mut().enumerate() {
        *f = u32_at(244 + 4 * i);
    }
    for (i, x) in r.xmm.iter_mut().enumerate() {
        x.copy_from_slice(&bytes[276 + 16 * i..292 + 16 * i]);
    }
    r.mxcsr = u32_at(532);
    if bytes.len() == G_LEN {
        r.fs_base = u64_at(536);
        r.gs_base = u64_at(544);
    }
    Ok(r)
}

/// The MXCSR_MASK written into the FXSAVE area: `g` does not carry it;
/// this is what every x86_64 CPU since the Pentium 4 with DAZ reports
/// (gdb and lldb do not read it).
pub const MXCSR_MASK: u32 = 0xffff;

/// The 512-byte FXSAVE area (64-bit layout) that holds what `g` says of
/// the x87 and SSE state: fcw, fsw, the abridged tag word (a bit set for
/// each register whose 2-bit tag is not "empty"), fop, fip, fdp, mxcsr,
/// st0-7 in 16-byte slots, xmm0-15.
pub fn fxsave(r: &GRegs) -> [u8; 512] {
    let mut fx = [0u8; 512];
    let [fctrl, fstat, ftag, fiseg, fioff, foseg, fooff, fop] = r.fpu;
    fx[0..2].copy_from_slice(&(fctrl as u16).to_le_bytes());
    fx[2..4].copy_from_slice(&(fstat as u16).to_le_bytes());
    fx[4] = (0..8).fold(0u8, |t, i| if (ftag >> (2 * i)) & 3 == 3 { t } else { t | 1 << i });
    fx[6..8].copy_from_slice(&((fop & 0x7ff) as u16).to_le_bytes());
    fx[8..12].copy_from_slice(&fioff.to_le_bytes());
    fx[12..16].copy_from_slice(&fiseg.to_le_bytes());
    fx[16..20].copy_from_slice(&fooff.to_le_bytes());
    fx[20..24].copy_from_slice(&foseg.to_le_bytes());
    fx[24..28].copy_from_slice(&r.mxcsr.to_le_bytes());
    fx[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    for (i, st) in r.st.iter().enumerate() {
        fx[32 + 16 * i..42 + 16 * i].copy_from_slice(st);
    }
    for (i, x) in r.xmm.iter().enumerate() {
        fx[160 + 16 * i..176 + 16 * i].copy_from_slice(x);
    }
    fx
}

/// What `qUkdb.info` tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// `dumpwire::cause`.
    pub cause: u8,
    /// The exception vector (0 unless `cause` is an exception).
    pub vector: u64,
    /// The exception's error code.
    pub error: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// The image's GNU build-id.
    pub build_id: Vec<u8>,
    /// Why it stopped.
    pub why: String,
    /// The kernel command line.
    pub cmdline: String,
}

/// Parses a `qUkdb.info` reply; `None` for an empty reply (a stub without
/// the query). Unknown fields are skipped.
pub fn parse_info(reply: &[u8]) -> Result<Option<Info>, ParseError> {
    if reply.is_empty() {
        return Ok(None);
    }
    if is_error(reply) {
        return Err(ParseError::Error("qUkdb.info", shown(reply)));
    }
    let mut info = Info { cause: dumpwire::cause::SNAPSHOT, ..Info::default() };
    for field in reply.split(|&b| b == b';').filter(|f| !f.is_empty()) {
        let colon = field
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| ParseError::Malformed("qUkdb.info", shown(field)))?;
        let (key, value) = (&field[..colon], &field[colon + 1..]);
        let text = |v: &[u8]| -> Result<String, ParseError> {
            Ok(String::from_utf8_lossy(&unhex("qUkdb.info text", v)?).into_owned())
        };
        match key {
            b"cause" => {
                info.cause = u8::try_from(hex_u64("cause", value)?)
                    .map_err(|_| ParseError::Malformed("cause", shown(value)))?
            }
            b"vector" => info.vector = hex_u64("vector", value)?,
            b"error" => info.error = hex_u64("error", value)?,
            b"cr0" => info.cr0 = hex_u64("cr0", value)?,
            b"cr2" => info.cr2 = hex_u64("cr2", value)?,
            b"cr3" => info.cr3 = hex_u64("cr3", value)?,
            b"cr4" => info.cr4 = hex_u64("cr4", value)?,
            b"efer" => info.efer = hex_u64("efer", value)?,
            b"build-id" => info.build_id = unhex("build-id", value)?,
            b"why" => info.why = text(value)?,
            b"cmdline" => info.cmdline = text(value)?,
            _ => {}
        }
    }
    Ok(Some(info))
}

/// The [`Cpu`] of a stop: the frame from `g` and `info` (vector, error
/// code), the FXSAVE area built from `g`'s x87/SSE registers, the control
/// registers from `info`.
pub fn cpu(g: &GRegs, info: &Info) -> Cpu {
    let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15] = g.gpr;
    let [cs, ss, ds, es, fs, gs] = g.seg;
    Cpu {
        frame: [
            r15,
            r14,
            r13,
            r12,
            r11,
            r10,
            r9,
            r8,
            rbp,
            rdi,
            rsi,
            rdx,
            rcx,
            rbx,
            rax,
            info.vector,
            info.error,
            g.rip,
            u64::from(cs),
            u64::from(g.eflags),
            rsp,
            u64::from(ss),
        ],
        fs_base: g.fs_base,
        gs_base: g.gs_base,
        cr0: info.cr0,
        cr2: info.cr2,
        cr3: info.cr3,
        cr4: info.cr4,
        efer: info.efer,
        fxsave: fxsave(g),
        data_selectors: [ds as u16, es as u16, fs as u16, gs as u16],
    }
}

/// A `qUkdb.map:INDEX` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapReply {
    /// `m`: entries from INDEX on (at least one).
    Entries(Vec<MapEntry>),
    /// `l`: INDEX is past the end.
    End,
}

/// Parses a `qUkdb.map` reply.
pub fn parse_map(reply: &[u8]) -> Result<MapReply, ParseError> {
    match reply.split_first() {
        Some((b'l', [])) => Ok(MapReply::End),
        Some((b'm', hex)) => {
            let bytes = unhex("qUkdb.map", hex)?;
            if bytes.is_empty() || bytes.len() % dumpwire::MAP_LEN != 0 {
                return Err(ParseError::Length("qUkdb.map", bytes.len()));
            }
            let entries = bytes
                .chunks_exact(dumpwire::MAP_LEN)
                .map(|e| {
                    let q = |at: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&e[at..at + 8]);
                        u64::from_le_bytes(b)
                    };
                    let mut f = [0u8; 4];
                    f.copy_from_slice(&e[24..28]);
                    MapEntry { vaddr: q(0), paddr: q(8), len: q(16), flags: u32::from_le_bytes(f) }
                })
                .collect();
            Ok(MapReply::Entries(entries))
        }
        _ if is_error(reply) => Err(ParseError::Error("qUkdb.map", shown(reply))),
        _ => Err(ParseError::Malformed("qUkdb.map", shown(reply))),
    }
}

/// Whether `ukdb core` reads an entry's pages: RAM that no earlier range
/// carries (not DEVICE, NOT_RAM or ALIAS).
pub fn read_entry(e: &MapEntry) -> bool {
    e.flags & (map::DEVICE | map::NOT_RAM | map::ALIAS) == 0 && e.len > 0
}

/// The most pages one `qUkdb.pages` query covers with a packet size of
/// `packet_size`: the stub's limit (64 Ki pages), and a bitmap whose hex
/// fits in one reply.
pub fn pages_per_query(packet_size: usize) -> u64 {
    let bytes = (packet_size.saturating_sub(8) / 2) as u64;
    (bytes * 8).clamp(8, 64 * 1024)
}

/// Parses a `qUkdb.pages` reply to a query for `pages` pages: which of the
/// pages it covers are set. The stub may cover fewer than asked (8 per
/// byte of bitmap; the caller asks again for the rest), never none and
/// never more.
pub fn parse_bitmap(reply: &[u8], pages: u64) -> Result<Vec<bool>, ParseError> {
    if is_error(reply) {
        return Err(ParseError::Error("qUkdb.pages", shown(reply)));
    }
    let bytes = unhex("qUkdb.pages", reply)?;
    if bytes.is_empty() || bytes.len() as u64 > pages.div_ceil(8) {
        return Err(ParseError::Length("qUkdb.pages", bytes.len()));
    }
    let covered = pages.min(bytes.len() as u64 * 8);
    Ok((0..covered).map(|i| bytes[(i / 8) as usize] & (1 << (i % 8)) != 0).collect())
}

/// One read: `len` bytes at `vaddr`, whose first byte is at `paddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The virtual address read.
    pub vaddr: u64,
    /// Where it lies in physical memory.
    pub paddr: u64,
    /// Bytes (whole pages).
    pub len: u64,
}

/// Turns an entry's bitmap (one bit per page from `first_page`, relative
/// to `entry.vaddr`) into spans of consecutive set pages, appended to `out`.
pub fn spans(entry: &MapEntry, first_page: u64, bits: &[bool], out: &mut Vec<Span>) {
    let mut i = 0usize;
    while i < bits.len() {
        if !bits[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < bits.len() && bits[i] {
            i += 1;
        }
        let off = (first_page + start as u64) * PAGE;
        out.push(Span {
            vaddr: entry.vaddr + off,
            paddr: entry.paddr + off,
            len: (i - start) as u64 * PAGE,
        });
    }
}

/// Parses gdb's memory-map XML (`<memory type="ram|rom|flash"
/// start="0x.." length="0x.."/>`) into map entries; the physical address
/// is unknown and taken equal to the virtual one, `rom` is read-only,
/// `flash` is skipped.
pub fn parse_memory_map(xml: &str) -> Result<Vec<MapEntry>, ParseError> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[at..].find('"')? + at;
        Some(tag[at..end].to_owned())
    };
    let number = |s: &str| -> Result<u64, ParseError> {
        let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
        match digits {
            Some(hex) => hex_u64("memory-map", hex.as_bytes()),
            None => s.parse().map_err(|_| ParseError::Malformed("memory-map", s.to_owned())),
        }
    };
    let mut out = Vec::new();
    for piece in xml.split("<memory").skip(1) {
        if !piece.starts_with(|c: char| c.is_ascii_whitespace()) {
            continue; // <memory-map>
        }
        let tag = piece.split('>').next().unwrap_or_default();
        let (Some(kind), Some(start), Some(len)) =
            (attr(tag, "type"), attr(tag, "start"), attr(tag, "length"))
        else {
            return Err(ParseError::Malformed("memory-map", tag.to_owned()));
        };
        let (start, len) = (number(&start)?, number(&len)?);
        let flags = match kind.as_str() {
            "ram" => map::WRITE,
            "rom" => 0,
            _ => continue,
        };
        out.push(MapEntry { vaddr: start, paddr: start, len, flags });
    }
    Ok(out)
}

/// The reply to a memory read of `want` bytes: `x` (escaped binary) or `m`
/// (hex). An empty or short reply is fine (the caller asks again from where
/// it ended); an error reply is an error.
pub fn parse_read(reply: &[u8], binary: bool, want: usize) -> Result<Vec<u8>, ParseError> {
    if reply.len() < want && is_error(reply) {
        return Err(ParseError::Error("memory read", shown(reply)));
    }
    let data = if binary {
        unescape(reply).ok_or_else(|| ParseError::Malformed("x", shown(reply)))?
    } else {
        unhex("m", reply)?
    };
    if data.len() > want {
        return Err(ParseError::Length("memory read", data.len()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut r = Reader::new();
        let mut out = Vec::new();
        r.push(bytes, &mut out);
        out
    }

    #[test]
    fn packets_round_trip_with_escapes() {
        assert_eq!(packet(b"g"), b"$g#67");
        assert_eq!(packet(b"qUkdb.info"), b"$qUkdb.info#d1".to_vec());
        let payload = b"a$b#c}d*e";
        let framed = packet(payload);
        assert_eq!(&framed[..], b"$a}\x04b}\x03c}]d}\x0ae#51" as &[u8]);
        let got = frames(&framed);
        let Frame::Packet(body) = &got[0] else { panic!("{got:?}") };
        assert_eq!(unescape(body).unwrap(), payload);
    }

    #[test]
    fn reader_acks_naks_rle_and_bad_checksums() {
        // gdbstub's run-length encoding: "0* " is 0 and 3 more.
        let got = frames(b"+-junk$0* #7a$OK#9a$OK#00");
        assert_eq!(
            got,
            vec![
                Frame::Ack,
                Frame::Nak,
                Frame::Packet(b"0000".to_vec()),
                Frame::Packet(b"OK".to_vec()),
                Frame::BadChecksum
            ]
        );
        // Split at every byte: the same frames.
        let stream = b"+$0* #7a$OK#9a";
        let mut r = Reader::new();
        let mut out = Vec::new();
        for b in stream {
            r.push(&[*b], &mut out);
        }
        assert_eq!(out.len(), 3);
        assert_eq!(r.total, stream.len() as u64);
    }

    #[test]
    fn supported_features() {
        let f = parse_supported(
            b"PacketSize=4000;vContSupported+;QStartNoAckMode+;qXfer:memory-map:read+",
        );
        assert_eq!(f, Features { packet_size: 0x4000, no_ack: true, memory_map: true });
        let f = parse_supported(b"");
        assert_eq!(f, Features { packet_size: 400, no_ack: false, memory_map: false });
        assert_eq!(read_chunk(0x4000), 8189);
        assert_eq!(pages_per_query(0x4000), 65_504);
        assert_eq!(pages_per_query(1 << 20), 65_536);
    }

    fn g_bytes() -> Vec<u8> {
        let mut b = vec![0u8; G_LEN];
        for i in 0..16 {
            b[8 * i..8 * i + 8].copy_from_slice(&(0x1000 + i as u64).to_le_bytes());
        }
        b[128..136].copy_from_slice(&0xffff_8000_0010_2030u64.to_le_bytes());
        b[136..140].copy_from_slice(&0x246u32.to_le_bytes());
        for (i, s) in [0x08u32, 0x10, 0x18, 0x20, 0x28, 0x30].iter().enumerate() {
            b[140 + 4 * i..144 + 4 * i].copy_from_slice(&s.to_le_bytes());
        }
        for i in 0..8 {
            for j in 0..10 {
                b[164 + 10 * i + j] = (0x80 + 10 * i + j) as u8;
            }
        }
        // fctrl fstat ftag fiseg fioff foseg fooff fop
        let fpu = [0x37fu32, 0x3800, 0xfff0, 0x10, 0xdead_beef, 0x18, 0xcafe_f00d, 0xffff];
        for (i, f) in fpu.iter().enumerate() {
            b[244 + 4 * i..248 + 4 * i].copy_from_slice(&f.to_le_bytes());
        }
        for i in 0..16 {
            for j in 0..16 {
                b[276 + 16 * i + j] = (16 * i + j) as u8;
            }
        }
        b[532..536].copy_from_slice(&0x1f80u32.to_le_bytes());
        b[536..544].copy_from_slice(&0xf5f5u64.to_le_bytes());
        b[544..552].copy_from_slice(&0x6565u64.to_le_bytes());
        b
    }

    fn hex(b: &[u8]) -> Vec<u8> {
        b.iter().flat_map(|x| format!("{x:02x}").into_bytes()).collect()
    }

    #[test]
    fn g_reply_to_cpu_and_fxsave() {
        let g = parse_g(&hex(&g_bytes())).unwrap();
        assert_eq!(g.gpr[0], 0x1000);
        assert_eq!(g.gpr[15], 0x100f);
        let info = Info { vector: 14, error: 2, cr2: 0x42, cr3: 0x1000, ..Info::default() };
        let c = cpu(&g, &info);
        use super::super::frame::*;
        assert_eq!(c.frame[RAX], 0x1000);
        assert_eq!(c.frame[RBX], 0x1001);
        assert_eq!(c.frame[RCX], 0x1002);
        assert_eq!(c.frame[RDX], 0x1003);
        assert_eq!(c.frame[RSI], 0x1004);
        assert_eq!(c.frame[RDI], 0x1005);
        assert_eq!(c.frame[RBP], 0x1006);
        assert_eq!(c.frame[RSP], 0x1007);
        assert_eq!(c.frame[R8], 0x1008);
        assert_eq!(c.frame[R15], 0x100f);
        assert_eq!(c.frame[RIP], 0xffff_8000_0010_2030);
        assert_eq!(c.frame[RFLAGS], 0x246);
        assert_eq!((c.frame[CS], c.frame[SS]), (0x08, 0x10));
        assert_eq!((c.frame[VECTOR], c.frame[ERROR_CODE]), (14, 2));
        assert_eq!(c.data_selectors, [0x18, 0x20, 0x28, 0x30]);
        assert_eq!((c.fs_base, c.gs_base, c.cr2, c.cr3), (0xf5f5, 0x6565, 0x42, 0x1000));

        let fx = c.fxsave;
        assert_eq!(&fx[0..2], &0x37fu16.to_le_bytes());
        assert_eq!(&fx[2..4], &0x3800u16.to_le_bytes());
        // ftag 0xfff0: st0 and st1 valid (00), the rest empty (11).
        assert_eq!(fx[4], 0b0000_0011);
        assert_eq!(fx[5], 0);
        // fop keeps 11 bits.
        assert_eq!(&fx[6..8], &0x7ffu16.to_le_bytes());
        assert_eq!(&fx[8..16], &[0xef, 0xbe, 0xad, 0xde, 0x10, 0, 0, 0]);
        assert_eq!(&fx[16..24], &[0x0d, 0xf0, 0xfe, 0xca, 0x18, 0, 0, 0]);
        assert_eq!(&fx[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(&fx[28..32], &0xffffu32.to_le_bytes());
        for i in 0..8 {
            let want: Vec<u8> = (0..10).map(|j| (0x80 + 10 * i + j) as u8).collect();
            assert_eq!(&fx[32 + 16 * i..42 + 16 * i], &want[..], "st{i}");
            assert_eq!(&fx[42 + 16 * i..48 + 16 * i], &[0; 6], "st{i} padding");
        }
        for i in 0..16 {
            let want: Vec<u8> = (0..16).map(|j| (16 * i + j) as u8).collect();
            assert_eq!(&fx[160 + 16 * i..176 + 16 * i], &want[..], "xmm{i}");
        }
        assert!(fx[416..].iter().all(|&b| b == 0));
    }

    #[test]
    fn g_reply_lengths_and_unavailable_bytes() {
        let mut core = hex(&g_bytes()[..G_CORE_LEN]);
        let g = parse_g(&core).unwrap();
        assert_eq!((g.fs_base, g.gs_base, g.mxcsr), (0, 0, 0x1f80));
        core.pop();
        assert!(parse_g(&core).is_err());
        core.truncate(core.len() - 1);
        assert_eq!(parse_g(&core), Err(ParseError::Length("g", G_CORE_LEN - 1)));
        let mut unavailable = hex(&g_bytes());
        unavailable[0..2].copy_from_slice(b"xx");
        assert_eq!(parse_g(&unavailable).unwrap().gpr[0], 0x1000 & !0xff);
        assert_eq!(parse_g(b"E01"), Err(ParseError::Error("g", "E01".into())));
    }

    #[test]
    fn info_fields() {
        let reply = format!(
            "cause:1;vector:e;error:2;cr0:80010033;cr2:dead;cr3:1000;cr4:620;efer:d01;\
             build-id:0a0bff;why:{};cmdline:{};later:zz",
            String::from_utf8(hex(b"panicked at src/app.rs:3:5:\nboom")).unwrap(),
            String::from_utf8(hex(b"ukdb.wait")).unwrap()
        );
        let info = parse_info(reply.as_bytes()).unwrap().unwrap();
        assert_eq!(
            info,
            Info {
                cause: 1,
                vector: 14,
                error: 2,
                cr0: 0x8001_0033,
                cr2: 0xdead,
                cr3: 0x1000,
                cr4: 0x620,
                efer: 0xd01,
                build_id: vec![0x0a, 0x0b, 0xff],
                why: "panicked at src/app.rs:3:5:\nboom".into(),
                cmdline: "ukdb.wait".into(),
            }
        );
        assert_eq!(parse_info(b"").unwrap(), None);
        assert!(parse_info(b"E16").is_err());
        assert!(parse_info(b"cause:zz").is_err());
        assert!(parse_info(b"cause").is_err());
        assert!(parse_info(b"why:abc").is_err());
    }

    #[test]
    fn map_replies() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&dumpwire::map_entry(0xffff_8000_0000_0000, 0, 0x800_0000, 1));
        bytes.extend_from_slice(&dumpwire::map_entry(0xfee0_0000, 0xfee0_0000, 0x1000, 5));
        let mut reply = b"m".to_vec();
        reply.extend(hex(&bytes));
        let MapReply::Entries(e) = parse_map(&reply).unwrap() else { panic!() };
        assert_eq!(
            e,
            vec![
                MapEntry { vaddr: 0xffff_8000_0000_0000, paddr: 0, len: 0x800_0000, flags: 1 },
                MapEntry { vaddr: 0xfee0_0000, paddr: 0xfee0_0000, len: 0x1000, flags: 5 },
            ]
        );
        assert!(read_entry(&e[0]));
        assert!(!read_entry(&e[1]));
        assert!(!read_entry(&MapEntry { flags: map::ALIAS, ..e[0] }));
        assert!(!read_entry(&MapEntry { flags: map::NOT_RAM, ..e[0] }));
        assert_eq!(parse_map(b"l").unwrap(), MapReply::End);
        assert!(parse_map(b"m").is_err());
        assert!(parse_map(&reply[..reply.len() - 2]).is_err());
        assert!(parse_map(b"E16").is_err());
        assert!(parse_map(b"").is_err());
    }

    #[test]
    fn bitmaps_become_coalesced_spans() {
        // Pages 0, 1, 2, 9 and 15 of 16.
        let bits = parse_bitmap(b"0782", 16).unwrap();
        let set: Vec<usize> =
            bits.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i).collect();
        assert_eq!(set, vec![0, 1, 2, 9, 15]);
        let entry = MapEntry { vaddr: 0x20_0000, paddr: 0x10_0000, len: 0x2_0000, flags: 0 };
        let mut out = Vec::new();
        spans(&entry, 16, &bits, &mut out);
        assert_eq!(
            out,
            vec![
                Span { vaddr: 0x21_0000, paddr: 0x11_0000, len: 0x3000 },
                Span { vaddr: 0x21_9000, paddr: 0x11_9000, len: 0x1000 },
                Span { vaddr: 0x21_f000, paddr: 0x11_f000, len: 0x1000 },
            ]
        );
        // 12 pages need two bytes; bits past the count are ignored.
        assert_eq!(parse_bitmap(b"00f0", 12).unwrap().iter().filter(|b| **b).count(), 0);
        // Fewer pages than asked: the ones covered.
        assert_eq!(parse_bitmap(b"81", 12).unwrap(), [1, 0, 0, 0, 0, 0, 0, 1].map(|b| b == 1));
        assert!(parse_bitmap(b"", 12).is_err());
        assert!(parse_bitmap(b"000000", 12).is_err());
        assert!(parse_bitmap(b"E16", 12).is_err());
        assert!(parse_bitmap(b"0g", 8).is_err());
    }

    #[test]
    fn memory_map_xml() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE memory-map PUBLIC "+//IDN gnu.org//DTD GDB Memory Map V1.0//EN" "http://sourceware.org/gdb/gdb-memory-map.dtd">
<memory-map>
<memory type="ram" start="0x100000" length="0x200000"/>
<memory type="rom" start="0xffff800000000000" length="4096"/>
<memory type="flash" start="0x0" length="0x1000"><property name="blocksize">0x100</property></memory>
</memory-map>"#;
        assert_eq!(
            parse_memory_map(xml).unwrap(),
            vec![
                MapEntry { vaddr: 0x10_0000, paddr: 0x10_0000, len: 0x20_0000, flags: map::WRITE },
                MapEntry {
                    vaddr: 0xffff_8000_0000_0000,
                    paddr: 0xffff_8000_0000_0000,
                    len: 4096,
                    flags: 0
                },
            ]
        );
        assert!(parse_memory_map(r#"<memory type="ram" start="0x10"/>"#).is_err());
        assert!(parse_memory_map(r#"<memory type="ram" start="0xzz" length="1"/>"#).is_err());
    }

    #[test]
    fn memory_reads() {
        assert_eq!(parse_read(b"ab}]*", true, 4).unwrap(), b"ab}*");
        assert_eq!(parse_read(b"ab}]*", true, 3), Err(ParseError::Length("memory read", 4)));
        assert_eq!(parse_read(b"a}\x03", true, 8).unwrap(), b"a#");
        assert_eq!(
            parse_read(b"E14", true, 4096),
            Err(ParseError::Error("memory read", "E14".into()))
        );
        // Exactly as long as asked: data, even if it looks like an error.
        assert_eq!(parse_read(b"E14", true, 3).unwrap(), b"E14");
        assert_eq!(parse_read(b"00ff", false, 2).unwrap(), vec![0, 0xff]);
        assert!(parse_read(b"0", false, 2).is_err());
        assert!(parse_read(b"ab}", true, 8).is_err());
    }
}
