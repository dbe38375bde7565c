//! The software breakpoint table: where a trap byte is planted and what it
//! replaced. Pure logic, host-tested; the stub does the memory writes.

/// How many software breakpoints can be planted at once.
pub const MAX_SW_BREAKPOINTS: usize = 64;

/// Planted breakpoints.
#[derive(Debug)]
pub struct SwBreakpoints {
    slots: [Option<(u64, u8)>; MAX_SW_BREAKPOINTS],
}

impl Default for SwBreakpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl SwBreakpoints {
    /// Empty.
    pub const fn new() -> Self {
        SwBreakpoints {
            slots: [None; MAX_SW_BREAKPOINTS],
        }
    }

    /// Whether a breakpoint is planted at `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.original(addr).is_some()
    }

    /// The byte the breakpoint at `addr` replaced.
    pub fn original(&self, addr: u64) -> Option<u8> {
        self.slots
            .iter()
            .flatten()
            .find(|(a, _)| *a == addr)
            .map(|&(_, b)| b)
    }

    /// Records a breakpoint; `false` when the table is full.
    pub fn insert(&mut self, addr: u64, original: u8) -> bool {
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some((addr, original));
                true
            }
            None => false,
        }
    }

    /// Forgets the breakpoint at `addr`, returning the byte to put back.
    pub fn remove(&mut self, addr: u64) -> Option<u8> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| matches!(s, Some((a, _)) if *a == addr))?;
        slot.take().map(|(_, b)| b)
    }

    /// Takes any one breakpoint out of the table (to remove them all).
    pub fn pop(&mut self) -> Option<(u64, u8)> {
        self.slots.iter_mut().find_map(|s| s.take())
    }

    /// How many are planted.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Puts the original bytes into `data`, read from `start`, so that a
    /// debugger never sees its own trap bytes.
    pub fn hide(&self, start: u64, data: &mut [u8]) {
        for &(addr, original) in self.slots.iter().flatten() {
            if let Some(i) = addr.checked_sub(start) {
                if let Some(b) = data.get_mut(i as usize) {
                    *b = original;
                }
            }
        }
    }

    /// A debugger writes `data` at `start`: bytes under a planted breakpoint
    /// become its new original byte, and the trap byte stays in memory.
    /// Returns the data with those bytes replaced by `trap`.
    pub fn absorb_write(&mut self, start: u64, data: &mut [u8], trap: u8) {
        for (addr, original) in self.slots.iter_mut().flatten() {
            if let Some(i) = addr.checked_sub(start) {
                if let Some(b) = data.get_mut(i as usize) {
                    *original = *b;
                    *b = trap;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_capacity() {
        let mut t = SwBreakpoints::new();
        assert!(t.insert(0x100, 0x55));
        assert!(t.contains(0x100));
        assert_eq!(t.original(0x100), Some(0x55));
        assert_eq!(t.remove(0x100), Some(0x55));
        assert_eq!(t.remove(0x100), None);
        for i in 0..MAX_SW_BREAKPOINTS as u64 {
            assert!(t.insert(i, i as u8));
        }
        assert!(!t.insert(0x999, 0));
        assert_eq!(t.len(), MAX_SW_BREAKPOINTS);
        let mut n = 0;
        while t.pop().is_some() {
            n += 1;
        }
        assert_eq!((n, t.len()), (MAX_SW_BREAKPOINTS, 0));
    }

    #[test]
    fn reads_hide_trap_bytes() {
        let mut t = SwBreakpoints::new();
        t.insert(0x1002, 0x48);
        t.insert(0x0fff, 0x90);
        t.insert(0x1010, 0x90);
        let mut data = [0xCC, 0xCC, 0xCC, 0xCC];
        t.hide(0x1000, &mut data);
        assert_eq!(data, [0xCC, 0xCC, 0x48, 0xCC]);
        t.hide(u64::MAX, &mut data[..1]);
    }

    #[test]
    fn writes_under_a_breakpoint_update_the_original() {
        let mut t = SwBreakpoints::new();
        t.insert(0x2001, 0x55);
        let mut data = [1, 2, 3];
        t.absorb_write(0x2000, &mut data, 0xCC);
        assert_eq!(data, [1, 0xCC, 3]);
        assert_eq!(t.original(0x2001), Some(2));
    }
}
