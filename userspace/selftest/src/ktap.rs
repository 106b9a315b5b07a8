//! A minimal KTAP (kselftest) harness: one behaviour per test, a plan, one
//! `ok`/`not ok` line per test, `# SKIP` for skipped tests, a `# Totals:` line,
//! and the kselftest exit codes.

use std::fmt::Display;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};

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

/// Runs the tests whose names contain one of `filters` (all if empty), prints
/// KTAP to stdout and returns the kselftest exit code.
pub fn run(tests: &[&Test], filters: &[String]) -> i32 {
    let selected: Vec<&Test> = tests
        .iter()
        .copied()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    let out = io::stdout();
    println!("TAP version 13");
    println!("1..{}", selected.len());
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (i, test) in selected.iter().enumerate() {
        let n = i + 1;
        let _ = out.lock().flush();
        let start = std::time::Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(test.run)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(Failure::Fail(format!("panicked: {msg}")))
        });
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
