//! Integration tests of lmforge-clean: whole runs on generated and damaged corpora, and
//! property tests.

mod props;
mod run;
mod sharded;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use lmforge_clean::{Cleaner, Config, Report};

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmforge-clean-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `config` on `files` into `output`.
pub fn run(config: Config, files: &[PathBuf], output: &Path) -> lmforge_clean::Result<Report> {
    Cleaner::new(config)?.run(files, output, &|_| {}, &AtomicBool::new(false))
}

/// Every stage but dedup off.
pub fn dedup_only(dedup: lmforge_clean::Dedup) -> Config {
    Config {
        dedup,
        language: None,
        cleaning: false,
        min_chars: 0,
        quality: None,
        ..Config::default()
    }
}

/// The (id, text) of every document in an output directory's shards, in order.
pub fn read_output(dir: &Path) -> Vec<(String, String)> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    shards.sort();
    lmforge_corpus::Reader::new(shards, &["id", "text"])
        .map(|r| {
            let r = r.unwrap();
            (r.fields[0].clone(), r.fields[1].clone())
        })
        .collect()
}
