//! `cma doctor`: will single copy work for an MPI job started here, and if
//! not, why, and the least-privileged fix.
//!
//! Every answer is measured where it can be: the doctor starts two processes
//! the way an MPI launcher starts two ranks (siblings, both its children,
//! inheriting its credentials, namespaces and seccomp filter), and one
//! copies from the other, once with `process_vm_readv` and once through
//! `/dev/cma` (after the other's open grant, as `libcma-preload.so` makes
//! it). The rest (the module, the node, Yama, seccomp, namespaces, the MPI
//! libraries' own settings) explains the result.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IoSliceMut};
use std::os::unix::fs::MetadataExt;
use std::process::{Command as Process, Stdio};

use cma::{Device, OpenError, RemoteIoVec, Target};

/// How one check came out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// `CAP_SYS_PTRACE`'s bit in the capability sets (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;

/// What the doctor's target holds, and its reader must find.
const PROBE: &[u8] = b"cma doctor probe";

/// One line of the report.
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    /// The least-privileged fix, when something is in the way.
    fix: Option<String>,
}

/// The doctor's answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Single copy through /dev/cma (with the preload library).
    Cma,
    /// Single copy through process_vm_readv only.
    ProcessVmReadv,
    /// No single copy.
    None,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Cma => "cma",
            Verdict::ProcessVmReadv => "process_vm_readv",
            Verdict::None => "none",
        }
    }
}

/// The outcome of one copy between the sibling processes: `Ok` or the errno.
type Probe = std::result::Result<(), i32>;

fn errno_name(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    // "Operation not permitted (os error 1)": the words only.
    let s = s.split(" (os error").next().unwrap_or_default();
    match e {
        libc::EPERM => format!("EPERM ({s})"),
        libc::EACCES => format!("EACCES ({s})"),
        libc::ENOSYS => format!("ENOSYS ({s})"),
        libc::ENOENT => format!("ENOENT ({s})"),
        libc::ESRCH => format!("ESRCH ({s})"),
        _ => format!("errno {e} ({s})"),
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A field of `status`, the text of `/proc/self/status`.
fn status_field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// `cma doctor`: the report, and an exit status (0: single copy through
/// /dev/cma works; 1: it does not).
pub(crate) fn doctor(json: bool) -> crate::Result<bool> {
    let mut checks = Vec::new();

    // The module and its node.
    let module = std::path::Path::new("/sys/module/cma").exists();
    let version = read_trim("/sys/module/cma/version");
    checks.push(Check {
        name: "module",
        level: if module { Level::Ok } else { Level::Fail },
        detail: match (module, &version) {
            (true, Some(v)) => format!("cma {v} is loaded"),
            (true, None) => "cma is loaded".to_string(),
            (false, _) => "the cma module is not loaded".to_string(),
        },
        fix: (!module).then(|| "sudo modprobe cma (make install sets it to load at boot)".into()),
    });
    let node = std::fs::metadata(cma::DEVICE_PATH);
    let opened = Device::open();
    let (level, detail, fix) = match (&node, &opened) {
        (Err(_), _) => (
            Level::Fail,
            format!("{} does not exist", cma::DEVICE_PATH),
            Some("load the module (sudo modprobe cma); in a container, pass the device in (--device /dev/cma)".to_string()),
        ),
        (Ok(m), Ok(_)) => (
            Level::Ok,
            format!("{} mode {:o}, uid {} gid {}: this user may open it", cma::DEVICE_PATH, m.mode() & 0o7777, m.uid(), m.gid()),
            None,
        ),
        (Ok(m), Err(e)) => {
            let why = match e {
                OpenError::Io(e) => e.to_string(),
                other => other.to_string(),
            };
            (
                Level::Fail,
                format!("{} mode {:o}, uid {} gid {}: cannot open it: {why}", cma::DEVICE_PATH, m.mode() & 0o7777, m.uid(), m.gid()),
                Some("ask the administrator to add you to the device's group (sudo usermod -aG cma $USER, then log in again)".to_string()),
            )
        }
    };
    checks.push(Check {
        name: "device",
        level,
        detail,
        fix,
    });
    let mut features = None;
    if let Ok(dev) = &opened {
        if let Ok(info) = dev.info() {
            features = Some(info.features);
            checks.push(Check {
                name: "abi",
                level: Level::Info,
                detail: format!(
                    "ABI version {} (this program: {}), features {}",
                    info.abi_version,
                    cma::sys::CMA_ABI_VERSION,
                    info.features.names().collect::<Vec<_>>().join(", ")
                ),
                fix: None,
            });
        }
    }
    if let Some(policy) = read_trim("/sys/module/cma/parameters/policy") {
        let off = policy == "off";
        checks.push(Check {
            name: "policy",
            level: if off { Level::Fail } else { Level::Info },
            detail: match policy.as_str() {
                "consent" => {
                    "policy consent: a target must grant (libcma-preload.so grants for you)"
                        .to_string()
                }
                "credentials" => "policy credentials: the ptrace credential rule alone".to_string(),
                _ => format!("policy {policy}: no copies between processes"),
            },
            fix: off.then(|| {
                "the administrator turned copies off (policy=off); ask for policy=consent".into()
            }),
        });
    }

    // What stands in process_vm_readv's way.
    let scope = read_trim("/proc/sys/kernel/yama/ptrace_scope").and_then(|s| s.parse::<u32>().ok());
    checks.push(Check {
        name: "yama",
        level: match scope {
            Some(0) | None => Level::Info,
            _ => Level::Warn,
        },
        detail: match scope {
            None => "Yama is not active".to_string(),
            Some(0) => "ptrace_scope 0: process_vm_readv between a user's processes is allowed".to_string(),
            Some(1) => "ptrace_scope 1: process_vm_readv only from an ancestor (or a declared tracer): MPI ranks are siblings; Open MPI and MPICH still try, UCX probes".to_string(),
            Some(2) => "ptrace_scope 2: process_vm_readv only with CAP_SYS_PTRACE; Open MPI and MPICH turn CMA off".to_string(),
            Some(n) => format!("ptrace_scope {n}: no process_vm_readv at all; Open MPI and MPICH turn CMA off"),
        },
        fix: scope.filter(|&s| s > 0).map(|_| {
            "keep ptrace_scope: /dev/cma needs the target's consent, not ptrace (run the job with `cma run --`)".to_string()
        }),
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp = status_field(&status, "Seccomp");
    let filters = status_field(&status, "Seccomp_filters");
    checks.push(Check {
        name: "seccomp",
        level: match seccomp.as_deref() {
            Some("0") | None => Level::Info,
            _ => Level::Warn,
        },
        detail: match seccomp.as_deref() {
            Some("0") => "no seccomp filter on this process".to_string(),
            Some("1") => "seccomp strict mode".to_string(),
            Some("2") => format!(
                "seccomp filter{} on this process (a container runtime's, usually): process_vm_readv may be denied",
                filters.map(|f| format!("s ({f})")).unwrap_or_default()
            ),
            _ => "seccomp state unknown".to_string(),
        },
        fix: None,
    });
    let cap_ptrace = status_field(&status, "CapEff")
        .and_then(|c| u64::from_str_radix(&c, 16).ok())
        .map(|c| c & (1 << CAP_SYS_PTRACE) != 0);
    checks.push(Check {
        name: "cap_sys_ptrace",
        level: Level::Info,
        detail: match cap_ptrace {
            Some(true) => "this process has CAP_SYS_PTRACE".to_string(),
            Some(false) => {
                "this process has no CAP_SYS_PTRACE (none needed for /dev/cma)".to_string()
            }
            None => "capabilities unknown".to_string(),
        },
        fix: None,
    });
    let own_ns = std::fs::read_link("/proc/self/ns/user").ok();
    let init_ns = std::fs::read_link("/proc/1/ns/user").ok();
    let own = matches!((&own_ns, &init_ns), (Some(a), Some(b)) if a != b);
    // Ranks in user namespaces of their own need a grant naming them, or
    // their launcher (what libcma-preload.so makes under an MPI launcher).
    let old_module = own && features.is_some_and(|f| !f.contains(cma::Features::DESCENDANTS_GRANT));
    checks.push(Check {
        name: "user_namespace",
        level: if old_module { Level::Warn } else { Level::Info },
        detail: match (&own_ns, &init_ns) {
            (Some(a), Some(b)) if a == b => "the initial user namespace".to_string(),
            (Some(a), Some(_)) => format!("a user namespace of its own ({}): process_vm_readv refuses ranks in other user namespaces; /dev/cma admits them by a grant naming them or their launcher by pidfd (libcma-preload.so makes it under an MPI launcher)", a.display()),
            (Some(a), None) => format!("user namespace {}", a.display()),
            _ => "user namespace unknown".to_string(),
        },
        fix: old_module.then(|| {
            "the loaded cma module cannot name a launcher's ranks (no descendants-grant): install a newer one".into()
        }),
    });

    // The MPI libraries' own switches.
    for (var, off_when, what) in [
        (
            "OMPI_MCA_btl_vader_single_copy_mechanism",
            "none",
            "Open MPI's vader single copy",
        ),
        (
            "OMPI_MCA_btl_sm_single_copy_mechanism",
            "none",
            "Open MPI's sm single copy",
        ),
        ("FI_SHM_DISABLE_CMA", "1", "libfabric shm's CMA"),
    ] {
        if let Ok(v) = std::env::var(var) {
            let off = v.eq_ignore_ascii_case(off_when)
                || (off_when == "1"
                    && matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on"));
            checks.push(Check {
                name: "mpi_settings",
                level: if off { Level::Warn } else { Level::Info },
                detail: format!(
                    "{var}={v}{}",
                    if off {
                        format!(": turns {what} off")
                    } else {
                        String::new()
                    }
                ),
                fix: off.then(|| format!("unset {var}")),
            });
        }
    }
    if let Ok(tls) = std::env::var("UCX_TLS") {
        let t = tls.to_ascii_lowercase();
        let excluded =
            t.starts_with('^') && t.split(',').any(|x| x.trim_start_matches('^') == "cma");
        let listed = t
            .split(',')
            .any(|x| matches!(x, "cma" | "all" | "sm" | "shm"));
        let off = excluded || (!t.starts_with('^') && !listed);
        checks.push(Check {
            name: "mpi_settings",
            level: if off { Level::Warn } else { Level::Info },
            detail: format!(
                "UCX_TLS={tls}{}",
                if off { ": UCX will not use cma" } else { "" }
            ),
            fix: off.then(|| "add cma to UCX_TLS (e.g. UCX_TLS=posix,cma)".to_string()),
        });
    }
    for path in [
        "/etc/openmpi/openmpi-mca-params.conf".to_string(),
        format!(
            "{}/.openmpi/mca-params.conf",
            std::env::var("HOME").unwrap_or_default()
        ),
    ] {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.ends_with("single_copy_mechanism") && v == "none" {
                checks.push(Check {
                    name: "mpi_settings",
                    level: Level::Warn,
                    detail: format!("{path}: {k} = none turns Open MPI's single copy off"),
                    fix: Some(format!("remove the line from {path}")),
                });
            }
        }
    }

    // The measurements.
    let (pvm, via_cma) = probe()?;
    checks.push(Check {
        name: "process_vm_readv",
        level: if pvm.is_ok() { Level::Ok } else { Level::Warn },
        detail: match pvm {
            Ok(()) => "one sibling process read another with process_vm_readv".to_string(),
            Err(e) => format!("refused between sibling processes: {}", errno_name(e)),
        },
        fix: None,
    });
    let dev_ok = matches!(via_cma, Some(Ok(())));
    checks.push(Check {
        name: "cma_copy",
        level: if dev_ok { Level::Ok } else { Level::Fail },
        detail: match via_cma {
            Some(Ok(())) => {
                "one sibling process read another through /dev/cma, after its grant".to_string()
            }
            Some(Err(e)) => format!("refused through /dev/cma: {}", errno_name(e)),
            None => "not tried: /dev/cma cannot be opened".to_string(),
        },
        fix: None,
    });

    let verdict = if dev_ok {
        Verdict::Cma
    } else if pvm.is_ok() {
        Verdict::ProcessVmReadv
    } else {
        Verdict::None
    };
    let summary = match verdict {
        Verdict::Cma => "single copy works through /dev/cma: run MPI jobs with `cma run -- mpirun ...` (libcma-preload.so)".to_string(),
        Verdict::ProcessVmReadv => "single copy works through process_vm_readv only; /dev/cma does not work here (see the failed checks)".to_string(),
        Verdict::None => "no single copy here: MPI will fall back to the double copy (see the failed checks)".to_string(),
    };
    if json {
        println!("{}", to_json(verdict, &summary, &checks));
    } else {
        for c in &checks {
            println!("{:<5} {:<17} {}", c.level.name(), c.name, c.detail);
            if let Some(f) = &c.fix {
                println!("{:<23} fix: {f}", "");
            }
        }
        println!("verdict: {} ({summary})", verdict.name());
    }
    Ok(verdict == Verdict::Cma)
}

fn jstr(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn to_json(verdict: Verdict, summary: &str, checks: &[Check]) -> String {
    let mut out = format!(
        "{{\"verdict\": {}, \"summary\": {}, \"checks\": [",
        jstr(verdict.name()),
        jstr(summary)
    );
    for (i, c) in checks.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"name\": {}, \"level\": {}, \"detail\": {}, \"fix\": {}}}",
            if i == 0 { "" } else { ", " },
            jstr(c.name),
            jstr(c.level.name()),
            jstr(&c.detail),
            c.fix
                .as_deref()
                .map(jstr)
                .unwrap_or_else(|| "null".to_string())
        );
    }
    out.push_str("]}");
    out
}

/// Two sibling processes, as a launcher starts two ranks: a target holding
/// a buffer (with an open grant on /dev/cma, if it can open it) and a reader
/// that copies from it once with process_vm_readv and once through
/// /dev/cma. Returns the two outcomes (the second `None` if the reader could
/// not open the device).
fn probe() -> crate::Result<(Probe, Option<Probe>)> {
    let exe = std::env::current_exe()?;
    let mut target = Process::new(&exe)
        .arg("doctor-target")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut from_target = BufReader::new(target.stdout.take().ok_or("no pipe")?);
    let mut line = String::new();
    from_target.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (addr, len) = (words.next().unwrap_or("0"), words.next().unwrap_or("0"));
    let reader = Process::new(&exe)
        .args(["doctor-reader", &target.id().to_string(), addr, len])
        .stderr(Stdio::inherit())
        .output();
    drop(target.stdin.take());
    let _ = target.wait();
    let out = String::from_utf8_lossy(&reader?.stdout).to_string();
    let field = |name: &str| -> Option<Probe> {
        let v = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?;
        match v {
            "ok" => Some(Ok(())),
            "none" => None,
            e => Some(Err(e.parse().unwrap_or(libc::EIO))),
        }
    };
    Ok((field("pvm").unwrap_or(Err(libc::EIO)), field("cma")))
}

/// (internal) The doctor's target: holds a buffer, grants copies to any
/// permitted peer on /dev/cma if it can, prints `<addr> <len>`, and waits
/// for its stdin to close.
pub(crate) fn target() -> crate::Result {
    use std::io::Write;
    let dev = Device::open().ok();
    if let Some(dev) = &dev {
        let _ = dev.grant(None);
    }
    let buf = PROBE.to_vec();
    println!("{:#x} {:#x}", buf.as_ptr() as usize, buf.len());
    std::io::stdout().flush()?;
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    drop(buf);
    Ok(())
}

/// (internal) The doctor's reader: copies `len` bytes at `addr` of `pid`
/// with process_vm_readv, then through /dev/cma; prints `pvm=<ok|errno>
/// cma=<ok|errno|none>`.
pub(crate) fn reader(pid: i32, addr: &str, len: &str) -> crate::Result {
    let hex = |s: &str| usize::from_str_radix(s.trim_start_matches("0x"), 16);
    let (addr, len) = (hex(addr)?, hex(len)?);
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: both iovecs describe `len` bytes: ours a live buffer, theirs
    // the target's, which the kernel checks.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    let pvm = if n == len as isize && buf == PROBE {
        "ok".to_string()
    } else if n >= 0 {
        libc::EIO.to_string()
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
            .to_string()
    };
    let via = match Device::open() {
        Err(_) => "none".to_string(),
        Ok(dev) => {
            let mut out = vec![0u8; len];
            match dev.process_vm_readv(
                Target::Pid(pid),
                &mut [IoSliceMut::new(&mut out)],
                &[RemoteIoVec { base: addr, len }],
            ) {
                Ok(n) if n == len && out == PROBE => "ok".to_string(),
                Ok(_) => libc::EIO.to_string(),
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO).to_string(),
            }
        }
    };
    println!("pvm={pvm} cma={via}");
    Ok(())
}
