//! Finds the network stub's "ready" line in console text (sans-I/O).
//!
//! A stub announces each transport it serves on the console as
//! `ukdb: stub ready on NAME, ...`. The serial transport is named `serial`;
//! any other name is a transport a debugger reaches over the network, and
//! `ukdb run --net` attaches once it has seen such a line.

/// The start of the stub's announcement.
pub const READY_PREFIX: &[u8] = b"ukdb: stub ready on ";

/// The name of the serial transport, which does not count as network ready.
const SERIAL: &[u8] = b"serial";

/// Lines longer than this are not announcements; only their start is kept.
const MAX_LINE: usize = 256;

/// Scans console bytes, fed in chunks of any size, for a line that starts
/// with [`READY_PREFIX`] and names a transport other than `serial`.
#[derive(Debug, Clone, Default)]
pub struct ReadyScanner {
    line: Vec<u8>,
}

impl ReadyScanner {
    /// A scanner at the start of a line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds console bytes; returns true when a whole network-ready line
    /// ended in them.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut ready = false;
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (text, ended) = match chunk.split_last() {
                Some((b'\n', text)) => (text, true),
                _ => (chunk, false),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&text[..text.len().min(room)]);
            if ended {
                ready |= is_network_ready(&self.line);
                self.line.clear();
            }
        }
        ready
    }
}

/// Whether `line` (without its newline) announces a network transport.
fn is_network_ready(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.strip_prefix(READY_PREFIX) {
        Some(name) => !name.is_empty() && !name.starts_with(SERIAL),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_announcement_is_ready() {
        let mut s = ReadyScanner::new();
        assert!(!s.feed(b"boot\nukdb: stub ready on serial, breakpoints use int3\n"));
        assert!(s.feed(b"ukdb: stub ready on tcp 10.0.2.15:1234\n"));
        assert!(!s.feed(b"line 1 ticks 2\n"));
    }

    #[test]
    fn split_across_chunks_and_crlf() {
        let mut s = ReadyScanner::new();
        let line = b"x\r\nukdb: stub ready on virtio-net 10.0.2.15:1234\r\n";
        let mut ready = 0;
        for b in line {
            ready += usize::from(s.feed(&[*b]));
        }
        assert_eq!(ready, 1);
    }

    #[test]
    fn only_whole_lines_at_their_start() {
        let mut s = ReadyScanner::new();
        assert!(!s.feed(b"ukdb: stub ready on net"));
        assert!(s.feed(b"\n"));
        assert!(!s.feed(b"say ukdb: stub ready on net\n"));
        assert!(!s.feed(b"ukdb: stub ready on \n"));
        assert!(!s.feed(b"ukdb: stub ready on serial\n"));
    }

    #[test]
    fn long_lines_are_bounded() {
        let mut s = ReadyScanner::new();
        assert!(!s.feed(&vec![b'a'; 10_000]));
        assert!(s.line.len() <= MAX_LINE);
        assert!(!s.feed(b"\n"));
        assert!(s.feed(b"ukdb: stub ready on net\n"));
    }
}
