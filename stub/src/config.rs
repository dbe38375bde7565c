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
//! | `ukdb.net=dhcp` | network stub ([`crate::init_net`], [`crate::init_net_dedicated`]): the address from DHCPv4, asked for at init (about 5 s at most); the default when a key is set |
//! | `ukdb.net=IP/PREFIX[,gw=IP]` | network stub: a static address (`10.0.2.15/24,gw=10.0.2.2`); the gateway is needed only for debuggers outside the subnet |
//! | `ukdb.net=off` | no network stub (the unikernel runs without one); the default when no key is set ([`NetMode::Unset`]) |
//! | `ukdb.port=N` | the TCP port the network stub listens on (decimal, 1-65535); the default 1234 |
//! | `ukdb.crash=dump[,then=halt\|reboot\|wait]` | on a panic or a fatal exception with no debugger attached, stream a core over the stub's channel (`dumpwire`), then halt, reset the machine, or wait (the default: with the full stub a debugger can still attach; the dump-only build returns to the unikernel's own handling). Needs the `dump` or `enabled` feature |
//! | `ukdb.key=HEX` | the full tier's key (2-128 hex digits): sessions start locked and authenticate (see `auth.rs`); a key built in with [`Config::key`] wins, and a bad or ignored value is reported as `ukdb.key=<redacted>` |
//! | `ukdb.rokey=HEX` | the read-only tier's key (as `ukdb.key=`) |
//! | `ukdb.crash=off` | no crash dump (the default): a crash stops for a debugger as before |
//! | `ukdb.xenring=ivshmem` | the stub's channel is the Xen console ring on an ivshmem-plain device (the backend model, `ukdb xen-model`) instead of the UART; the unikernel picks the transport ([`XenRing`]) and falls back to the UART when there is no device |
//! | `ukdb.xenring=xen` | the stub's channel is the domain's Xen PV console ring (real Xen), with the same fallback |
//! | `ukdb.xenring=off` | the UART (the default) |
//!
//! A bad `ukdb.net=` value is reported before any other unknown option,
//! and the network stub does not start.

/// The longest key, in bytes (HMAC-SHA256's block): `ukdb.key=` takes at
/// most twice as many hex digits.
pub const KEY_MAX: usize = 64;

/// A key for authenticated sessions (see `auth.rs` and docs/debugging.md,
/// "Security"): baked into the image ([`Config::key`]) or read from the
/// command line (`ukdb.key=HEX`). Its `Debug` never shows the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(KeyBytes);

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyBytes {
    Baked(&'static [u8]),
    Inline([u8; KEY_MAX], usize),
}

impl Key {
    /// A key built into the image.
    pub const fn baked(bytes: &'static [u8]) -> Key {
        Key(KeyBytes::Baked(bytes))
    }

    /// A key in hex: 2 to `2 * KEY_MAX` digits, an even number of them.
    pub fn from_hex(hex: &str) -> Option<Key> {
        let digits = hex.as_bytes();
        if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() > 2 * KEY_MAX {
            return None;
        }
        let mut bytes = [0u8; KEY_MAX];
        for (slot, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let digit = |d: Option<&u8>| d.and_then(|&d| char::from(d).to_digit(16));
            let (hi, lo) = (digit(pair.first())?, digit(pair.get(1))?);
            *slot = u8::try_from(hi << 4 | lo).ok()?;
        }
        Some(Key(KeyBytes::Inline(bytes, digits.len() / 2)))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            KeyBytes::Baked(bytes) => bytes,
            KeyBytes::Inline(bytes, len) => bytes.get(..*len).unwrap_or_default(),
        }
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

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
    /// How the network stub gets its address (`ukdb.net=`).
    pub net: NetMode,
    /// The TCP port the network stub listens on (`ukdb.port=`).
    pub port: u16,
    /// The time-stamp counter's rate in Hz; 0 (the default): unknown, the
    /// stub asks CPUID (leaves 0x15 and 0x16) and otherwise assumes
    /// [`Config::FALLBACK_TSC_HZ`]. The network stub's timers use it.
    pub tsc_hz: u64,
    /// What a crash with no debugger attached does (`ukdb.crash=`).
    pub crash: Crash,
    /// The full tier's key (`ukdb.key=`, [`Config::key`]): with a key set,
    /// sessions start locked (see docs/debugging.md, "Security").
    pub key: Option<Key>,
    /// The read-only tier's key (`ukdb.rokey=`, [`Config::rokey`]).
    pub rokey: Option<Key>,
    /// Which Xen console ring the unikernel should give the stub as its
    /// transport (`ukdb.xenring=`); the stub itself only reports it.
    pub xenring: XenRing,
}

/// The Xen console ring asked for with `ukdb.xenring=`: a hint for the
/// unikernel's choice of transport (`XenConsole::ivshmem`,
/// `XenConsole::xen`), which falls back to the UART when the ring is not
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenRing {
    /// No ring: the UART (`ukdb.xenring=off`, the default).
    Off,
    /// The backend model's ring on an ivshmem-plain device
    /// (`ukdb.xenring=ivshmem`).
    Ivshmem,
    /// The domain's PV console on real Xen (`ukdb.xenring=xen`).
    Xen,
}

/// What a panic or fatal exception does when no debugger is attached
/// (`ukdb.crash=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// No crash dump (`ukdb.crash=off`, the default).
    Off,
    /// Stream a core over the stub's channel, then do `then`
    /// (`ukdb.crash=dump[,then=...]`).
    Dump(Then),
}

/// What the stub does once a crash dump is sent (`then=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// `cli; hlt` for good.
    Halt,
    /// Reset the machine (port 0xCF9, then the keyboard controller, then a
    /// triple fault).
    Reboot,
    /// The default: the full stub stops as it does without a dump (a
    /// debugger can attach); the dump-only build returns, and the
    /// unikernel's own handling runs.
    Wait,
}

/// How the network stub gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// `ukdb.net=` not given (the default): DHCPv4 when a key is set
    /// (`ukdb.key=`, `ukdb.rokey=`, [`Config::key`], [`Config::rokey`]);
    /// with no key, no network stub, since an unlocked stub on the network
    /// hands the unikernel to whoever reaches its port (see
    /// [`Config::net_mode`]).
    Unset,
    /// DHCPv4, at init (`ukdb.net=dhcp`).
    Dhcp,
    /// A static address (`ukdb.net=IP/PREFIX[,gw=IP]`).
    Static {
        /// The address.
        addr: [u8; 4],
        /// The prefix length (0-32).
        prefix: u8,
        /// The default gateway, if any.
        gateway: Option<[u8; 4]>,
    },
    /// No network stub (`ukdb.net=off`).
    Off,
    /// A `ukdb.net=` value the parser did not take: the network stub does
    /// not start (and says why).
    Invalid,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// The network stub's default TCP port (gdb's habit).
pub const DEFAULT_PORT: u16 = 1234;

/// An option the parser did not take: reported on the console, then ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOption<'a>(pub &'a str);

impl Config {
    /// The defaults: no wait, `int3` breakpoints, identity-mapped page
    /// tables.
    pub const fn new() -> Config {
        Config {
            wait: false,
            trap: TrapInsn::Int3,
            off: false,
            phys_offset: 0,
            net: NetMode::Unset,
            port: DEFAULT_PORT,
            tsc_hz: 0,
            crash: Crash::Off,
            key: None,
            rokey: None,
            xenring: XenRing::Off,
        }
    }

    /// The full tier's key, built into the image (for platforms whose
    /// command line others can read). A built-in key wins over
    /// `ukdb.key=` (which is then reported and ignored), so whoever can
    /// only edit the command line cannot replace it. An empty key is no
    /// key.
    pub const fn key(mut self, key: &'static [u8]) -> Config {
        self.key = if key.is_empty() { None } else { Some(Key::baked(key)) };
        self
    }

    /// The read-only tier's key, built into the image (as [`Config::key`]).
    pub const fn rokey(mut self, key: &'static [u8]) -> Config {
        self.rokey = if key.is_empty() { None } else { Some(Key::baked(key)) };
        self
    }

    /// What a crash with no debugger attached does (`ukdb.crash=`).
    pub const fn crash(mut self, crash: Crash) -> Config {
        self.crash = crash;
        self
    }

    /// The TSC rate assumed when neither [`Config::tsc_hz`] nor CPUID
    /// gives one: 2 GHz (timeouts then run up to twice as fast or slow on
    /// the machines of today).
    pub const FALLBACK_TSC_HZ: u64 = 2_000_000_000;

    /// What the network stub does with this configuration:
    /// [`NetMode::Unset`] resolved (DHCP with a key, [`NetMode::Off`]
    /// without one); every other mode as given.
    pub const fn net_mode(&self) -> NetMode {
        match self.net {
            NetMode::Unset if self.key.is_some() || self.rokey.is_some() => NetMode::Dhcp,
            NetMode::Unset => NetMode::Off,
            mode => mode,
        }
    }

    /// `true` when the network stub stays off only because neither a key
    /// nor `ukdb.net=` was given (the unikernel may then put the stub on
    /// its serial line, as with `ukdb.net=off`).
    pub const fn net_off_by_default(&self) -> bool {
        matches!(self.net, NetMode::Unset) && self.key.is_none() && self.rokey.is_none()
    }

    /// How the network stub gets its address (`ukdb.net=`).
    pub const fn net(mut self, mode: NetMode) -> Config {
        self.net = mode;
        self
    }

    /// The network stub's TCP port (`ukdb.port=`).
    pub const fn port(mut self, port: u16) -> Config {
        self.port = port;
        self
    }

    /// The time-stamp counter's rate, for the network stub's timers (a
    /// kernel that calibrated it knows best; 0: ask CPUID).
    pub const fn tsc_hz(mut self, hz: u64) -> Config {
        self.tsc_hz = hz;
        self
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
    /// did not understand (a bad `ukdb.net=` value before any other).
    pub fn with_cmdline(self, cmdline: &str) -> (Config, Option<BadOption<'_>>) {
        let mut config = self;
        let (baked_key, baked_rokey) = (self.key.is_some(), self.rokey.is_some());
        let mut bad = None;
        let mut bad_net = None;
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
                "xenring=off" => config.xenring = XenRing::Off,
                "xenring=ivshmem" => config.xenring = XenRing::Ivshmem,
                "xenring=xen" => config.xenring = XenRing::Xen,
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
                _ if option.starts_with("net=") => {
                    config.net =
                        option.strip_prefix("net=").and_then(parse_net).unwrap_or_else(|| {
                            bad_net = Some(BadOption(word));
                            NetMode::Invalid
                        });
                }
                _ if option.starts_with("crash=") => {
                    match option.strip_prefix("crash=").and_then(parse_crash) {
                        Some(crash) => config.crash = crash,
                        None => {
                            if bad.is_none() {
                                bad = Some(BadOption(word));
                            }
                        }
                    }
                }
                // A bad or ignored key is reported without its value: the
                // console must not show a key.
                _ if option.starts_with("key=") => {
                    match option.strip_prefix("key=").and_then(Key::from_hex) {
                        Some(key) if !baked_key => config.key = Some(key),
                        _ => {
                            if bad.is_none() {
                                bad = Some(BadOption("ukdb.key=<redacted>"));
                            }
                        }
                    }
                }
                _ if option.starts_with("rokey=") => {
                    match option.strip_prefix("rokey=").and_then(Key::from_hex) {
                        Some(key) if !baked_rokey => config.rokey = Some(key),
                        _ => {
                            if bad.is_none() {
                                bad = Some(BadOption("ukdb.rokey=<redacted>"));
                            }
                        }
                    }
                }
                // Which NIC the dedicated network stub drives: parsed, and
                // reported when bad, by `nicaddr::nic_option` (the stub with
                // `net`); known here so that it is not called unknown.
                _ if option.starts_with("nic=") => {}
                _ if option.starts_with("port=") => {
                    match option.strip_prefix("port=").and_then(|p| p.parse::<u16>().ok()) {
                        Some(port) if port != 0 => config.port = port,
                        _ => {
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
        let bad = if config.net == NetMode::Invalid { bad_net.or(bad) } else { bad.or(bad_net) };
        (config, bad)
    }
}

/// A `ukdb.net=` value: `dhcp`, `off` or `IP/PREFIX[,gw=IP]`.
fn parse_net(value: &str) -> Option<NetMode> {
    match value {
        "dhcp" => return Some(NetMode::Dhcp),
        "off" => return Some(NetMode::Off),
        _ => {}
    }
    let (cidr, gateway) = match value.split_once(',') {
        Some((cidr, gw)) => (cidr, Some(parse_ipv4(gw.strip_prefix("gw=")?)?)),
        None => (value, None),
    };
    let (addr, prefix) = cidr.split_once('/')?;
    let addr = parse_ipv4(addr)?;
    let prefix = parse_decimal_u8(prefix).filter(|&p| p <= 32)?;
    Some(NetMode::Static { addr, prefix, gateway })
}

/// A `ukdb.crash=` value: `off`, `dump` or `dump,then=halt|reboot|wait`.
fn parse_crash(value: &str) -> Option<Crash> {
    let (mode, then) = match value.split_once(',') {
        Some((mode, then)) => (mode, Some(then.strip_prefix("then=")?)),
        None => (value, None),
    };
    let then = match then {
        None | Some("wait") => Then::Wait,
        Some("halt") => Then::Halt,
        Some("reboot") => Then::Reboot,
        Some(_) => return None,
    };
    match mode {
        "off" if value == "off" => Some(Crash::Off),
        "dump" => Some(Crash::Dump(then)),
        _ => None,
    }
}

/// A dotted-quad IPv4 address (decimal, no leading `+`, at most 3 digits).
fn parse_ipv4(text: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split('.');
    for slot in &mut out {
        *slot = parse_decimal_u8(parts.next()?)?;
    }
    parts.next().is_none().then_some(out)
}

fn parse_decimal_u8(text: &str) -> Option<u8> {
    let digits = !text.is_empty() && text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
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
    fn xenring_option() {
        let ring = |line| {
            let (c, bad) = Config::from_cmdline(line);
            (c.xenring, bad)
        };
        assert_eq!(ring(""), (XenRing::Off, None));
        assert_eq!(ring("ukdb.xenring=ivshmem"), (XenRing::Ivshmem, None));
        assert_eq!(ring("ukdb.xenring=xen ukdb.wait"), (XenRing::Xen, None));
        assert_eq!(ring("ukdb.xenring=xen ukdb.xenring=off"), (XenRing::Off, None));
        assert_eq!(ring("ukdb.xenring=pci"), (XenRing::Off, Some(BadOption("ukdb.xenring=pci"))));
    }

    #[test]
    fn crash_option() {
        fn crash(line: &str) -> (Crash, Option<&str>) {
            let (c, bad) = Config::from_cmdline(line);
            (c.crash, bad.map(|b| b.0))
        }
        assert_eq!(crash(""), (Crash::Off, None));
        assert_eq!(crash("ukdb.crash=dump"), (Crash::Dump(Then::Wait), None));
        assert_eq!(crash("ukdb.crash=dump,then=halt"), (Crash::Dump(Then::Halt), None));
        assert_eq!(crash("ukdb.crash=dump,then=reboot"), (Crash::Dump(Then::Reboot), None));
        assert_eq!(crash("ukdb.crash=dump,then=wait"), (Crash::Dump(Then::Wait), None));
        assert_eq!(crash("ukdb.crash=dump ukdb.crash=off"), (Crash::Off, None));
        for bad in [
            "ukdb.crash=",
            "ukdb.crash=on",
            "ukdb.crash=dump,",
            "ukdb.crash=dump,then=",
            "ukdb.crash=dump,then=sleep",
            "ukdb.crash=dump,halt",
            "ukdb.crash=dump,then=halt,then=wait",
            "ukdb.crash=off,then=halt",
            "ukdb.crash=DUMP",
        ] {
            // A bad value is reported and changes nothing.
            let line = format!("ukdb.crash=dump,then=halt {bad}");
            assert_eq!(crash(&line), (Crash::Dump(Then::Halt), Some(bad)), "{bad}");
        }
        assert_eq!(Config::new().crash(Crash::Dump(Then::Reboot)).crash, Crash::Dump(Then::Reboot));
    }

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
                phys_offset: 0xffff_8000_0000_0000,
                net: NetMode::Unset,
                port: 1234,
                tsc_hz: 0,
                crash: Crash::Off,
                key: None,
                rokey: None,
                xenring: XenRing::Off,
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
        // `ukdb.nic=` is the dedicated NIC's (nicaddr), not unknown.
        let (_, bad) = Config::from_cmdline("ukdb.nic=pci:00:05.0 ukdb.nic=mmio:0xd0000000");
        assert_eq!(bad, None);
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
    fn network_options() {
        let (c, bad) = Config::from_cmdline("ukdb.net=10.0.2.15/24,gw=10.0.2.2 ukdb.port=4321");
        assert_eq!(bad, None);
        assert_eq!(
            (c.net, c.port),
            (
                NetMode::Static { addr: [10, 0, 2, 15], prefix: 24, gateway: Some([10, 0, 2, 2]) },
                4321
            )
        );
        let (c, _) = Config::from_cmdline("ukdb.net=192.168.1.7/32");
        assert_eq!(c.net, NetMode::Static { addr: [192, 168, 1, 7], prefix: 32, gateway: None });
        assert_eq!(Config::from_cmdline("ukdb.net=off").0.net, NetMode::Off);
        assert_eq!(Config::from_cmdline("ukdb.net=off ukdb.net=dhcp").0.net, NetMode::Dhcp);
        assert_eq!(Config::new().port(7).tsc_hz(5).net(NetMode::Off).port, 7);
        assert_eq!(Config::new().tsc_hz(5).tsc_hz, 5);
        assert_eq!(Config::FALLBACK_TSC_HZ, 2_000_000_000);
        assert_eq!(
            (Config::new().net, Config::new().port, Config::new().tsc_hz),
            (NetMode::Unset, 1234, 0)
        );
    }

    #[test]
    fn the_network_stub_listens_by_default_only_with_a_key() {
        let no_key = Config::new();
        assert_eq!((no_key.net_mode(), no_key.net_off_by_default()), (NetMode::Off, true));
        for cmdline in ["ukdb.key=0011", "ukdb.rokey=0011", "ukdb.key=0011 ukdb.rokey=2233"] {
            let c = Config::from_cmdline(cmdline).0;
            assert_eq!(
                (c.net, c.net_mode(), c.net_off_by_default()),
                (NetMode::Unset, NetMode::Dhcp, false)
            );
        }
        let baked = Config::new().rokey(b"k");
        assert_eq!((baked.net_mode(), baked.net_off_by_default()), (NetMode::Dhcp, false));
        // Given explicitly, ukdb.net= wins, with or without a key.
        for (cmdline, mode) in [
            ("ukdb.net=dhcp", NetMode::Dhcp),
            ("ukdb.net=off ukdb.key=00", NetMode::Off),
            (
                "ukdb.net=10.0.2.15/24",
                NetMode::Static { addr: [10, 0, 2, 15], prefix: 24, gateway: None },
            ),
            ("ukdb.net=bad", NetMode::Invalid),
        ] {
            let c = Config::from_cmdline(cmdline).0;
            assert_eq!((c.net_mode(), c.net_off_by_default()), (mode, false), "{cmdline}");
        }
        // A bad key is no key.
        assert!(Config::from_cmdline("ukdb.key=zz").0.net_off_by_default());
    }

    #[test]
    fn bad_network_options() {
        for value in [
            "",
            "dchp",
            "10.0.2.15",
            "10.0.2.15/33",
            "10.0.2/24",
            "10.0.2.15.1/24",
            "256.0.0.1/8",
            "10.0.2.15/24,gw=",
            "10.0.2.15/24,10.0.2.2",
            "10.0.2.15/24,gw=10.0.2",
            "1.2.3.4/+8",
            "1.2.3.4/0008",
            "-1.2.3.4/8",
            "1.2.3.4/8,gw=1.2.3.4,",
            "1..3.4/8",
            "0x1.2.3.4/8",
        ] {
            let word = format!("ukdb.net={value}");
            // The bad value wins over an earlier unknown option.
            let line = format!("ukdb.bogus {word} ukdb.wait");
            let (c, bad) = Config::from_cmdline(&line);
            assert_eq!((c.net, bad), (NetMode::Invalid, Some(BadOption(word.as_str()))), "{value}");
            assert!(c.wait);
        }
        // A later good value replaces it; the bad word is still reported.
        let (c, bad) = Config::from_cmdline("ukdb.net=zz ukdb.net=dhcp");
        assert_eq!((c.net, bad), (NetMode::Dhcp, Some(BadOption("ukdb.net=zz"))));
        for port in ["0", "65536", "-1", "", "0x10", "12a"] {
            let word = format!("ukdb.port={port}");
            let (c, bad) = Config::from_cmdline(&word);
            assert_eq!((c.port, bad), (1234, Some(BadOption(word.as_str()))), "{port}");
        }
        assert_eq!(Config::from_cmdline("ukdb.port=65535").0.port, 65535);
    }

    #[test]
    fn keys_from_the_command_line() {
        let (c, bad) = Config::from_cmdline("ukdb.key=00ff10 ukdb.rokey=AbCd");
        assert_eq!(bad, None);
        assert_eq!(c.key.map(|k| k.bytes().to_vec()), Some(vec![0x00, 0xff, 0x10]));
        assert_eq!(c.rokey.map(|k| k.bytes().to_vec()), Some(vec![0xab, 0xcd]));
        let longest = "a".repeat(2 * KEY_MAX);
        let line = format!("ukdb.key={longest}");
        let (c, bad) = Config::from_cmdline(&line);
        assert_eq!((c.key.map(|k| k.bytes().len()), bad), (Some(KEY_MAX), None));
        for value in ["", "a", "abc", "zz", "0x00", "+1", &"a".repeat(2 * KEY_MAX + 2)] {
            let line = format!("ukdb.key={value} ukdb.rokey={value}");
            let (c, bad) = Config::from_cmdline(&line);
            // Reported without the value, and not taken.
            assert_eq!((c.key, c.rokey), (None, None), "{value}");
            assert_eq!(bad, Some(BadOption("ukdb.key=<redacted>")), "{value}");
            let line = format!("ukdb.rokey={value}");
            let (_, bad) = Config::from_cmdline(&line);
            assert_eq!(bad, Some(BadOption("ukdb.rokey=<redacted>")), "{value}");
        }
    }

    #[test]
    fn built_in_keys_win() {
        let c = Config::new().key(b"baked").rokey(b"ro");
        assert_eq!(c.key.map(|k| k.bytes().to_vec()), Some(b"baked".to_vec()));
        let (d, bad) = c.with_cmdline("ukdb.key=0102 ukdb.wait");
        assert_eq!(d.key.map(|k| k.bytes().to_vec()), Some(b"baked".to_vec()));
        assert_eq!(bad, Some(BadOption("ukdb.key=<redacted>")));
        let (d, _) = c.with_cmdline("ukdb.rokey=0102");
        assert_eq!(d.rokey.map(|k| k.bytes().to_vec()), Some(b"ro".to_vec()));
        assert_eq!(Config::new().key(b"").key, None);
        // Debug never shows a key.
        let shown = format!("{:?}", Config::from_cmdline("ukdb.key=6b6579").0);
        assert!(
            shown.contains("Key(<redacted>)") && !shown.contains("6b") && !shown.contains("107")
        );
    }

    #[test]
    fn trap_bytes() {
        assert_eq!(TrapInsn::Int3.opcode(), 0xCC);
        assert_eq!(TrapInsn::Ud.opcode(), 0x06);
        assert_eq!((TrapInsn::Int3.vector(), TrapInsn::Ud.vector()), (3, 6));
    }
}
