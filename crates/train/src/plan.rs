//! Megatron-LM's flag arithmetic, as a library: the training arguments (`--micro-batch-size`,
//! `--global-batch-size`, `--train-iters` or `--train-samples`, the schedule in iterations or
//! samples, precision and loss scaling, intervals) become a [`PretrainConfig`] ([`plan`]); the
//! data arguments become the three splits' samples ([`splits`]); the evaluation arguments of a
//! finished checkpoint become the samples it is scored on ([`EvalData::plan`]). The CLI parses
//! flags (cargo feature `clap` derives `clap::Args` for these structs) and calls these.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use lmforge_dataset::blend::parse_data_path;
use lmforge_dataset::{GptBlend, GptConfig as DataConfig, Split, SplitKind};
use serde::{Deserialize, Serialize};

use crate::checkpoint::read_state;
use crate::optim::AdamWConfig;
use crate::pretrain::{Objective, PretrainConfig, Splits, evaluate_scored};
use crate::scaler::{LossScaler, ScalerConfig};
use crate::schedule::{DecayStyle, LrSchedule};
use crate::score::{Score, TokenText};
use crate::step::Precision;
use crate::{Error, Result};

/// The training arguments of `lmforge train gpt|bert`, with Megatron's names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TrainingArgs {
    /// Tokens per sample (default: the model's positions).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seq_length: Option<usize>,
    /// Samples per micro-batch on one device.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 4))]
    pub micro_batch_size: usize,
    /// Samples per optimizer step (default: micro batch × devices); a multiple of micro batch ×
    /// devices, the quotient is the gradient accumulation.
    #[cfg_attr(feature = "clap", arg(long))]
    pub global_batch_size: Option<usize>,
    /// Iterations to train.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            conflicts_with = "train_samples",
            required_unless_present = "train_samples"
        )
    )]
    pub train_iters: Option<u64>,
    /// Samples to train on (instead of --train-iters).
    #[cfg_attr(feature = "clap", arg(long))]
    pub train_samples: Option<u64>,
    /// Peak learning rate.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 6e-4))]
    pub lr: f64,
    /// Learning-rate floor.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub min_lr: f64,
    /// Warmup iterations.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with_all = ["lr_warmup_samples", "lr_warmup_fraction"]))]
    pub lr_warmup_iters: Option<u64>,
    /// Warmup samples.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "lr_warmup_fraction"))]
    pub lr_warmup_samples: Option<u64>,
    /// Warmup as a fraction of the decay iterations.
    #[cfg_attr(feature = "clap", arg(long))]
    pub lr_warmup_fraction: Option<f64>,
    /// cosine, linear or constant.
    #[cfg_attr(feature = "clap", arg(long, default_value = "cosine"))]
    pub lr_decay_style: String,
    /// Iterations over which the rate decays (default: the training length).
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "lr_decay_samples"))]
    pub lr_decay_iters: Option<u64>,
    /// Samples over which the rate decays.
    #[cfg_attr(feature = "clap", arg(long))]
    pub lr_decay_samples: Option<u64>,
    /// Decoupled weight decay (not on biases and norms).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.01))]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; 0 disables.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1.0))]
    pub clip_grad: f64,
    /// AdamW β₁.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.9))]
    pub adam_beta1: f64,
    /// AdamW β₂.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.999))]
    pub adam_beta2: f64,
    /// AdamW ε.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1e-8))]
    pub adam_eps: f64,
    /// float16 compute with dynamic loss scaling (fp32 master weights).
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "bf16"))]
    pub fp16: bool,
    /// bfloat16 compute (fp32 master weights).
    #[cfg_attr(feature = "clap", arg(long))]
    pub bf16: bool,
    /// A fixed loss scale instead of the dynamic one (fp16).
    #[cfg_attr(feature = "clap", arg(long))]
    pub loss_scale: Option<f64>,
    /// First dynamic loss scale.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 4_294_967_296.0))]
    pub initial_loss_scale: f64,
    /// Smallest dynamic loss scale.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1.0))]
    pub min_loss_scale: f64,
    /// Clean iterations before the loss scale doubles.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1000))]
    pub loss_scale_window: u64,
    /// Overflows tolerated before the loss scale halves.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2))]
    pub hysteresis: u64,
    /// Iterations between log lines.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub log_interval: u64,
    /// Iterations between validations; 0: only at the end.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1000))]
    pub eval_interval: u64,
    /// Global batches per validation.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub eval_iters: u64,
    /// Where checkpoints, metrics.jsonl and loss.png go.
    #[cfg_attr(feature = "clap", arg(long))]
    pub save: Option<PathBuf>,
    /// Iterations between checkpoints; 0: only at the end (and on Ctrl-C).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub save_interval: u64,
    /// Seed of initialisation, data order, dropout and masking.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1234))]
    pub seed: u64,
    /// Shard AdamW's moments (and in half precision the f32 master weights) across the processes (Megatron's distributed optimizer, ZeRO-1):
    /// each rank keeps 1/world of them and writes its own optimizer shard.
    #[cfg_attr(feature = "clap", arg(long))]
    pub use_distributed_optimizer: bool,
    /// Processes each model is cut across (Megatron's tensor parallelism: heads, MLP units and
    /// vocabulary split; consecutive ranks form a group); a divisor of the processes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    #[serde(default = "one")]
    pub tensor_model_parallel_size: usize,
}

fn one() -> usize {
    1
}

/// Where the training samples come from (`--data-path`, `--split`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DataArgs {
    /// Dataset prefix(es) of .bin/.idx, or `weight prefix` pairs.
    #[cfg_attr(feature = "clap", arg(long, num_args = 1.., required = true))]
    pub data_path: Vec<String>,
    /// train,valid,test weights.
    #[cfg_attr(feature = "clap", arg(long, default_value = "969,30,1"))]
    pub split: String,
    /// Where the sample-index caches go (default: beside the data).
    #[cfg_attr(feature = "clap", arg(long))]
    pub data_cache_path: Option<PathBuf>,
    /// No loss on end-of-document tokens.
    #[cfg_attr(feature = "clap", arg(long))]
    pub eod_mask_loss: bool,
}

fn bad(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        field,
        reason: reason.into(),
    }
}

/// The run `args` describe for a model of `max_positions` positions on `ranks` data-parallel
/// ranks: Megatron's arithmetic of batches, lengths in iterations or samples, warmup and decay,
/// precision and loss scaling. `flops_per_token` is recorded for MFU; every value is checked,
/// an error naming the flag.
pub fn plan(
    args: &TrainingArgs,
    max_positions: usize,
    flops_per_token: f64,
    ranks: usize,
) -> Result<PretrainConfig> {
    if args.tensor_model_parallel_size == 0 {
        return Err(bad("tensor-model-parallel-size", "must be at least 1"));
    }
    let micro = args.micro_batch_size;
    let global = args.global_batch_size.unwrap_or(micro * ranks);
    let seq_length = args.seq_length.unwrap_or(max_positions);
    if seq_length > max_positions {
        return Err(bad(
            "seq-length",
            format!(
                "{seq_length} exceeds the model's {max_positions} positions \
                 (--max-position-embeddings)"
            ),
        ));
    }
    if seq_length < 2 {
        return Err(bad("seq-length", "must be at least 2"));
    }
    let per_iter = global as u64;
    let to_iters = |samples: u64| samples.div_ceil(per_iter.max(1));
    let train_iters = match (args.train_iters, args.train_samples) {
        (Some(i), _) => i,
        (None, Some(s)) => to_iters(s),
        (None, None) => return Err(bad("train-iters", "give --train-iters or --train-samples")),
    };
    if train_iters == 0 {
        return Err(bad("train-iters", "must be at least 1"));
    }
    let decay = args
        .lr_decay_iters
        .or(args.lr_decay_samples.map(to_iters))
        .unwrap_or(train_iters);
    let warmup = match (
        args.lr_warmup_iters,
        args.lr_warmup_samples,
        args.lr_warmup_fraction,
    ) {
        (Some(i), _, _) => i,
        (_, Some(s), _) => to_iters(s),
        (_, _, Some(f)) if (0.0..=1.0).contains(&f) => (f * decay as f64).round() as u64,
        (_, _, Some(f)) => {
            return Err(bad(
                "lr-warmup-fraction",
                format!("{f} is not between 0 and 1"),
            ));
        }
        _ => 0,
    };
    let style: DecayStyle = args.lr_decay_style.parse()?;
    let scaler = match (args.fp16, args.loss_scale) {
        (true, Some(scale)) => LossScaler::Static { scale },
        (true, None) => LossScaler::dynamic(ScalerConfig {
            initial_scale: args.initial_loss_scale,
            min_scale: args.min_loss_scale,
            growth_interval: args.loss_scale_window,
            hysteresis: args.hysteresis,
        }),
        (false, _) => LossScaler::None,
    };
    let precision = match (args.fp16, args.bf16) {
        (true, _) => Precision::Fp16,
        (_, true) => Precision::Bf16,
        _ => Precision::Fp32,
    };
    let config = PretrainConfig {
        token_text: TokenText::default(),
        micro_batch: micro,
        global_batch: global,
        seq_length,
        train_iters,
        schedule: LrSchedule {
            max_lr: args.lr,
            min_lr: args.min_lr,
            warmup_steps: warmup,
            decay_steps: decay.max(warmup + 1),
            style,
        },
        adamw: AdamWConfig {
            beta1: args.adam_beta1,
            beta2: args.adam_beta2,
            eps: args.adam_eps,
            weight_decay: args.weight_decay,
        },
        clip_grad: (args.clip_grad > 0.0).then_some(args.clip_grad),
        precision,
        distributed_optimizer: args.use_distributed_optimizer,
        tensor_parallel: args.tensor_model_parallel_size,
        scaler,
        log_interval: args.log_interval,
        eval_interval: args.eval_interval,
        eval_iters: args.eval_iters,
        save: args.save.clone(),
        save_interval: args.save_interval,
        exit_at: None,
        exit_duration_mins: None,
        seed: args.seed,
        flops_per_token,
        peak_flops: None,
        progress: true,
        unigram_entropy: None,
    };
    config.micro_batches(ranks)?;
    config.schedule.validate()?;
    config.adamw.validate()?;
    Ok(config)
}

/// The samples of the three splits a run of `config` reads from `data` (the training split
/// long enough for every iteration, validation and test for one evaluation), documents ending
/// in `eod` when the tokenizer has one.
pub fn splits(data: &DataArgs, config: &PretrainConfig, eod: Option<u32>) -> Result<Splits> {
    let prefixes = parse_data_path(&data.data_path)?;
    let split = Split::parse(&data.split)?;
    let mut samples = DataConfig::new(config.seq_length, config.seed as u32);
    samples.eod_id = eod;
    samples.eod_mask_loss = data.eod_mask_loss;
    let cache = data.data_cache_path.as_deref();
    let train_samples = config.train_iters * config.global_batch as u64;
    let eval_samples = (config.eval_iters * config.global_batch as u64).max(1);
    let weights = split.weights();
    let build = |kind, n| GptBlend::build(&prefixes, &split, kind, n, &samples, cache);
    Ok(Splits {
        train: build(SplitKind::Train, train_samples)?,
        valid: (weights[1] > 0.0)
            .then(|| build(SplitKind::Valid, eval_samples))
            .transpose()?,
        test: (weights[2] > 0.0)
            .then(|| build(SplitKind::Test, eval_samples))
            .transpose()?,
    })
}

/// Which samples a finished checkpoint is evaluated on (`lmforge eval`, `lmforge quantize`).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct EvalData {
    /// Dataset prefix(es), or `weight prefix` pairs.
    #[cfg_attr(feature = "clap", arg(long, num_args = 1..))]
    pub data_path: Vec<String>,
    /// train,valid,test weights (default: the training run's, else 969,30,1).
    #[cfg_attr(feature = "clap", arg(long))]
    pub split: Option<String>,
    /// Tokens per sample (default: the training run's, else the model's positions).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seq_length: Option<usize>,
    /// Seed of the sample order (default: the training run's, else 1234).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seed: Option<u64>,
    /// Samples per batch.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 8))]
    pub micro_batch_size: usize,
    /// Batches per split (at most the split's samples).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub eval_iters: u64,
}

/// [`EvalData`] with the training run's values filled in.
#[derive(Clone, Debug)]
pub struct EvalPlan {
    prefixes: Vec<(PathBuf, f64)>,
    split: Split,
    seed: u64,
    seq_length: Option<usize>,
    /// Samples per split.
    pub samples: usize,
    micro_batch: usize,
}

impl EvalData {
    /// The evaluation these flags ask for; what they leave out comes from the arguments the
    /// training run recorded in `recorded`'s `trainer.json` (split, sequence length, seed), if
    /// it is a training checkpoint.
    pub fn plan(&self, recorded: &Path) -> Result<EvalPlan> {
        if self.data_path.is_empty() {
            return Err(bad("data-path", "is required"));
        }
        if self.micro_batch_size == 0 {
            return Err(bad("micro-batch-size", "must be at least 1"));
        }
        let recorded = read_state(recorded).ok().map(|s| s.args);
        let recorded_str = |key: &str| {
            recorded
                .as_ref()
                .and_then(|a| a[key].as_str().map(str::to_string))
        };
        let recorded_u64 = |key: &str| recorded.as_ref().and_then(|a| a[key].as_u64());
        let split = Split::parse(
            &self
                .split
                .clone()
                .or_else(|| recorded_str("split"))
                .unwrap_or_else(|| "969,30,1".into()),
        )?;
        Ok(EvalPlan {
            prefixes: parse_data_path(&self.data_path)?,
            split,
            seed: self.seed.or_else(|| recorded_u64("seed")).unwrap_or(1234),
            seq_length: self
                .seq_length
                .or_else(|| recorded_u64("seq_length").map(|s| s as usize)),
            samples: (self.eval_iters as usize) * self.micro_batch_size,
            micro_batch: self.micro_batch_size,
        })
    }
}

impl EvalPlan {
    /// Tokens per sample for a model of `max_positions`.
    pub fn seq_length(&self, max_positions: usize) -> usize {
        self.seq_length.unwrap_or(max_positions)
    }

    /// The validation and test scores of `model` (`None` for a split of weight 0), on samples
    /// of `seq_length` tokens: each split's loss, and its bits per byte and per character where
    /// `text` counts the tokens' text ([`crate::pretrain::evaluate_scored`]).
    pub fn scores<M: Module + Clone>(
        &self,
        model: &M,
        objective: &dyn Objective<M>,
        seq_length: usize,
        device: &Device,
        text: &TokenText,
    ) -> Result<[Option<Score>; 2]> {
        let config = DataConfig::new(seq_length, self.seed as u32);
        let weights = self.split.weights();
        let mut out = [None, None];
        for (slot, (kind, weight)) in out.iter_mut().zip([
            (SplitKind::Valid, weights[1]),
            (SplitKind::Test, weights[2]),
        ]) {
            if weight > 0.0 {
                let blend = GptBlend::build(
                    &self.prefixes,
                    &self.split,
                    kind,
                    self.samples as u64,
                    &config,
                    None,
                )?;
                *slot = Some(evaluate_scored(
                    model,
                    objective,
                    &blend,
                    self.samples,
                    self.micro_batch,
                    device,
                    text,
                )?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TrainingArgs {
        serde_json::from_value(serde_json::json!({
            "seq_length": null, "micro_batch_size": 4, "global_batch_size": null,
            "train_iters": 100, "train_samples": null, "lr": 6e-4, "min_lr": 0.0,
            "lr_warmup_iters": null, "lr_warmup_samples": null, "lr_warmup_fraction": null,
            "lr_decay_style": "cosine", "lr_decay_iters": null, "lr_decay_samples": null,
            "weight_decay": 0.01, "clip_grad": 1.0, "adam_beta1": 0.9, "adam_beta2": 0.999,
            "adam_eps": 1e-8, "fp16": false, "bf16": false, "loss_scale": null,
            "initial_loss_scale": 4294967296.0, "min_loss_scale": 1.0,
            "loss_scale_window": 1000, "hysteresis": 2, "log_interval": 100,
            "eval_interval": 1000, "eval_iters": 100, "save": null, "save_interval": 0,
            "seed": 1234, "use_distributed_optimizer": false
        }))
        .unwrap()
    }

    #[test]
    fn samples_become_iterations_of_the_global_batch() {
        let mut a = args();
        a.train_iters = None;
        a.train_samples = Some(1000);
        a.global_batch_size = Some(32);
        a.lr_warmup_samples = Some(100);
        a.lr_decay_samples = Some(640);
        let c = plan(&a, 256, 0.0, 2).unwrap();
        assert_eq!((c.train_iters, c.seq_length), (32, 256));
        assert_eq!((c.schedule.warmup_steps, c.schedule.decay_steps), (4, 20));
        assert_eq!(c.micro_batches(2).unwrap(), 4);
        a.lr_warmup_samples = None;
        a.lr_warmup_fraction = Some(0.1);
        assert_eq!(plan(&a, 256, 0.0, 2).unwrap().schedule.warmup_steps, 2);
    }

    #[test]
    fn bad_flags_are_named() {
        let mut a = args();
        a.seq_length = Some(512);
        let e = plan(&a, 256, 0.0, 1).unwrap_err().to_string();
        assert!(
            e.contains("--seq-length") && e.contains("256 positions"),
            "{e}"
        );
        let mut a = args();
        a.global_batch_size = Some(6);
        let e = plan(&a, 256, 0.0, 1).unwrap_err().to_string();
        assert!(e.contains("--global-batch-size"), "{e}");
        let mut a = args();
        a.lr_warmup_fraction = Some(2.0);
        let e = plan(&a, 256, 0.0, 1).unwrap_err().to_string();
        assert!(e.contains("--lr-warmup-fraction"), "{e}");
        let mut a = args();
        a.train_iters = None;
        let e = plan(&a, 256, 0.0, 1).unwrap_err().to_string();
        assert!(e.contains("--train-iters"), "{e}");
        let mut a = args();
        a.fp16 = true;
        assert!(matches!(
            plan(&a, 256, 0.0, 1).unwrap().scaler,
            LossScaler::Dynamic { .. }
        ));
    }
}
