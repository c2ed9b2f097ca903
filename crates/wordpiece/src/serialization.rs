//! The files: BERT's `vocab.txt` (one token per line, id = line number) and Hugging Face's
//! `tokenizer.json` (BertNormalizer, BertPreTokenizer, WordPiece model, TemplateProcessing or
//! BertProcessing, WordPiece decoder, truncation and padding).

use std::fs;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::model::{AddedToken, Decoder, Parts, WordPiece};
use crate::normalizer::BertNormalizer;
use crate::postprocess::{
    Direction, Padding, PaddingStrategy, Template, TemplatePiece, Truncation, TruncationStrategy,
};
use crate::{Error, Result};

fn format_err(file: &str, at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Format {
        file: file.to_string(),
        at: at.into(),
        reason: reason.into(),
    }
}

fn unsupported(file: &str, what: impl Into<String>) -> Error {
    Error::Unsupported {
        file: file.to_string(),
        what: what.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes through a temporary file in the same directory and renames it into place.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    lmforge_tokenizer::write_atomic(path, contents).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

impl WordPiece {
    /// Opens a `tokenizer.json` or, for any other name, a BERT `vocab.txt` (uncased
    /// normalizer unless `normalizer` says otherwise).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_tokenizer_json_file(path)
        } else {
            Self::from_vocab_file(path, BertNormalizer::default())
        }
    }

    /// Reads a BERT `vocab.txt`: one token per line, id = line number (0-based), trailing
    /// whitespace ignored, as Hugging Face reads it.
    pub fn from_vocab_file(path: impl AsRef<Path>, normalizer: BertNormalizer) -> Result<Self> {
        let path = path.as_ref();
        Self::from_vocab_txt(&read(path)?, &path.display().to_string(), normalizer)
    }

    /// [`WordPiece::from_vocab_file`] from bytes; `file` names it in errors.
    pub fn from_vocab_txt(data: &[u8], file: &str, normalizer: BertNormalizer) -> Result<Self> {
        let text = std::str::from_utf8(data).map_err(|e| {
            let line = data[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            format_err(file, format!("line {line}"), "invalid UTF-8")
        })?;
        let mut vocab = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim_end();
            if token.is_empty() {
                return Err(format_err(file, format!("line {}", i + 1), "empty token"));
            }
            vocab.push(token.to_string());
        }
        if vocab.is_empty() {
            return Err(format_err(file, "line 1", "no tokens"));
        }
        Self::from_vocab(vocab, normalizer).map_err(|e| e.in_file(file))
    }

    /// The vocabulary as `vocab.txt`: one token per line in id order.
    pub fn to_vocab_txt(&self) -> Result<String> {
        let mut out = String::new();
        for (id, token) in self.tokens.iter().enumerate() {
            let token = token.as_deref().ok_or_else(|| {
                Error::invalid(
                    "vocab",
                    format!("id {id} has no token: vocab.txt cannot skip ids"),
                )
            })?;
            if token.contains(['\n', '\r']) || token.trim_end() != token {
                return Err(Error::invalid(
                    format!("vocab[{id}]"),
                    format!("{token:?} cannot be written on one vocab.txt line"),
                ));
            }
            out.push_str(token);
            out.push('\n');
        }
        Ok(out)
    }

    /// Writes `vocab.txt` atomically.
    pub fn save_vocab(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_vocab_txt()?.as_bytes())
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_tokenizer_json().as_bytes())
    }

    /// Reads a Hugging Face `tokenizer.json` with a WordPiece model.
    pub fn from_tokenizer_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_tokenizer_json(&read(path)?, &path.display().to_string())
    }

    /// [`WordPiece::from_tokenizer_json_file`] from bytes; `file` names it in errors.
    pub fn from_tokenizer_json(data: &[u8], file: &str) -> Result<Self> {
        let root: Value = serde_json::from_slice(data)
            .map_err(|e| format_err(file, format!("line {}", e.line()), e.to_string()))?;
        if !root.is_object() {
            return Err(format_err(file, "", "not a JSON object"));
        }
        let model = get(&root, "model").ok_or_else(|| format_err(file, "model", "missing"))?;
        if let Some(kind) = get(model, "type")
            && kind != "WordPiece"
        {
            return Err(unsupported(file, format!("model of type {kind}")));
        }
        let vocab = match get(model, "vocab") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(t, id)| Ok((t.clone(), as_u32(id, file, &format!("model.vocab[{t:?}]"))?)))
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(format_err(file, "model.vocab", "missing or not an object")),
        };
        let string = |v: &Value, at: &str, default: &str| -> Result<String> {
            match get(v, at.rsplit('.').next().unwrap_or(at)) {
                None => Ok(default.to_string()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format_err(file, at, "not a string")),
            }
        };
        let unk_token = string(model, "model.unk_token", "[UNK]")?;
        let prefix = string(model, "model.continuing_subword_prefix", "##")?;
        let max_input_chars_per_word = match get(model, "max_input_chars_per_word") {
            None => 100,
            Some(v) => as_u32(v, file, "model.max_input_chars_per_word")? as usize,
        };
        let normalizer = match get(&root, "normalizer") {
            None => None,
            Some(n) => Some(normalizer(n, file)?),
        };
        match get(&root, "pre_tokenizer") {
            Some(p) if get(p, "type").is_some_and(|t| t == "BertPreTokenizer") => {}
            Some(p) => {
                return Err(unsupported(
                    file,
                    format!("pre_tokenizer {}", get(p, "type").unwrap_or(p)),
                ));
            }
            None => {
                return Err(unsupported(
                    file,
                    "a missing pre_tokenizer (BERT splits words)",
                ));
            }
        }
        let added = match get(&root, "added_tokens") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| added_token(v, file, i))
                .collect::<Result<_>>()?,
            Some(_) => return Err(format_err(file, "added_tokens", "not an array")),
        };
        let template = match get(&root, "post_processor") {
            None => None,
            Some(p) => Some(template(p, file)?),
        };
        let decoder = match get(&root, "decoder") {
            None => None,
            Some(d) if get(d, "type").is_some_and(|t| t == "WordPiece") => Some(Decoder {
                prefix: string(d, "decoder.prefix", "##")?,
                cleanup: match get(d, "cleanup") {
                    None => true,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(format_err(file, "decoder.cleanup", "not a boolean")),
                },
            }),
            Some(d) => {
                return Err(unsupported(
                    file,
                    format!("decoder {}", get(d, "type").unwrap_or(d)),
                ));
            }
        };
        let truncation = match get(&root, "truncation") {
            None => None,
            Some(t) => Some(truncation(t, file)?),
        };
        let padding = match get(&root, "padding") {
            None => None,
            Some(p) => Some(padding(p, file)?),
        };
        WordPiece::new(Parts {
            vocab,
            unk_token,
            prefix,
            max_input_chars_per_word,
            normalizer,
            added,
            template,
            truncation,
            padding,
            decoder,
        })
        .map_err(|e| e.in_file(file))
    }

    /// This tokenizer as a Hugging Face `tokenizer.json`, which Python `tokenizers` loads and
    /// encodes identically.
    pub fn to_tokenizer_json(&self) -> String {
        let mut vocab = Map::new();
        for (id, token) in self.tokens.iter().enumerate() {
            if let Some(t) = token {
                vocab.insert(t.clone(), json!(id));
            }
        }
        let added: Vec<Value> = self
            .added
            .iter()
            .map(|a| {
                json!({"id": a.id, "content": a.content, "single_word": a.single_word,
                       "lstrip": a.lstrip, "rstrip": a.rstrip, "normalized": a.normalized,
                       "special": a.special})
            })
            .collect();
        let normalizer = self.normalizer().map_or(Value::Null, |n| {
            json!({"type": "BertNormalizer", "clean_text": n.clean_text,
                   "handle_chinese_chars": n.handle_chinese_chars,
                   "strip_accents": n.strip_accents, "lowercase": n.lowercase})
        });
        let post_processor = self
            .template
            .as_ref()
            .map_or(Value::Null, |t| template_json(t, |id| self.token(id)));
        let decoder = self.decoder.as_ref().map_or(
            Value::Null,
            |d| json!({"type": "WordPiece", "prefix": d.prefix, "cleanup": d.cleanup}),
        );
        let direction = |d: Direction| match d {
            Direction::Left => "Left",
            Direction::Right => "Right",
        };
        let truncation = self.truncation.as_ref().map_or(Value::Null, |t| {
            let strategy = match t.strategy {
                TruncationStrategy::LongestFirst => "LongestFirst",
                TruncationStrategy::OnlyFirst => "OnlyFirst",
                TruncationStrategy::OnlySecond => "OnlySecond",
            };
            json!({"direction": direction(t.direction), "max_length": t.max_length,
                   "strategy": strategy, "stride": t.stride})
        });
        let padding = self.padding.as_ref().map_or(Value::Null, |p| {
            let strategy = match p.strategy {
                PaddingStrategy::BatchLongest => json!("BatchLongest"),
                PaddingStrategy::Fixed(n) => json!({ "Fixed": n }),
            };
            json!({"strategy": strategy, "direction": direction(p.direction),
                   "pad_to_multiple_of": p.pad_to_multiple_of, "pad_id": p.pad_id,
                   "pad_type_id": p.pad_type_id, "pad_token": p.pad_token})
        });
        let root = json!({
            "version": "1.0",
            "truncation": truncation,
            "padding": padding,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": post_processor,
            "decoder": decoder,
            "model": {
                "type": "WordPiece", "unk_token": self.unk_token,
                "continuing_subword_prefix": self.prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word,
                "vocab": vocab,
            },
        });
        let mut s = serde_json::to_string_pretty(&root).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// A field, with JSON `null` read as absent.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|v| !v.is_null())
}

fn as_u32(v: &Value, file: &str, at: &str) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format_err(file, at, format!("{v} is not an integer in 0..2^32")))
}

fn as_bool(v: &Value, key: &str, default: bool, file: &str, at: &str) -> Result<bool> {
    match get(v, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format_err(file, format!("{at}.{key}"), "not a boolean")),
    }
}

fn normalizer(n: &Value, file: &str) -> Result<BertNormalizer> {
    if get(n, "type").is_none_or(|t| t != "BertNormalizer") {
        return Err(unsupported(
            file,
            format!("normalizer {}", get(n, "type").unwrap_or(n)),
        ));
    }
    let at = "normalizer";
    Ok(BertNormalizer {
        clean_text: as_bool(n, "clean_text", true, file, at)?,
        handle_chinese_chars: as_bool(n, "handle_chinese_chars", true, file, at)?,
        strip_accents: match get(n, "strip_accents") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(format_err(
                    file,
                    "normalizer.strip_accents",
                    "not a boolean",
                ));
            }
        },
        lowercase: as_bool(n, "lowercase", true, file, at)?,
    })
}

fn added_token(v: &Value, file: &str, i: usize) -> Result<AddedToken> {
    let at = format!("added_tokens[{i}]");
    let id = as_u32(
        get(v, "id").ok_or_else(|| format_err(file, format!("{at}.id"), "missing"))?,
        file,
        &format!("{at}.id"),
    )?;
    let content = get(v, "content")
        .and_then(Value::as_str)
        .ok_or_else(|| format_err(file, format!("{at}.content"), "missing or not a string"))?;
    let special = as_bool(v, "special", false, file, &at)?;
    Ok(AddedToken {
        id,
        content: content.to_string(),
        special,
        single_word: as_bool(v, "single_word", false, file, &at)?,
        lstrip: as_bool(v, "lstrip", false, file, &at)?,
        rstrip: as_bool(v, "rstrip", false, file, &at)?,
        // Hugging Face's default: special tokens are matched raw, others after normalization.
        normalized: as_bool(v, "normalized", !special, file, &at)?,
    })
}

fn template(p: &Value, file: &str) -> Result<Template> {
    let kind = get(p, "type").and_then(Value::as_str).unwrap_or("?");
    match kind {
        "BertProcessing" => {
            let pair = |key: &str| -> Result<(String, u32)> {
                let at = format!("post_processor.{key}");
                let v = get(p, key)
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 2);
                let v = v.ok_or_else(|| format_err(file, &at, "not [token, id]"))?;
                let token = v[0]
                    .as_str()
                    .ok_or_else(|| format_err(file, &at, "not [token, id]"))?;
                Ok((token.to_string(), as_u32(&v[1], file, &at)?))
            };
            let (cls_token, cls) = pair("cls")?;
            let (sep_token, sep) = pair("sep")?;
            let mut t = Template::bert(cls, sep);
            for piece in t.single.iter_mut().chain(t.pair.iter_mut()) {
                if let TemplatePiece::Special { token, ids, .. } = piece {
                    *token = if ids[0] == cls && token == "[CLS]" {
                        cls_token.clone()
                    } else {
                        sep_token.clone()
                    };
                }
            }
            Ok(t)
        }
        "TemplateProcessing" => {
            let specials = get(p, "special_tokens").and_then(Value::as_object);
            let pieces = |key: &str| -> Result<Vec<TemplatePiece>> {
                let at = format!("post_processor.{key}");
                let items = get(p, key)
                    .and_then(Value::as_array)
                    .ok_or_else(|| format_err(file, &at, "missing or not an array"))?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| template_piece(item, specials, file, &format!("{at}[{i}]")))
                    .collect()
            };
            Ok(Template {
                single: pieces("single")?,
                pair: pieces("pair")?,
            })
        }
        other => Err(unsupported(file, format!("post_processor of type {other}"))),
    }
}

fn template_piece(
    item: &Value,
    specials: Option<&Map<String, Value>>,
    file: &str,
    at: &str,
) -> Result<TemplatePiece> {
    let type_id = |v: &Value| match get(v, "type_id") {
        None => Ok(0),
        Some(t) => as_u32(t, file, &format!("{at}.type_id")),
    };
    if let Some(seq) = get(item, "Sequence") {
        let second = match get(seq, "id").and_then(Value::as_str) {
            Some("A") => false,
            Some("B") => true,
            _ => {
                return Err(format_err(
                    file,
                    format!("{at}.Sequence.id"),
                    "not \"A\" or \"B\"",
                ));
            }
        };
        return Ok(TemplatePiece::Sequence {
            second,
            type_id: type_id(seq)?,
        });
    }
    let Some(special) = get(item, "SpecialToken") else {
        return Err(format_err(file, at, "neither Sequence nor SpecialToken"));
    };
    let name = get(special, "id")
        .and_then(Value::as_str)
        .ok_or_else(|| format_err(file, format!("{at}.SpecialToken.id"), "missing"))?;
    let entry = specials.and_then(|m| m.get(name)).ok_or_else(|| {
        format_err(
            file,
            format!("post_processor.special_tokens[{name:?}]"),
            "missing: the template uses it",
        )
    })?;
    let ids = get(entry, "ids")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            format_err(
                file,
                format!("post_processor.special_tokens[{name:?}].ids"),
                "missing",
            )
        })?
        .iter()
        .map(|v| {
            as_u32(
                v,
                file,
                &format!("post_processor.special_tokens[{name:?}].ids"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TemplatePiece::Special {
        token: name.to_string(),
        ids,
        type_id: type_id(special)?,
    })
}

fn template_json<'a>(t: &Template, token_of: impl Fn(u32) -> Option<&'a str>) -> Value {
    let pieces = |pieces: &[TemplatePiece]| -> Vec<Value> {
        pieces
            .iter()
            .map(|p| match p {
                TemplatePiece::Sequence { second, type_id } => json!({"Sequence": {
                    "id": if *second { "B" } else { "A" }, "type_id": type_id}}),
                TemplatePiece::Special { token, type_id, .. } => {
                    json!({"SpecialToken": {"id": token, "type_id": type_id}})
                }
            })
            .collect()
    };
    let mut specials = Map::new();
    for p in t.single.iter().chain(&t.pair) {
        if let TemplatePiece::Special { token, ids, .. } = p {
            let tokens: Vec<&str> = ids
                .iter()
                .map(|&id| token_of(id).unwrap_or(token.as_str()))
                .collect();
            specials.insert(
                token.clone(),
                json!({"id": token, "ids": ids, "tokens": tokens}),
            );
        }
    }
    json!({"type": "TemplateProcessing", "single": pieces(&t.single), "pair": pieces(&t.pair),
           "special_tokens": specials})
}

fn direction(v: &Value, key: &str, file: &str, at: &str) -> Result<Direction> {
    match get(v, key).and_then(Value::as_str) {
        None => Ok(Direction::Right),
        Some("Right") => Ok(Direction::Right),
        Some("Left") => Ok(Direction::Left),
        Some(other) => Err(format_err(
            file,
            format!("{at}.{key}"),
            format!("{other:?} is not Left or Right"),
        )),
    }
}

fn truncation(t: &Value, file: &str) -> Result<Truncation> {
    let at = "truncation";
    let max_length = as_u32(
        get(t, "max_length").ok_or_else(|| format_err(file, "truncation.max_length", "missing"))?,
        file,
        "truncation.max_length",
    )? as usize;
    let strategy = match get(t, "strategy").and_then(Value::as_str) {
        None | Some("LongestFirst") => TruncationStrategy::LongestFirst,
        Some("OnlyFirst") => TruncationStrategy::OnlyFirst,
        Some("OnlySecond") => TruncationStrategy::OnlySecond,
        Some(other) => {
            return Err(format_err(
                file,
                "truncation.strategy",
                format!("unknown {other:?}"),
            ));
        }
    };
    let stride = match get(t, "stride") {
        None => 0,
        Some(v) => as_u32(v, file, "truncation.stride")? as usize,
    };
    Ok(Truncation {
        max_length,
        strategy,
        stride,
        direction: direction(t, "direction", file, at)?,
    })
}

fn padding(p: &Value, file: &str) -> Result<Padding> {
    let at = "padding";
    let strategy = match get(p, "strategy") {
        None => PaddingStrategy::BatchLongest,
        Some(Value::String(s)) if s == "BatchLongest" => PaddingStrategy::BatchLongest,
        Some(v) => match get(v, "Fixed") {
            Some(n) => PaddingStrategy::Fixed(as_u32(n, file, "padding.strategy.Fixed")? as usize),
            None => return Err(format_err(file, "padding.strategy", format!("unknown {v}"))),
        },
    };
    let num = |key: &str, default: u32| match get(p, key) {
        None => Ok(default),
        Some(v) => as_u32(v, file, &format!("padding.{key}")),
    };
    Ok(Padding {
        strategy,
        direction: direction(p, "direction", file, at)?,
        pad_to_multiple_of: match get(p, "pad_to_multiple_of") {
            None => None,
            Some(v) => Some(as_u32(v, file, "padding.pad_to_multiple_of")? as usize),
        },
        pad_id: num("pad_id", 0)?,
        pad_type_id: num("pad_type_id", 0)?,
        pad_token: match get(p, "pad_token") {
            None => "[PAD]".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(format_err(file, "padding.pad_token", "not a string")),
        },
    })
}
