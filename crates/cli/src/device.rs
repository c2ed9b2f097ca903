//! `lmforge device`: proves a device can train before a long run is started on it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use lmforge_model::{DeviceSpec, GptConfig};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// flex, wgpu, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceSpec,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Tokens per sequence (at most the tiny model's 256 positions).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=256))]
    seq_len: u16,
    /// Training steps to time after one warm-up step.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    steps: u16,
    /// Seed of the model's weights and of the random batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The device's peak dense TFLOP/s in the step's precision, to report the model FLOPs
    /// utilisation (MFU) against.
    #[arg(long)]
    peak_tflops: Option<f64>,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: lmforge_model::Error| e.to_string())
}

#[derive(Serialize)]
struct Report {
    requested: String,
    /// The device `requested` resolved to (`auto` becomes `flex` or `cuda:0`).
    device: String,
    /// burn's description of it.
    backend: String,
    /// The adapter it opened and the memory it offers (wgpu: the driver's name and largest
    /// device-local heap; flex: the host's available memory).
    adapter: String,
    model: GptConfig,
    parameters: usize,
    batch: usize,
    seq_len: usize,
    /// Loss before the first step and after the last.
    initial_loss: f32,
    final_loss: f32,
    /// Mean wall time of one forward + backward + SGD step, after warm-up.
    step_seconds: f64,
    tokens_per_second: f64,
    /// Model FLOPs per second (Megatron's count: forward and backward of every matmul and of
    /// attention), and their share of `--peak-tflops` when given.
    model_tflops: f64,
    mfu: Option<f64>,
}

pub fn run(args: &Args) -> Result<()> {
    let (batch, seq_len, steps): (usize, usize, usize) =
        (args.batch.into(), args.seq_len.into(), args.steps.into());
    let (device, picked) = args.device.resolve_named()?;
    let backend = format!("{device:?}");
    let device = device.autodiff();
    let config = GptConfig::tiny(8192);
    let mut model = config.init(&device, args.seed)?;
    // Drawn on the host from the seed, not by the device's RNG: every backend then sees the
    // same batch, so the losses printed on two devices can be compared.
    let ids: Vec<i64> = (0..batch * (seq_len + 1))
        .map(|i| (splitmix64(args.seed ^ i as u64) % config.vocab_size as u64) as i64)
        .collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq_len + 1]), &device);
    let inputs = tokens.clone().slice([0..batch, 0..seq_len]);
    let targets = tokens.slice([0..batch, 1..seq_len + 1]);
    let mut optimizer = SgdConfig::new().init();

    let mut losses = Vec::new();
    let mut timed = 0.0;
    for step in 0..=steps {
        let start = Instant::now();
        let loss = model.loss(inputs.clone(), targets.clone())?;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(0.1, model, grads);
        // Reading the loss waits for the device, so the time covers the whole step.
        losses.push(loss.into_scalar::<f32>());
        if step > 0 {
            timed += start.elapsed().as_secs_f64();
        }
    }
    let step_seconds = timed / steps as f64;
    let tokens_per_second = (batch * seq_len) as f64 / step_seconds;
    let model_tflops = config.training_flops_per_token(seq_len) * tokens_per_second / 1e12;
    let report = Report {
        requested: args.device.to_string(),
        device: picked.to_string(),
        backend,
        adapter: picked.memory().0,
        parameters: config.num_params(),
        model: config,
        batch,
        seq_len,
        initial_loss: losses[0],
        final_loss: *losses.last().unwrap(),
        step_seconds,
        tokens_per_second,
        model_tflops,
        mfu: args.peak_tflops.map(|peak| model_tflops / peak),
    };
    println!("adapter: {}", report.adapter);
    println!(
        "{} ({}): {} parameters, loss {:.3} -> {:.3}, {:.3} s/step, {:.0} tokens/s, {:.4} model TFLOP/s{}",
        report.device,
        report.backend,
        report.parameters,
        report.initial_loss,
        report.final_loss,
        report.step_seconds,
        report.tokens_per_second,
        report.model_tflops,
        report
            .mfu
            .map_or(String::new(), |m| format!(", MFU {:.1} %", 100.0 * m))
    );
    if let Some(path) = &args.json {
        crate::output::write_json(path, &report)?;
    }
    Ok(())
}

/// SplitMix64 (Steele, Lea and Flood 2014): a well-mixed u64 from a counter.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
