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
    Train(TrainArgs),
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
    /// The count file to write.
    #[arg(long)]
    output: PathBuf,
    /// This rank's share of the input files (default: SLURM_ARRAY_TASK_ID), with --ranks.
    #[arg(long)]
    rank: Option<usize>,
    /// Ranks sharing the input (whole files, contiguous, about equal bytes).
    #[arg(long)]
    ranks: Option<usize>,
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
    let input = if args.counts.is_empty() {
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
        for path in &args.counts {
            trainer.read_counts(path)?;
            let header = lmforge_bpe::counts::CountReader::open(path)?
                .header()
                .clone();
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

fn count(args: &CountArgs) -> Result<()> {
    let start = Instant::now();
    let (files, rank) =
        crate::sharding::rank_files(args.corpus.input.clone(), args.rank, args.ranks)?;
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
    trainer.write_counts(&args.output)?;
    // The report is written last: beside the count file, it says the rank finished, and for
    // which share of which inputs.
    let report = serde_json::json!({
        "output": args.output,
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
    let mut path = args.output.as_os_str().to_owned();
    path.push(".report.json");
    crate::output::write_json(Path::new(&path), &report)?;
    println!(
        "{}: {} distinct pre-tokens from {} texts in {} files",
        args.output.display(),
        trainer.distinct_pre_tokens(),
        input.texts,
        files.len()
    );
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
    let bpe = load(&args.tokenizer.tokenizer, &args.tokenizer.flavour)?;
    let out = &args.output;
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
