//! What burn's flex backend composes slowly, computed in one pass over a tensor's host memory,
//! with gradients of our own: the activation, the attention and the loss's softmax of a
//! training step.
//!
//! - [`gelu_tanh`]: burn's `gelu_approximate` is `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
//!   as six tensor ops, with `powf` for the cube and libm's `tanhf` one element at a time, and
//!   autodiff keeps each op's inputs for its backward: 38 ms forward and backward for the tiny
//!   GPT's `[8, 256, 512]` MLP activations, a third of its training step on flex. Here the value
//!   and its derivative come from one vectorised pass, and the backward is one multiplication
//!   by the kept derivative (3.9 ms in all).
//! - [`causal_attention`]: under autodiff burn's attention falls back to its composed formula
//!   (transpose, matmul, scale, a mask built and applied, max, subtract, `expf` per element, sum,
//!   divide, matmul), each op recorded with its own backward: 23 ms for the tiny GPT's
//!   `[8, 4, 256, 32]` heads. Here it is one autodiff op: two batched matmuls around a fused
//!   masked softmax forward; backward, four matmuls around one fused pass for the softmax's
//!   gradient (`dS = P ∘ (dP − rowsum(P ∘ dP))`), with the probabilities kept from the forward.
//! - [`softmax_last`]: the loss's softmax over the vocabulary, outside autodiff; burn's flex
//!   softmax calls libm's `expf` once per element.
//!
//! They run only on flex in f32 (wgpu's kernels are fused already; other types take burn's
//! path) and are deterministic: every element is computed in a fixed order whatever the threads.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use lmforge_model::fused::gelu_tanh;
//!
//! let device = Device::flex();
//! let y = gelu_tanh(Tensor::<1>::from_floats([-1.0, 0.0, 1.0], &device));
//! let y: Vec<f32> = y.into_data().try_to_vec().unwrap();
//! assert!((y[2] - 0.841_192).abs() < 1e-6 && y[1] == 0.0);
//! ```

mod attention;
mod gelu;
mod softmax;

pub use attention::causal_attention;
pub use gelu::gelu_tanh;
pub use softmax::softmax_last;

/// `exp(z)` for `z ≤ 0` without a libm call, so that loops over it vectorise: `2^k·p(r)` with
/// `k = round(z / ln 2)` and `p` the degree-6 Taylor polynomial on `|r| ≤ ln 2 / 2` (relative
/// error below 2·10⁻⁷). Arguments below −87 give `exp(−87)`, which is 0 to GELU.
#[inline(always)]
fn exp_nonpositive(z: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in any vector width.
    const ROUND: f32 = 12_582_912.0;
    let z = z.max(-87.0);
    let k = (z * LOG2_E + ROUND) - ROUND;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, z));
    // Horner's rule written out: an array iterator here is a call per element unless inlined.
    let p = (1.0f32 / 720.0).mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    // 2^k from its exponent bits; `k + 127` lies in 1..=127, and float arithmetic keeps the
    // overflow checks of a dev build out of the loop, which would stop it vectorising.
    p * f32::from_bits(((k + 127.0) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_over_its_range() {
        let mut worst = 0f32;
        let mut z = 0f32;
        while z > -87.0 {
            let (ours, exact) = (exp_nonpositive(z), z.exp());
            worst = worst.max((ours - exact).abs() / exact);
            z -= 0.001_3;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
