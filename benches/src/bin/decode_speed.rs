//! The CPU engine's decoding throughput by batch size, and the scheduler's continuous against
//! static batching, on seeded random models of the tiny GPT's and gpt2-small's shapes:
//!
//! ```text
//! cargo run --release -p lmforge-benches --bin decode-speed -- [--preset tiny|gpt2-small|1.7b] [--vocab N] [--tokens N] [--batches 1,8,32] [--rounds N] [--weights f32|int8] [--device cpu|flex|wgpu] [--dtype f32|f16|bf16] [--ttft N] [--no-serve] [--prefix] [--chat] [--load] [--save DIR]
//! ```
//!
//! `--device` picks the engine: `cpu` (default) the CPU engine, `flex` or `wgpu` the device
//! engine (f32 weights) on that burn device; with it, `--ttft N` times one `N`-token prompt to
//! its first token instead.
//!
//! Greedy generation through `lmforge_infer::generate` (what `lmforge generate` runs): 16-token
//! prompts, `--tokens` new tokens each (128), no stop token, prefill included; f32 and `int8`
//! weights; rounds over the formats and batches, best of each. Then 32 requests at once through
//! the scheduler (`Engine`, what `lmforge serve` runs), continuous and static, with new-token
//! counts drawn log-uniformly from 8..=`--tokens` (seed 0). `--load` also times
//! `CpuGpt::load` of the model saved as an f32 checkpoint. Prints one JSON object per
//! measurement. `--save DIR` writes the model and the f32 engine's greedy tokens for the
//! batch-8 prompts (`greedy.json`) instead, for `benches/peers/ct2.py`.

use std::sync::{Arc, mpsc};
use std::time::Instant;

use burn::tensor::{Device, FloatDType};
use lmforge_infer::scheduler::{
    EVENT_BUFFER, Engine, EngineOptions, Event, Events, Job, Metrics, Scheduler,
};
use lmforge_infer::{Batched, CpuGpt, DeviceGpt, GenerateOptions, Sampling, generate};
use lmforge_model::GptConfig;
use lmforge_quant::Scheme;
use lmforge_quant::checkpoint::quantize_gpt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn prompts(batch: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..16)
                .map(|i| ((b * 7919 + i * 131 + 1) % vocab) as u32)
                .collect()
        })
        .collect()
}

/// New tokens per second of one `generate` call over `batch` prompts.
fn generation<M: Batched>(engine: &M, batch: usize, tokens: usize) -> Result<f64> {
    let options = GenerateOptions {
        max_new_tokens: tokens,
        sampling: Sampling::greedy(),
        stop_tokens: Vec::new(),
    };
    let prompts = prompts(batch, engine.config().vocab_size);
    let started = Instant::now();
    let out = generate(engine, &prompts, &options, |_, _| true)?;
    let new: usize = out.iter().map(|g| g.tokens.len()).sum();
    Ok(new as f64 / started.elapsed().as_secs_f64())
}

/// Best time of `rounds` from an `n`-token prompt to its first generated token (the prefill).
fn time_to_first_token<M: Batched>(engine: &M, n: usize, rounds: usize) -> Result<f64> {
    let vocab = engine.config().vocab_size;
    let prompt: Vec<u32> = (0..n).map(|i| ((i * 131 + 7) % vocab) as u32).collect();
    let options = GenerateOptions {
        max_new_tokens: 1,
        sampling: Sampling::greedy(),
        stop_tokens: Vec::new(),
    };
    let mut best = f64::MAX;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        generate(engine, std::slice::from_ref(&prompt), &options, |_, _| true)?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// When a request's first token arrived (set by [`Timed`]).
type FirstToken = Arc<std::sync::OnceLock<Instant>>;

/// Submits a greedy request of `new_tokens` after `prompt`; its events and when its first
/// token arrives.
fn submit(
    handle: &Engine,
    prompt: Vec<u32>,
    new_tokens: usize,
) -> Result<(mpsc::Receiver<Event>, FirstToken)> {
    let (tx, rx) = mpsc::sync_channel(EVENT_BUFFER);
    let first = FirstToken::default();
    let job = Job {
        prompt,
        max_new_tokens: new_tokens,
        sampling: Sampling::greedy(),
        stop_tokens: Vec::new(),
        prompt_logprobs: false,
        forks: Vec::new(),
        events: Box::new(Timed {
            tx,
            first: first.clone(),
        }),
    };
    handle.submit(job).map_err(|e| e.to_string())?;
    Ok((rx, first))
}

/// A request's tokens, once it is done.
fn collect(rx: &mpsc::Receiver<Event>) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    while let Ok(event) = rx.recv() {
        match event {
            Event::Token { id, .. } => out.push(id),
            Event::Done(_) => break,
            Event::Failed(message) => return Err(message.into()),
            Event::PromptLogprobs(_) | Event::Cached(_) => {}
        }
    }
    Ok(out)
}

/// Seconds from `started` to a request's first token.
fn ttft(first: &FirstToken, started: Instant) -> Result<f64> {
    Ok((*first.get().ok_or("no token")? - started).as_secs_f64())
}

/// New tokens per second of 32 requests submitted at once to a scheduler.
fn served<M>(engine: &Arc<M>, scheduler: Scheduler, tokens: usize) -> Result<f64>
where
    M: Batched + Send + Sync + 'static,
    M::Store: Send,
{
    let metrics = Arc::new(Metrics::default());
    let options = EngineOptions {
        scheduler,
        kv_cache_bytes: 512 << 20,
        ..EngineOptions::default()
    };
    let (handle, _thread) = Engine::start(engine.clone(), options, metrics);
    let vocab = engine.config().vocab_size;
    // Log-uniform lengths in 8..=tokens from a fixed LCG: the same workload every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let started = Instant::now();
    let receivers = prompts(32, vocab)
        .into_iter()
        .map(|prompt| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            let n = (8f64 * (tokens as f64 / 8.0).max(1.0).powf(u)).round() as usize;
            submit(&handle, prompt, n)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut new = 0;
    for (rx, _) in &receivers {
        new += collect(rx)?.len();
    }
    Ok(new as f64 / started.elapsed().as_secs_f64())
}

/// Records when a request's first token arrives.
struct Timed {
    tx: mpsc::SyncSender<Event>,
    first: FirstToken,
}

impl Events for Timed {
    fn send(&self, event: Event) -> bool {
        if matches!(event, Event::Token { .. }) {
            self.first.get_or_init(Instant::now);
        }
        self.tx.try_send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        false
    }
}

/// Issue 42's load: a 512-token prefix shared by 32 requests with 16-token suffixes of their
/// own, submitted at once after one request has served the prefix (a system prompt in use);
/// 16 greedy tokens each. Mean time to first token and every request's tokens.
fn prefix_load(engine: &Arc<CpuGpt>, caching: bool) -> Result<(f64, Vec<Vec<u32>>)> {
    let options = EngineOptions {
        max_batch: 32,
        kv_cache_bytes: 1400 << 20,
        prefix_caching: caching,
        ..EngineOptions::default()
    };
    let (handle, _thread) = Engine::start(engine.clone(), options, Arc::new(Metrics::default()));
    let vocab = engine.config().vocab_size;
    let prefix: Vec<u32> = (0..512).map(|i| ((i * 7919 + 3) % vocab) as u32).collect();
    let request = |k: usize| {
        let suffix = (0..16).map(|i| ((k * 131 + i * 17 + 5) % vocab) as u32);
        submit(&handle, prefix.iter().copied().chain(suffix).collect(), 16)
    };
    collect(&request(1000)?.0)?;
    let started = Instant::now();
    let requests = (0..32).map(request).collect::<Result<Vec<_>>>()?;
    let mut outputs = Vec::new();
    let mut total = 0.0;
    for (rx, first) in &requests {
        outputs.push(collect(rx)?);
        total += ttft(first, started)?;
    }
    Ok((total / 32.0, outputs))
}

/// Issue 42's chat load: 16 conversations of 8 turns; each turn's prompt is the conversation
/// so far (earlier prompts and answers) plus 32 new user tokens, the 16 sent at once, 16 greedy
/// tokens each. Mean time to first token per turn, and every answer.
fn chat_load(engine: &Arc<CpuGpt>, caching: bool) -> Result<(Vec<f64>, Vec<Vec<u32>>)> {
    let options = EngineOptions {
        max_batch: 16,
        kv_cache_bytes: 1400 << 20,
        prefix_caching: caching,
        ..EngineOptions::default()
    };
    let (handle, _thread) = Engine::start(engine.clone(), options, Arc::new(Metrics::default()));
    let vocab = engine.config().vocab_size;
    let mut conversations: Vec<Vec<u32>> = vec![Vec::new(); 16];
    let mut ttft_by_turn = Vec::new();
    let mut answers = Vec::new();
    for turn in 0..8 {
        let started = Instant::now();
        let mut pending = Vec::new();
        for (c, conversation) in conversations.iter_mut().enumerate() {
            conversation
                .extend((0..32).map(|i| ((c * 7919 + turn * 131 + i * 17 + 1) % vocab) as u32));
            pending.push(submit(&handle, conversation.clone(), 16)?);
        }
        let mut total = 0.0;
        for ((rx, first), conversation) in pending.iter().zip(&mut conversations) {
            let answer = collect(rx)?;
            total += ttft(first, started)?;
            conversation.extend(&answer);
            answers.push(answer);
        }
        ttft_by_turn.push(total / 16.0);
    }
    Ok((ttft_by_turn, answers))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let tokens: usize = flag("--tokens").map_or(Ok(128), |t| t.parse())?;
    let rounds: usize = flag("--rounds").map_or(Ok(3), |t| t.parse())?;
    let batches: Vec<usize> = flag("--batches")
        .unwrap_or_else(|| "1,8,32".into())
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let preset = flag("--preset").unwrap_or_else(|| "tiny".into());
    let mut config = match preset.as_str() {
        "tiny" => GptConfig::tiny(32_000),
        other => GptConfig::preset(other, None)?,
    };
    if let Some(vocab) = flag("--vocab") {
        config.vocab_size = vocab.parse()?;
    }
    let device = Device::flex();
    let model = config.init(&device, 0)?;
    if let Some(dir) = flag("--save") {
        // The model for a peer (benches/peers/ct2.py), with the f32 engine's greedy
        // tokens for the batch-8 prompts, which the peer must reproduce.
        let dir = std::path::PathBuf::from(dir);
        lmforge_model::save_gpt(&model, &dir)?;
        let prompts = prompts(8, config.vocab_size);
        let options = GenerateOptions {
            max_new_tokens: tokens,
            sampling: Sampling::greedy(),
            stop_tokens: Vec::new(),
        };
        let out = generate(&CpuGpt::from_gpt(&model)?, &prompts, &options, |_, _| true)?;
        let greedy: Vec<&Vec<u32>> = out.iter().map(|g| &g.tokens).collect();
        let json = serde_json::json!({"prompts": prompts, "greedy": greedy});
        std::fs::write(dir.join("greedy.json"), json.to_string())?;
        println!("saved to {}", dir.display());
        return Ok(());
    }
    if args.iter().any(|a| a == "--load") {
        let dir = std::env::temp_dir().join(format!("lmforge-decode-speed-{}", std::process::id()));
        lmforge_model::save_gpt(&model, &dir)?;
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let started = Instant::now();
            std::hint::black_box(CpuGpt::load(&dir)?);
            best = best.min(started.elapsed().as_secs_f64());
        }
        let bytes = std::fs::metadata(dir.join("model.safetensors"))?.len();
        std::fs::remove_dir_all(&dir)?;
        println!(
            "{}",
            serde_json::json!({"bench": "load-f32", "model": preset, "bytes": bytes, "seconds": best})
        );
    }
    match flag("--device").as_deref() {
        None | Some("cpu") => {}
        Some(name) => {
            let spec: lmforge_model::DeviceSpec = name.parse()?;
            let device = spec.resolve()?;
            let model = config.init(&device, 0)?;
            // `--dtype f16|bf16`: the device engine's weights, keys and values in half.
            let (weights, dtype) = match flag("--dtype").as_deref() {
                None | Some("f32") => ("f32", FloatDType::F32),
                Some("f16") => ("f16", FloatDType::F16),
                Some("bf16") => ("bf16", FloatDType::BF16),
                Some(other) => return Err(format!("--dtype {other}: f32, f16 or bf16").into()),
            };
            let engines = vec![(
                weights,
                Arc::new(DeviceGpt::with_dtype(model, device, dtype)),
            )];
            if let Some(n) = flag("--ttft") {
                let seconds = time_to_first_token(engines[0].1.as_ref(), n.parse()?, rounds)?;
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "ttft", "model": preset, "device": name, "weights": weights,
                        "prompt": n.parse::<usize>()?,
                        "seconds": seconds,
                    })
                );
                return Ok(());
            }
            if args.iter().any(|a| a == "--no-serve") {
                for &batch in &batches {
                    let mut best = 0f64;
                    for _ in 0..rounds {
                        best = best.max(generation(engines[0].1.as_ref(), batch, tokens)?);
                    }
                    println!("{name} {weights} batch {batch}: {best:.1} tokens/s");
                }
                return Ok(());
            }
            return measure(&preset, &engines, &batches, tokens, rounds, name);
        }
    }
    let engines: Vec<(&str, Arc<CpuGpt>)> = vec![
        ("f32", Arc::new(CpuGpt::from_gpt(&model)?)),
        (
            "int8",
            Arc::new(CpuGpt::from_weights(
                config.clone(),
                quantize_gpt(&model, Scheme::Int8)?.0,
            )?),
        ),
    ];
    drop(model);
    // `--weights f32|int8`: one engine only (profiling).
    let engines: Vec<(&str, Arc<CpuGpt>)> = match flag("--weights") {
        Some(only) => engines.into_iter().filter(|(w, _)| *w == only).collect(),
        None => engines,
    };
    let threads = rayon::current_num_threads();
    if args.iter().any(|a| a == "--prefix") {
        for (weights, engine) in &engines {
            let (off, cold) = prefix_load(engine, false)?;
            let (on, warm) = prefix_load(engine, true)?;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "prefix-cache", "model": preset, "weights": weights,
                    "concurrency": 32, "prefix": 512, "suffix": 16, "threads": threads,
                    "mean_ttft_s_off": off, "mean_ttft_s_on": on, "speedup": off / on,
                    "same_outputs": cold == warm,
                })
            );
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--chat") {
        for (weights, engine) in &engines {
            let (off, cold) = chat_load(engine, false)?;
            let (on, warm) = chat_load(engine, true)?;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "prefix-cache-chat", "model": preset, "weights": weights,
                    "conversations": 16, "turns": 8, "threads": threads,
                    "mean_ttft_s_by_turn_off": off, "mean_ttft_s_by_turn_on": on,
                    "same_outputs": cold == warm,
                })
            );
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--no-serve") {
        for (weights, engine) in &engines {
            for &batch in &batches {
                let mut best = 0f64;
                for _ in 0..rounds {
                    best = best.max(generation(engine.as_ref(), batch, tokens)?);
                }
                println!("{weights} batch {batch}: {best:.1} tokens/s");
            }
        }
        return Ok(());
    }
    measure(&preset, &engines, &batches, tokens, rounds, "cpu")
}

/// Generation by batch size, then the scheduler's two modes, for each engine.
fn measure<M>(
    preset: &str,
    engines: &[(&str, Arc<M>)],
    batches: &[usize],
    tokens: usize,
    rounds: usize,
    device: &str,
) -> Result<()>
where
    M: Batched + Send + Sync + 'static,
    M::Store: Send,
{
    let threads = rayon::current_num_threads();
    let mut best = vec![vec![0f64; batches.len()]; engines.len()];
    for _ in 0..rounds {
        for ((_, engine), best) in engines.iter().zip(&mut best) {
            for (&batch, best) in batches.iter().zip(best.iter_mut()) {
                *best = best.max(generation(engine.as_ref(), batch, tokens)?);
            }
        }
    }
    for ((weights, _), best) in engines.iter().zip(&best) {
        for (&batch, rate) in batches.iter().zip(best) {
            println!(
                "{}",
                serde_json::json!({
                    "bench": "generate", "model": preset, "device": device, "weights": weights, "batch": batch,
                    "prompt": 16, "new_tokens": tokens, "threads": threads, "tokens_per_s": rate,
                })
            );
        }
    }
    for (weights, engine) in engines {
        for (name, scheduler) in [
            ("continuous", Scheduler::Continuous),
            ("static", Scheduler::Static),
        ] {
            let mut rate = 0f64;
            for _ in 0..rounds {
                rate = rate.max(served(engine, scheduler, tokens)?);
            }
            println!(
                "{}",
                serde_json::json!({
                    "bench": "serve", "model": preset, "device": device, "weights": weights, "scheduler": name,
                    "concurrency": 32, "threads": threads, "tokens_per_s": rate,
                })
            );
        }
    }
    Ok(())
}
