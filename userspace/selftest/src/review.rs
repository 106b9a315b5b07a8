//! Tests that prove the fixes of the module's review, one behaviour each.
//! Every test fails on the module as it was reviewed (its doc comment says
//! how) and passes once the fix is in:
//!
//! - `review_grant_race_reaped` (`race.rs`): `CMA_IOC_GRANT` naming a
//!   process that is being reaped panicked the kernel.

mod race;

use crate::ktap::Test;

/// The tests of this file, in order.
pub const TESTS: &[Test] = &[Test {
    name: "review_grant_race_reaped",
    run: race::grant_race_reaped,
}];

/// The unprivileged user these tests run their processes as (a uid with
/// no passwd entry is fine: only the number counts).
pub(crate) const UID: u32 = 1000;

/// How long each race runs: `CMA_STRESS_SECS` (the suite's knob for its
/// race and stress tests), 5 s if unset.
pub(crate) fn race_time() -> std::time::Duration {
    let secs = std::env::var("CMA_STRESS_SECS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(5);
    std::time::Duration::from_secs(secs)
}

/// The 64-bit word the pattern `seed` puts at byte offset `off` (a
/// multiple of 8) of a buffer: distinct for every word and seed.
pub(crate) fn word(seed: u64, off: usize) -> u64 {
    let mut x = (off as u64 ^ seed.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ seed
}

/// Fills `buf`, which starts at byte offset `base` (a multiple of 8) of
/// the patterned buffer, with pattern `seed`.
pub(crate) fn fill(buf: &mut [u8], base: usize, seed: u64) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let w = word(seed, base + 8 * i).to_ne_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// The byte offset of the first word of `buf` (which starts at offset
/// `base`, a multiple of 8) that differs from pattern `seed`, if any.
pub(crate) fn mismatch(buf: &[u8], base: usize, seed: u64) -> Option<usize> {
    buf.chunks(8).enumerate().find_map(|(i, chunk)| {
        let w = word(seed, base + 8 * i).to_ne_bytes();
        (chunk != &w[..chunk.len()]).then_some(8 * i)
    })
}
