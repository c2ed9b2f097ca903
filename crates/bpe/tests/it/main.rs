//! Integration tests of lmforge-bpe: one binary, a module per area.

mod counts;
mod files;
mod hf;
mod metaspace;
mod oracle;
mod props;
mod train;

use std::path::PathBuf;

/// The directory `cargo xtask fixtures` fills with the real vocabularies (gpt2.tiktoken,
/// cl100k/o200k .tiktoken.gz). Missing: skipped with a message, or a failure when
/// `LMFORGE_REQUIRE_FIXTURES` is set, as `cargo xtask test` sets it.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LMFORGE_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures"),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{} is missing: run `cargo xtask fixtures`", path.display());
    if std::env::var_os("LMFORGE_REQUIRE_FIXTURES").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// Reads a file, gunzipping `.gz`.
pub fn read_maybe_gz(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let data = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        data
    }
}

/// A few megabytes of the embedded corpus (en, fr, es), for training in tests.
pub fn corpus_texts(max_bytes_per_language: usize) -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/default");
    let mut texts = Vec::new();
    for lang in ["en", "fr", "es"] {
        let data = read_maybe_gz(&root.join(format!("{lang}.jsonl.gz")));
        let mut taken = 0;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let doc: serde_json::Value = serde_json::from_slice(line).unwrap();
            let text = doc["text"].as_str().unwrap();
            let text: String = text.chars().take(max_bytes_per_language - taken).collect();
            taken += text.len();
            texts.push(text);
            if taken >= max_bytes_per_language {
                break;
            }
        }
    }
    texts
}
