//! `monitor` commands: `why` (the last stop reason, with the panic message),
//! `breakpoints` (how many are set), `help`.

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
            b"why" => match self.reason {
                Reason::None => outputln!(out, "running"),
                Reason::Wait => outputln!(out, "waiting for a debugger at boot (ukdb.wait)"),
                Reason::Interrupt => outputln!(out, "interrupted by the debugger"),
                Reason::Breakpoint => outputln!(out, "software breakpoint"),
                Reason::Hardware => outputln!(out, "hardware breakpoint or watchpoint"),
                Reason::Step => outputln!(out, "single step"),
                Reason::Trap => outputln!(out, "compiled-in breakpoint"),
                Reason::GeneralDetect => outputln!(
                    out,
                    "debug register access with DR7.GD set (general detect; GD is now clear)"
                ),
                Reason::Exception(vector, error, cr2) => {
                    let name = crate::vectors::name(vector);
                    if vector == 14 {
                        outputln!(
                            out,
                            "{} (vector {}, error {:#x}) at address {:#x}",
                            name,
                            vector,
                            error,
                            cr2
                        );
                    } else {
                        outputln!(out, "{} (vector {}, error {:#x})", name, vector, error);
                    }
                }
                Reason::Panic => {
                    out.write_raw(b"panic: ");
                    out.write_raw(self.panic_text());
                    out.write_raw(b"\n");
                }
            },
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
            b"" | b"help" => {
                outputln!(out, "ukdb monitor commands:");
                outputln!(out, "  why          why the unikernel stopped (with the panic message)");
                outputln!(out, "  breakpoints  how many software breakpoints are set");
                outputln!(
                    out,
                    "  stats        stub stack use, traps passed over, console bytes dropped"
                );
            }
            _ => outputln!(out, "unknown command; try 'monitor help'"),
        }
        Ok(())
    }
}
