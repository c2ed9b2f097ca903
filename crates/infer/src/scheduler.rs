//! The scheduler: one thread that owns a [`Batched`] engine and its KV pool and runs decoding
//! steps over whatever requests are running, as vLLM's and TGI's routers do.
//!
//! Every step holds the next token of each running sequence plus, within a token budget,
//! chunks of prompts being prefilled (so a long prompt never freezes the others). Requests
//! join between steps when the pool can hold their prompt and `max_new_tokens` (reserved at
//! admission, as TGI's token budget does: a running request can never run out of blocks, so
//! none is ever preempted or corrupted; blocks are taken as positions are written) and leave as
//! soon as they finish, disconnect or stop reading.
//!
//! With prefix caching, the full blocks of every prompt are registered in the pool's prefix
//! cache as they are computed; a request whose prompt starts with cached blocks holds them from
//! admission and prefills only the rest (its reservation counts only the blocks it adds).
//!
//! A request with [`Fork`]s (OpenAI's `n > 1`) prefills its prompt once; when the prompt is
//! computed, each fork becomes a sequence of its own that holds the request's blocks (the last
//! partly filled one is copied when first written) and draws its tokens with its own seed from
//! the same logits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::decoder::Finish;
use crate::paged::{BLOCK_TOKENS, Batched, Blocks, Chunk, KvPool, SeqKv, prefix_hashes};
use crate::sampling::{Sampling, choose, log_sum_exp};

/// What the scheduler sends back for one request, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Log-probability of each prompt token after the first (when asked for).
    PromptLogprobs(Vec<f32>),
    /// Prompt tokens whose keys and values came from the prefix cache: sent at admission, and
    /// only when there were some.
    Cached(usize),
    /// A generated token and its log-probability.
    Token {
        /// Token id.
        id: u32,
        /// Its log-probability under the model.
        logprob: f32,
    },
    /// The request is over.
    Done(Finish),
    /// The model refused the request (a message for the client).
    Failed(String),
}

/// A generation request for the scheduler.
pub struct Job {
    /// Prompt tokens (at least one).
    pub prompt: Vec<u32>,
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    /// Token choice, with its seed.
    pub sampling: Sampling,
    /// Tokens that end the generation (included in it).
    pub stop_tokens: Vec<u32>,
    /// Send [`Event::PromptLogprobs`] first.
    pub prompt_logprobs: bool,
    /// Where events go. Bounded: a full channel means the client stopped reading, and the
    /// request is dropped rather than the scheduler waiting for it.
    pub events: Box<dyn Events>,
    /// More generations after the same prompt, each forked from this one once its prompt is
    /// computed. They end with it if it fails or its client leaves before the fork.
    pub forks: Vec<Fork>,
}

/// Another generation after a [`Job`]'s prompt (with the job's limits and stop tokens).
pub struct Fork {
    /// Its token choice, with its own seed.
    pub sampling: Sampling,
    /// Where its events go ([`Event::PromptLogprobs`] only to the job's own).
    pub events: Box<dyn Events>,
}

impl std::fmt::Debug for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fork")
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("prompt", &self.prompt)
            .field("max_new_tokens", &self.max_new_tokens)
            .field("sampling", &self.sampling)
            .field("stop_tokens", &self.stop_tokens)
            .field("prompt_logprobs", &self.prompt_logprobs)
            .field("forks", &self.forks)
            .finish_non_exhaustive()
    }
}

/// The receiving end of a request's events, as the scheduler sees it: it never waits on one.
pub trait Events: Send {
    /// Hands over `event` without waiting; `false` when the receiver is gone or full (the
    /// request is then dropped).
    fn send(&self, event: Event) -> bool;

    /// Whether the receiver is gone (the request is dropped before it runs).
    fn is_closed(&self) -> bool;
}

/// A bounded standard channel (tests, benchmarks, in-process callers).
impl Events for mpsc::SyncSender<Event> {
    fn send(&self, event: Event) -> bool {
        self.try_send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        // A standard channel tells only on a send; an abandoned request is dropped at its
        // first event instead.
        false
    }
}

/// Events a request may have unread before it is dropped as a client that stopped reading.
pub const EVENT_BUFFER: usize = 1024;

/// How requests are grouped into steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Requests join and leave the running batch between any two steps.
    Continuous,
    /// A batch is formed only when none is running and runs until its last request is done
    /// (what a server without continuous batching does; kept to measure the difference).
    Static,
}

impl std::str::FromStr for Scheduler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "continuous" => Ok(Self::Continuous),
            "static" => Ok(Self::Static),
            _ => Err(format!("unknown scheduler `{s}`: continuous or static")),
        }
    }
}

/// The scheduler's limits.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Sequences decoded together at most.
    pub max_batch: usize,
    /// Requests waiting at most; more are refused (HTTP 429).
    pub max_queue: usize,
    /// Bytes of the KV block pool.
    pub kv_cache_bytes: usize,
    /// Positions per KV block.
    pub block_tokens: usize,
    /// Prompt tokens prefilled per step at most (over all prefilling requests).
    pub prefill_chunk: usize,
    /// Continuous or static batching.
    pub scheduler: Scheduler,
    /// Reuse the cached blocks of earlier prompts with the same first tokens.
    pub prefix_caching: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_queue: 256,
            kv_cache_bytes: 256 << 20,
            block_tokens: BLOCK_TOKENS,
            prefill_chunk: 256,
            scheduler: Scheduler::Continuous,
            prefix_caching: true,
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// `max_queue` requests are already waiting.
    #[error("the server has {0} requests waiting; retry later")]
    QueueFull(usize),
    /// Prompt + new tokens exceed what the model or the KV pool can ever hold.
    #[error(
        "the prompt ({prompt} tokens) plus max tokens ({new}) is {} tokens; this server takes at most {limit}",
        prompt + new
    )]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens asked for.
        new: usize,
        /// The limit.
        limit: usize,
    },
    /// The job and its forks together need more KV blocks than the pool has.
    #[error(
        "{sequences} sequences of {tokens} tokens need {need} KV blocks of the {blocks} this server has"
    )]
    TooWide {
        /// The job and its forks.
        sequences: usize,
        /// Prompt + new tokens of each.
        tokens: usize,
        /// Blocks they need (the prompt's full blocks shared).
        need: usize,
        /// Blocks in the pool.
        blocks: usize,
    },
    /// The scheduler has stopped (the server is shutting down).
    #[error("the server is shutting down")]
    Stopped,
}

/// The handlers' side of the scheduler: cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    /// Longest prompt + generation a request may have.
    pub limit: usize,
    blocks: usize,
    block_tokens: usize,
}

impl Engine {
    /// Starts the scheduler thread over `model` (shared: beam search may run on it beside).
    pub fn start<M>(
        model: Arc<M>,
        options: EngineOptions,
        metrics: Arc<Metrics>,
    ) -> (Engine, JoinHandle<()>)
    where
        M: Batched + Send + Sync + 'static,
        M::Store: Send,
    {
        let store = model.store(options.block_tokens);
        let pool = KvPool::with_bytes(store, options.block_tokens, options.kv_cache_bytes);
        let limit = model
            .config()
            .max_seq_len
            .min(pool.blocks.total() * pool.blocks.block_tokens());
        metrics
            .kv_blocks_total
            .store(pool.blocks.total(), Ordering::Relaxed);
        let (jobs, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let engine = Engine {
            jobs,
            queued: queued.clone(),
            max_queue: options.max_queue,
            limit,
            blocks: pool.blocks.total(),
            block_tokens: pool.blocks.block_tokens(),
        };
        let thread = std::thread::Builder::new()
            .name("lmforge-scheduler".into())
            .spawn(move || {
                Loop {
                    model,
                    pool,
                    options,
                    metrics,
                    queued,
                    waiting: VecDeque::new(),
                    running: Vec::new(),
                }
                .run(rx)
            })
            .expect("spawning the scheduler thread");
        (engine, thread)
    }

    /// Queues a request, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let total = job.prompt.len() + job.max_new_tokens;
        if job.prompt.is_empty() || total > self.limit {
            return Err(Rejected::TooLong {
                prompt: job.prompt.len(),
                new: job.max_new_tokens,
                limit: self.limit,
            });
        }
        let own = total.div_ceil(self.block_tokens);
        let need = own + job.forks.len() * (own - job.prompt.len() / self.block_tokens);
        if need > self.blocks {
            return Err(Rejected::TooWide {
                sequences: 1 + job.forks.len(),
                tokens: total,
                need,
                blocks: self.blocks,
            });
        }
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Rejected::QueueFull(before));
        }
        self.jobs.send(job).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Rejected::Stopped
        })
    }

    /// Requests waiting for a place in the batch.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// A request waiting for a place in the batch.
struct Waiting {
    job: Job,
    queued_at: Instant,
    /// Hashes of the prompt's full blocks (none when it may not use the prefix cache).
    hashes: Vec<u64>,
    /// Whether it looks in the prefix cache.
    cacheable: bool,
}

struct Running {
    job: Job,
    seq: SeqKv,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// Hashes of the prompt's full blocks, registered as they are computed.
    hashes: Vec<u64>,
    /// Tokens chosen so far.
    generated: Vec<u32>,
    /// The token chosen last, fed at the next step.
    last: u32,
    rng: ChaCha8Rng,
    queued_at: Instant,
    last_event: Instant,
}

impl Running {
    /// Blocks it may still take from `blocks`, its forks' included: every position up to its
    /// prompt + `max_new_tokens`, and a copy of its last block where that is shared.
    fn outstanding(&self, blocks: &Blocks) -> usize {
        let end = self.job.prompt.len() + self.job.max_new_tokens;
        blocks.needed(&self.seq, end.saturating_sub(self.seq.len()))
            + self.job.forks.len() * fork_blocks(blocks, &self.job)
    }

    /// Sequences it stands for in the batch: itself and the forks it has still to make.
    fn width(&self) -> usize {
        1 + self.job.forks.len()
    }
}

/// Blocks one fork of `job` takes: all but the prompt's full blocks (which it shares).
fn fork_blocks(blocks: &Blocks, job: &Job) -> usize {
    blocks.blocks_for(job.prompt.len() + job.max_new_tokens)
        - job.prompt.len() / blocks.block_tokens()
}

/// Sends `event` to a job's own client and to its forks' (those not forked yet).
fn tell_all(job: &Job, event: &Event) {
    send(job.events.as_ref(), event.clone());
    for fork in &job.forks {
        send(fork.events.as_ref(), event.clone());
    }
}

struct Loop<M: Batched> {
    model: Arc<M>,
    pool: KvPool<M::Store>,
    options: EngineOptions,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
}

/// How an event send went.
enum Sent {
    Ok,
    /// The client is gone or stopped reading.
    Gone,
}

fn send(events: &dyn Events, event: Event) -> Sent {
    if events.send(event) {
        Sent::Ok
    } else {
        Sent::Gone
    }
}

impl<M: Batched> Loop<M> {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut open = true;
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(job) => self.queue(job),
                    Err(_) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(job) => self.queue(job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.drop_abandoned();
            self.admit();
            self.publish();
            if self.running.is_empty() {
                if !self.waiting.is_empty() {
                    // Nothing runs and the head does not fit: cannot happen (submit checks
                    // the limit against the whole pool), but never spin on it.
                    let Waiting { job, .. } = self.waiting.pop_front().expect("not empty");
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    tell_all(&job, &Event::Failed("the KV cache cannot hold it".into()));
                }
                continue;
            }
            self.step();
            debug_assert_eq!(self.pool.blocks.audit(), Ok(()));
            self.publish();
        }
    }

    fn publish(&self) {
        let m = &self.metrics;
        m.running.store(self.running.len(), Ordering::Relaxed);
        m.kv_blocks_used
            .store(self.pool.blocks.used_blocks(), Ordering::Relaxed);
        m.kv_blocks_cached
            .store(self.pool.blocks.cached_blocks(), Ordering::Relaxed);
    }

    fn drop_abandoned(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|w| !w.job.events.is_closed());
        let gone = before - self.waiting.len();
        if gone > 0 {
            self.queued.fetch_sub(gone, Ordering::SeqCst);
            self.metrics.cancelled.fetch_add(gone, Ordering::Relaxed);
        }
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].job.events.is_closed() {
                self.finish(i, None);
            } else {
                i += 1;
            }
        }
    }

    /// Queues `job`, hashing its prompt's full blocks once (not at every step it waits).
    fn queue(&mut self, job: Job) {
        // Prompt log-probabilities need every prompt position computed: no reuse.
        let cacheable = self.options.prefix_caching && !job.prompt_logprobs;
        let bt = self.pool.blocks.block_tokens();
        let hashes = if cacheable {
            prefix_hashes(&job.prompt, bt, job.prompt.len() / bt)
        } else {
            Vec::new()
        };
        self.waiting.push_back(Waiting {
            job,
            queued_at: Instant::now(),
            hashes,
            cacheable,
        });
    }

    fn admit(&mut self) {
        if self.options.scheduler == Scheduler::Static && !self.running.is_empty() {
            return;
        }
        let bt = self.pool.blocks.block_tokens();
        while let Some(Waiting { job, hashes, .. }) = self.waiting.front() {
            let width: usize = self.running.iter().map(Running::width).sum();
            // A job wider than the batch runs alone rather than never.
            if width + 1 + job.forks.len() > self.options.max_batch && !self.running.is_empty() {
                break;
            }
            // At least the last prompt token is computed: its logits choose the first token.
            let usable = (job.prompt.len() - 1) / bt;
            let mut seq = self
                .pool
                .blocks
                .lookup(&job.prompt, &hashes[..usable.min(hashes.len())]);
            let blocks = &self.pool.blocks;
            let need = blocks.blocks_for(job.prompt.len() + job.max_new_tokens) - seq.blocks.len()
                + job.forks.len() * fork_blocks(blocks, job);
            let outstanding: usize = self.running.iter().map(|r| r.outstanding(blocks)).sum();
            if outstanding + need > blocks.free_blocks() {
                self.pool.blocks.release(&mut seq);
                break;
            }
            let Waiting {
                job,
                queued_at,
                hashes,
                cacheable,
            } = self.waiting.pop_front().expect("front exists");
            self.queued.fetch_sub(1, Ordering::SeqCst);
            let now = Instant::now();
            self.metrics.queue_time.observe(now - queued_at);
            self.metrics
                .prefix_hit_tokens
                .fetch_add(seq.len, Ordering::Relaxed);
            if cacheable {
                self.metrics
                    .prefix_query_tokens
                    .fetch_add(job.prompt.len(), Ordering::Relaxed);
            }
            if seq.len > 0 {
                // A client gone already is dropped at its next event, as any other.
                tell_all(&job, &Event::Cached(seq.len));
            }
            self.running.push(Running {
                rng: ChaCha8Rng::seed_from_u64(job.sampling.seed),
                job,
                fed: seq.len,
                seq,
                hashes,
                generated: Vec::new(),
                last: 0,
                queued_at,
                last_event: now,
            });
        }
    }

    /// Ends request `i`: its blocks go back; `finish` (if any) is sent.
    fn finish(&mut self, i: usize, finish: Option<Finish>) {
        let mut r = self.running.swap_remove(i);
        self.pool.blocks.release(&mut r.seq);
        // Before the client hears of it: whoever reads the gauges after `Done` sees its blocks
        // back.
        self.publish();
        match finish {
            Some(f) => {
                // Counted before the client hears of it, as the blocks are.
                self.metrics.completed.fetch_add(1, Ordering::Relaxed);
                self.metrics.e2e.observe(r.queued_at.elapsed());
                send(r.job.events.as_ref(), Event::Done(f));
            }
            None => {
                // Forks not made yet end with it.
                self.metrics
                    .cancelled
                    .fetch_add(r.width(), Ordering::Relaxed);
            }
        }
    }

    fn step(&mut self) {
        // Decodes first (one token each), then prompt chunks in arrival order within budget.
        let mut budget = self.options.prefill_chunk.max(1);
        let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (running index, from, to)
        for (i, r) in self.running.iter().enumerate() {
            if r.fed == r.job.prompt.len() {
                plan.push((i, 0, 1));
            }
        }
        for (i, r) in self.running.iter().enumerate() {
            let left = r.job.prompt.len() - r.fed;
            if left > 0 && budget > 0 {
                let take = left.min(budget);
                budget -= take;
                plan.push((i, r.fed, r.fed + take));
            }
        }
        if plan.is_empty() {
            return;
        }
        let mut chunks: Vec<Chunk<'_>> = Vec::with_capacity(plan.len());
        let mut by_index: Vec<Option<&mut Running>> = self.running.iter_mut().map(Some).collect();
        for &(i, from, to) in &plan {
            let r = by_index[i].take().expect("one chunk per request");
            let prefill = r.fed < r.job.prompt.len();
            let Running { job, seq, last, .. } = r;
            chunks.push(Chunk {
                seq,
                tokens: if prefill {
                    &job.prompt[from..to]
                } else {
                    std::slice::from_ref(last)
                },
                every_logit: prefill && job.prompt_logprobs,
            });
        }
        let result = self.model.forward(&mut self.pool, &mut chunks);
        drop(chunks);
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                // A request the model refuses (an id past the vocabulary): it alone fails.
                // Find the culprits by running each alone would cost steps; every request of
                // this step is told instead, and their blocks go back.
                let message = e.to_string();
                tracing::error!(error = %message, "decoding step failed");
                let mut indices: Vec<usize> = plan.iter().map(|p| p.0).collect();
                indices.sort_unstable_by_key(|&i| std::cmp::Reverse(i));
                for i in indices {
                    tell_all(&self.running[i].job, &Event::Failed(message.clone()));
                    self.finish(i, None);
                }
                return;
            }
        };
        let vocab = self.model.config().vocab_size;
        let max_seq_len = self.model.config().max_seq_len;
        let mut finished: Vec<(usize, Option<Finish>)> = Vec::new();
        // Forks made at this step, with how their first token ended them (if it did).
        let mut forked: Vec<(Running, Option<Option<Finish>>)> = Vec::new();
        let now = Instant::now();
        for (&(i, from, to), rows) in plan.iter().zip(logits) {
            let r = &mut self.running[i];
            let prefill = r.fed < r.job.prompt.len();
            let mut last_row = &rows[..];
            if prefill {
                if r.job.prompt_logprobs {
                    let lp = prompt_logprobs(&rows, vocab, &r.job.prompt, from, to);
                    if matches!(
                        send(r.job.events.as_ref(), Event::PromptLogprobs(lp)),
                        Sent::Gone
                    ) {
                        finished.push((i, None));
                        continue;
                    }
                    last_row = &rows[rows.len() - vocab..];
                }
                r.fed = to;
                // Full prompt blocks now computed go into the prefix cache.
                let bt = self.pool.blocks.block_tokens();
                for b in from / bt..(to / bt).min(r.hashes.len()) {
                    let parent = if b == 0 { 0 } else { r.hashes[b - 1] };
                    self.pool
                        .blocks
                        .register(&r.seq, b, &r.job.prompt, parent, r.hashes[b]);
                }
                if r.fed < r.job.prompt.len() {
                    continue;
                }
                // The prompt is computed: its forks start here, on its blocks.
                for fork in std::mem::take(&mut r.job.forks) {
                    let seq = self.pool.blocks.fork(&r.seq);
                    let mut child = fork_of(r, fork, seq, now);
                    let end = if r.job.max_new_tokens == 0 {
                        Some(Some(Finish::Length))
                    } else {
                        advance(&mut child, last_row, &self.metrics, now, max_seq_len)
                    };
                    forked.push((child, end));
                }
                if r.job.max_new_tokens == 0 {
                    finished.push((i, Some(Finish::Length)));
                    continue;
                }
            }
            if let Some(end) = advance(r, last_row, &self.metrics, now, max_seq_len) {
                finished.push((i, end));
            }
        }
        for (child, end) in forked {
            self.running.push(child);
            if let Some(end) = end {
                finished.push((self.running.len() - 1, end));
            }
        }
        // Highest index first: swap_remove keeps the lower indices valid.
        finished.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        for (i, finish) in finished {
            self.finish(i, finish);
        }
    }
}

/// A sequence of its own for `fork` of `parent` (whose prompt is computed), holding `seq`.
fn fork_of(parent: &Running, fork: Fork, seq: SeqKv, now: Instant) -> Running {
    Running {
        rng: ChaCha8Rng::seed_from_u64(fork.sampling.seed),
        job: Job {
            prompt: parent.job.prompt.clone(),
            max_new_tokens: parent.job.max_new_tokens,
            sampling: fork.sampling,
            stop_tokens: parent.job.stop_tokens.clone(),
            prompt_logprobs: false,
            events: fork.events,
            forks: Vec::new(),
        },
        seq,
        fed: parent.job.prompt.len(),
        hashes: Vec::new(),
        generated: Vec::new(),
        last: 0,
        queued_at: parent.queued_at,
        last_event: now,
    }
}

/// Chooses `r`'s next token from `row` and sends it; how that ends `r`, if it does (`None`
/// inside: its client is gone).
fn advance(
    r: &mut Running,
    row: &[f32],
    metrics: &Metrics,
    now: Instant,
    max_seq_len: usize,
) -> Option<Option<Finish>> {
    let (token, logprob) = choose(
        row.to_vec(),
        r.job.prompt.iter().chain(&r.generated),
        &r.job.sampling,
        &mut r.rng,
    );
    r.last = token;
    r.generated.push(token);
    if r.generated.len() == 1 {
        metrics.ttft.observe(now - r.queued_at);
    } else {
        metrics.itl.observe(now - r.last_event);
    }
    r.last_event = now;
    metrics.tokens_generated.fetch_add(1, Ordering::Relaxed);
    if matches!(
        send(r.job.events.as_ref(), Event::Token { id: token, logprob }),
        Sent::Gone
    ) {
        Some(None)
    } else if r.job.stop_tokens.contains(&token) {
        Some(Some(Finish::Stop))
    } else if r.generated.len() >= r.job.max_new_tokens || r.seq.len() >= max_seq_len {
        Some(Some(Finish::Length))
    } else {
        None
    }
}

/// Log-probabilities of `prompt[from + 1..=to]` (those the rows predict) from rows of logits
/// after `prompt[from..to]`; the last row predicts a generated token and gives none.
fn prompt_logprobs(rows: &[f32], vocab: usize, prompt: &[u32], from: usize, to: usize) -> Vec<f32> {
    rows.chunks(vocab)
        .take(to - from)
        .enumerate()
        .map(|(j, row)| (row, from + j + 1))
        .filter(|&(_, next)| next < prompt.len())
        .map(|(row, next)| row[prompt[next] as usize] - log_sum_exp(row))
        .collect()
}

/// Upper bounds of the latency histograms' buckets, seconds.
pub const BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram over [`BOUNDS`], kept in atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            if s <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Durations at or under each bound (cumulative, as Prometheus counts them).
    pub fn buckets(&self) -> [u64; BOUNDS.len()] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Their sum, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// What the scheduler counts, for whoever reports it (the server's `/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sequences in the running batch.
    pub running: AtomicUsize,
    /// Blocks of the KV pool held by sequences.
    pub kv_blocks_used: AtomicUsize,
    /// Blocks in the KV pool.
    pub kv_blocks_total: AtomicUsize,
    /// Blocks in the prefix cache (held or idle).
    pub kv_blocks_cached: AtomicUsize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub prefix_hit_tokens: AtomicUsize,
    /// Prompt tokens of the requests that looked in the prefix cache (the hit rate's
    /// denominator).
    pub prefix_query_tokens: AtomicUsize,
    /// Tokens generated.
    pub tokens_generated: AtomicUsize,
    /// Generations that ran to a stop or length.
    pub completed: AtomicUsize,
    /// Generations ended because the client left or stopped reading.
    pub cancelled: AtomicUsize,
    /// Request queued → first token.
    pub ttft: Histogram,
    /// Between two tokens of one request.
    pub itl: Histogram,
    /// Request queued → admitted.
    pub queue_time: Histogram,
    /// Request queued → finished.
    pub e2e: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_logprobs_skip_the_first_token_and_the_generated_one() {
        // vocab 2, uniform rows: every log-probability is ln ½.
        let rows = vec![0.0; 2 * 3];
        let lp = prompt_logprobs(&rows, 2, &[1, 0, 1], 0, 3);
        assert_eq!(lp.len(), 2);
        assert!(lp.iter().all(|v| (v - 0.5f32.ln()).abs() < 1e-6));
        // A chunk in the middle: rows after tokens 1..3 predict tokens 2 and 3.
        let lp = prompt_logprobs(&rows[..4], 2, &[1, 0, 1, 1], 1, 3);
        assert_eq!(lp.len(), 2);
    }

    #[test]
    fn schedulers_parse() {
        assert_eq!("static".parse(), Ok(Scheduler::Static));
        assert!("fifo".parse::<Scheduler>().is_err());
    }
}
