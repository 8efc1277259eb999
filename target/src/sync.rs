//! The crate's one lock helper: every `std::sync::Mutex` and `RwLock` in
//! the target is taken through [`lock`], [`read_lock`] or [`write_lock`].
//!
//! Poisoning is recovered from: a panic while holding a lock is a bug, but
//! the data stays usable, and one panicking task must not take every other
//! session (or logical unit) down with it.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock a mutex.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Take a read lock.
pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Take a write lock.
pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
