//! The tokenizer interface the later stages (corpus conversion, serving) are written against,
//! so that a GPT's byte-level BPE and a BERT's WordPiece are interchangeable there.
//!
//! As ripgrep's `grep-matcher` is implemented by its regex and PCRE2 crates, [`Tokenizer`] is
//! implemented by `lmforge-bpe` (`Bpe`) and `lmforge-wordpiece` (`WordPiece`); this crate
//! depends on neither. [`Kind::of_tokenizer_json`] tells which one a `tokenizer.json` needs,
//! so a caller that links both can open any file:
//!
//! ```
//! use lmforge_tokenizer::Kind;
//!
//! let json = br#"{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}"#;
//! assert_eq!(Kind::of_tokenizer_json(json, "tokenizer.json")?, Kind::WordPiece);
//! # Ok::<(), lmforge_tokenizer::Error>(())
//! ```
//!
//! [`merges`] holds the incremental pair bookkeeping the two trainers share.

pub mod merges;

/// A loaded tokenizer, as corpus conversion and serving use one.
pub trait Tokenizer: Send + Sync {
    /// Which algorithm.
    fn kind(&self) -> Kind;

    /// The ids of `text` alone: no template (`[CLS]`…), truncation or padding. Special-token
    /// text in it is the special token, as Hugging Face's `encode(text,
    /// add_special_tokens=False)` has it.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// [`Tokenizer::encode`] of many texts; implementations run them in parallel.
    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// Text of `ids` (special tokens included as their text).
    fn decode(&self, ids: &[u32]) -> Result<String>;

    /// Ids run from 0 to `vocab_size() - 1`.
    fn vocab_size(&self) -> usize;

    /// The id of a token string (or special token).
    fn token_id(&self, token: &str) -> Option<u32>;

    /// What ends a document when documents are concatenated (Megatron's `--append-eod`):
    /// `<|endoftext|>` for GPT vocabularies, `[SEP]` for BERT's.
    fn eod_id(&self) -> Option<u32>;

    /// What pads a batch: the padding id a `tokenizer.json` configures, else the vocabulary's
    /// pad token (`[PAD]`, `<pad>`, `<|pad|>`); `None` when it has none (GPT-2), and callers
    /// must then be told one rather than assume 0.
    fn pad_id(&self) -> Option<u32>;

    /// The Hugging Face `tokenizer.json` that reads back as this tokenizer (what a checkpoint
    /// carries beside its weights); `None` for a tokenizer that has no such form.
    fn to_tokenizer_json(&self) -> Option<String> {
        None
    }

    /// The text bytes token `id` stands for, where every token stands for bytes of its own
    /// (a byte-level BPE, whose tokens may end inside a UTF-8 character): what bits per byte
    /// are counted over. `None` where tokens do not map to bytes one by one (WordPiece's `##`
    /// pieces, normalised text) or `id` is outside the vocabulary.
    fn token_bytes(&self, _id: u32) -> Option<Vec<u8>> {
        None
    }
}

/// The tokenization algorithms lmforge implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Byte-level BPE (GPT-2, tiktoken): `lmforge-bpe`.
    Bpe,
    /// WordPiece (BERT): `lmforge-wordpiece`.
    WordPiece,
}

impl Kind {
    /// The algorithm a Hugging Face `tokenizer.json` asks for (`model.type`; files without it
    /// are told apart by their fields, as Hugging Face does: BPE has `merges`).
    pub fn of_tokenizer_json(data: &[u8], file: &str) -> Result<Kind> {
        let root: serde_json::Value = serde_json::from_slice(data).map_err(|e| Error::Format {
            file: file.to_string(),
            reason: format!("line {}: {e}", e.line()),
        })?;
        let model = root.get("model").ok_or_else(|| Error::Format {
            file: file.to_string(),
            reason: "no model".into(),
        })?;
        match model.get("type").and_then(|t| t.as_str()) {
            Some("BPE") => Ok(Kind::Bpe),
            Some("WordPiece") => Ok(Kind::WordPiece),
            Some(other) => Err(Error::Format {
                file: file.to_string(),
                reason: format!("model type {other:?} is neither BPE nor WordPiece"),
            }),
            None if model.get("merges").is_some() => Ok(Kind::Bpe),
            None if model.get("continuing_subword_prefix").is_some()
                || model.get("max_input_chars_per_word").is_some() =>
            {
                Ok(Kind::WordPiece)
            }
            None => Err(Error::Format {
                file: file.to_string(),
                reason: "model has no type and is neither BPE nor WordPiece".into(),
            }),
        }
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory, synced and
/// renamed into place: a crash never leaves half a tokenizer file where a whole one was, a
/// failure (a full disk) leaves no temporary file, and what a killed writer left beside `path`
/// goes with the next write (one process writes a file at a time).
pub fn write_atomic(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let prefix = format!(".{name}.tmp");
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// What can go wrong behind the trait.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that is not a tokenizer lmforge reads.
    #[error("{file}: {reason}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The implementation's own error (a disallowed special token, an unknown id …).
    #[error(transparent)]
    Tokenizer(Box<dyn std::error::Error + Send + Sync>),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_leaves_no_temporary_file_and_clears_a_killed_writers() {
        let dir = std::env::temp_dir().join(format!("lmforge-tok-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".t.json.tmp1"), b"half").unwrap();
        std::fs::write(dir.join(".other.json.tmp1"), b"not ours").unwrap();
        write_atomic(&dir.join("t.json"), b"{}").unwrap();
        // A failed write (its target a folder) leaves nothing either.
        std::fs::create_dir(dir.join("sub")).unwrap();
        assert!(write_atomic(&dir.join("sub"), b"{}").is_err());
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".other.json.tmp1", "sub", "t.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kinds_of_files() {
        let kind = |s: &str| Kind::of_tokenizer_json(s.as_bytes(), "t.json");
        assert_eq!(kind(r#"{"model":{"type":"BPE"}}"#).unwrap(), Kind::Bpe);
        assert_eq!(kind(r#"{"model":{"merges":[]}}"#).unwrap(), Kind::Bpe);
        assert_eq!(
            kind(r#"{"model":{"max_input_chars_per_word":100}}"#).unwrap(),
            Kind::WordPiece
        );
        let err = kind(r#"{"model":{"type":"Unigram"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.json") && err.contains("Unigram"), "{err}");
        assert!(kind("{").unwrap_err().to_string().contains("line 1"));
        assert!(kind("{}").unwrap_err().to_string().contains("no model"));
    }
}
