//! Streaming cleaning of web-scale text corpora, the seed's week one: exact dedup, MinHash-LSH
//! near dedup, language identification, general cleaning with length limits, blacklists and
//! Gopher's quality heuristics, in that order, each optional and counted in a report.
//!
//! A [`Cleaner`] is built from a [`Config`] (`Config::default()` is the seed's recipe) and
//! [`Cleaner::run`] reads jsonl (`.gz`, `.zst`) or parquet files through `lmforge-corpus` twice:
//! once for dedup (exact keys, MinHash signatures, then clustering), once to filter and write.
//! Memory is the dedup index (about 0.5 KB per document at 128 permutations), never the corpus.
//! The output directory gets `part-NNNNN.jsonl.zst` (or `.parquet`) shards, `duplicates.jsonl`
//! (every dropped duplicate with the id of the document it duplicates) and `report.json`; it
//! is written as a hidden sibling and renamed into place at the end, so a failed or
//! interrupted run leaves nothing half-written. Bad records and unreadable files are counted
//! and named in the report, and the run goes on.
//!
//! ```
//! use lmforge_clean::{Cleaner, Config, Dedup};
//! use std::sync::atomic::AtomicBool;
//!
//! let dir = std::env::temp_dir().join(format!("lmforge-clean-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let input = dir.join("in.jsonl");
//! let story = "Il était une fois une tortue qui vivait dans un grand jardin au bord de la \
//!              rivière, et chaque matin elle regardait passer les bateaux sur l'eau calme.";
//! std::fs::write(
//!     &input,
//!     format!(
//!         "{{\"id\": \"a\", \"text\": \"{story}\"}}\n\
//!          {{\"id\": \"b\", \"text\": \"{}\"}}\n\
//!          not json\n",
//!         story.to_uppercase()
//!     ),
//! )?;
//!
//! let config = Config {
//!     dedup: Dedup::Exact,
//!     min_chars: 50,
//!     quality: None,
//!     ..Config::default()
//! };
//! let report = Cleaner::new(config)?.run(&[input], &dir.join("out"), &|_| {}, &AtomicBool::new(false))?;
//! assert_eq!((report.documents_in, report.documents_out), (2, 1));
//! assert_eq!(report.dedup.exact_duplicates, 1);
//! assert_eq!(report.malformed.records, 1);
//! assert!(report.malformed.examples[0].contains("in.jsonl:3"));
//! assert!(dir.join("out/part-00000.jsonl.zst").exists());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The stages are also usable one at a time: [`text::clean_text`], [`minhash::MinHasher`] with
//! [`lsh::Index`], [`language::Identifier`], [`blacklist::List`], [`quality::Gopher`].

pub mod blacklist;
mod config;
pub mod language;
pub mod lsh;
pub mod minhash;
pub mod output;
pub mod quality;
mod report;
mod run;
pub mod sharded;
pub mod synthetic;
pub mod text;

use std::path::PathBuf;

pub use config::{Config, Dedup, Language, Minhash, OutputFormat};
pub use report::{DedupReport, LanguageReport, Malformed, Report, Stage, StageReport};
pub use run::{Cleaner, Filtered, Outcome, Pass, Progress};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value, naming it.
    #[error("{0}")]
    Config(String),
    /// A file that could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("{file}: {reason}")]
    Output {
        /// The file or directory.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// Inputs that name nothing.
    #[error(transparent)]
    Input(#[from] lmforge_corpus::Error),
    /// The two passes read different inputs.
    #[error("{0}")]
    InputChanged(String),
    /// A task's output folder or marker (a sharded run).
    #[error(transparent)]
    Task(#[from] lmforge_executor::Error),
    /// Stopped by the caller (Ctrl-C); nothing was written.
    #[error("interrupted; nothing was written")]
    Interrupted,
}

/// `map_err` for an I/O failure on `file`.
pub(crate) fn io(file: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        file: file.to_path_buf(),
        source,
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
