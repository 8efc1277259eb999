//! The crate's one mutex helper: every `std::sync::Mutex` in the initiator
//! is locked through [`lock`].

use std::sync::{Mutex, MutexGuard};

/// Lock a mutex, recovering from poisoning: a panic while holding the
/// lock is a bug, but the data stays usable and other sessions go on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
