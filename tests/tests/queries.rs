//! The stub's memory map (`qXfer:memory-map:read`) and ukdb's core queries
//! (`qUkdb.info`, `qUkdb.map`, `qUkdb.pages`), on the example under QEMU,
//! straight to the network stub with a raw RSP client and with gdb.

use ukdb_tests::raw::{unhex, Raw};
use ukdb_tests::{artifacts, assert_transcript, Debugger, NetVm};

/// A q35 VM (128 MiB) held at boot (`ukdb.wait`) with a raw client attached.
fn held() -> (NetVm, Raw) {
    let vm = NetVm::boot("q35", &artifacts().image, "ukdb.wait ukdb.net=dhcp", &[]);
    vm.wait_stub_ready();
    let mut raw = Raw::connect(&vm.debug);
    raw.attach();
    (vm, raw)
}

/// `key:value` fields of a `qUkdb.info` reply.
fn field<'a>(reply: &'a str, key: &str) -> &'a str {
    reply
        .split(';')
        .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in {reply}"))
}

fn text(hex: &str) -> String {
    String::from_utf8(unhex(hex.as_bytes()).unwrap()).unwrap()
}

/// The image's GNU build-id, hex (empty when it has none).
fn image_build_id() -> String {
    use object::{Object, ObjectSection};
    let data = std::fs::read(&artifacts().image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let Some(note) = file.section_by_name(".note.gnu.build-id") else { return String::new() };
    let bytes = note.data().unwrap();
    ukdb_tests::raw::hex(&bytes[16..])
}

#[test]
fn info_tells_why_and_what_the_image_is() {
    let (_vm, mut raw) = held();
    let info = raw.request(b"qUkdb.info");
    assert_eq!(field(&info, "cause"), "3", "{info}");
    assert_eq!(field(&info, "vector"), "100", "{info}");
    assert_eq!(text(field(&info, "why")), "waiting for a debugger at boot (ukdb.wait)");
    assert_eq!(text(field(&info, "cmdline")), "ukdb.wait ukdb.net=dhcp");
    assert_eq!(field(&info, "build-id"), image_build_id());
    // Paging on, long mode: CR0.PG and EFER.LMA.
    let cr0 = u64::from_str_radix(field(&info, "cr0"), 16).unwrap();
    let efer = u64::from_str_radix(field(&info, "efer"), 16).unwrap();
    assert_eq!((cr0 >> 31, (efer >> 10) & 1), (1, 1), "{info}");
}

/// The map entries from `qUkdb.map`, paged through to the end.
fn map_entries(raw: &mut Raw) -> Vec<(u64, u64, u64, u32)> {
    let mut entries = Vec::new();
    loop {
        let reply = raw.request(format!("qUkdb.map:{:x}", entries.len()).as_bytes());
        if reply == "l" {
            return entries;
        }
        let bytes = unhex(reply.strip_prefix('m').unwrap().as_bytes()).unwrap();
        assert!(!bytes.is_empty() && bytes.len().is_multiple_of(28), "{reply}");
        for e in bytes.chunks(28) {
            let q = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().unwrap());
            entries.push((q(0), q(8), q(16), u32::from_le_bytes(e[24..28].try_into().unwrap())));
        }
    }
}

#[test]
fn the_map_covers_the_identity_map_and_flags_its_alias_and_devices() {
    use ukdb_stub::dumpwire::map::{ALIAS, DEVICE, EXEC, NOT_RAM, WRITE};
    let (_vm, mut raw) = held();
    let entries = map_entries(&mut raw);
    // In ascending virtual order, none overlapping.
    for pair in entries.windows(2) {
        assert!(pair[0].0 + pair[0].2 <= pair[1].0, "{pair:x?}");
    }
    // The image's code: read-only and executable, in the first 8 MiB.
    let tick = ukdb_tests::symbols(&artifacts().image)
        .into_iter()
        .find(|(n, _)| n.contains("6ukdemo3app4tick"))
        .unwrap()
        .1;
    let code = entries.iter().find(|e| e.0 <= tick && tick < e.0 + e.2).unwrap();
    assert_eq!(code.3 & (WRITE | EXEC | DEVICE | ALIAS), EXEC, "{code:x?}");
    // Every low-half byte of the first GiB is RAM or declared not to be,
    // once; the high alias of the same GiB is never dumped twice.
    let low: u64 = entries.iter().filter(|e| e.0 < 1 << 30).map(|e| e.2).sum();
    assert_eq!(low, (1 << 30) - 0x1000);
    let dumped_twice = entries
        .iter()
        .filter(|e| e.0 >= 0xffff_8000_0000_0000 && e.3 & (ALIAS | NOT_RAM | DEVICE) == 0)
        .count();
    assert_eq!(dumped_twice, 0, "{entries:x?}");
    // RAM ends just below 128 MiB (the example declares the PVH memory
    // map's RAM; QEMU keeps the top pages for its ACPI tables): the rest of
    // the identity-mapped GiB is listed, never read.
    let past_ram = entries.iter().find(|e| e.0 <= 128 << 20 && 128 << 20 < e.0 + e.2).unwrap();
    assert!((127 << 20..128 << 20).contains(&past_ram.0), "{past_ram:x?}");
    assert_ne!(past_ram.3 & NOT_RAM, 0, "{past_ram:x?}");
    // The local APIC is device memory.
    let apic = entries.iter().find(|e| e.0 == 0xfee0_0000).unwrap();
    assert_ne!(apic.3 & DEVICE, 0, "{apic:x?}");
    // Past the end: `l`; bad arguments: E16.
    assert_eq!(raw.request(b"qUkdb.map:ffffffff"), "l");
    assert_eq!(raw.request(b"qUkdb.map:zz"), "E16");
    assert_eq!(raw.request(b"qUkdb.pages:1001,1000"), "E16");
}

#[test]
fn the_page_bitmap_marks_exactly_the_pages_with_data() {
    let (_vm, mut raw) = held();
    // 64 pages from 1 MiB: the image and what follows it.
    let reply = raw.request(b"qUkdb.pages:100000,40000");
    let bits = unhex(reply.as_bytes()).unwrap();
    assert_eq!(bits.len(), 8, "{reply}");
    for page in 0..64u64 {
        let addr = 0x10_0000 + page * 0x1000;
        let mut nonzero = false;
        for half in 0..2u64 {
            let m = raw.request(format!("m{:x},800", addr + half * 0x800).as_bytes());
            nonzero |= unhex(m.as_bytes()).unwrap().iter().any(|&b| b != 0);
        }
        let bit = bits[(page / 8) as usize] >> (page % 8) & 1 == 1;
        assert_eq!(bit, nonzero, "page {addr:#x}");
    }
    // Page 0 is not mapped: never data. A reply never holds more pages than
    // asked.
    assert_eq!(raw.request(b"qUkdb.pages:0,1000"), "00");
    // Hostile ranges: past the top of the address space, not canonical,
    // and more pages than a reply holds (it says how many it covers).
    assert_eq!(raw.request(b"qUkdb.pages:fffffffffffff000,10000"), "0000");
    assert_eq!(raw.request(b"qUkdb.pages:800000000000,2000"), "00");
    let all = raw.request(b"qUkdb.pages:0,fffffffffffff000");
    // The network stub's packets are 64 KiB: about 256 Ki pages per reply.
    assert!(all.len() >= 2 && all.len() % 2 == 0 && all.len() <= 65544, "{} digits", all.len());
    assert_eq!(raw.request(b"qUkdb.map:ffffffffffffffff"), "l");
}

#[test]
fn gdb_reads_the_memory_map_and_refuses_what_is_not_mapped() {
    let a = artifacts();
    let vm = NetVm::boot("q35", &a.image, "ukdb.wait", &[]);
    vm.wait_stub_ready();
    let gdb = Debugger::gdb(&a.image, &vm.debug, &["info mem", "x/1gx 0x40000000", "detach"]);
    let out = gdb.finish();
    let from = out.find("Using memory regions").unwrap_or_else(|| panic!("{out}"));
    let to = out.find("[Inferior").unwrap_or(out.len());
    assert_transcript(
        &out[from..to],
        "Using memory regions provided by the target.
Num Enb Low Addr           High Addr          Attrs 
0   y  	0x0000000000001000 0x0000000040000000 rw nocache 
1   y  	0x00000000fe000000 0x00000000fe004000 rw nocache 
2   y  	0x00000000fee00000 0x00000000ff000000 rw nocache 
3   y  	0xffff800000001000 0xffff800040000000 rw nocache 
4   y  	0xffff8000fe000000 0xffff8000fe004000 rw nocache 
5   y  	0xffff8000fee00000 0xffff8000ff000000 rw nocache 
0x40000000:	Cannot access memory at address 0x40000000
",
    );
}
