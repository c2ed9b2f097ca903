//! [`BpeTrainer`]: learns a byte-level BPE vocabulary from a corpus.
//!
//! Two phases. `feed` pre-tokenizes text in parallel (rayon) and counts distinct pre-tokens,
//! so memory grows with the number of distinct pre-tokens, never with the corpus: feed it
//! batches as they are read. `train` then runs the merge loop over the distinct words:
//!
//! - pair counts are `u64` (Hugging Face's i32 counts overflowed: tokenizers #437, #2058);
//! - each pair knows the words it occurs in, so a merge touches only those words and updates
//!   only the pairs around the merged positions, never recounting the corpus;
//! - a max-heap with lazy deletion picks the next pair. **Tie-breaking**: the highest count
//!   wins; among equal counts, the pair with the smaller left id, then the smaller right id
//!   (ids: byte values 0..255, then merges in the order they were made). Nothing depends on
//!   hash order or thread timing, so the same corpus gives the same merges.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use aho_corasick::AhoCorasick;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::pretokenize::{GPT2, Pretokenizer};
use crate::{Bpe, Error, Result};
use lmforge_tokenizer::merges::{Merger, Word, count_pairs, pair_of, sum_counts};

/// Settings for [`BpeTrainer`]; build one with [`BpeTrainer::builder`].
#[derive(Debug, Clone)]
pub struct BpeTrainerBuilder {
    vocab_size: usize,
    min_frequency: u64,
    special_tokens: Vec<String>,
    pattern: String,
    max_token_length: Option<usize>,
}

impl Default for BpeTrainerBuilder {
    fn default() -> Self {
        Self {
            vocab_size: 32_000,
            min_frequency: 2,
            special_tokens: vec!["<|endoftext|>".into()],
            pattern: GPT2.into(),
            max_token_length: None,
        }
    }
}

impl BpeTrainerBuilder {
    /// Total vocabulary size: 256 bytes + merges + special tokens (default 32,000).
    pub fn vocab_size(mut self, n: usize) -> Self {
        self.vocab_size = n;
        self
    }

    /// A pair seen fewer times than this is never merged (default 2).
    pub fn min_frequency(mut self, n: u64) -> Self {
        self.min_frequency = n;
        self
    }

    /// Special tokens, appended after the merges (default `<|endoftext|>`). Their text is cut
    /// out of the training text, so it never shapes the merges.
    pub fn special_tokens<S: Into<String>>(mut self, tokens: impl IntoIterator<Item = S>) -> Self {
        self.special_tokens = tokens.into_iter().map(Into::into).collect();
        self
    }

    /// Pre-tokenization regex (default GPT-2's; see [`crate::pretokenize`] for cl100k/o200k).
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.pattern = pattern.into();
        self
    }

    /// No token longer than this many bytes.
    pub fn max_token_length(mut self, n: Option<usize>) -> Self {
        self.max_token_length = n;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<BpeTrainer> {
        let floor = 256 + self.special_tokens.len();
        if self.vocab_size < floor {
            return Err(Error::Config {
                field: "vocab_size",
                reason: format!(
                    "{} is below 256 bytes + {} special tokens = {floor}",
                    self.vocab_size,
                    self.special_tokens.len()
                ),
            });
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(Error::Config {
                field: "vocab_size",
                reason: "ids are u32".into(),
            });
        }
        for (i, t) in self.special_tokens.iter().enumerate() {
            if t.is_empty() {
                return Err(Error::Config {
                    field: "special_tokens",
                    reason: format!("token {i} is empty"),
                });
            }
            if self.special_tokens[..i].contains(t) {
                return Err(Error::Config {
                    field: "special_tokens",
                    reason: format!("{t:?} is given twice"),
                });
            }
        }
        if self.max_token_length == Some(0) {
            return Err(Error::Config {
                field: "max_token_length",
                reason: "must be at least 1".into(),
            });
        }
        let pretokenizer = Pretokenizer::new(&self.pattern)?;
        let specials = if self.special_tokens.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(&self.special_tokens)
                    .map_err(|e| Error::Config {
                        field: "special_tokens",
                        reason: e.to_string(),
                    })?,
            )
        };
        Ok(BpeTrainer {
            config: self,
            pretokenizer,
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
    /// Merges learned.
    pub merges: usize,
    /// Special tokens appended.
    pub special_tokens: usize,
    /// Texts fed.
    pub texts: u64,
    /// Bytes of text fed.
    pub bytes: u64,
    /// Pre-tokens counted.
    pub pre_tokens: u64,
    /// Distinct pre-tokens: what training memory grows with.
    pub distinct_pre_tokens: usize,
    /// Why the merge loop ended early, if it did (no pair left, or `min_frequency`).
    pub stopped_early: Option<String>,
    /// Length in bytes of the longest token.
    pub longest_token: usize,
}

/// Learns a byte-level BPE vocabulary.
///
/// ```
/// use lmforge_bpe::BpeTrainer;
///
/// let mut trainer = BpeTrainer::builder().vocab_size(300).min_frequency(1).build()?;
/// trainer.feed(&["the cat sat on the mat", "the hat"]);
/// let (bpe, report) = trainer.train()?;
/// assert_eq!(bpe.decode(&bpe.encode_ordinary("the mat"))?, "the mat");
/// assert!(report.merges > 0);
/// # Ok::<(), lmforge_bpe::Error>(())
/// ```
#[derive(Debug)]
pub struct BpeTrainer {
    config: BpeTrainerBuilder,
    pretokenizer: Pretokenizer,
    specials: Option<AhoCorasick>,
    words: FxHashMap<String, u64>,
    texts: u64,
    bytes: u64,
}

impl BpeTrainer {
    /// Settings with their defaults.
    pub fn builder() -> BpeTrainerBuilder {
        BpeTrainerBuilder::default()
    }

    /// Counts the pre-tokens of a batch of texts, in parallel.
    pub fn feed<S: AsRef<str> + Sync>(&mut self, texts: &[S]) {
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        self.feed_strs(&texts);
    }

    // Not generic, so that it is compiled (and optimised) here, not in the caller's crate.
    fn feed_strs(&mut self, texts: &[&str]) {
        let pre = &self.pretokenizer;
        let specials = self.specials.as_ref();
        let local = texts
            .par_iter()
            .with_min_len(64)
            .fold(FxHashMap::<&str, u64>::default, |mut map, text| {
                let mut segments = Vec::new();
                match specials {
                    Some(ac) => {
                        let mut at = 0;
                        for m in ac.find_iter(text) {
                            segments.push(&text[at..m.start()]);
                            at = m.end();
                        }
                        segments.push(&text[at..]);
                    }
                    None => segments.push(text),
                }
                for segment in segments {
                    for (s, e) in pre.split(segment) {
                        *map.entry(&segment[s..e]).or_insert(0) += 1;
                    }
                }
                map
            })
            .reduce(FxHashMap::default, sum_counts);
        for (piece, n) in local {
            match self.words.get_mut(piece) {
                Some(c) => *c += n,
                None => {
                    self.words.insert(piece.to_string(), n);
                }
            }
        }
        self.texts += texts.len() as u64;
        self.bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
    }

    /// Distinct pre-tokens counted so far.
    pub fn distinct_pre_tokens(&self) -> usize {
        self.words.len()
    }

    /// What the counts depend on (a count file records them).
    pub fn count_settings(&self) -> crate::counts::CountSettings {
        crate::counts::CountSettings {
            pattern: self.config.pattern.clone(),
            special_tokens: self.config.special_tokens.clone(),
        }
    }

    pub(crate) fn words(&self) -> &FxHashMap<String, u64> {
        &self.words
    }

    /// Texts and bytes fed so far.
    pub(crate) fn fed(&self) -> (u64, u64) {
        (self.texts, self.bytes)
    }

    /// Adds counts made elsewhere (a count file), as if their texts had been fed here.
    pub(crate) fn add_counts(&mut self, counts: Vec<(String, u64)>, texts: u64, bytes: u64) {
        for (piece, n) in counts {
            *self.words.entry(piece).or_insert(0) += n;
        }
        self.texts += texts;
        self.bytes += bytes;
    }

    /// Learns the merges. An empty corpus is [`Error::EmptyCorpus`].
    pub fn train(self) -> Result<(Bpe, TrainReport)> {
        self.train_with_progress(|_, _| {})
    }

    /// [`BpeTrainer::train`], calling `progress(merges_done, merges_wanted)` as it goes.
    pub fn train_with_progress(
        self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(Bpe, TrainReport)> {
        self.train_dyn(&mut progress)
    }

    // Not generic, so that it is compiled (and optimised) here, not in the caller's crate.
    fn train_dyn(self, progress: &mut dyn FnMut(usize, usize)) -> Result<(Bpe, TrainReport)> {
        if self.words.is_empty() {
            return Err(Error::EmptyCorpus);
        }
        let config = self.config;
        let wanted = config.vocab_size - 256 - config.special_tokens.len();
        let pre_tokens: u64 = self.words.values().sum();
        let distinct = self.words.len();
        let mut sorted: Vec<(String, u64)> = self.words.into_iter().collect();
        // Hash-map order is not deterministic across runs with different batching; byte order is.
        sorted.par_sort_unstable();
        let mut words: Vec<Word> = sorted
            .into_iter()
            .map(|(w, count)| Word {
                ids: w.bytes().map(u32::from).collect(),
                count,
            })
            .collect();

        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut pairs = count_pairs(&words, |_| {});
        let mut heap: BinaryHeap<(u64, Reverse<u64>)> =
            pairs.iter().map(|(&k, e)| (e.count, Reverse(k))).collect();

        let mut merges: Vec<(u32, u32)> = Vec::with_capacity(wanted);
        let mut stopped_early = None;
        let mut merger = Merger::new(words.len());
        let min_frequency = config.min_frequency.max(1);
        let report_every = (wanted / 200).max(1);
        while merges.len() < wanted {
            let Some((count, Reverse(key))) = heap.pop() else {
                stopped_early = Some("no pair left to merge".into());
                break;
            };
            let current = pairs.get(&key).map_or(0, |e| e.count);
            if current != count {
                if current > 0 {
                    heap.push((current, Reverse(key)));
                }
                continue;
            }
            if count < min_frequency {
                stopped_early = Some(format!(
                    "every remaining pair occurs fewer than {min_frequency} times"
                ));
                break;
            }
            let (a, b) = pair_of(key);
            let len = tokens[a as usize].len() + tokens[b as usize].len();
            if config.max_token_length.is_some_and(|max| len > max) {
                pairs.remove(&key);
                continue;
            }
            let new = tokens.len() as u32;
            tokens.push([tokens[a as usize].as_slice(), tokens[b as usize].as_slice()].concat());
            merges.push((a, b));
            let touched = merger.apply(key, new, &mut words, &mut pairs, |_, _| {}, |_| {});
            for &k in touched {
                if let Some(e) = pairs.get(&k)
                    && e.count > 0
                {
                    heap.push((e.count, Reverse(k)));
                }
            }
            if merges.len().is_multiple_of(report_every) {
                progress(merges.len(), wanted);
            }
        }
        progress(merges.len(), wanted);

        let longest_token = tokens.iter().map(Vec::len).max().unwrap_or(1);
        let first_special = tokens.len() as u32;
        let specials: Vec<(String, u32)> = config
            .special_tokens
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), first_special + i as u32))
            .collect();
        let bpe = Bpe::from_merges(tokens, merges, specials, &config.pattern)?;
        let report = TrainReport {
            vocab_size: bpe.vocab_size(),
            merges: bpe.merges().len(),
            special_tokens: config.special_tokens.len(),
            texts: self.texts,
            bytes: self.bytes,
            pre_tokens,
            distinct_pre_tokens: distinct,
            stopped_early,
            longest_token,
        };
        Ok((bpe, report))
    }
}
