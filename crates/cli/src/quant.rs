//! `lmforge quantize`: a GPT checkpoint to INT8 or 4-bit weights, with what it cost in
//! perplexity and bought in size and decoding speed.

use std::path::PathBuf;

use anyhow::{Result, bail};
use lmforge_infer::{CpuGpt, tokens_per_second};
use lmforge_model::DeviceSpec;
use lmforge_model::checkpoint::write_atomic;
use lmforge_quant::checkpoint::Comparison;
use lmforge_quant::{QuantizeOptions, Scheme, quantize_checkpoint};
use lmforge_train::checkpoint;

use crate::train::{EvalData, eval_losses};

#[derive(clap::Args)]
pub struct Args {
    /// A training save folder (its latest iteration), an iteration folder, or any GPT
    /// checkpoint (ours or a Hugging Face GPT-2 folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// int8 (per output channel), int8-tensor, q8_0 or q4_0.
    #[arg(long, default_value = "int8")]
    scheme: Scheme,
    /// The quantized checkpoint's folder.
    #[arg(long)]
    output: PathBuf,
    /// Prune the Linear weights to 2:4 structured sparsity (by magnitude) before quantizing,
    /// to measure what it costs.
    #[arg(long)]
    prune_2_4: bool,
    /// With --data-path: validation perplexity before and after, on the training run's split.
    #[command(flatten)]
    data: EvalData,
    /// Tokens generated at batch 1 on the CPU engine to time decoding before and after (0:
    /// skip).
    #[arg(long, default_value_t = 128)]
    bench_tokens: usize,
    /// Where perplexity is computed.
    #[arg(long, default_value = "auto", value_parser = crate::model::parse_device)]
    device: DeviceSpec,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The report beside the quantized checkpoint.
pub const REPORT_FILE: &str = "quantize_report.json";

pub fn run(args: &Args) -> Result<()> {
    let input = checkpoint::resolve(&args.checkpoint).unwrap_or_else(|_| args.checkpoint.clone());
    if let (Ok(a), Ok(b)) = (input.canonicalize(), args.output.canonicalize())
        && a == b
    {
        bail!("--output {} is the input checkpoint", args.output.display());
    }
    let options = QuantizeOptions {
        scheme: args.scheme,
        prune_2_4: args.prune_2_4,
    };
    let mut report = quantize_checkpoint(&input, &args.output, options)?;
    if args.bench_tokens > 0 {
        let tokenizer = input.join("tokenizer.json");
        let prompt = match lmforge_dataset::open_tokenizer(&tokenizer) {
            Ok(tokenizer) => tokenizer.encode("Il était une fois")?,
            Err(_) => vec![0],
        };
        let speed = |dir: &std::path::Path| -> Result<f64> {
            let engine = std::sync::Arc::new(CpuGpt::load(dir)?);
            Ok(tokens_per_second(&engine, &prompt, args.bench_tokens, 3)?)
        };
        report.tokens_per_second = Some(Comparison {
            before: speed(&input)?,
            after: speed(&args.output)?,
        });
    }
    if !args.data.data_path.is_empty() {
        let device = args.device.resolve()?;
        let perplexity = |dir: &std::path::Path| -> Result<f64> {
            let report = eval_losses(dir, &input, &args.data, &device)?;
            match report.valid_perplexity.or(report.test_perplexity) {
                Some(perplexity) => Ok(perplexity),
                None => bail!("the split has no validation or test samples"),
            }
        };
        report.perplexity = Some(Comparison {
            before: perplexity(&input)?,
            after: perplexity(&args.output)?,
        });
    }
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&args.output.join(REPORT_FILE), json.as_bytes())?;
    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!(
        "{:<34} {:>13} {:>8} {:>11} {:>11} {:>11}",
        "tensor", "shape", "scheme", "bytes", "max |err|", "mean |err|"
    );
    for t in &report.tensors {
        let shape = t
            .shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×");
        println!(
            "{:<34} {:>13} {:>8} {:>11} {:>11.3e} {:>11.3e}",
            t.name, shape, t.scheme, t.bytes_after, t.error.max_abs, t.error.mean_abs
        );
    }
    if let Some(sparsity) = &report.sparsity {
        println!("sparsity    {sparsity} on the Linear weights (errors above include it)");
    }
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "size        {:.2} MB → {:.2} MB ({:.2}× smaller)",
        mb(report.bytes_before),
        mb(report.bytes_after),
        report.compression
    );
    if let Some(p) = report.perplexity {
        println!(
            "perplexity  {:.3} → {:.3} ({:+.2} %)",
            p.before,
            p.after,
            (p.after / p.before - 1.0) * 100.0
        );
    }
    if let Some(t) = report.tokens_per_second {
        println!(
            "decoding    {:.1} → {:.1} tokens/s at batch 1 on the CPU ({:.2}×)",
            t.before,
            t.after,
            t.after / t.before
        );
    }
    println!("{} written", args.output.join(REPORT_FILE).display());
    Ok(())
}
