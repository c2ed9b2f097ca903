//! [`Bpe`]: a loaded vocabulary, and encoding and decoding with it.

use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::decode::DecodeStream;
use crate::merge::{self, Merge, PairMap, pair_key};
use crate::pretokenize::Pretokenizer;
use crate::{Error, Result};

/// Which special tokens [`Bpe::encode`] turns into their ids when it finds them in the text.
/// A special token's text that is not allowed is an error, as in tiktoken, so that user text
/// cannot inject control tokens unnoticed; [`Bpe::encode_ordinary`] treats it as plain text.
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// Every special token.
    All,
    /// No special token.
    None,
    /// These.
    Only(&'a [&'a str]),
}

impl Allowed<'_> {
    fn allows(&self, token: &str) -> bool {
        match self {
            Allowed::All => true,
            Allowed::None => false,
            Allowed::Only(list) => list.contains(&token),
        }
    }
}

/// How a pair of adjacent tokens is ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranking {
    /// Hugging Face: a pair merges only if it is in the merges list; rank = its line.
    Merges,
    /// tiktoken: any two tokens whose concatenation is a token merge into it; rank = its id.
    Concatenation,
}

/// Ids with the byte range of the input each covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `offsets[i]`: the byte range of the input that `ids[i]` came from. Byte-level tokens can
    /// start or end inside a multi-byte character.
    pub offsets: Vec<(usize, usize)>,
}

/// A byte-level BPE vocabulary: encodes any text (no unknown token exists) and decodes ids
/// back to the exact bytes.
#[derive(Debug, Clone)]
pub struct Bpe {
    /// id → bytes; a special token's bytes are its text; empty for an unused id.
    pub(crate) tokens: Vec<Vec<u8>>,
    /// Tokens before the appended special tokens.
    pub(crate) regular: usize,
    pub(crate) byte_ids: [u32; 256],
    /// Merges in rank order, as tokenizer.json and merges.txt list them.
    pub(crate) merges: Vec<(u32, u32)>,
    pairs: PairMap,
    /// Pieces whose whole bytes are one token and that BPE would encode to that token: the
    /// shortcut that makes most words a single lookup.
    whole: FxHashMap<Vec<u8>, u32>,
    pub(crate) specials: Vec<(String, u32)>,
    special_ids: FxHashSet<u32>,
    special_matcher: Option<AhoCorasick>,
    pub(crate) pretokenizer: Pretokenizer,
    pub(crate) add_prefix_space: bool,
    /// Hugging Face's `ignore_merges`: a piece that is a token is taken whole, even if merging
    /// would not reach it (tiktoken always does this).
    pub(crate) ignore_merges: bool,
}

impl Bpe {
    /// Builds a vocabulary from its tokens (`tokens[id]` = bytes, ids contiguous from 0) and
    /// merges (pairs of ids, in priority order), as in tokenizer.json and merges.txt.
    /// `specials` are `(text, id)`; an id may be past the tokens (appended) or the id of a
    /// token with the same text (GPT-2's `<|endoftext|>` is in its vocab.json).
    pub fn from_merges(
        tokens: Vec<Vec<u8>>,
        merges: Vec<(u32, u32)>,
        specials: Vec<(String, u32)>,
        pattern: &str,
    ) -> Result<Self> {
        Self::build(
            tokens,
            merges,
            specials,
            Pretokenizer::new(pattern)?,
            Ranking::Merges,
        )
    }

    /// Builds a vocabulary from tiktoken ranks (`tokens[rank]` = bytes): two adjacent tokens
    /// merge whenever their concatenation is a token, lowest rank first.
    pub fn from_ranks(
        tokens: Vec<Vec<u8>>,
        specials: Vec<(String, u32)>,
        pattern: &str,
    ) -> Result<Self> {
        Self::build(
            tokens,
            Vec::new(),
            specials,
            Pretokenizer::new(pattern)?,
            Ranking::Concatenation,
        )
    }

    pub(crate) fn build(
        mut tokens: Vec<Vec<u8>>,
        mut merges: Vec<(u32, u32)>,
        specials: Vec<(String, u32)>,
        pretokenizer: Pretokenizer,
        ranking: Ranking,
    ) -> Result<Self> {
        if u32::try_from(tokens.len() + specials.len()).is_err() {
            return Err(Error::invalid("vocab", "more than 2^32 tokens"));
        }
        let mut ids: FxHashMap<&[u8], u32> = FxHashMap::default();
        for (id, bytes) in tokens.iter().enumerate() {
            if bytes.is_empty() {
                return Err(Error::invalid(format!("vocab[{id}]"), "empty token"));
            }
            if let Some(first) = ids.insert(bytes, id as u32) {
                return Err(Error::invalid(
                    format!("vocab[{id}]"),
                    format!("same bytes as token {first}"),
                ));
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *ids.get(&[b as u8][..]).ok_or_else(|| {
                Error::invalid(
                    "vocab",
                    format!("no token for byte 0x{b:02x}: a byte-level vocabulary needs all 256"),
                )
            })?;
        }
        let mut pairs = PairMap::default();
        match ranking {
            Ranking::Merges => {
                for (rank, &(a, b)) in merges.iter().enumerate() {
                    let (Some(x), Some(y)) = (tokens.get(a as usize), tokens.get(b as usize))
                    else {
                        return Err(Error::invalid(
                            format!("merges[{rank}]"),
                            format!("token id {a} or {b} is not in the vocabulary"),
                        ));
                    };
                    let joined = [x.as_slice(), y.as_slice()].concat();
                    let Some(&id) = ids.get(joined.as_slice()) else {
                        return Err(Error::invalid(
                            format!("merges[{rank}]"),
                            "the merged token is not in the vocabulary",
                        ));
                    };
                    // A repeated merge keeps its first (highest-priority) rank, as HF does.
                    pairs.entry(pair_key(a, b)).or_insert(Merge {
                        rank: rank as u32,
                        id,
                    });
                }
            }
            Ranking::Concatenation => {
                // tiktoken files list no merges. The merge that makes token r is the split BPE
                // finds with the ranks below r, which must be two tokens (Hugging Face's
                // tiktoken conversion): derived here, as the pair map fills in rank order.
                merges.clear();
                let mut parts = Vec::new();
                for (id, bytes) in tokens.iter().enumerate() {
                    if bytes.len() >= 2 {
                        parts.clear();
                        let start = bytes.iter().map(|&b| byte_ids[b as usize]).collect();
                        merge::merge(&pairs, start, &mut parts);
                        let &[a, b] = parts.as_slice() else {
                            return Err(Error::invalid(
                                format!("ranks[{id}]"),
                                format!(
                                    "token {:?} is not the merge of two lower-ranked tokens",
                                    String::from_utf8_lossy(bytes)
                                ),
                            ));
                        };
                        merges.push((a, b));
                    }
                    for cut in 1..bytes.len() {
                        if let (Some(&a), Some(&b)) =
                            (ids.get(&bytes[..cut]), ids.get(&bytes[cut..]))
                        {
                            let id = id as u32;
                            pairs.insert(pair_key(a, b), Merge { rank: id, id });
                        }
                    }
                }
            }
        }
        drop(ids);
        let regular = tokens.len();
        let mut special_ids = FxHashSet::default();
        for (i, (text, id)) in specials.iter().enumerate() {
            let field = format!("special_tokens[{i}]");
            if text.is_empty() {
                return Err(Error::invalid(field, "empty special token"));
            }
            let at = *id as usize;
            if at < regular {
                if tokens[at] != text.as_bytes() {
                    return Err(Error::invalid(
                        field,
                        format!("{text:?} has id {id}, which is another token"),
                    ));
                }
            } else {
                // Appended after the vocabulary; tiktoken's tables leave gaps (cl100k: 100256),
                // which stay holes that no text encodes to and that decode as unknown.
                if tokens.len() <= at {
                    tokens.resize(at + 1, Vec::new());
                }
                if !tokens[at].is_empty() {
                    return Err(Error::invalid(field, format!("id {id} given twice")));
                }
                tokens[at] = text.as_bytes().to_vec();
            }
            if !special_ids.insert(*id) {
                return Err(Error::invalid(field, format!("id {id} given twice")));
            }
        }
        let special_matcher = if specials.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(specials.iter().map(|(text, _)| text))
                    .map_err(|e| Error::invalid("special_tokens", e.to_string()))?,
            )
        };
        let mut bpe = Self {
            tokens,
            regular,
            byte_ids,
            merges,
            pairs,
            whole: FxHashMap::default(),
            specials,
            special_ids,
            special_matcher,
            pretokenizer,
            add_prefix_space: false,
            ignore_merges: ranking == Ranking::Concatenation,
        };
        bpe.whole = bpe.whole_pieces();
        Ok(bpe)
    }

    /// The tokens that a piece equal to their bytes encodes to, in one lookup.
    fn whole_pieces(&self) -> FxHashMap<Vec<u8>, u32> {
        let candidates: Vec<u32> = (0..self.regular as u32)
            .filter(|id| !self.special_ids.contains(id))
            .collect();
        candidates
            .into_par_iter()
            .filter(|&id| {
                let bytes = &self.tokens[id as usize];
                self.ignore_merges || bytes.len() == 1 || self.merge_bytes(bytes) == [id]
            })
            .map(|id| (self.tokens[id as usize].clone(), id))
            .collect()
    }

    pub(crate) fn special_ids_contains(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    #[cfg(test)]
    pub(crate) fn pairs_for_tests(&self) -> &PairMap {
        &self.pairs
    }

    pub(crate) fn set_ignore_merges(&mut self, ignore: bool) {
        self.ignore_merges = ignore;
        self.whole = self.whole_pieces();
    }

    /// Number of ids, special tokens (and unused ids below the largest) included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The pre-tokenization regex.
    pub fn pattern(&self) -> &str {
        self.pretokenizer.pattern()
    }

    /// The special tokens with their ids.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// The id of a special token.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.specials.iter().find(|s| s.0 == text).map(|s| s.1)
    }

    /// The bytes of a token (a special token's text).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens
            .get(id as usize)
            .filter(|b| !b.is_empty())
            .map(Vec::as_slice)
    }

    /// The id of the regular token with these bytes, if any.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.whole.get(bytes).copied().or_else(|| {
            (0..self.tokens.len() as u32)
                .find(|&id| !self.special_ids.contains(&id) && self.tokens[id as usize] == bytes)
        })
    }

    /// The merges, in priority order, as pairs of ids.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    fn merge_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        merge::merge(
            &self.pairs,
            bytes.iter().map(|&b| self.byte_ids[b as usize]).collect(),
            &mut out,
        );
        out
    }

    /// Encodes one pre-token.
    #[inline]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&id) = self.whole.get(piece) {
            out.push(id);
        } else {
            merge::merge(
                &self.pairs,
                piece.iter().map(|&b| self.byte_ids[b as usize]).collect(),
                out,
            );
        }
    }

    /// Whether Hugging Face's `add_prefix_space` puts a space before `text` (per segment
    /// between special tokens, as Hugging Face does).
    fn prefixes(&self, text: &str) -> bool {
        self.add_prefix_space && !text.is_empty() && !text.starts_with(' ')
    }

    /// Calls `each(piece_start, ids)` for the pieces of ordinary text (no special tokens);
    /// `piece_start` counts the prefix space, when [`Bpe::prefixes`] adds one.
    fn for_each_piece(&self, text: &str, mut each: impl FnMut(usize, &[u32]) -> bool) {
        let mut buf = Vec::with_capacity(16);
        let prefixed;
        let text = if self.prefixes(text) {
            prefixed = format!(" {text}");
            prefixed.as_str()
        } else {
            text
        };
        for (start, end) in self.pretokenizer.split(text) {
            buf.clear();
            self.encode_piece(&text.as_bytes()[start..end], &mut buf);
            if !each(start, &buf) {
                return;
            }
        }
    }

    /// Encodes `text` with every special token's text treated as plain text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.for_each_piece(text, |_, piece| {
            ids.extend_from_slice(piece);
            true
        });
        ids
    }

    /// Encodes arbitrary bytes, not necessarily UTF-8 (a file cut mid-character, binary
    /// junk in a crawl): each valid UTF-8 run is encoded as text, each invalid sequence as a
    /// piece of its own. `decode_bytes` gives the input back exactly.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(bytes.len() / 3);
        for chunk in bytes.utf8_chunks() {
            ids.extend(self.encode_ordinary(chunk.valid()));
            if !chunk.invalid().is_empty() {
                self.encode_piece(chunk.invalid(), &mut ids);
            }
        }
        ids
    }

    /// Encodes `text`, turning the `allowed` special tokens into their ids. Any other special
    /// token in the text is [`Error::DisallowedSpecial`].
    pub fn encode(&self, text: &str, allowed: Allowed<'_>) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.for_each_segment(text, allowed, |segment| match segment {
            Segment::Special(id, _) => ids.push(id),
            Segment::Text(start, end) => {
                self.for_each_piece(&text[start..end], |_, piece| {
                    ids.extend_from_slice(piece);
                    true
                });
            }
        })?;
        Ok(ids)
    }

    /// [`Bpe::encode`] with each id's byte range in `text`.
    pub fn encode_with_offsets(&self, text: &str, allowed: Allowed<'_>) -> Result<Encoding> {
        let mut enc = Encoding::default();
        self.for_each_segment(text, allowed, |segment| match segment {
            Segment::Special(id, (start, end)) => {
                enc.ids.push(id);
                enc.offsets.push((start, end));
            }
            Segment::Text(seg_start, seg_end) => {
                let seg = &text[seg_start..seg_end];
                // Offsets are computed in the prefixed text, then mapped back: the prefix
                // space is not in the input, so its token starts at the segment's start.
                let shift = usize::from(self.prefixes(seg));
                let back = |x: usize| seg_start + x.saturating_sub(shift);
                self.for_each_piece(seg, |piece_start, piece| {
                    let mut at = piece_start;
                    for &id in piece {
                        let end = at + self.tokens[id as usize].len();
                        enc.ids.push(id);
                        enc.offsets.push((back(at), back(end)));
                        at = end;
                    }
                    true
                });
            }
        })?;
        Ok(enc)
    }

    /// Number of tokens `encode_ordinary(text)` gives, without building the list.
    pub fn count(&self, text: &str) -> usize {
        let mut n = 0;
        self.for_each_piece(text, |_, piece| {
            n += piece.len();
            true
        });
        n
    }

    /// `Some(count(text))` if it is at most `limit`, else `None` — "does this fit the context?"
    /// in time proportional to `limit`, not to the text.
    pub fn count_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        let mut n = 0;
        self.for_each_piece(text, |_, piece| {
            n += piece.len();
            n <= limit
        });
        (n <= limit).then_some(n)
    }

    /// Encodes many texts in parallel (rayon's pool), ordinary text only.
    pub fn encode_batch_ordinary<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .with_min_len(8)
            .map(|t| self.encode_ordinary(t.as_ref()))
            .collect()
    }

    /// Encodes many texts in parallel (rayon's pool).
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: Allowed<'_>,
    ) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .with_min_len(8)
            .map(|t| self.encode(t.as_ref(), allowed))
            .collect()
    }

    fn for_each_segment(
        &self,
        text: &str,
        allowed: Allowed<'_>,
        mut each: impl FnMut(Segment),
    ) -> Result<()> {
        let mut at = 0;
        if let Some(matcher) = &self.special_matcher {
            for m in matcher.find_iter(text) {
                let (token, id) = &self.specials[m.pattern().as_usize()];
                if !allowed.allows(token) {
                    return Err(Error::DisallowedSpecial {
                        token: token.clone(),
                        offset: m.start(),
                    });
                }
                if m.start() > at {
                    each(Segment::Text(at, m.start()));
                }
                each(Segment::Special(*id, (m.start(), m.end())));
                at = m.end();
            }
        }
        if at < text.len() {
            each(Segment::Text(at, text.len()));
        }
        Ok(())
    }

    /// The bytes `ids` stand for. An id outside the vocabulary is [`Error::UnknownId`].
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (position, &id) in ids.iter().enumerate() {
            let bytes = self
                .token_bytes(id)
                .ok_or(Error::UnknownId { id, position })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// The text `ids` stand for; bytes that are not valid UTF-8 (a sequence cut between
    /// tokens) become U+FFFD, as in tiktoken's `decode`. [`Bpe::decode_bytes`] is exact.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// A decoder fed one id at a time that only ever emits whole characters.
    pub fn decode_stream(&self) -> DecodeStream<'_> {
        DecodeStream::new(self)
    }
}

enum Segment {
    Special(u32, (usize, usize)),
    Text(usize, usize),
}
