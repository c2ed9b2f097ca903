//! The bookkeeping both merge-based trainers share (BPE in `lmforge-bpe`, WordPiece in
//! `lmforge-wordpiece`): words of the corpus as unit ids with their counts, the count of every
//! adjacent pair and the words it occurs in, and applying one merge incrementally — only the
//! words that hold the pair are rewritten, and only the pairs around each merged position
//! change. The trainers differ in what they rank pairs by and what else they track; they see
//! every change through callbacks.

use rustc_hash::FxHashMap;

/// A distinct word of the corpus: its units and how often it occurs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// Unit ids, left to right.
    pub ids: Vec<u32>,
    /// Occurrences in the corpus.
    pub count: u64,
}

/// An adjacent pair's total count and the words it occurs in.
#[derive(Clone, Debug, Default)]
pub struct PairEntry {
    /// Occurrences in the corpus (u64: Hugging Face's i32 counts overflowed, tokenizers #437).
    pub count: u64,
    /// Indices of the words it occurs in; may still list words it has left since (checked
    /// when used), never misses one.
    pub words: Vec<u32>,
}

/// Pair counts keyed by [`pair_key`].
pub type Pairs = FxHashMap<u64, PairEntry>;

/// The key of pair `(left, right)`; ordering keys orders pairs by left, then right id.
#[inline]
pub fn pair_key(left: u32, right: u32) -> u64 {
    (left as u64) << 32 | right as u64
}

/// The pair of a key.
#[inline]
pub fn pair_of(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// Two count tables as one, the smaller added into the larger (the reduce step of counting
/// words in parallel).
pub fn sum_counts<K: std::hash::Hash + Eq>(
    a: FxHashMap<K, u64>,
    b: FxHashMap<K, u64>,
) -> FxHashMap<K, u64> {
    let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    for (k, v) in small {
        *big.entry(k).or_insert(0) += v;
    }
    big
}

/// Counts every adjacent pair of every word; `created(key)` is called once per pair, in word
/// order.
pub fn count_pairs(words: &[Word], mut created: impl FnMut(u64)) -> Pairs {
    let mut pairs = Pairs::default();
    for (w, word) in words.iter().enumerate() {
        for win in word.ids.windows(2) {
            add(
                &mut pairs,
                win[0],
                win[1],
                w as u32,
                word.count,
                &mut created,
            );
        }
    }
    pairs
}

fn add(pairs: &mut Pairs, l: u32, r: u32, w: u32, count: u64, created: &mut impl FnMut(u64)) {
    let key = pair_key(l, r);
    let e = pairs.entry(key).or_insert_with(|| {
        created(key);
        PairEntry::default()
    });
    e.count += count;
    if e.words.last() != Some(&w) {
        e.words.push(w);
    }
}

/// Applies merges one after the other; keeps its buffers between merges.
#[derive(Debug)]
pub struct Merger {
    positions: Vec<usize>,
    merged_ids: Vec<u32>,
    touched: Vec<u64>,
    seen_in_step: Vec<u32>,
    step: u32,
}

impl Merger {
    /// For a corpus of `words` distinct words.
    pub fn new(words: usize) -> Self {
        Self {
            positions: Vec::new(),
            merged_ids: Vec::new(),
            touched: Vec::new(),
            seen_in_step: vec![u32::MAX; words],
            step: 0,
        }
    }

    /// Replaces every non-overlapping `(a, b)` (leftmost first) by `new` in the words that
    /// hold it, removes the pair from `pairs` and adjusts the counts of the pairs around each
    /// merged position. Calls `merged(word count, occurrences in the word)` for each word
    /// rewritten and `created(key)` for each pair seen for the first time. Returns the pairs
    /// whose count grew (sorted, deduplicated): those that contain `new`.
    pub fn apply(
        &mut self,
        key: u64,
        new: u32,
        words: &mut [Word],
        pairs: &mut Pairs,
        mut merged: impl FnMut(u64, usize),
        mut created: impl FnMut(u64),
    ) -> &[u64] {
        let (a, b) = pair_of(key);
        let step = self.step;
        self.step += 1;
        let occurrences = pairs.remove(&key).map(|e| e.words).unwrap_or_default();
        self.touched.clear();
        for w in occurrences {
            if self.seen_in_step[w as usize] == step {
                continue;
            }
            self.seen_in_step[w as usize] = step;
            let word = &mut words[w as usize];
            let ids = &word.ids;
            self.positions.clear();
            let mut i = 0;
            while i + 1 < ids.len() {
                if ids[i] == a && ids[i + 1] == b {
                    self.positions.push(i);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            if self.positions.is_empty() {
                continue;
            }
            let c = word.count;
            merged(c, self.positions.len());
            // Pairs that disappear: the merged pair and its neighbours on both sides.
            let mut last_done = usize::MAX;
            for &p in &self.positions {
                for j in p.saturating_sub(1)..=(p + 1) {
                    if j + 1 >= ids.len() || (last_done != usize::MAX && j <= last_done) {
                        continue;
                    }
                    last_done = j;
                    let k = pair_key(ids[j], ids[j + 1]);
                    if k != key
                        && let Some(e) = pairs.get_mut(&k)
                    {
                        e.count -= c;
                    }
                }
            }
            self.merged_ids.clear();
            let mut next_pos = self.positions.iter().peekable();
            let mut i = 0;
            while i < ids.len() {
                if next_pos.peek() == Some(&&i) {
                    next_pos.next();
                    self.merged_ids.push(new);
                    i += 2;
                } else {
                    self.merged_ids.push(ids[i]);
                    i += 1;
                }
            }
            // Pairs that appear: the new unit with its neighbours.
            let mut last_done = usize::MAX;
            for k in 0..self.merged_ids.len() {
                if self.merged_ids[k] != new {
                    continue;
                }
                for j in k.saturating_sub(1)..=k {
                    if j + 1 >= self.merged_ids.len() || (last_done != usize::MAX && j <= last_done)
                    {
                        continue;
                    }
                    last_done = j;
                    let (l, r) = (self.merged_ids[j], self.merged_ids[j + 1]);
                    add(pairs, l, r, w, c, &mut created);
                    self.touched.push(pair_key(l, r));
                }
            }
            std::mem::swap(&mut word.ids, &mut self.merged_ids);
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        &self.touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(ids: &[u32], count: u64) -> Word {
        Word {
            ids: ids.to_vec(),
            count,
        }
    }

    /// Pair counts recounted from scratch.
    fn recount(words: &[Word]) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = count_pairs(words, |_| {})
            .into_iter()
            .map(|(k, e)| (k, e.count))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_merge_updates_counts_as_a_recount_would() {
        let mut words = vec![
            word(&[1, 2, 1, 2, 2], 3),
            word(&[2, 2, 2], 1),
            word(&[1, 3], 5),
        ];
        let mut pairs = count_pairs(&words, |_| {});
        let mut merger = Merger::new(words.len());
        let mut occurrences = 0;
        let mut created = Vec::new();
        let touched = merger
            .apply(
                pair_key(2, 2),
                9,
                &mut words,
                &mut pairs,
                |c, n| occurrences += c * n as u64,
                |k| created.push(k),
            )
            .to_vec();
        assert_eq!(words[0].ids, [1, 2, 1, 9]);
        assert_eq!(words[1].ids, [9, 2], "leftmost first, no overlap");
        assert_eq!(occurrences, 3 + 1);
        assert_eq!(touched, [pair_key(1, 9), pair_key(9, 2)]);
        assert_eq!(created, touched);
        let mut now: Vec<(u64, u64)> = pairs
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(&k, e)| (k, e.count))
            .collect();
        now.sort_unstable();
        assert_eq!(now, recount(&words));
    }
}
