//! SentencePiece-style BPE as Hugging Face's `tokenizers` converts it (Llama 2, Mistral,
//! TinyLlama …): text whose spaces become `▁` (a `Prepend` + `Replace` normalizer, or a
//! `Metaspace` pre-tokenizer), merged character by character, with characters outside the
//! vocabulary spelled by their UTF-8 bytes as `<0x41>` tokens (`byte_fallback`) or `<unk>`.
//! Decoding runs the file's decoder chain (`Replace`, `ByteFallback`, `Fuse`, `Strip`,
//! `Metaspace`) step by step as Hugging Face does.
//!
//! What the file asks for and this module does not compute (a regex `Replace`, another
//! normalizer, a `single_word` added token) is an error naming it, never a different
//! tokenization.

use aho_corasick::{AhoCorasick, MatchKind};
use lmforge_tokenizer::{Kind, Tokenizer};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::merge::{Merge, PairMap, merge, pair_key};
use crate::serialization::{format_err as bad, get as field};
use crate::{Error, Result};

/// Where a `▁` is put in front of a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepend {
    Always,
    /// Only before the piece that starts the text.
    First,
    Never,
}

/// One step of the normalizer or of the decoder chain.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Prepend(String),
    Replace(String, String),
    ByteFallback,
    Fuse,
    Strip {
        content: char,
        start: usize,
        stop: usize,
    },
    /// The `Metaspace` decoder: `▁` back to a space, dropped at the start of the first token
    /// unless the scheme is `never`.
    MetaspaceDecoder {
        replacement: char,
        prepend: Prepend,
    },
}

/// A token the vocabulary adds: matched in the raw text before anything else, or (`normalized`)
/// in each piece once normalized, its content normalized alike.
#[derive(Debug, Clone)]
struct Added {
    content: String,
    id: u32,
    lstrip: bool,
    rstrip: bool,
}

/// Added tokens and the matcher of their contents (leftmost-longest, as Hugging Face's).
#[derive(Debug, Clone)]
struct AddedSet {
    tokens: Vec<Added>,
    matcher: AhoCorasick,
}

impl AddedSet {
    fn new(tokens: Vec<Added>, file: &str) -> Result<Option<AddedSet>> {
        if tokens.is_empty() {
            return Ok(None);
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(tokens.iter().map(|a| a.content.as_str()))
            .map_err(|e| bad(file, "added_tokens", e.to_string()))?;
        Ok(Some(AddedSet { tokens, matcher }))
    }

    /// `text` cut at the tokens: each stretch between them with its start, and each token's
    /// id (`lstrip`/`rstrip` take the whitespace beside it).
    fn split<'t>(
        &self,
        text: &'t str,
        mut each: impl FnMut(std::result::Result<(&'t str, usize), u32>),
    ) {
        let mut start = 0;
        for m in self.matcher.find_iter(text) {
            let added = &self.tokens[m.pattern().as_usize()];
            let mut before = &text[start..m.start()];
            if added.lstrip {
                before = before.trim_end();
            }
            each(Ok((before, start)));
            each(Err(added.id));
            start = m.end();
            if added.rstrip {
                start += text[start..].len() - text[start..].trim_start().len();
            }
        }
        each(Ok((&text[start..], start)));
    }
}

/// A SentencePiece-style BPE `tokenizer.json`, read whole.
#[derive(Debug, Clone)]
pub struct MetaspaceBpe {
    tokens: Vec<String>,
    vocab: FxHashMap<String, u32>,
    pairs: PairMap,
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    fuse_unk: bool,
    ignore_merges: bool,
    normalizer: Vec<Step>,
    /// The `Metaspace` pre-tokenizer: its replacement, scheme and whether it splits words.
    metaspace: Option<(char, Prepend, bool)>,
    decoder: Vec<Step>,
    /// Added tokens matched in the raw text.
    raw: Option<AddedSet>,
    /// Added tokens matched in the normalized pieces.
    normalized: Option<AddedSet>,
    pad: Option<u32>,
    json: String,
}

fn unsupported(file: &str, what: impl Into<String>) -> Error {
    Error::Unsupported {
        file: file.to_string(),
        what: what.into(),
    }
}

fn one_char(s: &str, file: &str, at: &str) -> Result<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(bad(file, at, format!("{s:?} is not one character"))),
    }
}

fn prepend_scheme(v: &Value, file: &str) -> Result<Prepend> {
    match field(v, "prepend_scheme").and_then(Value::as_str) {
        Some("always") => Ok(Prepend::Always),
        Some("first") => Ok(Prepend::First),
        Some("never") => Ok(Prepend::Never),
        Some(other) => Err(bad(file, "prepend_scheme", format!("{other:?}"))),
        // Files before the scheme existed say `add_prefix_space`.
        None => Ok(
            match field(v, "add_prefix_space").and_then(Value::as_bool) {
                Some(false) => Prepend::Never,
                _ => Prepend::Always,
            },
        ),
    }
}

/// The steps of a normalizer or decoder (a `Sequence` or one step).
fn steps(v: Option<&Value>, file: &str, what: &str) -> Result<Vec<Step>> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let kind = field(v, "type").and_then(Value::as_str).unwrap_or("?");
    let list = match kind {
        "Sequence" => field(
            v,
            if what == "normalizer" {
                "normalizers"
            } else {
                "decoders"
            },
        )
        .and_then(Value::as_array)
        .ok_or_else(|| bad(file, what, "a Sequence without its list"))?
        .iter()
        .collect(),
        _ => vec![v],
    };
    list.into_iter()
        .map(|s| {
            let kind = field(s, "type").and_then(Value::as_str).unwrap_or("?");
            let text = |key: &str| {
                field(s, key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(file, what, format!("{kind} without `{key}`")))
            };
            Ok(match kind {
                "Prepend" => Step::Prepend(text("prepend")?),
                "Replace" => {
                    let Some(pattern) = field(s, "pattern")
                        .and_then(|p| field(p, "String"))
                        .and_then(Value::as_str)
                    else {
                        return Err(unsupported(file, format!("{what} Replace with a regex")));
                    };
                    Step::Replace(pattern.to_string(), text("content")?)
                }
                "ByteFallback" if what == "decoder" => Step::ByteFallback,
                "Fuse" if what == "decoder" => Step::Fuse,
                "Strip" if what == "decoder" => Step::Strip {
                    content: one_char(&text("content")?, file, "decoder.Strip")?,
                    start: field(s, "start").and_then(Value::as_u64).unwrap_or(0) as usize,
                    stop: field(s, "stop").and_then(Value::as_u64).unwrap_or(0) as usize,
                },
                "Metaspace" if what == "decoder" => Step::MetaspaceDecoder {
                    replacement: one_char(&text("replacement")?, file, "decoder.Metaspace")?,
                    prepend: prepend_scheme(s, file)?,
                },
                other => return Err(unsupported(file, format!("{what} of type {other}"))),
            })
        })
        .collect()
}

impl MetaspaceBpe {
    /// Whether a BPE `tokenizer.json` is of this kind rather than byte-level: it has a
    /// normalizer, a `Metaspace` pre-tokenizer or byte fallback.
    pub fn is_metaspace(root: &Value) -> bool {
        field(root, "normalizer").is_some()
            || field(root, "pre_tokenizer")
                .and_then(|p| field(p, "type"))
                .and_then(Value::as_str)
                == Some("Metaspace")
            || field(root, "model")
                .and_then(|m| field(m, "byte_fallback"))
                .and_then(Value::as_bool)
                == Some(true)
    }

    /// [`MetaspaceBpe::is_metaspace`] of a file's bytes (false where they are not JSON).
    pub fn is_metaspace_json(data: &[u8]) -> bool {
        serde_json::from_slice::<Value>(data).is_ok_and(|root| Self::is_metaspace(&root))
    }

    /// Reads a `tokenizer.json`; `file` names it in errors.
    pub fn from_tokenizer_json(data: &[u8], file: &str) -> Result<Self> {
        let root: Value = serde_json::from_slice(data)
            .map_err(|e| bad(file, format!("line {}", e.line()), e.to_string()))?;
        let model = field(&root, "model").ok_or_else(|| bad(file, "model", "missing"))?;
        if let Some(kind) = field(model, "type").and_then(Value::as_str)
            && kind != "BPE"
        {
            return Err(unsupported(file, format!("model of type {kind}")));
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if field(model, key)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(unsupported(file, format!("model.{key}")));
            }
        }
        if field(model, "dropout")
            .and_then(Value::as_f64)
            .is_some_and(|d| d > 0.0)
        {
            return Err(unsupported(file, "model.dropout (sampled merges)"));
        }
        let vocab_map = field(model, "vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| bad(file, "model.vocab", "missing or not an object"))?;
        let mut vocab: FxHashMap<String, u32> = FxHashMap::default();
        for (token, id) in vocab_map {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(file, "model.vocab", format!("{token:?}: not an id")))?;
            vocab.insert(token.clone(), id);
        }
        let mut added = Vec::new();
        for (n, token) in field(&root, "added_tokens")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = format!("added_tokens[{n}]");
            let content = field(token, "content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(file, &at, "no content"))?;
            let id = field(token, "id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(file, &at, "no id"))?;
            let flag = |key: &str| field(token, key).and_then(Value::as_bool) == Some(true);
            if flag("single_word") {
                return Err(unsupported(file, format!("{at} ({content:?}) single_word")));
            }
            vocab.entry(content.to_string()).or_insert(id);
            added.push((
                flag("normalized"),
                Added {
                    content: content.to_string(),
                    id,
                    lstrip: flag("lstrip"),
                    rstrip: flag("rstrip"),
                },
            ));
        }
        let size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut tokens = vec![String::new(); size];
        for (token, &id) in &vocab {
            tokens[id as usize] = token.clone();
        }
        let mut pairs = PairMap::default();
        let merges = field(model, "merges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(file, "model.merges", "missing"))?;
        for (rank, m) in merges.iter().enumerate() {
            let at = format!("model.merges[{rank}]");
            let (left, right) = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(file, &at, "not two tokens"))?,
                Value::Array(pair) if pair.len() == 2 => match (pair[0].as_str(), pair[1].as_str())
                {
                    (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                    _ => return Err(bad(file, &at, "not two tokens")),
                },
                _ => return Err(bad(file, &at, "not a merge")),
            };
            let id = |t: &str| {
                vocab
                    .get(t)
                    .copied()
                    .ok_or_else(|| bad(file, &at, format!("{t:?} is not in the vocabulary")))
            };
            let (a, b, merged) = (id(&left)?, id(&right)?, id(&format!("{left}{right}"))?);
            pairs.entry(pair_key(a, b)).or_insert(Merge {
                rank: rank as u32,
                id: merged,
            });
        }
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = vocab.get(&format!("<0x{b:02X}>")).copied();
        }
        let byte_fallback = field(model, "byte_fallback").and_then(Value::as_bool) == Some(true);
        if !byte_fallback {
            bytes = [None; 256];
        }
        let unk = match field(model, "unk_token").and_then(Value::as_str) {
            Some(t) => Some(vocab.get(t).copied().ok_or_else(|| {
                bad(
                    file,
                    "model.unk_token",
                    format!("{t:?} is not in the vocabulary"),
                )
            })?),
            None => None,
        };
        let metaspace = match field(&root, "pre_tokenizer") {
            None => None,
            Some(p) => match field(p, "type").and_then(Value::as_str) {
                Some("Metaspace") => {
                    let replacement = field(p, "replacement")
                        .and_then(Value::as_str)
                        .unwrap_or("▁");
                    Some((
                        one_char(replacement, file, "pre_tokenizer.replacement")?,
                        prepend_scheme(p, file)?,
                        field(p, "split").and_then(Value::as_bool).unwrap_or(true),
                    ))
                }
                other => {
                    return Err(unsupported(
                        file,
                        format!(
                            "pre_tokenizer of type {} with a SentencePiece-style model",
                            other.unwrap_or("?")
                        ),
                    ));
                }
            },
        };
        let pad = field(&root, "padding")
            .and_then(|p| field(p, "pad_id"))
            .and_then(Value::as_u64)
            .map(|i| i as u32)
            .or_else(|| {
                ["<pad>", "[PAD]"]
                    .iter()
                    .find_map(|t| vocab.get(*t).copied())
            });
        let mut bpe = MetaspaceBpe {
            tokens,
            vocab,
            pairs,
            bytes,
            unk,
            fuse_unk: field(model, "fuse_unk").and_then(Value::as_bool) == Some(true),
            ignore_merges: field(model, "ignore_merges").and_then(Value::as_bool) == Some(true),
            normalizer: steps(field(&root, "normalizer"), file, "normalizer")?,
            metaspace,
            decoder: steps(field(&root, "decoder"), file, "decoder")?,
            raw: None,
            normalized: None,
            pad,
            json: String::from_utf8_lossy(data).into_owned(),
        };
        // Hugging Face matches a `normalized` token's content normalized as the text is.
        let (normalized, raw): (Vec<_>, Vec<_>) = added.into_iter().partition(|(n, _)| *n);
        bpe.raw = AddedSet::new(raw.into_iter().map(|(_, a)| a).collect(), file)?;
        let normalized = normalized
            .into_iter()
            .map(|(_, a)| Added {
                content: bpe.normalize(&a.content),
                ..a
            })
            .collect();
        bpe.normalized = AddedSet::new(normalized, file)?;
        Ok(bpe)
    }

    /// The ids of one word (after normalization and pre-tokenization).
    fn word(&self, word: &str, out: &mut Vec<u32>) {
        if self.ignore_merges
            && let Some(&id) = self.vocab.get(word)
        {
            out.push(id);
            return;
        }
        let mut ids = Vec::with_capacity(word.len());
        let mut unk_run = false;
        let mut buf = [0u8; 4];
        for c in word.chars() {
            let s = c.encode_utf8(&mut buf);
            if let Some(&id) = self.vocab.get(&*s) {
                ids.push(id);
                unk_run = false;
                continue;
            }
            let spelled: Option<Vec<u32>> = s.bytes().map(|b| self.bytes[b as usize]).collect();
            if let Some(spelled) = spelled {
                ids.extend(spelled);
                unk_run = false;
            } else if let Some(unk) = self.unk {
                if !(self.fuse_unk && unk_run) {
                    ids.push(unk);
                }
                unk_run = true;
            }
        }
        merge(&self.pairs, ids, out);
    }

    /// `text` through the normalizer (nothing for empty text).
    fn normalize(&self, text: &str) -> String {
        let mut text = text.to_string();
        for step in &self.normalizer {
            match step {
                Step::Prepend(p) if !text.is_empty() => text.insert_str(0, p),
                Step::Replace(pattern, content) if !pattern.is_empty() => {
                    text = text.replace(pattern.as_str(), content);
                }
                _ => {}
            }
        }
        text
    }

    /// A piece of text between raw-matched added tokens: normalized, cut at the normalized
    /// added tokens, pre-tokenized, merged. `first`: it starts the text.
    fn piece(&self, piece: &str, first: bool, out: &mut Vec<u32>) {
        // Hugging Face drops empty splits before normalizing them.
        if piece.is_empty() {
            return;
        }
        let text = self.normalize(piece);
        match &self.normalized {
            None => self.pretokenized(&text, first, out),
            Some(set) => set.split(&text, |part| match part {
                Ok((stretch, start)) => self.pretokenized(stretch, first && start == 0, out),
                Err(id) => out.push(id),
            }),
        }
    }

    /// Normalized text through the pre-tokenizer and the merges.
    fn pretokenized(&self, text: &str, first: bool, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let Some((replacement, prepend, split)) = self.metaspace else {
            self.word(text, out);
            return;
        };
        let mut text = text.replace(' ', &replacement.to_string());
        let add = match prepend {
            Prepend::Always => true,
            Prepend::First => first,
            Prepend::Never => false,
        };
        if add && !text.starts_with(replacement) {
            text.insert(0, replacement);
        }
        if !split {
            if !text.is_empty() {
                self.word(&text, out);
            }
            return;
        }
        // Hugging Face's `MergedWithNext`: every word starts at a replacement character.
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c == replacement && i > start {
                self.word(&text[start..i], out);
                start = i;
            }
        }
        if start < text.len() {
            self.word(&text[start..], out);
        }
    }

    /// The text of each token, run through the decoder chain, joined.
    fn decode_tokens(&self, mut tokens: Vec<String>) -> String {
        for step in &self.decoder {
            tokens = match step {
                Step::Replace(pattern, content) => tokens
                    .into_iter()
                    .map(|t| t.replace(pattern.as_str(), content))
                    .collect(),
                Step::Prepend(_) => tokens,
                Step::Fuse => vec![tokens.concat()],
                Step::ByteFallback => byte_fallback(tokens),
                Step::Strip {
                    content,
                    start,
                    stop,
                } => tokens
                    .into_iter()
                    .map(|t| strip(&t, *content, *start, *stop))
                    .collect(),
                Step::MetaspaceDecoder {
                    replacement,
                    prepend,
                } => tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.chars()
                            .filter_map(|c| match c {
                                c if c == *replacement && i == 0 && *prepend != Prepend::Never => {
                                    None
                                }
                                c if c == *replacement => Some(' '),
                                c => Some(c),
                            })
                            .collect()
                    })
                    .collect(),
            };
        }
        tokens.concat()
    }
}

/// Hugging Face's `ByteFallback` decoder: runs of `<0xXX>` tokens become their UTF-8 text, or
/// one `�` per byte where they are not UTF-8.
fn byte_fallback(tokens: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut run: Vec<u8> = Vec::new();
    let flush = |run: &mut Vec<u8>, out: &mut Vec<String>| {
        if run.is_empty() {
            return;
        }
        match String::from_utf8(std::mem::take(run)) {
            Ok(s) => out.push(s),
            Err(e) => out.extend(std::iter::repeat_n(
                "\u{FFFD}".to_string(),
                e.as_bytes().len(),
            )),
        }
    };
    for token in tokens {
        let byte = (token.len() == 6 && token.starts_with("<0x") && token.ends_with('>'))
            .then(|| u8::from_str_radix(&token[3..5], 16).ok())
            .flatten();
        match byte {
            Some(b) => run.push(b),
            None => {
                flush(&mut run, &mut out);
                out.push(token);
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Hugging Face's `Strip` decoder on one token: up to `start` leading and `stop` trailing
/// `content` characters removed.
fn strip(token: &str, content: char, start: usize, stop: usize) -> String {
    let chars: Vec<char> = token.chars().collect();
    let from = chars
        .iter()
        .take(start)
        .take_while(|&&c| c == content)
        .count();
    let trailing = chars
        .iter()
        .rev()
        .take(stop)
        .take_while(|&&c| c == content)
        .count();
    let to = (chars.len() - trailing).max(from);
    chars[from..to].iter().collect()
}

impl Tokenizer for MetaspaceBpe {
    fn kind(&self) -> Kind {
        Kind::Bpe
    }

    fn encode(&self, text: &str) -> lmforge_tokenizer::Result<Vec<u32>> {
        let mut out = Vec::new();
        // Added tokens matched in the raw text first, then the pieces between them.
        match &self.raw {
            None => self.piece(text, true, &mut out),
            Some(set) => set.split(text, |part| match part {
                Ok((stretch, start)) => self.piece(stretch, start == 0, &mut out),
                Err(id) => out.push(id),
            }),
        }
        Ok(out)
    }

    fn decode(&self, ids: &[u32]) -> lmforge_tokenizer::Result<String> {
        let tokens = ids
            .iter()
            .enumerate()
            .map(|(position, &id)| {
                self.tokens.get(id as usize).cloned().ok_or_else(|| {
                    lmforge_tokenizer::Error::Tokenizer(Box::new(Error::UnknownId { id, position }))
                })
            })
            .collect::<lmforge_tokenizer::Result<Vec<_>>>()?;
        Ok(self.decode_tokens(tokens))
    }

    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    fn eod_id(&self) -> Option<u32> {
        self.vocab.get("</s>").copied()
    }

    fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    fn to_tokenizer_json(&self) -> Option<String> {
        Some(self.json.clone())
    }
}
