//! Near-dedup measurements that criterion cannot make: precision and recall against the planted
//! truth, documents per second end to end on one and all threads, and the dedup index's memory
//! at a million documents (counted by a global allocator).
//!
//! ```text
//! cargo run --release -p lmforge-benches --bin clean-dedup -- write target/bench-data/synthetic.jsonl 50000
//! cargo run --release -p lmforge-benches --bin clean-dedup -- measure 50000
//! cargo run --release -p lmforge-benches --bin clean-dedup -- memory 1000000
//! cargo run --release -p lmforge-benches --bin clean-dedup -- cluster 10000000
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lmforge_clean::lsh::Index;
use lmforge_clean::minhash::{Bands, MinHasher, Scratch};
use lmforge_clean::synthetic::{self, Options};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn dedup(texts: &[String], hasher: &MinHasher, bands: Bands) -> (HashSet<usize>, f64) {
    let start = Instant::now();
    let mut index = Index::new(hasher.perms());
    let mut scratch = Scratch::default();
    let mut signature = vec![0; hasher.perms()];
    for (i, text) in texts.iter().enumerate() {
        if hasher.signature_into(text, &mut scratch, &mut signature) {
            index.push(i as u32, &signature);
        }
    }
    let clusters = index.clusters(bands, 0.8);
    let seconds = start.elapsed().as_secs_f64();
    (
        clusters
            .duplicates
            .iter()
            .map(|d| d.ordinal as usize)
            .collect(),
        seconds,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("write") => {
            let path = args.get(1).expect("write FILE [N]");
            let docs = synthetic::generate(&Options {
                documents: n(2, 50_000),
                ..Options::default()
            });
            let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect(path));
            for d in &docs {
                serde_json::to_writer(&mut out, d).expect("write");
                out.write_all(b"\n").expect("write");
            }
            let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
            eprintln!(
                "{} documents, {:.1} MB of text -> {path}",
                docs.len(),
                bytes as f64 / 1e6
            );
        }
        Some("measure") => {
            let docs = synthetic::generate(&Options {
                documents: n(1, 50_000),
                ..Options::default()
            });
            let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
            let bytes: usize = texts.iter().map(String::len).sum();
            let hasher = MinHasher::new(128, 5, 0);
            let bands = Bands::optimal(0.8, 128);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                let (dropped, seconds) = if threads == 1 {
                    pool.install(|| dedup(&texts, &hasher, bands))
                } else {
                    pool.install(|| {
                        use rayon::prelude::*;
                        let start = Instant::now();
                        let sigs: Vec<Option<Vec<u32>>> =
                            texts.par_iter().map(|t| hasher.signature(t)).collect();
                        let mut index = Index::new(128);
                        for (i, s) in sigs.iter().enumerate() {
                            if let Some(s) = s {
                                index.push(i as u32, s);
                            }
                        }
                        let c = index.clusters(bands, 0.8);
                        (
                            c.duplicates.iter().map(|d| d.ordinal as usize).collect(),
                            start.elapsed().as_secs_f64(),
                        )
                    })
                };
                let (p, r) = synthetic::precision_recall(&docs, &dropped, 0.8);
                println!(
                    "{threads} thread(s): {} docs ({:.1} MB) in {seconds:.3} s = {:.0} docs/s, {:.1} MB/s; precision {p:.4} recall {r:.4} ({} dropped)",
                    texts.len(),
                    bytes as f64 / 1e6,
                    texts.len() as f64 / seconds,
                    bytes as f64 / 1e6 / seconds,
                    dropped.len()
                );
            }
        }
        Some("memory") => {
            let count = n(1, 1_000_000);
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let mut index = Index::new(128);
            // Distinct documents: random signatures (an index holds every document whatever
            // its content; only the clusters found depend on it).
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut sig = vec![0u32; 128];
            for i in 0..count {
                for v in sig.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *v = (state >> 32) as u32;
                }
                index.push(i as u32, &sig);
            }
            let held = LIVE.load(Ordering::Relaxed) - base;
            let start = Instant::now();
            let clusters = index.clusters(Bands::optimal(0.8, 128), 0.8);
            let peak = PEAK.load(Ordering::Relaxed) - base;
            println!(
                "{count} documents: index holds {:.1} MB = {:.0} B/document; peak while clustering {:.1} MB = {:.0} B/document ({} threads, {:.2} s); projected for 100M: {:.1} GB held, {:.1} GB peak; {} near duplicates",
                held as f64 / 1e6,
                held as f64 / count as f64,
                peak as f64 / 1e6,
                peak as f64 / count as f64,
                rayon::current_num_threads(),
                start.elapsed().as_secs_f64(),
                held as f64 / count as f64 * 1e8 / 1e9,
                peak as f64 / count as f64 * 1e8 / 1e9,
                clusters.duplicates.len()
            );
        }
        Some("cluster") => {
            // The sharded run's `cluster` step on synthetic candidate pairs: documents drawn
            // from a billion ordinals, each pair a document and a later one close to it (LSH
            // pairs are mostly within clusters of copies), some documents in several pairs.
            let count = n(1, 10_000_000);
            let dir =
                std::env::temp_dir().join(format!("clean-dedup-pairs-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp folder");
            let path = dir.join("pairs.bin");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("pairs"));
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for _ in 0..count {
                let a = next() % 1_000_000_000;
                let b = a + 1 + next() % 64;
                out.write_all(&a.to_le_bytes()).expect("write");
                out.write_all(&b.to_le_bytes()).expect("write");
            }
            drop(out);
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let start = Instant::now();
            let mut components =
                lmforge_clean::sharded::Components::of(std::slice::from_ref(&path))
                    .expect("components");
            // What the step does with each node besides its similarity: find its root.
            let mut clusters = 0;
            for at in 0..components.nodes.len() as u32 {
                if components.root(at) == components.nodes[at as usize] {
                    clusters += 1;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let peak = PEAK.load(Ordering::Relaxed) - base;
            println!(
                "{count} pairs over {} documents: {clusters} clusters in {seconds:.2} s, peak {:.0} MB = {:.1} B/pair",
                components.nodes.len(),
                peak as f64 / 1e6,
                peak as f64 / count as f64,
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!(
            "usage: clean-dedup write FILE [N] | measure [N] | memory [N] | cluster [PAIRS]"
        ),
    }
}
