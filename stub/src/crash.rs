//! The crash path (`ukdb.crash=dump`): on a panic or a fatal exception with
//! no debugger attached, the stub streams the unikernel's core over its
//! channel as a [`crate::dumpwire`] stream, then halts, resets the machine
//! or goes on as `then=` says. Shared by the full stub (called from the
//! session's fault/panic stop) and the dump-only build (`dump` without
//! `enabled`: called from `handle_trap` and `on_panic`).
//!
//! The stream: `HEADER`, the notes (reason, command line, build-id), the
//! registers, one `MAP` per entry of the page walk (`paging::for_each_run`
//! cut by `coremap::classify` at the edges of the declared RAM), then the
//! non-zero 4 KiB pages of every dumped entry as `DATA` records of up to 64
//! KiB, and `END`. Memory is read through its virtual address (the walk
//! found it present, cached and RAM), one page at a time into a buffer of
//! the stub's own, so a page that changes while it is sent (the stack the
//! dump runs on, that buffer itself) still makes a valid record.
//!
//! One dump per boot: a crash inside the dump, or a second crash after it,
//! is left to whoever handles it without the stub (no recursion).

use crate::arch;
use crate::config::{Config, Crash, Then};
use crate::coremap::Entry;
use crate::dumpwire::{self, Encoder};
use crate::global::{Global, SetOnce};
use crate::livemem::{self, each_entry};
use crate::TrapFrame;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

/// What made the crash.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// A panic: its message with the location, as `PanicInfo` prints it.
    Panic(&'a [u8]),
    /// A CPU exception: the vector and error code are in the frame; CR2 as
    /// read when the stub was entered.
    Exception {
        /// CR2 at the fault.
        cr2: u64,
    },
}

/// Raw bytes for the line.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8]);

/// Where the stream and the stub's messages go.
pub trait Channel {
    /// Whether the channel can carry a stream (a serial line can; the
    /// network stub has no peer to send to while nobody is attached).
    fn streams(&mut self) -> bool;
    /// A console line of the stub's own, outside the stream.
    fn say(&mut self, parts: &[&str]);
    /// Runs `body` with a sink of raw bytes on the line (no framing of the
    /// shared line: the stream escapes itself), holding the line meanwhile.
    fn stream(&mut self, body: &mut dyn FnMut(Sink<'_>));
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    then: Then,
    phys_offset: u64,
}

/// Set at init when the command line asked for crash dumps.
static SETTINGS: SetOnce<Settings> = SetOnce::new();
/// A dump began (once per boot; also the guard against re-entry).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Pages gathered for one `DATA` record: 64 KiB, the most a record holds.
const GROUP_PAGES: usize = 16;
const PAGE: usize = dumpwire::PAGE as usize;

#[repr(C, align(16))]
struct Pages([u8; GROUP_PAGES * PAGE]);
static PAGES: Global<Pages> = Global::new(Pages([0; GROUP_PAGES * PAGE]));

/// Takes the crash settings from `config` (once, at init).
pub fn configure(config: &Config) {
    if let Crash::Dump(then) = config.crash {
        SETTINGS.set(Settings { then, phys_offset: config.phys_offset });
    }
}

/// Whether `ukdb.crash=dump` is on and no dump was taken yet (lock-free).
#[cfg_attr(feature = "enabled", allow(dead_code))] // the session knows
pub fn armed() -> bool {
    SETTINGS.get().is_some() && !TAKEN.load(Ordering::Acquire)
}

/// Whether a fault on `vector` is fatal when nobody is attached: every
/// exception but the debug ones (#DB, #BP), NMI and machine checks (the
/// platform's). A #UD that is a planted breakpoint is the caller's to rule
/// out.
#[cfg_attr(feature = "enabled", allow(dead_code))] // the session classifies
pub fn fatal(vector: u64) -> bool {
    vector < 32 && !matches!(vector, 1 | 2 | 3 | 18)
}

/// The crash: streams the core if `ukdb.crash=dump` is on (once per boot),
/// then halts or resets as `then=` says. Returns when there is nothing to
/// do or for `then=wait`: `true` if it dumped (or tried to).
pub fn on_crash(frame: &TrapFrame, cause: Cause<'_>, out: &mut dyn Channel) -> bool {
    let Some(settings) = SETTINGS.get().copied() else { return false };
    if TAKEN.swap(true, Ordering::AcqRel) {
        return false;
    }
    dump(frame, cause, settings.phys_offset, out);
    match settings.then {
        Then::Halt => halt(),
        Then::Reboot => reboot(),
        Then::Wait => true,
    }
}

/// The registers beyond the frame, read first (before the page walk's
/// guarded reads can fault and change CR2).
struct Cpu {
    system: [u64; 7],
    fx: arch::FxArea,
}

fn read_cpu() -> Cpu {
    let (fs, gs) = arch::segment_bases();
    let system = [fs, gs, arch::cr0(), arch::cr2(), arch::cr3(), arch::cr4(), arch::efer()];
    let mut fx = arch::FxArea::zeroed();
    // The stub's own code does not use the x87/SSE registers (the target
    // has no SSE), so this is the unikernel's state.
    fx.save();
    Cpu { system, fx }
}

fn dump(frame: &TrapFrame, cause: Cause<'_>, phys_offset: u64, out: &mut dyn Channel) {
    let cpu = read_cpu();
    let walk = livemem::walk(arch::cpu_frame_mask());
    let ram = crate::info::ram();
    let mut dumped = 0u64;
    each_entry(&walk, phys_offset, &ram, |e| {
        if e.dumped() {
            dumped += e.len;
        }
    });
    if !out.streams() {
        out.say(&["ukdb: crash: no core stream on the network; attach with ukdb core --connect\n"]);
        return;
    }
    let mut text = Text::<32>::new();
    let _ = write!(text, "{}", dumped >> 20);
    out.say(&["ukdb: crash: streaming a core (", text.as_str(), " MiB mapped)\n"]);
    let mut bytes = 0u64;
    let mut pages = 0u64;
    out.stream(&mut |sink| {
        let mut count = |b: &[u8]| {
            bytes += b.len() as u64;
            sink(b);
        };
        let mut e = Encoder::start(&mut count);
        e.record(dumpwire::HEADER, &[&dumpwire::header(cause_byte(cause))]);
        let reason = reason(frame, cause);
        e.record(dumpwire::NOTE, &[&[dumpwire::note::REASON], reason.as_bytes()]);
        e.record(dumpwire::NOTE, &[&[dumpwire::note::CMDLINE], crate::info::cmdline()]);
        let id = crate::info::build_id();
        if !id.is_empty() {
            e.record(dumpwire::NOTE, &[&[dumpwire::note::BUILD_ID], id]);
        }
        regs(&mut e, frame, &cpu);
        each_entry(&walk, phys_offset, &ram, |m| {
            e.record(dumpwire::MAP, &[&dumpwire::map_entry(m.vaddr, m.paddr, m.len, m.flags)]);
        });
        if let Some(mut buf) = PAGES.lock() {
            each_entry(&walk, phys_offset, &ram, |m| {
                if m.dumped() {
                    data(&mut e, &m, &mut buf.0);
                }
            });
        }
        pages = e.end();
    });
    let mut text = Text::<64>::new();
    let _ = write!(text, "{} pages, {} bytes", pages, bytes);
    out.say(&["ukdb: crash: core sent (", text.as_str(), ")\n"]);
}

fn cause_byte(cause: Cause<'_>) -> u8 {
    match cause {
        Cause::Panic(_) => dumpwire::cause::PANIC,
        Cause::Exception { .. } => dumpwire::cause::EXCEPTION,
    }
}

/// The reason note: the panic message, or the exception with where it
/// happened.
fn reason(frame: &TrapFrame, cause: Cause<'_>) -> Text<256> {
    let mut text = Text::new();
    match cause {
        Cause::Panic(message) => text.push(message),
        Cause::Exception { cr2 } => {
            let name = crate::vectors::name(frame.vector);
            let _ = write!(text, "{} at rip {:#x} (", name, frame.rip);
            if frame.vector == 14 {
                let _ = write!(text, "cr2 {:#x}, ", cr2);
            }
            let _ = write!(text, "error {:#x})", frame.error_code);
        }
    }
    text
}

fn regs(e: &mut Encoder<impl FnMut(&[u8])>, frame: &TrapFrame, cpu: &Cpu) {
    let f = frame;
    let quads = [
        f.r15,
        f.r14,
        f.r13,
        f.r12,
        f.r11,
        f.r10,
        f.r9,
        f.r8,
        f.rbp,
        f.rdi,
        f.rsi,
        f.rdx,
        f.rcx,
        f.rbx,
        f.rax,
        f.vector,
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
    ];
    if !e.begin(dumpwire::REGS, dumpwire::REGS_LEN) {
        return;
    }
    e.feed(&[0; 8]);
    for q in quads.iter().chain(&cpu.system) {
        e.feed(&q.to_le_bytes());
    }
    e.feed(&cpu.fx.0);
    e.finish();
}

/// The non-zero pages of `m` as `DATA` records (see
/// [`crate::coremap::nonzero_groups`]).
fn data(e: &mut Encoder<impl FnMut(&[u8])>, m: &Entry, buf: &mut [u8]) {
    let read_page = |vaddr: u64, slot: &mut [u8]| {
        let n = slot.len().min(PAGE);
        // SAFETY: the page walk found this page present, cached and in the
        // declared RAM, and the world is stopped. `copy` allows the source
        // to be (part of) this buffer, whose own pages are dumped like any
        // other.
        unsafe { core::ptr::copy(vaddr as *const u8, slot.as_mut_ptr(), n) };
    };
    crate::coremap::nonzero_groups(m, buf, read_page, |paddr, pages| {
        e.record(dumpwire::DATA, &[&paddr.to_le_bytes(), pages]);
    });
}

/// `cli; hlt` for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: stops this CPU; nothing is left to run.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Resets the machine: the PCI reset control register (0xCF9: a hard
/// reset), the keyboard controller's reset line, then a triple fault.
pub fn reboot() -> ! {
    // SAFETY: 0xCF9 and 0x64 are the platform's reset ports; writing them
    // resets the machine, which is what is wanted (nothing else runs).
    unsafe {
        arch::outb(0xCF9, 0x02);
        arch::outb(0xCF9, 0x06);
        arch::outb(0x64, 0xFE);
    }
    // A triple fault: no IDT, then an exception.
    let idt = [0u16; 5];
    // SAFETY: loads an empty IDT; the `int3` after it cannot be delivered,
    // which shuts the CPU down (a reset), and nothing runs after it.
    unsafe {
        core::arch::asm!("cli", "lidt [{}]", "int3", in(reg) idt.as_ptr(), options(nostack));
    }
    halt()
}

/// Text formatted into a fixed buffer, truncated when full.
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// Empty.
    pub const fn new() -> Self {
        Text { buf: [0; N], len: 0 }
    }

    /// Appends what fits of `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The text so far (what is valid UTF-8 of it).
    pub fn as_str(&self) -> &str {
        let bytes = self.as_bytes();
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}
