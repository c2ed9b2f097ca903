//! Quantized checkpoints end to end: written, read back, run by burn, and damaged in every
//! way a file can be (`lmforge-infer`'s tests run the CPU engine on them).

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use lmforge_model::{Gpt, GptConfig, save_gpt};
use lmforge_quant::checkpoint::{Stored, read_quantized};
use lmforge_quant::{QuantizeOptions, Scheme, load_gpt, quantize_checkpoint};
use proptest::prelude::*;

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-quant-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn small() -> GptConfig {
    GptConfig {
        n_layer: 2,
        d_model: 64,
        n_head: 4,
        max_seq_len: 48,
        ..GptConfig::tiny(300)
    }
}

fn logits(model: &Gpt, tokens: &[u32]) -> Vec<f32> {
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let device = Device::flex();
    let input = Tensor::<2, Int>::from_ints(TensorData::new(ids, [1, tokens.len()]), &device);
    lmforge_model::host_values(model.forward(input).unwrap())
}

fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f32 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

#[test]
fn quantized_checkpoints_stay_close_and_load_everywhere() {
    let dir = tempdir("schemes");
    let device = Device::flex();
    let model = small().init(&device, 1).unwrap();
    let f32_dir = dir.join("f32");
    save_gpt(&model, &f32_dir).unwrap();
    fs::write(f32_dir.join("tokenizer.json"), "{}").unwrap();
    let tokens = [1u32, 2, 3, 4, 5, 6, 7, 8];
    let reference = logits(&model, &tokens);
    for (scheme, max_error, min_compression) in [
        (Scheme::Int8, 0.01, 3.3),
        (Scheme::Int8Tensor, 0.02, 3.3),
        (Scheme::Q8_0, 0.01, 3.1),
        (Scheme::Q4_0, 0.25, 5.0),
    ] {
        let out = dir.join(scheme.name());
        let report = quantize_checkpoint(&f32_dir, &out, scheme).unwrap();
        assert!(
            report.compression > min_compression,
            "{scheme}: {}",
            report.compression
        );
        assert!(out.join("tokenizer.json").is_file());
        for t in &report.tensors {
            assert!(
                t.error.max_relative_to_half_scale <= 1.0 + 1e-4,
                "{}",
                t.name
            );
        }
        let quantized = load_gpt(&out, &device).unwrap();
        let got = logits(&quantized, &tokens);
        let error = relative_error(&got, &reference);
        assert!(error < max_error && error > 0.0, "{scheme}: {error}");
        // Same input, same bytes.
        let again = dir.join(format!("{}-again", scheme.name()));
        quantize_checkpoint(&f32_dir, &again, scheme).unwrap();
        for file in ["model.safetensors", "lmforge.json"] {
            assert_eq!(
                fs::read(out.join(file)).unwrap(),
                fs::read(again.join(file)).unwrap()
            );
        }
    }
    // The model crate's own loader says where quantized checkpoints are read.
    let err = lmforge_model::load_gpt(&dir.join("q4_0"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lmforge_quant") && err.contains("q4_0"),
        "{err}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_four_pruning_zeroes_half_of_every_linear_group() {
    let dir = tempdir("prune");
    let device = Device::flex();
    let f32_dir = dir.join("f32");
    save_gpt(&small().init(&device, 4).unwrap(), &f32_dir).unwrap();
    let out = dir.join("pruned");
    let options = QuantizeOptions {
        scheme: Scheme::Q8_0,
        prune_2_4: true,
    };
    let report = quantize_checkpoint(&f32_dir, &out, options).unwrap();
    assert_eq!(report.sparsity.as_deref(), Some("2:4"));
    let (_, quantization, weights) = read_quantized(&out).unwrap().unwrap();
    assert_eq!(quantization.sparsity.as_deref(), Some("2:4"));
    for (name, stored) in &weights {
        let Stored::Quantized(q, layout) = stored else {
            continue;
        };
        let values = q.dequantize();
        let zero_groups = values
            .chunks(q.cols())
            .flat_map(|row| row.chunks(4))
            .filter(|g| g.iter().filter(|v| **v == 0.0).count() >= 2)
            .count();
        let groups = q.rows() * q.cols().div_ceil(4);
        if layout.transposed {
            assert_eq!(zero_groups, groups, "{name}");
        } else {
            assert!(
                zero_groups < groups / 10,
                "{name}: the embedding stays dense"
            );
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(path, serde_json::to_string(&value).unwrap()).unwrap();
}

#[test]
fn damaged_checkpoints_are_errors_naming_the_file_and_tensor() {
    let dir = tempdir("damaged");
    let device = Device::flex();
    let f32_dir = dir.join("f32");
    save_gpt(&small().init(&device, 2).unwrap(), &f32_dir).unwrap();
    let fresh = |name: &str| {
        let out = dir.join(name);
        quantize_checkpoint(&f32_dir, &out, Scheme::Q8_0).unwrap();
        out
    };
    let fails = |out: &Path, message: &str| {
        let err = load_gpt(out, &device).unwrap_err().to_string();
        assert!(err.contains(message), "{message:?} not in {err}");
    };

    let out = fresh("truncated");
    let weights = out.join("model.safetensors");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    fails(&out, "model.safetensors");

    let out = fresh("scheme");
    edit_json(&out.join("lmforge.json"), |v| {
        v["quantization"]["scheme"] = "int8".into()
    });
    fails(&out, "wte.weight.scales");

    let out = fresh("unknown-scheme");
    edit_json(&out.join("lmforge.json"), |v| {
        v["quantization"]["scheme"] = "int3".into()
    });
    fails(&out, "lmforge.json");

    let out = fresh("forgotten");
    edit_json(&out.join("lmforge.json"), |v| {
        v["quantization"]["tensors"]
            .as_object_mut()
            .unwrap()
            .remove("blocks.1.mlp.up.weight");
    });
    fails(&out, "blocks.1.mlp.up.weight");

    let out = fresh("shape");
    edit_json(&out.join("lmforge.json"), |v| {
        v["config"]["d_model"] = 32.into()
    });
    fails(&out, "is [300, 64] there, the model's is [300, 32]");

    let out = fresh("scales");
    // A scale of NaN in f16 (0x7e00) where the first block scale was.
    let bytes = fs::read(out.join("model.safetensors")).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header]).unwrap();
    let start = meta["wte.weight.scales"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize
        + 8
        + header;
    let mut damaged = bytes.clone();
    damaged[start..start + 2].copy_from_slice(&[0x00, 0x7e]);
    fs::write(out.join("model.safetensors"), damaged).unwrap();
    fails(&out, "scale NaN");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = tempdir("nan");
    let f32_dir = dir.join("f32");
    let model = small().init(&Device::flex(), 2).unwrap();
    save_gpt(&model, &f32_dir).unwrap();
    // Poison one weight through the f32 file.
    let mut tensors = lmforge_quant::checkpoint::gpt_tensors(&model).unwrap();
    let (_, _, values) = tensors
        .iter_mut()
        .find(|(n, _, _)| n == "blocks.1.attn.proj.weight")
        .unwrap();
    values[5] = f32::INFINITY;
    lmforge_model::hf::write_safetensors(&f32_dir.join("model.safetensors"), &tensors).unwrap();
    let err = quantize_checkpoint(&f32_dir, &dir.join("out"), Scheme::Int8)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.1.attn.proj.weight") && err.contains("inf"),
        "{err}"
    );
    assert!(
        !dir.join("out").join("lmforge.json").exists(),
        "nothing half-written"
    );
    fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Arbitrary bytes where the weights should be are an error, never a panic.
    #[test]
    fn arbitrary_weight_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), header in any::<bool>()) {
        let dir = std::env::temp_dir().join(format!("lmforge-quant-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let meta = serde_json::json!({
            "format": 1, "architecture": "gpt",
            "config": serde_json::to_value(small()).unwrap(),
            "quantization": {"scheme": "q4_0", "tensors": {"wte.weight": {"shape": [300, 64], "transposed": false}}},
        });
        fs::write(dir.join("lmforge.json"), meta.to_string()).unwrap();
        let mut file = bytes.clone();
        if header {
            // A plausible header length in front of the noise.
            let mut framed = (bytes.len() as u64 / 2).to_le_bytes().to_vec();
            framed.extend(&bytes);
            file = framed;
        }
        fs::write(dir.join("model.safetensors"), file).unwrap();
        prop_assert!(read_quantized(&dir).is_err());
    }
}
