//! A FUSE file system of one file whose reads wait until the test lets
//! them go: the page being read stays locked meanwhile, as long as the
//! server likes, which any user who can mount FUSE can arrange. Serves
//! `/dev/fuse` directly (the protocol of `include/uapi/linux/fuse.h`,
//! the least of it: init, lookup, getattr, open, read, flush, release).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::peer::Peer;

/// The one file, its size and node id; the root is node 1.
pub const FILE: &str = "f";
pub const FILE_LEN: usize = 64 << 10;
const FILE_NODE: u64 = 2;

// Opcodes (fuse.h).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const INTERRUPT: u32 = 36;
const BATCH_FORGET: u32 = 42;

/// `FUSE_ASYNC_READ`, of `fuse_init_out.flags`.
const ASYNC_READ: u32 = 1;

const ENOSYS: i32 = 38;
const ENOENT: i32 = 2;

/// A mounted instance: unmounted (lazily) and its server killed on drop,
/// which ends every read still waiting.
pub struct Fuse {
    /// Where it is mounted.
    pub dir: String,
    server: Option<Peer>,
}

impl Fuse {
    /// Mounts a new instance at a new directory under `/tmp`, served by a
    /// child process that holds each read until `release[0]` is non-zero
    /// (then answers it with zeros) and counts the reads held in
    /// `release[1]`. With `readahead`, pages are read in the background
    /// (`FUSE_ASYNC_READ`, as libfuse asks: a reader waits on the page's
    /// lock); without, there is no readahead (`max_readahead` 0), and a
    /// fault reads its page synchronously.
    pub fn mount(release: &'static [AtomicU64], readahead: bool) -> io::Result<Fuse> {
        // SAFETY: the process id, no memory.
        let dir = format!("/tmp/cma-fuse-{}", unsafe { libc::getpid() });
        std::fs::create_dir_all(&dir)?;
        let path = CString::new("/dev/fuse")?;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, ours alone.
        let dev = unsafe { OwnedFd::from_raw_fd(fd) };
        let opts = CString::new(format!(
            "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        ))?;
        let (src, target, fstype) = (
            CString::new("cma-fuse")?,
            CString::new(dir.clone())?,
            CString::new("fuse")?,
        );
        // SAFETY: NUL-terminated strings; the options name our descriptor.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let server = Peer::spawn(move |_| {
            serve(&dev, release, readahead)?;
            Ok(())
        });
        let mut fuse = Fuse { dir, server: None };
        fuse.server = Some(server?);
        Ok(fuse)
    }

    /// The file's path.
    pub fn file(&self) -> String {
        format!("{}/{FILE}", self.dir)
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        // The server's end closes the connection: waiting reads fail.
        drop(self.server.take());
        if let Ok(dir) = CString::new(self.dir.clone()) {
            // SAFETY: a NUL-terminated path.
            unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `struct fuse_attr` of a node.
fn attr(node: u64) -> Vec<u8> {
    let (mode, size) = if node == 1 {
        (libc::S_IFDIR | 0o755, 0)
    } else {
        (libc::S_IFREG | 0o644, FILE_LEN as u64)
    };
    let mut a = Vec::with_capacity(88);
    for v in [node, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    for v in [0u32, 0, 0, mode, 1, 0, 0, 0, 4096, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    a
}

/// Answers request `unique` with `error` (a positive errno) or `body`.
fn reply(dev: &OwnedFd, unique: u64, error: i32, body: &[u8]) -> io::Result<()> {
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&(-error).to_ne_bytes());
    msg.extend_from_slice(&unique.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: writes a live buffer to our descriptor.
    let n = unsafe { libc::write(dev.as_raw_fd(), msg.as_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Serves until the connection ends (unmounted) or fails.
fn serve(dev: &OwnedFd, release: &[AtomicU64], readahead: bool) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    // Reads held: (unique, size).
    let mut held: Vec<(u64, u32)> = Vec::new();
    loop {
        if release[0].load(Ordering::SeqCst) != 0 {
            for (unique, size) in held.drain(..) {
                reply(dev, unique, 0, &vec![0u8; size as usize])?;
            }
        }
        let mut pfd = libc::pollfd {
            fd: dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live descriptor.
        if unsafe { libc::poll(&mut pfd, 1, 10) } == 0 {
            continue;
        }
        // SAFETY: reads into a live buffer of its length.
        let n = unsafe { libc::read(dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                Some(libc::ENODEV) => return Ok(()),
                _ => return Err(e),
            }
        }
        let req = &buf[..n as usize];
        if req.len() < 40 {
            continue;
        }
        let word = |at: usize| u32::from_ne_bytes(req[at..at + 4].try_into().unwrap_or_default());
        let long = |at: usize| u64::from_ne_bytes(req[at..at + 8].try_into().unwrap_or_default());
        let (opcode, unique, node) = (word(4), long(8), long(16));
        let arg = &req[40..];
        match opcode {
            INIT => {
                let mut out = Vec::with_capacity(64);
                // With readahead, in the background (FUSE_ASYNC_READ): a
                // reader waits on the page's lock, not on the request (a
                // request the server has read is waited for
                // uninterruptibly by FUSE itself, whoever reads).
                let (ahead, flags) = if readahead {
                    (4096, ASYNC_READ)
                } else {
                    (0, 0)
                };
                for v in [7u32, 31, ahead, flags] {
                    out.extend_from_slice(&v.to_ne_bytes());
                }
                out.extend_from_slice(&1u16.to_ne_bytes()); // max_background
                out.extend_from_slice(&1u16.to_ne_bytes()); // congestion_threshold
                out.extend_from_slice(&4096u32.to_ne_bytes()); // max_write
                out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
                out.extend_from_slice(&1u16.to_ne_bytes()); // max_pages
                out.resize(64, 0);
                reply(dev, unique, 0, &out)?;
            }
            LOOKUP => {
                let name = arg.split(|&b| b == 0).next().unwrap_or_default();
                if node == 1 && name == FILE.as_bytes() {
                    let mut out = Vec::with_capacity(128);
                    for v in [FILE_NODE, 0, 3600, 3600] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    out.extend_from_slice(&[0u8; 8]);
                    out.extend_from_slice(&attr(FILE_NODE));
                    reply(dev, unique, 0, &out)?;
                } else {
                    reply(dev, unique, ENOENT, &[])?;
                }
            }
            GETATTR => {
                let mut out = Vec::with_capacity(104);
                out.extend_from_slice(&3600u64.to_ne_bytes());
                out.extend_from_slice(&[0u8; 8]);
                out.extend_from_slice(&attr(node));
                reply(dev, unique, 0, &out)?;
            }
            OPEN => reply(dev, unique, 0, &[0u8; 16])?,
            READ => {
                let size = if arg.len() >= 20 {
                    u32::from_ne_bytes(arg[16..20].try_into().unwrap_or_default())
                } else {
                    0
                };
                held.push((unique, size));
                release[1].fetch_add(1, Ordering::SeqCst);
            }
            FLUSH | RELEASE => reply(dev, unique, 0, &[])?,
            FORGET | BATCH_FORGET | INTERRUPT => {}
            _ => reply(dev, unique, ENOSYS, &[])?,
        }
    }
}
