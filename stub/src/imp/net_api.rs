//! The network transport's entry points (placeholder until the `net`
//! transport lands: nothing starts).

use crate::config::Config;
use crate::Nic;

pub fn init_net(_nic: &'static mut dyn Nic, _config: Config, _bad: Option<&str>) -> bool {
    super::api::say(&["ukdb: network stub not built in\n"]);
    false
}

pub fn init_net_dedicated(_cmdline: &str) -> bool {
    super::api::say(&["ukdb: network stub not built in\n"]);
    false
}

#[inline]
pub fn net_claim(_frame: &[u8]) -> bool {
    false
}
