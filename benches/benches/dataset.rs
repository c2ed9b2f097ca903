//! lmforge-dataset: converting the embedded corpus (jsonl.gz → Megatron .bin/.idx) with a 32k
//! BPE, on one thread and on all; reading random GPT batches from the result.

use std::sync::Arc;

use criterion::{Criterion, Throughput};
use lmforge_dataset::{ConvertOptions, GptConfig, GptDataset, IndexedDataset, SplitKind};

fn options(workers: usize) -> ConvertOptions {
    ConvertOptions {
        append_eod: true,
        workers,
        ..ConvertOptions::default()
    }
}

/// Conversion throughput, input bytes (whole jsonl lines, as Megatron counts).
pub fn convert(c: &mut Criterion) {
    let bpe = lmforge_benches::bpe32k();
    let files = lmforge_benches::corpus_files();
    let dir = std::env::temp_dir().join(format!("lmforge-bench-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let prefix = dir.join("corpus");
    let probe = lmforge_dataset::convert(files.clone(), &bpe, &prefix, &options(1), &mut |_| {})
        .expect("conversion");
    let mut group = c.benchmark_group("dataset/convert");
    group.throughput(Throughput::Bytes(probe.bytes));
    group.sample_size(10);
    for (name, workers) in [("bpe32k/one-thread", 1), ("bpe32k/all-threads", 0)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                lmforge_dataset::convert(
                    files.clone(),
                    &bpe,
                    &prefix,
                    &options(workers),
                    &mut |_| {},
                )
                .expect("conversion")
                .tokens
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Random GPT batches (8 × 1024 tokens) from the converted corpus, one thread.
pub fn samples(c: &mut Criterion) {
    let bpe = lmforge_benches::bpe32k();
    let dir = std::env::temp_dir().join(format!("lmforge-bench-samples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let prefix = dir.join("corpus");
    lmforge_dataset::convert(
        lmforge_benches::corpus_files(),
        &bpe,
        &prefix,
        &options(0),
        &mut |_| {},
    )
    .expect("conversion");
    let data = Arc::new(
        IndexedDataset::open(lmforge_dataset::output_prefix(&prefix, "text")).expect("dataset"),
    );
    let n = data.len();
    let train = GptDataset::build(
        data,
        SplitKind::Train,
        0..n,
        Some(100_000),
        GptConfig::new(1024, 1234),
        None,
    )
    .expect("samples");
    let (batch, seq) = (8usize, 1024usize);
    let mut group = c.benchmark_group("dataset/gpt-samples");
    group.throughput(Throughput::Elements((batch * seq) as u64));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    group.bench_function("random-batch-8x1024", |b| {
        b.iter(|| {
            let indices: Vec<usize> = (0..batch)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % train.len() as u64) as usize
                })
                .collect();
            train.batch(&indices).tokens.len()
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
