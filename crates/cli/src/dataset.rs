//! `lmforge convert` (corpus → Megatron `.bin/.idx`, Megatron's `preprocess_data.py` flags)
//! and `lmforge dataset inspect|merge|samples`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lmforge_dataset::{
    ConvertOptions, GptBlend, GptConfig, GptDataset, IndexedDataset, Split, SplitKind, convert,
};
use lmforge_tokenizer::Tokenizer;

/// The tokenizer flags of Megatron: a file, or GPT-2's vocab.json + merges.txt.
#[derive(clap::Args, serde::Serialize, Clone)]
pub struct TokenizerArgs {
    /// tokenizer.json (BPE or WordPiece), a BERT vocab.txt, a .tiktoken rank file, or a
    /// directory with GPT-2's vocab.json + merges.txt.
    #[arg(long, conflicts_with_all = ["vocab_file", "merge_file"])]
    pub tokenizer: Option<PathBuf>,
    /// GPT-2's vocab.json (Megatron's --vocab-file), with --merge-file.
    #[arg(long, requires = "merge_file")]
    pub vocab_file: Option<PathBuf>,
    /// GPT-2's merges.txt (Megatron's --merge-file), with --vocab-file.
    #[arg(long, requires = "vocab_file")]
    pub merge_file: Option<PathBuf>,
}

impl TokenizerArgs {
    /// Opens the tokenizer the flags name.
    pub fn open(&self) -> Result<Box<dyn Tokenizer>> {
        match (&self.tokenizer, &self.vocab_file, &self.merge_file) {
            (Some(path), _, _) => Ok(lmforge_dataset::open_tokenizer(path)?),
            (None, Some(vocab), Some(merges)) => {
                Ok(lmforge_dataset::open_gpt2_files(vocab, merges)?)
            }
            _ => bail!("give --tokenizer, or --vocab-file with --merge-file"),
        }
    }

    fn given(&self) -> bool {
        self.tokenizer.is_some() || self.vocab_file.is_some()
    }
}

/// `lmforge convert`.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Corpus: jsonl (maybe .gz/.zst), parquet, directories of them, or glob patterns.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<String>,
    /// The fields to tokenize; one dataset per key.
    #[arg(long, num_args = 1.., default_value = "text")]
    json_keys: Vec<String>,
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Output prefix: writes {prefix}_{key}_document.{bin,idx} and {prefix}.report.json.
    #[arg(long)]
    output_prefix: PathBuf,
    /// Append the end-of-document token to every document.
    #[arg(long)]
    append_eod: bool,
    /// Tokenizing threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Convert only this rank's share of the input files (default: SLURM_ARRAY_TASK_ID
    /// inside a job array), with --ranks; `lmforge dataset merge` of the ranks in order is the
    /// whole conversion. Without it (and outside an array), --ranks N runs every rank as a job
    /// array and merges them.
    #[arg(long, requires = "ranks")]
    rank: Option<usize>,
    /// --ranks N: ranks sharing the input (whole files, contiguous, about equal bytes); a rank
    /// given --work commits into the plan's task folder instead of --output-prefix.
    #[command(flatten)]
    shard: crate::sharding::ShardArgs,
}

/// `lmforge dataset …`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Counts, token type and length statistics of a dataset; the first documents decoded.
    Inspect(InspectArgs),
    /// Join datasets into one, in order (Megatron's merge_datasets.py).
    Merge(MergeArgs),
    /// Draw GPT training samples as Megatron does and time reading random batches.
    Samples(SamplesArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Dataset prefix (without .bin/.idx).
    #[arg(long)]
    data_path: PathBuf,
    /// Decode the first documents with this tokenizer.
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Documents to show.
    #[arg(long, default_value_t = 3)]
    show: usize,
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Dataset prefixes, in order.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Prefix of the merged dataset.
    #[arg(long)]
    output_prefix: PathBuf,
}

#[derive(clap::Args)]
pub struct SamplesArgs {
    /// Dataset prefix (without .bin/.idx), or Megatron's `weight prefix` pairs for a blend
    /// (`--data-path 0.3 data/fr_text_document 0.7 data/es_text_document`).
    #[arg(long, num_args = 1.., required = true)]
    data_path: Vec<String>,
    /// Tokens per sample.
    #[arg(long, default_value_t = 1024)]
    seq_length: usize,
    /// Train/valid/test weights.
    #[arg(long, default_value = "969,30,1")]
    split: String,
    /// Seed of the shuffles (Megatron's --seed).
    #[arg(long, default_value_t = 1234)]
    seed: u32,
    /// Samples to build the train split for (default: one epoch).
    #[arg(long)]
    train_samples: Option<u64>,
    /// Rows per batch.
    #[arg(long, default_value_t = 8)]
    micro_batch_size: usize,
    /// Random batches to read for the timing.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Where the index caches go (default: beside the dataset, in {prefix}_cache/).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Decode the first sample with this tokenizer.
    #[command(flatten)]
    tokenizer: TokenizerArgs,
}

/// What a conversion plan's tasks depend on besides their files.
fn convert_params(args: &ConvertArgs) -> Result<serde_json::Value> {
    let tokenizer: Vec<&PathBuf> = [
        &args.tokenizer.tokenizer,
        &args.tokenizer.vocab_file,
        &args.tokenizer.merge_file,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut files = Vec::new();
    for file in tokenizer {
        files.push(crate::sharding::fingerprint_file(file)?);
    }
    Ok(serde_json::json!({
        "json_keys": args.json_keys,
        "append_eod": args.append_eod,
        "tokenizer": files,
    }))
}

pub fn run_convert(args: &ConvertArgs) -> Result<()> {
    // Opened first: a bad tokenizer is named before any input or job array is looked at.
    let tokenizer = args.tokenizer.open()?;
    let all = lmforge_corpus::expand(&args.input)?;
    let task_index = args
        .shard
        .ranks
        .and_then(|_| lmforge_executor::rank::from_env(args.rank).ok());
    if let (Some(ranks), None) = (args.shard.ranks, task_index) {
        return convert_ranks(args, all, ranks);
    }
    // A task of a plan (--work) checks the plan and writes into its hidden task folder.
    let task = match (&args.shard.work, args.shard.ranks, task_index) {
        (Some(work), Some(ranks), Some(rank)) => {
            let plan =
                crate::sharding::FilePlan::new("convert", ranks, convert_params(args)?, &all)?;
            Some(plan.task(work, rank)?)
        }
        _ => None,
    };
    let (files, rank, prefix) = match &task {
        Some(task) => (
            task.files()?,
            Some(task.rank_of()),
            task.dir().join("corpus"),
        ),
        None => {
            let (files, rank) = crate::sharding::rank_files(all, task_index, args.shard.ranks)?;
            (files, rank, args.output_prefix.clone())
        }
    };
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let options = ConvertOptions {
        json_keys: args.json_keys.clone(),
        append_eod: args.append_eod,
        workers: args.workers,
        allow_empty: rank.is_some(),
        ..ConvertOptions::default()
    };
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:30} {percent:>3}% {msg} [{elapsed}<{eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let report = convert(files, tokenizer.as_ref(), &prefix, &options, &mut |p| {
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(p.file_bytes);
        bar.set_message(format!(
            "{} documents, {} tokens, {:.1} MB/s of text",
            p.documents,
            p.tokens,
            p.bytes as f64 / 1e6 / secs,
        ));
    })?;
    bar.finish_and_clear();
    let mut path = prefix.as_os_str().to_owned();
    path.push(".report.json");
    let path = PathBuf::from(path);
    let mut json = serde_json::to_value(&report)?;
    if let Some((rank, ranks)) = rank {
        json["rank"] = rank.into();
        json["ranks"] = ranks.into();
        json["inputs"] = serde_json::to_value(&args.input)?;
    }
    crate::output::write_json(&path, &json)?;
    print_outputs(&report.outputs);
    println!(
        "converted {} documents ({} skipped) in {:.1} s: {:.1} MB/s with {} workers; report {}",
        report.documents,
        report.skipped,
        report.seconds,
        report.mb_per_s,
        report.workers,
        path.display()
    );
    if let Some(task) = task {
        task.commit()?;
    }
    Ok(())
}

/// `convert --ranks N`: every rank as a job array over the work folder (finished ranks
/// kept), then each key's datasets merged in rank order into --output-prefix, and one report.
fn convert_ranks(args: &ConvertArgs, files: Vec<PathBuf>, ranks: usize) -> Result<()> {
    use crate::sharding::{FilePlan, absolute, program};
    let start = Instant::now();
    let work = absolute(&args.shard.work_for(&args.output_prefix))?;
    let plan = FilePlan::new("convert", ranks, convert_params(args)?, &files)?;
    plan.write(&work)?;
    let mut task_args = vec!["convert".to_string(), "--input".into()];
    task_args.extend(plan.inputs.iter().map(|i| i.file.display().to_string()));
    task_args.push("--json-keys".into());
    task_args.extend(args.json_keys.iter().cloned());
    for (flag, path) in [
        ("--tokenizer", &args.tokenizer.tokenizer),
        ("--vocab-file", &args.tokenizer.vocab_file),
        ("--merge-file", &args.tokenizer.merge_file),
    ] {
        if let Some(path) = path {
            task_args.extend([flag.into(), absolute_file(path)?]);
        }
    }
    if args.append_eod {
        task_args.push("--append-eod".into());
    }
    let workers = match args.workers {
        0 => args.shard.threads_per_task(plan.working()),
        n => n,
    };
    if workers > 0 {
        task_args.extend(["--workers".into(), workers.to_string()]);
    }
    // A task writes into its folder; the prefix it is given is only for its log.
    task_args.extend([
        "--output-prefix".into(),
        absolute_file(&args.output_prefix)?,
    ]);
    task_args.extend(["--ranks", &ranks.to_string(), "--rank", "{task}"].map(String::from));
    task_args.extend(["--work".into(), work.display().to_string()]);
    let job = lmforge_executor::Job {
        name: "convert".into(),
        program: program()?,
        args: task_args,
        pending: plan.pending(&work)?,
        tasks: plan.working(),
    };
    args.shard.run(&[job], &work, plan.working())?;
    let dirs = plan.finished(&work)?;
    if let Some(dir) = args
        .output_prefix
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The ranks' reports summed into the one a single process writes, plus the ranks.
    let mut reports = Vec::new();
    for dir in &dirs {
        let path = dir.join("corpus.report.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        reports.push(
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("parsing {}", path.display()))?,
        );
    }
    let sum = |field: &str| -> u64 { reports.iter().filter_map(|r| r[field].as_u64()).sum() };
    let examples: Vec<serde_json::Value> = reports
        .iter()
        .filter_map(|r| r["skipped_examples"].as_array())
        .flatten()
        .take(10)
        .cloned()
        .collect();
    if sum("documents") == 0 {
        bail!(
            "no documents in {} input file(s) ({} skipped): nothing written",
            files.len(),
            sum("skipped")
        );
    }
    let mut outputs = Vec::new();
    for key in &args.json_keys {
        let inputs: Vec<PathBuf> = dirs
            .iter()
            .map(|d| lmforge_dataset::output_prefix(&d.join("corpus"), key))
            .collect();
        let output = lmforge_dataset::output_prefix(&args.output_prefix, key);
        outputs.push(lmforge_dataset::merge(&inputs, &output)?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let bytes = sum("bytes");
    let report = serde_json::json!({
        "inputs": files,
        "outputs": outputs,
        "options": reports.first().map(|r| r["options"].clone()),
        "vocab_size": reports.first().map(|r| r["vocab_size"].clone()),
        "documents": sum("documents"),
        "skipped": sum("skipped"),
        "skipped_examples": examples,
        "tokens": sum("tokens"),
        "bytes": bytes,
        "seconds": seconds,
        "mb_per_s": bytes as f64 / 1e6 / seconds.max(1e-9),
        "ranks": ranks,
        "work": work,
        "rank_seconds": reports.iter().map(|r| r["seconds"].clone()).collect::<Vec<_>>(),
    });
    let mut path = args.output_prefix.as_os_str().to_owned();
    path.push(".report.json");
    let path = PathBuf::from(path);
    crate::output::write_json(&path, &report)?;
    print_outputs(&outputs);
    println!(
        "converted {} documents ({} skipped) with {ranks} ranks in {seconds:.1} s; report {}",
        sum("documents"),
        sum("skipped"),
        path.display()
    );
    Ok(())
}

/// One line per dataset written.
fn print_outputs(outputs: &[lmforge_dataset::Summary]) {
    for out in outputs {
        println!(
            "{}: {} documents, {} tokens ({:?})",
            out.bin.with_extension("").display(),
            out.documents,
            out.tokens,
            out.dtype
        );
    }
}

fn absolute_file(path: &Path) -> Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| format!("resolving {}", path.display()))?
        .display()
        .to_string())
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Inspect(args) => inspect(&args),
        Command::Merge(args) => {
            if let Some(dir) = args
                .output_prefix
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let summary = lmforge_dataset::merge(&args.input, &args.output_prefix)?;
            let mut report = args.output_prefix.as_os_str().to_owned();
            report.push(".report.json");
            let inputs: Vec<String> = args.input.iter().map(|p| p.display().to_string()).collect();
            crate::output::write_json(
                Path::new(&report),
                &serde_json::json!({ "inputs": inputs, "output": summary }),
            )?;
            println!(
                "{}: {} documents, {} sequences, {} tokens ({:?})",
                args.output_prefix.display(),
                summary.documents,
                summary.sequences,
                summary.tokens,
                summary.dtype
            );
            Ok(())
        }
        Command::Samples(args) => samples(&args),
    }
}

fn inspect(args: &InspectArgs) -> Result<()> {
    let data = IndexedDataset::open(&args.data_path)?;
    let tokenizer = if args.tokenizer.given() {
        Some(args.tokenizer.open()?)
    } else {
        None
    };
    let lengths = data.lengths();
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    let stats = serde_json::json!({
        "dtype": data.dtype(),
        "documents": data.num_documents(),
        "sequences": data.len(),
        "tokens": data.num_tokens(),
        "multimodal": data.is_multimodal(),
        "sequence_tokens": {
            "min": sorted.first(),
            "median": sorted.get(sorted.len() / 2),
            "max": sorted.last(),
        },
    });
    let mut out = std::io::stdout().lock();
    let printed = (|| -> std::io::Result<()> {
        writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
        if let Some(tokenizer) = &tokenizer {
            for d in 0..args.show.min(data.num_documents()) {
                let ids: Vec<u32> = data
                    .document(d)
                    .flat_map(|s| data.get(s).to_vec())
                    .collect();
                writeln!(out, "--- document {d}: {} tokens", ids.len())?;
                let text = tokenizer.decode(&ids).map_err(std::io::Error::other)?;
                writeln!(out, "{text}")?;
            }
        }
        Ok(())
    })();
    match printed {
        // `| head` closing the pipe is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn default_cache(prefix: &Path) -> PathBuf {
    let mut dir = prefix.as_os_str().to_owned();
    dir.push("_cache");
    PathBuf::from(dir)
}

fn samples(args: &SamplesArgs) -> Result<()> {
    let blend = lmforge_dataset::blend::parse_data_path(&args.data_path)?;
    let split = Split::parse(&args.split)?;
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| default_cache(&blend[0].0));
    let tokenizer = if args.tokenizer.given() {
        Some(args.tokenizer.open()?)
    } else {
        None
    };
    let mut config = GptConfig::new(args.seq_length, args.seed);
    config.eod_id = tokenizer.as_ref().and_then(|t| t.eod_id());
    config.pad_id = tokenizer.as_ref().and_then(|t| t.pad_id());
    let start = Instant::now();
    type Sampler = Box<dyn Fn(&[usize]) -> lmforge_dataset::GptBatch>;
    let (len, sampler): (usize, Sampler) = if blend.len() == 1 {
        let data = Arc::new(IndexedDataset::open(&blend[0].0)?);
        let Some(range) = split.ranges(data.len())[0]
            .clone()
            .filter(|r| !r.is_empty())
        else {
            bail!("split {:?} leaves no training documents", args.split);
        };
        let train = GptDataset::build(
            data,
            SplitKind::Train,
            range,
            args.train_samples,
            config,
            Some(&cache),
        )?;
        let info = train.info();
        println!(
            "train: {} samples of {} tokens, {} epoch(s), {} tokens per epoch ({} in {:.2} s; cache {})",
            info.samples,
            args.seq_length,
            info.epochs,
            info.tokens_per_epoch,
            if info.from_cache { "loaded" } else { "built" },
            start.elapsed().as_secs_f64(),
            cache.display()
        );
        (train.len(), Box::new(move |indices| train.batch(indices)))
    } else {
        let Some(samples) = args.train_samples else {
            bail!("a weighted --data-path needs --train-samples (the size of the mixture)");
        };
        let mixture = GptBlend::build(
            &blend,
            &split,
            SplitKind::Train,
            samples,
            &config,
            Some(&cache),
        )?;
        println!(
            "train: {} samples of {} tokens mixed from {} datasets ({:.2} s; cache {})",
            mixture.len(),
            args.seq_length,
            blend.len(),
            start.elapsed().as_secs_f64(),
            cache.display()
        );
        (
            mixture.len(),
            Box::new(move |indices| mixture.batch(indices)),
        )
    };
    if len == 0 {
        bail!("no training samples: the split holds fewer than seq_length + 1 tokens");
    }
    let first = sampler(&[0]);
    if let Some(tokenizer) = &tokenizer {
        println!("--- sample 0");
        println!("{}", tokenizer.decode(&first.tokens)?);
    }
    // Random batches, as a shuffled sampler reads them.
    let mut state = u64::from(args.seed) | 1;
    let mut draw = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let start = Instant::now();
    let mut tokens = 0usize;
    for _ in 0..args.batches {
        let indices: Vec<usize> = (0..args.micro_batch_size).map(|_| draw(len)).collect();
        tokens += sampler(&indices).tokens.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read {} random batches of {}: {:.2} M tokens/s on one thread",
        args.batches,
        args.micro_batch_size,
        tokens as f64 / secs.max(1e-9) / 1e6
    );
    Ok(())
}
