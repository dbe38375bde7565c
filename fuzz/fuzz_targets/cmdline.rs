//! The stub's command-line parsers: `Config::from_cmdline` and
//! `with_cmdline` (`stub/src/config.rs`), and the NIC address and
//! virtio-mmio device parsers (`stub/src/nicaddr.rs`), on arbitrary text.
//!
//! Invariants: no panic; a reported bad option is one of the command line's
//! own `ukdb.*` words, or for a key option (`ukdb.key=`, `ukdb.rokey=`) its
//! name with the value redacted (a key is never echoed); applying a command line twice gives what applying it
//! once gives; an accepted mmio device has the documented shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukdb_stub::fuzzing::config::Config;
use ukdb_stub::fuzzing::nicaddr::{
    mmio_devices, nic_option, parse_mmio_device, parse_nic, MMIO_HEADER,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, bad) = Config::from_cmdline(text);
    if let Some(bad) = bad {
        assert!(bad.0.starts_with("ukdb."), "{:?}", bad.0);
        match bad.0.strip_suffix("=<redacted>") {
            Some(name) => assert!(
                text.split_ascii_whitespace().any(|w| w.starts_with(&format!("{name}="))),
                "{:?}",
                bad.0
            ),
            None => assert!(text.split_ascii_whitespace().any(|w| std::ptr::eq(w, bad.0))),
        }
    }
    let (again, bad_again) = config.with_cmdline(text);
    assert_eq!(again, config);
    // A key already set wins over the line's (a key built into the image
    // cannot be replaced from the command line), and the second pass says
    // it ignored the line's key: the one difference applying twice makes.
    let key_ignored = bad_again.is_some_and(|b| b.0.ends_with("=<redacted>"));
    if !key_ignored {
        assert_eq!(bad_again.map(|b| b.0), bad.map(|b| b.0));
    }

    let _ = nic_option(text);
    if let Ok(nic) = parse_nic(text) {
        let _ = format!("{nic:?}");
    } else if let Err(e) = parse_nic(text) {
        assert!(!e.message().is_empty());
    }
    for device in mmio_devices(text).chain([parse_mmio_device(text)]).flatten() {
        assert!(device.size >= MMIO_HEADER);
        assert!(device.base != 0 && device.base % 4 == 0);
        assert!(device.base.checked_add(device.size).is_some_and(|end| end <= 1 << 52));
    }
});
