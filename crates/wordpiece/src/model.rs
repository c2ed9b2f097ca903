//! `WordPiece`: a loaded tokenizer, the whole Hugging Face pipeline for BERT — added (special)
//! tokens → normalizer → (added tokens matched after normalization) → pre-tokenizer →
//! LinMaxMatch → template → truncation → padding — and the decoder back.

use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::linmaxmatch::{LinMaxMatch, Piece};
use crate::normalizer::{Align, BertNormalizer, Splitter, WordBuf, is_bert_punctuation};
use crate::postprocess::{
    Encoding, Padding, PaddingStrategy, Template, TemplatePiece, Truncation, round_up, truncate,
};
use crate::{Error, Result};

/// A token the text is split on before normalization (Hugging Face's added tokens: `[CLS]`,
/// `[SEP]`, `[MASK]` … in a BERT tokenizer.json).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedToken {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub content: String,
    /// Skipped by `decode(.., skip_special_tokens = true)`.
    pub special: bool,
    /// Only matches when not inside a word.
    pub single_word: bool,
    /// Also takes the whitespace on its left.
    pub lstrip: bool,
    /// Also takes the whitespace on its right.
    pub rstrip: bool,
    /// Matched in the normalized text (its own content normalized too), not the raw text.
    pub normalized: bool,
}

impl AddedToken {
    /// A special token, as BERT's `[CLS]` and friends are declared.
    pub fn special(id: u32, content: &str) -> Self {
        Self {
            id,
            content: content.to_string(),
            special: true,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
        }
    }
}

/// Hugging Face's WordPiece decoder settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoder {
    /// The continuation prefix removed when joining.
    pub prefix: String,
    /// Remove the spaces tokenization put before punctuation and in contractions.
    pub cleanup: bool,
}

/// A WordPiece tokenizer: vocabulary, the BERT normalizer and pre-tokenizer, added tokens,
/// post-processing, truncation, padding and decoding.
#[derive(Clone, Debug)]
pub struct WordPiece {
    pub(crate) tokens: Vec<Option<String>>,
    pub(crate) ids: FxHashMap<String, u32>,
    pub(crate) unk_token: String,
    pub(crate) unk_id: u32,
    pub(crate) prefix: String,
    pub(crate) max_input_chars_per_word: usize,
    pub(crate) matcher: LinMaxMatch,
    pub(crate) splitter: Splitter,
    pub(crate) added: Vec<AddedToken>,
    /// Added tokens matched in the raw text, and which of `added` each pattern is.
    added_matcher: Option<(AhoCorasick, Vec<usize>)>,
    /// Added tokens matched in the normalized text (`normalized: true`).
    normalized_matcher: Option<(AhoCorasick, Vec<usize>)>,
    added_by_id: FxHashMap<u32, usize>,
    pub(crate) template: Option<Template>,
    pub(crate) truncation: Option<Truncation>,
    pub(crate) padding: Option<Padding>,
    pub(crate) decoder: Option<Decoder>,
}

/// BERT's special tokens, in the order BERT's vocabularies start with.
pub const BERT_SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

impl WordPiece {
    /// A tokenizer over `vocab` (id = index), BERT-style: the uncased normalizer, `[UNK]`,
    /// `##`, 100 characters per word at most; the BERT template, the WordPiece decoder, and
    /// every one of [`BERT_SPECIAL_TOKENS`] present in the vocabulary as a special added token.
    pub fn from_vocab(vocab: Vec<String>, normalizer: BertNormalizer) -> Result<Self> {
        Self::with_specials(vocab, &BERT_SPECIAL_TOKENS, "##", normalizer)
    }

    /// [`WordPiece::from_vocab`] with other special tokens and continuation prefix: each of
    /// `specials` found in the vocabulary becomes a special added token.
    pub fn with_specials<S: AsRef<str>>(
        vocab: Vec<String>,
        specials: &[S],
        prefix: &str,
        normalizer: BertNormalizer,
    ) -> Result<Self> {
        // A repeated string keeps its last id, as Hugging Face reads vocab.txt.
        let vocab: Vec<(String, u32)> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        let last: FxHashMap<&str, u32> = vocab.iter().map(|(t, i)| (t.as_str(), *i)).collect();
        let find = |t: &str| last.get(t).copied();
        let added = specials
            .iter()
            .filter_map(|t| find(t.as_ref()).map(|id| AddedToken::special(id, t.as_ref())))
            .collect();
        let template = match (find("[CLS]"), find("[SEP]")) {
            (Some(cls), Some(sep)) => Some(Template::bert(cls, sep)),
            _ => None,
        };
        let parts = Parts {
            vocab: Vec::new(),
            unk_token: "[UNK]".into(),
            prefix: prefix.into(),
            max_input_chars_per_word: 100,
            normalizer: Some(normalizer),
            added,
            template,
            truncation: None,
            padding: None,
            decoder: Some(Decoder {
                prefix: prefix.into(),
                cleanup: true,
            }),
        };
        Self::new(Parts { vocab, ..parts })
    }

    pub(crate) fn new(parts: Parts) -> Result<Self> {
        let len = parts
            .vocab
            .iter()
            .map(|(_, id)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        if parts.vocab.iter().any(|(_, id)| *id == u32::MAX) {
            return Err(Error::invalid("vocab", "id 4294967295 is out of range"));
        }
        let mut tokens: Vec<Option<String>> = vec![None; len];
        let mut ids = FxHashMap::default();
        for (t, id) in &parts.vocab {
            if let Some(old) = &tokens[*id as usize]
                && old != t
            {
                return Err(Error::invalid(
                    format!("vocab[{t:?}]"),
                    format!("id {id} is already {old:?}"),
                ));
            }
            tokens[*id as usize] = Some(t.clone());
            ids.insert(t.clone(), *id);
        }
        let unk_id = *ids.get(&parts.unk_token).ok_or_else(|| {
            Error::invalid(
                "unk_token",
                format!("{:?} is not in the vocabulary", parts.unk_token),
            )
        })?;
        if parts.prefix.is_empty() {
            return Err(Error::invalid(
                "continuing_subword_prefix",
                "must not be empty",
            ));
        }
        for (i, a) in parts.added.iter().enumerate() {
            if a.content.is_empty() {
                return Err(Error::invalid(
                    format!("added_tokens[{i}]"),
                    "empty content",
                ));
            }
        }
        if let Some(t) = &parts.truncation
            && let Some(template) = &parts.template
            && t.max_length < template.added(false)
        {
            return Err(Error::invalid(
                "truncation.max_length",
                format!(
                    "{} leaves no room for the {} special tokens the template adds",
                    t.max_length,
                    template.added(false)
                ),
            ));
        }
        let matcher = LinMaxMatch::new(
            parts.vocab.iter().map(|(t, id)| (t.as_str(), *id)),
            &parts.prefix,
        );
        let splitter = Splitter::new(parts.normalizer);
        let matcher_of = |normalized: bool| -> Result<Option<(AhoCorasick, Vec<usize>)>> {
            let mut which = Vec::new();
            let mut patterns = Vec::new();
            for (i, a) in parts.added.iter().enumerate() {
                if a.normalized != normalized {
                    continue;
                }
                let pattern = match (normalized, parts.normalizer) {
                    (true, Some(n)) => n.normalize(&a.content),
                    _ => a.content.clone(),
                };
                // A token that normalizes to nothing can never be found.
                if !pattern.is_empty() {
                    which.push(i);
                    patterns.push(pattern);
                }
            }
            if patterns.is_empty() {
                return Ok(None);
            }
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(|e| Error::invalid("added_tokens", e.to_string()))?;
            Ok(Some((ac, which)))
        };
        let added_matcher = matcher_of(false)?;
        let normalized_matcher = matcher_of(true)?;
        let added_by_id = parts
            .added
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id, i))
            .collect();
        Ok(Self {
            tokens,
            ids,
            unk_token: parts.unk_token,
            unk_id,
            prefix: parts.prefix,
            max_input_chars_per_word: parts.max_input_chars_per_word,
            matcher,
            splitter,
            added: parts.added,
            added_matcher,
            normalized_matcher,
            added_by_id,
            template: parts.template,
            truncation: parts.truncation,
            padding: parts.padding,
            decoder: parts.decoder,
        })
    }

    /// Ids of `text` alone: no template, truncation or padding. Added tokens in the text
    /// (`[SEP]` …) are recognised, as Hugging Face does.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4);
        self.tokenize(text, &mut |id, _, _| ids.push(id));
        ids
    }

    /// Number of tokens `text` encodes to (no template).
    pub fn count(&self, text: &str) -> usize {
        let mut n = 0;
        self.tokenize(text, &mut |_, _, _| n += 1);
        n
    }

    /// One text, through the template, truncation and padding of this tokenizer.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.encode_with(text, None, true)
    }

    /// A pair of texts (`[CLS] A [SEP] B [SEP]` with type ids 0 then 1).
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoding> {
        self.encode_with(first, Some(second), true)
    }

    /// The general form: an optional second text, and whether the template's special tokens
    /// are added.
    pub fn encode_with(
        &self,
        first: &str,
        second: Option<&str>,
        add_special_tokens: bool,
    ) -> Result<Encoding> {
        let mut enc = self.post_process(first, second, add_special_tokens)?;
        if let Some(p) = &self.padding {
            let own = match p.strategy {
                PaddingStrategy::Fixed(n) => n,
                PaddingStrategy::BatchLongest => enc.len(),
            };
            enc.pad(round_up(own, p.pad_to_multiple_of), p);
        }
        Ok(enc)
    }

    /// Many texts in parallel (rayon), padded together when padding is `BatchLongest`.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        let mut all: Vec<Encoding> = texts
            .par_iter()
            .map(|t| self.encode(t))
            .collect::<Result<_>>()?;
        if let Some(p) = &self.padding
            && p.strategy == PaddingStrategy::BatchLongest
        {
            let longest = all.iter().map(Encoding::len).max().unwrap_or(0);
            let to = round_up(longest, p.pad_to_multiple_of);
            all.iter_mut().for_each(|e| e.pad(to, p));
        }
        Ok(all)
    }

    /// Ids of many texts in parallel, no template (what corpus conversion wants).
    pub fn encode_batch_ordinary(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.encode_ordinary(t)).collect()
    }

    fn post_process(
        &self,
        first: &str,
        second: Option<&str>,
        add_special_tokens: bool,
    ) -> Result<Encoding> {
        let a = self.raw(first, 0);
        let b = second.map(|s| self.raw(s, 1));
        let (a, b) = match &self.truncation {
            None => (a, b),
            Some(t) => {
                let added = match (&self.template, add_special_tokens) {
                    (Some(template), true) => template.added(b.is_some()),
                    _ => 0,
                };
                let max = t.max_length.checked_sub(added).ok_or_else(|| {
                    Error::invalid(
                        "truncation.max_length",
                        format!("{} is below the {added} special tokens", t.max_length),
                    )
                })?;
                truncate(a, b, max, t)?
            }
        };
        Ok(self.assemble(a, b, add_special_tokens))
    }

    /// The sequence or pair through the template (without one: one after the other), windows
    /// that overflowed included, combined as Hugging Face's `Encoding::merge_with` does.
    fn assemble(&self, mut a: Encoding, b: Option<Encoding>, add_special_tokens: bool) -> Encoding {
        let Some(template) = &self.template else {
            let Some(b) = b else { return a };
            let mut out = Encoding::default();
            out.merge_with(a);
            out.merge_with(b);
            return out;
        };
        let mut b = b;
        let pieces = if b.is_some() {
            &template.pair
        } else {
            &template.single
        };
        // A sequence is moved into its last (usually only) place in the template.
        let mut uses = [0, 0];
        for piece in pieces {
            if let TemplatePiece::Sequence { second, .. } = piece {
                uses[*second as usize] += 1;
            }
        }
        let mut out = Encoding::default();
        for piece in pieces {
            match piece {
                TemplatePiece::Sequence { second, type_id } => {
                    let seq = if *second { b.as_mut() } else { Some(&mut a) };
                    if let Some(seq) = seq {
                        let left = &mut uses[*second as usize];
                        *left -= 1;
                        let mut seq = if *left == 0 {
                            std::mem::take(seq)
                        } else {
                            seq.clone()
                        };
                        // Only the kept window takes the template's type id, as in Hugging Face.
                        seq.type_ids = vec![*type_id; seq.len()];
                        out.merge_with(seq);
                    }
                }
                TemplatePiece::Special { ids, type_id, .. } => {
                    if add_special_tokens {
                        let n = ids.len();
                        out.merge_with(Encoding {
                            ids: ids.clone(),
                            type_ids: vec![*type_id; n],
                            offsets: vec![(0, 0); n],
                            word_ids: vec![None; n],
                            attention_mask: vec![1; n],
                            special_tokens_mask: vec![1; n],
                            overflowing: Vec::new(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Tokens of one text with offsets, before any post-processing.
    fn raw(&self, text: &str, type_id: u32) -> Encoding {
        let mut enc = Encoding::default();
        self.tokenize(text, &mut |id, span, word| {
            enc.ids.push(id);
            enc.offsets.push(span);
            enc.word_ids.push(Some(word));
        });
        let n = enc.ids.len();
        enc.type_ids = vec![type_id; n];
        enc.attention_mask = vec![1; n];
        enc.special_tokens_mask = vec![0; n];
        enc
    }

    /// Every token of `text` with its original byte range and word index, in order (an
    /// added token is a word of its own, as in Hugging Face).
    pub(crate) fn tokenize(&self, text: &str, emit: &mut dyn FnMut(u32, (usize, usize), u32)) {
        WORD.with_borrow_mut(|(buf, pieces)| {
            let mut word = 0;
            match &self.added_matcher {
                None => self.tokenize_segment(text, 0, buf, pieces, &mut word, emit),
                Some(raw) => {
                    let mut at = 0;
                    for (id, start, end) in self.find_added(text, raw) {
                        if at < start {
                            let segment = &text[at..start];
                            self.tokenize_segment(segment, at, buf, pieces, &mut word, emit);
                        }
                        emit(id, (start, end), word);
                        word += 1;
                        at = end;
                    }
                    if at < text.len() {
                        self.tokenize_segment(&text[at..], at, buf, pieces, &mut word, emit);
                    }
                }
            }
        });
    }

    fn tokenize_segment(
        &self,
        text: &str,
        offset: usize,
        buf: &mut WordBuf,
        pieces: &mut Vec<Piece>,
        index: &mut u32,
        emit: &mut dyn FnMut(u32, (usize, usize), u32),
    ) {
        let Some(matcher) = &self.normalized_matcher else {
            return self.splitter.split(text, offset, buf, |w, chars, align| {
                self.emit_word(w, chars, align, pieces, index, emit)
            });
        };
        // Added tokens matched after normalization: normalize the whole segment first (with
        // each byte's original range), cut those out, pre-tokenize what is left.
        let (normalized, map) = self.splitter.normalize_aligned(text, offset, buf);
        let mut at = 0;
        for (id, start, end) in self.find_added(&normalized, matcher) {
            if at < start {
                pre_tokenize(
                    &normalized[at..start],
                    &map[at..start],
                    &mut |w, chars, align| self.emit_word(w, chars, align, pieces, index, emit),
                );
            }
            emit(id, (map[start].0, map[end - 1].1), *index);
            *index += 1;
            at = end;
        }
        if at < normalized.len() {
            pre_tokenize(&normalized[at..], &map[at..], &mut |w, chars, align| {
                self.emit_word(w, chars, align, pieces, index, emit)
            });
        }
    }

    /// The pieces of one word (or `[UNK]`), with their original ranges.
    #[inline]
    fn emit_word(
        &self,
        word: &str,
        chars: usize,
        align: Align<'_>,
        pieces: &mut Vec<Piece>,
        index: &mut u32,
        emit: &mut dyn FnMut(u32, (usize, usize), u32),
    ) {
        pieces.clear();
        if chars <= self.max_input_chars_per_word && self.matcher.tokenize(word.as_bytes(), pieces)
        {
            for &(id, s, e) in pieces.iter() {
                emit(id, align.span(s as usize, e as usize), *index);
            }
        } else {
            emit(self.unk_id, align.span(0, word.len()), *index);
        }
        *index += 1;
    }

    /// Added tokens found in `text`: (id, start, end), Hugging Face's rules for
    /// `single_word`, `lstrip` and `rstrip`.
    fn find_added(
        &self,
        text: &str,
        (ac, which): &(AhoCorasick, Vec<usize>),
    ) -> Vec<(u32, usize, usize)> {
        let mut found = Vec::new();
        let mut last_end = 0;
        for m in ac.find_iter(text) {
            let token = &self.added[which[m.pattern().as_usize()]];
            let (mut start, mut end) = (m.start(), m.end());
            if token.single_word {
                let before = text[..start].chars().next_back();
                let after = text[end..].chars().next();
                if before.is_some_and(is_word_char) || after.is_some_and(is_word_char) {
                    continue;
                }
            }
            if token.lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(last_end);
            }
            if token.rstrip {
                end +=
                    text[end..].len() - text[end..].trim_start_matches(char::is_whitespace).len();
            }
            // Hugging Face drops a match that lstrip has emptied (it starts where the previous
            // one, extended by rstrip, ended).
            if start < end {
                found.push((token.id, start, end));
            }
            last_end = end;
        }
        found
    }

    /// Text of `ids`, through the WordPiece decoder (`##` pieces joined, spaces before
    /// punctuation cleaned up); special added tokens left out when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut tokens = Vec::with_capacity(ids.len());
        for (position, &id) in ids.iter().enumerate() {
            if let Some(&i) = self.added_by_id.get(&id) {
                if skip_special_tokens && self.added[i].special {
                    continue;
                }
                tokens.push(self.added[i].content.as_str());
            } else {
                tokens.push(self.token(id).ok_or(Error::UnknownId { id, position })?);
            }
        }
        let Some(decoder) = &self.decoder else {
            return Ok(tokens.join(" "));
        };
        let mut out = String::new();
        for (i, token) in tokens.iter().enumerate() {
            let mut piece = String::new();
            if i != 0 {
                match token.strip_prefix(decoder.prefix.as_str()) {
                    Some(rest) => piece.push_str(rest),
                    None => {
                        piece.push(' ');
                        piece.push_str(token);
                    }
                }
            } else {
                piece.push_str(token);
            }
            if decoder.cleanup {
                piece = cleanup(&piece);
            }
            out.push_str(&piece);
        }
        Ok(out)
    }

    /// The string of a vocabulary id (or added token).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens
            .get(id as usize)
            .and_then(|t| t.as_deref())
            .or_else(|| self.added_by_id.get(&id).map(|&i| &*self.added[i].content))
    }

    /// The id of a vocabulary string or added token.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids
            .get(token)
            .copied()
            .or_else(|| self.added.iter().find(|a| a.content == token).map(|a| a.id))
    }

    /// Ids run from 0 to `vocab_size() - 1` (added tokens included).
    pub fn vocab_size(&self) -> usize {
        let added = self
            .added
            .iter()
            .map(|a| a.id as usize + 1)
            .max()
            .unwrap_or(0);
        self.tokens.len().max(added)
    }

    /// The unknown token's id.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The continuation prefix (`##`).
    pub fn continuing_subword_prefix(&self) -> &str {
        &self.prefix
    }

    /// Words longer than this many characters become the unknown token.
    pub fn max_input_chars_per_word(&self) -> usize {
        self.max_input_chars_per_word
    }

    /// The normalizer (`None`: text goes to the pre-tokenizer as it is).
    pub fn normalizer(&self) -> Option<BertNormalizer> {
        self.splitter.normalizer()
    }

    /// The added tokens, in the order they were declared.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }

    /// The post-processing template.
    pub fn template(&self) -> Option<&Template> {
        self.template.as_ref()
    }

    /// Truncation applied by [`encode`](Self::encode).
    pub fn truncation(&self) -> Option<&Truncation> {
        self.truncation.as_ref()
    }

    /// Padding applied by [`encode`](Self::encode).
    pub fn padding(&self) -> Option<&Padding> {
        self.padding.as_ref()
    }

    /// Sets (or removes) truncation.
    pub fn with_truncation(mut self, truncation: Option<Truncation>) -> Result<Self> {
        if let (Some(t), Some(template)) = (&truncation, &self.template)
            && t.max_length < template.added(false)
        {
            return Err(Error::invalid(
                "truncation.max_length",
                format!("{} is below the template's special tokens", t.max_length),
            ));
        }
        self.truncation = truncation;
        Ok(self)
    }

    /// Sets (or removes) padding.
    pub fn with_padding(mut self, padding: Option<Padding>) -> Self {
        self.padding = padding;
        self
    }

    /// The vocabulary in id order (holes, possible in a tokenizer.json, are `None`).
    pub fn vocab(&self) -> &[Option<String>] {
        &self.tokens
    }

    /// The decoder settings.
    pub fn decoder(&self) -> Option<&Decoder> {
        self.decoder.as_ref()
    }

    /// BERT's greedy longest-match-first, the slow way (for tests and comparisons).
    pub fn greedy_pieces(&self, word: &str) -> Option<Vec<(u32, usize, usize)>> {
        crate::linmaxmatch::greedy(word, |s| self.ids.get(s).copied(), &self.prefix).map(|v| {
            v.into_iter()
                .map(|(id, s, e)| (id, s as usize, e as usize))
                .collect()
        })
    }

    /// LinMaxMatch on one (already normalized) word: `None` when it is unknown.
    pub fn word_pieces(&self, word: &str) -> Option<Vec<(u32, usize, usize)>> {
        let mut out = Vec::new();
        self.matcher.tokenize(word.as_bytes(), &mut out).then(|| {
            out.into_iter()
                .map(|(id, s, e)| (id, s as usize, e as usize))
                .collect()
        })
    }
}

/// Everything a [`WordPiece`] is made of, as the file formats provide it.
pub(crate) struct Parts {
    pub vocab: Vec<(String, u32)>,
    pub unk_token: String,
    pub prefix: String,
    pub max_input_chars_per_word: usize,
    pub normalizer: Option<BertNormalizer>,
    pub added: Vec<AddedToken>,
    pub template: Option<Template>,
    pub truncation: Option<Truncation>,
    pub padding: Option<Padding>,
    pub decoder: Option<Decoder>,
}

thread_local! {
    static WORD: std::cell::RefCell<(WordBuf, Vec<Piece>)> = Default::default();
}

/// Hugging Face's `wordpiece::cleanup`.
fn cleanup(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// A "word" character for `single_word` added tokens: the regex `\w` Hugging Face tests
/// with (letters, marks, decimal digits, connector punctuation, joiners), from the same
/// regex engine's tables.
fn is_word_char(c: char) -> bool {
    static WORD: std::sync::LazyLock<Option<regex_automata::meta::Regex>> =
        std::sync::LazyLock::new(|| regex_automata::meta::Regex::new(r"^\w$").ok());
    let mut buf = [0; 4];
    WORD.as_ref().map_or(c.is_alphanumeric() || c == '_', |re| {
        re.is_match(c.encode_utf8(&mut buf).as_bytes())
    })
}

/// BERT's pre-tokenizer over already normalized text: words split on whitespace, each
/// punctuation character a word of its own; `map` gives each byte's original range.
fn pre_tokenize(text: &str, map: &[(usize, usize)], word: &mut dyn FnMut(&str, usize, Align<'_>)) {
    let mut start = None;
    let mut chars = 0;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if c.is_whitespace() || is_bert_punctuation(c) {
            if let Some(s) = start.take() {
                word(&text[s..i], chars, Align::Map(&map[s..i]));
            }
            chars = 0;
            if !c.is_whitespace() {
                word(&text[i..end], 1, Align::Map(&map[i..end]));
            }
        } else {
            start.get_or_insert(i);
            chars += 1;
        }
    }
    if let Some(s) = start {
        word(&text[s..], chars, Align::Map(&map[s..]));
    }
}
