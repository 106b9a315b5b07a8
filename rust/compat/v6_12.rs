// SPDX-License-Identifier: GPL-2.0

//! What cma uses from the kernel crate of Linux 7.x that 6.12's lacks, in
//! 7.x's names and shapes (see [`crate::compat`]): each item here is a
//! look-alike of the 7.x item of the same path, reduced to what cma calls.

pub(crate) mod cred;
pub(crate) mod fs;
pub(crate) mod miscdevice;
pub(crate) mod mm;

/// 7.x: `kernel::sync::aref`; 6.12 has them in `kernel::types`.
pub(crate) mod aref {
    pub(crate) use kernel::types::{ARef, AlwaysRefCounted};
}

/// 7.x: `kernel::transmute`; 6.12 has the traits in `kernel::types`, as
/// markers without 7.x's methods.
pub(crate) mod transmute {
    pub(crate) use kernel::types::{AsBytes, FromBytes};

    /// A `T` copied out of `bytes`, which must be exactly its size (7.x:
    /// `FromBytes::from_bytes_copy`).
    pub(crate) fn from_bytes_copy<T: FromBytes>(bytes: &[u8]) -> Option<T> {
        if bytes.len() != core::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: `bytes` holds exactly `size_of::<T>()` readable bytes, and
        // any byte pattern is a valid `T` (`FromBytes`); the read needs no
        // alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
}

/// 7.x: `kernel::uaccess`, whose `UserPtr` is a type of its own; in 6.12 it
/// is an address (`usize`).
pub(crate) mod uaccess {
    pub(crate) use kernel::uaccess::{UserPtr, UserSlice};

    /// The user pointer at address `addr` (7.x: `UserPtr::from_addr`).
    pub(crate) fn user_ptr(addr: usize) -> UserPtr {
        addr
    }
}

/// 7.x: `kernel::time::Instant<Monotonic>`; 6.12 has `Ktime`.
pub(crate) mod time {
    use kernel::time::Ktime;

    /// A reading of the monotonic clock, to time a short piece of work.
    #[derive(Clone, Copy)]
    pub(crate) struct Stopwatch(Ktime);

    impl Stopwatch {
        /// Starts timing now.
        pub(crate) fn start() -> Self {
            Self(Ktime::ktime_get())
        }

        /// Nanoseconds since [`Stopwatch::start`].
        pub(crate) fn elapsed_ns(self) -> i64 {
            // OVERFLOW: `Ktime`'s `-` is a plain `i64` subtraction of two
            // monotonic readings (non-negative, the later first), which
            // cannot overflow.
            (Ktime::ktime_get() - self.0).to_ns()
        }
    }
}
