//! Registers (from the trap frame, the saved x87/SSE area and the live
//! segment state) and memory (checked against the page tables first).

use super::mem::{EACCES, EFAULT};
use super::regs::{RegIdUkdb, Regs};
use super::UkTarget;
use crate::imp::arch;
use gdbstub::arch::Registers;
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::base::singlethread::{SingleThreadBase, SingleThreadResumeOps};
use gdbstub::target::{TargetError, TargetResult};

/// "Invalid argument": a register value the stub cannot apply.
const EINVAL: u8 = 22;

/// Why registers could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegError {
    /// No stop frame (the target is not entered).
    NoFrame,
    /// A segment selector differs from the live one: the stub cannot load
    /// selectors (the same value is fine: gdb writes every register back).
    SegmentSelector,
    /// FS.base or GS.base is not canonical.
    NonCanonicalBase(u64),
    /// The register block is malformed (short, or a bad register number).
    Malformed,
}

impl<E> From<RegError> for TargetError<E> {
    fn from(e: RegError) -> Self {
        match e {
            RegError::NoFrame => TargetError::NonFatal,
            RegError::SegmentSelector | RegError::NonCanonicalBase(_) | RegError::Malformed => {
                TargetError::Errno(EINVAL)
            }
        }
    }
}

/// Offsets in the `fxsave64` image.
mod fx {
    pub const FCW: usize = 0;
    pub const FSW: usize = 2;
    pub const FTW: usize = 4;
    pub const FOP: usize = 6;
    pub const FIP: usize = 8;
    pub const FDP: usize = 16;
    pub const MXCSR: usize = 24;
    pub const ST: usize = 32;
    pub const XMM: usize = 160;
}

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl UkTarget {
    fn collect(&mut self) -> Result<Regs, RegError> {
        let fx = self.fx.0;
        let frame = self.frame_mut().ok_or(RegError::NoFrame)?;
        let mut r = Regs::default();
        let c = &mut r.core;
        c.regs = [
            frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp, frame.rsp,
            frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15,
        ];
        c.rip = frame.rip;
        c.eflags = frame.rflags as u32;
        let [ds, es, fs, gs] = arch::data_selectors();
        c.segments.cs = frame.cs as u32;
        c.segments.ss = frame.ss as u32;
        c.segments.ds = u32::from(ds);
        c.segments.es = u32::from(es);
        c.segments.fs = u32::from(fs);
        c.segments.gs = u32::from(gs);
        for (i, st) in c.st.iter_mut().enumerate() {
            st.copy_from_slice(&fx[fx::ST + 16 * i..fx::ST + 16 * i + 10]);
        }
        c.fpu.fctrl = le16(&fx, fx::FCW);
        c.fpu.fstat = le16(&fx, fx::FSW);
        // fxsave keeps one "valid" bit per register; gdb wants the 2-bit
        // tags: 00 valid, 11 empty.
        let abridged = fx[fx::FTW];
        c.fpu.ftag =
            (0..8).fold(
                0,
                |tag, i| {
                    if abridged & (1 << i) == 0 {
                        tag | 3 << (2 * i)
                    } else {
                        tag
                    }
                },
            );
        c.fpu.fop = le16(&fx, fx::FOP) & 0x7ff;
        c.fpu.fioff = le32(&fx, fx::FIP);
        c.fpu.fiseg = le32(&fx, fx::FIP + 4);
        c.fpu.fooff = le32(&fx, fx::FDP);
        c.fpu.foseg = le32(&fx, fx::FDP + 4);
        for (i, x) in c.xmm.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            b.copy_from_slice(&fx[fx::XMM + 16 * i..fx::XMM + 16 * i + 16]);
            *x = u128::from_le_bytes(b);
        }
        c.mxcsr = le32(&fx, fx::MXCSR);
        (r.fs_base, r.gs_base) = arch::segment_bases();
        Ok(r)
    }

    /// Applies registers. Segment selectors cannot be changed (a unikernel
    /// has one code and one data segment): a different value is an error,
    /// the same value is fine. Bases must be canonical. Nothing is applied
    /// unless all of it can be.
    fn apply(&mut self, r: &Regs) -> Result<(), RegError> {
        let c = &r.core;
        let live = self.collect()?;
        if c.segments != live.core.segments {
            return Err(RegError::SegmentSelector);
        }
        for base in [r.fs_base, r.gs_base] {
            if !crate::paging::is_canonical(base) {
                return Err(RegError::NonCanonicalBase(base));
            }
        }
        {
            let frame = self.frame_mut().ok_or(RegError::NoFrame)?;
            [
                frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp,
                frame.rsp, frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13,
                frame.r14, frame.r15,
            ] = c.regs;
            frame.rip = c.rip;
            // Keep the reserved bit 1 set, as the CPU requires.
            frame.rflags = (frame.rflags & !0xffff_ffff) | u64::from(c.eflags) | 2;
        }
        let fx = &mut self.fx.0;
        for (i, st) in c.st.iter().enumerate() {
            fx[fx::ST + 16 * i..fx::ST + 16 * i + 10].copy_from_slice(st);
        }
        fx[fx::FCW..fx::FCW + 2].copy_from_slice(&(c.fpu.fctrl as u16).to_le_bytes());
        fx[fx::FSW..fx::FSW + 2].copy_from_slice(&(c.fpu.fstat as u16).to_le_bytes());
        fx[fx::FTW] =
            (0..8).fold(0u8, |t, i| if (c.fpu.ftag >> (2 * i)) & 3 == 3 { t } else { t | 1 << i });
        fx[fx::FOP..fx::FOP + 2].copy_from_slice(&(c.fpu.fop as u16).to_le_bytes());
        fx[fx::FIP..fx::FIP + 4].copy_from_slice(&c.fpu.fioff.to_le_bytes());
        fx[fx::FIP + 4..fx::FIP + 8].copy_from_slice(&c.fpu.fiseg.to_le_bytes());
        fx[fx::FDP..fx::FDP + 4].copy_from_slice(&c.fpu.fooff.to_le_bytes());
        fx[fx::FDP + 4..fx::FDP + 8].copy_from_slice(&c.fpu.foseg.to_le_bytes());
        for (i, x) in c.xmm.iter().enumerate() {
            fx[fx::XMM + 16 * i..fx::XMM + 16 * i + 16].copy_from_slice(&x.to_le_bytes());
        }
        fx[fx::MXCSR..fx::MXCSR + 4].copy_from_slice(&c.mxcsr.to_le_bytes());
        arch::set_segment_bases(r.fs_base, r.gs_base)
            .map_err(|arch::NonCanonical(base)| RegError::NonCanonicalBase(base))
    }
}

impl SingleThreadBase for UkTarget {
    fn read_registers(&mut self, regs: &mut Regs) -> TargetResult<(), Self> {
        *regs = self.collect()?;
        Ok(())
    }

    fn write_registers(&mut self, regs: &Regs) -> TargetResult<(), Self> {
        Ok(self.apply(regs)?)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, (), Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        // Nothing is planted while stopped: memory reads as the program has it.
        let n = self.mem.read(start_addr, data);
        if n == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        // The whole range is checked before a byte is written.
        if self.guard_write(start_addr, data.len()).is_err() {
            return Err(TargetError::Errno(EACCES));
        }
        self.mem.write(start_addr, data).map_err(|e| TargetError::Errno(e.errno()))
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<()> for UkTarget {
    fn read_register(
        &mut self,
        _tid: (),
        reg_id: RegIdUkdb,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let all = self.collect()?.to_bytes();
        let bytes = all.get(reg_id.span()).ok_or(RegError::Malformed)?;
        let out = buf.get_mut(..bytes.len()).ok_or(RegError::Malformed)?;
        out.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_register(
        &mut self,
        _tid: (),
        reg_id: RegIdUkdb,
        val: &[u8],
    ) -> TargetResult<(), Self> {
        let mut regs = self.collect()?;
        let mut all = regs.to_bytes();
        let slot = all.get_mut(reg_id.span()).ok_or(RegError::Malformed)?;
        if val.len() != slot.len() {
            return Err(RegError::Malformed.into());
        }
        slot.copy_from_slice(val);
        regs.gdb_deserialize(&all).map_err(|()| RegError::Malformed)?;
        Ok(self.apply(&regs)?)
    }
}
