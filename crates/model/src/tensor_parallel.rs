//! Megatron-LM's tensor parallelism for the GPT: how each parameter is cut across `tp` ranks
//! ([`cut`], [`shard`], [`merge`]) and the forward pass of one rank's share, in the pieces
//! between which a rank must talk to the others.
//!
//! As in Megatron (Shoeybi et al., 2019): the QKV matrix and the MLP's first matrix (and
//! SwiGLU's gate) are split by columns, so each rank owns `n_head / tp` whole heads and
//! `d_ff / tp` hidden units; the attention output and the MLP's second matrix are split by rows,
//! so each rank's product is a partial sum that an all-reduce completes (Megatron's `g`), after
//! which their biases are added once; the token embedding is split by vocabulary rows (each rank
//! looks up the ids it owns, zero elsewhere, and an all-reduce completes the sum), and with it
//! the tied output projection, whose cross-entropy the ranks compute together from their slices
//! of the logits. Norms and position embeddings are replicated. Every all-reduce happens
//! between the pieces below, in the caller: this crate knows no collective.
//!
//! A rank's share is an ordinary [`Gpt`] whose tensors are the slices ([`shard`] of each
//! parameter by path), so optimizers, digests and checkpoints treat it as any model; only the
//! pieces here know that its heads and hidden units are `1/tp` of the config's.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor};

use crate::config::Positions;
use crate::gpt::Gpt;
use crate::layers::{apply_rope, rope_tables, sinusoids};
use crate::{Error, Result};

/// How a parameter is cut across tensor-parallel ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Every rank holds all of it.
    Replicated,
    /// Split along the last dimension (columns of a `[in, out]` weight, or a bias), each of
    /// `chunks` equal blocks separately (QKV's three).
    Columns {
        /// Blocks cut separately.
        chunks: usize,
    },
    /// Split along the first dimension (rows of a `[in, out]` weight, vocabulary rows).
    Rows,
}

/// How the parameter at `path` (`blocks.3.attn.qkv.weight`) is cut.
pub fn cut(path: &str) -> Cut {
    let tail = path.rsplit_once("blocks.").map_or(path, |(_, t)| t);
    let part = tail.split_once('.').map_or(tail, |(_, p)| p);
    match (path, part) {
        ("wte.weight", _) => Cut::Rows,
        ("lm_head.weight", _) => Cut::Columns { chunks: 1 },
        (_, "attn.qkv.weight" | "attn.qkv.bias") => Cut::Columns { chunks: 3 },
        (_, "mlp.up.weight" | "mlp.up.bias" | "mlp.gate.weight" | "mlp.gate.bias") => {
            Cut::Columns { chunks: 1 }
        }
        (_, "attn.proj.weight" | "mlp.down.weight") => Cut::Rows,
        _ => Cut::Replicated,
    }
}

/// Rank `rank`'s part of a tensor of `shape` (row-major `values`) cut by `cut` over `tp`
/// ranks, with its shape; an error when a cut dimension does not divide.
pub fn shard(
    values: &[f32],
    shape: &[usize],
    cut: Cut,
    tp: usize,
    rank: usize,
) -> Result<(Vec<f32>, Vec<usize>)> {
    check(values, shape)?;
    let (outer, inner, pieces) = geometry(shape, cut, tp)?;
    if pieces == 0 {
        return Ok((values.to_vec(), shape.to_vec()));
    }
    // `outer` rows of `inner` values, each row `pieces` blocks of which rank r owns every
    // tp-th starting at r (chunk c, rank r: block c·tp + r).
    let block = inner / pieces;
    let chunks = pieces / tp;
    let mut out = Vec::with_capacity(values.len() / tp);
    for row in values.chunks(inner).take(outer) {
        for c in 0..chunks {
            let b = c * tp + rank;
            out.extend_from_slice(&row[b * block..(b + 1) * block]);
        }
    }
    let mut part = shape.to_vec();
    match cut {
        Cut::Rows => part[0] /= tp,
        _ => *part.last_mut().unwrap_or(&mut 0) /= tp,
    }
    Ok((out, part))
}

/// The whole tensor from every rank's part in rank order (the inverse of [`shard`]).
pub fn merge(parts: &[Vec<f32>], part_shape: &[usize], cut: Cut) -> Result<(Vec<f32>, Vec<usize>)> {
    let tp = parts.len();
    let Some(first) = parts.first() else {
        return Err(Error::Shape("no tensor-parallel part to merge".into()));
    };
    for p in parts {
        check(p, part_shape)?;
    }
    let mut shape = part_shape.to_vec();
    match cut {
        Cut::Replicated => return Ok((first.clone(), shape)),
        Cut::Rows => shape[0] *= tp,
        Cut::Columns { .. } => *shape.last_mut().unwrap_or(&mut 0) *= tp,
    }
    let (outer, inner, pieces) = geometry(&shape, cut, tp)?;
    let block = inner / pieces;
    let chunks = pieces / tp;
    let part_inner = inner / tp;
    let mut out = vec![0.0f32; first.len() * tp];
    for row in 0..outer {
        for c in 0..chunks {
            for (r, part) in parts.iter().enumerate() {
                let from = row * part_inner + c * block;
                let to = row * inner + (c * tp + r) * block;
                out[to..to + block].copy_from_slice(&part[from..from + block]);
            }
        }
    }
    Ok((out, shape))
}

fn check(values: &[f32], shape: &[usize]) -> Result<()> {
    if shape.iter().product::<usize>() != values.len() || shape.is_empty() {
        return Err(Error::Shape(format!(
            "{} values for shape {shape:?}",
            values.len()
        )));
    }
    Ok(())
}

/// `(outer rows, values per row, blocks per row)` of a whole tensor of `shape` cut by `cut`
/// over `tp` (0 blocks: replicated). Rows cuts see the tensor as one row of `shape[0]` blocks.
fn geometry(shape: &[usize], cut: Cut, tp: usize) -> Result<(usize, usize, usize)> {
    let n: usize = shape.iter().product();
    let (outer, inner, pieces, dim) = match cut {
        Cut::Replicated => return Ok((1, n, 0)),
        Cut::Rows => (1, n, tp, shape[0]),
        Cut::Columns { chunks } => {
            let last = *shape.last().unwrap_or(&0);
            (n / last.max(1), last, chunks * tp, last / chunks.max(1))
        }
    };
    let divides = match cut {
        Cut::Rows => dim.is_multiple_of(tp),
        Cut::Columns { chunks } => inner.is_multiple_of(chunks * tp) && dim.is_multiple_of(tp),
        Cut::Replicated => true,
    };
    let no_chunks = matches!(cut, Cut::Columns { chunks: 0 });
    if tp == 0 || no_chunks || !divides {
        return Err(Error::Shape(format!(
            "a tensor of shape {shape:?} does not split over {tp} tensor-parallel ranks"
        )));
    }
    Ok((outer, inner, pieces))
}

/// Checks that `config`'s model can be split over `tp` ranks, naming what does not divide.
pub fn check_config(config: &crate::GptConfig, tp: usize) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::Config {
            field: "tensor-model-parallel-size",
            reason: format!("{tp}: {reason}"),
        })
    };
    if tp == 0 {
        return bad("must be at least 1".into());
    }
    if !config.n_head.is_multiple_of(tp) {
        return bad(format!("{} attention heads do not divide", config.n_head));
    }
    if tp > 1 && config.sliding_window.is_some() {
        return bad("a sliding window is not split over ranks yet".into());
    }
    if tp > 1 && config.kv_heads() != config.n_head {
        return bad(format!(
            "grouped-query attention ({} key/value heads for {}) is not split over ranks yet",
            config.kv_heads(),
            config.n_head
        ));
    }
    if !config.ffn_hidden().is_multiple_of(tp) {
        return bad(format!(
            "{} hidden units do not divide",
            config.ffn_hidden()
        ));
    }
    if !config.vocab_size.is_multiple_of(tp) {
        return bad(format!(
            "the vocabulary of {} does not divide (pad it: --make-vocab-size-divisible-by)",
            config.vocab_size
        ));
    }
    if config.positions == Positions::Alibi {
        return bad("ALiBi's per-head slopes are not split yet".into());
    }
    Ok(())
}

impl Gpt {
    /// This rank's part of the token embedding of `tokens` `[batch, seq]`: the rows of the ids
    /// in `vocab_start..vocab_start + rows` it holds, zeros for the others. The sum over ranks
    /// is the embedding.
    pub fn tp_embed_partial(&self, tokens: Tensor<2, Int>, vocab_start: usize) -> Tensor<3> {
        let rows = self.wte.weight.dims()[0];
        let local = tokens.sub_scalar(vocab_start as i64);
        let inside = local
            .clone()
            .greater_equal_elem(0)
            .bool_and(local.clone().lower_elem(rows as i64));
        let ids = local.mask_fill(inside.clone().bool_not(), 0);
        let embedded = self.wte.forward(ids);
        let dtype = burn::tensor::FloatDType::from(embedded.dtype());
        embedded * inside.float().cast(dtype).unsqueeze_dim::<3>(2)
    }

    /// The summed embedding `x` `[batch, seq, d]` with the positions added and dropout: the
    /// input of the first block.
    pub fn tp_embed_finish(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let device = x.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq]);
        let x = match (&self.wpe, self.config.positions) {
            (Some(wpe), _) => x + wpe.forward(positions),
            (None, Positions::Sinusoidal) => x + sinusoids(positions, self.config.d_model),
            _ => x,
        };
        self.dropout.forward(x)
    }

    /// Block `layer`'s first (`second == false`) or second norm of `x`.
    pub fn tp_norm(&self, layer: usize, second: bool, x: Tensor<3>) -> Tensor<3> {
        let block = &self.blocks[layer];
        if second {
            block.ln_2.forward(x)
        } else {
            block.ln_1.forward(x)
        }
    }

    /// Block `layer`'s attention over this rank's `n_head / tp` heads of the normed input
    /// `h`: the partial output projection, without its bias; the sum over ranks is the
    /// attention's output less the bias.
    pub fn tp_attention_partial(&self, layer: usize, h: Tensor<3>, tp: usize) -> Tensor<3> {
        let attn = &self.blocks[layer].attn;
        let [batch, seq, _] = h.dims();
        let heads = attn.n_head / tp;
        let head_dim = self.config.head_dim();
        let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let [q, k, v] = attn
            .qkv
            .forward(h)
            .chunk(3, 2)
            .try_into()
            .expect("chunk(3) of 3·width columns yields three tensors");
        let (mut q, mut k, v) = (split(q), split(k), split(v));
        if self.config.positions == Positions::Rope {
            let device = q.device();
            let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
                .reshape([1, seq])
                .expand([batch, seq]);
            let (cos, sin) = rope_tables(positions, &self.config.rope_frequencies());
            q = apply_rope(q, &cos, &sin);
            k = apply_rope(k, &cos, &sin);
        }
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let context = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([batch, seq, heads * head_dim]);
        context.matmul(attn.proj.weight.val().unsqueeze())
    }

    /// The summed attention output with the projection's bias and the block's dropout: what
    /// the residual adds.
    pub fn tp_attention_finish(&self, layer: usize, summed: Tensor<3>) -> Tensor<3> {
        let block = &self.blocks[layer];
        let out = match &block.attn.proj.bias {
            Some(bias) => summed + bias.val().unsqueeze(),
            None => summed,
        };
        block.dropout.forward(out)
    }

    /// Block `layer`'s MLP over this rank's `d_ff / tp` hidden units of the normed input `h`:
    /// the partial second product, without its bias.
    pub fn tp_mlp_partial(&self, layer: usize, h: Tensor<3>) -> Tensor<3> {
        let mlp = &self.blocks[layer].mlp;
        let hidden = match &mlp.gate {
            Some(gate) => {
                burn::tensor::activation::silu(gate.forward(h.clone())) * mlp.up.forward(h)
            }
            None => burn::tensor::activation::gelu_approximate(mlp.up.forward(h)),
        };
        hidden.matmul(mlp.down.weight.val().unsqueeze())
    }

    /// The summed MLP output with the second matrix's bias and the block's dropout.
    pub fn tp_mlp_finish(&self, layer: usize, summed: Tensor<3>) -> Tensor<3> {
        let block = &self.blocks[layer];
        let out = match &block.mlp.down.bias {
            Some(bias) => summed + bias.val().unsqueeze(),
            None => summed,
        };
        block.dropout.forward(out)
    }

    /// The final norm of the last block's output.
    pub fn tp_final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        self.ln_f.forward(x)
    }

    /// Layers of the model.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_cut_as_megatron_cuts_them() {
        assert_eq!(cut("wte.weight"), Cut::Rows);
        assert_eq!(cut("wpe.weight"), Cut::Replicated);
        assert_eq!(cut("blocks.0.attn.qkv.weight"), Cut::Columns { chunks: 3 });
        assert_eq!(cut("blocks.11.attn.qkv.bias"), Cut::Columns { chunks: 3 });
        assert_eq!(cut("blocks.2.attn.proj.weight"), Cut::Rows);
        assert_eq!(cut("blocks.2.attn.proj.bias"), Cut::Replicated);
        assert_eq!(cut("blocks.2.mlp.up.weight"), Cut::Columns { chunks: 1 });
        assert_eq!(cut("blocks.2.mlp.gate.bias"), Cut::Columns { chunks: 1 });
        assert_eq!(cut("blocks.2.mlp.down.weight"), Cut::Rows);
        assert_eq!(cut("blocks.2.mlp.down.bias"), Cut::Replicated);
        assert_eq!(cut("blocks.2.ln_1.weight"), Cut::Replicated);
        assert_eq!(cut("lm_head.weight"), Cut::Columns { chunks: 1 });
    }

    #[test]
    fn qkv_columns_are_cut_per_block_of_heads() {
        // [1, 12]: q = 0..4, k = 4..8, v = 8..12; two ranks take two columns of each.
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let (part, shape) = shard(&values, &[1, 12], Cut::Columns { chunks: 3 }, 2, 1).unwrap();
        assert_eq!(shape, vec![1, 6]);
        assert_eq!(part, vec![2.0, 3.0, 6.0, 7.0, 10.0, 11.0]);
        let parts: Vec<Vec<f32>> = (0..2)
            .map(|r| {
                shard(&values, &[1, 12], Cut::Columns { chunks: 3 }, 2, r)
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(
            merge(&parts, &[1, 6], Cut::Columns { chunks: 3 }).unwrap(),
            (values, vec![1, 12])
        );
    }

    proptest::proptest! {
        /// Cutting a tensor for every rank and merging the parts gives it back; any shape
        /// that does not divide is an error, never a panic.
        #[test]
        fn merging_every_rank_s_part_gives_the_tensor_back(
            rows in 1usize..6, cols in 1usize..6, tp in 1usize..5, chunks in 1usize..4,
            how in 0u8..3, seed in 0u32..1000,
        ) {
            let cut = match how {
                0 => Cut::Rows,
                1 => Cut::Columns { chunks },
                _ => Cut::Replicated,
            };
            let shape = [rows * tp, cols * tp * chunks];
            let values: Vec<f32> = (0..shape[0] * shape[1]).map(|i| (i as u32 ^ seed) as f32).collect();
            let parts: Vec<Vec<f32>> = (0..tp)
                .map(|r| shard(&values, &shape, cut, tp, r).unwrap().0)
                .collect();
            let part_shape = shard(&values, &shape, cut, tp, 0).unwrap().1;
            let merged = if cut == Cut::Replicated {
                (parts[0].clone(), part_shape)
            } else {
                merge(&parts, &part_shape, cut).unwrap()
            };
            proptest::prop_assert_eq!(merged, (values, shape.to_vec()));
            // Arbitrary shapes: a value or an error.
            let odd = [rows, cols + 1];
            let _ = shard(&vec![0.0; rows * (cols + 1)], &odd, cut, tp, tp - 1);
        }
    }

    #[test]
    fn what_does_not_divide_is_an_error() {
        assert!(shard(&[0.0; 6], &[3, 2], Cut::Rows, 2, 0).is_err());
        assert!(shard(&[0.0; 6], &[2, 3], Cut::Columns { chunks: 1 }, 2, 0).is_err());
        assert!(shard(&[0.0; 5], &[2, 3], Cut::Rows, 1, 0).is_err());
        assert!(merge(&[], &[2], Cut::Rows).is_err());
    }
}
