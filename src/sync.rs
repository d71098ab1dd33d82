//! The one poison-recovering lock: every `std::sync::Mutex` in costd guards plain data that a panic
//! elsewhere cannot leave half-updated, so a poisoned lock is used as it is.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
