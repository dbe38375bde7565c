//! ukdemo: a small PVH unikernel that embeds the ukdb debug stub.
//!
//! Boot: [`boot`] (32-bit PVH entry, long mode) → [`kmain`]: console (with
//! its loopback self-test), command line, page tables, IDT, legacy PICs
//! remapped and masked, time base, network device ([`net`]), debug stub,
//! periodic timer, interrupts on → [`app::run`], which never returns.
//!
//! The network: the first virtio-net device (PCI on q35; a
//! `virtio_mmio.device=` entry on Firecracker, and on QEMU's microvm with
//! `acpi=off`: with ACPI, QEMU describes its devices there only) carries the
//! app's own stack (smoltcp) with an HTTP server on port 8080 (`GET /`
//! answers `TICKS <n>`), and is lent to the debug stub (a shared NIC), which
//! then serves gdb and lldb over TCP instead of the serial line. Without a
//! virtio-net device, with `ukdb.net=off`, or with neither a key
//! (`ukdb.key=`, `ukdb.rokey=`) nor `ukdb.net=`, the stub uses the serial
//! line (COM1, shared with the console). With `ukdb.nic=` the stub drives the
//! device named there alone and the app takes another one, if any.
//!
//! Command line (QEMU `-append`):
//! - `ukdemo.rate=HZ`: console lines per second (default 10);
//! - `ukdemo.panic=N`: panic in the N-th call of `tick`;
//! - `ukdemo.fault=N`: write through a null pointer in the N-th call of `tick`;
//! - `ukdemo.div0=N`: divide by zero (`div`, a #DE) in the N-th call of `tick`;
//! - `ukdemo.break=N`: stop in the debugger (`ukdb_stub::breakpoint()`) in the
//!   N-th call of `tick`;
//! - `ukdemo.busy`: spin between lines instead of polling and halting, so
//!   that only the timer interrupt's poll notices a debugger;
//! - `ukdemo.flags`: run the RFLAGS sequence of [`flags`] in every iteration;
//! - `ukdemo.dr`: arm a debug register of the app's own and check it in
//!   every iteration (see [`flags`]);
//! - `ukdemo.ip=IP/PREFIX[,gw=IP]`: the app's static address (default:
//!   DHCP);
//! - `ukdb.net=off`: keep the stub on the serial line even with a NIC (the
//!   default when no key is given: an unlocked stub on the network is open
//!   to whoever reaches its port); `ukdb.net=dhcp` or a static address puts
//!   it on the NIC;
//! - `ukdb.nic=pci:BB:DD.F` or `ukdb.nic=mmio:ADDR`: the virtio-net device
//!   the stub drives alone (a dedicated debug NIC);
//! - `ukdb.xenring=ivshmem` (or `=xen`): the serial stub takes the Xen
//!   console ring instead of COM1 (the backend model's ring on an
//!   ivshmem-plain device, or the domain's PV console), console included;
//!   COM1 when there is no ring;
//! - `ukdb.*`: the other options of the debug stub (`ukdb.net=`,
//!   `ukdb.port=`, `ukdb.wait`, ...: see docs/debugging.md).
#![no_std]
#![no_main]

mod apic;
mod app;
mod boot;
mod cpu;
mod flags;
mod idt;
mod net;
mod paging;
mod pic;
mod port;
mod pvh;
mod serial;
mod time;
mod timer;

/// Stops the CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Rust entry, called by the boot code with the physical address of
/// `hvm_start_info`.
#[no_mangle]
extern "C" fn kmain(start_info: u64) -> ! {
    let serial = serial::init();
    if let Err(failed) = serial {
        println!("ukdemo: {}", failed);
    }
    // SAFETY: start_info is what the PVH loader passed; called once, first.
    unsafe { pvh::init(start_info) };
    paging::init();
    idt::init();
    pic::remap_and_mask();
    let tsc = time::init();
    let nic = net::probe(pvh::cmdline());
    tell_stub();
    start_stub(nic);
    println!(
        "ukdemo: booted, stub {}, tsc {} MHz, cmdline '{}'",
        if ukdb_stub::ENABLED {
            "enabled"
        } else if ukdb_stub::DUMP {
            "dump-only"
        } else {
            "absent"
        },
        time::tsc_hz() / 1_000_000,
        ShownCmdline(pvh::cmdline())
    );
    match timer::start() {
        Ok(()) => {
            println!("ukdemo: timer: local APIC at {} Hz (tsc rate from {})", timer::HZ, tsc.name())
        }
        Err(e) => println!("ukdemo: no timer ({}): polling without hlt", e.reason()),
    }
    cpu::enable_interrupts();
    ukdb_stub::wait_for_debugger();
    app::run()
}

/// Tells the stub what goes into a core: the RAM (the PVH memory map) and
/// the image's build-id (`.note.gnu.build-id`, see link.ld). Every build
/// calls it; without the stub it does nothing.
fn tell_stub() {
    extern "C" {
        static __build_id_start: u8;
        static __build_id_end: u8;
    }
    let (start, end) = (
        core::ptr::addr_of!(__build_id_start) as usize,
        core::ptr::addr_of!(__build_id_end) as usize,
    );
    // SAFETY: the linker script puts both symbols around the build-id
    // note, in the loaded, never written rodata of the image.
    let note = unsafe { core::slice::from_raw_parts(start as *const u8, end - start) };
    if !ukdb_stub::set_build_id(note) {
        println!("ukdemo: no GNU build-id note in the image");
    }
    if !ukdb_stub::set_ram(pvh::ram()) {
        println!("ukdemo: too many RAM ranges for the stub");
    }
}

/// The command line as the console shows it: the values of the debug
/// stub's keys (`ukdb.key=`, `ukdb.rokey=`) hidden, everything else as it is.
struct ShownCmdline(&'static str);

impl core::fmt::Display for ShownCmdline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, word) in self.0.split(' ').enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match word.split_once('=') {
                Some((k @ ("ukdb.key" | "ukdb.rokey"), _)) => write!(f, "{k}=*")?,
                _ => f.write_str(word)?,
            }
        }
        Ok(())
    }
}

/// Starts the debug stub on its channel (see the module docs): a
/// dedicated NIC (`ukdb.nic=`), the app's NIC shared, or COM1. The
/// dump-only stub (feature `dump`) always takes COM1: a crash stream needs
/// the serial line.
fn start_stub(nic: Option<&'static mut net::SharedNic>) {
    let cmdline = pvh::cmdline();
    if !ukdb_stub::ENABLED {
        // SAFETY: COM1 is this unikernel's console; the dump-only stub
        // writes on it only when the unikernel has crashed.
        let com1 = unsafe { ukdb_stub::Uart16550::new(ukdb_stub::COM1_BASE) };
        ukdb_stub::init(com1, cmdline);
        return;
    }
    // Without a key, the network stub listens only when `ukdb.net=` asks
    // for it: otherwise the serial stub, as with `ukdb.net=off`.
    let by_default = ukdb_stub::Config::from_cmdline(cmdline).0.net_off_by_default();
    let wants_nic = pvh::option("ukdb.nic").is_some() || nic.is_some();
    if by_default && wants_nic {
        println!("ukdb: network stub off: no key and no ukdb.net= (see docs: Security)");
    }
    let net_off = pvh::option("ukdb.net") == Some("off") || by_default;
    if pvh::option("ukdb.nic").is_some() && !net_off {
        // The NIC was meant for the stub: no serial stub when it fails
        // (the stub says why; a device that cannot be mapped fails there).
        net::map_for_stub(cmdline);
        ukdb_stub::set_console(serial::write_raw);
        ukdb_stub::init_net_dedicated(cmdline);
    } else if let Some(nic) = nic.filter(|_| !net_off) {
        // Likewise: the stub says on the console why it did not start.
        ukdb_stub::set_console(serial::write_raw);
        ukdb_stub::init_net(nic, cmdline);
    } else if !start_stub_on_xen_ring(cmdline) {
        // SAFETY: COM1 is this unikernel's console line; once the stub has
        // it, the console writes only through `ukdb_stub::console_write`.
        let com1 = unsafe { ukdb_stub::Uart16550::new(ukdb_stub::COM1_BASE) };
        ukdb_stub::init(com1, cmdline);
    }
}

/// With `ukdb.xenring=ivshmem` (or `=xen`), starts the stub on the Xen
/// console ring, which then carries the console too; `false` (with the
/// reason on the console, still the UART) when there is no ring.
fn start_stub_on_xen_ring(cmdline: &'static str) -> bool {
    use ukdb_stub::xen::identity_virt_to_phys;
    use ukdb_stub::XenConsole;
    // The stub's `Config::xenring` reads the same word; the example reads
    // it itself, as every build (with or without the stub) has `pvh::option`.
    let result = match pvh::option("ukdb.xenring") {
        None | Some("off") => return false,
        // SAFETY: called once, during boot with interrupts off, before any
        // driver of this unikernel touches the device (the NIC probe only
        // claims virtio devices); `map_ring` maps the BAR's first page.
        Some("ivshmem") => unsafe { XenConsole::ivshmem(map_ring) }.map(|c| {
            println!(
                "ukdemo: stub on the Xen console ring model (ivshmem BAR2 {:#x})",
                c.platform().bar2()
            );
            ukdb_stub::init(c, cmdline);
        }),
        // SAFETY: as above; the console frame is mapped by `map_ring`, and
        // the image is identity-mapped (`identity_virt_to_phys`).
        Some("xen") => unsafe { XenConsole::xen(map_ring, identity_virt_to_phys) }.map(|c| {
            println!("ukdemo: stub on the Xen PV console ring");
            ukdb_stub::init(c, cmdline);
        }),
        // The stub reports the bad value when it starts on the UART.
        Some(_) => return false,
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            println!("ukdemo: no Xen console ring ({}): the stub stays on COM1", e);
            false
        }
    }
}

/// Identity-maps the page of the console ring at `phys` (uncached, as
/// device memory: outside RAM, ivshmem's BAR or Xen's special pages) and
/// returns its address, or null when it cannot be mapped.
fn map_ring(phys: u64) -> *mut u8 {
    // SAFETY: called during boot, before interrupts are on; the page is
    // the ring's, outside RAM (`map_mmio` refuses pages mapped as RAM).
    match unsafe { paging::map_mmio(phys, 4096) } {
        Ok(()) => ukdb_stub::xen::identity_phys_to_virt(phys),
        Err(e) => {
            println!("ukdemo: cannot map the console ring at {:#x}: {}", phys, e.reason());
            core::ptr::null_mut()
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("ukdemo: {}", info);
    ukdb_stub::on_panic(info);
    halt()
}
