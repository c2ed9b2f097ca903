//! Labelled text for fine-tuning, in NeMo's formats:
//!
//! - text classification: one example a line, `[WORD][SPACE][WORD][TAB][LABEL]`, no header;
//! - token classification (NER): `text.txt` with one sentence of space-separated words a line
//!   and `labels.txt` with one label per word on the same line number; or CoNLL (`word label`
//!   a line, a blank line between sentences, `-DOCSTART-` lines ignored).
//!
//! A malformed line is an error naming the file and line: labelled sets are small and
//! curated, so a bad line is a mistake to fix, not noise to skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lmforge_tokenizer::{Kind, Tokenizer};

use crate::{Error, Result};

/// Hugging Face's and PyTorch's `ignore_index`: no loss on this position.
pub const IGNORE: i64 = -100;

fn line_error(file: &Path, line: usize, reason: impl Into<String>) -> Error {
    Error::Line {
        file: file.to_path_buf(),
        line: line as u64,
        reason: reason.into(),
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        line_error(path, line, "invalid UTF-8")
    })
}

/// A label ↔ id map. Built from labels seen, ids follow numeric order when every label is an
/// integer (NeMo's `0`, `1`, … stay themselves), else sorted order, so it does not depend on
/// which example comes first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelVocab {
    labels: Vec<String>,
    ids: std::collections::HashMap<String, u32>,
}

impl LabelVocab {
    /// The vocabulary of the given labels (see the type's docs for the order).
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> LabelVocab {
        let set: BTreeSet<&str> = labels.into_iter().collect();
        let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
        if labels.iter().all(|l| l.parse::<u64>().is_ok()) {
            labels.sort_by_key(|l| l.parse::<u64>().unwrap_or(0));
        }
        Self::from_list(labels)
    }

    fn from_list(labels: Vec<String>) -> LabelVocab {
        let ids = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i as u32))
            .collect();
        LabelVocab { labels, ids }
    }

    /// Reads one label a line (id = line number − 1), as NeMo's `label_ids.csv`.
    pub fn load(path: &Path) -> Result<LabelVocab> {
        let text = read_text(path)?;
        let mut labels = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let label = line.trim();
            if label.is_empty() {
                return Err(line_error(path, i + 1, "empty label"));
            }
            if labels.iter().any(|l| l == label) {
                return Err(line_error(path, i + 1, format!("label {label:?} repeated")));
            }
            labels.push(label.to_string());
        }
        Ok(Self::from_list(labels))
    }

    /// One label a line.
    pub fn to_text(&self) -> String {
        self.labels.iter().map(|l| format!("{l}\n")).collect()
    }

    /// The id of a label.
    pub fn id(&self, label: &str) -> Option<u32> {
        self.ids.get(label).copied()
    }

    /// The label of an id.
    pub fn label(&self, id: u32) -> Option<&str> {
        self.labels.get(id as usize).map(String::as_str)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One text-classification example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextExample {
    /// The text.
    pub text: String,
    /// Its label, as written.
    pub label: String,
    /// Where it was (1-based line).
    pub line: u64,
}

/// Reads a NeMo text-classification file: `text<TAB>label` per line; blank lines are skipped.
pub fn read_text_classification(path: &Path) -> Result<Vec<TextExample>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let (sentence, label) = line
            .rsplit_once('\t')
            .ok_or_else(|| line_error(path, i + 1, "no tab: expected `text<TAB>label`"))?;
        if sentence.contains('\t') {
            return Err(line_error(
                path,
                i + 1,
                "more than one tab: expected `text<TAB>label`",
            ));
        }
        let label = label.trim();
        if label.is_empty() || label.contains(char::is_whitespace) {
            return Err(line_error(
                path,
                i + 1,
                format!("label {label:?} is empty or has spaces"),
            ));
        }
        if sentence.trim().is_empty() {
            return Err(line_error(path, i + 1, "empty text"));
        }
        out.push(TextExample {
            text: sentence.to_string(),
            label: label.to_string(),
            line: i as u64 + 1,
        });
    }
    Ok(out)
}

/// One token-classification sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedSentence {
    /// The words.
    pub words: Vec<String>,
    /// One label per word.
    pub labels: Vec<String>,
    /// Where it was: the file and 1-based line (the first word's, for CoNLL).
    pub file: PathBuf,
    /// Line.
    pub line: u64,
}

/// Reads NeMo's token-classification pair: `text.txt` and `labels.txt`, line by line.
pub fn read_token_classification(text: &Path, labels: &Path) -> Result<Vec<TaggedSentence>> {
    let words_text = read_text(text)?;
    let labels_text = read_text(labels)?;
    let word_lines: Vec<&str> = words_text.lines().collect();
    let label_lines: Vec<&str> = labels_text.lines().collect();
    if word_lines.len() != label_lines.len() {
        let shorter = if word_lines.len() < label_lines.len() {
            (text, word_lines.len())
        } else {
            (labels, label_lines.len())
        };
        return Err(line_error(
            shorter.0,
            shorter.1 + 1,
            format!(
                "{} has {} lines but {} has {}",
                text.display(),
                word_lines.len(),
                labels.display(),
                label_lines.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, (w, l)) in word_lines.iter().zip(&label_lines).enumerate() {
        let words: Vec<String> = w.split_whitespace().map(str::to_string).collect();
        let tags: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        if words.len() != tags.len() {
            return Err(line_error(
                labels,
                i + 1,
                format!(
                    "{} labels for the {} words of {}:{}",
                    tags.len(),
                    words.len(),
                    text.display(),
                    i + 1
                ),
            ));
        }
        if words.is_empty() {
            continue;
        }
        out.push(TaggedSentence {
            words,
            labels: tags,
            file: text.to_path_buf(),
            line: i as u64 + 1,
        });
    }
    Ok(out)
}

/// Reads CoNLL: `word label` (or `word … label`: the first and last columns) per line,
/// sentences separated by blank lines.
pub fn read_conll(path: &Path) -> Result<Vec<TaggedSentence>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    let mut current: Option<TaggedSentence> = None;
    for (i, line) in text.lines().enumerate() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.is_empty() {
            out.extend(current.take());
            continue;
        }
        if columns[0] == "-DOCSTART-" {
            continue;
        }
        if columns.len() < 2 {
            return Err(line_error(path, i + 1, "expected `word label`"));
        }
        let sentence = current.get_or_insert_with(|| TaggedSentence {
            words: Vec::new(),
            labels: Vec::new(),
            file: path.to_path_buf(),
            line: i as u64 + 1,
        });
        sentence.words.push(columns[0].to_string());
        sentence.labels.push(columns[columns.len() - 1].to_string());
    }
    out.extend(current);
    Ok(out)
}

/// A sentence as model input: ids, and per id the label id of the word it starts, or
/// [`IGNORE`] on a word's later pieces (Hugging Face's `label_all_tokens=False`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedIds {
    /// Token ids of the words (no special tokens).
    pub ids: Vec<u32>,
    /// Label per id.
    pub labels: Vec<i64>,
}

/// Tokenizes a sentence word by word so every token knows its word. A label missing from
/// `vocab` is an error naming the sentence's file and line.
pub fn align_labels(
    tokenizer: &dyn Tokenizer,
    sentence: &TaggedSentence,
    vocab: &LabelVocab,
) -> Result<TaggedIds> {
    let mut out = TaggedIds {
        ids: Vec::new(),
        labels: Vec::new(),
    };
    for (k, (word, label)) in sentence.words.iter().zip(&sentence.labels).enumerate() {
        let id = vocab.id(label).ok_or_else(|| {
            line_error(
                &sentence.file,
                sentence.line as usize,
                format!("label {label:?} is not in the label vocabulary"),
            )
        })?;
        // Byte-level BPE marks a word's leading space in its first token.
        let ids = if tokenizer.kind() == Kind::Bpe && k > 0 {
            tokenizer.encode(&format!(" {word}"))
        } else {
            tokenizer.encode(word)
        }
        .map_err(|e| line_error(&sentence.file, sentence.line as usize, e.to_string()))?;
        for (j, t) in ids.iter().enumerate() {
            out.ids.push(*t);
            out.labels.push(if j == 0 { i64::from(id) } else { IGNORE });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_orders() {
        let v = LabelVocab::from_labels(["10", "2", "0", "2"]);
        assert_eq!(
            (v.id("0"), v.id("2"), v.id("10")),
            (Some(0), Some(1), Some(2))
        );
        let v = LabelVocab::from_labels(["O", "B-PER", "I-PER"]);
        assert_eq!(v.label(0), Some("B-PER"));
        assert_eq!(v.to_text(), "B-PER\nI-PER\nO\n");
    }
}
