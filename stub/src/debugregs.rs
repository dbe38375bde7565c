//! Hardware breakpoints and watchpoints: allocation of the four x86 debug
//! address registers and the DR7 encoding. Pure logic, host-tested; the
//! stub loads the result with `mov drN`.

/// What a debug register slot watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Instruction fetch at the address (a hardware breakpoint).
    Exec,
    /// Data writes.
    Write,
    /// Data reads or writes (x86 has no read-only watch).
    ReadWrite,
}

/// One armed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Address (aligned to `len` for data slots).
    pub addr: u64,
    /// Bytes covered: 1 for Exec; 1, 2, 4 or 8 for data.
    pub len: u64,
    /// What triggers it.
    pub kind: SlotKind,
}

/// DR7.GD: general detect, a #DB on any debug register access.
pub const DR7_GD: u64 = 1 << 13;
/// DR6.BD: the #DB was a general-detect fault.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: the #DB was a single step.
pub const DR6_BS: u64 = 1 << 14;
/// DR7's global bits kept from the unikernel: LE, GE, RTM.
const DR7_KEPT: u64 = (1 << 8) | (1 << 9) | (1 << 11);

/// The unikernel's own debug registers, saved when the stub is entered.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SavedDebugRegs {
    /// DR0-DR3.
    pub addrs: [u64; 4],
    /// DR7.
    pub dr7: u64,
}

impl SavedDebugRegs {
    /// The registers DR7 enables (L or G bit), a bit each.
    pub fn enabled(&self) -> u8 {
        (0..4).filter(|i| self.dr7 & (0b11 << (2 * i)) != 0).fold(0, |m, i| m | 1 << i)
    }
}

/// The four slots.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DebugRegs {
    slots: [Option<Slot>; 4],
}

/// Why a slot could not be armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// All four registers are in use.
    Full,
    /// Length not 1, 2, 4 or 8, or the address not aligned to it.
    Unsupported,
}

impl DebugRegs {
    /// No slot armed.
    pub const fn new() -> Self {
        DebugRegs { slots: [None; 4] }
    }

    /// Arms a slot; arming the same slot twice is one slot.
    #[cfg(test)]
    pub fn add(&mut self, slot: Slot) -> Result<usize, SlotError> {
        self.add_avoiding(slot, 0)
    }

    /// Arms a slot (arming the same slot twice is one slot), preferring a
    /// register not in `busy` (a bit per register: the unikernel's own, see
    /// [`SavedDebugRegs::enabled`]); a busy one is taken only when no other
    /// is free, and the debugger's slot then wins (see [`DebugRegs::merge`]).
    pub fn add_avoiding(&mut self, slot: Slot, busy: u8) -> Result<usize, SlotError> {
        let len_ok = match slot.kind {
            SlotKind::Exec => slot.len == 1,
            _ => matches!(slot.len, 1 | 2 | 4 | 8) && slot.addr.is_multiple_of(slot.len),
        };
        if !len_ok {
            return Err(SlotError::Unsupported);
        }
        if let Some(i) = self.slots.iter().position(|s| *s == Some(slot)) {
            return Ok(i);
        }
        let free = |i: &usize| self.slots.get(*i).is_some_and(|s| s.is_none());
        let i = (0..4)
            .filter(free)
            .find(|i| busy & (1 << i) == 0)
            .or_else(|| (0..4).find(free))
            .ok_or(SlotError::Full)?;
        if let Some(s) = self.slots.get_mut(i) {
            *s = Some(slot);
        }
        Ok(i)
    }

    /// Disarms a slot; `false` when it was not armed.
    pub fn remove(&mut self, slot: Slot) -> bool {
        match self.slots.iter().position(|s| *s == Some(slot)) {
            Some(i) => {
                self.slots[i] = None;
                true
            }
            None => false,
        }
    }

    /// Disarms every slot.
    pub fn clear(&mut self) {
        self.slots = [None; 4];
    }

    /// The debugger's slot that DR6 says fired (lowest first). A B-bit of
    /// a slot the debugger does not use is ignored: the CPU may set it for
    /// any matching address, armed or not, and the slot may be the
    /// unikernel's own.
    pub fn fired(&self, dr6: u64) -> Option<Slot> {
        (0..4).filter(|i| dr6 & (1 << i) != 0).find_map(|i| self.slots[i])
    }

    /// The unikernel's own debug registers, from the `live` ones read when
    /// the stub is entered: slots the debugger had loaded (this table's
    /// slots, unchanged since the stub last resumed the unikernel) still
    /// hold the debugger's values, so those keep what was saved before
    /// (`prev`); so do DR7's global bits while any debugger slot was loaded.
    pub fn program_view(&self, live: &SavedDebugRegs, prev: &SavedDebugRegs) -> SavedDebugRegs {
        let mut view = *live;
        let mut any = false;
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.is_none() {
                continue;
            }
            any = true;
            let bits = (0b11u64 << (2 * i)) | (0b1111u64 << (16 + 4 * i));
            view.addrs[i] = prev.addrs[i];
            view.dr7 = (view.dr7 & !bits) | (prev.dr7 & bits);
        }
        if any {
            view.dr7 = (view.dr7 & !DR7_KEPT) | (prev.dr7 & DR7_KEPT);
        }
        view
    }

    /// The values to load while the unikernel runs: the debugger's slots
    /// merged over the unikernel's own (`program`, saved when the stub was
    /// entered).
    ///
    /// Policy: a slot the debugger uses is the debugger's (its address and
    /// its DR7 fields win); every other slot keeps the unikernel's address
    /// and enable, RW and LEN bits, as do DR7's LE, GE and RTM bits. DR7.GD
    /// is never set here: general detect would make the stub's own debug
    /// register accesses trap, so the caller sets it back last, if the
    /// unikernel had it. The debugger's slots go into registers the
    /// unikernel does not use when there are any ([`DebugRegs::add_avoiding`]).
    /// The stub owns #DB: a hit of the unikernel's own slot stops as a plain
    /// SIGTRAP.
    pub fn merge(&self, program: &SavedDebugRegs) -> ([u64; 4], u64) {
        let (mut addrs, mut dr7) = self.encode();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.is_some() {
                continue;
            }
            let enable = 0b11u64 << (2 * i);
            let fields = 0b1111u64 << (16 + 4 * i);
            if program.dr7 & enable != 0 {
                addrs[i] = program.addrs[i];
                dr7 |= program.dr7 & (enable | fields);
            }
        }
        dr7 |= program.dr7 & DR7_KEPT;
        (addrs, dr7)
    }

    /// The values for DR0-DR3 and DR7.
    pub fn encode(&self) -> ([u64; 4], u64) {
        let mut addrs = [0; 4];
        let mut dr7 = 0u64;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(s) = slot else { continue };
            addrs[i] = s.addr;
            let rw = match s.kind {
                SlotKind::Exec => 0b00,
                SlotKind::Write => 0b01,
                SlotKind::ReadWrite => 0b11,
            };
            let len = match s.len {
                2 => 0b01,
                8 => 0b10,
                4 => 0b11,
                _ => 0b00,
            };
            // Gi (global enable), then RW and LEN fields.
            dr7 |= 1 << (2 * i + 1);
            dr7 |= (rw | len << 2) << (16 + 4 * i);
        }
        if dr7 != 0 {
            dr7 |= 1 << 9; // GE: exact data breakpoints
        }
        (addrs, dr7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(addr: u64, len: u64, kind: SlotKind) -> Slot {
        Slot { addr, len, kind }
    }

    #[test]
    fn encodes_each_kind_and_length() {
        let mut d = DebugRegs::new();
        assert_eq!(d.encode(), ([0; 4], 0));
        assert_eq!(d.add(slot(0x1000, 1, SlotKind::Exec)), Ok(0));
        assert_eq!(d.add(slot(0x2000, 8, SlotKind::Write)), Ok(1));
        assert_eq!(d.add(slot(0x3004, 4, SlotKind::ReadWrite)), Ok(2));
        assert_eq!(d.add(slot(0x4002, 2, SlotKind::Write)), Ok(3));
        let (addrs, dr7) = d.encode();
        assert_eq!(addrs, [0x1000, 0x2000, 0x3004, 0x4002]);
        // LEN/RW nibbles from slot 3 down: 0101, 1111, 1001, 0000.
        assert_eq!(dr7, 0x5F90_0000 | 0b1010_1010 | 1 << 9);
    }

    #[test]
    fn full_duplicate_and_unaligned() {
        let mut d = DebugRegs::new();
        for i in 0..4 {
            assert_eq!(d.add(slot(0x1000 + i, 1, SlotKind::Exec)), Ok(i as usize));
        }
        assert_eq!(d.add(slot(0x1000, 1, SlotKind::Exec)), Ok(0));
        assert_eq!(d.add(slot(0x9000, 1, SlotKind::Exec)), Err(SlotError::Full));
        assert!(d.remove(slot(0x1002, 1, SlotKind::Exec)));
        assert!(!d.remove(slot(0x1002, 1, SlotKind::Exec)));
        assert_eq!(d.add(slot(0x9000, 1, SlotKind::Exec)), Ok(2));
        let mut e = DebugRegs::new();
        assert_eq!(e.add(slot(0x1001, 4, SlotKind::Write)), Err(SlotError::Unsupported));
        assert_eq!(e.add(slot(0x1000, 3, SlotKind::Write)), Err(SlotError::Unsupported));
        assert_eq!(e.add(slot(0x1000, 2, SlotKind::Exec)), Err(SlotError::Unsupported));
    }

    #[test]
    fn dr6_names_the_slot() {
        let mut d = DebugRegs::new();
        d.add(slot(0x10, 1, SlotKind::Exec)).unwrap();
        d.add(slot(0x20, 8, SlotKind::Write)).unwrap();
        assert_eq!(d.fired(0b10), Some(slot(0x20, 8, SlotKind::Write)));
        assert_eq!(d.fired(0x4000), None);
        d.clear();
        assert_eq!(d.fired(0b1), None);
    }

    #[test]
    fn status_and_control_bits() {
        assert_eq!((DR6_BD, DR6_BS, DR7_GD), (0x2000, 0x4000, 0x2000));
    }

    #[test]
    fn b_bits_of_empty_slots_are_ignored() {
        // Once stopped at the first B-bit: slot 0 empty, so slot 1's hit
        // was reported as a plain SIGTRAP.
        let mut d = DebugRegs::new();
        assert_eq!(d.add(slot(0x10, 1, SlotKind::Exec)), Ok(0));
        assert_eq!(d.add(slot(0x20, 8, SlotKind::Write)), Ok(1));
        assert!(d.remove(slot(0x10, 1, SlotKind::Exec)));
        assert_eq!(d.fired(0b11), Some(slot(0x20, 8, SlotKind::Write)));
        assert_eq!(d.fired(0b1101), None);
    }

    #[test]
    fn merge_keeps_the_unikernels_free_slots() {
        let mut d = DebugRegs::new();
        assert_eq!(d.add(slot(0x1000, 1, SlotKind::Exec)), Ok(0));
        // The unikernel uses slots 0 (clashing) and 2 (write, 4 bytes, L2),
        // with LE and GD.
        let program = SavedDebugRegs {
            addrs: [0xaaaa, 0xbbbb, 0x3000, 0xdddd],
            dr7: 0b11 | (0b1101 << 16) | (0b01 << 4) | (0b1101 << 24) | (1 << 8) | DR7_GD,
        };
        let (addrs, dr7) = d.merge(&program);
        assert_eq!(addrs, [0x1000, 0, 0x3000, 0]);
        // Slot 0: the debugger's (G0, exec); slot 2: the unikernel's; LE and
        // GE kept; GD left to the caller.
        assert_eq!(dr7, 0b10 | (0b01 << 4) | (0b1101 << 24) | (1 << 8) | (1 << 9));
        // No debugger slots: the unikernel's registers as they were, less GD.
        let (addrs, dr7) = DebugRegs::new().merge(&program);
        assert_eq!(addrs, [0xaaaa, 0, 0x3000, 0]);
        assert_eq!(dr7, program.dr7 & !DR7_GD);
        assert_eq!(DebugRegs::new().merge(&SavedDebugRegs::default()), ([0; 4], 0));
    }

    #[test]
    fn the_debugger_takes_the_unikernels_registers_last() {
        let program = SavedDebugRegs { addrs: [0x1000, 0, 0x3000, 0], dr7: 0b01 | 0b10 << 4 };
        assert_eq!(program.enabled(), 0b0101);
        let mut d = DebugRegs::new();
        let busy = program.enabled();
        assert_eq!(d.add_avoiding(slot(0x10, 1, SlotKind::Exec), busy), Ok(1));
        assert_eq!(d.add_avoiding(slot(0x20, 1, SlotKind::Exec), busy), Ok(3));
        assert_eq!(d.add_avoiding(slot(0x30, 1, SlotKind::Exec), busy), Ok(0));
        assert_eq!(d.add_avoiding(slot(0x10, 1, SlotKind::Exec), busy), Ok(1));
        let (addrs, _) = d.merge(&program);
        assert_eq!(addrs, [0x30, 0x10, 0x3000, 0x20]);
    }

    #[test]
    fn the_debuggers_loaded_slots_are_not_saved_as_the_unikernels() {
        // Once the debugger's watchpoint, read back on entry, was kept as
        // the unikernel's own and stayed armed after the debugger left.
        let mut d = DebugRegs::new();
        assert_eq!(d.add(slot(0x2000, 8, SlotKind::Write)), Ok(0));
        let prev = SavedDebugRegs { addrs: [0, 0x3000, 0, 0], dr7: (0b01 << 2) | (0b0001 << 20) };
        let (addrs, dr7) = d.merge(&prev);
        // Running, the unikernel moves its slot 1 and arms slot 3.
        let mut live = SavedDebugRegs { addrs, dr7 };
        live.addrs[1] = 0x3100;
        live.addrs[3] = 0x5000;
        live.dr7 |= (0b01 << 6) | (0b0001 << 28);
        let view = d.program_view(&live, &prev);
        assert_eq!(view.addrs, [0, 0x3100, 0, 0x5000]);
        assert_eq!(view.dr7, (0b01 << 2) | (0b0001 << 20) | (0b01 << 6) | (0b0001 << 28));
        // The debugger leaves: only the unikernel's slots are loaded.
        d.clear();
        assert_eq!(d.merge(&view), (view.addrs, view.dr7));
        // Without debugger slots the live registers are the unikernel's.
        assert_eq!(d.program_view(&live, &prev), live);
    }
}
