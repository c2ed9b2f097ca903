//! NumPy's legacy `RandomState` as far as Megatron's GPT dataset uses it: seeding with a
//! 32-bit integer and `shuffle` of a 1-D array. With it, a seed gives the same document and
//! sample order as Megatron's `GPTDataset`, so a run can move between the two.
//!
//! `RandomState(seed)` is MT19937 seeded by `init_genrand(seed)`; `shuffle(x)` is Fisher-Yates
//! from the end, `j = random_interval(i)` for `i = n-1 … 1`, where `random_interval` draws
//! masked 32-bit outputs (two for a 64-bit bound) until one is `≤ i`
//! (numpy/random/src/distributions/distributions.c, `random_interval`; mtrand.pyx,
//! `_shuffle_raw`).

const N: usize = 624;
const M: usize = 397;

/// MT19937 in NumPy's legacy seeding.
pub struct RandomState {
    mt: [u32; N],
    index: usize,
}

impl RandomState {
    /// `numpy.random.RandomState(seed)`.
    pub fn new(seed: u32) -> RandomState {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { mt, index: N }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.mt[i] = self.mt[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `genrand_int32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.generate();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        (high << 32) | u64::from(self.next_u32())
    }

    /// `random_interval(max)`: uniform in `0..=max` by rejection of masked draws.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.shuffle` of a 1-D array.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.interval(i as u64) as usize;
            x.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_mt19937_outputs() {
        // The first outputs of init_genrand(5489), the reference implementation's default
        // seed (mt19937ar.c), and NumPy's RandomState(0).randint(2**32, dtype=uint32)-style raw
        // draws: RandomState(0).tomaxint() is built on the same stream.
        let mut r = RandomState::new(5489);
        assert_eq!(r.next_u32(), 3_499_211_612);
        assert_eq!(r.next_u32(), 581_869_302);
        let mut r = RandomState::new(0);
        assert_eq!(r.next_u32(), 2_357_136_044);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut x: Vec<u32> = (0..1000).collect();
        RandomState::new(7).shuffle(&mut x);
        let mut sorted = x.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(x, sorted);
    }
}
