//! A hasher for the engine's small integer keys (job, function and worker
//! ids). They are not attacker-chosen, so SipHash's protection buys nothing,
//! and the engine looks them up for every chunk.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing: one multiply spreads consecutive ids over the high
/// bits, which is where the table looks.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by engine ids.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A set of engine ids.
pub type FastSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;
