//! A generated corpus with planted near duplicates of known Jaccard similarity: the ground
//! truth the dedup tests and benchmarks (ours and the Python peers', on the same file) measure
//! precision and recall against.
//!
//! Words are drawn from a Zipf law over a made-up vocabulary, so unrelated documents share
//! frequent words but almost no 5-gram. A planted document copies an earlier original and
//! substitutes random words; its exact Jaccard similarity with the original, over word
//! n-gram sets, is computed and recorded. Half the planted documents are made near duplicates
//! (target similarity 0.85-1.0), half are edited further (0.5-0.7), which a dedup at 0.8 must
//! keep.

use std::collections::HashSet;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Documents in all.
    pub documents: usize,
    /// Fraction of them derived from an earlier original.
    pub planted: f64,
    /// Words per shingle the recorded similarity is computed over.
    pub ngram: usize,
    /// Words per document, from `min_words` to `max_words`.
    pub min_words: usize,
    /// See `min_words`.
    pub max_words: usize,
    /// Vocabulary size.
    pub vocabulary: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            documents: 50_000,
            planted: 0.2,
            ngram: 5,
            min_words: 150,
            max_words: 450,
            vocabulary: 20_000,
            seed: 0,
        }
    }
}

/// One generated document.
#[derive(Clone, Debug, Serialize)]
pub struct Document {
    /// `synthetic-NNNNNNN`.
    pub id: String,
    /// Lowercase words, sentences and paragraphs.
    pub text: String,
    /// Index of the original it was derived from.
    pub original: Option<usize>,
    /// Exact Jaccard similarity of its n-gram set with the original's.
    pub jaccard: Option<f64>,
}

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (uniform(rng) * n as f64) as usize % n.max(1)
}

/// Exact Jaccard similarity of two word sequences' `n`-gram sets.
pub fn jaccard(a: &[u32], b: &[u32], n: usize) -> f64 {
    let grams = |w: &[u32]| -> HashSet<Vec<u32>> {
        w.windows(n.min(w.len()).max(1))
            .map(<[u32]>::to_vec)
            .collect()
    };
    let (a, b) = (grams(a), grams(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// Generates the corpus (the same options, the same documents).
pub fn generate(options: &Options) -> Vec<Document> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vo", "bi", "de", "fu", "ga", "ho", "ji", "ke", "la",
        "mo", "nu", "pe", "ri", "so", "tu", "va", "we", "zo",
    ];
    let mut seen = HashSet::new();
    let mut vocabulary = Vec::with_capacity(options.vocabulary);
    while vocabulary.len() < options.vocabulary {
        let syllables = 1 + below(&mut rng, 4);
        let word: String = (0..syllables)
            .map(|_| SYLLABLES[below(&mut rng, SYLLABLES.len())])
            .collect();
        if seen.insert(word.clone()) {
            vocabulary.push(word);
        } else if seen.len() > 300_000 {
            break;
        }
    }
    // Zipf (s = 1) by inverting its cumulative distribution.
    let mut cdf = Vec::with_capacity(vocabulary.len());
    let mut total = 0.0;
    for rank in 1..=vocabulary.len() {
        total += 1.0 / rank as f64;
        cdf.push(total);
    }
    let draw = |rng: &mut ChaCha8Rng| -> u32 {
        let u = uniform(rng) * total;
        cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u32
    };

    let mut words_of: Vec<Vec<u32>> = Vec::with_capacity(options.documents);
    let mut originals: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(options.documents);
    for i in 0..options.documents {
        let planted = !originals.is_empty() && uniform(&mut rng) < options.planted;
        let (words, original, similarity) = if planted {
            let original = originals[below(&mut rng, originals.len())];
            let mut words = words_of[original].clone();
            let target = if uniform(&mut rng) < 0.5 {
                0.85 + 0.15 * uniform(&mut rng)
            } else {
                0.5 + 0.2 * uniform(&mut rng)
            };
            let shingles = words.len().saturating_sub(options.ngram - 1).max(1) as f64;
            let edits = (shingles * (1.0 - target) / (options.ngram as f64 * (1.0 + target)))
                .round() as usize;
            for _ in 0..edits {
                let at = below(&mut rng, words.len());
                words[at] = draw(&mut rng);
            }
            let j = jaccard(&words, &words_of[original], options.ngram);
            (words, Some(original), Some(j))
        } else {
            let n = options.min_words + below(&mut rng, options.max_words - options.min_words + 1);
            originals.push(i);
            ((0..n).map(|_| draw(&mut rng)).collect(), None, None)
        };
        let mut text = String::with_capacity(words.len() * 7);
        let mut sentence = 0;
        let mut sentences = 0;
        let sentence_len = |rng: &mut ChaCha8Rng| 8 + below(rng, 13);
        let mut this_len = sentence_len(&mut rng);
        for (k, &w) in words.iter().enumerate() {
            text.push_str(&vocabulary[w as usize]);
            sentence += 1;
            if k + 1 == words.len() {
                text.push('.');
            } else if sentence == this_len {
                sentence = 0;
                sentences += 1;
                this_len = sentence_len(&mut rng);
                text.push_str(if sentences % 5 == 0 { ".\n\n" } else { ". " });
            } else {
                text.push(' ');
            }
        }
        words_of.push(words);
        out.push(Document {
            id: format!("synthetic-{i:07}"),
            text,
            original,
            jaccard: similarity,
        });
    }
    out
}

/// Precision and recall of a set of dropped documents against the planted truth: a document
/// is a true duplicate when its recorded similarity is at least `threshold`.
pub fn precision_recall(
    documents: &[Document],
    dropped: &HashSet<usize>,
    threshold: f64,
) -> (f64, f64) {
    let truth: HashSet<usize> = documents
        .iter()
        .enumerate()
        .filter(|(_, d)| d.jaccard.is_some_and(|j| j >= threshold))
        .map(|(i, _)| i)
        .collect();
    let hits = dropped.intersection(&truth).count() as f64;
    let precision = if dropped.is_empty() {
        1.0
    } else {
        hits / dropped.len() as f64
    };
    let recall = if truth.is_empty() {
        1.0
    } else {
        hits / truth.len() as f64
    };
    (precision, recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_similarities_straddle_the_threshold() {
        let docs = generate(&Options {
            documents: 2000,
            ..Options::default()
        });
        assert_eq!(docs.len(), 2000);
        let planted: Vec<f64> = docs.iter().filter_map(|d| d.jaccard).collect();
        assert!(
            planted.len() > 300 && planted.len() < 500,
            "{}",
            planted.len()
        );
        let high = planted.iter().filter(|&&j| j >= 0.8).count();
        let low = planted.iter().filter(|&&j| j < 0.75).count();
        assert!(
            high > planted.len() / 3 && low > planted.len() / 3,
            "{high} {low}"
        );
        let mean_len = docs.iter().map(|d| d.text.len()).sum::<usize>() / docs.len();
        assert!((1500..2300).contains(&mean_len), "{mean_len}");
        // Deterministic.
        let again = generate(&Options {
            documents: 2000,
            ..Options::default()
        });
        assert!(docs.iter().zip(&again).all(|(a, b)| a.text == b.text));
    }

    #[test]
    fn jaccard_of_word_ngrams() {
        assert_eq!(jaccard(&[1, 2, 3], &[1, 2, 3], 2), 1.0);
        assert_eq!(jaccard(&[1, 2, 3], &[1, 2, 4], 2), 1.0 / 3.0);
        assert_eq!(jaccard(&[1], &[1], 5), 1.0);
    }
}
