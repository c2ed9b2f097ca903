//! The [`Decoder`] interface every engine implements, and [`generate`] over it: a batch of
//! prompts decoded together, sequences leaving the batch as they finish (their cache rows are
//! dropped, so the others do not pay for them), tokens streamed through a callback.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::Result;
use crate::sampling::{Sampling, choose};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// It produced a stop token (included in its tokens).
    Stop,
    /// It reached `max_new_tokens` or the model's context.
    Length,
    /// The token callback asked to stop it.
    Cancelled,
}

/// One sequence's generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The new tokens (the prompt excluded).
    pub tokens: Vec<u32>,
    /// The model's log-probability of each new token (before sampling's reshaping).
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish: Finish,
}

impl Generation {
    /// `n` generations with no token yet (what a request with no room to grow ends as).
    pub(crate) fn none(n: usize) -> Vec<Generation> {
        (0..n)
            .map(|_| Generation {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                finish: Finish::Length,
            })
            .collect()
    }
}

/// What [`generate`] does.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// At most this many new tokens per sequence (fewer where the context ends first).
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// Tokens that end a sequence (`<|endoftext|>`).
    pub stop_tokens: Vec<u32>,
}

/// What [`generate`] and [`beam_search`](crate::beam_search) drive: a model that prefills a
/// batch of prompts into a cache and then appends one token per sequence, handing back each
/// sequence's next-token logits on the host. Every [`Batched`](crate::Batched) engine over a
/// paged pool is one ([`CpuGpt`](crate::CpuGpt)); the burn model with its dense cache is
/// another ([`BurnDecoder`](crate::BurnDecoder)).
pub trait Decoder {
    /// The keys and values of the sequences being decoded.
    type Cache;

    /// The longest sequence (prompt + generation) the model takes.
    fn max_seq_len(&self) -> usize;

    /// Runs the prompts (each at least one token) and returns the cache with each prompt's
    /// next-token logits, one row of `vocab` values per prompt.
    fn prefill(&self, prompts: &[Vec<u32>]) -> Result<(Self::Cache, Vec<Vec<f32>>)>;

    /// Appends `tokens[i]` to sequence `i` of the cache and returns the next logits.
    fn decode(&self, cache: &mut Self::Cache, tokens: &[u32]) -> Result<Vec<Vec<f32>>>;

    /// The cache of sequences `rows`, in that order: a row left out is dropped (a finished
    /// sequence), a row named twice is forked (beam search, `n` samples of one prompt) — the
    /// copies continue independently from the same keys and values.
    fn select(&self, cache: Self::Cache, rows: &[usize]) -> Result<Self::Cache>;
}

/// Generates a continuation of every prompt. `on_token(row, token)` is called as each token
/// is chosen (streaming); returning `false` stops that row.
pub fn generate<D: Decoder>(
    model: &D,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    options.sampling.validate()?;
    let max_len = model.max_seq_len();
    let mut out = Generation::none(prompts.len());
    if options.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.sampling.seed);
    let (mut cache, mut rows) = model.prefill(prompts)?;
    // Rows of the cache, by prompt index.
    let mut live: Vec<usize> = (0..prompts.len()).collect();
    loop {
        let mut next = Vec::with_capacity(live.len());
        let mut keep = Vec::with_capacity(live.len());
        for (row, (&prompt, logits)) in live.iter().zip(rows).enumerate() {
            let seen = prompts[prompt].iter().chain(&out[prompt].tokens);
            let (token, logprob) = choose(logits, seen, &options.sampling, &mut rng);
            let generation = &mut out[prompt];
            generation.tokens.push(token);
            generation.logprobs.push(logprob);
            let len = prompts[prompt].len() + generation.tokens.len();
            if !on_token(prompt, token) {
                generation.finish = Finish::Cancelled;
            } else if options.stop_tokens.contains(&token) {
                generation.finish = Finish::Stop;
            } else if generation.tokens.len() >= options.max_new_tokens || len >= max_len {
                generation.finish = Finish::Length;
            } else {
                keep.push(row);
                next.push(token);
            }
        }
        if keep.is_empty() {
            return Ok(out);
        }
        if keep.len() < live.len() {
            cache = model.select(cache, &keep)?;
            live = keep.iter().map(|&r| live[r]).collect();
        }
        rows = model.decode(&mut cache, &next)?;
    }
}
