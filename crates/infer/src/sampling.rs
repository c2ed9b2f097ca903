//! Choosing the next token from one row of logits: greedy, temperature, top-k, top-p and
//! repetition penalty, seeded, in Hugging Face's order (repetition penalty, temperature,
//! top-k, top-p); and the log-softmax normaliser every engine's log-probabilities use.

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 is greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// CTRL's penalty on tokens already in the sequence (1: none): positive logits are
    /// divided by it, negative ones multiplied.
    pub repetition_penalty: f32,
    /// Seed of the sampling stream: the same prompts, options and seed give the same text.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    /// Checks the ranges, naming the field that is out.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::config(
                "temperature",
                format!("{} is not ≥ 0", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config(
                "top_p",
                format!("{} is not in (0, 1]", self.top_p),
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::config(
                "repetition_penalty",
                format!("{} is not > 0", self.repetition_penalty),
            ));
        }
        Ok(())
    }
}

/// `log Σ exp(logits)`, the normaliser of one row's log-softmax. Once per generated token over
/// the whole vocabulary, so the exponential is [`exp_le0`] (vectorised) rather than libm's,
/// which was a tenth of a small model's decoding time.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    // Sixteen running maxima: a single `fold(f32::max)` is a chain LLVM will not reorder.
    let mut maxima = [f32::NEG_INFINITY; 16];
    let (chunks, tail) = logits.as_chunks::<16>();
    for chunk in chunks {
        for k in 0..16 {
            maxima[k] = if chunk[k] > maxima[k] {
                chunk[k]
            } else {
                maxima[k]
            };
        }
    }
    let max = maxima
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // All −∞, or a +∞ somewhere: the exact formula says what that means (a NaN anywhere
        // comes out NaN either way).
        let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
        return max + sum.ln();
    }
    let mut lanes = [0f32; 16];
    for chunk in chunks {
        for k in 0..16 {
            lanes[k] += exp_le0(chunk[k] - max);
        }
    }
    let sum = lanes.iter().sum::<f32>() + tail.iter().map(|&l| exp_le0(l - max)).sum::<f32>();
    max + sum.ln()
}

/// `eˣ` for `x ≤ 0`: `2ⁿ · eʳ` with `r = x − n·ln 2` (ln 2 in two parts, Cody and Waite's
/// reduction, so that `r` keeps its precision for large `|x|`) and `eʳ` by its degree-7 Taylor
/// polynomial on `|r| ≤ ½ ln 2`. Within 10⁻⁶ relative of libm's, branch-free so that LLVM
/// vectorises the loop around it; below −87 (where f32 underflows anyway) it is 0. Softmaxes
/// and `tanh` on the host use it.
#[inline(always)]
pub fn exp_le0(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = if x < -100.0 { -100.0 } else { x };
    let shifted = y * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `n` as an integer straight from the bits of `shifted` (an `as i32` cast saturates, which
    // SSE2 cannot vectorise); n ≥ −126 wherever the result is kept, a valid biased exponent.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.0 { 0.0 } else { scale * p }
}

/// Index of the largest value; the first on ties (as `torch.argmax`).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Picks the next token from one row of logits; returns it with the model's log-probability.
pub fn choose<'a>(
    mut logits: Vec<f32>,
    seen: impl Iterator<Item = &'a u32>,
    sampling: &Sampling,
    rng: &mut ChaCha8Rng,
) -> (u32, f32) {
    // Only the chosen token's log-probability is kept: one normaliser, not a vector per step.
    let log_sum = log_sum_exp(&logits);
    let original = (sampling.repetition_penalty != 1.0).then(|| logits.clone());
    if sampling.repetition_penalty != 1.0 {
        let mut penalised = vec![false; logits.len()];
        for &t in seen {
            if let Some(done) = penalised.get_mut(t as usize).filter(|d| !**d) {
                *done = true;
                let l = &mut logits[t as usize];
                *l = if *l > 0.0 {
                    *l / sampling.repetition_penalty
                } else {
                    *l * sampling.repetition_penalty
                };
            }
        }
    }
    let token = if sampling.temperature == 0.0 {
        argmax(&logits)
    } else {
        sample(&logits, sampling, rng)
    };
    let logit = original.as_ref().unwrap_or(&logits)[token];
    (token as u32, logit - log_sum)
}

/// Temperature, top-k, top-p, then one draw.
fn sample(logits: &[f32], sampling: &Sampling, rng: &mut ChaCha8Rng) -> usize {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable sort: equal logits keep id order, so a seed means one result.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    let max = logits[order[0]] / sampling.temperature;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] / sampling.temperature - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    if sampling.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            cumulative += p / total;
            if cumulative >= sampling.top_p as f64 {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (n, p) in probs.iter().enumerate() {
        if draw < *p {
            return order[n];
        }
        draw -= p;
    }
    order[probs.len() - 1]
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(5)
    }

    #[test]
    fn the_fast_exponential_is_libm_to_a_few_ulps() {
        for i in 0..=200_000 {
            let x = -(i as f32) / 2000.0;
            let (got, want) = (exp_le0(x), x.exp());
            assert!(
                (got - want).abs() <= 1e-6 * want + 2e-38,
                "exp({x}) = {got}, libm {want}"
            );
        }
        assert_eq!(exp_le0(-200.0), 0.0);
        let logits = [
            1.0f32, 2.0, 3.0, -1e30, 0.5, 7.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0,
            10.0,
        ];
        let exact = logits.iter().map(|l| (l - 10.0f32).exp()).sum::<f32>().ln() + 10.0;
        assert!((log_sum_exp(&logits) - exact).abs() < 1e-6);
    }

    #[test]
    fn greedy_is_argmax_and_first_on_ties() {
        let (t, _) = choose(
            vec![0.0, 3.0, 3.0, 1.0],
            [].iter(),
            &Sampling::greedy(),
            &mut rng(),
        );
        assert_eq!(t, 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let sampling = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::greedy()
        };
        // Token 0 (logit 3) was seen: 3/2 = 1.5 < 2, so token 1 wins.
        let (t, _) = choose(vec![3.0, 2.0, -1.0], [0u32].iter(), &sampling, &mut rng());
        assert_eq!(t, 1);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = vec![0.5, 2.0, 1.9, -3.0];
        for sampling in [
            Sampling {
                temperature: 1.0,
                top_k: 1,
                ..Sampling::greedy()
            },
            Sampling {
                temperature: 1.0,
                top_p: 0.01,
                ..Sampling::greedy()
            },
        ] {
            for _ in 0..50 {
                assert_eq!(sample(&logits, &sampling, &mut rng()), 1);
            }
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Probabilities 0.5, 0.25, 0.25 at temperature 1.
        let logits = vec![2f32.ln(), 0.0, 0.0];
        let sampling = Sampling {
            temperature: 1.0,
            ..Sampling::greedy()
        };
        let mut rng = rng();
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[sample(&logits, &sampling, &mut rng)] += 1;
        }
        let share = counts[0] as f64 / 20_000.0;
        assert!((share - 0.5).abs() < 0.02, "{counts:?}");
        // top_k 2 removes one of the two equal tails: token 2 (sorted after 1) never appears.
        let k2 = Sampling {
            top_k: 2,
            ..sampling
        };
        assert!((0..2000).all(|_| sample(&logits, &k2, &mut rng) != 2));
    }

    #[test]
    fn bad_sampling_values_name_the_field() {
        for (sampling, field) in [
            (
                Sampling {
                    temperature: -1.0,
                    ..Sampling::greedy()
                },
                "temperature",
            ),
            (
                Sampling {
                    top_p: 0.0,
                    ..Sampling::greedy()
                },
                "top_p",
            ),
            (
                Sampling {
                    top_p: f32::NAN,
                    ..Sampling::greedy()
                },
                "top_p",
            ),
            (
                Sampling {
                    repetition_penalty: 0.0,
                    ..Sampling::greedy()
                },
                "repetition_penalty",
            ),
        ] {
            let err = sampling.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
