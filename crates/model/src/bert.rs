//! BERT, the masked language model: word, position and token-type embeddings, post-norm
//! encoder layers, and the heads of its three uses — masked-LM pretraining, sequence
//! classification on `[CLS]`, token classification (NER) — plus sentence embeddings by mean
//! pooling as sentence-transformers computes them.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::check_common;
use crate::init::SeededInit;
use crate::layers::Norm;
use crate::{Error, Result};

fn bert_eps() -> f64 {
    1e-12
}
fn two() -> usize {
    2
}

/// The shape of a BERT (Hugging Face's `BertConfig` under our names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// Token ids are `0..vocab_size`.
    pub vocab_size: usize,
    /// Rows of the learned position table.
    pub max_seq_len: usize,
    /// Segment ids are `0..type_vocab_size`.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// Encoder layers.
    pub n_layer: usize,
    /// Attention heads; must divide `d_model`.
    pub n_head: usize,
    /// Hidden width.
    pub d_model: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// LayerNorm ε (BERT's 1e-12).
    #[serde(default = "bert_eps")]
    pub norm_eps: f64,
    /// Dropout on embeddings and residual branches.
    pub dropout: f64,
}

impl BertConfig {
    /// A small BERT for tests and quick fine-tuning: 2 layers of width 128, 2 heads.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            max_seq_len: 512,
            type_vocab_size: 2,
            n_layer: 2,
            n_head: 2,
            d_model: 128,
            d_ff: 512,
            norm_eps: 1e-12,
            dropout: 0.0,
        }
    }

    /// BERT-base: 12 layers, width 768, 12 heads, 30,522 WordPiece tokens.
    pub fn base() -> Self {
        Self {
            vocab_size: 30_522,
            n_layer: 12,
            n_head: 12,
            d_model: 768,
            d_ff: 3072,
            dropout: 0.1,
            ..Self::tiny(30_522)
        }
    }

    /// Checks the fields, naming the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
            ("type_vocab_size", self.type_vocab_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("d_model", self.d_model),
            ("d_ff", self.d_ff),
        ];
        check_common(
            &sizes,
            self.d_model,
            self.n_head,
            self.dropout,
            self.norm_eps,
        )
    }

    /// Parameters of the encoder with its pooler (the MLM head adds `d_model² + 3·d_model +
    /// vocab_size`, its decoder being tied).
    pub fn num_params(&self) -> usize {
        let (d, f) = (self.d_model, self.d_ff);
        let layer = 4 * (d * d + d) + 2 * d * f + f + d + 4 * d;
        (self.vocab_size + self.max_seq_len + self.type_vocab_size) * d
            + 2 * d
            + self.n_layer * layer
            + d * d
            + d
    }

    /// Builds the encoder (with pooler) from `seed`: N(0, 0.02) weights, zero biases.
    pub fn init(&self, device: &Device, seed: u64) -> Result<Bert> {
        self.validate()?;
        let mut init = SeededInit::new(seed);
        let d = self.d_model;
        let norm = |device: &Device| Norm::new(d, false, true, self.norm_eps, device);
        Ok(Bert {
            word: init.embedding(self.vocab_size, d, 0.02, device),
            position: init.embedding(self.max_seq_len, d, 0.02, device),
            token_type: init.embedding(self.type_vocab_size, d, 0.02, device),
            emb_norm: norm(device),
            layers: (0..self.n_layer)
                .map(|_| EncoderLayer {
                    query: init.linear(d, d, 0.02, true, device),
                    key: init.linear(d, d, 0.02, true, device),
                    value: init.linear(d, d, 0.02, true, device),
                    attn_out: init.linear(d, d, 0.02, true, device),
                    attn_norm: norm(device),
                    ff_in: init.linear(d, self.d_ff, 0.02, true, device),
                    ff_out: init.linear(self.d_ff, d, 0.02, true, device),
                    ff_norm: norm(device),
                    dropout: DropoutConfig::new(self.dropout).init(),
                    n_head: self.n_head,
                })
                .collect(),
            pooler: Some(init.linear(d, d, 0.02, true, device)),
            dropout: DropoutConfig::new(self.dropout).init(),
            config: self.clone(),
        })
    }
}

/// A padded batch for BERT: ids, segment ids and which positions are real tokens.
#[derive(Debug, Clone)]
pub struct BertBatch {
    /// `[batch, seq]` token ids, right-padded.
    pub ids: Tensor<2, Int>,
    /// `[batch, seq]` segment ids (0 for single sentences).
    pub token_types: Tensor<2, Int>,
    /// `[batch, seq]`, true on real tokens.
    pub real: Tensor<2, Bool>,
}

impl BertBatch {
    /// Right-pads `seqs` (each already wrapped in `[CLS] … [SEP]`) with `pad_id`.
    pub fn new(seqs: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if seqs.is_empty() || len == 0 {
            return Err(Error::Shape("an empty batch".into()));
        }
        let batch = seqs.len();
        let mut ids = Vec::with_capacity(batch * len);
        let mut real = Vec::with_capacity(batch * len);
        for seq in seqs {
            ids.extend(seq.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad_id as i64, len - seq.len()));
            real.extend((0..len).map(|i| i < seq.len()));
        }
        Ok(Self {
            ids: Tensor::from_ints(TensorData::new(ids, [batch, len]), device),
            token_types: Tensor::zeros([batch, len], device),
            real: Tensor::from_data(TensorData::new(real, [batch, len]), device),
        })
    }
}

/// One post-norm encoder layer: `x = norm(x + attention(x)); x = norm(x + ff(x))`.
///
/// Separate query/key/value matrices, as BERT checkpoints have them (GPT's fused `c_attn`
/// layout is GPT-2's, not BERT's).
#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) attn_out: Linear,
    pub(crate) attn_norm: Norm,
    pub(crate) ff_in: Linear,
    pub(crate) ff_out: Linear,
    pub(crate) ff_norm: Norm,
    pub(crate) dropout: Dropout,
    #[module(skip)]
    pub(crate) n_head: usize,
}

impl EncoderLayer {
    fn forward(&self, x: Tensor<3>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [batch, seq, d] = x.dims();
        let head_dim = d / self.n_head;
        let heads = |t: Tensor<3>| {
            t.reshape([batch, seq, self.n_head, head_dim])
                .swap_dims(1, 2)
        };
        let q = heads(self.query.forward(x.clone()));
        let k = heads(self.key.forward(x.clone()));
        let v = heads(self.value.forward(x.clone()));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let context = attention(q, k, v, mask, None, options)
            .swap_dims(1, 2)
            .reshape([batch, seq, d]);
        let attended = self.dropout.forward(self.attn_out.forward(context));
        let x = self.attn_norm.forward(x + attended);
        let h = self.ff_out.forward(gelu(self.ff_in.forward(x.clone())));
        self.ff_norm.forward(x + self.dropout.forward(h))
    }
}

/// The BERT encoder with its pooler (`tanh(dense(h[CLS]))`).
#[derive(Module, Debug)]
pub struct Bert {
    pub(crate) word: Embedding,
    pub(crate) position: Embedding,
    pub(crate) token_type: Embedding,
    pub(crate) emb_norm: Norm,
    pub(crate) layers: Vec<EncoderLayer>,
    pub(crate) pooler: Option<Linear>,
    pub(crate) dropout: Dropout,
    #[module(skip)]
    pub(crate) config: BertConfig,
}

impl Bert {
    /// The shape this model was built with.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Last hidden states `[batch, seq, d_model]`; padding is masked out of attention.
    pub fn forward(&self, batch: &BertBatch) -> Result<Tensor<3>> {
        let [b, seq] = batch.ids.dims();
        if seq > self.config.max_seq_len {
            return Err(Error::SequenceLength {
                len: seq,
                max: self.config.max_seq_len,
            });
        }
        let device = batch.ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([b, seq]);
        let x = self.word.forward(batch.ids.clone())
            + self.position.forward(positions)
            + self.token_type.forward(batch.token_types.clone());
        let mut x = self.dropout.forward(self.emb_norm.forward(x));
        let heads = self.config.n_head;
        let mask = batch
            .real
            .clone()
            .bool_not()
            .reshape([b, 1, 1, seq])
            .expand([b, heads, seq, seq]);
        for layer in &self.layers {
            x = layer.forward(x, Some(mask.clone()));
        }
        Ok(x)
    }

    /// `tanh(dense(h[CLS]))` `[batch, d_model]`, BERT's sentence summary for classification.
    pub fn pool(&self, hidden: Tensor<3>) -> Result<Tensor<2>> {
        let Some(pooler) = &self.pooler else {
            return Err(Error::Shape("this BERT has no pooler".into()));
        };
        let [b, _, d] = hidden.dims();
        let cls = hidden.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        Ok(pooler.forward(cls).tanh())
    }
}

/// Sentence embeddings as sentence-transformers' `Pooling(mean)` + `Normalize` compute them:
/// the mean of the hidden states of real tokens (never padding), then L2-normalised.
pub fn mean_pool(hidden: Tensor<3>, real: Tensor<2, Bool>, normalize: bool) -> Tensor<2> {
    let weights = real.float().unsqueeze_dim::<3>(2);
    let summed = (hidden * weights.clone()).sum_dim(1).squeeze_dim::<2>(1);
    let counts = weights.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
    let mean = summed / counts;
    if !normalize {
        return mean;
    }
    let norm = mean.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    mean / norm
}

/// The masked-LM head: `decoder(norm(gelu(dense(h))))` with the decoder tied to the word
/// embedding plus a bias of its own (Hugging Face's `cls.predictions`).
#[derive(Module, Debug)]
pub struct MlmHead {
    pub(crate) dense: Linear,
    pub(crate) norm: Norm,
    pub(crate) bias: Param<Tensor<1>>,
}

/// BERT with its masked-LM head.
#[derive(Module, Debug)]
pub struct BertForMaskedLm {
    /// The encoder.
    pub bert: Bert,
    pub(crate) head: MlmHead,
}

impl BertForMaskedLm {
    /// Wraps `bert` with a fresh head drawn from `seed`.
    pub fn new(bert: Bert, seed: u64) -> Self {
        let device = bert.word.weight.device();
        let config = bert.config.clone();
        let mut init = SeededInit::new(seed);
        let head = MlmHead {
            dense: init.linear(config.d_model, config.d_model, 0.02, true, &device),
            norm: Norm::new(config.d_model, false, true, config.norm_eps, &device),
            bias: Param::from_tensor(Tensor::zeros([config.vocab_size], &device)),
        };
        Self { bert, head }
    }

    /// Logits `[batch, seq, vocab]`.
    pub fn forward(&self, batch: &BertBatch) -> Result<Tensor<3>> {
        let hidden = self.bert.forward(batch)?;
        let h = self
            .head
            .norm
            .forward(gelu(self.head.dense.forward(hidden)));
        let [b, s, d] = h.dims();
        let word = self.bert.word.weight.val();
        let vocab = word.dims()[0];
        let logits =
            h.reshape([b * s, d]).matmul(word.transpose()) + self.head.bias.val().unsqueeze();
        Ok(logits.reshape([b, s, vocab]))
    }

    /// Mean cross-entropy over the masked positions of `masked` (see [`mask_tokens`]).
    pub fn loss(&self, masked: &MaskedBatch, pad_id: u32, device: &Device) -> Result<Tensor<1>> {
        let batch = BertBatch::new(&masked.inputs, pad_id, device)?;
        let logits = self.forward(&batch)?;
        Ok(masked_cross_entropy(logits, &masked.labels, device))
    }
}

/// Mean cross-entropy of `logits` `[batch, seq, classes]` against `labels` (per row, right
/// padded with [`IGNORE`]); positions labelled [`IGNORE`] do not count.
pub fn masked_cross_entropy(logits: Tensor<3>, labels: &[Vec<i64>], device: &Device) -> Tensor<1> {
    let [b, s, _] = logits.dims();
    let mut flat = Vec::with_capacity(b * s);
    for row in labels.iter().take(b) {
        flat.extend(row.iter().take(s).copied());
        flat.extend(std::iter::repeat_n(IGNORE, s.saturating_sub(row.len())));
    }
    flat.resize(b * s, IGNORE);
    let counted = flat.iter().filter(|&&l| l != IGNORE).count().max(1);
    let weights: Vec<f32> = flat
        .iter()
        .map(|&l| f32::from(u8::from(l != IGNORE)))
        .collect();
    let index: Vec<i64> = flat.iter().map(|&l| l.max(0)).collect();
    let index = Tensor::<3, Int>::from_ints(TensorData::new(index, [b, s, 1]), device);
    let weights = Tensor::<3>::from_data(TensorData::new(weights, [b, s, 1]), device);
    let picked = log_softmax(logits, 2).gather(2, index);
    (picked * weights).sum().neg() / counted as f32
}

/// The label of a position that is not predicted (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// Inputs and labels of a masked-LM batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedBatch {
    /// Token ids after masking.
    pub inputs: Vec<Vec<u32>>,
    /// The original id where a token was selected, [`IGNORE`] elsewhere.
    pub labels: Vec<Vec<i64>>,
}

/// What [`mask_tokens`] may do.
#[derive(Debug, Clone)]
pub struct MaskingRule {
    /// Chance that a token is selected for prediction (BERT's 0.15).
    pub probability: f64,
    /// `[MASK]`'s id.
    pub mask_id: u32,
    /// Random replacements are drawn from `0..vocab_size` (specials excluded).
    pub vocab_size: u32,
    /// Ids never selected nor drawn: `[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`.
    pub special: Vec<u32>,
}

/// BERT's masking: each non-special token is selected with `probability`; a selected token
/// becomes `[MASK]` 80 % of the time, a random non-special token 10 %, and stays 10 %
/// (Devlin et al., 2019, §3.1). The same `seed` gives the same batch.
pub fn mask_tokens(seqs: &[Vec<u32>], rule: &MaskingRule, seed: u64) -> MaskedBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let candidates: Vec<u32> = (0..rule.vocab_size)
        .filter(|t| !rule.special.contains(t))
        .collect();
    let mut out = MaskedBatch {
        inputs: Vec::with_capacity(seqs.len()),
        labels: Vec::with_capacity(seqs.len()),
    };
    for seq in seqs {
        let mut inputs = seq.clone();
        let mut labels = vec![IGNORE; seq.len()];
        for (i, &token) in seq.iter().enumerate() {
            if rule.special.contains(&token) || unit() >= rule.probability {
                continue;
            }
            labels[i] = token as i64;
            let action = unit();
            if action < 0.8 {
                inputs[i] = rule.mask_id;
            } else if action < 0.9 && !candidates.is_empty() {
                let pick = (unit() * candidates.len() as f64) as usize;
                inputs[i] = candidates[pick.min(candidates.len() - 1)];
            }
        }
        out.inputs.push(inputs);
        out.labels.push(labels);
    }
    out
}

/// BERT with a classifier on the pooled `[CLS]` state (Hugging Face's
/// `BertForSequenceClassification`).
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    /// The encoder (with its pooler).
    pub bert: Bert,
    pub(crate) classifier: Linear,
}

impl SequenceClassifier {
    /// Wraps `bert` with a fresh `d_model → classes` classifier drawn from `seed`.
    pub fn new(bert: Bert, classes: usize, seed: u64) -> Result<Self> {
        if bert.pooler.is_none() {
            return Err(Error::Shape(
                "sequence classification needs BERT's pooler".into(),
            ));
        }
        if classes == 0 {
            return Err(Error::config("classes", "must be at least 1"));
        }
        let device = bert.word.weight.device();
        let d = bert.config.d_model;
        let classifier = SeededInit::new(seed).linear(d, classes, 0.02, true, &device);
        Ok(Self { bert, classifier })
    }

    /// Class logits `[batch, classes]`.
    pub fn forward(&self, batch: &BertBatch) -> Result<Tensor<2>> {
        let pooled = self.bert.pool(self.bert.forward(batch)?)?;
        Ok(self.classifier.forward(self.bert.dropout.forward(pooled)))
    }
}

/// BERT with a classifier on every token (NER; Hugging Face's `BertForTokenClassification`).
#[derive(Module, Debug)]
pub struct TokenClassifier {
    /// The encoder.
    pub bert: Bert,
    pub(crate) classifier: Linear,
}

impl TokenClassifier {
    /// Wraps `bert` with a fresh `d_model → labels` classifier drawn from `seed`.
    pub fn new(bert: Bert, labels: usize, seed: u64) -> Result<Self> {
        if labels == 0 {
            return Err(Error::config("labels", "must be at least 1"));
        }
        let device = bert.word.weight.device();
        let d = bert.config.d_model;
        let classifier = SeededInit::new(seed).linear(d, labels, 0.02, true, &device);
        Ok(Self { bert, classifier })
    }

    /// Label logits `[batch, seq, labels]`; score them with [`masked_cross_entropy`] so that
    /// padding and sub-word continuations ([`IGNORE`]) do not count.
    pub fn forward(&self, batch: &BertBatch) -> Result<Tensor<3>> {
        let hidden = self.bert.forward(batch)?;
        Ok(self.classifier.forward(self.bert.dropout.forward(hidden)))
    }
}

/// How a folder's sentence embeddings are pooled, as sentence-transformers reads it from
/// `modules.json` (a `Pooling` module's `config.json`, a `Normalize` module) and
/// `sentence_bert_config.json` (`max_seq_length`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentencePooling {
    /// Mean over real tokens (`pooling_mode_mean_tokens`); else the `[CLS]` state.
    pub mean: bool,
    /// L2-normalise the result (a `Normalize` module).
    pub normalize: bool,
    /// Tokens per sentence, `[CLS]` and `[SEP]` included; longer input is truncated.
    pub max_seq_len: Option<usize>,
}

impl SentencePooling {
    /// The pooling of folder `dir`; without `modules.json`, sentence-transformers' default
    /// for a bare transformer (mean pooling, no normalisation).
    pub fn of_folder(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| -> Result<Option<serde_json::Value>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Json {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })
        };
        let max_seq_len = read("sentence_bert_config.json")?
            .and_then(|c| c.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .map(|n| n as usize);
        let Some(modules) = read("modules.json")? else {
            return Ok(Self {
                mean: true,
                normalize: false,
                max_seq_len,
            });
        };
        let modules = modules.as_array().cloned().unwrap_or_default();
        let kind = |m: &serde_json::Value| {
            m.get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string()
        };
        let normalize = modules.iter().any(|m| kind(m).ends_with(".Normalize"));
        let mut mean = true;
        if let Some(pooling) = modules.iter().find(|m| kind(m).ends_with(".Pooling")) {
            let path = pooling.get("path").and_then(|p| p.as_str()).unwrap_or("");
            let config = read(&format!("{path}/config.json"))?.unwrap_or_default();
            let on = |key: &str| {
                config
                    .get(key)
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            };
            mean = on("pooling_mode_mean_tokens");
            let cls = on("pooling_mode_cls_token");
            if mean == cls {
                return Err(Error::Json {
                    origin: dir.join(path).join("config.json").display().to_string(),
                    message: "only mean or [CLS] pooling (exactly one) is supported".into(),
                });
            }
        }
        Ok(Self {
            mean,
            normalize,
            max_seq_len,
        })
    }

    /// Sentence embeddings `[batch, d_model]` of a batch.
    pub fn embed(&self, bert: &Bert, batch: &BertBatch) -> Result<Tensor<2>> {
        let hidden = bert.forward(batch)?;
        if self.mean {
            return Ok(mean_pool(hidden, batch.real.clone(), self.normalize));
        }
        let [b, _, d] = hidden.dims();
        let cls = hidden.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        if !self.normalize {
            return Ok(cls);
        }
        let norm = cls.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        Ok(cls / norm)
    }
}
