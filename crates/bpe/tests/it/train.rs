//! Training on real text: what a user sees.

use lmforge_bpe::{Allowed, BpeTrainer};

#[test]
fn a_trained_vocabulary_compresses_its_corpus() {
    let texts = crate::corpus_texts(300_000);
    let mut trainer = BpeTrainer::builder().vocab_size(4000).build().unwrap();
    trainer.feed(&texts);
    let (bpe, report) = trainer.train().unwrap();
    assert_eq!(report.vocab_size, 4000);
    assert_eq!(report.merges, 4000 - 256 - 1);
    assert_eq!(report.stopped_early, None);
    assert_eq!(bpe.special_id("<|endoftext|>"), Some(3999));
    let bytes: usize = texts.iter().map(String::len).sum();
    let tokens: usize = texts.iter().map(|t| bpe.count(t)).sum();
    let bytes_per_token = bytes as f64 / tokens as f64;
    assert!(bytes_per_token > 3.0, "{bytes_per_token} bytes per token");
    // Frequent words of each language became single tokens.
    for word in [" the", " de", " que"] {
        assert_eq!(bpe.encode_ordinary(word).len(), 1, "{word:?}");
    }
    let batch = bpe.encode_batch(&texts, Allowed::None).unwrap();
    assert_eq!(
        batch,
        texts
            .iter()
            .map(|t| bpe.encode_ordinary(t))
            .collect::<Vec<_>>()
    );
}

#[test]
fn min_frequency_stops_training_early() {
    let mut trainer = BpeTrainer::builder()
        .vocab_size(10_000)
        .min_frequency(50)
        .build()
        .unwrap();
    trainer.feed(&crate::corpus_texts(20_000));
    let (bpe, report) = trainer.train().unwrap();
    assert!(report.vocab_size < 10_000);
    assert!(report.stopped_early.unwrap().contains("fewer than 50"));
    assert_eq!(bpe.vocab_size(), report.vocab_size);
}

#[test]
fn the_same_corpus_gives_the_same_merges_on_any_number_of_threads() {
    let texts = crate::corpus_texts(100_000);
    let train = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut trainer = BpeTrainer::builder().vocab_size(1500).build().unwrap();
                for batch in texts.chunks(7) {
                    trainer.feed(batch);
                }
                trainer.train().unwrap().0.to_tokenizer_json()
            })
    };
    let one = train(1);
    assert_eq!(one, train(3));
    assert_eq!(one, train(8));
}
