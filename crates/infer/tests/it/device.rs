//! The device engine against the CPU engine: the same greedy tokens for every architecture
//! switch, alone and in a busy batch of the scheduler, on flex and (where a Vulkan adapter is
//! found, lavapipe in CI) on wgpu.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use burn::tensor::Device;
use lmforge_infer::scheduler::{EVENT_BUFFER, Engine, EngineOptions, Event, Job, Metrics};
use lmforge_infer::{
    Batched, CpuGpt, Decoder, DeviceGpt, Finish, GenerateOptions, Sampling, generate,
};
use lmforge_model::DeviceSpec;

use crate::variants;

fn greedy<D: Decoder>(model: &D, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let options = GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::greedy(),
        stop_tokens: vec![],
    };
    generate(model, prompts, &options, |_, _| true)
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 17, 42, 9, 250, 3],
        vec![77],
        (0..37).map(|i| (i * 31 % 300) as u32).collect(),
    ]
}

/// Every request of a busy batch (chunked prefill, sequences of different lengths in one
/// step) gets the tokens the CPU engine decodes for it alone.
fn busy_batch_matches(engine: Arc<DeviceGpt>, cpu: &CpuGpt, what: &str) {
    for prefix_caching in [true, false] {
        let metrics = Arc::new(Metrics::default());
        let options = EngineOptions {
            max_batch: 3,
            prefill_chunk: 13,
            block_tokens: 8,
            prefix_caching,
            ..EngineOptions::default()
        };
        let (handle, _thread) = Engine::start(engine.clone(), options, metrics.clone());
        let submit = |p: &Vec<u32>| {
            let (tx, rx) = mpsc::sync_channel(EVENT_BUFFER);
            let job = Job {
                prompt: p.clone(),
                max_new_tokens: 6,
                sampling: Sampling::greedy(),
                stop_tokens: Vec::new(),
                prompt_logprobs: false,
                events: Box::new(tx),
                forks: Vec::new(),
            };
            handle.submit(job).unwrap();
            rx
        };
        // Three at once, then one whose prompt extends the third's (its blocks cached by then).
        let mut all = prompts();
        let mut receivers: Vec<_> = all.iter().map(submit).collect();
        all.push(all[2].iter().copied().chain([1, 2]).collect());
        for (i, prompt) in all.iter().enumerate() {
            if i == 3 {
                receivers.push(submit(prompt));
            }
            let rx = &receivers[i];
            let mut got = Vec::new();
            loop {
                match rx.recv().unwrap() {
                    Event::Token { id, .. } => got.push(id),
                    Event::Done(finish) => {
                        assert_eq!(finish, Finish::Length);
                        break;
                    }
                    Event::Failed(m) => panic!("{what}: {m}"),
                    _ => {}
                }
            }
            let alone = greedy(cpu, std::slice::from_ref(prompt), 6).remove(0);
            assert_eq!(got, alone, "{what}, caching {prefix_caching}");
        }
        assert_eq!(
            metrics.prefix_hit_tokens.load(Ordering::Relaxed) > 0,
            prefix_caching,
            "{what}: the last prompt reuses the third's blocks"
        );
    }
}

fn matches_the_cpu_engine(device: &Device, configs: Vec<lmforge_model::GptConfig>) {
    for (i, config) in configs.into_iter().enumerate() {
        let model = config.init(device, 40 + i as u64).unwrap();
        let cpu = CpuGpt::from_gpt(&model).unwrap();
        let engine = Arc::new(DeviceGpt::new(model, device.clone()));
        assert_eq!(engine.config(), cpu.config());
        let what = format!("variant {i} on {device:?}");
        assert_eq!(
            greedy(engine.as_ref(), &prompts(), 10),
            greedy(&cpu, &prompts(), 10),
            "{what}"
        );
        busy_batch_matches(engine, &cpu, &what);
    }
}

#[test]
fn the_device_engine_on_flex_decodes_like_the_cpu_engine() {
    matches_the_cpu_engine(&Device::flex(), variants());
}

/// wgpu's default adapter, or `None` (the test is skipped) where none answers and CI does not
/// require one.
fn wgpu() -> Option<Device> {
    match DeviceSpec::Wgpu.resolve() {
        Ok(device) => Some(device),
        Err(err) if std::env::var_os("LMFORGE_REQUIRE_WGPU").is_none() => {
            eprintln!("skipped: {err} (set LMFORGE_REQUIRE_WGPU=1 to fail)");
            None
        }
        Err(err) => panic!("LMFORGE_REQUIRE_WGPU is set but {err}"),
    }
}

#[test]
fn the_device_engine_on_wgpu_decodes_like_the_cpu_engine() {
    if let Some(device) = wgpu() {
        matches_the_cpu_engine(&device, variants());
    }
}

/// Weights, keys and values in f16: the logits stay within half precision's rounding of the
/// f32 engine's for every architecture switch, through prefill and decoding, and the pool
/// takes half the bytes per block.
fn f16_stays_close_to_f32(device: Device) {
    use burn::tensor::FloatDType;
    use lmforge_infer::{KvStore, PagedCache};
    for (i, config) in variants().into_iter().enumerate() {
        let model = config.init(&device, 60 + i as u64).unwrap();
        let full = DeviceGpt::new(model.clone(), device.clone());
        let half = DeviceGpt::with_dtype(model, device.clone(), FloatDType::F16);
        assert_eq!(
            half.store(16).block_bytes() * 2,
            full.store(16).block_bytes()
        );
        let prompts = prompts();
        let (mut a, la): (PagedCache<_>, _) = full.prefill(&prompts).unwrap();
        let (mut b, lb): (PagedCache<_>, _) = half.prefill(&prompts).unwrap();
        let mut pairs = vec![(la, lb)];
        let next: Vec<u32> = vec![3, 5, 7];
        pairs.push((
            full.decode(&mut a, &next).unwrap(),
            half.decode(&mut b, &next).unwrap(),
        ));
        for (step, (x, y)) in pairs.iter().enumerate() {
            for (row, (x, y)) in x.iter().zip(y).enumerate() {
                let diff: f32 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
                let norm: f32 = x.iter().map(|p| p * p).sum();
                let err = (diff / norm).sqrt();
                assert!(
                    err < 1e-2,
                    "variant {i} step {step} row {row}: relative error {err}"
                );
            }
        }
    }
}

#[test]
fn the_device_engine_in_f16_on_flex_stays_close_to_f32() {
    f16_stays_close_to_f32(Device::flex());
}

#[test]
fn the_device_engine_in_f16_on_wgpu_stays_close_to_f32() {
    if let Some(device) = wgpu() {
        f16_stays_close_to_f32(device);
    }
}
