//! Offline generation through the scheduler: a batch of prompts is a batch of requests, decoded
//! by the same continuous-batching loop the server runs ([`Engine`]), with tokens streamed to a
//! callback as they are chosen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use crate::decoder::{Finish, GenerateOptions, Generation};
use crate::paged::{Batched, KvStore};
use crate::scheduler::{Engine, EngineOptions, Event, Events, Job, Metrics, Scheduler};
use crate::{Error, Result};

/// One request's events, tagged with its prompt's index, into the caller's one channel.
struct Tagged {
    row: usize,
    tx: mpsc::Sender<(usize, Event)>,
    /// Set when the caller's callback asked to stop the row: the next event is refused, and
    /// the scheduler drops the request and frees its blocks.
    stopped: Arc<AtomicBool>,
}

impl Events for Tagged {
    fn send(&self, event: Event) -> bool {
        !self.stopped.load(Ordering::Relaxed) && self.tx.send((self.row, event)).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// Generates a continuation of every prompt on `model` through the scheduler, all prompts
/// admitted at once and prefilled in one step. `on_token(row, token)` is called as each token
/// is chosen; returning `false` stops that row ([`Finish::Cancelled`]). Prompt `i` samples
/// with seed `options.sampling.seed + i`, so a single prompt draws exactly what
/// [`generate`](crate::generate) draws for it, and equal prompts draw differently. A
/// generation ends at a stop token, at `max_new_tokens`, or at the model's context.
pub fn generate_batch<M>(
    model: &Arc<M>,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>>
where
    M: Batched + Send + Sync + 'static,
    M::Store: Send,
{
    options.sampling.validate()?;
    if let Some(empty) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::request(format!("prompt {empty} has no tokens")));
    }
    let mut out = Generation::none(prompts.len());
    if options.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(out);
    }
    let max_len = model.config().max_seq_len;
    if let Some(long) = prompts.iter().position(|p| p.len() >= max_len) {
        return Err(Error::request(format!(
            "prompt {long} has {} tokens; the model's context is {max_len}",
            prompts[long].len()
        )));
    }
    // A pool that holds every request whole: all run at once, as one batch.
    let engine_options = EngineOptions::default();
    let block_tokens = engine_options.block_tokens;
    let news: Vec<usize> = prompts
        .iter()
        .map(|p| options.max_new_tokens.min(max_len - p.len()))
        .collect();
    let blocks: usize = prompts
        .iter()
        .zip(&news)
        .map(|(p, n)| (p.len() + n).div_ceil(block_tokens))
        .sum();
    let block_bytes = model.store(block_tokens).block_bytes();
    let engine_options = EngineOptions {
        max_batch: prompts.len(),
        max_queue: prompts.len(),
        kv_cache_bytes: blocks.max(1) * block_bytes,
        prefill_chunk: prompts.iter().map(Vec::len).sum(),
        scheduler: Scheduler::Continuous,
        prefix_caching: false,
        ..engine_options
    };
    let (engine, thread) =
        Engine::start(model.clone(), engine_options, Arc::new(Metrics::default()));
    let (tx, rx) = mpsc::channel();
    let stopped: Vec<Arc<AtomicBool>> = prompts.iter().map(|_| Arc::default()).collect();
    for (row, (prompt, &new)) in prompts.iter().zip(&news).enumerate() {
        let mut sampling = options.sampling.clone();
        sampling.seed = sampling.seed.wrapping_add(row as u64);
        let job = Job {
            prompt: prompt.clone(),
            max_new_tokens: new,
            sampling,
            stop_tokens: options.stop_tokens.clone(),
            prompt_logprobs: false,
            forks: Vec::new(),
            events: Box::new(Tagged {
                row,
                tx: tx.clone(),
                stopped: stopped[row].clone(),
            }),
        };
        engine
            .submit(job)
            .map_err(|e| Error::request(format!("prompt {row}: {e}")))?;
    }
    drop(tx);
    // The scheduler stops once every request has ended and no handle can submit more.
    drop(engine);
    // A row's events after its callback stopped it (its `Done` may already be on the way)
    // are not its own any more.
    let mut ended = vec![false; prompts.len()];
    let mut open = prompts.len();
    while open > 0 {
        let Ok((row, event)) = rx.recv() else {
            break;
        };
        if ended[row] {
            continue;
        }
        let generation = &mut out[row];
        match event {
            Event::Token { id, logprob } => {
                generation.tokens.push(id);
                generation.logprobs.push(logprob);
                if !on_token(row, id) {
                    generation.finish = Finish::Cancelled;
                    stopped[row].store(true, Ordering::Relaxed);
                    ended[row] = true;
                    open -= 1;
                }
            }
            Event::Done(finish) => {
                generation.finish = finish;
                ended[row] = true;
                open -= 1;
            }
            Event::Failed(message) => return Err(Error::Request(message)),
            Event::PromptLogprobs(_) | Event::Cached(_) => {}
        }
    }
    thread
        .join()
        .map_err(|_| Error::request("the scheduler thread panicked"))?;
    Ok(out)
}
