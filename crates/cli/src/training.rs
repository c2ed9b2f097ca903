//! What `lmforge bpe train` and `lmforge wordpiece train` share: reading the corpus behind a
//! spinner, a progress bar over the merges, and the JSON report next to the output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::corpus::{self, ReadStats};

/// The corpus a trainer reads (flattened into `train`'s flags).
#[derive(clap::Args)]
pub struct Corpus {
    /// Corpus files: plain text (one text per line), .jsonl; each optionally .gz or .zst.
    #[arg(long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Field of each jsonl object that holds the text.
    #[arg(long, default_value = "text")]
    pub json_key: String,
}

/// Where a trainer writes (flattened into `train`'s flags).
#[derive(clap::Args)]
pub struct Output {
    /// Where to write tokenizer.json.
    #[arg(long)]
    pub output: PathBuf,
    /// The JSON report (default: the output's name with `.report.json`).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// A training run's report: timings and input, then the trainer's own fields.
#[derive(Serialize)]
pub struct Report<'a, T: Serialize> {
    pub output: &'a Path,
    pub seconds: f64,
    pub read_seconds: f64,
    pub merge_seconds: f64,
    pub input: ReadStats,
    #[serde(flatten)]
    pub train: T,
}

/// Reads `files` in 32 MB batches into `feed`, which returns what the spinner shows; an empty
/// corpus is an error naming the files.
pub fn read(
    corpus: &Corpus,
    mut feed: impl FnMut(&[String], &ReadStats) -> String,
) -> Result<ReadStats> {
    let files = &corpus.input;
    if files.is_empty() {
        bail!("--input is required: the corpus to train on");
    }
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} reading {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let input = corpus::read_batches(files, &corpus.json_key, 32 << 20, |batch, stats| {
        bar.set_message(feed(batch, stats));
    })?;
    bar.finish_and_clear();
    if input.texts == 0 {
        bail!(
            "no text in {} ({} lines skipped): nothing to train on",
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            input.skipped
        );
    }
    Ok(input)
}

/// Runs `merge` with a progress bar it reports `(done, wanted)` to; returns its result and
/// how long it took.
pub fn with_bar<T>(
    unit: &str,
    merge: impl FnOnce(&mut dyn FnMut(usize, usize)) -> Result<T>,
) -> Result<(T, f64)> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit} [{{elapsed}}<{{eta}}]"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let result = merge(&mut |done, wanted| {
        bar.set_length(wanted as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok((result, start.elapsed().as_secs_f64()))
}

/// Writes the report (to `--report`, or next to the output as `<name>.report.json`); returns
/// its path.
pub fn write_report<T: Serialize>(out: &Output, report: &Report<'_, T>) -> Result<PathBuf> {
    let path = out
        .report
        .clone()
        .unwrap_or_else(|| out.output.with_extension("report.json"));
    crate::output::write_json(&path, report)?;
    Ok(path)
}
