//! A seeded generator for property and chaos tests: xorshift64* seeded
//! through splitmix64, so any seed (0 included) gives a good stream. No
//! dependency, and a failing run replays from the seed it printed.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64*.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: never 0, well mixed.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A generator for a sub-task (a thread), independent of this one.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// The seed `LOCKD_SEED` names (decimal or `0x` hex), if set.
pub fn seed_override() -> Option<u64> {
    let text = std::env::var("LOCKD_SEED").ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("LOCKD_SEED={text:?} is not a number")))
}

/// The seeds a test runs: `LOCKD_SEED` alone when set, else `fixed` plus
/// one from the clock. Each is printed (shown when the test fails).
pub fn seeds(test: &str, fixed: &[u64]) -> Vec<u64> {
    let seeds = match seed_override() {
        Some(seed) => vec![seed],
        None => {
            let clock = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut seeds = fixed.to_vec();
            seeds.push(clock);
            seeds
        }
    };
    for seed in &seeds {
        println!("{test}: seed {seed:#x} (replay with LOCKD_SEED={seed:#x})");
    }
    seeds
}
