//! Authenticated sessions: keys, the HMAC-SHA256 challenge-response, the
//! delay after failures and the packet policy of each tier. Pure logic,
//! host-tested; the session (`imp/session.rs`) answers the exchange before
//! gdbstub sees a packet and refuses what the tier does not allow.
//!
//! With a key set (`ukdb.key=HEX`, `ukdb.rokey=HEX`, or [`crate::Config::key`]
//! / [`crate::Config::rokey`] baked into the image), every new session starts
//! **locked**. The exchange:
//!
//! | packet | reply |
//! |--------|-------|
//! | `qUkdb.challenge` | 64 hex digits: a fresh 32-byte nonce (the previous one is forgotten) |
//! | `qUkdb.auth:TIER,MAC` | `OK`: the session has tier `TIER` (`ro` or `full`); `E01`: wrong, no challenge, or no key for that tier; `E0b`: too soon after a failure, retry later |
//! | `qRcmd` `auth` (gdb's `monitor auth`) | a challenge, printed with how to answer it |
//! | `qRcmd` `auth TIER MAC` (`monitor auth TIER MAC`) | a line saying the tier, or `E01`/`E0b` |
//!
//! `MAC` is `HMAC-SHA256(key of TIER, "ukdb-auth-v1" || nonce || TIER)` in
//! hex (64 digits); `ukdb auth --key-file F --tier TIER --nonce HEX`
//! computes it. A nonce answers one attempt (right or wrong): every try
//! needs a new challenge. The comparison is constant-time (`hmac`'s
//! `verify_slice`, on `subtle`).
//!
//! After a wrong answer further attempts are refused (`E0b`, nothing
//! computed) until a TSC deadline: [`DELAY_BASE_TICKS`] after the first
//! failure, doubling with each further one up to 2^[`DELAY_MAX_SHIFT`]
//! times that. The world is never held for it: the stub only counts. The
//! count survives the session (a new connection does not reset it) and a
//! success clears it.
//!
//! Tiers ([`allowed`]), for everything else; a refused packet gets `E01`
//! (EPERM) and changes nothing:
//!
//! | tier | allowed |
//! |------|---------|
//! | locked | the handshake (`qSupported`, `QStartNoAckMode`, `vMustReplyEmpty`, `qXfer:features:read`, `?`, `H`, `qC`, `qAttached`, `qTStatus`, `qOffsets`, thread lists), the exchange, `monitor help` and `monitor auth` |
//! | read-only | the above, all queries (`q...` but `qXfer:...:write`), lldb's `j...`, protocol options (`QStartNoAckMode`, `QThreadSuffixSupported`, `QListThreadsInStopReply`, `QEnableErrorStrings`, `QThreadEvents`), registers and memory reads (`g`, `p`, `m`, `x`), `c`, `C`, `s`, `S`, `vCont`, `T`, hardware breakpoints and watchpoints (`Z1`-`Z4`, `z1`-`z4`), `D`, and the `monitor` commands that only report (`why`, `breakpoints`, `stats`, `help`) |
//! | full | everything |
//!
//! Never in the read-only tier: `M`, `X`, `G`, `P`, `Z0`/`z0` (a software
//! breakpoint writes memory), `k`, `R`, `v` packets but `vCont`/`vMustReplyEmpty`,
//! lldb's `_M` (allocation), `qXfer` writes, other `Q` packets and other
//! `monitor` commands. Ctrl-C from a locked session is ignored (a locked
//! client cannot stop the unikernel).

use crate::config::Key;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The nonce's length in bytes.
pub const NONCE_LEN: usize = 32;
/// The response's length in bytes (an HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// What every response starts with (the protocol's version).
pub const DOMAIN: &[u8] = b"ukdb-auth-v1";
/// The delay after the first failure, in TSC ticks: 2^28 is about 0.1 s at
/// 2.7 GHz.
pub const DELAY_BASE_TICKS: u64 = 1 << 28;
/// The delay doubles up to `DELAY_BASE_TICKS << DELAY_MAX_SHIFT` (about
/// 6 s at 2.7 GHz).
pub const DELAY_MAX_SHIFT: u32 = 6;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Nothing but the handshake and the authentication exchange.
    Locked,
    /// Reads, run control and hardware breakpoints: see the module's table.
    ReadOnly,
    /// Everything (also the tier of every session when no key is set).
    Full,
}

impl Tier {
    fn parse(name: &[u8]) -> Option<Tier> {
        match name {
            b"ro" => Some(Tier::ReadOnly),
            b"full" => Some(Tier::Full),
            _ => None,
        }
    }
}

/// `HMAC-SHA256(key, DOMAIN || nonce || tier)`: the response to a
/// challenge (what `ukdb auth` computes; the bridge has its own copy, and
/// the end-to-end tests check they agree).
#[cfg(test)]
pub fn response(key: &[u8], nonce: &[u8; NONCE_LEN], tier: &[u8]) -> [u8; MAC_LEN] {
    keyed(key, nonce, tier).finalize().into_bytes().into()
}

fn keyed(key: &[u8], nonce: &[u8; NONCE_LEN], tier: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (a longer one is hashed first).
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(DOMAIN);
    mac.update(nonce);
    mac.update(tier);
    mac
}

/// The delay before another attempt after `failures` wrong answers, in TSC
/// ticks (0 for none).
pub const fn delay_ticks(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = if failures - 1 < DELAY_MAX_SHIFT { failures - 1 } else { DELAY_MAX_SHIFT };
    DELAY_BASE_TICKS << shift
}

/// The outcome of an answer to a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right: the session now has this tier.
    Granted(Tier),
    /// Wrong (or no key for that tier, or a malformed answer): counted as
    /// a failure.
    Wrong,
    /// No challenge to answer (none asked, or used already): not counted.
    NoChallenge,
    /// Too soon after a failure: not even checked.
    TooSoon,
}

/// The authentication state: the keys, the session's tier, the open
/// challenge and the failures so far.
pub struct Auth {
    full: Option<Key>,
    ro: Option<Key>,
    tier: Tier,
    nonce: Option<[u8; NONCE_LEN]>,
    failures: u32,
    retry_at: u64,
}

impl Auth {
    /// With no key at all every session is full (as without authentication).
    pub fn new(full: Option<Key>, ro: Option<Key>) -> Auth {
        let mut auth = Auth { full, ro, tier: Tier::Full, nonce: None, failures: 0, retry_at: 0 };
        auth.end_session();
        auth
    }

    /// A key is set: sessions start locked.
    pub fn required(&self) -> bool {
        self.full.is_some() || self.ro.is_some()
    }

    /// The session's tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Failures since the last success.
    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The session ended: the next one starts locked, with no challenge.
    /// The failure count and its deadline stay.
    pub fn end_session(&mut self) {
        self.tier = if self.required() { Tier::Locked } else { Tier::Full };
        self.nonce = None;
    }

    /// Opens a challenge with `nonce` (replacing any open one).
    pub fn challenge(&mut self, nonce: [u8; NONCE_LEN]) {
        self.nonce = Some(nonce);
    }

    /// Checks an answer to the open challenge at TSC time `now`. A checked
    /// answer uses the challenge up.
    pub fn answer(&mut self, tier: &[u8], mac: &[u8], now: u64) -> Verdict {
        if self.failures > 0 && now < self.retry_at {
            return Verdict::TooSoon;
        }
        let Some(nonce) = self.nonce.take() else {
            return Verdict::NoChallenge;
        };
        let key = match Tier::parse(tier) {
            Some(Tier::Full) => self.full.as_ref(),
            Some(Tier::ReadOnly) => self.ro.as_ref(),
            _ => None,
        };
        let granted = match key {
            // Computed and compared (in constant time) whatever the length
            // given, so a wrong length takes as long as a wrong MAC.
            Some(key) => keyed(key.bytes(), &nonce, tier).verify_slice(mac).is_ok(),
            None => false,
        };
        match (granted, Tier::parse(tier)) {
            (true, Some(t)) => {
                self.failures = 0;
                self.retry_at = 0;
                self.tier = self.tier.max(t);
                Verdict::Granted(self.tier)
            }
            _ => {
                self.failures = self.failures.saturating_add(1);
                self.retry_at = now.saturating_add(delay_ticks(self.failures));
                Verdict::Wrong
            }
        }
    }
}

/// A request of the exchange, parsed from a whole packet (`$...#xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `qUkdb.challenge`.
    Challenge,
    /// `qUkdb.auth:TIER,MAC`: the tier's name and the MAC's bytes (`len`
    /// of them; a malformed MAC has none and is wrong).
    Answer {
        /// `ro` or `full` (anything else is wrong).
        tier: TierName,
        /// The MAC.
        mac: [u8; MAC_LEN],
        /// How many bytes of `mac` were given (0: malformed).
        len: usize,
    },
    /// `monitor auth` alone: a challenge, printed for a person.
    MonitorChallenge,
    /// `monitor auth TIER MAC`.
    MonitorAnswer {
        /// The tier's name.
        tier: TierName,
        /// The MAC.
        mac: [u8; MAC_LEN],
        /// How many bytes of `mac` were given (0: malformed).
        len: usize,
    },
}

/// A tier's name as given (at most 8 bytes kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierName {
    bytes: [u8; 8],
    len: usize,
}

impl TierName {
    fn new(name: &[u8]) -> TierName {
        let mut bytes = [0; 8];
        let len = if name.len() <= 8 { name.len() } else { 0 };
        if let (Some(to), Some(from)) = (bytes.get_mut(..len), name.get(..len)) {
            to.copy_from_slice(from);
        }
        TierName { bytes, len }
    }

    /// The name.
    pub fn get(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// The body of a whole packet: between `$` and the last `#`.
fn body(packet: &[u8]) -> Option<&[u8]> {
    let body = packet.strip_prefix(b"$")?;
    let hash = body.iter().rposition(|&b| b == b'#')?;
    body.get(..hash)
}

/// The longest `monitor` command decoded for the policy and the exchange.
const COMMAND_MAX: usize = 160;

/// A `qRcmd` packet's command, hex-decoded into `out`. `None`: not a
/// `qRcmd`; `Some(None)`: malformed or longer than [`COMMAND_MAX`] (the
/// policy refuses those).
fn monitor_command<'a>(body: &[u8], out: &'a mut [u8; COMMAND_MAX]) -> Option<Option<&'a [u8]>> {
    let hex = body.strip_prefix(b"qRcmd,")?;
    let n = hex.len() / 2;
    if !hex.len().is_multiple_of(2) || n > COMMAND_MAX {
        return Some(None);
    }
    for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (pair.first().copied().and_then(hex_digit), pair.get(1).copied().and_then(hex_digit))
        {
            (Some(hi), Some(lo)) => *slot = hi << 4 | lo,
            _ => return Some(None),
        }
    }
    Some(out.get(..n))
}

fn hex_digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// A MAC in hex: exactly [`MAC_LEN`] bytes, or length 0.
fn mac_hex(hex: &[u8]) -> ([u8; MAC_LEN], usize) {
    let mut mac = [0u8; MAC_LEN];
    if hex.len() != 2 * MAC_LEN {
        return (mac, 0);
    }
    for (slot, pair) in mac.iter_mut().zip(hex.chunks_exact(2)) {
        match (pair.first().copied().and_then(hex_digit), pair.get(1).copied().and_then(hex_digit))
        {
            (Some(hi), Some(lo)) => *slot = hi << 4 | lo,
            _ => return ([0; MAC_LEN], 0),
        }
    }
    (mac, MAC_LEN)
}

/// The exchange's request in a whole packet, if it is one.
pub fn parse(packet: &[u8]) -> Option<Request> {
    let body = body(packet)?;
    if body == b"qUkdb.challenge" {
        return Some(Request::Challenge);
    }
    if let Some(args) = body.strip_prefix(b"qUkdb.auth:") {
        let (tier, hex) = match args.iter().position(|&b| b == b',') {
            Some(comma) => (args.get(..comma)?, args.get(comma + 1..)?),
            None => (args, &[][..]),
        };
        let (mac, len) = mac_hex(hex);
        return Some(Request::Answer { tier: TierName::new(tier), mac, len });
    }
    let mut buf = [0u8; COMMAND_MAX];
    let cmd = monitor_command(body, &mut buf)??;
    let mut words = cmd.split(|&b| b == b' ').filter(|w| !w.is_empty());
    if words.next()? != b"auth" {
        return None;
    }
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => Some(Request::MonitorChallenge),
        (Some(tier), Some(hex), None) => {
            let (mac, len) = mac_hex(hex);
            Some(Request::MonitorAnswer { tier: TierName::new(tier), mac, len })
        }
        (Some(tier), _, _) => {
            Some(Request::MonitorAnswer { tier: TierName::new(tier), mac: [0; MAC_LEN], len: 0 })
        }
    }
}

/// Whether a session of `tier` may have `packet` (a whole packet,
/// `$...#xx`) answered: see the module's table. The exchange itself is
/// always allowed (and answered before this is asked).
pub fn allowed(tier: Tier, packet: &[u8]) -> bool {
    let Some(body) = body(packet) else {
        return tier == Tier::Full;
    };
    if tier == Tier::Full || parse(packet).is_some() {
        return true;
    }
    let mut buf = [0u8; COMMAND_MAX];
    if let Some(cmd) = monitor_command(body, &mut buf) {
        let Some(cmd) = cmd else { return false };
        let word = cmd.split(|&b| b == b' ').find(|w| !w.is_empty()).unwrap_or_default();
        return match tier {
            Tier::Locked => matches!(word, b"" | b"help"),
            _ => matches!(word, b"" | b"help" | b"why" | b"breakpoints" | b"stats"),
        };
    }
    if handshake(body) {
        return true;
    }
    if tier == Tier::Locked {
        return false;
    }
    let first = body.first().copied().unwrap_or(0);
    match first {
        b'q' => {
            !(body.starts_with(b"qXfer:") && body.split(|&b| b == b':').nth(2) != Some(b"read"))
        }
        b'j' => true,
        b'Q' => [
            &b"QThreadSuffixSupported"[..],
            b"QListThreadsInStopReply",
            b"QEnableErrorStrings",
            b"QThreadEvents:",
        ]
        .iter()
        .any(|p| body.starts_with(p)),
        b'g' | b'p' | b'm' | b'x' | b'c' | b'C' | b's' | b'S' | b'T' | b'D' => true,
        b'v' => body.starts_with(b"vCont"),
        b'Z' | b'z' => matches!(body.get(1), Some(b'1'..=b'4')),
        _ => false,
    }
}

/// What a locked session may do: the handshake, which tells nothing of
/// the unikernel's memory or registers.
fn handshake(body: &[u8]) -> bool {
    let exact: [&[u8]; 9] = [
        b"?",
        b"QStartNoAckMode",
        b"vMustReplyEmpty",
        b"qC",
        b"qAttached",
        b"qTStatus",
        b"qOffsets",
        b"qfThreadInfo",
        b"qsThreadInfo",
    ];
    exact.contains(&body)
        || body.starts_with(b"qSupported")
        || body.starts_with(b"qXfer:features:read:")
        || body.starts_with(b"Hg")
        || body.starts_with(b"Hc")
        || body.starts_with(b"qAttached:")
}

/// Where a nonce's entropy came from.
#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RDSEED (the CPU's conditioned entropy source).
    Rdseed,
    /// RDRAND (its DRBG, reseeded from the same source).
    Rdrand,
    /// Neither instruction: TSC readings around spin loops of varying
    /// length, mixed with the pool. Weak: see [`Pool`].
    Tsc,
}

/// The nonce generator's state: a SHA-256 pool that every nonce is mixed
/// into, and a counter. Each nonce is `SHA-256(pool || counter || words)`,
/// where `words` are 64-bit values from RDSEED, else RDRAND, else a run of
/// TSC readings (the fallback: the low bits of the TSC around loops whose
/// length depends on the previous readings; on a real CPU interrupts, cache
/// and frequency effects make them vary, under an emulator less so. It
/// keeps nonces distinct (the counter) but an attacker who can predict
/// the TSC may predict them: prefer a CPU with RDRAND, which every x86_64
/// CPU since 2012 and QEMU's `-cpu max` have).
pub struct Pool {
    pool: [u8; 32],
    counter: u64,
}

impl Pool {
    /// An empty pool.
    pub const fn new() -> Pool {
        Pool { pool: [0; 32], counter: 0 }
    }

    /// A nonce from `words` (8 of them, from the sources above).
    pub fn mix(&mut self, words: &[u64; 8], source: Source) -> [u8; NONCE_LEN] {
        self.counter = self.counter.wrapping_add(1);
        let mut h = Sha256::new();
        h.update(b"ukdb-nonce");
        h.update(self.pool);
        h.update(self.counter.to_le_bytes());
        h.update([source as u8]);
        for w in words {
            h.update(w.to_le_bytes());
        }
        let nonce: [u8; 32] = h.finalize().into();
        // The pool moves on, one-way, so a nonce does not tell the next.
        let mut next = Sha256::new();
        next.update(b"ukdb-pool");
        next.update(self.pool);
        next.update(nonce);
        self.pool = next.finalize().into();
        nonce
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

/// Eight words of entropy and where they came from (see [`Pool`]).
#[cfg(all(feature = "enabled", target_arch = "x86_64"))]
pub fn entropy() -> ([u64; 8], Source) {
    let mut words = [0u64; 8];
    let (rdrand, rdseed) = hw::support();
    if rdseed && words.iter_mut().all(|w| hw::rdseed().map(|v| *w = v).is_some()) {
        return (words, Source::Rdseed);
    }
    if rdrand && words.iter_mut().all(|w| hw::rdrand().map(|v| *w = v).is_some()) {
        return (words, Source::Rdrand);
    }
    let mut spin = 0u64;
    for w in &mut words {
        let mut acc = 0u64;
        for _ in 0..64 {
            let t = hw::rdtsc();
            acc = acc.rotate_left(5) ^ t;
            // A spin whose length depends on the readings so far.
            for _ in 0..(t ^ spin) & 0xff {
                core::hint::spin_loop();
            }
            spin = spin.wrapping_add(t);
        }
        *w = acc;
    }
    (words, Source::Tsc)
}

#[cfg(all(feature = "enabled", target_arch = "x86_64"))]
mod hw {
    /// (RDRAND, RDSEED) supported, from CPUID.
    pub fn support() -> (bool, bool) {
        let leaf1 = core::arch::x86_64::__cpuid(1);
        let max = core::arch::x86_64::__cpuid(0).eax;
        let rdseed = max >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << 18) != 0;
        (leaf1.ecx & (1 << 30) != 0, rdseed)
    }

    /// One RDSEED value (ten tries: it may run dry for a moment).
    pub fn rdseed() -> Option<u64> {
        for _ in 0..10 {
            let (value, ok): (u64, u8);
            // SAFETY: called only when CPUID says RDSEED exists; it writes
            // a register and the carry flag, nothing else.
            unsafe {
                core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack));
            }
            if ok != 0 {
                return Some(value);
            }
        }
        None
    }

    /// One RDRAND value (ten tries, as Intel advises).
    pub fn rdrand() -> Option<u64> {
        for _ in 0..10 {
            let (value, ok): (u64, u8);
            // SAFETY: called only when CPUID says RDRAND exists; it writes
            // a register and the carry flag, nothing else.
            unsafe {
                core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack));
            }
            if ok != 0 {
                return Some(value);
            }
        }
        None
    }

    /// The time-stamp counter.
    pub fn rdtsc() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: rdtsc reads a counter; it has no side effects.
        unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        (u64::from(hi) << 32) | u64::from(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: &'static [u8]) -> Option<Key> {
        Some(Key::baked(bytes))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn packet(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    fn rcmd(cmd: &str) -> Vec<u8> {
        packet(&format!("qRcmd,{}", hex(cmd.as_bytes())))
    }

    #[test]
    fn response_is_hmac_sha256_of_the_domain_nonce_and_tier() {
        // RFC 4231 test case 2 checks the primitive itself.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The response is the HMAC of the concatenation.
        let nonce = [7u8; 32];
        let mut whole = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        whole.update(&[b"ukdb-auth-v1".as_slice(), &nonce, b"ro"].concat());
        assert_eq!(response(b"k", &nonce, b"ro"), <[u8; 32]>::from(whole.finalize().into_bytes()));
        assert_ne!(response(b"k", &nonce, b"ro"), response(b"k", &nonce, b"full"));
    }

    #[test]
    fn no_key_means_full_sessions() {
        let mut a = Auth::new(None, None);
        assert!(!a.required());
        assert_eq!(a.tier(), Tier::Full);
        a.end_session();
        assert_eq!(a.tier(), Tier::Full);
    }

    #[test]
    fn each_tier_has_its_own_key() {
        let mut a = Auth::new(key(b"full-key"), key(b"ro-key"));
        assert_eq!(a.tier(), Tier::Locked);
        let n = [1u8; 32];
        // The read-only key does not give the full tier.
        a.challenge(n);
        assert_eq!(a.answer(b"full", &response(b"ro-key", &n, b"full"), 0), Verdict::Wrong);
        let later = delay_ticks(1);
        a.challenge(n);
        assert_eq!(
            a.answer(b"ro", &response(b"ro-key", &n, b"ro"), later),
            Verdict::Granted(Tier::ReadOnly)
        );
        assert_eq!((a.tier(), a.failures()), (Tier::ReadOnly, 0));
        // Used up.
        assert_eq!(a.answer(b"ro", &response(b"ro-key", &n, b"ro"), later), Verdict::NoChallenge);
        let m = [2u8; 32];
        a.challenge(m);
        assert_eq!(
            a.answer(b"full", &response(b"full-key", &m, b"full"), later),
            Verdict::Granted(Tier::Full)
        );
        // A read-only answer later does not lower the tier.
        a.challenge(n);
        assert_eq!(
            a.answer(b"ro", &response(b"ro-key", &n, b"ro"), later),
            Verdict::Granted(Tier::Full)
        );
        a.end_session();
        assert_eq!(a.tier(), Tier::Locked);
    }

    #[test]
    fn a_tier_without_a_key_cannot_be_had() {
        let mut a = Auth::new(None, key(b"ro-key"));
        let n = [3u8; 32];
        a.challenge(n);
        // Not even with the read-only key's response for "full".
        assert_eq!(a.answer(b"full", &response(b"ro-key", &n, b"full"), 0), Verdict::Wrong);
        a.challenge(n);
        let later = delay_ticks(1);
        assert_eq!(a.answer(b"root", &response(b"ro-key", &n, b"root"), later), Verdict::Wrong);
    }

    #[test]
    fn wrong_answers_are_refused_and_delay_the_next() {
        let mut a = Auth::new(key(b"secret"), None);
        let n = [9u8; 32];
        let good = response(b"secret", &n, b"full");
        let mut now = 1000;
        for failures in 1..=9u32 {
            a.challenge(n);
            let mut bad = good;
            bad[31] ^= 1;
            assert_eq!(a.answer(b"full", &bad, now), Verdict::Wrong);
            assert_eq!(a.failures(), failures);
            let delay = delay_ticks(failures);
            assert_eq!(delay, DELAY_BASE_TICKS << (failures - 1).min(DELAY_MAX_SHIFT));
            // Even the right answer is not checked before the deadline,
            // and the challenge stays open.
            a.challenge(n);
            assert_eq!(a.answer(b"full", &good, now + delay - 1), Verdict::TooSoon);
            now += delay;
        }
        // A truncated or over-long MAC is wrong, not a panic.
        a.challenge(n);
        assert_eq!(a.answer(b"full", &good[..31], now), Verdict::Wrong);
        now += delay_ticks(10);
        a.challenge(n);
        assert_eq!(a.answer(b"full", &[good.as_slice(), &[0]].concat(), now), Verdict::Wrong);
        now += delay_ticks(11);
        // The session ending does not reset the count.
        a.end_session();
        a.challenge(n);
        assert_eq!(a.answer(b"full", &good, now - 1), Verdict::TooSoon);
        assert_eq!(a.answer(b"full", &good, now), Verdict::Granted(Tier::Full));
        assert_eq!(a.failures(), 0);
        assert_eq!(delay_ticks(0), 0);
        assert_eq!(delay_ticks(u32::MAX), DELAY_BASE_TICKS << DELAY_MAX_SHIFT);
    }

    #[test]
    fn parses_the_exchange() {
        let mac = [0xabu8; 32];
        assert_eq!(parse(&packet("qUkdb.challenge")), Some(Request::Challenge));
        let answer = parse(&packet(&format!("qUkdb.auth:ro,{}", hex(&mac))));
        assert_eq!(answer, Some(Request::Answer { tier: TierName::new(b"ro"), mac, len: 32 }));
        // Malformed answers parse as wrong ones (len 0).
        for bad in ["qUkdb.auth:", "qUkdb.auth:ro", "qUkdb.auth:ro,zz", "qUkdb.auth:ro,abc"] {
            match parse(&packet(bad)) {
                Some(Request::Answer { len: 0, .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        let long = format!("qUkdb.auth:fullfullfull,{}", hex(&mac));
        match parse(&packet(&long)) {
            Some(Request::Answer { tier, .. }) => assert_eq!(tier.get(), b""),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&rcmd("auth")), Some(Request::MonitorChallenge));
        assert_eq!(
            parse(&rcmd(&format!("auth  full {}", hex(&mac)))),
            Some(Request::MonitorAnswer { tier: TierName::new(b"full"), mac, len: 32 })
        );
        assert_eq!(
            parse(&rcmd("auth ro")),
            Some(Request::MonitorAnswer { tier: TierName::new(b"ro"), mac: [0; 32], len: 0 })
        );
        assert_eq!(parse(&rcmd("why")), None);
        assert_eq!(parse(&packet("qUkdb.info")), None);
        assert_eq!(parse(&packet("qRcmd,6")), None);
        assert_eq!(parse(b"$qUkdb.challenge"), None);
        assert_eq!(parse(b""), None);
    }

    #[test]
    fn the_policy_of_each_tier() {
        use Tier::*;
        let cases: &[(&str, [bool; 3])] = &[
            // body, [locked, read-only, full]
            ("qSupported:multiprocess+;xmlRegisters=i386", [true, true, true]),
            ("?", [true, true, true]),
            ("QStartNoAckMode", [true, true, true]),
            ("vMustReplyEmpty", [true, true, true]),
            ("qXfer:features:read:target.xml:0,ffb", [true, true, true]),
            ("Hg0", [true, true, true]),
            ("qUkdb.challenge", [true, true, true]),
            ("qUkdb.auth:ro,00", [true, true, true]),
            ("g", [false, true, true]),
            ("p10", [false, true, true]),
            ("m1000,10", [false, true, true]),
            ("x1000,10", [false, true, true]),
            ("qXfer:memory-map:read::0,fff", [false, true, true]),
            ("qUkdb.info", [false, true, true]),
            ("qUkdb.map:0", [false, true, true]),
            ("qUkdb.pages:1000,1000", [false, true, true]),
            ("c", [false, true, true]),
            ("s", [false, true, true]),
            ("vCont;c", [false, true, true]),
            ("vCont?", [false, true, true]),
            ("Z1,1000,1", [false, true, true]),
            ("Z2,1000,8", [false, true, true]),
            ("z4,1000,8", [false, true, true]),
            ("D", [false, true, true]),
            ("jThreadsInfo", [false, true, true]),
            ("QThreadSuffixSupported", [false, true, true]),
            ("M1000,1:00", [false, false, true]),
            ("X1000,1:\0", [false, false, true]),
            ("G00", [false, false, true]),
            ("P10=00", [false, false, true]),
            ("Z0,1000,1", [false, false, true]),
            ("z0,1000,1", [false, false, true]),
            ("Z5,1000,1", [false, false, true]),
            ("k", [false, false, true]),
            ("R00", [false, false, true]),
            ("vKill;1", [false, false, true]),
            ("vFile:open:2f", [false, false, true]),
            ("_M1000,rwx", [false, false, true]),
            ("qXfer:features:write:x:0:00", [false, false, true]),
            ("QPassSignals:0e", [false, false, true]),
            ("!", [false, false, true]),
            ("", [false, false, true]),
        ];
        for (body, expect) in cases {
            let p = packet(body);
            let got = [allowed(Locked, &p), allowed(ReadOnly, &p), allowed(Full, &p)];
            assert_eq!(&got, expect, "{body:?}");
        }
        let monitor: &[(&str, [bool; 3])] = &[
            ("", [true, true, true]),
            ("help", [true, true, true]),
            ("auth", [true, true, true]),
            ("auth ro 00", [true, true, true]),
            ("why", [false, true, true]),
            ("breakpoints", [false, true, true]),
            ("stats", [false, true, true]),
            ("unsafe-writes on", [false, false, true]),
            ("whyy", [false, false, true]),
        ];
        for (cmd, expect) in monitor {
            let p = rcmd(cmd);
            let got = [allowed(Locked, &p), allowed(ReadOnly, &p), allowed(Full, &p)];
            assert_eq!(&got, expect, "monitor {cmd:?}");
        }
        // Malformed or over-long monitor commands are refused.
        for p in [packet("qRcmd,7"), packet("qRcmd,zz"), rcmd(&"w".repeat(COMMAND_MAX + 1))] {
            assert_eq!([allowed(Locked, &p), allowed(ReadOnly, &p)], [false, false]);
        }
        // Not a whole packet.
        assert!(!allowed(ReadOnly, b"m1000,10"));
    }

    #[test]
    fn nonces_differ_even_from_the_same_words() {
        let mut pool = Pool::new();
        let a = pool.mix(&[0; 8], Source::Tsc);
        let b = pool.mix(&[0; 8], Source::Tsc);
        assert_ne!(a, b);
        let mut other = Pool::new();
        assert_eq!(other.mix(&[0; 8], Source::Tsc), a);
        assert_ne!(other.mix(&[1; 8], Source::Tsc), b);
    }
}
