//! The pretraining loop Megatron-LM's `pretrain()` runs, for any model with an [`Objective`]:
//! iterations of one global batch read from the GPT samples of crates/dataset (where the data
//! resumes is the consumed-samples count), a step ([`train_step`]), a log line, an evaluation
//! every `eval_interval`, a checkpoint every `save_interval`, on Ctrl-C and at the end, and the
//! test split once the run is over.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use lmforge_dataset::{GptBatch, GptBlend, PretrainingSampler};
use serde::Serialize;

use crate::checkpoint::{self, LogWindow, TrainerState};
use crate::collective::{Alone, Collective, same_everywhere, weights_digest};
use crate::metrics::{MetricsLog, Record};
use crate::optim::{AdamW, AdamWConfig};
use crate::scaler::LossScaler;
use crate::schedule::LrSchedule;
use crate::score::{Score, TokenText};
use crate::step::{Precision, StepConfig, train_step, train_step_with};
use crate::zero::{Layout, Shard, trainable_shapes};
use crate::{Error, Result};

/// What a model is trained on: the loss of a batch, and how the model is saved.
pub trait Objective<M> {
    /// Mean loss of `batch` on `model` (on `device`); `seed` seeds every random draw of this
    /// micro-batch (masking), so that the same iteration draws the same after a resume.
    fn loss(&self, model: &M, batch: &GptBatch, seed: u64, device: &Device) -> Result<Tensor<1>>;

    /// Writes the model's checkpoint files into `dir` (an lmforge model folder).
    fn save(&self, model: &M, dir: &Path) -> Result<()>;

    /// Tensor parallelism, for the objectives whose model can be cut across ranks (the GPT's).
    fn tensor_parallel(&self) -> Option<&dyn TensorParallel<M>> {
        None
    }
}

/// What tensor parallelism needs of an objective's model ([`crate::tensor_parallel`]).
pub trait TensorParallel<M> {
    /// Rank `rank`'s share of the whole `model` over `tp` ranks.
    fn shard(&self, model: M, tp: usize, rank: usize) -> Result<M>;

    /// The whole model from every rank's share (a collective over `group`).
    fn gather(&self, model: &M, group: &dyn Collective) -> Result<M>;

    /// The loss of `batch` on `model` and, with `factor`, the gradients of `factor × loss` with
    /// respect to `params` (`model` itself, or the f32 weights `model` is a half-precision copy
    /// of), computed with the other ranks of `group`.
    #[allow(clippy::too_many_arguments)]
    fn grads(
        &self,
        model: &M,
        params: &M,
        batch: &GptBatch,
        group: &dyn Collective,
        factor: Option<f64>,
        device: &Device,
    ) -> Result<(f64, crate::optim::Grads)>;
}

/// The data: the three splits' samples.
pub struct Splits {
    /// Training samples (enough for `train_iters × global_batch`).
    pub train: GptBlend,
    /// Validation samples, if the split gives any.
    pub valid: Option<GptBlend>,
    /// Test samples, if the split gives any.
    pub test: Option<GptBlend>,
}

/// A run's settings (the flags of `lmforge train`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PretrainConfig {
    /// The text of each token id, counted (a byte-level BPE's; the end-of-document token
    /// none), for the validation's bits per byte and per character in `metrics.jsonl`; empty:
    /// not given.
    #[serde(skip)]
    pub token_text: TokenText,
    /// Samples per micro-batch on one device (`--micro-batch-size`).
    pub micro_batch: usize,
    /// Samples per optimizer step, all devices and accumulation together (`--global-batch-size`).
    pub global_batch: usize,
    /// Tokens per sample (`--seq-length`).
    pub seq_length: usize,
    /// Iterations to run in total (`--train-iters`).
    pub train_iters: u64,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// AdamW's constants.
    pub adamw: AdamWConfig,
    /// Global-norm clipping (`--clip-grad`).
    pub clip_grad: Option<f64>,
    /// Arithmetic.
    pub precision: Precision,
    /// Shard AdamW's moments across the processes (`--use-distributed-optimizer`,
    /// [`crate::zero`]).
    pub distributed_optimizer: bool,
    /// Processes each model is cut across (`--tensor-model-parallel-size`,
    /// [`crate::tensor_parallel`]); 1: none.
    pub tensor_parallel: usize,
    /// The loss scaler a fresh run starts with.
    pub scaler: LossScaler,
    /// Iterations between log lines (`--log-interval`).
    pub log_interval: u64,
    /// Iterations between evaluations; 0: only at the end (`--eval-interval`).
    pub eval_interval: u64,
    /// Batches (of `global_batch` samples) per evaluation (`--eval-iters`).
    pub eval_iters: u64,
    /// Where checkpoints and `metrics.jsonl` go (`--save`).
    pub save: Option<PathBuf>,
    /// Iterations between checkpoints; 0: only at the end (`--save-interval`).
    pub save_interval: u64,
    /// Stop (with a checkpoint) once this iteration is done (Megatron's `--exit-interval`).
    pub exit_at: Option<u64>,
    /// Stop (with a checkpoint) after the first iteration that ends this many minutes after
    /// the run (or its resumption) started (Megatron's `--exit-duration-in-mins`): a job ends
    /// cleanly before its time limit and the next one resumes. One rank past it stops all.
    pub exit_duration_mins: Option<f64>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Training FLOPs per token (for MFU).
    pub flops_per_token: f64,
    /// Peak FLOP/s of all devices together, when known (`--peak-tflops`).
    pub peak_flops: Option<f64>,
    /// Show a progress bar.
    pub progress: bool,
    /// The unigram entropy of the data (nats/token), the loss of a model that ignores context:
    /// reported beside the losses as the baseline to beat ([`unigram_entropy`]).
    pub unigram_entropy: Option<f64>,
}

/// Tokens of each dataset [`unigram_entropy`] counts: its frequencies settle long before, and
/// a web-scale `.bin` must not be read whole at start-up.
pub const UNIGRAM_SAMPLE_TOKENS: usize = 64 << 20;

/// Entropy in nats of the token frequencies of the datasets at `prefixes` (weighted by their
/// blend weights; the first [`UNIGRAM_SAMPLE_TOKENS`] of each): the cross-entropy of the best
/// model that ignores context.
pub fn unigram_entropy(prefixes: &[(std::path::PathBuf, f64)]) -> Result<f64> {
    let mut counts: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
    let total_weight: f64 = prefixes.iter().map(|p| p.1).sum();
    for (prefix, weight) in prefixes {
        let data = lmforge_dataset::IndexedDataset::open(prefix)?;
        let tokens = data.tokens();
        let n = tokens.len().min(UNIGRAM_SAMPLE_TOKENS);
        if n == 0 {
            continue;
        }
        let share = weight / total_weight / n as f64;
        for t in tokens.slice(0..n).to_vec() {
            *counts.entry(t).or_default() += share;
        }
    }
    let total: f64 = counts.values().sum();
    Ok(counts
        .values()
        .map(|&c| {
            let p = c / total;
            -p * p.ln()
        })
        .sum())
}

impl PretrainConfig {
    /// Micro-batches each rank runs per step, or an error naming the flag when the global batch
    /// is not a multiple of micro batch × ranks.
    pub fn micro_batches(&self, ranks: usize) -> Result<usize> {
        let per_step = self.micro_batch * ranks;
        if self.micro_batch == 0
            || self.global_batch == 0
            || !self.global_batch.is_multiple_of(per_step)
        {
            return Err(Error::Config {
                field: "global-batch-size",
                reason: format!(
                    "{} is not a multiple of --micro-batch-size {} × {} data-parallel device(s)",
                    self.global_batch, self.micro_batch, ranks
                ),
            });
        }
        Ok(self.global_batch / per_step)
    }
}

/// Where a resumed run starts.
pub struct Resume {
    /// The optimizer as saved.
    pub optimizer: AdamW,
    /// The trainer state as saved.
    pub state: TrainerState,
}

/// What a run did (written as `train_report.json` in `--save`).
#[derive(Clone, Debug, Serialize)]
pub struct PretrainReport {
    /// Parameters of the model.
    pub parameters: usize,
    /// Training FLOPs per token.
    pub flops_per_token: f64,
    /// The iteration the run started from (0, or the resumed one).
    pub start_iteration: u64,
    /// Iterations completed in total.
    pub iterations: u64,
    /// Training samples consumed.
    pub consumed_samples: u64,
    /// Iterations skipped on overflow.
    pub skipped_iterations: u64,
    /// Mean training loss of the last logged window.
    pub last_loss: Option<f64>,
    /// Final validation loss and perplexity.
    pub valid_loss: Option<f64>,
    /// `exp(valid_loss)`.
    pub valid_perplexity: Option<f64>,
    /// Test loss at the end.
    pub test_loss: Option<f64>,
    /// `exp(test_loss)`.
    pub test_perplexity: Option<f64>,
    /// Training tokens per second, iterations after the first.
    pub tokens_per_second: f64,
    /// Model FLOPs utilisation, when the peak is known.
    pub mfu: Option<f64>,
    /// Seconds of this invocation.
    pub seconds: f64,
    /// The data's unigram entropy, when computed: the baseline the losses should beat.
    pub unigram_entropy: Option<f64>,
    /// Whether Ctrl-C (or `exit_at`) ended the run early.
    pub interrupted: bool,
    /// Processes that trained together (the launcher's world size).
    pub world_size: usize,
    /// Processes each model was cut across.
    pub tensor_model_parallel_size: usize,
    /// Across processes: what the gradients' all-reduce moved and cost, per iteration.
    pub communication: Option<Communication>,
    /// What training holds per rank, counted from the tensors themselves at the end.
    pub memory: MemoryPerRank,
    /// Each rank's peak resident memory as the system measured it (`VmHWM`), in rank order:
    /// the real figure beside [`MemoryPerRank`]'s count (0 where it is not measured).
    pub peak_rss_bytes: Vec<u64>,
    /// The same over the training steps only, checkpoint writes (each copies the model and
    /// this rank's optimizer state to the host) and the closing evaluations left out.
    pub step_peak_rss_bytes: Vec<u64>,
    /// Each rank's resident memory before its first step (`VmRSS`), in rank order.
    pub baseline_rss_bytes: Vec<u64>,
    /// Each rank's peak as counted ([`MemoryPerRank::expected_peak`] over its baseline), to
    /// set beside [`PretrainReport::step_peak_rss_bytes`].
    pub expected_peak_bytes: Vec<u64>,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// Bytes of training state one rank holds (activations aside), to compare with `lmforge model
/// info`'s accounting.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPerRank {
    /// The weights (every rank holds them all): f32, or half when the distributed optimizer
    /// shards the f32 master copy.
    pub weights_bytes: u64,
    /// The f32 gradients summed over a step's micro-batches (all of them, before the reduction).
    pub gradient_bytes: u64,
    /// AdamW's two f32 moments, plus the f32 master pieces when the model is held in half:
    /// this rank's share when sharded.
    pub optimizer_bytes: u64,
    /// Ranks the moments are sharded over (1: not sharded).
    pub optimizer_sharded_over: usize,
    /// The f32 host vectors a step builds for the collectives: one bucket of the all-reduce;
    /// sharded, this rank's shard and one round
    /// (`lmforge_model::accounting::step_buffer_values`). 0 for one rank, unsharded.
    pub step_buffer_bytes: u64,
    /// While a step accumulates several micro-batches (or local devices), the running sum
    /// and the newest gradients side by side: a second set of gradients. 0 for one.
    pub accumulation_bytes: u64,
}

impl MemoryPerRank {
    /// The state held for `model` with `optimizer` by one of `world` data-parallel ranks,
    /// `accumulating` when its steps sum more than one micro-batch's gradients.
    pub fn of<M: Module>(
        model: &M,
        optimizer: &AdamW,
        world: usize,
        accumulating: bool,
    ) -> MemoryPerRank {
        let trainable: usize = crate::zero::trainable_shapes(model)
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum();
        let master: u64 = optimizer.master.as_ref().map_or(0, |m| {
            m.pieces
                .values()
                .map(|p| 4 * p.shape().num_elements() as u64)
                .sum()
        });
        MemoryPerRank {
            weights_bytes: crate::zero::weight_bytes(model),
            gradient_bytes: 4 * trainable as u64,
            optimizer_bytes: master
                + optimizer
                    .moments
                    .values()
                    .map(|m| 8 * m.m.shape().num_elements() as u64)
                    .sum::<u64>(),
            optimizer_sharded_over: optimizer.shard.as_ref().map_or(1, |s| s.layout.world),
            step_buffer_bytes: step_buffers(trainable, optimizer, world),
            accumulation_bytes: if accumulating {
                4 * trainable as u64
            } else {
                0
            },
        }
    }

    /// The peak resident memory a rank should reach: `baseline` (its resident memory before
    /// the first step: the program, its data, the weights and whatever optimizer state it
    /// already held, `optimizer_at_baseline` bytes of it) plus the gradients, the optimizer
    /// state made since, and the larger of the step's two transients, which never coexist:
    /// the accumulation's second gradients (during the backward passes) and the step buffers
    /// (during the reduction and the all-gather). Activations are left out: they are gone by
    /// the reduction, and the backward passes' are the size of the gradients' transient at
    /// most on the shapes where memory matters.
    pub fn expected_peak(&self, baseline: u64, optimizer_at_baseline: u64) -> u64 {
        baseline
            + self.gradient_bytes
            + self.optimizer_bytes.saturating_sub(optimizer_at_baseline)
            + self.accumulation_bytes.max(self.step_buffer_bytes)
    }
}

/// [`MemoryPerRank::step_buffer_bytes`], by the accounting's formula over this run's layout.
fn step_buffers(trainable: usize, optimizer: &AdamW, world: usize) -> u64 {
    let sharded = optimizer.shard.is_some();
    4 * lmforge_model::accounting::step_buffer_values(trainable, world, sharded) as u64
}

/// Every rank's `bytes`, in rank order (a collective: every rank calls it).
fn peak_by_rank(collective: &dyn Collective, bytes: u64) -> Result<Vec<u64>> {
    let mut slots = vec![0.0f64; collective.world()];
    slots[collective.rank()] = bytes as f64;
    collective.all_reduce_f64(&mut slots, "the peak memory of every rank")?;
    Ok(slots.into_iter().map(|b| b as u64).collect())
}

/// The gradient all-reduce of a multi-process run, measured (iterations after the first).
#[derive(Clone, Debug, Serialize)]
pub struct Communication {
    /// Bytes of gradients each rank contributes to an iteration's all-reduce (f32).
    pub bytes_per_iteration: u64,
    /// Seconds of an iteration in the all-reduce: flattening, host copies and MPI.
    pub seconds_per_iteration: f64,
    /// Those seconds per MB (10⁶ bytes) of gradients.
    pub seconds_per_mb: f64,
    /// The all-reduce's share of the iteration time.
    pub fraction_of_step: f64,
    /// Seconds of an iteration this rank (0) waited for the slowest rank before the
    /// all-reduce: the cost of uneven ranks, not of communication.
    pub wait_seconds_per_iteration: f64,
}

/// The seed of one micro-batch's random draws: a pure function of the run's seed and the
/// position, so a resumed run draws what the uninterrupted one drew.
pub fn micro_seed(seed: u64, iteration: u64, rank: usize, micro: usize) -> u64 {
    // SplitMix64's finaliser over the packed position.
    let mut z = seed
        ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ ((rank as u64) << 48)
        ^ ((micro as u64) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mean loss of `model` over the first `samples` samples of `data`, in micro-batches.
pub fn evaluate<M: Module + Clone>(
    model: &M,
    objective: &dyn Objective<M>,
    data: &GptBlend,
    samples: usize,
    micro_batch: usize,
    device: &Device,
) -> Result<f64> {
    let empty = TokenText::default();
    evaluate_scored(model, objective, data, samples, micro_batch, device, &empty).map(|s| s.loss)
}

/// [`evaluate`]'s mean loss, and the bits per byte and per character of the same samples: the
/// nats of every target (each batch's mean loss times its targets) over ln 2 and the text of
/// those targets as `text` counts it (a token-independent measure, so that models with
/// different vocabularies, and character-level ones, compare).
pub fn evaluate_scored<M: Module + Clone>(
    model: &M,
    objective: &dyn Objective<M>,
    data: &GptBlend,
    samples: usize,
    micro_batch: usize,
    device: &Device,
    text: &TokenText,
) -> Result<Score> {
    evaluate_on_ranks(
        model,
        objective,
        data,
        samples,
        micro_batch,
        device,
        &Alone,
        text,
    )
}

/// [`evaluate_scored`] with the micro-batches dealt round-robin to the ranks of
/// `collective`: each batch's loss, nats, bytes and characters go in their slots, so every
/// figure is the same bytes on any world size.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_on_ranks<M: Module + Clone>(
    model: &M,
    objective: &dyn Objective<M>,
    data: &GptBlend,
    samples: usize,
    micro_batch: usize,
    device: &Device,
    collective: &dyn Collective,
    text: &TokenText,
) -> Result<Score> {
    let model = model.valid();
    evaluate_with(
        data,
        samples,
        micro_batch,
        collective,
        text,
        &mut |batch, seed| {
            let loss = objective.loss(&model, batch, seed, device)?;
            Ok(f64::from(loss.into_scalar::<f32>()))
        },
    )
}

/// The mean of `loss_of(batch, seed)` over the first `samples` samples of `data` in batches of
/// `micro_batch`, dealt round-robin to the ranks of `collective`, each loss in its slot; and
/// the bits per byte and per character of their targets by `text` ([`evaluate_scored`]), each
/// batch's nats, bytes and characters in slots of their own.
fn evaluate_with(
    data: &GptBlend,
    samples: usize,
    micro_batch: usize,
    collective: &dyn Collective,
    text: &TokenText,
    loss_of: &mut dyn FnMut(&GptBatch, u64) -> Result<f64>,
) -> Result<Score> {
    let samples = samples.min(data.len());
    if samples == 0 {
        return Err(Error::Config {
            field: "eval-iters",
            reason: "the split has no sample to evaluate".into(),
        });
    }
    let indices: Vec<usize> = (0..samples).collect();
    let chunks: Vec<&[usize]> = indices.chunks(micro_batch.max(1)).collect();
    let n = chunks.len();
    // Each batch's loss, then its nats, its text bytes and characters: one all-reduce for all.
    let mut slots = vec![0.0f64; 4 * n];
    let (rank, world) = (collective.rank(), collective.world());
    for (b, chunk) in chunks.iter().enumerate().skip(rank).step_by(world) {
        let batch = data.batch(chunk);
        let loss = loss_of(&batch, micro_seed(u64::MAX, 0, 0, b))?;
        let (mut targets, mut text_bytes, mut chars) = (0.0f64, 0u64, 0u64);
        if !text.is_empty() {
            for (&label, &weight) in batch.labels.iter().zip(&batch.loss_mask) {
                if weight > 0.0 {
                    let (b, c) = text.of(label);
                    targets += f64::from(weight);
                    text_bytes += b;
                    chars += c;
                }
            }
        }
        slots[b] = loss;
        slots[n + b] = loss * targets;
        slots[2 * n + b] = text_bytes as f64;
        slots[3 * n + b] = chars as f64;
    }
    collective.all_reduce_f64(&mut slots, "the all-reduce of the evaluation losses")?;
    let losses = &slots[..n];
    if let Some(b) = losses.iter().position(|l| !l.is_finite()) {
        return Err(Error::NonFinite(format!(
            "evaluation batch {b}: the loss is {}",
            losses[b]
        )));
    }
    let sum = |k: usize| slots[k * n..(k + 1) * n].iter().sum::<f64>();
    Ok(Score::new(
        losses.iter().sum::<f64>() / n as f64,
        sum(1),
        sum(2),
        sum(3),
    ))
}

/// Trains `model` on `splits` with `config` on `devices` (data parallel over several), and
/// over the processes of `collective` ([`Alone`] for one process), starting fresh or from
/// `resume`. `stop` is polled after every iteration (Ctrl-C; any rank's stops all): the run
/// then saves a checkpoint and returns. `args` is recorded in every checkpoint. Rank 0 alone
/// writes checkpoints, `metrics.jsonl`, the plot and the report, and shows progress.
#[allow(clippy::too_many_arguments)]
pub fn pretrain<M: Module + Clone>(
    mut model: M,
    objective: &dyn Objective<M>,
    splits: &Splits,
    config: &PretrainConfig,
    devices: &[Device],
    collective: &dyn Collective,
    resume: Option<Resume>,
    stop: &AtomicBool,
    args: serde_json::Value,
) -> Result<(M, PretrainReport)> {
    let started = Instant::now();
    let tp = config.tensor_parallel.max(1);
    let groups = if tp > 1 {
        tensor_parallel_groups(objective, collective, devices, tp)?
    } else {
        None
    };
    // Data parallelism runs over the ranks holding the same share of the model; tensor
    // parallelism over the ranks holding one model (Megatron's layout: consecutive ranks).
    let dp_group: &dyn Collective = groups.as_ref().map_or(collective, |g| g.data.as_ref());
    let dp = devices.len() * dp_group.world();
    let first = collective.rank() == 0;
    let micro_batches = config.micro_batches(dp)?;
    config.schedule.validate()?;
    config.adamw.validate()?;
    let device = devices.first().ok_or_else(|| Error::Config {
        field: "device",
        reason: "no device".into(),
    })?;
    // The distributed optimizer shards over the data-parallel ranks, which hold the same share
    // of the model (all of it without tensor parallelism).
    let share = crate::tensor_parallel::share_shapes(&trainable_shapes(&model), tp);
    let shard = config.distributed_optimizer.then(|| Shard {
        layout: Layout::new(&share, dp_group.world()),
        rank: dp_group.rank(),
    });
    let (mut optimizer, mut state) = match resume {
        Some(Resume { optimizer, state }) => {
            // A tensor-parallel run is given the whole optimizer, and cuts it below.
            let expected = if tp > 1 { None } else { shard.clone() };
            if optimizer.shard != expected {
                return Err(Error::Config {
                    field: "load",
                    reason: format!(
                        "the optimizer was read for {}, the run needs {}: read it with \
                         checkpoint::read_optimizer for this rank's target",
                        describe(optimizer.shard.as_ref()),
                        describe(expected.as_ref())
                    ),
                });
            }
            (optimizer, state)
        }
        None => (
            match shard.clone() {
                Some(shard) => AdamW::sharded(config.adamw, shard),
                None => AdamW::new(config.adamw),
            },
            TrainerState {
                format: 1,
                iteration: 0,
                consumed_train_samples: 0,
                scheduler_steps: 0,
                skipped_iterations: 0,
                adam_step: 0,
                adamw: config.adamw,
                loss_scaler: config.scaler.clone(),
                seed: config.seed,
                args: serde_json::Value::Null,
                log_window: LogWindow::default(),
            },
        ),
    };
    state.args = args;
    let start_iteration = state.iteration;
    crate::optim::check_moments(&model, &optimizer)?;
    if collective.world() > 1
        && !same_everywhere(
            collective,
            weights_digest(&model),
            "comparing the initial weights",
        )?
    {
        return Err(Error::Distributed {
            reason: "the ranks start from different weights: give every rank the same \
                     --seed and --load"
                .into(),
        });
    }
    // Each rank keeps its share of the whole model it was given, and of a resumed optimizer.
    if let Some(g) = &groups {
        let group = g.tensor.as_ref();
        let shapes = trainable_shapes(&model);
        crate::tensor_parallel::shard_moments(&mut optimizer, &shapes, tp, group.rank())?;
        model = g.objective.shard(model, tp, group.rank())?;
        if let Some(shard) = &shard
            && optimizer.shard.is_none()
        {
            optimizer = optimizer.into_pieces(shard.clone())?;
        }
    }
    // Under the distributed optimizer in half precision the master weights are sharded too and
    // the model is held in half (`crate::zero`).
    if let (Some(_), Some(dtype)) = (&optimizer.shard, config.precision.dtype()) {
        model = optimizer.hold_master(model, dtype)?;
    }
    let parameters = model.num_params();
    // Names the checkpoints' temporary folders alike on every rank: rank 0's pid.
    let mut tag = [0.0f64];
    if first {
        tag[0] = f64::from(std::process::id());
    }
    collective.all_reduce_f64(&mut tag, "agreeing on the checkpoints' temporary name")?;
    let tag = tag[0] as u64;
    let mut log = match &config.save {
        Some(save) if first => {
            std::fs::create_dir_all(save).map_err(|e| Error::io(save, e))?;
            let resumed = (start_iteration > 0).then_some(start_iteration);
            Some(MetricsLog::open(&save.join("metrics.jsonl"), resumed)?)
        }
        _ => None,
    };
    let progress = config.progress && first;
    let bar = crate::progress_bar(progress, config.train_iters, start_iteration);
    // Without a terminal the log lines go to stderr, one per log interval.
    let plain = progress && bar.is_hidden();
    let say = |line: String| {
        if first {
            crate::say(&bar, progress, line)
        }
    };
    let step_config = StepConfig {
        micro_batches,
        clip_grad: config.clip_grad,
        precision: config.precision,
    };
    let tokens_per_iteration = (config.global_batch * config.seq_length) as f64;
    let eval_samples = (config.eval_iters as usize) * config.global_batch;
    let evaluate_on = |model: &M, data: &GptBlend| match &groups {
        Some(g) => {
            let group = g.tensor.as_ref();
            let valid = model.valid();
            evaluate_with(
                data,
                eval_samples,
                config.micro_batch,
                dp_group,
                &config.token_text,
                &mut |batch, _| {
                    Ok(g.objective
                        .grads(&valid, &valid, batch, group, None, device)?
                        .0)
                },
            )
        }
        None => evaluate_on_ranks(
            model,
            objective,
            data,
            eval_samples,
            config.micro_batch,
            device,
            collective,
            &config.token_text,
        ),
    };
    // The whole f32 model (a collective): this rank's range of the master weights gathered
    // over the data-parallel ranks, then its tensor-parallel share over the group.
    let whole_model = |model: M, optimizer: &AdamW| -> Result<M> {
        let share = optimizer.full_precision(model, dp_group)?;
        match &groups {
            Some(g) => g.objective.gather(&share, g.tensor.as_ref()),
            None => Ok(share),
        }
    };
    let mut window = Window::resumed(&state.log_window);
    let mut timed_seconds = 0.0;
    let mut timed_iterations = 0u64;
    let (mut reduce_seconds, mut wait_seconds, mut reduced_bytes) = (0.0, 0.0, 0u64);
    let mut last_loss = None;
    let mut last_valid = None;
    let mut checkpoint_dir = None;
    let mut interrupted = false;
    let save_checkpoint = |model: &M,
                           state: &TrainerState,
                           optimizer: &AdamW,
                           log: &Option<MetricsLog>,
                           save: &PathBuf| {
        let what = format!("the checkpoint of iteration {}", state.iteration);
        // The f32 weights, gathered first when every rank holds only its own: its range
        // of the master weights, or its tensor-parallel share (with its moments).
        let (full, whole_optimizer) = match &groups {
            Some(g) => {
                let shapes = crate::optim::parameter_shapes(model);
                let whole_share = optimizer.gather_pieces(dp_group)?;
                let moments = crate::tensor_parallel::gather_moments(
                    &whole_share,
                    &shapes,
                    g.tensor.as_ref(),
                )?;
                (whole_model(model.clone(), optimizer)?, Some(moments))
            }
            None => (whole_model(model.clone(), optimizer)?, None),
        };
        let optimizer = whole_optimizer.as_ref().unwrap_or(optimizer);
        // The ranks' weights are the same bytes unless a reduction misbehaved: checked
        // where it matters, before a checkpoint speaks for all of them.
        if collective.world() > 1 && !same_everywhere(collective, weights_digest(&full), &what)? {
            return Err(Error::Distributed {
                reason: format!(
                    "the ranks' weights differ at iteration {}: the all-reduce gave ranks \
                         different sums",
                    state.iteration
                ),
            });
        }
        let mut state = state.clone();
        state.adam_step = optimizer.step;
        let dir = checkpoint::save(save, &state, optimizer, collective, tag, |dir| {
            objective.save(&full, dir)
        })?;
        if first && let Some(log) = log {
            log.plot()?;
        }
        // No rank goes on (or exits) before the checkpoint is complete.
        collective.barrier(&what)?;
        Ok::<_, Error>(Some(dir))
    };
    // The steps' peak resident memory, told apart from the checkpoint writes' and the closing
    // evaluations': each phase's peak is folded into its cell as it ends, and started over.
    let steps_peak = std::cell::Cell::new(0u64);
    let writes_peak = std::cell::Cell::new(0u64);
    let end_phase = |peak: &std::cell::Cell<u64>| {
        peak.set(
            peak.get()
                .max(lmforge_executor::task::peak_rss().unwrap_or(0)),
        );
        lmforge_executor::task::reset_peak_rss();
    };
    let save_now =
        |model: &M, state: &TrainerState, optimizer: &AdamW, log: &Option<MetricsLog>| {
            let Some(save) = &config.save else {
                return Ok(None);
            };
            end_phase(&steps_peak);
            let written = save_checkpoint(model, state, optimizer, log, save);
            end_phase(&writes_peak);
            written
        };
    // What the steps add to is measured, not estimated: the program, its data, the weights;
    // not the pages freed on the way (a half model's f32 copy), which the steps reuse.
    let accumulating = micro_batches * devices.len() > 1;
    crate::step::release_freed_pages();
    let baseline_rss = lmforge_executor::task::resident().unwrap_or(0);
    let optimizer_at_baseline =
        MemoryPerRank::of(&model, &optimizer, dp_group.world(), accumulating).optimizer_bytes;
    while state.iteration < config.train_iters {
        let iteration_started = Instant::now();
        let iteration = state.iteration + 1;
        let total = splits.train.len() as u64;
        let mut batches: Vec<Vec<GptBatch>> = Vec::with_capacity(devices.len());
        for d in 0..devices.len() {
            let dp_rank = dp_group.rank() * devices.len() + d;
            let sampler = PretrainingSampler::new(
                total,
                state.consumed_train_samples,
                config.micro_batch as u64,
                dp_rank as u64,
                dp as u64,
            )?;
            let rank_batches: Vec<GptBatch> = sampler
                .take(micro_batches)
                .map(|indices| splits.train.batch(&indices))
                .collect();
            if rank_batches.len() < micro_batches {
                return Err(Error::Config {
                    field: "train-iters",
                    reason: format!(
                        "the training split ran out of samples at iteration {iteration}"
                    ),
                });
            }
            batches.push(rank_batches);
        }
        let lr = config.schedule.lr(state.scheduler_steps + 1);
        let seed = config.seed;
        let rank = dp_group.rank();
        // Seeded by the micro-batch's place in the step, not by who runs it: any world size
        // draws the same dropout and masks for the same samples.
        let seed_of = |d: usize, micro: usize| {
            let j = micro * dp + rank * devices.len() + d;
            let s = micro_seed(seed, iteration, 0, j);
            devices[d].seed(s);
            s
        };
        let stepped = match &groups {
            Some(g) => train_step_with(
                model,
                devices,
                dp_group,
                Some(g.tensor.as_ref()),
                &mut optimizer,
                &mut state.loss_scaler,
                lr,
                &step_config,
                |m, d, micro, factor| {
                    seed_of(d, micro);
                    let compute = crate::step::compute_copy(m, config.precision);
                    g.objective.grads(
                        &compute,
                        m,
                        &batches[d][micro],
                        g.tensor.as_ref(),
                        Some(factor),
                        &devices[d],
                    )
                },
            ),
            None => train_step(
                model,
                devices,
                dp_group,
                &mut optimizer,
                &mut state.loss_scaler,
                lr,
                &step_config,
                |m, d, micro| {
                    let s = seed_of(d, micro);
                    objective.loss(m, &batches[d][micro], s, &devices[d])
                },
            ),
        };
        let (updated, outcome) = stepped.map_err(|e| match e {
            Error::NonFinite(what) => Error::NonFinite(format!(
                "iteration {iteration}: {what}; lower --lr, set --clip-grad, or train in --fp16 \
                 with loss scaling to skip such steps"
            )),
            other => other,
        })?;
        model = updated;
        state.iteration = iteration;
        state.consumed_train_samples += config.global_batch as u64;
        if outcome.skipped {
            state.skipped_iterations += 1;
        } else {
            state.scheduler_steps += 1;
        }
        let seconds = iteration_started.elapsed().as_secs_f64();
        if iteration > start_iteration + 1 || config.train_iters == start_iteration + 1 {
            timed_seconds += seconds;
            timed_iterations += 1;
            reduce_seconds += outcome.reduce_seconds;
            wait_seconds += outcome.wait_seconds;
            reduced_bytes = outcome.reduced_bytes;
        }
        window.add(&outcome, seconds);
        let evaluate_now = config.eval_interval > 0 && iteration % config.eval_interval == 0;
        let log_now = config.log_interval > 0 && iteration % config.log_interval == 0;
        let mut record = None;
        if log_now || evaluate_now || iteration == config.train_iters {
            let tokens_per_second =
                tokens_per_iteration * window.iterations as f64 / window.seconds;
            let mfu = config
                .peak_flops
                .map(|peak| tokens_per_second * config.flops_per_token / peak);
            last_loss = window.mean_loss();
            record = Some(Record {
                iteration,
                consumed_samples: state.consumed_train_samples,
                loss: last_loss,
                lr: Some(lr),
                grad_norm: Some(outcome.grad_norm),
                loss_scale: (config.precision == Precision::Fp16).then_some(outcome.loss_scale),
                skipped: (window.skipped > 0).then_some(window.skipped),
                tokens_per_second: Some(tokens_per_second),
                mfu,
                val_loss: None,
                val_ppl: None,
                val_bits_per_byte: None,
                val_bits_per_char: None,
                elapsed_seconds: started.elapsed().as_secs_f64(),
            });
            let message = format!(
                "loss {:.4} lr {lr:.3e} grad norm {:.3} {:.0} tok/s{}",
                last_loss.unwrap_or(f64::NAN),
                outcome.grad_norm,
                tokens_per_second,
                mfu.map(|m| format!(" MFU {:.1} %", m * 100.0))
                    .unwrap_or_default()
            );
            if plain {
                eprintln!("iteration {iteration}/{}: {message}", config.train_iters);
            }
            bar.set_message(message);
            window = Window::default();
        }
        if evaluate_now && let Some(valid) = &splits.valid {
            let score = evaluate_on(&model, valid)?;
            let loss = score.loss;
            last_valid = Some(loss);
            if let Some(record) = &mut record {
                record.val_loss = Some(loss);
                record.val_ppl = Some(loss.exp());
                record.val_bits_per_byte = score.bits_per_byte;
                record.val_bits_per_char = score.bits_per_char;
            }
            say(format!(
                "iteration {iteration}: validation loss {loss:.4}, perplexity {:.2}",
                loss.exp()
            ));
        }
        if let (Some(record), Some(log)) = (record, &mut log) {
            log.push(record)?;
        }
        bar.set_position(iteration);
        let out_of_time = config
            .exit_duration_mins
            .is_some_and(|mins| started.elapsed().as_secs_f64() >= mins * 60.0);
        let stop_now = collective.any(
            stop.load(Ordering::Relaxed) || out_of_time,
            "agreeing whether to stop (Ctrl-C, --exit-duration-in-mins)",
        )? || config.exit_at == Some(iteration);
        state.log_window = window.carried();
        let save_due = config.save_interval > 0 && iteration % config.save_interval == 0;
        if (save_due || stop_now) && iteration < config.train_iters {
            checkpoint_dir = save_now(&model, &state, &optimizer, &log)?.or(checkpoint_dir);
        }
        if stop_now && iteration < config.train_iters {
            interrupted = true;
            say(format!("stopped after iteration {iteration}"));
            break;
        }
    }
    bar.finish_and_clear();
    // The closing evaluations are not steps: their peak goes with the writes'.
    end_phase(&steps_peak);
    let mut test_loss = None;
    if !interrupted {
        if let Some(valid) = &splits.valid
            && (config.eval_interval == 0 || state.iteration % config.eval_interval != 0)
        {
            let score = evaluate_on(&model, valid)?;
            let loss = score.loss;
            last_valid = Some(loss);
            if let Some(log) = &mut log {
                log.push(Record {
                    iteration: state.iteration,
                    consumed_samples: state.consumed_train_samples,
                    val_loss: Some(loss),
                    val_ppl: Some(loss.exp()),
                    val_bits_per_byte: score.bits_per_byte,
                    val_bits_per_char: score.bits_per_char,
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                    ..Record::default()
                })?;
            }
        }
        if let Some(test) = &splits.test {
            test_loss = Some(evaluate_on(&model, test)?.loss);
        }
        end_phase(&writes_peak);
        if state.iteration > start_iteration || checkpoint_dir.is_none() {
            checkpoint_dir = save_now(&model, &state, &optimizer, &log)?.or(checkpoint_dir);
        }
    }
    let tokens_per_second = if timed_seconds > 0.0 {
        tokens_per_iteration * timed_iterations as f64 / timed_seconds
    } else {
        0.0
    };
    // Every step ran before the closing evaluations, whose peak was read and started over.
    let steps = steps_peak.get();
    let memory = MemoryPerRank::of(&model, &optimizer, dp_group.world(), accumulating);
    let report = PretrainReport {
        parameters,
        flops_per_token: config.flops_per_token,
        start_iteration,
        iterations: state.iteration,
        consumed_samples: state.consumed_train_samples,
        skipped_iterations: state.skipped_iterations,
        last_loss,
        valid_loss: last_valid,
        valid_perplexity: last_valid.map(f64::exp),
        test_loss,
        test_perplexity: test_loss.map(f64::exp),
        tokens_per_second,
        mfu: config
            .peak_flops
            .map(|peak| tokens_per_second * config.flops_per_token / peak),
        seconds: started.elapsed().as_secs_f64(),
        unigram_entropy: config.unigram_entropy,
        interrupted,
        checkpoint: checkpoint_dir,
        world_size: collective.world(),
        tensor_model_parallel_size: tp,
        memory: memory.clone(),
        baseline_rss_bytes: peak_by_rank(collective, baseline_rss)?,
        expected_peak_bytes: peak_by_rank(
            collective,
            memory.expected_peak(baseline_rss, optimizer_at_baseline),
        )?,
        peak_rss_bytes: peak_by_rank(collective, steps.max(writes_peak.get()))?,
        step_peak_rss_bytes: peak_by_rank(collective, steps)?,
        // Across data-parallel ranks (a tensor-parallel group of one model reduces none).
        communication: (dp_group.world() > 1 && timed_iterations > 0).then(|| {
            let per_iteration = reduce_seconds / timed_iterations as f64;
            Communication {
                bytes_per_iteration: reduced_bytes,
                seconds_per_iteration: per_iteration,
                seconds_per_mb: per_iteration / (reduced_bytes as f64 / 1e6).max(1e-9),
                fraction_of_step: reduce_seconds / timed_seconds,
                wait_seconds_per_iteration: wait_seconds / timed_iterations as f64,
            }
        }),
    };
    let model = whole_model(model, &optimizer)?;
    if let Some(save) = config.save.as_ref().filter(|_| first) {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        lmforge_model::checkpoint::write_atomic(&save.join("train_report.json"), json.as_bytes())?;
    }
    Ok((model, report))
}

/// The groups of a tensor-parallel run and the objective's tensor parallelism.
struct Groups<'a, M> {
    tensor: Box<dyn Collective>,
    data: Box<dyn Collective>,
    objective: &'a dyn TensorParallel<M>,
}

fn tensor_parallel_groups<'a, M>(
    objective: &'a dyn Objective<M>,
    collective: &dyn Collective,
    devices: &[Device],
    tp: usize,
) -> Result<Option<Groups<'a, M>>> {
    let bad = |reason: String| Error::Config {
        field: "tensor-model-parallel-size",
        reason,
    };
    let world = collective.world();
    if !world.is_multiple_of(tp) {
        return Err(bad(format!("{tp} does not divide the {world} processes")));
    }
    if devices.len() != 1 {
        return Err(bad("one device per process".into()));
    }
    let Some(objective) = objective.tensor_parallel() else {
        return Err(bad("this model is not cut across ranks (the GPT is)".into()));
    };
    let r = collective.rank();
    Ok(Some(Groups {
        tensor: collective.split(r / tp, r % tp)?,
        data: collective.split(r % tp, r / tp)?,
        objective,
    }))
}

fn describe(shard: Option<&Shard>) -> String {
    match shard {
        Some(s) => format!("rank {} of {} sharded ranks", s.rank, s.layout.world),
        None => "a whole optimizer".into(),
    }
}

/// Sums over the iterations since the last log line.
#[derive(Default)]
struct Window {
    loss: f64,
    counted: u64,
    iterations: u64,
    skipped: u64,
    seconds: f64,
}

impl Window {
    /// The window a checkpoint carried over (its time is not: tokens per second count this
    /// process's iterations).
    fn resumed(carried: &LogWindow) -> Window {
        Window {
            loss: carried.loss_sum,
            counted: carried.counted,
            skipped: carried.skipped,
            ..Window::default()
        }
    }

    fn carried(&self) -> LogWindow {
        LogWindow {
            loss_sum: self.loss,
            counted: self.counted,
            skipped: self.skipped,
        }
    }

    fn add(&mut self, outcome: &crate::step::StepOutcome, seconds: f64) {
        self.iterations += 1;
        self.seconds += seconds;
        if outcome.skipped {
            self.skipped += 1;
        } else {
            self.loss += outcome.loss;
            self.counted += 1;
        }
    }

    fn mean_loss(&self) -> Option<f64> {
        (self.counted > 0).then(|| self.loss / self.counted as f64)
    }
}
