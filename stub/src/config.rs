//! `ukdb.*` options on the kernel command line. Pure parsing, host-tested.
//!
//! | option | meaning |
//! |--------|---------|
//! | `ukdb.wait` | stop in [`crate::wait_for_debugger`] until a debugger attaches and continues (like `kgdbwait`) |
//! | `ukdb.trap=int3` | software breakpoints are `int3` (`0xCC`, #BP); the default |
//! | `ukdb.trap=ud` | software breakpoints are the one-byte invalid opcode `0x06` (#UD in 64-bit mode), for hypervisors that cannot deliver #BP to the guest |
//! | `ukdb.off` | the stub stays out of the way: no traps, no polling, console raw |

/// The instruction the stub plants for a software breakpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapInsn {
    /// `int3` (0xCC): raises #BP, after which `rip` points past the byte.
    Int3,
    /// `0x06` (`push es`, invalid in 64-bit mode): raises #UD with `rip` on the
    /// byte. Told apart from a genuine #UD by the breakpoint table.
    Ud,
}

impl TrapInsn {
    /// The byte written over the first byte of the instruction.
    pub const fn opcode(self) -> u8 {
        match self {
            TrapInsn::Int3 => 0xCC,
            TrapInsn::Ud => 0x06,
        }
    }

    /// The exception vector the trap raises.
    pub const fn vector(self) -> u64 {
        match self {
            TrapInsn::Int3 => 3,
            TrapInsn::Ud => 6,
        }
    }
}

/// The stub's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Wait for a debugger before the app starts.
    pub wait: bool,
    /// The software breakpoint instruction.
    pub trap: TrapInsn,
    /// The stub is disabled at run time.
    pub off: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { wait: false, trap: TrapInsn::Int3, off: false }
    }
}

/// An option the parser did not take: reported on the console, then ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOption<'a>(pub &'a str);

impl Config {
    /// Reads every `ukdb.*` word of `cmdline`; other words are the
    /// unikernel's. Returns the first `ukdb.*` word it did not understand.
    pub fn parse(cmdline: &str) -> (Config, Option<BadOption<'_>>) {
        let mut config = Config::default();
        let mut bad = None;
        for word in cmdline.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("ukdb.") else {
                continue;
            };
            match option {
                "wait" | "wait=1" | "wait=on" => config.wait = true,
                "wait=0" | "wait=off" => config.wait = false,
                "trap=int3" => config.trap = TrapInsn::Int3,
                "trap=ud" => config.trap = TrapInsn::Ud,
                "off" => config.off = true,
                _ => {
                    if bad.is_none() {
                        bad = Some(BadOption(word));
                    }
                }
            }
        }
        (config, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_options() {
        assert_eq!(Config::parse(""), (Config::default(), None));
        assert_eq!(Config::parse("console=ttyS0 ukdemo.rate=5"), (Config::default(), None));
    }

    #[test]
    fn reads_every_option() {
        let (c, bad) = Config::parse("a ukdb.wait ukdb.trap=ud b");
        assert_eq!(bad, None);
        assert_eq!(c, Config { wait: true, trap: TrapInsn::Ud, off: false });
        let (c, _) = Config::parse("ukdb.trap=ud ukdb.trap=int3 ukdb.wait=off ukdb.off");
        assert_eq!(c, Config { wait: false, trap: TrapInsn::Int3, off: true });
    }

    #[test]
    fn reports_the_first_unknown_option() {
        let (c, bad) = Config::parse("ukdb.trap=hlt ukdb.wiat ukdb.wait");
        assert_eq!(bad, Some(BadOption("ukdb.trap=hlt")));
        assert!(c.wait);
        assert_eq!(c.trap, TrapInsn::Int3);
    }

    #[test]
    fn trap_bytes() {
        assert_eq!(TrapInsn::Int3.opcode(), 0xCC);
        assert_eq!(TrapInsn::Ud.opcode(), 0x06);
        assert_eq!((TrapInsn::Int3.vector(), TrapInsn::Ud.vector()), (3, 6));
    }
}
