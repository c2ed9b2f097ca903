//! `lmforge bpe`: train a byte-level BPE tokenizer, encode and decode with one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use lmforge_bpe::{Allowed, Bpe, BpeTrainer, Flavour};

use crate::{lines, training};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Learn a vocabulary from text, jsonl, .gz or .zst files; write tokenizer.json (and a
    /// JSON report next to it).
    Train(Box<TrainArgs>),
    /// Count the pre-tokens of a corpus (or of rank i's share of it) into a count file, for
    /// `reduce` and `train --counts`.
    Count(CountArgs),
    /// Sum count files (every rank's) into one.
    Reduce(ReduceArgs),
    /// Print the ids of each input line, space-separated, one line per input line.
    Encode(EncodeArgs),
    /// Print the text of each input line of space-separated ids.
    Decode(DecodeArgs),
    /// Rewrite a tokenizer in another format: tokenizer.json, a .tiktoken rank file, or
    /// vocab.json + merges.txt when the output is a directory (ending in `/`).
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// tokenizer.json path, a .tiktoken path, or a directory (ending in `/`) for vocab.json +
    /// merges.txt.
    #[arg(long)]
    output: PathBuf,
}

#[derive(clap::Args)]
pub struct CountArgs {
    #[command(flatten)]
    corpus: training::Corpus,
    #[command(flatten)]
    pre: PreTokenizing,
    /// The count file to write (a task of a plan, with --work, writes into its task folder).
    #[arg(long, required_unless_present = "work")]
    output: Option<PathBuf>,
    /// This rank's share of the input files (default: SLURM_ARRAY_TASK_ID), with --ranks.
    #[arg(long)]
    rank: Option<usize>,
    /// Ranks sharing the input (whole files, contiguous, about equal bytes).
    #[arg(long)]
    ranks: Option<usize>,
    /// Run as a task of `bpe train --ranks`'s plan in this work folder: the counts are
    /// committed to WORK/bpe-count/task-NNNNN/ with a completion marker.
    #[arg(long, requires = "ranks", conflicts_with = "output")]
    work: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReduceArgs {
    /// Count files, in rank order.
    #[arg(long, num_args = 1.., required = true)]
    counts: Vec<PathBuf>,
    /// The summed count file.
    #[arg(long)]
    output: PathBuf,
}

/// What pre-token counts depend on.
#[derive(clap::Args)]
pub struct PreTokenizing {
    /// Comma-separated special tokens, appended after the merges.
    #[arg(long, default_value = "<|endoftext|>", value_delimiter = ',')]
    special_tokens: Vec<String>,
    /// Pre-tokenization: gpt2, cl100k, o200k, or a regex.
    #[arg(long, default_value = "gpt2")]
    pattern: String,
}

impl PreTokenizing {
    /// The flags that give these settings, for a task's command line.
    fn flags(&self) -> Vec<String> {
        vec![
            "--special-tokens".into(),
            self.special_tokens.join(","),
            "--pattern".into(),
            self.pattern.clone(),
        ]
    }

    /// What counts depend on besides the files: a count plan's parameters.
    fn params(&self, json_key: &str) -> serde_json::Value {
        serde_json::json!({
            "json_key": json_key,
            "special_tokens": self.special_tokens,
            "pattern": self.pattern,
        })
    }

    fn builder(&self) -> lmforge_bpe::BpeTrainerBuilder {
        BpeTrainer::builder()
            .special_tokens(
                self.special_tokens
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned(),
            )
            .pattern(pattern(&self.pattern))
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    corpus: training::Corpus,
    /// Train on count files (`lmforge bpe count`/`reduce`) instead of reading --input.
    #[arg(long, num_args = 1.., conflicts_with = "input")]
    counts: Vec<PathBuf>,
    /// Total vocabulary size: 256 bytes + merges + special tokens.
    #[arg(long, default_value_t = 32_000)]
    vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    #[command(flatten)]
    pre: PreTokenizing,
    /// No token longer than this many bytes.
    #[arg(long)]
    max_token_length: Option<usize>,
    #[command(flatten)]
    out: training::Output,
    /// With --ranks: count as a job array of ranks (whole files each), reduce, train once.
    #[command(flatten)]
    shard: crate::sharding::ShardArgs,
}

/// How special-token text in the input is treated.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Specials {
    /// An error naming the line (tiktoken's default).
    Error,
    /// Encoded as the special token's id.
    Allow,
    /// Encoded as ordinary text.
    Text,
}

#[derive(clap::Args)]
pub struct TokenizerArgs {
    /// tokenizer.json, a directory with vocab.json + merges.txt, or a .tiktoken(.gz) file.
    #[arg(long)]
    tokenizer: PathBuf,
    /// For vocab.json/merges.txt and .tiktoken files: gpt2, cl100k or o200k (pattern and
    /// special tokens).
    #[arg(long, default_value = "gpt2")]
    flavour: String,
    /// Input file (default: standard input).
    #[arg(long)]
    input: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// What to do with special-token text in the input.
    #[arg(long, value_enum, default_value = "error")]
    special: Specials,
}

#[derive(clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    tokenizer: TokenizerArgs,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => train(&args),
        Command::Count(args) => count(&args),
        Command::Reduce(args) => {
            let header = lmforge_bpe::counts::reduce(&args.counts, &args.output)?;
            println!(
                "{}: {} distinct pre-tokens from {} texts, {:.1} MB, in {} count files",
                args.output.display(),
                header.records,
                header.texts,
                header.bytes as f64 / 1e6,
                args.counts.len()
            );
            Ok(())
        }
        Command::Encode(args) => encode(&args),
        Command::Decode(args) => decode(&args),
        Command::Convert(args) => convert(&args),
    }
}

/// A flavour's pattern by name, or the argument itself as a regex.
fn pattern(name: &str) -> &str {
    match name.parse::<Flavour>() {
        Ok(flavour) => flavour.pattern(),
        Err(_) => name,
    }
}

fn train(args: &TrainArgs) -> Result<()> {
    let start = Instant::now();
    let mut trainer = args
        .pre
        .builder()
        .vocab_size(args.vocab_size)
        .min_frequency(args.min_frequency)
        .max_token_length(args.max_token_length)
        .build()?;
    let ranked;
    let counts = match args.shard.ranks {
        Some(ranks) => {
            ranked = [count_ranks(args, ranks)?];
            &ranked[..]
        }
        None => &args.counts[..],
    };
    let input = if counts.is_empty() {
        training::read(&args.corpus, |batch, stats| {
            trainer.feed(batch);
            format!(
                "{} texts, {:.1} MB, {} distinct pre-tokens",
                stats.texts,
                stats.bytes as f64 / 1e6,
                trainer.distinct_pre_tokens()
            )
        })?
    } else {
        let mut stats = crate::corpus::ReadStats::default();
        for path in counts {
            let header = trainer.read_counts(path)?;
            stats.files += 1;
            stats.texts += header.texts;
            stats.bytes += header.bytes;
        }
        stats
    };
    let read_seconds = start.elapsed().as_secs_f64();
    let ((bpe, train), merge_seconds) = training::with_bar("merges", |progress| {
        Ok(trainer.train_with_progress(progress)?)
    })?;
    bpe.save(&args.out.output)?;
    let report = training::Report {
        output: &args.out.output,
        seconds: start.elapsed().as_secs_f64(),
        read_seconds,
        merge_seconds,
        input,
        train,
    };
    let report_path = training::write_report(&args.out, &report)?;
    println!(
        "{}: {} tokens ({} merges{}) from {} texts, {:.1} MB, {} distinct pre-tokens in {:.2} s \
         (read {:.2} s, merges {:.2} s); report {}",
        args.out.output.display(),
        report.train.vocab_size,
        report.train.merges,
        report
            .train
            .stopped_early
            .as_deref()
            .map(|why| format!(", stopped early: {why}"))
            .unwrap_or_default(),
        report.input.texts,
        report.input.bytes as f64 / 1e6,
        report.train.distinct_pre_tokens,
        report.seconds,
        read_seconds,
        merge_seconds,
        report_path.display()
    );
    Ok(())
}

/// `bpe train --ranks N`: the count tasks as a job array over the work folder (finished
/// ranks kept), their counts reduced in rank order into one file, which is returned.
fn count_ranks(args: &TrainArgs, ranks: usize) -> Result<PathBuf> {
    use crate::sharding::{FilePlan, absolute, program};
    let work = absolute(&args.shard.work_for(&args.out.output))?;
    let params = args.pre.params(&args.corpus.json_key);
    let plan = FilePlan::new("bpe-count", ranks, params, &args.corpus.input)?;
    plan.write(&work)?;
    let mut task_args = vec!["bpe".to_string(), "count".into(), "--input".into()];
    task_args.extend(plan.inputs.iter().map(|i| i.file.display().to_string()));
    task_args.extend(["--json-key".into(), args.corpus.json_key.clone()]);
    task_args.extend(args.pre.flags());
    task_args
        .extend(["--ranks", &ranks.to_string(), "--rank", "{task}", "--work"].map(String::from));
    task_args.push(work.display().to_string());
    let job = lmforge_executor::Job {
        name: "bpe-count".into(),
        program: program()?,
        args: task_args,
        pending: plan.pending(&work)?,
        tasks: plan.working(),
    };
    args.shard.run(&[job], &work, plan.working())?;
    let counts: Vec<PathBuf> = plan
        .finished(&work)?
        .into_iter()
        .map(|dir| dir.join("counts"))
        .collect();
    let all = work.join("all.counts");
    let header = lmforge_bpe::counts::reduce(&counts, &all)?;
    eprintln!(
        "bpe count: {ranks} ranks, {} distinct pre-tokens from {} texts reduced into {}",
        header.records,
        header.texts,
        all.display()
    );
    Ok(all)
}

fn count(args: &CountArgs) -> Result<()> {
    let start = Instant::now();
    // A task of a plan checks the plan and writes into its hidden task folder.
    let task = match &args.work {
        Some(work) => {
            let ranks = args.ranks.context("--work needs --ranks")?;
            let rank = lmforge_executor::rank::from_env(args.rank)?;
            let params = args.pre.params(&args.corpus.json_key);
            let plan =
                crate::sharding::FilePlan::new("bpe-count", ranks, params, &args.corpus.input)?;
            Some(plan.task(work, rank)?)
        }
        None => None,
    };
    let (files, rank, output) = match &task {
        Some(task) => (
            task.files()?,
            Some(task.rank_of()),
            task.dir().join("counts"),
        ),
        None => {
            let (files, rank) =
                crate::sharding::rank_files(args.corpus.input.clone(), args.rank, args.ranks)?;
            (
                files,
                rank,
                args.output.clone().context("--output is required")?,
            )
        }
    };
    let mut trainer = args.pre.builder().build()?;
    let corpus = training::Corpus {
        input: files.clone(),
        json_key: args.corpus.json_key.clone(),
    };
    // A rank may get no file (more ranks than files): its counts are empty, not an error.
    let input = if files.is_empty() {
        crate::corpus::ReadStats::default()
    } else {
        crate::corpus::read_batches(&corpus.input, &corpus.json_key, 32 << 20, |batch, _| {
            trainer.feed(batch)
        })?
    };
    trainer.write_counts(&output)?;
    // The report is written last: beside the count file, it says the rank finished, and for
    // which share of which inputs.
    let report = serde_json::json!({
        "output": output,
        "rank": rank.map(|r| r.0),
        "ranks": rank.map(|r| r.1),
        "inputs": args.corpus.input,
        "files": files,
        "texts": input.texts,
        "bytes": input.bytes,
        "skipped": input.skipped,
        "skipped_examples": input.skipped_examples,
        "distinct_pre_tokens": trainer.distinct_pre_tokens(),
        "seconds": start.elapsed().as_secs_f64(),
    });
    let mut path = output.as_os_str().to_owned();
    path.push(".report.json");
    crate::output::write_json(Path::new(&path), &report)?;
    println!(
        "{}: {} distinct pre-tokens from {} texts in {} files",
        output.display(),
        trainer.distinct_pre_tokens(),
        input.texts,
        files.len()
    );
    if let Some(task) = task {
        task.commit()?;
    }
    Ok(())
}

/// Opens a tokenizer in any of the formats lmforge-bpe reads.
pub fn load(path: &Path, flavour: &str) -> Result<Bpe> {
    Ok(lmforge_dataset::open_bpe(
        path,
        flavour.parse::<Flavour>()?,
    )?)
}

fn encode(args: &EncodeArgs) -> Result<()> {
    let bpe = load(&args.tokenizer.tokenizer, &args.tokenizer.flavour)?;
    lines::encode(&args.tokenizer.input, |text| {
        Ok(match args.special {
            Specials::Text => bpe.encode_ordinary(text),
            Specials::Allow => bpe.encode(text, Allowed::All)?,
            Specials::Error => bpe.encode(text, Allowed::None)?,
        })
    })
}

fn decode(args: &DecodeArgs) -> Result<()> {
    let bpe = load(&args.tokenizer.tokenizer, &args.tokenizer.flavour)?;
    lines::decode(&args.tokenizer.input, |ids| Ok(bpe.decode_bytes(ids)?))
}

fn convert(args: &ConvertArgs) -> Result<()> {
    let out = &args.output;
    // A SentencePiece-style tokenizer.json (Llama 2, Mistral) has one form: itself, checked.
    let path = &args.tokenizer.tokenizer;
    if path.extension().is_some_and(|e| e == "json") {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if lmforge_bpe::MetaspaceBpe::is_metaspace_json(&data) {
            let spm =
                lmforge_bpe::MetaspaceBpe::from_tokenizer_json(&data, &path.display().to_string())?;
            if !out.to_string_lossy().ends_with(".json") {
                anyhow::bail!(
                    "{}: a SentencePiece-style tokenizer converts only to a tokenizer.json",
                    path.display()
                );
            }
            let json = lmforge_tokenizer::Tokenizer::to_tokenizer_json(&spm).unwrap_or_default();
            crate::output::write_atomic(out, json.as_bytes())?;
            println!(
                "{}: {} tokens (SentencePiece-style BPE, as read)",
                out.display(),
                lmforge_tokenizer::Tokenizer::vocab_size(&spm)
            );
            return Ok(());
        }
    }
    let bpe = load(&args.tokenizer.tokenizer, &args.tokenizer.flavour)?;
    if out.to_string_lossy().ends_with('/') || out.is_dir() {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        bpe.save_vocab_merges(out)?;
        println!(
            "{}: vocab.json + merges.txt, {} tokens",
            out.display(),
            bpe.vocab_size()
        );
    } else if out.to_string_lossy().ends_with(".tiktoken") {
        let ranks = bpe.to_tiktoken();
        crate::output::write_atomic(out, ranks.as_bytes())?;
        let specials: Vec<String> = bpe
            .special_tokens()
            .iter()
            .map(|(t, id)| format!("{t}={id}"))
            .collect();
        println!(
            "{}: {} ranks; special tokens are not part of the format: {}",
            out.display(),
            ranks.lines().count(),
            specials.join(", ")
        );
    } else {
        bpe.save(out)?;
        println!("{}: {} tokens", out.display(), bpe.vocab_size());
    }
    Ok(())
}
