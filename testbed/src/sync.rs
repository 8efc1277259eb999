//! The crate's one lock helper: every `std::sync::Mutex` in the testbed is
//! locked through [`lock`], recovering from poisoning (a panicking test
//! task must not hide what the others recorded).

use std::sync::{Mutex, MutexGuard};

/// Lock a mutex.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
