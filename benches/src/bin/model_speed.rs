//! Throughput of lmforge-model on CPU (flex), the shapes `benches/peers/model.py` runs with
//! PyTorch and transformers:
//!
//! ```text
//! cargo run --release -p lmforge-benches --bin model-speed -- forward    # gpt2-small, 8 × 256
//! cargo run --release -p lmforge-benches --bin model-speed -- generate   # 6×384, vocab 8192
//! cargo run --release -p lmforge-benches --bin model-speed -- positions  # decode cost vs position
//! ```
//! Each prints one JSON object per measurement.

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use lmforge_infer::{BurnDecoder, GenerateOptions, Sampling, generate};
use lmforge_model::GptConfig;

fn tokens(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..seq)
                .map(|i| ((b * 7919 + i * 104_729) % vocab) as u32)
                .collect()
        })
        .collect()
}

/// The generation model of REFERENCES.md: GPT-2-shaped, 6 layers of width 384, 8192 tokens.
fn small_gpt() -> GptConfig {
    GptConfig {
        n_layer: 6,
        n_head: 6,
        d_model: 384,
        max_seq_len: 1024,
        ..GptConfig::tiny(8192)
    }
}

fn forward(device: &Device) {
    let config = GptConfig {
        dropout: 0.0,
        ..GptConfig::gpt2_small()
    };
    let model = config.init(device, 0).unwrap();
    let (batch, seq) = (8, 256);
    let ids: Vec<i64> = tokens(batch, seq, config.vocab_size)
        .concat()
        .iter()
        .map(|&t| t as i64)
        .collect();
    let input = Tensor::<2, Int>::from_ints(TensorData::new(ids, [batch, seq]), device);
    // One warm-up pass, then the best of three.
    let _ = model.forward(input.clone()).unwrap().into_data();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let _ = model.forward(input.clone()).unwrap().into_data();
        best = best.min(start.elapsed().as_secs_f64());
    }
    let tokens = (batch * seq) as f64;
    let flops = config.forward_flops_per_token(seq / 2) * tokens;
    println!(
        "{}",
        serde_json::json!({
            "bench": "forward", "model": "gpt2-small", "batch": batch, "seq": seq,
            "seconds": best, "tokens_per_s": tokens / best, "gflops": flops / best / 1e9,
        })
    );
}

fn generation(device: &Device) {
    let config = small_gpt();
    let model = config.init(device, 0).unwrap();
    for batch in [1, 8] {
        let prompts = tokens(batch, 16, config.vocab_size);
        let options = GenerateOptions {
            max_new_tokens: 128,
            sampling: Sampling::greedy(),
            stop_tokens: Vec::new(),
        };
        let decoder = BurnDecoder {
            model: &model,
            device,
        };
        let _ = generate(
            &decoder,
            &prompts,
            &GenerateOptions {
                max_new_tokens: 8,
                ..options.clone()
            },
            |_, _| true,
        );
        let start = Instant::now();
        let out = generate(&decoder, &prompts, &options, |_, _| true).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        let new: usize = out.iter().map(|g| g.tokens.len()).sum();
        println!(
            "{}",
            serde_json::json!({
                "bench": "generate", "model": "6x384-v8192", "batch": batch, "prompt": 16,
                "new_tokens": new, "seconds": seconds, "tokens_per_s": new as f64 / seconds,
            })
        );
    }
}

fn positions(device: &Device) {
    let config = small_gpt();
    let model = config.init(device, 0).unwrap();
    for start in [64, 128, 256, 512, 1000] {
        let prompt = tokens(1, start, config.vocab_size);
        let (mut cache, _) = model.prefill(&prompt, device).unwrap();
        let steps = 16;
        let begin = Instant::now();
        for i in 0..steps {
            let logits = model.decode(&mut cache, &[(i * 31 % 8192) as u32]).unwrap();
            let _ = logits.into_data();
        }
        let per_token = begin.elapsed().as_secs_f64() / steps as f64;
        println!(
            "{}",
            serde_json::json!({
                "bench": "decode-position", "model": "6x384-v8192", "position": start,
                "ms_per_token": per_token * 1e3, "tokens_per_s": 1.0 / per_token,
            })
        );
    }
}

fn main() {
    let device = Device::flex();
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match what.as_str() {
        "forward" => forward(&device),
        "generate" => generation(&device),
        "positions" => positions(&device),
        "all" => {
            forward(&device);
            generation(&device);
            positions(&device);
        }
        other => {
            eprintln!("unknown bench {other}: forward, generate, positions or all");
            std::process::exit(2);
        }
    }
}
