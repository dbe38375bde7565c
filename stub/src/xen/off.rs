//! The Xen constructors without the stub (`enabled` off): they find
//! nothing and touch nothing, so a unikernel's code needs no `cfg`.

use super::{Platform, XenConsole, XenError};

/// Guest-physical to virtual for an identity-mapped unikernel.
#[inline(always)]
pub fn identity_phys_to_virt(phys: u64) -> *mut u8 {
    phys as usize as *mut u8
}

/// Virtual to guest-physical for an identity-mapped unikernel.
#[inline(always)]
pub fn identity_virt_to_phys(virt: *const u8) -> u64 {
    virt as usize as u64
}

impl IvshmemModel {
    /// The guest-physical address of the shared memory (never constructed
    /// here).
    pub fn bar2(&self) -> u64 {
        0
    }
}

/// Real Xen (not compiled in: never constructed).
#[derive(Debug)]
pub struct Xen(());

/// The ivshmem backend model (not compiled in: never constructed).
#[derive(Debug)]
pub struct IvshmemModel(());

impl Platform for Xen {
    fn notify(&mut self) {}
    fn name(&self) -> &'static str {
        "xen-console"
    }
}

impl Platform for IvshmemModel {
    fn notify(&mut self) {}
    fn name(&self) -> &'static str {
        "xen-ring-model"
    }
}

impl XenConsole<Xen> {
    /// Without the stub: `Err(NotXen)`, nothing probed.
    ///
    /// # Safety
    /// None needed here; the same contract as the full stub's.
    #[inline(always)]
    pub unsafe fn xen(
        _phys_to_virt: fn(u64) -> *mut u8,
        _virt_to_phys: fn(*const u8) -> u64,
    ) -> Result<Self, XenError> {
        Err(XenError::NotXen)
    }
}

impl XenConsole<IvshmemModel> {
    /// Without the stub: `Err(NoIvshmem)`, nothing probed.
    ///
    /// # Safety
    /// None needed here; the same contract as the full stub's.
    #[inline(always)]
    pub unsafe fn ivshmem(_phys_to_virt: fn(u64) -> *mut u8) -> Result<Self, XenError> {
        Err(XenError::NoIvshmem)
    }
}
