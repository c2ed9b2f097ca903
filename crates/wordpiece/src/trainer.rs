//! [`WordPieceTrainer`]: learns a WordPiece vocabulary by likelihood, as WordPiece was defined
//! (Schuster & Nakajima 2012; BERT), not by pair frequency.
//!
//! Words are split into characters, the first as itself and the rest with the continuation
//! prefix (`h ##e ##l ##l ##o`). Each step merges the adjacent pair `(a, b)` with the highest
//! score `count(ab) / (count(a) · count(b))` — the merge that most increases the likelihood of
//! the training data under a unigram model of the units — until the vocabulary is full.
//! Hugging Face's `WordPieceTrainer` instead runs its BPE trainer (highest `count(ab)`) and
//! renames the result (tokenizers #570, #144): the two agree on nothing but the alphabet.
//! The ratio favours pairs of rare units; [`Score::LikelihoodGain`] ranks by the exact change
//! of the log-likelihood instead, which weighs that association by the pair's count and
//! compresses held-out text as well as Hugging Face's trainer (`docs/benchmarks.md`).
//!
//! The score of a pair changes when its own count changes and when the count of either unit
//! does. Incremental, as the BPE trainer: each pair knows its words, a merge rewrites only
//! those and adjusts the pairs around the merged positions; the units `a` and `b` lose counts,
//! which *raises* the score of every other pair they are in, so those entries move up in a
//! max-heap that holds one entry per pair, updated in place (a decrease is applied lazily,
//! when the entry comes to the top). Scores are compared exactly, as fractions in 128-bit integers.
//!
//! **Determinism and ties**: highest score, then highest pair count, then smallest
//! `(left, right)` id pair. Ids: special tokens, then the alphabet (each character as a word
//! start, then each as `##c`, in code-point order), then merges in order.

use std::cmp::{Ordering, Reverse};

use aho_corasick::AhoCorasick;
use lmforge_tokenizer::merges::{Merger, Word, count_pairs, pair_of, sum_counts};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::model::BERT_SPECIAL_TOKENS;
use crate::normalizer::{BertNormalizer, Splitter, WordBuf};
use crate::{Error, Result, WordPiece};

/// Settings for [`WordPieceTrainer`]; build one with [`WordPieceTrainer::builder`].
#[derive(Debug, Clone)]
pub struct WordPieceTrainerBuilder {
    vocab_size: usize,
    min_frequency: u64,
    special_tokens: Vec<String>,
    limit_alphabet: Option<usize>,
    prefix: String,
    normalizer: BertNormalizer,
    score: Score,
}

/// What the trainer ranks pairs by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Score {
    /// `count(ab) / (count(a)·count(b))`, WordPiece's criterion as it is usually stated
    /// (and as Hugging Face's course describes it): favours pairs of rare units.
    #[default]
    Ratio,
    /// The exact change of the corpus log-likelihood under a unigram model of the units if
    /// `(a, b)` were merged, `c·ln c + (cₐ−c)·ln(cₐ−c) + (c_b−c)·ln(c_b−c) − cₐ·ln cₐ − c_b·ln c_b
    /// − ((N−c)·ln(N−c) − N·ln N)`: the ratio weighted by how often the pair occurs.
    LikelihoodGain,
}

impl Default for WordPieceTrainerBuilder {
    fn default() -> Self {
        Self {
            vocab_size: 30_000,
            min_frequency: 2,
            special_tokens: BERT_SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
            limit_alphabet: Some(1000),
            prefix: "##".into(),
            normalizer: BertNormalizer::default(),
            score: Score::Ratio,
        }
    }
}

impl WordPieceTrainerBuilder {
    /// Total vocabulary size, special tokens and alphabet included (default 30,000).
    pub fn vocab_size(mut self, n: usize) -> Self {
        self.vocab_size = n;
        self
    }

    /// A pair seen fewer times than this is never merged (default 2).
    pub fn min_frequency(mut self, n: u64) -> Self {
        self.min_frequency = n;
        self
    }

    /// Special tokens, ids 0.. (default `[PAD] [UNK] [CLS] [SEP] [MASK]`; `[UNK]` is required).
    /// Their text is cut out of the training text.
    pub fn special_tokens<S: Into<String>>(mut self, tokens: impl IntoIterator<Item = S>) -> Self {
        self.special_tokens = tokens.into_iter().map(Into::into).collect();
        self
    }

    /// Keep only the this many most frequent characters (default 1,000, as Hugging Face's
    /// BERT trainer); words with any other character are left out of training and encode as
    /// `[UNK]`.
    pub fn limit_alphabet(mut self, n: Option<usize>) -> Self {
        self.limit_alphabet = n;
        self
    }

    /// The continuation prefix (default `##`).
    pub fn continuing_subword_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What pairs are ranked by (default [`Score::Ratio`]).
    pub fn score(mut self, score: Score) -> Self {
        self.score = score;
        self
    }

    /// How text is normalized before it is split into words (default uncased BERT).
    pub fn normalizer(mut self, normalizer: BertNormalizer) -> Self {
        self.normalizer = normalizer;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<WordPieceTrainer> {
        let config = |field, reason: String| Err(Error::Config { field, reason });
        if !self.special_tokens.iter().any(|t| t == "[UNK]") {
            return config(
                "special_tokens",
                "[UNK] is required: unknown words become it".into(),
            );
        }
        for (i, t) in self.special_tokens.iter().enumerate() {
            if t.is_empty() {
                return config("special_tokens", format!("token {i} is empty"));
            }
            if self.special_tokens[..i].contains(t) {
                return config("special_tokens", format!("{t:?} is given twice"));
            }
        }
        if self.prefix.is_empty() {
            return config("continuing_subword_prefix", "must not be empty".into());
        }
        if self.vocab_size <= self.special_tokens.len() {
            return config(
                "vocab_size",
                format!(
                    "{} leaves no room after {} special tokens",
                    self.vocab_size,
                    self.special_tokens.len()
                ),
            );
        }
        if self.vocab_size > u32::MAX as usize {
            return config("vocab_size", "ids are u32".into());
        }
        if self.limit_alphabet == Some(0) {
            return config("limit_alphabet", "must be at least 1".into());
        }
        let specials = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&self.special_tokens)
            .map_err(|e| Error::Config {
                field: "special_tokens",
                reason: e.to_string(),
            })?;
        Ok(WordPieceTrainer {
            splitter: Splitter::new(Some(self.normalizer)),
            config: self,
            specials,
            words: FxHashMap::default(),
            texts: 0,
            bytes: 0,
        })
    }
}

/// What a training run saw and made.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrainReport {
    /// Final vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Merges made (a merge that re-creates an existing string adds no token).
    pub merges: usize,
    /// Characters kept (each is two tokens: `c` and `##c`).
    pub alphabet: usize,
    /// Distinct characters seen and dropped by `limit_alphabet`.
    pub dropped_characters: usize,
    /// Texts fed.
    pub texts: u64,
    /// Bytes of text fed.
    pub bytes: u64,
    /// Words counted.
    pub words: u64,
    /// Distinct words: what training memory grows with.
    pub distinct_words: usize,
    /// Words left out of training because they hold a dropped character.
    pub words_outside_alphabet: u64,
    /// Why the merge loop ended early, if it did.
    pub stopped_early: Option<String>,
}

/// Learns a WordPiece vocabulary by likelihood.
///
/// ```
/// use lmforge_wordpiece::WordPieceTrainer;
///
/// let mut trainer = WordPieceTrainer::builder().vocab_size(120).min_frequency(1).build()?;
/// trainer.feed(&["the cat sat on the mat", "the hat"]);
/// let (wp, report) = trainer.train()?;
/// let ids = wp.encode_ordinary("the mat");
/// assert_eq!(wp.decode(&ids, true)?, "the mat");
/// assert!(report.merges > 0);
/// # Ok::<(), lmforge_wordpiece::Error>(())
/// ```
#[derive(Debug)]
pub struct WordPieceTrainer {
    config: WordPieceTrainerBuilder,
    splitter: Splitter,
    specials: AhoCorasick,
    words: FxHashMap<String, u64>,
    texts: u64,
    bytes: u64,
}

/// A heap entry: what the pair scored when last set.
#[derive(Clone, Copy)]
struct Candidate {
    /// The likelihood gain ([`Score::LikelihoodGain`]); 0 under [`Score::Ratio`].
    gain: f64,
    count: u64,
    units: u128,
    key: Reverse<u64>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.gain.to_bits() == other.gain.to_bits()
            && self.count == other.count
            && self.units == other.units
            && self.key == other.key
    }
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // count / units against other.count / other.units, exactly where it fits in u128.
        let ratio = match (
            (self.count as u128).checked_mul(other.units),
            (other.count as u128).checked_mul(self.units),
        ) {
            (Some(l), Some(r)) => l.cmp(&r),
            _ => (self.count as f64 / self.units as f64)
                .total_cmp(&(other.count as f64 / other.units as f64)),
        };
        self.gain
            .total_cmp(&other.gain)
            .then(ratio)
            .then(self.count.cmp(&other.count))
            .then(self.key.cmp(&other.key))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn xlogx(x: u64) -> f64 {
    if x == 0 {
        0.0
    } else {
        x as f64 * (x as f64).ln()
    }
}

/// How much merging a pair seen `c` times raises the log-likelihood of the corpus under a
/// unigram model of its `total` units, `ca` and `cb` the counts of its two units.
pub(crate) fn likelihood_gain(c: u64, ca: u64, cb: u64, same: bool, total: u64) -> f64 {
    let units = if same {
        xlogx(ca.saturating_sub(2 * c)) - xlogx(ca)
    } else {
        xlogx(ca.saturating_sub(c)) + xlogx(cb.saturating_sub(c)) - xlogx(ca) - xlogx(cb)
    };
    xlogx(c) + units - (xlogx(total.saturating_sub(c)) - xlogx(total))
}

/// A max-heap with at most one entry per pair, updated in place: a merge re-scores thousands
/// of pairs, and pushing a new entry for each (a lazy heap) grew to hundreds of MB.
#[derive(Default)]
struct PairHeap {
    items: Vec<Candidate>,
    slot: FxHashMap<u64, u32>,
}

impl PairHeap {
    /// Inserts the pair, or moves its entry to the new score.
    fn set(&mut self, c: Candidate) {
        match self.slot.get(&c.key.0) {
            Some(&i) => {
                let i = i as usize;
                let up = c > self.items[i];
                self.items[i] = c;
                if up { self.up(i) } else { self.down(i) }
            }
            None => {
                self.items.push(c);
                let i = self.items.len() - 1;
                self.slot.insert(c.key.0, i as u32);
                self.up(i);
            }
        }
    }

    fn remove(&mut self, key: u64) {
        let Some(i) = self.slot.remove(&key) else {
            return;
        };
        let i = i as usize;
        let last = self.items.pop().expect("an entry has a slot");
        if i < self.items.len() {
            self.items[i] = last;
            self.slot.insert(last.key.0, i as u32);
            self.up(i);
            self.down(i);
        }
    }

    fn pop(&mut self) -> Option<Candidate> {
        let top = *self.items.first()?;
        self.remove(top.key.0);
        Some(top)
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.items.swap(i, j);
        self.slot.insert(self.items[i].key.0, i as u32);
        self.slot.insert(self.items[j].key.0, j as u32);
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.items[i] <= self.items[parent] {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < self.items.len() && self.items[l] > self.items[best] {
                best = l;
            }
            if r < self.items.len() && self.items[r] > self.items[best] {
                best = r;
            }
            if best == i {
                break;
            }
            self.swap(i, best);
            i = best;
        }
    }
}

impl WordPieceTrainer {
    /// Settings with their defaults.
    pub fn builder() -> WordPieceTrainerBuilder {
        WordPieceTrainerBuilder::default()
    }

    /// Counts the words of a batch of texts, in parallel.
    pub fn feed<S: AsRef<str> + Sync>(&mut self, texts: &[S]) {
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        self.feed_strs(&texts);
    }

    // Not generic, so that it is compiled (and optimised) here, not in the caller's crate.
    fn feed_strs(&mut self, texts: &[&str]) {
        let splitter = &self.splitter;
        let specials = &self.specials;
        let local = texts
            .par_iter()
            .with_min_len(64)
            .fold(
                || (FxHashMap::<String, u64>::default(), WordBuf::default()),
                |(mut map, mut buf), text| {
                    let mut at = 0;
                    let mut count = |segment: &str, buf: &mut WordBuf| {
                        splitter.split(segment, 0, buf, |word, _, _| match map.get_mut(word) {
                            Some(c) => *c += 1,
                            None => {
                                map.insert(word.to_string(), 1);
                            }
                        });
                    };
                    for m in specials.find_iter(text) {
                        count(&text[at..m.start()], &mut buf);
                        at = m.end();
                    }
                    count(&text[at..], &mut buf);
                    (map, buf)
                },
            )
            .map(|(map, _)| map)
            .reduce(FxHashMap::default, sum_counts);
        if self.words.is_empty() {
            self.words = local;
        } else {
            for (word, n) in local {
                *self.words.entry(word).or_insert(0) += n;
            }
        }
        self.texts += texts.len() as u64;
        self.bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
    }

    /// Distinct words counted so far.
    pub fn distinct_words(&self) -> usize {
        self.words.len()
    }

    /// Learns the vocabulary. An empty corpus is [`Error::EmptyCorpus`].
    pub fn train(self) -> Result<(WordPiece, TrainReport)> {
        self.train_with_progress(|_, _| {})
    }

    /// [`WordPieceTrainer::train`], calling `progress(tokens_done, tokens_wanted)` as it goes.
    pub fn train_with_progress(
        self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(WordPiece, TrainReport)> {
        self.train_dyn(&mut progress)
    }

    // Not generic, so that it is compiled (and optimised) here, not in the caller's crate.
    fn train_dyn(self, progress: &mut dyn FnMut(usize, usize)) -> Result<(WordPiece, TrainReport)> {
        if self.words.is_empty() {
            return Err(Error::EmptyCorpus);
        }
        let config = self.config;
        let word_total: u64 = self.words.values().sum();
        let distinct_words = self.words.len();
        let mut sorted: Vec<(String, u64)> = self.words.into_iter().collect();
        // Hash-map order depends on batching; string order does not.
        sorted.par_sort_unstable();

        // The alphabet: the most frequent characters, ties to the smaller code point.
        let mut chars: FxHashMap<char, u64> = FxHashMap::default();
        for (w, n) in &sorted {
            for c in w.chars() {
                *chars.entry(c).or_insert(0) += n;
            }
        }
        let mut by_count: Vec<(char, u64)> = chars.into_iter().collect();
        by_count.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let keep = config.limit_alphabet.unwrap_or(usize::MAX);
        let dropped_characters = by_count.len().saturating_sub(keep);
        by_count.truncate(keep);
        let mut alphabet: Vec<char> = by_count.into_iter().map(|(c, _)| c).collect();
        alphabet.sort_unstable();

        let mut vocab: Vec<String> = config.special_tokens.clone();
        let mut ids: FxHashMap<String, u32> = FxHashMap::default();
        let intern = |s: String, vocab: &mut Vec<String>, ids: &mut FxHashMap<String, u32>| {
            *ids.entry(s.clone()).or_insert_with(|| {
                vocab.push(s);
                vocab.len() as u32 - 1
            })
        };
        for t in &config.special_tokens {
            ids.insert(t.clone(), ids.len() as u32);
        }
        let mut start_id: FxHashMap<char, u32> = FxHashMap::default();
        let mut cont_id: FxHashMap<char, u32> = FxHashMap::default();
        for &c in &alphabet {
            start_id.insert(c, intern(c.to_string(), &mut vocab, &mut ids));
        }
        for &c in &alphabet {
            let s = format!("{}{c}", config.prefix);
            cont_id.insert(c, intern(s, &mut vocab, &mut ids));
        }
        if vocab.len() > config.vocab_size {
            return Err(Error::Config {
                field: "vocab_size",
                reason: format!(
                    "{} is below the {} special tokens and 2 x {} alphabet tokens (lower limit_alphabet)",
                    config.vocab_size,
                    config.special_tokens.len(),
                    alphabet.len()
                ),
            });
        }

        let mut words: Vec<Word> = Vec::with_capacity(sorted.len());
        let mut words_outside_alphabet = 0;
        'words: for (w, count) in sorted {
            let mut ids = Vec::with_capacity(w.len());
            for (i, c) in w.chars().enumerate() {
                let table = if i == 0 { &start_id } else { &cont_id };
                match table.get(&c) {
                    Some(&id) => ids.push(id),
                    None => {
                        words_outside_alphabet += count;
                        continue 'words;
                    }
                }
            }
            words.push(Word { ids, count });
        }

        let mut units: Vec<u64> = vec![0; vocab.len()];
        for word in &words {
            for &id in &word.ids {
                units[id as usize] += word.count;
            }
        }
        let mut by_unit: Vec<Vec<u64>> = vec![Vec::new(); vocab.len()];
        let register = |by_unit: &mut Vec<Vec<u64>>, key: u64| {
            let (l, r) = pair_of(key);
            by_unit[l as usize].push(key);
            by_unit[r as usize].push(key);
        };
        let mut pairs = count_pairs(&words, |key| register(&mut by_unit, key));
        let min_frequency = config.min_frequency.max(1);
        let mut total: u64 = units.iter().sum();
        let score = config.score;
        let candidate = |key: u64, count: u64, units: &[u64], total: u64| {
            let (a, b) = pair_of(key);
            let (ca, cb) = (units[a as usize], units[b as usize]);
            Candidate {
                gain: match score {
                    Score::Ratio => 0.0,
                    Score::LikelihoodGain => likelihood_gain(count, ca, cb, a == b, total),
                },
                count,
                units: ca as u128 * cb as u128,
                key: Reverse(key),
            }
        };
        let mut heap = PairHeap::default();
        let mut initial: Vec<u64> = pairs
            .iter()
            .filter(|(_, e)| e.count >= min_frequency)
            .map(|(&k, _)| k)
            .collect();
        // Hash order must not decide anything, not even the heap's layout.
        initial.sort_unstable();
        for k in initial {
            heap.set(candidate(k, pairs[&k].count, &units, total));
        }

        let wanted = config.vocab_size;
        let mut merges = 0;
        let mut stopped_early = None;
        let mut merger = Merger::new(words.len());
        let mut touched: Vec<u64> = Vec::new();
        let report_every = (wanted / 200).max(1);
        while vocab.len() < wanted {
            let Some(top) = heap.pop() else {
                stopped_early = Some(format!(
                    "no pair occurring at least {min_frequency} times is left"
                ));
                break;
            };
            let key = top.key.0;
            let Some(entry) = pairs.get(&key).filter(|e| e.count >= min_frequency) else {
                continue;
            };
            let now = candidate(key, entry.count, &units, total);
            if now != top {
                // Increases are set when they happen, decreases when the entry comes up.
                heap.set(now);
                continue;
            }
            let (a, b) = pair_of(key);
            let merged = {
                let right = &vocab[b as usize];
                let right = right.strip_prefix(config.prefix.as_str()).unwrap_or(right);
                format!("{}{right}", vocab[a as usize])
            };
            let new = intern(merged, &mut vocab, &mut ids);
            if new as usize == units.len() {
                units.push(0);
                by_unit.push(Vec::new());
            }
            merges += 1;
            let grew = merger.apply(
                key,
                new,
                &mut words,
                &mut pairs,
                |count, n| {
                    let n = n as u64 * count;
                    units[a as usize] -= n;
                    units[b as usize] -= n;
                    units[new as usize] += n;
                    total -= n;
                },
                |key| register(&mut by_unit, key),
            );
            touched.clear();
            touched.extend_from_slice(grew);
            // `a` and `b` are rarer now: every pair they are in scores higher.
            for unit in [a, b] {
                let list = &mut by_unit[unit as usize];
                list.retain(|k| match pairs.get(k) {
                    Some(e) if e.count > 0 => true,
                    Some(_) => {
                        // Gone from every word: forget it, so that if it forms again it is
                        // registered again.
                        pairs.remove(k);
                        heap.remove(*k);
                        false
                    }
                    None => false,
                });
                touched.extend_from_slice(list);
            }
            touched.sort_unstable();
            touched.dedup();
            for &k in &touched {
                if let Some(e) = pairs.get(&k)
                    && e.count >= min_frequency
                {
                    heap.set(candidate(k, e.count, &units, total));
                }
            }
            if vocab.len().is_multiple_of(report_every) {
                progress(vocab.len(), wanted);
            }
        }
        progress(vocab.len(), wanted);

        let wp = WordPiece::with_specials(
            vocab,
            &config.special_tokens,
            &config.prefix,
            config.normalizer,
        )?;
        let report = TrainReport {
            vocab_size: wp.vocab_size(),
            merges,
            alphabet: alphabet.len(),
            dropped_characters,
            texts: self.texts,
            bytes: self.bytes,
            words: word_total,
            distinct_words,
            words_outside_alphabet,
            stopped_early,
        };
        Ok((wp, report))
    }
}
