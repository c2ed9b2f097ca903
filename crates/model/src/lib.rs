//! The language models of lmforge, written once against burn's [`Device`](burn::tensor::Device)
//! so that the same code runs on flex (pure-Rust CPU), wgpu and CUDA.
//!
//! - [`Gpt`] ([`GptConfig`]: learned, sinusoidal, RoPE or ALiBi positions; LayerNorm or
//!   RMSNorm; GELU or SwiGLU; presets `tiny`, `gpt2-small`, `1.7b`) with a [`KvCache`] for
//!   batched incremental decoding (sampling, beam search and the engines that serve it are
//!   `lmforge-infer`'s);
//! - [`Bert`] with its masked-LM, sequence- and token-classification heads and
//!   sentence-transformers pooling ([`bert`]);
//! - [`checkpoint`]s of our own and Hugging Face GPT-2/BERT folders ([`hf`]);
//! - [`accounting`]: parameters, FLOPs per token and memory per dtype;
//! - [`DeviceSpec`], which turns the `--device` flag of every computing subcommand into a device.
//!
//! Training a step:
//!
//! ```
//! use burn::tensor::{Int, Tensor};
//! use lmforge_model::{DeviceSpec, GptConfig};
//!
//! let device = "flex".parse::<DeviceSpec>()?.resolve()?.autodiff();
//! let config = GptConfig { n_layer: 1, d_model: 32, ..GptConfig::tiny(100) };
//! let model = config.init(&device, 0)?;
//! let tokens = Tensor::<2, Int>::from_ints([[1, 2, 3, 4]], &device);
//! let targets = Tensor::<2, Int>::from_ints([[2, 3, 4, 5]], &device);
//! let loss = model.loss(tokens, targets)?;
//! // An untrained model is close to uniform over the vocabulary: loss ≈ ln(100).
//! assert!((loss.clone().into_scalar::<f32>() - 100f32.ln()).abs() < 0.5);
//! let gradients = loss.backward();
//! # let _ = gradients;
//! # Ok::<(), lmforge_model::Error>(())
//! ```

pub mod accounting;
pub mod adapters;
pub mod bert;
pub mod checkpoint;
mod config;
mod device;
pub mod fused;
mod gpt;
pub mod hf;
mod init;
mod layers;
pub mod tensor_parallel;

pub use bert::{Bert, BertBatch, BertConfig};
pub use checkpoint::{
    gpt_config, load_bert, load_bert_mlm, load_gpt, save_bert, save_bert_mlm, save_gpt,
};
pub use config::{Activation, GptConfig, NormKind, PRESETS, Positions, RopeScaling};
pub use device::DeviceSpec;
pub use gpt::{Attention, Block, Gpt, KvCache, repeat_kv};
pub use layers::{Mlp, Norm, alibi_bias, alibi_slopes};

/// What can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--device` named no device this crate knows.
    #[error("unknown device `{given}`: expected flex, wgpu[:N], cuda:N or auto")]
    UnknownDevice {
        /// What the user wrote.
        given: String,
    },
    /// The device exists in name but could not be opened here.
    #[error("device {spec} is not available: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        spec: String,
        /// Why it could not be opened.
        reason: String,
    },
    /// A model configuration field is out of range or inconsistent with another.
    #[error("invalid model config: `{field}` {reason}")]
    Config {
        /// The offending field, as spelled in `config.json`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A sequence longer than the position table (or empty).
    #[error("sequence length {len} is outside 1..={max}")]
    SequenceLength {
        /// The length given.
        len: usize,
        /// The model's `max_seq_len`.
        max: usize,
    },
    /// `--config` named no preset.
    #[error("unknown model preset `{given}`: expected tiny, gpt2-small, 1.7b or a config.json")]
    UnknownPreset {
        /// What the user wrote.
        given: String,
    },
    /// A JSON file (config, checkpoint metadata) that does not parse.
    #[error("{origin}: {message}")]
    Json {
        /// The file.
        origin: String,
        /// serde's message, with line and column.
        message: String,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenId {
        /// The id.
        id: u32,
        /// The model's `vocab_size`.
        vocab: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A checkpoint file that is not what it should be.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A weight the model needs is not in the file.
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor {
        /// The weights file.
        file: std::path::PathBuf,
        /// The tensor's name in that file.
        name: String,
    },
    /// A weight of the wrong shape.
    #[error("{file}: tensor `{name}` has shape {found:?}, the model needs {expected:?}")]
    TensorShape {
        /// The weights file.
        file: std::path::PathBuf,
        /// The tensor's name in that file.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

impl Error {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

struct InDtype(burn::tensor::FloatDType);

impl burn::module::ModuleMapper for InDtype {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let mut held = burn::tensor::Tensor::from_inner(tensor.inner().cast(self.0));
        if require_grad {
            held = held.require_grad();
        }
        burn::module::Param::from_mapped_value(id, held, mapper)
    }
}

/// `model` with every float parameter stored in `dtype` (those that took gradients still do):
/// half-precision training's model and the device engine's f16 weights.
pub fn in_dtype<M: burn::module::Module>(model: M, dtype: burn::tensor::FloatDType) -> M {
    model.map(&mut InDtype(dtype))
}

/// A tensor's values on the host as f32 (logits, embeddings, weights to export), whatever the
/// backend's float type.
pub fn host_values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 above")
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
