//! GPT, the causal language model: token embedding, positions (learned, sinusoidal, RoPE or
//! ALiBi), pre-norm blocks of causal self-attention and an MLP, a final norm and an LM head
//! tied to the embedding or not; plus the KV cache that makes decoding one token cost one
//! token's work.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor, TensorData};

use crate::config::{GptConfig, NormKind, Positions};
use crate::init::SeededInit;
use crate::layers::{Mlp, Norm, alibi_bias, apply_rope, rope_tables, sinusoids};
use crate::{Error, Result};

impl GptConfig {
    /// Builds the model with GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the
    /// residual projections scaled by 1/sqrt(2·n_layer). The weights are drawn on the host from
    /// `seed` (see [`SeededInit`]), so a seed gives the same model on every backend and thread.
    pub fn init(&self, device: &Device, seed: u64) -> Result<Gpt> {
        self.validate()?;
        let mut init = SeededInit::new(seed);
        let residual_std = 0.02 / ((2 * self.n_layer) as f64).sqrt();
        let d = self.d_model;
        let rms = self.norm == NormKind::RmsNorm;
        let norm = |device: &Device| Norm::new(d, rms, self.bias && !rms, self.norm_eps, device);
        let wte = init.embedding(self.vocab_size, d, 0.02, device);
        let wpe = (self.positions == Positions::Learned)
            .then(|| init.embedding(self.max_seq_len, d, 0.01, device));
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln_1: norm(device),
                attn: Attention {
                    qkv: init.linear(
                        d,
                        d + 2 * self.kv_width(),
                        0.02,
                        self.has_qkv_bias(),
                        device,
                    ),
                    proj: init.linear(d, d, residual_std, self.bias, device),
                    n_head: self.n_head,
                    n_kv_head: self.kv_heads(),
                },
                ln_2: norm(device),
                mlp: Mlp::new(
                    &mut init,
                    self.activation,
                    d,
                    self.ffn_hidden(),
                    self.bias,
                    residual_std,
                    device,
                ),
                dropout: DropoutConfig::new(self.dropout).init(),
            })
            .collect();
        let lm_head =
            (!self.tie_embeddings).then(|| init.linear(d, self.vocab_size, 0.02, false, device));
        Ok(Gpt {
            wte,
            wpe,
            blocks,
            ln_f: norm(device),
            lm_head,
            dropout: DropoutConfig::new(self.dropout).init(),
            config: self.clone(),
        })
    }
}

impl GptConfig {
    /// The path and shape of every parameter [`GptConfig::init`] builds, in its order, without
    /// building it: what a loader checks a weights file against before allocating a model
    /// (the tests hold it to the built model's own list for every architecture switch).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        type Shapes = Vec<(String, Vec<usize>)>;
        fn linear(out: &mut Shapes, prefix: &str, inputs: usize, outputs: usize, bias: bool) {
            out.push((format!("{prefix}.weight"), vec![inputs, outputs]));
            if bias {
                out.push((format!("{prefix}.bias"), vec![outputs]));
            }
        }
        let d = self.d_model;
        let norm_bias = self.bias && self.norm != NormKind::RmsNorm;
        let norm = |out: &mut Shapes, prefix: &str| {
            out.push((format!("{prefix}.weight"), vec![d]));
            if norm_bias {
                out.push((format!("{prefix}.bias"), vec![d]));
            }
        };
        let mut out = vec![("wte.weight".to_string(), vec![self.vocab_size, d])];
        if self.positions == Positions::Learned {
            out.push(("wpe.weight".into(), vec![self.max_seq_len, d]));
        }
        let hidden = self.ffn_hidden();
        for b in 0..self.n_layer {
            let p = format!("blocks.{b}");
            norm(&mut out, &format!("{p}.ln_1"));
            let qkv = d + 2 * self.kv_width();
            linear(
                &mut out,
                &format!("{p}.attn.qkv"),
                d,
                qkv,
                self.has_qkv_bias(),
            );
            linear(&mut out, &format!("{p}.attn.proj"), d, d, self.bias);
            norm(&mut out, &format!("{p}.ln_2"));
            if self.activation == crate::config::Activation::Swiglu {
                linear(&mut out, &format!("{p}.mlp.gate"), d, hidden, self.bias);
            }
            linear(&mut out, &format!("{p}.mlp.up"), d, hidden, self.bias);
            linear(&mut out, &format!("{p}.mlp.down"), hidden, d, self.bias);
        }
        norm(&mut out, "ln_f");
        if !self.tie_embeddings {
            linear(&mut out, "lm_head", d, self.vocab_size, false);
        }
        out
    }
}

/// What every block of one forward pass shares: the positions' rotations or biases and the
/// padding mask, computed once rather than per layer.
struct Frame {
    rope: Option<(Tensor<4>, Tensor<4>)>,
    alibi: Option<Tensor<4>>,
    mask: Option<Tensor<4, Bool>>,
}

/// Causal multi-head self-attention with queries, keys and values in one matrix, as
/// GPT-2's `c_attn`: `[d_model, d_model + 2·kv_width]`, the queries' columns first, then the
/// keys', then the values' (`n_kv_head` heads each, shared by groups of query heads).
///
/// Not burn's `MultiHeadAttention`: that one is unfused (full score matrix), has separate
/// q/k/v matrices and no way to rotate keys or add a bias; here burn's fused `attention` op
/// does the work (flash kernels on GPU, a tiled kernel on flex; the unfused formula under
/// autodiff), which has no dropout on the attention weights, so dropout is on the residual
/// branches only.
#[derive(Module, Debug)]
pub struct Attention {
    pub(crate) qkv: Linear,
    pub(crate) proj: Linear,
    #[module(skip)]
    pub(crate) n_head: usize,
    #[module(skip)]
    pub(crate) n_kv_head: usize,
}

/// The queries, keys and values of `qkv`'s output `[batch, seq, d + 2·kv_width]`, each
/// `[batch, seq, width]`.
pub(crate) fn split_qkv(qkv: Tensor<3>, d_model: usize, kv_width: usize) -> [Tensor<3>; 3] {
    if kv_width == d_model {
        return qkv
            .chunk(3, 2)
            .try_into()
            .expect("chunk(3) of a dimension of size 3·d_model yields three tensors");
    }
    [
        qkv.clone().narrow(2, 0, d_model),
        qkv.clone().narrow(2, d_model, kv_width),
        qkv.narrow(2, d_model + kv_width, kv_width),
    ]
}

/// `[batch, kv_heads, seq, head_dim]` with each key/value head repeated for the `groups`
/// query heads that share it, as Hugging Face's `repeat_kv`: query head `h` reads kv head
/// `h / groups`.
pub fn repeat_kv(t: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return t;
    }
    let [batch, kv, seq, hd] = t.dims();
    t.unsqueeze_dim::<5>(2)
        .expand([batch, kv, groups, seq, hd])
        .reshape([batch, kv * groups, seq, hd])
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        frame: &Frame,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [batch, seq, d_model] = x.dims();
        let head_dim = d_model / self.n_head;
        let heads = |t: Tensor<3>, n: usize| t.reshape([batch, seq, n, head_dim]).swap_dims(1, 2);
        let [q, k, v] = split_qkv(self.qkv.forward(x), d_model, self.n_kv_head * head_dim);
        let (mut q, mut k, mut v) = (
            heads(q, self.n_head),
            heads(k, self.n_kv_head),
            heads(v, self.n_kv_head),
        );
        if let Some((cos, sin)) = &frame.rope {
            q = apply_rope(q, cos, sin);
            k = apply_rope(k, cos, sin);
        }
        if let Some(slot) = cache {
            if let Some((past_k, past_v)) = slot.take() {
                k = Tensor::cat(vec![past_k, k], 2);
                v = Tensor::cat(vec![past_v, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let groups = self.n_head / self.n_kv_head;
        let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups));
        // The causal mask is aligned bottom-right: with `past` cached keys, query i sees keys
        // 0..=past+i, which is what decoding needs.
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let fused = match (&frame.mask, &frame.alibi) {
            (None, None) => crate::fused::causal_attention(q.clone(), k.clone(), v.clone()),
            _ => None,
        };
        let context = match fused {
            Some(context) => context,
            None => attention(q, k, v, frame.mask.clone(), frame.alibi.clone(), options),
        };
        let context = context.swap_dims(1, 2).reshape([batch, seq, d_model]);
        self.proj.forward(context)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub(crate) ln_1: Norm,
    pub(crate) attn: Attention,
    pub(crate) ln_2: Norm,
    pub(crate) mlp: Mlp,
    pub(crate) dropout: Dropout,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        frame: &Frame,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let attended = self
            .attn
            .forward(self.ln_1.forward(x.clone()), frame, cache);
        let x = x + self.dropout.forward(attended);
        let h = self.mlp.forward(self.ln_2.forward(x.clone()));
        x + self.dropout.forward(h)
    }
}

/// Keys and values of every layer for a batch of sequences being decoded.
///
/// Prompts of different lengths are left-padded to a common length, so that every sequence
/// appends its next token in the same column; each sequence's positions count from its first
/// real token, and its padding is masked out of attention. [`KvCache::select`] reorders or
/// drops rows (beam search).
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Left padding of each row.
    pad: Vec<usize>,
    /// Columns filled, padding included.
    len: usize,
}

impl KvCache {
    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.pad.len()
    }

    /// Columns filled so far (the longest sequence's length).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been prefilled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens of row `row`, padding excluded.
    pub fn seq_len(&self, row: usize) -> usize {
        self.len - self.pad[row]
    }

    /// The cache of rows `rows` (repeats allowed), in that order.
    pub fn select(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch()) {
            return Err(Error::Shape(format!(
                "row {bad} of a cache of {} sequences",
                self.batch()
            )));
        }
        let Some(device) = self.device() else {
            return Err(Error::Shape("select on an empty cache".into()));
        };
        let index = Tensor::<1, Int>::from_ints(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &device,
        );
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer.as_ref().map(|(k, v)| {
                    (
                        k.clone().select(0, index.clone()),
                        v.clone().select(0, index.clone()),
                    )
                })
            })
            .collect();
        Ok(KvCache {
            layers,
            pad: rows.iter().map(|&r| self.pad[r]).collect(),
            len: self.len,
        })
    }

    /// The device the keys and values live on; `None` before prefill.
    fn device(&self) -> Option<Device> {
        self.layers.iter().flatten().next().map(|(k, _)| k.device())
    }

    /// Bytes the keys and values hold.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.shape().num_elements() + v.shape().num_elements()) * 4)
            .sum()
    }
}

/// A GPT causal language model; build one with [`GptConfig::init`] or load one with
/// [`crate::checkpoint`].
#[derive(Module, Debug)]
pub struct Gpt {
    pub(crate) wte: Embedding,
    pub(crate) wpe: Option<Embedding>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) ln_f: Norm,
    pub(crate) lm_head: Option<Linear>,
    pub(crate) dropout: Dropout,
    #[module(skip)]
    pub(crate) config: GptConfig,
}

impl Gpt {
    /// The shape this model was built with.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]`; position `t` sees tokens
    /// `0..=t` only.
    ///
    /// Ids must be below `vocab_size`. The tokenizer and dataset crates guarantee it where the
    /// ids are made; checking here would cost a device round trip on every forward pass.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Result<Tensor<3>> {
        Ok(self.head(self.features(tokens)?))
    }

    /// The final hidden states `[batch, seq, d_model]` (after the last norm): what
    /// [`Gpt::forward`] multiplies by [`Gpt::output_projection`] into logits. Training fuses
    /// that product with its loss so that the `[tokens, vocab]` logits are never differentiated
    /// through.
    pub fn features(&self, tokens: Tensor<2, Int>) -> Result<Tensor<3>> {
        let [batch, seq] = tokens.dims();
        self.check_len(seq)?;
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq]);
        Ok(self.hidden(tokens, positions.clone(), positions, None, None))
    }

    /// The output projection `[vocab, d_model]` (the token embedding when tied) and its bias,
    /// so that logits = features · projectionᵀ + bias.
    pub fn output_projection(&self) -> (Tensor<2>, Option<Tensor<1>>) {
        match &self.lm_head {
            Some(head) => (
                head.weight.val().transpose(),
                head.bias.as_ref().map(|b| b.val()),
            ),
            None => (self.wte.weight.val(), None),
        }
    }

    /// Mean next-token cross-entropy of `targets` `[batch, seq]` given `tokens` `[batch, seq]`.
    pub fn loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Result<Tensor<1>> {
        if tokens.dims() != targets.dims() {
            return Err(Error::Shape(format!(
                "targets {:?} do not match tokens {:?}",
                targets.dims(),
                tokens.dims()
            )));
        }
        let logits = self.forward(tokens)?;
        let [batch, seq, vocab] = logits.dims();
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(
                logits.reshape([batch * seq, vocab]),
                targets.reshape([batch * seq]),
            );
        Ok(loss)
    }

    /// Runs the prompts (each at least one token) through the model, left-padded to the
    /// longest, and returns the cache with the logits of each prompt's next token
    /// `[batch, vocab]`.
    pub fn prefill(&self, prompts: &[Vec<u32>], device: &Device) -> Result<(KvCache, Tensor<2>)> {
        if prompts.is_empty() {
            return Err(Error::Shape("no prompts".into()));
        }
        if let Some(empty) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::Shape(format!("prompt {empty} has no tokens")));
        }
        self.check_ids(prompts.iter().flatten().copied())?;
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        self.check_len(len)?;
        let batch = prompts.len();
        let pad: Vec<usize> = prompts.iter().map(|p| len - p.len()).collect();
        let mut ids = Vec::with_capacity(batch * len);
        for prompt in prompts {
            ids.extend(std::iter::repeat_n(0i64, len - prompt.len()));
            ids.extend(prompt.iter().map(|&t| t as i64));
        }
        let tokens = Tensor::<2, Int>::from_ints(TensorData::new(ids, [batch, len]), device);
        let mut cache = KvCache {
            layers: vec![None; self.blocks.len()],
            pad,
            len: 0,
        };
        let positions = cache.positions(0, len, device);
        let mask = cache.padding_mask(0, len, self.config.n_head, device);
        let hidden = self.hidden(tokens, positions.clone(), positions, mask, Some(&mut cache));
        cache.len = len;
        let d = self.config.d_model;
        let last = hidden.slice([0..batch, len - 1..len, 0..d]);
        Ok((
            cache,
            self.head(last).reshape([batch, self.config.vocab_size]),
        ))
    }

    /// Appends one token to every sequence of `cache` and returns the logits of the next
    /// `[batch, vocab]`.
    pub fn decode(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Tensor<2>> {
        if tokens.len() != cache.batch() {
            return Err(Error::Shape(format!(
                "{} tokens for a cache of {} sequences",
                tokens.len(),
                cache.batch()
            )));
        }
        if cache.is_empty() {
            return Err(Error::Shape("decode before prefill".into()));
        }
        self.check_ids(tokens.iter().copied())?;
        let longest = (0..cache.batch())
            .map(|r| cache.seq_len(r))
            .max()
            .unwrap_or(0);
        self.check_len(longest + 1)?;
        let Some(device) = cache.device() else {
            return Err(Error::Shape("decode before prefill".into()));
        };
        let batch = cache.batch();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let tokens = Tensor::<2, Int>::from_ints(TensorData::new(ids, [batch, 1]), &device);
        let past = cache.len;
        let positions = cache.positions(past, 1, &device);
        let key_positions = cache.positions(0, past + 1, &device);
        let mask = cache.padding_mask(past, 1, self.config.n_head, &device);
        let hidden = self.hidden(tokens, positions, key_positions, mask, Some(cache));
        cache.len += 1;
        Ok(self.head(hidden).reshape([batch, self.config.vocab_size]))
    }

    /// Final hidden states `[rows, d_model]` (after the last norm) of `tokens` `[rows]` at
    /// `positions` `[rows]` — rows of any sequences, in any order — with each layer's
    /// attention left to `attend`: a paged engine's own key/value storage, which the model
    /// knows nothing of. `attend(layer, q, k, v)` gets the rows' queries `[rows, heads,
    /// head_dim]` and keys and values `[rows, kv_heads, head_dim]` (rotated where the model
    /// uses RoPE; query head `h` attends with kv head `h / (heads / kv_heads)`, see
    /// [`repeat_kv`]) and returns their attention context `[rows, d_model]`. Ids and positions
    /// are the caller's to check.
    pub fn step(
        &self,
        tokens: Tensor<1, Int>,
        positions: Tensor<1, Int>,
        attend: &mut dyn FnMut(usize, Tensor<3>, Tensor<3>, Tensor<3>) -> Tensor<2>,
    ) -> Tensor<2> {
        let config = &self.config;
        let [rows] = tokens.dims();
        let (d, heads, hd) = (config.d_model, config.n_head, config.head_dim());
        let positions = positions.reshape([1, rows]);
        let mut x = self.wte.forward(tokens.reshape([1, rows]));
        // Tables computed in f32 join a model held in half precision in its dtype.
        let dtype = FloatDType::from(x.dtype());
        match (&self.wpe, config.positions) {
            (Some(wpe), _) => x = x + wpe.forward(positions.clone()),
            (None, Positions::Sinusoidal) => {
                x = x + sinusoids(positions.clone(), d).cast(dtype);
            }
            _ => {}
        }
        let rope = (config.positions == Positions::Rope).then(|| {
            let (cos, sin) = rope_tables(positions, &config.rope_frequencies());
            (cos.cast(dtype), sin.cast(dtype))
        });
        for (layer, block) in self.blocks.iter().enumerate() {
            let [q, k, v] = split_qkv(
                block.attn.qkv.forward(block.ln_1.forward(x.clone())),
                d,
                config.kv_width(),
            );
            // Keys and values keep their `kv_heads` heads: the engine's pool stores those.
            let kv_heads = config.kv_heads();
            let by_row = |t: Tensor<3>, n: usize| t.reshape([rows, n, hd]);
            let (q, k) = match &rope {
                // RoPE rotates `[batch, heads, seq, head_dim]`; without it no copy is made.
                Some((cos, sin)) => {
                    let rotate = |t: Tensor<3>, n: usize| {
                        let t = t.reshape([1, rows, n, hd]).swap_dims(1, 2);
                        apply_rope(t, cos, sin)
                            .swap_dims(1, 2)
                            .reshape([rows, n, hd])
                    };
                    (rotate(q, heads), rotate(k, kv_heads))
                }
                None => (by_row(q, heads), by_row(k, kv_heads)),
            };
            let context = attend(layer, q, k, by_row(v, kv_heads));
            x = x + block.attn.proj.forward(context.reshape([1, rows, d]));
            x = x.clone() + block.mlp.forward(block.ln_2.forward(x));
        }
        self.ln_f.forward(x).reshape([rows, d])
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, d_model]` (from [`Gpt::step`]).
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        let [rows, d] = hidden.dims();
        self.head(hidden.reshape([1, rows, d]))
            .reshape([rows, self.config.vocab_size])
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len == 0 || len > self.config.max_seq_len {
            return Err(Error::SequenceLength {
                len,
                max: self.config.max_seq_len,
            });
        }
        Ok(())
    }

    fn check_ids(&self, mut ids: impl Iterator<Item = u32>) -> Result<()> {
        let vocab = self.config.vocab_size;
        match ids.find(|&id| id as usize >= vocab) {
            Some(id) => Err(Error::TokenId { id, vocab }),
            None => Ok(()),
        }
    }

    /// Final hidden states `[batch, seq, d_model]` of `tokens` at `positions`; the keys span
    /// `key_positions` (cached ones first).
    fn hidden(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        key_positions: Tensor<2, Int>,
        mask: Option<Tensor<4, Bool>>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let config = &self.config;
        let mut x = self.wte.forward(tokens);
        match (&self.wpe, config.positions) {
            (Some(wpe), _) => x = x + wpe.forward(positions.clone()),
            (None, Positions::Sinusoidal) => x = x + sinusoids(positions.clone(), config.d_model),
            _ => {}
        }
        // A sliding window masks keys `w` or more positions before the query.
        let mask = match config.sliding_window {
            None => mask,
            Some(w) => {
                let [batch, queries] = positions.dims();
                let keys = key_positions.dims()[1];
                let distance = positions.clone().unsqueeze_dim::<3>(2)
                    - key_positions.clone().unsqueeze_dim::<3>(1);
                let window = distance
                    .greater_equal_elem(w as i64)
                    .unsqueeze_dim::<4>(1)
                    .expand([batch, config.n_head, queries, keys]);
                Some(match mask {
                    Some(mask) => mask.bool_or(window),
                    None => window,
                })
            }
        };
        let frame = Frame {
            rope: (config.positions == Positions::Rope)
                .then(|| rope_tables(positions.clone(), &config.rope_frequencies())),
            alibi: (config.positions == Positions::Alibi)
                .then(|| alibi_bias(positions, key_positions, config.n_head)),
            mask,
        };
        let mut x = self.dropout.forward(x);
        for (i, block) in self.blocks.iter().enumerate() {
            let layer = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, &frame, layer);
        }
        self.ln_f.forward(x)
    }

    /// Logits of hidden states `[batch, seq, d_model]`.
    fn head(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => {
                let [batch, seq, d_model] = x.dims();
                // The tied head is the token embedding transposed (GPT-2's `lm_head`).
                let vocab = self.wte.weight.val();
                let vocab_size = vocab.dims()[0];
                x.reshape([batch * seq, d_model])
                    .matmul(vocab.transpose())
                    .reshape([batch, seq, vocab_size])
            }
        }
    }
}

impl KvCache {
    /// Positions `[batch, n]` of columns `start..start + n`: counted from each row's first
    /// real token, 0 on padding.
    fn positions(&self, start: usize, n: usize, device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = self
            .pad
            .iter()
            .flat_map(|&pad| (start..start + n).map(move |c| c.saturating_sub(pad) as i64))
            .collect();
        Tensor::from_ints(TensorData::new(ids, [self.batch(), n]), device)
    }

    /// The mask `[batch, heads, n, start + n]` hiding each row's padding from the queries of
    /// columns `start..start + n`, or `None` when no row is padded. A padding query still sees
    /// itself: a row with every key masked is NaN on some backends, and its NaN keys and
    /// values would then poison the real rows through `0 · NaN`.
    fn padding_mask(
        &self,
        start: usize,
        n: usize,
        heads: usize,
        device: &Device,
    ) -> Option<Tensor<4, Bool>> {
        if self.pad.iter().all(|&p| p == 0) {
            return None;
        }
        let keys = start + n;
        let mut masked = Vec::with_capacity(self.batch() * n * keys);
        for &pad in &self.pad {
            for query in start..start + n {
                masked.extend((0..keys).map(|key| key < pad && key != query));
            }
        }
        let mask = Tensor::<4, Bool>::from_data(
            TensorData::new(masked, [self.batch(), 1, n, keys]),
            device,
        );
        Some(mask.expand([self.batch(), heads, n, keys]))
    }
}
