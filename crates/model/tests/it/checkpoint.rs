//! Our checkpoints: save, load, and what a broken one says.

use std::fs;

use burn::tensor::{Device, Int, Tensor};
use lmforge_model::{
    Activation, BertBatch, BertConfig, Error, GptConfig, NormKind, Positions, load_bert, load_gpt,
    save_bert, save_gpt,
};

use crate::hf::tempdir;

fn logits(model: &lmforge_model::Gpt, device: &Device) -> Vec<f32> {
    let tokens = Tensor::<2, Int>::from_ints([[5, 3, 9, 1], [2, 2, 7, 0]], device);
    model
        .forward(tokens)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn small() -> GptConfig {
    GptConfig {
        n_layer: 2,
        d_model: 32,
        max_seq_len: 16,
        ..GptConfig::tiny(40)
    }
}

#[test]
fn gpt_checkpoints_roundtrip_bit_for_bit() {
    let device = Device::flex();
    let variants = [
        small(),
        GptConfig {
            positions: Positions::Rope,
            norm: NormKind::RmsNorm,
            activation: Activation::Swiglu,
            bias: false,
            tie_embeddings: false,
            ..small()
        },
        GptConfig {
            positions: Positions::Alibi,
            ..small()
        },
    ];
    for (i, config) in variants.into_iter().enumerate() {
        let dir = tempdir(&format!("ckpt-{i}"));
        let model = config.init(&device, 3).unwrap();
        save_gpt(&model, &dir).unwrap();
        let back = load_gpt(&dir, &device).unwrap();
        assert_eq!(back.config(), &config);
        assert_eq!(
            logits(&model, &device),
            logits(&back, &device),
            "{config:?}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn bert_checkpoints_roundtrip() {
    let device = Device::flex();
    let config = BertConfig {
        d_model: 32,
        d_ff: 64,
        max_seq_len: 16,
        ..BertConfig::tiny(50)
    };
    let model = config.init(&device, 1).unwrap();
    let dir = tempdir("bert-ckpt");
    save_bert(&model, &dir).unwrap();
    let back = load_bert(&dir, &device).unwrap();
    let batch = BertBatch::new(&[vec![2, 7, 9, 3], vec![2, 5, 3]], 0, &device).unwrap();
    let a = model.forward(&batch).unwrap().into_data();
    let b = back.forward(&batch).unwrap().into_data();
    assert_eq!(a, b);
    // A BERT is not a GPT.
    let err = load_gpt(&dir, &device).unwrap_err().to_string();
    assert!(err.contains("holds a bert model, not a gpt"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_checkpoints_say_what_is_wrong() {
    let device = Device::flex();
    let dir = tempdir("ckpt-broken");
    save_gpt(&small().init(&device, 0).unwrap(), &dir).unwrap();
    let meta = fs::read_to_string(dir.join("lmforge.json")).unwrap();

    // The config promises a layer the weights do not have.
    fs::write(
        dir.join("lmforge.json"),
        meta.replace("\"n_layer\": 2", "\"n_layer\": 3"),
    )
    .unwrap();
    let err = load_gpt(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if name.starts_with("blocks.2.")),
        "{err}"
    );
    // A wider model than the weights.
    fs::write(
        dir.join("lmforge.json"),
        meta.replace("\"d_model\": 32", "\"d_model\": 64"),
    )
    .unwrap();
    let err = load_gpt(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.to_lowercase().contains("shape"),
        "{err}"
    );
    // Heads that do not divide the width, and a field that does not exist.
    fs::write(
        dir.join("lmforge.json"),
        meta.replace("\"n_head\": 4", "\"n_head\": 5"),
    )
    .unwrap();
    let err = load_gpt(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("`d_model`") && err.contains("n_head = 5"),
        "{err}"
    );
    fs::write(
        dir.join("lmforge.json"),
        meta.replace("\"n_head\"", "\"n_heads\""),
    )
    .unwrap();
    let err = load_gpt(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("lmforge.json") && err.contains("n_heads"),
        "{err}"
    );
    // A truncated weights file.
    fs::write(dir.join("lmforge.json"), &meta).unwrap();
    let weights = fs::read(dir.join("model.safetensors")).unwrap();
    fs::write(dir.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let err = load_gpt(&dir, &device).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // Neither ours nor Hugging Face's.
    fs::remove_file(dir.join("lmforge.json")).unwrap();
    let err = load_gpt(&dir, &device).unwrap_err().to_string();
    assert!(err.contains("neither lmforge.json"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}
