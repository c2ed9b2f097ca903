//! The decoding engine of lmforge GPTs: where a token is produced.
//!
//! - [`Decoder`]: the interface every engine implements (prefill prompts, decode one token per
//!   sequence, select or fork cache rows), and [`generate`] over it (greedy and sampled, a batch
//!   at once, streaming); [`beam_search`] over it (rows forked, blocks shared);
//! - [`sampling`]: the choice of one token from one row of logits, in Hugging Face's order;
//! - [`paged`]: the KV cache as a pool of fixed-size blocks (vLLM's PagedAttention layout) with
//!   reference-counted blocks, copy-on-write forks and a prefix cache hashed by block content;
//! - [`CpuGpt`]: the CPU engine, one decoding step as host loops over `lmforge-quant`'s
//!   kernels (f32 or quantized weights, never widened to f32 matrices);
//! - [`DeviceGpt`]: the device engine, the burn model on any device (flex, wgpu, CUDA) over a
//!   paged pool of device tensors ([`DeviceKv`]) read by gathers;
//! - [`BurnDecoder`]: the burn model with its dense cache on any device (the reference);
//! - [`scheduler`]: continuous batching over a fixed pool — chunked prefill, admission by
//!   blocks, prefix reuse, cancellation — with events to whoever submitted (the HTTP server);
//!   [`generate_batch`]: a batch of prompts as a batch of its requests (`lmforge generate`).
//!
//! It knows no tokenizer and no HTTP (`cargo xtask test` checks its dependency tree): token
//! ids in, token ids and log-probabilities out.
//!
//! ```
//! use burn::tensor::Device;
//! use lmforge_infer::{CpuGpt, GenerateOptions, Sampling, generate};
//! use lmforge_model::GptConfig;
//!
//! let model = GptConfig { n_layer: 1, d_model: 32, ..GptConfig::tiny(64) }.init(&Device::flex(), 0)?;
//! let engine = CpuGpt::from_gpt(&model)?;
//! let options = GenerateOptions { max_new_tokens: 5, sampling: Sampling::greedy(), stop_tokens: vec![] };
//! let out = generate(&engine, &[vec![1, 2, 3]], &options, |_row, _token| true)?;
//! assert_eq!(out[0].tokens.len(), 5);
//! # Ok::<(), lmforge_infer::Error>(())
//! ```

pub mod beam;
mod cpu;
pub mod decoder;
mod dense;
mod device;
pub mod generation_config;
mod offline;
pub mod paged;
mod placement;
pub mod sampling;
pub mod scheduler;

use std::sync::Arc;

pub use beam::{Beam, beam_search};
pub use cpu::{CpuGpt, HostKv};
pub use decoder::{Decoder, Finish, GenerateOptions, Generation, generate};
pub use dense::BurnDecoder;
pub use device::{DeviceGpt, DeviceKv};
pub use generation_config::eos_ids;
pub use offline::generate_batch;
pub use paged::{BLOCK_TOKENS, Batched, Blocks, Chunk, KvPool, KvStore, PagedCache, SeqKv};
pub use placement::{Loaded, Placement, Precision};
pub use sampling::{Sampling, choose, exp_le0, log_sum_exp};

/// What can go wrong decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sampling or search option out of range.
    #[error("`{field}` {message}")]
    Config {
        /// The option, as a request spells it.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A request the engine cannot run: no prompts, an empty prompt, a row that is not in the
    /// cache, a cache of another model.
    #[error("{0}")]
    Request(String),
    /// A fixed-size block pool without room for a step.
    #[error("the KV cache pool has {free} free blocks of {total}; this step needs {needed}")]
    PoolFull {
        /// Blocks free (or evictable from the prefix cache).
        free: usize,
        /// Blocks in the pool.
        total: usize,
        /// Blocks the step needs.
        needed: usize,
    },
    /// A model (weights and KV cache) larger than the memory its device has free.
    #[error(
        "the model needs {} on {device} ({what}); {} is available there",
        lmforge_model::adapters::human_bytes(*needed),
        lmforge_model::adapters::human_bytes(*available)
    )]
    TooLarge {
        /// The device and its adapter.
        device: String,
        /// What was counted.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes the device has free.
        available: u64,
    },
    /// The model: a token outside the vocabulary, a sequence past the context, a device error.
    #[error(transparent)]
    Model(#[from] lmforge_model::Error),
    /// Reading a checkpoint's weights (quantized or not).
    #[error(transparent)]
    Quant(#[from] lmforge_quant::Error),
}

impl Error {
    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        Error::Config {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn request(message: impl Into<String>) -> Self {
        Error::Request(message.into())
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Greedy decoding speed of `model` at batch 1 through the scheduler (as `lmforge generate`
/// runs it): `tokens` new tokens after `prompt` (no stop token), prefill included; the best of
/// `runs` runs after one warm-up, in tokens per second.
pub fn tokens_per_second<M>(
    model: &Arc<M>,
    prompt: &[u32],
    tokens: usize,
    runs: usize,
) -> Result<f64>
where
    M: Batched + Send + Sync + 'static,
    M::Store: Send,
{
    let prompts = [prompt.to_vec()];
    best_rate(
        model.config().max_seq_len,
        prompt,
        tokens,
        runs,
        |options| generate_batch(model, &prompts, options, |_, _| true),
    )
}

/// [`tokens_per_second`] of any [`Decoder`] through the [`generate`] loop (the burn model's
/// path).
pub fn decoder_tokens_per_second<D: Decoder>(
    model: &D,
    prompt: &[u32],
    tokens: usize,
    runs: usize,
) -> Result<f64> {
    let prompts = [prompt.to_vec()];
    best_rate(model.max_seq_len(), prompt, tokens, runs, |options| {
        generate(model, &prompts, options, |_, _| true)
    })
}

fn best_rate(
    max_len: usize,
    prompt: &[u32],
    tokens: usize,
    runs: usize,
    mut run: impl FnMut(&GenerateOptions) -> Result<Vec<Generation>>,
) -> Result<f64> {
    let options = GenerateOptions {
        max_new_tokens: tokens.min(max_len.saturating_sub(prompt.len())),
        sampling: Sampling::greedy(),
        stop_tokens: Vec::new(),
    };
    run(&GenerateOptions {
        max_new_tokens: options.max_new_tokens.min(8),
        ..options.clone()
    })?;
    let mut best = 0f64;
    for _ in 0..runs.max(1) {
        let started = std::time::Instant::now();
        let out = run(&options)?;
        let rate = out[0].tokens.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        best = best.max(rate);
    }
    Ok(best)
}
