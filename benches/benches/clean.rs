//! lmforge-clean: near dedup of the generated 50,000-document corpus (signatures from raw text,
//! LSH, verification, clustering) on one thread, and the whole default cleaning run on the
//! embedded corpus on one thread and on all.

use std::sync::atomic::AtomicBool;

use criterion::{Criterion, Throughput};
use lmforge_clean::lsh::Index;
use lmforge_clean::minhash::{Bands, MinHasher, Scratch};
use lmforge_clean::synthetic::{self, Options};
use lmforge_clean::{Cleaner, Config};

/// Documents per second: signatures (shingling included), LSH and verification, one thread.
pub fn minhash(c: &mut Criterion) {
    let texts: Vec<String> = synthetic::generate(&Options::default())
        .into_iter()
        .map(|d| d.text)
        .collect();
    let hasher = MinHasher::new(128, 5, 0);
    let bands = Bands::optimal(0.8, 128);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut group = c.benchmark_group("clean/minhash-lsh");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.sample_size(10);
    group.bench_function("50k-docs/one-thread", |b| {
        b.iter(|| {
            pool.install(|| {
                let mut index = Index::new(128);
                let mut scratch = Scratch::default();
                let mut signature = vec![0; 128];
                for (i, text) in texts.iter().enumerate() {
                    if hasher.signature_into(text, &mut scratch, &mut signature) {
                        index.push(i as u32, &signature);
                    }
                }
                index.clusters(bands, 0.8).duplicates.len()
            })
        })
    });
    group.finish();
}

/// Input text bytes per second of the default recipe (every stage) on the embedded corpus.
pub fn pipeline(c: &mut Criterion) {
    let files = lmforge_benches::corpus_files();
    let dir = std::env::temp_dir().join(format!("lmforge-bench-clean-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let output = dir.join("out");
    let blacklists = lmforge_benches::root().join("datasets/blacklists");
    let cleaner = Cleaner::new(Config {
        blacklists: vec![blacklists],
        ..Config::default()
    })
    .expect("config");
    let cancel = AtomicBool::new(false);
    let probe = cleaner
        .run(&files, &output, &|_| {}, &cancel)
        .expect("clean");
    let mut group = c.benchmark_group("clean/default-corpus");
    group.throughput(Throughput::Bytes(probe.bytes_in));
    group.sample_size(10);
    for (name, threads) in [("one-thread", 1), ("all-threads", 0)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        group.bench_function(name, |b| {
            b.iter(|| {
                pool.install(|| cleaner.run(&files, &output, &|_| {}, &cancel))
                    .expect("clean")
                    .documents_out
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
