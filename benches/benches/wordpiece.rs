//! lmforge-wordpiece: encoding with all-MiniLM-L6-v2's vocabulary (one thread and batch, end
//! to end from text) and likelihood training of a 30k vocabulary.

use criterion::{Criterion, Throughput};
use lmforge_wordpiece::WordPieceTrainer;

/// Encoding throughput.
pub fn encode(c: &mut Criterion) {
    let wp = lmforge_benches::minilm(true);
    let texts = lmforge_benches::corpus();
    let sample: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bytes: usize = sample.iter().map(|t| t.len()).sum();
    let mut group = c.benchmark_group("wordpiece/encode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("minilm/one-thread", |b| {
        b.iter(|| {
            sample
                .iter()
                .map(|t| wp.encode(t).map_or(0, |e| e.len()))
                .sum::<usize>()
        })
    });
    group.bench_function("minilm/ids-one-thread", |b| {
        b.iter(|| {
            sample
                .iter()
                .map(|t| wp.encode_ordinary(t).len())
                .sum::<usize>()
        })
    });
    group.bench_function("minilm/batch", |b| b.iter(|| wp.encode_batch(&sample)));
    group.finish();
}

/// Training a 30k vocabulary on the embedded corpus.
pub fn train(c: &mut Criterion) {
    let texts = lmforge_benches::corpus();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut group = c.benchmark_group("wordpiece/train");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("30k/corpus", |b| {
        b.iter(|| {
            let mut trainer = WordPieceTrainer::builder()
                .vocab_size(30_000)
                .build()
                .expect("settings");
            trainer.feed(&texts);
            trainer.train().expect("training").1.vocab_size
        })
    });
    group.finish();
}
