//! Pretraining and fine-tuning as Megatron-LM does them, on burn's devices (flex, wgpu, CUDA):
//! the loop and the pieces burn 0.22 does not give.
//!
//! - [`schedule`]: Megatron's learning rate — linear warmup, cosine/linear/constant decay to a
//!   floor — as a pure function of the step;
//! - [`optim`]: AdamW (decoupled weight decay, none on biases and norm weights) over gradients
//!   keyed by parameter path, and clipping by the global norm (burn clips per tensor);
//! - [`flat`]: the parameters as one flat vector in path order, which the collectives read and
//!   write a round's window at a time ([`zero`]: the distributed optimizer over it);
//! - [`scaler`]: fp16 dynamic loss scaling (burn has none); [`step`]: one step — gradient
//!   accumulation over micro-batches, data parallelism over devices, fp16/bf16 compute on fp32
//!   master weights, overflow skipping;
//! - [`checkpoint`]: Megatron's `iter_NNNNNNN/` folders with the model, the optimizer's moments
//!   and the trainer state (consumed samples, scheduler step, loss scaler, seed), written
//!   atomically, from which a run resumes bit for bit;
//! - [`pretrain()`]: the loop — data from crates/dataset's GPT samples, evaluation, checkpoints,
//!   Ctrl-C, `metrics.jsonl` and the loss curve ([`metrics`], [`plot`]); [`gpt`] and [`bert`]
//!   hold the objectives (next token, masked LM) and classification fine-tuning.
//!
//! A step by hand:
//!
//! ```
//! use burn::tensor::Device;
//! use lmforge_dataset::GptBatch;
//! use lmforge_model::GptConfig;
//! use lmforge_train::{Alone, AdamW, AdamWConfig, LossScaler, StepConfig, gpt::gpt_loss, train_step};
//!
//! let device = Device::flex().autodiff();
//! let mut model = GptConfig { n_layer: 1, d_model: 32, ..GptConfig::tiny(50) }.init(&device, 0)?;
//! let batch = GptBatch {
//!     batch_size: 1,
//!     seq_length: 4,
//!     tokens: vec![1, 2, 3, 4],
//!     labels: vec![2, 3, 4, 5],
//!     loss_mask: vec![1.0; 4],
//!     position_ids: vec![0, 1, 2, 3],
//! };
//! let mut optimizer = AdamW::new(AdamWConfig::default());
//! let mut scaler = LossScaler::None;
//! let config = StepConfig { micro_batches: 1, clip_grad: Some(1.0), precision: Default::default() };
//! let mut losses = Vec::new();
//! for _ in 0..20 {
//!     let (updated, outcome) = train_step(model, &[device.clone()], &Alone, &mut optimizer,
//!         &mut scaler, 1e-2, &config, |m, _, _| gpt_loss(m, &batch, &device))?;
//!     model = updated;
//!     losses.push(outcome.loss);
//! }
//! assert!(losses[19] < losses[0] / 2.0, "{losses:?}");
//! # Ok::<(), lmforge_train::Error>(())
//! ```

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub mod bert;
pub mod checkpoint;
pub mod collective;
pub mod flat;
pub mod gpt;
pub mod metrics;
pub mod ner;
pub mod optim;
pub mod peak;
pub mod place;
pub mod plan;
pub mod plot;
pub mod pretrain;
pub mod scaler;
pub mod schedule;
pub mod score;
pub mod step;
pub mod tensor_parallel;
pub mod zero;

pub use collective::{Alone, Collective};
pub use optim::{AdamW, AdamWConfig, Grads, clip_by_global_norm};
pub use peak::peak_tflops;
pub use place::{Launcher, Place};
pub use pretrain::{
    Objective, PretrainConfig, PretrainReport, Resume, Splits, evaluate, evaluate_scored, pretrain,
};
pub use scaler::{LossScaler, ScalerConfig};
pub use schedule::{DecayStyle, LrSchedule};
pub use score::{Score, TokenText};
pub use step::{Precision, StepConfig, StepOutcome, train_step, train_step_with};

/// What can go wrong training, naming the file, flag or iteration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A flag or setting that cannot work.
    #[error("--{field}: {reason}")]
    Config {
        /// The flag.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A checkpoint or log that is damaged or not ours.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A NaN or infinite loss or gradient outside fp16 loss scaling.
    #[error("training diverged: {0}")]
    NonFinite(String),
    /// The ranks of a multi-process run could not work together.
    #[error("distributed run: {reason}")]
    Distributed {
        /// What went wrong.
        reason: String,
    },
    /// The model crate refused.
    #[error(transparent)]
    Model(#[from] lmforge_model::Error),
    /// The dataset crate refused.
    #[error(transparent)]
    Dataset(#[from] lmforge_dataset::Error),
}

impl Error {
    pub(crate) fn io(file: &Path, source: std::io::Error) -> Self {
        Error::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Prints a line above the bar; without a terminal (a log file, a batch job) the bar is hidden
/// and a run that asked for progress gets the line on stderr instead, as Megatron prints them.
pub(crate) fn say(bar: &ProgressBar, progress: bool, line: String) {
    if progress && bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// A bar over `len` steps starting at `position`, or a hidden one.
pub(crate) fn progress_bar(show: bool, len: u64, position: u64) -> ProgressBar {
    if !show || position >= len {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    bar.set_position(position);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
