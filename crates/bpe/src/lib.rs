//! Byte-level BPE, the GPT tokenizer: train a vocabulary on a corpus, encode and decode
//! exactly like tiktoken and Hugging Face `tokenizers`, and read and write their files.
//!
//! - [`BpeTrainer`] learns merges over the 256-byte alphabet (no unknown token can occur),
//!   pre-tokenizing in parallel and updating pair counts incrementally.
//! - [`Bpe`] encodes (ids, offsets, counts, batches, special tokens as tiktoken allows them)
//!   and decodes byte-exactly, also one id at a time ([`DecodeStream`]).
//! - Files: Hugging Face `tokenizer.json`, GPT-2 `vocab.json` + `merges.txt` (Megatron's
//!   `--vocab-file`/`--merge-file`), tiktoken rank files.
//!
//! The crate does no I/O beyond reading and writing those files.
//!
//! ```
//! use lmforge_bpe::{Allowed, Bpe, BpeTrainer};
//!
//! let mut trainer = BpeTrainer::builder().vocab_size(400).min_frequency(1).build()?;
//! trainer.feed(&["Le chat est sur le tapis.", "El gato está en la alfombra."]);
//! let (bpe, _report) = trainer.train()?;
//!
//! let text = "le gato<|endoftext|>";
//! let ids = bpe.encode(text, Allowed::All)?;
//! assert_eq!(ids.last(), bpe.special_id("<|endoftext|>").as_ref());
//! assert_eq!(bpe.decode(&ids)?, text);
//!
//! // tokenizer.json, as Hugging Face `tokenizers` reads it
//! let json = bpe.to_tokenizer_json();
//! let again = Bpe::from_tokenizer_json(json.as_bytes(), "tokenizer.json")?;
//! assert_eq!(again.encode(text, Allowed::All)?, ids);
//! # Ok::<(), lmforge_bpe::Error>(())
//! ```

pub mod counts;
mod decode;
mod merge;
mod metaspace;
mod model;
pub mod pretokenize;
mod serialization;
mod tokenizer;
mod trainer;

#[cfg(test)]
mod tests;

/// Counts the elementary steps of encoding in tests, so that "near-linear on adversarial
/// input" is checked by counting, not by timing. Compiled out of normal builds.
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

pub use decode::DecodeStream;
pub use metaspace::MetaspaceBpe;
pub use model::{Allowed, Bpe, Encoding};
pub use pretokenize::{Flavour, Pretokenizer};
pub use serialization::byte_to_char;
pub use trainer::{BpeTrainer, BpeTrainerBuilder, TrainReport};

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
        /// Field path or line, e.g. `model.merges[12]` or `line 3`.
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
    /// A vocabulary that is inconsistent (in memory, or once read from a file).
    #[error("invalid vocabulary: {field}: {reason}")]
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
    /// A pre-tokenization regex that does not compile (or uses unsupported look-around).
    #[error("pre-tokenization pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// The text holds a special token that the caller did not allow.
    #[error(
        "special token {token:?} at byte {offset} is not allowed (allow it, or encode it as ordinary text)"
    )]
    DisallowedSpecial {
        /// The special token.
        token: String,
        /// Its byte offset in the text.
        offset: usize,
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
    #[error("the training corpus is empty: no text to learn merges from")]
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
