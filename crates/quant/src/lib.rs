//! Weight quantization for lmforge GPTs: INT8 per output channel (the default), INT8 per
//! tensor, GGML-style Q8_0 and Q4_0 blocks; quantized checkpoints that `lmforge generate`,
//! `eval` and `serve` load like any other; and a CPU decoding engine whose kernels multiply by
//! the integer codes directly, never widening a whole matrix to f32.
//!
//! - [`Scheme`] and [`QMatrix`]: codes and scales, `|x − dequantized| ≤ scale / 2` per value;
//! - [`quantize_checkpoint`]: a checkpoint folder in, a quantized folder and a [`QuantizeReport`]
//!   out (sizes, per-tensor errors);
//! - [`load_gpt`]: any checkpoint, quantized or not, as a burn [`Gpt`](lmforge_model::Gpt)
//!   (quantized weights dequantized, so evaluation measures exactly what quantizing cost);
//! - [`CpuGpt`]: the decoding engine, an [`lmforge_model::generate::Decoder`] over f32 or
//!   quantized weights ([`kernel::matmul`]).
//!
//! The seed talk's example, five values to INT8 and back:
//!
//! ```
//! use lmforge_quant::{QMatrix, Scheme};
//!
//! let x = [0.34f32, 3.75, 5.64, 1.12, 2.7];
//! let q = QMatrix::quantize("example", &x, 1, 5, Scheme::Int8)?;
//! let codes: Vec<i8> = (0..5).map(|c| q.code(0, c)).collect();
//! assert_eq!(codes, [8, 84, 127, 25, 61]); // scale = 5.64 / 127
//! let back = q.dequantize();
//! assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() <= q.scales()[0] / 2.0));
//! # Ok::<(), lmforge_quant::Error>(())
//! ```

use std::path::{Path, PathBuf};

pub mod checkpoint;
mod engine;
pub mod kernel;
mod matrix;
mod paged;
mod scheme;

pub use checkpoint::{QuantizeOptions, QuantizeReport, load_gpt, quantize_checkpoint};
pub use engine::{Chunk, CpuCache, CpuGpt};
pub use matrix::{ErrorStats, Matrix, PANEL, QMatrix};
pub use paged::{BLOCK_TOKENS, KvPool, SeqKv};
pub use scheme::{BLOCK, Scheme};

/// What can go wrong quantizing or loading quantized weights.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--scheme` named no scheme.
    #[error("unknown quantization scheme `{0}`: expected int8, int8-tensor, q8_0 or q4_0")]
    UnknownScheme(String),
    /// A tensor's values, codes or scales do not fit its shape.
    #[error("tensor `{tensor}`: {message}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// What does not fit.
        message: String,
    },
    /// NaN or ±inf in a weight: no code represents it.
    #[error(
        "tensor `{tensor}` has {value} at row {row}, column {col}: only finite weights quantize"
    )]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// Row (output channel) of the value.
        row: usize,
        /// Column of the value.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A block whose scale is beyond f16's range (65504).
    #[error(
        "tensor `{tensor}` row {row}: a block with |x| up to {amax} needs a scale beyond f16's range; use int8 or int8-tensor"
    )]
    ScaleOverflow {
        /// The tensor.
        tensor: String,
        /// The row.
        row: usize,
        /// The block's largest magnitude.
        amax: f32,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A quantized checkpoint that is not what it should be.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Loading or running the model.
    #[error(transparent)]
    Model(#[from] lmforge_model::Error),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Greedy decoding speed of `model` at batch 1: `tokens` new tokens after `prompt` (no stop
/// token), prefill included as `lmforge generate` counts it; the best of `runs` runs after
/// one warm-up, in tokens per second.
pub fn tokens_per_second<D: lmforge_model::generate::Decoder>(
    model: &D,
    prompt: &[u32],
    tokens: usize,
    runs: usize,
) -> lmforge_model::Result<f64> {
    use lmforge_model::generate::{GenerateOptions, Sampling, generate_with};
    let tokens = tokens.min(model.max_seq_len().saturating_sub(prompt.len()));
    let options = GenerateOptions {
        max_new_tokens: tokens,
        sampling: Sampling::greedy(),
        stop_tokens: Vec::new(),
    };
    let prompts = [prompt.to_vec()];
    generate_with(
        model,
        &prompts,
        &GenerateOptions {
            max_new_tokens: tokens.min(8),
            ..options.clone()
        },
        |_, _| true,
    )?;
    let mut best = 0f64;
    for _ in 0..runs.max(1) {
        let started = std::time::Instant::now();
        let out = generate_with(model, &prompts, &options, |_, _| true)?;
        let rate = out[0].tokens.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        best = best.max(rate);
    }
    Ok(best)
}
