//! `lmforge clean`: the corpus-cleaning stage (crates/clean) with its flags, a progress bar per
//! pass, the report table at the end, and Ctrl-C that leaves nothing half-written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lmforge_clean::minhash::Bands;
use lmforge_clean::quality::Gopher;
use lmforge_clean::sharded::{Plan, Step, run_task};
use lmforge_clean::{Cleaner, Config, Dedup, Language, OutputFormat, Pass, Report};
use lmforge_executor::Job;

use crate::sharding::{ShardArgs, absolute, program};

/// `lmforge clean`.
#[derive(clap::Args)]
pub struct Args {
    /// Corpus: jsonl (maybe .gz/.zst), parquet, directories of them, or glob patterns.
    #[arg(long, num_args = 1.., required_unless_present_any = ["explain", "step"])]
    input: Vec<String>,
    /// Output directory: part-*.jsonl.zst (or .parquet), duplicates.jsonl, report.json.
    #[arg(long, required_unless_present_any = ["explain", "step"])]
    output: Option<PathBuf>,
    /// Field (jsonl key or parquet column) holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Field holding the document id (file:line when absent).
    #[arg(long, default_value = "id")]
    id_field: String,
    /// Other fields copied to the output when present.
    #[arg(long, value_delimiter = ',')]
    keep_fields: Vec<String>,
    /// Languages to keep (ISO 639-1 or 639-3, comma-separated); empty keeps all, labelled.
    #[arg(long, value_delimiter = ',')]
    languages: Vec<String>,
    /// Lowest language-identification confidence kept.
    #[arg(long, default_value_t = 0.5)]
    language_threshold: f64,
    /// Fewest characters after cleaning.
    #[arg(long, default_value_t = 256)]
    min_chars: usize,
    /// Most characters after cleaning.
    #[arg(long)]
    max_chars: Option<usize>,
    /// Blacklist file (`fr.txt` is for French documents) or directory of `<lang>.txt`; repeat.
    #[arg(long)]
    blacklist: Vec<PathBuf>,
    /// Drop a document with at least this many distinct blacklisted terms.
    #[arg(long, default_value_t = 2)]
    max_blacklisted: usize,
    /// Dedup: none, exact, or minhash (exact, then near).
    #[arg(long, default_value = "minhash", value_parser = ["none", "exact", "minhash"])]
    dedup: String,
    /// Near-dedup Jaccard threshold.
    #[arg(long, default_value_t = 0.8)]
    minhash_threshold: f64,
    /// MinHash permutations.
    #[arg(long, default_value_t = 128)]
    minhash_perms: usize,
    /// Words per shingle.
    #[arg(long, default_value_t = 5)]
    ngram: usize,
    /// LSH bands (with --rows; default chosen from the threshold).
    #[arg(long, requires = "rows")]
    bands: Option<usize>,
    /// Values per LSH band.
    #[arg(long, requires = "bands")]
    rows: Option<usize>,
    /// Stages to turn off: language, cleaning, quality (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = ["language", "cleaning", "quality"])]
    skip: Vec<String>,
    /// A JSON file of Gopher thresholds (fields of lmforge_clean::quality::Gopher; missing
    /// ones keep the paper's value, null turns a rule off).
    #[arg(long)]
    quality_config: Option<PathBuf>,
    /// Seed of the MinHash permutations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Output format.
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "parquet"])]
    format: String,
    /// Close a shard after this many MB of text.
    #[arg(long, default_value_t = 256)]
    shard_mb: u64,
    /// Cut the input into parts of about this many MB (plain files by byte range, parquet by
    /// row group, compressed files whole): the unit ranks share out; a shard never spans two.
    /// A fraction (0.01) makes many small parts of a small corpus, to try many ranks.
    #[arg(long, default_value_t = 256.0, value_parser = positive_mb)]
    part_mb: f64,
    #[command(flatten)]
    shard: ShardArgs,
    /// Run one task only: this step of the plan in --work.
    #[arg(long, requires = "work")]
    step: Option<String>,
    /// The task's index (default: SLURM_ARRAY_TASK_ID, or the local executor's LMFORGE_TASK).
    #[arg(long, requires = "step")]
    rank: Option<usize>,
    /// Print the stages in order with their parameters, and exit.
    #[arg(long)]
    explain: bool,
}

impl Args {
    fn config(&self) -> Result<Config> {
        let skip = |stage: &str| self.skip.iter().any(|s| s == stage);
        let quality = if skip("quality") {
            None
        } else if let Some(path) = &self.quality_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                serde_json::from_str::<Gopher>(&text)
                    .with_context(|| format!("{}: not Gopher thresholds", path.display()))?,
            )
        } else {
            Some(Gopher::default())
        };
        Ok(Config {
            text_field: self.text_field.clone(),
            id_field: self.id_field.clone(),
            keep_fields: self.keep_fields.clone(),
            dedup: match self.dedup.as_str() {
                "none" => Dedup::None,
                "exact" => Dedup::Exact,
                _ => Dedup::Minhash,
            },
            minhash: lmforge_clean::Minhash {
                threshold: self.minhash_threshold,
                perms: self.minhash_perms,
                ngram: self.ngram,
                bands: self
                    .bands
                    .zip(self.rows)
                    .map(|(bands, rows)| Bands { bands, rows }),
            },
            language: (!skip("language")).then(|| Language {
                languages: self.languages.clone(),
                threshold: self.language_threshold,
                ..Language::default()
            }),
            cleaning: !skip("cleaning"),
            min_chars: self.min_chars,
            max_chars: self.max_chars,
            blacklists: self.blacklist.clone(),
            max_blacklisted: self.max_blacklisted,
            quality,
            seed: self.seed,
            format: if self.format == "parquet" {
                OutputFormat::Parquet
            } else {
                OutputFormat::Jsonl
            },
            shard_bytes: self.shard_mb.max(1) << 20,
            part_bytes: ((self.part_mb * f64::from(1u32 << 20)) as u64).max(1),
        })
    }
}

/// Runs `lmforge clean`.
pub fn run(args: &Args) -> Result<()> {
    let config = args.config()?;
    let cleaner = Cleaner::new(config)?;
    if args.explain {
        print!("{}", cleaner.config().explain());
        for (file, language, terms) in cleaner.blacklists() {
            println!(
                "   blacklist {}: {terms} terms, for {}",
                file.display(),
                language.as_deref().unwrap_or("every language")
            );
        }
        return Ok(());
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second Ctrl-C while the first is being honoured kills the process the usual way.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::Relaxed) {
                std::process::exit(130);
            }
        });
    }
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the thread pool")?;
    if let Some(step) = &args.step {
        let Some(work) = &args.shard.work else {
            bail!("--step runs one task of a plan: it needs --work");
        };
        let step = Step::parse(step)?;
        let rank = lmforge_executor::rank::from_env(args.rank)?;
        let started = std::time::Instant::now();
        match pool.install(|| run_task(work, step, rank, &cancel)) {
            Err(lmforge_clean::Error::Interrupted) => {
                eprintln!("interrupted: nothing of task {rank} was committed");
                std::process::exit(130);
            }
            other => other.with_context(|| {
                format!("step `{}` task {rank} of {}", step.name(), work.display())
            })?,
        }
        eprintln!(
            "step `{}` task {rank} done in {:.1} s",
            step.name(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let Some(output) = &args.output else {
        bail!("--output is required");
    };
    let files = lmforge_corpus::expand(&args.input)?;
    if cleaner.config().dedup == Dedup::Minhash {
        let b = cleaner.bands();
        eprintln!(
            "near dedup: {} bands x {} rows for threshold {} with {} permutations \
             (P[candidate] {:.3} at J = {}, {:.3} at J = 0.5)",
            b.bands,
            b.rows,
            args.minhash_threshold,
            args.minhash_perms,
            b.probability(args.minhash_threshold),
            args.minhash_threshold,
            b.probability(0.5)
        );
    }

    if let Some(ranks) = args.shard.ranks {
        let report = sharded(args, cleaner.config().clone(), &files, output, ranks)?;
        return summary(&report, output);
    }
    let bar = ProgressBar::new(1).with_style(
        ProgressStyle::with_template("{prefix:>6} {bar:30} {percent:>3}% {msg} [{elapsed}<{eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |p: &lmforge_clean::Progress| {
        bar.set_length(p.total_bytes.max(1));
        bar.set_position(p.bytes);
        bar.set_prefix(match p.pass {
            Pass::Dedup => "dedup",
            Pass::Filter => "filter",
        });
        bar.set_message(format!("{} documents", p.documents));
    };
    let result = pool.install(|| cleaner.run(&files, output, &progress, &cancel));
    bar.finish_and_clear();
    let report = match result {
        Err(lmforge_clean::Error::Interrupted) => {
            eprintln!("interrupted: {} left as it was", output.display());
            std::process::exit(130);
        }
        other => other?,
    };
    summary(&report, output)
}

/// Plans the sharded run, runs its job arrays, returns the merged report.
fn sharded(
    args: &Args,
    config: Config,
    files: &[PathBuf],
    output: &std::path::Path,
    ranks: usize,
) -> Result<Report> {
    let work = absolute(&args.shard.work_for(output))?;
    let plan = Plan::new(config, files, ranks, output)?;
    plan.write(&work)?;
    eprintln!(
        "sharded: {ranks} ranks over {} parts ({} ranks have parts and run), work folder {}",
        plan.parts.len(),
        plan.working(),
        work.display()
    );
    let threads = match args.threads {
        0 => args.shard.threads_per_task(plan.working()),
        n => n,
    };
    let program = program()?;
    let mut jobs = Vec::new();
    for step in Step::ALL {
        let mut task_args = vec![
            "clean".to_string(),
            "--work".into(),
            work.display().to_string(),
            "--step".into(),
            step.name().into(),
            "--rank".into(),
            "{task}".into(),
        ];
        if threads > 0 {
            task_args.extend(["--threads".into(), threads.to_string()]);
        }
        jobs.push(Job {
            name: format!("clean-{}", step.name()),
            program: program.clone(),
            args: task_args,
            pending: plan.pending(&work, step)?,
            tasks: plan.tasks(step),
        });
    }
    args.shard.run(&jobs, &work, plan.working())?;
    Ok(lmforge_clean::sharded::report(&plan)?)
}

/// The report's table and where it is.
fn summary(report: &Report, output: &std::path::Path) -> Result<()> {
    print!("{}", report.table());
    if report.dedup.near_duplicates + report.dedup.exact_duplicates > 0 {
        println!(
            "dedup: {} exact and {} near duplicates in {} clusters; index {:.0} bytes/document",
            report.dedup.exact_duplicates,
            report.dedup.near_duplicates,
            report.dedup.clusters,
            report.dedup.index_bytes_per_document
        );
    }
    for example in report.malformed.examples.iter().take(5) {
        eprintln!("skipped: {example}");
    }
    println!("wrote {}", output.join("report.json").display());
    Ok(())
}

/// A size in MB: a finite number above zero.
fn positive_mb(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(mb) if mb.is_finite() && mb > 0.0 => Ok(mb),
        _ => Err(format!("{text:?} is not a size in MB above zero")),
    }
}
