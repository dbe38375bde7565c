//! A [`Snapshot`] as an ELF core file, and what `ukdb inspect` reads back.
//!
//! The file is what gdb 13 and lldb 14 expect of an x86_64 Linux core, so
//! they open it with the unikernel's (bare-metal) image and no setting:
//!
//! - ELF64 little-endian, `ET_CORE`, `EM_X86_64`, `EI_OSABI` 3 (Linux):
//!   lldb 14 refuses a core whose OS it cannot tell ("Don't know how to
//!   parse core file. Unsupported OS." with `EI_OSABI` 0, the image being
//!   bare metal), and gdb 13 reads Linux cores either way;
//! - one `PT_NOTE`: `CORE`/`NT_PRSTATUS` (Linux's 336-byte `elf_prstatus`:
//!   the signal, pid 1, the registers in `user_regs_struct` order),
//!   `CORE`/`NT_PRPSINFO` (`pr_fname` the image's file name, `pr_psargs`
//!   the name and the command line: gdb compares `pr_fname` with its
//!   executable's file name and warns "core file may not match specified
//!   executable file" when they differ), with the image known `CORE`/
//!   `NT_AUXV` (`AT_ENTRY`: lldb 14 loads the executable of a Linux core at
//!   `AT_ENTRY - e_entry`, and not at all without it) and `CORE`/`NT_FILE`
//!   (the image's read-only segments: gdb 13 then reads what the core
//!   does not store through them, each read stopping at the end of a
//!   `p_filesz == 0` run, instead of from its executable's sections, whose
//!   `.bss` reads as zeros for as far as it goes, over stored pages),
//!   `CORE`/`NT_FPREGSET` (the FXSAVE area), `GNU`/
//!   `NT_GNU_BUILD_ID` (the image's build-id) and `UKDB`/1 ([`UKDB_NOTE`]:
//!   the reason, the command line, the build-id, the cause and the
//!   exception, one `key=value` a line);
//! - `PT_LOAD`s at the **virtual** addresses of every map entry that is RAM
//!   (not `DEVICE`, not `NOT_RAM`; aliases included), with the physical
//!   address in `p_paddr` and `PF_R` plus `PF_W`/`PF_X` from the map flags.
//!   Each entry is cut into runs of stored pages (`p_filesz == p_memsz`)
//!   and runs of zero pages (`p_filesz == 0`, read as zeros). A physical
//!   page is in the file once: every mapping of it points at the same file
//!   offset.
//!
//! More than 65534 program headers use the ELF extension for it (`e_phnum
//! = PN_XNUM`, the count in section header 0's `sh_info`), which both
//! debuggers read.
//!
//! The signal a core reports ("Program terminated with signal ..."), from
//! the cause and the exception vector ([`signal`]): a panic is `SIGABRT`;
//! a divide error (0) and the x87/SIMD floating-point errors (16, 19) are
//! `SIGFPE`; an invalid opcode (6) `SIGILL`; a debug exception or a
//! breakpoint (1, 3) `SIGTRAP`; an alignment check (17) `SIGBUS`; every
//! other exception (page fault, general protection, segment faults, ...)
//! `SIGSEGV`; a snapshot of a running unikernel `SIGTRAP`, as a debugger's
//! stop.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use object::elf;
use object::read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _};
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::{Endianness, Object as _};
use ukdb_stub::dumpwire::{cause, map};

use super::{frame, Image, Snapshot, PAGE};

/// The name of ukdb's own note.
pub const UKDB_NOTE: &[u8] = b"UKDB";
/// The type of ukdb's note: text, `key=value` lines.
pub const NT_UKDB_INFO: u32 = 1;
/// The process name in `NT_PRPSINFO` when the image's is unknown.
pub const FNAME: &str = "unikernel";

/// `AT_NULL`: the end of an auxiliary vector.
pub const AT_NULL: u64 = 0;
/// `AT_PAGESZ`: the page size.
pub const AT_PAGESZ: u64 = 6;
/// `AT_ENTRY`: the executable's entry point.
pub const AT_ENTRY: u64 = 9;

/// Linux's `SIGILL`.
pub const SIGILL: u8 = 4;
/// Linux's `SIGTRAP`.
pub const SIGTRAP: u8 = 5;
/// Linux's `SIGABRT`.
pub const SIGABRT: u8 = 6;
/// Linux's `SIGBUS`.
pub const SIGBUS: u8 = 7;
/// Linux's `SIGFPE`.
pub const SIGFPE: u8 = 8;
/// Linux's `SIGSEGV`.
pub const SIGSEGV: u8 = 11;

/// The size of Linux x86_64's `elf_prstatus`.
const PRSTATUS_LEN: usize = 336;
/// Where `pr_reg` starts in it.
const PRSTATUS_REG: usize = 112;
/// The size of Linux x86_64's `elf_prpsinfo`.
const PRPSINFO_LEN: usize = 136;
/// Where the file data (pages) starts: page aligned, like `p_align`.
const DATA_ALIGN: u64 = PAGE;
/// The largest `e_phnum` that is a count (`PN_XNUM` and above are not).
const PN_XNUM: u32 = 0xffff;

/// The signal a core of `snapshot` reports (see the [module docs](self)).
pub fn signal(snapshot: &Snapshot) -> u8 {
    match snapshot.cause {
        cause::PANIC => SIGABRT,
        cause::EXCEPTION => match snapshot.cpu.frame[frame::VECTOR] {
            0 | 16 | 19 => SIGFPE,
            6 => SIGILL,
            1 | 3 => SIGTRAP,
            17 => SIGBUS,
            _ => SIGSEGV,
        },
        _ => SIGTRAP,
    }
}

/// One `PT_LOAD` of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`: 0 for a run of zero pages.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_flags` (`PF_R`, `PF_W`, `PF_X`).
    pub flags: u32,
}

/// The layout of a core: its segments and the physical pages stored, in
/// file order.
struct Layout {
    loads: Vec<Load>,
    /// The stored pages' physical addresses, in file order (ascending).
    stored: Vec<u64>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn p_flags(flags: u32) -> u32 {
    let mut p = elf::PF_R;
    if flags & map::WRITE != 0 {
        p |= elf::PF_W;
    }
    if flags & map::EXEC != 0 {
        p |= elf::PF_X;
    }
    p
}

/// Plans the segments; file offsets are relative to the start of the data.
fn layout(snapshot: &Snapshot) -> io::Result<Layout> {
    for (&paddr, page) in &snapshot.pages {
        if paddr % PAGE != 0 || page.len() as u64 != PAGE {
            return Err(invalid(format!("page {paddr:#x} is not one aligned 4 KiB page")));
        }
    }
    let dumped: Vec<_> = snapshot.map.iter().filter(|e| e.dumped() && e.len > 0).collect();
    // The pages some dumped entry refers to, each stored once.
    let mut index: BTreeMap<u64, u64> = BTreeMap::new();
    for e in &dumped {
        if e.vaddr % PAGE != 0 || e.paddr % PAGE != 0 || e.len % PAGE != 0 {
            return Err(invalid(format!(
                "map entry {:#x} -> {:#x} ({:#x} bytes) is not page aligned",
                e.vaddr, e.paddr, e.len
            )));
        }
        let end = e.paddr.checked_add(e.len).ok_or_else(|| invalid("map entry wraps".into()))?;
        e.vaddr.checked_add(e.len).ok_or_else(|| invalid("map entry wraps".into()))?;
        for &p in snapshot.pages.range(e.paddr..end).map(|(p, _)| p) {
            index.insert(p, 0);
        }
    }
    let mut stored = Vec::with_capacity(index.len());
    for (i, (&p, slot)) in index.iter_mut().enumerate() {
        *slot = i as u64 * PAGE;
        stored.push(p);
    }
    let mut loads = Vec::new();
    for e in dumped {
        let flags = p_flags(e.flags);
        let end = e.paddr + e.len;
        let vaddr = |p: u64| e.vaddr + (p - e.paddr);
        let mut cursor = e.paddr;
        // The present run being built: its first page and its length.
        let mut run: Option<(u64, u64)> = None;
        let flush = |run: &mut Option<(u64, u64)>, loads: &mut Vec<Load>| {
            if let Some((start, len)) = run.take() {
                loads.push(Load {
                    vaddr: vaddr(start),
                    paddr: start,
                    offset: index[&start],
                    filesz: len,
                    memsz: len,
                    flags,
                });
            }
        };
        for (&p, _) in snapshot.pages.range(e.paddr..end) {
            if p > cursor {
                flush(&mut run, &mut loads);
                loads.push(Load {
                    vaddr: vaddr(cursor),
                    paddr: cursor,
                    offset: 0,
                    filesz: 0,
                    memsz: p - cursor,
                    flags,
                });
            }
            match &mut run {
                Some((_, len)) => *len += PAGE,
                None => run = Some((p, PAGE)),
            }
            cursor = p + PAGE;
        }
        flush(&mut run, &mut loads);
        if cursor < end {
            loads.push(Load {
                vaddr: vaddr(cursor),
                paddr: cursor,
                offset: 0,
                filesz: 0,
                memsz: end - cursor,
                flags,
            });
        }
    }
    Ok(Layout { loads, stored })
}

/// Appends one note (4-byte aligned name and descriptor, as Linux cores).
fn note(out: &mut Vec<u8>, name: &[u8], ty: u32, desc: &[u8]) {
    let namesz = name.len() as u32 + 1;
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The registers in Linux x86_64 `user_regs_struct` order.
fn user_regs(snapshot: &Snapshot) -> [u64; 27] {
    let f = &snapshot.cpu.frame;
    let [ds, es, fs, gs] = snapshot.cpu.data_selectors.map(u64::from);
    [
        f[frame::R15],
        f[frame::R14],
        f[frame::R13],
        f[frame::R12],
        f[frame::RBP],
        f[frame::RBX],
        f[frame::R11],
        f[frame::R10],
        f[frame::R9],
        f[frame::R8],
        f[frame::RAX],
        f[frame::RCX],
        f[frame::RDX],
        f[frame::RSI],
        f[frame::RDI],
        // orig_rax: -1, not in a system call (nothing to restart).
        u64::MAX,
        f[frame::RIP],
        f[frame::CS],
        f[frame::RFLAGS],
        f[frame::RSP],
        f[frame::SS],
        snapshot.cpu.fs_base,
        snapshot.cpu.gs_base,
        ds,
        es,
        fs,
        gs,
    ]
}

/// Escapes a value for one line of the ukdb note: `\` and newlines.
fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of the ukdb note of `snapshot`.
pub fn ukdb_note_text(snapshot: &Snapshot) -> String {
    let f = &snapshot.cpu.frame;
    format!(
        "reason={}\ncmdline={}\nbuild-id={}\ncause={}\nvector={}\nerror={:#x}\ncr2={:#x}\n",
        escape_value(&snapshot.reason),
        escape_value(&snapshot.cmdline),
        hex(&snapshot.build_id),
        snapshot.cause,
        f[frame::VECTOR],
        f[frame::ERROR_CODE],
        snapshot.cpu.cr2,
    )
}

/// The process name of a core of `snapshot`: the image's file name, or
/// [`FNAME`].
pub fn process_name(snapshot: &Snapshot) -> &str {
    if snapshot.name.is_empty() {
        FNAME
    } else {
        &snapshot.name
    }
}

/// Linux x86_64's `elf_prpsinfo` of `snapshot`: `pr_fname` is the process
/// name (its first 16 bytes, NUL-terminated when shorter: bfd reads all 16),
/// `pr_psargs` the name, a space and the command line (79 bytes at most,
/// NUL-terminated). gdb compares `pr_fname` with its executable's file name
/// ("core file may not match specified executable file" when they differ)
/// and prints `pr_psargs` ("Core was generated by `...'.").
fn prpsinfo(snapshot: &Snapshot) -> [u8; PRPSINFO_LEN] {
    let mut prpsinfo = [0u8; PRPSINFO_LEN];
    // pr_state 0 (running), pr_sname 'R'; pr_pid, pr_ppid, pr_pgrp, pr_sid.
    prpsinfo[1] = b'R';
    prpsinfo[24..28].copy_from_slice(&1u32.to_le_bytes());
    prpsinfo[32..36].copy_from_slice(&1u32.to_le_bytes());
    prpsinfo[36..40].copy_from_slice(&1u32.to_le_bytes());
    let name = process_name(snapshot);
    let fname = name.as_bytes();
    let n = fname.len().min(16);
    prpsinfo[40..40 + n].copy_from_slice(&fname[..n]);
    let psargs = if snapshot.cmdline.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", snapshot.cmdline)
    };
    let args = psargs.as_bytes();
    let n = args.len().min(79);
    prpsinfo[56..56 + n].copy_from_slice(&args[..n]);
    prpsinfo
}

/// The auxiliary vector of a core (`NT_AUXV`): `AT_ENTRY` (the image's
/// entry point), `AT_PAGESZ`, `AT_NULL`. lldb 14 loads the executable of a
/// Linux core at `AT_ENTRY` minus the executable's `e_entry` (its
/// POSIX-DYLD loader's load offset); without `AT_ENTRY` it does not load
/// it at all (frames without names, globals read as 0).
fn auxv(entry: u64) -> Vec<u8> {
    [AT_ENTRY, entry, AT_PAGESZ, PAGE, AT_NULL, 0].iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The file mappings of a core (`NT_FILE`, Linux's layout: the count,
/// the page size, `start`, `end`, `offset / page size` per mapping, then
/// the NUL-terminated file names): the image's read-only segments.
///
/// gdb 13 reads the memory a core does not store (the `p_filesz == 0`
/// runs of zero pages) from these mappings when a core has them, and
/// otherwise from its executable's sections, for as far as the section
/// goes: a read that starts in a zero run inside the image's `.bss`
/// (`NOBITS`, read as zeros) would then return zeros past the run's end,
/// over stored pages. With `NT_FILE` such a read stops at the run's end
/// and goes on from the next segment. lldb 14 takes the first mapping's
/// file as the executable when it is given none (`lldb -c CORE`).
fn nt_file(image: &Image) -> Vec<u8> {
    let mut out = Vec::new();
    let word = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
    word(&mut out, image.mappings.len() as u64);
    word(&mut out, PAGE);
    for m in &image.mappings {
        word(&mut out, m.start);
        word(&mut out, m.end);
        word(&mut out, m.offset / PAGE);
    }
    let path = image.path.as_os_str().as_encoded_bytes();
    for _ in &image.mappings {
        out.extend_from_slice(path);
        out.push(0);
    }
    out
}

fn notes(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    let sig = signal(snapshot);
    let mut prstatus = [0u8; PRSTATUS_LEN];
    // pr_info.si_signo, then pr_cursig.
    prstatus[0..4].copy_from_slice(&u32::from(sig).to_le_bytes());
    prstatus[12..14].copy_from_slice(&u16::from(sig).to_le_bytes());
    // pr_pid, pr_ppid, pr_pgrp, pr_sid.
    prstatus[32..36].copy_from_slice(&1u32.to_le_bytes());
    prstatus[40..44].copy_from_slice(&1u32.to_le_bytes());
    prstatus[44..48].copy_from_slice(&1u32.to_le_bytes());
    for (i, reg) in user_regs(snapshot).iter().enumerate() {
        let at = PRSTATUS_REG + 8 * i;
        prstatus[at..at + 8].copy_from_slice(&reg.to_le_bytes());
    }
    // pr_fpvalid: NT_FPREGSET follows.
    prstatus[328..332].copy_from_slice(&1u32.to_le_bytes());
    note(&mut out, b"CORE", elf::NT_PRSTATUS, &prstatus);

    note(&mut out, b"CORE", elf::NT_PRPSINFO, &prpsinfo(snapshot));
    if let Some(image) = &snapshot.image {
        note(&mut out, b"CORE", elf::NT_AUXV, &auxv(image.entry));
        if !image.mappings.is_empty() {
            note(&mut out, b"CORE", elf::NT_FILE, &nt_file(image));
        }
    }
    note(&mut out, b"CORE", elf::NT_FPREGSET, &snapshot.cpu.fxsave);
    if !snapshot.build_id.is_empty() {
        note(&mut out, b"GNU", elf::NT_GNU_BUILD_ID, &snapshot.build_id);
    }
    note(&mut out, UKDB_NOTE, NT_UKDB_INFO, ukdb_note_text(snapshot).as_bytes());
    out
}

/// Writes `snapshot` as an ELF core to `out` (see the [module
/// docs](self)); returns the number of bytes written. Fails with
/// `InvalidInput` on a snapshot whose map or pages are not page aligned.
pub fn write_core(snapshot: &Snapshot, out: &mut impl Write) -> io::Result<u64> {
    let Layout { loads, stored } = layout(snapshot)?;
    let notes = notes(snapshot);
    let phnum = loads.len() as u32 + 1;
    let xnum = phnum >= PN_XNUM;

    let mut head = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut head);
    w.reserve_file_header();
    w.reserve_program_headers(phnum);
    if xnum {
        // Section 0 carries the count; a .shstrtab makes the table one
        // that readers (object among them) accept.
        w.reserve_shstrtab_section_index();
        w.reserve_shstrtab();
        w.reserve_section_headers();
    }
    let notes_offset = w.reserve(notes.len(), 4) as u64;
    let data_start = (w.reserved_len() as u64).next_multiple_of(DATA_ALIGN);

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_LINUX,
        abi_version: 0,
        e_type: elf::ET_CORE,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: 0,
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_NOTE,
        p_flags: 0,
        p_offset: notes_offset,
        p_vaddr: 0,
        p_paddr: 0,
        p_filesz: notes.len() as u64,
        p_memsz: 0,
        p_align: 4,
    });
    for l in &loads {
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: l.flags,
            p_offset: if l.filesz == 0 { data_start } else { data_start + l.offset },
            p_vaddr: l.vaddr,
            p_paddr: l.paddr,
            p_filesz: l.filesz,
            p_memsz: l.memsz,
            p_align: PAGE,
        });
    }
    if xnum {
        w.write_shstrtab();
        w.write_null_section_header();
        w.write_shstrtab_section_header();
    }
    w.write_align(4);
    w.write(&notes);
    drop(w);
    if xnum {
        // e_phnum = PN_XNUM; section header 0's sh_info = the count.
        head[56..58].copy_from_slice(&(PN_XNUM as u16).to_le_bytes());
        let mut shoff = [0u8; 8];
        shoff.copy_from_slice(&head[40..48]);
        let at = u64::from_le_bytes(shoff) as usize;
        head[at + 44..at + 48].copy_from_slice(&phnum.to_le_bytes());
    }
    head.resize(data_start as usize, 0);
    out.write_all(&head)?;
    for p in &stored {
        out.write_all(&snapshot.pages[p])?;
    }
    out.flush()?;
    Ok(data_start + stored.len() as u64 * PAGE)
}

/// What `ukdb inspect` shows of a core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreInfo {
    /// The ukdb note's reason.
    pub reason: String,
    /// The command line.
    pub cmdline: String,
    /// The GNU build-id note (the ukdb note's when there is none).
    pub build_id: Vec<u8>,
    /// `ukdb_stub::dumpwire::cause`.
    pub cause: u8,
    /// The exception vector.
    pub vector: u64,
    /// The exception's error code.
    pub error: u64,
    /// CR2.
    pub cr2: u64,
    /// The signal of `NT_PRSTATUS`.
    pub signal: u8,
    /// RIP from `NT_PRSTATUS`.
    pub rip: u64,
    /// The `PT_LOAD`s.
    pub loads: Vec<Load>,
    /// Whether the ukdb note was there (a core ukdb wrote).
    pub ukdb_note: bool,
    /// `pr_fname` of `NT_PRPSINFO`.
    pub name: String,
    /// `pr_psargs` of `NT_PRPSINFO`.
    pub psargs: String,
    /// `AT_ENTRY` of `NT_AUXV` (`None`: no such note or entry).
    pub entry: Option<u64>,
}

/// Why a file is not a core ukdb can read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not an ELF file `object` can parse.
    #[error("not an ELF file: {0}")]
    Elf(#[from] object::read::Error),
    /// An ELF file but not an x86_64 core.
    #[error("not an x86_64 ELF core file")]
    NotCore,
}

/// Reads the notes and segments of a core file's bytes.
pub fn read_info(data: &[u8]) -> Result<CoreInfo, ReadError> {
    let file = ElfFile64::<Endianness>::parse(data)?;
    let header = file.elf_header();
    let endian = file.endian();
    if header.e_type(endian) != elf::ET_CORE || header.e_machine(endian) != elf::EM_X86_64 {
        return Err(ReadError::NotCore);
    }
    let mut info = CoreInfo::default();
    for ph in file.elf_program_headers() {
        match ph.p_type(endian) {
            elf::PT_LOAD => info.loads.push(Load {
                vaddr: ph.p_vaddr(endian),
                paddr: ph.p_paddr(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
                memsz: ph.p_memsz(endian),
                flags: ph.p_flags(endian),
            }),
            elf::PT_NOTE => {
                let Some(mut notes) = ph.notes(endian, data)? else { continue };
                let mut ukdb_build_id = None;
                while let Some(note) = notes.next()? {
                    match (note.name(), note.n_type(endian)) {
                        (b"CORE", elf::NT_PRSTATUS) => {
                            let desc = note.desc();
                            if let Some(s) = desc.get(12..14) {
                                info.signal = s[0];
                            }
                            let rip_at = PRSTATUS_REG + 16 * 8;
                            if let Some(b) = desc.get(rip_at..rip_at + 8) {
                                info.rip = u64::from_le_bytes(b.try_into().unwrap_or_default());
                            }
                        }
                        (b"CORE", elf::NT_PRPSINFO) => {
                            let desc = note.desc();
                            info.name = c_string(desc.get(40..56).unwrap_or_default());
                            info.psargs = c_string(desc.get(56..136).unwrap_or_default());
                        }
                        (b"CORE", elf::NT_AUXV) => info.entry = aux_value(note.desc(), AT_ENTRY),
                        (b"GNU", elf::NT_GNU_BUILD_ID) => info.build_id = note.desc().to_vec(),
                        (UKDB_NOTE, NT_UKDB_INFO) => {
                            info.ukdb_note = true;
                            let text = String::from_utf8_lossy(note.desc());
                            for line in text.lines() {
                                let Some((key, value)) = line.split_once('=') else { continue };
                                let num = || parse_num(value).unwrap_or(0);
                                match key {
                                    "reason" => info.reason = unescape_value(value),
                                    "cmdline" => info.cmdline = unescape_value(value),
                                    "build-id" => ukdb_build_id = unhex(value),
                                    "cause" => info.cause = num() as u8,
                                    "vector" => info.vector = num(),
                                    "error" => info.error = num(),
                                    "cr2" => info.cr2 = num(),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if info.build_id.is_empty() {
                    info.build_id = ukdb_build_id.unwrap_or_default();
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The text of a fixed-size C string field: up to its first NUL.
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

/// The value of `key` in an auxiliary vector (64-bit little-endian pairs,
/// up to `AT_NULL`).
fn aux_value(auxv: &[u8], key: u64) -> Option<u64> {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    auxv.chunks_exact(16)
        .map(|pair| (word(&pair[..8]), word(&pair[8..])))
        .take_while(|&(k, _)| k != AT_NULL)
        .find(|&(k, _)| k == key)
        .map(|(_, v)| v)
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Bytes of a hex string; `None` when it is not one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The entry point (`e_entry`) of an ELF image (`None`: it is not an ELF
/// file).
pub fn image_entry(data: &[u8]) -> Option<u64> {
    object::File::parse(data).ok().map(|f| f.entry())
}

/// Writes the core of `snapshot` as `path`, atomically: to a temporary
/// file beside it (`NAME.partial-XXXXXX`), flushed and synced, then
/// renamed, so `path` is never a partial core; the temporary file is
/// removed on any failure. Returns the core's size.
pub fn write_core_file(snapshot: &Snapshot, path: &Path) -> io::Result<u64> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = tempfile::Builder::new().prefix(&format!("{name}.partial-")).tempfile_in(dir)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, temp);
    let size = write_core(snapshot, &mut out)?;
    out.flush()?;
    let temp = out.into_inner().map_err(|e| e.into_error())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // The rename itself reaches the disk.
        let _ = d.sync_all();
    }
    Ok(size)
}

/// The GNU build-id of an ELF image (`None`: it has none, or it is not an
/// ELF file).
pub fn image_build_id(data: &[u8]) -> Option<Vec<u8>> {
    let file = object::File::parse(data).ok()?;
    file.build_id().ok().flatten().map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::super::{Cpu, FileMapping, MapEntry};
    use super::*;
    use object::read::elf::ElfFile64;
    use std::path::Path;

    fn page(byte: u8) -> Vec<u8> {
        vec![byte; PAGE as usize]
    }

    /// Text at 0xffff_8000_0010_0000 (phys 0x10_0000, 4 pages, pages 0 and
    /// 2 present), data aliased at a second address, a device, not-RAM.
    fn sample() -> Snapshot {
        let mut cpu = Cpu::default();
        cpu.frame[frame::RIP] = 0xffff_8000_0010_0123;
        cpu.frame[frame::RSP] = 0xffff_8000_0020_0ff0;
        cpu.frame[frame::RAX] = 0x1111;
        cpu.frame[frame::RBX] = 0x2222;
        cpu.frame[frame::RBP] = 0x3333;
        cpu.frame[frame::CS] = 8;
        cpu.frame[frame::SS] = 0x10;
        cpu.frame[frame::RFLAGS] = 0x46;
        cpu.frame[frame::VECTOR] = 14;
        cpu.frame[frame::ERROR_CODE] = 2;
        cpu.cr2 = 0xdead_0000;
        cpu.fxsave[160] = 0xab; // xmm0's first byte
        let mut pages = BTreeMap::new();
        pages.insert(0x10_0000, page(0x90));
        pages.insert(0x10_2000, page(0xcc));
        pages.insert(0x20_0000, page(0x42));
        // Referenced by no dumped entry: not stored.
        pages.insert(0x90_0000, page(0x77));
        Snapshot {
            cause: cause::EXCEPTION,
            reason: "page fault at 0xdead0000\n(write)".into(),
            cmdline: "ukdb.crash=dump console=ttyS0".into(),
            build_id: vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4],
            cpu,
            map: vec![
                MapEntry {
                    vaddr: 0xffff_8000_0010_0000,
                    paddr: 0x10_0000,
                    len: 0x4000,
                    flags: map::EXEC,
                },
                MapEntry {
                    vaddr: 0xffff_8000_0020_0000,
                    paddr: 0x20_0000,
                    len: 0x1000,
                    flags: map::WRITE,
                },
                MapEntry {
                    vaddr: 0xffff_9000_0020_0000,
                    paddr: 0x20_0000,
                    len: 0x1000,
                    flags: map::WRITE | map::ALIAS,
                },
                MapEntry {
                    vaddr: 0xffff_a000_0000_0000,
                    paddr: 0xfee0_0000,
                    len: 0x1000,
                    flags: map::WRITE | map::DEVICE,
                },
                MapEntry {
                    vaddr: 0xffff_a000_1000_0000,
                    paddr: 0x9000_0000,
                    len: 0x1000,
                    flags: map::NOT_RAM,
                },
            ],
            pages,
            ..Snapshot::default()
        }
    }

    /// `sample()` of a known image, `ukdemo` at `/images/ukdemo`.
    fn with_image() -> Snapshot {
        Snapshot {
            name: "ukdemo".into(),
            image: Some(Image {
                path: "/images/ukdemo".into(),
                entry: 0xffff_8000_0010_0040,
                mappings: vec![
                    FileMapping {
                        start: 0xffff_8000_0010_0000,
                        end: 0xffff_8000_0010_3000,
                        offset: 0x1000,
                    },
                    FileMapping {
                        start: 0xffff_8000_0010_3000,
                        end: 0xffff_8000_0010_3123,
                        offset: 0x4000,
                    },
                ],
            }),
            ..sample()
        }
    }

    /// The descriptors of the `CORE` notes of `ty` in `core`.
    fn core_notes(core: &[u8], ty: u32) -> Vec<Vec<u8>> {
        let file = ElfFile64::<Endianness>::parse(core).unwrap();
        let e = file.endian();
        let mut notes = file.elf_program_headers()[0].notes(e, core).unwrap().unwrap();
        let mut found = Vec::new();
        while let Some(n) = notes.next().unwrap() {
            if n.name() == b"CORE" && n.n_type(e) == ty {
                found.push(n.desc().to_vec());
            }
        }
        found
    }

    fn written(s: &Snapshot) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_core(s, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn loads_follow_the_map_with_shared_file_pages() {
        let core = written(&sample());
        let info = read_info(&core).unwrap();
        let r = elf::PF_R;
        let got: Vec<_> =
            info.loads.iter().map(|l| (l.vaddr, l.paddr, l.filesz, l.memsz, l.flags)).collect();
        assert_eq!(
            got,
            vec![
                (0xffff_8000_0010_0000, 0x10_0000, 0x1000, 0x1000, r | elf::PF_X),
                (0xffff_8000_0010_1000, 0x10_1000, 0, 0x1000, r | elf::PF_X),
                (0xffff_8000_0010_2000, 0x10_2000, 0x1000, 0x1000, r | elf::PF_X),
                (0xffff_8000_0010_3000, 0x10_3000, 0, 0x1000, r | elf::PF_X),
                (0xffff_8000_0020_0000, 0x20_0000, 0x1000, 0x1000, r | elf::PF_W),
                (0xffff_9000_0020_0000, 0x20_0000, 0x1000, 0x1000, r | elf::PF_W),
            ]
        );
        // Three pages stored, once each; the alias shares its file offset.
        assert_eq!(info.loads[4].offset, info.loads[5].offset);
        assert_eq!(core.len() as u64, info.loads[0].offset + 3 * PAGE);
        for (l, byte) in [(0, 0x90), (2, 0xcc), (4, 0x42), (5, 0x42)] {
            let at = info.loads[l].offset as usize;
            assert_eq!(core[at..at + PAGE as usize], page(byte)[..], "load {l}");
            assert_eq!(info.loads[l].offset % PAGE, 0);
        }
    }

    #[test]
    fn notes_hold_registers_signal_and_ukdb_info() {
        let s = sample();
        let core = written(&s);
        let info = read_info(&core).unwrap();
        assert_eq!(info.reason, s.reason);
        assert_eq!(info.cmdline, s.cmdline);
        assert_eq!(info.build_id, s.build_id);
        assert_eq!((info.cause, info.vector, info.error, info.cr2), (2, 14, 2, 0xdead_0000));
        assert_eq!((info.signal, info.rip), (SIGSEGV, 0xffff_8000_0010_0123));
        assert!(info.ukdb_note);

        let file = ElfFile64::<Endianness>::parse(&core[..]).unwrap();
        let e = file.endian();
        assert_eq!(file.elf_header().e_ident().os_abi, elf::ELFOSABI_LINUX);
        let ph = file.elf_program_headers();
        assert_eq!(ph[0].p_type(e), elf::PT_NOTE);
        let mut notes = ph[0].notes(e, &core[..]).unwrap().unwrap();
        let mut seen = Vec::new();
        while let Some(n) = notes.next().unwrap() {
            seen.push((n.name().to_vec(), n.n_type(e), n.desc().len()));
            if n.n_type(e) == elf::NT_PRSTATUS && n.name() == b"CORE" {
                let d = n.desc();
                let reg =
                    |i: usize| u64::from_le_bytes(d[112 + 8 * i..120 + 8 * i].try_into().unwrap());
                // rbp, rbx, rax, orig_rax, rip, cs, eflags, rsp, ss.
                assert_eq!(reg(4), 0x3333);
                assert_eq!(reg(5), 0x2222);
                assert_eq!(reg(10), 0x1111);
                assert_eq!(reg(15), u64::MAX);
                assert_eq!(reg(16), 0xffff_8000_0010_0123);
                assert_eq!(
                    (reg(17), reg(18), reg(19), reg(20)),
                    (8, 0x46, 0xffff_8000_0020_0ff0, 0x10)
                );
                assert_eq!(d[32..36], 1u32.to_le_bytes());
            }
            if n.n_type(e) == elf::NT_PRPSINFO && n.name() == b"CORE" {
                assert_eq!(&n.desc()[40..56], b"unikernel\0\0\0\0\0\0\0");
                assert_eq!(&n.desc()[56..96], b"unikernel ukdb.crash=dump console=ttyS0\0");
            }
            if n.n_type(e) == elf::NT_FPREGSET && n.name() == b"CORE" {
                assert_eq!(n.desc()[160], 0xab);
            }
        }
        assert_eq!(
            seen,
            vec![
                (b"CORE".to_vec(), elf::NT_PRSTATUS, 336),
                (b"CORE".to_vec(), elf::NT_PRPSINFO, 136),
                (b"CORE".to_vec(), elf::NT_FPREGSET, 512),
                (b"GNU".to_vec(), elf::NT_GNU_BUILD_ID, 8),
                (b"UKDB".to_vec(), NT_UKDB_INFO, ukdb_note_text(&s).len()),
            ]
        );
        assert_eq!(
            ukdb_note_text(&s),
            "reason=page fault at 0xdead0000\\n(write)\ncmdline=ukdb.crash=dump console=ttyS0\n\
             build-id=deadbeef01020304\ncause=2\nvector=14\nerror=0x2\ncr2=0xdead0000\n"
        );
    }

    #[test]
    fn the_process_is_named_after_the_image() {
        // The name gdb compares with its executable's file name, and the
        // "Core was generated by" line.
        let core = written(&with_image());
        let info = read_info(&core).unwrap();
        assert_eq!(info.name, "ukdemo");
        assert_eq!(info.psargs, "ukdemo ukdb.crash=dump console=ttyS0");
        let desc = &core_notes(&core, elf::NT_PRPSINFO)[0];
        assert_eq!(desc[40..56], *b"ukdemo\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(desc[56 + 36..136], [0; 44]);

        // Unknown: "unikernel"; no command line: the name alone.
        let info = read_info(&written(&Snapshot { cmdline: String::new(), ..sample() })).unwrap();
        assert_eq!((info.name.as_str(), info.psargs.as_str()), ("unikernel", "unikernel"));

        // pr_fname holds 16 bytes (bfd reads all 16), pr_psargs 79 and a NUL.
        let long = Snapshot {
            name: "a-very-long-image-name".into(),
            cmdline: "x".repeat(100),
            ..sample()
        };
        let core = written(&long);
        let desc = &core_notes(&core, elf::NT_PRPSINFO)[0];
        assert_eq!(desc[40..56], *b"a-very-long-imag");
        assert_eq!(desc[56..135], *format!("a-very-long-image-name {}", "x".repeat(56)).as_bytes());
        assert_eq!(desc[135], 0);
        assert_eq!(read_info(&core).unwrap().name, "a-very-long-imag");
    }

    #[test]
    fn a_known_image_gives_at_entry_and_file_mappings() {
        let core = written(&with_image());
        let info = read_info(&core).unwrap();
        assert_eq!(info.entry, Some(0xffff_8000_0010_0040));
        let auxv = &core_notes(&core, elf::NT_AUXV)[0];
        let words: Vec<u64> =
            auxv.chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())).collect();
        assert_eq!(words, [AT_ENTRY, 0xffff_8000_0010_0040, AT_PAGESZ, 4096, AT_NULL, 0]);

        let file = &core_notes(&core, elf::NT_FILE)[0];
        let mut expected: Vec<u8> = [
            2u64,
            4096,
            0xffff_8000_0010_0000,
            0xffff_8000_0010_3000,
            1,
            0xffff_8000_0010_3000,
            0xffff_8000_0010_3123,
            4,
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
        expected.extend_from_slice(b"/images/ukdemo\0/images/ukdemo\0");
        assert_eq!(*file, expected);

        // Linux's order: PRSTATUS, PRPSINFO, AUXV, FILE, FPREGSET.
        let file = ElfFile64::<Endianness>::parse(&core[..]).unwrap();
        let e = file.endian();
        let mut notes = file.elf_program_headers()[0].notes(e, &core[..]).unwrap().unwrap();
        let mut types = Vec::new();
        while let Some(n) = notes.next().unwrap() {
            types.push(n.n_type(e));
        }
        assert_eq!(
            types,
            [
                elf::NT_PRSTATUS,
                elf::NT_PRPSINFO,
                elf::NT_AUXV,
                elf::NT_FILE,
                elf::NT_FPREGSET,
                elf::NT_GNU_BUILD_ID,
                NT_UKDB_INFO
            ]
        );

        // Unknown: neither note.
        let core = written(&sample());
        assert_eq!(read_info(&core).unwrap().entry, None);
        assert!(core_notes(&core, elf::NT_AUXV).is_empty());
        assert!(core_notes(&core, elf::NT_FILE).is_empty());
        // No read-only segment: AT_ENTRY alone.
        let mut s = with_image();
        s.image.as_mut().unwrap().mappings.clear();
        let core = written(&s);
        assert_eq!(core_notes(&core, elf::NT_AUXV).len(), 1);
        assert!(core_notes(&core, elf::NT_FILE).is_empty());
    }

    #[test]
    fn image_of_reads_entry_and_read_only_segments() {
        // A small ELF: text at 0x20_0010 (file 0x1010, 0x100 bytes, R X),
        // data (RW), bss (RW, p_filesz 0), rodata with an offset that
        // does not agree with its address modulo the page size.
        let mut buf = Vec::new();
        let mut w = Writer::new(Endianness::Little, true, &mut buf);
        w.reserve_file_header();
        w.reserve_program_headers(4);
        w.write_file_header(&FileHeader {
            os_abi: 0,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: elf::EM_X86_64,
            e_entry: 0x20_0010,
            e_flags: 0,
        })
        .unwrap();
        w.write_align_program_headers();
        for (vaddr, offset, filesz, memsz, flags) in [
            (0x20_0010, 0x1010, 0x100, 0x100, elf::PF_R | elf::PF_X),
            (0x20_1000, 0x2000, 0x10, 0x10, elf::PF_R | elf::PF_W),
            (0x20_2000, 0x3000, 0, 0x5000, elf::PF_R | elf::PF_W),
            (0x30_0000, 0x4010, 0x10, 0x10, elf::PF_R),
        ] {
            w.write_program_header(&ProgramHeader {
                p_type: elf::PT_LOAD,
                p_flags: flags,
                p_offset: offset,
                p_vaddr: vaddr,
                p_paddr: vaddr,
                p_filesz: filesz,
                p_memsz: memsz,
                p_align: 0x1000,
            });
        }
        drop(w);
        let image = Image::of(Path::new("/x/img"), &buf).unwrap();
        assert_eq!(
            image,
            Image {
                path: "/x/img".into(),
                entry: 0x20_0010,
                mappings: vec![FileMapping { start: 0x20_0000, end: 0x20_0110, offset: 0x1000 }],
            }
        );
        assert_eq!(Image::of(Path::new("/x/img"), b"not elf"), None);
        // A relative path is made absolute.
        let rel = Image::of(Path::new("img"), &buf).unwrap();
        assert_eq!(rel.path, std::env::current_dir().unwrap().join("img"));
    }

    #[test]
    fn signals_by_cause_and_vector() {
        let mut s = Snapshot { cause: cause::PANIC, ..Snapshot::default() };
        assert_eq!(signal(&s), SIGABRT);
        s.cause = cause::SNAPSHOT;
        assert_eq!(signal(&s), SIGTRAP);
        s.cause = cause::EXCEPTION;
        for (vector, sig) in
            [(0, SIGFPE), (6, SIGILL), (13, SIGSEGV), (14, SIGSEGV), (17, SIGBUS), (3, SIGTRAP)]
        {
            s.cpu.frame[frame::VECTOR] = vector;
            assert_eq!(signal(&s), sig, "vector {vector}");
        }
    }

    #[test]
    fn more_than_65534_segments_use_pn_xnum() {
        let mut s = Snapshot {
            map: (0..70_000u64)
                .map(|i| MapEntry { vaddr: i * 2 * PAGE, paddr: i * PAGE, len: PAGE, flags: 0 })
                .collect(),
            ..Snapshot::default()
        };
        s.pages.insert(5 * PAGE, page(7));
        let core = written(&s);
        assert_eq!(core[56..58], [0xff, 0xff]);
        let info = read_info(&core).unwrap();
        assert_eq!(info.loads.len(), 70_000);
        assert_eq!(info.loads[5].vaddr, 10 * PAGE);
        assert_eq!(info.loads[5].filesz, PAGE);
        let at = info.loads[5].offset as usize;
        assert_eq!(core[at], 7);
    }

    #[test]
    fn unaligned_input_is_refused() {
        let mut s = sample();
        s.map[0].len = 0x1800;
        let err = write_core(&s, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut s = sample();
        s.pages.insert(0x10_1000, vec![1; 10]);
        assert!(write_core(&s, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_non_core_is_refused() {
        assert!(matches!(read_info(b"not elf"), Err(ReadError::Elf(_))));
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0g"), None);
    }
}
