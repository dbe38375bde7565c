//! The stub keeps the debugger's writes (`M`, `X`, software breakpoints)
//! out of its own code, data and stack, the IDT and the page tables (see
//! [`crate::guard`] for the check). `monitor unsafe-writes on` lifts it for
//! the rest of the session (full tier only).
//!
//! What is protected:
//! - the IDT, from SIDT at every check (a kernel may load another one);
//! - every page table reachable from CR3 now, by physical address;
//! - the stub's statics that the session registers at `init` (the session,
//!   its configuration, the panic message, the planted-breakpoint table),
//!   its stack, and the packet buffers given to `init`;
//! - when the kernel's linker script declares them, the stub's whole code,
//!   data and bss: `__ukdb_stub_text_start`/`_end`, `__ukdb_stub_data_start`/`_end`,
//!   `__ukdb_stub_bss_start`/`_end` (weak symbols: a kernel that does not
//!   define them gets 0, and only the ranges above). `examples/ukdemo/link.ld`
//!   gathers the input sections of `ukdb_stub`, `gdbstub` and
//!   `gdbstub_arch` there.
//!
//! Not covered: stub code inlined into the kernel's own functions (`poll`
//! in an idle loop), code the stub shares with the kernel (`core`,
//! `compiler_builtins`' `memcpy`, smoltcp), and the stub's code when the
//! linker script does not declare it.

use super::UkTarget;
use crate::guard::{self, Guard, Kind, Range, Refusal, MAX_RANGES};

/// The address of a linker symbol that may be undefined (then 0).
macro_rules! weak_addr {
    ($name:literal) => {{
        let addr: u64;
        // SAFETY: loads an address constant into a register; no memory is
        // touched. `.weak` makes an undefined symbol resolve to 0 instead of
        // failing the link.
        unsafe {
            core::arch::asm!(
                concat!(".weak ", $name),
                concat!("movabs {}, offset ", $name),
                out(reg) addr,
                options(nomem, nostack, preserves_flags, pure)
            )
        };
        addr
    }};
}

/// The ranges the kernel's linker script declares (start, end), 0 when
/// not.
fn declared() -> [(u64, u64, Kind); 3] {
    [
        (weak_addr!("__ukdb_stub_text_start"), weak_addr!("__ukdb_stub_text_end"), Kind::Code),
        (weak_addr!("__ukdb_stub_data_start"), weak_addr!("__ukdb_stub_data_end"), Kind::Data),
        (weak_addr!("__ukdb_stub_bss_start"), weak_addr!("__ukdb_stub_bss_end"), Kind::Data),
    ]
}

/// The IDT now: SIDT's base and limit.
fn idt() -> Option<Range> {
    let mut desc = [0u8; 10];
    // SAFETY: SIDT stores 10 bytes (limit, base) into `desc`, which is 10
    // bytes long and the stub's own.
    unsafe {
        core::arch::asm!("sidt [{}]", in(reg) desc.as_mut_ptr(), options(nostack, preserves_flags))
    };
    let [l0, l1, b @ ..] = desc;
    let limit = u16::from_le_bytes([l0, l1]);
    Range::new(u64::from_le_bytes(b), u64::from(limit) + 1)
}

/// The guard the stub starts with: its stack and what the linker script
/// declares.
pub fn initial() -> Guard {
    let mut guard = Guard::new();
    let (stack, len) = crate::imp::stack::span();
    guard.add(stack, len, Kind::Data);
    for (start, end, kind) in declared() {
        if start != 0 && end > start {
            guard.add(start, end - start, kind);
        }
    }
    guard
}

impl UkTarget {
    /// Protects the stub's data at `start..start+len` (see the module
    /// docs). A full table keeps what it has.
    pub fn protect(&mut self, start: u64, len: u64) {
        self.guard.add(start, len, Kind::Data);
    }

    /// Whether the debugger may write `len` bytes at `addr`: `Err` names
    /// what the write would touch (nothing is written then). Always `Ok`
    /// with `monitor unsafe-writes on`.
    pub fn guard_write(&self, addr: u64, len: usize) -> Result<(), Refusal> {
        if self.unsafe_writes {
            return Ok(());
        }
        // Empty or wrapping: the page walk refuses or ignores it.
        let Some(write) = u64::try_from(len).ok().and_then(|len| Range::new(addr, len)) else {
            return Ok(());
        };
        let mut ranges = [(Range { start: 0, end: 0 }, Kind::Data); MAX_RANGES + 1];
        let mut n = 0;
        for (slot, r) in ranges
            .iter_mut()
            .zip(self.guard.ranges().iter().copied().chain(idt().map(|r| (r, Kind::Idt))))
        {
            *slot = r;
            n += 1;
        }
        let mem = self.mem;
        let walk = mem.walk();
        guard::check(
            write,
            ranges.get(..n).unwrap_or_default(),
            |a| mem.lookup(a),
            &walk,
            |pa| crate::livemem::read_table(mem.phys_offset, pa),
        )
    }
}
