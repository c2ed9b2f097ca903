//! GPT, the causal language model, in GPT-2's shape: learned positions, pre-norm blocks,
//! causal self-attention, a GELU MLP, a final LayerNorm and an LM head tied to the embedding.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::init::SeededInit;
use crate::{Error, Result};

/// The shape of a GPT. Serialised as the `config.json` beside a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Token ids are `0..vocab_size`.
    pub vocab_size: usize,
    /// Longest sequence the learned position table covers.
    pub max_seq_len: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `d_model`.
    pub n_head: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Dropout on embeddings, attention output and MLP output (0 for inference).
    pub dropout: f64,
}

impl GptConfig {
    /// The model of tests and of the default pipeline: 4 layers of width 128, 4 heads.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            max_seq_len: 256,
            n_layer: 4,
            n_head: 4,
            d_model: 128,
            dropout: 0.0,
        }
    }

    /// Checks the fields against each other, naming the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("d_model", self.d_model),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return Err(Error::config(
                "d_model",
                format!(
                    "{} is not divisible by n_head = {}",
                    self.d_model, self.n_head
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        Ok(())
    }

    /// Parameters, counting the tied LM head once.
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        let block = 2 * (2 * d) // two LayerNorms
            + d * 3 * d + 3 * d // qkv
            + d * d + d // attention output
            + d * 4 * d + 4 * d // MLP up
            + 4 * d * d + d; // MLP down
        self.vocab_size * d + self.max_seq_len * d + self.n_layer * block + 2 * d
    }

    /// Builds the model with GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the
    /// residual projections scaled by 1/sqrt(2·n_layer). The weights are drawn on the host from
    /// `seed` (see [`SeededInit`]), so a seed gives the same model on every backend and thread.
    pub fn init(&self, device: &Device, seed: u64) -> Result<Gpt> {
        self.validate()?;
        let mut init = SeededInit::new(seed);
        let residual_std = 0.02 / ((2 * self.n_layer) as f64).sqrt();
        let d = self.d_model;
        let wte = init.embedding(self.vocab_size, d, 0.02, device);
        let wpe = init.embedding(self.max_seq_len, d, 0.01, device);
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln_1: LayerNormConfig::new(d).init(device),
                attn_qkv: init.linear(d, 3 * d, 0.02, device),
                attn_proj: init.linear(d, d, residual_std, device),
                ln_2: LayerNormConfig::new(d).init(device),
                mlp_up: init.linear(d, 4 * d, 0.02, device),
                mlp_down: init.linear(4 * d, d, residual_std, device),
                dropout: DropoutConfig::new(self.dropout).init(),
                n_head: self.n_head,
            })
            .collect();
        Ok(Gpt {
            wte,
            wpe,
            blocks,
            ln_f: LayerNormConfig::new(d).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            max_seq_len: self.max_seq_len,
        })
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    /// Queries, keys and values in one matrix, as GPT-2's `c_attn`.
    attn_qkv: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    mlp_up: Linear,
    mlp_down: Linear,
    dropout: Dropout,
    n_head: usize,
}

impl Block {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.dropout.forward(self.attention(self.ln_1.forward(x)));
        let h = gelu_approximate(self.mlp_up.forward(self.ln_2.forward(x.clone())));
        x + self.dropout.forward(self.mlp_down.forward(h))
    }

    fn attention(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq, d_model] = x.dims();
        let head_dim = d_model / self.n_head;
        let heads = |t: Tensor<3>| {
            t.reshape([batch, seq, self.n_head, head_dim])
                .swap_dims(1, 2)
        };
        let [q, k, v] = self
            .attn_qkv
            .forward(x)
            .chunk(3, 2)
            .try_into()
            .expect("chunk(3) of a dimension of size 3·d_model yields three tensors");
        // burn's fused attention: flash kernels on GPU backends, a tiled kernel on flex, and the
        // unfused softmax(QKᵀ/√d)V under autodiff, all with the causal mask applied inside.
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let context = attention(heads(q), heads(k), heads(v), None, None, options);
        let context = context.swap_dims(1, 2).reshape([batch, seq, d_model]);
        self.attn_proj.forward(context)
    }
}

/// A GPT causal language model; build one with [`GptConfig::init`].
#[derive(Module, Debug)]
pub struct Gpt {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    dropout: Dropout,
    max_seq_len: usize,
}

impl Gpt {
    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]`; position `t` sees tokens
    /// `0..=t` only.
    ///
    /// Ids must be below `vocab_size`. The tokenizer and dataset crates guarantee it where the
    /// ids are made; checking here would cost a device round trip on every forward pass.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Result<Tensor<3>> {
        let [batch, seq] = tokens.dims();
        if seq == 0 || seq > self.max_seq_len {
            return Err(Error::SequenceLength {
                len: seq,
                max: self.max_seq_len,
            });
        }
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq]);
        let mut x = self
            .dropout
            .forward(self.wte.forward(tokens) + self.wpe.forward(positions));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.ln_f.forward(x);
        let d_model = x.dims()[2];
        // The LM head is the token embedding transposed (GPT-2's tied `lm_head`).
        let vocab = self.wte.weight.val();
        let vocab_size = vocab.dims()[0];
        let logits = x.reshape([batch * seq, d_model]).matmul(vocab.transpose());
        Ok(logits.reshape([batch, seq, vocab_size]))
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
}
