//! Core files of unikernels: what the bridge knows of a stopped unikernel
//! ([`Snapshot`], from a live session or a crash stream) and how it becomes
//! an ELF core that gdb and lldb open with the unikernel's image.
//!
//! - [`elf`]: writes a [`Snapshot`] as an ELF `ET_CORE` (the `object`
//!   crate), and reads back a core's ukdb note.
//! - [`stream`]: decodes a crash stream (`docs/wire-protocol.md`, "Crash
//!   stream"; the stub's `ukdb_stub::dumpwire`) into a [`Snapshot`].
//!
//! Both producers describe memory the same way the stub walks it: the runs
//! of the page tables ([`MapEntry`]), and the non-zero physical pages
//! ([`Snapshot::pages`]). Pages that are listed but absent are zero.

pub mod elf;
pub mod live;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The page size of [`Snapshot::pages`].
pub const PAGE: u64 = 4096;

/// Everything a core holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What made it (`ukdb_stub::dumpwire::cause`).
    pub cause: u8,
    /// Why the unikernel stopped: the panic message and location, the
    /// exception, or "snapshot".
    pub reason: String,
    /// The kernel command line.
    pub cmdline: String,
    /// The image's GNU build-id (empty: unknown).
    pub build_id: Vec<u8>,
    /// The image's file name (empty: unknown): the process name of the
    /// core (`NT_PRPSINFO`), which gdb compares with its executable's
    /// file name. An empty name is written as [`elf::FNAME`].
    pub name: String,
    /// The image file, when known: the core's `NT_AUXV` and `NT_FILE`
    /// notes refer to it ([`elf`]).
    pub image: Option<Image>,
    /// The CPU.
    pub cpu: Cpu,
    /// The page walk's runs, in ascending virtual order.
    pub map: Vec<MapEntry>,
    /// The non-zero pages of the dumped (RAM) ranges, by physical page
    /// address; each exactly [`PAGE`] bytes.
    pub pages: BTreeMap<u64, Vec<u8>>,
}

impl Snapshot {
    /// Takes the image at `path` (its bytes `data`): [`Snapshot::name`]
    /// becomes its file name, and [`Snapshot::image`] what
    /// [`Image::of`] finds in it (`None` when it is not an ELF file).
    pub fn set_image(&mut self, path: &Path, data: &[u8]) {
        if let Some(name) = path.file_name() {
            self.name = name.to_string_lossy().into_owned();
        }
        self.image = Image::of(path, data);
    }
}

/// What a core says of the image file it is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image's path (absolute when it could be made so): `NT_FILE`'s
    /// file name.
    pub path: PathBuf,
    /// The ELF header's `e_entry`: `AT_ENTRY` of `NT_AUXV`.
    pub entry: u64,
    /// The image's read-only loadable segments, as `NT_FILE` maps them.
    pub mappings: Vec<FileMapping>,
}

/// One range of memory that holds the bytes of the image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMapping {
    /// The first virtual address (page aligned).
    pub start: u64,
    /// The end (exclusive).
    pub end: u64,
    /// The file offset of `start` (page aligned).
    pub offset: u64,
}

impl Image {
    /// The image at `path` whose bytes are `data`: its entry point and its
    /// loadable segments that are neither writable nor empty in the file
    /// (`PT_LOAD`, no `PF_W`, `p_filesz > 0`, offset and address equal
    /// modulo [`PAGE`]), each from its page start to its last file byte:
    /// what memory holds of the file as long as nothing writes it. `None`
    /// when `data` is not an ELF file.
    pub fn of(path: &Path, data: &[u8]) -> Option<Image> {
        use object::read::elf::ProgramHeader as _;
        let entry = elf::image_entry(data)?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut mappings = Vec::new();
        if let Ok(file) = object::read::elf::ElfFile64::<object::Endianness>::parse(data) {
            let e = file.endian();
            for ph in file.elf_program_headers() {
                let (vaddr, offset, filesz) = (ph.p_vaddr(e), ph.p_offset(e), ph.p_filesz(e));
                if ph.p_type(e) != object::elf::PT_LOAD
                    || ph.p_flags(e) & object::elf::PF_W != 0
                    || filesz == 0
                    || vaddr % PAGE != offset % PAGE
                {
                    continue;
                }
                let Some(end) = vaddr.checked_add(filesz) else { continue };
                let skip = vaddr % PAGE;
                mappings.push(FileMapping { start: vaddr - skip, end, offset: offset - skip });
            }
        }
        Some(Image { path, entry, mappings })
    }
}

/// One run of the page walk (`ukdb_stub::dumpwire::MAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// The first virtual address.
    pub vaddr: u64,
    /// The physical address of its first byte.
    pub paddr: u64,
    /// Length in bytes.
    pub len: u64,
    /// `ukdb_stub::dumpwire::map` flags.
    pub flags: u32,
}

impl MapEntry {
    /// Whether its contents are in the core (RAM, not a device, not an
    /// alias whose pages another range carries; an alias's virtual
    /// addresses are still readable in the core).
    pub fn dumped(&self) -> bool {
        use ukdb_stub::dumpwire::map::{DEVICE, NOT_RAM};
        self.flags & (DEVICE | NOT_RAM) == 0
    }
}

/// The registers of one CPU at the stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// The trap frame's 22 quadwords in `ukdb_stub::TrapFrame` order: r15,
    /// r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax,
    /// vector, error code, rip, cs, rflags, rsp, ss.
    pub frame: [u64; 22],
    /// FS.base.
    pub fs_base: u64,
    /// GS.base.
    pub gs_base: u64,
    /// Control registers and EFER (0 when unknown).
    pub cr0: u64,
    /// CR2: the last page-fault address.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// The FXSAVE area (x87, MXCSR, XMM0-15).
    pub fxsave: [u8; 512],
    /// The segment selectors ds, es, fs, gs (0 when unknown).
    pub data_selectors: [u16; 4],
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu {
            frame: [0; 22],
            fs_base: 0,
            gs_base: 0,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            fxsave: [0; 512],
            data_selectors: [0; 4],
        }
    }
}

/// Indices into [`Cpu::frame`].
pub mod frame {
    #![allow(missing_docs)]
    pub const R15: usize = 0;
    pub const R14: usize = 1;
    pub const R13: usize = 2;
    pub const R12: usize = 3;
    pub const R11: usize = 4;
    pub const R10: usize = 5;
    pub const R9: usize = 6;
    pub const R8: usize = 7;
    pub const RBP: usize = 8;
    pub const RDI: usize = 9;
    pub const RSI: usize = 10;
    pub const RDX: usize = 11;
    pub const RCX: usize = 12;
    pub const RBX: usize = 13;
    pub const RAX: usize = 14;
    pub const VECTOR: usize = 15;
    pub const ERROR_CODE: usize = 16;
    pub const RIP: usize = 17;
    pub const CS: usize = 18;
    pub const RFLAGS: usize = 19;
    pub const RSP: usize = 20;
    pub const SS: usize = 21;
}
