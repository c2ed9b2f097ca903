//! Post-processing, Hugging Face's way: the template that adds `[CLS]`/`[SEP]` and type ids,
//! truncation into windows (`stride` apart; those that do not fit overflow), and padding;
//! `Encoding`, what comes out.

use crate::{Error, Result};

/// One element of a post-processing template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePiece {
    /// The first (`A`, `false`) or second (`B`, `true`) sequence.
    Sequence {
        /// `true` for `$B`.
        second: bool,
        /// Its token type id.
        type_id: u32,
    },
    /// A special token (its name in the template, and the ids it stands for).
    Special {
        /// Name, e.g. `[CLS]`.
        token: String,
        /// Ids (usually one).
        ids: Vec<u32>,
        /// Token type id.
        type_id: u32,
    },
}

/// Hugging Face's `TemplateProcessing`: `[CLS] $A [SEP]` and `[CLS] $A [SEP] $B:1 [SEP]:1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// For one sequence.
    pub single: Vec<TemplatePiece>,
    /// For a pair.
    pub pair: Vec<TemplatePiece>,
}

impl Template {
    /// BERT's template with the given `[CLS]` and `[SEP]` ids.
    pub fn bert(cls: u32, sep: u32) -> Self {
        let special = |token: &str, id, type_id| TemplatePiece::Special {
            token: token.to_string(),
            ids: vec![id],
            type_id,
        };
        let seq = |second, type_id| TemplatePiece::Sequence { second, type_id };
        Self {
            single: vec![
                special("[CLS]", cls, 0),
                seq(false, 0),
                special("[SEP]", sep, 0),
            ],
            pair: vec![
                special("[CLS]", cls, 0),
                seq(false, 0),
                special("[SEP]", sep, 0),
                seq(true, 1),
                special("[SEP]", sep, 1),
            ],
        }
    }

    /// How many special ids the template adds.
    pub fn added(&self, pair: bool) -> usize {
        let pieces = if pair { &self.pair } else { &self.single };
        pieces
            .iter()
            .map(|p| match p {
                TemplatePiece::Special { ids, .. } => ids.len(),
                TemplatePiece::Sequence { .. } => 0,
            })
            .sum()
    }
}

/// Which sequence loses tokens when a pair is too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStrategy {
    /// Take from the longer one, one token at a time (Hugging Face's closed form of it).
    LongestFirst,
    /// Only the first.
    OnlyFirst,
    /// Only the second.
    OnlySecond,
}

/// Which end is cut or padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The start.
    Left,
    /// The end.
    Right,
}

/// Hugging Face's `TruncationParams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Most tokens, special tokens included.
    pub max_length: usize,
    /// Which sequence is cut.
    pub strategy: TruncationStrategy,
    /// Overlap of overflowing windows (kept for the file's sake).
    pub stride: usize,
    /// Which end is cut.
    pub direction: Direction,
}

/// How short encodings are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingStrategy {
    /// To the longest of the batch.
    BatchLongest,
    /// To this length.
    Fixed(usize),
}

/// Hugging Face's `PaddingParams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Padding {
    /// To what length.
    pub strategy: PaddingStrategy,
    /// Which end.
    pub direction: Direction,
    /// Round the length up to a multiple of this.
    pub pad_to_multiple_of: Option<usize>,
    /// Id of the padding token.
    pub pad_id: u32,
    /// Its type id.
    pub pad_type_id: u32,
    /// Its text.
    pub pad_token: String,
}

/// An encoded text (or pair), as Hugging Face's `Encoding`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Token type (segment) ids: 0 for the first sequence, 1 for the second.
    pub type_ids: Vec<u32>,
    /// Byte range of each token in its original text (`(0, 0)` for added special tokens and
    /// padding). In a pair, offsets of the second sequence point into the second text.
    pub offsets: Vec<(usize, usize)>,
    /// Index of the word (pre-token) each token comes from, per sequence; `None` for added
    /// special tokens and padding. What token classification aligns word labels with.
    pub word_ids: Vec<Option<u32>>,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// 1 for tokens the template or padding added.
    pub special_tokens_mask: Vec<u32>,
    /// With truncation, the windows that did not fit, each through the template and padding
    /// like this one (`stride` tokens shared with the window before): Hugging Face's
    /// `overflowing`, what sliding-window question answering reads.
    pub overflowing: Vec<Encoding>,
}

impl Encoding {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Hugging Face's `Encoding::merge_with`: appends `pair`, and combines the windows that
    /// overflowed on either side — each of ours with `pair` and with each of its windows, then
    /// us with each of its windows. Nested the same way, as Hugging Face nests them.
    pub(crate) fn merge_with(&mut self, pair: Encoding) {
        let mut overflowing = Vec::new();
        for ours in &self.overflowing {
            let mut n = ours.clone();
            n.merge_with(pair.clone());
            overflowing.push(n);
            for theirs in &pair.overflowing {
                let mut n = ours.clone();
                n.merge_with(theirs.clone());
                overflowing.push(n);
            }
        }
        for theirs in &pair.overflowing {
            let mut n = self.clone();
            n.merge_with(theirs.clone());
            overflowing.push(n);
        }
        self.ids.extend(pair.ids);
        self.type_ids.extend(pair.type_ids);
        self.offsets.extend(pair.offsets);
        self.word_ids.extend(pair.word_ids);
        self.attention_mask.extend(pair.attention_mask);
        self.special_tokens_mask.extend(pair.special_tokens_mask);
        self.overflowing = overflowing;
    }

    fn slice(&self, range: std::ops::Range<usize>) -> Encoding {
        Encoding {
            ids: self.ids[range.clone()].to_vec(),
            type_ids: self
                .type_ids
                .get(range.clone())
                .map_or_else(Vec::new, <[u32]>::to_vec),
            offsets: self.offsets[range.clone()].to_vec(),
            word_ids: self.word_ids[range.clone()].to_vec(),
            attention_mask: self
                .attention_mask
                .get(range.clone())
                .map_or_else(Vec::new, <[u32]>::to_vec),
            special_tokens_mask: self.special_tokens_mask[range].to_vec(),
            overflowing: Vec::new(),
        }
    }

    pub(crate) fn pad(&mut self, to: usize, padding: &Padding) {
        for o in &mut self.overflowing {
            o.pad(to, padding);
        }
        let n = self.ids.len();
        if n >= to {
            return;
        }
        let k = to - n;
        let fill = |v: &mut Vec<u32>, x: u32| match padding.direction {
            Direction::Right => v.extend(std::iter::repeat_n(x, k)),
            Direction::Left => {
                v.splice(0..0, std::iter::repeat_n(x, k));
            }
        };
        fill(&mut self.ids, padding.pad_id);
        fill(&mut self.type_ids, padding.pad_type_id);
        fill(&mut self.attention_mask, 0);
        fill(&mut self.special_tokens_mask, 1);
        match padding.direction {
            Direction::Right => {
                self.offsets.extend(std::iter::repeat_n((0, 0), k));
                self.word_ids.extend(std::iter::repeat_n(None, k));
            }
            Direction::Left => {
                self.offsets.splice(0..0, std::iter::repeat_n((0, 0), k));
                self.word_ids.splice(0..0, std::iter::repeat_n(None, k));
            }
        }
    }
}

pub(crate) fn round_up(n: usize, multiple: Option<usize>) -> usize {
    match multiple {
        Some(m) if m > 0 && !n.is_multiple_of(m) => n + m - n % m,
        _ => n,
    }
}

/// Hugging Face's `truncate_encodings`: each sequence cut to its share, the windows that do
/// not fit (`stride` tokens shared between neighbours) kept as its `overflowing`.
pub(crate) fn truncate(
    a: Encoding,
    b: Option<Encoding>,
    max: usize,
    t: &Truncation,
) -> Result<(Encoding, Option<Encoding>)> {
    let cut = |e: Encoding, n: usize| -> Result<Encoding> {
        let mut windows = windows(e, n, t.stride, t.direction)?.into_iter();
        let mut kept = windows.next().unwrap_or_default();
        kept.overflowing = windows.collect();
        Ok(kept)
    };
    if max == 0 {
        return Ok((cut(a, 0)?, b.map(|b| cut(b, 0)).transpose()?));
    }
    let total = a.len() + b.as_ref().map_or(0, Encoding::len);
    if total <= max {
        return Ok((a, b));
    }
    let to_remove = total - max;
    match (t.strategy, b) {
        (TruncationStrategy::LongestFirst, Some(b)) => {
            let (mut n1, mut n2) = (a.len(), b.len());
            let swap = n1 > n2;
            if swap {
                std::mem::swap(&mut n1, &mut n2);
            }
            n2 = if n1 > max { n1 } else { n1.max(max - n1) };
            if n1 + n2 > max {
                n1 = max / 2;
                n2 = n1 + max % 2;
            }
            if swap {
                std::mem::swap(&mut n1, &mut n2);
            }
            Ok((cut(a, n1)?, Some(cut(b, n2)?)))
        }
        (TruncationStrategy::LongestFirst, None) => Ok((cut(a, max)?, None)),
        (TruncationStrategy::OnlySecond, None) => Err(Error::invalid(
            "truncation.strategy",
            "OnlySecond needs a second sequence",
        )),
        (strategy, b) => {
            let second = strategy == TruncationStrategy::OnlySecond;
            let target_len = if second {
                b.as_ref().map_or(0, Encoding::len)
            } else {
                a.len()
            };
            if target_len <= to_remove {
                return Err(Error::invalid(
                    "truncation",
                    format!(
                        "the sequence to truncate has {target_len} tokens, {to_remove} must go"
                    ),
                ));
            }
            let keep = target_len - to_remove;
            if second {
                Ok((a, b.map(|b| cut(b, keep)).transpose()?))
            } else {
                Ok((cut(a, keep)?, b))
            }
        }
    }
}

/// Hugging Face's `Encoding::truncate`: windows of `max` tokens, each `max - stride` after
/// the previous one, from the start (`Right`) or the end (`Left`); the first is kept.
fn windows(e: Encoding, max: usize, stride: usize, direction: Direction) -> Result<Vec<Encoding>> {
    let n = e.len();
    if max >= n {
        return Ok(vec![e]);
    }
    if max == 0 {
        return Ok(vec![Encoding::default(), e]);
    }
    if stride >= max {
        return Err(Error::invalid(
            "truncation.stride",
            format!(
                "{stride} must be below the {max} tokens a window may hold (the maximum length less the special tokens)"
            ),
        ));
    }
    let step = max - stride;
    let mut ranges = Vec::new();
    match direction {
        Direction::Right => {
            let mut start = 0;
            loop {
                let stop = (start + max).min(n);
                ranges.push(start..stop);
                if stop == n {
                    break;
                }
                start += step;
            }
        }
        Direction::Left => {
            let mut stop = n;
            loop {
                let start = stop.saturating_sub(max);
                ranges.push(start..stop);
                if start == 0 || stop <= step {
                    break;
                }
                stop -= step;
            }
        }
    }
    Ok(ranges.into_iter().map(|r| e.slice(r)).collect())
}
