//! What a GPT costs before it is built: parameters, FLOPs per token and memory per dtype.
//!
//! FLOPs follow Megatron-LM's accounting (Narayanan et al., 2021, appendix): a multiply-add is
//! two FLOPs; the forward pass of one token is `2·N` for the `N` weights it multiplies by
//! (every linear layer and the LM head; embedding look-ups and norms are not matmuls) plus
//! `4·n_layer·d_model·context` for the attention scores and their weighted sum; a training
//! step is three forward passes (backward is twice the forward). For GPT-2 shapes this is the
//! paper's `72·l·h²·(1 + s/6h + V/12lh)` per token with `s` the sequence length.
//!
//! Activation memory is Korthikanti et al. (2022), "Reducing activation recomputation",
//! equation 2 without recomputation or parallelism: `s·b·h·(34 + 5·a·s/h)` bytes per layer in
//! 16-bit, scaled by the element size for other dtypes.

use serde::Serialize;

use crate::config::{Activation, GptConfig, NormKind, Positions};

/// Element types a model can be stored or trained in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE half.
    F16,
    /// 16-bit brain float.
    Bf16,
    /// 8-bit integers (weights only).
    Int8,
    /// 4-bit integers, two a byte (weights only).
    Int4,
}

impl Dtype {
    /// Every dtype, in the order [`MemoryEstimate`] tables print them.
    pub const ALL: [Dtype; 5] = [
        Dtype::F32,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::Int8,
        Dtype::Int4,
    ];

    /// Bytes per element (0.5 for INT4).
    pub fn bytes(self) -> f64 {
        match self {
            Dtype::F32 => 4.0,
            Dtype::F16 | Dtype::Bf16 => 2.0,
            Dtype::Int8 => 1.0,
            Dtype::Int4 => 0.5,
        }
    }

    /// Whether a model can be trained in it (integers are for inference only).
    pub fn trainable(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::Bf16)
    }
}

/// Parameter counts of a GPT config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Params {
    /// Every parameter, the tied LM head counted once.
    pub total: usize,
    /// Token and position embedding tables.
    pub embedding: usize,
    /// The weights matrix multiplications run through per token: every linear layer and the
    /// LM head (tied or not).
    pub matmul: usize,
}

impl GptConfig {
    /// Parameters, counting a tied LM head once.
    pub fn num_params(&self) -> usize {
        self.params().total
    }

    /// Parameter counts by kind.
    pub fn params(&self) -> Params {
        let (d, v, f) = (self.d_model, self.vocab_size, self.ffn_hidden());
        let bias = usize::from(self.bias);
        let norm = match self.norm {
            NormKind::LayerNorm => d + bias * d,
            NormKind::RmsNorm => d,
        };
        let qkv = d + 2 * self.kv_width();
        let qkv_bias = usize::from(self.has_qkv_bias());
        let attention = d * qkv + qkv_bias * qkv + d * d + bias * d;
        let (mlp_matmul, mlp_bias) = match self.activation {
            Activation::Gelu => (2 * d * f, f + d),
            Activation::Swiglu => (3 * d * f, 2 * f + d),
        };
        let block_matmul = d * qkv + d * d + mlp_matmul;
        let block = 2 * norm + attention + mlp_matmul + bias * mlp_bias;
        let positions = if self.positions == Positions::Learned {
            self.max_seq_len * d
        } else {
            0
        };
        let head = if self.tie_embeddings { 0 } else { v * d };
        Params {
            total: v * d + positions + self.n_layer * block + norm + head,
            embedding: v * d + positions,
            matmul: self.n_layer * block_matmul + v * d,
        }
    }

    /// Forward FLOPs of one token attending to `context` tokens.
    pub fn forward_flops_per_token(&self, context: usize) -> f64 {
        2.0 * self.params().matmul as f64
            + 4.0 * (self.n_layer * self.d_model) as f64 * context as f64
    }

    /// Training FLOPs (forward and backward) per token of sequences of `seq_len`.
    pub fn training_flops_per_token(&self, seq_len: usize) -> f64 {
        3.0 * self.forward_flops_per_token(seq_len)
    }

    /// Bytes of keys and values one token adds to the cache.
    pub fn kv_cache_bytes_per_token(&self, dtype: Dtype) -> f64 {
        2.0 * (self.n_layer * self.kv_width()) as f64 * dtype.bytes()
    }

    /// Memory of the weights, a training run and inference, for a dtype.
    pub fn memory(&self, dtype: Dtype, micro_batch: usize, seq_len: usize) -> MemoryEstimate {
        let n = self.num_params() as f64;
        let weights = n * dtype.bytes();
        let (gradients, optimizer, activations) = if dtype.trainable() {
            // AdamW keeps two f32 moments; below f32 it also keeps an f32 master copy.
            let master = if dtype == Dtype::F32 { 0.0 } else { 4.0 };
            let (s, b, h, a) = (
                seq_len as f64,
                micro_batch as f64,
                self.d_model as f64,
                self.n_head as f64,
            );
            let per_layer = s * b * h * (34.0 + 5.0 * a * s / h) * dtype.bytes() / 2.0;
            (
                // Accumulated in f32 whatever the compute dtype (Megatron's `main_grad`).
                Some(n * 4.0),
                Some(n * (8.0 + master)),
                Some(per_layer * self.n_layer as f64),
            )
        } else {
            (None, None, None)
        };
        // The cache is kept in a float type even when the weights are integers.
        let cache_dtype = if dtype.trainable() { dtype } else { Dtype::F16 };
        MemoryEstimate {
            dtype,
            weights,
            gradients,
            optimizer,
            activations,
            step_buffers: None,
            kv_cache_per_token: self.kv_cache_bytes_per_token(cache_dtype),
            kv_cache_full_context: self.kv_cache_bytes_per_token(cache_dtype)
                * (self.max_seq_len * micro_batch) as f64,
        }
    }
}

/// Bytes needed for one dtype.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// The dtype of weights (and activations when training).
    pub dtype: Dtype,
    /// The weights.
    pub weights: f64,
    /// Gradients, one f32 per weight (training dtypes only: lmforge accumulates them in f32).
    pub gradients: Option<f64>,
    /// AdamW's moments, plus an f32 master copy below f32.
    pub optimizer: Option<f64>,
    /// Activations kept for backward, for the batch and sequence asked about.
    pub activations: Option<f64>,
    /// The f32 host vectors a step of several data-parallel ranks builds for its collectives
    /// ([`step_buffer_values`]); `None` for one rank.
    pub step_buffers: Option<f64>,
    /// Keys and values of one token (f16 for integer weights).
    pub kv_cache_per_token: f64,
    /// Keys and values of `micro_batch` sequences of `max_seq_len`.
    pub kv_cache_full_context: f64,
}

impl MemoryEstimate {
    /// The estimate per rank when the optimizer is sharded over `ranks` data-parallel ranks
    /// (`--use-distributed-optimizer`): AdamW's moments, and the f32 master copy below f32,
    /// divided, rounded up to whole values as the shards are.
    pub fn with_sharded_optimizer(mut self, ranks: usize, params: usize) -> MemoryEstimate {
        let ranks = ranks.max(1);
        if let Some(optimizer) = self.optimizer.as_mut() {
            let per_value = *optimizer / params.max(1) as f64;
            *optimizer = per_value * params.div_ceil(ranks) as f64;
        }
        self
    }

    /// The estimate per rank of `ranks` data-parallel ranks, the optimizer sharded over them
    /// or not: the step's host buffers added ([`step_buffer_values`]), for training dtypes.
    pub fn with_data_parallel(
        mut self,
        ranks: usize,
        sharded: bool,
        params: usize,
    ) -> MemoryEstimate {
        let values = step_buffer_values(params, ranks, sharded);
        if values > 0 && self.gradients.is_some() {
            self.step_buffers = Some(4.0 * values as f64);
        }
        self
    }
}

/// Values per collective round of the gradients (16 MiB of f32): PyTorch DDP's 25 MB buckets
/// in spirit. Long enough that latency does not matter, short enough that the host buffers
/// MPI copies through stay small. lmforge-train's collectives use it.
pub const COLLECTIVE_BUCKET_ELEMENTS: usize = 1 << 22;

/// f32 values of the host vectors a training step of `ranks` data-parallel ranks builds for
/// its collectives, over `params` trainable values: one bucket of the all-reduce (about
/// [`COLLECTIVE_BUCKET_ELEMENTS`] values, read from the gradients and written back in place);
/// with the optimizer sharded, this rank's shard of the summed gradients (then of the updated
/// weights) and one round of the bucketed reduce-scatter or all-gather: `params / ranks +
/// bucket`. The flat vector of every gradient is never built.
/// Zero for one rank without the sharded optimizer (one rank with it still goes through the
/// reduce-scatter, over a shard of the whole model).
pub fn step_buffer_values(params: usize, ranks: usize, sharded: bool) -> usize {
    let ranks = ranks.max(1);
    if !sharded {
        return if ranks > 1 {
            COLLECTIVE_BUCKET_ELEMENTS.min(params)
        } else {
            0
        };
    }
    let shard = params.div_ceil(ranks);
    shard + COLLECTIVE_BUCKET_ELEMENTS.min(shard * ranks)
}

/// Bytes in GiB.
pub fn gib(bytes: f64) -> f64 {
    bytes / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_talks_175b_example() {
        // "175e9 parameters in fp16 are 326 GB": 175e9 × 2 bytes = 325.96 GiB.
        let bytes = 175e9 * Dtype::F16.bytes();
        assert_eq!(format!("{:.2}", gib(bytes)), "325.96");
    }

    #[test]
    fn gpt2_small_has_124m_parameters() {
        // transformers' GPT2LMHeadModel: 124,439,808 parameters.
        assert_eq!(GptConfig::gpt2_small().num_params(), 124_439_808);
        let p = GptConfig::gpt2_small().params();
        assert_eq!(p.embedding, 50_257 * 768 + 1024 * 768);
    }

    #[test]
    fn megatron_flops_formula() {
        // 72·l·h²·(1 + s/6h + V/12lh) per token, with l, h, s, V of the 1.7B model.
        let c = GptConfig::gpt_1_7b();
        let (l, h, s, v) = (24.0, 2304.0, 2048.0, 50_200.0);
        let megatron = 72.0 * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h));
        let ours = c.training_flops_per_token(2048);
        assert!((ours / megatron - 1.0).abs() < 0.01, "{ours} vs {megatron}");
    }

    #[test]
    fn variants_count_what_they_hold() {
        let base = GptConfig::tiny(1000);
        let untied = GptConfig {
            tie_embeddings: false,
            ..base.clone()
        };
        assert_eq!(untied.num_params() - base.num_params(), 1000 * 128);
        let rope = GptConfig {
            positions: Positions::Rope,
            ..base.clone()
        };
        assert_eq!(base.num_params() - rope.num_params(), 256 * 128);
        let kv = base.kv_cache_bytes_per_token(Dtype::F32);
        assert_eq!(kv, (2 * 4 * 128 * 4) as f64);
        // Grouped-query attention: half the key/value heads, half the cache and half the
        // key and value columns of every block's qkv (4 blocks, a quarter of 2·128² each).
        let gqa = GptConfig {
            n_kv_head: Some(2),
            ..base.clone()
        };
        assert_eq!(gqa.kv_cache_bytes_per_token(Dtype::F32), kv / 2.0);
        let mqa = GptConfig {
            n_kv_head: Some(1),
            ..base.clone()
        };
        assert_eq!(mqa.kv_cache_bytes_per_token(Dtype::F32), kv / 4.0);
        assert_eq!(base.num_params() - gqa.num_params(), 4 * (128 * 128 + 128));
        assert_eq!(
            gqa.num_params(),
            gqa.parameter_shapes()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum::<usize>()
        );
        assert!(base.memory(Dtype::Int8, 1, 256).optimizer.is_none());
        let n = base.num_params();
        let whole = base.memory(Dtype::F32, 1, 256);
        let sharded = whole.with_sharded_optimizer(4, n);
        assert_eq!(sharded.optimizer, Some(8.0 * n.div_ceil(4) as f64));
        let bf16 = base
            .memory(Dtype::Bf16, 1, 256)
            .with_sharded_optimizer(4, n);
        assert_eq!(bf16.optimizer, Some(12.0 * n.div_ceil(4) as f64));
        // The step's host buffers: a bucket of the all-reduce; sharded, a shard and a round.
        assert_eq!(bf16.step_buffers, None);
        assert_eq!(whole.with_data_parallel(1, false, n).step_buffers, None);
        let dp = whole.with_data_parallel(4, false, n);
        assert_eq!(
            dp.step_buffers,
            Some(4.0 * COLLECTIVE_BUCKET_ELEMENTS.min(n) as f64)
        );
        let zero = sharded.with_data_parallel(4, true, n);
        let shard = n.div_ceil(4);
        let flat = 4 * shard;
        let values = shard + COLLECTIVE_BUCKET_ELEMENTS.min(flat);
        assert_eq!(zero.step_buffers, Some(4.0 * values as f64));
        let int8 = base
            .memory(Dtype::Int8, 1, 256)
            .with_data_parallel(4, true, n);
        assert_eq!(int8.step_buffers, None);
    }
}
