//! Hugging Face checkpoints against transformers' own outputs (fixtures written by
//! `benches/peers/model_fixtures.py`).

use std::fs;

use burn::tensor::{Device, Int, Tensor, TensorData};
use lmforge_model::bert::mean_pool;
use lmforge_model::hf::{export_gpt2, import_bert, import_gpt2};
use lmforge_model::{BertBatch, Error, load_bert, load_gpt};

use crate::{committed, fixture, max_diff, read_expected};

fn logits(model: &lmforge_model::Gpt, ids: &[f64], device: &Device) -> Vec<f32> {
    let ids: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let n = ids.len();
    let tokens = Tensor::<2, Int>::from_ints(TensorData::new(ids, [1, n]), device);
    let out = model.forward(tokens).unwrap();
    out.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn gpt2_import_gives_transformers_logits() {
    let device = Device::flex();
    let dir = committed("gpt2-tiny");
    let model = import_gpt2(&dir, &device).unwrap();
    assert_eq!(model.config().vocab_size, 256);
    let expected = read_expected(&dir.join("expected.safetensors"));
    for i in 0..3 {
        let (_, ids) = &expected[&format!("ids.{i}")];
        let (_, want) = &expected[&format!("logits.{i}")];
        let err = max_diff(&logits(&model, ids, &device), want);
        assert!(err < 1e-4, "sequence {i}: max |Δ| {err}");
    }
    // load_gpt recognises the folder as GPT-2.
    let again = load_gpt(&dir, &device).unwrap();
    assert_eq!(again.config(), model.config());
}

#[test]
fn gpt2_export_roundtrips() {
    let device = Device::flex();
    let model = import_gpt2(&committed("gpt2-tiny"), &device).unwrap();
    let out = tempdir("export");
    export_gpt2(&model, &out).unwrap();
    let back = import_gpt2(&out, &device).unwrap();
    let ids = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0];
    assert_eq!(logits(&model, &ids, &device), logits(&back, &ids, &device));
    fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_missing_or_misshapen_tensor_is_named() {
    let device = Device::flex();
    let src = committed("gpt2-tiny");
    let dir = tempdir("broken");
    fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    // One layer more than the file holds.
    let config = fs::read_to_string(src.join("config.json")).unwrap();
    fs::write(
        dir.join("config.json"),
        config.replace("\"n_layer\": 2", "\"n_layer\": 3"),
    )
    .unwrap();
    let err = import_gpt2(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if name == "transformer.h.2.ln_1.weight"),
        "{err}"
    );
    // A width the file does not have.
    fs::write(
        dir.join("config.json"),
        config.replace("\"n_embd\": 32", "\"n_embd\": 64"),
    )
    .unwrap();
    let err = import_gpt2(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("has shape [32]") && err.contains("[64]"),
        "{err}"
    );
    // Heads that do not divide the width.
    fs::write(
        dir.join("config.json"),
        config.replace("\"n_head\": 4", "\"n_head\": 5"),
    )
    .unwrap();
    let err = import_gpt2(&dir, &device).unwrap_err().to_string();
    assert!(err.contains("`d_model`"), "{err}");
    // Not safetensors at all.
    fs::write(dir.join("config.json"), &config).unwrap();
    fs::write(
        dir.join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}",
    )
    .unwrap();
    let err = import_gpt2(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
    fs::remove_dir_all(dir).unwrap();
}

pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-model-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn minilm_matches_transformers_and_sentence_transformers() {
    let Some(dir) = fixture("all-MiniLM-L6-v2") else {
        return;
    };
    let device = Device::flex();
    let (bert, head) = import_bert(&dir, &device).unwrap();
    assert!(head.is_none());
    assert_eq!(bert.config().n_layer, 6);
    let expected = read_expected(&committed("minilm-expected.safetensors"));
    let n = (0..)
        .take_while(|i| expected.contains_key(&format!("ids.{i}")))
        .count();
    assert_eq!(n, 12);
    let seqs: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            expected[&format!("ids.{i}")]
                .1
                .iter()
                .map(|&x| x as u32)
                .collect()
        })
        .collect();
    // In batches of four, as sentence-transformers ran them: padding must change nothing.
    let mut embeddings = Vec::new();
    for (chunk_index, chunk) in seqs.chunks(4).enumerate() {
        let batch = BertBatch::new(chunk, 0, &device).unwrap();
        let hidden = bert.forward(&batch).unwrap();
        let [_, len, d] = hidden.dims();
        for (j, seq) in chunk.iter().enumerate() {
            let i = chunk_index * 4 + j;
            let got = hidden
                .clone()
                .slice([j..j + 1, 0..seq.len(), 0..d])
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let err = max_diff(&got, &expected[&format!("hidden.{i}")].1);
            assert!(
                err < 1e-4,
                "sentence {i} (padded to {len}): hidden max |Δ| {err}"
            );
        }
        let pooled = mean_pool(hidden, batch.real.clone(), true);
        embeddings.extend(pooled.into_data().try_to_vec::<f32>().unwrap());
    }
    let err = max_diff(&embeddings, &expected["embeddings"].1);
    assert!(err < 1e-4, "embeddings max |Δ| {err}");
    // load_bert reads the same folder.
    assert_eq!(load_bert(&dir, &device).unwrap().config(), bert.config());
}
