//! `lmforge wordpiece`: train a BERT WordPiece tokenizer by likelihood, encode and decode.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use lmforge_wordpiece::{
    BertNormalizer, Direction, Score, Truncation, TruncationStrategy, WordPiece, WordPieceTrainer,
};

use crate::{lines, training};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Learn a vocabulary from text, jsonl, .gz or .zst files; write tokenizer.json (and a
    /// JSON report next to it, and vocab.txt with `--vocab-txt`).
    Train(TrainArgs),
    /// Print the ids of each input line, space-separated, one line per input line, through
    /// the tokenizer's template ([CLS] … [SEP]), truncation and padding.
    Encode(EncodeArgs),
    /// Print the text of each input line of space-separated ids.
    Decode(DecodeArgs),
    /// Rewrite a tokenizer: a vocab.txt as tokenizer.json (with BERT's normalizer, template
    /// and decoder), or a tokenizer.json's vocabulary as vocab.txt (any other output name).
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Truncate encodings to this many tokens (written into tokenizer.json).
    #[arg(long)]
    max_length: Option<usize>,
    /// tokenizer.json, or vocab.txt (any name not ending in .json).
    #[arg(long)]
    output: PathBuf,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    corpus: training::Corpus,
    /// Total vocabulary size, special tokens and alphabet included.
    #[arg(long, default_value_t = 30_000)]
    vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Comma-separated special tokens, ids 0.. ([UNK] is required).
    #[arg(
        long,
        default_value = "[PAD],[UNK],[CLS],[SEP],[MASK]",
        value_delimiter = ','
    )]
    special_tokens: Vec<String>,
    /// Keep only this many most frequent characters (0: all).
    #[arg(long, default_value_t = 1000)]
    limit_alphabet: usize,
    /// What pairs are ranked by: `ratio`, count(ab)/(count(a)·count(b)), or `gain`, the exact
    /// change of the corpus log-likelihood (the ratio weighted by the pair's count).
    #[arg(long, value_enum, default_value = "ratio")]
    score: ScoreArg,
    /// Lowercase the text (uncased BERT).
    #[arg(long)]
    lowercase: bool,
    /// Strip accents (NFD, then drop non-spacing marks).
    #[arg(long)]
    strip_accents: bool,
    /// Truncate encodings to this many tokens (written into tokenizer.json).
    #[arg(long)]
    max_length: Option<usize>,
    /// Also write the vocabulary as BERT's vocab.txt here.
    #[arg(long)]
    vocab_txt: Option<PathBuf>,
    #[command(flatten)]
    out: training::Output,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScoreArg {
    Ratio,
    Gain,
}

#[derive(clap::Args)]
pub struct TokenizerArgs {
    /// A tokenizer.json, or a BERT vocab.txt (any other name).
    #[arg(long)]
    tokenizer: PathBuf,
    /// For a vocab.txt: keep case and accents (default: uncased BERT).
    #[arg(long)]
    cased: bool,
    /// Input file (default: standard input).
    #[arg(long)]
    input: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Only the text's own tokens: no [CLS]/[SEP], truncation or padding.
    #[arg(long)]
    plain: bool,
}

#[derive(clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    tokenizer: TokenizerArgs,
    /// Keep special tokens ([CLS], [SEP], [PAD] …) in the text.
    #[arg(long)]
    keep_special_tokens: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => train(&args),
        Command::Encode(args) => encode(&args),
        Command::Decode(args) => decode(&args),
        Command::Convert(args) => convert(&args),
    }
}

fn train(args: &TrainArgs) -> Result<()> {
    let start = Instant::now();
    let normalizer = BertNormalizer {
        lowercase: args.lowercase,
        strip_accents: Some(args.strip_accents),
        ..BertNormalizer::default()
    };
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(args.vocab_size)
        .min_frequency(args.min_frequency)
        .special_tokens(
            args.special_tokens
                .iter()
                .filter(|s| !s.is_empty())
                .cloned(),
        )
        .limit_alphabet((args.limit_alphabet > 0).then_some(args.limit_alphabet))
        .normalizer(normalizer)
        .score(match args.score {
            ScoreArg::Ratio => Score::Ratio,
            ScoreArg::Gain => Score::LikelihoodGain,
        })
        .build()?;
    let input = training::read(&args.corpus, |batch, stats| {
        trainer.feed(batch);
        format!(
            "{} texts, {:.1} MB, {} distinct words",
            stats.texts,
            stats.bytes as f64 / 1e6,
            trainer.distinct_words()
        )
    })?;
    let read_seconds = start.elapsed().as_secs_f64();
    let ((wp, train), merge_seconds) = training::with_bar("tokens", |progress| {
        Ok(trainer.train_with_progress(progress)?)
    })?;
    let wp = wp.with_truncation(args.max_length.map(truncation))?;
    wp.save(&args.out.output)?;
    if let Some(path) = &args.vocab_txt {
        wp.save_vocab(path)?;
    }
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
        "{}: {} tokens ({} merges, alphabet {}{}) from {} texts, {:.1} MB, {} distinct words \
         in {:.2} s (read {:.2} s, merges {:.2} s); report {}",
        args.out.output.display(),
        report.train.vocab_size,
        report.train.merges,
        report.train.alphabet,
        report
            .train
            .stopped_early
            .as_deref()
            .map(|why| format!(", stopped early: {why}"))
            .unwrap_or_default(),
        report.input.texts,
        report.input.bytes as f64 / 1e6,
        report.train.distinct_words,
        report.seconds,
        read_seconds,
        merge_seconds,
        report_path.display()
    );
    Ok(())
}

/// Opens a tokenizer.json, or a vocab.txt with BERT's uncased (or cased) normalizer.
pub fn load(path: &Path, cased: bool) -> Result<WordPiece> {
    if path.extension().is_some_and(|e| e == "json") {
        return Ok(WordPiece::from_tokenizer_json_file(path)?);
    }
    let normalizer = if cased {
        BertNormalizer::cased()
    } else {
        BertNormalizer::default()
    };
    Ok(WordPiece::from_vocab_file(path, normalizer)?)
}

fn encode(args: &EncodeArgs) -> Result<()> {
    let wp = load(&args.tokenizer.tokenizer, args.tokenizer.cased)?;
    lines::encode(&args.tokenizer.input, |text| {
        Ok(if args.plain {
            wp.encode_ordinary(text)
        } else {
            wp.encode(text)?.ids
        })
    })
}

fn decode(args: &DecodeArgs) -> Result<()> {
    let wp = load(&args.tokenizer.tokenizer, args.tokenizer.cased)?;
    lines::decode(&args.tokenizer.input, |ids| {
        Ok(wp.decode(ids, !args.keep_special_tokens)?.into_bytes())
    })
}

/// BERT's truncation: longest first, from the right.
fn truncation(max_length: usize) -> Truncation {
    Truncation {
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: Direction::Right,
    }
}

fn convert(args: &ConvertArgs) -> Result<()> {
    let mut wp = load(&args.tokenizer.tokenizer, args.tokenizer.cased)?;
    if let Some(max_length) = args.max_length {
        wp = wp.with_truncation(Some(truncation(max_length)))?;
    }
    let out = &args.output;
    if out.extension().is_some_and(|e| e == "json") {
        wp.save(out)?;
    } else {
        wp.save_vocab(out)?;
    }
    println!("{}: {} tokens", out.display(), wp.vocab_size());
    Ok(())
}
