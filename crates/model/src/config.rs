//! The shape of a GPT: the serde `config.json` of a checkpoint, its presets and its checks.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a token learns where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A trained table of `max_seq_len` vectors added to the embedding (GPT-2, Megatron).
    Learned,
    /// The fixed sin/cos table of "Attention is all you need", added to the embedding.
    Sinusoidal,
    /// Rotary embedding of queries and keys (GPT-NeoX / LLaMA "rotate half" pairing).
    Rope,
    /// No position vectors: a per-head linear penalty on distance added to the attention
    /// scores (Press et al., 2022).
    Alibi,
}

/// The normalisation of each block and of the final hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// Mean and variance, weight and (with `bias`) bias.
    LayerNorm,
    /// Root mean square only, weight only.
    RmsNorm,
}

/// The feed-forward network of each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `down(gelu(up(x)))` with GPT-2's tanh approximation of GELU (`gelu_new`).
    Gelu,
    /// `down(silu(gate(x)) · up(x))` (Shazeer, 2020; LLaMA).
    Swiglu,
}

/// How RoPE's frequencies are stretched past the context a model was trained on; the names and
/// formulas of Hugging Face's `rope_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RopeScaling {
    /// Every frequency divided by `factor`: positions interpolated (Code Llama's, transformers'
    /// `linear`).
    Linear {
        /// How many times longer the context is.
        factor: f64,
    },
    /// Llama 3.1's: wavelengths beyond `original_max_position_embeddings / low_freq_factor`
    /// divided by `factor`, those below `… / high_freq_factor` kept, the band between
    /// interpolated smoothly.
    Llama3 {
        /// How many times longer the context is (8 for Llama 3.1).
        factor: f64,
        /// Wavelengths past `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths under `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context the model was trained on before (8,192 for Llama 3).
        original_max_position_embeddings: usize,
    },
}

fn learned() -> Positions {
    Positions::Learned
}
fn layer_norm() -> NormKind {
    NormKind::LayerNorm
}
fn gelu() -> Activation {
    Activation::Gelu
}
fn yes() -> bool {
    true
}
fn norm_eps() -> f64 {
    1e-5
}
fn rope_theta() -> f64 {
    10_000.0
}

/// The shape of a GPT. Serialised as the `config.json` of our checkpoints; the fields added
/// after the first release default to GPT-2's choices so older files still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Token ids are `0..vocab_size`.
    pub vocab_size: usize,
    /// Longest sequence (prompt plus generation) the model accepts.
    pub max_seq_len: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `d_model`.
    pub n_head: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Hidden width of the feed-forward network; `None` is 4·`d_model` for GELU and the
    /// LLaMA rule (⅔ of 4·`d_model`, rounded up to a multiple of 64) for SwiGLU.
    #[serde(default)]
    pub d_ff: Option<usize>,
    /// Dropout on embeddings, attention output and MLP output (0 for inference).
    pub dropout: f64,
    /// Position scheme.
    #[serde(default = "learned")]
    pub positions: Positions,
    /// LayerNorm or RMSNorm.
    #[serde(default = "layer_norm")]
    pub norm: NormKind,
    /// The ε under the square root of every norm.
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    /// GELU MLP or SwiGLU.
    #[serde(default = "gelu")]
    pub activation: Activation,
    /// Biases in the linear layers and LayerNorms.
    #[serde(default = "yes")]
    pub bias: bool,
    /// The LM head is the token embedding transposed (GPT-2); else a matrix of its own.
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    /// RoPE's base wavelength.
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    /// Key/value heads, each shared by `n_head / n_kv_head` query heads: grouped-query
    /// attention (Llama 2 70B, Llama 3, Mistral), multi-query with 1; `None` is one per query
    /// head. The KV cache shrinks by the same factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    /// RoPE's frequencies stretched for a longer context; `None` leaves them `1/θ^(2i/d)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Biases on the queries, keys and values alone (Qwen2's), whatever `bias` says of the
    /// other layers; `None` follows `bias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    /// Each query attends to itself and the `w - 1` keys before it (Mistral's sliding
    /// window); `None`: to every earlier key. The caches keep every key (a ring is not
    /// written yet), so the window changes what is computed, not the memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// The fraction of each head's width RoPE rotates (GPT-NeoX's `rotary_pct`, Phi's
    /// `partial_rotary_factor`): the first `rotary_dim` of its dimensions; the rest pass
    /// unrotated. `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotary_pct: Option<f64>,
}

/// The checks GPT and BERT configs share: sizes at least 1, heads dividing the width, dropout
/// in [0, 1), ε in (0, 1).
pub(crate) fn check_common(
    sizes: &[(&'static str, usize)],
    d_model: usize,
    n_head: usize,
    dropout: f64,
    norm_eps: f64,
) -> Result<()> {
    for &(field, value) in sizes {
        if value == 0 {
            return Err(Error::config(field, "must be at least 1"));
        }
    }
    if !d_model.is_multiple_of(n_head) {
        return Err(Error::config(
            "d_model",
            format!("{d_model} is not divisible by n_head = {n_head}"),
        ));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::config(
            "dropout",
            format!("{dropout} is not in [0, 1)"),
        ));
    }
    if !(norm_eps > 0.0 && norm_eps < 1.0) {
        return Err(Error::config(
            "norm_eps",
            format!("{norm_eps} is not in (0, 1)"),
        ));
    }
    Ok(())
}

/// The presets `--config` accepts by name.
pub const PRESETS: &[&str] = &["tiny", "gpt2-small", "1.7b"];

impl GptConfig {
    /// The model of tests and of the default pipeline: 4 layers of width 128, 4 heads,
    /// 256 positions, GPT-2's architecture.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            max_seq_len: 256,
            n_layer: 4,
            n_head: 4,
            d_model: 128,
            d_ff: None,
            dropout: 0.0,
            positions: Positions::Learned,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            activation: Activation::Gelu,
            bias: true,
            tie_embeddings: true,
            rope_theta: 10_000.0,
            n_kv_head: None,
            rope_scaling: None,
            qkv_bias: None,
            sliding_window: None,
            rotary_pct: None,
        }
    }

    /// GPT-2 small (124M): 12 layers, width 768, 12 heads, 1024 positions, 50,257 tokens.
    pub fn gpt2_small() -> Self {
        Self {
            vocab_size: 50_257,
            max_seq_len: 1024,
            n_layer: 12,
            n_head: 12,
            d_model: 768,
            dropout: 0.1,
            ..Self::tiny(50_257)
        }
    }

    /// The seed talk's 1.7B GPT (Megatron-LM, MeMe-fr/es): 24 layers, width 2304, 32 heads,
    /// sequences of 2048, 50,200 tokens.
    pub fn gpt_1_7b() -> Self {
        Self {
            vocab_size: 50_200,
            max_seq_len: 2048,
            n_layer: 24,
            n_head: 32,
            d_model: 2304,
            dropout: 0.1,
            ..Self::tiny(50_200)
        }
    }

    /// A preset by name (see [`PRESETS`]); `vocab_size` replaces the preset's when given, so a
    /// preset can be paired with a tokenizer of another size.
    pub fn preset(name: &str, vocab_size: Option<usize>) -> Result<Self> {
        let mut config = match name {
            "tiny" => Self::tiny(vocab_size.unwrap_or(8192)),
            "gpt2-small" | "gpt2" => Self::gpt2_small(),
            "1.7b" => Self::gpt_1_7b(),
            other => {
                return Err(Error::UnknownPreset {
                    given: other.to_string(),
                });
            }
        };
        if let Some(vocab_size) = vocab_size {
            config.vocab_size = vocab_size;
        }
        Ok(config)
    }

    /// The feed-forward hidden width (see [`GptConfig::d_ff`]).
    pub fn ffn_hidden(&self) -> usize {
        match (self.d_ff, self.activation) {
            (Some(d_ff), _) => d_ff,
            (None, Activation::Gelu) => 4 * self.d_model,
            (None, Activation::Swiglu) => (8 * self.d_model / 3).div_ceil(64) * 64,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    /// RoPE's angular frequency of each pair `i` in `0..head_dim/2` (rotate-half pairing):
    /// `1/θ^(2i/head_dim)`, stretched by [`GptConfig::rope_scaling`]. The one definition every
    /// engine rotates with.
    pub fn rope_frequencies(&self) -> Vec<f64> {
        let hd = self.rotary_dim();
        let base = (0..hd / 2).map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / hd as f64));
        match self.rope_scaling {
            None => base.collect(),
            Some(RopeScaling::Linear { factor }) => base.map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
        }
    }

    /// The dimensions of each head that RoPE rotates (see [`GptConfig::rotary_pct`]), as
    /// GPT-NeoX counts them: `head_dim · rotary_pct`, rounded down.
    pub fn rotary_dim(&self) -> usize {
        match self.rotary_pct {
            Some(pct) => (self.head_dim() as f64 * pct) as usize,
            None => self.head_dim(),
        }
    }

    /// Whether `qkv` has a bias (see [`GptConfig::qkv_bias`]).
    pub fn has_qkv_bias(&self) -> bool {
        self.qkv_bias.unwrap_or(self.bias)
    }

    /// Key/value heads (see [`GptConfig::n_kv_head`]).
    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// Width of the keys (and of the values) of one token: `kv_heads · head_dim`.
    pub fn kv_width(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    /// Checks the fields against each other, naming the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("d_model", self.d_model),
            ("d_ff", self.ffn_hidden()),
        ];
        check_common(
            &sizes,
            self.d_model,
            self.n_head,
            self.dropout,
            self.norm_eps,
        )?;
        if let Some(pct) = self.rotary_pct
            && !(pct > 0.0
                && pct <= 1.0
                && self.rotary_dim() >= 2
                && self.rotary_dim().is_multiple_of(2))
        {
            return Err(Error::config(
                "rotary_pct",
                format!(
                    "{pct} rotates {} of each head's {} dimensions: give a fraction in (0, 1] \
                     that rotates an even number, at least 2",
                    self.rotary_dim(),
                    self.head_dim()
                ),
            ));
        }
        if self.sliding_window == Some(0) {
            return Err(Error::config("sliding_window", "must be at least 1"));
        }
        if let Some(kv) = self.n_kv_head
            && (kv == 0 || !self.n_head.is_multiple_of(kv))
        {
            return Err(Error::config(
                "n_kv_head",
                format!("{kv} does not divide n_head = {}", self.n_head),
            ));
        }
        if self.positions == Positions::Rope && !self.head_dim().is_multiple_of(2) {
            return Err(Error::config(
                "n_head",
                format!(
                    "RoPE needs an even head width, d_model / n_head = {}",
                    self.head_dim()
                ),
            ));
        }
        if self.positions == Positions::Sinusoidal && !self.d_model.is_multiple_of(2) {
            return Err(Error::config(
                "d_model",
                "sinusoidal positions need an even width",
            ));
        }
        match self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) if factor.is_finite() && factor >= 1.0 => {}
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) if factor.is_finite()
                && factor >= 1.0
                && low_freq_factor > 0.0
                && high_freq_factor > low_freq_factor
                && high_freq_factor.is_finite()
                && original_max_position_embeddings > 0 => {}
            Some(other) => {
                return Err(Error::config(
                    "rope_scaling",
                    format!(
                        "{other:?}: factors must be finite, the factor at least 1, \
                         high_freq_factor above low_freq_factor above 0"
                    ),
                ));
            }
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return Err(Error::config(
                "rope_theta",
                format!("{} is not above 1", self.rope_theta),
            ));
        }
        Ok(())
    }

    /// Reads a config from JSON text, then validates it; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::Json {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }
}
