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

#[test]
fn the_device_engine_on_wgpu_decodes_like_the_cpu_engine() {
    let device = match DeviceSpec::Wgpu.resolve() {
        Ok(device) => device,
        Err(err) if std::env::var_os("LMFORGE_REQUIRE_WGPU").is_none() => {
            eprintln!("skipped: {err} (set LMFORGE_REQUIRE_WGPU=1 to fail)");
            return;
        }
        Err(err) => panic!("LMFORGE_REQUIRE_WGPU is set but {err}"),
    };
    matches_the_cpu_engine(&device, variants());
}
