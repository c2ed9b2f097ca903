//! `lmforge train gpt|bert`, `lmforge eval` and `lmforge finetune classify`, with Megatron-LM's
//! flag names where Megatron has the flag.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use lmforge_dataset::blend::parse_data_path;
use lmforge_dataset::labelled::read_text_classification;
use lmforge_model::bert::BertForMaskedLm;
use lmforge_model::checkpoint::{Format, format};
use lmforge_model::{BertConfig, DeviceSpec, Gpt, GptConfig, load_bert, load_bert_mlm, load_gpt};
use lmforge_tokenizer::Tokenizer;
use lmforge_train::bert::{ClassifyConfig, MlmObjective, finetune_classify};
use lmforge_train::checkpoint::{self, read_optimizer, read_state};
use lmforge_train::gpt::GptObjective;
pub use lmforge_train::plan::EvalData;
use lmforge_train::plan::{DataArgs, TrainingArgs, plan, splits};
use lmforge_train::{
    AdamWConfig, Alone, Collective, Objective, Place, Precision, PretrainConfig, Resume, TokenText,
    pretrain,
};
use serde::Serialize;

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Pretrain a GPT on .bin/.idx data (Megatron's pretrain_gpt.py flags).
    Gpt(GptArgs),
    /// Pretrain BERT with masked-LM on WordPiece .bin/.idx data.
    Bert(BertArgs),
}

#[derive(clap::Subcommand)]
pub enum FinetuneCommand {
    /// Fine-tune BERT to classify `text<TAB>label` lines; accuracy and per-class F1.
    Classify(ClassifyArgs),
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: lmforge_model::Error| e.to_string())
}

/// What `train gpt` and `train bert` share: data, batch, optimizer, schedule, precision,
/// checkpoints.
#[derive(clap::Args, Serialize, Clone)]
pub struct Common {
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub tokenizer: crate::dataset::TokenizerArgs,
    /// Pad the vocabulary to a multiple of this (Megatron's default 128).
    #[arg(long, default_value_t = 128)]
    pub make_vocab_size_divisible_by: usize,
    /// A preset or a JSON config of the model (default tiny). With --load of a model, the
    /// model is the loaded one: this and the architecture flags, where given, must describe it.
    #[arg(long)]
    pub config: Option<String>,
    /// Transformer layers (overrides --config).
    #[arg(long)]
    pub num_layers: Option<usize>,
    /// Width (overrides --config).
    #[arg(long)]
    pub hidden_size: Option<usize>,
    /// Attention heads (overrides --config).
    #[arg(long)]
    pub num_attention_heads: Option<usize>,
    /// Feed-forward width (overrides --config; default 4 × hidden).
    #[arg(long)]
    pub ffn_hidden_size: Option<usize>,
    /// Positions the model can take (overrides --config).
    #[arg(long)]
    pub max_position_embeddings: Option<usize>,
    /// Dropout on the residual branches (overrides --config).
    #[arg(long)]
    pub hidden_dropout: Option<f64>,
    #[command(flatten)]
    #[serde(flatten)]
    pub training: TrainingArgs,
    /// Resume from this save folder or iteration folder (a folder without a checkpoint yet
    /// starts fresh, so `--save X --load X` resumes whenever it can).
    #[arg(long)]
    pub load: Option<PathBuf>,
    /// Start from the model of --load only, as Megatron's --finetune: iteration 0, a fresh
    /// optimizer, the loaded model's architecture. --load may then be a training checkpoint,
    /// a model of ours or a Hugging Face GPT-2, Llama or Mistral folder: continued
    /// pretraining of an open model on new data.
    #[arg(long)]
    pub finetune: bool,
    /// Resume from --load's checkpoint (its iteration, data position and schedule) with a fresh
    /// optimizer, as Megatron's --no-load-optim: AdamW's moments start over.
    #[arg(long)]
    pub no_load_optim: bool,
    /// Stop with a checkpoint after an iteration divisible by this.
    #[arg(long)]
    pub exit_interval: Option<u64>,
    /// Stop with a checkpoint after the first iteration that ends this many minutes after the
    /// start (Megatron's flag: end a job cleanly before its time limit; `--load` resumes).
    #[arg(long)]
    pub exit_duration_in_mins: Option<f64>,
    /// Devices, comma-separated; several train data-parallel (flex, wgpu, cuda:N, auto).
    #[arg(long, default_value = "auto", value_delimiter = ',', value_parser = parse_device)]
    #[serde(skip)]
    pub device: Vec<DeviceSpec>,
    /// Peak dense TFLOP/s of one device in the training precision, for MFU.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Under a launcher (mpirun, srun): how long a collective waits for the other
    /// ranks before the run is aborted as one of them died or hangs.
    #[arg(long, default_value_t = 10.0)]
    pub distributed_timeout_minutes: f64,
}

/// A flag given twice takes its last value, as Megatron's argparse does (launch scripts append
/// overrides to a base command line).
#[derive(clap::Args, Serialize)]
#[command(args_override_self = true)]
pub struct GptArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Serialize)]
#[command(args_override_self = true)]
pub struct BertArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Fraction of tokens masked for prediction.
    #[arg(long, default_value_t = 0.15)]
    pub mask_prob: f64,
}

/// The tokenizer, and the bytes of the tokenizer.json a checkpoint carries.
struct DataTokenizer {
    tokenizer: Box<dyn Tokenizer>,
    json: Option<Vec<u8>>,
}

fn tokenizer(common: &Common) -> Result<DataTokenizer> {
    let flags = &common.tokenizer;
    let tokenizer = flags.open()?;
    // The checkpoint carries a tokenizer.json: the file itself, or GPT-2's two files written
    // as one.
    let json = match (&flags.tokenizer, &flags.vocab_file, &flags.merge_file) {
        (Some(path), _, _) => path
            .extension()
            .is_some_and(|e| e == "json")
            .then(|| std::fs::read(path))
            .transpose()
            .with_context(|| format!("reading {}", path.display()))?,
        (None, Some(vocab), Some(merges)) => {
            let names: Vec<&str> = lmforge_bpe::Flavour::Gpt2
                .special_tokens(0)
                .iter()
                .map(|s| s.0)
                .collect();
            let bpe = lmforge_bpe::Bpe::from_vocab_merges_files(
                vocab,
                merges,
                &names,
                lmforge_bpe::Flavour::Gpt2.pattern(),
            )?;
            Some(bpe.to_tokenizer_json().into_bytes())
        }
        _ => None,
    };
    Ok(DataTokenizer { tokenizer, json })
}

fn padded_vocab(size: usize, multiple: usize) -> usize {
    size.next_multiple_of(multiple.max(1))
}

/// This process's place in the run, the collective over its ranks and its devices (with
/// autodiff). Under a launcher each process trains on one device, picked by its local rank.
struct Ranks {
    place: Place,
    collective: Box<dyn Collective>,
    devices: Vec<Device>,
}

fn ranks(common: &Common) -> Result<Ranks> {
    let specs = &common.device;
    if specs.is_empty() {
        bail!("--device: give at least one device");
    }
    let place = Place::from_env()?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    if place.world == 1 {
        let devices: Vec<Device> = specs
            .iter()
            .map(|s| Ok(s.resolve()?.autodiff()))
            .collect::<Result<_>>()?;
        let names: Vec<String> = specs.iter().map(ToString::to_string).collect();
        whole_line(format!(
            "rank 0/1 on {host} (pid {}): device {}",
            std::process::id(),
            names.join(",")
        ));
        return Ok(Ranks {
            place,
            collective: Box::new(Alone),
            devices,
        });
    }
    if specs.len() != 1 {
        bail!(
            "--device: a run of {} processes trains on one device per process (each picks its \
             own from its local rank); give one, not {}",
            place.world,
            specs.len()
        );
    }
    let minutes = common.distributed_timeout_minutes;
    if !(minutes.is_finite() && minutes > 0.0) {
        bail!("--distributed-timeout-minutes {minutes} must be positive");
    }
    let collective = open_mpi(&place, std::time::Duration::from_secs_f64(minutes * 60.0))?;
    let (device, picked) = specs[0].for_local_rank(place.local_rank).resolve_named()?;
    whole_line(format!(
        "rank {}/{} on {host} (pid {}): device {picked} (local rank {}, launched by {:?})",
        place.rank,
        place.world,
        std::process::id(),
        place.local_rank,
        place.launcher
    ));
    Ok(Ranks {
        place,
        collective,
        devices: vec![device.autodiff()],
    })
}

/// Data-parallel ranks: devices × processes / tensor-parallel size, which must divide.
fn data_parallel(common: &Common, ranks: &Ranks) -> Result<usize> {
    let tp = common.training.tensor_model_parallel_size;
    let world = ranks.place.world;
    if tp == 0 || !world.is_multiple_of(tp) {
        bail!(
            "--tensor-model-parallel-size {tp} must divide the {world} process(es) of the run \
             (launch with mpirun -n or srun -n a multiple of it)"
        );
    }
    Ok(ranks.devices.len() * world / tp)
}

/// Writes `line` to stderr in one `write`: `eprintln!` writes its pieces separately, and a
/// launcher that merges the ranks' output interleaves them.
fn whole_line(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[cfg(feature = "mpi")]
fn open_mpi(place: &Place, timeout: std::time::Duration) -> Result<Box<dyn Collective>> {
    Ok(Box::new(lmforge_train::collective::Mpi::init(
        place.world,
        timeout,
    )?))
}

#[cfg(not(feature = "mpi"))]
fn open_mpi(place: &Place, _timeout: std::time::Duration) -> Result<Box<dyn Collective>> {
    bail!(
        "{:?} started {} processes, but this lmforge was built without MPI: rebuild it with \
         `--features mpi` (which needs Open MPI and libclang: `apt-get install libopenmpi-dev \
         openmpi-bin libclang-dev`)",
        place.launcher,
        place.world
    )
}

/// The run's schedule and sizes, from iterations or samples.
/// The run the flags describe, and the tokenizer's end-of-document id (for `--eod-mask-loss`).
struct Plan {
    config: PretrainConfig,
    eod: Option<u32>,
}

/// The checkpoint `--load` names, or none when the folder holds none yet.
fn load_dir(common: &Common) -> Result<Option<PathBuf>> {
    let Some(load) = &common.load else {
        return Ok(None);
    };
    match checkpoint::resolve(load) {
        Ok(dir) => Ok(Some(dir)),
        // A model without a training state: starting from scratch would ignore it.
        Err(_) if load.join("lmforge.json").is_file() || load.join("config.json").is_file() => {
            bail!(
                "--load {}: a model, not a training checkpoint (no {}): add --finetune to \
                 start a run from its weights",
                load.display(),
                checkpoint::STATE_FILE
            )
        }
        Err(_)
            if !load.join(checkpoint::LATEST_FILE).exists()
                && !load.join(checkpoint::STATE_FILE).exists() =>
        {
            eprintln!(
                "--load {}: no checkpoint there yet, starting from scratch",
                load.display()
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // A second Ctrl-C while the checkpoint is being written kills the process the usual way.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: finishing this iteration, saving a checkpoint, then stopping");
    });
    stop
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// The model's shape from --config and the Megatron overrides.
fn gpt_config(common: &Common, vocab: usize) -> Result<GptConfig> {
    let preset = common.config.as_deref().unwrap_or("tiny");
    let mut config = crate::model::gpt_config(preset, Some(vocab))?;
    set(&mut config.n_layer, common.num_layers);
    set(&mut config.d_model, common.hidden_size);
    set(&mut config.n_head, common.num_attention_heads);
    set(&mut config.d_ff, common.ffn_hidden_size.map(Some));
    set(&mut config.max_seq_len, common.max_position_embeddings);
    set(&mut config.dropout, common.hidden_dropout);
    config.validate()?;
    Ok(config)
}

fn bert_config(common: &Common, vocab: usize) -> Result<BertConfig> {
    let mut config = match common.config.as_deref().unwrap_or("tiny") {
        "tiny" => BertConfig::tiny(vocab),
        "base" => BertConfig {
            vocab_size: vocab,
            ..BertConfig::base()
        },
        path => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("--config {path}: neither tiny, base nor a readable file")
            })?;
            let mut c: BertConfig =
                serde_json::from_str(&text).with_context(|| format!("--config {path}"))?;
            c.vocab_size = vocab;
            c
        }
    };
    set(&mut config.n_layer, common.num_layers);
    set(&mut config.d_model, common.hidden_size);
    set(&mut config.n_head, common.num_attention_heads);
    set(&mut config.d_ff, common.ffn_hidden_size);
    set(&mut config.max_seq_len, common.max_position_embeddings);
    set(&mut config.dropout, common.hidden_dropout);
    config.validate()?;
    Ok(config)
}

/// `--peak-tflops`, else the table's figure for the first device when it names itself.
fn peak_flops(common: &Common, ranks: &Ranks, precision: Precision) -> Option<f64> {
    let devices = &ranks.devices;
    let per_device = common.peak_tflops.or_else(|| {
        let name = devices.first()?.identity()?.name;
        let peak = lmforge_train::peak_tflops(&name, precision)?;
        eprintln!("{name}: {peak} TFLOP/s peak in {precision:?} (override with --peak-tflops)");
        Some(peak)
    })?;
    Some(per_device * 1e12 * (devices.len() * ranks.place.world) as f64)
}

fn print_start(
    name: &str,
    parameters: usize,
    plan: &Plan,
    ranks: usize,
    precision: Precision,
    first: bool,
) {
    if !first {
        return;
    }
    let c = &plan.config;
    eprintln!(
        "{name}: {parameters} parameters, {:.3e} training FLOPs/token; {} iterations of {} samples × {} tokens \
         ({} micro-batch(es) of {} on each of {ranks} data-parallel rank(s)), {precision:?}",
        c.flops_per_token,
        c.train_iters,
        c.global_batch,
        c.seq_length,
        c.global_batch / (c.micro_batch * ranks),
        c.micro_batch,
    );
    if c.peak_flops.is_none() {
        eprintln!("(MFU is printed for known GPUs, or when --peak-tflops gives the peak)");
    }
}

fn finish(report: &lmforge_train::PretrainReport) {
    eprintln!(
        "{} iterations ({} this run) in {:.1} s, {:.0} tokens/s{}{}",
        report.iterations,
        report.iterations - report.start_iteration,
        report.seconds,
        report.tokens_per_second,
        report
            .mfu
            .map(|m| format!(", MFU {:.1} %", m * 100.0))
            .unwrap_or_default(),
        if report.interrupted {
            " (stopped early)"
        } else {
            ""
        }
    );
    if let Some(c) = &report.communication {
        eprintln!(
            "{} ranks: the gradient all-reduce moved {:.1} MB per iteration in {:.1} ms \
             ({:.2} ms/MB, {:.1} % of a step); rank 0 waited {:.1} ms per iteration for the \
             slowest rank",
            report.world_size,
            c.bytes_per_iteration as f64 / 1e6,
            c.seconds_per_iteration * 1e3,
            c.seconds_per_mb * 1e3,
            c.fraction_of_step * 100.0,
            c.wait_seconds_per_iteration * 1e3
        );
    }
    let m = &report.memory;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let state = m.weights_bytes + m.gradient_bytes + m.optimizer_bytes + m.step_buffer_bytes;
    eprintln!(
        "memory per rank: weights {:.3} MiB, gradients {:.3} MiB, AdamW {:.3} MiB{}, step \
         buffers {:.3} MiB: {:.3} MiB of training state{}",
        mib(m.weights_bytes),
        mib(m.gradient_bytes),
        mib(m.optimizer_bytes),
        if m.optimizer_sharded_over > 1 {
            format!(" (sharded over {} ranks)", m.optimizer_sharded_over)
        } else {
            String::new()
        },
        mib(m.step_buffer_bytes),
        mib(state),
        if m.accumulation_bytes > 0 {
            format!(
                "; {:.3} MiB more while micro-batches accumulate",
                mib(m.accumulation_bytes)
            )
        } else {
            String::new()
        },
    );
    if let Some(&largest) = report.peak_rss_bytes.iter().max()
        && largest > 0
    {
        let by_rank = |bytes: &[u64]| {
            bytes
                .iter()
                .map(|&b| format!("{:.1}", mib(b)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "peak resident memory by rank: counted {} MiB (resident before the first step, \
             {} MiB: the program, its data and the weights; then the gradients, the optimizer \
             state and the larger of the step's transients); measured {} MiB over the training \
             steps, {} MiB with the closing evaluations and checkpoint writes",
            by_rank(&report.expected_peak_bytes),
            by_rank(&report.baseline_rss_bytes),
            by_rank(&report.step_peak_rss_bytes),
            by_rank(&report.peak_rss_bytes),
        );
    }
    if let (Some(l), Some(p)) = (report.valid_loss, report.valid_perplexity) {
        eprintln!("validation loss {l:.4}, perplexity {p:.2}");
    }
    if let (Some(l), Some(p)) = (report.test_loss, report.test_perplexity) {
        eprintln!("test loss {l:.4}, perplexity {p:.2}");
    }
    if let Some(dir) = &report.checkpoint {
        eprintln!("checkpoint: {}", dir.display());
    }
}

/// The model of `dir` (`loaded`) against the flags: `--config`, when given, with the
/// architecture flags must build exactly it (a run resumed with the flags it was started with);
/// otherwise each architecture flag given must agree with it. The tokenizer's `tokens` must fit
/// its vocabulary (`padded`: the flags' padded size).
fn check_loaded(
    common: &Common,
    loaded: &GptConfig,
    padded: usize,
    tokens: usize,
    dir: &Path,
) -> Result<()> {
    let what = if common.finetune {
        "drop --config and the architecture flags (the model is --load's), or give ones that \
         describe it"
    } else {
        "give the flags the run was started with"
    };
    if common.config.is_some() {
        let flags = gpt_config(common, padded)?;
        if &flags != loaded {
            bail!(
                "--load {}: the checkpoint's model ({}) differs from the one the flags describe \
                 ({}); {what}",
                dir.display(),
                serde_json::to_string(loaded)?,
                serde_json::to_string(&flags)?
            );
        }
    }
    for (flag, given, has) in [
        ("--num-layers", common.num_layers, loaded.n_layer),
        ("--hidden-size", common.hidden_size, loaded.d_model),
        (
            "--num-attention-heads",
            common.num_attention_heads,
            loaded.n_head,
        ),
        (
            "--ffn-hidden-size",
            common.ffn_hidden_size,
            loaded.ffn_hidden(),
        ),
        (
            "--max-position-embeddings",
            common.max_position_embeddings,
            loaded.max_seq_len,
        ),
    ] {
        if let Some(given) = given.filter(|&g| g != has) {
            bail!(
                "{flag} {given}: the model of --load {} has {has}; {what}",
                dir.display()
            );
        }
    }
    if let Some(dropout) = common.hidden_dropout.filter(|&d| d != loaded.dropout) {
        bail!(
            "--hidden-dropout {dropout}: the model of --load {} has {}; {what}",
            dir.display(),
            loaded.dropout
        );
    }
    if tokens > loaded.vocab_size {
        bail!(
            "the tokenizer has {tokens} tokens and the model of --load {} {}: its ids would not \
             all fit; train with the model's own tokenizer",
            dir.display(),
            loaded.vocab_size
        );
    }
    Ok(())
}

/// The run's own arguments must match the checkpoint's model; the data position comes from it.
/// The optimizer is read whole, or as this rank's shard under `--use-distributed-optimizer`,
/// whatever world size wrote it.
fn resume<M: burn::module::Module>(
    dir: &Path,
    model: &M,
    common: &Common,
    ranks: &Ranks,
) -> Result<Resume> {
    let mut state = read_state(dir)?;
    // Under tensor parallelism the whole optimizer is read; each rank cuts its share.
    let target = (common.training.use_distributed_optimizer
        && common.training.tensor_model_parallel_size <= 1)
        .then_some((ranks.place.world, ranks.place.rank));
    let shapes = lmforge_train::zero::trainable_shapes(model);
    let optimizer = if common.no_load_optim {
        eprintln!("--no-load-optim: AdamW's moments start over");
        state.adam_step = 0;
        match target {
            Some((world, rank)) => lmforge_train::optim::AdamW::sharded(
                state.adamw,
                lmforge_train::zero::Shard {
                    layout: lmforge_train::zero::Layout::new(&shapes, world),
                    rank,
                },
            ),
            None => lmforge_train::optim::AdamW::new(state.adamw),
        }
    } else {
        read_optimizer(dir, &state, &ranks.devices[0], &shapes, target)?
    };
    eprintln!(
        "resuming from {} (iteration {}, {} samples consumed)",
        dir.display(),
        state.iteration,
        state.consumed_train_samples
    );
    Ok(Resume { optimizer, state })
}

fn run_pretrain<M: burn::module::Module + Clone>(
    model: M,
    objective: &dyn Objective<M>,
    common: &Common,
    plan: &Plan,
    ranks: &Ranks,
    resumed: Option<Resume>,
    args: serde_json::Value,
) -> Result<()> {
    let eod = plan.eod;
    let collective = ranks.collective.as_ref();
    let first = ranks.place.is_first();
    // Rank 0 builds (and caches) the sample indices before the others read them, as Megatron
    // does.
    if !first {
        collective.barrier("building the sample indices on rank 0")?;
    }
    let data = splits(&common.data, &plan.config, eod)?;
    if first {
        collective.barrier("building the sample indices on rank 0")?;
    }
    let stop = ctrl_c();
    let mut config = plan.config.clone();
    let entropy =
        lmforge_train::pretrain::unigram_entropy(&parse_data_path(&common.data.data_path)?)?;
    if first {
        eprintln!("unigram entropy of the data: {entropy:.4} nats/token (the loss to beat)");
    }
    config.unigram_entropy = Some(entropy);
    if let Some(mins) = common.exit_duration_in_mins {
        anyhow::ensure!(
            mins.is_finite() && mins >= 0.0,
            "--exit-duration-in-mins {mins}: give a number of minutes, 0 or more"
        );
    }
    config.exit_duration_mins = common.exit_duration_in_mins;
    config.exit_at = common.exit_interval.map(|n| {
        let from = resumed.as_ref().map_or(0, |r| r.state.iteration);
        (from / n.max(1) + 1) * n.max(1)
    });
    let (_, report) = pretrain(
        model,
        objective,
        &data,
        &config,
        &ranks.devices,
        collective,
        resumed,
        &stop,
        args,
    )?;
    if first {
        finish(&report);
    }
    Ok(())
}

pub fn run_train(command: TrainCommand) -> Result<()> {
    match command {
        TrainCommand::Gpt(args) => train_gpt(&args),
        TrainCommand::Bert(args) => train_bert(&args),
    }
}

fn train_gpt(args: &GptArgs) -> Result<()> {
    let common = &args.common;
    let DataTokenizer {
        tokenizer,
        json: tokenizer_json,
    } = tokenizer(common)?;
    let vocab = padded_vocab(tokenizer.vocab_size(), common.make_vocab_size_divisible_by);
    // The model of --load (resumed, or --finetune's start) is the run's; else the flags'.
    let start = match (common.finetune, &common.load) {
        (true, None) => bail!("--finetune needs --load: the model to start from"),
        (true, Some(load)) => Some(checkpoint::resolve(load).unwrap_or_else(|_| load.clone())),
        (false, _) => load_dir(common)?,
    };
    let config = match &start {
        Some(dir) => {
            let loaded = lmforge_model::checkpoint::gpt_config(dir)
                .with_context(|| format!("--load {}", dir.display()))?;
            check_loaded(common, &loaded, vocab, tokenizer.vocab_size(), dir)?;
            loaded
        }
        None => gpt_config(common, vocab)?,
    };
    let ranks = ranks(common)?;
    let dp = data_parallel(common, &ranks)?;
    let planned = plan(&common.training, config.max_seq_len, 0.0, dp)?;
    let plan = Plan {
        config: PretrainConfig {
            flops_per_token: config.training_flops_per_token(planned.seq_length),
            peak_flops: peak_flops(common, &ranks, planned.precision),
            token_text: token_text_of(tokenizer.as_ref()),
            ..planned
        },
        eod: tokenizer.eod_id(),
    };
    let device = &ranks.devices[0];
    let (model, resumed): (Gpt, Option<Resume>) = match &start {
        Some(dir) if common.finetune => {
            eprintln!(
                "starting from the model of {} (--finetune: iteration 0, a fresh optimizer)",
                dir.display()
            );
            (load_gpt(dir, device)?, None)
        }
        Some(dir) => {
            let model = load_gpt(dir, device)?;
            let resumed = resume(dir, &model, common, &ranks)?;
            (model, Some(resumed))
        }
        None => (config.init(device, common.training.seed)?, None),
    };
    print_start(
        "gpt",
        config.num_params(),
        &plan,
        dp,
        plan.config.precision,
        ranks.place.is_first(),
    );
    let objective = GptObjective { tokenizer_json };
    run_pretrain(
        model,
        &objective,
        common,
        &plan,
        &ranks,
        resumed,
        recorded_args(args)?,
    )
}

fn train_bert(args: &BertArgs) -> Result<()> {
    let common = &args.common;
    if common.finetune {
        bail!("--finetune: BERT pretraining continues only its own checkpoints (--load)");
    }
    let DataTokenizer {
        tokenizer,
        json: tokenizer_json,
    } = tokenizer(common)?;
    let vocab = padded_vocab(tokenizer.vocab_size(), common.make_vocab_size_divisible_by);
    let config = bert_config(common, vocab)?;
    let ranks = ranks(common)?;
    let dp = data_parallel(common, &ranks)?;
    // Encoder FLOPs per token: 6 × parameters + attention (Kaplan et al.), bidirectional.
    let attention = |seq: usize| 12.0 * (config.n_layer * config.d_model * seq) as f64;
    let planned = plan(&common.training, config.max_seq_len, 0.0, dp)?;
    let plan = Plan {
        config: PretrainConfig {
            flops_per_token: 6.0 * config.num_params() as f64 + attention(planned.seq_length),
            peak_flops: peak_flops(common, &ranks, planned.precision),
            ..planned
        },
        eod: tokenizer.eod_id(),
    };
    let mut objective = MlmObjective::for_tokenizer(tokenizer.as_ref())?;
    if !(args.mask_prob > 0.0 && args.mask_prob < 1.0) {
        bail!("--mask-prob {} must be between 0 and 1", args.mask_prob);
    }
    objective.rule.probability = args.mask_prob;
    objective.tokenizer_json = tokenizer_json;
    let device = &ranks.devices[0];
    let (model, resumed) = match load_dir(common)? {
        Some(dir) => {
            let model = load_bert_mlm(&dir, device)?;
            if model.bert.config() != &config {
                bail!(
                    "--load {}: the checkpoint's model differs from the one the flags describe",
                    dir.display()
                );
            }
            {
                let resumed = resume(&dir, &model, common, &ranks)?;
                (model, Some(resumed))
            }
        }
        None => (
            BertForMaskedLm::new(
                config.init(device, common.training.seed)?,
                common.training.seed ^ 1,
            ),
            None,
        ),
    };
    print_start(
        "bert",
        config.num_params(),
        &plan,
        dp,
        plan.config.precision,
        ranks.place.is_first(),
    );
    run_pretrain(
        model,
        &objective,
        common,
        &plan,
        &ranks,
        resumed,
        recorded_args(args)?,
    )
}

/// The arguments every checkpoint records: what defines the run. `--load`, `--finetune`,
/// `--exit-interval` and `--exit-duration-in-mins` say how one process of it started and when
/// it stops, so they are left out: a resumed run's checkpoints are the uninterrupted run's,
/// byte for byte.
fn recorded_args(args: &impl serde::Serialize) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(args)?;
    if let Some(map) = value.as_object_mut() {
        for key in [
            "load",
            "finetune",
            "no_load_optim",
            "exit_interval",
            "exit_duration_in_mins",
        ] {
            map.remove(key);
        }
    }
    Ok(value)
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A training save folder, an iteration folder, or any lmforge GPT (quantized too) /
    /// BERT-MLM checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: EvalData,
    /// Where to compute.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceSpec,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub struct EvalReport {
    checkpoint: PathBuf,
    architecture: String,
    seq_length: usize,
    samples: usize,
    valid_loss: Option<f64>,
    pub valid_perplexity: Option<f64>,
    /// Bits per byte of text (GPT with a byte-level BPE tokenizer.json beside it): compares
    /// across vocabularies, where loss and perplexity do not.
    valid_bits_per_byte: Option<f64>,
    /// Bits per character of text, likewise.
    valid_bits_per_char: Option<f64>,
    test_loss: Option<f64>,
    pub test_perplexity: Option<f64>,
    test_bits_per_byte: Option<f64>,
    test_bits_per_char: Option<f64>,
}

/// The text of every token of the tokenizer beside a checkpoint (`tokenizer.json`): see
/// [`token_text_of`]; empty where there is none.
fn token_text(dir: &Path) -> TokenText {
    match lmforge_dataset::open_tokenizer(dir.join("tokenizer.json")) {
        Ok(tokenizer) => token_text_of(tokenizer.as_ref()),
        Err(_) => TokenText::default(),
    }
}

/// The text of every token of `tokenizer`, counted, the end-of-document token standing for
/// none: empty where its tokens are not byte sequences (then no bits per byte or character are
/// given).
fn token_text_of(tokenizer: &dyn Tokenizer) -> TokenText {
    let eod = tokenizer.eod_id();
    let mut tokens = Vec::with_capacity(tokenizer.vocab_size());
    for id in 0..tokenizer.vocab_size() as u32 {
        match tokenizer.token_bytes(id) {
            _ if Some(id) == eod => tokens.push(None),
            Some(b) => tokens.push(Some(b)),
            None => return TokenText::default(),
        }
    }
    TokenText::from_tokens(tokens.iter().map(|t| t.as_deref())).unwrap_or_default()
}

/// Validation and test losses of the GPT (quantized too) or BERT-MLM checkpoint in `dir`.
/// `recorded` is the training folder whose trainer.json supplies defaults (split, sequence
/// length, seed).
pub fn eval_losses(
    dir: &Path,
    recorded: &Path,
    data: &EvalData,
    device: &Device,
) -> Result<EvalReport> {
    let plan = data.plan(recorded)?;
    let architecture = match format(dir)? {
        Format::Lmforge(a) => a,
        Format::HuggingFace(kind) => kind,
    };
    let (seq_length, losses) = match architecture.as_str() {
        "gpt" | "gpt2" => {
            let model = lmforge_quant::load_gpt(dir, device)?;
            let seq = plan.seq_length(model.config().max_seq_len);
            let objective = GptObjective {
                tokenizer_json: None,
            };
            let text = token_text(dir);
            (seq, plan.scores(&model, &objective, seq, device, &text)?)
        }
        "bert-mlm" => {
            let model = load_bert_mlm(dir, device)?;
            let tokenizer = lmforge_dataset::open_tokenizer(dir.join("tokenizer.json"))
                .with_context(|| {
                    format!(
                        "{}: masked-LM evaluation needs the checkpoint's tokenizer.json",
                        dir.display()
                    )
                })?;
            let objective = MlmObjective::for_tokenizer(tokenizer.as_ref())?;
            let seq = plan.seq_length(model.bert.config().max_seq_len);
            let text = TokenText::default();
            (seq, plan.scores(&model, &objective, seq, device, &text)?)
        }
        other => bail!(
            "{}: a `{other}` checkpoint; lmforge eval reads GPT and BERT-MLM ones",
            dir.display()
        ),
    };
    Ok(EvalReport {
        checkpoint: dir.to_path_buf(),
        architecture,
        seq_length,
        samples: plan.samples,
        valid_loss: losses[0].map(|s| s.loss),
        valid_perplexity: losses[0].map(|s| s.perplexity()),
        valid_bits_per_byte: losses[0].and_then(|s| s.bits_per_byte),
        valid_bits_per_char: losses[0].and_then(|s| s.bits_per_char),
        test_loss: losses[1].map(|s| s.loss),
        test_perplexity: losses[1].map(|s| s.perplexity()),
        test_bits_per_byte: losses[1].and_then(|s| s.bits_per_byte),
        test_bits_per_char: losses[1].and_then(|s| s.bits_per_char),
    })
}

pub fn run_eval(args: &EvalArgs) -> Result<()> {
    let dir = checkpoint::resolve(&args.checkpoint).unwrap_or_else(|_| args.checkpoint.clone());
    let device = args.device.resolve()?;
    let report = eval_losses(&dir, &dir, &args.data, &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", dir.display());
        for (name, loss, per_byte, per_char) in [
            (
                "validation",
                report.valid_loss,
                report.valid_bits_per_byte,
                report.valid_bits_per_char,
            ),
            (
                "test",
                report.test_loss,
                report.test_bits_per_byte,
                report.test_bits_per_char,
            ),
        ] {
            if let Some(l) = loss {
                let per_byte = per_byte.map_or(String::new(), |b| format!("  bits/byte {b:.4}"));
                let per_char = per_char.map_or(String::new(), |c| format!("  bits/char {c:.4}"));
                println!(
                    "{name:>10}  loss {l:.4}  perplexity {:.3}{per_byte}{per_char}",
                    l.exp()
                );
            }
        }
    }
    Ok(())
}

/// A BERT reading of the `--config` flag for fine-tuning from scratch.
#[derive(clap::Args, Serialize)]
pub struct ClassifyArgs {
    /// `text<TAB>label` lines to learn from.
    #[arg(long)]
    train: PathBuf,
    /// `text<TAB>label` lines to score after each epoch.
    #[arg(long)]
    valid: PathBuf,
    /// A pretrained BERT (ours, `bert-mlm`, or a Hugging Face folder); without it, a fresh
    /// `--config` model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// tiny, base or a JSON BertConfig (only without --checkpoint).
    #[arg(long, default_value = "tiny")]
    config: String,
    /// tokenizer.json or vocab.txt (default: the checkpoint's tokenizer.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Where the classifier, metrics.jsonl and report.json go.
    #[arg(long)]
    output: PathBuf,
    /// Passes over the training file.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest input in tokens.
    #[arg(long, default_value_t = 128)]
    max_seq_length: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Fraction of the steps warming up.
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Seed of the head, the shuffles and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to compute.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    #[serde(skip)]
    device: DeviceSpec,
}

pub fn run_finetune(command: FinetuneCommand) -> Result<()> {
    let FinetuneCommand::Classify(args) = command;
    let tokenizer_path = args
        .tokenizer
        .clone()
        .or_else(|| args.checkpoint.as_ref().map(|c| c.join("tokenizer.json")))
        .context("give --tokenizer (or a --checkpoint that carries tokenizer.json)")?;
    let tokenizer = lmforge_dataset::open_tokenizer(&tokenizer_path)?;
    let device = args.device.resolve()?.autodiff();
    let bert = match &args.checkpoint {
        Some(dir) => load_bert(dir, &device)?,
        None => {
            let common_like = BertConfig::tiny(tokenizer.vocab_size());
            let config = match args.config.as_str() {
                "tiny" => common_like,
                "base" => BertConfig {
                    vocab_size: tokenizer.vocab_size(),
                    ..BertConfig::base()
                },
                path => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--config {path}"))?;
                    serde_json::from_str(&text).with_context(|| format!("--config {path}"))?
                }
            };
            config.validate()?;
            config.init(&device, args.seed)?
        }
    };
    if bert.config().vocab_size < tokenizer.vocab_size() {
        bail!(
            "the model's vocabulary ({}) is smaller than the tokenizer's ({})",
            bert.config().vocab_size,
            tokenizer.vocab_size()
        );
    }
    let train = read_text_classification(&args.train)?;
    let valid = read_text_classification(&args.valid)?;
    let config = ClassifyConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        max_seq_length: args.max_seq_length.min(bert.config().max_seq_len),
        lr: args.lr,
        warmup_ratio: args.warmup_ratio,
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        clip_grad: Some(1.0),
        seed: args.seed,
        output: args.output.clone(),
        progress: true,
    };
    let stop = ctrl_c();
    let (_, report) = finetune_classify(
        bert,
        tokenizer.as_ref(),
        (&args.train, &train),
        (&args.valid, &valid),
        &config,
        &device,
        &stop,
    )?;
    if let Some(json) = tokenizer_path
        .extension()
        .is_some_and(|e| e == "json")
        .then(|| std::fs::read(&tokenizer_path))
        .transpose()?
    {
        lmforge_model::checkpoint::write_atomic(&args.output.join("tokenizer.json"), &json)?;
    }
    println!(
        "accuracy {:.4}  macro F1 {:.4}  ({} validation examples, {} steps, {:.1} s)",
        report.valid.accuracy,
        report.valid.macro_f1,
        report.valid.examples,
        report.steps,
        report.seconds
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>8}",
        "label", "precision", "recall", "F1", "support"
    );
    for c in &report.valid.classes {
        println!(
            "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    Ok(())
}
