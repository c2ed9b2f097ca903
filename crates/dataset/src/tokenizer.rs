//! Opening any tokenizer file lmforge reads as a [`Tokenizer`]: this is the first crate that
//! links both implementations, so the choice between them is made here.

use std::io::Read;
use std::path::Path;

use lmforge_bpe::{Bpe, Flavour};
use lmforge_tokenizer::{Kind, Tokenizer};
use lmforge_wordpiece::{BertNormalizer, WordPiece};

use crate::{Error, Result};

fn boxed(file: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: {e}", file.display()))
}

/// Opens a Hugging Face `tokenizer.json` (BPE or WordPiece, told apart by its model), a BERT
/// `vocab.txt` (uncased), a tiktoken rank file (`*.tiktoken`, maybe `.gz`/`.zst`; GPT-2's
/// pattern and `<|endoftext|>`) or a directory holding GPT-2's `vocab.json` + `merges.txt`.
pub fn open_tokenizer(path: impl AsRef<Path>) -> Result<Box<dyn Tokenizer>> {
    let path = path.as_ref();
    let name = path.to_string_lossy();
    if name.ends_with(".txt") {
        let wp = WordPiece::from_vocab_file(path, BertNormalizer::default())
            .map_err(|e| boxed(path, e))?;
        return Ok(Box::new(wp));
    }
    if path.is_dir() || is_tiktoken(&name) {
        return Ok(Box::new(open_bpe(path, Flavour::Gpt2)?));
    }
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match Kind::of_tokenizer_json(&data, &name).map_err(|e| Error::Tokenizer(e.to_string()))? {
        Kind::Bpe => Ok(Box::new(
            Bpe::from_tokenizer_json(&data, &name).map_err(|e| boxed(path, e))?,
        )),
        Kind::WordPiece => Ok(Box::new(
            WordPiece::from_tokenizer_json(&data, &name).map_err(|e| boxed(path, e))?,
        )),
    }
}

fn is_tiktoken(name: &str) -> bool {
    [".tiktoken", ".tiktoken.gz", ".tiktoken.zst"]
        .iter()
        .any(|ext| name.ends_with(ext))
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
        .map_err(|e| Error::Tokenizer(e.to_string()));
    }
    if is_tiktoken(&name) {
        let mut data = Vec::new();
        lmforge_corpus::open(path)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .read_to_end(&mut data)
            .map_err(|e| Error::io(path, e))?;
        return Bpe::from_tiktoken_flavour(&data, &name, flavour).map_err(|e| boxed(path, e));
    }
    Bpe::from_tokenizer_json_file(path).map_err(|e| Error::Tokenizer(e.to_string()))
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
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(Box::new(bpe))
}
