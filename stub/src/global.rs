//! Global state without a heap or locks: one CPU, and the stub runs with
//! interrupts off. The only way to reach a [`Global`] twice at once is
//! re-entry (a fault or panic inside the stub, or console output from
//! inside the stub), and [`Global::lock`] refuses that instead of aliasing.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A value reached through a try-lock.
pub struct Global<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access goes only through `lock`, whose atomic flag admits one
// holder at a time; the value may be reached from another context than the
// one that put it there, so it must be `Send`.
unsafe impl<T: Send> Sync for Global<T> {}

impl<T> Global<T> {
    /// A new global.
    pub const fn new(value: T) -> Self {
        Global { busy: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Whether someone holds it now (a racy answer, exact on one CPU with
    /// the world stopped).
    pub fn is_held(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The value, unless someone holds it already.
    pub fn lock(&self) -> Option<Guard<'_, T>> {
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Guard { global: self })
    }
}

impl<T: 'static> Guard<'static, T> {
    /// Keeps the value for good: the lock is never released, and this is
    /// the one reference to it from now on.
    pub fn leak(self) -> &'static mut T {
        let global: &'static Global<T> = self.global;
        core::mem::forget(self);
        // SAFETY: the busy flag stays set forever (the guard that would
        // clear it is forgotten), so no other access can ever begin.
        unsafe { &mut *global.value.get() }
    }
}

/// Exclusive access until dropped.
pub struct Guard<'a, T> {
    global: &'a Global<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the busy flag makes this guard the only access.
        unsafe { &*self.global.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the busy flag makes this guard the only access.
        unsafe { &mut *self.global.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.global.busy.store(false, Ordering::Release);
    }
}

/// A value set once (at `init`) and then read without a lock.
pub struct SetOnce<T> {
    state: core::sync::atomic::AtomicU8,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

// SAFETY: the value is written once, before READY is published with
// Release ordering, and only read (shared) after READY is seen with Acquire.
// It is moved in by one context and shared with all others: `Send + Sync`.
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    /// Empty.
    pub const fn new() -> Self {
        SetOnce {
            state: core::sync::atomic::AtomicU8::new(EMPTY),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    /// Sets the value; `false` if it was set (or being set) already.
    pub fn set(&self, value: T) -> bool {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: the compare-exchange admitted only this caller to write,
        // and no reader looks before READY.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        true
    }

    /// The value, once set.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY means the value was written and is never written again.
        Some(unsafe { (*self.value.get()).assume_init_ref() })
    }
}
