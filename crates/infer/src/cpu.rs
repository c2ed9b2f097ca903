//! The CPU engine: a GPT over f32 or quantized weights, one decoding step as host loops.
//!
//! burn's flex backend runs a decoding step as some sixty small tensor operations, each a
//! dispatch and an allocation, and its quantized matmul widens the weights to f32 first. Here
//! a step is plain loops over host vectors: every matrix product goes through
//! [`lmforge_quant::kernel::matmul`], which reads int8 or 4-bit codes directly. Each sequence
//! has its own key/value rows in a paged pool ([`HostKv`]; no padding), and one step can mix
//! the prompt chunk of one sequence with the next token of others.
//!
//! The arithmetic is the burn model's ([`lmforge_model::Gpt`]): the same norms, positions
//! (learned, sinusoidal, RoPE, ALiBi), activations and tied head, so greedy decoding agrees
//! with it token for token on f32 weights (tested), and on quantized weights agrees with the
//! dequantized burn model that evaluation measures.

use std::path::Path;

use lmforge_model::hf::transpose;
use lmforge_model::{Activation, Gpt, GptConfig, NormKind, Positions, alibi_slopes};
use lmforge_quant::Matrix;
use lmforge_quant::checkpoint::{Stored, Weights, gpt_tensors, read_f32, read_quantized};
use lmforge_quant::kernel::matmul;
use rayon::prelude::*;

use crate::paged::{Batched, Chunk, KvPool, KvStore, SeqKv};
use crate::sampling::exp_le0;
use crate::{Error, Result};

type ModelResult<T> = lmforge_model::Result<T>;

fn missing(name: &str) -> lmforge_model::Error {
    lmforge_model::Error::Shape(format!("the engine needs tensor `{name}`"))
}

/// A pool's keys and values in host memory: one block is
/// `[layer][key | value][position in block][kv_width]` f32s (`kv_width` is `d_model` but for
/// grouped-query attention, whose cache is smaller by the group size).
#[derive(Debug, Clone)]
pub struct HostKv {
    block_tokens: usize,
    layers: usize,
    width: usize,
    data: Vec<f32>,
}

impl HostKv {
    /// Storage for `config`'s model with blocks of `block_tokens` positions (none yet).
    pub fn new(config: &GptConfig, block_tokens: usize) -> Self {
        Self {
            block_tokens: block_tokens.max(1),
            layers: config.n_layer,
            width: config.kv_width(),
            data: Vec::new(),
        }
    }

    fn block_floats(&self) -> usize {
        self.layers * 2 * self.block_tokens * self.width
    }

    /// Start of row `pos` of layer `layer`'s keys (`value` false) or values in `seq`.
    #[inline]
    fn offset(&self, seq: &SeqKv, layer: usize, value: bool, pos: usize) -> usize {
        let block = seq.blocks[pos / self.block_tokens] as usize;
        block * self.block_floats()
            + ((layer * 2 + value as usize) * self.block_tokens + pos % self.block_tokens)
                * self.width
    }

    /// Writes the key and value rows of position `pos` (its blocks reserved).
    fn write(&mut self, seq: &SeqKv, layer: usize, pos: usize, key: &[f32], value: &[f32]) {
        let d = self.width;
        let k = self.offset(seq, layer, false, pos);
        self.data[k..k + d].copy_from_slice(key);
        let v = self.offset(seq, layer, true, pos);
        self.data[v..v + d].copy_from_slice(value);
    }

    /// The keys (`value` false) or values of positions `0..len` of `seq` in one layer, block by
    /// block: `(first position, rows)` with rows `[n, kv_width]`.
    fn runs<'a>(
        &'a self,
        seq: &'a SeqKv,
        layer: usize,
        value: bool,
        len: usize,
    ) -> impl Iterator<Item = (usize, &'a [f32])> + 'a {
        let (bt, d) = (self.block_tokens, self.width);
        (0..len.div_ceil(bt)).map(move |b| {
            let start = self.offset(seq, layer, value, b * bt);
            let rows = (len - b * bt).min(bt);
            (b * bt, &self.data[start..start + rows * d])
        })
    }
}

impl KvStore for HostKv {
    fn grow(&mut self, more: usize) {
        // Zero-filled: a block is always written before it is read, but a pool that grows
        // (single-caller decoding) keeps the blocks it had.
        let len = self.data.len() + more * self.block_floats();
        self.data.resize(len, 0.0);
    }

    fn copy_block(&mut self, from: u32, to: u32) {
        let n = self.block_floats();
        self.data
            .copy_within(from as usize * n..(from as usize + 1) * n, to as usize * n);
    }

    fn block_bytes(&self) -> usize {
        self.block_floats() * 4
    }
}

/// LayerNorm or RMSNorm over one row.
#[derive(Debug, Clone)]
struct Norm {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    eps: f32,
    rms: bool,
}

impl Norm {
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        let n = x.len() as f32;
        let (mean, denom) = if self.rms {
            let mean_square = x.iter().map(|v| v * v).sum::<f32>() / n;
            (0.0, (mean_square + self.eps).sqrt())
        } else {
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            (mean, (var + self.eps).sqrt())
        };
        let inv = denom.recip();
        for (i, o) in out.iter_mut().enumerate() {
            *o = (x[i] - mean) * inv * self.weight[i] + self.bias.as_ref().map_or(0.0, |b| b[i]);
        }
    }

    fn rows(&self, x: &[f32]) -> Vec<f32> {
        let d = self.weight.len();
        let mut out = vec![0f32; x.len()];
        for (row, o) in x.chunks(d).zip(out.chunks_mut(d)) {
            self.apply(row, o);
        }
        out
    }
}

/// A linear layer: weights with rows as outputs, and a bias.
#[derive(Debug, Clone)]
struct Dense {
    weight: Matrix,
    bias: Option<Vec<f32>>,
}

impl Dense {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = matmul(&self.weight, x);
        if let Some(bias) = &self.bias {
            for row in y.chunks_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        y
    }
}

#[derive(Debug, Clone)]
struct Layer {
    ln_1: Norm,
    qkv: Dense,
    proj: Dense,
    ln_2: Norm,
    gate: Option<Dense>,
    up: Dense,
    down: Dense,
}

/// A GPT whose decoding runs on the CPU through this crate's kernels.
#[derive(Debug, Clone)]
pub struct CpuGpt {
    config: GptConfig,
    wte: Matrix,
    wpe: Option<Vec<f32>>,
    layers: Vec<Layer>,
    ln_f: Norm,
    lm_head: Option<Dense>,
    slopes: Vec<f32>,
    /// RoPE's frequency of each pair, computed once.
    rope_frequencies: Vec<f32>,
}

struct Take<'a> {
    weights: &'a mut Weights,
}

impl Take<'_> {
    fn vector(&mut self, name: &str) -> ModelResult<Vec<f32>> {
        match self.weights.remove(name) {
            Some(Stored::F32 { values, .. }) => Ok(values),
            Some(Stored::Quantized(..)) => Err(lmforge_model::Error::Shape(format!(
                "tensor `{name}` is quantized; the engine reads it as f32"
            ))),
            None => Err(missing(name)),
        }
    }

    fn optional(&mut self, name: &str) -> ModelResult<Option<Vec<f32>>> {
        if self.weights.contains_key(name) {
            self.vector(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A matrix with rows as outputs: burn's `[in, out]` f32 linears are transposed once here.
    fn matrix(&mut self, name: &str, transposed: bool) -> ModelResult<Matrix> {
        match self.weights.remove(name) {
            Some(Stored::F32 { shape, values }) if shape.len() == 2 => {
                let [a, b] = [shape[0], shape[1]];
                if !transposed {
                    return Ok(Matrix::f32(a, b, &values));
                }
                Ok(Matrix::f32(b, a, &transpose(&values, a, b)))
            }
            Some(Stored::Quantized(q, layout)) if layout.transposed == transposed => {
                Ok(Matrix::Quantized(q))
            }
            Some(_) => Err(lmforge_model::Error::Shape(format!(
                "tensor `{name}` is not laid out as the engine expects"
            ))),
            None => Err(missing(name)),
        }
    }

    fn dense(&mut self, prefix: &str) -> ModelResult<Dense> {
        Ok(Dense {
            weight: self.matrix(&format!("{prefix}.weight"), true)?,
            bias: self.optional(&format!("{prefix}.bias"))?,
        })
    }

    fn norm(&mut self, prefix: &str, config: &GptConfig) -> ModelResult<Norm> {
        Ok(Norm {
            weight: self.vector(&format!("{prefix}.weight"))?,
            bias: self.optional(&format!("{prefix}.bias"))?,
            eps: config.norm_eps as f32,
            rms: config.norm == NormKind::RmsNorm,
        })
    }
}

impl CpuGpt {
    /// The engine over `weights` (parameter paths of [`Gpt`]; f32 or quantized).
    pub fn from_weights(config: GptConfig, mut weights: Weights) -> ModelResult<CpuGpt> {
        config.validate()?;
        let mut take = Take {
            weights: &mut weights,
        };
        let layers = (0..config.n_layer)
            .map(|i| {
                let p = format!("blocks.{i}");
                Ok(Layer {
                    ln_1: take.norm(&format!("{p}.ln_1"), &config)?,
                    qkv: take.dense(&format!("{p}.attn.qkv"))?,
                    proj: take.dense(&format!("{p}.attn.proj"))?,
                    ln_2: take.norm(&format!("{p}.ln_2"), &config)?,
                    gate: if config.activation == Activation::Swiglu {
                        Some(take.dense(&format!("{p}.mlp.gate"))?)
                    } else {
                        None
                    },
                    up: take.dense(&format!("{p}.mlp.up"))?,
                    down: take.dense(&format!("{p}.mlp.down"))?,
                })
            })
            .collect::<ModelResult<Vec<_>>>()?;
        let engine = CpuGpt {
            wte: take.matrix("wte.weight", false)?,
            wpe: take.optional("wpe.weight")?,
            ln_f: take.norm("ln_f", &config)?,
            lm_head: if config.tie_embeddings {
                None
            } else {
                Some(take.dense("lm_head")?)
            },
            layers,
            slopes: alibi_slopes(config.n_head),
            rope_frequencies: config
                .rope_frequencies()
                .iter()
                .map(|&f| f as f32)
                .collect(),
            config,
        };
        if let Some(name) = weights.keys().next() {
            return Err(lmforge_model::Error::Shape(format!(
                "tensor `{name}` belongs to no parameter of this model"
            )));
        }
        Ok(engine)
    }

    /// The engine over a burn model's f32 weights (copied to the host).
    pub fn from_gpt(model: &Gpt) -> Result<CpuGpt> {
        let weights = gpt_tensors(model)?
            .into_iter()
            .map(|(name, shape, values)| (name, Stored::F32 { shape, values }))
            .collect();
        Ok(CpuGpt::from_weights(model.config().clone(), weights)?)
    }

    /// Any GPT checkpoint: a quantized one keeps its codes, others are read as f32 — ours
    /// straight from the file, a Hugging Face folder (or anything our reader refuses) through
    /// the burn model, whose loader names what is wrong.
    pub fn load(dir: &Path) -> Result<CpuGpt> {
        if let Some((config, _, weights)) = read_quantized(dir)? {
            return Ok(CpuGpt::from_weights(config, weights)?);
        }
        if let Ok(Some((config, weights))) = read_f32(dir) {
            return Ok(CpuGpt::from_weights(config, weights)?);
        }
        CpuGpt::from_gpt(&lmforge_model::load_gpt(
            dir,
            &burn::tensor::Device::flex(),
        )?)
    }

    /// The model's shape.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Bytes of the weights as held.
    pub fn weight_bytes(&self) -> usize {
        let dense = |d: &Dense| d.weight.bytes() + d.bias.as_ref().map_or(0, |b| b.len() * 4);
        let norm = |n: &Norm| (n.weight.len() + n.bias.as_ref().map_or(0, Vec::len)) * 4;
        self.wte.bytes()
            + self.wpe.as_ref().map_or(0, |w| w.len() * 4)
            + norm(&self.ln_f)
            + self.lm_head.as_ref().map_or(0, dense)
            + self
                .layers
                .iter()
                .map(|l| {
                    norm(&l.ln_1)
                        + norm(&l.ln_2)
                        + dense(&l.qkv)
                        + dense(&l.proj)
                        + dense(&l.up)
                        + dense(&l.down)
                        + l.gate.as_ref().map_or(0, dense)
                })
                .sum::<usize>()
    }

    fn check(&self, tokens: &[u32], len: usize) -> ModelResult<()> {
        let vocab = self.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(lmforge_model::Error::TokenId { id, vocab });
        }
        if len == 0 || len > self.config.max_seq_len {
            return Err(lmforge_model::Error::SequenceLength {
                len,
                max: self.config.max_seq_len,
            });
        }
        Ok(())
    }

    /// One step over many sequences of `pool`: appends each chunk's tokens to its sequence and
    /// returns, per chunk, the logits after its last token (`vocab` values) or, with
    /// `every_logit`, after each of its tokens (`tokens × vocab`). Every row is computed on
    /// its own, so a sequence's logits do not depend on what else is in the step. On an error
    /// (a bad token, a sequence past the context, a full pool) no sequence has changed.
    fn run(&self, pool: &mut KvPool<HostKv>, chunks: &mut [Chunk<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let d = c.d_model;
        let store = &pool.store;
        if store.layers != c.n_layer
            || store.width != c.kv_width()
            || store.block_tokens != pool.blocks.block_tokens()
        {
            return Err(Error::request(format!(
                "a KV pool for {} layers of {} is not this model's ({} of {d})",
                store.layers, store.width, c.n_layer
            )));
        }
        for chunk in chunks.iter() {
            if chunk.tokens.is_empty() {
                return Err(Error::request("a chunk without tokens"));
            }
            self.check(chunk.tokens, chunk.seq.len + chunk.tokens.len())?;
        }
        let mut growth: Vec<(&mut SeqKv, usize)> = chunks
            .iter_mut()
            .map(|chunk| (&mut *chunk.seq, chunk.tokens.len()))
            .collect();
        pool.reserve(&mut growth)?;
        drop(growth);
        let pool = &mut pool.store;
        // Rows: every token of every chunk, with its chunk and position.
        let rows: Vec<(usize, usize, u32)> = chunks
            .iter()
            .enumerate()
            .flat_map(|(i, chunk)| {
                let start = chunk.seq.len;
                chunk
                    .tokens
                    .iter()
                    .enumerate()
                    .map(move |(j, &t)| (i, start + j, t))
            })
            .collect();
        let n = rows.len();
        let mut x = vec![0f32; n * d];
        for (&(_, pos, token), row) in rows.iter().zip(x.chunks_mut(d)) {
            self.wte.row(token as usize, row);
            match (&self.wpe, c.positions) {
                (Some(wpe), _) => row
                    .iter_mut()
                    .zip(&wpe[pos * d..(pos + 1) * d])
                    .for_each(|(v, p)| *v += p),
                (None, Positions::Sinusoidal) => add_sinusoid(row, pos),
                _ => {}
            }
        }
        let mut scores = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.ln_1.rows(&x);
            let mut qkv = layer.qkv.forward(&h);
            // A row: the queries (`d`), then the keys and the values (`kv` each).
            let (kv, width) = (c.kv_width(), d + 2 * c.kv_width());
            if c.positions == Positions::Rope {
                for (row, &(_, pos, _)) in qkv.chunks_mut(width).zip(&rows) {
                    let (q, rest) = row.split_at_mut(d);
                    rope(q, pos, c.n_head, &self.rope_frequencies);
                    rope(&mut rest[..kv], pos, c.kv_heads(), &self.rope_frequencies);
                }
            }
            for (row, &(i, pos, _)) in qkv.chunks(width).zip(&rows) {
                pool.write(chunks[i].seq, l, pos, &row[d..d + kv], &row[d + kv..]);
            }
            let mut context = vec![0f32; n * d];
            let seqs: Vec<&SeqKv> = chunks.iter().map(|c| &*c.seq).collect();
            let attend = |((row, out), &(i, pos, _)): ((&[f32], &mut [f32]), _),
                          scores: &mut Vec<f32>| {
                pulp::Arch::new().dispatch(Attention {
                    model: self,
                    q: &row[..d],
                    pool,
                    seq: seqs[i],
                    layer: l,
                    pos,
                    scores,
                    out,
                })
            };
            let work: usize = rows.iter().map(|r| r.1 + 1).sum::<usize>() * d;
            if n > 1 && work >= PARALLEL_ATTENTION {
                // Rows read their own sequences' keys and values: at batch 8 that is as many
                // bytes per layer as the weights, more than one thread keeps up with.
                qkv.par_chunks(width)
                    .zip(context.par_chunks_mut(d))
                    .zip(rows.par_iter())
                    .for_each_init(Vec::new, |scores, job| attend(job, scores));
            } else {
                qkv.chunks(width)
                    .zip(context.chunks_mut(d))
                    .zip(&rows)
                    .for_each(|job| attend(job, &mut scores));
            }
            let attended = layer.proj.forward(&context);
            x.iter_mut().zip(&attended).for_each(|(v, a)| *v += a);
            let h = layer.ln_2.rows(&x);
            let hidden = match &layer.gate {
                Some(gate) => {
                    let mut g = gate.forward(&h);
                    let up = layer.up.forward(&h);
                    g.iter_mut()
                        .zip(&up)
                        .for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
                    g
                }
                None => {
                    let mut u = layer.up.forward(&h);
                    u.iter_mut().for_each(|v| *v = gelu(*v));
                    u
                }
            };
            let out = layer.down.forward(&hidden);
            x.iter_mut().zip(&out).for_each(|(v, a)| *v += a);
        }
        // Only the rows whose logits are wanted go through the head, the largest matrix.
        let mut wanted = Vec::with_capacity(chunks.len() * d);
        let mut counts = Vec::with_capacity(chunks.len());
        let mut end = 0;
        for chunk in chunks.iter_mut() {
            let start = end;
            end += chunk.tokens.len();
            chunk.seq.len += chunk.tokens.len();
            let first = if chunk.every_logit { start } else { end - 1 };
            wanted.extend_from_slice(&x[first * d..end * d]);
            counts.push(end - first);
        }
        let last = self.ln_f.rows(&wanted);
        let logits = match &self.lm_head {
            Some(head) => head.forward(&last),
            None => matmul(&self.wte, &last),
        };
        let mut out = Vec::with_capacity(chunks.len());
        let mut at = 0;
        for count in counts {
            let len = count * c.vocab_size;
            out.push(logits[at..at + len].to_vec());
            at += len;
        }
        Ok(out)
    }

    /// Causal attention of one query row at `pos` over the sequence's keys `0..=pos`, all
    /// heads, reading the pool block by block.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn attend(
        &self,
        q: &[f32],
        pool: &HostKv,
        seq: &SeqKv,
        layer: usize,
        pos: usize,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let (kv, hd) = (c.kv_width(), c.head_dim());
        // Query head `h` reads key/value head `h / groups` (Hugging Face's `repeat_kv`).
        let groups = c.n_head / c.kv_heads();
        let scale = (hd as f32).sqrt().recip();
        scores.clear();
        scores.resize(pos + 1, 0.0);
        let window_start = c.sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for h in 0..c.n_head {
            let qh = &q[h * hd..(h + 1) * hd];
            for (start, keys) in pool.runs(seq, layer, false, pos + 1) {
                for (j, kr) in keys.chunks(kv).enumerate() {
                    let k = start + j;
                    let kh = &kr[h / groups * hd..(h / groups + 1) * hd];
                    let mut score = dot_lanes(qh, kh) * scale;
                    if c.positions == Positions::Alibi {
                        score += self.slopes[h] * (k as f32 - pos as f32);
                    }
                    scores[k] = score;
                }
            }
            // Keys before a sliding window's start weigh nothing.
            let (outside, inside) = scores.split_at_mut(window_start);
            outside.fill(0.0);
            let max = inside.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for s in inside.iter_mut() {
                *s = exp_le0(*s - max);
                sum += *s;
            }
            let inverse = sum.recip();
            let oh = &mut out[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (start, values) in pool.runs(seq, layer, true, pos + 1) {
                for (j, vr) in values.chunks(kv).enumerate() {
                    let p = scores[start + j] * inverse;
                    let vh = &vr[h / groups * hd..(h / groups + 1) * hd];
                    for k in 0..hd {
                        oh[k] += p * vh[k];
                    }
                }
            }
        }
    }
}

/// Query rows of a step × positions × `d_model` past which attention runs on rayon's threads.
const PARALLEL_ATTENTION: usize = 1 << 17;

/// [`CpuGpt::attend`] inside pulp's `#[target_feature]` dispatch: the same operations in the
/// CPU's widest vectors (the build's baseline is SSE2), so the same bits.
struct Attention<'a> {
    model: &'a CpuGpt,
    q: &'a [f32],
    pool: &'a HostKv,
    seq: &'a SeqKv,
    layer: usize,
    pos: usize,
    scores: &'a mut Vec<f32>,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Attention<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Attention {
            model,
            q,
            pool,
            seq,
            layer,
            pos,
            scores,
            out,
        } = self;
        model.attend(q, pool, seq, layer, pos, scores, out);
    }
}

/// `Σ a·b` in eight independent lanes: a left-to-right sum is a chain of dependent adds that
/// LLVM may not reorder, and attention's query-key products were a quarter of a batched step.
/// (No `mul_add`: outside pulp's dispatch the build targets CPUs without FMA, where it is a
/// libm call.)
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, at) = a.as_chunks::<8>();
    let (bc, bt) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let tail: f32 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
    (lanes[0] + lanes[4])
        + (lanes[1] + lanes[5])
        + (lanes[2] + lanes[6])
        + (lanes[3] + lanes[7])
        + tail
}

/// GPT-2's tanh approximation of GELU (burn's `gelu_approximate`), with `tanh` from the
/// vectorisable [`exp_le0`]: libm's `tanhf` was a tenth of a small model's decoding step.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(u) = sign(u) · (1 − e^(−2|u|)) / (1 + e^(−2|u|)), the exponential never above 1.
    let e = exp_le0(-2.0 * u.abs());
    let tanh = ((1.0 - e) / (1.0 + e)).copysign(u);
    0.5 * x * (1.0 + tanh)
}

/// The sinusoid of `pos` added to `row`: `sin` at even, `cos` at odd indices.
fn add_sinusoid(row: &mut [f32], pos: usize) {
    let d = row.len();
    for i in 0..d / 2 {
        let frequency = (1.0 / 10_000f64.powf(2.0 * i as f64 / d as f64)) as f32;
        let angle = pos as f32 * frequency;
        row[2 * i] += angle.sin();
        row[2 * i + 1] += angle.cos();
    }
}

/// RoPE's rotate-half rotation of each head of `x` (`n_head × head_dim`) at `pos`, pair `i`
/// turning at `frequencies[i]` ([`GptConfig::rope_frequencies`], as the burn model's tables).
fn rope(x: &mut [f32], pos: usize, n_head: usize, frequencies: &[f32]) {
    let hd = x.len() / n_head;
    // Under partial rotary the pairs are `(i, i + half)` of the first `2·half` dimensions.
    let half = frequencies.len().min(hd / 2);
    for head in x.chunks_mut(hd) {
        for (i, &frequency) in frequencies.iter().enumerate().take(half) {
            let (sin, cos) = (pos as f32 * frequency).sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

impl Batched for CpuGpt {
    type Store = HostKv;

    fn config(&self) -> &GptConfig {
        &self.config
    }

    fn store(&self, block_tokens: usize) -> HostKv {
        HostKv::new(&self.config, block_tokens)
    }

    fn forward(
        &self,
        pool: &mut KvPool<HostKv>,
        chunks: &mut [Chunk<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        self.run(pool, chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::Decoder;
    use crate::paged::step;
    use burn::tensor::Device;

    fn engine() -> CpuGpt {
        let config = GptConfig {
            n_layer: 1,
            d_model: 32,
            max_seq_len: 6,
            ..GptConfig::tiny(50)
        };
        CpuGpt::from_gpt(&config.init(&Device::flex(), 0).unwrap()).unwrap()
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let e = engine();
        let err = |r: Result<Vec<Vec<f32>>>| r.unwrap_err().to_string();
        assert!(e.prefill(&[]).is_err());
        assert!(
            e.prefill(&[vec![1], vec![]])
                .unwrap_err()
                .to_string()
                .contains("prompt 1")
        );
        assert!(
            e.prefill(&[vec![50]])
                .unwrap_err()
                .to_string()
                .contains("token id 50")
        );
        assert!(
            e.prefill(&[vec![1; 7]])
                .unwrap_err()
                .to_string()
                .contains("1..=6")
        );
        let (mut cache, logits) = e.prefill(&[vec![1, 2], vec![3]]).unwrap();
        assert_eq!((logits.len(), logits[0].len()), (2, 50));
        assert!(err(e.decode(&mut cache, &[1])).contains("1 tokens for a cache of 2"));
        assert!(err(step(&e, &mut cache, &[(0, &[1]), (0, &[2])])).contains("twice"));
        assert!(err(step(&e, &mut cache, &[(2, &[1])])).contains("no sequence 2"));
        // A failed step leaves the cache as it was.
        assert_eq!((cache.seq_len(0), cache.seq_len(1)), (2, 1));
        assert!(e.select(e.prefill(&[vec![1]]).unwrap().0, &[1]).is_err());
        let mut cache = e.select(cache, &[1]).unwrap();
        assert_eq!(cache.bytes(), cache.pool.store.block_bytes());
        for _ in 0..5 {
            e.decode(&mut cache, &[4]).unwrap();
        }
        assert!(err(e.decode(&mut cache, &[4])).contains("7 is outside 1..=6"));
    }

    #[test]
    fn a_prompt_in_chunks_is_the_prompt_at_once() {
        let e = engine();
        let (_, whole) = e.prefill(&[vec![5, 6, 7, 8]]).unwrap();
        let (mut cache, _) = e.prefill(&[vec![5]]).unwrap();
        let chunked = step(&e, &mut cache, &[(0, &[6, 7, 8])]).unwrap();
        for (a, b) in whole[0].iter().zip(&chunked[0]) {
            assert!((a - b).abs() < 1e-5);
        }
        assert!(cache.bytes() > 0);
    }

    #[test]
    fn attention_on_rayon_threads_is_the_same_bits_as_on_one() {
        let config = GptConfig {
            n_layer: 1,
            d_model: 64,
            max_seq_len: 128,
            ..GptConfig::tiny(50)
        };
        let e = CpuGpt::from_gpt(&config.init(&Device::flex(), 3).unwrap()).unwrap();
        let prompt: Vec<u32> = (0..100).map(|i| i * 7 % 50).collect();
        // 100 rows at once are past PARALLEL_ATTENTION; one row per step never is.
        assert!((1..=100).sum::<usize>() * 64 >= PARALLEL_ATTENTION);
        let (_, whole) = e.prefill(std::slice::from_ref(&prompt)).unwrap();
        let (mut cache, _) = e.prefill(&[prompt[..1].to_vec()]).unwrap();
        let mut last = Vec::new();
        for t in &prompt[1..] {
            last = step(&e, &mut cache, &[(0, std::slice::from_ref(t))]).unwrap();
        }
        assert_eq!(whole[0], last[0]);
    }

    #[test]
    fn forked_rows_continue_alike_from_shared_blocks() {
        let e = engine();
        let (cache, _) = e.prefill(&[vec![5, 6, 7], vec![9]]).unwrap();
        let mut cache = e.select(cache, &[0, 0, 0]).unwrap();
        assert_eq!(cache.batch(), 3);
        // The three rows share one block (the second prompt's went back).
        assert_eq!(cache.pool.blocks.used_blocks(), 1);
        let logits = e.decode(&mut cache, &[1, 2, 1]).unwrap();
        assert_eq!(logits[0], logits[2]);
        assert_ne!(logits[0], logits[1]);
        // Each row wrote into its own copy of the partly filled block.
        assert_eq!(cache.pool.blocks.used_blocks(), 3);
        let (mut alone, _) = e.prefill(&[vec![5, 6, 7]]).unwrap();
        assert_eq!(e.decode(&mut alone, &[2]).unwrap()[0], logits[1]);
    }

    #[test]
    fn host_rows_read_back_across_blocks() {
        let config = GptConfig {
            n_layer: 2,
            d_model: 8,
            ..GptConfig::tiny(10)
        };
        let mut pool = KvPool::new(HostKv::new(&config, 3), 3, 0, true);
        let mut seq = SeqKv::new();
        pool.reserve(&mut [(&mut seq, 7)]).unwrap();
        assert_eq!(pool.store.block_bytes(), 2 * 2 * 3 * 8 * 4);
        for pos in 0..7 {
            pool.store
                .write(&seq, 1, pos, &[pos as f32; 8], &[-(pos as f32); 8]);
        }
        seq.len = 7;
        let rows = |value| -> Vec<f32> {
            pool.store
                .runs(&seq, 1, value, 7)
                .flat_map(|(_, r)| r.to_vec())
                .collect()
        };
        let (keys, values) = (rows(false), rows(true));
        assert_eq!(keys.len(), 56);
        for pos in 0..7 {
            assert_eq!(keys[pos * 8], pos as f32);
            assert_eq!(values[pos * 8 + 7], -(pos as f32));
        }
        let starts: Vec<usize> = pool.store.runs(&seq, 0, false, 7).map(|(s, _)| s).collect();
        assert_eq!(starts, [0, 3, 6]);
        // A copied block reads back as the original.
        let mut copy = pool.store.clone();
        copy.copy_block(seq.blocks[0], seq.blocks[2]);
        let moved = SeqKv {
            blocks: vec![seq.blocks[2]],
            len: 3,
        };
        assert_eq!(
            copy.runs(&moved, 1, true, 3).next().unwrap().1,
            &values[..24]
        );
    }

    #[test]
    fn helpers_match_their_definitions() {
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(gelu(0.0), 0.0);
        let mut row = vec![0f32; 4];
        add_sinusoid(&mut row, 0);
        assert_eq!(row, [0.0, 1.0, 0.0, 1.0]);
        // A rotation keeps the norm and is the identity at position 0.
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        let frequencies = [1.0, 0.01];
        rope(&mut x, 0, 1, &frequencies);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        rope(&mut x, 3, 1, &frequencies);
        let norm: f32 = x.iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4);
    }
}
