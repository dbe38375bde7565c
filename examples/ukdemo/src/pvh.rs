//! `hvm_start_info`, as defined by Xen's public header
//! `xen/include/public/arch-x86/hvm/start_info.h` (written from that header;
//! no maintained crate provides it for bare metal).

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// `XEN_HVM_MEMMAP_TYPE_RAM`.
const MEMMAP_RAM: u32 = 1;
/// Most RAM ranges kept (the stub takes 32).
const RAM_MAX: usize = 32;
static mut RAM: [core::ops::Range<u64>; RAM_MAX] = [const { 0..0 }; RAM_MAX];
static mut RAM_LEN: usize = 0;

/// Longest command line kept.
const CMDLINE_MAX: usize = 1024;
static mut CMDLINE: [u8; CMDLINE_MAX] = [0; CMDLINE_MAX];
static mut CMDLINE_LEN: usize = 0;

/// Copies the command line out of the start info (it lives in loader memory
/// that the kernel's own page tables need not map).
///
/// # Safety
/// `paddr` is the value the PVH loader passed in `ebx`, the first GiB is
/// identity mapped, and this runs once, before anything reads [`cmdline`].
pub unsafe fn init(paddr: u64) {
    if paddr == 0 {
        return;
    }
    // SAFETY: the loader put a valid hvm_start_info at paddr and the boot page
    // tables identity-map it.
    let info = unsafe { &*(paddr as *const HvmStartInfo) };
    if info.magic != XEN_HVM_START_MAGIC_VALUE {
        return;
    }
    if info.version >= 1 && info.memmap_paddr != 0 {
        // SAFETY: version 1 start info has a memory map of that many
        // entries at memmap_paddr, in loader memory the boot page tables
        // identity-map; single-threaded boot, RAM is not borrowed yet.
        unsafe { keep_ram(info.memmap_paddr as *const MemmapEntry, info.memmap_entries) };
    }
    if info.cmdline_paddr == 0 {
        return;
    }
    let src = info.cmdline_paddr as *const u8;
    let mut len = 0;
    // SAFETY: single-threaded boot; CMDLINE is not borrowed anywhere else yet,
    // and the loader's command line is a NUL-terminated string in mapped memory.
    unsafe {
        let dst = &mut *core::ptr::addr_of_mut!(CMDLINE);
        while len < CMDLINE_MAX {
            let b = src.add(len).read();
            if b == 0 {
                break;
            }
            dst[len] = b;
            len += 1;
        }
        CMDLINE_LEN = len;
    }
}

/// Keeps the RAM entries (type 1) of the PVH memory map.
///
/// # Safety
/// `map` points at `n` entries in mapped memory; nothing else touches
/// `RAM` meanwhile.
unsafe fn keep_ram(map: *const MemmapEntry, n: u32) {
    let mut kept = 0;
    for i in 0..n as usize {
        // SAFETY: per the function contract; entry i is inside the map.
        let e = unsafe { map.add(i).read_unaligned() };
        if e.kind == MEMMAP_RAM && e.size > 0 && kept < RAM_MAX {
            // SAFETY: per the function contract.
            unsafe {
                (*core::ptr::addr_of_mut!(RAM))[kept] = e.addr..e.addr.saturating_add(e.size)
            };
            kept += 1;
        }
    }
    // SAFETY: per the function contract.
    unsafe { RAM_LEN = kept };
}

/// The RAM of the PVH memory map (type 1 entries), for the stub's cores.
pub fn ram() -> &'static [core::ops::Range<u64>] {
    // SAFETY: written once in `init` before any reader; never written again.
    unsafe { &(&*core::ptr::addr_of!(RAM))[..RAM_LEN] }
}

/// The kernel command line (`-append` under QEMU).
pub fn cmdline() -> &'static str {
    // SAFETY: written once in `init` before any reader; never written again.
    let bytes = unsafe { &(&*core::ptr::addr_of!(CMDLINE))[..CMDLINE_LEN] };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// The value of `key=value` on the command line.
pub fn option(key: &str) -> Option<&'static str> {
    cmdline().split_ascii_whitespace().find_map(|w| {
        let (k, v) = w.split_once('=')?;
        (k == key).then_some(v)
    })
}
