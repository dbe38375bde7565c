//! Single-stepping without changing the program's state.
//!
//! A step sets RFLAGS.TF and clears RFLAGS.IF (so no interrupt handler runs
//! inside the step), executes one instruction and traps (#DB, DR6.BS). Most
//! instructions neither read nor write IF and TF, so putting the program's
//! own IF and TF back afterwards is enough. A few do, and see the stub's
//! flags instead of the program's; as kprobes does, the stub decodes the
//! instruction before arming TF and fixes up after it:
//!
//! | instruction | without a fix-up | fix-up |
//! |-------------|------------------|--------|
//! | `pushf` (`9C`, with `66`/REX prefixes) | pushes TF set and IF clear | the pushed image gets the program's TF and IF |
//! | `popf` (`9D`) | the popped IF is overwritten with the old one | the flags are what it popped |
//! | `iret` (`CF`) | likewise | the flags are what it popped |
//! | `sti` (`FB`) | IF comes back as before | IF set |
//! | `cli` (`FA`) | IF comes back as before | IF clear |
//!
//! `sti` is not stepped at all but emulated (IF set, `rip` past it, a
//! step-done stop): `sti` with IF clear opens an interrupt shadow, which
//! also holds back the single-step trap on QEMU, so a hardware step would
//! run two instructions. `hlt` (`F4`) is emulated too, as if an interrupt
//! had woken it at once (`rip` past it): stepped with IF masked it would
//! wait for an interrupt that cannot come, and the unikernel would hang in
//! its idle loop.
//!
//! Pure logic, host-tested; the target reads the instruction and writes the
//! pushed image.

use crate::imp::arch::{RFLAGS_IF, RFLAGS_TF};

/// The flags a step changes and the program must not see.
const STEP_FLAGS: u64 = RFLAGS_TF | RFLAGS_IF;

/// The instructions a step treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepInsn {
    /// `pushf`: pushes `width` bytes (2 with an operand-size prefix, else 8).
    Pushf {
        /// Bytes pushed.
        width: u8,
    },
    /// `popf`.
    Popf,
    /// `iret`, `iretd`, `iretq`.
    Iret,
    /// `sti`.
    Sti,
    /// `cli`.
    Cli,
    /// `hlt`.
    Hlt,
    /// Anything else (also an instruction the stub could not read).
    Other,
}

/// Decodes the instruction that starts with `bytes` (up to 15 read from
/// `rip`; fewer when the page ends). Legacy prefixes and a REX prefix are
/// skipped; the operand-size prefix `66` makes `pushf` push 2 bytes (REX.W
/// overrides it back to 8).
pub fn decode(bytes: &[u8]) -> StepInsn {
    decode_len(bytes).0
}

/// [`decode`], with the instruction's length for the special ones (0 for
/// [`StepInsn::Other`]).
pub fn decode_len(bytes: &[u8]) -> (StepInsn, usize) {
    let mut opsize16 = false;
    let mut rex_w = false;
    for (i, &b) in bytes.iter().enumerate() {
        if i >= 15 {
            break;
        }
        match b {
            0x66 => {
                opsize16 = true;
                rex_w = false;
            }
            // lock, rep/repne, segment overrides, address size.
            0xF0 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 | 0x67 => rex_w = false,
            // REX: only the last prefix before the opcode counts.
            0x40..=0x4F => rex_w = b & 0x08 != 0,
            0x9C => {
                let width = if opsize16 && !rex_w { 2 } else { 8 };
                return (StepInsn::Pushf { width }, i + 1);
            }
            0x9D => return (StepInsn::Popf, i + 1),
            0xCF => return (StepInsn::Iret, i + 1),
            0xFB => return (StepInsn::Sti, i + 1),
            0xFA => return (StepInsn::Cli, i + 1),
            0xF4 => return (StepInsn::Hlt, i + 1),
            _ => return (StepInsn::Other, 0),
        }
    }
    (StepInsn::Other, 0)
}

/// A step under way: what it executes and the program's flags before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingStep {
    /// The decoded instruction.
    pub insn: StepInsn,
    /// RFLAGS as the program had it before the step.
    pub rflags: u64,
}

impl PendingStep {
    /// The RFLAGS to run the step with: TF set, IF clear.
    pub fn armed_rflags(&self) -> u64 {
        (self.rflags | RFLAGS_TF) & !RFLAGS_IF
    }

    /// The instruction did not complete (an exception stopped it, or the
    /// stub was entered some other way): the program's flags as they were.
    pub fn abandoned(&self, now: u64) -> u64 {
        (now & !STEP_FLAGS) | (self.rflags & STEP_FLAGS)
    }

    /// The instruction completed and `now` is RFLAGS after it: the flags the
    /// program would have had without the debugger.
    pub fn completed(&self, now: u64) -> u64 {
        let program = |flags: u64| (now & !flags) | (self.rflags & flags);
        match self.insn {
            // They load the flags from memory, which holds the program's.
            StepInsn::Popf | StepInsn::Iret => now,
            StepInsn::Sti => program(RFLAGS_TF) | RFLAGS_IF,
            StepInsn::Cli => program(RFLAGS_TF) & !RFLAGS_IF,
            StepInsn::Pushf { .. } | StepInsn::Hlt | StepInsn::Other => program(STEP_FLAGS),
        }
    }

    /// For a completed `pushf`: the value to write back over the pushed
    /// image `pushed` (whose TF and IF were the stub's), and its width.
    pub fn pushed_fixup(&self, pushed: u64) -> Option<(u64, u8)> {
        match self.insn {
            StepInsn::Pushf { width } => {
                Some(((pushed & !STEP_FLAGS) | (self.rflags & STEP_FLAGS), width))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_prefixes() {
        assert_eq!(decode(&[0x9C]), StepInsn::Pushf { width: 8 });
        assert_eq!(decode(&[0x48, 0x9C]), StepInsn::Pushf { width: 8 });
        assert_eq!(decode(&[0x66, 0x9C]), StepInsn::Pushf { width: 2 });
        assert_eq!(decode(&[0x66, 0x48, 0x9C]), StepInsn::Pushf { width: 8 });
        assert_eq!(decode(&[0x48, 0x66, 0x9C]), StepInsn::Pushf { width: 2 });
        assert_eq!(decode(&[0x9D]), StepInsn::Popf);
        assert_eq!(decode(&[0x66, 0x9D]), StepInsn::Popf);
        assert_eq!(decode(&[0x48, 0xCF]), StepInsn::Iret);
        assert_eq!(decode(&[0xCF]), StepInsn::Iret);
        assert_eq!(decode(&[0xFB, 0x90]), StepInsn::Sti);
        assert_eq!(decode_len(&[0xF4]), (StepInsn::Hlt, 1));
        assert_eq!(decode_len(&[0x3E, 0xF4]), (StepInsn::Hlt, 2));
        assert_eq!(decode(&[0xFA]), StepInsn::Cli);
        assert_eq!(decode(&[0x2E, 0xFA]), StepInsn::Cli);
        assert_eq!(decode(&[0x0F, 0x9C, 0xC0]), StepInsn::Other); // setl al
        assert_eq!(decode(&[0x90]), StepInsn::Other);
        assert_eq!(decode(&[]), StepInsn::Other);
        assert_eq!(decode(&[0x66; 15]), StepInsn::Other);
        assert_eq!(decode(&[0x66; 20]), StepInsn::Other);
        assert_eq!(decode_len(&[0xFB]), (StepInsn::Sti, 1));
        assert_eq!(decode_len(&[0x2E, 0x40, 0xFB]), (StepInsn::Sti, 3));
        assert_eq!(decode_len(&[0x66, 0x9C]), (StepInsn::Pushf { width: 2 }, 2));
        assert_eq!(decode_len(&[0x90]), (StepInsn::Other, 0));
    }

    fn step(insn: StepInsn, rflags: u64) -> PendingStep {
        PendingStep { insn, rflags }
    }

    #[test]
    fn arming_masks_interrupts() {
        assert_eq!(step(StepInsn::Other, 0x246).armed_rflags(), 0x146);
        assert_eq!(step(StepInsn::Other, 0x46).armed_rflags(), 0x146);
    }

    #[test]
    fn flags_after_each_instruction() {
        // The CPU hands back TF set, IF as it left it.
        assert_eq!(step(StepInsn::Other, 0x246).completed(0x146 | 0x80), 0x2c6);
        assert_eq!(step(StepInsn::Pushf { width: 8 }, 0x246).completed(0x146), 0x246);
        assert_eq!(step(StepInsn::Sti, 0x46).completed(0x346), 0x246);
        assert_eq!(step(StepInsn::Cli, 0x246).completed(0x146), 0x46);
        // popf/iret load IF (and TF) from memory: kept as loaded.
        assert_eq!(step(StepInsn::Popf, 0x46).completed(0x246), 0x246);
        assert_eq!(step(StepInsn::Iret, 0x246).completed(0x46), 0x46);
        // Not completed: as before the step.
        assert_eq!(step(StepInsn::Sti, 0x46).abandoned(0x146), 0x46);
        assert_eq!(step(StepInsn::Popf, 0x246).abandoned(0x146), 0x246);
    }

    #[test]
    fn pushed_image_gets_the_programs_flags() {
        assert_eq!(step(StepInsn::Pushf { width: 8 }, 0x246).pushed_fixup(0x146), Some((0x246, 8)));
        assert_eq!(step(StepInsn::Pushf { width: 2 }, 0x46).pushed_fixup(0x146), Some((0x46, 2)));
        assert_eq!(step(StepInsn::Cli, 0x246).pushed_fixup(0x146), None);
    }
}
