//! The trainer: the likelihood criterion, checked against a from-scratch recount at every
//! merge; determinism; settings and bad input.

use std::collections::HashMap;

use lmforge_wordpiece::{BertNormalizer, Error, Score, WordPieceTrainer};
use proptest::prelude::*;

/// WordPiece training the slow, obvious way: recount every unit and pair before each merge.
fn naive(words: &[(&str, u64)], vocab_size: usize, min_frequency: u64, gain: bool) -> Vec<String> {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let mut alphabet: Vec<char> = words.iter().flat_map(|(w, _)| w.chars()).collect();
    alphabet.sort_unstable();
    alphabet.dedup();
    let mut vocab: Vec<String> = specials.map(String::from).to_vec();
    vocab.extend(alphabet.iter().map(|c| c.to_string()));
    vocab.extend(alphabet.iter().map(|c| format!("##{c}")));
    let id = |vocab: &[String], s: &str| vocab.iter().position(|v| v == s).unwrap() as u32;
    let mut split: Vec<(Vec<u32>, u64)> = words
        .iter()
        .map(|(w, n)| {
            let ids = w
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    let s = if i == 0 {
                        c.to_string()
                    } else {
                        format!("##{c}")
                    };
                    id(&vocab, &s)
                })
                .collect();
            (ids, *n)
        })
        .collect();
    while vocab.len() < vocab_size {
        let mut units: HashMap<u32, u64> = HashMap::new();
        let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
        for (ids, n) in &split {
            for &i in ids {
                *units.entry(i).or_default() += n;
            }
            for w in ids.windows(2) {
                *pairs.entry((w[0], w[1])).or_default() += n;
            }
        }
        let total: u64 = units.values().sum();
        let xlogx = |x: u64| {
            if x == 0 {
                0.0
            } else {
                x as f64 * (x as f64).ln()
            }
        };
        // The change of the corpus log-likelihood if the pair were merged.
        let gain_of = |&(a, b): &(u32, u32), c: u64| {
            if !gain {
                return 0.0;
            }
            let (ca, cb) = (units[&a], units[&b]);
            let rest = if a == b {
                xlogx(ca.saturating_sub(2 * c)) - xlogx(ca)
            } else {
                xlogx(ca.saturating_sub(c)) + xlogx(cb.saturating_sub(c)) - xlogx(ca) - xlogx(cb)
            };
            xlogx(c) + rest - (xlogx(total.saturating_sub(c)) - xlogx(total))
        };
        let best =
            pairs
                .iter()
                .filter(|&(_, &c)| c >= min_frequency)
                .max_by(|&(pa, &ca), &(pb, &cb)| {
                    let da = units[&pa.0] as u128 * units[&pa.1] as u128;
                    let db = units[&pb.0] as u128 * units[&pb.1] as u128;
                    gain_of(pa, ca)
                        .total_cmp(&gain_of(pb, cb))
                        .then((ca as u128 * db).cmp(&(cb as u128 * da)))
                        .then(ca.cmp(&cb))
                        .then(pb.cmp(pa))
                });
        let Some((&(a, b), _)) = best else { break };
        let merged = format!("{}{}", vocab[a as usize], &vocab[b as usize][2..]);
        let new = match vocab.iter().position(|v| *v == merged) {
            Some(i) => i as u32,
            None => {
                vocab.push(merged);
                vocab.len() as u32 - 1
            }
        };
        for (ids, _) in &mut split {
            let mut out = Vec::with_capacity(ids.len());
            let mut i = 0;
            while i < ids.len() {
                if i + 1 < ids.len() && ids[i] == a && ids[i + 1] == b {
                    out.push(new);
                    i += 2;
                } else {
                    out.push(ids[i]);
                    i += 1;
                }
            }
            *ids = out;
        }
    }
    vocab
}

fn trained(texts: &[String], vocab_size: usize, min_frequency: u64, gain: bool) -> Vec<String> {
    let mut trainer = WordPieceTrainer::builder()
        .score(if gain {
            Score::LikelihoodGain
        } else {
            Score::Ratio
        })
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .limit_alphabet(None)
        .normalizer(BertNormalizer::cased())
        .build()
        .unwrap();
    trainer.feed(texts);
    let (wp, report) = trainer.train().unwrap();
    assert_eq!(report.vocab_size, wp.vocab_size());
    wp.vocab().iter().map(|t| t.clone().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn incremental_training_equals_recounting(
        words in proptest::collection::vec(("[abcd]{1,7}", 1u64..5), 1..30),
        extra in 1usize..40,
        min_frequency in 1u64..4,
        gain in any::<bool>(),
    ) {
        // Each word repeated `n` times in one text; the trainer sees what the naive one sees.
        let texts: Vec<String> = words
            .iter()
            .map(|(w, n)| vec![w.as_str(); *n as usize].join(" "))
            .collect();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (w, n) in &words {
            *counts.entry(w.as_str()).or_default() += n;
        }
        let mut counts: Vec<(&str, u64)> = counts.into_iter().collect();
        counts.sort_unstable();
        let alphabet = {
            let mut a: Vec<char> = counts.iter().flat_map(|(w, _)| w.chars()).collect();
            a.sort_unstable();
            a.dedup();
            a.len()
        };
        let size = 5 + 2 * alphabet + extra;
        prop_assert_eq!(trained(&texts, size, min_frequency, gain), naive(&counts, size, min_frequency, gain));
    }
}

#[test]
fn same_corpus_same_vocabulary_whatever_the_batching() {
    let texts = crate::corpus_texts(150_000);
    let train = |chunk: usize| {
        let mut trainer = WordPieceTrainer::builder()
            .vocab_size(3000)
            .build()
            .unwrap();
        for batch in texts.chunks(chunk) {
            trainer.feed(batch);
        }
        trainer.train().unwrap().0.to_tokenizer_json()
    };
    let whole = train(texts.len());
    assert_eq!(whole, train(7));
    assert_eq!(whole, train(1));
}

#[test]
fn trained_tokenizer_encodes_held_out_text_without_unknowns() {
    let texts = crate::corpus_texts(300_000);
    let (train, held_out) = texts.split_at(texts.len() * 9 / 10);
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(4000)
        .min_frequency(5)
        .build()
        .unwrap();
    trainer.feed(train);
    let (wp, report) = trainer.train().unwrap();
    assert_eq!(report.vocab_size, 4000);
    assert_eq!(
        &wp.vocab()[..5],
        &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(|s| Some(s.to_string()))
    );
    let mut tokens = 0;
    let mut unknown = 0;
    for text in held_out {
        let ids = wp.encode_ordinary(text);
        tokens += ids.len();
        unknown += ids.iter().filter(|&&id| id == wp.unk_id()).count();
    }
    assert!(tokens > 1000);
    // Only characters outside the alphabet of the training text can be unknown.
    assert!(unknown * 1000 < tokens, "{unknown} unknown of {tokens}");
    let enc = wp.encode("Bonjour le monde").unwrap();
    assert_eq!(enc.ids.first(), wp.token_id("[CLS]").as_ref());
    assert_eq!(wp.decode(&enc.ids, true).unwrap(), "bonjour le monde");
}

#[test]
fn special_token_text_is_not_learned_and_limit_alphabet_holds() {
    let text = "[MASK] [MASK] abc abd [SEP] 日本 日本 zzz";
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(40)
        .min_frequency(1)
        .limit_alphabet(Some(4))
        .build()
        .unwrap();
    trainer.feed(&[text]);
    let (wp, report) = trainer.train().unwrap();
    assert_eq!(report.alphabet, 4);
    assert!(report.dropped_characters > 0);
    assert!(report.words_outside_alphabet > 0);
    assert!(
        wp.token_id("mask").is_none(),
        "special-token text was trained on"
    );
    assert_eq!(
        wp.encode_ordinary("[MASK]"),
        [wp.token_id("[MASK]").unwrap()]
    );
}

#[test]
fn bad_settings_and_empty_corpus_are_errors() {
    let err = |b: lmforge_wordpiece::WordPieceTrainerBuilder| b.build().unwrap_err().to_string();
    assert!(err(WordPieceTrainer::builder().special_tokens(["[PAD]"])).contains("[UNK]"));
    assert!(err(WordPieceTrainer::builder().vocab_size(3)).contains("vocab_size"));
    assert!(err(WordPieceTrainer::builder().continuing_subword_prefix("")).contains("prefix"));
    assert!(err(WordPieceTrainer::builder().limit_alphabet(Some(0))).contains("limit_alphabet"));
    let trainer = WordPieceTrainer::builder().build().unwrap();
    assert!(matches!(trainer.train(), Err(Error::EmptyCorpus)));
    let mut small = WordPieceTrainer::builder().vocab_size(8).build().unwrap();
    small.feed(&["abcdef"]);
    assert!(small.train().unwrap_err().to_string().contains("alphabet"));
}
