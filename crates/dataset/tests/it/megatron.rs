//! Against Megatron-LM itself: files its `IndexedDatasetBuilder` wrote, and the indices and
//! samples its `GPTDataset` built (`benches/peers/megatron_reference.py`, megatron-core
//! 0.16.1), committed under `test_data/`.

use std::sync::Arc;

use lmforge_dataset::numpy_random::RandomState;
use lmforge_dataset::{Builder, DType, GptConfig, GptDataset, IndexedDataset, Split, SplitKind};
use serde_json::Value;

use crate::{temp_dir, test_data};

fn reference() -> Value {
    let text = std::fs::read_to_string(test_data("megatron_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn same_bytes_as_megatrons_builder() {
    let reference = reference();
    let dir = temp_dir("megatron-bytes");
    for (name, dtype) in [("u16", DType::U16), ("i32", DType::I32)] {
        let documents = reference["format"][name].as_array().unwrap();
        let prefix = dir.join(name);
        let mut builder = Builder::create(&prefix, dtype).unwrap();
        for (i, doc) in documents.iter().enumerate() {
            let seqs: Vec<Vec<u32>> = doc.as_array().unwrap().iter().map(ids).collect();
            if i % 2 == 0 {
                for s in &seqs {
                    builder.add_item(s).unwrap();
                }
                builder.end_document();
            } else {
                let flat: Vec<u32> = seqs.concat();
                let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
                builder.add_document(&flat, &lengths).unwrap();
            }
        }
        builder.finish().unwrap();
        let theirs = test_data(&format!("megatron/{name}"));
        for ext in ["bin", "idx"] {
            let ours = std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
            let megatron = std::fs::read(theirs.with_extension(ext)).unwrap();
            assert_eq!(ours, megatron, "{name}.{ext} differs from Megatron's");
        }

        // And Megatron's files read back as the ids it was given.
        let data = IndexedDataset::open(&theirs).unwrap();
        assert_eq!(data.dtype(), dtype);
        assert_eq!(data.num_documents(), documents.len());
        for (d, doc) in documents.iter().enumerate() {
            let got: Vec<Vec<u32>> = data.document(d).map(|s| data.get(s).to_vec()).collect();
            let want: Vec<Vec<u32>> = doc.as_array().unwrap().iter().map(ids).collect();
            assert_eq!(got, want, "{name} document {d}");
        }
    }
}

#[test]
fn numpy_shuffles() {
    for case in reference()["shuffles"].as_array().unwrap() {
        let seed = case["seed"].as_u64().unwrap() as u32;
        let n = case["n"].as_u64().unwrap();
        let mut x: Vec<u64> = (0..n).collect();
        RandomState::new(seed).shuffle(&mut x);
        let head: Vec<u64> = case["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(&x[..head.len()], &head[..], "seed {seed} n {n}");
        let m = (1u128 << 61) - 1;
        let sum = x
            .iter()
            .enumerate()
            .fold(0u128, |a, (i, &v)| (a + v as u128 * i as u128) % m);
        assert_eq!(
            sum as u64,
            case["sum_sq_pos"].as_u64().unwrap(),
            "seed {seed} n {n}"
        );
    }
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as u64)
        .collect()
}

#[test]
fn gpt_samples_as_megatron_draws_them() {
    let data = Arc::new(IndexedDataset::open(test_data("megatron/gpt")).unwrap());
    let reference = reference();
    for case in reference["gpt"].as_array().unwrap() {
        let c = &case["config"];
        let name = c["name"].as_str().unwrap();
        let split = Split::parse(c["split"].as_str().unwrap()).unwrap();
        let ranges = split.ranges(data.len());
        let mut config = GptConfig::new(
            c["seq"].as_u64().unwrap() as usize,
            c["seed"].as_u64().unwrap() as u32,
        );
        config.add_extra_token = c["extra"].as_bool().unwrap();
        config.eod_id = Some(999);
        config.pad_id = c["pad"].as_u64().map(|p| p as u32);
        config.eod_mask_loss = c["eod_mask_loss"].as_bool().unwrap();
        config.reset_position_ids = c["reset_position_ids"].as_bool().unwrap();
        config.reset_attention_mask = c["reset_attention_mask"].as_bool().unwrap();
        config.drop_last_partial_validation_sequence = c["drop_last_valid"].as_bool().unwrap();
        for (k, kind) in SplitKind::ALL.into_iter().enumerate() {
            let Some(theirs) = case["splits"].get(kind.name()) else {
                continue;
            };
            let what = format!("{name}/{}", kind.name());
            let range = ranges[k].clone().unwrap();
            assert_eq!(
                [range.start as u64, range.end as u64].to_vec(),
                u64s(&theirs["documents"]),
                "{what}: split range"
            );
            let num_samples = theirs["num_samples"].as_u64();
            let ours =
                GptDataset::build(data.clone(), kind, range, num_samples, config.clone(), None)
                    .unwrap();
            let doc_index: Vec<u64> = ours.document_index().iter().map(|&d| d as u64).collect();
            assert_eq!(
                doc_index,
                u64s(&theirs["document_index"]),
                "{what}: document index"
            );
            let sample_index: Vec<u64> = ours
                .sample_index()
                .iter()
                .flatten()
                .map(|&v| v as u64)
                .collect();
            let their_samples: Vec<u64> = theirs["sample_index"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(u64s)
                .collect();
            assert_eq!(sample_index, their_samples, "{what}: sample index");
            assert_eq!(
                ours.shuffle_index(),
                &u64s(&theirs["shuffle_index"])[..],
                "{what}: shuffle index"
            );

            let samples = theirs["samples"].as_array().unwrap();
            let indices: Vec<usize> = (0..samples.len()).collect();
            let batch = ours.batch(&indices);
            let s = batch.seq_length;
            for (i, sample) in samples.iter().enumerate() {
                let row = i * s..(i + 1) * s;
                assert_eq!(
                    batch.tokens[row.clone()],
                    ids(&sample["tokens"])[..],
                    "{what} sample {i}: tokens"
                );
                assert_eq!(
                    batch.labels[row.clone()],
                    ids(&sample["labels"])[..],
                    "{what} sample {i}: labels"
                );
                let loss: Vec<f32> = sample["loss_mask"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                assert_eq!(
                    batch.loss_mask[row.clone()],
                    loss[..],
                    "{what} sample {i}: loss mask"
                );
                assert_eq!(
                    batch.position_ids[row.clone()],
                    ids(&sample["position_ids"])[..],
                    "{what} sample {i}: positions"
                );
                let mask: Vec<bool> = sample["attention_mask"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64() == Some(1)))
                    .collect();
                assert_eq!(
                    ours.attention_mask(&batch.tokens[row]),
                    mask,
                    "{what} sample {i}: attention mask"
                );
            }
        }
    }
}

#[test]
fn cached_indices_are_reused_and_rebuilt_when_damaged() {
    let data = Arc::new(IndexedDataset::open(test_data("megatron/gpt")).unwrap());
    let cache = temp_dir("gpt-cache");
    let config = GptConfig::new(16, 1234);
    let build = || {
        GptDataset::build(
            data.clone(),
            SplitKind::Train,
            0..46,
            Some(100),
            config.clone(),
            Some(&cache),
        )
        .unwrap()
    };
    let first = build();
    assert!(!first.info().from_cache);
    let second = build();
    assert!(second.info().from_cache);
    assert_eq!(first.shuffle_index(), second.shuffle_index());
    assert_eq!(first.sample_index(), second.sample_index());
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    let shuffle = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with("shuffle_index.npy"))
        .unwrap();
    let bytes = std::fs::read(shuffle).unwrap();
    std::fs::write(shuffle, &bytes[..bytes.len() - 3]).unwrap();
    let third = build();
    assert!(!third.info().from_cache, "a truncated cache is rebuilt");
    assert_eq!(third.shuffle_index(), first.shuffle_index());
    // Another seed is another cache entry.
    let other = GptDataset::build(
        data.clone(),
        SplitKind::Train,
        0..46,
        Some(100),
        GptConfig::new(16, 1),
        Some(&cache),
    )
    .unwrap();
    assert!(!other.info().from_cache);
    assert_ne!(other.shuffle_index(), first.shuffle_index());
}

#[test]
fn too_few_tokens_is_an_error_not_a_hang() {
    let data = Arc::new(IndexedDataset::open(test_data("megatron/u16")).unwrap());
    // Sequences 2..3 hold one token: Megatron loops forever here.
    let err = GptDataset::build(
        data,
        SplitKind::Test,
        3..4,
        Some(5),
        GptConfig::new(4, 0),
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("too few"), "{err}");
}

#[test]
fn blends_as_megatron_mixes_them() {
    let reference = reference();
    let blend = &reference["blend"];
    let prefixes: Vec<(std::path::PathBuf, f64)> = blend["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(blend["weights"].as_array().unwrap())
        .map(|(p, w)| (test_data(p.as_str().unwrap()), w.as_f64().unwrap()))
        .collect();
    let split = Split::parse(blend["split"].as_str().unwrap()).unwrap();
    let mut config = GptConfig::new(
        blend["seq"].as_u64().unwrap() as usize,
        blend["seed"].as_u64().unwrap() as u32,
    );
    config.eod_id = Some(999);
    let sizes = u64s(&blend["sizes"]);
    for (k, kind) in SplitKind::ALL.into_iter().enumerate() {
        let theirs = &blend["splits"][kind.name()];
        let ours =
            lmforge_dataset::GptBlend::build(&prefixes, &split, kind, sizes[k], &config, None)
                .unwrap();
        let sources: Vec<(u64, u64)> = (0..ours.len())
            .map(|i| {
                let (d, s) = ours.source(i);
                (d as u64, s as u64)
            })
            .collect();
        let want: Vec<(u64, u64)> = u64s(&theirs["dataset_index"])
            .into_iter()
            .zip(u64s(&theirs["dataset_sample_index"]))
            .collect();
        assert_eq!(sources, want, "{}: blending indices", kind.name());
        let batch = ours.batch(&(0..ours.len()).collect::<Vec<_>>());
        let tokens: Vec<u32> = theirs["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(ids)
            .collect();
        assert_eq!(batch.tokens, tokens, "{}: samples", kind.name());
    }
}
