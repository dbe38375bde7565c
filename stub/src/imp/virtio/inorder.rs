//! A virtio transport that sets the device status one bit at a time, in the
//! order of the virtio spec (1.2, 3.1.1: ACKNOWLEDGE, then DRIVER, then
//! FEATURES_OK, then DRIVER_OK).
//!
//! virtio-drivers 0.13 writes ACKNOWLEDGE and DRIVER together, straight
//! after the reset. QEMU and Cloud Hypervisor accept that; Firecracker
//! checks every transition, refuses `0 -> ACKNOWLEDGE | DRIVER` ("invalid
//! virtio driver status transition: 0x0 -> 0x3"), leaves the status at 0,
//! and then refuses the features and the queues too: the NIC never works.
//!
//! This mirrors the example's `examples/ukdemo/src/net/inorder.rs` on
//! purpose instead of sharing it: the example's NIC driver must not be stub
//! code, and the stub's code must not be in the production image (which
//! holds no `ukdb_stub` symbol), so neither can depend on the other.
//! [`InOrder`] wraps any transport and splits such a write into the steps
//! the spec lists; everything else is passed through.

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The initialisation bits, in the order a driver sets them.
const ORDER: [DeviceStatus; 4] = [
    DeviceStatus::ACKNOWLEDGE,
    DeviceStatus::DRIVER,
    DeviceStatus::FEATURES_OK,
    DeviceStatus::DRIVER_OK,
];

/// The writes that take a device from `current` to `status`: one per
/// initialisation bit `status` adds, in the spec's order, the last being
/// `status` itself (a reset, 0, is written as is). Pure: host-tested.
fn steps(current: DeviceStatus, status: DeviceStatus) -> impl Iterator<Item = DeviceStatus> {
    let mut reached = current & status;
    let between = ORDER.into_iter().filter_map(move |bit| {
        if status.is_empty() || !status.contains(bit) || reached.contains(bit) {
            return None;
        }
        reached |= bit;
        Some(reached).filter(|&r| r != status)
    });
    between.chain(core::iter::once(status))
}

/// `T` with status writes split into the spec's steps.
#[derive(Debug)]
pub struct InOrder<T>(pub T);

impl<T: Transport> Transport for InOrder<T> {
    fn device_type(&self) -> DeviceType {
        self.0.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.0.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.0.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.0.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.0.get_status()
    }
    /// Writes `status`, after one write per initialisation bit it adds to
    /// the current status beyond the first.
    fn set_status(&mut self, status: DeviceStatus) {
        let current = self.0.get_status();
        for step in steps(current, status) {
            self.0.set_status(step);
        }
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.0.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.0.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.0.queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.0.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.0.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.0.read_config_generation()
    }
    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V> {
        self.0.read_config_space(offset)
    }
    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> Result<()> {
        self.0.write_config_space(offset, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(current: u32, status: u32) -> Vec<u32> {
        let bits = |b| DeviceStatus::from_bits_truncate(b);
        steps(bits(current), bits(status)).map(|s| s.bits()).collect()
    }

    #[test]
    fn virtio_drivers_init_writes_become_the_spec_steps() {
        // virtio-drivers 0.13's `begin_init` and `finish_init`, in order.
        assert_eq!(writes(0, 0), [0]);
        assert_eq!(writes(0, 3), [1, 3]);
        assert_eq!(writes(3, 11), [11]);
        assert_eq!(writes(11, 15), [15]);
    }

    #[test]
    fn missing_bits_are_added_in_order_and_resets_pass() {
        assert_eq!(writes(0, 15), [1, 3, 11, 15]);
        assert_eq!(writes(1, 11), [3, 11]);
        assert_eq!(writes(15, 0), [0]);
        // FAILED (128) with nothing else: written as is.
        assert_eq!(writes(3, 128), [128]);
        // A bit outside the order comes with the last write, after the steps.
        assert_eq!(writes(0, 3 | 128), [1, 3, 3 | 128]);
    }
}
