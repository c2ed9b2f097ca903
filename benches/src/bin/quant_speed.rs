//! CPU decoding speed at batch 1, f32 against every quantization scheme, on lmforge-infer's
//! engine (and burn's flex model for reference):
//!
//! ```text
//! cargo run --release -p lmforge-benches --bin quant-speed -- [CHECKPOINT] [--preset tiny|gpt2-small] [--vocab N] [--tokens N] [--profile SCHEME|f32] [--save DIR]
//! ```
//!
//! Without a checkpoint the model is a seeded random one of the preset (vocabulary 32,000 for
//! tiny): speed does not depend on what the weights have learned. Prints one line per scheme:
//! the head's matrix-vector product alone, a decoding step at position 64, and greedy
//! generation tokens/s (prefill included); ten rounds over the schemes, best of each.
//! `--save DIR` writes the (random) model as a checkpoint instead and exits: with a
//! tokenizer.json of `--vocab` ids beside it, `lmforge serve` serves it, which is how the
//! serving benchmark gets a model of gpt2-small's shape (docs/benchmarks.md, "Serving").

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use std::sync::Arc;

use lmforge_infer::{BurnDecoder, CpuGpt, Decoder, decoder_tokens_per_second, tokens_per_second};
use lmforge_model::GptConfig;
use lmforge_quant::checkpoint::{gpt_tensors, quantize_gpt};
use lmforge_quant::{Matrix, QMatrix, Scheme, kernel};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let started = Instant::now();
        std::hint::black_box(f());
        best = best.min(started.elapsed().as_secs_f64());
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let tokens: usize = flag("--tokens").map_or(Ok(128), |t| t.parse())?;
    let preset = flag("--preset").unwrap_or_else(|| "tiny".into());
    let checkpoint = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from);
    let device = Device::flex();
    let model = match &checkpoint {
        Some(dir) => lmforge_quant::load_gpt(dir, &device)?,
        None => {
            let mut config = match preset.as_str() {
                "gpt2-small" => GptConfig::gpt2_small(),
                _ => GptConfig::tiny(32_000),
            };
            if let Some(vocab) = flag("--vocab") {
                config.vocab_size = vocab.parse()?;
            }
            config.init(&device, 0)?
        }
    };
    if let Some(dir) = flag("--save") {
        lmforge_model::save_gpt(&model, &PathBuf::from(&dir))?;
        println!("saved to {dir}");
        return Ok(());
    }
    let config = model.config().clone();
    println!(
        "model: {} layers × {} wide, vocabulary {}, {} threads",
        config.n_layer,
        config.d_model,
        config.vocab_size,
        rayon::current_num_threads()
    );
    let prompt: Vec<u32> = (0..8)
        .map(|i| (i * 131 % config.vocab_size) as u32)
        .collect();
    // `--profile SCHEME`: only that engine's generation, repeated, for `perf record`.
    if let Some(scheme) = flag("--profile") {
        let engine = match scheme.as_str() {
            "f32" => CpuGpt::from_gpt(&model)?,
            s => CpuGpt::from_weights(
                config.clone(),
                quantize_gpt(&model, s.parse::<Scheme>()?)?.0,
            )?,
        };
        println!(
            "{:.1} tokens/s",
            tokens_per_second(&Arc::new(engine), &prompt, tokens, 20)?
        );
        return Ok(());
    }
    let burn = BurnDecoder {
        model: &model,
        device: &device,
    };
    println!(
        "burn flex f32 generation: {:.1} tokens/s",
        decoder_tokens_per_second(&burn, &prompt, tokens, 3)?
    );
    println!(
        "{:<12} {:>10} {:>14} {:>14} {:>14}",
        "weights", "MB", "head µs", "step µs @64", "tokens/s"
    );
    let mut rows: Vec<(String, Arc<CpuGpt>)> =
        vec![("f32".into(), Arc::new(CpuGpt::from_gpt(&model)?))];
    for scheme in Scheme::ALL {
        let (weights, _) = quantize_gpt(&model, scheme)?;
        rows.push((
            scheme.to_string(),
            Arc::new(CpuGpt::from_weights(config.clone(), weights)?),
        ));
    }
    let d = config.d_model;
    let x: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
    let long: Vec<u32> = (0..64)
        .map(|i| (i * 31 % config.vocab_size) as u32)
        .collect();
    let wte = gpt_tensors(&model)?
        .into_iter()
        .find(|(name, _, _)| name == "wte.weight")
        .map(|(_, _, values)| values)
        .ok_or("no wte.weight")?;
    // Rounds over the schemes rather than one scheme after another, best of each: the
    // machine's noise then falls on every scheme alike.
    let heads: Vec<Matrix> = rows
        .iter()
        .map(|(name, _)| -> Result<Matrix, Box<dyn std::error::Error>> {
            Ok(match name.as_str() {
                "f32" => Matrix::f32(config.vocab_size, d, &wte),
                scheme => Matrix::Quantized(QMatrix::quantize(
                    "wte",
                    &wte,
                    config.vocab_size,
                    d,
                    scheme.parse()?,
                )?),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut best = vec![(f64::MAX, f64::MAX, 0f64); rows.len()];
    for _ in 0..10 {
        for (((_, engine), head), best) in rows.iter().zip(&heads).zip(&mut best) {
            let head_s = best_of(20, || kernel::matmul(head, &x));
            // A fresh 64-position cache per timed step (prefill untimed).
            let mut step_s = f64::MAX;
            for _ in 0..20 {
                let (mut cache, _) = engine.prefill(std::slice::from_ref(&long))?;
                let started = Instant::now();
                std::hint::black_box(engine.decode(&mut cache, &[7])?);
                step_s = step_s.min(started.elapsed().as_secs_f64());
            }
            let rate = tokens_per_second(engine, &prompt, tokens, 1)?;
            *best = (best.0.min(head_s), best.1.min(step_s), best.2.max(rate));
        }
    }
    for ((name, engine), (head_s, step_s, rate)) in rows.iter().zip(&best) {
        println!(
            "{name:<12} {:>10.2} {:>14.1} {:>14.1} {:>9.1} ({:.2}×)",
            engine.weight_bytes() as f64 / 1e6,
            head_s * 1e6,
            step_s * 1e6,
            rate,
            rate / best[0].2
        );
    }
    Ok(())
}
