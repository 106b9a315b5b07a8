//! `cma-selftest`: the kselftest-style suite for `/dev/cma`, printing KTAP.
//!
//! Runs inside the test VM (see `scripts/vm.sh`) as root with the module
//! loaded. `CMA_KO` names the module file for the unload/reload test.
//!
//! Usage: `cma-selftest [--list] [NAME-SUBSTRING...]`

mod basic;
mod ktap;
mod util;

/// The `CMA_FEAT_*` bits this suite expects the module to report.
pub const EXPECTED_FEATURES: u64 = 0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tests: Vec<&ktap::Test> = basic::TESTS.iter().collect();
    if args.iter().any(|a| a == "--list") {
        for t in &tests {
            println!("{}", t.name);
        }
        return;
    }
    std::process::exit(ktap::run(&tests, &args));
}
