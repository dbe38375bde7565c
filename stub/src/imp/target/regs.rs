//! The register set the stub describes to debuggers: gdbstub_arch's x86_64
//! core + SSE registers, plus `fs_base` and `gs_base`, with a target
//! description that names every register (lldb sees no registers without
//! explicit `<reg>` entries; the stock description names only the feature).

use core::num::NonZeroUsize;
use gdbstub::arch::{Arch, RegId, Registers};
use gdbstub_arch::x86::reg::X86_64CoreRegs;

/// The full target description: gdb's `64bit-core`, `64bit-sse` and
/// `64bit-segments` features, with lldb's `generic`/DWARF attributes.
pub const TARGET_XML: &str = include_str!("target.xml");

/// Size of the core + SSE block in the `g` packet.
const CORE_LEN: usize = 0x218;

/// Size of the whole register block in the `g` packet: core + SSE, then
/// `fs_base` and `gs_base`.
pub const G_LEN: usize = CORE_LEN + 16;

/// x86_64 with SSE and segment bases.
pub enum X86_64Ukdb {}

impl Arch for X86_64Ukdb {
    type Usize = u64;
    type Registers = Regs;
    type RegId = RegIdUkdb;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// All registers, in `g` packet order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Regs {
    /// General, segment, x87 and SSE registers.
    pub core: X86_64CoreRegs,
    /// FS.base.
    pub fs_base: u64,
    /// GS.base.
    pub gs_base: u64,
}

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for b in self.fs_base.to_le_bytes().iter().chain(self.gs_base.to_le_bytes().iter()) {
            write_byte(Some(*b));
        }
    }

    /// Takes the core block alone or the whole block, nothing in between or
    /// beyond: a `G` of any other length is an error, not a shifted guess.
    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != CORE_LEN && bytes.len() != G_LEN {
            return Err(());
        }
        let core = bytes.get(..CORE_LEN).ok_or(())?;
        self.core.gdb_deserialize(core)?;
        // The bases are optional: a client may send only the core block.
        if let Some(rest) = bytes.get(CORE_LEN..CORE_LEN + 16) {
            let (fs, gs) = rest.split_at(8);
            self.fs_base = u64::from_le_bytes(fs.try_into().map_err(|_| ())?);
            self.gs_base = u64::from_le_bytes(gs.try_into().map_err(|_| ())?);
        }
        Ok(())
    }
}

impl Regs {
    /// The `g` packet's register block, as bytes (the one serialisation the
    /// `p`/`P` handlers slice).
    pub fn to_bytes(&self) -> [u8; G_LEN] {
        let mut all = [0u8; G_LEN];
        let mut n = 0;
        self.gdb_serialize(|b| {
            if let (Some(b), Some(slot)) = (b, all.get_mut(n)) {
                *slot = b;
            }
            n += 1;
        });
        all
    }
}

/// A register number from a `p`/`P` packet: its index in the `g` packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegIdUkdb(pub usize);

impl RegIdUkdb {
    /// Where the register lies in the serialized `g` block, and its size.
    pub fn span(self) -> core::ops::Range<usize> {
        let (start, len) = match self.0 {
            i @ 0..=15 => (8 * i, 8),
            16 => (128, 8),
            17 => (136, 4),
            i @ 18..=23 => (140 + 4 * (i - 18), 4),
            i @ 24..=31 => (164 + 10 * (i - 24), 10),
            i @ 32..=39 => (244 + 4 * (i - 32), 4),
            i @ 40..=55 => (276 + 16 * (i - 40), 16),
            56 => (532, 4),
            57 => (536, 8),
            _ => (544, 8),
        };
        start..start + len
    }
}

impl RegId for RegIdUkdb {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        if id > 58 {
            return None;
        }
        let id = RegIdUkdb(id);
        Some((id, NonZeroUsize::new(id.span().len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_numbers_match_the_g_packet() {
        // 59 registers, numbered 0..=58 in order.
        let regnums: Vec<usize> = TARGET_XML
            .split(" regnum=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(regnums, (0..59).collect::<Vec<_>>());
        let mut len = 0;
        Regs::default().gdb_serialize(|_| len += 1);
        assert_eq!(len, G_LEN);
    }

    #[test]
    fn single_register_spans_tile_the_g_packet() {
        let mut next = 0;
        for id in 0..59 {
            let (r, size) = RegIdUkdb::from_raw_id(id).unwrap();
            assert_eq!(r.span().start, next, "register {id}");
            assert_eq!(size.unwrap().get(), r.span().len());
            next = r.span().end;
        }
        assert_eq!(next, CORE_LEN + 16);
        assert!(RegIdUkdb::from_raw_id(59).is_none());
    }

    #[test]
    fn round_trip_with_and_without_bases() {
        let mut r = Regs::default();
        r.core.rip = 0x1234;
        r.fs_base = 0xf5;
        r.gs_base = 0x65;
        let mut bytes = Vec::new();
        r.gdb_serialize(|b| bytes.push(b.unwrap()));
        let mut back = Regs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        let mut core_only = Regs::default();
        core_only.gdb_deserialize(&bytes[..CORE_LEN]).unwrap();
        assert_eq!((core_only.core.rip, core_only.fs_base), (0x1234, 0));
        assert!(core_only.gdb_deserialize(&bytes[..CORE_LEN - 1]).is_err());
        // Neither between the two sizes nor beyond the whole block.
        assert!(core_only.gdb_deserialize(&bytes[..CORE_LEN + 8]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(core_only.gdb_deserialize(&long).is_err());
        assert_eq!(r.to_bytes().as_slice(), bytes.as_slice());
    }
}
