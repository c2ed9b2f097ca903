//! lmforge-bpe: encoding with GPT-2's vocabulary (one thread and batch) and training.

use criterion::{BenchmarkId, Criterion, Throughput};
use lmforge_bpe::BpeTrainer;

/// Encoding throughput.
pub fn encode(c: &mut Criterion) {
    let bpe = lmforge_benches::openai("gpt2");
    let texts = lmforge_benches::corpus();
    // The whole corpus, as benches/peers/bpe.py gives tiktoken and Hugging Face.
    let sample: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bytes: usize = sample.iter().map(|t| t.len()).sum();
    let mut group = c.benchmark_group("bpe/encode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("gpt2/one-thread", |b| {
        b.iter(|| {
            sample
                .iter()
                .map(|t| bpe.encode_ordinary(t).len())
                .sum::<usize>()
        })
    });
    group.bench_function("gpt2/count", |b| {
        b.iter(|| sample.iter().map(|t| bpe.count(t)).sum::<usize>())
    });
    group.bench_function("gpt2/batch", |b| {
        b.iter(|| bpe.encode_batch_ordinary(&sample))
    });
    // The newer vocabularies: larger, with their own hand-written pre-tokenizers.
    for name in ["cl100k_base", "o200k_base"] {
        let other = lmforge_benches::openai(name);
        group.bench_function(format!("{name}/one-thread"), |b| {
            b.iter(|| {
                sample
                    .iter()
                    .map(|t| other.encode_ordinary(t).len())
                    .sum::<usize>()
            })
        });
    }
    for (name, text) in [
        ("a-x1M", "a".repeat(1_000_000)),
        ("random-letters-1MB", random_letters(1_000_000)),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("worst-case", name), &text, |b, t| {
            b.iter(|| bpe.encode_ordinary(t).len())
        });
    }
    group.finish();
}

fn random_letters(n: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

/// Training a 32k vocabulary on the whole embedded corpus.
pub fn train(c: &mut Criterion) {
    let texts = lmforge_benches::corpus();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut group = c.benchmark_group("bpe/train");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("32k/corpus", |b| {
        b.iter(|| {
            let mut trainer = BpeTrainer::builder().vocab_size(32_000).build().unwrap();
            trainer.feed(&texts);
            trainer.train().unwrap().0.vocab_size()
        })
    });
    group.finish();
}
