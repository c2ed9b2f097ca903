//! Every tokenizer file lmforge reads, opened as a [`Tokenizer`]: the one crate that links both
//! implementations (`lmforge-bpe`, `lmforge-wordpiece`), so the choice between them is made
//! here, and small enough that a server takes it without the data stack (no Arrow, Parquet or
//! dataset crates). `lmforge-tokenizer` is the trait; this crate opens files into it.
//!
//! ```no_run
//! let tokenizer = lmforge_tokenizers::open_tokenizer("runs/default/tokenizer/tokenizer.json")?;
//! let ids = tokenizer.encode("Il était une fois");
//! # Ok::<(), lmforge_tokenizers::Error>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use lmforge_bpe::{Bpe, Flavour, MetaspaceBpe};
use lmforge_tokenizer::Kind;
pub use lmforge_tokenizer::Tokenizer;
use lmforge_wordpiece::{BertNormalizer, WordPiece};

/// Why a tokenizer file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file was read but is not a tokenizer this crate understands.
    #[error("{}: {message}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn format(file: &Path, e: impl std::fmt::Display) -> Error {
    // The implementations' messages often name the file already; keep them whole.
    Error::Format {
        file: file.to_path_buf(),
        message: e.to_string(),
    }
}

/// Opens a Hugging Face `tokenizer.json` (BPE or WordPiece, told apart by its model), a BERT
/// `vocab.txt` (uncased), a tiktoken rank file (`*.tiktoken`, maybe `.gz`/`.zst`; GPT-2's
/// pattern and `<|endoftext|>`) or a directory holding GPT-2's `vocab.json` + `merges.txt`.
pub fn open_tokenizer(path: impl AsRef<Path>) -> Result<Box<dyn Tokenizer>> {
    let path = path.as_ref();
    let name = path.to_string_lossy();
    if name.ends_with(".txt") {
        let wp = WordPiece::from_vocab_file(path, BertNormalizer::default())
            .map_err(|e| format(path, e))?;
        return Ok(Box::new(wp));
    }
    if path.is_dir() || is_tiktoken(&name) {
        return Ok(Box::new(open_bpe(path, Flavour::Gpt2)?));
    }
    let data = std::fs::read(path).map_err(|source| Error::Io {
        file: path.to_path_buf(),
        source,
    })?;
    match Kind::of_tokenizer_json(&data, &name).map_err(|e| format(path, e))? {
        // SentencePiece-style files (Llama 2, Mistral: `▁` for spaces, byte fallback) are BPE
        // too, but not byte-level.
        Kind::Bpe if MetaspaceBpe::is_metaspace_json(&data) => Ok(Box::new(
            MetaspaceBpe::from_tokenizer_json(&data, &name).map_err(|e| format(path, e))?,
        )),
        Kind::Bpe => Ok(Box::new(
            Bpe::from_tokenizer_json(&data, &name).map_err(|e| format(path, e))?,
        )),
        Kind::WordPiece => Ok(Box::new(
            WordPiece::from_tokenizer_json(&data, &name).map_err(|e| format(path, e))?,
        )),
    }
}

fn is_tiktoken(name: &str) -> bool {
    [".tiktoken", ".tiktoken.gz", ".tiktoken.zst"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The bytes of `path`, decompressed when it ends in `.gz` or `.zst`.
fn read_maybe_compressed(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let name = path.to_string_lossy();
    let mut reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(zstd::Decoder::new(file).map_err(io)?)
    } else {
        Box::new(file)
    };
    let mut data = Vec::new();
    reader.read_to_end(&mut data).map_err(io)?;
    Ok(data)
}

/// A byte-level BPE from any file lmforge-bpe reads: a directory with GPT-2's `vocab.json` +
/// `merges.txt`, a tiktoken rank file (`.tiktoken`, maybe `.gz`/`.zst`), or a `tokenizer.json`.
/// `flavour` gives the first two their pattern and special tokens.
pub fn open_bpe(path: impl AsRef<Path>, flavour: Flavour) -> Result<Bpe> {
    let path = path.as_ref();
    let name = path.to_string_lossy();
    if path.is_dir() {
        let names: Vec<&str> = flavour.special_tokens(0).iter().map(|s| s.0).collect();
        return Bpe::from_vocab_merges_files(
            path.join("vocab.json"),
            path.join("merges.txt"),
            &names,
            flavour.pattern(),
        )
        .map_err(|e| format(path, e));
    }
    if is_tiktoken(&name) {
        let data = read_maybe_compressed(path)?;
        return Bpe::from_tiktoken_flavour(&data, &name, flavour).map_err(|e| format(path, e));
    }
    Bpe::from_tokenizer_json_file(path).map_err(|e| format(path, e))
}

/// GPT-2's `vocab.json` and `merges.txt` (Megatron's `--vocab-file` and `--merge-file`), with
/// GPT-2's pre-tokenization and `<|endoftext|>`.
pub fn open_gpt2_files(
    vocab: impl AsRef<Path>,
    merges: impl AsRef<Path>,
) -> Result<Box<dyn Tokenizer>> {
    let names: Vec<&str> = Flavour::Gpt2
        .special_tokens(0)
        .iter()
        .map(|s| s.0)
        .collect();
    let bpe = Bpe::from_vocab_merges_files(&vocab, &merges, &names, Flavour::Gpt2.pattern())
        .map_err(|e| format(vocab.as_ref(), e))?;
    Ok(Box::new(bpe))
}

/// Writes `tokenizer` as a Hugging Face `tokenizer.json` at `path`, atomically (a temporary
/// file renamed into place): what [`open_tokenizer`] reads back as the same tokenizer.
pub fn write_tokenizer_json(tokenizer: &dyn Tokenizer, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let json = tokenizer.to_tokenizer_json().ok_or_else(|| Error::Format {
        file: path.to_path_buf(),
        message: "this tokenizer has no tokenizer.json form".into(),
    })?;
    lmforge_tokenizer::write_atomic(path, json.as_bytes()).map_err(|source| Error::Io {
        file: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktoken_names_with_and_without_compression() {
        assert!(is_tiktoken("cl100k_base.tiktoken"));
        assert!(is_tiktoken("a.tiktoken.gz") && is_tiktoken("a.tiktoken.zst"));
        assert!(!is_tiktoken("tokenizer.json") && !is_tiktoken("a.tiktoken.bz2"));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = open_tokenizer("/nonexistent/tokenizer.json").err().unwrap();
        assert!(
            error.to_string().contains("/nonexistent/tokenizer.json"),
            "{error}"
        );
    }
}
