//! A small seeded generator whose sequence kiln owns, so that data order and augmentation
//! stay the same across platforms and dependency upgrades.

/// SplitMix64: fast, tiny state, and good enough to shuffle and augment data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// A generator for one stream among many, e.g. (seed, epoch) or (seed, epoch, sample).
    pub fn for_stream(seed: u64, stream: &[u64]) -> SplitMix64 {
        let mut g = SplitMix64(seed);
        for &s in stream {
            g = SplitMix64(g.next_u64() ^ s.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        g
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias worth measuring.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A uniform number in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

/// A seeded permutation of `0..n` (Fisher-Yates).
pub fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_the_seed() {
        let a = permutation(1000, &mut SplitMix64::new(1));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, permutation(1000, &mut SplitMix64::new(1)));
        assert_ne!(a, permutation(1000, &mut SplitMix64::new(2)));
    }

    #[test]
    fn streams_differ() {
        let a = SplitMix64::for_stream(7, &[0]).next_u64();
        let b = SplitMix64::for_stream(7, &[1]).next_u64();
        assert_ne!(a, b);
    }
}
