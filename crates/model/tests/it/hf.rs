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

/// Greedy decoding through the KV cache: `tokens` new ids after `prompt`.
fn greedy(model: &lmforge_model::Gpt, prompt: &[u32], tokens: usize, device: &Device) -> Vec<u32> {
    let argmax = |logits: Tensor<2>| -> u32 {
        let row = logits.into_data().try_to_vec::<f32>().unwrap();
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        best as u32
    };
    let (mut cache, logits) = model.prefill(&[prompt.to_vec()], device).unwrap();
    let mut out = vec![argmax(logits)];
    while out.len() < tokens {
        let logits = model.decode(&mut cache, &[*out.last().unwrap()]).unwrap();
        out.push(argmax(logits));
    }
    out
}

/// Llama (grouped-query, 2 key/value heads for 4, untied), Mistral (multi-query, tied) and
/// Llama 3.1's RoPE scaling (tied):
/// transformers' logits within 1e-4 and its greedy `generate` token for token, through our
/// KV cache.
#[test]
fn llama_family_imports_give_transformers_logits_and_greedy_text() {
    let device = Device::flex();
    for (name, kv_heads, tied) in [
        ("llama-tiny", 2, false),
        ("mistral-tiny", 1, true),
        ("llama3-tiny", 2, true),
        ("qwen2-tiny", 2, true),
        ("mistral-sw-tiny", 2, false),
    ] {
        let dir = committed(name);
        let model = lmforge_model::hf::import_llama(&dir, &device).unwrap();
        assert_eq!(model.config().kv_heads(), kv_heads, "{name}");
        assert_eq!(model.config().tie_embeddings, tied, "{name}");
        let window = (name == "mistral-sw-tiny").then_some(8);
        assert_eq!(model.config().sliding_window, window, "{name}");
        let expected = read_expected(&dir.join("expected.safetensors"));
        for i in 0..3 {
            let (_, ids) = &expected[&format!("ids.{i}")];
            let (_, want) = &expected[&format!("logits.{i}")];
            let err = max_diff(&logits(&model, ids, &device), want);
            assert!(err < 1e-4, "{name} sequence {i}: max |Δ| {err}");
            let prompt: Vec<u32> = ids[..5].iter().map(|&x| x as u32).collect();
            let (_, want) = &expected[&format!("greedy.{i}")];
            let want: Vec<u32> = want.iter().map(|&x| x as u32).collect();
            assert_eq!(
                greedy(&model, &prompt, want.len(), &device),
                want,
                "{name} {i}"
            );
        }
        // load_gpt recognises the folder by its model_type.
        let again = load_gpt(&dir, &device).unwrap();
        assert_eq!(again.config(), model.config());
    }
}

/// What the model cannot compute is refused naming the key, and a missing shard tensor names
/// the tensor.
#[test]
fn llama_imports_refuse_what_they_cannot_compute() {
    let device = Device::flex();
    let src = committed("llama-tiny");
    let config = fs::read_to_string(src.join("config.json")).unwrap();
    for (from, to, key) in [
        (
            "\"hidden_act\": \"silu\"",
            "\"hidden_act\": \"gelu\"",
            "hidden_act",
        ),
        (
            "\"attention_bias\": false",
            "\"attention_bias\": true",
            "attention_bias",
        ),
        (
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"yarn\"",
            "rope_type",
        ),
        (
            "\"num_key_value_heads\": 2",
            "\"num_key_value_heads\": 3",
            "n_kv_head",
        ),
    ] {
        let dir = tempdir(&format!("llama-{key}"));
        fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
        assert!(config.contains(from), "{from}");
        fs::write(dir.join("config.json"), config.replace(from, to)).unwrap();
        let err = lmforge_model::hf::import_llama(&dir, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
        fs::remove_dir_all(dir).unwrap();
    }
    // Dynamic NTK scaling is the default RoPE within the context (transformers agrees: the same
    // logits and greedy text, `benches/peers/model_fixtures.py check-dynamic`).
    let dir = tempdir("llama-dynamic");
    fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    fs::write(
        dir.join("config.json"),
        config.replace(
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"dynamic\", \"factor\": 2.0",
        ),
    )
    .unwrap();
    let dynamic = lmforge_model::hf::import_llama(&dir, &device).unwrap();
    let expected = read_expected(&src.join("expected.safetensors"));
    let (_, ids) = &expected["ids.2"];
    let (_, want) = &expected["logits.2"];
    assert!(max_diff(&logits(&dynamic, ids, &device), want) < 1e-4);
    fs::remove_dir_all(dir).unwrap();
    // Sharded: an index naming a shard that lacks one of its tensors.
    let dir = tempdir("llama-sharded");
    fs::write(dir.join("config.json"), &config).unwrap();
    fs::copy(
        src.join("model.safetensors"),
        dir.join("part-1.safetensors"),
    )
    .unwrap();
    let index = r#"{"metadata": {}, "weight_map": {"model.norm.weight": "part-1.safetensors",
        "model.layers.9.mlp.up_proj.weight": "part-1.safetensors"}}"#;
    fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    let err = lmforge_model::hf::import_llama(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if name == "model.layers.9.mlp.up_proj.weight"),
        "{err}"
    );
    // With a whole index, the sharded folder imports like the single file.
    let names = lmforge_model::hf::Tensors::read(&src.join("model.safetensors"))
        .unwrap()
        .names();
    let map: serde_json::Map<String, serde_json::Value> = names
        .into_iter()
        .map(|n| (n, serde_json::Value::from("part-1.safetensors")))
        .collect();
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let sharded = lmforge_model::hf::import_llama(&dir, &device).unwrap();
    let single = lmforge_model::hf::import_llama(&src, &device).unwrap();
    let ids = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0];
    assert_eq!(
        logits(&sharded, &ids, &device),
        logits(&single, &ids, &device)
    );
    fs::remove_dir_all(dir).unwrap();
}

/// Our Llama-family models exported as Hugging Face folders (Llama, Qwen2 for q/k/v biases,
/// Mistral for a sliding window): the import of the export is the same model (config and
/// logits, bit for bit), for grouped-query attention, a tied and an untied head and Llama 3.1's
/// RoPE scaling; a GPT-2-shaped model is refused by name.
#[test]
fn llama_export_roundtrips_and_refuses_other_shapes() {
    let device = Device::flex();
    for name in ["llama-tiny", "llama3-tiny", "qwen2-tiny", "mistral-sw-tiny"] {
        let model = lmforge_model::hf::import_llama(&committed(name), &device).unwrap();
        let out = tempdir(&format!("export-{name}"));
        lmforge_model::hf::export_llama(&model, &out).unwrap();
        let back = lmforge_model::hf::import_llama(&out, &device).unwrap();
        assert_eq!(back.config(), model.config(), "{name}");
        let ids = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert_eq!(
            logits(&model, &ids, &device),
            logits(&back, &ids, &device),
            "{name}"
        );
        fs::remove_dir_all(out).unwrap();
    }
    let linear = lmforge_model::GptConfig {
        positions: lmforge_model::Positions::Rope,
        norm: lmforge_model::NormKind::RmsNorm,
        activation: lmforge_model::Activation::Swiglu,
        bias: false,
        n_kv_head: Some(1),
        rope_scaling: Some(lmforge_model::RopeScaling::Linear { factor: 2.0 }),
        n_layer: 1,
        d_model: 32,
        d_ff: Some(96),
        dropout: 0.0,
        ..lmforge_model::GptConfig::tiny(40)
    };
    let model = linear.init(&device, 5).unwrap();
    let out = tempdir("export-linear");
    lmforge_model::hf::export_llama(&model, &out).unwrap();
    let back = lmforge_model::hf::import_llama(&out, &device).unwrap();
    assert_eq!(back.config(), &linear);
    fs::remove_dir_all(&out).unwrap();
    let gpt2 = import_gpt2(&committed("gpt2-tiny"), &device).unwrap();
    let err = lmforge_model::hf::export_llama(&gpt2, &out).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
    let both = lmforge_model::GptConfig {
        qkv_bias: Some(true),
        sliding_window: Some(4),
        ..linear
    };
    let err = lmforge_model::hf::export_llama(&both.init(&device, 1).unwrap(), &out).unwrap_err();
    assert!(err.to_string().contains("sliding_window"), "{err}");
}
