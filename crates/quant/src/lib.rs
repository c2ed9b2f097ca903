//! Weight quantization for lmforge GPTs: INT8 per output channel (the default), INT8 per
//! tensor, GGML-style Q8_0 and Q4_0 blocks; quantized checkpoints that `lmforge generate`,
//! `eval` and `serve` load like any other; and CPU kernels that multiply by the integer codes
//! directly, never widening a whole matrix to f32 (the decoding engine that runs them is
//! `lmforge-infer`'s `CpuGpt`).
//!
//! - [`Scheme`] and [`QMatrix`]: codes and scales, `|x − dequantized| ≤ scale / 2` per value;
//! - [`quantize_checkpoint`]: a checkpoint folder in, a quantized folder and a [`QuantizeReport`]
//!   out (sizes, per-tensor errors);
//! - [`load_gpt`]: any checkpoint, quantized or not, as a burn [`Gpt`](lmforge_model::Gpt)
//!   (quantized weights dequantized, so evaluation measures exactly what quantizing cost);
//! - [`Matrix`] and [`kernel::matmul`]: a weight as f32 panels or codes, and `x · Wᵀ` over
//!   either, what a host decoding loop multiplies by.
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
pub mod kernel;
mod matrix;
mod scheme;

pub use checkpoint::{QuantizeOptions, QuantizeReport, load_gpt, quantize_checkpoint};
pub use matrix::{ErrorStats, Matrix, PANEL, QMatrix};
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
