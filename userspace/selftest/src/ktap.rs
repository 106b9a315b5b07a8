//! A minimal KTAP (kselftest) harness: one behaviour per test, a plan, one
//! `ok`/`not ok` line per test, `# SKIP` for skipped tests, a `# Totals:` line,
//! and the kselftest exit codes. As kselftest's harness does, every test runs
//! in a forked child of its own with a time limit: a test that crashes,
//! hangs or exits fails under its own name, and the run goes on.

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// kselftest exit code: every test passed (or was skipped, with some passing).
pub const KSFT_PASS: i32 = 0;
/// kselftest exit code: at least one test failed.
pub const KSFT_FAIL: i32 = 1;
/// kselftest exit code: every test was skipped.
pub const KSFT_SKIP: i32 = 4;

/// Why a test did not pass.
#[derive(Debug)]
pub enum Failure {
    /// The behaviour under test is wrong.
    Fail(String),
    /// The test cannot run here (missing privilege, feature or resource).
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<(), Failure>;

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Fail(format!("unexpected error: {e}"))
    }
}

impl From<cma::OpenError> for Failure {
    fn from(e: cma::OpenError) -> Failure {
        Failure::Fail(e.to_string())
    }
}

/// Fails the test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::ktap::Failure::Fail(format!(
                "{} ({}:{})", format!($($msg)+), file!(), line!()
            )));
        }
    };
}

/// Fails unless `left == right`, showing both (and a formatted context
/// message, if one follows).
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                $crate::check!(
                    l == r,
                    "{}: {} == {}: {:?} != {:?}",
                    format!($($msg)+),
                    stringify!($left),
                    stringify!($right),
                    l,
                    r
                );
            }
        }
    };
    ($left:expr, $right:expr) => {
        match (&$left, &$right) {
            (l, r) => {
                $crate::check!(
                    l == r,
                    "{} == {}: {:?} != {:?}",
                    stringify!($left),
                    stringify!($right),
                    l,
                    r
                );
            }
        }
    };
}

/// Returns a failure unless `res` is an error with the OS error `errno`.
pub fn expect_errno<T: std::fmt::Debug>(
    res: io::Result<T>,
    errno: i32,
    what: impl Display,
) -> TestResult {
    match res {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(Failure::Fail(format!(
            "{what}: expected {}, got {e}",
            errno_name(errno)
        ))),
        Ok(v) => Err(Failure::Fail(format!(
            "{what}: expected {}, got success ({v:?})",
            errno_name(errno)
        ))),
    }
}

/// A symbolic name for the errnos the suite expects.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::EBADF => "EBADF",
        libc::EINTR => "EINTR",
        libc::ENOSPC => "ENOSPC",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// One test: a name (KTAP test description) and the function that runs it.
pub struct Test {
    /// The name printed in the KTAP line.
    pub name: &'static str,
    /// The test body.
    pub run: fn() -> TestResult,
}

/// A table of tests named after their functions:
/// `tests![copy_via_pidfd, ...]` is `&[Test { name: "copy_via_pidfd", run:
/// copy_via_pidfd }, ...]`, so a test's KTAP name is the name of the function
/// that is the test. `rw name` makes two tests of a function that takes the
/// direction, `name_read` and `name_write`, so that a regression in one
/// direction fails under its own name.
#[macro_export]
macro_rules! tests {
    (@acc [$($out:expr,)*]) => {
        &[$($out,)*]
    };
    (@acc [$($out:expr,)*] rw $test:ident $(, $($rest:tt)*)?) => {
        $crate::tests!(@acc [$($out,)*
            $crate::ktap::Test {
                name: concat!(stringify!($test), "_read"),
                run: || $test(cma::Op::Read),
            },
            $crate::ktap::Test {
                name: concat!(stringify!($test), "_write"),
                run: || $test(cma::Op::Write),
            },
        ] $($($rest)*)?)
    };
    (@acc [$($out:expr,)*] $test:ident $(, $($rest:tt)*)?) => {
        $crate::tests!(@acc [$($out,)*
            $crate::ktap::Test { name: stringify!($test), run: $test },
        ] $($($rest)*)?)
    };
    ($($t:tt)*) => {
        $crate::tests!(@acc [] $($t)*)
    };
}

/// How long one test may run before it is killed and fails: `CMA_TEST_TIMEOUT`
/// seconds (0: no limit), else [`DEFAULT_TIMEOUT`].
fn timeout() -> Option<Duration> {
    let secs = std::env::var("CMA_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT.as_secs());
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The time limit of one test unless `CMA_TEST_TIMEOUT` says otherwise:
/// far above the slowest test under TCG and the debug kernel (the long
/// fuzzing and stress runs lift it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The verdict a test's child sends its parent: a tag byte and the reason.
const PASS: u8 = b'P';
const SKIP: u8 = b'S';
const FAIL: u8 = b'F';

/// Runs `test` in the calling process, catching a panic.
fn run_here(test: &Test) -> TestResult {
    panic::catch_unwind(AssertUnwindSafe(test.run)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string());
        Err(Failure::Fail(format!("panicked: {msg}")))
    })
}

/// The child's side: runs the test in its own process group, writes the
/// verdict to `verdict` and leaves without running anything of the
/// parent's (no atexit handlers, no destructors).
fn child(test: &Test, verdict: OwnedFd) -> ! {
    // SAFETY: plain syscall; a process group of its own, so that a timeout
    // kills the test and everything it started.
    unsafe { libc::setpgid(0, 0) };
    let (tag, why) = match run_here(test) {
        Ok(()) => (PASS, String::new()),
        Err(Failure::Skip(why)) => (SKIP, why),
        Err(Failure::Fail(why)) => (FAIL, why),
    };
    let mut msg = vec![tag];
    msg.extend_from_slice(why.as_bytes());
    let _ = std::fs::File::from(verdict).write_all(&msg);
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: ends this forked child at once, as fork(2) children should.
    unsafe { libc::_exit(0) }
}

/// A signal's name, for a test that died of one.
fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a NUL-terminated string (or NULL) valid until
    // the next call; it is copied at once.
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return format!("signal {sig}");
    }
    // SAFETY: as above.
    let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy();
    format!("signal {sig} ({s})")
}

/// Runs `test` in a forked child, within `limit`: a test that crashes, hangs
/// or exits fails alone, and leaves nothing behind in the runner (fds,
/// mappings, threads, credentials, signal dispositions).
fn run_forked(test: &Test, limit: Option<Duration>) -> TestResult {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the runner is single-threaded, so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop(rd);
        child(test, wr);
    }
    drop(wr);
    // Also here, against the race with the child's own call.
    // SAFETY: plain syscall on our child.
    unsafe { libc::setpgid(pid, pid) };
    let start = Instant::now();
    let mut verdict = Vec::new();
    let mut status = 0;
    let mut timed_out = false;
    loop {
        // Drain what the child wrote (its descendants may hold the write end
        // open, so the end of the test is the child's exit, not EOF).
        let mut pfd = libc::pollfd {
            fd: rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 20) } > 0 && pfd.revents & libc::POLLIN != 0 {
            let mut buf = [0u8; 4096];
            // SAFETY: reads into a live buffer of that length.
            let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                verdict.extend_from_slice(&buf[..n as usize]);
            }
        }
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if limit.is_some_and(|l| start.elapsed() >= l) {
            timed_out = true;
            // SAFETY: kills the test's process group, then reaps the child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            break;
        }
    }
    // The rest of the verdict, if the child wrote it just before exiting.
    // SAFETY: `rd` is ours; O_NONBLOCK so that a descendant holding the write
    // end cannot block us.
    unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut rest = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut rest);
    verdict.extend_from_slice(&rest);
    if timed_out {
        return Err(Failure::Fail(format!(
            "timed out after {} s (CMA_TEST_TIMEOUT): killed",
            limit.map_or(0, |l| l.as_secs())
        )));
    }
    if libc::WIFSIGNALED(status) {
        // Whatever the test started dies with it.
        // SAFETY: plain syscall on the test's own process group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        return Err(Failure::Fail(format!(
            "crashed: killed by {}",
            signal_name(libc::WTERMSIG(status))
        )));
    }
    match verdict.split_first() {
        Some((&PASS, _)) => Ok(()),
        Some((&SKIP, why)) => Err(Failure::Skip(String::from_utf8_lossy(why).into_owned())),
        Some((&FAIL, why)) => Err(Failure::Fail(String::from_utf8_lossy(why).into_owned())),
        _ => Err(Failure::Fail(format!(
            "exited with status {} without a verdict",
            libc::WEXITSTATUS(status)
        ))),
    }
}

/// Runs the tests whose names contain one of `filters` (all if empty), each
/// in a forked child with a time limit, prints KTAP to stdout and returns the
/// kselftest exit code.
pub fn run(tests: &[&Test], filters: &[String]) -> i32 {
    let selected: Vec<&Test> = tests
        .iter()
        .copied()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    let out = io::stdout();
    println!("TAP version 13");
    println!("1..{}", selected.len());
    let limit = timeout();
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (i, test) in selected.iter().enumerate() {
        let n = i + 1;
        let _ = out.lock().flush();
        let start = Instant::now();
        let result = run_forked(test, limit);
        let secs = start.elapsed().as_secs_f64();
        if secs >= 1.0 {
            println!("# {} took {secs:.1} s", test.name);
        }
        match result {
            Ok(()) => {
                pass += 1;
                println!("ok {n} {}", test.name);
            }
            Err(Failure::Skip(why)) => {
                skip += 1;
                println!("ok {n} {} # SKIP {why}", test.name);
            }
            Err(Failure::Fail(why)) => {
                fail += 1;
                for line in why.lines() {
                    println!("# {line}");
                }
                println!("not ok {n} {}", test.name);
            }
        }
    }
    println!("# Totals: pass:{pass} fail:{fail} xfail:0 xpass:0 skip:{skip} error:0");
    let _ = out.lock().flush();
    if fail > 0 {
        KSFT_FAIL
    } else if pass == 0 && skip > 0 {
        KSFT_SKIP
    } else {
        KSFT_PASS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(run: fn() -> TestResult, limit: Option<Duration>) -> TestResult {
        run_forked(&Test { name: "t", run }, limit)
    }

    fn fail_message(r: TestResult) -> String {
        match r {
            Err(Failure::Fail(why)) => why,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn pass_skip_and_fail_come_back_from_the_child() {
        assert!(verdict(|| Ok(()), None).is_ok());
        match verdict(|| Err(Failure::Skip("no".into())), None) {
            Err(Failure::Skip(why)) => assert_eq!(why, "no"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fail_message(verdict(|| Err(Failure::Fail("bad".into())), None)),
            "bad"
        );
    }

    #[test]
    fn a_panic_fails_the_test() {
        let why = fail_message(verdict(|| panic!("boom"), None));
        assert!(why.contains("panicked: boom"), "{why}");
    }

    #[test]
    fn a_crash_fails_the_test_alone() {
        // SAFETY: kills only the forked child running the test.
        let why = fail_message(verdict(|| unsafe { libc::abort() }, None));
        assert!(
            why.contains("crashed") && why.contains(&libc::SIGABRT.to_string()),
            "{why}"
        );
    }

    #[test]
    fn a_hang_times_out() {
        let start = Instant::now();
        let why = fail_message(verdict(
            || loop {
                std::thread::sleep(Duration::from_secs(60));
            },
            Some(Duration::from_millis(300)),
        ));
        assert!(why.contains("timed out"), "{why}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn an_exit_without_verdict_fails() {
        // SAFETY: ends only the forked child running the test.
        let why = fail_message(verdict(|| unsafe { libc::_exit(3) }, None));
        assert!(why.contains("status 3"), "{why}");
    }

    #[test]
    fn a_long_failure_message_is_read_whole() {
        let why = fail_message(verdict(|| Err(Failure::Fail("x".repeat(200_000))), None));
        assert_eq!(why.len(), 200_000);
    }
}
