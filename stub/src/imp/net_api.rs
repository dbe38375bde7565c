//! The network transport's entry points: `init_net`, `init_net_dedicated`
//! and `net_claim` (feature `net`; without it nothing starts and nothing
//! is claimed).

use crate::config::Config;
#[cfg(feature = "net")]
use crate::config::NetMode;
use crate::Nic;

#[cfg(feature = "net")]
use super::{api::say, net, session};
#[cfg(feature = "net")]
use crate::net::{device::Share, transport::Addressing};

/// The checks before anything starts: `ukdb.off`, `ukdb.net=off`, a bad
/// `ukdb.net=` value, neither a key nor `ukdb.net=`. `None`: do not start
/// (the reason is on the console).
#[cfg(feature = "net")]
fn wanted(config: &Config, bad: Option<&str>) -> Option<Option<Addressing>> {
    if config.off {
        return None;
    }
    if config.net_off_by_default() {
        say(&["ukdb: network stub off: no key and no ukdb.net= (see docs: Security)\n"]);
        return None;
    }
    match config.net_mode() {
        NetMode::Dhcp | NetMode::Unset => Some(None),
        NetMode::Static { addr, prefix, gateway } => {
            Some(Some(Addressing { addr, prefix, gateway }))
        }
        NetMode::Off => {
            say(&["ukdb: ukdb.net=off: network stub not started\n"]);
            None
        }
        NetMode::Invalid => {
            let value = bad.and_then(|b| b.strip_prefix("ukdb.net=")).unwrap_or("?");
            say(&[
                "ukdb: bad ukdb.net value '",
                value,
                "': expected dhcp, off or IP/PREFIX[,gw=IP]; network stub not started\n",
            ]);
            None
        }
    }
}

/// Builds the transport, finds its address and starts the session on it.
#[cfg(feature = "net")]
fn start(nic: &'static mut dyn Nic, share: Share, config: Config, bad: Option<&str>) -> bool {
    let Some(addressing) = wanted(&config, bad) else {
        return false;
    };
    if session::is_running() {
        say(&["ukdb: init called twice; the stub keeps its first transport\n"]);
        return false;
    }
    let nic_name = nic.name();
    let (transport, buffers) = match net::build(nic, share, &config, addressing) {
        Ok(built) => built,
        Err(why) => {
            say(&["ukdb: on ", nic_name, ": ", why, "\n"]);
            return false;
        }
    };
    let addr = transport.address().unwrap_or_default();
    super::api::init_static(transport, config, buffers);
    if !session::is_running() {
        return false;
    }
    if let Some(bad) = bad {
        say(&["ukdb: ignoring unknown option '", bad, "'\n"]);
    }
    net::start_claiming(addr, config.port);
    true
}

#[cfg(feature = "net")]
pub fn init_net(nic: &'static mut dyn Nic, config: Config, bad: Option<&str>) -> bool {
    start(nic, Share::Shared, config, bad)
}

#[cfg(feature = "net")]
pub fn init_net_dedicated(cmdline: &str) -> bool {
    let (config, bad) = Config::from_cmdline(cmdline);
    if wanted(&config, bad.map(|b| b.0)).is_none() {
        return false;
    }
    // `Share::Dedicated` hands every frame to the stub (ICMP echo answered too).
    match super::virtio::dedicated(cmdline, config.phys_offset) {
        Ok(nic) => start(nic, Share::Dedicated, config, bad.map(|b| b.0)),
        Err(why) => {
            say(&["ukdb: no debug NIC: ", why, "; network stub not started\n"]);
            false
        }
    }
}

#[cfg(feature = "net")]
#[inline]
pub fn net_claim(frame: &[u8]) -> bool {
    net::claim(frame)
}

#[cfg(not(feature = "net"))]
pub fn init_net(_nic: &'static mut dyn Nic, _config: Config, _bad: Option<&str>) -> bool {
    super::api::say(&["ukdb: network stub not built in (feature net)\n"]);
    false
}

#[cfg(not(feature = "net"))]
pub fn init_net_dedicated(_cmdline: &str) -> bool {
    super::api::say(&["ukdb: network stub not built in (feature net)\n"]);
    false
}

#[cfg(not(feature = "net"))]
#[inline]
pub fn net_claim(_frame: &[u8]) -> bool {
    false
}
