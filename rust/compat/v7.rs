// SPDX-License-Identifier: GPL-2.0

//! What cma adds on 7.x to the kernel crate's own items (see
//! [`crate::compat`]): the misc device registered with a mode and attribute
//! groups, the clock in the shape 6.12's look-alike has, and `user_ptr`.

pub(crate) mod miscdevice;

/// `kernel::uaccess`, with `user_ptr` as `compat::uaccess` has it on every
/// kernel.
pub(crate) mod uaccess {
    pub(crate) use kernel::uaccess::{UserPtr, UserSlice};

    /// The user pointer at address `addr`.
    pub(crate) fn user_ptr(addr: usize) -> UserPtr {
        UserPtr::from_addr(addr)
    }
}

/// `kernel::transmute`, with `from_bytes_copy` as `compat::transmute` has it
/// on every kernel.
pub(crate) mod transmute {
    pub(crate) use kernel::transmute::{AsBytes, FromBytes};

    /// A `T` copied out of `bytes`, which must be exactly its size.
    pub(crate) fn from_bytes_copy<T: FromBytes>(bytes: &[u8]) -> Option<T> {
        T::from_bytes_copy(bytes)
    }
}

/// `kernel::time`, in the shape `compat::time` has on every kernel.
pub(crate) mod time {
    use kernel::time::{Instant, Monotonic};

    /// A reading of the monotonic clock, to time a short piece of work.
    #[derive(Clone, Copy)]
    pub(crate) struct Stopwatch(Instant<Monotonic>);

    impl Stopwatch {
        /// Starts timing now.
        pub(crate) fn start() -> Self {
            Self(Instant::now())
        }

        /// Nanoseconds since [`Stopwatch::start`].
        pub(crate) fn elapsed_ns(self) -> i64 {
            self.0.elapsed().as_nanos()
        }
    }
}
