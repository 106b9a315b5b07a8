//! `cma-selftest`: the kselftest-style suite for `/dev/cma`, printing KTAP.
//!
//! Runs inside the test VM (see `scripts/vm.sh`) as root with the module
//! loaded. `CMA_KO` names the module file for the unload/reload test.
//!
//! Usage: `cma-selftest [--list] [NAME-SUBSTRING...]`

mod attach;
mod basic;
mod cache;
mod consent;
mod copy;
mod fuse;
mod fuzz;
mod hold;
mod ktap;
mod map;
mod peer;
mod perm;
mod pvm;
mod race;
mod review;
mod stress;
mod userns;
mod util;

/// The `CMA_FEAT_*` bits this suite expects the module to report: every
/// one the header defines.
pub const EXPECTED_FEATURES: u64 = cma::sys::CMA_FEAT_ALL;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--pvm-helper") {
        std::process::exit(pvm::helper(&args[1..]));
    }
    // `--preload`: the suite of libcma-preload.so, run under LD_PRELOAD.
    if args.first().map(String::as_str) == Some("--preload") {
        args.remove(0);
        let tests: Vec<&ktap::Test> = pvm::TESTS.iter().collect();
        std::process::exit(ktap::run(&tests, &args));
    }
    // The basic tests end by reloading the module, so they run last.
    let tests: Vec<&ktap::Test> = copy::TESTS
        .iter()
        .chain(attach::TESTS)
        .chain(perm::TESTS)
        .chain(consent::TESTS)
        .chain(userns::TESTS)
        .chain(fuzz::TESTS)
        .chain(cache::TESTS)
        .chain(map::TESTS)
        .chain(race::TESTS)
        .chain(stress::TESTS)
        .chain(review::TESTS)
        .chain(basic::TESTS)
        .collect();
    if args.iter().any(|a| a == "--list") {
        for t in &tests {
            println!("{}", t.name);
        }
        return;
    }
    std::process::exit(ktap::run(&tests, &args));
}
