//! The end of a run: the summary table on the terminal and `report.md`, both read back from
//! the stages' own JSON reports (so a run whose stages were all skipped reports the same).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::config::Config;
use super::manifest::Manifest;

/// One model's numbers: fp32 or a quantization scheme.
pub struct ModelRow {
    pub name: String,
    pub bytes: u64,
    pub valid_perplexity: Option<f64>,
    pub test_perplexity: Option<f64>,
    /// Bits per byte of the validation text: compares across tokenizers.
    pub valid_bits_per_byte: Option<f64>,
    /// Bits per character of the validation text, likewise.
    pub valid_bits_per_char: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

pub struct Summary {
    /// (stage, ran or skipped, seconds of the run that produced it).
    pub stages: Vec<(String, bool, f64)>,
    pub documents_in: u64,
    pub documents_out: u64,
    pub near_duplicates: u64,
    pub vocab_size: u64,
    pub tokens: u64,
    pub parameters: u64,
    pub iterations: u64,
    pub train_tokens_per_second: f64,
    pub unigram_entropy: Option<f64>,
    pub models: Vec<ModelRow>,
    /// (model, prompt, continuation).
    pub samples: Vec<(String, String, String)>,
    pub seconds: f64,
    pub git_commit: String,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Bytes of the model weights of a checkpoint folder (its model.safetensors).
fn weights_bytes(dir: &Path) -> u64 {
    fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len())
}

impl Summary {
    pub fn read(out: &Path, config: &Config, manifest: &Manifest) -> Result<Summary> {
        let clean = read_json(&out.join("clean/report.json"))?;
        // A tokenizer taken rather than trained (`[tokenizer] from`) has no training report:
        // its vocabulary is counted from the file itself.
        let tokenizer = match read_json(&out.join("tokenizer/tokenizer.report.json")) {
            Ok(report) => report,
            Err(_) => {
                let file = read_json(&out.join("tokenizer/tokenizer.json"))?;
                let vocab = file["model"]["vocab"].as_object().map_or(0, |v| v.len());
                let added = file["added_tokens"].as_array().map_or(0, |a| {
                    a.iter()
                        .filter(|t| t["id"].as_u64().is_some_and(|id| id as usize >= vocab))
                        .count()
                });
                serde_json::json!({ "vocab_size": vocab + added })
            }
        };
        let convert = read_json(&out.join("data/corpus.report.json"))?;
        let train = read_json(&out.join("train/train_report.json"))?;
        let checkpoint = train["checkpoint"]
            .as_str()
            .map(|c| out.join(c))
            .context("train_report.json names no checkpoint")?;
        let mut models: Vec<ModelRow> = Vec::new();
        let mut names = vec!["fp32".to_string()];
        names.extend(config.quantize.schemes.iter().cloned());
        for name in &names {
            let eval = read_json(&out.join(format!("eval/{name}.json")))?;
            let (bytes, tokens_per_second) = if name == "fp32" {
                (weights_bytes(&checkpoint), None)
            } else {
                let dir = out.join(format!("quantized/{name}"));
                let report = read_json(&dir.join("quantize_report.json"))?;
                // Every quantize run timed the f32 model too; the first one's stands for it.
                if let Some(fp32) = models.first_mut() {
                    fp32.tokens_per_second = fp32
                        .tokens_per_second
                        .or(report["tokens_per_second"]["before"].as_f64());
                }
                (
                    weights_bytes(&dir),
                    report["tokens_per_second"]["after"].as_f64(),
                )
            };
            models.push(ModelRow {
                name: name.clone(),
                bytes,
                valid_perplexity: eval["valid_perplexity"].as_f64(),
                test_perplexity: eval["test_perplexity"].as_f64(),
                valid_bits_per_byte: eval["valid_bits_per_byte"].as_f64(),
                valid_bits_per_char: eval["valid_bits_per_char"].as_f64(),
                tokens_per_second,
            });
        }
        let mut samples = Vec::new();
        for name in &names {
            let path = out.join(format!("samples/{name}.jsonl"));
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let sample: Value = serde_json::from_str(line)
                    .with_context(|| format!("parsing {}", path.display()))?;
                samples.push((
                    name.clone(),
                    sample["prompt"].as_str().unwrap_or_default().to_string(),
                    sample["text"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(Summary {
            stages: manifest
                .stages
                .iter()
                .map(|s| (s.name.clone(), !s.skipped, s.seconds))
                .collect(),
            documents_in: clean["documents_in"].as_u64().unwrap_or(0),
            documents_out: clean["documents_out"].as_u64().unwrap_or(0),
            near_duplicates: clean["dedup"]["near_duplicates"].as_u64().unwrap_or(0),
            vocab_size: tokenizer["vocab_size"].as_u64().unwrap_or(0),
            tokens: convert["tokens"].as_u64().unwrap_or(0),
            parameters: train["parameters"].as_u64().unwrap_or(0),
            iterations: train["iterations"].as_u64().unwrap_or(0),
            train_tokens_per_second: train["tokens_per_second"].as_f64().unwrap_or(0.0),
            unigram_entropy: train["unigram_entropy"].as_f64(),
            models,
            samples,
            seconds: manifest.seconds,
            git_commit: manifest
                .stages
                .last()
                .map_or_else(String::new, |s| s.git_commit.clone()),
        })
    }

    pub fn print(&self) {
        println!("\n{:<16} {:>9}  ", "stage", "seconds");
        for (stage, ran, seconds) in &self.stages {
            let how = if *ran { "" } else { "  (skipped: unchanged)" };
            println!("{stage:<16} {seconds:>9.1}{how}");
        }
        println!("{:<16} {:>9.1}", "this run", self.seconds);
        println!(
            "\ndocuments: {} in, {} kept ({} near duplicates); {}-token BPE; {} tokens",
            self.documents_in,
            self.documents_out,
            self.near_duplicates,
            self.vocab_size,
            self.tokens
        );
        println!(
            "model: {:.2}M parameters, {} iterations at {:.0} tokens/s",
            self.parameters as f64 / 1e6,
            self.iterations,
            self.train_tokens_per_second
        );
        println!(
            "\n{:<12} {:>10} {:>11} {:>11} {:>10} {:>10} {:>10}",
            "model", "weights", "valid ppl", "test ppl", "bits/byte", "bits/char", "tokens/s"
        );
        for m in &self.models {
            println!(
                "{:<12} {:>7.2} MB {:>11} {:>11} {:>10} {:>10} {:>10}",
                m.name,
                m.bytes as f64 / 1e6,
                number(m.valid_perplexity, 1),
                number(m.test_perplexity, 1),
                number(m.valid_bits_per_byte, 3),
                number(m.valid_bits_per_char, 3),
                number(m.tokens_per_second, 0),
            );
        }
        println!();
        for (model, prompt, text) in &self.samples {
            println!("[{model}] {prompt}|{}", one_line(text));
        }
    }
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// A continuation on one line: line breaks shown as ↵ (a tiny model's favourite output).
fn one_line(text: &str) -> String {
    text.split('\n')
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("↵")
}

/// `report.md`: the same numbers, the loss curve, the samples, and how to reproduce the run.
pub fn write_markdown(out: &Path, summary: &Summary) -> Result<()> {
    let mut md = String::new();
    let _ = writeln!(md, "# Pipeline run `{}`\n", out.display());
    let _ = writeln!(
        md,
        "Commit `{}`; {:.0} s for the stages when they ran, {:.0} s for this run (skipped \
         stages cost nothing); every stage's inputs, parameters and outputs (sha256) are in \
         `manifest.json`.\n",
        summary.git_commit,
        summary.stages.iter().map(|s| s.2).sum::<f64>(),
        summary.seconds
    );
    md.push_str("## Stages\n\n| stage | seconds | |\n|---|---:|---|\n");
    for (stage, ran, seconds) in &summary.stages {
        let how = if *ran { "ran" } else { "skipped (unchanged)" };
        let _ = writeln!(md, "| {stage} | {seconds:.1} | {how} |");
    }
    let _ = writeln!(
        md,
        "\n## Data\n\n{} documents in, {} kept ({} near duplicates removed); a {}-token \
         byte-level BPE; {} tokens in `data/corpus_text_document`.\n",
        summary.documents_in,
        summary.documents_out,
        summary.near_duplicates,
        summary.vocab_size,
        summary.tokens
    );
    let _ = writeln!(
        md,
        "## Training\n\n{:.2}M parameters, {} iterations at {:.0} tokens/s{}.\n\n\
         ![loss curve](train/loss.png)\n",
        summary.parameters as f64 / 1e6,
        summary.iterations,
        summary.train_tokens_per_second,
        summary
            .unigram_entropy
            .map(|e| format!(
                "; the unigram entropy of the data (the best context-free loss) is {e:.3} \
                 nats/token, perplexity {:.0}",
                e.exp()
            ))
            .unwrap_or_default()
    );
    md.push_str(
        "## Models\n\n| model | weights (MB) | validation perplexity | test perplexity | \
         validation bits/byte | validation bits/char | decoding tokens/s (batch 1, CPU) \
         |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in &summary.models {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} | {} | {} | {} | {} |",
            m.name,
            m.bytes as f64 / 1e6,
            number(m.valid_perplexity, 1),
            number(m.test_perplexity, 1),
            number(m.valid_bits_per_byte, 3),
            number(m.valid_bits_per_char, 3),
            number(m.tokens_per_second, 0)
        );
    }
    md.push_str("\n## Samples\n\n| model | prompt | continuation |\n|---|---|---|\n");
    for (model, prompt, text) in &summary.samples {
        let cell = |s: &str| one_line(s).replace('|', "\\|");
        let _ = writeln!(md, "| {model} | {} | {} |", cell(prompt), cell(text));
    }
    crate::write_atomic(&out.join("report.md"), md.as_bytes())
}
