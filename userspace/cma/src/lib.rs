//! Userspace access to `/dev/cma`, the cma kernel module's device.
//!
//! cma copies memory between processes in one copy (Cross Memory Attach).
//! [`Device::open`] opens the device and [`Device::info`] reports what the
//! loaded module supports. The raw ABI, generated from the C header
//! `include/uapi/cma.h`, is in [`sys`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

pub mod sys;

/// The path of the device the module registers.
pub const DEVICE_PATH: &str = "/dev/cma";

/// What went wrong when opening the device.
#[derive(Debug)]
pub enum OpenError {
    /// The device node does not exist: the module is not loaded.
    NotLoaded,
    /// The device exists but could not be opened.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotLoaded => write!(
                f,
                "{DEVICE_PATH} does not exist: the cma module is not loaded (insmod cma.ko)"
            ),
            OpenError::Io(e) => write!(f, "cannot open {DEVICE_PATH}: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::NotLoaded => None,
            OpenError::Io(e) => Some(e),
        }
    }
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let msg = e.to_string();
        match e {
            OpenError::NotLoaded => io::Error::new(io::ErrorKind::NotFound, msg),
            OpenError::Io(inner) => io::Error::new(inner.kind(), msg),
        }
    }
}

/// What the loaded module supports, from `CMA_IOC_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The module's ABI version.
    pub abi_version: u32,
    /// The most iovecs accepted on either side of a request.
    pub max_iov: u32,
    /// `CMA_FEAT_*` bits the module implements.
    pub features: u64,
}

/// An open `/dev/cma`.
#[derive(Debug)]
pub struct Device {
    file: File,
}

impl Device {
    /// Opens [`DEVICE_PATH`].
    pub fn open() -> Result<Device, OpenError> {
        Self::open_path(DEVICE_PATH)
    }

    /// Opens the device at `path` (for a device node in a non-standard place).
    pub fn open_path(path: impl AsRef<Path>) -> Result<Device, OpenError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Device { file }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::NotLoaded),
            Err(e) => Err(OpenError::Io(e)),
        }
    }

    /// Asks the module for its ABI version and features.
    pub fn info(&self) -> io::Result<Info> {
        let mut raw = sys::cma_info::default();
        // SAFETY: CMA_IOC_INFO writes exactly one `struct cma_info` to the
        // pointer, which points to a live, writable `cma_info`.
        unsafe { sys::ioctl(self.as_fd(), sys::CMA_IOC_INFO, &mut raw as *mut _ as usize) }?;
        Ok(Info {
            abi_version: raw.abi_version,
            max_iov: raw.max_iov,
            features: raw.features,
        })
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}
