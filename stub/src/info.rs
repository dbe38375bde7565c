//! What the unikernel tells the stub about itself, for cores: the RAM it
//! has ([`set_ram`]), its image's GNU build-id ([`set_build_id`]) and its
//! command line (kept by `init`). Set at boot, read when a core is taken.

// Used by the crash path and the core queries as they land (issue 7).
#![allow(dead_code)]

/// Longest command line kept for a core.
pub const CMDLINE_MAX: usize = 512;
/// Longest build-id kept (SHA-1 ids are 20 bytes, `--build-id=sha256` 32).
pub const BUILD_ID_MAX: usize = 64;

/// The build-id in a `.note.gnu.build-id` section: the descriptor of its
/// first `NT_GNU_BUILD_ID` note named "GNU". `None` for anything else.
pub fn parse_build_id(note: &[u8]) -> Option<&[u8]> {
    let word = |at: usize| -> Option<usize> {
        let b = note.get(at..at + 4)?;
        usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
    };
    let (namesz, descsz, kind) = (word(0)?, word(4)?, word(8)?);
    let name_end = 12usize.checked_add(namesz)?;
    let desc_start = name_end.checked_add(3)? & !3;
    let desc = note.get(desc_start..desc_start.checked_add(descsz)?)?;
    let named_gnu = note.get(12..name_end)? == b"GNU\0";
    (kind == 3 && named_gnu && !desc.is_empty() && desc.len() <= BUILD_ID_MAX).then_some(desc)
}

/// The command-line options whose values are secrets: a core carries the
/// command line, so their values are replaced by `*`.
const SECRET_OPTIONS: [&[u8]; 2] = [b"ukdb.key=", b"ukdb.rokey="];

/// Copies `cmdline` into `out` (as much as fits) with the value of every
/// `ukdb.key=` and `ukdb.rokey=` word replaced by one `*`; returns the
/// length written.
pub fn redact_cmdline(cmdline: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    let mut put = |b: u8| {
        if let Some(slot) = out.get_mut(n) {
            *slot = b;
            n += 1;
        }
    };
    let mut rest = cmdline;
    while let Some(&b) = rest.first() {
        if b.is_ascii_whitespace() {
            put(b);
            rest = rest.get(1..).unwrap_or_default();
            continue;
        }
        let end = rest.iter().position(|c| c.is_ascii_whitespace()).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        match SECRET_OPTIONS.iter().find(|p| word.starts_with(p)) {
            Some(prefix) => {
                prefix.iter().chain(b"*").for_each(|&c| put(c));
            }
            None => word.iter().for_each(|&c| put(c)),
        }
        rest = tail;
    }
    n
}

#[cfg(feature = "dump")]
mod state {
    use super::*;
    use crate::coremap::Ram;
    use crate::global::{Global, SetOnce};

    static RAM: Global<Ram> = Global::new(Ram::none());
    static BUILD_ID: SetOnce<&'static [u8]> = SetOnce::new();
    static CMDLINE: SetOnce<([u8; CMDLINE_MAX], usize)> = SetOnce::new();

    /// Tells the stub which physical memory is RAM (`start..end` ranges,
    /// from the boot memory map: E820, the PVH memmap, a device tree), so a
    /// core reads only RAM: page tables often map more than there is (an
    /// identity-mapped GiB on a 128 MiB machine), and reading what is not
    /// RAM is slow and means nothing. Without it every mapped page that is
    /// not device memory counts as RAM. `false`: more than 32 ranges after
    /// merging (nothing changes). Call it at boot; it does nothing without
    /// the `enabled` or `dump` feature.
    pub fn set_ram(ranges: &[core::ops::Range<u64>]) -> bool {
        RAM.lock().is_some_and(|mut ram| ram.set(ranges))
    }

    /// Gives the stub the image's `.note.gnu.build-id` section (link with
    /// `--build-id` and keep the note in a loaded section), so every core
    /// names the image it came from and `ukdb` can tell a core from
    /// another build. `false`: not a GNU build-id note, or set already.
    pub fn set_build_id(note: &'static [u8]) -> bool {
        parse_build_id(note).is_some_and(|id| BUILD_ID.set(id))
    }

    /// The declared RAM (none when being declared right now).
    pub fn ram() -> Ram {
        RAM.lock().map(|r| *r).unwrap_or_default()
    }

    /// The build-id, or empty.
    pub fn build_id() -> &'static [u8] {
        BUILD_ID.get().copied().unwrap_or_default()
    }

    /// Keeps (the first [`CMDLINE_MAX`] bytes of) the command line, keys
    /// redacted (see [`redact_cmdline`]); the first call wins.
    pub fn keep_cmdline(cmdline: &str) {
        let mut copy = [0u8; CMDLINE_MAX];
        let n = redact_cmdline(cmdline.as_bytes(), &mut copy);
        CMDLINE.set((copy, n));
    }

    /// The command line `init` was given, or empty.
    pub fn cmdline() -> &'static [u8] {
        CMDLINE.get().and_then(|(b, n)| b.get(..*n)).unwrap_or_default()
    }
}
#[cfg(feature = "dump")]
pub use state::*;

#[cfg(test)]
mod tests {
    use super::{parse_build_id, redact_cmdline, CMDLINE_MAX};

    fn redacted(line: &str) -> String {
        let mut out = [0u8; CMDLINE_MAX];
        let n = redact_cmdline(line.as_bytes(), &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn keys_never_reach_the_kept_command_line() {
        assert_eq!(
            redacted("console=ttyS0 ukdb.key=00112233 ukdb.wait  ukdb.rokey=abcd\tx"),
            "console=ttyS0 ukdb.key=* ukdb.wait  ukdb.rokey=*\tx"
        );
        assert_eq!(redacted("ukdb.key=\tukdb.rokey="), "ukdb.key=*\tukdb.rokey=*");
        assert_eq!(redacted("xukdb.key=1 ukdb.keys=2"), "xukdb.key=1 ukdb.keys=2");
        assert_eq!(redacted(""), "");
        // A long line is cut, never with a key's value in it.
        let long = format!("{} ukdb.key={}", "a".repeat(CMDLINE_MAX - 4), "f".repeat(128));
        assert_eq!(redacted(&long), format!("{} ukd", "a".repeat(CMDLINE_MAX - 4)));
    }

    #[cfg(feature = "dump")]
    #[test]
    fn keep_cmdline_redacts() {
        super::keep_cmdline("a ukdb.key=0011 b");
        assert_eq!(super::cmdline(), b"a ukdb.key=* b");
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n.extend_from_slice(desc);
        n
    }

    #[test]
    fn a_gnu_build_id_note_gives_its_descriptor() {
        let id: Vec<u8> = (1..=20).collect();
        assert_eq!(parse_build_id(&note(b"GNU\0", 3, &id)), Some(&id[..]));
    }

    #[test]
    fn anything_else_gives_none() {
        let id = [7u8; 20];
        assert_eq!(parse_build_id(&note(b"GNU\0", 1, &id)), None);
        assert_eq!(parse_build_id(&note(b"Go\0\0", 3, &id)), None);
        assert_eq!(parse_build_id(&note(b"GNU\0", 3, &[])), None);
        assert_eq!(parse_build_id(&note(b"GNU\0", 3, &[1; 65])), None);
        let whole = note(b"GNU\0", 3, &id);
        assert_eq!(parse_build_id(&whole[..whole.len() - 1]), None);
        assert_eq!(parse_build_id(&[]), None);
        let mut huge = whole.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_build_id(&huge), None);
    }
}
