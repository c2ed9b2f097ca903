//! The burn-device engine: [`DeviceGpt`], the model on any burn device (flex, wgpu, CUDA)
//! behind [`Batched`], with its keys and values in [`DeviceKv`], a paged pool of device
//! tensors that the same [`Blocks`](crate::paged::Blocks) bookkeeping hands out.
//!
//! Per layer the pool is one key and one value tensor `[1 + slots, kv_width]` (`d_model`, or
//! less by the group size under grouped-query attention): row 0 is a
//! zeroed sentinel that padding reads, and position `p` of block `b` is row
//! `1 + b·block_tokens + p` (the layout `[blocks, block_tokens, kv_heads, head_dim]`
//! flattened, so that a step's new keys are written with one `select_assign` of whole rows
//! and read with one `select`). A step:
//! 1. the rows of every chunk — prompt pieces and decode tokens of different sequences — go
//!    through the model together ([`Gpt::step`]);
//! 2. in each layer their keys and values are written to their slots; every chunk's keys
//!    `0..len` are gathered through its block table into `[chunks, kv_heads, longest,
//!    head_dim]` (padding reads the sentinel; each kv head then repeated for its query heads) and its queries into `[chunks, heads, most rows,
//!    head_dim]`, and burn's fused `attention` runs with a mask for causality and padding
//!    (and ALiBi's bias where the model has it): one gather per layer and step, until burn
//!    has a paged-attention kernel;
//! 3. only the rows whose logits are wanted go through the head and back to the host.
//!
//! ```
//! use std::sync::Arc;
//! use burn::tensor::Device;
//! use lmforge_infer::{DeviceGpt, GenerateOptions, Sampling, generate_batch};
//! use lmforge_model::GptConfig;
//!
//! let device = Device::flex();
//! let model = GptConfig { n_layer: 1, d_model: 32, ..GptConfig::tiny(40) }.init(&device, 0)?;
//! let engine = Arc::new(DeviceGpt::new(model, device));
//! let options = GenerateOptions { max_new_tokens: 3, sampling: Sampling::greedy(), stop_tokens: vec![] };
//! let out = generate_batch(&engine, &[vec![1, 2, 3]], &options, |_, _| true)?;
//! assert_eq!(out[0].tokens.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, FloatDType, IndexingUpdateOp, Int, Tensor, TensorData};
use lmforge_model::{Gpt, GptConfig, Positions, alibi_bias, repeat_kv};

use crate::paged::{Batched, Chunk, KvPool, KvStore, SeqKv};
use crate::{Error, Result};

/// Keys and values of a [`DeviceGpt`]'s pool: one key and one value tensor per layer on the
/// model's device.
#[derive(Debug)]
pub struct DeviceKv {
    /// `(keys, values)` of each layer, `[1 + slots, width]`; `None` only while a step has
    /// them out.
    layers: Vec<Option<(Tensor<2>, Tensor<2>)>>,
    block_tokens: usize,
    /// Floats of one position's keys (`GptConfig::kv_width`).
    width: usize,
    device: Device,
    dtype: FloatDType,
}

impl DeviceKv {
    /// An empty pool (the sentinel row only) for `config` on `device`, its keys and values
    /// held in `dtype`.
    pub fn new(
        config: &GptConfig,
        block_tokens: usize,
        device: &Device,
        dtype: FloatDType,
    ) -> Self {
        let mut kv = Self {
            layers: Vec::new(),
            block_tokens: block_tokens.max(1),
            width: config.kv_width(),
            device: device.clone(),
            dtype,
        };
        kv.layers = (0..config.n_layer)
            .map(|_| Some((kv.zeros(1), kv.zeros(1))))
            .collect();
        kv
    }

    fn zeros(&self, rows: usize) -> Tensor<2> {
        Tensor::<2>::zeros([rows, self.width], &self.device).cast(self.dtype)
    }

    fn index(&self, rows: Vec<i64>) -> Tensor<1, Int> {
        let n = rows.len();
        Tensor::from_ints(TensorData::new(rows, [n]), &self.device)
    }
}

impl KvStore for DeviceKv {
    fn grow(&mut self, more: usize) {
        let zeros = self.zeros(more * self.block_tokens);
        for layer in &mut self.layers {
            let (k, v) = layer.take().expect("between steps every layer is in");
            *layer = Some((
                Tensor::cat(vec![k, zeros.clone()], 0),
                Tensor::cat(vec![v, zeros.clone()], 0),
            ));
        }
    }

    fn copy_block(&mut self, from: u32, to: u32) {
        let bt = self.block_tokens as i64;
        let rows = |b: u32| (0..bt).map(|p| 1 + b as i64 * bt + p).collect::<Vec<_>>();
        let (from, to) = (self.index(rows(from)), self.index(rows(to)));
        for layer in &mut self.layers {
            let (k, v) = layer.take().expect("between steps every layer is in");
            // A gather, not a slice: a slice may be a view of the pool, and writing into a
            // pool still viewed would copy all of it.
            let (kb, vb) = (
                k.clone().select(0, from.clone()),
                v.clone().select(0, from.clone()),
            );
            *layer = Some((
                k.select_assign(0, to.clone(), kb, IndexingUpdateOp::Assign),
                v.select_assign(0, to.clone(), vb, IndexingUpdateOp::Assign),
            ));
        }
    }

    fn block_bytes(&self) -> usize {
        let bytes = if self.dtype == FloatDType::F32 { 4 } else { 2 };
        2 * self.layers.len() * self.block_tokens * self.width * bytes
    }
}

/// A [`Gpt`] on a burn device as a [`Batched`] engine.
#[derive(Debug)]
pub struct DeviceGpt {
    model: Gpt,
    device: Device,
    /// The output projection `[d_model, vocab]`, laid out for `hidden · head`, and its bias.
    head: Tensor<2>,
    bias: Option<Tensor<1>>,
    dtype: FloatDType,
    /// The device and adapter it was opened on, as a user would name them.
    name: Option<String>,
}

impl DeviceGpt {
    /// The engine for `model`, whose weights live on `device`. A head tied to the token
    /// embedding is copied once, transposed: multiplying by the embedding's transposed view
    /// made flex transpose all `vocab × d_model` of it at every step.
    pub fn new(model: Gpt, device: Device) -> Self {
        Self::with_dtype(model, device, FloatDType::F32)
    }

    /// The engine with its weights, keys and values held in `dtype` (f16 or bf16 halve their
    /// memory; on wgpu f16 needs an adapter with `SHADER_F16`, and no adapter has bf16).
    pub fn with_dtype(model: Gpt, device: Device, dtype: FloatDType) -> Self {
        let model = if dtype == FloatDType::F32 {
            model
        } else {
            lmforge_model::in_dtype(model, dtype)
        };
        let (projection, bias) = model.output_projection();
        let head = if model.config().tie_embeddings {
            Tensor::<2>::from_data(projection.transpose().into_data(), &device).cast(dtype)
        } else {
            projection.transpose()
        };
        Self {
            model,
            device,
            head,
            bias,
            dtype,
            name: None,
        }
    }

    /// The same engine, described as `name` (the device and adapter it was opened on).
    pub fn named(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }

    /// Where it runs, as [`DeviceGpt::named`] said or as burn names the device.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{name}, {:?}", self.dtype),
            None => format!("{:?} in {:?}", self.device, self.dtype),
        }
    }

    /// What its weights, keys and values are held in.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// The model.
    pub fn model(&self) -> &Gpt {
        &self.model
    }

    /// Where it runs.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn check(&self, pool: &KvPool<DeviceKv>, chunks: &[Chunk<'_>]) -> Result<()> {
        let c = self.model.config();
        let store = &pool.store;
        if store.layers.len() != c.n_layer
            || store.width != c.kv_width()
            || store.block_tokens != pool.blocks.block_tokens()
        {
            return Err(Error::request(format!(
                "a KV pool for {} layers of {} is not this model's ({} of {})",
                store.layers.len(),
                store.width,
                c.n_layer,
                c.kv_width()
            )));
        }
        for chunk in chunks {
            if chunk.tokens.is_empty() {
                return Err(Error::request("a chunk without tokens"));
            }
            let len = chunk.seq.len + chunk.tokens.len();
            if len > c.max_seq_len {
                return Err(lmforge_model::Error::SequenceLength {
                    len,
                    max: c.max_seq_len,
                }
                .into());
            }
            if let Some(&id) = chunk.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(lmforge_model::Error::TokenId {
                    id,
                    vocab: c.vocab_size,
                }
                .into());
            }
        }
        Ok(())
    }
}

/// Where a step's rows go, as host indices (built once per step, uploaded once).
struct Plan {
    /// Chunks, the most keys of one, the most rows of one.
    chunks: usize,
    keys: usize,
    queries: usize,
    /// Each row's pool slot.
    write: Vec<i64>,
    /// `[chunks, keys]` slots of every chunk's keys, the sentinel past its length.
    gather: Vec<i64>,
    /// `[chunks, queries]` rows of the step, row 0 past a chunk's own.
    ask: Vec<i64>,
    /// Each row's place in `[chunks · queries]`.
    back: Vec<i64>,
    /// `[chunks, queries, keys]`: true where a query must not see a key.
    masked: Vec<bool>,
    /// `[chunks, queries]` and `[chunks, keys]` positions (ALiBi's bias).
    query_positions: Vec<i64>,
    key_positions: Vec<i64>,
    /// Each row's token and position.
    tokens: Vec<i64>,
    positions: Vec<i64>,
}

impl Plan {
    fn new(chunks: &[Chunk<'_>], block_tokens: usize, window: Option<usize>) -> Plan {
        let slot = |seq: &SeqKv, p: usize| {
            1 + seq.blocks[p / block_tokens] as i64 * block_tokens as i64
                + (p % block_tokens) as i64
        };
        let keys = chunks
            .iter()
            .map(|c| c.seq.len + c.tokens.len())
            .max()
            .unwrap_or(0);
        let queries = chunks.iter().map(|c| c.tokens.len()).max().unwrap_or(0);
        let mut plan = Plan {
            chunks: chunks.len(),
            keys,
            queries,
            write: Vec::new(),
            gather: Vec::with_capacity(chunks.len() * keys),
            ask: Vec::with_capacity(chunks.len() * queries),
            back: Vec::new(),
            masked: Vec::with_capacity(chunks.len() * queries * keys),
            query_positions: Vec::with_capacity(chunks.len() * queries),
            key_positions: Vec::with_capacity(chunks.len() * keys),
            tokens: Vec::new(),
            positions: Vec::new(),
        };
        let mut row = 0i64;
        for (b, chunk) in chunks.iter().enumerate() {
            let (start, n) = (chunk.seq.len, chunk.tokens.len());
            let len = start + n;
            for (j, &t) in chunk.tokens.iter().enumerate() {
                plan.write.push(slot(chunk.seq, start + j));
                plan.back.push((b * queries + j) as i64);
                plan.tokens.push(t as i64);
                plan.positions.push((start + j) as i64);
            }
            for k in 0..keys {
                plan.gather
                    .push(if k < len { slot(chunk.seq, k) } else { 0 });
                plan.key_positions.push(k as i64);
            }
            for j in 0..queries {
                let real = j < n;
                plan.ask.push(if real { row + j as i64 } else { 0 });
                plan.query_positions
                    .push(if real { (start + j) as i64 } else { 0 });
                // A padding query sees the first key only: a row with every key masked is
                // NaN on some backends.
                // Causal, and within a sliding window where the model has one.
                let seen = |k: usize| k <= start + j && window.is_none_or(|w| k + w > start + j);
                plan.masked
                    .extend((0..keys).map(|k| if real { !seen(k) } else { k != 0 }));
            }
            row += n as i64;
        }
        plan
    }
}

impl Batched for DeviceGpt {
    type Store = DeviceKv;

    fn config(&self) -> &GptConfig {
        self.model.config()
    }

    fn store(&self, block_tokens: usize) -> DeviceKv {
        DeviceKv::new(self.model.config(), block_tokens, &self.device, self.dtype)
    }

    fn forward(
        &self,
        pool: &mut KvPool<DeviceKv>,
        chunks: &mut [Chunk<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        self.check(pool, chunks)?;
        let mut growth: Vec<(&mut SeqKv, usize)> = chunks
            .iter_mut()
            .map(|chunk| (&mut *chunk.seq, chunk.tokens.len()))
            .collect();
        pool.reserve(&mut growth)?;
        drop(growth);
        let plan = Plan::new(
            chunks,
            pool.blocks.block_tokens(),
            self.model.config().sliding_window,
        );
        let store = &mut pool.store;
        let c = self.model.config();
        let (d, heads, hd) = (c.d_model, c.n_head, c.head_dim());
        let (kv_heads, kv) = (c.kv_heads(), c.kv_width());
        let (b, t, q) = (plan.chunks, plan.keys, plan.queries);
        let rows = plan.tokens.len();
        let device = &self.device;
        let ints =
            |v: &[i64]| Tensor::<1, Int>::from_ints(TensorData::new(v.to_vec(), [v.len()]), device);
        let write = ints(&plan.write);
        let gather = ints(&plan.gather);
        let ask = ints(&plan.ask);
        let back = ints(&plan.back);
        let mask = Tensor::<4, Bool>::from_data(
            TensorData::new(plan.masked.clone(), [b, 1, q, t]),
            device,
        )
        .expand([b, heads, q, t]);
        let bias = (c.positions == Positions::Alibi).then(|| {
            let qp = Tensor::<2, Int>::from_ints(
                TensorData::new(plan.query_positions.clone(), [b, q]),
                device,
            );
            let kp = Tensor::<2, Int>::from_ints(
                TensorData::new(plan.key_positions.clone(), [b, t]),
                device,
            );
            alibi_bias(qp, kp, heads).cast(self.dtype)
        });
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let mut attend = |layer: usize, qs: Tensor<3>, ks: Tensor<3>, vs: Tensor<3>| {
            let (kp, vp) = store.layers[layer]
                .take()
                .expect("between steps every layer is in");
            let kp = kp.select_assign(
                0,
                write.clone(),
                ks.reshape([rows, kv]),
                IndexingUpdateOp::Assign,
            );
            let vp = vp.select_assign(
                0,
                write.clone(),
                vs.reshape([rows, kv]),
                IndexingUpdateOp::Assign,
            );
            let by_chunk = |pool: Tensor<2>| {
                let t4 = pool
                    .select(0, gather.clone())
                    .reshape([b, t, kv_heads, hd])
                    .swap_dims(1, 2);
                repeat_kv(t4, heads / kv_heads)
            };
            let (keys, values) = (by_chunk(kp.clone()), by_chunk(vp.clone()));
            store.layers[layer] = Some((kp, vp));
            let queries = qs
                .reshape([rows, d])
                .select(0, ask.clone())
                .reshape([b, q, heads, hd])
                .swap_dims(1, 2);
            attention(
                queries,
                keys,
                values,
                Some(mask.clone()),
                bias.clone(),
                options,
            )
            .swap_dims(1, 2)
            .reshape([b * q, d])
            .select(0, back.clone())
        };
        let hidden = self
            .model
            .step(ints(&plan.tokens), ints(&plan.positions), &mut attend);
        // Only the rows whose logits are wanted go through the head, the largest matrix.
        let mut wanted = Vec::new();
        let mut counts = Vec::with_capacity(chunks.len());
        let mut end = 0;
        for chunk in chunks.iter_mut() {
            let start = end;
            end += chunk.tokens.len();
            chunk.seq.len += chunk.tokens.len();
            let first = if chunk.every_logit { start } else { end - 1 };
            wanted.extend((first..end).map(|r| r as i64));
            counts.push(end - first);
        }
        let hidden = hidden.select(0, ints(&wanted));
        let mut logits = hidden.matmul(self.head.clone());
        if let Some(bias) = &self.bias {
            logits = logits + bias.clone().unsqueeze();
        }
        let logits = lmforge_model::host_values(logits);
        let vocab = c.vocab_size;
        let mut out = Vec::with_capacity(counts.len());
        let mut at = 0;
        for count in counts {
            out.push(logits[at..at + count * vocab].to_vec());
            at += count * vocab;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> DeviceGpt {
        let config = GptConfig {
            n_layer: 2,
            d_model: 32,
            max_seq_len: 40,
            ..GptConfig::tiny(50)
        };
        let device = Device::flex();
        DeviceGpt::new(config.init(&device, 4).unwrap(), device)
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "max |Δ| = {worst}");
    }

    #[test]
    fn a_prompt_in_chunks_of_a_mixed_step_is_the_prompt_at_once() {
        let e = engine();
        let mut pool = KvPool::new(e.store(4), 4, 0, true);
        let prompt: Vec<u32> = (0..11).map(|i| i * 3 % 50).collect();
        let (mut a, mut b) = (SeqKv::new(), SeqKv::new());
        let whole = e
            .forward(
                &mut pool,
                &mut [Chunk {
                    seq: &mut a,
                    tokens: &prompt,
                    every_logit: true,
                }],
            )
            .unwrap();
        // The same prompt in pieces, beside a decode row of the other sequence.
        let mut got = Vec::new();
        for piece in prompt.chunks(5) {
            let out = e
                .forward(
                    &mut pool,
                    &mut [
                        Chunk {
                            seq: &mut b,
                            tokens: piece,
                            every_logit: true,
                        },
                        Chunk {
                            seq: &mut a,
                            tokens: &[7],
                            every_logit: false,
                        },
                    ],
                )
                .unwrap();
            got.extend_from_slice(&out[0]);
        }
        close(&whole[0], &got);
        assert_eq!((a.len(), b.len()), (11 + 3, 11));
    }

    #[test]
    fn bad_chunks_are_errors_and_change_nothing() {
        let e = engine();
        let mut pool = KvPool::new(e.store(4), 4, 0, true);
        let mut seq = SeqKv::new();
        for tokens in [&[][..], &[50][..], &[1; 41][..]] {
            let err = e.forward(
                &mut pool,
                &mut [Chunk {
                    seq: &mut seq,
                    tokens,
                    every_logit: false,
                }],
            );
            assert!(err.is_err());
            assert_eq!(seq.len(), 0);
            assert_eq!(pool.blocks.used_blocks(), 0);
        }
    }
}
