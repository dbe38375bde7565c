//! ukdb's own RSP queries, which `ukdb core` uses to take a core of a live
//! unikernel (`docs/wire-protocol.md`, "Core queries"), and the gdb memory
//! map: parsing and reply formatting. Pure logic, host-tested; the stub
//! answers them in `imp/query.rs`.
//!
//! - `qUkdb.info`: why it stopped, control registers, build-id, command line.
//! - `qUkdb.map:INDEX`: the page walk's entries (`coremap::Entry`), from
//!   entry `INDEX` on, as many as fit.
//! - `qUkdb.pages:ADDR,LEN`: which 4 KiB pages hold a non-zero byte.

use crate::memreply::hex_pair;

/// A parsed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `qUkdb.info`.
    Info,
    /// `qUkdb.map:INDEX`.
    Map(u64),
    /// `qUkdb.pages:ADDR,LEN`: page-aligned, `LEN` a whole number of pages
    /// (at least one).
    Pages {
        /// The first page.
        addr: u64,
        /// How many pages.
        pages: u64,
    },
    /// A `qUkdb.` packet with bad arguments: `E16`.
    Invalid,
}

/// The page size of `qUkdb.pages`.
pub const PAGE: u64 = 4096;

/// Parses a whole packet (`$...#xx`, checksum already checked). `None`:
/// not a ukdb query.
pub fn parse(packet: &[u8]) -> Option<Query> {
    let body = packet.strip_prefix(b"$")?;
    let hash = body.iter().rposition(|&b| b == b'#')?;
    let body = body.get(..hash)?.strip_prefix(b"qUkdb.")?;
    Some(match body {
        b"info" => Query::Info,
        _ => {
            if let Some(arg) = body.strip_prefix(b"map:") {
                hex(arg).map_or(Query::Invalid, Query::Map)
            } else if let Some(args) = body.strip_prefix(b"pages:") {
                pages(args).unwrap_or(Query::Invalid)
            } else {
                Query::Invalid
            }
        }
    })
}

fn pages(args: &[u8]) -> Option<Query> {
    let comma = args.iter().position(|&b| b == b',')?;
    let addr = hex(args.get(..comma)?)?;
    let len = hex(args.get(comma + 1..)?)?;
    let aligned = addr % PAGE == 0 && len % PAGE == 0 && len > 0;
    aligned.then_some(Query::Pages { addr, pages: len / PAGE })
}

/// A hex number of 1 to 16 digits.
fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &d| Some(v << 4 | u64::from(char::from(d).to_digit(16)?)))
}

/// Writes a reply body into a window of a longer text: the bytes from
/// `skip` on, as many as `out` holds. Used for answers that are longer
/// than one packet (the memory map's XML, read by offset) and for bounded
/// replies.
pub struct Window<'a> {
    out: &'a mut [u8],
    skip: u64,
    pos: u64,
    written: usize,
}

impl<'a> Window<'a> {
    /// Text from `skip` on, into `out`.
    pub fn new(out: &'a mut [u8], skip: u64) -> Self {
        Window { out, skip, pos: 0, written: 0 }
    }

    /// Appends `bytes` (the part inside the window is kept).
    pub fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.pos >= self.skip {
                if let Some(slot) = self.out.get_mut(self.written) {
                    *slot = b;
                    self.written += 1;
                }
            }
            self.pos += 1;
        }
    }

    /// Appends `value` as lowercase hex without leading zeros.
    pub fn put_hex(&mut self, value: u64) {
        let digits = (64 - value.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            let nibble = (value >> (4 * i)) & 0xf;
            self.put(&[b"0123456789abcdef"[nibble as usize]]);
        }
    }

    /// Appends every byte of `bytes` as two hex digits.
    pub fn put_hex_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.put(&hex_pair(b));
        }
    }

    /// How many bytes landed in `out`.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Room left in `out`.
    pub fn room(&self) -> usize {
        self.out.len() - self.written
    }
}

/// The memory map's opening (gdb's `memory-map.dtd`).
pub const MAP_HEAD: &[u8] = b"<?xml version=\"1.0\"?>\n<!DOCTYPE memory-map PUBLIC \"+//IDN gnu.org//DTD GDB Memory Map V1.0//EN\" \"http://sourceware.org/gdb/gdb-memory-map.dtd\">\n<memory-map>\n";
/// The memory map's end.
pub const MAP_TAIL: &[u8] = b"</memory-map>\n";

/// One `<memory>` element of the map: RAM (to gdb every mapped page is
/// RAM: device registers are read as the program would, and software
/// breakpoints go anywhere the stub can write).
pub fn map_region(w: &mut Window<'_>, start: u64, len: u64) {
    w.put(b"<memory type=\"ram\" start=\"0x");
    w.put_hex(start);
    w.put(b"\" length=\"0x");
    w.put_hex(len);
    w.put(b"\"/>\n");
}

/// Merges runs that follow one another virtually into the regions of the
/// gdb memory map (permissions and physical addresses do not matter to
/// it): feed runs in order with [`Regions::push`], then [`Regions::finish`].
#[derive(Debug, Default)]
pub struct Regions {
    open: Option<(u64, u64)>,
}

impl Regions {
    /// Takes the next run (`start`, `len`); returns a finished region.
    pub fn push(&mut self, start: u64, len: u64) -> Option<(u64, u64)> {
        match self.open.as_mut() {
            Some((s, l)) if s.checked_add(*l) == Some(start) => {
                *l = l.saturating_add(len);
                None
            }
            _ => self.open.replace((start, len)),
        }
    }

    /// The last region.
    pub fn finish(self) -> Option<(u64, u64)> {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${}#{:02x}", body, sum).into_bytes()
    }

    #[test]
    fn queries_parse_and_bad_arguments_are_invalid() {
        assert_eq!(parse(&packet("qUkdb.info")), Some(Query::Info));
        assert_eq!(parse(&packet("qUkdb.map:0")), Some(Query::Map(0)));
        assert_eq!(parse(&packet("qUkdb.map:1F")), Some(Query::Map(31)));
        assert_eq!(
            parse(&packet("qUkdb.pages:100000,2000")),
            Some(Query::Pages { addr: 0x10_0000, pages: 2 })
        );
        for bad in [
            "qUkdb.map:",
            "qUkdb.map:x",
            "qUkdb.map:11112222333344445",
            "qUkdb.pages:1001,1000",
            "qUkdb.pages:1000,fff",
            "qUkdb.pages:1000,0",
            "qUkdb.pages:1000",
            "qUkdb.pages:,1000",
            "qUkdb.infos",
            "qUkdb.",
        ] {
            assert_eq!(parse(&packet(bad)), Some(Query::Invalid), "{bad}");
        }
        assert_eq!(parse(&packet("qSupported")), None);
        assert_eq!(parse(&packet("qUkdbinfo")), None);
        assert_eq!(parse(b"qUkdb.info"), None);
    }

    #[test]
    fn a_window_keeps_its_part_of_the_text() {
        let mut out = [0u8; 8];
        let mut w = Window::new(&mut out, 4);
        w.put(b"0123");
        w.put_hex(0x4567_89ab_cdef);
        assert_eq!(w.written(), 8);
        assert_eq!(&out, b"456789ab");
        let mut out = [0u8; 16];
        let mut w = Window::new(&mut out, 0);
        w.put_hex(0);
        w.put_hex_bytes(&[0x10, 0xff]);
        assert_eq!(w.room(), 11);
        assert_eq!(&out[..5], b"010ff");
    }

    #[test]
    fn regions_merge_what_follows_on() {
        let mut r = Regions::default();
        assert_eq!(r.push(0x1000, 0x1000), None);
        assert_eq!(r.push(0x2000, 0x3000), None);
        assert_eq!(r.push(0x10_0000, 0x1000), Some((0x1000, 0x4000)));
        assert_eq!(r.push(u64::MAX - 0xfff, 0x1000), Some((0x10_0000, 0x1000)));
        assert_eq!(r.finish(), Some((u64::MAX - 0xfff, 0x1000)));
        let mut out = [0u8; 512];
        let mut w = Window::new(&mut out, MAP_HEAD.len() as u64);
        w.put(MAP_HEAD);
        map_region(&mut w, 0x1000, 0x4000);
        w.put(MAP_TAIL);
        let n = w.written();
        assert_eq!(
            &out[..n],
            b"<memory type=\"ram\" start=\"0x1000\" length=\"0x4000\"/>\n</memory-map>\n"
        );
        assert!(MAP_HEAD.ends_with(b"<memory-map>\n"));
    }
}
