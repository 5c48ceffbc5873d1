//! A small seeded generator for fault injection: a run's faults replay
//! from its seed.

use std::sync::Mutex;

/// xorshift64*: fast, and plenty for choosing which delivery to delay.
#[derive(Debug)]
pub struct Rng(Mutex<u64>);

impl Rng {
    /// A generator starting from `seed` (0 is replaced: xorshift needs a
    /// non-zero state).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        }))
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `true` with probability `per_mille / 1000`.
    pub fn chance(&self, per_mille: u32) -> bool {
        self.next_u64() % 1000 < u64::from(per_mille)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}
