//! Tokenized corpora in Megatron-LM's mmap `.bin/.idx` format, and the batches training reads
//! from them.
//!
//! - [`indexed`]: the format, byte for byte Megatron's `MMapIndexedDataset` — [`Builder`]
//!   writes (atomically), [`IndexedDataset`] maps and checks a dataset and hands out
//!   sequences as slices of the file, [`merge`] joins datasets (`merge_datasets.py`).
//! - [`convert()`]: jsonl/parquet corpus → dataset with any tokenizer, in parallel, in input
//!   order (`preprocess_data.py`); [`open_tokenizer`] opens any tokenizer file lmforge reads.
//! - [`gpt`]: Megatron's GPT samples — split, epochs, shuffled documents, samples of
//!   `seq_length + 1` tokens across document boundaries, shuffled samples; the same samples
//!   as Megatron for the same seed; batches of tokens, labels, loss mask and positions;
//!   [`blend`]: weighted mixtures of datasets (`--data-path 0.3 fr 0.7 es`), as Megatron mixes;
//!   [`sampler`]: which samples each data-parallel rank reads, resumable from a sample count.
//! - [`padded`]: BERT/classification batches padded with the tokenizer's pad id.
//! - [`labelled`]: NeMo's text- and token-classification files and a label vocabulary.
//!
//! No burn here: batches are plain vectors the training crate turns into tensors.
//!
//! ```
//! use lmforge_dataset::{Builder, DType, IndexedDataset};
//!
//! let dir = std::env::temp_dir().join(format!("lmforge-dataset-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let prefix = dir.join("corpus_text_document");
//! let mut builder = Builder::create(&prefix, DType::for_vocab_size(50_257))?;
//! builder.add_document(&[15496, 995, 50256], &[3])?;
//! builder.add_document(&[40, 50256], &[2])?;
//! builder.finish()?;
//!
//! let data = IndexedDataset::open(&prefix)?;
//! assert_eq!((data.len(), data.num_documents()), (2, 2));
//! assert_eq!(data.get(1).to_vec(), [40, 50256]);
//! // .idx = 34 + 12·S + 8·(D + 1) bytes
//! assert_eq!(std::fs::metadata(data.idx_path())?.len(), 34 + 12 * 2 + 8 * 3);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod blend;
pub mod convert;
pub mod gpt;
pub mod indexed;
pub mod labelled;
pub mod npy;
pub mod numpy_random;
pub mod padded;
pub mod sampler;

use std::path::{Path, PathBuf};

pub use blend::GptBlend;
pub use convert::{ConvertOptions, ConvertReport, convert, output_prefix};
pub use gpt::{GptBatch, GptConfig, GptDataset, Split, SplitKind};
pub use indexed::{Builder, DType, IndexedDataset, Summary, Tokens, merge};
/// Opening tokenizer files is `lmforge-tokenizers`' job; re-exported for the stages here.
pub use lmforge_tokenizers::{open_bpe, open_gpt2_files, open_tokenizer};
pub use padded::{Example, PadOptions, PadTo, PaddedBatch, Specials};
pub use sampler::PretrainingSampler;

/// What can go wrong, naming the file, line or field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A dataset or cache file that is damaged or not what it claims.
    #[error("{file}: {reason}")]
    Format {
        /// The file.
        file: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A malformed line of a labelled file.
    #[error("{file}:{line}: {reason}")]
    Line {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] lmforge_corpus::Error),
    /// A tokenizer that could not be opened or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An argument or value out of range.
    #[error("{0}")]
    Invalid(String),
    /// A builder used after `finish`.
    #[error("the dataset builder is already finished")]
    Finished,
}

impl Error {
    pub(crate) fn io(file: &Path, source: std::io::Error) -> Error {
        Error::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
