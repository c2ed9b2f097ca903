//! Shared inputs for lmforge's benchmarks: the embedded corpus as texts, and the real
//! vocabularies `cargo xtask fixtures` fetches. The benches themselves are in
//! `benches/main.rs` (`cargo bench -p lmforge-benches`); peers are timed by the scripts in
//! `peers/` on the same inputs.
//!
//! ```no_run
//! let texts = lmforge_benches::corpus();
//! assert!(texts.iter().map(String::len).sum::<usize>() > 10_000_000);
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every document of `datasets/default/{en,fr,es}.jsonl.gz`, in that order (17.7 MB).
pub fn corpus() -> Vec<String> {
    let mut texts = Vec::new();
    for lang in ["en", "fr", "es"] {
        let path = root().join(format!("datasets/default/{lang}.jsonl.gz"));
        let mut data = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("the embedded corpus"))
            .read_to_string(&mut data)
            .expect("gzip");
        for line in data.lines() {
            let doc: serde_json::Value = serde_json::from_str(line).expect("jsonl");
            texts.push(doc["text"].as_str().unwrap_or_default().to_string());
        }
    }
    texts
}

/// A fixture fetched by `cargo xtask fixtures` (e.g. `gpt2.tiktoken`), gunzipped.
pub fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("LMFORGE_FIXTURES")
        .map_or_else(|| root().join("target/fixtures"), PathBuf::from);
    let path = dir.join(name);
    let data = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask fixtures`", path.display()));
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data.as_slice())
            .read_to_end(&mut out)
            .expect("gzip");
        out
    } else {
        data
    }
}

/// One of OpenAI's vocabularies, as tiktoken has it: `gpt2`, `cl100k_base`, `o200k_base`.
pub fn openai(name: &str) -> lmforge_bpe::Bpe {
    let file = if name == "gpt2" {
        "gpt2.tiktoken".to_string()
    } else {
        format!("{name}.tiktoken.gz")
    };
    let flavour = name.parse().expect("gpt2, cl100k_base or o200k_base");
    lmforge_bpe::Bpe::from_tiktoken_flavour(&fixture(&file), &file, flavour).expect("rank file")
}

/// all-MiniLM-L6-v2's WordPiece tokenizer (its tokenizer.json: truncation to 128 and padding
/// included); `plain` drops truncation and padding, for throughput over whole documents.
pub fn minilm(plain: bool) -> lmforge_wordpiece::WordPiece {
    let data = fixture("minilm-tokenizer.json");
    let wp = lmforge_wordpiece::WordPiece::from_tokenizer_json(&data, "minilm-tokenizer.json")
        .expect("minilm-tokenizer.json");
    if plain {
        wp.with_truncation(None)
            .expect("no truncation")
            .with_padding(None)
    } else {
        wp
    }
}

/// The embedded corpus files, `datasets/default/{en,fr,es}.jsonl.gz`.
pub fn corpus_files() -> Vec<PathBuf> {
    ["en", "fr", "es"]
        .iter()
        .map(|l| root().join(format!("datasets/default/{l}.jsonl.gz")))
        .collect()
}

/// A 32k byte-level BPE trained on the embedded corpus, with `<|endoftext|>`: read from
/// `target/bench-data/bpe32k.json`, trained and written there the first time (the peers in
/// `peers/dataset.py` load the same file).
pub fn bpe32k() -> lmforge_bpe::Bpe {
    let path = root().join("target/bench-data/bpe32k.json");
    if let Ok(bpe) = lmforge_bpe::Bpe::from_tokenizer_json_file(&path) {
        return bpe;
    }
    let mut trainer = lmforge_bpe::BpeTrainer::builder()
        .vocab_size(32_000)
        .special_tokens(["<|endoftext|>"])
        .build()
        .expect("settings");
    trainer.feed(&corpus());
    let (bpe, _) = trainer.train().expect("training");
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("target/bench-data");
    bpe.save(&path).expect("writing the tokenizer");
    bpe
}
