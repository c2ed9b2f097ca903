//! The language models of lmforge, written once against burn's [`Device`](burn::tensor::Device)
//! so that the same code runs on flex (pure-Rust CPU), wgpu and CUDA.
//!
//! Two things live here so far: [`DeviceSpec`], which turns the `--device` flag of every
//! computing subcommand into a device, and [`Gpt`], the causal language model in GPT-2's shape.
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

mod device;
mod gpt;
mod init;

pub use device::DeviceSpec;
pub use gpt::{Block, Gpt, GptConfig};

/// What can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--device` named no device this crate knows.
    #[error("unknown device `{given}`: expected flex, wgpu, cuda:N or auto")]
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
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

impl Error {
    fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
