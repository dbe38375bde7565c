//! The stub's settings: from code ([`Config::new`] and its builder
//! methods, for kernels without a command line) and from `ukdb.*` options on
//! the kernel command line. Pure logic, host-tested.
//!
//! | option | meaning |
//! |--------|---------|
//! | `ukdb.wait` | stop in [`crate::wait_for_debugger`] until a debugger attaches and continues (like `kgdbwait`) |
//! | `ukdb.trap=int3` | software breakpoints are `int3` (`0xCC`, #BP); the default |
//! | `ukdb.trap=ud` | software breakpoints are the one-byte invalid opcode `0x06` (#UD in 64-bit mode), for hypervisors that cannot deliver #BP to the guest |
//! | `ukdb.off` | the stub stays out of the way: no traps, no polling, console raw |
//! | `ukdb.phys_offset=N` | physical memory is mapped at virtual `N` (`0x` hex or decimal); the default 0 means identity-mapped page tables |

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
///
/// ```
/// # use ukdb_stub::{Config, TrapInsn};
/// // A kernel that maps physical memory at an offset, without a command line:
/// let config = Config::new().wait(true).phys_offset(0xffff_8000_0000_0000);
/// // Or the command line's options over the code's:
/// let (config, bad) = config.trap(TrapInsn::Ud).with_cmdline("ukdb.wait=off");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Wait for a debugger before the app starts.
    pub wait: bool,
    /// The software breakpoint instruction.
    pub trap: TrapInsn,
    /// The stub is disabled at run time.
    pub off: bool,
    /// Where the kernel maps physical memory: the stub reads a page table
    /// at physical address `pa` at virtual `pa + phys_offset`. 0 (the
    /// default): the page tables are identity-mapped.
    pub phys_offset: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// An option the parser did not take: reported on the console, then ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOption<'a>(pub &'a str);

impl Config {
    /// The defaults: no wait, `int3` breakpoints, identity-mapped page
    /// tables.
    pub const fn new() -> Config {
        Config { wait: false, trap: TrapInsn::Int3, off: false, phys_offset: 0 }
    }

    /// Wait for a debugger in `wait_for_debugger` (`ukdb.wait`).
    pub const fn wait(mut self, on: bool) -> Config {
        self.wait = on;
        self
    }

    /// The software breakpoint instruction (`ukdb.trap=`).
    pub const fn trap(mut self, trap: TrapInsn) -> Config {
        self.trap = trap;
        self
    }

    /// Where physical memory is mapped (see [`Config::phys_offset`](Config#structfield.phys_offset)).
    pub const fn phys_offset(mut self, offset: u64) -> Config {
        self.phys_offset = offset;
        self
    }

    /// The defaults with every `ukdb.*` word of `cmdline` applied; other
    /// words are the unikernel's. Returns the first `ukdb.*` word it did not
    /// understand.
    pub fn from_cmdline(cmdline: &str) -> (Config, Option<BadOption<'_>>) {
        Config::new().with_cmdline(cmdline)
    }

    /// This configuration with every `ukdb.*` word of `cmdline` applied
    /// over it (the command line wins). Returns the first `ukdb.*` word it
    /// did not understand.
    pub fn with_cmdline(self, cmdline: &str) -> (Config, Option<BadOption<'_>>) {
        let mut config = self;
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
                _ if option.starts_with("phys_offset=") => {
                    match option.strip_prefix("phys_offset=").and_then(parse_u64) {
                        Some(offset) => config.phys_offset = offset,
                        None => {
                            if bad.is_none() {
                                bad = Some(BadOption(word));
                            }
                        }
                    }
                }
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

/// A number, `0x` hex or decimal.
fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_options() {
        assert_eq!(Config::from_cmdline(""), (Config::default(), None));
        assert_eq!(Config::from_cmdline("console=ttyS0 ukdemo.rate=5"), (Config::default(), None));
    }

    #[test]
    fn builder_and_command_line() {
        let c = Config::new().wait(true).trap(TrapInsn::Ud).phys_offset(0xffff_8000_0000_0000);
        assert_eq!(
            c,
            Config {
                wait: true,
                trap: TrapInsn::Ud,
                off: false,
                phys_offset: 0xffff_8000_0000_0000
            }
        );
        // The command line wins; what it does not name stays.
        let (d, bad) = c.with_cmdline("ukdb.wait=off ukdb.bogus");
        assert_eq!(d, Config { wait: false, ..c });
        assert_eq!(bad, Some(BadOption("ukdb.bogus")));
        assert_eq!(Config::new(), Config::default());
    }

    #[test]
    fn reads_every_option() {
        let (c, bad) = Config::from_cmdline("a ukdb.wait ukdb.trap=ud b");
        assert_eq!(bad, None);
        assert_eq!(c, Config::new().wait(true).trap(TrapInsn::Ud));
        let (c, _) = Config::from_cmdline("ukdb.trap=ud ukdb.trap=int3 ukdb.wait=off ukdb.off");
        assert_eq!(c, Config { off: true, ..Config::new() });
    }

    #[test]
    fn reports_the_first_unknown_option() {
        let (c, bad) = Config::from_cmdline("ukdb.trap=hlt ukdb.wiat ukdb.wait");
        assert_eq!(bad, Some(BadOption("ukdb.trap=hlt")));
        assert!(c.wait);
        assert_eq!(c.trap, TrapInsn::Int3);
    }

    #[test]
    fn phys_offset_from_the_command_line() {
        let (c, bad) = Config::from_cmdline("ukdb.phys_offset=0xffff800000000000");
        assert_eq!((c.phys_offset, bad), (0xffff_8000_0000_0000, None));
        let (c, bad) = Config::from_cmdline("ukdb.phys_offset=4096");
        assert_eq!((c.phys_offset, bad), (4096, None));
        let (c, bad) = Config::new().phys_offset(8).with_cmdline("ukdb.phys_offset=0xzz");
        assert_eq!((c.phys_offset, bad), (8, Some(BadOption("ukdb.phys_offset=0xzz"))));
        let (_, bad) = Config::from_cmdline("ukdb.phys_offset=");
        assert_eq!(bad, Some(BadOption("ukdb.phys_offset=")));
    }

    #[test]
    fn trap_bytes() {
        assert_eq!(TrapInsn::Int3.opcode(), 0xCC);
        assert_eq!(TrapInsn::Ud.opcode(), 0x06);
        assert_eq!((TrapInsn::Int3.vector(), TrapInsn::Ud.vector()), (3, 6));
    }
}
