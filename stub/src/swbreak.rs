//! The software breakpoint table. Breakpoints are planted only while the
//! unikernel runs: the stub puts the original bytes back whenever it is
//! entered and plants the trap bytes again when it resumes (as kgdb does).
//! So the stub's own code (and the `memcpy` it shares with the unikernel)
//! never runs over a planted breakpoint, and a debugger reading memory
//! while stopped sees the original bytes. Pure logic, host-tested; the
//! stub does the memory accesses.

/// How many software breakpoints can be set at once.
pub const MAX_SW_BREAKPOINTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    addr: u64,
    /// The byte under the trap byte, while planted.
    saved: Option<u8>,
}

/// Set breakpoints, planted or not.
#[derive(Debug)]
pub struct SwBreakpoints {
    slots: [Option<Slot>; MAX_SW_BREAKPOINTS],
}

impl Default for SwBreakpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl SwBreakpoints {
    /// Empty.
    pub const fn new() -> Self {
        SwBreakpoints { slots: [None; MAX_SW_BREAKPOINTS] }
    }

    /// Whether a breakpoint is set at `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.slots.iter().flatten().any(|s| s.addr == addr)
    }

    /// Sets a breakpoint (not planted yet); `false` when the table is full.
    /// Setting one twice is one breakpoint.
    pub fn insert(&mut self, addr: u64) -> bool {
        if self.contains(addr) {
            return true;
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(Slot { addr, saved: None });
                true
            }
            None => false,
        }
    }

    /// Clears the breakpoint at `addr`; `false` when none was set. Call
    /// only while nothing is planted.
    pub fn remove(&mut self, addr: u64) -> bool {
        match self.slots.iter_mut().find(|s| s.is_some_and(|s| s.addr == addr)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// Clears every breakpoint. Call only while nothing is planted.
    pub fn clear(&mut self) {
        self.slots = [None; MAX_SW_BREAKPOINTS];
    }

    /// How many are set.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Plants every breakpoint: `plant(addr)` writes the trap byte and
    /// returns the byte it replaced, or `None` when it could not (the page
    /// went away); such a breakpoint stays set but unplanted.
    pub fn plant_all(&mut self, mut plant: impl FnMut(u64) -> Option<u8>) {
        for slot in self.slots.iter_mut().flatten() {
            if slot.saved.is_none() {
                slot.saved = plant(slot.addr);
            }
        }
    }

    /// The planted breakpoints: address and the byte under the trap byte.
    #[cfg_attr(not(feature = "enabled"), allow(dead_code))] // only the stub asks
    pub fn planted(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.slots.iter().flatten().filter_map(|s| Some((s.addr, s.saved?)))
    }

    /// Puts every saved byte back with `restore(addr, byte)`.
    pub fn unplant_all(&mut self, mut restore: impl FnMut(u64, u8)) {
        for slot in self.slots.iter_mut().flatten() {
            if let Some(byte) = slot.saved.take() {
                restore(slot.addr, byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn insert_remove_and_capacity() {
        let mut t = SwBreakpoints::new();
        assert!(t.insert(0x100));
        assert!(t.insert(0x100));
        assert_eq!(t.len(), 1);
        assert!(t.contains(0x100));
        assert!(t.remove(0x100));
        assert!(!t.remove(0x100));
        for i in 0..MAX_SW_BREAKPOINTS as u64 {
            assert!(t.insert(i));
        }
        assert!(!t.insert(0x999));
        assert_eq!(t.len(), MAX_SW_BREAKPOINTS);
        t.clear();
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn planting_saves_and_restores_the_original_bytes() {
        let mut mem: HashMap<u64, u8> = HashMap::from([(0x10, 0x55), (0x20, 0x48)]);
        let mut t = SwBreakpoints::new();
        t.insert(0x10);
        t.insert(0x20);
        t.insert(0x30); // unmapped: stays unplanted
        let plant = |mem: &mut HashMap<u64, u8>, addr| {
            let byte = mem.get_mut(&addr)?;
            Some(core::mem::replace(byte, 0xCC))
        };
        t.plant_all(|a| plant(&mut mem, a));
        assert_eq!((mem[&0x10], mem[&0x20]), (0xCC, 0xCC));
        // Planting twice keeps the first saved bytes.
        t.plant_all(|a| plant(&mut mem, a));
        t.unplant_all(|a, b| {
            mem.insert(a, b);
        });
        assert_eq!(mem, HashMap::from([(0x10, 0x55), (0x20, 0x48)]));
        let mut restored = 0;
        t.unplant_all(|_, _| restored += 1);
        assert_eq!(restored, 0);
    }
}
