//! `monitor` commands: `why` (the last stop reason, with the panic message),
//! `breakpoints` (how many are set), `stats`, `unsafe-writes` (lifts the
//! write guard, see `protect`), `help`. `monitor auth` is answered by
//! the session before gdbstub (see `crate::auth`).

use super::{Reason, UkTarget};
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};

impl MonitorCmd for UkTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        match cmd {
            b"why" => {
                let _ = self.write_why(&mut out);
                out.write_raw(b"\n");
            }
            b"breakpoints" => outputln!(out, "{} software breakpoint(s) set", self.bps.len()),
            b"stats" => {
                let stats = crate::imp::session::stats();
                outputln!(
                    out,
                    "stub stack: {} of {} bytes used",
                    stats.stack_used,
                    crate::imp::stack::STUB_STACK_BYTES
                );
                outputln!(out, "traps passed over while the stub was busy: {}", stats.skipped);
                outputln!(out, "console bytes dropped: {}", stats.console_dropped);
            }
            b"unsafe-writes" => self.write_unsafe_writes(&mut out),
            b"unsafe-writes off" => {
                self.unsafe_writes = false;
                self.write_unsafe_writes(&mut out);
            }
            b"unsafe-writes on" => {
                self.unsafe_writes = true;
                self.write_unsafe_writes(&mut out);
            }
            b"" | b"help" => {
                outputln!(out, "ukdb monitor commands:");
                outputln!(out, "  why          why the unikernel stopped (with the panic message)");
                outputln!(out, "  breakpoints  how many software breakpoints are set");
                outputln!(
                    out,
                    "  stats        stub stack use, traps passed over, console bytes dropped"
                );
                outputln!(out, "  auth         a challenge; 'auth ro|full RESPONSE' answers it");
                outputln!(
                    out,
                    "  unsafe-writes [on|off]  allow writes to the stub, the IDT and the page tables (this session)"
                );
            }
            _ => outputln!(out, "unknown command; try 'monitor help'"),
        }
        Ok(())
    }
}

impl UkTarget {
    /// The answer to `monitor unsafe-writes`.
    fn write_unsafe_writes(&self, out: &mut ConsoleOutput<'_>) {
        if self.unsafe_writes {
            outputln!(
                out,
                "unsafe-writes on: writes to the stub, the IDT and the page tables are allowed until the session ends"
            );
        } else {
            outputln!(
                out,
                "unsafe-writes off: writes to the stub, the IDT and the page tables are refused"
            );
        }
    }

    /// Why the unikernel is stopped, in a line without its newline: the
    /// answer to `monitor why`, and the reason a core records.
    pub fn write_why(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        match self.reason {
            Reason::None => out.write_str("running"),
            Reason::Wait => out.write_str("waiting for a debugger at boot (ukdb.wait)"),
            Reason::Interrupt => out.write_str("interrupted by the debugger"),
            Reason::Breakpoint => out.write_str("software breakpoint"),
            Reason::Hardware => out.write_str("hardware breakpoint or watchpoint"),
            Reason::Step => out.write_str("single step"),
            Reason::Trap => out.write_str("compiled-in breakpoint"),
            Reason::GeneralDetect => out.write_str(
                "debug register access with DR7.GD set (general detect; GD is now clear)",
            ),
            Reason::Exception(vector, error, cr2) => {
                let name = crate::vectors::name(vector);
                write!(out, "{} (vector {}, error {:#x})", name, vector, error)?;
                if vector == 14 {
                    write!(out, " at address {:#x}", cr2)?;
                }
                Ok(())
            }
            Reason::Panic => {
                out.write_str("panic: ")?;
                let text = self.panic_text();
                match core::str::from_utf8(text) {
                    Ok(text) => out.write_str(text),
                    Err(e) => out.write_str(
                        core::str::from_utf8(text.get(..e.valid_up_to()).unwrap_or_default())
                            .unwrap_or_default(),
                    ),
                }
            }
        }
    }
}
