//! Training throughput of lmforge-train on CPU (flex), the shapes `benches/peers/train.py` runs
//! with PyTorch eager: the `tiny` GPT (4 layers of width 128, 4 heads, learned positions, tied
//! head) with the pipeline tokenizer's 32,000 tokens, micro batch 8 × 256 tokens, AdamW,
//! global-norm clipping 1.0, fp32.
//!
//! ```text
//! cargo run --release -p lmforge-benches --bin train-speed [-- STEPS] [--vocab V] [--layers L]
//!     [--width D] [--heads H] [--seq S] [--batch B]
//! ```
//! Prints one JSON object: the mean of STEPS (default 5) timed steps after two warm-up steps.
//! The shape flags (the `tiny` preset's by default) are `benches/peers/train.py`'s, so both
//! programs measure the same model when the default pipeline's shape is chosen.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use burn::tensor::Device;
use lmforge_dataset::GptBatch;
use lmforge_model::GptConfig;
use lmforge_train::gpt::gpt_loss;
use lmforge_train::{AdamW, AdamWConfig, LossScaler, StepConfig, train_step};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> usize {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a whole number")),
            None => default,
        }
    };
    let steps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let (batch, seq, vocab) = (
        flag("--batch", 8),
        flag("--seq", 256),
        flag("--vocab", 32_000),
    );
    let config = GptConfig {
        n_layer: flag("--layers", 4),
        d_model: flag("--width", 128),
        n_head: flag("--heads", 4),
        max_seq_len: seq.max(256),
        ..GptConfig::tiny(vocab)
    };
    let device = Device::flex().autodiff();
    let mut model = config.init(&device, 0).unwrap();
    let mut data = GptBatch::zeroed(batch, seq);
    for (i, t) in data.tokens.iter_mut().enumerate() {
        *t = ((i * 104_729) % vocab) as u32;
    }
    for (i, t) in data.labels.iter_mut().enumerate() {
        *t = (((i + 1) * 104_729) % vocab) as u32;
    }
    data.loss_mask.fill(1.0);
    let mut optimizer = AdamW::new(AdamWConfig::default());
    let mut scaler = LossScaler::None;
    let step = StepConfig {
        micro_batches: 1,
        clip_grad: Some(1.0),
        precision: Default::default(),
    };
    let mut times = Vec::new();
    for i in 0..steps + 2 {
        let start = Instant::now();
        let (m, _) = train_step(
            model,
            std::slice::from_ref(&device),
            &lmforge_train::Alone,
            &mut optimizer,
            &mut scaler,
            1e-4,
            &step,
            |m, _, _| gpt_loss(m, &data, &device),
        )
        .unwrap();
        model = m;
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let tokens = (batch * seq) as f64;
    let flops = config.training_flops_per_token(seq) * tokens;
    println!(
        "{}",
        serde_json::json!({
            "bench": "train", "peer": "lmforge-flex", "batch": batch, "seq": seq, "vocab": vocab,
            "layers": config.n_layer, "width": config.d_model, "heads": config.n_head,
            "parameters": config.num_params(),
            "seconds_per_step": mean, "tokens_per_s": tokens / mean, "gflops": flops / mean / 1e9,
        })
    );
}
