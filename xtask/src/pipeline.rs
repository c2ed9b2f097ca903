//! `cargo xtask pipeline`: the journey from the embedded corpus to a model, stage by stage.
//!
//! It runs the stages whose crates exist; each writes a JSON report under `--out`, and the run
//! ends with a summary table. Today: `corpus` (the embedded corpus, verified and measured),
//! `clean` (`lmforge clean`: dedup, languages en/fr/es, cleaning, the French and Spanish
//! blacklists, Gopher filters, into `clean/part-*.jsonl.zst`), `tokenizer` (a 32k byte-level
//! BPE trained on the cleaned corpus by `lmforge bpe train`: tokenizer.json),
//! `convert` (the corpus tokenized into Megatron's `data/corpus_text_document.{bin,idx}` by
//! `lmforge convert`) and `device` (the chosen device opened and a GPT trained one step on it
//! through the `lmforge` binary). Pretraining, quantization and serving are added
//! here as their crates land.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::dataset::{self, LANGUAGES};
use crate::{cargo, flags::Pipeline};

#[derive(Serialize)]
struct LanguageReport {
    documents: usize,
    bytes: usize,
    chars: usize,
    /// Shortest, median and longest document, in bytes.
    min_bytes: usize,
    median_bytes: usize,
    max_bytes: usize,
}

pub fn run(root: &Path, flags: &Pipeline) -> Result<()> {
    let out = root.join(&flags.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut summary = Vec::new();

    let start = Instant::now();
    let datasets = root.join("datasets");
    dataset::verify_checksums(&datasets)?;
    let mut corpus = BTreeMap::new();
    for lang in LANGUAGES {
        let docs = dataset::read_jsonl_gz(&datasets.join(format!("default/{lang}.jsonl.gz")))?;
        let mut sizes: Vec<usize> = docs.iter().map(|d| d.text.len()).collect();
        sizes.sort_unstable();
        corpus.insert(
            lang,
            LanguageReport {
                documents: docs.len(),
                bytes: sizes.iter().sum(),
                chars: docs.iter().map(|d| d.text.chars().count()).sum(),
                min_bytes: sizes.first().copied().unwrap_or(0),
                median_bytes: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
                max_bytes: sizes.last().copied().unwrap_or(0),
            },
        );
    }
    let report = out.join("corpus.json");
    write_atomic(&report, &(serde_json::to_string_pretty(&corpus)? + "\n"))?;
    let detail = corpus
        .iter()
        .map(|(lang, r)| format!("{lang} {} docs {:.1} MB", r.documents, r.bytes as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ");
    summary.push(("corpus", start.elapsed().as_secs_f64(), detail));

    // Built exactly as `cargo xtask test` builds it (whole workspace, test targets included):
    // any other selection unifies dependency features differently and recompiles burn.
    cargo(
        root,
        &[
            "build",
            "--workspace",
            "--all-targets",
            "--locked",
            "--quiet",
        ],
        &[],
    )?;
    let lmforge = crate::target_dir(root).join("debug/lmforge");

    let start = Instant::now();
    let cleaned = out.join("clean");
    let cleaned_arg = cleaned.to_string_lossy().into_owned();
    let default_arg = datasets.join("default").to_string_lossy().into_owned();
    // The seed applied its blacklists to French and Spanish; the English LDNOOBW list would
    // drop most of Shakespeare.
    let blacklists: Vec<String> = ["fr", "es"]
        .iter()
        .map(|l| {
            datasets
                .join(format!("blacklists/{l}.txt"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    run_checked(
        &lmforge,
        &[
            "clean",
            "--input",
            &default_arg,
            "--output",
            &cleaned_arg,
            "--languages",
            "en,fr,es",
            "--blacklist",
            &blacklists[0],
            "--blacklist",
            &blacklists[1],
            "--keep-fields",
            "source",
            "--seed",
            "0",
        ],
    )?;
    let clean_report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cleaned.join("report.json"))?)?;
    let inputs: Vec<String> = clean_report["outputs"]
        .as_array()
        .context("clean report without outputs")?
        .iter()
        .filter_map(|o| o["file"].as_str())
        .map(|f| cleaned.join(f).to_string_lossy().into_owned())
        .collect();
    ensure!(!inputs.is_empty(), "the clean stage kept no document");
    summary.push((
        "clean",
        start.elapsed().as_secs_f64(),
        format!(
            "{} of {} documents kept ({} near duplicates), {:.1} MB, in {cleaned_arg}",
            clean_report["documents_out"],
            clean_report["documents_in"],
            clean_report["dedup"]["near_duplicates"],
            clean_report["bytes_out"].as_f64().unwrap_or(0.0) / 1e6
        ),
    ));

    let start = Instant::now();
    let tokenizer = out.join("tokenizer.json");
    let mut args = vec!["bpe", "train", "--vocab-size", "32000", "--output"];
    let tokenizer_arg = tokenizer.to_string_lossy().into_owned();
    args.push(&tokenizer_arg);
    args.push("--input");
    args.extend(inputs.iter().map(String::as_str));
    run_checked(&lmforge, &args)?;
    let trained: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("tokenizer.report.json"))?)?;
    summary.push((
        "tokenizer",
        start.elapsed().as_secs_f64(),
        format!(
            "{} tokens, {} distinct pre-tokens, in {}",
            trained["vocab_size"], trained["distinct_pre_tokens"], tokenizer_arg
        ),
    ));

    let start = Instant::now();
    let prefix = out.join("data/corpus");
    let prefix_arg = prefix.to_string_lossy().into_owned();
    let mut args = vec![
        "convert",
        "--tokenizer",
        &tokenizer_arg,
        "--output-prefix",
        &prefix_arg,
        "--append-eod",
        "--input",
    ];
    args.extend(inputs.iter().map(String::as_str));
    run_checked(&lmforge, &args)?;
    let converted: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("data/corpus.report.json"))?)?;
    summary.push((
        "convert",
        start.elapsed().as_secs_f64(),
        format!(
            "{} documents, {} tokens, {:.1} MB/s, in {prefix_arg}_text_document.{{bin,idx}}",
            converted["documents"],
            converted["tokens"],
            converted["mb_per_s"].as_f64().unwrap_or(0.0)
        ),
    ));

    let start = Instant::now();
    let report = out.join("device.json");
    let report_arg = report.to_string_lossy().into_owned();
    run_checked(
        &lmforge,
        &["device", "--device", &flags.device, "--json", &report_arg],
    )?;
    summary.push((
        "device",
        start.elapsed().as_secs_f64(),
        format!("report in {report_arg}"),
    ));

    println!("\n{:<10} {:>9}  detail", "stage", "seconds");
    for (stage, seconds, detail) in &summary {
        println!("{stage:<10} {seconds:>9.1}  {detail}");
    }
    println!(
        "\nreports in {}; training, quantization and serving stages join the pipeline \
         as their crates land",
        out.display()
    );
    Ok(())
}

fn run_checked(program: &Path, args: &[&str]) -> Result<()> {
    println!("$ {} {}", program.display(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    ensure!(status.success(), "{} failed ({status})", program.display());
    Ok(())
}

/// Writes through a temporary file and a rename, so a report is whole or absent.
fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, contents).with_context(|| format!("writing {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
