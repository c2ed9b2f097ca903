//! The training loop end to end on flex: overfitting, accumulation and data parallelism against
//! one big batch, exact resume, fp16/bf16, divergence, checkpoints and logs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use lmforge_dataset::{
    Builder, DType, GptBatch, GptBlend, GptConfig as DataConfig, Split, SplitKind,
};
use lmforge_model::{Gpt, GptConfig};
use lmforge_train::checkpoint::{self, read_optimizer, read_state};
use lmforge_train::gpt::{GptObjective, gpt_loss};
use lmforge_train::metrics;
use lmforge_train::zero::trainable_shapes;
use lmforge_train::{
    AdamW, AdamWConfig, Alone, DecayStyle, Error, LossScaler, LrSchedule, Objective, Precision,
    PretrainConfig, Resume, ScalerConfig, Splits, StepConfig, TokenText, pretrain, train_step,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

const VOCAB: usize = 64;

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn small_config() -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 2,
        d_model: 32,
        max_seq_len: 32,
        ..GptConfig::tiny(VOCAB)
    }
}

pub(crate) fn device() -> Device {
    Device::flex().autodiff()
}

pub(crate) fn random_batch(rows: usize, seq: usize, seed: u64) -> GptBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tokens: Vec<u32> = (0..rows * (seq + 1))
        .map(|_| rng.next_u32() % VOCAB as u32)
        .collect();
    let mut batch = GptBatch::zeroed(rows, seq);
    for r in 0..rows {
        let row = &tokens[r * (seq + 1)..(r + 1) * (seq + 1)];
        batch.tokens[r * seq..(r + 1) * seq].copy_from_slice(&row[..seq]);
        batch.labels[r * seq..(r + 1) * seq].copy_from_slice(&row[1..]);
    }
    batch.loss_mask.fill(1.0);
    batch
}

fn row(batch: &GptBatch, r: usize) -> GptBatch {
    let s = batch.seq_length;
    GptBatch {
        batch_size: 1,
        seq_length: s,
        tokens: batch.tokens[r * s..(r + 1) * s].to_vec(),
        labels: batch.labels[r * s..(r + 1) * s].to_vec(),
        loss_mask: batch.loss_mask[r * s..(r + 1) * s].to_vec(),
        position_ids: batch.position_ids[r * s..(r + 1) * s].to_vec(),
    }
}

struct Values(Vec<f32>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.extend(lmforge_model::host_values(param.val()));
    }
}

fn values<M: Module>(model: &M) -> Vec<f32> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// One step on one flex device over one batch.
fn one_batch_step(
    model: Gpt,
    optimizer: &mut AdamW,
    scaler: &mut LossScaler,
    lr: f64,
    config: &StepConfig,
    batch: &GptBatch,
) -> lmforge_train::Result<(Gpt, lmforge_train::StepOutcome)> {
    let device = device();
    train_step(
        model,
        std::slice::from_ref(&device),
        &Alone,
        optimizer,
        scaler,
        lr,
        config,
        |m, _, _| gpt_loss(m, batch, &device),
    )
}

fn step_config(micro_batches: usize) -> StepConfig {
    StepConfig {
        micro_batches,
        clip_grad: Some(1.0),
        precision: Precision::Fp32,
    }
}

#[test]
fn overfitting_one_batch_drives_the_loss_near_zero() {
    let device = device();
    let mut model = small_config().init(&device, 1).unwrap();
    let batch = random_batch(2, 16, 7);
    let mut optimizer = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let mut scaler = LossScaler::None;
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..150 {
        let (m, outcome) = one_batch_step(
            model,
            &mut optimizer,
            &mut scaler,
            1e-2,
            &step_config(1),
            &batch,
        )
        .unwrap();
        model = m;
        first.get_or_insert(outcome.loss);
        last = outcome.loss;
    }
    let first = first.unwrap();
    assert!(
        (first - (VOCAB as f64).ln()).abs() < 0.5,
        "untrained loss {first}"
    );
    assert!(last < 0.05, "loss after 150 steps: {last}");
}

#[test]
fn accumulating_micro_batches_equals_one_big_batch() {
    let device = device();
    let start = small_config().init(&device, 2).unwrap();
    let batch = random_batch(4, 16, 3);
    let run = |model: Gpt, micro: usize, ranks: &[Device]| {
        let mut optimizer = AdamW::new(AdamWConfig::default());
        let mut scaler = LossScaler::None;
        let mut model = model;
        let mut norms = Vec::new();
        for _ in 0..3 {
            let (m, outcome) = train_step(
                model,
                ranks,
                &Alone,
                &mut optimizer,
                &mut scaler,
                1e-3,
                &step_config(micro),
                |m, rank, k| {
                    if micro == 1 && ranks.len() == 1 {
                        gpt_loss(m, &batch, &device)
                    } else {
                        // Megatron's order: micro-batch k of rank r holds sample k·ranks + r.
                        gpt_loss(m, &row(&batch, k * ranks.len() + rank), &ranks[rank])
                    }
                },
            )
            .unwrap();
            model = m;
            norms.push(outcome.grad_norm);
        }
        (values(&model), norms)
    };
    let (one, one_norms) = run(start.clone(), 1, std::slice::from_ref(&device));
    let (four, four_norms) = run(start.clone(), 4, std::slice::from_ref(&device));
    let (parallel, parallel_norms) = run(start.clone(), 2, &[device.clone(), device.clone()]);
    assert!(
        max_diff(&one, &four) < 2e-5,
        "accumulation: {}",
        max_diff(&one, &four)
    );
    assert!(
        max_diff(&one, &parallel) < 2e-5,
        "data parallel: {}",
        max_diff(&one, &parallel)
    );
    for ((a, b), c) in one_norms.iter().zip(&four_norms).zip(&parallel_norms) {
        assert!(
            (a - b).abs() < 1e-4 * a && (a - c).abs() < 1e-4 * a,
            "{a} {b} {c}"
        );
    }
    assert_ne!(values(&start), one, "the steps moved the weights");
}

#[test]
fn clipping_bounds_the_update() {
    let device = device();
    let batch = random_batch(2, 16, 5);
    let start = small_config().init(&device, 4).unwrap();
    let mut optimizer = AdamW::new(AdamWConfig::default());
    let mut scaler = LossScaler::None;
    let config = StepConfig {
        micro_batches: 1,
        clip_grad: Some(1e-3),
        precision: Precision::Fp32,
    };
    let (_, outcome) =
        one_batch_step(start, &mut optimizer, &mut scaler, 1e-3, &config, &batch).unwrap();
    assert!(
        outcome.grad_norm > 1e-3,
        "the norm reported is the one before clipping"
    );
    // Adam normalises the step size, so the clipped gradient shows in the first moment: its
    // norm is (1 − β₁) × the clipped norm.
    let moments: f64 = optimizer
        .moments
        .values()
        .map(|m| {
            let v = lmforge_model::host_values(m.m.clone());
            v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>()
        })
        .sum::<f64>()
        .sqrt();
    assert!(moments <= 0.1 * 1e-3 * 1.0001, "{moments}");
    assert!(moments > 0.1 * 1e-3 * 0.99, "{moments}");
}

/// A corpus of `docs` documents of random lengths with a learnable pattern (counting mod 16
/// with noise), converted to .bin/.idx.
pub(crate) fn corpus(dir: &Path, docs: usize) -> PathBuf {
    let prefix = dir.join("corpus_text_document");
    let mut builder = Builder::create(&prefix, DType::for_vocab_size(VOCAB)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..docs {
        let len = 20 + (rng.next_u32() % 60) as usize;
        let start = rng.next_u32() % 16;
        let ids: Vec<u32> = (0..len as u32)
            .map(|i| {
                if rng.next_u32() % 10 == 0 {
                    rng.next_u32() % VOCAB as u32
                } else {
                    (start + i) % 16
                }
            })
            .collect();
        builder.add_document(&ids, &[ids.len()]).unwrap();
    }
    builder.finish().unwrap();
    prefix
}

pub(crate) fn splits(prefix: &Path, seq: usize, train_samples: u64, eval_samples: u64) -> Splits {
    let split = Split::parse("80,10,10").unwrap();
    let config = DataConfig::new(seq, 1234);
    let build = |kind, n| {
        GptBlend::build(
            &[(prefix.to_path_buf(), 1.0)],
            &split,
            kind,
            n,
            &config,
            None,
        )
    };
    Splits {
        train: build(SplitKind::Train, train_samples).unwrap(),
        valid: Some(build(SplitKind::Valid, eval_samples).unwrap()),
        test: Some(build(SplitKind::Test, eval_samples).unwrap()),
    }
}

pub(crate) fn pretrain_config(save: &Path, iters: u64) -> PretrainConfig {
    PretrainConfig {
        token_text: TokenText::default(),
        micro_batch: 2,
        global_batch: 4,
        seq_length: 16,
        train_iters: iters,
        schedule: LrSchedule {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 2.min(iters - 1),
            decay_steps: iters,
            style: DecayStyle::Cosine,
        },
        adamw: AdamWConfig {
            beta2: 0.95,
            weight_decay: 0.1,
            ..AdamWConfig::default()
        },
        clip_grad: Some(1.0),
        precision: Precision::Fp32,
        distributed_optimizer: false,
        tensor_parallel: 1,
        scaler: LossScaler::None,
        log_interval: 1,
        eval_interval: 4,
        eval_iters: 2,
        save: Some(save.to_path_buf()),
        save_interval: 0,
        exit_at: None,
        exit_duration_mins: None,
        seed: 1234,
        flops_per_token: small_config().training_flops_per_token(16),
        peak_flops: None,
        progress: false,
        unigram_entropy: None,
    }
}

/// `pretrain` on flex with no recorded arguments.
fn run(
    model: Gpt,
    objective: &dyn Objective<Gpt>,
    data: &Splits,
    config: &PretrainConfig,
    resume: Option<Resume>,
    stop: &AtomicBool,
) -> lmforge_train::Result<(Gpt, lmforge_train::PretrainReport)> {
    let devices = [device()];
    pretrain(
        model,
        objective,
        data,
        config,
        &devices,
        &Alone,
        resume,
        stop,
        serde_json::Value::Null,
    )
}

pub(crate) fn objective() -> GptObjective {
    GptObjective {
        tokenizer_json: None,
    }
}

/// Bits per byte (and per character) weigh each target's nats by its text bytes (characters):
/// a token of one byte each gives the loss in bits, of two bytes half that, and the loss beside
/// it is `evaluate`'s own.
#[test]
fn bits_per_byte_count_the_targets_bytes() {
    let dir = temp_dir("per-byte");
    let prefix = corpus(&dir, 40);
    let data = splits(&prefix, 16, 8, 6);
    let valid = data.valid.as_ref().unwrap();
    let device = Device::flex();
    let model = small_config().init(&device, 7).unwrap();
    let vocab = small_config().vocab_size;
    let loss = lmforge_train::evaluate(&model, &objective(), valid, 6, 4, &device).unwrap();
    let scored = |text: &TokenText| {
        lmforge_train::evaluate_scored(&model, &objective(), valid, 6, 4, &device, text).unwrap()
    };
    // Batches of 4 and 2 samples: the token-weighted mean is not the mean of batch means.
    let batch_losses: Vec<f64> = [vec![0, 1, 2, 3], vec![4, 5]]
        .iter()
        .map(|rows| {
            let batch = valid.batch(rows);
            let l = objective()
                .loss(&model.valid(), &batch, 0, &device)
                .unwrap();
            f64::from(l.into_scalar::<f32>()) * rows.len() as f64
        })
        .collect();
    let token_mean = batch_losses.iter().sum::<f64>() / 6.0;
    let score = scored(&TokenText::one_byte_each(vocab));
    assert_eq!(score.loss, loss, "the loss is evaluate's");
    let ones = score.bits_per_byte.unwrap();
    assert!(
        (ones * std::f64::consts::LN_2 - token_mean).abs() < 1e-5 * token_mean,
        "{ones} bits/byte against {token_mean} nats per token"
    );
    assert_eq!(
        score.bits_per_char,
        Some(ones),
        "a byte is a character here"
    );
    // Two bytes each, one character: half the bits per byte, the same per character.
    let two_bytes = TokenText {
        bytes: vec![2; vocab],
        chars: vec![1; vocab],
    };
    let halves = scored(&two_bytes);
    let twos = halves.bits_per_byte.unwrap();
    assert!((twos * 2.0 - ones).abs() < 1e-9 * ones, "{twos} {ones}");
    assert_eq!(halves.bits_per_char, Some(ones));
    let none = scored(&TokenText::default());
    assert_eq!(
        (none.bits_per_byte, none.bits_per_char),
        (None, None),
        "no text, no figure"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The validation in `metrics.jsonl` gives bits per byte when the tokens' bytes are known:
/// one byte each, the loss in bits (its batches are of one size).
#[test]
fn the_validation_in_metrics_gives_bits_per_byte() {
    let dir = temp_dir("val-per-byte");
    let prefix = corpus(&dir, 40);
    let data = splits(&prefix, 16, 64, 8);
    let save = dir.join("run");
    let config = PretrainConfig {
        token_text: TokenText::one_byte_each(small_config().vocab_size),
        ..pretrain_config(&save, 4)
    };
    let model = small_config().init(&device(), 3).unwrap();
    run(
        model,
        &objective(),
        &data,
        &config,
        None,
        &AtomicBool::new(false),
    )
    .unwrap();
    let records = metrics::read(&save.join("metrics.jsonl")).unwrap();
    let validated: Vec<_> = records.iter().filter(|r| r.val_loss.is_some()).collect();
    assert!(!validated.is_empty());
    for r in validated {
        let bits = r.val_bits_per_byte.expect("bits per byte beside the loss");
        assert_eq!(
            r.val_bits_per_char,
            Some(bits),
            "a byte is a character here"
        );
        let nats = r.val_loss.unwrap();
        assert!(
            (bits * std::f64::consts::LN_2 - nats).abs() < 1e-5 * nats,
            "{r:?}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_resumed_run_equals_the_uninterrupted_one_bit_for_bit() {
    let dir = temp_dir("resume");
    let prefix = corpus(&dir, 120);
    let iters = 16;
    let data = splits(&prefix, 16, iters * 4, 8);
    let stop = AtomicBool::new(false);
    let device = device();
    let fresh = || small_config().init(&device, 9).unwrap();

    let straight = dir.join("straight");
    let (_, report) = run(
        fresh(),
        &objective(),
        &data,
        &pretrain_config(&straight, iters),
        None,
        &stop,
    )
    .unwrap();
    assert_eq!(report.iterations, iters);
    assert!(!report.interrupted);

    // Megatron's --exit-duration-in-mins: past the time after an iteration, a checkpoint and
    // a stop (no time at all: after the first).
    let timed = dir.join("timed");
    let mut config = pretrain_config(&timed, iters);
    config.exit_duration_mins = Some(0.0);
    let (_, report) = run(fresh(), &objective(), &data, &config, None, &stop).unwrap();
    assert!(report.interrupted);
    assert_eq!(report.iterations, 1);
    let saved = checkpoint::resolve(&timed).unwrap();
    assert!(saved.ends_with("iter_0000001"), "{}", saved.display());

    let broken = dir.join("broken");
    let mut config = pretrain_config(&broken, iters);
    config.exit_at = Some(5);
    let (_, report) = run(fresh(), &objective(), &data, &config, None, &stop).unwrap();
    assert!(report.interrupted);
    assert_eq!(report.iterations, 5);
    let saved = checkpoint::resolve(&broken).unwrap();
    assert!(saved.ends_with("iter_0000005"), "{}", saved.display());
    let state = read_state(&saved).unwrap();
    assert_eq!((state.iteration, state.consumed_train_samples), (5, 20));

    let model = lmforge_model::load_gpt(&saved, &device).unwrap();
    let optimizer =
        read_optimizer(&saved, &state, &device, &trainable_shapes(&model), None).unwrap();
    let resume = Resume { optimizer, state };
    run(
        model,
        &objective(),
        &data,
        &pretrain_config(&broken, iters),
        Some(resume),
        &stop,
    )
    .unwrap();

    let a = metrics::read(&straight.join("metrics.jsonl")).unwrap();
    let b = metrics::read(&broken.join("metrics.jsonl")).unwrap();
    type Row = (u64, Option<f64>, Option<f64>, Option<f64>);
    let losses = |r: &[metrics::Record]| -> Vec<Row> {
        r.iter()
            .map(|r| (r.iteration, r.loss, r.grad_norm, r.val_loss))
            .collect()
    };
    assert_eq!(losses(&a), losses(&b), "the resumed curve differs");
    assert_eq!(
        a.iter().filter(|r| r.loss.is_some()).count(),
        iters as usize
    );
    let weights = |d: &Path| {
        std::fs::read(checkpoint::resolve(d).unwrap().join("model.safetensors")).unwrap()
    };
    assert!(
        weights(&straight) == weights(&broken),
        "the final weights differ"
    );
    let moments = |d: &Path| {
        std::fs::read(
            checkpoint::resolve(d)
                .unwrap()
                .join("optimizer.safetensors"),
        )
        .unwrap()
    };
    assert!(moments(&straight) == moments(&broken), "the moments differ");

    // The run learned the pattern: well below the uniform ln(64) ≈ 4.16.
    let last = a.iter().rev().find_map(|r| r.val_loss).unwrap();
    assert!(last < 3.6, "validation loss {last}");
    let png = std::fs::read(straight.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(straight.join("train_report.json")).unwrap())
            .unwrap();
    assert!(report["test_perplexity"].as_f64().unwrap() > 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_stops() {
    let dir = temp_dir("stop");
    let prefix = corpus(&dir, 60);
    let data = splits(&prefix, 16, 40, 4);
    let stop = AtomicBool::new(true);
    let device = device();
    let (_, report) = run(
        small_config().init(&device, 9).unwrap(),
        &objective(),
        &data,
        &pretrain_config(&dir.join("run"), 10),
        None,
        &stop,
    )
    .unwrap();
    assert!(report.interrupted);
    assert_eq!(report.iterations, 1);
    let saved = checkpoint::resolve(&dir.join("run")).unwrap();
    assert!(
        saved.join("model.safetensors").is_file() && saved.join("optimizer.safetensors").is_file()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("run"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An objective whose loss turns NaN from a given iteration's micro-batch seed on.
struct Poisoned;

impl Objective<Gpt> for Poisoned {
    fn loss(
        &self,
        model: &Gpt,
        batch: &GptBatch,
        _seed: u64,
        device: &Device,
    ) -> lmforge_train::Result<Tensor<1>> {
        Ok(gpt_loss(model, batch, device)?.mul_scalar(f32::NAN))
    }

    fn save(&self, model: &Gpt, dir: &Path) -> lmforge_train::Result<()> {
        Ok(lmforge_model::save_gpt(model, dir)?)
    }
}

#[test]
fn a_nan_loss_stops_with_a_message_or_is_skipped_under_loss_scaling() {
    let dir = temp_dir("nan");
    let prefix = corpus(&dir, 60);
    let data = splits(&prefix, 16, 40, 4);
    let stop = AtomicBool::new(false);
    let device = device();
    let model = small_config().init(&device, 9).unwrap();
    let error = run(
        model.clone(),
        &Poisoned,
        &data,
        &pretrain_config(&dir.join("fp32"), 3),
        None,
        &stop,
    )
    .unwrap_err();
    assert!(matches!(error, Error::NonFinite(_)), "{error}");
    assert!(error.to_string().contains("iteration 1"), "{error}");
    assert!(
        checkpoint::resolve(&dir.join("fp32")).is_err(),
        "nothing was saved"
    );

    let mut config = pretrain_config(&dir.join("fp16"), 3);
    config.scaler = LossScaler::Static { scale: 1024.0 };
    config.eval_interval = 0;
    let mut no_eval = data;
    no_eval.valid = None;
    no_eval.test = None;
    let before = values(&model);
    let (after, report) = run(model, &Poisoned, &no_eval, &config, None, &stop).unwrap();
    assert_eq!(report.skipped_iterations, 3);
    assert_eq!(
        values(&after),
        before,
        "skipped steps leave the weights alone"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_precision_trains_on_fp32_master_weights() {
    let device = device();
    let batch = random_batch(2, 16, 21);
    for precision in [Precision::Bf16, Precision::Fp16] {
        let mut model = small_config().init(&device, 3).unwrap();
        let mut optimizer = AdamW::new(AdamWConfig::default());
        let mut scaler = match precision {
            Precision::Fp16 => LossScaler::dynamic(ScalerConfig {
                initial_scale: 65536.0,
                ..ScalerConfig::default()
            }),
            _ => LossScaler::None,
        };
        let config = StepConfig {
            micro_batches: 1,
            clip_grad: Some(1.0),
            precision,
        };
        let mut losses = Vec::new();
        for _ in 0..40 {
            let (m, outcome) =
                one_batch_step(model, &mut optimizer, &mut scaler, 1e-2, &config, &batch).unwrap();
            model = m;
            if !outcome.skipped {
                losses.push(outcome.loss);
            }
        }
        assert!(losses.len() > 30, "{precision:?}: too many skipped steps");
        assert!(
            losses.last().unwrap() < &(losses[0] * 0.5),
            "{precision:?}: {losses:?}"
        );
        let weights = values(&model);
        assert!(weights.iter().all(|w| w.is_finite()));
    }
}

#[test]
fn damaged_checkpoints_are_errors_naming_the_file() {
    let dir = temp_dir("damaged");
    let prefix = corpus(&dir, 60);
    let data = splits(&prefix, 16, 8, 4);
    let stop = AtomicBool::new(false);
    let device = device();
    let mut config = pretrain_config(&dir.join("run"), 2);
    config.eval_interval = 0;
    run(
        small_config().init(&device, 9).unwrap(),
        &objective(),
        &data,
        &config,
        None,
        &stop,
    )
    .unwrap();
    let saved = checkpoint::resolve(&dir.join("run")).unwrap();
    let state = read_state(&saved).unwrap();

    // A model of another shape refuses the optimizer state.
    let other = GptConfig {
        d_model: 48,
        ..small_config()
    }
    .init(&device, 0)
    .unwrap();
    // Read for it, the file does not fit; read for the model that wrote it, the run refuses it.
    let error =
        read_optimizer(&saved, &state, &device, &trainable_shapes(&other), None).unwrap_err();
    assert!(
        error.to_string().contains("optimizer.safetensors"),
        "{error}"
    );
    let written = small_config().init(&device, 0).unwrap();
    let optimizer =
        read_optimizer(&saved, &state, &device, &trainable_shapes(&written), None).unwrap();
    let error = run(
        other,
        &objective(),
        &data,
        &config,
        Some(Resume {
            optimizer,
            state: state.clone(),
        }),
        &stop,
    )
    .unwrap_err();
    assert!(error.to_string().contains("--load"), "{error}");

    let path = saved.join("optimizer.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error =
        read_optimizer(&saved, &state, &device, &trainable_shapes(&written), None).unwrap_err();
    assert!(
        error.to_string().contains("optimizer.safetensors"),
        "{error}"
    );

    std::fs::write(saved.join("trainer.json"), b"{\"format\": 1").unwrap();
    let error = read_state(&saved).unwrap_err();
    assert!(error.to_string().contains("trainer.json"), "{error}");

    std::fs::write(
        dir.join("run").join("latest_checkpointed_iteration.txt"),
        b"7",
    )
    .unwrap();
    let error = checkpoint::resolve(&dir.join("run")).unwrap_err();
    assert!(error.to_string().contains("iter_0000007"), "{error}");
    assert!(checkpoint::resolve(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unigram_entropy_of_a_known_distribution() {
    let dir = temp_dir("unigram");
    let prefix = dir.join("u_text_document");
    let mut builder = Builder::create(&prefix, DType::for_vocab_size(VOCAB)).unwrap();
    // Four tokens equally often: ln 4.
    builder
        .add_document(&[1, 2, 3, 4, 1, 2, 3, 4], &[8])
        .unwrap();
    builder.finish().unwrap();
    let h = lmforge_train::pretrain::unigram_entropy(&[(prefix, 1.0)]).unwrap();
    assert!((h - 4f64.ln()).abs() < 1e-12, "{h}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_global_batch_that_micro_batches_do_not_divide_is_refused() {
    let config = PretrainConfig {
        global_batch: 6,
        micro_batch: 4,
        ..pretrain_config(Path::new("unused"), 1)
    };
    let error = config.micro_batches(1).unwrap_err();
    assert!(error.to_string().contains("--global-batch-size"), "{error}");
    assert_eq!(
        PretrainConfig {
            global_batch: 8,
            ..config
        }
        .micro_batches(2)
        .unwrap(),
        1
    );
}

mod arbitrary_files {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever bytes stand in a checkpoint's files, reading them is an error or a value,
        /// never a panic.
        #[test]
        fn damaged_checkpoint_files_never_panic(state in proptest::collection::vec(any::<u8>(), 0..300),
                                                optimizer in proptest::collection::vec(any::<u8>(), 0..300),
                                                metrics in proptest::collection::vec(any::<u8>(), 0..300),
                                                latest in proptest::collection::vec(any::<u8>(), 0..20)) {
            let dir = temp_dir("arbitrary");
            let iteration = dir.join("iter_0000001");
            std::fs::create_dir_all(&iteration).unwrap();
            std::fs::write(iteration.join("trainer.json"), &state).unwrap();
            std::fs::write(iteration.join("optimizer.safetensors"), &optimizer).unwrap();
            std::fs::write(dir.join("metrics.jsonl"), &metrics).unwrap();
            std::fs::write(dir.join("latest_checkpointed_iteration.txt"), &latest).unwrap();
            let _ = checkpoint::resolve(&dir);
            if let Ok(state) = read_state(&iteration) {
                let shapes = trainable_shapes(&small_config().init(&Device::flex(), 0).unwrap());
                let _ = read_optimizer(&iteration, &state, &Device::flex(), &shapes, None);
                let _ = read_optimizer(&iteration, &state, &Device::flex(), &shapes, Some((2, 1)));
            }
            let _ = metrics::read(&dir.join("metrics.jsonl"));
            let _ = metrics::MetricsLog::open(&dir.join("metrics.jsonl"), Some(3));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
