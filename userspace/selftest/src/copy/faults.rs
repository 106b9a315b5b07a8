//! Allocation failures injected with `fail_page_alloc` (debug kernel): a
//! fault that cannot be served, and the direct path under fragmentation.

use crate::check_eq;
use crate::ktap::{Failure, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, Rng};
use cma::{sys, Device, Op, Target};
use std::io;

use super::{copy, iov, pvm};

pub(super) const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";

/// Makes this process's page allocations fail from now on (fault injection),
/// after faulting in and locking everything it has mapped: its code and data
/// come over 9p here, and a page fault on them would need allocations that
/// now fail. Returns whether it worked.
pub(super) fn fail_here() -> bool {
    // SAFETY: mlockall(2) has no memory-safety preconditions.
    let locked = unsafe { libc::mlockall(libc::MCL_CURRENT) } == 0;
    locked && std::fs::write("/proc/self/make-it-fail", "1").is_ok()
}

/// Sets the fail_page_alloc knobs (fault injection, debug kernel): page
/// allocations of at least `min_order` fail with `probability` percent, for
/// tasks that ask for it (`/proc/self/make-it-fail`).
pub(super) fn fail_page_alloc(probability: &str, min_order: &str) -> io::Result<()> {
    for (knob, value) in [
        ("verbose", "0"),
        ("task-filter", "Y"),
        ("ignore-gfp-wait", "N"),
        ("ignore-gfp-highmem", "N"),
        ("min-order", min_order),
        ("interval", "1"),
        ("times", "-1"),
        ("probability", probability),
    ] {
        std::fs::write(format!("{FAIL_PAGE_ALLOC}/{knob}"), value)?;
    }
    Ok(())
}

/// A write into a target's pages that GUP cannot fault in, because every page
/// allocation of the copier fails (fault injection): `process_vm_writev`
/// says `EFAULT`, whatever GUP said (`ENOMEM`), and so must cma.
pub(super) fn copy_failed_fault_in_target_efault_like_pvm() -> TestResult {
    if !std::path::Path::new(FAIL_PAGE_ALLOC).exists() {
        return Err(Failure::Skip(
            "no fail_page_alloc (debug kernel only)".into(),
        ));
    }
    let ps = page_size();
    // Never touched: a write must allocate its pages.
    let mut target = Peer::spawn(move |mut ch| {
        let m = Mapping::new(64 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
        ch.send(&[m.addr() as u64])?;
        ch.wait()
    })?;
    let addr = target.recv()?[0] as usize;
    let dev = Device::open()?;
    let src = vec![0x5au8; 2 * ps];
    fail_page_alloc("100", "0")?;
    let result = util::in_forked(|| {
        // Only this process's allocations fail.
        if !fail_here() {
            return 200;
        }
        let l = [iov(src.as_ptr() as usize, 2 * ps)];
        let cma = copy(
            &dev,
            Op::Write,
            Target::Pid(target.pid),
            &l,
            &[iov(addr, 2 * ps)],
        );
        let pvm = pvm(Op::Write, target.pid, &l, &[iov(addr + 8 * ps, 2 * ps)]);
        let _ = std::fs::write("/proc/self/make-it-fail", "0");
        let errno = |r: Result<u64, io::Error>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
        let (c, p) = (errno(cma.map(|t| t.bytes)), errno(pvm.map(|n| n as u64)));
        println!("# with page allocations failing: cma errno {c}, process_vm_writev errno {p}");
        if c == p && c == libc::EFAULT {
            0
        } else {
            1
        }
    });
    fail_page_alloc("0", "0")?;
    check_eq!(result?, 0, "cma's errno differs from process_vm_writev's");
    Ok(())
}

/// A copy within the caller's own address space (the direct path) while no
/// allocation of more than one page can succeed (fault injection, as under
/// fragmentation): its staging buffer must not need contiguous memory.
pub(super) fn copy_direct_path_survives_fragmentation() -> TestResult {
    if !std::path::Path::new(FAIL_PAGE_ALLOC).exists() {
        return Err(Failure::Skip(
            "no fail_page_alloc (debug kernel only)".into(),
        ));
    }
    let dev = Device::open()?;
    let len = sys::CMA_DIRECT_CHUNK as usize;
    // Overlapping ranges, so that the copy is staged through the kernel
    // buffer (the allocation this test is about): dst = buf[0..len],
    // src = buf[4096..4096 + len], one chunk, so a memmove.
    let mut buf = vec![0u8; len + 4096];
    Rng::new(11).fill(&mut buf);
    let src = buf[4096..].to_vec();
    fail_page_alloc("100", "1")?;
    let result = util::in_forked(|| {
        if !fail_here() {
            return 200;
        }
        let base = buf.as_mut_ptr() as usize;
        let r = copy(
            &dev,
            Op::Read,
            Target::Pid(std::process::id() as i32),
            &[iov(base, len)],
            &[iov(base + 4096, len)],
        );
        let _ = std::fs::write("/proc/self/make-it-fail", "0");
        let dst = &buf[..len];
        match r {
            Ok(t) if t.bytes == len as u64 && dst == src => 0,
            Ok(t) => {
                println!(
                    "# {} bytes copied, data {}",
                    t.bytes,
                    if dst == src { "equal" } else { "differs" }
                );
                1
            }
            Err(e) => {
                println!("# direct copy failed: {e}");
                2
            }
        }
    });
    fail_page_alloc("0", "0")?;
    check_eq!(result?, 0, "the direct path needed more than single pages");
    Ok(())
}
