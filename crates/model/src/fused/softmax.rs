//! Row softmax kernels: plain (the loss over the vocabulary), causally masked and scaled
//! (attention), and the softmax's gradient.

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

use super::exp_nonpositive;

/// Rows per rayon task.
const ROWS: usize = 64;

/// `softmax(x)` over the last dimension, as burn's `softmax(x, D - 1)`, in one pass per row on
/// flex for an f32 tensor outside autodiff (burn's flex softmax calls libm's `expf` once per
/// element: 16.7 M times for the tiny GPT's `[2048, 8192]` logits every step).
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.device() != Device::flex() || x.dtype() != DType::F32 || x.is_autodiff() || D == 0 {
        return softmax(x, D - 1);
    }
    let mut data = x.into_data();
    let len = *data
        .shape()
        .last()
        .expect("a tensor of at least one dimension");
    let values = data.as_mut_slice::<f32>().expect("f32 tensors hold f32");
    if len > 0 {
        // One query row per block sees every key: the causal mask of a single query.
        masked_rows(values, 1, len, 1.0);
    }
    Tensor::from_data(data, &Device::flex())
}

/// Row `r` of `[.., q_len, k_len]` scores sees keys `0..k_len − q_len + (r mod q_len) + 1`;
/// the rest get probability 0. Not generic, so compiled with this crate's optimisations.
pub(super) fn masked_rows(scores: &mut [f32], q_len: usize, k_len: usize, scale: f32) {
    let offset = k_len - q_len;
    scores
        .par_chunks_mut(ROWS * k_len)
        .enumerate()
        .for_each(|(chunk, rows)| {
            for (i, row) in rows.chunks_exact_mut(k_len).enumerate() {
                let seen = offset + (chunk * ROWS + i) % q_len + 1;
                pulp::Arch::new().dispatch(SoftmaxRow { row, seen, scale });
            }
        });
}

struct SoftmaxRow<'a> {
    row: &'a mut [f32],
    seen: usize,
    scale: f32,
}

impl pulp::WithSimd for SoftmaxRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let (seen, masked) = self.row.split_at_mut(self.seen);
        masked.fill(0.0);
        let max = lanes(seen, f32::NEG_INFINITY, f32::max) * self.scale;
        for s in seen.iter_mut() {
            *s = exp_nonpositive(s.mul_add(self.scale, -max));
        }
        let inverse = 1.0 / lanes(seen, 0.0, |a, b| a + b);
        for s in seen.iter_mut() {
            *s *= inverse;
        }
    }
}

pub(super) fn gradient_rows(p: &[f32], d: &mut [f32], k_len: usize, scale: f32) {
    d.par_chunks_mut(ROWS * k_len)
        .zip(p.par_chunks(ROWS * k_len))
        .for_each(|(d, p)| {
            for (d, p) in d.chunks_exact_mut(k_len).zip(p.chunks_exact(k_len)) {
                pulp::Arch::new().dispatch(GradientRow { d, p, scale });
            }
        });
}

struct GradientRow<'a> {
    d: &'a mut [f32],
    p: &'a [f32],
    scale: f32,
}

impl pulp::WithSimd for GradientRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let mut dot = [0f32; LANES];
        let (d, p) = (self.d.chunks_exact(LANES), self.p.chunks_exact(LANES));
        let tail: f32 = d
            .remainder()
            .iter()
            .zip(p.remainder())
            .map(|(d, p)| d * p)
            .sum();
        for (d, p) in d.zip(p) {
            for i in 0..LANES {
                dot[i] = d[i].mul_add(p[i], dot[i]);
            }
        }
        let dot = dot.iter().sum::<f32>() + tail;
        for (d, &p) in self.d.iter_mut().zip(self.p) {
            *d = self.scale * p * (*d - dot);
        }
    }
}

/// Independent accumulators for a reduction, so that it vectorises: a single running sum is a
/// chain of dependent adds, which the compiler must keep in order.
const LANES: usize = 16;

/// `values` folded with `op` from `init`, lane by lane and then across lanes: a fixed order,
/// so the same bytes on any machine and thread count.
#[inline(always)]
fn lanes(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &v| op(a, v));
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] = op(acc[i], chunk[i]);
        }
    }
    acc.iter().fold(tail, |a, &v| op(a, v))
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn a_row_of_one_key_is_certain() {
        let mut scores = vec![5.0, -3.0, 2.0, 7.0];
        masked_rows(&mut scores, 2, 2, 0.5);
        assert_eq!(scores[..2], [1.0, 0.0]);
        let expected = 1.0 / (1.0 + (0.5f32 * (7.0 - 2.0)).exp());
        assert!((scores[2] - expected).abs() < 1e-6);
        assert!((scores[2] + scores[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn softmax_last_is_burns() {
        // Seeded: unseeded draws once gave a row whose largest probability was off by 4.1e-6
        // relative, past a bound of 4e-6. The exp is a polynomial good to about 1e-6 relative
        // per element; the row's sum adds its errors up.
        let device = Device::flex();
        device.seed(7);
        let x = Tensor::<2>::random([33, 1000], Distribution::Normal(0.0, 4.0), &device);
        let ours: Vec<f32> = softmax_last(x.clone()).into_data().try_to_vec().unwrap();
        let burns: Vec<f32> = softmax(x, 1).into_data().try_to_vec().unwrap();
        for (a, b) in ours.iter().zip(&burns) {
            assert!((a - b).abs() <= 1e-5 * b.max(1e-3), "{a} against {b}");
        }
    }
}
