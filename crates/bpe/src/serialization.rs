//! On-disk formats: Hugging Face `tokenizer.json`, GPT-2 `vocab.json` + `merges.txt`, tiktoken
//! rank files. Errors name the file and the field or line; nothing here panics on bad input.

use std::fs;
use std::path::Path;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::model::Ranking;
use crate::pretokenize::{Flavour, GPT2, Pretokenizer};
use crate::{Bpe, Error, Result};

/// GPT-2's printable stand-ins for bytes: byte-level token strings in tokenizer.json and
/// vocab.json are written with these (space is `Ġ`, newline `Ċ`).
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\0')
        };
    }
    table
}

fn char_to_byte() -> rustc_hash::FxHashMap<char, u8> {
    byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

fn to_byte_level(bytes: &[u8], table: &[char; 256]) -> String {
    bytes.iter().map(|&b| table[b as usize]).collect()
}

fn from_byte_level(
    s: &str,
    map: &rustc_hash::FxHashMap<char, u8>,
    file: &str,
    field: &str,
) -> Result<Vec<u8>> {
    s.chars()
        .map(|c| {
            map.get(&c).copied().ok_or_else(|| Error::Format {
                file: file.to_string(),
                at: field.to_string(),
                reason: format!("{c:?} in {s:?} is not a byte-level character"),
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes through a temporary file and a rename: a crash never leaves half a file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    lmforge_tokenizer::write_atomic(path, contents).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn format_err(file: &str, at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Format {
        file: file.to_string(),
        at: at.into(),
        reason: reason.into(),
    }
}

pub(crate) fn get<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A `"vocab": {token: id}` map: `tokens[id]` (bytes), and the id of each token string, for
/// resolving merges.
type Vocab = (Vec<Vec<u8>>, rustc_hash::FxHashMap<String, u32>);

/// Reads a vocab map, checking that its ids are exactly 0..n.
fn vocab_from_json(vocab: &Map<String, Value>, file: &str, field: &str) -> Result<Vocab> {
    let map = char_to_byte();
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; vocab.len()];
    let mut ids = rustc_hash::FxHashMap::default();
    for (token, id) in vocab {
        let at = format!("{field}[{token:?}]");
        let id = id
            .as_u64()
            .ok_or_else(|| format_err(file, &at, "id is not a non-negative integer"))?;
        let slot = slots.get_mut(id as usize).ok_or_else(|| {
            format_err(
                file,
                &at,
                format!("id {id} out of range: ids must be 0..{}", vocab.len()),
            )
        })?;
        if slot.is_some() {
            return Err(format_err(file, &at, format!("id {id} used twice")));
        }
        *slot = Some(from_byte_level(token, &map, file, &at)?);
        ids.insert(token.clone(), id as u32);
    }
    // n distinct ids below n: every slot is filled.
    Ok((slots.into_iter().flatten().collect(), ids))
}

fn parse_merge(
    entry: &Value,
    ids: &rustc_hash::FxHashMap<String, u32>,
    file: &str,
    at: &str,
) -> Result<(u32, u32)> {
    let (a, b) = match entry {
        Value::String(s) => {
            let mut it = s.split(' ');
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), None) => (a.to_string(), b.to_string()),
                _ => return Err(format_err(file, at, format!("{s:?} is not \"left right\""))),
            }
        }
        Value::Array(pair) if pair.len() == 2 => match (pair[0].as_str(), pair[1].as_str()) {
            (Some(a), Some(b)) => (a.to_string(), b.to_string()),
            _ => return Err(format_err(file, at, "a merge pair must hold two strings")),
        },
        _ => {
            return Err(format_err(
                file,
                at,
                "a merge is \"left right\" or [\"left\", \"right\"]",
            ));
        }
    };
    let id = |t: &str| {
        ids.get(t)
            .copied()
            .ok_or_else(|| format_err(file, at, format!("{t:?} is not in the vocabulary")))
    };
    Ok((id(&a)?, id(&b)?))
}

impl Bpe {
    /// Reads a Hugging Face `tokenizer.json` (BPE model, ByteLevel pre-tokenizer or a
    /// Split-regex + ByteLevel sequence, merges as `"a b"` or `["a", "b"]`).
    pub fn from_tokenizer_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let data = read(path)?;
        Self::from_tokenizer_json(&data, &path.display().to_string())
    }

    /// [`Bpe::from_tokenizer_json_file`] from bytes; `file` names it in errors.
    pub fn from_tokenizer_json(data: &[u8], file: &str) -> Result<Self> {
        let root: Value = serde_json::from_slice(data)
            .map_err(|e| format_err(file, format!("line {}", e.line()), e.to_string()))?;
        if !root.is_object() {
            return Err(format_err(file, "", "not a JSON object"));
        }
        if let Some(n) = get(&root, "normalizer") {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: format!("normalizer {}", n.get("type").unwrap_or(n)),
            });
        }
        // The decoder must be byte-level for decoding to be the exact inverse. The
        // post-processor (a template adding BOS/EOS) is not applied: encoding is Hugging
        // Face's `add_special_tokens=False`, and callers add their own markers, as Megatron does.
        if let Some(v) = get(&root, "decoder") {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
            if kind != "ByteLevel" {
                return Err(Error::Unsupported {
                    file: file.to_string(),
                    what: format!("decoder of type {kind}"),
                });
            }
        }
        let (pattern, add_prefix_space) = pre_tokenizer(get(&root, "pre_tokenizer"), file)?;
        let model = get(&root, "model").ok_or_else(|| format_err(file, "model", "missing"))?;
        if let Some(kind) = get(model, "type").and_then(Value::as_str)
            && kind != "BPE"
        {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: format!("model of type {kind}"),
            });
        }
        for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if get(model, field)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(Error::Unsupported {
                    file: file.to_string(),
                    what: format!("model.{field} (not byte-level BPE)"),
                });
            }
        }
        if get(model, "dropout")
            .and_then(Value::as_f64)
            .is_some_and(|p| p > 0.0)
        {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: "model.dropout (BPE-dropout is a training-time regulariser)".into(),
            });
        }
        let vocab = get(model, "vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| format_err(file, "model.vocab", "missing or not an object"))?;
        let (tokens, ids) = vocab_from_json(vocab, file, "model.vocab")?;
        let merges = get(model, "merges")
            .and_then(Value::as_array)
            .ok_or_else(|| format_err(file, "model.merges", "missing or not an array"))?
            .iter()
            .enumerate()
            .map(|(i, m)| parse_merge(m, &ids, file, &format!("model.merges[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let mut specials = Vec::new();
        if let Some(added) = get(&root, "added_tokens") {
            let added = added
                .as_array()
                .ok_or_else(|| format_err(file, "added_tokens", "not an array"))?;
            for (i, t) in added.iter().enumerate() {
                let at = format!("added_tokens[{i}]");
                let id = t
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| format_err(file, &at, "id missing or not a u32"))?;
                let content = t
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format_err(file, &at, "content missing"))?;
                specials.push((content.to_string(), id));
            }
        }
        specials.sort_by_key(|s| s.1);
        // An added token may repeat a vocab entry (GPT-2's <|endoftext|>): keep the vocab's
        // bytes, which are its text once byte-level decoded.
        let ignore_merges = get(model, "ignore_merges")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let pretokenizer = Pretokenizer::new(&pattern)?;
        let mut bpe = Bpe::build(tokens, merges, specials, pretokenizer, Ranking::Merges)
            .map_err(|e| e.in_file(file))?;
        bpe.add_prefix_space = add_prefix_space;
        if ignore_merges {
            bpe.set_ignore_merges(true);
        }
        Ok(bpe)
    }

    /// The vocabulary as a Hugging Face `tokenizer.json` that Python `tokenizers` and the Rust
    /// `tokenizers` crate load: BPE model, merges as `"a b"` strings (read by every version),
    /// ByteLevel pre-tokenizer (or Split + ByteLevel for a non-GPT-2 pattern), ByteLevel
    /// decoder and post-processor, special tokens as added tokens.
    pub fn to_tokenizer_json(&self) -> String {
        let names = self.byte_level_names();
        // Special tokens appended after the vocabulary are added tokens only; one that is
        // also a vocab entry (GPT-2's <|endoftext|>) stays in both, as in GPT-2's files.
        let mut vocab = Map::new();
        for (id, name) in names.iter().enumerate().take(self.regular) {
            vocab.insert(name.clone(), json!(id));
        }
        let merges: Vec<Value> = self.merge_lines(&names).map(Value::String).collect();
        let added: Vec<Value> = self
            .specials
            .iter()
            .map(|(content, id)| {
                json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                })
            })
            .collect();
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": self.add_prefix_space,
                   "trim_offsets": true, "use_regex": use_regex})
        };
        let pre_tokenizer = if self.pattern() == GPT2 {
            byte_level(true)
        } else {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pretokenizer.portable_pattern()},
                 "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]})
        };
        let root = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": byte_level(true),
            "decoder": byte_level(true),
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": self.ignore_merges,
                "vocab": vocab, "merges": merges,
            },
        });
        let mut s = serde_json::to_string_pretty(&root).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Every token as tokenizer.json and vocab.json spell it (GPT-2's byte stand-ins).
    fn byte_level_names(&self) -> Vec<String> {
        let table = byte_to_char();
        self.tokens
            .iter()
            .map(|bytes| to_byte_level(bytes, &table))
            .collect()
    }

    /// The merges as `"left right"` lines, the spelling every reader accepts.
    fn merge_lines<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = String> + 'a {
        self.merges
            .iter()
            .map(|&(a, b)| format!("{} {}", names[a as usize], names[b as usize]))
    }

    /// Writes [`Bpe::to_tokenizer_json`] to `path` (temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_tokenizer_json().as_bytes())
    }

    /// Reads GPT-2's `vocab.json` and `merges.txt` (Megatron's `--vocab-file`/`--merge-file`).
    /// `specials` name tokens (in vocab.json or appended after it) to match in text.
    pub fn from_vocab_merges_files(
        vocab: impl AsRef<Path>,
        merges: impl AsRef<Path>,
        specials: &[&str],
        pattern: &str,
    ) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        Self::from_vocab_merges(
            &read(vocab)?,
            &vocab.display().to_string(),
            &read(merges)?,
            &merges.display().to_string(),
            specials,
            pattern,
        )
    }

    /// [`Bpe::from_vocab_merges_files`] from bytes; the names are for errors.
    pub fn from_vocab_merges(
        vocab: &[u8],
        vocab_name: &str,
        merges: &[u8],
        merges_name: &str,
        specials: &[&str],
        pattern: &str,
    ) -> Result<Self> {
        let root: Value = serde_json::from_slice(vocab)
            .map_err(|e| format_err(vocab_name, format!("line {}", e.line()), e.to_string()))?;
        let map = root
            .as_object()
            .ok_or_else(|| format_err(vocab_name, "", "not a JSON object"))?;
        let (tokens, ids) = vocab_from_json(map, vocab_name, "vocab")?;
        let text = std::str::from_utf8(merges)
            .map_err(|e| format_err(merges_name, "", format!("not UTF-8: {e}")))?;
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("#version") || line.is_empty() {
                continue;
            }
            pairs.push(parse_merge(
                &Value::String(line.to_string()),
                &ids,
                merges_name,
                &format!("line {}", i + 1),
            )?);
        }
        let specials = specials
            .iter()
            .scan(tokens.len() as u32, |next, s| {
                let id = ids
                    .get(&to_byte_level(s.as_bytes(), &byte_to_char()))
                    .copied()
                    .unwrap_or_else(|| {
                        *next += 1;
                        *next - 1
                    });
                Some((s.to_string(), id))
            })
            .collect();
        Bpe::from_merges(tokens, pairs, specials, pattern).map_err(|e| e.in_file(merges_name))
    }

    /// Writes `vocab.json` and `merges.txt` into `dir` (GPT-2's layout).
    pub fn save_vocab_merges(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let names = self.byte_level_names();
        let vocab: Map<String, Value> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .map(|(id, n)| (n.clone(), json!(id)))
            .collect();
        let mut merges = String::from("#version: 0.2\n");
        for line in self.merge_lines(&names) {
            merges.push_str(&line);
            merges.push('\n');
        }
        let vocab = serde_json::to_string(&vocab).unwrap_or_default();
        write_atomic(&dir.join("vocab.json"), vocab.as_bytes())?;
        write_atomic(&dir.join("merges.txt"), merges.as_bytes())
    }

    /// The regular tokens as a tiktoken rank file (`base64-token rank`, rank = id); special
    /// tokens are not part of the format. tiktoken ranks a pair by its concatenation, not by
    /// the merges list, so a vocabulary trained as BPE encodes the same under both unless two
    /// splits of one token compete (`tiktoken_file_encodes_like_the_merges` measures this).
    pub fn to_tiktoken(&self) -> String {
        let mut out = String::new();
        for id in 0..self.regular {
            if self.special_ids_contains(id as u32) {
                continue;
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&self.tokens[id]);
            out.push_str(&format!("{b64} {id}\n"));
        }
        out
    }

    /// Reads a tiktoken rank file (`base64-token rank` per line, e.g. `gpt2.tiktoken`);
    /// `specials` are `(text, id)` as tiktoken's `special_tokens` (GPT-2: `<|endoftext|>` =
    /// 50256).
    pub fn from_tiktoken_file(
        path: impl AsRef<Path>,
        specials: &[(&str, u32)],
        pattern: &str,
    ) -> Result<Self> {
        let path = path.as_ref();
        Self::from_tiktoken(&read(path)?, &path.display().to_string(), specials, pattern)
    }

    /// Reads one of OpenAI's rank files (`gpt2.tiktoken`, `cl100k_base.tiktoken`, …) with the
    /// pattern and special tokens of its [`Flavour`].
    pub fn from_tiktoken_flavour(data: &[u8], file: &str, flavour: Flavour) -> Result<Self> {
        let ranks = data
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u32;
        Self::from_tiktoken(
            data,
            file,
            &flavour.special_tokens(ranks),
            flavour.pattern(),
        )
    }

    /// [`Bpe::from_tiktoken_file`] from bytes; `file` names it in errors.
    pub fn from_tiktoken(
        data: &[u8],
        file: &str,
        specials: &[(&str, u32)],
        pattern: &str,
    ) -> Result<Self> {
        let mut ranked: Vec<(u32, Vec<u8>)> = Vec::new();
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            let at = format!("line {}", i + 1);
            if line.is_empty() {
                continue;
            }
            let line = std::str::from_utf8(line).map_err(|_| format_err(file, &at, "not UTF-8"))?;
            let (token, rank) = line
                .split_once(' ')
                .ok_or_else(|| format_err(file, &at, "expected `base64-token rank`"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|e| format_err(file, &at, format!("token: {e}")))?;
            let rank: u32 = rank
                .trim()
                .parse()
                .map_err(|_| format_err(file, &at, format!("rank {rank:?} is not a u32")))?;
            ranked.push((rank, bytes));
        }
        ranked.sort_by_key(|r| r.0);
        let mut tokens = Vec::with_capacity(ranked.len());
        for (expect, (rank, bytes)) in ranked.into_iter().enumerate() {
            if rank as usize != expect {
                return Err(format_err(
                    file,
                    format!("rank {rank}"),
                    format!("ranks must run 0..n without gaps or repeats; expected {expect}"),
                ));
            }
            tokens.push(bytes);
        }
        let specials = specials
            .iter()
            .map(|(s, id)| (s.to_string(), *id))
            .collect();
        Bpe::from_ranks(tokens, specials, pattern).map_err(|e| e.in_file(file))
    }
}

/// The pattern and `add_prefix_space` of a tokenizer.json pre-tokenizer.
fn pre_tokenizer(value: Option<&Value>, file: &str) -> Result<(String, bool)> {
    let unsupported = |what: String| Error::Unsupported {
        file: file.to_string(),
        what: format!("pre_tokenizer {what}"),
    };
    let Some(value) = value else {
        return Err(unsupported("null (byte-level BPE needs ByteLevel)".into()));
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("?");
    let prefix = |v: &Value| {
        v.get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    match kind {
        "ByteLevel" => {
            if value.get("use_regex").and_then(Value::as_bool) == Some(false) {
                return Err(unsupported(
                    "ByteLevel without its regex and no Split".into(),
                ));
            }
            Ok((GPT2.to_string(), prefix(value)))
        }
        "Sequence" => {
            let steps = value
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| format_err(file, "pre_tokenizer.pretokenizers", "missing"))?;
            match steps.as_slice() {
                [split, byte_level]
                    if split.get("type").and_then(Value::as_str) == Some("Split")
                        && byte_level.get("type").and_then(Value::as_str) == Some("ByteLevel")
                        && byte_level.get("use_regex").and_then(Value::as_bool) == Some(false) =>
                {
                    let pattern = split
                        .get("pattern")
                        .and_then(|p| p.get("Regex"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            format_err(file, "pre_tokenizer.pretokenizers[0].pattern", "no Regex")
                        })?;
                    let behavior = split.get("behavior").and_then(Value::as_str);
                    let invert = split.get("invert").and_then(Value::as_bool);
                    if behavior != Some("Isolated") || invert == Some(true) {
                        return Err(unsupported(format!(
                            "Split with behavior {behavior:?}, invert {invert:?}"
                        )));
                    }
                    Ok((pattern.to_string(), prefix(byte_level)))
                }
                _ => Err(unsupported(
                    "Sequence other than [Split(Regex), ByteLevel]".into(),
                )),
            }
        }
        other => Err(unsupported(format!("of type {other}"))),
    }
}
