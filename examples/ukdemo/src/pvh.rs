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
    if info.magic != XEN_HVM_START_MAGIC_VALUE || info.cmdline_paddr == 0 {
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
