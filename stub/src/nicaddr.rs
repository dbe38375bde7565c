//! Where the dedicated debug NIC is: `ukdb.nic=` (which device the stub
//! drives) and the `virtio_mmio.device=` entries QEMU's `microvm` and
//! Firecracker put on the kernel command line. Pure logic, host-tested:
//! every value is checked here once, so the driver only sees well-formed
//! addresses.
//!
//! | option | meaning |
//! |--------|---------|
//! | `ukdb.nic=pci:BB:DD.F` | the virtio-net PCI function at bus `BB`, device `DD`, function `F` (hex, as `lspci` prints them) |
//! | `ukdb.nic=mmio:ADDR` | the virtio-mmio device whose registers start at physical `ADDR` (`0x` hex or decimal) |
//! | `virtio_mmio.device=SIZE@ADDR:IRQ[:ID]` | a virtio-mmio device (Linux's format: `SIZE` with an optional `K`/`M`/`G` suffix) |

/// A device named by `ukdb.nic=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicAddr {
    /// A PCI function (configuration space through ports 0xCF8/0xCFC).
    Pci {
        /// Bus, 0..=255.
        bus: u8,
        /// Device, 0..=31.
        device: u8,
        /// Function, 0..=7.
        function: u8,
    },
    /// A virtio-mmio register block at this physical address (4-byte
    /// aligned, below 2^52).
    Mmio(u64),
}

/// Why a `ukdb.nic=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadNic {
    /// Not `pci:` or `mmio:`.
    UnknownKind,
    /// `pci:` not followed by `BB:DD.F` in range.
    BadPci,
    /// `mmio:` not followed by an aligned physical address.
    BadMmio,
}

impl BadNic {
    /// A sentence for the console.
    pub fn message(self) -> &'static str {
        match self {
            BadNic::UnknownKind => "bad ukdb.nic= value (use pci:BB:DD.F or mmio:0xADDR)",
            BadNic::BadPci => {
                "bad ukdb.nic=pci: value (use pci:BB:DD.F, hex, device < 0x20, function < 8)"
            }
            BadNic::BadMmio => {
                "bad ukdb.nic=mmio: value (use mmio:0xADDR, a 4-byte aligned physical address)"
            }
        }
    }
}

/// Physical addresses are below 2^52 on x86_64.
const PHYS_LIMIT: u64 = 1 << 52;

/// The `ukdb.nic=` option of `cmdline`: `Ok(None)` when there is none; the
/// last one counts when there are several.
pub fn nic_option(cmdline: &str) -> Result<Option<NicAddr>, BadNic> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("ukdb.nic="))
        .next_back()
        .map(parse_nic)
        .transpose()
}

/// One `ukdb.nic=` value.
pub fn parse_nic(value: &str) -> Result<NicAddr, BadNic> {
    if let Some(pci) = value.strip_prefix("pci:") {
        return parse_bdf(pci).ok_or(BadNic::BadPci);
    }
    if let Some(mmio) = value.strip_prefix("mmio:") {
        return parse_number(mmio)
            .filter(|&a| a != 0 && a % 4 == 0 && a < PHYS_LIMIT)
            .map(NicAddr::Mmio)
            .ok_or(BadNic::BadMmio);
    }
    Err(BadNic::UnknownKind)
}

/// `BB:DD.F`, hex fields of one or two digits.
fn parse_bdf(text: &str) -> Option<NicAddr> {
    let (bus, rest) = text.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let field = |s: &str| -> Option<u8> {
        if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u8::from_str_radix(s, 16).ok()
    };
    let (bus, device, function) = (field(bus)?, field(device)?, field(function)?);
    (device < 32 && function < 8).then_some(NicAddr::Pci { bus, device, function })
}

/// A virtio-mmio device announced on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// The physical address of its registers (4-byte aligned).
    pub base: u64,
    /// The size of the register block (at least 0x100, the header).
    pub size: u64,
}

/// Why a `virtio_mmio.device=` entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadMmioDevice {
    /// Not `SIZE@ADDR:IRQ[:ID]`.
    Syntax,
    /// A size below the 0x100-byte header, or one that overflows.
    Size,
    /// A base of 0, not 4-byte aligned, or whose block ends past 2^52.
    Base,
}

/// The size of the virtio-mmio header; the device's configuration follows.
pub const MMIO_HEADER: u64 = 0x100;

/// Every `virtio_mmio.device=` entry of `cmdline`, in order.
pub fn mmio_devices(cmdline: &str) -> impl Iterator<Item = Result<MmioDevice, BadMmioDevice>> + '_ {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("virtio_mmio.device="))
        .map(parse_mmio_device)
}

/// One `SIZE@ADDR:IRQ[:ID]` value.
pub fn parse_mmio_device(value: &str) -> Result<MmioDevice, BadMmioDevice> {
    let (size, rest) = value.split_once('@').ok_or(BadMmioDevice::Syntax)?;
    let mut fields = rest.split(':');
    let base = fields.next().ok_or(BadMmioDevice::Syntax)?;
    let irq = fields.next().ok_or(BadMmioDevice::Syntax)?;
    // An optional platform device id, then nothing.
    if let Some(id) = fields.next() {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadMmioDevice::Syntax);
        }
    }
    if fields.next().is_some() {
        return Err(BadMmioDevice::Syntax);
    }
    // The interrupt line is checked but not kept: the stub polls.
    parse_decimal_u32(irq).ok_or(BadMmioDevice::Syntax)?;
    let size = parse_size(size)?;
    let base = parse_number(base).ok_or(BadMmioDevice::Syntax)?;
    let end = base.checked_add(size).ok_or(BadMmioDevice::Base)?;
    if base == 0 || base % 4 != 0 || end > PHYS_LIMIT {
        return Err(BadMmioDevice::Base);
    }
    Ok(MmioDevice { base, size })
}

/// A size with an optional `K`, `M` or `G` suffix (either case).
fn parse_size(text: &str) -> Result<u64, BadMmioDevice> {
    let suffixed =
        |upper: char, lower: char| text.strip_suffix(upper).or_else(|| text.strip_suffix(lower));
    let (digits, shift) = if let Some(d) = suffixed('K', 'k') {
        (d, 10)
    } else if let Some(d) = suffixed('M', 'm') {
        (d, 20)
    } else if let Some(d) = suffixed('G', 'g') {
        (d, 30)
    } else {
        (text, 0)
    };
    let n = parse_number(digits).ok_or(BadMmioDevice::Syntax)?;
    let size = n.checked_mul(1 << shift).ok_or(BadMmioDevice::Size)?;
    if size < MMIO_HEADER {
        return Err(BadMmioDevice::Size);
    }
    Ok(size)
}

fn parse_decimal_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `0x` hex or decimal; digits only (no sign, no spaces).
fn parse_number(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pci(bus: u8, device: u8, function: u8) -> NicAddr {
        NicAddr::Pci { bus, device, function }
    }

    #[test]
    fn nic_option_good_values() {
        assert_eq!(nic_option(""), Ok(None));
        assert_eq!(nic_option("console=ttyS0 ukdb.wait"), Ok(None));
        assert_eq!(nic_option("ukdb.nic=pci:00:05.0"), Ok(Some(pci(0, 5, 0))));
        assert_eq!(nic_option("a ukdb.nic=pci:ff:1f.7 b"), Ok(Some(pci(0xff, 0x1f, 7))));
        assert_eq!(nic_option("ukdb.nic=pci:0:a.1"), Ok(Some(pci(0, 0xa, 1))));
        assert_eq!(nic_option("ukdb.nic=pci:0A:1F.0"), Ok(Some(pci(0xa, 0x1f, 0))));
        assert_eq!(nic_option("ukdb.nic=mmio:0xfeb00e00"), Ok(Some(NicAddr::Mmio(0xfeb0_0e00))));
        assert_eq!(nic_option("ukdb.nic=mmio:4096"), Ok(Some(NicAddr::Mmio(4096))));
        // The last one counts.
        assert_eq!(nic_option("ukdb.nic=bogus ukdb.nic=pci:00:03.0"), Ok(Some(pci(0, 3, 0))));
        assert_eq!(nic_option("ukdb.nicx=pci:00:03.0"), Ok(None));
    }

    #[test]
    fn nic_option_hostile_values() {
        for bad in [
            "pci:",
            "pci:00",
            "pci:00:05",
            "pci:00:05.",
            "pci::05.0",
            "pci:00:20.0",
            "pci:00:05.8",
            "pci:100:05.0",
            "pci:00:005.0",
            "pci:-1:05.0",
            "pci:+1:05.0",
            "pci:00:05.0.1",
            "pci:00:05:0",
            "pci:0g:05.0",
            "pci:00:05.0 ",
            "pci:\u{e9}:05.0",
        ] {
            assert_eq!(parse_nic(bad), Err(BadNic::BadPci), "{bad:?}");
        }
        for bad in [
            "mmio:",
            "mmio:0",
            "mmio:0x",
            "mmio:0xfeb00e01",
            "mmio:0x10000000000000",
            "mmio:0xffffffffffffffff",
            "mmio:0x1_0000",
            "mmio:-4",
            "mmio:+4",
            "mmio:99999999999999999999999",
            "mmio:0xz0",
            "mmio:0x 10",
        ] {
            assert_eq!(parse_nic(bad), Err(BadNic::BadMmio), "{bad:?}");
        }
        for bad in ["", "pci", "mmio", "PCI:00:05.0", "usb:1", ":"] {
            assert_eq!(parse_nic(bad), Err(BadNic::UnknownKind), "{bad:?}");
        }
        assert_eq!(nic_option("ukdb.nic="), Err(BadNic::UnknownKind));
        assert_eq!(nic_option("ukdb.nic=pci:00:05.0 ukdb.nic=pci:00:99.0"), Err(BadNic::BadPci));
        for e in [BadNic::UnknownKind, BadNic::BadPci, BadNic::BadMmio] {
            assert!(e.message().starts_with("bad ukdb.nic="));
        }
    }

    #[test]
    fn mmio_devices_as_qemu_and_firecracker_write_them() {
        let line = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
                    virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=1M@0x100000:7:3";
        let found: Vec<_> = mmio_devices(line).collect();
        assert_eq!(
            found,
            vec![
                Ok(MmioDevice { base: 0xfeb0_0e00, size: 512 }),
                Ok(MmioDevice { base: 0xd000_0000, size: 4096 }),
                Ok(MmioDevice { base: 0x10_0000, size: 1 << 20 }),
            ]
        );
        assert_eq!(parse_mmio_device("0x200@4096:0"), Ok(MmioDevice { base: 4096, size: 0x200 }));
        assert_eq!(parse_mmio_device("1g@0x40000000:1").map(|d| d.size), Ok(1 << 30));
        assert_eq!(parse_mmio_device("2m@0x40000000:1").map(|d| d.size), Ok(2 << 20));
        assert_eq!(mmio_devices("virtio_mmio=1 ukdb.nic=mmio:0x1000").count(), 0);
    }

    #[test]
    fn mmio_devices_hostile_values() {
        use BadMmioDevice::*;
        let cases = [
            ("", Syntax),
            ("512", Syntax),
            ("512@", Syntax),
            ("512@0x1000", Syntax),
            ("512@0x1000:", Syntax),
            ("512@0x1000:x", Syntax),
            ("512@0x1000:-1", Syntax),
            ("512@0x1000:4294967296", Syntax),
            ("512@0x1000:5:", Syntax),
            ("512@0x1000:5:a", Syntax),
            ("512@0x1000:5:1:2", Syntax),
            ("@0x1000:5", Syntax),
            ("K@0x1000:5", Syntax),
            ("0xK@0x1000:5", Syntax),
            ("512@:5", Syntax),
            ("512@0x:5", Syntax),
            ("5x12@0x1000:5", Syntax),
            ("512@0x1000@0x2000:5", Syntax),
            ("\u{e9}@0x1000:5", Syntax),
            ("255@0x1000:5", Size),
            ("0@0x1000:5", Size),
            ("0K@0x1000:5", Size),
            ("18446744073709551615G@0x1000:5", Size),
            ("99999999999999999999@0x1000:5", Syntax),
            ("512@0:5", Base),
            ("512@0x1002:5", Base),
            ("512@0xffffffffffffff00:5", Base),
            ("512@0xfffffffffffff000:5", Base),
            ("4K@0xffffffffffff000:5", Base),
        ];
        for (value, want) in cases {
            assert_eq!(parse_mmio_device(value), Err(want), "{value:?}");
        }
        // The last page below 2^52 is still physical memory.
        assert!(parse_mmio_device("4K@0xffffffffff000:5").is_ok());
    }
}
