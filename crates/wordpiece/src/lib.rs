//! WordPiece, the BERT tokenizer: train a vocabulary by likelihood, encode in linear time,
//! and read and write the files Hugging Face `tokenizers` and BERT use.
//!
//! - [`WordPieceTrainer`] merges the pair that most increases the likelihood of the corpus,
//!   `count(ab) / (count(a) · count(b))` (or, [`Score::LikelihoodGain`], the exact change of
//!   the log-likelihood), with incremental updates (Hugging Face's `WordPieceTrainer` merges by
//!   frequency: it is BPE underneath).
//! - [`WordPiece`] runs BERT's whole pipeline as Hugging Face does, id for id and offset for
//!   offset: added tokens (`[CLS]` …) → [`BertNormalizer`] → BERT pre-tokenizer →
//!   LinMaxMatch (Song et al. 2021: greedy longest-match-first in linear time, over a trie
//!   with failure links) → template (`[CLS] A [SEP] B [SEP]`, type ids) → truncation →
//!   padding; and back with the WordPiece decoder.
//! - Files: BERT's `vocab.txt` and Hugging Face's `tokenizer.json`.
//!
//! The crate does no I/O beyond reading and writing those files.
//!
//! ```
//! use lmforge_wordpiece::{BertNormalizer, WordPiece};
//!
//! let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "!"];
//! let wp = WordPiece::from_vocab(vocab.map(String::from).to_vec(), BertNormalizer::default())?;
//!
//! let enc = wp.encode_pair("UNAFFABLE!", "Ünaffable")?;
//! assert_eq!(enc.ids, [2, 5, 6, 7, 8, 3, 5, 6, 7, 3]);
//! assert_eq!(enc.type_ids, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
//! assert_eq!(enc.offsets[1..5], [(0, 2), (2, 5), (5, 9), (9, 10)]);
//! assert_eq!(wp.decode(&enc.ids, true)?, "unaffable! unaffable");
//!
//! // tokenizer.json, as Hugging Face `tokenizers` reads it
//! let json = wp.to_tokenizer_json();
//! let again = WordPiece::from_tokenizer_json(json.as_bytes(), "tokenizer.json")?;
//! assert_eq!(again.encode("unaffable")?.ids, [2, 5, 6, 7, 3]);
//! # Ok::<(), lmforge_wordpiece::Error>(())
//! ```

mod linmaxmatch;
mod model;
mod normalizer;
mod postprocess;
mod serialization;
mod tokenizer;
mod trainer;

#[cfg(test)]
mod tests;

/// Counts the steps of LinMaxMatch in tests, so that "linear in the word" is checked by
/// counting, not by timing. Compiled out of normal builds.
#[cfg(test)]
pub(crate) mod ops {
    use std::cell::Cell;

    thread_local!(static OPS: Cell<u64> = const { Cell::new(0) });

    pub fn add(n: usize) {
        OPS.with(|c| c.set(c.get() + n as u64));
    }

    pub fn take() -> u64 {
        OPS.with(|c| c.replace(0))
    }
}

#[cfg(not(test))]
pub(crate) mod ops {
    #[inline(always)]
    pub fn add(_: usize) {}
}

pub use model::{AddedToken, BERT_SPECIAL_TOKENS, Decoder, WordPiece};
pub use normalizer::BertNormalizer;
pub use postprocess::{
    Direction, Encoding, Padding, PaddingStrategy, Template, TemplatePiece, Truncation,
    TruncationStrategy,
};
pub use trainer::{Score, TrainReport, WordPieceTrainer, WordPieceTrainerBuilder};

/// What can go wrong; every variant names the file, field, line or id at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is malformed.
    #[error("{file}: {at}: {reason}")]
    Format {
        /// The file (or the name given for bytes).
        file: String,
        /// Field path or line, e.g. `model.vocab["##a"]` or `line 3`.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A valid file that asks for something this crate does not do.
    #[error("{file}: unsupported {what}")]
    Unsupported {
        /// The file.
        file: String,
        /// The unsupported part.
        what: String,
    },
    /// A tokenizer that is inconsistent, or an input it cannot handle as configured.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which part.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A trainer setting out of range.
    #[error("invalid setting {field}: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An id outside the vocabulary.
    #[error("id {id} at position {position} is not in the vocabulary")]
    UnknownId {
        /// The id.
        id: u32,
        /// Its index in the input.
        position: usize,
    },
    /// Training found no text at all.
    #[error("the training corpus is empty: no words to learn from")]
    EmptyCorpus,
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Attaches the file an [`Error::Invalid`] came from.
    pub(crate) fn in_file(self, file: &str) -> Self {
        match self {
            Error::Invalid { field, reason } => Error::Format {
                file: file.to_string(),
                at: field,
                reason,
            },
            other => other,
        }
    }
}
