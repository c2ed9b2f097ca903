//! Pre-tokenization: the regex that cuts text into the pieces BPE merges inside of.
//!
//! The GPT-2, cl100k and o200k patterns end in `\s+(?!\S)|\s+`, a look-ahead that no
//! finite-automaton engine runs. As GitHub's `bpe-openai` does, the pattern is rewritten into
//! three patterns searched at once with leftmost-first priority: the original alternatives plus
//! `\s+$`, then `\s+\s` whose last character is dropped from the match (the "look-ahead
//! character"), then `\s+`. The result is identical: a whitespace run followed by a
//! non-space splits off its last character, which joins the next piece.

mod cl100k;
mod gpt2;
mod o200k;
mod unicode;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input, MatchKind};

use crate::{Error, Result};

/// GPT-2's pattern (also r50k/p50k), the default.
pub const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// cl100k_base's pattern, as tiktoken 0.14 writes it (possessive quantifiers).
pub const CL100K: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// o200k_base's pattern.
pub const O200K: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)|\s+"
);

/// Spellings of the same patterns found in other files (older tiktoken, Hugging Face ports),
/// with the equivalent pattern a finite automaton can run.
const EQUIVALENT: &[(&str, &str)] = &[
    // Possessive quantifiers change nothing in these patterns: what follows them can never
    // match what they would give back, so greedy ones give the same pieces.
    (CL100K, CL100K_RUNNABLE),
    // cl100k before tiktoken 0.7.
    (
        r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    ),
    // GPT-2's pattern as tiktoken 0.14 writes it for r50k/p50k.
    (
        R50K,
        r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+$|\s+(?!\S)|\s",
    ),
];

/// cl100k without possessive quantifiers, which change nothing in it: what follows them can
/// never match what they would give back.
const CL100K_RUNNABLE: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+$|\s*[\r\n]|\s+(?!\S)|\s";

/// `\s+(?!\S)` then `\s+` or `\s`: the same pieces either way, since a lone whitespace
/// character is all the last alternative ever sees.
const LOOKAHEAD_TAILS: &[&str] = &[r"|\s+(?!\S)|\s+", r"|\s+(?!\S)|\s"];

/// A compiled pre-tokenization pattern.
#[derive(Debug, Clone)]
pub struct Pretokenizer {
    source: String,
    /// The same pieces without possessive quantifiers, which Oniguruma (Hugging Face's regex
    /// engine) reads differently: there `\p{N}{1,3}+` means `(\p{N}{1,3})+`.
    portable: String,
    regex: Regex,
    /// Per pattern of the meta regex: whether its last character is a look-ahead to drop.
    lookahead: Vec<bool>,
    /// A hand-written scanner giving the same pieces as the regex, faster: `piece_end(text,
    /// at)` is the end of the piece starting at `at`.
    scanner: Option<fn(&str, usize) -> usize>,
}

/// GPT-2's pattern as tiktoken 0.14 spells it (r50k/p50k): the same pieces.
const R50K: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

impl Pretokenizer {
    /// Compiles `pattern` (a tiktoken/Hugging Face style regex). Patterns ending in
    /// `\s+(?!\S)|\s+` get the look-ahead emulation; any other look-around is an error.
    pub fn new(pattern: &str) -> Result<Self> {
        let runnable = EQUIVALENT
            .iter()
            .find(|(spelling, _)| *spelling == pattern)
            .map_or(pattern, |(_, runnable)| runnable);
        let (patterns, lookahead): (Vec<String>, Vec<bool>) = match LOOKAHEAD_TAILS
            .iter()
            .find_map(|tail| runnable.strip_suffix(tail))
        {
            Some(head) => (
                vec![format!(r"{head}|\s+$"), r"\s+\s".into(), r"\s+".into()],
                vec![false, true, false],
            ),
            None => (vec![runnable.to_string()], vec![false]),
        };
        let regex = Regex::builder()
            .configure(Regex::config().match_kind(MatchKind::LeftmostFirst))
            .build_many(&patterns)
            .map_err(|e| Error::Pattern {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            source: pattern.to_string(),
            portable: runnable.to_string(),
            regex,
            lookahead,
            scanner: if pattern == GPT2 || pattern == R50K {
                Some(gpt2::piece_end)
            } else if pattern == CL100K || runnable == CL100K_RUNNABLE {
                Some(cl100k::piece_end)
            } else if pattern == O200K {
                Some(o200k::piece_end)
            } else {
                None
            },
        })
    }

    /// The same pattern run by the regex engine even where a hand-written scanner exists:
    /// the reference the scanner is tested against.
    #[cfg(test)]
    pub(crate) fn regex_only(mut self) -> Self {
        self.scanner = None;
        self
    }

    /// The pattern as it was given (what tokenizer.json stores).
    pub fn pattern(&self) -> &str {
        &self.source
    }

    /// The pattern as every regex engine with look-ahead reads it alike (what tokenizer.json
    /// gets).
    pub fn portable_pattern(&self) -> &str {
        &self.portable
    }

    /// Byte ranges of the pieces of `text`, in order, covering all of it: text the pattern does
    /// not match becomes a piece of its own (as Hugging Face's `Split` with `Isolated`), so no
    /// byte is ever dropped.
    pub fn split<'a>(&'a self, text: &'a str) -> Pieces<'a> {
        Pieces {
            scanner: self.scanner,
            pre: self,
            text,
            pos: 0,
            pending: None,
        }
    }
}

/// Iterator over the byte ranges of the pieces of a text; see [`Pretokenizer::split`].
#[derive(Debug)]
pub struct Pieces<'a> {
    pre: &'a Pretokenizer,
    scanner: Option<fn(&str, usize) -> usize>,
    text: &'a str,
    pos: usize,
    /// A match found after an unmatched gap, returned after the gap.
    pending: Option<(usize, usize)>,
}

impl Iterator for Pieces<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if let Some(piece) = self.pending.take() {
            self.pos = piece.1;
            return Some(piece);
        }
        if self.pos >= self.text.len() {
            return None;
        }
        if let Some(piece_end) = self.scanner {
            let start = self.pos;
            self.pos = piece_end(self.text, start);
            return Some((start, self.pos));
        }
        let mut from = self.pos;
        loop {
            // The built-in patterns match at every position: an anchored search finds the
            // piece without the reverse scan an unanchored one needs for the start.
            let anchored = Input::new(self.text).range(from..).anchored(Anchored::Yes);
            let found = self
                .pre
                .regex
                .find(anchored)
                .or_else(|| self.pre.regex.find(Input::new(self.text).range(from..)));
            let Some(m) = found else {
                let gap = (self.pos, self.text.len());
                self.pos = self.text.len();
                return Some(gap);
            };
            let mut end = m.end();
            if self.pre.lookahead[m.pattern().as_usize()] {
                let last = self.text[m.start()..end]
                    .chars()
                    .next_back()
                    .map_or(0, char::len_utf8);
                if end - last > m.start() {
                    end -= last;
                }
            }
            if end == m.start() {
                // An empty match cuts nothing: look again one character further on.
                match self.text[from..].chars().next() {
                    Some(c) => from += c.len_utf8(),
                    None => {
                        let gap = (self.pos, self.text.len());
                        self.pos = self.text.len();
                        return Some(gap);
                    }
                }
                continue;
            }
            if m.start() > self.pos {
                let gap = (self.pos, m.start());
                self.pending = Some((m.start(), end));
                self.pos = m.start();
                return Some(gap);
            }
            self.pos = end;
            return Some((m.start(), end));
        }
    }
}

/// The vocabularies OpenAI published, by name: their pattern and special tokens, which the
/// tiktoken rank files do not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// GPT-2 (also r50k): `<|endoftext|>` right after the ranks (50256).
    Gpt2,
    /// cl100k_base (GPT-3.5/4).
    Cl100k,
    /// o200k_base (GPT-4o).
    O200k,
}

impl Flavour {
    /// The pre-tokenization pattern.
    pub fn pattern(self) -> &'static str {
        match self {
            Flavour::Gpt2 => GPT2,
            Flavour::Cl100k => CL100K,
            Flavour::O200k => O200K,
        }
    }

    /// The special tokens with their ids, for a rank file of `ranks` entries.
    pub fn special_tokens(self, ranks: u32) -> Vec<(&'static str, u32)> {
        match self {
            Flavour::Gpt2 => vec![("<|endoftext|>", ranks)],
            Flavour::Cl100k => vec![
                ("<|endoftext|>", 100257),
                ("<|fim_prefix|>", 100258),
                ("<|fim_middle|>", 100259),
                ("<|fim_suffix|>", 100260),
                ("<|endofprompt|>", 100276),
            ],
            Flavour::O200k => vec![("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)],
        }
    }
}

impl std::str::FromStr for Flavour {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gpt2" | "r50k" | "r50k_base" => Ok(Flavour::Gpt2),
            "cl100k" | "cl100k_base" => Ok(Flavour::Cl100k),
            "o200k" | "o200k_base" => Ok(Flavour::O200k),
            other => Err(Error::Config {
                field: "flavour",
                reason: format!("{other:?} is not gpt2, cl100k or o200k"),
            }),
        }
    }
}
