//! The pieces GPT and BERT are built from, where burn's own do not fit.
//!
//! burn's `LayerNorm` names its parameters `gamma`/`beta` and always has a bias, its `RmsNorm`
//! is a second type: [`Norm`] is one module for both with Hugging Face's parameter names, so
//! a norm is a config switch and checkpoints map name for name. Positions are computed from
//! per-token position ids rather than burn's `RotaryEncoding`/`PositionalEncoding`, which
//! take one start offset for the whole batch: a batch of prompts of different lengths, left
//! padded for the KV cache, has a different position at the same column in every row.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor};

use crate::config::Activation;
use crate::init::SeededInit;

/// LayerNorm (`rms == false`) or RMSNorm over the last dimension.
#[derive(Module, Debug)]
pub struct Norm {
    pub(crate) weight: Param<Tensor<1>>,
    pub(crate) bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    eps: f64,
    #[module(skip)]
    rms: bool,
}

impl Norm {
    /// Weight 1, bias 0.
    pub fn new(d: usize, rms: bool, bias: bool, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d], device))),
            eps,
            rms,
        }
    }

    /// Normalises the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = D - 1;
        let x = if self.rms {
            let mean_square = x.clone().square().mean_dim(last);
            x * (mean_square + self.eps).sqrt().recip()
        } else {
            let centered = x.clone() - x.mean_dim(last);
            let variance = centered.clone().square().mean_dim(last);
            centered * (variance + self.eps).sqrt().recip()
        };
        let x = x * self.weight.val().unsqueeze();
        match &self.bias {
            Some(bias) => x + bias.val().unsqueeze(),
            None => x,
        }
    }
}

/// The feed-forward network: GELU (`up`, `down`) or SwiGLU (`gate`, `up`, `down`).
#[derive(Module, Debug)]
pub struct Mlp {
    pub(crate) gate: Option<Linear>,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

impl Mlp {
    pub(crate) fn new(
        init: &mut SeededInit,
        activation: Activation,
        d: usize,
        hidden: usize,
        bias: bool,
        residual_std: f64,
        device: &Device,
    ) -> Self {
        let gate =
            (activation == Activation::Swiglu).then(|| init.linear(d, hidden, 0.02, bias, device));
        Self {
            gate,
            up: init.linear(d, hidden, 0.02, bias, device),
            down: init.linear(hidden, d, residual_std, bias, device),
        }
    }

    /// `x` `[batch, seq, d]` through the network.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match &self.gate {
            Some(gate) => silu(gate.forward(x.clone())) * self.up.forward(x),
            None => crate::fused::gelu_tanh(self.up.forward(x)),
        };
        self.down.forward(hidden)
    }
}

/// `1 / θ^(2i/d)` for `i` in `0..d/2`: the frequencies of sinusoidal positions and RoPE.
fn inverse_frequencies(d: usize, theta: f64, device: &Device) -> Tensor<1> {
    let freqs: Vec<f32> = (0..d / 2)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / d as f64)) as f32)
        .collect();
    Tensor::from_floats(freqs.as_slice(), device)
}

/// Angles `position · frequency`, `[batch, seq, d/2]`.
fn angles(positions: Tensor<2, Int>, d: usize, theta: f64) -> Tensor<3> {
    let device = positions.device();
    let positions = positions.float().unsqueeze_dim::<3>(2);
    positions * inverse_frequencies(d, theta, &device).unsqueeze::<3>()
}

/// The fixed sinusoidal vectors of `positions` `[batch, seq]`, `[batch, seq, d]`, with
/// `sin` at even and `cos` at odd indices as in the original transformer.
pub fn sinusoids(positions: Tensor<2, Int>, d: usize) -> Tensor<3> {
    let [batch, seq] = positions.dims();
    let angles = angles(positions, d, 10_000.0);
    Tensor::stack::<4>(vec![angles.clone().sin(), angles.cos()], 3).reshape([batch, seq, d])
}

/// RoPE's rotation for `positions` `[batch, seq]` at `frequencies` (one per pair,
/// [`crate::GptConfig::rope_frequencies`]): `(cos, sin)`, each `[batch, 1, seq, head_dim]`
/// with the half-width angles repeated (the "rotate half" pairing of GPT-NeoX, LLaMA and
/// Hugging Face's implementations).
pub fn rope_tables(positions: Tensor<2, Int>, frequencies: &[f64]) -> (Tensor<4>, Tensor<4>) {
    let device = positions.device();
    let freqs: Vec<f32> = frequencies.iter().map(|&f| f as f32).collect();
    let angles = positions.float().unsqueeze_dim::<3>(2)
        * Tensor::<1>::from_floats(freqs.as_slice(), &device).unsqueeze::<3>();
    let angles = Tensor::cat(vec![angles.clone(), angles], 2).unsqueeze_dim::<4>(1);
    (angles.clone().cos(), angles.sin())
}

/// Rotates queries or keys `[batch, heads, seq, head_dim]` by their positions' angles: the
/// first `rotary_dim` dimensions of each head, the width of `cos` and `sin` (all of them but
/// under partial rotary, whose rest pass as they are).
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [batch, heads, seq, head_dim] = x.dims();
    let rotary = cos.dims()[3];
    if rotary < head_dim {
        let rotated = x.clone().slice([0..batch, 0..heads, 0..seq, 0..rotary]);
        let kept = x.slice([0..batch, 0..heads, 0..seq, rotary..head_dim]);
        return Tensor::cat(vec![apply_rope(rotated, cos, sin), kept], 3);
    }
    let half = head_dim / 2;
    let first = x.clone().slice([0..batch, 0..heads, 0..seq, 0..half]);
    let second = x
        .clone()
        .slice([0..batch, 0..heads, 0..seq, half..head_dim]);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// ALiBi's head slopes: the geometric sequence `2^(-8i/n)` for `n` a power of two, and for
/// other head counts the interleaving of the paper's reference implementation.
pub fn alibi_slopes(n_head: usize) -> Vec<f32> {
    fn power_of_two(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|i| start.powi(i as i32)).collect()
    }
    if n_head.is_power_of_two() {
        return power_of_two(n_head).into_iter().map(|s| s as f32).collect();
    }
    let closest = 1usize << n_head.ilog2();
    let mut slopes = power_of_two(closest);
    slopes.extend(
        power_of_two(2 * closest)
            .into_iter()
            .step_by(2)
            .take(n_head - closest),
    );
    slopes.into_iter().map(|s| s as f32).collect()
}

/// ALiBi's score bias `[batch, heads, q, k]`: `-slope · (query position - key position)`.
/// Keys after the query get a positive bias, but the causal mask removes them.
pub fn alibi_bias(
    q_positions: Tensor<2, Int>,
    k_positions: Tensor<2, Int>,
    n_head: usize,
) -> Tensor<4> {
    let device = q_positions.device();
    let [batch, q] = q_positions.dims();
    let k = k_positions.dims()[1];
    let distance = k_positions.float().reshape([batch, 1, 1, k])
        - q_positions.float().reshape([batch, 1, q, 1]);
    let slopes = Tensor::<1>::from_floats(alibi_slopes(n_head).as_slice(), &device)
        .reshape([1, n_head, 1, 1]);
    distance * slopes
}
