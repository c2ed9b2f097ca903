//! The CPU engine against the burn model: logits and greedy tokens on every architecture
//! switch, f32 and quantized checkpoints, damaged files.

use std::fs;

use burn::tensor::{Device, Int, Tensor, TensorData};
use lmforge_infer::{BurnDecoder, CpuGpt, Decoder, GenerateOptions, Sampling, generate};
use lmforge_model::{Gpt, save_gpt};
use lmforge_quant::checkpoint::read_f32;
use lmforge_quant::{Scheme, load_gpt, quantize_checkpoint};

use crate::{small, tempdir, variants};

fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f32 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

fn last_logits(model: &Gpt, tokens: &[u32]) -> Vec<f32> {
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let input =
        Tensor::<2, Int>::from_ints(TensorData::new(ids, [1, tokens.len()]), &Device::flex());
    let all = lmforge_model::host_values(model.forward(input).unwrap());
    let vocab = model.config().vocab_size;
    all[all.len() - vocab..].to_vec()
}

const PROMPTS: [&[u32]; 2] = [&[5, 17, 42, 9, 250, 3], &[77]];

fn greedy<D: Decoder>(model: &D) -> Vec<Vec<u32>> {
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let options = GenerateOptions {
        max_new_tokens: 12,
        sampling: Sampling::greedy(),
        stop_tokens: vec![],
    };
    generate(model, &prompts, &options, |_, _| true)
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect()
}

#[test]
fn the_cpu_engine_decodes_like_the_burn_model() {
    let device = Device::flex();
    for (i, config) in variants().into_iter().enumerate() {
        let model = config.init(&device, 3 + i as u64).unwrap();
        let engine = CpuGpt::from_gpt(&model).unwrap();
        let burn = BurnDecoder {
            model: &model,
            device: &device,
        };
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
        let (mut burn_cache, burn_logits) = burn.prefill(&prompts).unwrap();
        let (mut cache, engine_logits) = engine.prefill(&prompts).unwrap();
        for (a, b) in engine_logits.iter().zip(&burn_logits) {
            assert!(relative_error(a, b) < 1e-4, "variant {i} prefill");
        }
        // Past a block boundary (16 positions), so block tables of two blocks are read.
        for step in 0..20 {
            let next = [(step * 7 % 300) as u32, 11];
            let a = engine.decode(&mut cache, &next).unwrap();
            let b = burn.decode(&mut burn_cache, &next).unwrap();
            for (a, b) in a.iter().zip(&b) {
                assert!(relative_error(a, b) < 1e-4, "variant {i} step {step}");
            }
        }
        assert_eq!(greedy(&engine), greedy(&burn), "variant {i}");
    }
}

#[test]
fn quantized_checkpoints_run_on_their_codes_as_burn_runs_them_dequantized() {
    let dir = tempdir("quantized");
    let device = Device::flex();
    let model = small().init(&device, 1).unwrap();
    let f32_dir = dir.join("f32");
    save_gpt(&model, &f32_dir).unwrap();
    let tokens = [1u32, 2, 3, 4, 5, 6, 7, 8];
    // Our own f32 checkpoint loads as it was saved, read straight from its file (no burn
    // model built): the same weights bit for bit as the engine built from the model.
    assert!(read_f32(&f32_dir).unwrap().is_some());
    let engine = CpuGpt::load(&f32_dir).unwrap();
    let (_, logits) = engine.prefill(&[tokens.to_vec()]).unwrap();
    let (_, from_model) = CpuGpt::from_gpt(&model)
        .unwrap()
        .prefill(&[tokens.to_vec()])
        .unwrap();
    assert_eq!(logits, from_model);
    assert!(relative_error(&logits[0], &last_logits(&model, &tokens)) < 1e-4);
    for scheme in [Scheme::Int8, Scheme::Int8Tensor, Scheme::Q8_0, Scheme::Q4_0] {
        let out = dir.join(scheme.name());
        quantize_checkpoint(&f32_dir, &out, scheme).unwrap();
        let engine = CpuGpt::load(&out).unwrap();
        assert!(engine.weight_bytes() < CpuGpt::from_gpt(&model).unwrap().weight_bytes());
        let dequantized = load_gpt(&out, &device).unwrap();
        let (_, logits) = engine.prefill(&[tokens.to_vec()]).unwrap();
        let want = last_logits(&dequantized, &tokens);
        assert!(relative_error(&logits[0], &want) < 1e-4, "{scheme}");
        let burn = BurnDecoder {
            model: &dequantized,
            device: &device,
        };
        assert_eq!(greedy(&engine), greedy(&burn), "{scheme}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_checkpoints_are_errors_naming_the_file() {
    let dir = tempdir("damaged");
    let f32_dir = dir.join("f32");
    save_gpt(&small().init(&Device::flex(), 2).unwrap(), &f32_dir).unwrap();
    let out = dir.join("q8");
    quantize_checkpoint(&f32_dir, &out, Scheme::Q8_0).unwrap();
    let weights = out.join("model.safetensors");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = CpuGpt::load(&out).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // A damaged f32 checkpoint: the direct reader refuses it, and the burn loader it falls
    // back to names the file.
    let f32_weights = f32_dir.join("model.safetensors");
    let bytes = fs::read(&f32_weights).unwrap();
    fs::write(&f32_weights, &bytes[..bytes.len() - 100]).unwrap();
    assert!(read_f32(&f32_dir).is_err());
    let err = CpuGpt::load(&f32_dir).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    let err = CpuGpt::load(&dir.join("missing")).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}
