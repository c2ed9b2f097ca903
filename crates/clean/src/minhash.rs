//! MinHash signatures of word n-gram shingles, and the LSH banding chosen from a threshold.
//!
//! A shingle is `n` consecutive words ([`crate::text::for_each_word`]), hashed to 32 bits
//! (XXH3 of each word, the window folded and finalised). Permutation `i` is the bijection
//! `x ↦ aᵢ·x + bᵢ (mod 2³²)` with `aᵢ` odd, both drawn from ChaCha8 with the seed; the
//! signature keeps, per permutation, the smallest image over the document's shingles. Since the
//! shingle hashes are uniform, each permutation's minimum falls on a uniformly random shingle
//! of the union of two documents, and two signatures agree at `i` with probability equal to
//! the documents' Jaccard similarity (checked by `tests::estimates_are_unbiased`). The
//! multiply-add over 32-bit lanes is what lets the hot loop run 16 permutations per AVX-512
//! instruction; datasketch's `(a·x + b) mod (2⁶¹−1)` needs 64-bit products and a modulo.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use xxhash_rust::xxh3::xxh3_64;

/// Permutations are computed in blocks of this many lanes (one AVX-512 register of `u32`).
const LANES: usize = 16;

/// Computes MinHash signatures.
#[derive(Clone, Debug)]
pub struct MinHasher {
    perms: usize,
    ngram: usize,
    /// Multipliers and offsets, padded to a multiple of [`LANES`].
    a: Vec<u32>,
    b: Vec<u32>,
}

/// Reusable buffers for [`MinHasher::signature_into`] (one per thread).
#[derive(Default)]
pub struct Scratch {
    word: Vec<u8>,
    words: Vec<u64>,
    shingles: Vec<u32>,
    lanes: Vec<u32>,
}

impl MinHasher {
    /// `perms` permutations (≥ 1) over `ngram`-word shingles (≥ 1), drawn from `seed`.
    pub fn new(perms: usize, ngram: usize, seed: u64) -> MinHasher {
        let perms = perms.max(1);
        let padded = perms.div_ceil(LANES) * LANES;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a = Vec::with_capacity(padded);
        let mut b = Vec::with_capacity(padded);
        for _ in 0..padded {
            a.push(rng.next_u32() | 1);
            b.push(rng.next_u32());
        }
        MinHasher {
            perms,
            ngram: ngram.max(1),
            a,
            b,
        }
    }

    /// Signature length.
    pub fn perms(&self) -> usize {
        self.perms
    }

    /// Words per shingle.
    pub fn ngram(&self) -> usize {
        self.ngram
    }

    /// The 32-bit hashes of the shingles of `text`, in order (repeats kept). A text with fewer
    /// words than `ngram` is one shingle of all its words; a text with no word has none.
    pub fn shingles(&self, text: &str, scratch: &mut Scratch) -> Vec<u32> {
        self.fill_shingles(text, scratch);
        scratch.shingles.clone()
    }

    fn fill_shingles(&self, text: &str, scratch: &mut Scratch) {
        let Scratch {
            word,
            words,
            shingles,
            ..
        } = scratch;
        words.clear();
        shingles.clear();
        crate::text::for_each_word(text, word, |w| words.push(xxh3_64(w)));
        if words.is_empty() {
            return;
        }
        let n = self.ngram.min(words.len());
        shingles.extend(words.windows(n).map(|window| {
            let mut h = 0x9e37_79b9_7f4a_7c15u64;
            for &w in window {
                h = (h.rotate_left(23) ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
            }
            (fmix64(h) >> 32) as u32
        }));
    }

    /// The signature of `text` (`perms` values), or `None` when it has no word.
    pub fn signature(&self, text: &str) -> Option<Vec<u32>> {
        let mut signature = vec![0; self.perms];
        self.signature_into(text, &mut Scratch::default(), &mut signature)
            .then_some(signature)
    }

    /// Writes the signature of `text` into `out` (`perms` long); false when `text` has no word
    /// (`out` is then all `u32::MAX`).
    pub fn signature_into(&self, text: &str, scratch: &mut Scratch, out: &mut [u32]) -> bool {
        self.fill_shingles(text, scratch);
        scratch.lanes.clear();
        scratch.lanes.resize(self.a.len(), u32::MAX);
        update(&mut scratch.lanes, &self.a, &self.b, &scratch.shingles);
        out.copy_from_slice(&scratch.lanes[..self.perms]);
        !scratch.shingles.is_empty()
    }
}

/// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The fraction of positions where two signatures agree: the Jaccard estimate.
pub fn similarity(a: &[u32], b: &[u32]) -> f64 {
    agreement(a, b) as f64 / a.len().max(1) as f64
}

/// The number of positions where two signatures agree.
pub fn agreement(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// `min(sig[i], a[i]·x + b[i])` for every shingle hash `x`: the hot loop. The portable version
/// is compiled once more for AVX2 and AVX-512 and the widest the CPU has is picked at run time,
/// because the default x86-64 target (SSE2) has no 32-bit vector multiply.
fn update(sig: &mut [u32], a: &[u32], b: &[u32], xs: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[allow(unsafe_code)]
            // SAFETY: the only requirement of a `target_feature` function is that the CPU has
            // the feature, which was just checked.
            unsafe {
                update_avx512(sig, a, b, xs)
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: as above, AVX2 was just checked.
            unsafe {
                update_avx2(sig, a, b, xs)
            };
            return;
        }
    }
    update_lanes(sig, a, b, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn update_avx512(sig: &mut [u32], a: &[u32], b: &[u32], xs: &[u32]) {
    update_lanes(sig, a, b, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn update_avx2(sig: &mut [u32], a: &[u32], b: &[u32], xs: &[u32]) {
    update_lanes(sig, a, b, xs)
}

/// One block of [`LANES`] permutations stays in registers while every shingle streams by.
#[inline(always)]
fn update_lanes(sig: &mut [u32], a: &[u32], b: &[u32], xs: &[u32]) {
    for ((s, a), b) in sig
        .chunks_exact_mut(LANES)
        .zip(a.chunks_exact(LANES))
        .zip(b.chunks_exact(LANES))
    {
        let mut m = [0u32; LANES];
        m.copy_from_slice(s);
        let mut ka = [0u32; LANES];
        ka.copy_from_slice(a);
        let mut kb = [0u32; LANES];
        kb.copy_from_slice(b);
        for &x in xs {
            for l in 0..LANES {
                m[l] = m[l].min(ka[l].wrapping_mul(x).wrapping_add(kb[l]));
            }
        }
        s.copy_from_slice(&m);
    }
}

/// LSH banding: a signature is cut into `bands` bands of `rows` values; two documents are
/// candidates when any band is equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bands {
    /// Number of bands.
    pub bands: usize,
    /// Values per band.
    pub rows: usize,
}

impl Bands {
    /// The banding for verified candidates: datasketch's `_optimal_param` search with the
    /// false-negative area weighted 0.95 and the false-positive area 0.05. Every candidate is
    /// verified against the threshold, so a false positive costs one signature comparison while
    /// a false negative is a duplicate kept for good. At 0.8 and 128 permutations this is
    /// 16 bands x 8 rows (a pair at J = 0.8 becomes a candidate with probability 0.947, at
    /// J = 0.5 with 0.061).
    pub fn optimal(threshold: f64, perms: usize) -> Bands {
        Bands::weighted(threshold, perms, 0.05, 0.95)
    }

    /// datasketch's own choice (`MinHashLSH` without candidate verification: both areas
    /// weighted ½): 9 x 13 at 0.8 and 128 permutations.
    pub fn datasketch(threshold: f64, perms: usize) -> Bands {
        Bands::weighted(threshold, perms, 0.5, 0.5)
    }

    /// The `(bands, rows)` with `bands·rows ≤ perms` that minimises the weighted sum of the
    /// false-positive area below `threshold` and the false-negative area above it, under the
    /// candidate curve `1 − (1 − sʳ)ᵇ`.
    pub fn weighted(threshold: f64, perms: usize, fp_weight: f64, fn_weight: f64) -> Bands {
        let mut best = (f64::INFINITY, Bands { bands: 1, rows: 1 });
        for bands in 1..=perms.max(1) {
            for rows in 1..=perms.max(1) / bands {
                let bands_rows = Bands { bands, rows };
                let false_positive = integrate(|s| bands_rows.probability(s), 0.0, threshold);
                let false_negative = integrate(|s| 1.0 - bands_rows.probability(s), threshold, 1.0);
                let error = fp_weight * false_positive + fn_weight * false_negative;
                if error < best.0 {
                    best = (error, bands_rows);
                }
            }
        }
        best.1
    }

    /// The probability that two documents of Jaccard similarity `s` become candidates.
    pub fn probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }
}

/// Composite Simpson's rule; the integrands are smooth polynomials, so 256 intervals give the
/// same choice as scipy's adaptive quadrature.
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const N: usize = 256;
    let h = (b - a) / N as f64;
    let mut sum = f(a) + f(b);
    for i in 1..N {
        let x = a + i as f64 * h;
        sum += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
    }
    sum * h / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn jaccard(a: &[u32], b: &[u32]) -> f64 {
        let a: HashSet<_> = a.iter().collect();
        let b: HashSet<_> = b.iter().collect();
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    #[test]
    fn portable_and_dispatched_loops_agree() {
        let hasher = MinHasher::new(40, 5, 7);
        let xs: Vec<u32> = (0..1000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let mut fast = vec![u32::MAX; hasher.a.len()];
        let mut slow = fast.clone();
        update(&mut fast, &hasher.a, &hasher.b, &xs);
        update_lanes(&mut slow, &hasher.a, &hasher.b, &xs);
        assert_eq!(fast, slow);
        let scalar: Vec<u32> = (0..hasher.a.len())
            .map(|i| {
                xs.iter()
                    .map(|&x| hasher.a[i].wrapping_mul(x).wrapping_add(hasher.b[i]))
                    .min()
                    .unwrap()
            })
            .collect();
        assert_eq!(fast, scalar);
    }

    #[test]
    fn estimates_are_unbiased_with_binomial_spread() {
        // Sets of 300 random hashes sharing a chosen number: for J = 0.5 and 0.8, over 400
        // pairs, the mean estimate is J and the spread that of 128 independent trials.
        let hasher = MinHasher::new(128, 5, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for shared in [200usize, 267] {
            let (mut sum, mut sum_sq, mut exact_sum) = (0.0, 0.0, 0.0);
            let trials = 400;
            for _ in 0..trials {
                let common: Vec<u32> = (0..shared).map(|_| rng.next_u32()).collect();
                let mut a = common.clone();
                let mut b = common;
                a.extend((0..300 - shared).map(|_| rng.next_u32()));
                b.extend((0..300 - shared).map(|_| rng.next_u32()));
                let sig = |xs: &[u32]| {
                    let mut s = vec![u32::MAX; hasher.a.len()];
                    update(&mut s, &hasher.a, &hasher.b, xs);
                    s.truncate(128);
                    s
                };
                let exact = jaccard(&a, &b);
                let estimate = similarity(&sig(&a), &sig(&b));
                exact_sum += exact;
                sum += estimate - exact;
                sum_sq += (estimate - exact).powi(2);
            }
            let j = exact_sum / trials as f64;
            let bias = sum / trials as f64;
            let spread = (sum_sq / trials as f64).sqrt();
            let binomial = (j * (1.0 - j) / 128.0).sqrt();
            assert!(bias.abs() < 0.01, "J {j}: bias {bias}");
            assert!(
                spread < 1.2 * binomial && spread > 0.8 * binomial,
                "J {j}: spread {spread}, binomial {binomial}"
            );
        }
    }

    #[test]
    fn shingles_follow_words_not_spacing_or_case() {
        let hasher = MinHasher::new(16, 3, 0);
        let mut scratch = Scratch::default();
        let a = hasher.shingles("The quick brown fox jumps", &mut scratch);
        let b = hasher.shingles("the QUICK, brown\n\nfox -- jumps!", &mut scratch);
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_eq!(hasher.shingles("two words", &mut scratch).len(), 1);
        assert!(hasher.shingles(" ... ", &mut scratch).is_empty());
        assert!(hasher.signature("!!").is_none());
        // Word order matters inside a shingle.
        assert_ne!(
            hasher.shingles("a b c", &mut scratch),
            hasher.shingles("c b a", &mut scratch)
        );
    }

    #[test]
    fn same_seed_same_signature() {
        let text = "un deux trois quatre cinq six sept huit";
        let s1 = MinHasher::new(128, 5, 42).signature(text).unwrap();
        let s2 = MinHasher::new(128, 5, 42).signature(text).unwrap();
        let s3 = MinHasher::new(128, 5, 43).signature(text).unwrap();
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
    }

    #[test]
    fn banding() {
        assert_eq!(Bands::optimal(0.8, 128), Bands { bands: 16, rows: 8 });
        assert_eq!(Bands::datasketch(0.8, 128), Bands { bands: 9, rows: 13 });
        for (threshold, perms) in [(0.5, 64), (0.9, 256), (0.7, 100)] {
            let b = Bands::optimal(threshold, perms);
            assert!(b.bands * b.rows <= perms);
            assert!(b.probability(threshold) > 0.9, "{b:?}");
        }
        let b = Bands { bands: 16, rows: 8 };
        assert!((b.probability(0.8) - (1.0 - (1.0 - 0.8f64.powi(8)).powi(16))).abs() < 1e-12);
        assert!((integrate(|x| x * x, 0.0, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    }
}
